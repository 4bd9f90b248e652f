//! A storm of cold hosts against the engine's own floor, in one run: the engine alone creating
//! and starting the same 100 containers (image, command, fixed addresses on a bridge network of
//! their own) with at most N engine calls under way at once, for several N, each container
//! timed from the storm's start until it serves; then the same containers started from
//! "created" (the cost of a wake if imag created containers ahead of time); then imag woken by
//! 100 clients' first SYNs at once with `[limits] max_engine_calls` at the agent's default,
//! counting the clients' SYN retransmissions, in rounds interleaved with the engine alone at the
//! same N: the target compares the two at one concurrency, the median of rounds against the
//! median of rounds (a storm's p99 is its last container, and one storm on this machine varies
//! by ±15 %: one imag storm against the fastest of several engine storms compares a sample with
//! a minimum). Every storm starts on a quiet machine (`settle`): the previous one's containers
//! are torn down by the kernel for seconds after the engine said they were removed.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use imag_testkit::{AgentProcess, ClientNs, Launch};
use serde::Serialize;

use super::{HOST_IF, cleanup, client, engine, stats::summarize};
use crate::image;

/// The imag storm's subnet (the client namespace routes it through the attach interface).
pub const SUBNET: &str = "10.68.0.0/24";
const NETWORK: &str = "imagstormx";
const ENGINE_NETWORK: &str = "imagengine";
const ENGINE_SUBNET: &str = "10.67.0.0/24";
const HOSTS: usize = 100;
/// Engine calls under way at once, tried in this order ("all at once" first).
const CONCURRENCIES: [usize; 5] = [HOSTS, 32, 16, 8, 4];
/// How often a started container is asked whether it serves (imag's own `ready_poll` is 10 ms,
/// with a LISTEN event besides).
const SERVE_POLL: Duration = Duration::from_millis(5);
const BOUND: Duration = Duration::from_mins(5);
/// The target: imag's storm p99 at most this many times the engine's own.
pub const MAX_RATIO: f64 = 1.1;
/// Interleaved rounds of imag and the engine alone at the agent's default concurrency.
const ROUNDS: usize = 3;
/// The agent's default `[limits] max_engine_calls` (`DEFAULT_MAX_ENGINE_CALLS` in
/// `imag-agent/src/config/limits.rs`; the bench does not link the agent).
const DEFAULT_ENGINE_CALLS: usize = 16;

#[derive(Debug, Default, Serialize)]
pub struct EngineStorm {
    pub concurrency: usize,
    /// Whether each container was created in the storm (else it was created beforehand).
    pub create: bool,
    /// Storm start → the container serves (ms).
    pub serve_ms: Vec<f64>,
    pub create_call_ms: Vec<f64>,
    pub start_call_ms: Vec<f64>,
    pub failed: Vec<String>,
}

impl EngineStorm {
    /// The median engine calls, for the report ("create …, start …").
    fn call_p50s(&self) -> String {
        format!(
            "create {:.0}, start {:.0}",
            summarize(&self.create_call_ms).p50,
            summarize(&self.start_call_ms).p50
        )
    }
}

#[derive(Debug, Default, Serialize)]
pub struct ImagStorm {
    pub max_engine_calls: usize,
    /// Client connect → first byte of the answer (ms).
    pub client_ms: Vec<f64>,
    pub failed: Vec<String>,
    /// The client namespace's `TcpExtTCPSynRetrans` over the storm.
    pub syn_retransmits: u64,
    /// The agent's attaches to hosts' links that took ≥ 5 ms (its log), ms: time its host-link
    /// thread waited for the kernel's RTNL lock (the orchestrator meanwhile handles packets).
    #[serde(default)]
    pub slow_attach_ms: Vec<f64>,
}

#[derive(Debug, Default, Serialize)]
pub struct StormVsEngine {
    pub hosts: usize,
    /// The sweep: one storm per concurrency.
    pub engine: Vec<EngineStorm>,
    pub best_concurrency: usize,
    pub start_only: Option<EngineStorm>,
    /// The engine alone at the agent's default concurrency, one per round.
    pub paired_engine: Vec<EngineStorm>,
    /// imag at its default `max_engine_calls`, one per round (interleaved with `paired_engine`).
    pub imag: Vec<ImagStorm>,
}

fn name(i: usize) -> String {
    format!("{ENGINE_NETWORK}-e{i}")
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "at most 100 hosts: addresses .2 to .101"
)]
fn addr(subnet_third: u8, i: usize) -> SocketAddr {
    SocketAddr::from(([10, subnet_third, 0, (i + 2) as u8], 8080))
}

fn create(i: usize) -> anyhow::Result<()> {
    let body = serde_json::json!({
        "Image": image::IMAGE,
        "Cmd": ["/hello", "--port", "8080"],
        "Hostname": format!("e{i}"),
        "HostConfig": {
            "NetworkMode": ENGINE_NETWORK,
            "Init": true,
            "RestartPolicy": { "Name": "no" },
        },
        "NetworkingConfig": { "EndpointsConfig": { ENGINE_NETWORK: {
            "IPAMConfig": { "IPv4Address": addr(67, i).ip().to_string() }
        }}},
    });
    let (status, answer) = engine::request(
        "POST",
        &format!("/containers/create?name={}", name(i)),
        Some(&body.to_string()),
    )?;
    if status != 201 {
        bail!("creating {}: HTTP {status}: {answer}", name(i));
    }
    Ok(())
}

fn remove_all() {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= HOSTS {
                        break;
                    }
                    let _ = engine::request(
                        "DELETE",
                        &format!("/containers/{}?force=true", name(i)),
                        None,
                    );
                }
            });
        }
    });
}

fn poll_until_serving(addr: SocketAddr, since: Instant) -> Result<f64, String> {
    loop {
        match client::time_to_first_byte(addr, Duration::from_millis(500)) {
            Ok(_) => return Ok(since.elapsed().as_secs_f64() * 1000.0),
            Err(err) if since.elapsed() > BOUND => return Err(format!("{addr}: {err}")),
            Err(_) => std::thread::sleep(SERVE_POLL),
        }
    }
}

/// The machine's CPU time so far, (idle, total) in jiffies, from `/proc/stat`.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice: guest time is already in
    // user and nice, and steal is time this VM did not get (busy elsewhere, not here).
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((idle, fields.iter().take(7).sum()))
}

/// Waits (up to a minute) until the machine is quiet: a second with at least 90 % of its CPU
/// time idle. Removing 100 containers leaves the kernel tearing their network namespaces down
/// for seconds after the engine answered; a storm started then would pay for its predecessor's.
fn settle() {
    let deadline = Instant::now() + Duration::from_mins(1);
    while Instant::now() < deadline {
        let Some((idle0, total0)) = cpu_times() else {
            return;
        };
        std::thread::sleep(Duration::from_secs(1));
        let Some((idle1, total1)) = cpu_times() else {
            return;
        };
        #[allow(clippy::cast_precision_loss, reason = "jiffies over one second")]
        let idle = (idle1 - idle0) as f64 / (total1 - total0).max(1) as f64;
        if idle >= 0.9 {
            return;
        }
    }
    eprintln!("  (the machine stayed busy for a minute; storming anyway)");
}

/// The engine alone: 100 containers (created in the storm, or before it) started with at most
/// `concurrency` engine calls at once; each polled from its start until it serves. Starts on a
/// quiet machine ([`settle`]).
fn engine_storm(concurrency: usize, create_in_storm: bool) -> EngineStorm {
    settle();
    let next = AtomicUsize::new(0);
    let run = Mutex::new(EngineStorm {
        concurrency,
        create: create_in_storm,
        ..EngineStorm::default()
    });
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..concurrency {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= HOSTS {
                        break;
                    }
                    let called = Instant::now();
                    if create_in_storm && let Err(err) = create(i) {
                        run.lock().expect("no panic").failed.push(err.to_string());
                        continue;
                    }
                    let created = Instant::now();
                    if let Err(err) = engine::container_action(&name(i), "start") {
                        run.lock().expect("no panic").failed.push(err.to_string());
                        continue;
                    }
                    {
                        let mut run = run.lock().expect("no panic");
                        if create_in_storm {
                            run.create_call_ms
                                .push((created - called).as_secs_f64() * 1000.0);
                        }
                        run.start_call_ms
                            .push(created.elapsed().as_secs_f64() * 1000.0);
                    }
                    let run = &run;
                    s.spawn(move || match poll_until_serving(addr(67, i), start) {
                        Ok(ms) => run.lock().expect("no panic").serve_ms.push(ms),
                        Err(err) => run.lock().expect("no panic").failed.push(err),
                    });
                }
            });
        }
    });
    run.into_inner().expect("no panic")
}

/// Removes the engine baseline's network (if there is one), retrying for a few seconds: right
/// after 100 containers were removed at once the engine may still count endpoints on it.
fn remove_network() -> anyhow::Result<()> {
    let mut last = String::new();
    for _ in 0..10 {
        match engine::request("DELETE", &format!("/networks/{ENGINE_NETWORK}"), None)? {
            (204 | 200 | 404, _) => return Ok(()),
            (status, answer) => last = format!("HTTP {status}: {answer}"),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    bail!(
        "removing the engine baseline's network {ENGINE_NETWORK}: {last}. Docker 20.10 can keep \
         endpoints of containers removed at once (no container listed on the network): restart \
         the engine, then run the bench again"
    )
}

fn create_network() -> anyhow::Result<()> {
    remove_network()?;
    let body = serde_json::json!({
        "Name": ENGINE_NETWORK,
        "Driver": "bridge",
        "IPAM": { "Config": [{ "Subnet": ENGINE_SUBNET }] },
        "Options": { "com.docker.network.bridge.name": format!("{ENGINE_NETWORK}0") },
    });
    let (status, answer) = engine::request("POST", "/networks/create", Some(&body.to_string()))?;
    if status != 201 {
        bail!("creating the engine baseline's network {ENGINE_NETWORK}: HTTP {status}: {answer}");
    }
    Ok(())
}

fn syn_retransmits() -> u64 {
    // /proc/thread-self: the calling thread's network namespace (not the process's).
    let text = std::fs::read_to_string("/proc/thread-self/net/netstat").unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let [names, values] = lines[..] else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "TCPSynRetrans")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn imag_config(max_engine_calls: usize) -> anyhow::Result<String> {
    let mut text = format!(
        "[network]\nsubnet = \"{SUBNET}\"\nname = \"{NETWORK}\"\nbridge = \"{NETWORK}0\"\n\n\
         [limits]\nmax_engine_calls = {max_engine_calls}\nmax_concurrent_wakes = {HOSTS}\n"
    );
    for i in 0..HOSTS {
        write!(
            text,
            "\n[[host]]\nname = \"x{i}\"\naddress = \"{}\"\nimage = \"{}\"\n\
             command = [\"/hello\", \"--port\", \"8080\"]\nports = [8080]\nwake_timeout = \"300s\"\n",
            addr(68, i).ip(),
            image::IMAGE
        )?;
    }
    Ok(text)
}

fn imag_storm(
    binary: &Path,
    dir: &Path,
    client: &ClientNs,
    max_engine_calls: usize,
) -> anyhow::Result<ImagStorm> {
    let config = dir.join(format!("storm-engine-{max_engine_calls}.toml"));
    std::fs::write(&config, imag_config(max_engine_calls)?)?;
    cleanup(binary, &config);
    settle();
    let agent =
        AgentProcess::start(Launch::new(binary, &config, &[HOST_IF]).args(&["--metrics", "off"]))?;
    let (outcomes, retransmits) = client.run(|| {
        let before = syn_retransmits();
        let outcomes: Vec<Result<f64, String>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..HOSTS)
                .map(|i| {
                    s.spawn(move || {
                        client::time_to_first_byte(addr(68, i), BOUND)
                            .map(|d| d.as_secs_f64() * 1000.0)
                            .map_err(|e| format!("x{i}: {e}"))
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("no panic"))
                .collect()
        });
        (outcomes, syn_retransmits().saturating_sub(before))
    })?;
    let slow_attach_ms = super::budget_storm::slow_attaches(&agent.log_text());
    drop(agent);
    cleanup(binary, &config);
    let mut run = ImagStorm {
        max_engine_calls,
        syn_retransmits: retransmits,
        slow_attach_ms,
        ..ImagStorm::default()
    };
    for outcome in outcomes {
        match outcome {
            Ok(ms) => run.client_ms.push(ms),
            Err(err) => run.failed.push(err),
        }
    }
    Ok(run)
}

/// The rounds: imag at the agent's default `max_engine_calls` and the engine alone at the same
/// concurrency, who goes first alternating.
fn paired_rounds(
    binary: &Path,
    dir: &Path,
    client: &ClientNs,
    run: &mut StormVsEngine,
) -> anyhow::Result<()> {
    for round in 0..ROUNDS {
        // Alternate who goes first, so that neither always meets a machine just warmed (or
        // just loaded) by the other.
        let imag_first = round % 2 == 1;
        for imag_turn in [imag_first, !imag_first] {
            if imag_turn {
                eprintln!(
                    "bench: round {}: imag woken by {HOSTS} first SYNs at once, \
                     max_engine_calls = {DEFAULT_ENGINE_CALLS}",
                    round + 1
                );
                let storm = imag_storm(binary, dir, client, DEFAULT_ENGINE_CALLS)?;
                eprintln!(
                    "  {}/{HOSTS} answered, p99 {:.0} ms, {} SYN retransmissions",
                    storm.client_ms.len(),
                    summarize(&storm.client_ms).p99,
                    storm.syn_retransmits
                );
                run.imag.push(storm);
            } else {
                eprintln!(
                    "bench: round {}: the engine alone, {DEFAULT_ENGINE_CALLS} calls at once",
                    round + 1
                );
                remove_all();
                let storm = engine_storm(DEFAULT_ENGINE_CALLS, true);
                eprintln!(
                    "  serving: p99 {:.0} ms, {} failed",
                    summarize(&storm.serve_ms).p99,
                    storm.failed.len()
                );
                run.paired_engine.push(storm);
                remove_all();
            }
        }
    }
    Ok(())
}

/// The section. `client` must route [`SUBNET`] through the attach interface.
pub fn measure(binary: &Path, dir: &Path, client: &ClientNs) -> anyhow::Result<StormVsEngine> {
    let mut run = StormVsEngine {
        hosts: HOSTS,
        ..StormVsEngine::default()
    };
    create_network()?;
    let outcome = (|| -> anyhow::Result<()> {
        for concurrency in CONCURRENCIES {
            eprintln!(
                "bench: the engine alone creates and starts {HOSTS} containers, {concurrency} calls at once"
            );
            remove_all();
            let storm = engine_storm(concurrency, true);
            let s = summarize(&storm.serve_ms);
            eprintln!(
                "  serving: p50 {:.0} ms, p99 {:.0} ms (n = {}), {} failed",
                s.p50,
                s.p99,
                s.n,
                storm.failed.len()
            );
            run.engine.push(storm);
        }
        remove_all();
        let best = run
            .engine
            .iter()
            .filter(|e| e.failed.is_empty())
            .min_by(|a, b| {
                summarize(&a.serve_ms)
                    .p99
                    .total_cmp(&summarize(&b.serve_ms).p99)
            })
            .context("every engine storm had failures")?;
        run.best_concurrency = best.concurrency;
        eprintln!(
            "bench: the engine starts the same {HOSTS} containers created beforehand, {} calls at once",
            run.best_concurrency
        );
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= HOSTS {
                            break;
                        }
                        let _ = create(i);
                    }
                });
            }
        });
        let storm = engine_storm(run.best_concurrency, false);
        eprintln!(
            "  serving: p99 {:.0} ms; start call p50 {:.0} ms",
            summarize(&storm.serve_ms).p99,
            summarize(&storm.start_call_ms).p50
        );
        run.start_only = Some(storm);
        remove_all();
        paired_rounds(binary, dir, client, &mut run)
    })();
    remove_all();
    // The measurements are made: a network the engine will not let go of is the next run's
    // problem (it says so), not this one's.
    if let Err(err) = remove_network() {
        eprintln!("xtask: {err:#}");
    }
    outcome?;
    Ok(run)
}

impl StormVsEngine {
    fn best(&self) -> Option<&EngineStorm> {
        self.engine
            .iter()
            .find(|e| e.concurrency == self.best_concurrency)
    }

    /// The median over rounds of each round's p99 (ms).
    fn median_p99<'a>(storms: impl Iterator<Item = &'a [f64]>) -> f64 {
        super::stats::median(storms.map(|s| summarize(s).p99).collect())
    }

    /// Rows for the report's targets table: (target, measured, met).
    pub fn targets(&self) -> Vec<(String, String, bool)> {
        if self.imag.is_empty() || self.paired_engine.is_empty() {
            return Vec::new();
        }
        let ours = Self::median_p99(self.imag.iter().map(|i| i.client_ms.as_slice()));
        let engine = Self::median_p99(self.paired_engine.iter().map(|e| e.serve_ms.as_slice()));
        let answered = self.imag.iter().all(|i| i.client_ms.len() == self.hosts);
        let engine_failed: usize = self.paired_engine.iter().map(|e| e.failed.len()).sum();
        let retransmits: Vec<String> = self
            .imag
            .iter()
            .map(|i| i.syn_retransmits.to_string())
            .collect();
        let best = self.best().map_or(String::new(), |b| {
            format!(
                "; the sweep's fastest: {} at once, p99 {:.0} ms (one storm each)",
                b.concurrency,
                summarize(&b.serve_ms).p99
            )
        });
        let rounds: Vec<String> = self
            .imag
            .iter()
            .zip(&self.paired_engine)
            .map(|(i, e)| {
                format!(
                    "{:.2}",
                    summarize(&i.client_ms).p99 / summarize(&e.serve_ms).p99
                )
            })
            .collect();
        // How finely three rounds resolve a tenth: the rounds' own scatter.
        let p99s = |storms: Vec<&[f64]>| -> Vec<f64> {
            storms.into_iter().map(|s| summarize(s).p99).collect()
        };
        let noise = super::stats::noise_note(
            &p99s(self.imag.iter().map(|i| i.client_ms.as_slice()).collect()),
            &p99s(
                self.paired_engine
                    .iter()
                    .map(|e| e.serve_ms.as_slice())
                    .collect(),
            ),
            ours / engine - 1.0,
            MAX_RATIO - 1.0,
        );
        vec![(
            format!(
                "storm of {} cold hosts: imag p99 ≤ {MAX_RATIO}× the engine's own concurrent \
                 create+start p99 (same engine calls at once, medians of {} interleaved rounds), \
                 every SYN answered",
                self.hosts,
                self.imag.len()
            ),
            format!(
                "{:.3}× ({ours:.0} vs {engine:.0} ms at {} engine calls at once; by round {}){best}; \
                 imag answered {}/{} in every round: {}; the engine's own failures {engine_failed}; \
                 SYN retransmissions per round {} (the clients' own retries while held){noise}",
                ours / engine,
                DEFAULT_ENGINE_CALLS,
                rounds.join(", "),
                self.hosts,
                self.hosts,
                if answered { "yes" } else { "no" },
                retransmits.join(", ")
            ),
            ours <= MAX_RATIO * engine && answered,
        )]
    }

    pub fn markdown(&self) -> String {
        let mut out = String::from("\n## Storm against the engine's own floor\n\n");
        let _ = writeln!(
            out,
            "{} containers (the example image, fixed addresses on a bridge network), all asked for \
             at once. Engine: the Docker API alone creates and starts them with at most N calls \
             under way (create+start of one container counts as one slot, as in imag), and each \
             is polled every {} ms from its start until it serves; latency from the storm's start. \
             imag: {} clients' first SYNs at once to cold hosts (connect → first byte), with \
             `[limits] max_engine_calls` at the agent's default ({DEFAULT_ENGINE_CALLS}), in {} \
             rounds interleaved with the engine alone at the same concurrency (who goes first \
             alternates); the target compares the medians of their rounds' p99. First, one storm \
             per concurrency (the sweep) and one of starts only.\n",
            self.hosts,
            SERVE_POLL.as_millis(),
            self.hosts,
            self.imag.len()
        );
        out.push_str("| series | n | p50 ms | p95 ms | p99 ms | max ms | failed | API call p50 ms |\n|---|---|---|---|---|---|---|---|\n");
        let mut row = |name: String, samples: &[f64], failed: usize, call: String| {
            let s = summarize(samples);
            let _ = writeln!(
                out,
                "| {name} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {failed} | {call} |",
                s.n, s.p50, s.p95, s.p99, s.max
            );
        };
        for e in &self.engine {
            row(
                format!("engine create+start, {} at once", e.concurrency),
                &e.serve_ms,
                e.failed.len(),
                e.call_p50s(),
            );
        }
        if let Some(e) = &self.start_only {
            row(
                format!(
                    "engine start only (created beforehand), {} at once",
                    e.concurrency
                ),
                &e.serve_ms,
                e.failed.len(),
                format!("start {:.0}", summarize(&e.start_call_ms).p50),
            );
        }
        for (round, e) in self.paired_engine.iter().enumerate() {
            row(
                format!(
                    "round {}: engine create+start, {} at once",
                    round + 1,
                    e.concurrency
                ),
                &e.serve_ms,
                e.failed.len(),
                e.call_p50s(),
            );
        }
        for (round, i) in self.imag.iter().enumerate() {
            row(
                format!(
                    "round {}: imag, max_engine_calls = {} ({} SYN retransmissions{})",
                    round + 1,
                    i.max_engine_calls,
                    i.syn_retransmits,
                    match summarize(&i.slow_attach_ms) {
                        s if s.n == 0 => String::new(),
                        s => format!(
                            "; {} link attaches ≥ 5 ms, {:.1} s in all, the longest {:.0} ms",
                            s.n,
                            i.slow_attach_ms.iter().sum::<f64>() / 1000.0,
                            s.max
                        ),
                    }
                ),
                &i.client_ms,
                i.failed.len(),
                String::new(),
            );
        }
        out
    }
}
