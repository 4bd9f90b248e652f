//! Waking what will be needed, in parallel: the shell around [`prewake`](super::prewake).
//!
//! When a host's wake is admitted, the hosts it will call are woken with it instead of one
//! after another as its traffic reaches them: those of its `wakes_with` (always), and those its
//! traffic was seen to wake reliably (learned edges, `[wake] prewake = "on"`). Unlike
//! `depends_on` (`depends.rs`), nothing waits for them: the host's own container starts at once,
//! and by the time it calls them they are up or nearly so.
//!
//! A pre-wake is a guess, so it is cheaper than a packet's wake: it only starts a host that is
//! asleep, that accepts the source's traffic (`allow_from`), and that fits the budget as it is
//! (no eviction, a free wake slot, a rate-limit token of the source: `governor.rs`). It never
//! fails anything: when it does not fit, the source's traffic wakes the host as it would have.
//!
//! Learning feeds on what the agent sees anyway: the wakes of hosts, packets held for cold hosts
//! whose source address is another host, and, for a pre-woken host, its own traffic counters.
//! The pairs are kept in `<dir>/prewake.json` (`/var/lib/imag/<network>/`; written whole to a
//! temporary file and renamed over the old one, so a killed agent leaves the old or the new
//! file, never half of one; an unreadable file is reported and learning starts afresh).

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::{
    Orchestrator,
    prewake::{Kind, Learner, Pair, Verdict},
    state::{Event, HostState},
};
use crate::{
    clock::monotonic_ns,
    config::PrewakeMode,
    datapath::{HostTable, ring::HeldFrame},
    packets,
    report::{EdgeView, PrewakeRecord, PrewakeView},
    runtime::ContainerRuntime,
};

/// The file's name in the agent's state directory.
pub const FILE: &str = "prewake.json";

/// Pre-wake state of the orchestrator.
pub(super) struct Prewake {
    mode: PrewakeMode,
    pub(super) learner: Learner,
    /// Where learned pairs are kept; `None`: in memory only.
    file: Option<PathBuf>,
}

impl Prewake {
    pub(super) fn new(mode: PrewakeMode) -> Prewake {
        Prewake {
            mode,
            learner: Learner::default(),
            file: None,
        }
    }
}

/// The file's contents.
#[derive(Serialize, Deserialize)]
struct Saved {
    version: u32,
    pairs: Vec<Pair>,
}

impl<R: ContainerRuntime, D: HostTable> Orchestrator<R, D> {
    /// Keeps learned pairs in `dir` (created if needed), starting from those saved there.
    pub fn keep_learned_edges(&mut self, dir: &Path) {
        let file = dir.join(FILE);
        match std::fs::read_to_string(&file) {
            Ok(text) => match serde_json::from_str::<Saved>(&text) {
                Ok(saved) => {
                    let mut learner = Learner::from_pairs(saved.pairs);
                    learner.retain_hosts(|name| self.host_id(name).is_some());
                    info!(file = %file.display(), pairs = learner.pairs().len(), "learned edges loaded");
                    self.prewake.learner = learner;
                }
                Err(err) => warn!(file = %file.display(), error = %err,
                    "the learned edges file is unreadable: learning starts afresh and replaces it"),
            },
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => warn!(file = %file.display(), error = %err,
                "cannot read the learned edges: learning starts afresh"),
        }
        self.prewake.file = Some(file);
        self.prewake_changed();
    }

    /// A packet was held for host `id`: if its source is another host whose window is open, a
    /// sighting.
    pub(super) fn note_held(&mut self, id: usize, frame: &HeldFrame) {
        if !self.prewake.mode.learns() || self.hosts[id].is_warm() {
            return;
        }
        let Ok(summary) = packets::summarize(&frame.frame) else {
            return;
        };
        let Some(source) = self.host_at(summary.src) else {
            return;
        };
        let (source, target) = (&self.hosts[source].config.name, &self.hosts[id].config.name);
        if self
            .prewake
            .learner
            .packet(source, target, true, frame.header.held_at_ns)
        {
            debug!(source = %source, target = %target, "host traffic held for a cold host");
            self.prewake_changed();
        }
    }

    /// Host `id`'s wake was admitted: wakes its `wakes_with` and learned targets with it.
    pub(super) fn wake_companions(&mut self, id: usize) {
        let now_ns = monotonic_ns();
        let mut targets: Vec<(usize, Kind)> = Vec::new();
        for name in self.hosts[id].config.wakes_with.clone() {
            if let Some(t) = self.host_id(&name) {
                targets.push((t, Kind::WakesWith));
            }
        }
        if self.prewake.mode.learns() {
            let hosts = &self.hosts;
            let cold = |name: &str| {
                hosts
                    .iter()
                    .find(|h| h.config.name == name)
                    .is_some_and(|h| !h.is_warm())
            };
            let learned = (self.prewake.learner).source_waking(&hosts[id].config.name, cold);
            if self.prewake.mode.wakes() {
                for name in learned {
                    if let Some(t) = self.host_id(&name)
                        && !targets.iter().any(|(o, _)| *o == t)
                    {
                        targets.push((t, Kind::Learned));
                    }
                }
            }
        }
        let source_addr = self.hosts[id].config.address;
        for (t, kind) in targets {
            if !self.may_prewake(t, source_addr) {
                continue;
            }
            let (source, target) = (&self.hosts[id].config.name, &self.hosts[t].config.name);
            info!(host = %target, with = %source, kind = ?kind, "waking with it");
            if self.prewake.mode.learns() {
                self.prewake.learner.prewoken(source, target, kind, now_ns);
            }
            self.apply(t, Event::WakeRequested);
        }
        self.prewake_changed();
    }

    /// Whether target `t` may be woken for a host at `source`.
    fn may_prewake(&mut self, t: usize, source: Ipv4Addr) -> bool {
        let host = &self.hosts[t];
        if !matches!(host.state, HostState::Asleep { .. }) {
            return false;
        }
        if let Some(allowed) = &host.config.allow_from
            && !allowed.iter().any(|p| p.contains(&source))
        {
            debug!(host = %host.config.name, %source, "not pre-woken: it does not accept the source");
            return false;
        }
        if !self.prewake_fits(t, source) {
            debug!(host = %self.hosts[t].config.name, "not pre-woken: it does not fit the budget or the rate limits now");
            return false;
        }
        true
    }

    /// Whether host `id` was pre-woken and its source, warm or waking, has not reached it yet
    /// (the window still open): it is not put to sleep for idleness meanwhile. The source may be
    /// slow to call it (reading its pages back from swap, say); asleep by then, it would be
    /// woken again by that call, and the pre-wake would have saved nothing.
    pub(super) fn prewake_awaited(&self, id: usize) -> bool {
        let name = &self.hosts[id].config.name;
        (self.prewake.learner.sources_awaited_by(name)).any(|source| {
            self.host_id(source).is_some_and(|s| {
                matches!(
                    self.hosts[s].state,
                    HostState::Warm { .. } | HostState::Waking { .. }
                )
            })
        })
    }

    /// Host `id` changed state: a source that became warm opens its window's clock, one that
    /// failed closes its window.
    pub(super) fn prewake_state_changed(&mut self, id: usize, after: HostState) {
        if matches!(after, HostState::Warm { .. }) {
            // What `prewake_tick` compares with to tell a connection since then.
            let address = self.hosts[id].config.address;
            self.hosts[id].tcp_opened_at_warm =
                self.datapath.activity(address).map_or(0, |a| a.tcp_opened);
        }
        let name = &self.hosts[id].config.name;
        match after {
            HostState::Warm { .. } => self.prewake.learner.source_ready(name, monotonic_ns()),
            HostState::Failed { .. } => self.prewake.learner.source_failed(name),
            _ => return,
        }
        self.prewake_changed();
    }

    /// The periodic look: pre-woken hosts that had traffic since they became warm were used;
    /// windows that closed give their verdicts.
    pub(super) fn prewake_tick(&mut self, now_ns: u64) {
        if !self.prewake.mode.learns() {
            return;
        }
        for (source, target) in self.prewake.learner.awaiting_use() {
            let Some(t) = self.host_id(&target) else {
                continue;
            };
            let h = &self.hosts[t];
            // The datapath counts a warm host's traffic, not who sent it: traffic after the
            // pre-wake is taken as the source's. Its link's counters start a moment after it
            // became warm (the link is found then); the connections it accepted meanwhile are
            // counted anyway (`imag_tcp_state` is not on the link).
            if h.is_warm()
                && (h.activity.last_packet_ns > h.warm_since_ns
                    || h.activity.tcp_opened > h.tcp_opened_at_warm)
            {
                let at = h.activity.last_packet_ns.max(h.warm_since_ns);
                self.prewake.learner.packet(&source, &target, false, at);
            }
        }
        let hosts = &self.hosts;
        let cold = |name: &str| {
            hosts
                .iter()
                .find(|h| h.config.name == name)
                .is_some_and(|h| !h.is_warm())
        };
        self.prewake.learner.tick(now_ns, cold);
        self.prewake_changed();
    }

    /// Saves the pairs if they changed, and publishes the view.
    fn prewake_changed(&mut self) {
        if self.prewake.learner.take_changed()
            && let Some(file) = &self.prewake.file
        {
            let saved = Saved {
                version: 1,
                pairs: self.prewake.learner.pairs(),
            };
            if let Err(err) = write_atomically(file, &saved) {
                warn!(file = %file.display(), error = %err, "cannot save the learned edges");
            }
        }
        let view = self.prewake_view();
        self.snapshot.send_if_modified(|s| {
            let changed = s.prewake != view;
            s.prewake = view;
            changed
        });
    }

    fn prewake_view(&self) -> PrewakeView {
        let l = &self.prewake.learner;
        let (now_mono, now_unix_us) = (monotonic_ns(), unix_us());
        let unix_us_of = |ns: u64| now_unix_us.saturating_sub(now_mono.saturating_sub(ns) / 1000);
        PrewakeView {
            mode: self.prewake.mode.as_str().to_string(),
            used: l.used,
            unused: l.unused,
            edges: l
                .pairs()
                .into_iter()
                .map(|p| EdgeView {
                    seen: u32::try_from(p.sightings()).unwrap_or(u32::MAX),
                    of: u32::try_from(p.history.len()).unwrap_or(u32::MAX),
                    learned: p.learned(),
                    from: p.from,
                    to: p.to,
                })
                .collect(),
            recent: l
                .recent()
                .map(|r| PrewakeRecord {
                    from: r.from.clone(),
                    to: r.to.clone(),
                    kind: match r.kind {
                        Kind::Learned => "learned",
                        Kind::WakesWith => "wakes_with",
                    }
                    .to_string(),
                    at_unix_ms: unix_us_of(r.at_ns) / 1000,
                    result: match r.result {
                        Verdict::Pending => "pending",
                        Verdict::Used => "used",
                        Verdict::Unused => "unused",
                        Verdict::Dropped => "dropped",
                    }
                    .to_string(),
                    first_packet_unix_us: r.first_packet_ns.map(unix_us_of),
                })
                .collect(),
        }
    }

    /// The host at `addr`, if one is configured there.
    fn host_at(&self, addr: Ipv4Addr) -> Option<usize> {
        self.hosts.iter().position(|h| h.config.address == addr)
    }
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Writes `value` as JSON to `file` through a temporary file in the same directory and a
/// rename, so that readers (and a later agent) see the old or the new file whole.
fn write_atomically(file: &Path, value: &Saved) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, file)
}
