//! The DNS server's own metrics, recorded as queries finish: queries by result and transport,
//! answer latency by result, answers truncated for UDP. The operator surface
//! ([`crate::ops::metrics`]) only registers [`DnsMetrics::collectors`], like the orchestrator's
//! [`crate::orchestrator::WakeMetrics`].

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, core::Collector};

use super::answer::Outcome;

/// Latency buckets: 50 µs (a table answer) to 10 s (a slow upstream after retries).
const BUCKETS: [f64; 14] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0, 10.0,
];

/// How a query arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// `imag_dns_queries_total{result,transport}`, `imag_dns_duration_seconds{result}` and
/// `imag_dns_truncated_total`.
#[derive(Clone)]
pub struct DnsMetrics {
    queries: IntCounterVec,
    duration: HistogramVec,
    truncated: IntCounter,
}

impl Default for DnsMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl DnsMetrics {
    pub fn new() -> DnsMetrics {
        let queries = IntCounterVec::new(
            Opts::new(
                "dns_queries_total",
                "DNS queries by result (answered, nxdomain, forwarded, servfail, malformed, \
                 refused) and transport",
            ),
            &["result", "transport"],
        )
        .expect("valid metric");
        // Every series exists from the start, so that a rate over it is never "no data".
        for outcome in Outcome::ALL {
            for transport in [Transport::Udp, Transport::Tcp] {
                queries.with_label_values(&[outcome.as_str(), transport.as_str()]);
            }
        }
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "dns_duration_seconds",
                "Time from receiving a DNS query to sending its answer, by result",
            )
            .buckets(BUCKETS.to_vec()),
            &["result"],
        )
        .expect("valid metric");
        let truncated = IntCounter::new(
            "dns_truncated_total",
            "UDP answers cut to the question with the TC bit (too large for the client's \
             buffer; it asks again over TCP)",
        )
        .expect("valid metric");
        DnsMetrics {
            queries,
            duration,
            truncated,
        }
    }

    /// Records a query that ended with `outcome` after `elapsed` (not timed when malformed).
    pub fn record(&self, outcome: Outcome, transport: Transport, elapsed: Option<Duration>) {
        self.queries
            .with_label_values(&[outcome.as_str(), transport.as_str()])
            .inc();
        if let Some(elapsed) = elapsed {
            self.duration
                .with_label_values(&[outcome.as_str()])
                .observe(elapsed.as_secs_f64());
        }
    }

    pub fn record_truncated(&self) {
        self.truncated.inc();
    }

    /// Queries so far that ended with `outcome`, over both transports (for tests and status).
    pub fn count(&self, outcome: Outcome) -> u64 {
        [Transport::Udp, Transport::Tcp]
            .iter()
            .map(|t| {
                self.queries
                    .with_label_values(&[outcome.as_str(), t.as_str()])
                    .get()
            })
            .sum()
    }

    pub fn truncated(&self) -> u64 {
        self.truncated.get()
    }

    /// The collectors to register with a registry.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.queries.clone()),
            Box::new(self.duration.clone()),
            Box::new(self.truncated.clone()),
        ]
    }
}
