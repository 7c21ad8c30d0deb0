//! The xnos L2 datapath: XDP ingress on every switch port, and a devmap egress program
//! that finishes flooded frames for each port.
//!
//! Ingress classifies the frame into a VLAN, learns its source MAC, routes frames sent to
//! the router MAC of a routed VLAN or port (route.rs), and either redirects a known
//! unicast frame (already tagged/untagged as the egress port wants it) or floods it.
//! Flooded frames are normalised to carry an 802.1Q tag with their VLAN; the egress program
//! attached to every `FLOOD_PORTS` entry then drops them on ports outside the VLAN and pops
//! the tag on ports where the VLAN is untagged. Flooding uses devmap broadcast with
//! BPF_F_EXCLUDE_INGRESS (kernel >= 5.15), so a frame never goes back out of its ingress port.
#![no_std]
#![no_main]

mod bench;
mod fdb;
mod packet;
mod port;
mod route;
mod trace;
mod vlan;

use aya_ebpf::{
    bindings::{BPF_F_BROADCAST, BPF_F_EXCLUDE_INGRESS, xdp_action},
    macros::{map, xdp},
    maps::DevMapHash,
    programs::XdpContext,
};
use xnos_common::{
    DropReason, MAX_PORTS, PORT_MODE_ROUTED, PortConf, TRACE_DROP, TRACE_FLOOD, TRACE_L2_UNICAST,
    TRACE_TO_KERNEL, TraceRecord,
};

use crate::{
    packet::{EthHdr, ptr_at},
    port::Stats,
    vlan::Tag,
};

/// Known-unicast egress: frames leave exactly as the ingress program wrote them.
#[map]
pub(crate) static TX_PORTS: DevMapHash = DevMapHash::with_max_entries(MAX_PORTS, 0);

/// Flood targets: every port, each entry running `xnos_egress`.
#[map]
static FLOOD_PORTS: DevMapHash = DevMapHash::with_max_entries(MAX_PORTS, 0);

#[xdp]
pub fn xnos_ingress(ctx: XdpContext) -> u32 {
    ingress::<false>(&ctx)
}

/// The same pipeline for `xnos trace` (run only through BPF_PROG_TEST_RUN): it records its
/// decisions and changes nothing (no learning, no counters).
#[xdp]
pub fn xnos_trace(ctx: XdpContext) -> u32 {
    trace::record::<true>(|t| *t = TraceRecord::default());
    let action = ingress::<true>(&ctx);
    trace::record::<true>(|t| t.action = action);
    action
}

#[inline(always)]
fn ingress<const TRACE: bool>(ctx: &XdpContext) -> u32 {
    // SAFETY: ctx.ctx is the xdp_md the kernel handed us.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let Some(port) = port::get(ifindex) else {
        // Not a switch port of this instance: leave it to the kernel.
        trace::record::<TRACE>(|t| t.stage = TRACE_TO_KERNEL);
        return xdp_action::XDP_PASS;
    };
    let stats = Stats::of::<TRACE>(port);
    stats.rx(ctx.data_end() - ctx.data());
    match try_ingress::<TRACE>(ctx, ifindex, port, &stats) {
        Ok(action) => action,
        Err(reason) => {
            stats.drop(reason);
            trace::record::<TRACE>(|t| {
                t.stage = TRACE_DROP;
                t.drop_reason = reason as u32 + 1;
            });
            xdp_action::XDP_DROP
        }
    }
}

#[inline(always)]
fn try_ingress<const TRACE: bool>(
    ctx: &XdpContext,
    ifindex: u32,
    port: &PortConf,
    stats: &Stats,
) -> Result<u32, DropReason> {
    let eth: *const EthHdr = ptr_at(ctx, 0).ok_or(DropReason::Malformed)?;
    // SAFETY: ptr_at checked that the whole header is inside the frame.
    let (dst, src) = unsafe { ((*eth).dst, (*eth).src) };
    let tag = Tag::parse(ctx)?;
    if port.mode == PORT_MODE_ROUTED {
        // A routed port switches nothing: frames for the router MAC are routed, the rest
        // (ARP, ND, frames for other hosts) belong to the kernel's netdev of the port.
        return match route::iface(ifindex) {
            Some(iface) if tag.is_none() && iface.mac == dst => {
                route::forward::<TRACE>(ctx, tag, iface)
            }
            _ => {
                stats.punt();
                trace::record::<TRACE>(|t| t.stage = TRACE_TO_KERNEL);
                Ok(xdp_action::XDP_PASS)
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
        stats.punt();
        trace::record::<TRACE>(|t| t.stage = TRACE_TO_KERNEL);
        return Ok(xdp_action::XDP_PASS);
    }
    if !TRACE {
        fdb::learn(ifindex, vid, src, stats);
    }

    if dst[0] & 1 == 0
        && let Some(iface) = route::svi(vid)
        && iface.mac == dst
    {
        return route::forward::<TRACE>(ctx, tag, iface);
    }
    if dst[0] & 1 == 0
        && let Some(entry) = fdb::lookup(vid, dst)
    {
        if entry.ifindex == ifindex {
            return Err(DropReason::SamePort);
        }
        let out = port::get(entry.ifindex).ok_or(DropReason::NoEgress)?;
        if !out.is_member(vid) {
            return Err(DropReason::NoEgress);
        }
        vlan::rewrite(ctx, tag, vid, out.pvid == vid)?;
        let action = TX_PORTS
            .redirect(entry.ifindex, 0)
            .map_err(|_| DropReason::NoEgress)?;
        Stats::of::<TRACE>(out).tx(ctx.data_end() - ctx.data());
        trace::record::<TRACE>(|t| {
            t.stage = TRACE_L2_UNICAST;
            t.egress_ifindex = entry.ifindex;
            t.out_vlan = vid;
            t.untagged = u32::from(out.pvid == vid);
        });
        return Ok(action);
    }

    vlan::rewrite(ctx, tag, vid, false)?;
    stats.flood();
    port::vlan_flooded::<TRACE>(vid);
    trace::record::<TRACE>(|t| {
        t.stage = TRACE_FLOOD;
        t.out_vlan = vid;
    });
    Ok(FLOOD_PORTS
        .redirect(0, u64::from(BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS))
        .unwrap_or(xdp_action::XDP_DROP))
}

/// Runs once per destination port of a flooded frame (devmap program, kernel >= 5.8).
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
    Stats::of::<false>(port).tx(ctx.data_end() - ctx.data());
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
