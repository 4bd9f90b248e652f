//! Prometheus metrics on `/metrics` (default 127.0.0.1:9477): every wake by phase and outcome
//! (recorded by the orchestrator as wakes finish, [`WakeMetrics`]), and the series derived from
//! the orchestrator's published [`Snapshot`] at scrape time: hosts by state, what happened to held
//! packets, the datapath's own counters and each host's traffic. A scrape reads the snapshot; it
//! never touches the kernel maps or waits for the orchestrator.

use std::net::SocketAddr;

use prometheus::{
    Counter, Encoder, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
    core::{Collector, Desc},
    proto::MetricFamily,
};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{
    clock::monotonic_ns,
    orchestrator::WakeMetrics,
    report::{Snapshot, StateName},
};

/// The registry behind `/metrics`.
pub struct Metrics {
    registry: Registry,
    names: Vec<String>,
}

impl Metrics {
    /// Registers the orchestrator's wake metrics and the snapshot-derived series.
    pub fn new(wakes: &WakeMetrics, snapshot: watch::Receiver<Snapshot>) -> Metrics {
        let registry = Registry::new_custom(Some("imag".into()), None).expect("a valid prefix");
        let build_info = IntGaugeVec::new(
            Opts::new("build_info", "The agent's version and git revision"),
            &["version", "revision"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("IMAG_GIT_REVISION")])
            .set(1);
        let mut names = Vec::new();
        let mut collectors = wakes.collectors();
        collectors.push(Box::new(build_info));
        collectors.push(Box::new(SnapshotCollector {
            prototype: Series::new(),
            snapshot,
        }));
        for collector in collectors {
            names.extend(collector.desc().iter().map(|d| d.fq_name.clone()));
            registry.register(collector).expect("unique metric names");
        }
        Metrics { registry, names }
    }

    /// Registers a component's own collectors (e.g. [`crate::dns::DnsMetrics::collectors`]).
    pub fn register(&mut self, collectors: Vec<Box<dyn Collector>>) {
        for collector in collectors {
            self.names
                .extend(collector.desc().iter().map(|d| d.fq_name.clone()));
            self.registry
                .register(collector)
                .expect("unique metric names");
        }
    }

    /// The full names (`imag_…`) of every metric family.
    pub fn names(&self) -> &[String] {
        &self.names
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

/// The series derived from a snapshot, built afresh at each scrape.
struct Series {
    hosts: IntGaugeVec,
    packets: IntCounterVec,
    datapath: IntCounterVec,
    ring_lost: IntGauge,
    host_packets: IntCounterVec,
    host_bytes: IntCounterVec,
    host_connections: IntGaugeVec,
    host_idle_seconds: GaugeVec,
    evictions: IntCounterVec,
    refused: IntCounterVec,
    budget_used: IntGaugeVec,
    budget_limit: IntGaugeVec,
    prewakes: IntCounterVec,
    page_outs: IntCounterVec,
    paged_out_bytes: IntCounter,
    page_out_seconds: Counter,
    page_out_wait_seconds: Counter,
    cluster_nodes: IntGaugeVec,
    cluster_claims: IntCounterVec,
}

impl Series {
    #[allow(
        clippy::too_many_lines,
        reason = "one flat constructor call per series"
    )]
    fn new() -> Series {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        Series {
            hosts: IntGaugeVec::new(Opts::new("hosts", "Hosts by state"), &["state"])
                .expect("valid metric"),
            packets: counter(
                "held_packets_total",
                "Packets the datapath held, by what became of them (held, delivered, refused, \
                 dropped_*)",
                &["outcome"],
            ),
            datapath: counter(
                "datapath_packets_total",
                "The datapath's verdicts, summed over CPUs",
                &["verdict"],
            ),
            ring_lost: IntGauge::new(
                "ring_buffer_lost_packets",
                "Frames for cold hosts the ring buffer had no room for (since the datapath was \
                 loaded)",
            )
            .expect("valid metric"),
            host_packets: counter(
                "host_packets_total",
                "Packets on each host's own link, by direction",
                &["host", "direction"],
            ),
            host_bytes: counter(
                "host_bytes_total",
                "Bytes on each host's own link, by direction",
                &["host", "direction"],
            ),
            host_connections: IntGaugeVec::new(
                Opts::new("host_open_connections", "Open TCP connections of each host"),
                &["host"],
            )
            .expect("valid metric"),
            host_idle_seconds: GaugeVec::new(
                Opts::new(
                    "host_idle_seconds",
                    "Seconds since each warm host's last packet that counts for idleness",
                ),
                &["host"],
            )
            .expect("valid metric"),
            evictions: counter(
                "evictions_total",
                "Hosts put to sleep to make room in the budget, by the limit a wake ran into",
                &["reason"],
            ),
            refused: counter(
                "wakes_refused_total",
                "Wakes refused: budget (no room, nothing evictable) or rate (source over its \
                 wake rate)",
                &["reason"],
            ),
            budget_used: IntGaugeVec::new(
                Opts::new(
                    "budget_used",
                    "Warm, waking and paused hosts (warm) and their weight in bytes (memory)",
                ),
                &["resource"],
            )
            .expect("valid metric"),
            budget_limit: IntGaugeVec::new(
                Opts::new(
                    "budget_limit",
                    "[limits] max_warm (warm) and memory_budget (memory), when set",
                ),
                &["resource"],
            )
            .expect("valid metric"),
            prewakes: counter(
                "prewakes_total",
                "Hosts woken with another (wakes_with, learned edges), by whether that host's \
                 traffic reached them in time (used) or not (unused)",
                &["result"],
            ),
            page_outs: counter(
                "page_outs_total",
                "Page-outs of paused hosts' memory to swap (swap_after), by result (done, failed)",
                &["result"],
            ),
            paged_out_bytes: IntCounter::new(
                "paged_out_bytes_total",
                "Bytes the page-outs of paused hosts moved out of memory (swap_after)",
            )
            .expect("valid metric"),
            page_out_seconds: Counter::new(
                "page_out_seconds_total",
                "Time page-outs ran (one at a time: its rate is the share of time the swap \
                 device was busy with them)",
            )
            .expect("valid metric"),
            page_out_wait_seconds: Counter::new(
                "page_out_wait_seconds_total",
                "Time page-outs waited in the queue before they ran (the host expected to sleep \
                 longest goes first)",
            )
            .expect("valid metric"),
            cluster_nodes: IntGaugeVec::new(
                Opts::new(
                    "cluster_nodes",
                    "Scale-out: live nodes (live), and whether this node keeps its lease (healthy: \
                     1, fenced: 0)",
                ),
                &["what"],
            )
            .expect("valid metric"),
            cluster_claims: counter(
                "cluster_claims_total",
                "Scale-out: claims of hosts before a wake (won, lost to another node), and \
                 fences (this node lost the store and stopped serving)",
                &["result"],
            ),
        }
    }

    fn collectors(&self) -> [&dyn Collector; 19] {
        [
            &self.hosts,
            &self.packets,
            &self.datapath,
            &self.ring_lost,
            &self.host_packets,
            &self.host_bytes,
            &self.host_connections,
            &self.host_idle_seconds,
            &self.evictions,
            &self.refused,
            &self.budget_used,
            &self.budget_limit,
            &self.prewakes,
            &self.page_outs,
            &self.paged_out_bytes,
            &self.page_out_seconds,
            &self.page_out_wait_seconds,
            &self.cluster_nodes,
            &self.cluster_claims,
        ]
    }

    fn fill(&self, snapshot: &Snapshot) {
        for state in StateName::ALL {
            let count = snapshot.hosts.iter().filter(|h| h.state == state).count();
            self.hosts
                .with_label_values(&[state.as_str()])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        for (outcome, value) in snapshot.counters.by_outcome() {
            self.packets.with_label_values(&[outcome]).inc_by(value);
        }
        for (name, value) in imag_common::stat::NAMES.iter().zip(&snapshot.datapath) {
            self.datapath.with_label_values(&[name]).inc_by(*value);
        }
        if let Some(lost) = snapshot
            .datapath
            .get(imag_common::stat::DROPPED_RING_FULL as usize)
        {
            self.ring_lost.set(i64::try_from(*lost).unwrap_or(i64::MAX));
        }
        let b = &snapshot.budget;
        for (reason, value) in b.evictions() {
            self.evictions.with_label_values(&[reason]).inc_by(value);
        }
        for (reason, value) in b.refused() {
            self.refused.with_label_values(&[reason]).inc_by(value);
        }
        for (resource, used, limit) in [
            ("warm", b.warm, b.warm_limit),
            ("memory", b.memory_bytes, b.memory_limit),
        ] {
            self.budget_used
                .with_label_values(&[resource])
                .set(i64::try_from(used).unwrap_or(i64::MAX));
            if let Some(limit) = limit {
                self.budget_limit
                    .with_label_values(&[resource])
                    .set(i64::try_from(limit).unwrap_or(i64::MAX));
            }
        }
        let p = &snapshot.prewake;
        for (result, value) in [("used", p.used), ("unused", p.unused)] {
            self.prewakes.with_label_values(&[result]).inc_by(value);
        }
        let o = &snapshot.page_outs;
        for (result, value) in [("done", o.done), ("failed", o.failed)] {
            self.page_outs.with_label_values(&[result]).inc_by(value);
        }
        self.paged_out_bytes.inc_by(o.bytes);
        let seconds = |ns: u64| std::time::Duration::from_nanos(ns).as_secs_f64();
        self.page_out_seconds.inc_by(seconds(o.busy_ns));
        self.page_out_wait_seconds.inc_by(seconds(o.wait_ns));
        if let Some(c) = &snapshot.cluster {
            let live = i64::try_from(c.nodes.len()).unwrap_or(i64::MAX);
            self.cluster_nodes.with_label_values(&["live"]).set(live);
            self.cluster_nodes
                .with_label_values(&["healthy"])
                .set(i64::from(c.healthy));
            for (result, value) in [
                ("won", c.claims_won),
                ("lost", c.claims_lost),
                ("fenced", c.fences),
            ] {
                self.cluster_claims
                    .with_label_values(&[result])
                    .inc_by(value);
            }
        }
        let now_ns = monotonic_ns();
        for host in &snapshot.hosts {
            let name = host.name.as_str();
            let t = &host.traffic;
            for (counter, direction, value) in [
                (&self.host_packets, "in", t.packets_in),
                (&self.host_packets, "out", t.packets_out),
                (&self.host_bytes, "in", t.bytes_in),
                (&self.host_bytes, "out", t.bytes_out),
            ] {
                if value > 0 {
                    counter.with_label_values(&[name, direction]).inc_by(value);
                }
            }
            self.host_connections
                .with_label_values(&[name])
                .set(i64::try_from(t.open_connections).unwrap_or(i64::MAX));
            if let Some(at) = host.last_active_ns {
                self.host_idle_seconds
                    .with_label_values(&[name])
                    .set(now_ns.saturating_sub(at) as f64 / 1e9);
            }
        }
    }
}

/// Derives the snapshot's series at each scrape.
struct SnapshotCollector {
    /// Never filled: it only describes the families.
    prototype: Series,
    snapshot: watch::Receiver<Snapshot>,
}

impl Collector for SnapshotCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.prototype
            .collectors()
            .into_iter()
            .flat_map(|c| c.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let series = Series::new();
        series.fill(&self.snapshot.borrow());
        series
            .collectors()
            .into_iter()
            .flat_map(prometheus::core::Collector::collect)
            .collect()
    }
}

/// Serves `/metrics` on `addr` until the process exits.
pub async fn serve(metrics: std::sync::Arc<Metrics>, addr: SocketAddr) -> std::io::Result<()> {
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
    use crate::{
        report::{HostView, Phase, ReadyBy, Traffic, WakeRecord, WakeTimings},
        runtime::Tier,
    };

    #[test]
    fn the_example_dashboard_only_queries_metrics_that_exist() {
        let (_tx, rx) = watch::channel(Snapshot::default());
        let metrics = Metrics::new(&WakeMetrics::new(), rx);
        let names: Vec<String> = metrics
            .names()
            .iter()
            .map(|n| format!("imag_{n}"))
            .collect();
        let dashboard: serde_json::Value = serde_json::from_str(include_str!(
            "../../../examples/operator/grafana-dashboard.json"
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
        let wakes = WakeMetrics::new();
        let (_tx, rx) = watch::channel(Snapshot::default());
        let metrics = Metrics::new(&wakes, rx);
        let timings = WakeTimings {
            held_ns: 1_000_000,
            requested_ns: 1_500_000,
            running_ns: 251_500_000,
            ready_ns: 252_000_000,
            delivered_ns: 252_300_000,
        };
        wakes.record(
            "web",
            &WakeRecord {
                from: Tier::Absent,
                timings,
                failure: None,
                packets: 1,
                ready_by: ReadyBy::Event,
            },
        );
        let text = metrics.render();
        for phase in Phase::ALL {
            let phase = phase.as_str();
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

    #[test]
    fn a_scrape_reads_the_latest_snapshot() {
        let (tx, rx) = watch::channel(Snapshot::default());
        let metrics = Metrics::new(&WakeMetrics::new(), rx);
        let host = |name: &str, state| HostView {
            name: name.into(),
            address: std::net::Ipv4Addr::new(10, 0, 0, 1),
            container: format!("n-{name}"),
            state,
            tier: None,
            last_wake: None,
            held_packets: 0,
            traffic: Traffic {
                packets_in: 3,
                open_connections: 2,
                ..Traffic::default()
            },
            last_active_ns: None,
            paged_out_bytes: 0,
            weight: 1 << 20,
            node: None,
        };
        tx.send_modify(|s| {
            s.hosts = vec![host("a", StateName::Warm), host("b", StateName::Failed)];
            s.counters.held = 7;
            s.datapath = vec![1; imag_common::stat::COUNT as usize];
        });
        let text = metrics.render();
        for line in [
            "imag_hosts{state=\"failed\"} 1",
            "imag_hosts{state=\"warm\"} 1",
            "imag_hosts{state=\"asleep\"} 0",
            "imag_held_packets_total{outcome=\"held\"} 7",
            "imag_host_packets_total{direction=\"in\",host=\"a\"} 3",
            "imag_host_open_connections{host=\"b\"} 2",
            "imag_ring_buffer_lost_packets 1",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
    }
}
