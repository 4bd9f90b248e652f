//! Prometheus metrics: every wake by phase, wake outcomes, hosts by state, what happened to held
//! packets, the datapath's own counters and each host's activity. Served as text on `/metrics`
//! (default 127.0.0.1:9477).
//!
//! The orchestrator records wakes as they finish and refreshes the datapath-derived series on its
//! idle tick (every 250 ms), so a scrape never touches the kernel maps itself.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use tracing::{info, warn};

use crate::orchestrator::{HoldCounters, WakeTimings, state::HostState};

/// Wake latency buckets: 1 ms to 60 s.
const BUCKETS: [f64; 16] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
];
/// The phases of a wake, in order, as labelled in `imag_wake_duration_seconds`.
pub const PHASES: [&str; 5] = [
    "held_to_start",
    "start_to_running",
    "running_to_ready",
    "ready_to_delivered",
    "total",
];

pub struct Metrics {
    registry: Registry,
    wake_duration: HistogramVec,
    wakes: IntCounterVec,
    hosts: IntGaugeVec,
    packets: IntCounterVec,
    datapath: IntCounterVec,
    ring_lost: IntGauge,
    host_packets: IntCounterVec,
    host_bytes: IntCounterVec,
    host_connections: IntGaugeVec,
    host_idle_seconds: prometheus::GaugeVec,
    /// Last values seen of monotonic sources, to turn them into counter increments.
    last: std::sync::Mutex<HashMap<String, u64>>,
    names: Vec<String>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new_custom(Some("imag".into()), None).expect("a valid prefix");
        let wake_duration = HistogramVec::new(
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
        let hosts = IntGaugeVec::new(Opts::new("hosts", "Hosts by state"), &["state"])
            .expect("valid metric");
        let packets = IntCounterVec::new(
            Opts::new(
                "held_packets_total",
                "Packets the datapath held, by what became of them (held, delivered, refused, \
                 dropped_*)",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let datapath = IntCounterVec::new(
            Opts::new(
                "datapath_packets_total",
                "The datapath's verdicts, summed over CPUs",
            ),
            &["verdict"],
        )
        .expect("valid metric");
        let ring_lost = IntGauge::new(
            "ring_buffer_lost_packets",
            "Frames for cold hosts the ring buffer had no room for (since the datapath was loaded)",
        )
        .expect("valid metric");
        let host_packets = IntCounterVec::new(
            Opts::new(
                "host_packets_total",
                "Packets on each host's own link, by direction",
            ),
            &["host", "direction"],
        )
        .expect("valid metric");
        let host_bytes = IntCounterVec::new(
            Opts::new(
                "host_bytes_total",
                "Bytes on each host's own link, by direction",
            ),
            &["host", "direction"],
        )
        .expect("valid metric");
        let host_connections = IntGaugeVec::new(
            Opts::new("host_open_connections", "Open TCP connections of each host"),
            &["host"],
        )
        .expect("valid metric");
        let host_idle_seconds = prometheus::GaugeVec::new(
            Opts::new(
                "host_idle_seconds",
                "Seconds since each warm host's last packet that counts for idleness",
            ),
            &["host"],
        )
        .expect("valid metric");
        let build_info = IntGaugeVec::new(
            Opts::new("build_info", "The agent's version and git revision"),
            &["version", "revision"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("IMAG_GIT_REVISION")])
            .set(1);
        let mut names = Vec::new();
        for collector in [
            Box::new(wake_duration.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(wakes.clone()),
            Box::new(hosts.clone()),
            Box::new(packets.clone()),
            Box::new(datapath.clone()),
            Box::new(ring_lost.clone()),
            Box::new(host_packets.clone()),
            Box::new(host_bytes.clone()),
            Box::new(host_connections.clone()),
            Box::new(host_idle_seconds.clone()),
            Box::new(build_info),
        ] {
            names.extend(collector.desc().iter().map(|d| d.fq_name.clone()));
            registry.register(collector).expect("unique metric names");
        }
        Arc::new(Metrics {
            registry,
            wake_duration,
            wakes,
            hosts,
            packets,
            datapath,
            ring_lost,
            host_packets,
            host_bytes,
            host_connections,
            host_idle_seconds,
            last: Default::default(),
            names,
        })
    }

    /// The full names (`imag_…`) of every metric family.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn record_wake_ok(&self, host: &str, from: &str, timings: &WakeTimings) {
        let phases = timings.phases_ms();
        for (phase, ms) in PHASES.iter().zip(phases) {
            if *phase == "held_to_start" && timings.held_ns == 0 {
                continue; // an operator's wake: no packet was held
            }
            self.wake_duration
                .with_label_values(&[host, phase, from])
                .observe(ms / 1000.0);
        }
        self.wakes.with_label_values(&[host, "ok", "", from]).inc();
    }

    pub fn record_wake_failed(&self, host: &str, from: &str, reason: &str) {
        self.wakes
            .with_label_values(&[host, "failed", reason, from])
            .inc();
    }

    pub fn set_hosts_by_state<'a>(&self, states: impl Iterator<Item = &'a HostState>) {
        let mut counts: HashMap<&str, i64> = HostState::NAMES.iter().map(|n| (*n, 0)).collect();
        for state in states {
            *counts.entry(state.name()).or_default() += 1;
        }
        for (state, count) in counts {
            self.hosts.with_label_values(&[state]).set(count);
        }
    }

    /// Adds to `counter` (with `labels`) what `value`, a monotonic source, grew since last time.
    fn advance(&self, counter: &IntCounterVec, labels: &[&str], value: u64) {
        let key = format!(
            "{}{labels:?}",
            prometheus::core::Collector::desc(counter)[0].fq_name
        );
        let mut last = self.last.lock().expect("not poisoned");
        let before = last.insert(key, value).unwrap_or(0);
        if value > before {
            counter.with_label_values(labels).inc_by(value - before);
        }
    }

    pub fn set_hold_counters(&self, c: &HoldCounters) {
        for (outcome, value) in [
            ("held", c.held),
            ("delivered", c.delivered),
            ("refused", c.refused),
            ("dropped_unanswerable", c.dropped_unanswerable),
            ("dropped_host_limit", c.dropped_host_limit),
            ("dropped_global_limit", c.dropped_global_limit),
            ("dropped_expired", c.dropped_expired),
            ("dropped_unknown_host", c.dropped_unknown_host),
            ("deliver_errors", c.deliver_errors),
        ] {
            self.advance(&self.packets, &[outcome], value);
        }
    }

    pub fn set_datapath_counters(&self, stats: &[u64]) {
        for (name, value) in imag_common::stat::NAMES.iter().zip(stats) {
            self.advance(&self.datapath, &[name], *value);
        }
        self.ring_lost
            .set(stats[imag_common::stat::DROPPED_RING_FULL as usize] as i64);
    }

    pub fn set_host_activity(
        &self,
        host: &str,
        activity: &imag_common::HostActivity,
        idle_seconds: Option<f64>,
    ) {
        self.advance(&self.host_packets, &[host, "in"], activity.packets_in);
        self.advance(&self.host_packets, &[host, "out"], activity.packets_out);
        self.advance(&self.host_bytes, &[host, "in"], activity.bytes_in);
        self.advance(&self.host_bytes, &[host, "out"], activity.bytes_out);
        self.host_connections
            .with_label_values(&[host])
            .set(activity.tcp_opened.saturating_sub(activity.tcp_closed) as i64);
        match idle_seconds {
            Some(s) => self.host_idle_seconds.with_label_values(&[host]).set(s),
            None => {
                let _ = self.host_idle_seconds.remove_label_values(&[host]);
            }
        }
    }

    /// Drops the idle gauge of a host that is not warm.
    pub fn clear_idle(&self, host: &str) {
        let _ = self.host_idle_seconds.remove_label_values(&[host]);
    }

    /// The exposition text of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("encoding to memory cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

/// Serves `/metrics` on `addr` until the process exits.
pub async fn serve(metrics: Arc<Metrics>, addr: SocketAddr) -> std::io::Result<()> {
    use axum::{Router, http::header, response::IntoResponse, routing::get};
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot serve metrics on {addr} ({e}): choose another address with --metrics"),
        )
    })?;
    info!(%addr, "serving Prometheus metrics on /metrics");
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    metrics.render(),
                )
                    .into_response()
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            warn!(error = %err, "the metrics server stopped");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_dashboard_only_queries_metrics_that_exist() {
        let metrics = Metrics::new();
        let names: Vec<String> = metrics
            .names()
            .iter()
            .map(|n| format!("imag_{n}"))
            .collect();
        let dashboard: serde_json::Value = serde_json::from_str(include_str!(
            "../../examples/operator/grafana-dashboard.json"
        ))
        .expect("the dashboard is valid JSON");
        let mut queried = 0;
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if let Some(family) = word.strip_prefix("imag_") {
                        let base = ["_bucket", "_sum", "_count"]
                            .iter()
                            .find_map(|s| family.strip_suffix(s))
                            .unwrap_or(family);
                        assert!(
                            names.contains(&format!("imag_{base}")),
                            "panel {:?} queries imag_{family}, which the agent does not export",
                            panel["title"]
                        );
                        queried += 1;
                    }
                }
            }
        }
        assert!(queried >= 8);
    }

    #[test]
    fn a_wake_is_recorded_in_every_phase() {
        let metrics = Metrics::new();
        let timings = WakeTimings {
            held_ns: 1_000_000,
            requested_ns: 1_500_000,
            running_ns: 251_500_000,
            ready_ns: 252_000_000,
            delivered_ns: 252_300_000,
        };
        metrics.record_wake_ok("web", "absent", &timings);
        let text = metrics.render();
        for phase in PHASES {
            assert!(
                text.contains(&format!(
                    "imag_wake_duration_seconds_count{{from=\"absent\",host=\"web\",phase=\"{phase}\"}} 1"
                )),
                "{phase}:\n{text}"
            );
        }
        assert!(text.contains(
            "imag_wakes_total{from=\"absent\",host=\"web\",reason=\"\",result=\"ok\"} 1"
        ));
    }
}
