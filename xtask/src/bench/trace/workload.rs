//! The trace generator: a multi-service workload shaped like the Azure Functions 2019 statistics
//! (Shahrad et al., "Serverless in the Wild", ATC'20), synthesised from a seed. Pure: no I/O, no
//! clock; the same [`TraceParams`] give the same [`Trace`] on every machine (`ChaCha8`, a portable
//! generator). `mod.rs` replays it; the unit tests below check its marginals against the targets.
//!
//! What is drawn, per host (a host is one function, a container):
//! - **average rate** (invocations per day): log10 of it normal, fitted so that ≈ 45 % of hosts are
//!   invoked at most once an hour and ≈ 81 % at most once a minute (the paper's figure 5); the tail
//!   then makes the top 1 % of hosts issue most requests;
//! - **burstiness**: ≈ 20 % periodic timers (CV 0); the rest draw a CV of inter-arrival times with
//!   P(CV ≤ 1) ≈ 35 %, P(≤ 2) ≈ 55 %, P(≤ 4) ≈ 77 % (figure 6), piecewise log-linear between;
//!   arrivals are a gamma renewal process with that mean and CV;
//! - a **daily ±20 % modulation** of every non-periodic host's rate (one sine over the day; timers
//!   fire on their own clock), applied by warping the renewal process's time, which keeps its CV;
//! - **service time**: the paper's log-normal fit of average execution times (ln μ = −0.38 s,
//!   σ = 2.36), compressed like the rest of time;
//! - **memory footprint**: log-normal with p50 ≈ 170 MB and p90 ≈ 400 MB (figure 10), times
//!   `memory_scale` (0.1 by default, so this machine holds every host at once: same shape);
//! - **applications**: hosts are grouped into applications of 1–4 functions (most have one);
//!   within one, each function calls the next on every request it serves (a chain), besides its
//!   own arrivals.
//!
//! Time is compressed: `span_s` of trace time (some hours of the day) is replayed in `replay_s`, so
//! every rate is multiplied and every duration (service time, the policies' timeouts) divided by
//! [`TraceParams::compression`]; `warmup_s` of trace time before it is replayed too but not
//! measured (every policy is measured from its steady state). The compression is bounded by the
//! engine, which is not compressed: a cold start takes the same ~0.3 s at any compression, so the
//! idle timeouts (scaled) must stay well above it or every request meets a wake that a real
//! deployment would not see. A host whose compressed rate exceeds `max_rps` is capped there
//! (the machine could not serve the top hosts at 360×; such hosts are warm under every policy,
//! so capping changes the request mix, not memory).

use rand::{RngExt as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution as _, Gamma, LogNormal, Normal};
use serde::Serialize;

/// One day, the period of the modulation.
pub const DAY_S: f64 = 86_400.0;
/// log10(invocations per day) ~ N(μ, σ): P(≤ 24/day) = 0.45, P(≤ 1440/day) = 0.81.
pub const LOG10_RATE_MU: f64 = 1.603;
pub const LOG10_RATE_SIGMA: f64 = 1.772;
/// The share of periodic timers (CV 0).
pub const PERIODIC_SHARE: f64 = 0.20;
/// The CV distribution of the other hosts: (CV, cumulative share), log-linear in between.
pub const CV_POINTS: [(f64, f64); 5] = [
    (0.1, 0.0),
    (1.0, 0.35),
    (2.0, 0.55),
    (4.0, 0.77),
    (16.0, 1.0),
];
/// The daily modulation's amplitude (±20 %).
pub const DAILY_AMPLITUDE: f64 = 0.20;
/// Average execution time: ln(seconds) ~ N(−0.38, 2.36) (the paper's log-normal fit).
pub const SERVICE_LN_MU: f64 = -0.38;
pub const SERVICE_LN_SIGMA: f64 = 2.36;
/// Memory (MB, unscaled): p50 170, p90 400 → ln μ = ln 170, σ = ln(400/170) / 1.2816.
pub const MEMORY_P50_MB: f64 = 170.0;
pub const MEMORY_P90_MB: f64 = 400.0;
/// Replayed service times are capped here (a request still has to fit the bench's timeouts).
pub const MAX_SERVICE_MS: u32 = 1_000;
/// Application sizes (functions per application) and their shares.
const APP_SIZES: [(usize, f64); 4] = [(1, 0.55), (2, 0.20), (3, 0.15), (4, 0.10)];

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TraceParams {
    pub seed: u64,
    pub hosts: usize,
    /// Trace time measured (seconds): the replay's `replay_s` cover this much of the day.
    pub span_s: f64,
    /// Trace time replayed before the measured span (seconds), so that every policy is measured
    /// from its steady state, not from the set-up's every-host-asleep start (a keep-alive would
    /// otherwise hold nothing for its first timeout). At least the longest timeout of a policy.
    pub warmup_s: f64,
    /// Real time the replay takes (seconds).
    pub replay_s: f64,
    /// The most requests per second one host receives from outside in the replay.
    pub max_rps: f64,
    /// Memory footprints are multiplied by this (0.1: p50 17 MB, p90 40 MB).
    pub memory_scale: f64,
}

impl TraceParams {
    /// Trace seconds per real second.
    pub fn compression(&self) -> f64 {
        self.span_s / self.replay_s
    }

    /// A trace duration as replay time.
    pub fn scaled(&self, trace_s: f64) -> f64 {
        trace_s / self.compression()
    }

    /// Replay seconds at which the measured span begins (the warm-up replayed before it).
    pub fn measured_from_s(&self) -> f64 {
        self.scaled(self.warmup_s)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostPlan {
    pub name: String,
    /// The application it belongs to (an index into the grouping).
    pub app: usize,
    /// The host it calls on every request it serves (the next function of its application).
    pub calls: Option<usize>,
    /// Drawn average rate (invocations per trace day), before any cap.
    pub rate_per_day: f64,
    /// Whether its rate was capped at `max_rps` in the replay.
    pub capped: bool,
    /// Coefficient of variation of its inter-arrival times (0: a periodic timer).
    pub cv: f64,
    /// Resident memory it holds (MiB), after `memory_scale`.
    pub memory_mb: u32,
    /// Service time per request in the replay (ms), after compression.
    pub service_ms: u32,
}

/// One external request: when (replay seconds from the start) and to which host.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Arrival {
    pub at_s: f64,
    pub host: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Trace {
    pub params: TraceParams,
    pub hosts: Vec<HostPlan>,
    /// Every external request, in time order.
    pub arrivals: Vec<Arrival>,
}

/// Why a trace cannot be made from these parameters.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ParamsError {
    #[error("the trace needs at least one host (--trace-hosts)")]
    EmptyTrace,
    #[error("the replay must last longer than zero seconds (--trace-secs)")]
    NoTime,
    #[error("the trace must cover more than zero hours of the day (--trace-hours)")]
    NoSpan,
    #[error("--trace-max-rps must be above zero")]
    NoRate,
    #[error("the memory scale must be above zero")]
    NoMemory,
}

/// Draws the trace for `params`.
pub fn generate(params: &TraceParams) -> Result<Trace, ParamsError> {
    if params.hosts == 0 {
        return Err(ParamsError::EmptyTrace);
    }
    if params.replay_s <= 0.0 {
        return Err(ParamsError::NoTime);
    }
    if params.span_s <= 0.0 || params.warmup_s < 0.0 {
        return Err(ParamsError::NoSpan);
    }
    if params.max_rps <= 0.0 {
        return Err(ParamsError::NoRate);
    }
    if params.memory_scale <= 0.0 {
        return Err(ParamsError::NoMemory);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let apps = group(params.hosts, &mut rng);
    let mut hosts = Vec::with_capacity(params.hosts);
    for (app, &size) in apps.iter().enumerate() {
        for function in 0..size {
            let index = hosts.len();
            let rate_per_day = draw_rate_per_day(&mut rng);
            let cv = draw_cv(&mut rng);
            let memory_mb = (draw_memory_mb(&mut rng) * params.memory_scale)
                .round()
                .max(1.0);
            let service_ms = (draw_service_s(&mut rng) * 1000.0 / params.compression())
                .round()
                .min(f64::from(MAX_SERVICE_MS));
            let cap_per_day = params.max_rps * DAY_S / params.compression();
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "rounded, positive and clamped above: a few MiB and at most MAX_SERVICE_MS"
            )]
            hosts.push(HostPlan {
                name: format!("a{app}f{function}"),
                app,
                calls: (function + 1 < size).then_some(index + 1),
                rate_per_day,
                capped: rate_per_day > cap_per_day,
                cv,
                memory_mb: memory_mb.min(f64::from(u32::MAX)) as u32,
                service_ms: service_ms as u32,
            });
        }
    }
    // Arrivals come from a stream of their own per host, so that one host's draws do not shift
    // another's (a change to one distribution leaves the rest of the trace as it was).
    let phase = rng.random::<f64>() * std::f64::consts::TAU;
    let mut arrivals = Vec::new();
    for (index, host) in hosts.iter().enumerate() {
        let mut stream = ChaCha8Rng::seed_from_u64(params.seed);
        stream.set_stream(index as u64 + 1);
        let rate = host
            .rate_per_day
            .min(params.max_rps * DAY_S / params.compression());
        let replayed_s = params.warmup_s + params.span_s;
        for t in arrival_times(rate / DAY_S, host.cv, replayed_s, phase, &mut stream) {
            arrivals.push(Arrival {
                at_s: t / params.compression(),
                host: index,
            });
        }
    }
    arrivals.sort_by(|a, b| a.at_s.total_cmp(&b.at_s).then(a.host.cmp(&b.host)));
    Ok(Trace {
        params: params.clone(),
        hosts,
        arrivals,
    })
}

/// The share of always-on's memory-seconds over the measured span that an ideal policy saves
/// which keeps each host warm exactly while it serves a request and for `timeout_s` of trace time
/// after, its wakes free: what the trace itself allows that timeout, whatever the engine. A
/// request to a host also reaches every host down its application's chain, and keeps each busy
/// from when it reaches it until it has answered ([`busy_span`]).
pub fn ideal_saving(trace: &Trace, timeout_s: f64) -> f64 {
    let from = trace.params.measured_from_s();
    let to = from + trace.params.replay_s;
    let hold = trace.params.scaled(timeout_s);
    let mut warm_mb_s = 0.0;
    let mut total_mb_s = 0.0;
    for (index, host) in trace.hosts.iter().enumerate() {
        let mut spans: Vec<(f64, f64)> = (trace.arrivals.iter())
            .filter_map(|a| {
                let (reached, answered) = busy_span(trace, a.host, index)?;
                Some((a.at_s + reached, a.at_s + answered + hold))
            })
            .collect();
        spans.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut warm = 0.0;
        let mut until = f64::NEG_INFINITY;
        for (start, end) in spans {
            let (start, end) = (start.max(until).max(from), end.min(to));
            if end > start {
                warm += end - start;
            }
            until = until.max(end);
        }
        let mb = f64::from(host.memory_mb);
        warm_mb_s += mb * warm;
        total_mb_s += mb * (to - from);
    }
    if total_mb_s > 0.0 {
        1.0 - warm_mb_s / total_mb_s
    } else {
        0.0
    }
}

/// When a request arriving at `front` reaches `host` and when `host` has answered it, in replay
/// seconds after its arrival; `None` if `front`'s chain does not pass `host`. Each host serves
/// (`service_ms`) and then calls the next (`hello`), answering once its backend did: a host is
/// reached after the services before it on the chain, and answers after the whole chain's.
pub fn busy_span(trace: &Trace, front: usize, host: usize) -> Option<(f64, f64)> {
    let mut reached = None;
    let mut elapsed = 0.0;
    let mut at = Some(front);
    // A chain is at most every host once.
    for _ in 0..trace.hosts.len() {
        let Some(current) = at else { break };
        if current == host {
            reached = Some(elapsed);
        }
        elapsed += f64::from(trace.hosts[current].service_ms) / 1000.0;
        at = trace.hosts[current].calls;
    }
    reached.map(|reached| (reached, elapsed))
}

/// The longest idle timeout (trace seconds, to a millisecond) for which [`ideal_saving`] still
/// reaches `share`; 0 if none does. The saving only falls as the timeout grows.
pub fn timeout_for_saving(trace: &Trace, share: f64) -> f64 {
    let (mut low, mut high) = (0.0_f64, 86_400.0_f64);
    if ideal_saving(trace, high) >= share {
        return high;
    }
    if ideal_saving(trace, low) < share {
        return 0.0;
    }
    while high - low > 0.001 {
        let mid = f64::midpoint(low, high);
        if ideal_saving(trace, mid) >= share {
            low = mid;
        } else {
            high = mid;
        }
    }
    low
}

/// Application sizes summing to `hosts` (the last one cut to fit).
fn group(hosts: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut left = hosts;
    while left > 0 {
        let u = rng.random::<f64>();
        let mut acc = 0.0;
        let mut size = APP_SIZES[APP_SIZES.len() - 1].0;
        for (s, share) in APP_SIZES {
            acc += share;
            if u < acc {
                size = s;
                break;
            }
        }
        let size = size.min(left);
        sizes.push(size);
        left -= size;
    }
    sizes
}

pub fn draw_rate_per_day(rng: &mut ChaCha8Rng) -> f64 {
    let normal = Normal::new(LOG10_RATE_MU, LOG10_RATE_SIGMA).expect("a valid σ");
    10f64.powf(normal.sample(rng))
}

/// 0 for a periodic timer; else a CV from [`CV_POINTS`].
pub fn draw_cv(rng: &mut ChaCha8Rng) -> f64 {
    if rng.random::<f64>() < PERIODIC_SHARE {
        return 0.0;
    }
    let u = rng.random::<f64>();
    for pair in CV_POINTS.windows(2) {
        let ((cv0, f0), (cv1, f1)) = (pair[0], pair[1]);
        if u <= f1 {
            let t = (u - f0) / (f1 - f0);
            return (cv0.ln() + t * (cv1.ln() - cv0.ln())).exp();
        }
    }
    CV_POINTS[CV_POINTS.len() - 1].0
}

pub fn draw_memory_mb(rng: &mut ChaCha8Rng) -> f64 {
    let sigma = (MEMORY_P90_MB / MEMORY_P50_MB).ln() / 1.281_551_565_5;
    LogNormal::new(MEMORY_P50_MB.ln(), sigma)
        .expect("a valid σ")
        .sample(rng)
}

pub fn draw_service_s(rng: &mut ChaCha8Rng) -> f64 {
    LogNormal::new(SERVICE_LN_MU, SERVICE_LN_SIGMA)
        .expect("a valid σ")
        .sample(rng)
}

/// Arrival times in `[0, span_s)` of a host with average `rate` (per second) and `cv`.
/// Periodic timers (CV 0) tick at their rate from a random phase; the others are a gamma renewal
/// process in "busy time", warped onto the day by the modulation.
pub fn arrival_times(
    rate: f64,
    cv: f64,
    span_s: f64,
    phase: f64,
    rng: &mut ChaCha8Rng,
) -> Vec<f64> {
    let mut times = Vec::new();
    if rate <= 0.0 {
        return times;
    }
    let mean = 1.0 / rate;
    if cv == 0.0 {
        let mut t = rng.random::<f64>() * mean;
        while t < span_s {
            times.push(t);
            t += mean;
        }
        return times;
    }
    let shape = 1.0 / (cv * cv);
    let gamma = Gamma::new(shape, mean / shape).expect("valid shape and scale");
    let end = busy_time(span_s, phase);
    // A stationary start: the first gap is a uniform share of a drawn one.
    let mut tau = rng.random::<f64>() * gamma.sample(rng);
    while tau < end {
        times.push(day_time(tau, phase, span_s));
        tau += gamma.sample(rng);
    }
    times
}

/// Λ(t) = ∫₀ᵗ (1 + A sin(2πs/day + φ)) ds: trace time → the modulated process's own time.
pub fn busy_time(t: f64, phase: f64) -> f64 {
    let omega = std::f64::consts::TAU / DAY_S;
    t - DAILY_AMPLITUDE / omega * ((omega * t + phase).cos() - phase.cos())
}

/// Λ⁻¹: the trace time at which the modulated process has run `tau` (bisection: Λ is strictly
/// increasing, its slope between 0.8 and 1.2).
fn day_time(tau: f64, phase: f64, span_s: f64) -> f64 {
    let (mut lo, mut hi) = (tau / (1.0 + DAILY_AMPLITUDE), tau / (1.0 - DAILY_AMPLITUDE));
    hi = hi.min(span_s);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if busy_time(mid, phase) < tau {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
#[path = "workload_tests.rs"]
pub(super) mod tests;
