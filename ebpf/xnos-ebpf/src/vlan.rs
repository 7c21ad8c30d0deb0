//! 802.1Q: classify a frame into a VLAN, and push, pop or rewrite its tag.

use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use xnos_common::{DropReason, PORT_MODE_ACCESS, PortConf};

use crate::packet::{ETH_ALEN, ETH_HLEN, ETH_P_8021Q, ptr_at};

const VLAN_HLEN: usize = 4;
const MACS_LEN: usize = 2 * ETH_ALEN;

#[repr(C)]
struct VlanHdr {
    tpid: [u8; 2],
    tci: [u8; 2],
    inner_proto: [u8; 2],
}

/// The 802.1Q tag a frame carries.
#[derive(Clone, Copy)]
pub struct Tag {
    tci: u16,
}

impl Tag {
    /// `Ok(None)` for an untagged frame; a frame too short for its headers is malformed.
    #[inline(always)]
    pub fn parse(ctx: &XdpContext) -> Result<Option<Tag>, DropReason> {
        let hdr: *const VlanHdr = match ptr_at(ctx, MACS_LEN) {
            Some(hdr) => hdr,
            None => {
                // Untagged frames only need the 2-byte EtherType.
                ptr_at::<[u8; ETH_HLEN]>(ctx, 0).ok_or(DropReason::Malformed)?;
                let proto: *const [u8; 2] = ptr_at(ctx, MACS_LEN).ok_or(DropReason::Malformed)?;
                // SAFETY: bounds checked by ptr_at.
                if u16::from_be_bytes(unsafe { *proto }) == ETH_P_8021Q {
                    return Err(DropReason::Malformed);
                }
                return Ok(None);
            }
        };
        // SAFETY: bounds checked by ptr_at.
        let (tpid, tci) = unsafe { ((*hdr).tpid, (*hdr).tci) };
        if u16::from_be_bytes(tpid) != ETH_P_8021Q {
            return Ok(None);
        }
        Ok(Some(Tag {
            tci: u16::from_be_bytes(tci),
        }))
    }

    #[inline(always)]
    pub fn vid(self) -> u16 {
        self.tci & 0x0fff
    }
}

/// The VLAN a frame received on `port` belongs to, or why the port may not carry it.
/// Priority-tagged frames (VID 0) count as untagged.
#[inline(always)]
pub fn classify(port: &PortConf, tag: Option<Tag>) -> Result<u16, DropReason> {
    match tag {
        Some(tag) if tag.vid() != 0 => {
            if port.mode == PORT_MODE_ACCESS {
                Err(DropReason::TaggedOnAccess)
            } else if port.is_member(tag.vid()) {
                Ok(tag.vid())
            } else {
                Err(DropReason::VlanNotAllowed)
            }
        }
        _ if port.pvid != 0 => Ok(port.pvid),
        _ if port.mode == PORT_MODE_ACCESS => Err(DropReason::VlanNotAllowed),
        _ => Err(DropReason::UntaggedNoNative),
    }
}

/// Make the frame (currently carrying `tag`) leave untagged, or tagged with `vid`.
#[inline(always)]
pub fn rewrite(
    ctx: &XdpContext,
    tag: Option<Tag>,
    vid: u16,
    untagged: bool,
) -> Result<(), DropReason> {
    match (tag, untagged) {
        (None, true) => Ok(()),
        (None, false) => push(ctx, vid),
        (Some(_), true) => pop(ctx),
        (Some(tag), false) => {
            let tci = (tag.tci & 0xf000) | vid;
            if tci != tag.tci {
                let hdr: *mut VlanHdr = ptr_at(ctx, MACS_LEN).ok_or(DropReason::TagRewrite)?;
                // SAFETY: bounds checked by ptr_at.
                unsafe { (*hdr).tci = tci.to_be_bytes() };
            }
            Ok(())
        }
    }
}

#[inline(always)]
fn read_macs(ctx: &XdpContext) -> Result<[u8; MACS_LEN], DropReason> {
    let macs: *const [u8; MACS_LEN] = ptr_at(ctx, 0).ok_or(DropReason::TagRewrite)?;
    // SAFETY: bounds checked by ptr_at.
    Ok(unsafe { *macs })
}

#[inline(always)]
fn adjust_head(ctx: &XdpContext, delta: i32) -> Result<(), DropReason> {
    // SAFETY: the helper checks headroom itself; packet pointers are re-derived afterwards.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) } != 0 {
        return Err(DropReason::TagRewrite);
    }
    Ok(())
}

#[inline(always)]
fn push(ctx: &XdpContext, vid: u16) -> Result<(), DropReason> {
    let macs = read_macs(ctx)?;
    adjust_head(ctx, -(VLAN_HLEN as i32))?;
    let hdr: *mut [u8; MACS_LEN + VLAN_HLEN] = ptr_at(ctx, 0).ok_or(DropReason::TagRewrite)?;
    let [p0, p1] = ETH_P_8021Q.to_be_bytes();
    let [t0, t1] = vid.to_be_bytes();
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        let hdr = &mut *hdr;
        hdr[..MACS_LEN].copy_from_slice(&macs);
        hdr[MACS_LEN..].copy_from_slice(&[p0, p1, t0, t1]);
    }
    Ok(())
}

#[inline(always)]
fn pop(ctx: &XdpContext) -> Result<(), DropReason> {
    let macs = read_macs(ctx)?;
    adjust_head(ctx, VLAN_HLEN as i32)?;
    let hdr: *mut [u8; MACS_LEN] = ptr_at(ctx, 0).ok_or(DropReason::TagRewrite)?;
    // SAFETY: bounds checked by ptr_at.
    unsafe { *hdr = macs };
    Ok(())
}
