//! The warm path per packet: what each of imag's programs costs per run, by the kernel's own
//! run-time statistics (`BPF_ENABLE_STATS`, off again when its descriptor closes), next to no-op
//! programs of the same hook (`noop.rs`) on the same traffic in the same run; and small packets'
//! latency and rate through imag against no program, in interleaved rounds. Beside each no-op a
//! floor (`noop::floor_code`: two array lookups, a count and a stamp) says what any program that
//! counts a host's packets costs on the same packets; each traffic runs `PASSES` times and a
//! program's figure is the median pass.
//!
//! Traffic, from the client namespace to warm hosts: bulk TCP (GSO-sized packets), 64-byte UDP
//! request/response one at a time, and 64-byte UDP requests kept 32 in flight (a high packet
//! rate). The holding program is measured hooked both ways the agent can hook it (`--hook tc`,
//! the default on virtual interfaces, and `--hook xdp-generic`); no-ops sit on the client's own
//! interface (TC egress: the client's packets; XDP ingress: the answers), first on each imag TC
//! program's hooks, and at XDP on the holding program's interfaces while it is hooked by TC.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use imag_testkit::{AgentProcess, ClientNs, Launch};
use serde::Serialize;

use super::{
    HOST_IF, METRICS, NETWORK, SINK,
    bpf_stats::{PASSES, Workload, passes},
    client,
    noop::{self, BesideImag, Noops, XdpBaselines},
    remove_pins,
    stats::{median, noise_note, summarize},
    wait_warm,
};
use crate::cmd_output;

/// The UDP echo host the section adds to the benchmark's configuration.
pub const ECHO: &str = "10.76.0.12:5353";
const WARM_HOSTS: [&str; 3] = ["web", "sink", "echo"];
/// Bulk TCP per measurement (GSO packets: few runs, many bytes each).
const BULK_BYTES: u64 = 512 << 20;
const RR_COUNT: usize = 10_000;
const RATE_WINDOW: usize = 32;
const RATE_FOR: Duration = Duration::from_secs(2);
/// Per round of the small-packet comparison.
const ROUND_RR: usize = 5_000;
/// The target: every program on the warm path at most this many times its hook's no-op.
pub const MAX_RATIO: f64 = 2.0;

/// The host the section adds to the base configuration.
pub fn echo_host(image: &str) -> String {
    format!(
        "[[host]]\nname = \"echo\"\naddress = \"10.76.0.12\"\nimage = \"{image}\"\n\
         command = [\"/hello\", \"--udp\", \"5353\"]\nready = \"udp:5353\"\n"
    )
}

#[derive(Debug, Default, Serialize)]
pub struct PerPacketRun {
    pub costs: Vec<ProgramCost>,
    pub rounds: Vec<SmallRound>,
    /// `kernel.bpf_stats_enabled` read back after the measurements.
    pub stats_enabled_after: String,
}

#[derive(Debug, Serialize)]
pub struct ProgramCost {
    /// The agent's `--hook`.
    pub hook: &'static str,
    pub workload: &'static str,
    pub program: String,
    /// "tc" or "xdp": which no-op it compares with.
    pub kind: &'static str,
    pub noop: bool,
    /// For a no-op or a floor on an imag program's own hooks: that program.
    pub beside: Option<&'static str>,
    /// The floor (`noop::floor_code`), a baseline too.
    pub floor: bool,
    /// Runs over all passes.
    pub runs: u64,
    /// The median over passes of each pass's average.
    pub ns_per_run: f64,
    /// Each pass's average run time.
    pub passes_ns: Vec<f64>,
}

#[derive(Debug, Serialize)]
pub struct SmallRound {
    pub mode: &'static str,
    pub round: usize,
    pub rr_us: Vec<f64>,
    pub rate_pps: f64,
}

fn start_agent(binary: &Path, config: &Path, hook: &str) -> anyhow::Result<AgentProcess> {
    let agent = AgentProcess::start(Launch::new(binary, config, &[HOST_IF]).args(&[
        "--on-exit",
        "keep",
        "--metrics",
        METRICS,
        "--hook",
        hook,
    ]))?;
    for host in WARM_HOSTS {
        agent.command(&["wake", host])?;
    }
    wait_warm(&agent, &WARM_HOSTS)?;
    wait_for_links(WARM_HOSTS.len())?;
    Ok(agent)
}

fn pin_dir() -> std::path::PathBuf {
    Path::new("/sys/fs/bpf/imag").join(NETWORK)
}

/// Waits until the counting programs are attached to every warm host's link (they are attached
/// just after a wake or an adoption).
fn wait_for_links(hosts: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let links = std::fs::read_dir(pin_dir()).map_or(0, |entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("link-from-"))
                .count()
        });
        if links >= hosts {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the hosts' link programs were not attached within 20 s ({links} of {hosts})");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The programs behind the agent's pinned links, by id.
fn imag_program_ids() -> anyhow::Result<Vec<u32>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(pin_dir())?.flatten() {
        if !entry.file_name().to_string_lossy().starts_with("link-") {
            continue;
        }
        let json = cmd_output(
            Command::new("bpftool")
                .args(["-j", "link", "show", "pinned"])
                .arg(entry.path()),
        )
        .with_context(|| format!("bpftool link show pinned {}", entry.path().display()))?;
        let link: serde_json::Value = serde_json::from_str(&json)?;
        if let Some(id) = link["prog_id"]
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

impl ProgramCost {
    /// The row of a program measured in `passes_ns`; the pair says whether it is a baseline (a
    /// no-op or a floor) and whether a floor.
    #[allow(clippy::too_many_arguments, reason = "the row's fields")]
    fn new(
        hook: &'static str,
        workload: &'static str,
        program: String,
        kind: &'static str,
        (noop, floor): (bool, bool),
        beside: Option<&'static str>,
        runs: u64,
        passes_ns: Vec<f64>,
    ) -> ProgramCost {
        ProgramCost {
            hook,
            workload,
            program,
            kind,
            noop,
            beside,
            floor,
            runs,
            ns_per_run: median(passes_ns.clone()),
            passes_ns,
        }
    }
}

/// Per-run costs of imag's programs (hooked with `hook`) and the no-ops on each workload.
fn costs(
    binary: &Path,
    config: &Path,
    client: &ClientNs,
    hook: &'static str,
    run: &mut PerPacketRun,
) -> anyhow::Result<()> {
    remove_pins(NETWORK);
    let mut agent = start_agent(binary, config, hook)?;
    let mut ids = imag_program_ids()?;
    let mut noops = client.run(|| Noops::attach("eth0"))??;
    ids.extend([noops.tc_id, noops.xdp.noop_id]);
    let beside = BesideImag::attach(&pin_dir())?;
    ids.extend(beside.ids.iter().map(|(_, id)| *id));
    ids.extend(beside.floors.iter().map(|(_, id)| *id));
    let beside_of = |id: u32| beside.ids.iter().find(|(_, b)| *b == id).map(|(p, _)| *p);
    let echo: SocketAddr = ECHO.parse().expect("valid");
    let sink: SocketAddr = SINK.parse().expect("valid");
    let workloads: [Workload; 3] = [
        (
            "bulk TCP",
            Box::new(move || {
                client.run(|| client::bulk_throughput(sink, BULK_BYTES))??;
                Ok(())
            }),
        ),
        (
            "UDP 64 B request/response",
            Box::new(move || {
                client.run(|| client::udp_round_trips(echo, RR_COUNT))??;
                Ok(())
            }),
        ),
        (
            "UDP 64 B, 32 in flight",
            Box::new(move || {
                client.run(|| client::udp_rate(echo, RATE_WINDOW, RATE_FOR))??;
                Ok(())
            }),
        ),
    ];
    let floor_of = |id: u32| {
        beside
            .floors
            .iter()
            .find(|(_, f)| *f == id)
            .map(|(p, _)| *p)
    };
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("enabling the kernel's BPF run-time statistics")?;
    for (workload, traffic) in &workloads {
        for (id, (program, kind, runs, passes_ns)) in passes(&ids, traffic)? {
            let (beside, floor) = match (beside_of(id), floor_of(id)) {
                (Some(p), _) => (Some(p), false),
                (None, Some(p)) => (Some(p), true),
                (None, None) => (None, false),
            };
            let program = match beside {
                Some(p) if floor => format!("floor before {p}"),
                Some(p) => format!("no-op before {p}"),
                None => program,
            };
            run.costs.push(ProgramCost::new(
                hook,
                workload,
                program,
                kind,
                (
                    id == noops.tc_id || id == noops.xdp.noop_id || beside.is_some(),
                    floor,
                ),
                beside,
                runs,
                passes_ns,
            ));
        }
    }
    if hook == "xdp-generic" {
        // The XDP floor in the client's XDP no-op's place (one XDP program per interface), on
        // the same traffic right after.
        let id = client.run(|| noops.xdp.use_xdp(noop::XDP_FLOOR_NAME))??;
        xdp_passes(
            &workloads,
            id,
            hook,
            None,
            run,
            "client's floor, in its no-op's place",
        )?;
        client.run(|| noops.xdp.use_xdp(noop::XDP_NAME))??;
    } else {
        // With the holding program hooked by TC, the XDP hook of its interfaces is free: the XDP
        // no-op and floor there see the packets `imag_hold` sees when hooked by XDP (its rows).
        let mut on_hold = XdpBaselines::load(noop::holding_interfaces(&pin_dir())?)?;
        for name in [noop::XDP_NAME, noop::XDP_FLOOR_NAME] {
            let id = on_hold.use_xdp(name)?;
            let what = "on imag_hold's interfaces, with it hooked by TC";
            xdp_passes(&workloads, id, "xdp-generic", Some("imag_hold"), run, what)?;
        }
    }
    drop(stats);
    drop(beside);
    client.run(move || drop(noops))?;
    agent.stop()?;
    Ok(())
}

/// Rows for XDP baseline `id` (the no-op or the floor: its name tells) on every workload,
/// beside `beside`'s hooks or the client's, labelled `what`.
fn xdp_passes(
    workloads: &[Workload],
    id: u32,
    hook: &'static str,
    beside: Option<&'static str>,
    run: &mut PerPacketRun,
    what: &str,
) -> anyhow::Result<()> {
    for (workload, traffic) in workloads {
        for (_, (program, kind, runs, passes_ns)) in passes(&[id], traffic)? {
            let floor = program == noop::XDP_FLOOR_NAME;
            run.costs.push(ProgramCost::new(
                hook,
                workload,
                format!("{program} ({what})"),
                kind,
                (true, floor),
                beside,
                runs,
                passes_ns,
            ));
        }
    }
    Ok(())
}

/// The section: per-run costs with the holding program hooked by TC and by XDP, then `rounds`
/// rounds of small packets with no program and with imag.
pub fn measure(
    binary: &Path,
    config: &Path,
    client: &ClientNs,
    rounds: usize,
) -> anyhow::Result<PerPacketRun> {
    let mut run = PerPacketRun::default();
    for hook in ["tc", "xdp-generic"] {
        eprintln!("bench: per-packet cost, holding program hooked by {hook}");
        costs(binary, config, client, hook, &mut run)?;
        for c in run.costs.iter().filter(|c| c.hook == hook) {
            eprintln!(
                "  {:<26} {:<16} {:>9} runs {:>7.1} ns/run",
                c.workload, c.program, c.runs, c.ns_per_run
            );
        }
    }
    run.stats_enabled_after = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .unwrap_or_default()
        .trim()
        .to_string();
    eprintln!("bench: small packets, {rounds} rounds of no program / imag");
    let echo: SocketAddr = ECHO.parse().expect("valid");
    for round in 0..rounds {
        let mut modes = ["none", "imag"];
        modes.rotate_left(round % 2);
        for mode in modes {
            let agent = if mode == "imag" {
                Some(start_agent(binary, config, "auto")?)
            } else {
                remove_pins(NETWORK);
                None
            };
            let rr_us = client.run(|| client::udp_round_trips(echo, ROUND_RR))??;
            let rate_pps = client.run(|| client::udp_rate(echo, RATE_WINDOW, RATE_FOR))??;
            eprintln!(
                "  round {} {mode:>4}: p99 {:.1} µs, {rate_pps:.0} answers/s",
                round + 1,
                summarize(&rr_us).p99
            );
            run.rounds.push(SmallRound {
                mode,
                round,
                rr_us,
                rate_pps,
            });
            if let Some(mut agent) = agent {
                agent.stop()?;
            }
        }
    }
    Ok(run)
}

impl PerPacketRun {
    /// The cost per run of the baseline (a no-op, or with `floor` a floor) on `workload` with
    /// the holding program hooked by `hook`, of program kind `kind`, beside imag program
    /// `beside` (on its hooks), or the client's with `None`.
    fn baseline_cost(
        &self,
        (hook, workload, kind): (&str, &str, &str),
        beside: Option<&str>,
        floor: bool,
    ) -> Option<f64> {
        self.costs
            .iter()
            .find(|n| {
                n.noop
                    && n.floor == floor
                    && n.beside == beside
                    && n.hook == hook
                    && n.workload == workload
                    && n.kind == kind
            })
            .map(|n| n.ns_per_run)
    }

    /// The client's no-op's cost per run for a hook, workload and program kind.
    fn noop(&self, hook: &str, workload: &str, kind: &str) -> Option<f64> {
        self.baseline_cost((hook, workload, kind), None, false)
    }

    /// The cost per run of the no-op (or, with `floor`, the floor) on `c`'s own hooks, if it
    /// has one (TC programs).
    fn beside(&self, c: &ProgramCost, floor: bool) -> Option<f64> {
        self.baseline_cost(
            (c.hook, c.workload, c.kind),
            Some(c.program.as_str()),
            floor,
        )
    }

    fn noop_beside(&self, c: &ProgramCost) -> Option<f64> {
        self.beside(c, false)
    }

    /// The no-op a floor is compared with: the one beside the same imag program (TC), or the
    /// client's of its kind.
    fn floor_noop(&self, f: &ProgramCost) -> Option<f64> {
        self.baseline_cost((f.hook, f.workload, f.kind), f.beside, false)
    }

    /// The floors of `kind` against their no-ops: (highest ratio, where), over every hook and
    /// workload.
    pub fn worst_floor(&self, kind: &str) -> Option<(f64, String)> {
        self.costs
            .iter()
            .filter(|f| f.floor && f.kind == kind)
            .filter_map(|f| {
                Some((
                    f.ns_per_run / self.floor_noop(f)?,
                    format!("{} on {} (hook {})", f.program, f.workload, f.hook),
                ))
            })
            .max_by(|a, b| a.0.total_cmp(&b.0))
    }

    /// The no-op an imag program is judged against: the one on its own hooks where there is one
    /// (the same packets at the same point of the stack), else the client's of its kind.
    fn baseline(&self, c: &ProgramCost) -> Option<f64> {
        self.noop_beside(c)
            .or_else(|| self.noop(c.hook, c.workload, c.kind))
    }

    /// The highest ratio of an imag program to its baseline no-op, per program kind.
    pub fn worst_ratio(&self, kind: &str) -> Option<(f64, String)> {
        self.costs
            .iter()
            .filter(|c| !c.noop && c.kind == kind)
            .filter_map(|c| {
                let noop = self.baseline(c)?;
                Some((
                    c.ns_per_run / noop,
                    format!("{} on {} (hook {})", c.program, c.workload, c.hook),
                ))
            })
            .max_by(|a, b| a.0.total_cmp(&b.0))
    }

    /// Medians over rounds of the per-round p99 (µs) and rate (answers/s), for a mode.
    pub fn small(&self, mode: &str) -> (f64, f64, usize) {
        let rounds: Vec<&SmallRound> = self.rounds.iter().filter(|r| r.mode == mode).collect();
        (
            median(rounds.iter().map(|r| summarize(&r.rr_us).p99).collect()),
            median(rounds.iter().map(|r| r.rate_pps).collect()),
            rounds.first().map_or(0, |r| r.rr_us.len()),
        )
    }

    /// Rows for the report's targets table: (target, measured, met).
    pub fn targets(&self) -> Vec<(String, String, bool)> {
        let mut rows = Vec::new();
        for kind in ["tc", "xdp"] {
            if let Some((ratio, what)) = self.worst_ratio(kind) {
                // What the least per-host counting costs at the same hooks: if the floor itself
                // is above the target, so is every program that keeps idleness.
                let floor = self
                    .worst_floor(kind)
                    .map_or(String::new(), |(floor, where_)| {
                        format!(
                            "; the floor (two array lookups, a count and a stamp) up to \
                             {floor:.2}× its no-op: {where_}"
                        )
                    });
                rows.push((
                    format!(
                        "every imag {kind} program on the warm path ≤ {MAX_RATIO}× the {kind} \
                         no-op per run (the no-op on its own hooks)"
                    ),
                    format!("worst {ratio:.2}×: {what}{floor}"),
                    ratio <= MAX_RATIO,
                ));
            }
        }
        let ((none_p99, none_rate, n), (imag_p99, imag_rate, _)) =
            (self.small("none"), self.small("imag"));
        // How finely this run's rounds resolve 3 %: their own scatter, per mode.
        let per_round = |mode: &str, figure: fn(&SmallRound) -> f64| -> Vec<f64> {
            (self.rounds.iter())
                .filter(|r| r.mode == mode)
                .map(figure)
                .collect()
        };
        let noise = |figure: fn(&SmallRound) -> f64, measured: f64| {
            noise_note(
                &per_round("imag", figure),
                &per_round("none", figure),
                measured,
                0.03,
            )
        };
        let p99_diff = imag_p99 / none_p99 - 1.0;
        rows.push((
            "small packets: UDP 64 B round trip p99 within 3 % of no program".into(),
            format!(
                "{:+.1} % ({imag_p99:.1} vs {none_p99:.1} µs, medians of rounds' p99, n = {n} \
                 each){}",
                100.0 * p99_diff,
                noise(|r| summarize(&r.rr_us).p99, p99_diff)
            ),
            imag_p99 <= 1.03 * none_p99,
        ));
        let rate_diff = imag_rate / none_rate - 1.0;
        rows.push((
            "small packets: rate ≥ 97 % of no program".into(),
            format!(
                "{:.1} % ({imag_rate:.0} vs {none_rate:.0} answers/s, medians of rounds){}",
                100.0 * imag_rate / none_rate,
                noise(|r| r.rate_pps, rate_diff)
            ),
            imag_rate >= 0.97 * none_rate,
        ));
        rows
    }

    /// One row of the per-run costs table.
    fn cost_row(&self, c: &ProgramCost) -> String {
        let ratio = |n: Option<f64>| n.map_or("–".into(), |n| format!("{:.2}", c.ns_per_run / n));
        let none = || "–".to_string();
        let (own, floor, client) = if c.floor {
            // The floor against its no-op (beside it, or the client's it stood in for).
            if c.beside.is_some() {
                (ratio(self.floor_noop(c)), none(), none())
            } else {
                (none(), none(), ratio(self.floor_noop(c)))
            }
        } else if c.noop {
            (none(), none(), none())
        } else {
            (
                ratio(self.noop_beside(c)),
                ratio(self.beside(c, true)),
                ratio(self.noop(c.hook, c.workload, c.kind)),
            )
        };
        let passes: Vec<String> = c.passes_ns.iter().map(|p| format!("{p:.0}")).collect();
        format!(
            "| {} | {} | {}{} | {} | {:.1} ({}) | {own} | {floor} | {client} |\n",
            c.hook,
            c.workload,
            c.program,
            if c.noop && !c.floor && c.beside.is_none() {
                " (client's no-op)"
            } else {
                ""
            },
            c.runs,
            c.ns_per_run,
            passes.join(", ")
        )
    }

    /// The section's tables.
    pub fn markdown(&self) -> String {
        let mut out = String::from("\n## Warm path per packet\n\n");
        out.push_str(
            "Average run time per invocation from the kernel's BPF statistics (their own overhead \
             included), in the same run as no-op programs on the same traffic: a TC no-op \
             attached first (TCX order) on every hook each imag TC program runs on (its own \
             baseline: the same packets at the same point of the stack), and on the client a TC \
             classifier on its egress (every packet it sends) and an XDP program (generic mode) on \
             its ingress (every answer). An interface has one XDP program, so `imag_hold`'s own \
             XDP baselines run on its interfaces while it is hooked by TC there (the XDP hook \
             free; the same packets, the run count tells). Every imag program is judged against \
             the no-op on its own hooks. Statistics are on only while measuring (a `BPF_ENABLE_STATS` descriptor",
        );
        let _ = writeln!(
            out,
            "; `kernel.bpf_stats_enabled` read {} afterwards).\n",
            self.stats_enabled_after
        );
        let _ = writeln!(
            out,
            "Each traffic runs {PASSES} times in a row; a program's ns/run is the median of the \
             passes' averages (all passes in brackets). Beside each no-op on an imag program's \
             hooks runs a floor: a TC program doing only what keeping a host's activity takes \
             (an array lookup of a slot, a per-CPU array lookup of its counters, a count added \
             and the coarse clock stored): the least any program counting per-host traffic \
             costs there. The same floor as an XDP program takes the XDP no-op's place, for \
             {PASSES} more passes of each traffic right after, on the client and on \
             `imag_hold`'s interfaces.\n"
        );
        out.push_str(
            "| hook | traffic | program | runs | ns/run (passes) | × no-op on its hooks | × floor on its hooks | × client's no-op |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        let mut costs: Vec<&ProgramCost> = self.costs.iter().collect();
        costs.sort_by_key(|c| (c.hook, c.workload, c.noop, c.program.clone()));
        for c in costs {
            out.push_str(&self.cost_row(c));
        }
        let ((none_p99, none_rate, n), (imag_p99, imag_rate, _)) =
            (self.small("none"), self.small("imag"));
        let rounds = self.rounds.iter().filter(|r| r.mode == "imag").count();
        let _ = writeln!(
            out,
            "\nSmall packets through imag (TC hooks, the default here) against no program, {rounds} \
             interleaved rounds: UDP 64 B request/response one at a time (n = {n} per round), and \
             the answers per second with {RATE_WINDOW} requests in flight for {} s.\n",
            RATE_FOR.as_secs()
        );
        out.push_str("| mode | round trip p50 µs | p99 µs (median of rounds) | pooled p99 µs | answers/s (median) |\n|---|---|---|---|---|\n");
        for (mode, p99, rate) in [
            ("no program", none_p99, none_rate),
            ("imag", imag_p99, imag_rate),
        ] {
            let key = if mode == "imag" { "imag" } else { "none" };
            let pooled: Vec<f64> = self
                .rounds
                .iter()
                .filter(|r| r.mode == key)
                .flat_map(|r| r.rr_us.iter().copied())
                .collect();
            let s = summarize(&pooled);
            let _ = writeln!(
                out,
                "| {mode} | {:.1} | {p99:.1} | {:.1} (n = {}) | {rate:.0} |",
                s.p50, s.p99, s.n
            );
        }
        out
    }
}
