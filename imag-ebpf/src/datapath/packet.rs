//! The one view of a frame every parser here goes through, for both program types that hold:
//! XDP (`imag_hold`, on NICs) and TC (`imag_hold_tc`, on virtual interfaces). `ptr_at` is the one
//! bounds helper, and the checksum arithmetic for headers rewritten in place lives here too.

use aya_ebpf::{
    bindings::{__sk_buff, xdp_md},
    helpers::generated::{bpf_skb_load_bytes, bpf_xdp_load_bytes},
    programs::{TcContext, XdpContext},
};

/// What a program does with a frame.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let it continue into the stack.
    Pass,
    /// It was held (or is unusable): it goes no further.
    Drop,
    /// It was rewritten into an answer: send it back out of the interface it came in on.
    Bounce,
}

/// A frame under inspection (also a program context, for aya-log).
pub trait Frame: aya_ebpf::EbpfContext {
    /// Start and end of the directly readable (linear) bytes.
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    /// Length of the whole frame.
    fn len(&self) -> usize;
    fn ingress_ifindex(&self) -> u32;
    /// Whether the frame's VLAN tag was taken out of the data into the skb's metadata (TC: the
    /// stack does that before TC ingress, and a veth may carry it so): the data then looks like
    /// an untagged frame. XDP sees a tag in the data (ether type 802.1Q, which passes as "not
    /// IPv4"); a NIC that strips tags in hardware hides them from XDP altogether (see the
    /// architecture notes).
    fn vlan_tagged(&self) -> bool;
    /// Copies `len` bytes from the start of the frame to `dst`; 0 on success.
    ///
    /// # Safety
    /// `dst` must have room for `len` bytes.
    unsafe fn copy_out(&self, dst: *mut core::ffi::c_void, len: u32) -> i64;
}

impl Frame for XdpContext {
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }
    #[inline(always)]
    fn len(&self) -> usize {
        XdpContext::data_end(self) - XdpContext::data(self)
    }
    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        let md: *mut xdp_md = self.ctx;
        // SAFETY: the program's context.
        unsafe { (*md).ingress_ifindex }
    }
    #[inline(always)]
    fn vlan_tagged(&self) -> bool {
        false
    }
    #[inline(always)]
    unsafe fn copy_out(&self, dst: *mut core::ffi::c_void, len: u32) -> i64 {
        // SAFETY: the caller guarantees room.
        unsafe { bpf_xdp_load_bytes(self.ctx, 0, dst, len) }
    }
}

impl Frame for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }
    #[inline(always)]
    fn len(&self) -> usize {
        TcContext::len(self) as usize
    }
    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        let skb: *mut __sk_buff = self.skb.skb;
        // SAFETY: the program's context.
        unsafe { (*skb).ingress_ifindex }
    }
    #[inline(always)]
    fn vlan_tagged(&self) -> bool {
        let skb: *mut __sk_buff = self.skb.skb;
        // SAFETY: the program's context.
        unsafe { (*skb).vlan_present != 0 }
    }
    #[inline(always)]
    unsafe fn copy_out(&self, dst: *mut core::ffi::c_void, len: u32) -> i64 {
        // SAFETY: the caller guarantees room.
        unsafe { bpf_skb_load_bytes(self.skb.skb.cast(), 0, dst, len) }
    }
}

/// A pointer to a `T` at `offset` bytes into the frame, or `None` if the frame is too short.
///
/// The explicit comparison against `data_end` is what the verifier needs to accept every later
/// read or write through the pointer.
#[inline(always)]
pub fn ptr_at<T, F: Frame>(ctx: &F, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// Updates an Internet checksum for one 16-bit word changing from `old` to `new` (RFC 1624,
/// eqn. 3: HC' = ~(~HC + ~m + m')).
#[inline(always)]
pub fn checksum_replace(check: &mut [u8; 2], old: u16, new: u16) {
    let mut sum = !u16::from_be_bytes(*check) as u32 + !old as u32 + new as u32;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    *check = (!(sum as u16)).to_be_bytes();
}
