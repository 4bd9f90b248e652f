//! Where a replay lost packets, for whoever chases a SYN retransmission the report shows: the
//! datapath's drops over the measured span, the hosts' own TCP stacks (listen queues that
//! overflowed, SYNs the hosts sent each other again), and the requests that took longer than a
//! client's first SYN timeout beyond their path's service time while no wake on their path took
//! that long.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use imag_testkit::{
    clients::{net_counter_of, syn_retransmissions_forced},
    docker,
    metrics::Metrics,
};
use serde::Serialize;

use super::{
    Trace, path,
    replay::{Done, Wake},
};

/// The hosts' TCP counters summed over their containers (`TcpExt` of `/proc/PID/net/netstat`).
/// `TCPSynRetrans` counts SYN-ACKs sent again too (a server's handshake not completed in time).
const HOST_TCP_COUNTERS: [&str; 6] = [
    "ListenOverflows",
    "ListenDrops",
    "TCPSynRetrans",
    "TCPReqQFullDrop",
    "TCPBacklogDrop",
    "TCPTimeouts",
];
/// Slow requests listed, at most.
const LISTED: usize = 20;

#[derive(Debug, Default, Serialize)]
pub struct Losses {
    /// The datapath's `dropped_*` verdicts and what became of held packets other than delivery
    /// (`imag_datapath_packets_total`, `imag_held_packets_total`), over the measured span; only
    /// those that happened.
    pub datapath: BTreeMap<String, f64>,
    /// [`HOST_TCP_COUNTERS`] over the measured span ([`hosts_tcp_since`]), summed over every
    /// container run seen in it: drops in a host's own stack, and retransmissions of the calls
    /// hosts make to each other and of their SYN-ACKs (the clients' are `syn_retransmissions`).
    pub hosts_tcp: BTreeMap<String, u64>,
    /// Of `hosts_tcp`'s `TCPSynRetrans`, the containers that sent SYNs or SYN-ACKs again, by name.
    pub hosts_syn_retrans: BTreeMap<String, u64>,
    /// How many requests took longer than a first SYN timeout (1 s) beyond their path's service
    /// time while no wake on their path did: a lost packet that no wake explains.
    pub slow_unexplained: usize,
    /// The first of them: when, to which host, how long, and the wakes they met.
    pub slow_listed: Vec<String>,
}

/// The datapath's losses between two scrapes of the agent's metrics.
pub fn datapath(before: &Metrics, after: &Metrics) -> BTreeMap<String, f64> {
    let series = [
        ("imag_datapath_packets_total", "verdict"),
        ("imag_held_packets_total", "outcome"),
    ];
    let mut lost = BTreeMap::new();
    for (name, label) in series {
        for (value, n) in after.by_label(name, label) {
            if !(value.starts_with("dropped")
                || value.starts_with("refused")
                || value == "deliver_errors")
            {
                continue;
            }
            let delta = n - before.value(name, &[(label, &value)]);
            if delta > 0.0 {
                lost.insert(format!("{label}={value}"), delta);
            }
        }
    }
    lost
}

/// [`HOST_TCP_COUNTERS`] of each container on a network that had a process at one moment, by
/// name: its process (a restarted container has a new one, and a new network namespace whose
/// counters start again at 0) and its counters.
pub type HostsTcp = BTreeMap<String, (u32, BTreeMap<&'static str, u64>)>;

/// The latest reading of each run of a container seen during a span, by (name, process): a host
/// stopped before the span ends takes its counters with it, so the span is read every few
/// seconds ([`record`]) and each run counts with its last reading.
pub type HostRuns = BTreeMap<(String, u32), BTreeMap<&'static str, u64>>;

/// [`HOST_TCP_COUNTERS`] of the containers on `network` that have a process now.
pub fn hosts_tcp_now(network: &str) -> Result<HostsTcp, String> {
    Ok(docker::processes_on(network)?
        .into_iter()
        .map(|(name, pid)| {
            let counters = (HOST_TCP_COUNTERS.iter())
                .filter_map(|&c| Some((c, net_counter_of(pid, "TcpExt", c).ok()?)))
                .collect();
            (name, (pid, counters))
        })
        .collect())
}

/// Keeps `now` as the latest reading of each container run it saw (counters only grow within a
/// run).
pub fn record(runs: &mut HostRuns, now: HostsTcp) {
    for (name, (pid, counters)) in now {
        runs.insert((name, pid), counters);
    }
}

/// What the hosts' stacks counted over a span: each container run seen in it ([`record`]), at
/// its last reading, less what it had counted at the span's start (`start`) if it was already
/// running then — a run started since counts all it has (its namespace is new). Summed by
/// counter, and the containers that sent SYNs (or SYN-ACKs) again. A counter the start could not
/// read for a run that was already there is left out rather than counted since the host started.
/// What a host counted after its last reading before it stopped is not seen.
pub fn hosts_tcp_since(
    start: &HostsTcp,
    runs: &HostRuns,
) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let mut sums: BTreeMap<String, u64> = HOST_TCP_COUNTERS
        .iter()
        .map(|c| ((*c).to_string(), 0))
        .collect();
    let mut retransmitted: BTreeMap<String, u64> = BTreeMap::new();
    for ((name, pid), counters) in runs {
        let was = (start.get(name))
            .filter(|(was_pid, _)| was_pid == pid)
            .map(|(_, was)| was);
        for (&counter, &n) in counters {
            let n = match was {
                Some(was) => match was.get(counter) {
                    Some(&w) => n.saturating_sub(w),
                    None => continue,
                },
                None => n,
            };
            *sums.entry(counter.to_string()).or_default() += n;
            if counter == "TCPSynRetrans" && n > 0 {
                *retransmitted.entry(name.clone()).or_default() += n;
            }
        }
    }
    (sums, retransmitted)
}

/// How often the hosts' TCP counters are read during the measured span (a host stopped takes its
/// counters with it: what it counted after its last reading is not seen).
const HOSTS_TCP_EVERY: Duration = Duration::from_secs(2);

/// The TCP counters of the hosts on `network` as the span begins (at `from`), and every run of
/// a container seen until `done` at its latest reading; a reading that fails mid-span is
/// skipped, one at the start is the error.
pub fn watch_hosts_tcp(
    network: &str,
    from: Instant,
    done: &AtomicBool,
) -> Result<(HostsTcp, HostRuns), String> {
    if let Some(wait) = from.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    let start = hosts_tcp_now(network)?;
    let mut runs = HostRuns::new();
    record(&mut runs, start.clone());
    let mut next = Instant::now() + HOSTS_TCP_EVERY;
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if Instant::now() >= next {
            if let Ok(now) = hosts_tcp_now(network) {
                record(&mut runs, now);
            }
            next += HOSTS_TCP_EVERY;
        }
    }
    Ok((start, runs))
}

/// The measured requests that took longer than a first SYN timeout beyond their path's service
/// time while no wake on their path took that long; their count and the first [`LISTED`],
/// described.
pub fn slow_unexplained<'a>(
    trace: &Trace,
    measured: impl Iterator<Item = &'a Done>,
    wakes: &[Wake],
    lead: f64,
) -> (usize, Vec<String>) {
    let mut count = 0;
    let mut listed = Vec::new();
    for d in measured.filter(|d| d.error.is_none()) {
        let names = path(trace, d.host);
        let service_ms: f64 = (trace.hosts.iter())
            .filter(|h| names.contains(&h.name.as_str()))
            .map(|h| f64::from(h.service_ms))
            .sum();
        if syn_retransmissions_forced(d.latency_ms - service_ms) == 0 {
            continue;
        }
        let end_s = d.wall_s + d.latency_ms / 1000.0;
        let met: Vec<&Wake> = wakes
            .iter()
            .filter(|w| w.met(&names, d.wall_s, end_s))
            .collect();
        let explained = met
            .iter()
            .any(|w| syn_retransmissions_forced((w.to_s - w.from_s) * 1000.0) > 0);
        if explained {
            continue;
        }
        count += 1;
        if listed.len() < LISTED {
            let wakes: Vec<String> = met
                .iter()
                .map(|w| {
                    format!(
                        "{} {:.0} ms ending {:+.3} s",
                        w.host,
                        (w.to_s - w.from_s) * 1000.0,
                        w.to_s - d.wall_s
                    )
                })
                .collect();
            listed.push(format!(
                "at {:.3} s (unix {:.3}) to {} ({}): {:.0} ms, of which service {service_ms:.0} \
                 ms; wakes met: {}",
                d.at_s - lead,
                d.wall_s,
                trace.hosts[d.host].name,
                names.join(" → "),
                d.latency_ms,
                if wakes.is_empty() {
                    "none".to_string()
                } else {
                    wakes.join(", ")
                }
            ));
        }
    }
    (count, listed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::trace::workload::tests::small_trace;

    fn done(host: usize, wall_s: f64, latency_ms: f64) -> Done {
        Done {
            host,
            at_s: wall_s,
            wall_s,
            latency_ms,
            error: None,
        }
    }

    fn wake(trace: &Trace, host: usize, from_s: f64, to_s: f64) -> Wake {
        Wake {
            host: trace.hosts[host].name.clone(),
            from_s,
            to_s,
        }
    }

    fn snapshot(hosts: &[(&str, u32, u64, u64)]) -> HostsTcp {
        hosts
            .iter()
            .map(|&(name, pid, syn, drops)| {
                let counters = [("TCPSynRetrans", syn), ("ListenDrops", drops)].into();
                (name.to_string(), (pid, counters))
            })
            .collect()
    }

    #[test]
    fn the_hosts_counters_over_a_span_count_every_run_seen_from_its_start_or_from_zero() {
        let start = snapshot(&[
            ("same", 10, 300, 2),     // its warm-up's 300 are not the span's
            ("restarted", 11, 50, 0), // then a new process: a new namespace, counters from 0
            ("stopped", 12, 7, 0),    // stopped during the span, after a reading that saw 9
            ("quiet", 13, 5, 0),      // nothing new
        ]);
        let mut runs = HostRuns::new();
        record(&mut runs, start.clone());
        record(
            &mut runs,
            snapshot(&[("stopped", 12, 9, 0), ("same", 10, 301, 2)]),
        );
        record(
            &mut runs,
            snapshot(&[
                ("same", 10, 304, 2),
                ("restarted", 21, 3, 1),
                ("quiet", 13, 5, 0),
                ("new", 22, 2, 0), // started in the span
            ]),
        );
        let (sums, retransmitted) = hosts_tcp_since(&start, &runs);
        // same 4, restarted's first run 0 and its second 3, stopped 2, new 2.
        assert_eq!(sums["TCPSynRetrans"], 4 + 3 + 2 + 2);
        assert_eq!(sums["ListenDrops"], 1);
        assert_eq!(
            sums["TCPBacklogDrop"], 0,
            "every counter is listed: {sums:?}"
        );
        let names: Vec<(&str, u64)> = (retransmitted.iter())
            .map(|(n, c)| (n.as_str(), *c))
            .collect();
        assert_eq!(
            names,
            [("new", 2), ("restarted", 3), ("same", 4), ("stopped", 2)]
        );
        // A counter the start could not read is left out, not counted since the host started.
        let mut blind = start.clone();
        blind.get_mut("same").unwrap().1.remove("TCPSynRetrans");
        let (sums, _) = hosts_tcp_since(&blind, &runs);
        assert_eq!(sums["TCPSynRetrans"], 3 + 2 + 2);
    }

    #[test]
    fn a_slow_request_is_explained_only_by_a_wake_on_its_path_longer_than_a_syn_timeout() {
        // Host 0 calls host 1; host 2 stands alone.
        let mut trace = small_trace(&[(Some(1), 0), (None, 500), (None, 0)], &[]);
        for (i, h) in trace.hosts.iter_mut().enumerate() {
            h.name = format!("h{i}");
        }
        let requests = [
            done(0, 10.0, 1600.0), // its callee's 1.05 s wake explains it
            done(0, 20.0, 1600.0), // a short wake of its own does not
            done(2, 30.0, 1100.0), // a long wake elsewhere does not
            done(2, 40.0, 300.0),  // not slow
            done(0, 50.0, 1400.0), // slow by its path's service time (500 ms) alone
        ];
        let wakes = [
            wake(&trace, 1, 10.0, 11.05),
            wake(&trace, 0, 20.0, 20.05),
            wake(&trace, 1, 30.0, 31.05),
        ];
        let (count, listed) = slow_unexplained(&trace, requests.iter(), &wakes, 0.0);
        assert_eq!(count, 2);
        assert!(listed[0].contains("to h0 (h0 → h1)"), "{listed:?}");
        assert!(listed[0].contains("h0 50 ms"), "{listed:?}");
        assert!(listed[1].contains("wakes met: none"), "{listed:?}");
    }
}
