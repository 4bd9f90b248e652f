//! Test helpers (feature `test-helpers`): running a holding program once on a crafted frame
//! through `BPF_PROG_TEST_RUN`, with all its map and ring buffer effects, so that the datapath can
//! be tested without traffic (`tests/datapath.rs`). Not part of the agent proper.
//!
//! Neighbours: [`super::deliver`] runs `imag_deliver` the same way, in live-frames mode.

use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use imag_common::programs;

use super::{Datapath, DatapathError, deliver::xdp_md_for, load::program_mut};

/// Which holding program [`Datapath::run_hold_program`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestHook {
    /// `imag_hold`.
    Xdp,
    /// `imag_hold_tc`.
    Tc,
    /// `imag_to_host` (not a holding program, but run the same way: `ifindex` is the packet's
    /// ingress, 0 for the machine's own packets).
    ToHost,
    /// `imag_from_host` (not a holding program either): the frame arrives from the container on
    /// the loopback device (ifindex 1), which stands for the host side of its veth.
    FromHost,
}

impl TestHook {
    /// Both holding programs: they run the same logic, so every datapath test runs both.
    pub const ALL: [TestHook; 2] = [TestHook::Xdp, TestHook::Tc];
}

/// What a holding program decided, the same for XDP and TC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestVerdict {
    /// `XDP_PASS` / `TC_ACT_OK`.
    Pass,
    /// `XDP_DROP` / `TC_ACT_SHOT`.
    Drop,
    /// `XDP_TX` / `TC_ACT_REDIRECT` back out of the interface.
    Bounce,
    Other(u32),
}

impl Datapath {
    /// Runs the holding program — `imag_hold` (XDP) or `imag_hold_tc` (TC) — once on a crafted
    /// frame (`BPF_PROG_TEST_RUN`) as if it arrived on `ifindex`, with all its map and ring buffer
    /// effects. Returns what the program decided and the frame as it left it.
    pub fn run_hold_program(
        &mut self,
        hook: TestHook,
        frame: &[u8],
        ifindex: u32,
    ) -> Result<(TestVerdict, Vec<u8>), DatapathError> {
        let mut out = vec![0u8; frame.len() + 256];
        let (name, ctx): (&'static str, Vec<u8>) = match hook {
            TestHook::Xdp => (programs::HOLD, xdp_md_for(ifindex, frame.len()).to_vec()),
            TestHook::Tc => (programs::HOLD_TC, sk_buff_for(ifindex).to_vec()),
            TestHook::ToHost => (programs::TO_HOST, sk_buff_for(ifindex).to_vec()),
            TestHook::FromHost => (programs::FROM_HOST, sk_buff_for(ifindex).to_vec()),
        };
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            repeat: 1,
            ..TestRunOptions::new()
        };
        let run_error = |source| DatapathError::Program { name, source };
        let result = match hook {
            TestHook::Xdp => program_mut::<Xdp>(&mut self.ebpf, name)?.test_run(opts),
            TestHook::Tc | TestHook::ToHost | TestHook::FromHost => {
                program_mut::<SchedClassifier>(&mut self.ebpf, name)?.test_run(opts)
            }
        }
        .map_err(run_error)?;
        out.truncate(result.data_size_out as usize);
        let tc = hook != TestHook::Xdp;
        let verdict = match (tc, result.return_value) {
            (false, 1) | (true, 2) => TestVerdict::Drop,
            (false, 2) | (true, 0) => TestVerdict::Pass,
            (false, 3) | (true, 7) => TestVerdict::Bounce,
            (_, other) => TestVerdict::Other(other),
        };
        Ok((verdict, out))
    }
}

/// A `struct __sk_buff` for `BPF_PROG_TEST_RUN` of a TC program: everything zero but
/// `ingress_ifindex` (offset 36), which becomes the skb's `skb_iif`.
fn sk_buff_for(ingress_ifindex: u32) -> [u8; 192] {
    let mut ctx = [0u8; 192];
    ctx[36..40].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    ctx
}
