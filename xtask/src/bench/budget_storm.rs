//! Section 6 of `cargo xtask bench`, the budget storm: 200 cold hosts woken in batches under
//! `[limits] max_warm = 20`. Every first request must be answered or refused fast (a wake with no
//! room is answered with a RST), none may hang past a bound; the warm hosts — the agent's budget
//! on /metrics and the engine's running containers — are sampled every 100 ms and must never
//! exceed the limit; and wakes that first evicted a least-recently-used host are compared with
//! plain wakes into the empty budget (the first batch) of the same run. `mod.rs` runs it after the
//! scale section (or alone, with `--budget-storm-only`); `report.rs` writes its table.

use std::{
    collections::HashSet,
    fmt::Write as _,
    io,
    net::SocketAddr,
    path::Path,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use imag_testkit::{AgentProcess, ClientNs, Launch, metrics::Metrics};
use serde::Serialize;

use super::{HOST_IF, METRICS, NETNS, cleanup, client, field, report, stats::summarize};
use crate::{cmd_output, image, workspace_root};

/// The storm's hosts, its limit, and how many first requests go out at once.
const HOSTS: usize = 200;
const MAX_WARM: usize = 20;
const BATCH: usize = 25;
/// The client namespace routes it through the attach interface.
pub const SUBNET: &str = "10.66.0.0/24";
const NETWORK: &str = "imagbudget";
/// A request neither answered nor refused by then hangs (wakes queue at most their
/// `wake_timeout`, 20 s here).
const BOUND: Duration = Duration::from_secs(30);
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// What "refused fast" means here: well before any wake could answer.
pub const REFUSED_FAST_MS: f64 = 100.0;

#[derive(Debug, Default, Serialize)]
pub struct BudgetStormRun {
    pub hosts: usize,
    pub max_warm: usize,
    pub batch: usize,
    pub bound_ms: f64,
    /// Client connect → first byte, for hosts woken without an eviction made for them (ms).
    pub plain_wake_ms: Vec<f64>,
    /// The same, for hosts whose wake first evicted another host (ms).
    pub evict_wake_ms: Vec<f64>,
    /// Client connect → connection refused (ms).
    pub refused_ms: Vec<f64>,
    /// Requests neither answered nor refused within the bound.
    pub hung: usize,
    /// Requests that failed otherwise (reset after connecting, a wrong answer).
    pub failed: Vec<String>,
    /// The most of `imag_budget_used{resource="warm"}`, `imag_hosts{state="warm"}` and running
    /// or paused containers on the network seen by any sample.
    pub max_budget_used: f64,
    pub max_warm_hosts: f64,
    pub max_containers: usize,
    pub metric_samples: usize,
    pub engine_samples: usize,
    pub evictions: f64,
    pub refused_budget: f64,
    pub seconds: f64,
    /// The agent's own time from a refused wake's held packet (the kernel's hold) to the
    /// refusal (its log's `held_to_failure_ms`), ms: beside `refused_ms`, what the agent took
    /// and what the client's side did.
    #[serde(default)]
    pub agent_refused_ms: Vec<f64>,
    /// Attaches to hosts' links the agent logged as slow (≥ 5 ms, waiting on the kernel's RTNL
    /// lock; on the agent's host-link thread, not its orchestrator), ms.
    #[serde(default)]
    pub slow_attach_ms: Vec<f64>,
}

impl BudgetStormRun {
    pub fn answered(&self) -> usize {
        self.plain_wake_ms.len() + self.evict_wake_ms.len()
    }

    /// Every request answered, or refused within [`REFUSED_FAST_MS`]; none hung or failed.
    pub fn settled_fast(&self) -> bool {
        self.hung == 0
            && self.failed.is_empty()
            && self.answered() + self.refused_ms.len() == self.hosts
            && summarize(&self.refused_ms).max <= REFUSED_FAST_MS
    }

    /// The most warm hosts any sample saw (budget, host states, engine).
    pub fn most_warm(&self) -> f64 {
        self.max_budget_used
            .max(self.max_warm_hosts)
            .max(self.max_containers as f64)
    }
}

fn config_text() -> anyhow::Result<String> {
    let mut text = format!(
        "[network]\nsubnet = \"{SUBNET}\"\nname = \"{NETWORK}\"\nbridge = \"{NETWORK}0\"\n\n\
         [limits]\nmax_warm = {MAX_WARM}\n"
    );
    for i in 0..HOSTS {
        // `min_warm = "0s"`: a host that has answered may be evicted at once.
        write!(
            text,
            "\n[[host]]\nname = \"b{i}\"\naddress = \"10.66.0.{}\"\nimage = \"{}\"\n\
             command = [\"/hello\", \"--port\", \"8080\"]\nports = [8080]\nmin_warm = \"0s\"\n\
             wake_timeout = \"20s\"\n",
            i + 2,
            image::IMAGE
        )?;
    }
    Ok(text)
}

enum Outcome {
    Answered(f64),
    Refused(f64),
    Hung,
    Failed(String),
}

fn first_request(i: usize) -> Outcome {
    #[allow(
        clippy::cast_possible_truncation,
        reason = "hosts 0..200: addresses .2 to .201"
    )]
    let addr = SocketAddr::from(([10, 66, 0, (i + 2) as u8], 8080));
    let start = Instant::now();
    match client::time_to_first_byte(addr, BOUND) {
        Ok(took) => Outcome::Answered(took.as_secs_f64() * 1000.0),
        Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
            Outcome::Refused(start.elapsed().as_secs_f64() * 1000.0)
        }
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            Outcome::Hung
        }
        Err(err) => Outcome::Failed(format!("b{i}: {err}")),
    }
}

/// The most warm hosts seen by sampling /metrics and the engine every 100 ms until `done`.
#[derive(Default)]
struct Peaks {
    budget_used: f64,
    warm_hosts: f64,
    metric_samples: usize,
    containers: usize,
    engine_samples: usize,
}

fn sample(done: &AtomicBool) -> Peaks {
    let metrics: SocketAddr = METRICS.parse().expect("valid");
    std::thread::scope(|scope| {
        let engine = scope.spawn(|| {
            let (mut most, mut samples) = (0, 0);
            every_tick(done, || {
                let ids = cmd_output(Command::new("docker").args([
                    "ps",
                    "-q",
                    "--filter",
                    &format!("network={NETWORK}"),
                    "--filter",
                    "status=running",
                    "--filter",
                    "status=paused",
                ]));
                if let Some(ids) = ids {
                    most = most.max(ids.lines().filter(|l| !l.is_empty()).count());
                    samples += 1;
                }
            });
            (most, samples)
        });
        let mut peaks = Peaks::default();
        every_tick(done, || {
            if let Ok(m) = Metrics::scrape(metrics) {
                let used = m.value("imag_budget_used", &[("resource", "warm")]);
                let warm = m.value("imag_hosts", &[("state", "warm")]);
                peaks.budget_used = peaks.budget_used.max(used);
                peaks.warm_hosts = peaks.warm_hosts.max(warm);
                peaks.metric_samples += 1;
            }
        });
        (peaks.containers, peaks.engine_samples) = engine.join().expect("no panic");
        peaks
    })
}

/// Runs `probe` every [`SAMPLE_EVERY`] (or as often as it returns, if slower) until `done`.
fn every_tick(done: &AtomicBool, mut probe: impl FnMut()) {
    let mut next = Instant::now();
    while !done.load(Ordering::Relaxed) {
        probe();
        next += SAMPLE_EVERY;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// The storm, from `client` (whose routes include [`SUBNET`]).
pub fn measure(binary: &Path, dir: &Path, client: &ClientNs) -> anyhow::Result<BudgetStormRun> {
    eprintln!(
        "bench: budget storm, {HOSTS} cold hosts in batches of {BATCH} with max_warm = {MAX_WARM}"
    );
    let config = dir.join("budget-storm.toml");
    std::fs::write(&config, config_text()?)?;
    cleanup(binary, &config);
    let agent = AgentProcess::start(Launch::new(binary, &config, &[HOST_IF]).args(&[
        "--metrics",
        METRICS,
        "--on-exit",
        "keep",
    ]))?;
    let mut run = BudgetStormRun {
        hosts: HOSTS,
        max_warm: MAX_WARM,
        batch: BATCH,
        bound_ms: BOUND.as_secs_f64() * 1000.0,
        ..BudgetStormRun::default()
    };
    let done = AtomicBool::new(false);
    let started = Instant::now();
    let (outcomes, peaks) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| sample(&done));
        let outcomes = (0..HOSTS)
            .step_by(BATCH)
            .map(|first| {
                let batch = client.run(|| {
                    std::thread::scope(|s| {
                        let workers: Vec<_> = (first..(first + BATCH).min(HOSTS))
                            .map(|i| s.spawn(move || (i, first_request(i))))
                            .collect();
                        workers
                            .into_iter()
                            .map(|w| w.join().expect("no panic"))
                            .collect::<Vec<_>>()
                    })
                });
                eprint!("\r  {}/{HOSTS}", (first + BATCH).min(HOSTS));
                batch
            })
            .collect::<io::Result<Vec<_>>>();
        done.store(true, Ordering::Relaxed);
        (outcomes, sampler.join().expect("no panic"))
    });
    eprintln!();
    run.seconds = started.elapsed().as_secs_f64();
    let outcomes = outcomes.context("running the storm's clients in their namespace")?;
    // A wake that evicted names itself in the eviction's log line (`for_host=`).
    let log = agent.log_text();
    (run.agent_refused_ms, run.slow_attach_ms) = agent_times(&log);
    let evicted_for: HashSet<String> = log
        .lines()
        .filter(|l| l.contains("evicting to make room"))
        .filter_map(|l| field(l, "for_host"))
        .collect();
    for (i, outcome) in outcomes.into_iter().flatten() {
        match outcome {
            Outcome::Answered(ms) if evicted_for.contains(&format!("b{i}")) => {
                run.evict_wake_ms.push(ms);
            }
            Outcome::Answered(ms) => run.plain_wake_ms.push(ms),
            Outcome::Refused(ms) => run.refused_ms.push(ms),
            Outcome::Hung => run.hung += 1,
            Outcome::Failed(why) => run.failed.push(why),
        }
    }
    if let Ok(m) = Metrics::scrape(METRICS.parse().expect("valid")) {
        run.evictions = m.sum("imag_evictions_total", &[]);
        run.refused_budget = m.value("imag_wakes_refused_total", &[("reason", "budget")]);
    }
    run.max_budget_used = peaks.budget_used;
    run.max_warm_hosts = peaks.warm_hosts;
    run.metric_samples = peaks.metric_samples;
    run.max_containers = peaks.containers;
    run.engine_samples = peaks.engine_samples;
    drop(agent);
    cleanup(binary, &config);
    let (plain, evict) = (summarize(&run.plain_wake_ms), summarize(&run.evict_wake_ms));
    eprintln!(
        "  {} answered ({} plain: p50 {:.0} ms p99 {:.0} ms; {} after an eviction: p50 {:.0} ms \
         p99 {:.0} ms), {} refused (max {:.1} ms), {} hung, {} failed; warm at most {} \
         (budget) / {} (hosts) / {} (containers), limit {MAX_WARM}",
        run.answered(),
        plain.n,
        plain.p50,
        plain.p99,
        evict.n,
        evict.p50,
        evict.p99,
        run.refused_ms.len(),
        summarize(&run.refused_ms).max,
        run.hung,
        run.failed.len(),
        run.max_budget_used,
        run.max_warm_hosts,
        run.max_containers
    );
    for failure in &run.failed {
        eprintln!("  failed: {failure}");
    }
    Ok(run)
}

/// From the agent's log: each wake refused for the budget, its held packet → refusal (ms); each
/// slow attach to a host's link (ms).
fn agent_times(log: &str) -> (Vec<f64>, Vec<f64>) {
    let ms = |line: &str, name: &str| field(line, name).and_then(|v| v.parse::<f64>().ok());
    let refused = (log.lines())
        .filter(|l| l.contains("wake failed") && field(l, "reason").as_deref() == Some("budget"))
        .filter_map(|l| ms(l, "held_to_failure_ms"))
        .collect();
    (refused, slow_attaches(log))
}

/// From the agent's log: each attach to a host's link it logged as slow (≥ 5 ms), ms.
pub(super) fn slow_attaches(log: &str) -> Vec<f64> {
    (log.lines())
        .filter(|l| l.contains("attaching to the host's link was slow"))
        .filter_map(|l| field(l, "took_ms")?.parse().ok())
        .collect()
}

/// `--budget-storm-only`: the storm on its own, written to `target/bench/budget-storm.{md,json}`
/// so that a partial run never replaces the full report in `bench/`.
pub fn run_alone(binary: &Path, dir: &Path) -> anyhow::Result<()> {
    let client = ClientNs::create(
        NETNS,
        super::HOST_IF,
        "10.79.0.1/24",
        "10.79.0.2/24",
        &[SUBNET],
    )
    .context("creating the benchmark's client namespace")?;
    let run = measure(binary, dir, &client);
    drop(client);
    let run = run?;
    std::fs::write(
        dir.join("budget-storm.json"),
        serde_json::to_string_pretty(&run)?,
    )?;
    let markdown = report::budget_storm(&run);
    std::fs::write(dir.join("budget-storm.md"), &markdown)?;
    println!("{markdown}");
    let shown = dir.strip_prefix(workspace_root()).unwrap_or(dir).display();
    println!("written: {shown}/budget-storm.md, {shown}/budget-storm.json");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_s_refusals_and_slow_attaches_are_read_from_its_log() {
        let log = r#"
2026-12-07T18:00:00.1Z  WARN imag_agent: wake failed host=b3 outcome="failed" reason="budget" packets=1 held_to_start_ms=0.00 start_to_failure_ms=0.00 held_to_failure_ms=12.50 error=x
2026-12-07T18:00:00.2Z  WARN imag_agent: wake failed host=b4 outcome="failed" reason="engine_error" held_to_failure_ms=9.00 error=y
2026-12-07T18:00:00.3Z  INFO imag_agent: attaching to the host's link was slow host=b5 took_ms=31.4
"#;
        let (refused, attaches) = agent_times(log);
        assert_eq!(refused, [12.5]);
        assert_eq!(attaches, [31.4]);
    }
}
