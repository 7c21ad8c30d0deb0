//! Ethernet header layout.

pub const ETH_ALEN: usize = 6;
pub const ETH_HLEN: usize = 14;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const VLAN_HLEN: usize = 4;
/// Destination and source MAC.
pub const MACS_LEN: usize = 2 * ETH_ALEN;

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; ETH_ALEN],
    pub src: [u8; ETH_ALEN],
    pub proto: [u8; 2],
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
