//! One configured host and what the orchestrator keeps about it, and every timer that decides
//! something about a host, as pure functions of the host, its datapath activity and the time.
//!
//! Time is an input here (`CLOCK_MONOTONIC` nanoseconds, the clock the datapath stamps packets
//! with), never read: [`tick`] is what the orchestrator's periodic look asks about each host, and
//! the tests below drive it on a fake clock. The races these timers decide — a packet slipping
//! past the moment idleness was decided, a paused host escalating, a fast-thawed host's engine
//! view being repaired only while it is quiet — are tested here; `state::next` decides what
//! follows from the events they produce.

use std::time::Duration;

use imag_common::{
    HOST_FLAG_ANSWER_PING, HOST_FLAG_IGNORES_PEERS, HOST_FLAG_PROXY_ARP, HOST_FLAG_RESTRICTED,
    HostActivity,
};

use super::state::{HostState, Tier};
use crate::{
    config::HostConfig,
    report::{HostView, ReadyBy, Traffic, WakeRecord, WakeTimings},
    runtime::ContainerSpec,
};

/// After the datapath switched an idle host to hold, how long to wait for packets already past
/// the hold point to reach the container (and show up in its activity) before deciding.
pub const SLEEP_SETTLE_TIME: Duration = Duration::from_millis(2);
/// How long a fast-woken host must have been quiet before the engine's view of it is repaired
/// (which freezes it for the engine's unpause, a few tens of milliseconds).
pub const SETTLE_QUIET: Duration = Duration::from_secs(1);

/// Why a host is going to sleep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SleepCause {
    /// Idleness decided at this `CLOCK_MONOTONIC` time: called off if traffic shows up after it.
    Idle { decided_ns: u64 },
    /// The operator (or an escalation): no second look.
    Requested,
}

/// What a timer decided about a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tick {
    /// Warm, without packets or open connections for its idle timeout: sleep into `to`.
    Idle { to: Tier },
    /// Paused for its `stop_after`: stop it.
    Escalate,
    /// Paused for its `swap_after`: page its memory out to swap.
    PageOut,
    /// Fast-thawed and quiet long enough: repair the engine's view of it now.
    Settle,
}

/// One configured host and everything the orchestrator tracks about it.
pub struct Host {
    pub config: HostConfig,
    pub spec: ContainerSpec,
    pub state: HostState,
    /// Counts changes of `state`: an engine observation asked for at another epoch is stale.
    pub epoch: u64,
    /// `HOST_FLAG_*` bits for the datapath.
    pub flags: u8,
    /// The wake under way: where it started from and its timings so far.
    pub wake: Option<(Tier, WakeTimings)>,
    pub last_wake: Option<WakeRecord>,
    /// Whether this agent process woke the container (and so stops it on exit).
    pub started_here: bool,
    /// `CLOCK_MONOTONIC` ns when the host last became warm.
    pub warm_since_ns: u64,
    /// Its TCP connections opened so far (`HostActivity::tcp_opened`) when it last became warm:
    /// a connection opened since is traffic even before its link's counters are attached.
    pub tcp_opened_at_warm: u64,
    /// `CLOCK_MONOTONIC` ns when the host last fell asleep.
    pub asleep_since_ns: u64,
    pub sleep_cause: Option<SleepCause>,
    /// A settle (engine view repair) is under way.
    pub settling: bool,
    /// While the datapath drains its packets (`HostMode::Drain`: a sleep from warm awaits its
    /// look), the packets its link had let in when the drain began.
    pub draining_from_packets: Option<u64>,
    /// The `epoch` in which a page-out (`swap_after`) was started: one per sleep, whether it
    /// succeeds or not (a failure is not retried until the host has slept again).
    pub page_out_epoch: Option<u64>,
    /// Bytes the latest page-out moved out of memory (valid while `page_out_epoch` is the
    /// host's epoch: the host has not changed state since).
    pub paged_out_bytes: u64,
    /// How long its sleeps in the pause tier lasted lately (`page_out::learn_sleep`): where its
    /// page-out stands in the queue.
    pub sleep_estimate_ns: Option<u64>,
    /// What made the latest wake ready.
    pub ready_by: ReadyBy,
    /// The latest activity read from the datapath (warm and sleeping hosts, on the tick).
    pub activity: HostActivity,
    /// The hosts this one depends on (`depends_on`), by index, and whether it waits for each to
    /// be healthy (compose's `service_healthy`), not only ready.
    pub deps: Vec<(usize, bool)>,
    /// Warm, and the engine reported it healthy since (for dependents that wait for that);
    /// `Some(false)` while a look is under way.
    pub healthy: Option<bool>,
    /// The hosts that depend on this one, by index.
    pub dependents: Vec<usize>,
    /// This host's own wake waits for its dependencies; it will start from this tier.
    pub awaiting_deps: Option<Tier>,
    /// Its container's init process, while it runs (for its memory usage).
    pub pid: Option<u32>,
    /// Its container's latest measured memory usage (weighs it while it has no `memory` limit).
    pub measured_memory: Option<u64>,
    /// Scale-out: the node this host's packets go to, when it is another one.
    pub served_by: Option<String>,
}

impl Host {
    pub fn new(network: &str, config: HostConfig, state: HostState, now_ns: u64) -> Host {
        let mut flags = 0;
        if config.proxy_arp {
            flags |= HOST_FLAG_PROXY_ARP;
        }
        if config.answer_ping {
            flags |= HOST_FLAG_ANSWER_PING;
        }
        if !config.idle_ignore.is_empty() {
            flags |= HOST_FLAG_IGNORES_PEERS;
        }
        if config.allow_from.is_some() {
            flags |= HOST_FLAG_RESTRICTED;
        }
        Host {
            spec: config.container_spec(network),
            config,
            state,
            epoch: 0,
            flags,
            wake: None,
            last_wake: None,
            started_here: false,
            warm_since_ns: now_ns,
            tcp_opened_at_warm: 0,
            asleep_since_ns: now_ns,
            sleep_cause: None,
            settling: false,
            draining_from_packets: None,
            page_out_epoch: None,
            paged_out_bytes: 0,
            sleep_estimate_ns: None,
            ready_by: ReadyBy::FirstTry,
            activity: HostActivity::default(),
            deps: Vec::new(),
            healthy: None,
            dependents: Vec::new(),
            awaiting_deps: None,
            pid: None,
            measured_memory: None,
            served_by: None,
        }
    }

    pub fn is_warm(&self) -> bool {
        matches!(self.state, HostState::Warm { .. })
    }

    /// When the host last did something that counts against idleness: its latest counted
    /// packet, or becoming warm.
    pub fn last_active_ns(&self, activity: &HostActivity) -> u64 {
        activity.last_packet_ns.max(self.warm_since_ns)
    }

    /// Whether the periodic look must read this host's activity: only hosts that can have
    /// traffic (a stopped host's counters do not move).
    pub fn has_traffic(&self) -> bool {
        matches!(
            self.state,
            HostState::Warm { .. } | HostState::Sleeping { .. }
        )
    }

    /// Bytes a page-out moved to swap while the host sleeps paused (0: none, or it woke since).
    pub fn paged_out(&self) -> u64 {
        if self.page_out_epoch == Some(self.epoch) {
            self.paged_out_bytes
        } else {
            0
        }
    }

    /// The host as observers see it (status, metrics).
    pub fn view(&self, held_packets: usize, weight: u64) -> HostView {
        HostView {
            name: self.config.name.clone(),
            address: self.config.address,
            container: self.spec.name.clone(),
            state: self.state.label(),
            tier: self.state.tier(),
            last_wake: self.last_wake.clone(),
            held_packets,
            traffic: Traffic {
                packets_in: self.activity.packets_in,
                packets_out: self.activity.packets_out,
                bytes_in: self.activity.bytes_in,
                bytes_out: self.activity.bytes_out,
                open_connections: open_connections(&self.activity),
            },
            last_active_ns: self.is_warm().then(|| self.last_active_ns(&self.activity)),
            paged_out_bytes: self.paged_out(),
            weight,
            node: self.served_by.clone(),
        }
    }
}

/// TCP connections of a host that are open now.
pub fn open_connections(activity: &HostActivity) -> u64 {
    activity.tcp_opened.saturating_sub(activity.tcp_closed)
}

/// The periodic look at one host: which of its timers, if any, has fired at `now_ns`.
/// `unsettled` says whether the runtime left the engine's view of its container stale.
pub fn tick(host: &Host, activity: &HostActivity, unsettled: bool, now_ns: u64) -> Option<Tick> {
    let config = &host.config;
    match host.state {
        HostState::Asleep { tier: Tier::Paused } => {
            let asleep = Duration::from_nanos(now_ns.saturating_sub(host.asleep_since_ns));
            if config.stop_after.is_some_and(|after| asleep >= after) {
                return Some(Tick::Escalate);
            }
            let after = config.swap_after?;
            (asleep >= after && host.page_out_epoch != Some(host.epoch)).then_some(Tick::PageOut)
        }
        HostState::Warm { .. } => {
            let quiet = Duration::from_nanos(now_ns.saturating_sub(host.last_active_ns(activity)));
            // Idle before settled: a sleep to pause freezes an unsettled container again, which
            // makes the engine's "paused" true with no engine call (a settle first would cost an
            // unpause, then a pause).
            if (config.idle_timeout)
                .is_some_and(|timeout| open_connections(activity) == 0 && quiet >= timeout)
            {
                return Some(Tick::Idle { to: config.sleep });
            }
            (unsettled && !host.settling && quiet >= SETTLE_QUIET).then_some(Tick::Settle)
        }
        _ => None,
    }
}

/// After idleness was decided at `decided_ns` and the datapath switched to hold: whether
/// traffic that slipped past meanwhile (a packet after the decision, or a connection still
/// open) calls the sleep off.
///
/// The datapath stamps packets with the kernel's coarse clock (the last tick's time, up to one
/// tick behind `CLOCK_MONOTONIC`, at most 10 ms), so a packet within `COARSE_CLOCK_LAG_NS` before
/// the decision counts as after it: calling a sleep off wrongly only keeps the host warm until
/// the next look, while missing a packet would put a busy host to sleep. (Idleness was decided
/// after `idle_timeout` of quiet, so the last packet before the decision is far older.)
pub fn sleep_called_off(decided_ns: u64, activity: &HostActivity) -> bool {
    activity.last_packet_ns + crate::clock::COARSE_CLOCK_LAG_NS > decided_ns
        || open_connections(activity) > 0
}

/// The oldest hold time a packet of `host` may have at `now_ns` before it is discarded.
pub fn expiry_cutoff(host: &Host, now_ns: u64) -> u64 {
    // A timeout beyond u64 nanoseconds (584 years) saturates: nothing expires.
    let timeout_ns = crate::clock::saturating_ns(host.config.wake_timeout);
    now_ns.saturating_sub(timeout_ns)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::config::Config;

    const S: u64 = 1_000_000_000;

    fn host(extra: &str) -> Host {
        let text = format!(
            "[network]\nsubnet = \"10.9.0.0/24\"\n\n[[host]]\nname = \"web\"\naddress = \"10.9.0.10\"\n\
             image = \"img\"\nready = \"tcp:80\"\n{extra}"
        );
        let config = Config::parse(&text, "test.toml").expect("valid config");
        Host::new(
            "n",
            config.hosts[0].clone(),
            HostState::Warm {
                since: Instant::now(),
            },
            100 * S,
        )
    }

    fn quiet_since(last_packet_s: u64) -> HostActivity {
        HostActivity {
            last_packet_ns: last_packet_s * S,
            ..HostActivity::default()
        }
    }

    #[test]
    fn a_warm_host_sleeps_after_its_idle_timeout_and_not_before() {
        let h = host("idle_timeout = \"10s\"\nsleep = \"pause\"");
        let activity = quiet_since(105);
        assert_eq!(tick(&h, &activity, false, 114 * S), None, "9 s quiet");
        assert_eq!(
            tick(&h, &activity, false, 115 * S),
            Some(Tick::Idle { to: h.config.sleep })
        );
    }

    #[test]
    fn idleness_counts_from_becoming_warm_when_no_packet_came_since() {
        let h = host("idle_timeout = \"10s\"");
        assert_eq!(tick(&h, &quiet_since(0), false, 109 * S), None);
        assert_eq!(
            tick(&h, &quiet_since(0), false, 110 * S),
            Some(Tick::Idle { to: Tier::Stopped })
        );
    }

    #[test]
    fn an_open_connection_keeps_a_host_awake() {
        let h = host("idle_timeout = \"1s\"");
        let activity = HostActivity {
            tcp_opened: 3,
            tcp_closed: 2,
            ..quiet_since(100)
        };
        assert_eq!(tick(&h, &activity, false, 1000 * S), None);
        let closed = HostActivity {
            tcp_closed: 3,
            ..activity
        };
        assert!(tick(&h, &closed, false, 1000 * S).is_some());
    }

    #[test]
    fn with_idle_timeout_never_a_host_never_sleeps() {
        let h = host("idle_timeout = \"never\"");
        assert_eq!(tick(&h, &quiet_since(0), false, 100_000 * S), None);
    }

    #[test]
    fn a_paused_host_escalates_after_stop_after() {
        let mut h = host("sleep = \"pause\"\nstop_after = \"60s\"");
        h.state = HostState::Asleep { tier: Tier::Paused };
        h.asleep_since_ns = 200 * S;
        let none = HostActivity::default();
        assert_eq!(tick(&h, &none, false, 259 * S), None);
        assert_eq!(tick(&h, &none, false, 260 * S), Some(Tick::Escalate));
        h.state = HostState::Asleep {
            tier: Tier::Stopped,
        };
        assert_eq!(
            tick(&h, &none, false, 999 * S),
            None,
            "only paused escalates"
        );
    }

    #[test]
    fn a_paused_host_pages_out_once_per_sleep_after_swap_after() {
        let mut h = host("sleep = \"pause\"\nswap_after = \"10s\"\nstop_after = \"60s\"");
        h.state = HostState::Asleep { tier: Tier::Paused };
        h.asleep_since_ns = 200 * S;
        let none = HostActivity::default();
        assert_eq!(tick(&h, &none, false, 209 * S), None);
        assert_eq!(tick(&h, &none, false, 210 * S), Some(Tick::PageOut));
        h.page_out_epoch = Some(h.epoch);
        assert_eq!(
            tick(&h, &none, false, 211 * S),
            None,
            "started (or failed) already"
        );
        assert_eq!(
            tick(&h, &none, false, 260 * S),
            Some(Tick::Escalate),
            "stop_after first"
        );
        h.epoch += 1;
        assert_eq!(
            tick(&h, &none, false, 211 * S),
            Some(Tick::PageOut),
            "slept again"
        );
    }

    #[test]
    fn an_unsettled_host_settles_once_quiet_and_only_once() {
        let mut h = host("idle_timeout = \"60s\"");
        let activity = quiet_since(120);
        assert_eq!(tick(&h, &activity, true, 120 * S + S / 2), None, "busy");
        assert_eq!(tick(&h, &activity, true, 121 * S), Some(Tick::Settle));
        h.settling = true;
        assert_eq!(tick(&h, &activity, true, 122 * S), None, "under way");
        assert_eq!(tick(&h, &activity, false, 122 * S), None, "settled");
    }

    #[test]
    fn an_unsettled_host_that_is_idle_sleeps_rather_than_settles() {
        // Quiet for a second with a shorter idle timeout (a connection was open till now): the
        // sleep refreezes it; a settle would unpause it through the engine first.
        let h = host("idle_timeout = \"40ms\"");
        let activity = quiet_since(120);
        assert_eq!(
            tick(&h, &activity, true, 121 * S),
            Some(Tick::Idle { to: h.config.sleep })
        );
        // With a connection still open it is not idle: settled once quiet.
        let open = HostActivity {
            tcp_opened: 1,
            ..activity
        };
        assert_eq!(tick(&h, &open, true, 121 * S), Some(Tick::Settle));
    }

    #[test]
    fn sleep_is_called_off_by_a_packet_after_the_decision_or_an_open_connection() {
        assert!(!sleep_called_off(50 * S, &quiet_since(49)));
        assert!(sleep_called_off(50 * S, &quiet_since(51)));
        // A coarse stamp just behind the decision may belong to a packet after it.
        let just_before = HostActivity {
            last_packet_ns: 50 * S - 5_000_000,
            ..HostActivity::default()
        };
        assert!(sleep_called_off(50 * S, &just_before));
        let open = HostActivity {
            tcp_opened: 1,
            ..quiet_since(10)
        };
        assert!(sleep_called_off(50 * S, &open));
    }

    #[test]
    fn held_packets_expire_after_the_wake_timeout() {
        let h = host("wake_timeout = \"30s\"");
        assert_eq!(expiry_cutoff(&h, 100 * S), 70 * S);
        assert_eq!(expiry_cutoff(&h, 10 * S), 0, "no underflow");
    }
}
