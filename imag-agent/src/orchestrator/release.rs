//! What becomes of held packets: re-delivered where they arrived once their host is ready, or
//! answered with a refusal (TCP RST, ICMP unreachable) when its wake failed, so that clients
//! fail at once instead of timing out; the record of each wake's outcome; and the orchestrator's
//! way out, which loses none of them.

use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{Orchestrator, jobs::WakeError, state::HostState};
use crate::{
    clock::{monotonic_ns, ms_between},
    datapath::{HostTable, ring::HeldFrame},
    packets,
    report::{Phase, WakeRecord, WakeTimings},
    runtime::{ContainerRuntime, Tier},
};

impl<R: ContainerRuntime, D: HostTable> Orchestrator<R, D> {
    /// Re-injects every held packet of host `id`, in arrival order, where it arrived.
    pub(super) fn deliver_held(&mut self, id: usize) {
        let frames = self.held.take(id);
        let count = frames.len();
        let host = &mut self.hosts[id];
        for mut held in frames {
            if let Err(err) = packets::complete_checksum(&mut held.frame) {
                // The datapath only holds plain IPv4 packets; anything else is a bug or a
                // truncated copy. Deliver it as it is rather than lose it.
                debug!(host = %host.config.name, error = %err, "delivering a frame without checksum fix-up");
            }
            match self.datapath.deliver(held.header.ifindex, &held.frame) {
                Ok(()) => self.counters.delivered += 1,
                Err(err) => {
                    self.counters.deliver_errors += 1;
                    warn!(host = %host.config.name, error = %err, "re-delivering a held packet failed");
                }
            }
        }
        let Some((from, mut timings)) = host.wake.take() else {
            if count > 0 {
                debug!(host = %host.config.name, packets = count, "delivered packets that raced the switch to pass");
            }
            return;
        };
        timings.delivered_ns = monotonic_ns();
        info!(
            host = %host.config.name,
            addr = %host.config.address,
            from = from.as_str(),
            outcome = "ok",
            packets = count,
            ready_by = host.ready_by.as_str(),
            held_to_start_ms = format_args!("{:.2}", timings.ms(Phase::HeldToStart)),
            start_to_running_ms = format_args!("{:.2}", timings.ms(Phase::StartToRunning)),
            running_to_ready_ms = format_args!("{:.2}", timings.ms(Phase::RunningToReady)),
            ready_to_delivered_ms = format_args!("{:.2}", timings.ms(Phase::ReadyToDelivered)),
            total_ms = format_args!("{:.2}", timings.ms(Phase::Total)),
            "woke"
        );
        let record = WakeRecord {
            from,
            timings,
            failure: None,
            packets: count,
            ready_by: host.ready_by,
        };
        self.wake_metrics.record(&host.config.name, &record);
        host.last_wake = Some(record);
        // Off the critical path: tell neighbours on the bridge the container's own MAC address, so
        // that host-to-host traffic goes straight over the bridge instead of through the host,
        // and start counting its traffic (a paused host's link still has its programs).
        let find_link =
            from != Tier::Paused || !self.datapath.has_host_link(self.hosts[id].config.address);
        self.inspect_warm_container(id, true, find_link, false);
    }

    /// Answers every held packet of host `id` with a refusal.
    pub(super) fn refuse_held(&mut self, id: usize) {
        let frames = self.held.take(id);
        self.hosts[id].wake = None;
        self.touch(id);
        for held in frames {
            self.refuse_frame(&held);
        }
    }

    /// Answers one held packet with a refusal (or counts it unanswerable).
    pub(super) fn refuse_frame(&mut self, held: &HeldFrame) {
        let sent = match (&self.wire, packets::refusal(&held.frame)) {
            (Some(wire), Some(reply)) => wire.send(held.header.ifindex, &reply).map_err(|err| {
                debug!(error = %err, "sending a refusal failed");
            }),
            _ => Err(()),
        };
        match sent {
            Ok(()) => self.counters.refused += 1,
            Err(()) => self.counters.dropped_unanswerable += 1,
        }
    }

    /// On the way out: takes the frames still queued, lets wakes under way finish (up to
    /// `grace`), and refuses whatever is still held, so that no held packet is silently lost.
    pub async fn finish(&mut self, held: &mut mpsc::Receiver<HeldFrame>, grace: Duration) {
        while let Ok(frame) = held.try_recv() {
            self.on_held(frame);
        }
        let deadline = crate::clock::deadline_in(grace);
        while self.hosts.iter().any(|h| {
            matches!(
                h.state,
                HostState::Waking { .. } | HostState::Sleeping { .. }
            )
        }) {
            match tokio::time::timeout_at(deadline, self.outcomes.recv()).await {
                Ok(Some(outcome)) => self.on_outcome(outcome),
                _ => break,
            }
            while let Ok(frame) = held.try_recv() {
                self.on_held(frame);
            }
        }
        for id in 0..self.hosts.len() {
            if !self.held.is_empty(id) {
                self.refuse_held(id);
            }
        }
        self.publish();
    }

    /// Stops the containers this agent started, in parallel; used on exit.
    pub async fn stop_started_containers(&mut self) {
        let runtime = &self.jobs.runtime;
        let stops = self
            .hosts
            .iter()
            .filter(|host| host.started_here)
            .map(|host| async move {
                let result = runtime.sleep(&host.spec, Tier::Stopped).await;
                (&host.spec.name, result)
            });
        for (name, result) in futures::future::join_all(stops).await {
            match result {
                Ok(()) => info!(container = %name, "stopped"),
                Err(err) => warn!(container = %name, error = %err, "stopping failed"),
            }
        }
    }

    /// Logs, counts and records a failed wake of host `id`.
    pub(super) fn record_failed_wake(&mut self, id: usize, err: &WakeError) {
        let packets = self.held.len(id);
        let now = monotonic_ns();
        // A phase that never began reads 0: a wake an operator began has no held packet, one
        // refused before it was queued no start (a queued one's "start" is its queueing).
        let since = |from_ns: u64| {
            if from_ns == 0 {
                0.0
            } else {
                ms_between(from_ns, now)
            }
        };
        let h = &mut self.hosts[id];
        let (from, timings) = h
            .wake
            .take()
            .unwrap_or((Tier::Absent, WakeTimings::default()));
        warn!(
            host = %h.config.name,
            addr = %h.config.address,
            from = from.as_str(),
            outcome = "failed",
            reason = err.reason(),
            packets,
            held_to_start_ms = format_args!("{:.2}", timings.ms(Phase::HeldToStart)),
            start_to_failure_ms = format_args!("{:.2}", since(timings.requested_ns)),
            held_to_failure_ms = format_args!("{:.2}", since(timings.held_ns)),
            error = %err,
            "wake failed"
        );
        let record = WakeRecord {
            from,
            timings,
            failure: Some((err.reason(), err.to_string())),
            packets,
            ready_by: h.ready_by,
        };
        self.wake_metrics.record(&h.config.name, &record);
        h.last_wake = Some(record);
    }
}
