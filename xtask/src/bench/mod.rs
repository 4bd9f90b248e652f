//! `cargo xtask bench`: imag's claims as numbers, each measured in the same run as its baseline,
//! written to `bench/results.{md,json}` and `bench/wake-latency.svg`.
//!
//! 1. Cold wakes (container stopped) through imag, interleaved with the engine's own floor: the
//!    Docker API start of the same container plus the time until it serves; readiness by event
//!    against a 10 ms poll.
//! 2. Standby wakes (container paused) through imag — cgroup thawed directly, and through the
//!    engine's unpause — interleaved with the engine's unpause plus serve.
//! 3. The warm path, three ways in rounds: no program attached, imag attached, a userspace TCP
//!    proxy (haproxy) in the path: request/response latency and bulk throughput.
//! 4. Names: a cold host's name answered by imag against Docker's embedded resolver answering a
//!    running container's, from inside the same container; queries per second on one core.
//! 5. Scale: 1,000 and 10,000 configured hosts (agent RSS, attach time, map memory) and storms
//!    of 50 and 100 cold hosts woken at once.
//! 6. The budget storm: 200 cold hosts woken under `[limits] max_warm = 20` (`budget_storm.rs`).
//! 7. The warm path per packet: each program's run time by the kernel's statistics against no-op
//!    programs of its hook, and small packets' latency and rate against no program
//!    (`per_packet.rs`, `noop.rs`).
//! 8. A storm of cold hosts against the engine's own concurrent create+start of the same
//!    containers: a sweep of engine-call concurrencies, then imag and the engine alone at the
//!    agent's default in interleaved rounds, each storm on a quiet machine (`storm.rs`).
//! 9. Chains of three cold hosts: one after another, with `wakes_with`, and learned, against a
//!    single cold host (`chain.rs`).
//! 10. The trace: a day of an Azure-Functions-shaped workload replayed under each sleep policy,
//!     memory-seconds against always-on (`trace/`, written to `bench/trace.{md,json,png}`; alone
//!     with `cargo xtask bench trace`).

mod alone;
mod bpf_stats;
mod budget_storm;
mod chain;
mod client;
mod cluster;
mod dns;
mod engine;
mod machine;
mod noop;
mod per_packet;
mod report;
mod scale;
pub mod stats;
mod storm;
pub mod trace;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use imag_testkit::{AgentProcess, ClientNs, Launch, agent::log_field as field};
pub use machine::Machine;
use machine::machine;
use serde::Serialize;

use crate::{cmd_output, image, run_cmd, workspace_root};

const NETNS: &str = "imagbench-c";
const HOST_IF: &str = "imagbench-h";
const NETWORK: &str = "imagbench";
const WEB: &str = "10.76.0.10:8080";
const SINK: &str = "10.76.0.11:9000";
const PROXY_WEB: &str = "10.79.0.1:18080";
const PROXY_SINK: &str = "10.79.0.1:19000";
const METRICS: &str = "127.0.0.1:19477";
/// What the full bench's client namespace routes through the attach interface: every section's
/// subnet, each its own (a route added twice fails the whole bench: `the_sections_subnets_are_
/// disjoint`).
const CLIENT_ROUTES: [&str; 7] = [
    "10.76.0.0/24",
    "10.64.0.0/18",
    scale::STORM_SUBNET,
    budget_storm::SUBNET,
    storm::SUBNET,
    chain::SUBNET,
    trace::SUBNET,
];

/// A section of the bench run on its own.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Section {
    /// The trace benchmark alone: writes bench/trace.{md,json,png}.
    Trace,
}

#[derive(Clone, Debug, clap::Args)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "command-line flags, one per section to skip or run alone"
)]
pub struct BenchOptions {
    /// Run only this section (default: every section).
    #[arg(value_enum)]
    pub section: Option<Section>,
    /// Cold wakes per series (each takes about a second, and as long again for its engine
    /// baseline); below 100 the report gives no p99 for them.
    #[arg(long, default_value_t = 25)]
    pub wakes: usize,
    /// Standby wakes per series (cheap: enough for a p99).
    #[arg(long, default_value_t = 100)]
    pub standby_wakes: usize,
    /// Requests per warm-path latency run.
    #[arg(long, default_value_t = 10_000)]
    pub requests: usize,
    /// Bytes per bulk-throughput run.
    #[arg(long, default_value_t = 2 << 30)]
    pub bytes: u64,
    /// Rounds of the warm-path comparison.
    #[arg(long, default_value_t = 7)]
    pub rounds: usize,
    /// Skip the scale section (1,000/10,000 hosts, storms of 50/100 wakes).
    #[arg(long)]
    pub no_scale: bool,
    /// Skip the budget storm (200 cold wakes under `max_warm = 20`).
    #[arg(long, conflicts_with = "budget_storm_only")]
    pub no_budget_storm: bool,
    /// Run only the budget storm; writes target/bench/budget-storm.{md,json}, not bench/.
    #[arg(long)]
    pub budget_storm_only: bool,
    /// Skip the per-packet section (kernel run-time statistics, small packets).
    #[arg(long, conflicts_with = "per_packet_only")]
    pub no_per_packet: bool,
    /// Run only the per-packet section; writes target/bench/per-packet.{md,json}, not bench/.
    #[arg(long, conflicts_with = "storm_only")]
    pub per_packet_only: bool,
    /// Skip the storm against the engine's own floor.
    #[arg(long, conflicts_with = "storm_only")]
    pub no_storm: bool,
    /// Run only the storm against the engine's own floor; writes target/bench/storm.{md,json}.
    #[arg(long)]
    pub storm_only: bool,
    /// Benchmark this agent binary instead of building one (e.g. to compare two revisions).
    #[arg(long, value_name = "PATH")]
    pub agent: Option<PathBuf>,
    /// Skip the chains of cold hosts (single vs chain vs `wakes_with` vs learned).
    #[arg(long, conflicts_with = "chain_only")]
    pub no_chain: bool,
    /// Run only the chains of cold hosts (`--wakes` rounds); writes target/bench/chain.{md,json}.
    #[arg(long)]
    pub chain_only: bool,
    /// Skip the scale-out section (multi-node clusters: cross-node latency, failover).
    #[arg(long, conflicts_with = "cluster_only")]
    pub no_cluster: bool,
    /// Run only the scale-out section; writes bench/cluster.{md,json}.
    #[arg(long)]
    pub cluster_only: bool,
    /// Skip the trace benchmark (nine policies, `--trace-secs` each).
    #[arg(long)]
    pub no_trace: bool,
    #[command(flatten)]
    pub trace: trace::TraceOptions,
}

/// One wake as the client and the agent saw it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WakeSample {
    /// Client: connect → first byte of the answer (ms).
    pub client_ms: f64,
    /// Agent: held → start requested, → running, → ready, → delivered, total (ms).
    pub phases_ms: [f64; 5],
    pub ready_by: String,
}

/// One baseline start (or unpause) through the engine.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EngineSample {
    /// The API call (ms).
    pub call_ms: f64,
    /// From the call to the first byte of an answer from the service (ms).
    pub serve_ms: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct Results {
    pub machine: Machine,
    pub cold_imag: Vec<WakeSample>,
    pub cold_engine: Vec<EngineSample>,
    pub cold_imag_poll: Vec<WakeSample>,
    pub standby_imag: Vec<WakeSample>,
    pub standby_imag_engine_unpause: Vec<WakeSample>,
    pub standby_engine: Vec<EngineSample>,
    pub warm: Vec<WarmRun>,
    pub dns: Option<dns::DnsRun>,
    pub scale: Vec<ScaleRun>,
    pub storms: Vec<StormRun>,
    pub budget_storm: Option<budget_storm::BudgetStormRun>,
    pub per_packet: Option<per_packet::PerPacketRun>,
    pub storm: Option<storm::StormVsEngine>,
    pub chain: Option<chain::ChainRun>,
    pub cluster: Option<cluster::ClusterRun>,
}

#[derive(Debug, Serialize)]
pub struct WarmRun {
    pub mode: &'static str,
    pub round: usize,
    pub latencies_us: Vec<f64>,
    pub throughput_gbps: f64,
}

#[derive(Debug, Serialize)]
pub struct ScaleRun {
    pub hosts: usize,
    pub attach_ms: f64,
    pub rss_mib: f64,
    pub map_memory_mib: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct StormRun {
    pub hosts: usize,
    pub succeeded: usize,
    pub client_ms: Vec<f64>,
}

#[allow(
    clippy::too_many_lines,
    reason = "the benchmark script: set-up, rounds, report, in the order they run"
)]
pub fn run(opts: &BenchOptions) -> anyhow::Result<()> {
    let binary = match &opts.agent {
        Some(path) if path.is_file() => path.clone(),
        Some(path) => bail!("--agent {}: no such file", path.display()),
        None => crate::prepare_agent("cargo xtask bench")?,
    };
    ensure_tools()?;
    let root = workspace_root();
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    if opts.budget_storm_only {
        return budget_storm::run_alone(&binary, &dir);
    }
    if opts.per_packet_only {
        return alone::per_packet(&binary, &dir, opts.rounds);
    }
    if opts.storm_only {
        return alone::storm(&binary, &dir);
    }
    if opts.chain_only {
        return chain::run_alone(&binary, &dir, opts.wakes);
    }
    if opts.cluster_only {
        let run = cluster::measure(&binary, 500, machine(&root))?;
        return cluster::write(&run, "cargo xtask bench --cluster-only");
    }
    if let Some(Section::Trace) = opts.section {
        return trace::run(&binary, &dir, &opts.trace, machine(&root));
    }
    // Bad trace flags fail now, not after the other sections.
    let trace_plan = if opts.no_trace {
        None
    } else {
        Some(trace::plan(&opts.trace)?)
    };

    let mut results = Results {
        machine: machine(&root),
        ..Default::default()
    };
    let client = ClientNs::create(
        NETNS,
        HOST_IF,
        "10.79.0.1/24",
        "10.79.0.2/24",
        &CLIENT_ROUTES,
    )
    .context("creating the benchmark's client namespace")?;
    let bench_config = |name: &str, extra: &str| -> anyhow::Result<PathBuf> {
        let path = dir.join(format!("imag-{name}.toml"));
        std::fs::write(&path, config_text(extra))?;
        Ok(path)
    };
    let base = bench_config("base", "")?;
    let mut trace_run = None;
    let outcome = (|| -> anyhow::Result<()> {
        cleanup(&binary, &base);
        eprintln!(
            "bench: cold and standby wakes ({} and {}), with the engine's floor",
            opts.wakes, opts.standby_wakes
        );
        let mut agent = start_agent(&binary, &base)?;
        // The first wake creates the container; the series then start and stop it.
        agent.command(&["wake", "web"])?;
        agent.command(&["wake", "sink"])?;
        wait_warm(&agent, &["web", "sink"])?;
        let _ = agent.wait_for_line(" woke ", Duration::from_secs(5));
        let _ = agent.wait_for_line(" woke ", Duration::from_secs(5));
        for i in 0..opts.wakes {
            results
                .cold_imag
                .push(imag_wake(&mut agent, &client, "stop", "exited")?);
            results
                .cold_engine
                .push(engine_wake(&mut agent, "stop", "exited", "start", "stop")?);
            eprint!("\r  cold {}/{}", i + 1, opts.wakes);
        }
        eprintln!();
        for i in 0..opts.standby_wakes {
            results
                .standby_imag
                .push(imag_wake(&mut agent, &client, "pause", "paused")?);
            results.standby_engine.push(engine_wake(
                &mut agent, "pause", "paused", "unpause", "pause",
            )?);
            eprint!("\r  standby {}/{}", i + 1, opts.standby_wakes);
        }
        eprintln!();
        agent.stop()?;

        eprintln!("bench: cold wakes with readiness by 10 ms poll instead of events");
        let poll = bench_config("poll", "[wake]\nready_events = false\n")?;
        let mut agent = start_agent(&binary, &poll)?;
        for _ in 0..opts.wakes {
            results
                .cold_imag_poll
                .push(imag_wake(&mut agent, &client, "stop", "exited")?);
        }
        agent.stop()?;

        eprintln!("bench: standby wakes through the engine's unpause (fast thaw off)");
        let slow_thaw = bench_config("engine-unpause", "[wake]\nfast_thaw = false\n")?;
        let mut agent = start_agent(&binary, &slow_thaw)?;
        for _ in 0..opts.standby_wakes {
            results
                .standby_imag_engine_unpause
                .push(imag_wake(&mut agent, &client, "pause", "paused")?);
        }
        agent.command(&["wake", "web"])?;
        agent.command(&["wake", "sink"])?;
        wait_warm(&agent, &["web", "sink"])?;
        agent.stop()?;

        eprintln!(
            "bench: warm path, {} rounds of none / imag / proxy",
            opts.rounds
        );
        let mut proxy = start_proxy(&dir)?;
        for round in 0..opts.rounds {
            // The order rotates from round to round, so that no mode always runs right after
            // another.
            let mut modes = ["none", "imag", "proxy"];
            modes.rotate_left(round % 3);
            for mode in modes {
                let agent = if mode == "imag" {
                    let agent = start_agent(&binary, &base)?;
                    wait_warm(&agent, &["web", "sink"])?;
                    // The host links' programs are attached just after adoption.
                    std::thread::sleep(Duration::from_millis(1500));
                    Some(agent)
                } else {
                    remove_pins(NETWORK);
                    None
                };
                let (web, sink) = match mode {
                    "proxy" => (PROXY_WEB, PROXY_SINK),
                    _ => (WEB, SINK),
                };
                let web: SocketAddr = web.parse().expect("valid");
                let sink: SocketAddr = sink.parse().expect("valid");
                let latencies_us =
                    client.run(|| client::request_latencies(web, opts.requests))??;
                let throughput_gbps =
                    client.run(|| client::bulk_throughput(sink, opts.bytes))??;
                eprintln!(
                    "  round {} {mode:>5}: p50 {:.1} µs, p99 {:.1} µs, {throughput_gbps:.2} Gbit/s",
                    round + 1,
                    stats::summarize(&latencies_us).p50,
                    stats::summarize(&latencies_us).p99
                );
                results.warm.push(WarmRun {
                    mode,
                    round,
                    latencies_us,
                    throughput_gbps,
                });
                if let Some(mut agent) = agent {
                    agent.stop()?;
                }
            }
        }
        let _ = proxy.kill();
        let _ = proxy.wait();

        if !opts.no_per_packet {
            let config = bench_config("per-packet", &per_packet::echo_host(image::IMAGE))?;
            results.per_packet = Some(per_packet::measure(&binary, &config, &client, opts.rounds)?);
            cleanup(&binary, &config);
        }

        eprintln!("bench: names (DNS) from inside a container, and queries per second");
        let names = bench_config("names", &dns::cold_host(image::IMAGE))?;
        let run = dns::measure(&binary, &names)?;
        let (imag, docker) = (
            stats::summarize(&run.imag_cold_us),
            stats::summarize(&run.docker_warm_us),
        );
        eprintln!(
            "  cold host by imag p50 {:.0} µs p99 {:.0} µs; running container by Docker p50 {:.0} \
             µs p99 {:.0} µs; {:.0} queries/s on one core",
            imag.p50, imag.p99, docker.p50, docker.p99, run.qps_one_core
        );
        results.dns = Some(run);
        cleanup(&binary, &base);

        if !opts.no_scale {
            scale::scale(&binary, &dir, &client, &mut results)?;
        }
        if !opts.no_budget_storm {
            results.budget_storm = Some(budget_storm::measure(&binary, &dir, &client)?);
        }
        if !opts.no_storm {
            results.storm = Some(storm::measure(&binary, &dir, &client)?);
        }
        if !opts.no_chain {
            results.chain = Some(chain::measure(&binary, &dir, &client, opts.wakes)?);
        }
        if !opts.no_cluster {
            results.cluster = Some(cluster::measure(&binary, 500, machine(&root))?);
        }
        if let Some(plan) = trace_plan {
            trace_run = Some(trace::measure(
                &binary,
                &dir,
                &client,
                plan,
                machine(&root),
            )?);
        }
        Ok(())
    })();
    cleanup(&binary, &base);
    drop(client);
    outcome?;

    let out = root.join("bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    std::fs::write(out.join("wake-latency.svg"), report::svg(&results))?;
    let mut markdown = report::markdown(&results);
    if let Some(run) = &results.chain {
        markdown.push('\n');
        markdown.push_str(&chain::markdown(run));
    }
    if let Some(run) = &results.cluster {
        markdown.push('\n');
        markdown.push_str(&cluster::markdown(run));
        cluster::write(run, "cargo xtask bench")?;
    }
    std::fs::write(out.join("results.md"), &markdown)?;
    println!("{markdown}");
    println!("written: bench/results.md, bench/results.json, bench/wake-latency.svg");
    if let Some(run) = trace_run {
        trace::write(&run)?;
    }
    Ok(())
}

fn config_text(extra: &str) -> String {
    format!(
        r#"[network]
subnet = "10.76.0.0/24"
name = "{NETWORK}"
bridge = "{NETWORK}0"

[[host]]
name = "web"
address = "10.76.0.10"
image = "{image}"
command = ["/hello", "--port", "8080"]
ports = [8080]

[[host]]
name = "sink"
address = "10.76.0.11"
image = "{image}"
command = ["/hello", "--sink", "9000"]
ports = [9000]

{extra}"#,
        image = image::IMAGE
    )
}

fn start_agent(binary: &Path, config: &Path) -> anyhow::Result<AgentProcess> {
    Ok(AgentProcess::start(
        Launch::new(binary, config, &[HOST_IF]).args(&["--on-exit", "keep", "--metrics", METRICS]),
    )?)
}

/// Puts `web` to sleep through the agent, waits until the engine reports `engine_state` and the
/// agent reports it asleep, then wakes it with a client request and collects the agent's phases.
fn imag_wake(
    agent: &mut AgentProcess,
    client: &ClientNs,
    tier: &str,
    engine_state: &str,
) -> anyhow::Result<WakeSample> {
    put_to_sleep(agent, tier, engine_state)?;
    let addr: SocketAddr = WEB.parse().expect("valid");
    let took = client.run(|| client::time_to_first_byte(addr, Duration::from_secs(30)))??;
    let line = agent.wait_for_line(" woke ", Duration::from_secs(10))?;
    Ok(WakeSample {
        client_ms: took.as_secs_f64() * 1000.0,
        phases_ms: parse_phases(&line),
        ready_by: field(&line, "ready_by").unwrap_or_default(),
    })
}

/// The engine's floor: with `web` asleep (in `tier`, through the agent), the engine alone
/// `wake_action`s it, and the time until it serves is measured from the host; then it is put
/// back with `sleep_action`.
fn engine_wake(
    agent: &mut AgentProcess,
    tier: &str,
    engine_state: &str,
    wake_action: &str,
    sleep_action: &str,
) -> anyhow::Result<EngineSample> {
    put_to_sleep(agent, tier, engine_state)?;
    let container = engine::container_name(NETWORK, "web");
    let start = Instant::now();
    let call = engine::container_action(&container, wake_action)?;
    let serve = client::until_serving(WEB.parse().expect("valid"), start, Duration::from_secs(30))?;
    engine::container_action(&container, sleep_action)?;
    engine::wait_for_state(&container, engine_state, Duration::from_secs(30))?;
    Ok(EngineSample {
        call_ms: call.as_secs_f64() * 1000.0,
        serve_ms: serve.as_secs_f64() * 1000.0,
    })
}

/// Brings `web` into `tier` through the agent (waking it first if it sleeps in another tier),
/// and waits until the engine reports `engine_state` and the agent reports it asleep.
fn put_to_sleep(agent: &mut AgentProcess, tier: &str, engine_state: &str) -> anyhow::Result<()> {
    let tier_name = match tier {
        "stop" => "stopped",
        "pause" => "paused",
        other => other,
    };
    let web = web_status(agent)?;
    if web["state"] == "asleep" && web["tier"] == tier_name {
        return engine::wait_for_state(
            &engine::container_name(NETWORK, "web"),
            engine_state,
            Duration::from_secs(30),
        );
    }
    if web["state"] != "warm" {
        agent.command(&["wake", "web"])?;
        wait_warm(agent, &["web"])?;
        agent.wait_for_line(" woke ", Duration::from_secs(30))?;
    }
    agent.command(&["sleep", "web", "--tier", tier])?;
    engine::wait_for_state(
        &engine::container_name(NETWORK, "web"),
        engine_state,
        Duration::from_secs(30),
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while web_status(agent)?["state"] != "asleep" {
        if Instant::now() > deadline {
            bail!("web did not fall asleep");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn web_status(agent: &AgentProcess) -> anyhow::Result<serde_json::Value> {
    Ok(agent.host("web")?)
}

fn wait_warm(agent: &AgentProcess, hosts: &[&str]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let status = agent.status()?;
        let all_warm = hosts.iter().all(|name| {
            status["hosts"]
                .as_array()
                .and_then(|h| h.iter().find(|h| h["name"] == *name))
                .is_some_and(|h| h["state"] == "warm")
        });
        if all_warm {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("hosts {hosts:?} did not become warm");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn parse_phases(line: &str) -> [f64; 5] {
    let mut phases = [0.0; 5];
    for (slot, name) in phases.iter_mut().zip([
        "held_to_start_ms",
        "start_to_running_ms",
        "running_to_ready_ms",
        "ready_to_delivered_ms",
        "total_ms",
    ]) {
        *slot = field(line, name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
    }
    phases
}

/// Removes the pinned datapath of a network (detaching its programs) without touching its
/// containers or firewall rules: the "no program attached" mode.
fn remove_pins(network: &str) {
    let dir = Path::new("/sys/fs/bpf/imag").join(network);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let _ = std::fs::remove_dir(&dir);
    // Give the kernel a moment to release the links.
    std::thread::sleep(Duration::from_millis(200));
}

/// Removes what a configuration left (agent-side detach: pins, rules, containers, network).
fn cleanup(binary: &Path, config: &Path) {
    let _ = Command::new(binary)
        .args(["detach", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn start_proxy(dir: &Path) -> anyhow::Result<Child> {
    let config = dir.join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "global\n  maxconn 1000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 120s\n  timeout server 120s\n\
             frontend web\n  bind {PROXY_WEB}\n  default_backend web\nbackend web\n  server web {WEB}\n\
             frontend sink\n  bind {PROXY_SINK}\n  default_backend sink\nbackend sink\n  server sink {SINK}\n"
        ),
    )?;
    let child = Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting haproxy")?;
    std::thread::sleep(Duration::from_millis(500));
    Ok(child)
}

fn ensure_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = [("haproxy", "haproxy"), ("bpftool", "bpftool")]
        .iter()
        .filter(|(tool, _)| cmd_output(Command::new("which").arg(tool)).is_none())
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("bench: installing {}", missing.join(" "));
    run_cmd(Command::new("apt-get").args(["install", "-y", "-qq"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive"))
        .context("the benchmarks need haproxy (the userspace proxy baseline) and bpftool (map memory): install them")
}

#[cfg(test)]
mod tests {
    /// (first address, last address) of "a.b.c.d/len".
    fn range(net: &str) -> (u32, u32) {
        let (addr, len) = net.split_once('/').expect("a prefix");
        let addr: std::net::Ipv4Addr = addr.parse().expect("an address");
        let len: u32 = len.parse().expect("a length");
        let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
        let first = u32::from(addr) & mask;
        (first, first | !mask)
    }

    #[test]
    fn the_sections_subnets_are_disjoint() {
        let routes = super::CLIENT_ROUTES;
        for (i, a) in routes.iter().enumerate() {
            for b in &routes[i + 1..] {
                let ((a0, a1), (b0, b1)) = (range(a), range(b));
                assert!(a1 < b0 || b1 < a0, "{a} and {b} overlap");
            }
        }
    }
}
