//! What the pipeline needs from a frame, for each kind of program that runs it.
//!
//! The whole L2/L3 pipeline (main.rs `pipeline`, vlan.rs, route.rs) is written once, over
//! `Frame`; XDP (`XdpContext`, the fast path) and TC (`TcContext`, for ports whose driver
//! has no usable XDP) differ only in the few operations here: where the 802.1Q tag lives,
//! how a tag is pushed or popped, how a frame is redirected, and how a flood is fanned out.

use aya_ebpf::cty::c_void;
use aya_ebpf::{
    bindings::{
        __sk_buff, BPF_F_BROADCAST, BPF_F_EXCLUDE_INGRESS, BPF_F_RECOMPUTE_CSUM, TC_ACT_OK,
        TC_ACT_REDIRECT, TC_ACT_SHOT, xdp_action,
    },
    helpers::{
        bpf_clone_redirect, bpf_loop, bpf_redirect, bpf_skb_change_head, bpf_skb_change_tail,
        bpf_skb_pull_data, bpf_skb_store_bytes, bpf_skb_vlan_pop, bpf_skb_vlan_push,
        bpf_xdp_adjust_head, bpf_xdp_adjust_tail,
    },
    macros::map,
    maps::{Array, DevMapHash},
    programs::{TcContext, XdpContext},
};
use xnos_common::{DropReason, MAX_PORTS};

use crate::{
    packet::{ETH_P_8021Q, MACS_LEN, VLAN_HLEN},
    port::{self, Stats},
    vlan::{self, Tag},
};

/// Known-unicast egress for XDP: frames leave exactly as the ingress program wrote them.
#[map]
pub(crate) static TX_PORTS: DevMapHash = DevMapHash::with_max_entries(
    if crate::NEXT_BUILD {
        MAX_PORTS + 1
    } else {
        MAX_PORTS
    },
    0,
);

/// XDP flood targets: every port, each entry running `xnos_egress`.
#[map]
pub(crate) static FLOOD_PORTS: DevMapHash = DevMapHash::with_max_entries(MAX_PORTS, 0);

/// For TC floods: the ifindex of the port in each stats slot (0: free slot).
#[map]
static PORT_SLOTS: Array<u32> = Array::with_max_entries(MAX_PORTS, 0);

/// For TC floods: one past the highest slot in use.
#[map]
static PORT_SLOTS_END: Array<u32> = Array::with_max_entries(1, 0);

pub trait Frame {
    /// The verdicts of this program type.
    const PASS: u32;
    const DROP: u32;
    /// What a bench build's pipeline returns where it stops (stage.rs): a verdict the
    /// pipeline itself never gives.
    #[cfg(feature = "stages")]
    const STOPPED: u32;

    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    /// Length of the whole frame (for counters).
    fn len(&self) -> usize;
    /// Bytes of the frame in its buffer: `len` without a tag the skb holds outside it.
    fn buffer_len(&self) -> usize;
    /// Cut `excess` bytes off the end of the frame. False if that failed. Pointers into
    /// the frame are invalid afterwards.
    fn trim(&self, excess: usize) -> bool;
    /// The segment size of a GSO packet (TC: an skb GRO merged); 0 for a single packet.
    fn gso_size(&self) -> u32;
    /// The frame's 802.1Q tag, wherever this program type keeps it.
    fn tag(&self) -> Result<Option<Tag>, DropReason>;
    /// Give an untagged frame the tag `tci`.
    fn push_tag(&self, tci: u16) -> Result<(), DropReason>;
    /// Remove `tag` from the frame.
    fn pop_tag(&self, tag: Tag) -> Result<(), DropReason>;
    /// Change the TCI of `tag`.
    fn set_tci(&self, tag: Tag, tci: u16) -> Result<(), DropReason>;
    /// Send the frame, as it is now, out of port `ifindex`.
    fn redirect(&self, ifindex: u32) -> Result<u32, DropReason>;
    /// Write one byte of the L3 header that no header checksum covers (the IPv6 hop
    /// limit): TC must keep the skb's packet checksum (CHECKSUM_COMPLETE) right.
    /// Pointers into the frame are invalid afterwards.
    fn set_uncovered_byte(&self, offset: usize, value: u8) -> Result<(), DropReason>;
    /// Send the frame (carrying `tag`) to every other port of VLAN `vid`, each getting the
    /// tagging it wants. Leaves the frame tagged with `vid`.
    fn flood(&self, ingress: u32, tag: Option<Tag>, vid: u16) -> Result<u32, DropReason>;

    /// A pointer to a `T` at `offset` in the frame, or `None` if the frame is too short.
    /// Every access to frame bytes goes through here so that the verifier sees the check.
    #[inline(always)]
    fn ptr_at<T>(&self, offset: usize) -> Option<*mut T> {
        let start = self.data();
        if start + offset + core::mem::size_of::<T>() > self.data_end() {
            return None;
        }
        Some((start + offset) as *mut T)
    }
}

#[inline(always)]
fn read_macs<F: Frame>(f: &F) -> Result<[u8; MACS_LEN], DropReason> {
    let macs: *const [u8; MACS_LEN] = f.ptr_at(0).ok_or(DropReason::TagRewrite)?;
    // SAFETY: bounds checked by ptr_at.
    Ok(unsafe { *macs })
}

/// Write MACs and a tag into the first 16 bytes of a frame that has room for them.
#[inline(always)]
fn write_tagged_header<F: Frame>(f: &F, macs: &[u8; MACS_LEN], tci: u16) -> Result<(), DropReason> {
    let hdr: *mut [u8; MACS_LEN + VLAN_HLEN] = f.ptr_at(0).ok_or(DropReason::TagRewrite)?;
    let [p0, p1] = ETH_P_8021Q.to_be_bytes();
    let [t0, t1] = tci.to_be_bytes();
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        let hdr = &mut *hdr;
        hdr[..MACS_LEN].copy_from_slice(macs);
        hdr[MACS_LEN..].copy_from_slice(&[p0, p1, t0, t1]);
    }
    Ok(())
}

/// Rewrite the TCI of a tag that is in the frame's bytes.
#[inline(always)]
fn write_tci<F: Frame>(f: &F, tci: u16) -> Result<(), DropReason> {
    let at: *mut [u8; 2] = f.ptr_at(MACS_LEN + 2).ok_or(DropReason::TagRewrite)?;
    // SAFETY: bounds checked by ptr_at.
    unsafe { *at = tci.to_be_bytes() };
    Ok(())
}

impl Frame for XdpContext {
    const PASS: u32 = xdp_action::XDP_PASS;

    #[inline(always)]
    fn set_uncovered_byte(&self, offset: usize, value: u8) -> Result<(), DropReason> {
        let at: *mut u8 = self.ptr_at(offset).ok_or(DropReason::Malformed)?;
        // SAFETY: bounds checked by ptr_at.
        unsafe { *at = value };
        Ok(())
    }
    const DROP: u32 = xdp_action::XDP_DROP;
    #[cfg(feature = "stages")]
    const STOPPED: u32 = xdp_action::XDP_TX;

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
        self.data_end() - self.data()
    }

    #[inline(always)]
    fn buffer_len(&self) -> usize {
        self.len()
    }

    #[inline(always)]
    fn trim(&self, excess: usize) -> bool {
        // SAFETY: the helper checks the bounds itself; pointers are re-derived afterwards.
        unsafe { bpf_xdp_adjust_tail(self.ctx, -(excess as i32)) == 0 }
    }

    #[inline(always)]
    fn gso_size(&self) -> u32 {
        0
    }

    #[inline(always)]
    fn tag(&self) -> Result<Option<Tag>, DropReason> {
        Tag::parse(self)
    }

    #[inline(always)]
    fn push_tag(&self, tci: u16) -> Result<(), DropReason> {
        let macs = read_macs(self)?;
        xdp_adjust_head(self, -(VLAN_HLEN as i32))?;
        write_tagged_header(self, &macs, tci)
    }

    #[inline(always)]
    fn pop_tag(&self, _tag: Tag) -> Result<(), DropReason> {
        let macs = read_macs(self)?;
        xdp_adjust_head(self, VLAN_HLEN as i32)?;
        let hdr: *mut [u8; MACS_LEN] = self.ptr_at(0).ok_or(DropReason::TagRewrite)?;
        // SAFETY: bounds checked by ptr_at.
        unsafe { *hdr = macs };
        Ok(())
    }

    #[inline(always)]
    fn set_tci(&self, _tag: Tag, tci: u16) -> Result<(), DropReason> {
        write_tci(self, tci)
    }

    #[inline(always)]
    fn redirect(&self, ifindex: u32) -> Result<u32, DropReason> {
        TX_PORTS
            .redirect(ifindex, 0)
            .map_err(|_| DropReason::NoEgress)
    }

    /// Normalise the frame to carry its VLAN tag and broadcast it through the devmap; the
    /// devmap program `xnos_egress` then filters by VLAN and pops the tag per port.
    #[inline(always)]
    fn flood(&self, _ingress: u32, tag: Option<Tag>, vid: u16) -> Result<u32, DropReason> {
        vlan::rewrite(self, tag, vid, false)?;
        Ok(FLOOD_PORTS
            .redirect(0, u64::from(BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS))
            .unwrap_or(xdp_action::XDP_DROP))
    }
}

#[inline(always)]
fn xdp_adjust_head(ctx: &XdpContext, delta: i32) -> Result<(), DropReason> {
    // SAFETY: the helper checks headroom itself; packet pointers are re-derived afterwards.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) } != 0 {
        return Err(DropReason::TagRewrite);
    }
    Ok(())
}

/// Bytes of a frame the TC pipeline reads directly: Ethernet + tag + IPv6 + ports, and
/// the data offset of a TCP header (for the segment size of GSO packets).
const TC_PULL_LEN: u32 = 72;

/// Make the headers the pipeline reads directly accessible (an skb's head may hold less).
#[inline(always)]
pub fn tc_pull_headers(ctx: &TcContext) -> Result<(), DropReason> {
    let want = ctx.len().min(TC_PULL_LEN);
    if (ctx.data_end() - ctx.data()) as u32 >= want {
        return Ok(());
    }
    // SAFETY: plain helper call on our own skb.
    if unsafe { bpf_skb_pull_data(ctx.skb.skb, want) } != 0 {
        return Err(DropReason::Malformed);
    }
    Ok(())
}

impl Frame for TcContext {
    const PASS: u32 = TC_ACT_OK as u32;

    #[inline(always)]
    fn set_uncovered_byte(&self, offset: usize, value: u8) -> Result<(), DropReason> {
        // SAFETY: the helper bounds-checks; we pass a pointer to a local byte.
        let ret = unsafe {
            bpf_skb_store_bytes(
                self.skb.skb,
                offset as u32,
                &value as *const u8 as *const c_void,
                1,
                u64::from(BPF_F_RECOMPUTE_CSUM),
            )
        };
        if ret != 0 {
            return Err(DropReason::Malformed);
        }
        Ok(())
    }
    const DROP: u32 = TC_ACT_SHOT as u32;
    #[cfg(feature = "stages")]
    const STOPPED: u32 = aya_ebpf::bindings::TC_ACT_PIPE as u32;

    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }

    /// Counted as on the wire: with the tag the kernel took out of the bytes.
    #[inline(always)]
    fn len(&self) -> usize {
        // SAFETY: reading a field of the __sk_buff the kernel handed us.
        let tagged = unsafe { (*self.skb.skb).vlan_present } != 0;
        TcContext::len(self) as usize + if tagged { VLAN_HLEN } else { 0 }
    }

    #[inline(always)]
    fn buffer_len(&self) -> usize {
        TcContext::len(self) as usize
    }

    /// `bpf_skb_change_tail` trims like the kernel's own `pskb_trim_rcsum`: a packet
    /// checksum (CHECKSUM_COMPLETE) that covered the cut bytes is dropped.
    #[inline(always)]
    fn trim(&self, excess: usize) -> bool {
        let len = TcContext::len(self) - excess as u32;
        // SAFETY: plain helper call on our own skb; pointers are re-derived afterwards.
        unsafe { bpf_skb_change_tail(self.skb.skb, len, 0) == 0 }
    }

    #[inline(always)]
    fn gso_size(&self) -> u32 {
        // SAFETY: reading a field of the __sk_buff the kernel handed us.
        unsafe { (*self.skb.skb).gso_size }
    }

    /// The kernel moves a received frame's outer tag out of its bytes into the skb
    /// (`vlan_tci`) before TC runs; frames that still carry it in their bytes (injected ones,
    /// BPF_PROG_TEST_RUN) are parsed like XDP's.
    #[inline(always)]
    fn tag(&self) -> Result<Option<Tag>, DropReason> {
        // SAFETY: reading fields of the __sk_buff the kernel handed us.
        let (present, tci, proto) = unsafe {
            let skb = &*self.skb.skb;
            (skb.vlan_present, skb.vlan_tci, skb.vlan_proto)
        };
        if present == 0 {
            return Tag::parse(self);
        }
        if proto as u16 != ETH_P_8021Q.to_be() {
            // An 802.1ad (QinQ) outer tag: XDP sees it as an unknown EtherType, and so do we.
            return Ok(None);
        }
        if let Some(inner) = self.ptr_at::<[u8; 2]>(MACS_LEN) {
            // SAFETY: bounds checked by ptr_at.
            vlan::whole_inner_tag(self, u16::from_be_bytes(unsafe { *inner }), MACS_LEN)?;
        }
        Ok(Some(Tag::outside(tci as u16)))
    }

    /// In the frame's bytes like XDP, except for GSO packets, whose tag must stay in the skb
    /// for segmentation to find the headers, and frames whose skb already holds an (802.1ad)
    /// tag, which must go outside the new one: the helper moves it into the bytes.
    #[inline(always)]
    fn push_tag(&self, tci: u16) -> Result<(), DropReason> {
        // SAFETY: reading fields of the __sk_buff the kernel handed us.
        if unsafe { (*self.skb.skb).gso_size != 0 || (*self.skb.skb).vlan_present != 0 } {
            // SAFETY: plain helper call on our own skb.
            return match unsafe { bpf_skb_vlan_push(self.skb.skb, ETH_P_8021Q.to_be(), tci) } {
                0 => Ok(()),
                _ => Err(DropReason::TagRewrite),
            };
        }
        let macs = read_macs(self)?;
        // SAFETY: plain helper call on our own skb; pointers are re-derived afterwards.
        if unsafe { bpf_skb_change_head(self.skb.skb, VLAN_HLEN as u32, 0) } != 0 {
            return Err(DropReason::TagRewrite);
        }
        write_tagged_header(self, &macs, tci)
    }

    /// `bpf_skb_vlan_pop` removes the skb's tag, or the tag in the bytes of a frame the kernel
    /// parsed as 802.1Q.
    #[inline(always)]
    fn pop_tag(&self, _tag: Tag) -> Result<(), DropReason> {
        // SAFETY: plain helper call on our own skb.
        match unsafe { bpf_skb_vlan_pop(self.skb.skb) } {
            0 => Ok(()),
            _ => Err(DropReason::TagRewrite),
        }
    }

    #[inline(always)]
    fn set_tci(&self, tag: Tag, tci: u16) -> Result<(), DropReason> {
        if tag.in_frame() {
            return write_tci(self, tci);
        }
        // SAFETY: plain helper calls on our own skb.
        let ok = unsafe {
            bpf_skb_vlan_pop(self.skb.skb) == 0
                && bpf_skb_vlan_push(self.skb.skb, ETH_P_8021Q.to_be(), tci) == 0
        };
        if ok {
            Ok(())
        } else {
            Err(DropReason::TagRewrite)
        }
    }

    #[inline(always)]
    fn redirect(&self, ifindex: u32) -> Result<u32, DropReason> {
        // SAFETY: plain helper call.
        match unsafe { bpf_redirect(ifindex, 0) } as i32 {
            TC_ACT_REDIRECT => Ok(TC_ACT_REDIRECT as u32),
            _ => Err(DropReason::NoEgress),
        }
    }

    /// A clone of the frame out of every member port: first to the ports that want it as it
    /// is now (tagged or not), then, with the tag changed, to the others. The original is
    /// then dropped: tcx knows no "stolen" verdict (it would pass the frame to the stack).
    #[inline(always)]
    fn flood(&self, ingress: u32, tag: Option<Tag>, vid: u16) -> Result<u32, DropReason> {
        match tag {
            None => {
                tc_clone_to_members(self, ingress, vid, true);
                self.push_tag(vid)?;
                tc_clone_to_members(self, ingress, vid, false);
            }
            Some(tag) => {
                let tci = (tag.tci() & 0xf000) | vid;
                if tci != tag.tci() {
                    self.set_tci(tag, tci)?;
                }
                tc_clone_to_members(self, ingress, vid, false);
                self.pop_tag(tag)?;
                tc_clone_to_members(self, ingress, vid, true);
                self.push_tag(tci)?;
            }
        }
        Ok(TC_ACT_SHOT as u32)
    }
}

/// What `tc_clone_one` needs, on the stack of its caller (bpf_loop passes a pointer).
#[repr(C)]
struct CloneLoop {
    skb: *mut __sk_buff,
    ingress: u32,
    len: u32,
    vid: u16,
    untagged: u16,
}

/// Clone the frame out of every port of VLAN `vid` but `ingress` where the VLAN is
/// `untagged` (or tagged). A bpf_loop (kernel >= 5.17): the verifier checks the body once,
/// whatever the number of ports.
#[inline(always)]
fn tc_clone_to_members(ctx: &TcContext, ingress: u32, vid: u16, untagged: bool) {
    let end = PORT_SLOTS_END.get(0).copied().unwrap_or(0).min(MAX_PORTS);
    let mut state = CloneLoop {
        skb: ctx.skb.skb,
        ingress,
        len: TcContext::len(ctx),
        vid,
        untagged: u16::from(untagged),
    };
    // SAFETY: the callback only reads `state`, which outlives the call.
    unsafe {
        bpf_loop(
            end,
            tc_clone_one as *mut c_void,
            &mut state as *mut CloneLoop as *mut c_void,
            0,
        );
    }
}

/// One turn of `tc_clone_to_members`: the port in stats slot `slot`. Returns 0 to go on.
extern "C" fn tc_clone_one(slot: u64, state: *mut c_void) -> i64 {
    // SAFETY: bpf_loop hands back the pointer tc_clone_to_members gave it.
    let state = unsafe { &*(state as *const CloneLoop) };
    let Some(&ifindex) = PORT_SLOTS.get(slot as u32) else {
        return 0;
    };
    if ifindex == 0 || ifindex == state.ingress {
        return 0;
    }
    let Some(port) = port::get(ifindex) else {
        return 0;
    };
    if !port.is_member(state.vid) || u16::from(port.pvid == state.vid) != state.untagged {
        return 0;
    }
    // SAFETY: plain helper call on the skb of the running program.
    if unsafe { bpf_clone_redirect(state.skb, ifindex, 0) } == 0 {
        Stats::of::<false>(port).tx(state.len as usize);
    }
    0
}
