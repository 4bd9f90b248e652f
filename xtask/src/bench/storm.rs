//! A storm of cold hosts against the engine's own floor, in one run: the engine alone creating
//! and starting the same 100 containers (image, command, fixed addresses on a bridge network of
//! their own) with at most N engine calls under way at once, for several N, each container
//! timed from the storm's start until it serves; then the same containers started from
//! "created" (the cost of a wake if imag created containers ahead of time); then imag woken by
//! 100 clients' first SYNs at once with `[limits] max_engine_calls` at the fastest N (and at
//! the default, when that differs), counting the clients' SYN retransmissions.

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

#[derive(Debug, Default, Serialize)]
pub struct ImagStorm {
    pub max_engine_calls: usize,
    /// Client connect → first byte of the answer (ms).
    pub client_ms: Vec<f64>,
    pub failed: Vec<String>,
    /// The client namespace's `TcpExtTCPSynRetrans` over the storm.
    pub syn_retransmits: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct StormVsEngine {
    pub hosts: usize,
    pub engine: Vec<EngineStorm>,
    pub best_concurrency: usize,
    pub start_only: Option<EngineStorm>,
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

/// The engine alone: 100 containers (created in the storm, or before it) started with at most
/// `concurrency` engine calls at once; each polled from its start until it serves.
fn engine_storm(concurrency: usize, create_in_storm: bool) -> EngineStorm {
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

fn create_network() -> anyhow::Result<()> {
    let _ = engine::request("DELETE", &format!("/networks/{ENGINE_NETWORK}"), None);
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
    drop(agent);
    cleanup(binary, &config);
    let mut run = ImagStorm {
        max_engine_calls,
        syn_retransmits: retransmits,
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
        let mut bounds = vec![run.best_concurrency];
        // The agent's default (`[limits] max_engine_calls`).
        let default = 16;
        if run.best_concurrency != default {
            bounds.push(default);
        }
        for max_engine_calls in bounds {
            eprintln!(
                "bench: imag woken by {HOSTS} first SYNs at once, max_engine_calls = {max_engine_calls}"
            );
            let storm = imag_storm(binary, dir, client, max_engine_calls)?;
            eprintln!(
                "  {}/{HOSTS} answered, p99 {:.0} ms, {} SYN retransmissions",
                storm.client_ms.len(),
                summarize(&storm.client_ms).p99,
                storm.syn_retransmits
            );
            run.imag.push(storm);
        }
        Ok(())
    })();
    remove_all();
    let _ = engine::request("DELETE", &format!("/networks/{ENGINE_NETWORK}"), None);
    outcome?;
    Ok(run)
}

impl StormVsEngine {
    fn best(&self) -> Option<&EngineStorm> {
        self.engine
            .iter()
            .find(|e| e.concurrency == self.best_concurrency)
    }

    /// Rows for the report's targets table: (target, measured, met).
    pub fn targets(&self) -> Vec<(String, String, bool)> {
        let (Some(best), Some(imag)) = (self.best(), self.imag.first()) else {
            return Vec::new();
        };
        let (engine, ours) = (summarize(&best.serve_ms), summarize(&imag.client_ms));
        vec![(
            format!(
                "storm of {} cold hosts: imag p99 ≤ {MAX_RATIO}× the engine's own concurrent create+start p99, every SYN answered",
                self.hosts
            ),
            format!(
                "{:.2}× ({:.0} vs {:.0} ms at {} engine calls at once); {}/{} answered; {} SYN retransmissions",
                ours.p99 / engine.p99,
                ours.p99,
                engine.p99,
                imag.max_engine_calls,
                ours.n,
                self.hosts,
                imag.syn_retransmits
            ),
            ours.p99 <= MAX_RATIO * engine.p99 && ours.n == self.hosts,
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
             `[limits] max_engine_calls`.\n",
            self.hosts,
            SERVE_POLL.as_millis(),
            self.hosts
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
                format!(
                    "create {:.0}, start {:.0}",
                    summarize(&e.create_call_ms).p50,
                    summarize(&e.start_call_ms).p50
                ),
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
        for i in &self.imag {
            row(
                format!(
                    "imag, max_engine_calls = {} ({} SYN retransmissions)",
                    i.max_engine_calls, i.syn_retransmits
                ),
                &i.client_ms,
                i.failed.len(),
                String::new(),
            );
        }
        out
    }
}
