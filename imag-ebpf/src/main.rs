//! imag's datapath, loaded by the agent into the kernel.
//!
//! The holding program runs on every attach interface and on the imag bridge: `imag_hold` (XDP)
//! on NICs, `imag_hold_tc` (TC ingress) on virtual interfaces, the same logic behind both. It
//! looks up the destination of each IPv4 packet in `HOSTS`: packets to imaginary hosts that are
//! not warm are copied to the agent through the `HELD_FRAMES` ring buffer and dropped (ARP and
//! pings for them may be answered instead); everything else passes. `imag_to_host` and
//! `imag_from_host` (TC) count a warm host's traffic on its own link, `imag_tcp_state` its TCP
//! connections.
//! `imag_deliver` (XDP, always `XDP_PASS`) is never attached: the agent runs it with
//! `BPF_PROG_TEST_RUN` in live-frames mode to inject held frames back into the stack on the
//! interface they arrived on.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod datapath;

#[cfg(not(target_arch = "bpf"))]
fn main() {
    // The programs only build for the bpf target; `cargo build` of the host target builds nothing.
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach a panic, so this is never executed.
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
