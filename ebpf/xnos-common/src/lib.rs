//! Map keys and values shared by the xnos eBPF programs and userspace.
//!
//! Every type here is `#[repr(C)]` plain data: its layout is the contract between the
//! kernel side (`xnos-ebpf`) and the daemon. With the `user` feature the types implement
//! `aya::Pod` so that userspace can read and write them in maps.
#![no_std]

/// Most switch ports one instance handles (size of the port and counter maps).
pub const MAX_PORTS: u32 = 512;
/// Capacity of the FDB map (static and learned entries together).
pub const FDB_SIZE: u32 = 131_072;
/// Size of the learn-event ring buffer in bytes (a power of two, page aligned).
pub const LEARN_RING_BYTES: u32 = 256 * 1024;

/// VLAN IDs usable on ports (802.1Q reserves 0 and 4095).
pub const VLAN_MIN: u16 = 1;
pub const VLAN_MAX: u16 = 4094;

pub const PORT_MODE_ACCESS: u8 = 1;
pub const PORT_MODE_TRUNK: u8 = 2;
/// A routed port: no VLANs, no learning; frames to the router MAC are routed, the rest
/// go to the kernel.
pub const PORT_MODE_ROUTED: u8 = 3;

/// Most L3 interfaces (SVIs and routed ports) one instance handles.
pub const MAX_L3_IFACES: u32 = 1024;
/// Capacity of each LPM route table (IPv4, IPv6).
pub const ROUTES_SIZE: u32 = 2_000_000;
/// Capacity of the nexthop-group table.
pub const NHG_SIZE: u32 = 65_536;
/// Capacity of the neighbour table (both families).
pub const NEIGH_SIZE: u32 = 65_536;
/// Most nexthops in one ECMP group.
pub const MAX_ECMP: usize = 8;

/// Configuration of one switch port, keyed by ifindex in the `PORTS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortConf {
    /// Slot of this port in the `PORT_STATS` per-CPU array (0..MAX_PORTS).
    pub stats_slot: u32,
    /// VLAN of untagged frames (access VLAN, or trunk native VLAN); 0 = untagged frames
    /// are not allowed. Frames of this VLAN also leave the port untagged.
    pub pvid: u16,
    /// `PORT_MODE_ACCESS`, `PORT_MODE_TRUNK` or `PORT_MODE_ROUTED`.
    pub mode: u8,
    pub _pad: u8,
    /// VLAN membership bitmap: bit `vid % 64` of word `vid / 64`.
    pub members: [u64; 64],
}

impl PortConf {
    pub const fn new(stats_slot: u32, mode: u8, pvid: u16) -> Self {
        Self {
            stats_slot,
            pvid,
            mode,
            _pad: 0,
            members: [0; 64],
        }
    }

    pub fn add_member(&mut self, vid: u16) {
        let vid = usize::from(vid & 0xfff);
        self.members[vid >> 6] |= 1 << (vid & 63);
    }

    #[inline(always)]
    pub fn is_member(&self, vid: u16) -> bool {
        let vid = usize::from(vid & 0xfff);
        match self.members.get(vid >> 6) {
            Some(word) => word & (1 << (vid & 63)) != 0,
            None => false,
        }
    }
}

/// FDB key: one entry per (VLAN, MAC).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FdbKey {
    pub mac: [u8; 6],
    pub vlan: u16,
}

/// Static entries come from config and are never overwritten by learning.
pub const FDB_FLAG_STATIC: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    /// Egress port.
    pub ifindex: u32,
    /// `FDB_FLAG_*`.
    pub flags: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the MAC was last seen as a source.
    pub last_seen_ns: u64,
}

/// Sent on the learn ring buffer when the datapath learns a new MAC or sees it move.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LearnEvent {
    pub key: FdbKey,
    pub ifindex: u32,
    /// Previous port of a station that moved; 0 for a newly learned MAC.
    pub old_ifindex: u32,
}

/// Why the datapath dropped a frame; index into `PortStats::drops`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Truncated or malformed Ethernet/802.1Q header.
    Malformed = 0,
    /// A VLAN-tagged frame arrived on an access port.
    TaggedOnAccess = 1,
    /// A tagged frame whose VLAN the port is not a member of.
    VlanNotAllowed = 2,
    /// An untagged frame on a trunk port without a native VLAN.
    UntaggedNoNative = 3,
    /// Multicast, broadcast or all-zero source MAC.
    InvalidSrcMac = 4,
    /// Destination MAC was learned on the ingress port itself (filtered, as a bridge does).
    SamePort = 5,
    /// The FDB points at a port the datapath cannot send to.
    NoEgress = 6,
    /// Pushing or removing a VLAN tag failed (no headroom).
    TagRewrite = 7,
    /// An IPv4 packet to be routed whose header checksum is wrong.
    BadChecksum = 8,
    /// A packet to be routed whose IP header or length is inconsistent with its frame
    /// (IPv4 header length under 5 words, total length under the header or over the
    /// frame; IPv6 payload length over the frame).
    BadLength = 9,
    /// A packet to be routed from a source address no router forwards from (RFC 1812
    /// §5.3.7, RFC 4291).
    MartianSource = 10,
}

pub const DROP_REASONS: usize = 11;

impl DropReason {
    pub const ALL: [DropReason; DROP_REASONS] = [
        DropReason::Malformed,
        DropReason::TaggedOnAccess,
        DropReason::VlanNotAllowed,
        DropReason::UntaggedNoNative,
        DropReason::InvalidSrcMac,
        DropReason::SamePort,
        DropReason::NoEgress,
        DropReason::TagRewrite,
        DropReason::BadChecksum,
        DropReason::BadLength,
        DropReason::MartianSource,
    ];

    /// Stable label used by the CLI, the API and metrics (kebab-case, like every word
    /// xnos shows).
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::TaggedOnAccess => "tagged-on-access",
            DropReason::VlanNotAllowed => "vlan-not-allowed",
            DropReason::UntaggedNoNative => "untagged-no-native",
            DropReason::InvalidSrcMac => "invalid-src-mac",
            DropReason::SamePort => "same-port",
            DropReason::NoEgress => "no-egress",
            DropReason::TagRewrite => "tag-rewrite",
            DropReason::BadChecksum => "bad-checksum",
            DropReason::BadLength => "bad-length",
            DropReason::MartianSource => "martian-source",
        }
    }
}

/// An L3 interface, keyed by the ifindex of its kernel netdev (the SVI's kernel-side veth,
/// or the routed port itself) in the `L3_IFACES` map, and by VLAN in `VLAN_L3` for SVIs
/// (an all-zero entry there: the VLAN is not routed).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct L3Iface {
    /// Where frames for the kernel go: the SVI's internal switch port, or the routed port.
    pub port_ifindex: u32,
    /// The SVI's VLAN; 0 for a routed port.
    pub vlan: u16,
    /// The router MAC: frames to it are routed, and routed frames leave with it.
    pub mac: [u8; 6],
    /// The MTU of the kernel netdev: longer packets routed out of this interface are
    /// punted (`PuntReason::TooBig`) for the kernel to fragment or answer with ICMP.
    /// 0: not known, not checked.
    pub mtu: u16,
    pub _pad: u16,
}

/// Forward through the route's nexthop group.
pub const ROUTE_FORWARD: u32 = 1;
/// An address of the switch itself: punt to the kernel.
pub const ROUTE_LOCAL: u32 = 2;
/// A route the fast path does not carry (unreachable, prohibit, other interfaces...): punt.
pub const ROUTE_KERNEL: u32 = 3;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    /// `ROUTE_*`.
    pub kind: u32,
    /// Nexthop group (`NHGS` key) for `ROUTE_FORWARD`.
    pub nhg: u32,
}

/// A nexthop: through L3 interface `ifindex`, to `gateway` (or straight to the packet's
/// destination when `NEXTHOP_CONNECTED`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Nexthop {
    pub ifindex: u32,
    pub flags: u32,
    /// IPv6, or IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d).
    pub gateway: [u8; 16],
    /// The L3 interface of `ifindex`, copied here so that routing needs no lookup of it.
    pub out: L3Iface,
}

pub const NEXTHOP_CONNECTED: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NexthopGroup {
    /// Nexthops in use (1..=MAX_ECMP).
    pub count: u32,
    pub _pad: u32,
    pub nexthops: [Nexthop; MAX_ECMP],
}

/// Neighbour key: the L3 interface and the neighbour's address (IPv4 as IPv4-mapped
/// IPv6). Link-local IPv6 neighbours are only unique per interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NeighKey {
    pub ifindex: u32,
    pub addr: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighEntry {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// Why the L3 pipeline handed a packet to the kernel; index into `L3Stats::punts`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PuntReason {
    /// Addressed to the switch itself.
    ToSelf = 0,
    /// TTL or hop limit would expire here.
    TtlExpired = 1,
    /// No route in the fast path.
    NoRoute = 2,
    /// The nexthop's MAC is not known yet (the kernel resolves it).
    NoNeighbor = 3,
    /// IPv4 options, or IPv6 hop-by-hop options.
    IpOptions = 4,
    /// Neither IPv4 nor IPv6, link-local, or a route the fast path does not carry.
    Unsupported = 5,
    /// The neighbour's MAC is not in the FDB of the egress VLAN.
    FdbMiss = 6,
    /// Longer than the MTU of the egress interface: the kernel fragments it or sends
    /// ICMP "fragmentation needed" / ICMPv6 "packet too big".
    TooBig = 7,
}

pub const PUNT_REASONS: usize = 8;

impl PuntReason {
    pub const ALL: [PuntReason; PUNT_REASONS] = [
        PuntReason::ToSelf,
        PuntReason::TtlExpired,
        PuntReason::NoRoute,
        PuntReason::NoNeighbor,
        PuntReason::IpOptions,
        PuntReason::Unsupported,
        PuntReason::FdbMiss,
        PuntReason::TooBig,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            PuntReason::ToSelf => "to-self",
            PuntReason::TtlExpired => "ttl-expired",
            PuntReason::NoRoute => "no-route",
            PuntReason::NoNeighbor => "no-neighbor",
            PuntReason::IpOptions => "ip-options",
            PuntReason::Unsupported => "unsupported",
            PuntReason::FdbMiss => "fdb-miss",
            PuntReason::TooBig => "too-big",
        }
    }
}

/// Switch-wide L3 counters, one copy per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L3Stats {
    pub routed_v4: u64,
    pub routed_v6: u64,
    pub punts: [u64; PUNT_REASONS],
    /// Punts dropped by the rate limiter.
    pub punts_rate_limited: u64,
}

/// What the trace program saw a frame do (`xnos trace`); written only by `xnos_trace`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceRecord {
    /// XDP action returned.
    pub action: u32,
    /// `TRACE_*`.
    pub stage: u32,
    /// `DropReason` + 1 (0: none).
    pub drop_reason: u32,
    /// `PuntReason` + 1 (0: none).
    pub punt_reason: u32,
    /// VLAN the frame was classified into (0: none).
    pub vlan: u16,
    /// VLAN the frame leaves in (0: none).
    pub out_vlan: u16,
    pub egress_ifindex: u32,
    /// 1 if the frame leaves untagged.
    pub untagged: u32,
    /// `ROUTE_*` of the matching route (0: no route looked up or none found).
    pub route_kind: u32,
    pub nhg: u32,
    /// Which nexthop of the group ECMP picked.
    pub nexthop_index: u32,
    /// The L3 interface of that nexthop.
    pub nexthop_ifindex: u32,
    pub neigh_mac: [u8; 6],
    pub _pad: [u8; 2],
}

pub const TRACE_L2_UNICAST: u32 = 1;
pub const TRACE_FLOOD: u32 = 2;
pub const TRACE_DROP: u32 = 3;
/// Passed to the kernel unrouted (link-local control frames, routed-port traffic).
pub const TRACE_TO_KERNEL: u32 = 4;
pub const TRACE_ROUTED: u32 = 5;
pub const TRACE_PUNT: u32 = 6;

/// Per-port counters, one copy per CPU, summed by userspace at read time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames received on this port and flooded within their VLAN.
    pub flooded: u64,
    /// Frames received on this port and passed to the kernel's netdev of the port
    /// (link-local control frames, routed-port traffic not for the router MAC). "Punt"
    /// is reserved for what L3 hands to the kernel (`L3Stats::punts`).
    pub to_kernel: u64,
    /// Packets received on this port that L3 handed to the kernel (`PuntReason`: to the
    /// router itself, TTL expiry, unresolved neighbour...): the per-port share of
    /// `L3Stats::punts`. Punts the rate limit dropped are not counted here.
    pub punted: u64,
    /// MACs learned or moved on this port.
    pub learned: u64,
    /// New MACs seen on this port that the full FDB had no room for (the frame is still
    /// forwarded; the station is flooded to until an entry frees up).
    pub learn_refused: u64,
    /// Learn events of this port the full ring buffer had no room for: their entries are
    /// in the FDB map, and xnosd reads it whole when it sees this count move.
    pub learn_events_lost: u64,
    pub drops: [u64; DROP_REASONS],
}

#[cfg(feature = "user")]
mod user {
    use super::*;

    macro_rules! pod {
        ($($t:ty),* $(,)?) => {$(
            // SAFETY: every map key and value here is #[repr(C)] plain data; any bit
            // pattern is a valid value.
            unsafe impl aya::Pod for $t {}
        )*};
    }

    pod!(
        PortConf,
        FdbKey,
        FdbEntry,
        LearnEvent,
        PortStats,
        L3Iface,
        RouteEntry,
        NexthopGroup,
        NeighKey,
        NeighEntry,
        L3Stats,
        TraceRecord,
    );
}
