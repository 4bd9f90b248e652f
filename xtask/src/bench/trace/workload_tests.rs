//! The trace generator's tests: determinism, the marginal distributions, the bound.
use super::*;

const DRAWS: usize = 40_000;

fn share(values: &[f64], pred: impl Fn(f64) -> bool) -> f64 {
    values.iter().filter(|v| pred(**v)).count() as f64 / values.len() as f64
}

fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    crate::bench::stats::quantile(&sorted, q)
}

fn params() -> TraceParams {
    TraceParams {
        seed: 7,
        hosts: 60,
        span_s: DAY_S,
        warmup_s: 0.0,
        replay_s: 240.0,
        max_rps: 20.0,
        memory_scale: 0.1,
    }
}

/// A trace of 100 s replayed at no compression, hosts `(calls, service_ms)` of 10 MB each, and
/// requests `(at_s, host)`: for the bound's tests.
pub(in crate::bench::trace) fn small_trace(
    hosts: &[(Option<usize>, u32)],
    arrivals: &[(f64, usize)],
) -> Trace {
    Trace {
        params: TraceParams {
            span_s: 100.0,
            warmup_s: 0.0,
            replay_s: 100.0,
            ..params()
        },
        hosts: (hosts.iter())
            .map(|&(calls, service_ms)| HostPlan {
                name: String::new(),
                app: 0,
                calls,
                rate_per_day: 1.0,
                capped: false,
                cv: 1.0,
                memory_mb: 10,
                service_ms,
            })
            .collect(),
        arrivals: (arrivals.iter())
            .map(|&(at_s, host)| Arrival { at_s, host })
            .collect(),
    }
}

#[test]
fn the_ideal_saving_counts_each_host_warm_for_a_timeout_after_each_request() {
    // Host 0 calls host 1; host 2 stands alone.
    let trace = small_trace(
        &[(Some(1), 0), (None, 0), (None, 0)],
        &[(10.0, 0), (15.0, 1), (95.0, 1)],
    );
    // Timeout 10 s: host 0 warm 10–20 (10 s); host 1 10–25 and 95–100 (20 s); host 2 never:
    // 30 of 300 host-seconds, all footprints equal.
    near("ideal saving", ideal_saving(&trace, 10.0), 0.9, 1e-9);
    assert!(ideal_saving(&trace, 1_000.0) < ideal_saving(&trace, 10.0));
    // 90 % saved up to a 10 s timeout, less beyond; everything at 0, nothing asks for more.
    near(
        "longest timeout saving 90 %",
        timeout_for_saving(&trace, 0.9),
        10.0,
        0.002,
    );
    assert!(timeout_for_saving(&trace, 1.01).abs() < f64::EPSILON);
}

#[test]
fn the_ideal_saving_keeps_a_host_warm_while_it_serves_and_its_backends_do() {
    // Host 0 (2 s) calls host 1 (3 s); host 2 (4 s) alone, asked twice 5 s apart.
    let trace = small_trace(
        &[(Some(1), 2_000), (None, 3_000), (None, 4_000)],
        &[(10.0, 0), (50.0, 2), (55.0, 2)],
    );
    assert_eq!(busy_span(&trace, 0, 0), Some((0.0, 5.0)));
    assert_eq!(busy_span(&trace, 0, 1), Some((2.0, 5.0)));
    assert_eq!(busy_span(&trace, 1, 0), None);
    // Timeout 1 s: host 0 warm 10–16 (6 s), host 1 12–16 (4 s), host 2 50–60 (10 s, the
    // two requests overlapping): 20 of 300 host-seconds.
    near(
        "ideal saving",
        ideal_saving(&trace, 1.0),
        1.0 - 20.0 / 300.0,
        1e-9,
    );
}

#[test]
fn the_warm_up_is_replayed_before_the_measured_span_at_the_same_compression() {
    let p = TraceParams {
        span_s: 7_200.0,
        warmup_s: 900.0,
        ..params()
    };
    near("compression", p.compression(), 30.0, 1e-9);
    near("measured from", p.measured_from_s(), 30.0, 1e-9);
    let trace = generate(&p).unwrap();
    let end = p.measured_from_s() + p.replay_s;
    assert!(trace.arrivals.iter().all(|a| (0.0..end).contains(&a.at_s)));
    let before = trace
        .arrivals
        .iter()
        .filter(|a| a.at_s < p.measured_from_s())
        .count() as f64;
    let all = trace.arrivals.len() as f64;
    // 900 of 8,100 trace seconds: about a ninth of the requests (the modulation moves it).
    near("share in the warm-up", before / all, 900.0 / 8_100.0, 0.04);
    assert_eq!(
        generate(&TraceParams {
            warmup_s: -1.0,
            ..p
        })
        .unwrap_err(),
        ParamsError::NoSpan
    );
}

/// `actual` within `tolerance` of `target`, with both in the message.
fn near(what: &str, actual: f64, target: f64, tolerance: f64) {
    assert!(
        (actual - target).abs() <= tolerance,
        "{what}: expected {target} ± {tolerance}, got {actual}"
    );
}

#[test]
fn rates_follow_the_application_rate_distribution() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let rates: Vec<f64> = (0..DRAWS).map(|_| draw_rate_per_day(&mut rng)).collect();
    near(
        "at most once an hour",
        share(&rates, |r| r <= 24.0),
        0.45,
        0.015,
    );
    near(
        "at most once a minute",
        share(&rates, |r| r <= 1440.0),
        0.81,
        0.015,
    );
    let mut sorted = rates.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let total: f64 = sorted.iter().sum();
    let top: f64 = sorted[..DRAWS / 100].iter().sum();
    assert!(
        top / total > 0.5,
        "the top 1 % of hosts should make most requests, made {:.0} %",
        100.0 * top / total
    );
}

#[test]
fn cvs_follow_the_burstiness_distribution() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let cvs: Vec<f64> = (0..DRAWS).map(|_| draw_cv(&mut rng)).collect();
    near("periodic", share(&cvs, |c| c == 0.0), 0.20, 0.01);
    let rest: Vec<f64> = cvs.into_iter().filter(|c| *c > 0.0).collect();
    near("CV ≤ 1", share(&rest, |c| c <= 1.0), 0.35, 0.015);
    near("CV ≤ 2", share(&rest, |c| c <= 2.0), 0.55, 0.015);
    near("CV ≤ 4", share(&rest, |c| c <= 4.0), 0.77, 0.015);
}

#[test]
fn memory_and_service_times_follow_their_distributions() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let memory: Vec<f64> = (0..DRAWS).map(|_| draw_memory_mb(&mut rng)).collect();
    near("memory p50", quantile(&memory, 0.5), 170.0, 6.0);
    near("memory p90", quantile(&memory, 0.9), 400.0, 15.0);
    let service: Vec<f64> = (0..DRAWS).map(|_| draw_service_s(&mut rng)).collect();
    near(
        "service p50 (s)",
        quantile(&service, 0.5),
        (-0.38f64).exp(),
        0.05,
    );
    near("service ≤ 1 s", share(&service, |s| s <= 1.0), 0.56, 0.015);
}

#[test]
fn the_same_seed_gives_the_same_trace_and_another_seed_another() {
    let a = generate(&params()).unwrap();
    assert_eq!(a, generate(&params()).unwrap());
    let b = generate(&TraceParams {
        seed: 8,
        ..params()
    })
    .unwrap();
    assert_ne!(a.arrivals, b.arrivals);
    assert!(!a.arrivals.is_empty());
}

#[test]
fn a_trace_scales_memory_and_time_and_caps_rates() {
    let trace = generate(&params()).unwrap();
    let p = &trace.params;
    near("compression", p.compression(), 360.0, 1e-9);
    assert!(trace.arrivals.windows(2).all(|w| w[0].at_s <= w[1].at_s));
    assert!(
        trace
            .arrivals
            .iter()
            .all(|a| (0.0..p.replay_s).contains(&a.at_s))
    );
    for (i, host) in trace.hosts.iter().enumerate() {
        let count = trace.arrivals.iter().filter(|a| a.host == i).count() as f64;
        assert!(
            count <= p.max_rps * p.replay_s * 1.1 + 5.0,
            "{} got {count} requests, above the cap",
            host.name
        );
        assert!(host.service_ms <= MAX_SERVICE_MS);
        assert!(host.memory_mb >= 1 && host.memory_mb < 400);
        if let Some(callee) = host.calls {
            assert_eq!(
                trace.hosts[callee].app, host.app,
                "calls stay inside an app"
            );
            assert!(callee > i, "calls form chains, never cycles");
        }
    }
    assert_eq!(trace.hosts.len(), 60);
    assert!(
        trace.hosts.iter().any(|h| h.calls.is_some()),
        "some applications call each other"
    );
}

#[test]
fn arrivals_have_the_drawn_rate_and_burstiness() {
    for (cv, seed) in [(0.0, 4), (0.5, 5), (1.0, 6), (3.0, 7)] {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // 200,000 arrivals over a day: the sample CV settles.
        let rate = 200_000.0 / DAY_S;
        let times = arrival_times(rate, cv, DAY_S, 0.0, &mut rng);
        near("count", times.len() as f64, 200_000.0, 200_000.0 * 0.03);
        // Over short windows the modulation is nearly flat: compare CVs on the first hour.
        let gaps: Vec<f64> = times
            .windows(2)
            .filter(|w| w[1] < 3600.0)
            .map(|w| w[1] - w[0])
            .collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        let sample_cv = var.sqrt() / mean;
        near(&format!("CV {cv}"), sample_cv, cv, 0.1 + 0.15 * cv);
    }
}

#[test]
fn rates_follow_the_day_within_twenty_percent() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    // φ = 0: the peak is at 6 h, the trough at 18 h.
    let times = arrival_times(400_000.0 / DAY_S, 1.0, DAY_S, 0.0, &mut rng);
    let around = |centre: f64| {
        times
            .iter()
            .filter(|t| (*t - centre).abs() < 1800.0)
            .count() as f64
    };
    let hourly = 400_000.0 / 24.0;
    near("peak hour", around(6.0 * 3600.0) / hourly, 1.2, 0.04);
    near("trough hour", around(18.0 * 3600.0) / hourly, 0.8, 0.04);
}
