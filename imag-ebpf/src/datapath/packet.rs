//! Bounds-checked access to packet bytes, the one helper every parser here goes through, and the
//! checksum arithmetic for headers rewritten in place.

use aya_ebpf::programs::XdpContext;

/// A pointer to a `T` at `offset` bytes into the frame, or `None` if the frame is too short.
///
/// The explicit comparison against `data_end` is what the verifier needs to accept every later
/// read or write through the pointer.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
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
