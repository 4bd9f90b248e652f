//! `cargo xtask bench trace` (and the last section of the full bench): the paper's claim that
//! imaginary hosts raise utilisation, measured. A workload shaped like the Azure Functions 2019
//! statistics ([`workload`]) is replayed from a client namespace against the same hosts under each
//! policy ([`policy`]), while the hosts' cgroups and the agent are sampled at 10 Hz ([`sample`]);
//! [`report`] writes `bench/trace.{md,json,png}`.
//!
//! Each policy starts alike: a set-up agent (the always-on configuration, so that nothing falls
//! asleep by itself meanwhile) creates every host's container (each touches its ballast once),
//! then puts them to sleep in the tier the policy leaves a long-idle host in
//! ([`Policy::steady_tier`]), and exits keeping them; the policy's own agent adopts them (paging
//! paused hosts out where the policy swaps), and the replay starts from there.

mod losses;
pub mod policy;
mod replay;
mod report;
mod sample;
mod seeds;
pub mod workload;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use imag_testkit::{AgentProcess, ClientNs, Launch, clients, metrics::Metrics};
use serde::Serialize;

use self::{
    policy::Policy,
    workload::{Trace, TraceParams},
};
use super::{HOST_IF, METRICS, Machine, cleanup, stats::quantile};
use crate::image;

pub const SUBNET: &str = "10.70.0.0/24";
const NETWORK: &str = "imagtrace";
/// Hosts take addresses from .2 on.
const MAX_HOSTS: usize = 250;
/// Hosts woken (and put to sleep) together while a policy is set up.
const SETUP_BATCH: usize = 8;

#[derive(Clone, Debug, clap::Args)]
pub struct TraceOptions {
    /// Real seconds each policy's measured replay lasts; `--trace-hours` of the day are compressed
    /// into it (a warm-up of 15 trace minutes, replayed before at the same compression, is not
    /// measured).
    #[arg(long = "trace-secs", default_value_t = 240.0)]
    pub secs: f64,
    /// Hours of the trace's day replayed (and measured) per policy. The compression (hours ÷
    /// secs) is bounded by the engine, which is not compressed: at 2 hours in 240 s (30×) imag's
    /// 1-minute idle timeout is 2 s, several cold starts.
    #[arg(long = "trace-hours", default_value_t = 2.0)]
    pub hours: f64,
    /// Hosts (functions) in the trace.
    #[arg(long = "trace-hosts", default_value_t = 40)]
    pub hosts: usize,
    /// Seed of the trace generator. By default the typical one of seeds 1–12: the seed whose
    /// trace allows the median saving (at a 0 s idle timeout, from the trace alone: fixed before
    /// anything is replayed), so that one replay stands for the generator, not for its luckiest
    /// or unluckiest draw.
    #[arg(long = "trace-seed")]
    pub seed: Option<u64>,
    /// The most requests per second one host gets from outside in the replay.
    #[arg(long = "trace-max-rps", default_value_t = 20.0)]
    pub max_rps: f64,
    /// Policies to replay (comma-separated; default all): always-on, keep-alive-10m, imag-stop,
    /// imag-pause, imag-pause-stop, imag-pause-swap, imag-swap-10s, imag-swap-1s, imag-budget.
    #[arg(long = "trace-policies", default_value = "")]
    pub policies: String,
}

#[derive(Debug, Serialize)]
pub struct TraceRun {
    pub machine: Machine,
    pub params: TraceParams,
    pub compression: f64,
    /// Replay seconds of warm-up before the measured span, and the requests in it (not measured).
    pub warmup_s: f64,
    pub warmup_requests: usize,
    pub imag_idle_timeout: String,
    pub keep_alive: String,
    /// The share of always-on's host memory-seconds a policy that keeps each host warm exactly
    /// while it had a request in the last idle timeout (wakes free) would save: imag's 1 minute,
    /// the keep-alive's 10 (`workload::ideal_saving`).
    pub ideal_saving_imag: f64,
    pub ideal_saving_keep_alive: f64,
    /// The same bound for other idle timeouts: (timeout in trace seconds, share saved).
    pub ideal_curve: Vec<(f64, f64)>,
    /// The longest idle timeout (trace seconds) whose bound still reaches the target.
    pub ideal_timeout_for_target_s: f64,
    /// The bound at 0 s and 1 s for the generator's other seeds, the parameters otherwise the
    /// same: (seed, share saved at 0 s, at 1 s). How typical this trace is.
    pub ideal_by_seed: Vec<(u64, f64, f64)>,
    /// Whether the seed is the median of [`seeds::OTHER_SEEDS`] ([`seeds::median_seed`]) rather
    /// than given.
    pub seed_is_median: bool,
    pub hosts: Vec<workload::HostPlan>,
    /// Requests in the measured span.
    pub requests: usize,
    /// The swap in use (`/proc/swaps`: device or file, and type), for `swap_after`.
    pub swap: Vec<String>,
    pub policies: Vec<PolicyRun>,
}

#[derive(Debug, Default, Serialize)]
pub struct PolicyRun {
    pub name: String,
    pub what: String,
    pub seconds: f64,
    /// ∫ memory dt of the hosts' cgroups and of the agent's RSS (MiB·s).
    pub host_memory_mb_s: f64,
    /// Of `host_memory_mb_s`, what zram swap held (memory paged out to a compressed RAM device
    /// is still memory).
    pub swap_memory_mb_s: f64,
    pub agent_memory_mb_s: f64,
    pub memory_mb_s: f64,
    pub peak_memory_mb: f64,
    pub host_cpu_s: f64,
    pub agent_cpu_s: f64,
    pub answered: usize,
    pub failed: usize,
    /// The first failures, as the client saw them.
    pub failures: Vec<String>,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_p999_ms: f64,
    pub latency_max_ms: f64,
    /// Share of requests in flight while a host on their path was being woken.
    pub met_wake: f64,
    /// Wakes during the replay, by the tier they woke from; and failed wakes.
    pub wakes: BTreeMap<String, f64>,
    pub wakes_failed: f64,
    /// Wakes the budget refused (no room, nothing evictable): their requests are reset.
    pub wakes_refused_budget: f64,
    /// Page-outs (`swap_after`) done in the measured span, the seconds they ran (one at a time:
    /// the swap device's busy time) and waited in the agent's queue.
    #[serde(default)]
    pub page_outs: f64,
    #[serde(default)]
    pub page_out_busy_s: f64,
    #[serde(default)]
    pub page_out_wait_s: f64,
    /// Wakes that ended in the measured span (the agent's log), their length p50/p99 (ms), and
    /// how many took longer than a client's first SYN timeout (1 s): each forces a retransmission
    /// of every SYN it held.
    pub wakes_logged: usize,
    pub wake_p50_ms: f64,
    pub wake_p99_ms: f64,
    pub wakes_over_1s: usize,
    pub syn_retransmissions: u64,
    /// Where packets were lost, if anywhere (for whoever chases a retransmission).
    #[serde(default)]
    pub losses: losses::Losses,
    pub samples: usize,
    /// Memory over time: (seconds, hosts MiB, agent MiB).
    pub series: Vec<(f64, f64, f64)>,
    /// Per request: (scheduled second, latency ms); for the plot only.
    #[serde(skip)]
    pub latencies: Vec<(f64, f64)>,
}

impl PolicyRun {
    /// SYNs the hosts sent each other again over the measured span (`TCPSynRetrans` of their
    /// stacks: SYN-ACKs sent again too), beside the clients' `syn_retransmissions`.
    pub fn hosts_syn_retransmissions(&self) -> u64 {
        self.losses
            .hosts_tcp
            .get("TCPSynRetrans")
            .copied()
            .unwrap_or(0)
    }

    /// The clients' and the hosts' SYN retransmissions: each must be 0.
    pub fn all_syn_retransmissions(&self) -> u64 {
        self.syn_retransmissions + self.hosts_syn_retransmissions()
    }
}

/// Idle timeouts (trace seconds) the report gives the trace's own bound for.
const IDEAL_CURVE_S: [f64; 9] = [0.0, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 600.0];

/// The host's address: .2, .3, …
fn address(i: usize) -> Ipv4Addr {
    #[allow(
        clippy::cast_possible_truncation,
        reason = "at most MAX_HOSTS hosts: .2 to .251"
    )]
    Ipv4Addr::new(10, 70, 0, (i + 2) as u8)
}

fn config_text(trace: &Trace, policy: &Policy) -> String {
    let mut text = format!(
        "[network]\nsubnet = \"{SUBNET}\"\nname = \"{NETWORK}\"\nbridge = \"{NETWORK}0\"\n"
    );
    text.push_str(&policy.sections(trace));
    for (i, host) in trace.hosts.iter().enumerate() {
        let backend = host
            .calls
            .map(|c| format!(", \"--backend\", \"{}:8080\"", address(c)))
            .unwrap_or_default();
        let _ = write!(
            text,
            "\n[[host]]\nname = \"{}\"\naddress = \"{}\"\nimage = \"{}\"\n\
             command = [\"/hello\", \"--port\", \"8080\"{backend}]\nports = [8080]\n\
             env = {{ BALLAST_MB = \"{}\", BALLAST_TOUCH = \"1\", SERVICE_MS = \"{}\" }}\n\
             memory = \"{}MiB\"\n\
             wake_timeout = \"20s\"\n{}",
            host.name,
            address(i),
            image::IMAGE,
            host.memory_mb,
            host.service_ms,
            policy::limit_mb(host),
            policy.host_keys(trace, i),
        );
    }
    text
}

/// The names of the hosts a request to `i` passes through (it, and whom it calls in turn).
fn path(trace: &Trace, mut i: usize) -> Vec<&str> {
    let mut names = vec![trace.hosts[i].name.as_str()];
    while let Some(next) = trace.hosts[i].calls {
        names.push(&trace.hosts[next].name);
        i = next;
    }
    names
}

/// What a trace run replays, from its flags: the trace's parameters (the seed chosen when none
/// is given), the bounds of [`seeds::OTHER_SEEDS`] it was chosen from (and the report lists),
/// and the policies. Every flag is checked here, once: a full bench makes its plan before its
/// other sections, so that bad flags fail at once, and hands it to [`measure`].
pub struct Plan {
    pub params: TraceParams,
    ideal_by_seed: seeds::Bounds,
    seed_is_median: bool,
    policies: Vec<Policy>,
}

pub fn plan(opts: &TraceOptions) -> anyhow::Result<Plan> {
    let policies = policy::select(&opts.policies).map_err(anyhow::Error::msg)?;
    if opts.hosts > MAX_HOSTS {
        bail!(
            "--trace-hosts {} is more than the trace subnet {SUBNET} holds ({MAX_HOSTS})",
            opts.hosts
        );
    }
    if !(opts.hours.is_finite() && opts.hours > 0.0) {
        bail!(
            "--trace-hours {} must be a number of hours above zero (2 replays two hours of the day)",
            opts.hours
        );
    }
    let mut params = TraceParams {
        seed: opts.seed.unwrap_or(0),
        hosts: opts.hosts,
        span_s: opts.hours * 3_600.0,
        warmup_s: policy::WARMUP_S,
        replay_s: opts.secs,
        max_rps: opts.max_rps,
        memory_scale: 0.1,
    };
    let by_seed = seeds::ideal_by_seed(&params);
    if opts.seed.is_none() {
        params.seed = seeds::median_seed(&by_seed).with_context(|| {
            format!(
                "none of seeds {}–{} makes a trace with these parameters; give one with \
                 --trace-seed",
                seeds::OTHER_SEEDS.start(),
                seeds::OTHER_SEEDS.end()
            )
        })?;
    }
    Ok(Plan {
        params,
        ideal_by_seed: by_seed,
        seed_is_median: opts.seed.is_none(),
        policies,
    })
}

/// Runs the trace benchmark with `client` (whose routes include [`SUBNET`]).
pub fn measure(
    binary: &Path,
    dir: &Path,
    client: &ClientNs,
    plan: Plan,
    machine: Machine,
) -> anyhow::Result<TraceRun> {
    let Plan {
        params,
        ideal_by_seed,
        seed_is_median,
        policies,
    } = plan;
    // Swap on disk, on the full bench's path too: what zram holds is still memory (counted).
    if (policies.iter()).any(|p| matches!(p.kind, policy::Kind::PauseSwap { .. })) {
        crate::preflight::ensure_disk_swap(8)?;
    }
    let trace = workload::generate(&params)?;
    let lead = params.measured_from_s();
    let measured = trace.arrivals.iter().filter(|a| a.at_s >= lead).count();
    eprintln!(
        "bench: trace, {} hosts, {measured} requests (+{} in a {lead:.0} s warm-up), {} h of the \
         day in {:.0} s per policy ({:.0}×), policies: {}",
        trace.hosts.len(),
        trace.arrivals.len() - measured,
        params.span_s / 3_600.0,
        params.replay_s,
        params.compression(),
        policies
            .iter()
            .map(|p| p.name)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut run = TraceRun {
        machine,
        compression: params.compression(),
        warmup_s: lead,
        warmup_requests: trace.arrivals.len() - measured,
        imag_idle_timeout: policy::timeout(&params, policy::IMAG_IDLE_S),
        keep_alive: policy::timeout(&params, policy::KEEP_ALIVE_S),
        ideal_saving_imag: workload::ideal_saving(&trace, policy::IMAG_IDLE_S),
        ideal_saving_keep_alive: workload::ideal_saving(&trace, policy::KEEP_ALIVE_S),
        ideal_curve: IDEAL_CURVE_S
            .iter()
            .map(|&t| (t, workload::ideal_saving(&trace, t)))
            .collect(),
        ideal_timeout_for_target_s: workload::timeout_for_saving(&trace, report::TARGET_SAVED),
        ideal_by_seed,
        seed_is_median,
        swap: (crate::preflight::swaps().into_iter())
            .map(|(name, kind)| format!("{name} ({kind})"))
            .collect(),
        params,
        hosts: trace.hosts.clone(),
        requests: measured,
        policies: Vec::new(),
    };
    for policy in &policies {
        let config = dir.join(format!("trace-{}.toml", policy.name));
        std::fs::write(&config, config_text(&trace, policy))?;
        cleanup(binary, &config);
        let result = replay_policy(binary, &config, client, &trace, policy);
        cleanup(binary, &config);
        let result =
            result.with_context(|| format!("replaying the trace under {}", policy.name))?;
        eprintln!(
            "  {:<16} memory {:>9.0} MiB·s  p50 {:.1} ms  p99 {:.1} ms  p99.9 {:.1} ms  \
             met a wake {:.2} %  failed {}  SYN retransmissions {}",
            result.name,
            result.memory_mb_s,
            result.latency_p50_ms,
            result.latency_p99_ms,
            result.latency_p999_ms,
            100.0 * result.met_wake,
            result.failed,
            result.syn_retransmissions
        );
        run.policies.push(result);
    }
    Ok(run)
}

fn wakes_by_tier(metrics: &Metrics) -> BTreeMap<String, f64> {
    ["absent", "stopped", "paused"]
        .into_iter()
        .map(|tier| {
            (
                tier.to_string(),
                metrics.sum("imag_wakes_total", &[("from", tier), ("result", "ok")]),
            )
        })
        .collect()
}

fn wait_state(agent: &AgentProcess, hosts: &[&str], state: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_mins(2);
    loop {
        let status = agent.status()?;
        let all = hosts.iter().all(|name| {
            status["hosts"]
                .as_array()
                .and_then(|h| h.iter().find(|h| h["name"] == *name))
                .is_some_and(|h| h["state"] == state)
        });
        if all {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("hosts {hosts:?} did not become {state} within 2 minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_agent(binary: &Path, config: &Path) -> anyhow::Result<AgentProcess> {
    Ok(AgentProcess::start(
        Launch::new(binary, config, &[HOST_IF]).args(&["--metrics", METRICS, "--on-exit", "keep"]),
    )?)
}

/// Creates every container (each touches its ballast), then puts them to sleep in the policy's
/// steady tier ([`Policy::steady_tier`]) unless it keeps them warm; `setup` is the always-on
/// configuration of the same hosts, whose agent never puts a host to sleep by itself (a policy's
/// own timeouts, scaled, may be shorter than a wake is observed).
fn set_up(binary: &Path, setup: &Path, trace: &Trace, policy: &Policy) -> anyhow::Result<()> {
    let mut agent = start_agent(binary, setup)?;
    let names: Vec<&str> = trace.hosts.iter().map(|h| h.name.as_str()).collect();
    for batch in names.chunks(SETUP_BATCH) {
        for name in batch {
            agent.command(&["wake", name])?;
        }
        wait_state(&agent, batch, "warm")?;
        if let Some(tier) = policy.steady_tier() {
            for name in batch {
                agent.command(&["sleep", name, "--tier", tier])?;
            }
            wait_state(&agent, batch, "asleep")?;
        }
    }
    agent.stop()?;
    Ok(())
}

fn replay_policy(
    binary: &Path,
    config: &Path,
    client: &ClientNs,
    trace: &Trace,
    policy: &Policy,
) -> anyhow::Result<PolicyRun> {
    let setup = config.with_file_name(format!("trace-setup-{}.toml", policy.name));
    std::fs::write(&setup, config_text(trace, &policy::ALWAYS_ON))?;
    set_up(binary, &setup, trace, policy)?;
    let agent = start_agent(binary, config)?;
    let pid = agent.pid().context("the agent has no process id")?;
    // Let the last sleeps settle and the engine calm down before the clock starts.
    std::thread::sleep(Duration::from_secs(2));
    let lead = trace.params.measured_from_s();
    let done = AtomicBool::new(false);
    let started = Instant::now();
    let measuring = started + Duration::from_secs_f64(lead);
    let (replayed, sampled, before, hosts_tcp) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| sample::run(NETWORK, pid, measuring, &done));
        // The hosts' own counters over the span: their warm-up's retransmissions are not its.
        let hosts_tcp = scope.spawn(|| losses::watch_hosts_tcp(NETWORK, measuring, &done));
        // The agent's counters as the measured span begins (the warm-up's wakes are not its).
        let before = scope.spawn(|| {
            if let Some(wait) = measuring.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let cpu = sample::cpu_s(pid);
            Metrics::scrape(METRICS.parse().expect("valid")).map(|m| (m, cpu))
        });
        let replayed = client.run(|| replay::replay(trace, address, started, lead));
        done.store(true, Ordering::Relaxed);
        (
            replayed,
            sampler.join().expect("the sampler does not panic"),
            before.join().expect("the scrape does not panic"),
            hosts_tcp.join().expect("the hosts' counters do not panic"),
        )
    });
    let seconds = measuring.elapsed().as_secs_f64();
    let replayed = replayed.context("entering the client namespace")??;
    let (before, agent_cpu_before) =
        before.context("reading the agent's metrics as the measured span began")?;
    let (hosts_tcp_start, mut host_runs) = hosts_tcp
        .map_err(anyhow::Error::msg)
        .context("reading the hosts' TCP counters as the measured span began")?;
    losses::record(
        &mut host_runs,
        losses::hosts_tcp_now(NETWORK)
            .map_err(anyhow::Error::msg)
            .context("reading the hosts' TCP counters as the measured span ended")?,
    );
    let agent_cpu_s = sample::cpu_s(pid) - agent_cpu_before;
    let after = Metrics::scrape(METRICS.parse().expect("valid"))?;
    let wakes: BTreeMap<String, f64> = wakes_by_tier(&after)
        .into_iter()
        .map(|(tier, n)| {
            let was = wakes_by_tier(&before).get(&tier).copied().unwrap_or(0.0);
            (tier, n - was)
        })
        .collect();
    let wakes_failed = after.sum("imag_wakes_total", &[])
        - before.sum("imag_wakes_total", &[])
        - wakes.values().sum::<f64>();
    let hosts_tcp = losses::hosts_tcp_since(&hosts_tcp_start, &host_runs);
    let log = agent.log_text();
    drop(agent);
    // Kept for whoever investigates a failed request or a slow wake (not part of the report).
    let log_path = config.with_file_name(format!("trace-agent-{}.log", policy.name));
    if let Err(err) = std::fs::write(&log_path, &log) {
        eprintln!(
            "trace: could not keep the agent's log at {}: {err}",
            log_path.display()
        );
    }
    let log_wakes = replay::wakes_in_log(&log);
    let mut run = summarize(trace, policy, &replayed, &sampled, &log_wakes, lead);
    run.seconds = seconds;
    run.agent_cpu_s = agent_cpu_s;
    run.wakes = wakes;
    run.wakes_failed = wakes_failed;
    let refused = |m: &Metrics| m.sum("imag_wakes_refused_total", &[("reason", "budget")]);
    run.wakes_refused_budget = refused(&after) - refused(&before);
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);
    run.page_outs = delta("imag_page_outs_total", &[("result", "done")]);
    run.page_out_busy_s = delta("imag_page_out_seconds_total", &[]);
    run.page_out_wait_s = delta("imag_page_out_wait_seconds_total", &[]);
    run.losses.datapath = losses::datapath(&before, &after);
    (run.losses.hosts_tcp, run.losses.hosts_syn_retrans) = hosts_tcp;
    Ok(run)
}

/// What the client saw and the sampler measured, as a row of the report.
fn summarize(
    trace: &Trace,
    policy: &Policy,
    replayed: &replay::Replayed,
    sampled: &sample::Sampled,
    log_wakes: &[replay::Wake],
    lead: f64,
) -> PolicyRun {
    let mut latencies: Vec<f64> = Vec::new();
    let mut failures = Vec::new();
    let mut met = 0usize;
    let measured = || replayed.done.iter().filter(|d| d.at_s >= lead);
    for d in measured() {
        if let Some(err) = &d.error {
            failures.push(format!("at {:.1} s: {err}", d.at_s - lead));
            continue;
        }
        latencies.push(d.latency_ms);
        let names = path(trace, d.host);
        if replay::met_wake(
            log_wakes,
            &names,
            d.wall_s,
            d.wall_s + d.latency_ms / 1000.0,
        ) {
            met += 1;
        }
    }
    let mut sorted = latencies.clone();
    sorted.sort_by(f64::total_cmp);
    // The wall clock of the measured span's start, from any measured request.
    let measured_wall = measured()
        .next()
        .map_or(f64::INFINITY, |d| d.wall_s - (d.at_s - lead));
    let mut wake_ms: Vec<f64> = log_wakes
        .iter()
        .filter(|w| w.to_s >= measured_wall)
        .map(|w| (w.to_s - w.from_s) * 1000.0)
        .collect();
    wake_ms.sort_by(f64::total_cmp);
    let (slow_unexplained, slow_listed) =
        losses::slow_unexplained(trace, measured(), log_wakes, lead);
    let host_memory_mb_s = sampled.memory_mb_s(|s| s.hosts_mb);
    let agent_memory_mb_s = sampled.memory_mb_s(|s| s.agent_mb);
    PolicyRun {
        name: policy.name.to_string(),
        what: policy.what.to_string(),
        host_memory_mb_s,
        swap_memory_mb_s: sampled.memory_mb_s(|s| s.swap_mb),
        agent_memory_mb_s,
        memory_mb_s: host_memory_mb_s + agent_memory_mb_s,
        peak_memory_mb: sampled
            .samples
            .iter()
            .map(|s| s.hosts_mb + s.agent_mb)
            .fold(0.0, f64::max),
        host_cpu_s: sampled.host_cpu_s,
        answered: latencies.len(),
        failed: failures.len(),
        latency_p50_ms: quantile(&sorted, 0.5),
        latency_p99_ms: quantile(&sorted, 0.99),
        latency_p999_ms: quantile(&sorted, 0.999),
        latency_max_ms: sorted.last().copied().unwrap_or(f64::NAN),
        met_wake: if latencies.is_empty() {
            0.0
        } else {
            met as f64 / latencies.len() as f64
        },
        failures: failures.into_iter().take(20).collect(),
        wakes_logged: wake_ms.len(),
        wake_p50_ms: quantile(&wake_ms, 0.5),
        wake_p99_ms: quantile(&wake_ms, 0.99),
        wakes_over_1s: wake_ms
            .iter()
            .filter(|&&ms| clients::syn_retransmissions_forced(ms) > 0)
            .count(),
        syn_retransmissions: replayed.syn_retransmissions,
        losses: losses::Losses {
            slow_unexplained,
            slow_listed,
            ..losses::Losses::default()
        },
        samples: sampled.samples.len(),
        series: sampled
            .samples
            .iter()
            .map(|s| (s.t_s, s.hosts_mb, s.agent_mb))
            .collect(),
        latencies: measured()
            .filter(|d| d.error.is_none())
            .map(|d| (d.at_s - lead, d.latency_ms))
            .collect(),
        ..PolicyRun::default()
    }
}

/// `cargo xtask bench trace` on its own, or as the full bench's last section: writes
/// `bench/trace.{md,json,png}`.
pub fn run(binary: &Path, dir: &Path, opts: &TraceOptions, machine: Machine) -> anyhow::Result<()> {
    // Fail on bad flags before anything is created.
    let plan = plan(opts)?;
    let client = ClientNs::create(
        super::NETNS,
        HOST_IF,
        "10.79.0.1/24",
        "10.79.0.2/24",
        &[SUBNET],
    )
    .context("creating the benchmark's client namespace")?;
    let run = measure(binary, dir, &client, plan, machine);
    drop(client);
    write(&run?)
}

pub fn write(run: &TraceRun) -> anyhow::Result<()> {
    let out: PathBuf = crate::workspace_root().join("bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("trace.json"), serde_json::to_string_pretty(run)?)?;
    let markdown = report::markdown(run);
    std::fs::write(out.join("trace.md"), &markdown)?;
    report::png(run, &out.join("trace.png"))?;
    println!("{markdown}");
    println!("written: bench/trace.md, bench/trace.json, bench/trace.png");
    Ok(())
}

#[cfg(test)]
mod tests;
