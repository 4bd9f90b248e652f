//! The orchestrator's hold queues (`orchestrator::held::HeldPackets`) against a model: arbitrary
//! limits and arbitrary sequences of push, take and expire over a few hosts. After every step the
//! queues must say what the model says (admission, order, counts, bytes, oldest packet), and never
//! hold more than `[hold]` allows, per host or overall.

#![no_main]

use imag_agent::{
    config::HoldConfig,
    datapath::ring::HeldFrame,
    orchestrator::held::{Admission, HeldPackets},
};
use imag_common::{HeldFrameHeader, MAX_FRAME_LEN};
use libfuzzer_sys::{
    arbitrary::{self, Arbitrary},
    fuzz_target,
};

const HOSTS: usize = 4;

/// A limit: mostly small enough to be reached, sometimes unlimited.
#[derive(Arbitrary, Debug)]
enum Limit {
    Small(u16),
    Unlimited,
}

impl Limit {
    fn value(&self) -> usize {
        match self {
            Limit::Small(n) => usize::from(*n),
            Limit::Unlimited => usize::MAX,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Push { host: u8, at_ns: u64, len: u16 },
    Take { host: u8 },
    Expire { host: u8, cutoff_ns: u64 },
}

#[derive(Arbitrary, Debug)]
struct Case {
    max_packets_per_host: Limit,
    max_bytes_per_host: Limit,
    max_packets: Limit,
    max_bytes: Limit,
    ops: Vec<Op>,
}

/// One held packet as the model sees it: its sequence number, time and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Packet {
    seq: u32,
    at_ns: u64,
    len: usize,
}

fn frame(p: Packet) -> HeldFrame {
    HeldFrame {
        header: HeldFrameHeader {
            held_at_ns: p.at_ns,
            ifindex: p.seq,
            frame_len: u32::try_from(p.len).expect("frames are below 4 GiB"),
            ..Default::default()
        },
        frame: vec![0xa5; p.len],
    }
}

fn packet(f: &HeldFrame) -> Packet {
    Packet {
        seq: f.header.ifindex,
        at_ns: f.header.held_at_ns,
        len: f.frame.len(),
    }
}

fuzz_target!(|case: Case| {
    let limits = HoldConfig {
        max_packets_per_host: case.max_packets_per_host.value(),
        max_bytes_per_host: case.max_bytes_per_host.value(),
        max_packets: case.max_packets.value(),
        max_bytes: case.max_bytes.value(),
    };
    let mut held = HeldPackets::new(HOSTS, limits);
    let mut model: Vec<Vec<Packet>> = vec![Vec::new(); HOSTS];
    let bytes = |q: &[Packet]| q.iter().map(|p| p.len).sum::<usize>();
    let mut seq = 0u32;

    for op in &case.ops {
        match *op {
            Op::Push { host, at_ns, len } => {
                let host = usize::from(host) % HOSTS;
                let len = usize::from(len) % (MAX_FRAME_LEN + 1);
                seq += 1;
                let p = Packet { seq, at_ns, len };
                let queue = &model[host];
                let total_packets: usize = model.iter().map(Vec::len).sum();
                let total_bytes: usize = model.iter().map(|q| bytes(q)).sum();
                let expected = if queue.len() >= limits.max_packets_per_host
                    || bytes(queue) + len > limits.max_bytes_per_host
                {
                    Admission::DroppedHostLimit
                } else if total_packets >= limits.max_packets
                    || total_bytes + len > limits.max_bytes
                {
                    Admission::DroppedGlobalLimit
                } else {
                    model[host].push(p);
                    Admission::Held
                };
                assert_eq!(held.push(host, frame(p)), expected, "admission of {p:?}");
            }
            Op::Take { host } => {
                let host = usize::from(host) % HOSTS;
                let taken: Vec<Packet> = held.take(host).iter().map(packet).collect();
                assert_eq!(taken, std::mem::take(&mut model[host]), "take({host})");
            }
            Op::Expire { host, cutoff_ns } => {
                let host = usize::from(host) % HOSTS;
                let queue = &mut model[host];
                let expired = queue.iter().take_while(|p| p.at_ns <= cutoff_ns).count();
                queue.drain(..expired);
                assert_eq!(held.expire(host, cutoff_ns), expired, "expire({host})");
            }
        }

        let mut total = (0, 0);
        for (host, queue) in model.iter().enumerate() {
            assert_eq!(held.len(host), queue.len());
            assert_eq!(held.is_empty(host), queue.is_empty());
            assert_eq!(held.oldest_ns(host), queue.first().map(|p| p.at_ns));
            assert!(queue.len() <= limits.max_packets_per_host);
            assert!(bytes(queue) <= limits.max_bytes_per_host);
            total.0 += queue.len();
            total.1 += bytes(queue);
        }
        assert_eq!(held.totals(), total);
        assert!(total.0 <= limits.max_packets && total.1 <= limits.max_bytes);
    }
});
