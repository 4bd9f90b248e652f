//! The client side of a replay: every arrival of the trace is sent at its time (open loop: a
//! request waits for nobody, and its latency counts from its scheduled time, so queueing in the
//! client would show), each on a fresh connection, by a pool of worker threads inside the client
//! namespace. And which requests met a wake: the agent logs every wake with its end and length.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use imag_testkit::clients::{http_get, net_counter};

use super::workload::Trace;

/// Requests in flight at once, at most.
const WORKERS: usize = 192;
/// A request not answered by then failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One request as the client saw it.
#[derive(Clone, Debug)]
pub struct Done {
    pub host: usize,
    /// Its scheduled time, seconds since the replay began.
    pub at_s: f64,
    /// Wall clock (UNIX seconds) at its scheduled time: the agent's log speaks wall clock.
    pub wall_s: f64,
    pub latency_ms: f64,
    pub error: Option<String>,
}

pub struct Replayed {
    pub done: Vec<Done>,
    pub syn_retransmissions: u64,
}

fn unix_s(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Replays `trace` against hosts at `address(i):8080`; to be called inside the client namespace.
/// SYN retransmissions are counted from the first request at or after `measured_from_s` (the
/// warm-up's are not the measured span's).
pub fn replay(
    trace: &Trace,
    address: impl Fn(usize) -> Ipv4Addr + Sync,
    started: Instant,
    measured_from_s: f64,
) -> std::io::Result<Replayed> {
    let mut retrans_before = None;
    let wall_at_start = unix_s(SystemTime::now()) - started.elapsed().as_secs_f64();
    let (jobs, queue) = mpsc::channel::<(usize, f64)>();
    let queue = Arc::new(Mutex::new(queue));
    let (results, collected) = mpsc::channel::<Done>();
    std::thread::scope(|scope| {
        for _ in 0..WORKERS {
            let queue = Arc::clone(&queue);
            let results = results.clone();
            let address = &address;
            scope.spawn(move || {
                loop {
                    let job = queue.lock().expect("not poisoned").recv();
                    let Ok((host, at_s)) = job else { return };
                    let scheduled = started + Duration::from_secs_f64(at_s);
                    let addr = SocketAddr::from((address(host), 8080));
                    let error = match http_get(addr, REQUEST_TIMEOUT) {
                        Ok((body, _)) if body.contains(" failed: ") => {
                            Some(format!("{addr}: {}", body.trim()))
                        }
                        Ok(_) => None,
                        Err(err) => Some(format!("{addr}: {err}")),
                    };
                    let _ = results.send(Done {
                        host,
                        at_s,
                        wall_s: wall_at_start + at_s,
                        latency_ms: scheduled.elapsed().as_secs_f64() * 1000.0,
                        error,
                    });
                }
            });
        }
        drop(results);
        for arrival in &trace.arrivals {
            let due = started + Duration::from_secs_f64(arrival.at_s);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if retrans_before.is_none() && arrival.at_s >= measured_from_s {
                retrans_before = Some(net_counter("TcpExt", "TCPSynRetrans"));
            }
            let _ = jobs.send((arrival.host, arrival.at_s));
        }
        drop(jobs);
    });
    let retrans_before = match retrans_before {
        Some(counter) => counter?,
        None => net_counter("TcpExt", "TCPSynRetrans")?,
    };
    let mut done: Vec<Done> = collected.into_iter().collect();
    done.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    Ok(Replayed {
        done,
        syn_retransmissions: net_counter("TcpExt", "TCPSynRetrans")?.saturating_sub(retrans_before),
    })
}

/// A wake as the agent logged it: which host, and the wall-clock interval it took.
#[derive(Clone, Debug, PartialEq)]
pub struct Wake {
    pub host: String,
    pub from_s: f64,
    pub to_s: f64,
}

/// The wakes in an agent's log: lines ending a wake (`woke host=… total_ms=…`), stamped with
/// the log's RFC 3339 wall-clock time.
pub fn wakes_in_log(log: &str) -> Vec<Wake> {
    log.lines()
        .filter(|l| l.contains(" woke "))
        .filter_map(|line| {
            let stamp = humantime::parse_rfc3339_weak(line.split_whitespace().next()?).ok()?;
            let host = super::super::field(line, "host")?;
            let total_ms: f64 = super::super::field(line, "total_ms")?.parse().ok()?;
            let to_s = unix_s(stamp);
            Some(Wake {
                host,
                from_s: to_s - total_ms / 1000.0,
                to_s,
            })
        })
        .collect()
}

/// Whether a request to `path` (the host and the hosts it calls, by name) in flight over
/// `[from_s, to_s]` met a wake of one of them.
pub fn met_wake(wakes: &[Wake], path: &[&str], from_s: f64, to_s: f64) -> bool {
    wakes.iter().any(|w| w.met(path, from_s, to_s))
}

impl Wake {
    /// Whether this wake was of a host on `path` and overlapped `[from_s, to_s]`.
    pub fn met(&self, path: &[&str], from_s: f64, to_s: f64) -> bool {
        path.contains(&self.host.as_str()) && self.from_s <= to_s && self.to_s >= from_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakes_are_read_from_the_agents_log_and_matched_to_requests() {
        let log = "2026-12-06T13:10:00.500000Z  INFO imag_agent::orchestrator::release: woke \
                   host=a1f0 addr=10.70.0.3 from=\"stopped\" outcome=\"ok\" packets=1 \
                   ready_by=\"event\" total_ms=300.00\n\
                   2026-12-06T13:10:01.000000Z  INFO imag_agent: something else host=a1f0\n";
        let wakes = wakes_in_log(log);
        assert_eq!(wakes.len(), 1);
        assert_eq!(wakes[0].host, "a1f0");
        assert!((wakes[0].to_s - wakes[0].from_s - 0.3).abs() < 1e-6);
        let end = wakes[0].to_s;
        assert!(met_wake(&wakes, &["a0f0", "a1f0"], end - 0.1, end + 0.2));
        assert!(!met_wake(&wakes, &["a0f0"], end - 0.1, end + 0.2));
        assert!(!met_wake(&wakes, &["a1f0"], end + 0.01, end + 0.2));
    }
}
