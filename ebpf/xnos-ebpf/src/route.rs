//! L3: route IPv4 and IPv6 packets sent to the router MAC, from LPM tables, ECMP nexthop
//! groups and the neighbour table; punt to the kernel what the fast path does not handle.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
};
use xnos_common::{
    DropReason, L3Iface, L3Stats, MAX_ECMP, MAX_L3_IFACES, NEIGH_SIZE, NEXTHOP_CONNECTED, NHG_SIZE,
    NeighEntry, NeighKey, NexthopGroup, PuntReason, ROUTE_FORWARD, ROUTE_LOCAL, ROUTES_SIZE,
    RouteEntry,
};

use crate::{fdb, frame::Frame, port, port::Stats, stage, trace, vlan, vlan::Tag};

/// L3 interfaces by the ifindex of their kernel netdev.
#[map]
static L3_IFACES: HashMap<u32, L3Iface> = HashMap::with_max_entries(MAX_L3_IFACES, 0);

/// VLAN ID -> the VLAN's SVI (all zero: the VLAN is not routed). An array, not a lookup
/// through L3_IFACES: every unicast frame asks.
#[map]
static VLAN_L3: Array<L3Iface> = Array::with_max_entries(4096, 0);

#[map]
static ROUTES4: LpmTrie<[u8; 4], RouteEntry> =
    LpmTrie::with_max_entries(ROUTES_SIZE, BPF_F_NO_PREALLOC);

#[map]
static ROUTES6: LpmTrie<[u8; 16], RouteEntry> =
    LpmTrie::with_max_entries(ROUTES_SIZE, BPF_F_NO_PREALLOC);

#[map]
static NHGS: HashMap<u32, NexthopGroup> = HashMap::with_max_entries(NHG_SIZE, 0);

#[map]
static NEIGHS: HashMap<NeighKey, NeighEntry> = HashMap::with_max_entries(NEIGH_SIZE, 0);

#[map]
static L3_STATS: PerCpuArray<L3Stats> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU token bucket for punts: [tokens, last refill ns].
#[map]
static PUNT_BUDGET: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

/// Punts per second and CPU, and the burst allowed above that rate.
const PUNT_RATE: u64 = 20_000;
const PUNT_BURST: u64 = 2_000;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

#[repr(C)]
struct Ipv4Hdr {
    vihl: u8,
    tos: u8,
    len: [u8; 2],
    id: [u8; 2],
    frag: [u8; 2],
    ttl: u8,
    proto: u8,
    check: [u8; 2],
    src: [u8; 4],
    dst: [u8; 4],
}

#[repr(C)]
struct Ipv6Hdr {
    vtc_flow: [u8; 4],
    payload_len: [u8; 2],
    next_header: u8,
    hop_limit: u8,
    src: [u8; 16],
    dst: [u8; 16],
}

/// The SVI of VLAN `vid`, if the VLAN is routed.
#[inline(always)]
pub fn svi(vid: u16) -> Option<&'static L3Iface> {
    let iface = VLAN_L3.get(u32::from(vid & 0xfff))?;
    if iface.port_ifindex == 0 {
        return None;
    }
    Some(iface)
}

#[inline(always)]
pub fn iface(ifindex: u32) -> Option<&'static L3Iface> {
    // SAFETY: see port::get.
    unsafe { L3_IFACES.get(&ifindex) }
}

#[inline(always)]
fn l3_stats<const TRACE: bool>(f: impl FnOnce(&mut L3Stats)) {
    if TRACE {
        return;
    }
    if let Some(stats) = L3_STATS.get_ptr_mut(0) {
        // SAFETY: per-CPU value.
        f(unsafe { &mut *stats });
    }
}

/// Whether this CPU may punt one more packet now.
#[inline(always)]
fn punt_allowed() -> bool {
    let Some(bucket) = PUNT_BUDGET.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU value; plain helper call.
    let (bucket, now) = unsafe { (&mut *bucket, bpf_ktime_get_ns()) };
    let elapsed = now.saturating_sub(bucket[1]);
    let refill = elapsed.min(1_000_000_000) * PUNT_RATE / 1_000_000_000;
    if refill > 0 {
        bucket[0] = (bucket[0] + refill).min(PUNT_BURST);
        bucket[1] = now;
    }
    if bucket[0] == 0 {
        return false;
    }
    bucket[0] -= 1;
    true
}

/// Hand the packet to the kernel's netdev of `iface`: an SVI's packets go (untagged)
/// through its internal port, a routed port's straight up its own stack. Counted on
/// `stats`, the ingress port's counters the pipeline already holds (no second lookup).
#[inline(always)]
pub fn punt<const TRACE: bool, F: Frame>(
    ctx: &F,
    tag: Option<Tag>,
    iface: &L3Iface,
    stats: &Stats,
    reason: PuntReason,
) -> Result<u32, DropReason> {
    // SAFETY: reading a local; keeps the index check the verifier needs (see Stats::drop).
    let index = unsafe { core::ptr::read_volatile(&(reason as u32)) } as usize;
    trace::record::<TRACE>(|t| {
        t.stage = xnos_common::TRACE_PUNT;
        t.punt_reason = reason as u32 + 1;
        t.egress_ifindex = iface.port_ifindex;
        t.out_vlan = iface.vlan;
        t.untagged = 1;
    });
    if !TRACE && !punt_allowed() {
        l3_stats::<TRACE>(|s| s.punts_rate_limited += 1);
        return Ok(F::DROP);
    }
    l3_stats::<TRACE>(|s| {
        if let Some(count) = s.punts.get_mut(index) {
            *count += 1;
        }
    });
    stats.punted();
    if iface.vlan == 0 {
        return Ok(F::PASS);
    }
    vlan::rewrite(ctx, tag, iface.vlan, true)?;
    if let Some(port) = port::get(iface.port_ifindex) {
        Stats::of::<TRACE>(port).tx(ctx.len());
    }
    ctx.redirect(iface.port_ifindex)
}

/// Route a frame that arrived for the router MAC of `iface`; `STOP` as in main.rs
/// `pipeline`.
#[inline(always)]
pub fn forward<const TRACE: bool, const STOP: u32, F: Frame>(
    ctx: &F,
    tag: Option<Tag>,
    iface: &L3Iface,
    stats: &Stats,
) -> Result<u32, DropReason> {
    // Two copies with constant offsets keep every packet access simple for the verifier.
    if tag.is_some_and(|t| t.in_frame()) {
        forward_at::<18, TRACE, STOP, F>(ctx, tag, iface, stats)
    } else {
        forward_at::<14, TRACE, STOP, F>(ctx, tag, iface, stats)
    }
}

#[inline(always)]
fn forward_at<const L3: usize, const TRACE: bool, const STOP: u32, F: Frame>(
    ctx: &F,
    tag: Option<Tag>,
    iface: &L3Iface,
    stats: &Stats,
) -> Result<u32, DropReason> {
    let proto: *const [u8; 2] = ctx.ptr_at(L3 - 2).ok_or(DropReason::Malformed)?;
    // SAFETY: bounds checked by ptr_at.
    match u16::from_be_bytes(unsafe { *proto }) {
        ETH_P_IP => ipv4::<L3, TRACE, STOP, F>(ctx, tag, iface, stats),
        ETH_P_IPV6 => ipv6::<L3, TRACE, STOP, F>(ctx, tag, iface, stats),
        _ => punt::<TRACE, F>(ctx, tag, iface, stats, PuntReason::Unsupported),
    }
}

/// Murmur3's finaliser: spreads every input bit over the output.
#[inline(always)]
fn mix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The flow hash for ECMP: addresses, protocol and (for TCP/UDP) ports.
#[inline(always)]
fn flow_hash(src: u32, dst: u32, proto: u8, ports: u32) -> u32 {
    mix(src ^ mix(dst ^ mix(ports ^ u32::from(proto))))
}

/// The TCP/UDP ports at `offset` as one word, or 0.
#[inline(always)]
fn ports<F: Frame>(ctx: &F, offset: usize, proto: u8) -> u32 {
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return 0;
    }
    match ctx.ptr_at::<[u8; 4]>(offset) {
        // SAFETY: bounds checked by ptr_at.
        Some(p) => u32::from_be_bytes(unsafe { *p }),
        None => 0,
    }
}

/// Whether the IPv4 header at `L3` (20 bytes, no options) sums to 0xffff, its checksum
/// included (RFC 1071). Ten 16-bit loads: IP headers sit at even offsets in the frame.
#[inline(always)]
fn checksum_ok<const L3: usize, F: Frame>(ctx: &F) -> bool {
    let Some(words) = ctx.ptr_at::<[u16; 10]>(L3) else {
        return false;
    };
    // SAFETY: bounds checked by ptr_at; the header starts at an even offset.
    let words = unsafe { &*words };
    let mut sum = 0u32;
    for word in words {
        sum += u32::from(*word);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum == 0xffff
}

/// Whether a packet of `len` bytes from L3 on, or each segment of a GSO packet, fits
/// `mtu` (0: unknown, not checked), as the kernel decides in ip_exceeds_mtu and
/// ip6_pkt_too_big: a GSO packet is judged by its segments (skb_gso_validate_network_len:
/// IP header + TCP or UDP header + segment size).
#[inline(always)]
fn fits<F: Frame>(ctx: &F, len: usize, mtu: u16, l4: usize, ip_header: usize, proto: u8) -> bool {
    let mtu = usize::from(mtu);
    if mtu == 0 || len <= mtu {
        return true;
    }
    let gso = ctx.gso_size() as usize;
    if gso == 0 {
        return false;
    }
    let l4_header = match proto {
        IPPROTO_UDP => 8,
        IPPROTO_TCP => match ctx.ptr_at::<u8>(l4 + 12) {
            // SAFETY: bounds checked by ptr_at.
            Some(offset) => usize::from(unsafe { *offset } >> 4) * 4,
            None => return false,
        },
        // Another header (an IPv6 extension header, say) would have to be walked to size
        // the segments: the kernel does that (skb_gso_validate_network_len).
        _ => return false,
    };
    ip_header + l4_header + gso <= mtu
}

/// Where a routed packet leaves: (port ifindex, VLAN, leaves untagged).
#[inline(always)]
fn egress(out: &L3Iface, mac: [u8; 6]) -> Result<(u32, u16, bool), PuntReason> {
    if out.vlan == 0 {
        return Ok((out.port_ifindex, 0, true));
    }
    let entry = fdb::lookup(out.vlan, mac).ok_or(PuntReason::FdbMiss)?;
    let port = port::get(entry.ifindex).ok_or(PuntReason::FdbMiss)?;
    if !port.is_member(out.vlan) {
        return Err(PuntReason::FdbMiss);
    }
    Ok((entry.ifindex, out.vlan, port.pvid == out.vlan))
}

/// The nexthop group of a route the fast path forwards, or why it does not.
#[inline(always)]
fn group<const TRACE: bool>(route: &RouteEntry) -> Result<&'static NexthopGroup, PuntReason> {
    trace::record::<TRACE>(|t| {
        t.route_kind = route.kind;
        t.nhg = route.nhg;
    });
    if route.kind == ROUTE_LOCAL {
        return Err(PuntReason::ToSelf);
    }
    if route.kind != ROUTE_FORWARD {
        return Err(PuntReason::Unsupported);
    }
    // SAFETY: see port::get.
    let group = unsafe { NHGS.get(&route.nhg) }.ok_or(PuntReason::NoRoute)?;
    if group.count == 0 {
        return Err(PuntReason::NoRoute);
    }
    Ok(group)
}

/// Pick the nexthop of `group` for `hash` (computed only when the group has a choice),
/// find its MAC, and where the packet leaves.
#[inline(always)]
fn resolve<const TRACE: bool, const STOP: u32>(
    group: &'static NexthopGroup,
    hash: u32,
    dst: &[u8; 16],
) -> Result<([u8; 6], &'static L3Iface, (u32, u16, bool)), PuntReason> {
    let index = if group.count == 1 {
        0
    } else {
        (hash % group.count) as usize
    };
    let nh = group
        .nexthops
        .get(index & (MAX_ECMP - 1))
        .ok_or(PuntReason::NoRoute)?;
    trace::record::<TRACE>(|t| {
        t.nexthop_index = index as u32;
        t.nexthop_ifindex = nh.ifindex;
    });
    let key = NeighKey {
        ifindex: nh.ifindex,
        addr: if nh.flags & NEXTHOP_CONNECTED != 0 {
            *dst
        } else {
            nh.gateway
        },
    };
    // SAFETY: see port::get.
    let neigh = unsafe { NEIGHS.get(&key) }.ok_or(PuntReason::NoNeighbor)?;
    trace::record::<TRACE>(|t| t.neigh_mac = neigh.mac);
    // Without the egress port: the caller stops as soon as this returns.
    stage::stop_after!(STOP, NEIGHBOUR, (), Ok((neigh.mac, &nh.out, (0, 0, true))));
    let egress = egress(&nh.out, neigh.mac)?;
    Ok((neigh.mac, &nh.out, egress))
}

/// Rewrite the Ethernet header for the next hop, set the tag the egress port wants, and
/// redirect.
#[inline(always)]
fn transmit<const TRACE: bool, const STOP: u32, F: Frame>(
    ctx: &F,
    tag: Option<Tag>,
    mac: [u8; 6],
    out: &L3Iface,
    (egress_ifindex, vid, untagged): (u32, u16, bool),
) -> Result<u32, DropReason> {
    let macs: *mut [u8; 12] = ctx.ptr_at(0).ok_or(DropReason::Malformed)?;
    // SAFETY: bounds checked by ptr_at.
    let macs = unsafe { &mut *macs };
    macs[..6].copy_from_slice(&mac);
    macs[6..].copy_from_slice(&out.mac);
    vlan::rewrite(ctx, tag, vid, untagged)?;
    stage::stop_after!(STOP, REWRITE, (), Ok(F::STOPPED));
    if let Some(port) = port::get(egress_ifindex) {
        Stats::of::<TRACE>(port).tx(ctx.len());
    }
    stage::stop_after!(STOP, TX_COUNTERS, (), Ok(F::STOPPED));
    trace::record::<TRACE>(|t| {
        t.stage = xnos_common::TRACE_ROUTED;
        t.egress_ifindex = egress_ifindex;
        t.out_vlan = vid;
        t.untagged = u32::from(untagged);
    });
    ctx.redirect(egress_ifindex)
}

/// Whether `src` is an IPv4 source no router forwards from, as ip_route_input_slow
/// (net/ipv4/route.c) rules them martian: multicast and 255.255.255.255 (RFC 1812
/// §5.3.7), 0.0.0.0/8, and 127.0.0.0/8, which Linux accepts only with the
/// `route_localnet` sysctl; xnos never sets it, so loopback sources are dropped as Linux's
/// default does.
#[inline(always)]
fn martian_source4(src: &[u8; 4]) -> bool {
    let first = src[0];
    first == 0 || first == 127 || first & 0xf0 == 0xe0 || *src == [255; 4]
}

/// The first 15 bytes of an IPv6 address are zero: it is `::` or `::1` (or `::x`).
#[inline(always)]
fn zero_prefix6(a: &[u8; 16]) -> bool {
    let mut any = 0u8;
    for byte in &a[..15] {
        any |= *byte;
    }
    any == 0
}

#[inline(always)]
fn ipv4<const L3: usize, const TRACE: bool, const STOP: u32, F: Frame>(
    ctx: &F,
    tag: Option<Tag>,
    iface: &L3Iface,
    stats: &Stats,
) -> Result<u32, DropReason> {
    let ip: *mut Ipv4Hdr = ctx.ptr_at(L3).ok_or(DropReason::Malformed)?;
    // SAFETY: bounds checked by ptr_at; the header stays valid until we adjust the frame.
    let ip = unsafe { &mut *ip };
    if ip.vihl >> 4 != 4 {
        return Err(DropReason::Malformed);
    }
    // The header checks of ip_rcv_core (net/ipv4/ip_input.c), in its order: header length
    // of at least 5 words, checksum, total length from the header length to the frame's.
    if ip.vihl < 0x45 {
        return Err(DropReason::BadLength);
    }
    if ip.vihl != 0x45 {
        // The kernel checks the rest of a header with options.
        return punt::<TRACE, F>(ctx, tag, iface, stats, PuntReason::IpOptions);
    }
    if !checksum_ok::<L3, F>(ctx) {
        return Err(DropReason::BadChecksum);
    }
    let len = usize::from(u16::from_be_bytes(ip.len));
    let room = ctx.buffer_len().saturating_sub(L3);
    if len < 20 || len > room {
        return Err(DropReason::BadLength);
    }
    // Multicast, broadcast, loopback and "this network" destinations are never routed.
    if ip.dst[0] >= 224 || ip.dst[0] == 127 || ip.dst[0] == 0 {
        return punt::<TRACE, F>(ctx, tag, iface, stats, PuntReason::Unsupported);
    }
    if martian_source4(&ip.src) {
        return Err(DropReason::MartianSource);
    }
    if ip.ttl <= 1 {
        return punt::<TRACE, F>(ctx, tag, iface, stats, PuntReason::TtlExpired);
    }
    stage::stop_after!(STOP, IP_CHECKS, ip.dst, Ok(F::STOPPED));
    let Some(route) = ROUTES4.get(Key::new(32, ip.dst)) else {
        return punt::<TRACE, F>(ctx, tag, iface, stats, PuntReason::NoRoute);
    };
    stage::stop_after!(STOP, LPM, route, Ok(F::STOPPED));
    let group = match group::<TRACE>(route) {
        Ok(group) => group,
        Err(reason) => return punt::<TRACE, F>(ctx, tag, iface, stats, reason),
    };
    stage::stop_after!(STOP, NEXTHOP_GROUP, group, Ok(F::STOPPED));
    // The flow hash is only worth its cost when ECMP has a choice to make.
    let hash = if group.count > 1 {
        // Only first fragments carry ports; hash the others on addresses alone.
        let first_fragment = u16::from_be_bytes(ip.frag) & 0x1fff == 0;
        let ports = if first_fragment {
            ports(ctx, L3 + 20, ip.proto)
        } else {
            0
        };
        flow_hash(
            u32::from_ne_bytes(ip.src),
            u32::from_ne_bytes(ip.dst),
            ip.proto,
            ports,
        )
    } else {
        0
    };
    // IPv4 as IPv4-mapped IPv6, as in the neighbour table.
    let mut dst = [0u8; 16];
    dst[10] = 0xff;
    dst[11] = 0xff;
    dst[12..].copy_from_slice(&ip.dst);
    let (mac, out, egress) = match resolve::<TRACE, STOP>(group, hash, &dst) {
        Ok(resolved) => resolved,
        Err(reason) => return punt::<TRACE, F>(ctx, tag, iface, stats, reason),
    };
    stage::stop_after!(STOP, NEIGHBOUR, mac, Ok(F::STOPPED));
    stage::stop_after!(STOP, L3_EGRESS, egress, Ok(F::STOPPED));
    // The fast path neither fragments nor sends ICMP: the kernel does either (DF decides).
    if !fits(ctx, len, out.mtu, L3 + 20, 20, ip.proto) {
        return punt::<TRACE, F>(ctx, tag, iface, stats, PuntReason::TooBig);
    }
    let ip = if len < room {
        // Padding after the packet (Ethernet's minimum frame) goes, as pskb_trim_rcsum
        // cuts it in ip_rcv_core.
        if !ctx.trim(room - len) {
            return punt::<TRACE, F>(ctx, tag, iface, stats, PuntReason::Unsupported);
        }
        let ip: *mut Ipv4Hdr = ctx.ptr_at(L3).ok_or(DropReason::Malformed)?;
        // SAFETY: bounds checked by ptr_at.
        unsafe { &mut *ip }
    } else {
        ip
    };
    // TTL - 1 and the incremental checksum update of RFC 1624.
    let old = u16::from_be_bytes([ip.ttl, ip.proto]);
    ip.ttl -= 1;
    let new = u16::from_be_bytes([ip.ttl, ip.proto]);
    let mut sum = u32::from(!u16::from_be_bytes(ip.check)) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    ip.check = (!(sum as u16)).to_be_bytes();
    let action = transmit::<TRACE, STOP, F>(ctx, tag, mac, out, egress)?;
    stage::stop_after!(STOP, L3_REDIRECT, action, Ok(F::STOPPED));
    l3_stats::<TRACE>(|s| s.routed_v4 += 1);
    Ok(action)
}

#[inline(always)]
fn ipv6<const L3: usize, const TRACE: bool, const STOP: u32, F: Frame>(
    ctx: &F,
    tag: Option<Tag>,
    iface: &L3Iface,
    stats: &Stats,
) -> Result<u32, DropReason> {
    let ip: *mut Ipv6Hdr = ctx.ptr_at(L3).ok_or(DropReason::Malformed)?;
    // SAFETY: bounds checked by ptr_at; the header stays valid until we adjust the frame.
    let ip = unsafe { &mut *ip };
    if ip.vtc_flow[0] >> 4 != 6 {
        return Err(DropReason::Malformed);
    }
    // ip6_rcv_core (net/ipv6/ip6_input.c) drops multicast and loopback sources (RFC 4291
    // §2.7, §2.5.3) before it looks at the length.
    if ip.src[0] == 0xff || (ip.src[0] == 0 && zero_prefix6(&ip.src) && ip.src[15] == 1) {
        return Err(DropReason::MartianSource);
    }
    let len = 40 + usize::from(u16::from_be_bytes(ip.payload_len));
    let room = ctx.buffer_len().saturating_sub(L3);
    if len > room {
        return Err(DropReason::BadLength);
    }
    // Hop-by-hop options are for each router on the path, and an option a router does
    // not know may tell it to discard the packet, with an ICMPv6 parameter problem or
    // without (RFC 8200 4.2): the kernel examines them, as it does IPv4 options. A
    // jumbogram's length (RFC 2675) is in them too.
    if ip.next_header == 0 {
        return punt::<TRACE, F>(ctx, tag, iface, stats, PuntReason::IpOptions);
    }
    // Link-local and multicast destinations are never routed. Nor are link-local sources:
    // ip6_forward answers them with ICMPv6 "beyond scope of source address".
    if ip.dst[0] == 0xff
        || (ip.dst[0] == 0xfe && ip.dst[1] & 0xc0 == 0x80)
        || (ip.src[0] == 0xfe && ip.src[1] & 0xc0 == 0x80)
    {
        return punt::<TRACE, F>(ctx, tag, iface, stats, PuntReason::Unsupported);
    }
    if ip.hop_limit <= 1 {
        return punt::<TRACE, F>(ctx, tag, iface, stats, PuntReason::TtlExpired);
    }
    stage::stop_after!(STOP, IP_CHECKS, ip.dst, Ok(F::STOPPED));
    let Some(route) = ROUTES6.get(Key::new(128, ip.dst)) else {
        return punt::<TRACE, F>(ctx, tag, iface, stats, PuntReason::NoRoute);
    };
    stage::stop_after!(STOP, LPM, route, Ok(F::STOPPED));
    let word = |a: &[u8; 16], i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    let fold = |a: &[u8; 16]| word(a, 0) ^ word(a, 4) ^ word(a, 8) ^ word(a, 12);
    let group = match group::<TRACE>(route) {
        Ok(group) => group,
        Err(reason) => return punt::<TRACE, F>(ctx, tag, iface, stats, reason),
    };
    stage::stop_after!(STOP, NEXTHOP_GROUP, group, Ok(F::STOPPED));
    // ip6_forward drops the unspecified source only in packets it forwards (one to the
    // router itself is delivered).
    if ip.src[0] == 0 && zero_prefix6(&ip.src) && ip.src[15] == 0 {
        return Err(DropReason::MartianSource);
    }
    let hash = if group.count > 1 {
        flow_hash(
            fold(&ip.src),
            fold(&ip.dst),
            ip.next_header,
            ports(ctx, L3 + 40, ip.next_header),
        )
    } else {
        0
    };
    let dst = ip.dst;
    let (mac, out, egress) = match resolve::<TRACE, STOP>(group, hash, &dst) {
        Ok(resolved) => resolved,
        Err(reason) => return punt::<TRACE, F>(ctx, tag, iface, stats, reason),
    };
    stage::stop_after!(STOP, NEIGHBOUR, mac, Ok(F::STOPPED));
    stage::stop_after!(STOP, L3_EGRESS, egress, Ok(F::STOPPED));
    // IPv6 routers never fragment: the kernel sends ICMPv6 "packet too big" (RFC 4443).
    if !fits(ctx, len, out.mtu, L3 + 40, 40, ip.next_header) {
        return punt::<TRACE, F>(ctx, tag, iface, stats, PuntReason::TooBig);
    }
    let hop_limit = ip.hop_limit;
    // Padding after the packet goes, as ip6_rcv_core trims it.
    if len < room && !ctx.trim(room - len) {
        return punt::<TRACE, F>(ctx, tag, iface, stats, PuntReason::Unsupported);
    }
    // IPv6 has no header checksum to keep the packet's sum unchanged, as IPv4's does.
    ctx.set_uncovered_byte(L3 + 7, hop_limit - 1)?;
    let action = transmit::<TRACE, STOP, F>(ctx, tag, mac, out, egress)?;
    stage::stop_after!(STOP, L3_REDIRECT, action, Ok(F::STOPPED));
    l3_stats::<TRACE>(|s| s.routed_v6 += 1);
    Ok(action)
}
