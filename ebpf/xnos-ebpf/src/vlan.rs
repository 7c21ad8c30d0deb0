//! 802.1Q: classify a frame into a VLAN, and push, pop or rewrite its tag.

use xnos_common::{DropReason, PORT_MODE_ACCESS, PortConf};

use crate::{
    frame::Frame,
    packet::{ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, MACS_LEN, VLAN_HLEN},
};

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
    /// In the frame's bytes (always for XDP), or kept by the kernel beside them (TC).
    in_frame: bool,
}

impl Tag {
    /// The tag in the frame's bytes: `Ok(None)` for an untagged frame; a frame too short
    /// for its headers is malformed.
    #[inline(always)]
    pub fn parse<F: Frame>(f: &F) -> Result<Option<Tag>, DropReason> {
        let hdr: *const VlanHdr = match f.ptr_at(MACS_LEN) {
            Some(hdr) => hdr,
            None => {
                // Untagged frames only need the 2-byte EtherType.
                f.ptr_at::<[u8; ETH_HLEN]>(0).ok_or(DropReason::Malformed)?;
                let proto: *const [u8; 2] = f.ptr_at(MACS_LEN).ok_or(DropReason::Malformed)?;
                // SAFETY: bounds checked by ptr_at.
                if u16::from_be_bytes(unsafe { *proto }) == ETH_P_8021Q {
                    return Err(DropReason::Malformed);
                }
                return Ok(None);
            }
        };
        // SAFETY: bounds checked by ptr_at.
        let (tpid, tci, inner) = unsafe { ((*hdr).tpid, (*hdr).tci, (*hdr).inner_proto) };
        if u16::from_be_bytes(tpid) != ETH_P_8021Q {
            return Ok(None);
        }
        whole_inner_tag(f, u16::from_be_bytes(inner), MACS_LEN + VLAN_HLEN)?;
        Ok(Some(Tag {
            tci: u16::from_be_bytes(tci),
            in_frame: true,
        }))
    }

    /// A tag the kernel took out of the frame's bytes (TC).
    #[inline(always)]
    pub fn outside(tci: u16) -> Tag {
        Tag {
            tci,
            in_frame: false,
        }
    }

    #[inline(always)]
    pub fn vid(self) -> u16 {
        self.tci & 0x0fff
    }

    #[inline(always)]
    pub fn tci(self) -> u16 {
        self.tci
    }

    #[inline(always)]
    pub fn in_frame(self) -> bool {
        self.in_frame
    }
}

/// A tag inside the one the switch handles is payload to it, but must be whole: TC's
/// `bpf_skb_vlan_pop` takes the next tag out of the bytes together with ours and fails on
/// a stump, halfway through a flood (after the clones to tagged ports). `at` is where the
/// inner tag starts.
#[inline(always)]
pub fn whole_inner_tag<F: Frame>(f: &F, ether_type: u16, at: usize) -> Result<(), DropReason> {
    if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
        return Ok(());
    }
    f.ptr_at::<[u8; VLAN_HLEN + 2]>(at)
        .map(drop)
        .ok_or(DropReason::Malformed)
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
pub fn rewrite<F: Frame>(
    f: &F,
    tag: Option<Tag>,
    vid: u16,
    untagged: bool,
) -> Result<(), DropReason> {
    match (tag, untagged) {
        (None, true) => Ok(()),
        (None, false) => f.push_tag(vid),
        (Some(tag), true) => f.pop_tag(tag),
        (Some(tag), false) => {
            let tci = (tag.tci & 0xf000) | vid;
            if tci != tag.tci {
                f.set_tci(tag, tci)?;
            }
            Ok(())
        }
    }
}
