//! Bounds-checked access to frame bytes.

use aya_ebpf::programs::XdpContext;

pub const ETH_ALEN: usize = 6;
pub const ETH_HLEN: usize = 14;
pub const ETH_P_8021Q: u16 = 0x8100;

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; ETH_ALEN],
    pub src: [u8; ETH_ALEN],
    pub proto: [u8; 2],
}

/// A pointer to a `T` at `offset` in the frame, or `None` if the frame is too short.
/// Every access to frame bytes goes through here so that the verifier sees the check.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// 01:80:c2:00:00:0x, the IEEE 802.1D reserved group addresses that bridges never forward.
#[inline(always)]
pub fn is_link_local(dst: &[u8; ETH_ALEN]) -> bool {
    dst[0] == 0x01
        && dst[1] == 0x80
        && dst[2] == 0xc2
        && dst[3] == 0
        && dst[4] == 0
        && dst[5] & 0xf0 == 0
}
