//! Learned pre-wakes, as pure logic on explicit time: which host's traffic woke which, whether
//! that is reliable enough to wake the second one in parallel with the first, and whether the
//! pre-wakes it made were used.
//!
//! The words: a *source* host wakes; a *target* is a host that the source's traffic reaches
//! while the target is cold. Each source wake opens a *window*, from the moment the source wakes
//! until [`WINDOW`] after it became ready. A packet from the source to a target inside it is one
//! sighting of the pair; a target that was cold when the source woke and got no packet from it
//! inside the window is a miss. A pair keeps its last [`HISTORY`] outcomes, and is an *edge*
//! when [`LEARNED_AT`] of them are sightings: then the next wake of the source wakes the target
//! too, in parallel. A pre-woken target that the source's traffic reaches inside the window is a
//! used pre-wake (a sighting), otherwise an unused one (a miss), so an edge that stops being
//! used decays: two unused pre-wakes in a row remove it, and a pair with no sighting left is
//! forgotten.
//!
//! Hosts are named, not numbered, so that the pairs mean the same after a restart with an edited
//! configuration (`wake_together.rs` keeps them in a file, and is the shell that feeds this
//! module). Nothing here reads a clock: the tests below drive it on a fake one.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// How long after the source became ready its traffic still counts as "woke it".
pub const WINDOW_NS: u64 = 5_000_000_000;
/// Outcomes kept per pair.
pub const HISTORY: usize = 3;
/// Sightings among them that make an edge.
pub const LEARNED_AT: usize = 2;
/// Pre-wakes kept for the status.
const RECENT: usize = 32;

/// Why a target was woken with its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A learned edge.
    Learned,
    /// The source's `wakes_with`.
    WakesWith,
}

/// What became of a pre-wake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Its window is still open.
    Pending,
    /// The source's traffic reached the target inside the window.
    Used,
    /// It did not.
    Unused,
    /// The source's wake failed: no verdict.
    Dropped,
}

/// One pre-wake, for the status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub from: String,
    pub to: String,
    pub kind: Kind,
    /// When it was decided.
    pub at_ns: u64,
    pub result: Verdict,
    /// When the first packet from the source to the target was held (the target was not warm
    /// yet); `None` if none was: the target was up before the source's traffic reached it.
    pub first_packet_ns: Option<u64>,
}

/// A pair as kept on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    pub from: String,
    pub to: String,
    /// Oldest first; `true` is a sighting.
    pub history: VecDeque<bool>,
}

impl Pair {
    pub fn sightings(&self) -> usize {
        self.history.iter().filter(|s| **s).count()
    }

    pub fn learned(&self) -> bool {
        self.sightings() >= LEARNED_AT
    }
}

/// A target the current wake of a source may reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pending {
    /// Index in `recent` of its pre-wake, if it was pre-woken.
    prewoken: Option<u64>,
}

/// The current wake of a source.
#[derive(Clone, Debug, Default)]
struct SourceWake {
    ready_ns: Option<u64>,
    /// Targets without a verdict yet.
    pending: BTreeMap<String, Pending>,
    /// Targets already sighted in this wake.
    sighted: Vec<String>,
}

/// Everything learned, and the wakes under observation.
#[derive(Debug, Default)]
pub struct Learner {
    pairs: BTreeMap<(String, String), VecDeque<bool>>,
    wakes: BTreeMap<String, SourceWake>,
    recent: VecDeque<Record>,
    /// Sequence number of `recent`'s first entry.
    recent_base: u64,
    pub used: u64,
    pub unused: u64,
    /// The pairs changed since [`Learner::take_changed`] was last asked (to be saved).
    changed: bool,
}

impl Learner {
    /// A learner that starts from saved pairs.
    pub fn from_pairs(pairs: Vec<Pair>) -> Learner {
        let mut learner = Learner::default();
        for p in pairs {
            let history: VecDeque<bool> = p.history.into_iter().rev().take(HISTORY).rev().collect();
            if history.iter().any(|s| *s) && p.from != p.to {
                learner.pairs.insert((p.from, p.to), history);
            }
        }
        learner
    }

    /// Every pair, for the file and the status.
    pub fn pairs(&self) -> Vec<Pair> {
        self.pairs
            .iter()
            .map(|((from, to), history)| Pair {
                from: from.clone(),
                to: to.clone(),
                history: history.clone(),
            })
            .collect()
    }

    /// Forgets pairs naming a host that `known` does not know (the configuration changed).
    pub fn retain_hosts(&mut self, known: impl Fn(&str) -> bool) {
        let before = self.pairs.len();
        self.pairs.retain(|(from, to), _| known(from) && known(to));
        self.changed |= self.pairs.len() != before;
    }

    /// The pre-wakes of late, oldest first.
    pub fn recent(&self) -> impl Iterator<Item = &Record> {
        self.recent.iter()
    }

    /// Whether the pairs changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// The learned targets of `from`.
    pub fn edges_from(&self, from: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|((f, _), h)| f == from && h.iter().filter(|s| **s).count() >= LEARNED_AT)
            .map(|((_, to), _)| to.clone())
            .collect()
    }

    /// `source` starts waking at `now_ns`: its previous wake, if still observed, ends; every
    /// known target of it that `cold` says is not warm now waits for a sighting. Returns the
    /// learned targets among those (to pre-wake, where governance allows: see
    /// [`Learner::prewoken`]).
    pub fn source_waking(&mut self, source: &str, cold: impl Fn(&str) -> bool) -> Vec<String> {
        self.end_wake(source, |_| true);
        let pending: BTreeMap<String, Pending> = self
            .pairs
            .keys()
            .filter(|(from, to)| from == source && cold(to))
            .map(|(_, to)| (to.clone(), Pending { prewoken: None }))
            .collect();
        let learned = self
            .edges_from(source)
            .into_iter()
            .filter(|to| pending.contains_key(to))
            .collect();
        self.wakes.insert(
            source.to_string(),
            SourceWake {
                pending,
                ..SourceWake::default()
            },
        );
        learned
    }

    /// `target` was woken at `now_ns` because `source` woke (a learned edge or `wakes_with`).
    pub fn prewoken(&mut self, source: &str, target: &str, kind: Kind, now_ns: u64) {
        let seq = self.recent_base + self.recent.len() as u64;
        self.recent.push_back(Record {
            from: source.to_string(),
            to: target.to_string(),
            kind,
            at_ns: now_ns,
            result: Verdict::Pending,
            first_packet_ns: None,
        });
        if self.recent.len() > RECENT {
            self.recent.pop_front();
            self.recent_base += 1;
        }
        let wake = self.wakes.entry(source.to_string()).or_default();
        wake.pending.insert(
            target.to_string(),
            Pending {
                prewoken: Some(seq),
            },
        );
    }

    /// `source` became ready at `now_ns`: its window now closes [`WINDOW_NS`] later.
    pub fn source_ready(&mut self, source: &str, now_ns: u64) {
        if let Some(wake) = self.wakes.get_mut(source) {
            wake.ready_ns.get_or_insert(now_ns);
        }
    }

    /// `source`'s wake failed: its window closes without verdicts.
    pub fn source_failed(&mut self, source: &str) {
        if let Some(wake) = self.wakes.remove(source) {
            for p in wake.pending.values() {
                self.set_result(p.prewoken, Verdict::Dropped);
            }
        }
    }

    /// A packet from `source` to `target` at `now_ns`; `held` says the datapath held it (the
    /// target was not warm). A sighting if `source`'s window is open. Says whether it was one.
    pub fn packet(&mut self, source: &str, target: &str, held: bool, now_ns: u64) -> bool {
        if source == target {
            return false;
        }
        let Some(wake) = self.wakes.get_mut(source) else {
            return false;
        };
        if wake.ready_ns.is_some_and(|r| now_ns > r + WINDOW_NS)
            || wake.sighted.iter().any(|t| t == target)
        {
            return false;
        }
        wake.sighted.push(target.to_string());
        let pending = wake.pending.remove(target);
        if let Some(seq) = pending.and_then(|p| p.prewoken) {
            self.used += 1;
            if let Some(r) = self.record_mut(seq) {
                r.result = Verdict::Used;
                if held {
                    r.first_packet_ns = Some(now_ns);
                }
            }
        }
        self.push(source, target, true);
        true
    }

    /// The sources whose pre-wake of `target` still waits for a sighting.
    pub fn sources_awaited_by<'a>(&'a self, target: &'a str) -> impl Iterator<Item = &'a str> {
        (self.wakes.iter())
            .filter(move |(_, w)| w.pending.get(target).is_some_and(|p| p.prewoken.is_some()))
            .map(|(source, _)| source.as_str())
    }

    /// The pre-woken targets still waiting for a sighting, as (source, target).
    pub fn awaiting_use(&self) -> Vec<(String, String)> {
        self.wakes
            .iter()
            .flat_map(|(source, w)| {
                w.pending
                    .iter()
                    .filter(|(_, p)| p.prewoken.is_some())
                    .map(move |(target, _)| (source.clone(), target.clone()))
            })
            .collect()
    }

    /// The periodic look: windows that closed by `now_ns` give their verdicts. A target that was
    /// not pre-woken and is no longer `cold` (something else woke it, and the source's packets
    /// to it then passed unseen) gives none.
    pub fn tick(&mut self, now_ns: u64, cold: impl Fn(&str) -> bool) {
        let closed: Vec<String> = self
            .wakes
            .iter()
            .filter(|(_, w)| w.ready_ns.is_some_and(|r| now_ns > r + WINDOW_NS))
            .map(|(s, _)| s.clone())
            .collect();
        for source in closed {
            self.end_wake(&source, &cold);
        }
    }

    fn end_wake(&mut self, source: &str, cold: impl Fn(&str) -> bool) {
        let Some(wake) = self.wakes.remove(source) else {
            return;
        };
        for (target, p) in wake.pending {
            if let Some(seq) = p.prewoken {
                self.unused += 1;
                self.set_result(Some(seq), Verdict::Unused);
            } else if !cold(&target) {
                continue;
            }
            self.push(source, &target, false);
        }
    }

    /// Adds an outcome to a pair; a pair without any sighting left is forgotten.
    fn push(&mut self, source: &str, target: &str, sighting: bool) {
        let key = (source.to_string(), target.to_string());
        let history = self.pairs.entry(key.clone()).or_default();
        history.push_back(sighting);
        while history.len() > HISTORY {
            history.pop_front();
        }
        if !history.iter().any(|s| *s) {
            self.pairs.remove(&key);
        }
        self.changed = true;
    }

    fn record_mut(&mut self, seq: u64) -> Option<&mut Record> {
        let i = usize::try_from(seq.checked_sub(self.recent_base)?).ok()?;
        self.recent.get_mut(i)
    }

    fn set_result(&mut self, seq: Option<u64>, result: Verdict) {
        if let Some(r) = seq.and_then(|s| self.record_mut(s)) {
            r.result = result;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// One chain a → b: `a` wakes at `t`, ready 300 ms later, and (if `calls`) its packet to
    /// `b` is held 10 ms after that. Returns what `a`'s wake pre-woke.
    fn chain(l: &mut Learner, t: u64, calls: bool, b_cold: bool) -> Vec<String> {
        let learned = l.source_waking("a", |h| h == "b" && b_cold);
        for to in &learned {
            l.prewoken("a", to, Kind::Learned, t);
        }
        l.source_ready("a", t + 300 * MS);
        if calls {
            l.packet("a", "b", learned.is_empty(), t + 310 * MS);
        }
        learned
    }

    #[test]
    fn an_edge_forms_after_two_sightings_and_fires_on_the_third_wake() {
        let mut l = Learner::default();
        assert!(
            chain(&mut l, 0, true, true).is_empty(),
            "first chain: only seen"
        );
        l.tick(20_000 * MS, |_| true);
        assert_eq!(l.pairs()[0].history, [true]);
        assert!(chain(&mut l, 30_000 * MS, true, true).is_empty());
        l.tick(40_000 * MS, |_| true);
        assert!(l.pairs()[0].learned(), "two of two: learned");
        assert!(l.take_changed());
        assert_eq!(chain(&mut l, 60_000 * MS, true, true), ["b"], "fires");
        assert_eq!((l.used, l.unused), (1, 0));
        let r = l.recent().last().unwrap();
        assert_eq!((r.result, r.first_packet_ns), (Verdict::Used, None));
        assert_eq!(l.pairs()[0].history, [true, true, true]);
    }

    #[test]
    fn a_packet_outside_the_window_or_from_a_host_that_did_not_wake_is_no_sighting() {
        let mut l = Learner::default();
        assert!(!l.packet("a", "b", true, 0), "a never woke");
        l.source_waking("a", |_| true);
        assert!(l.packet("a", "b", true, 100 * MS), "a still waking");
        assert!(!l.packet("a", "b", true, 110 * MS), "one sighting per wake");
        l.source_ready("a", 200 * MS);
        assert!(l.packet("a", "c", true, 200 * MS + WINDOW_NS));
        assert!(!l.packet("a", "d", true, 201 * MS + WINDOW_NS), "too late");
        assert!(!l.packet("a", "a", true, 300 * MS), "itself");
        assert_eq!(l.pairs().len(), 2);
    }

    #[test]
    fn two_of_the_last_three_wakes_are_needed() {
        let mut l = Learner::default();
        chain(&mut l, 0, true, true);
        l.tick(10_000 * MS, |_| true);
        chain(&mut l, 20_000 * MS, false, true);
        l.tick(30_000 * MS, |_| true);
        assert_eq!(l.pairs()[0].history, [true, false], "a miss: b stayed cold");
        assert!(!l.pairs()[0].learned());
        chain(&mut l, 40_000 * MS, true, true);
        l.tick(50_000 * MS, |_| true);
        assert!(l.pairs()[0].learned(), "true, false, true");
        // A wake of a while b is warm says nothing about the pair.
        chain(&mut l, 60_000 * MS, false, false);
        l.tick(70_000 * MS, |_| true);
        assert_eq!(l.pairs()[0].history, [true, false, true]);
    }

    #[test]
    fn unused_pre_wakes_are_counted_and_the_edge_decays() {
        let mut l = Learner::from_pairs(vec![Pair {
            from: "a".into(),
            to: "b".into(),
            history: [true, true].into(),
        }]);
        assert_eq!(chain(&mut l, 0, false, true), ["b"]);
        l.tick(300 * MS + WINDOW_NS, |_| true);
        assert_eq!(l.unused, 0, "the window is still open");
        l.tick(301 * MS + WINDOW_NS, |_| true);
        assert_eq!(l.unused, 1);
        assert_eq!(l.recent().last().unwrap().result, Verdict::Unused);
        assert!(l.pairs()[0].learned(), "true, true, false: still an edge");
        assert_eq!(chain(&mut l, 20_000 * MS, false, true), ["b"]);
        l.tick(40_000 * MS, |_| true);
        assert_eq!(l.unused, 2);
        assert!(l.edges_from("a").is_empty(), "true, false, false: decayed");
        assert!(chain(&mut l, 60_000 * MS, false, true).is_empty());
        l.tick(80_000 * MS, |_| true);
        assert!(l.pairs().is_empty(), "no sighting left: forgotten");
    }

    #[test]
    fn a_pre_woken_target_reached_while_still_waking_records_when() {
        let mut l = Learner::from_pairs(vec![Pair {
            from: "a".into(),
            to: "b".into(),
            history: [true, true].into(),
        }]);
        l.source_waking("a", |_| true);
        l.prewoken("a", "b", Kind::Learned, 5);
        assert_eq!(l.awaiting_use(), [("a".to_string(), "b".to_string())]);
        assert_eq!(l.sources_awaited_by("b").collect::<Vec<_>>(), ["a"]);
        assert_eq!(l.sources_awaited_by("a").count(), 0);
        l.packet("a", "b", true, 9);
        assert!(l.awaiting_use().is_empty());
        let r = l.recent().last().unwrap();
        assert_eq!((r.result, r.first_packet_ns), (Verdict::Used, Some(9)));
    }

    #[test]
    fn a_failed_source_gives_no_verdict_and_explicit_pre_wakes_are_judged_too() {
        let mut l = Learner::default();
        l.source_waking("a", |_| true);
        l.prewoken("a", "b", Kind::WakesWith, 0);
        l.source_failed("a");
        assert_eq!(l.recent().last().unwrap().result, Verdict::Dropped);
        assert!(l.pairs().is_empty());
        assert_eq!((l.used, l.unused), (0, 0));
        l.source_waking("a", |_| true);
        l.prewoken("a", "b", Kind::WakesWith, 0);
        l.source_ready("a", 0);
        l.tick(WINDOW_NS + 1, |_| true);
        assert_eq!(l.unused, 1);
        assert!(l.pairs().is_empty(), "a miss alone is not kept");
    }

    #[test]
    fn saved_pairs_are_trimmed_and_unknown_hosts_forgotten() {
        let mut l = Learner::from_pairs(vec![
            Pair {
                from: "a".into(),
                to: "b".into(),
                history: [true, true, false, false, false].into(),
            },
            Pair {
                from: "a".into(),
                to: "c".into(),
                history: [true, true].into(),
            },
        ]);
        assert_eq!(
            l.pairs().len(),
            1,
            "a → b kept only misses in its last three"
        );
        l.retain_hosts(|h| h != "c");
        assert!(l.pairs().is_empty());
        assert!(l.take_changed());
    }
}
