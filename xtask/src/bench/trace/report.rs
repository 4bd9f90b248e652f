//! The trace benchmark's report: `bench/trace.md` (one row per policy, the savings against
//! always-on, the target) and `bench/trace.png` (memory in use over time per policy, and the p99
//! latency of requests per 5-second window), drawn with plotters into a buffer that png encodes.

use std::{fmt::Write as _, path::Path};

use anyhow::{Context as _, bail};
use plotters::prelude::*;

use super::{PolicyRun, TraceRun, policy};
use crate::bench::stats::quantile;

/// The share of always-on's memory-seconds the best imag policy must save.
pub const TARGET_SAVED: f64 = 0.80;

fn always_on(run: &TraceRun) -> Option<&PolicyRun> {
    run.policies.iter().find(|p| p.name == "always-on")
}

/// The share of always-on's memory-seconds a policy saved.
fn saved(run: &TraceRun, p: &PolicyRun) -> Option<f64> {
    always_on(run).map(|a| saving(a, p))
}

/// The share of `always_on`'s memory-seconds `p` saved.
fn saving(always_on: &PolicyRun, p: &PolicyRun) -> f64 {
    1.0 - p.memory_mb_s / always_on.memory_mb_s
}

pub fn markdown(run: &TraceRun) -> String {
    let mut out = String::new();
    intro(run, &mut out);
    table(run, &mut out);
    verdict(run, &mut out);
    out
}

/// The machine, the trace and how it was replayed.
fn intro(run: &TraceRun, out: &mut String) {
    let p = &run.params;
    let m = &run.machine;
    let _ = writeln!(
        out,
        "# imag trace benchmark\n\n{} CPUs ({}), kernel {}, Docker {}, {}, revision {}.\n",
        m.cpus, m.cpu_model, m.kernel, m.docker, m.date, m.revision
    );
    let capped = run.hosts.iter().filter(|h| h.capped).count();
    let calling = run.hosts.iter().filter(|h| h.calls.is_some()).count();
    let memory: u32 = run.hosts.iter().map(|h| h.memory_mb).sum();
    let _ = writeln!(
        out,
        "{} hours of a day of a workload shaped like Azure Functions 2019 (Shahrad et al., \
         ATC'20; seed {}): {} hosts in {} applications ({calling} hosts call the next one of their \
         application on every request), {} requests from outside, replayed in {:.0} s per policy: \
         **{:.0}× compression** (imag's 1-minute idle timeout is {}, the 10-minute keep-alive {}, \
         never below {:.0} ms). Before it, {:.0} trace minutes ({:.0} s, {} requests) are replayed \
         at the same compression and not measured, so every policy is measured from its steady \
         state. Footprints are 1/10 of the paper's (p50 17 MiB, p90 40 MiB), {memory} MiB of \
         ballast in all, held for real; {capped} hosts were capped at {} requests/s. Memory is \
         sampled at 10 Hz from the hosts' cgroups, plus the agent's RSS.\n",
        p.span_s / 3_600.0,
        p.seed,
        run.hosts.len(),
        run.hosts.iter().map(|h| h.app).max().map_or(0, |a| a + 1),
        run.requests,
        p.replay_s,
        run.compression,
        run.imag_idle_timeout,
        run.keep_alive,
        policy::MIN_TIMEOUT_S * 1000.0,
        p.warmup_s / 60.0,
        run.warmup_s,
        run.warmup_requests,
        p.max_rps,
    );
}

fn table(run: &TraceRun, out: &mut String) {
    out.push_str(
        "| policy | memory (MiB·s) | saved vs always-on | mean MiB | peak MiB | CPU s (hosts + agent) \
         | answered | failed | p50 ms | p99 ms | p99.9 ms | met a wake | wakes (stopped / paused / \
         absent) | wake p50 / p99 ms | wakes > 1 s | SYN retrans. (clients + hosts' SYN/SYN-ACK) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &run.policies {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {:.0} | {:.0} | {:.1} + {:.1} | {} | {} | {:.1} | {:.1} | {:.1} | \
             {:.2} % | {:.0} / {:.0} / {:.0}{} | {} | {} | {} + {} |",
            r.name,
            r.memory_mb_s,
            saved(run, r).map_or("–".to_string(), |s| format!("{:.1} %", 100.0 * s)),
            r.memory_mb_s / r.seconds.max(1e-9),
            r.peak_memory_mb,
            r.host_cpu_s,
            r.agent_cpu_s,
            r.answered,
            r.failed,
            r.latency_p50_ms,
            r.latency_p99_ms,
            r.latency_p999_ms,
            100.0 * r.met_wake,
            r.wakes.get("stopped").copied().unwrap_or(0.0),
            r.wakes.get("paused").copied().unwrap_or(0.0),
            r.wakes.get("absent").copied().unwrap_or(0.0),
            if r.wakes_failed > 0.0 {
                format!(" ({:.0} failed)", r.wakes_failed)
            } else {
                String::new()
            },
            if r.wakes_logged == 0 {
                "–".to_string()
            } else {
                format!("{:.0} / {:.0}", r.wake_p50_ms, r.wake_p99_ms)
            },
            r.wakes_over_1s,
            r.syn_retransmissions,
            r.hosts_syn_retransmissions(),
        );
    }
    out.push('\n');
    for r in &run.policies {
        let _ = writeln!(out, "- **{}**: {}", r.name, r.what);
    }
    out.push('\n');
}

/// A trace duration for the report: "30 s", "1 min", "10 min".
fn trace_duration(seconds: f64) -> String {
    if seconds >= 60.0 && seconds % 60.0 == 0.0 {
        format!("{:.0} min", seconds / 60.0)
    } else {
        format!("{seconds} s")
    }
}

/// The bound for the generator's other seeds: whether this trace is a typical one.
fn seeds(run: &TraceRun, out: &mut String) {
    if run.ideal_by_seed.len() < 2 {
        return;
    }
    let list: Vec<String> = (run.ideal_by_seed.iter())
        .map(|(seed, at_once, one_s)| {
            format!("{seed}: {:.1} / {:.1} %", 100.0 * at_once, 100.0 * one_s)
        })
        .collect();
    let mut at_once: Vec<f64> = run.ideal_by_seed.iter().map(|s| s.1).collect();
    at_once.sort_by(f64::total_cmp);
    let median = quantile(&at_once, 0.5);
    let _ = writeln!(
        out,
        "The same generator with other seeds (the parameters otherwise the same; generated, not \
         replayed) allows, at 0 s / 1 s: {} (median at 0 s {:.1} %). This trace is seed {}{}.",
        list.join(", "),
        100.0 * median,
        run.params.seed,
        if run.seed_is_median {
            ", the median of them: the default, chosen from what each trace allows before \
             anything was replayed"
        } else {
            " (given with --trace-seed)"
        }
    );
}

/// Where each policy lost packets, if it did: the datapath's drops, the hosts' own stacks, and
/// the slow requests no long wake explains (the first listed).
fn losses(run: &TraceRun, out: &mut String) {
    for r in &run.policies {
        let l = &r.losses;
        let stacks: Vec<String> = (l.hosts_tcp.iter())
            .filter(|(_, n)| **n > 0)
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        if l.datapath.is_empty() && stacks.is_empty() && l.slow_unexplained == 0 {
            continue;
        }
        let drops: Vec<String> = (l.datapath.iter())
            .map(|(what, n)| format!("{what} {n:.0}"))
            .collect();
        let _ = writeln!(
            out,
            "Under {}, losses: datapath [{}]; the hosts' own TCP stacks (over the measured \
             span, every container run seen in it) [{}]; {} requests took over 1 s with no wake on their \
             path that long.",
            r.name,
            drops.join(", "),
            stacks.join(", "),
            l.slow_unexplained
        );
        if !l.hosts_syn_retrans.is_empty() {
            let by_host: Vec<String> = (l.hosts_syn_retrans.iter())
                .map(|(c, n)| format!("{c} {n}"))
                .collect();
            let _ = writeln!(
                out,
                "- SYNs or SYN-ACKs sent again by: {}",
                by_host.join(", ")
            );
        }
        for slow in &l.slow_listed {
            let _ = writeln!(out, "- {slow}");
        }
    }
}

/// What swap held under the policies that page out (`swap_after`).
fn swap_notes(run: &TraceRun, out: &mut String) {
    for r in run.policies.iter().filter(|r| r.name.contains("swap")) {
        let _ = writeln!(
            out,
            "Under {}, paused hosts were paged out to swap ({}); of its hosts' {:.0} MiB·s, \
             {:.0} were the zram devices holding what was paged out (compressed memory is still \
             memory and counts; swap on disk does not). Each page comes back when a request \
             touches it (every request reads the host's whole ballast).",
            r.name,
            if run.swap.is_empty() {
                "none in use".to_string()
            } else {
                run.swap.join(", ")
            },
            r.host_memory_mb_s,
            r.swap_memory_mb_s
        );
        if r.page_outs > 0.0 {
            let _ = writeln!(
                out,
                "Its {:.0} page-outs ran {:.0} s of the {:.0} s measured ({:.0} % busy, one at a \
                 time; {:.0} ms each on average), and waited {:.0} ms each on average in the \
                 agent's queue.",
                r.page_outs,
                r.page_out_busy_s,
                r.seconds,
                100.0 * r.page_out_busy_s / r.seconds.max(f64::MIN_POSITIVE),
                1000.0 * r.page_out_busy_s / r.page_outs,
                1000.0 * r.page_out_wait_s / r.page_outs
            );
        }
    }
}

/// The imag policy that saved the most of always-on's memory-seconds, and how much; with
/// `clean_only`, among those that kept the must-be-zero counts (failed requests, SYN
/// retransmissions) at zero: a saving paid for with either does not count towards the target.
fn best(policies: &[PolicyRun], clean_only: bool) -> Option<(&PolicyRun, f64)> {
    let always_on = policies.iter().find(|p| p.name == "always-on")?;
    policies
        .iter()
        .filter(|r| r.name.starts_with("imag"))
        .filter(|r| !clean_only || (r.failed == 0 && r.all_syn_retransmissions() == 0))
        .map(|r| (r, saving(always_on, r)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// The target: the largest saving among imag policies that kept the must-be-zero counts at
/// zero, and the largest of all when that is another policy.
fn target(run: &TraceRun, out: &mut String) {
    let always_on_p99 = always_on(run).map_or(f64::NAN, |a| a.latency_p99_ms);
    match best(&run.policies, true) {
        Some((r, s)) => {
            let met = s >= TARGET_SAVED;
            let _ = writeln!(
                out,
                "**Target** (≥ {:.0} % of always-on's memory-seconds saved by the best imag policy \
                 among those with 0 failed requests and 0 SYN retransmissions, the clients' or \
                 the hosts' SYNs and SYN-ACKs): **{}** — {} \
                 saved {:.1} %, with p99 request latency {:.1} ms (p99.9 {:.1} ms; always-on: \
                 p99 {always_on_p99:.1} ms).",
                TARGET_SAVED * 100.0,
                if met { "met" } else { "NOT met" },
                r.name,
                100.0 * s,
                r.latency_p99_ms,
                r.latency_p999_ms,
            );
        }
        None if always_on(run).is_none() => {
            out.push_str("**Target**: not evaluated (always-on was left out).\n");
        }
        None => {
            out.push_str(
                "**Target**: **NOT met** — no imag policy kept 0 failed requests and 0 SYN \
                 retransmissions.\n",
            );
        }
    }
    if let (Some((largest, s)), clean_best) =
        (best(&run.policies, false), best(&run.policies, true))
        && clean_best.is_none_or(|(c, _)| c.name != largest.name)
    {
        let _ = writeln!(
            out,
            "The largest saving, {:.1} % ({}), came with {} failed requests and {} SYN \
             retransmissions (p99 {:.1} ms).",
            100.0 * s,
            largest.name,
            largest.failed,
            largest.all_syn_retransmissions(),
            largest.latency_p99_ms,
        );
    }
}

/// The target, the must-be-zero counts, and how to read the table.
fn verdict(run: &TraceRun, out: &mut String) {
    target(run, out);
    allowed(run, out);
    seeds(run, out);
    let failed: usize = run.policies.iter().map(|r| r.failed).sum();
    let retrans: u64 = run.policies.iter().map(|r| r.syn_retransmissions).sum();
    let hosts_retrans: u64 = (run.policies.iter())
        .map(PolicyRun::hosts_syn_retransmissions)
        .sum();
    let _ = writeln!(
        out,
        "\nFailed requests (must be 0): {failed}. SYN retransmissions (must be 0): the clients' \
         {retrans}, the hosts' {hosts_retrans} (their calls to each other, and SYN-ACKs they sent \
         again; over the measured span, read every 2 s: a host stopped takes what it counted after \
         its last reading with it)."
    );
    for r in run.policies.iter().filter(|r| r.wakes_refused_budget > 0.0) {
        let _ = writeln!(
            out,
            "Under {}, {:.0} wakes were refused by the budget (no room and nothing evictable: \
             every host counted against it busy or waking), each answering its held requests \
             with a reset: a budget smaller than the busy hosts' peak refuses by design.",
            r.name, r.wakes_refused_budget
        );
    }
    swap_notes(run, out);
    for r in run.policies.iter().filter(|r| r.wakes_over_1s > 0) {
        let _ = writeln!(
            out,
            "Under {}, {} wakes took longer than 1 s, a client's first SYN timeout: every SYN \
             such a wake held was sent again, what the wait forces.",
            r.name, r.wakes_over_1s
        );
    }
    losses(run, out);
    for r in run.policies.iter().filter(|r| !r.failures.is_empty()) {
        let _ = writeln!(out, "\nFirst failures under {}:", r.name);
        for f in &r.failures {
            let _ = writeln!(out, "- {f}");
        }
    }
    out.push_str(
        "\nLatency is from a request's scheduled time to the last byte of its answer on a fresh \
         connection, and includes its (compressed) service time and those of the hosts it calls. \
         \"Met a wake\": a host on its path was being woken while it was in flight (the agent's \
         log). Wakes count every wake during the replay (a host called by another is woken by \
         that host's packet). Plot: bench/trace.png.\n",
    );
}

/// What the trace itself allows (its bound, by idle timeout), and the best clean policy against
/// it.
fn allowed(run: &TraceRun, out: &mut String) {
    let _ = writeln!(
        out,
        "\nWhat the trace itself allows: with every host warm exactly while it serves a request \
         (a request keeps each host down its chain busy from when it reaches it until it has \
         answered) and for the last minute after (imag's idle timeout), with wakes that cost \
         nothing, {:.1} % of always-on's host memory-seconds would be saved; with the 10-minute \
         keep-alive, {:.1} % (`workload::ideal_saving`, from the same trace).",
        100.0 * run.ideal_saving_imag,
        100.0 * run.ideal_saving_keep_alive,
    );
    let curve: Vec<String> = run
        .ideal_curve
        .iter()
        .map(|(t, saved)| format!("{} {:.1} %", trace_duration(*t), 100.0 * saved))
        .collect();
    let _ = write!(
        out,
        "The same bound by idle timeout: {}. ",
        curve.join(", ")
    );
    let asleep_at_once = (run.ideal_curve.iter())
        .find(|(t, _)| *t == 0.0)
        .map(|(_, saved)| *saved);
    match asleep_at_once {
        Some(most) if most < TARGET_SAVED => {
            let _ = writeln!(
                out,
                "{:.0} % is beyond what this trace allows: its hosts serve requests for {:.1} % \
                 of always-on's memory-seconds (busy hosts, and the long services of hosts \
                 called on every request of a busy one), so a policy that puts every host to \
                 sleep the moment it has answered, and wakes it for free, saves {:.1} %.",
                TARGET_SAVED * 100.0,
                100.0 * (1.0 - most),
                100.0 * most,
            );
            if let Some((r, s)) = best(&run.policies, true) {
                let _ = writeln!(
                    out,
                    "{} saved {:.1} %: {:.0} % of that.",
                    r.name,
                    100.0 * s,
                    100.0 * s / most
                );
            }
        }
        _ => {
            let _ = writeln!(
                out,
                "{:.0} % needs every host asleep within {:.1} s (trace time) of its last \
                 answer, {:.0} ms at this compression: a sleep and a wake around almost every \
                 request, where a stopped host's wake here is the engine's start (hundreds of \
                 ms, see the wake column), and a paused host frees memory only once paged out \
                 (`swap_after`: the page-out takes time and CPU, and a request after it reads its \
                 pages back).",
                TARGET_SAVED * 100.0,
                run.ideal_timeout_for_target_s,
                1000.0 * run.ideal_timeout_for_target_s / run.compression.max(1e-9),
            );
        }
    }
}

/// A font for the plot's text: plotters draws glyphs with `ab_glyph` from a TTF file it is given.
fn font() -> anyhow::Result<&'static [u8]> {
    const FONTS: [&str; 4] = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    ];
    for path in FONTS {
        if let Ok(bytes) = std::fs::read(path) {
            return Ok(Box::leak(bytes.into_boxed_slice()));
        }
    }
    bail!(
        "no font for the plot's text (looked for {}); install Debian's fonts-dejavu-core",
        FONTS.join(", ")
    )
}

const WIDTH: u32 = 1400;
const HEIGHT: u32 = 1000;
const WINDOW_S: f64 = 5.0;

pub fn png(run: &TraceRun, path: &Path) -> anyhow::Result<()> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, font()?)
        .map_err(|_| anyhow::anyhow!("the plot's font could not be read"))?;
    let mut buffer = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    draw(run, &mut buffer).map_err(|e| anyhow::anyhow!("drawing the plot: {e}"))?;
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .and_then(|mut w| w.write_image_data(&buffer))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// p99 latency per [`WINDOW_S`] window: (window centre, ms).
fn windowed_p99(latencies: &[(f64, f64)], seconds: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut start = 0.0;
    while start < seconds {
        let mut window: Vec<f64> = latencies
            .iter()
            .filter(|(t, _)| (start..start + WINDOW_S).contains(t))
            .map(|(_, ms)| *ms)
            .collect();
        if !window.is_empty() {
            window.sort_by(f64::total_cmp);
            out.push((start + WINDOW_S / 2.0, quantile(&window, 0.99).max(0.1)));
        }
        start += WINDOW_S;
    }
    out
}

fn draw(run: &TraceRun, buffer: &mut [u8]) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::with_buffer(buffer, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(HEIGHT * 3 / 5);
    let seconds = run.params.replay_s;
    let peak = run
        .policies
        .iter()
        .map(|p| p.peak_memory_mb)
        .fold(1.0, f64::max);
    let mut memory = ChartBuilder::on(&top)
        .caption(
            format!(
                "Memory in use (hosts' cgroups + agent), {} hosts, {} h of a day in {:.0} s ({:.0}x)",
                run.hosts.len(),
                run.params.span_s / 3_600.0,
                seconds,
                run.compression
            ),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..seconds, 0.0..peak * 1.1)?;
    memory
        .configure_mesh()
        .x_desc("replay time (s)")
        .y_desc("MiB")
        .label_style(("sans-serif", 15))
        .draw()?;
    for (i, p) in run.policies.iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        memory
            .draw_series(LineSeries::new(
                p.series.iter().map(|(t, h, a)| (*t, h + a)),
                colour.stroke_width(2),
            ))?
            .label(p.name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(3)));
    }
    memory
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    let slowest = run
        .policies
        .iter()
        .flat_map(|p| p.latencies.iter().map(|(_, ms)| *ms))
        .fold(10.0, f64::max);
    let mut latency = ChartBuilder::on(&bottom)
        .caption(
            format!("Request latency, p99 per {WINDOW_S:.0} s window"),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..seconds, (0.1..slowest * 1.5).log_scale())?;
    latency
        .configure_mesh()
        .x_desc("replay time (s)")
        .y_desc("ms (log)")
        .label_style(("sans-serif", 15))
        .draw()?;
    for (i, p) in run.policies.iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        latency.draw_series(LineSeries::new(
            windowed_p99(&p.latencies, seconds),
            colour.stroke_width(2),
        ))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, memory_mb_s: f64, failed: usize, syn_retransmissions: u64) -> PolicyRun {
        PolicyRun {
            name: name.to_string(),
            memory_mb_s,
            failed,
            syn_retransmissions,
            ..PolicyRun::default()
        }
    }

    #[test]
    fn the_target_is_judged_on_policies_that_failed_nothing_and_retransmitted_nothing() {
        let policies = [
            policy("always-on", 1000.0, 0, 0),
            policy("imag-budget", 300.0, 12, 0),
            policy("imag-stop", 400.0, 0, 5),
            policy("imag-swap", 500.0, 0, 0),
            policy("keep-alive", 100.0, 0, 0),
            // Its clients retransmitted nothing, its hosts calling each other did.
            PolicyRun {
                losses: super::super::losses::Losses {
                    hosts_tcp: [("TCPSynRetrans".to_string(), 2)].into(),
                    ..Default::default()
                },
                ..policy("imag-swap-1s", 450.0, 0, 0)
            },
        ];
        let (clean, saved) = best(&policies, true).unwrap();
        assert_eq!((clean.name.as_str(), saved), ("imag-swap", 0.5));
        assert_eq!(policies[5].all_syn_retransmissions(), 2);
        let (largest, saved) = best(&policies, false).unwrap();
        assert_eq!(largest.name, "imag-budget");
        assert!((saved - 0.7).abs() < 1e-9, "{saved}");
        assert!(
            best(&policies[1..], false).is_none(),
            "no always-on, no saving"
        );
    }
}
