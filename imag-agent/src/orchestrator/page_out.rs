//! `swap_after`: a host asleep in the pause tier for that long has its memory paged out to the
//! machine's swap (`runtime::memory`), once per sleep. Nothing changes in its state: it is still
//! paused, and a wake thaws it as from any pause (its pages come back as it touches them).
//! Whether and how much it paged out shows in `status` and in `imag_page_outs_total{result}` /
//! `imag_paged_out_bytes_total`; how long page-outs ran and waited, in
//! `imag_page_out_seconds_total` / `imag_page_out_wait_seconds_total`.
//!
//! Page-outs run one at a time ([`AT_ONCE`]): each keeps the kernel's reclaim busy on a CPU and
//! the swap device writing, and a second one at once only halves the pace of both. When hosts
//! fall asleep faster than their memory can be written out, the queue decides what is worth the
//! device's time: a page-out saves the host's memory for as long as it then sleeps, whatever its
//! size (a bigger one also takes longer), so the host expected to sleep longest goes first
//! ([`expected_sleep_ns`]). A host that wakes while queued leaves the queue: a busy host, whose
//! sleeps are short, is then rarely paged out just to read its pages back a moment later.

use std::time::Duration;

use tracing::{debug, warn};

use super::{
    Orchestrator,
    hosts::Host,
    state::{HostState, Tier},
};
use crate::{
    clock::{monotonic_ns, ms_between, saturating_ns},
    datapath::HostTable,
    runtime::{ContainerRuntime, PagedOut, RuntimeError},
};

/// Page-outs under way at once.
pub const AT_ONCE: usize = 1;

/// Hosts waiting to be paged out, and how many page-outs are under way.
#[derive(Debug, Default)]
pub struct Queue {
    waiting: Vec<Waiting>,
    running: usize,
}

/// A host's page-out for one sleep, waiting its turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Waiting {
    host: usize,
    /// The host's epoch when it was queued (that sleep's).
    epoch: u64,
    /// `CLOCK_MONOTONIC` time it joined the queue.
    queued_ns: u64,
}

/// How long `host`, asleep since `asleep_since_ns`, is expected to sleep in all, at `now_ns`:
/// as long as its recent sleeps (`Host::sleep_estimate_ns`), or as long as it has already slept
/// if that is longer (a host that outstays its habit is likely to sleep on). A host never seen
/// waking is expected to sleep long: it goes first, as before there was a queue.
pub fn expected_sleep_ns(host: &Host, now_ns: u64) -> u64 {
    let slept = now_ns.saturating_sub(host.asleep_since_ns);
    host.sleep_estimate_ns.unwrap_or(u64::MAX).max(slept)
}

/// The estimate after a sleep of `slept_ns`: the mean of the latest sleep and the estimate
/// before it (recent sleeps weigh most: a host's traffic changes over a day).
pub fn learn_sleep(estimate_ns: Option<u64>, slept_ns: u64) -> u64 {
    estimate_ns.map_or(slept_ns, |e| e / 2 + slept_ns / 2)
}

impl Queue {
    /// Drops hosts no longer due, and takes the one expected to sleep longest (the longest
    /// waiting among equals). A host is due while it is in the sleep its page-out was queued
    /// for: any change of state (a wake, a stop) moves its epoch on, so one that woke since
    /// leaves the queue, and so does an entry of an earlier sleep (the host's page-out for its
    /// current one was queued anew).
    fn take_next(&mut self, hosts: &[Host], now_ns: u64) -> Option<Waiting> {
        self.waiting.retain(|w| hosts[w.host].epoch == w.epoch);
        let at = (self.waiting.iter().enumerate())
            .max_by_key(|(_, w)| {
                (
                    expected_sleep_ns(&hosts[w.host], now_ns),
                    std::cmp::Reverse(w.queued_ns),
                )
            })
            .map(|(at, _)| at)?;
        Some(self.waiting.swap_remove(at))
    }
}

impl<R: ContainerRuntime, D: HostTable> Orchestrator<R, D> {
    /// Queues host `id`'s page-out for this sleep, and starts what the queue allows.
    pub(super) fn start_page_out(&mut self, id: usize) {
        let host = &mut self.hosts[id];
        host.page_out_epoch = Some(host.epoch);
        host.paged_out_bytes = 0;
        self.page_outs.waiting.push(Waiting {
            host: id,
            epoch: host.epoch,
            queued_ns: monotonic_ns(),
        });
        self.pump_page_outs();
    }

    /// Starts queued page-outs while fewer than [`AT_ONCE`] run.
    pub(super) fn pump_page_outs(&mut self) {
        while self.page_outs.running < AT_ONCE {
            let now_ns = monotonic_ns();
            let Some(next) = self.page_outs.take_next(&self.hosts, now_ns) else {
                return;
            };
            let id = next.host;
            let host = &self.hosts[id];
            let waited_ms = ms_between(next.queued_ns, now_ns);
            debug!(host = %host.config.name, waited_ms, "paging out to swap");
            self.page_outs.running += 1;
            self.snapshot.send_modify(|s| {
                s.page_outs.wait_ns += now_ns.saturating_sub(next.queued_ns);
            });
            self.jobs.page_out(id, host.epoch, host.spec.clone());
        }
    }

    /// When host `id` wakes from the pause tier (`before` → `after`), learns how long it slept:
    /// its sleeps so far decide where its next page-out stands in the queue.
    pub(super) fn learn_sleep_if_woken(&mut self, id: usize, before: HostState, after: HostState) {
        let woke = matches!(after, HostState::Waking { .. } | HostState::Warm { .. });
        if woke && matches!(before, HostState::Asleep { tier: Tier::Paused }) {
            let host = &mut self.hosts[id];
            let slept_ns = monotonic_ns().saturating_sub(host.asleep_since_ns);
            host.sleep_estimate_ns = Some(learn_sleep(host.sleep_estimate_ns, slept_ns));
        }
    }

    pub(super) fn paged_out(
        &mut self,
        id: usize,
        epoch: u64,
        took: Duration,
        result: Result<PagedOut, RuntimeError>,
    ) {
        self.page_outs.running = self.page_outs.running.saturating_sub(1);
        let took_ns = saturating_ns(took);
        let host = &mut self.hosts[id];
        match result {
            Ok(paged) => {
                let moved = paged.before.saturating_sub(paged.after);
                debug!(
                    host = %host.config.name,
                    before = paged.before,
                    after = paged.after,
                    ?took,
                    "paged out to swap"
                );
                if host.epoch == epoch {
                    host.paged_out_bytes = moved;
                }
                self.snapshot.send_modify(|s| {
                    s.page_outs.done += 1;
                    s.page_outs.bytes += moved;
                    s.page_outs.busy_ns += took_ns;
                });
            }
            Err(err) => {
                // A host woken meanwhile refuses ("not paused") or stops its page-out: nothing
                // lost, not a failure.
                let woken = host.epoch != epoch;
                if !woken {
                    warn!(host = %host.config.name, error = %err, "paging out to swap failed");
                }
                self.snapshot.send_modify(|s| {
                    s.page_outs.busy_ns += took_ns;
                    if !woken {
                        s.page_outs.failed += 1;
                    }
                });
            }
        }
        self.touch(id);
        self.pump_page_outs();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const MS: u64 = 1_000_000;

    fn hosts(n: usize) -> Vec<Host> {
        let toml: String = std::iter::once("[network]\nsubnet = \"10.9.0.0/24\"\n".to_string())
            .chain((0..n).map(|i| {
                format!(
                    "[[host]]\nname = \"h{i}\"\naddress = \"10.9.0.{}\"\nimage = \"x\"\n\
                     sleep = \"pause\"\nswap_after = \"0s\"\n",
                    10 + i
                )
            }))
            .collect();
        let config = Config::parse(&toml, "test.toml").expect("valid config");
        let paused = HostState::Asleep { tier: Tier::Paused };
        (config.hosts.iter())
            .map(|c| {
                let mut h = Host::new("n", c.clone(), paused, 1_000 * MS);
                h.page_out_epoch = Some(h.epoch);
                h
            })
            .collect()
    }

    /// A queue holding `ids`' page-outs for their current sleeps, queued in that order.
    fn queued(hosts: &[Host], ids: &[usize]) -> Queue {
        Queue {
            waiting: (ids.iter().zip(1..))
                .map(|(&host, queued_ns)| Waiting {
                    host,
                    epoch: hosts[host].epoch,
                    queued_ns,
                })
                .collect(),
            running: 0,
        }
    }

    #[test]
    fn sleeps_are_learned_recent_ones_weighing_most() {
        assert_eq!(learn_sleep(None, 100 * MS), 100 * MS);
        assert_eq!(learn_sleep(Some(100 * MS), 300 * MS), 200 * MS);
        assert_eq!(learn_sleep(Some(200 * MS), 0), 100 * MS);
    }

    #[test]
    fn a_host_is_expected_to_sleep_as_it_did_or_as_long_as_it_already_has() {
        let mut h = hosts(1).remove(0);
        let now = 1_050 * MS;
        assert_eq!(expected_sleep_ns(&h, now), u64::MAX, "never seen waking");
        h.sleep_estimate_ns = Some(200 * MS);
        assert_eq!(expected_sleep_ns(&h, now), 200 * MS);
        assert_eq!(
            expected_sleep_ns(&h, 1_500 * MS),
            500 * MS,
            "outstayed its habit"
        );
    }

    #[test]
    fn the_host_expected_to_sleep_longest_is_paged_out_first() {
        let mut hosts = hosts(4);
        // h0: busy (short sleeps); h1: sleeps long; h2: as long as h1, queued later; h3: short.
        for (h, estimate) in hosts.iter_mut().zip([20, 5_000, 5_000, 30]) {
            h.sleep_estimate_ns = Some(estimate * MS);
        }
        let mut queue = queued(&hosts, &[0, 1, 2, 3]);
        let now = 1_010 * MS;
        let order: Vec<usize> = std::iter::from_fn(|| queue.take_next(&hosts, now))
            .map(|w| w.host)
            .collect();
        assert_eq!(order, [1, 2, 3, 0]);
    }

    #[test]
    fn a_host_that_woke_or_slept_again_since_it_was_queued_leaves_the_queue() {
        let mut hosts = hosts(3);
        let mut queue = queued(&hosts, &[0, 1, 2]);
        hosts[0].state = HostState::Warm {
            since: std::time::Instant::now(),
        };
        hosts[0].epoch += 1;
        // Asleep paused again, in a later sleep whose page-out is queued anew: the entry of
        // the earlier sleep goes, the new one stays (one page-out per sleep).
        hosts[1].epoch += 2;
        hosts[1].page_out_epoch = Some(hosts[1].epoch);
        queue.waiting.push(Waiting {
            host: 1,
            epoch: hosts[1].epoch,
            queued_ns: 5,
        });
        let now = 1_010 * MS;
        let order: Vec<(usize, u64)> = std::iter::from_fn(|| queue.take_next(&hosts, now))
            .map(|w| (w.host, w.queued_ns))
            .collect();
        assert_eq!(order, [(2, 3), (1, 5)]);
        assert!(queue.waiting.is_empty());
    }
}
