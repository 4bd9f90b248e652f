//! The packets held for hosts that are not warm yet, in arrival order per host, within the limits
//! of `[hold]`: per host and overall, in packets and in bytes. Pure bookkeeping, unit-tested.

use std::collections::VecDeque;

use crate::{config::HoldConfig, datapath::ring::HeldFrame};

/// What happened to a packet offered to [`HeldPackets::push`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Held,
    DroppedHostLimit,
    DroppedGlobalLimit,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<HeldFrame>,
    bytes: usize,
}

pub struct HeldPackets {
    queues: Vec<Queue>,
    packets: usize,
    bytes: usize,
    limits: HoldConfig,
}

impl HeldPackets {
    pub fn new(hosts: usize, limits: HoldConfig) -> HeldPackets {
        HeldPackets {
            queues: (0..hosts).map(|_| Queue::default()).collect(),
            packets: 0,
            bytes: 0,
            limits,
        }
    }

    /// Queues `frame` for `host` unless a limit forbids it.
    pub fn push(&mut self, host: usize, frame: HeldFrame) -> Admission {
        let len = frame.frame.len();
        let queue = &mut self.queues[host];
        if queue.frames.len() >= self.limits.max_packets_per_host
            || queue.bytes + len > self.limits.max_bytes_per_host
        {
            return Admission::DroppedHostLimit;
        }
        if self.packets >= self.limits.max_packets || self.bytes + len > self.limits.max_bytes {
            return Admission::DroppedGlobalLimit;
        }
        queue.bytes += len;
        queue.frames.push_back(frame);
        self.packets += 1;
        self.bytes += len;
        Admission::Held
    }

    /// Removes and returns every packet held for `host`, oldest first.
    pub fn take(&mut self, host: usize) -> Vec<HeldFrame> {
        let queue = &mut self.queues[host];
        self.packets -= queue.frames.len();
        self.bytes -= queue.bytes;
        queue.bytes = 0;
        queue.frames.drain(..).collect()
    }

    /// Discards `host`'s packets held at or before `cutoff_ns`; returns how many.
    pub fn expire(&mut self, host: usize, cutoff_ns: u64) -> usize {
        let queue = &mut self.queues[host];
        let mut expired = 0;
        while queue
            .frames
            .front()
            .is_some_and(|f| f.header.held_at_ns <= cutoff_ns)
        {
            let frame = queue.frames.pop_front().expect("front exists");
            queue.bytes -= frame.frame.len();
            self.bytes -= frame.frame.len();
            self.packets -= 1;
            expired += 1;
        }
        expired
    }

    pub fn len(&self, host: usize) -> usize {
        self.queues[host].frames.len()
    }

    pub fn is_empty(&self, host: usize) -> bool {
        self.queues[host].frames.is_empty()
    }

    /// When the oldest packet still held for `host` was held (`CLOCK_MONOTONIC` ns).
    pub fn oldest_ns(&self, host: usize) -> Option<u64> {
        self.queues[host]
            .frames
            .front()
            .map(|f| f.header.held_at_ns)
    }

    /// Packets and bytes held over all hosts.
    pub fn totals(&self) -> (usize, usize) {
        (self.packets, self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use imag_common::HeldFrameHeader;

    use super::*;

    fn frame(at_ns: u64, len: usize) -> HeldFrame {
        HeldFrame {
            header: HeldFrameHeader {
                held_at_ns: at_ns,
                frame_len: u32::try_from(len).unwrap(),
                ..Default::default()
            },
            frame: vec![0; len],
        }
    }

    fn limits() -> HoldConfig {
        HoldConfig {
            max_packets_per_host: 3,
            max_bytes_per_host: 1000,
            max_packets: 4,
            max_bytes: 1500,
        }
    }

    #[test]
    fn keeps_arrival_order_and_releases_everything() {
        let mut held = HeldPackets::new(1, limits());
        for at in [10, 20, 30] {
            assert_eq!(held.push(0, frame(at, 100)), Admission::Held);
        }
        assert_eq!(held.oldest_ns(0), Some(10));
        let taken: Vec<u64> = held.take(0).iter().map(|f| f.header.held_at_ns).collect();
        assert_eq!(taken, vec![10, 20, 30]);
        assert_eq!(held.totals(), (0, 0));
        assert!(held.is_empty(0));
    }

    #[test]
    fn per_host_packet_and_byte_limits() {
        let mut held = HeldPackets::new(2, limits());
        for _ in 0..3 {
            assert_eq!(held.push(0, frame(1, 10)), Admission::Held);
        }
        assert_eq!(held.push(0, frame(1, 10)), Admission::DroppedHostLimit);
        assert_eq!(held.push(1, frame(1, 900)), Admission::Held);
        assert_eq!(
            held.push(1, frame(1, 200)),
            Admission::DroppedHostLimit,
            "1100 bytes > 1000"
        );
        assert_eq!(held.len(0), 3);
        assert_eq!(held.len(1), 1);
    }

    #[test]
    fn global_limits_span_hosts() {
        let mut held = HeldPackets::new(3, limits());
        assert_eq!(held.push(0, frame(1, 10)), Admission::Held);
        assert_eq!(held.push(0, frame(1, 10)), Admission::Held);
        assert_eq!(held.push(1, frame(1, 10)), Admission::Held);
        assert_eq!(held.push(2, frame(1, 10)), Admission::Held);
        assert_eq!(
            held.push(2, frame(1, 10)),
            Admission::DroppedGlobalLimit,
            "5 packets > 4"
        );
        held.take(0);
        assert_eq!(
            held.push(2, frame(1, 10)),
            Admission::Held,
            "released packets free room"
        );

        let mut bytes = HeldPackets::new(2, limits());
        assert_eq!(bytes.push(0, frame(1, 800)), Admission::Held);
        assert_eq!(
            bytes.push(1, frame(1, 800)),
            Admission::DroppedGlobalLimit,
            "1600 > 1500 bytes"
        );
    }

    #[test]
    fn expiry_discards_only_old_packets_from_the_front() {
        let mut held = HeldPackets::new(1, limits());
        for at in [10, 20, 30] {
            held.push(0, frame(at, 100));
        }
        assert_eq!(held.expire(0, 20), 2);
        assert_eq!(held.oldest_ns(0), Some(30));
        assert_eq!(held.totals(), (1, 100));
        assert_eq!(held.expire(0, 5), 0);
    }
}
