//! The orchestrator's own metrics: every finished wake, by phase and outcome. They are events
//! (a histogram observation per phase), so the orchestrator records them as wakes finish; the
//! operator surface only registers them next to the series it derives from the snapshot.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, core::Collector};

use crate::report::WakeRecord;

/// Wake latency buckets: 1 ms to 60 s.
const BUCKETS: [f64; 16] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
];

/// `imag_wake_duration_seconds{host,phase,from}` and `imag_wakes_total{host,result,reason,from}`.
#[derive(Clone)]
pub struct WakeMetrics {
    duration: HistogramVec,
    wakes: IntCounterVec,
}

impl Default for WakeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WakeMetrics {
    pub fn new() -> WakeMetrics {
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "wake_duration_seconds",
                "Duration of each phase of a successful wake (held_to_start, start_to_running, \
                 running_to_ready, ready_to_delivered) and end to end (total)",
            )
            .buckets(BUCKETS.to_vec()),
            &["host", "phase", "from"],
        )
        .expect("valid metric");
        let wakes = IntCounterVec::new(
            Opts::new(
                "wakes_total",
                "Wakes by host, result, failure reason and starting tier",
            ),
            &["host", "result", "reason", "from"],
        )
        .expect("valid metric");
        WakeMetrics { duration, wakes }
    }

    /// Records a finished wake of `host`.
    pub fn record(&self, host: &str, wake: &WakeRecord) {
        let from = wake.from.as_str();
        match &wake.failure {
            None => {
                for (phase, ms) in wake.timings.phases() {
                    self.duration
                        .with_label_values(&[host, phase.as_str(), from])
                        .observe(ms / 1000.0);
                }
                self.wakes.with_label_values(&[host, "ok", "", from]).inc();
            }
            Some((reason, _)) => {
                self.wakes
                    .with_label_values(&[host, "failed", reason, from])
                    .inc();
            }
        }
    }

    /// The collectors to register with a registry.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.duration.clone()),
            Box::new(self.wakes.clone()),
        ]
    }
}
