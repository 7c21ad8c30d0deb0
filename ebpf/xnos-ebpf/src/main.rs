//! The xnos datapath: one pipeline, run as XDP ingress on every switch port (or as TC
//! ingress where XDP cannot run), and a devmap egress program that finishes frames flooded
//! by XDP for each port.
//!
//! Ingress classifies the frame into a VLAN, learns its source MAC, routes frames sent to
//! the router MAC of a routed VLAN or port (route.rs), and either redirects a known
//! unicast frame (already tagged/untagged as the egress port wants it) or floods it.
//! Flooded frames are normalised to carry an 802.1Q tag with their VLAN; the egress program
//! attached to every `FLOOD_PORTS` entry then drops them on ports outside the VLAN and pops
//! the tag on ports where the VLAN is untagged. Flooding uses devmap broadcast with
//! BPF_F_EXCLUDE_INGRESS (kernel >= 5.15), so a frame never goes back out of its ingress port.
//! TC floods clone the frame to each member port instead (frame.rs).
#![no_std]
#![no_main]

mod fdb;
mod frame;
mod packet;
mod port;
mod route;
#[cfg_attr(
    not(feature = "stages"),
    expect(
        dead_code,
        reason = "the stages are only named where a bench build stops"
    )
)]
mod stage;
mod trace;
mod vlan;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use xnos_common::{
    DropReason, PORT_MODE_ROUTED, PortConf, TRACE_DROP, TRACE_FLOOD, TRACE_L2_UNICAST,
    TRACE_TO_KERNEL, TraceRecord,
};

use crate::{frame::Frame, packet::EthHdr, port::Stats, vlan::Tag};

/// Set in the "next version" build that the upgrade test installs over the normal one
/// (`cargo xtask test` builds it as `target/debug/xnosd-next`): its ingress programs differ
/// by an instruction, and its FDB map (copied over) and its unicast devmap (filled anew
/// from the ports) by their sizes, so that an upgrade to it swaps every program and
/// migrates maps, as a new release would.
pub(crate) const NEXT_BUILD: bool = option_env!("XNOS_EBPF_NEXT_BUILD").is_some();

/// The instruction by which the next build's ingress programs differ.
#[inline(always)]
fn next_build_mark() {
    if NEXT_BUILD {
        let mut mark = 0u32;
        // SAFETY: a write to a local.
        unsafe { core::ptr::write_volatile(&mut mark, 1) };
    }
}

#[xdp]
pub fn xnos_ingress(ctx: XdpContext) -> u32 {
    next_build_mark();
    // SAFETY: ctx.ctx is the xdp_md the kernel handed us.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    pipeline::<false, { stage::NONE }, _>(&ctx, ifindex)
}

/// The same pipeline at TC ingress (tcx or clsact), for ports whose driver cannot run it
/// as XDP.
#[classifier]
pub fn xnos_tc_ingress(ctx: TcContext) -> i32 {
    next_build_mark();
    if frame::tc_pull_headers(&ctx).is_err() {
        return <TcContext as Frame>::PASS as i32;
    }
    // SAFETY: reading a field of the __sk_buff the kernel handed us.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    pipeline::<false, { stage::NONE }, _>(&ctx, ifindex) as i32
}

/// The same pipeline for `xnos trace` (run only through BPF_PROG_TEST_RUN): it records its
/// decisions and changes nothing (no learning, no counters).
#[xdp]
pub fn xnos_trace(ctx: XdpContext) -> u32 {
    trace::record::<true>(|t| *t = TraceRecord::default());
    // SAFETY: ctx.ctx is the xdp_md the kernel handed us.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let action = pipeline::<true, { stage::NONE }, _>(&ctx, ifindex);
    trace::record::<true>(|t| t.action = action);
    action
}

/// The ingress pipeline; `STOP` is where a bench build ends it (stage.rs), `stage::NONE`
/// in every program xnosd loads.
#[inline(always)]
fn pipeline<const TRACE: bool, const STOP: u32, F: Frame>(ctx: &F, ifindex: u32) -> u32 {
    stage::stop_after!(STOP, ENTRY, ifindex, F::STOPPED);
    let Some(port) = port::get(ifindex) else {
        // Not a switch port of this instance: leave it to the kernel.
        trace::record::<TRACE>(|t| t.stage = TRACE_TO_KERNEL);
        return F::PASS;
    };
    stage::stop_after!(STOP, PORT_LOOKUP, (), F::STOPPED);
    let stats = Stats::of::<TRACE>(port);
    stats.rx(ctx.len());
    stage::stop_after!(STOP, RX_COUNTERS, (), F::STOPPED);
    match try_pipeline::<TRACE, STOP, F>(ctx, ifindex, port, &stats) {
        Ok(action) => action,
        Err(reason) => {
            stats.drop(reason);
            trace::record::<TRACE>(|t| {
                t.stage = TRACE_DROP;
                t.drop_reason = reason as u32 + 1;
            });
            F::DROP
        }
    }
}

#[inline(always)]
fn try_pipeline<const TRACE: bool, const STOP: u32, F: Frame>(
    ctx: &F,
    ifindex: u32,
    port: &PortConf,
    stats: &Stats,
) -> Result<u32, DropReason> {
    let eth: *const EthHdr = ctx.ptr_at(0).ok_or(DropReason::Malformed)?;
    // SAFETY: ptr_at checked that the whole header is inside the frame.
    let (dst, src) = unsafe { ((*eth).dst, (*eth).src) };
    let tag = ctx.tag()?;
    stage::stop_after!(
        STOP,
        PARSE,
        (dst, src, tag.map(|t| t.tci())),
        Ok(F::STOPPED)
    );
    if port.mode == PORT_MODE_ROUTED {
        // A routed port switches nothing: frames for the router MAC are routed, the rest
        // (ARP, ND, frames for other hosts) belong to the kernel's netdev of the port.
        return match route::iface(ifindex) {
            Some(iface) if tag.is_none() && iface.mac == dst => {
                route::forward::<TRACE, STOP, F>(ctx, tag, iface, stats)
            }
            _ => {
                stats.to_kernel();
                trace::record::<TRACE>(|t| t.stage = TRACE_TO_KERNEL);
                Ok(F::PASS)
            }
        };
    }
    let vid = vlan::classify(port, tag)?;
    trace::record::<TRACE>(|t| t.vlan = vid);

    if src[0] & 1 != 0 || src == [0; 6] {
        return Err(DropReason::InvalidSrcMac);
    }
    if packet::is_link_local(&dst) {
        // STP, LACP, LLDP...: a bridge must not forward them; the kernel may want them.
        stats.to_kernel();
        trace::record::<TRACE>(|t| t.stage = TRACE_TO_KERNEL);
        return Ok(F::PASS);
    }
    stage::stop_after!(STOP, VLAN_CLASSIFY, vid, Ok(F::STOPPED));
    if !TRACE {
        fdb::learn(ifindex, vid, src, stats);
    }
    stage::stop_after!(STOP, LEARN, (), Ok(F::STOPPED));

    if dst[0] & 1 == 0
        && let Some(iface) = route::svi(vid)
        && iface.mac == dst
    {
        stage::stop_after!(STOP, L3_INTERFACE, iface, Ok(F::STOPPED));
        return route::forward::<TRACE, STOP, F>(ctx, tag, iface, stats);
    }
    stage::stop_after!(STOP, L3_INTERFACE, (), Ok(F::STOPPED));
    if dst[0] & 1 == 0
        && let Some(entry) = fdb::lookup(vid, dst)
    {
        if entry.ifindex == ifindex {
            return Err(DropReason::SamePort);
        }
        stage::stop_after!(STOP, FDB_LOOKUP, (), Ok(F::STOPPED));
        let out = port::get(entry.ifindex).ok_or(DropReason::NoEgress)?;
        if !out.is_member(vid) {
            return Err(DropReason::NoEgress);
        }
        stage::stop_after!(STOP, EGRESS_PORT, out.pvid, Ok(F::STOPPED));
        vlan::rewrite(ctx, tag, vid, out.pvid == vid)?;
        stage::stop_after!(STOP, TAG_REWRITE, (), Ok(F::STOPPED));
        let action = ctx.redirect(entry.ifindex)?;
        stage::stop_after!(STOP, REDIRECT, action, Ok(F::STOPPED));
        Stats::of::<TRACE>(out).tx(ctx.len());
        trace::record::<TRACE>(|t| {
            t.stage = TRACE_L2_UNICAST;
            t.egress_ifindex = entry.ifindex;
            t.out_vlan = vid;
            t.untagged = u32::from(out.pvid == vid);
        });
        return Ok(action);
    }

    stats.flood();
    port::vlan_flooded::<TRACE>(vid);
    trace::record::<TRACE>(|t| {
        t.stage = TRACE_FLOOD;
        t.out_vlan = vid;
    });
    ctx.flood(ifindex, tag, vid)
}

/// Runs once per destination port of a frame flooded by XDP (devmap program, kernel >= 5.8).
#[xdp(map = "devmap")]
pub fn xnos_egress(ctx: XdpContext) -> u32 {
    // SAFETY: ctx.ctx is the xdp_md the kernel handed us.
    let ifindex = unsafe { (*ctx.ctx).egress_ifindex };
    let Some(port) = port::get(ifindex) else {
        return xdp_action::XDP_DROP;
    };
    // Ingress normalised every flooded frame to carry its VLAN tag.
    let Ok(Some(tag)) = Tag::parse(&ctx) else {
        return xdp_action::XDP_DROP;
    };
    let vid = tag.vid();
    if !port.is_member(vid) {
        // Outside the frame's VLAN: this port is simply not in the flood domain.
        return xdp_action::XDP_DROP;
    }
    if vlan::rewrite(&ctx, Some(tag), vid, port.pvid == vid).is_err() {
        return xdp_action::XDP_DROP;
    }
    Stats::of::<false>(port).tx(ctx.len());
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
