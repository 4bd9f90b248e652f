//! Re-delivery of a held frame: the kernel injects it into the stack as if it had just arrived
//! on the interface it was held on.
//!
//! Neighbours: `orchestrator` decides when (after the host is warm and the frame's checksum is
//! fixed by `frame`); the frames come from [`super::ring`].

use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp};
use imag_common::programs;

use super::{Datapath, DatapathError};

impl Datapath {
    /// Injects `frame` into the stack as if it had just arrived on `ifindex`.
    ///
    /// This runs the `imag_deliver` program (which returns `XDP_PASS`) through
    /// `BPF_PROG_TEST_RUN` in live-frames mode: the kernel builds an skb from the frame and
    /// passes it up from that interface, so routing, netfilter and conntrack treat it exactly like
    /// the original packet. The XDP holding program on that interface does not see it again
    /// (a TC one would: the host must be warm first).
    pub fn deliver(&self, ifindex: u32, frame: &[u8]) -> Result<(), DatapathError> {
        let program: &Xdp = self
            .ebpf
            .program(programs::DELIVER)
            .ok_or(DatapathError::Missing {
                what: "program",
                name: programs::DELIVER,
            })?
            .try_into()
            .map_err(|source| DatapathError::Program {
                name: programs::DELIVER,
                source,
            })?;
        let ctx = xdp_md_for(ifindex, frame.len());
        let opts = TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat: 1,
            attrs: TestRunAttrs::new().xdp_live_frames(1),
            ..TestRunOptions::new()
        };
        program
            .test_run(opts)
            .map(|_| ())
            .map_err(|source| DatapathError::Deliver { ifindex, source })
    }
}

/// A `struct xdp_md` for `BPF_PROG_TEST_RUN`: the frame starts at offset 0, has no metadata, and
/// arrived on `ifindex` (queue 0).
#[allow(
    clippy::cast_possible_truncation,
    reason = "a test frame is at most a page long; `struct xdp_md` holds offsets as u32"
)]
pub(super) fn xdp_md_for(ifindex: u32, len: usize) -> [u8; 24] {
    let fields: [u32; 6] = [0, len as u32, 0, ifindex, 0, 0];
    let mut ctx = [0u8; 24];
    for (chunk, field) in ctx.chunks_exact_mut(4).zip(fields) {
        chunk.copy_from_slice(&field.to_ne_bytes());
    }
    ctx
}
