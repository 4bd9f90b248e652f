//! What the jobs report back ([`Outcome`]), applied one at a time like every other input: a
//! wake's result, the second look before a sleep, a sleep's, settle's or page-out's end, what the
//! engine said, a warm host's link found.

use tracing::{debug, info, warn};

use super::{
    Orchestrator,
    hosts::{self, SleepCause},
    jobs::Outcome,
    state::{Event, HostState},
};
use crate::{
    datapath::{HostMode, HostTable},
    runtime::ContainerRuntime,
};

impl<R: ContainerRuntime, D: HostTable> Orchestrator<R, D> {
    pub(super) fn on_outcome(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Woke { host, result } => match result {
                Ok((started, ready_ns, ready_by)) => {
                    let h = &mut self.hosts[host];
                    h.started_here = true;
                    h.ready_by = ready_by;
                    if let Some((from, timings)) = h.wake.as_mut() {
                        *from = started.from;
                        timings.requested_ns = started.requested_ns;
                        timings.running_ns = started.running_ns;
                        timings.ready_ns = ready_ns;
                    }
                    self.apply(host, Event::WakeSucceeded);
                }
                Err(err) if self.claim_lost(host, &err) => {}
                Err(err) => {
                    self.record_failed_wake(host, &err);
                    self.apply(host, Event::WakeFailed);
                }
            },
            Outcome::SleepCheck { host } => {
                let h = &self.hosts[host];
                let (HostState::Sleeping { to, .. }, Some(packets_before)) =
                    (h.state, h.draining_from_packets)
                else {
                    return;
                };
                let activity = self.datapath.activity(h.config.address).unwrap_or_default();
                if let Some(SleepCause::Idle { decided_ns }) = h.sleep_cause {
                    if hosts::sleep_called_off(decided_ns, &activity) || !self.held.is_empty(host) {
                        info!(host = %h.config.name, "sleep called off: traffic arrived meanwhile");
                        self.apply(host, Event::SleepFailed);
                        return;
                    }
                } else if activity.packets_in > packets_before {
                    // Asked for: it sleeps all the same, and wakes right after, for what reached
                    // the container while it drained (it would wait in the frozen container).
                    self.apply(host, Event::WakeRequested);
                }
                // Committed: nothing is on its way to the container any more.
                self.set_mode(host, HostMode::Hold);
                self.spawn_sleep(host, to);
            }
            Outcome::Slept { host, result } => {
                let event = match result {
                    Ok(()) => Event::SleepSucceeded,
                    Err(err) => {
                        warn!(host = %self.hosts[host].config.name, error = %err, "sleep failed");
                        Event::SleepFailed
                    }
                };
                self.apply(host, event);
            }
            Outcome::Settled { host } => self.hosts[host].settling = false,
            Outcome::PagedOut {
                host,
                epoch,
                took,
                result,
            } => self.paged_out(host, epoch, took, result),
            Outcome::Claimed { host, result } => self.claimed_warm(host, &result),
            Outcome::Observed { hosts } => self.on_observed(hosts),
            Outcome::Healthy { host, result } => self.dependency_healthy(host, result),
            Outcome::Running { host, pid } => self.hosts[host].pid = Some(pid),
            Outcome::HostLink {
                host,
                link,
                established,
            } => {
                let h = &self.hosts[host];
                if !h.is_warm() {
                    return;
                }
                let addr = h.config.address;
                // Writes the link's owner and queues the attach, which waits on the kernel's
                // RTNL lock, to a thread of its own: nothing here waits for the engine.
                if let Err(err) =
                    self.datapath
                        .attach_host_link(addr, &link.host_side, link.container_mac)
                {
                    warn!(host = %h.config.name, error = %err,
                        "cannot count the host's traffic on its link; idleness sees only its TCP connections");
                }
                if let Some(open) = established
                    && let Err(err) = self.datapath.reset_connections(addr, open)
                {
                    debug!(host = %h.config.name, error = %err, "resetting the connection count failed");
                }
            }
        }
    }
}
