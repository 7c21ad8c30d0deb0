//! Routes: mirroring the kernel's main and local tables into the `fib` table.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::Stream;
use ipnet::IpNet;
use rtnetlink::{
    Handle, RouteMessageBuilder,
    packet_route::route::{
        RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol as Proto, RouteType,
        RouteVia,
    },
};

use crate::statedb::{
    FibNexthop, FibRoute, Hardware, KernelTx, ProtocolName, RouteKind, RouteProtocol, RouteTable,
};

pub const TABLE_MAIN: u32 = 254;
pub const TABLE_LOCAL: u32 = 255;
/// Routes xnos installs from its config carry this protocol number (`ip route` shows
/// `proto 201`); it is not one of the numbers iproute2 or routing daemons use.
pub const PROTOCOL_XNOS: u8 = 201;

type RouteStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<RouteMessage, rtnetlink::Error>> + Send>>;

/// Dumps of the IPv4 and IPv6 routes of every table.
pub fn dump_requests(handle: &Handle) -> [RouteStream; 2] {
    [
        Box::pin(
            handle
                .route()
                .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
                .execute(),
        ),
        Box::pin(
            handle
                .route()
                .get(RouteMessageBuilder::<Ipv6Addr>::new().build())
                .execute(),
        ),
    ]
}

fn address(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

fn via(via: &RouteVia) -> Option<IpAddr> {
    match via {
        RouteVia::Inet(a) => Some(IpAddr::V4(*a)),
        RouteVia::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// RTPROT_OPENR: iproute2 names it, netlink-packet-route does not.
const PROTOCOL_OPENR: u8 = 99;

pub fn protocol(protocol: Proto) -> RouteProtocol {
    let name = match protocol {
        Proto::Unspec => ProtocolName::Unspec,
        Proto::IcmpRedirect => ProtocolName::Redirect,
        Proto::Kernel => ProtocolName::Kernel,
        Proto::Boot => ProtocolName::Boot,
        Proto::Static => ProtocolName::Static,
        Proto::Gated => ProtocolName::Gated,
        Proto::Ra => ProtocolName::Ra,
        Proto::Mrt => ProtocolName::Mrt,
        Proto::Zebra => ProtocolName::Zebra,
        Proto::Bird => ProtocolName::Bird,
        Proto::DnRouted => ProtocolName::Dnrouted,
        Proto::Xorp => ProtocolName::Xorp,
        Proto::Ntk => ProtocolName::Ntk,
        Proto::Dhcp => ProtocolName::Dhcp,
        Proto::Mrouted => ProtocolName::Mrouted,
        Proto::KeepAlived => ProtocolName::Keepalived,
        Proto::Babel => ProtocolName::Babel,
        Proto::Bgp => ProtocolName::Bgp,
        Proto::Isis => ProtocolName::Isis,
        Proto::Ospf => ProtocolName::Ospf,
        Proto::Rip => ProtocolName::Rip,
        Proto::Eigrp => ProtocolName::Eigrp,
        Proto::Other(PROTOCOL_XNOS) => ProtocolName::Xnos,
        Proto::Other(PROTOCOL_OPENR) => ProtocolName::Openr,
        Proto::Other(n) => return RouteProtocol::Number(n),
        _ => return RouteProtocol::Number(u8::from(protocol)),
    };
    RouteProtocol::Named(name)
}

fn kind(kind: RouteType) -> RouteKind {
    match kind {
        RouteType::Unspec => RouteKind::Unspec,
        RouteType::Unicast => RouteKind::Unicast,
        RouteType::Local => RouteKind::Local,
        RouteType::Broadcast => RouteKind::Broadcast,
        RouteType::Anycast => RouteKind::Anycast,
        RouteType::Multicast => RouteKind::Multicast,
        RouteType::BlackHole => RouteKind::Blackhole,
        RouteType::Unreachable => RouteKind::Unreachable,
        RouteType::Prohibit => RouteKind::Prohibit,
        RouteType::Throw => RouteKind::Throw,
        RouteType::Nat => RouteKind::Nat,
        RouteType::ExternalResolve => RouteKind::Xresolve,
        _ => RouteKind::Other,
    }
}

/// A route message as a `fib` row, for the main and local tables only.
pub fn fib_route(msg: &RouteMessage) -> Option<FibRoute> {
    let mut table = u32::from(msg.header.table);
    let mut destination = None;
    let mut gateway = None;
    let mut oif = 0;
    let mut multipath = Vec::new();
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(a) => destination = address(a),
            RouteAttribute::Gateway(a) => gateway = address(a),
            RouteAttribute::Via(v) => gateway = via(v),
            RouteAttribute::Oif(i) => oif = *i,
            RouteAttribute::MultiPath(hops) => {
                for hop in hops {
                    let gateway = hop.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Gateway(a) => address(a),
                        RouteAttribute::Via(v) => via(v),
                        _ => None,
                    });
                    multipath.push(FibNexthop {
                        gateway,
                        ifindex: hop.interface_index,
                    });
                }
            }
            _ => {}
        }
    }
    let table = match table {
        TABLE_MAIN => RouteTable::Main,
        TABLE_LOCAL => RouteTable::Local,
        _ => return None,
    };
    let len = msg.header.destination_prefix_length;
    let destination = destination.unwrap_or(match msg.header.address_family {
        rtnetlink::packet_route::AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    });
    let prefix = IpNet::new(destination, len).ok()?.trunc();
    let nexthops = if multipath.is_empty() {
        vec![FibNexthop {
            gateway,
            ifindex: oif,
        }]
    } else {
        multipath
    };
    Some(FibRoute {
        prefix,
        table,
        kind: kind(msg.header.kind),
        protocol: protocol(msg.header.protocol),
        nexthops,
        hardware: hardware(msg.header.flags),
    })
}

/// What the kernel reports hardware does with a route (RTM_F_OFFLOAD, RTM_F_TRAP,
/// RTM_F_OFFLOAD_FAILED; set by switchdev drivers that offload the FIB).
fn hardware(flags: RouteFlags) -> Option<Hardware> {
    if flags.contains(RouteFlags::OffloadFailed) {
        Some(Hardware::OffloadFailed)
    } else if flags.contains(RouteFlags::RtOffload) {
        Some(Hardware::Offloaded)
    } else if flags.contains(RouteFlags::RtTrap) {
        Some(Hardware::Trap)
    } else {
        None
    }
}

pub fn replace_all(tx: &mut KernelTx<'_>, messages: &[RouteMessage]) {
    let routes: Vec<FibRoute> = messages.iter().filter_map(fib_route).collect();
    let present: std::collections::BTreeSet<(RouteTable, IpNet)> =
        routes.iter().map(|r| (r.table, r.prefix)).collect();
    let gone: Vec<(RouteTable, IpNet)> = tx
        .observed()
        .fib
        .keys()
        .filter(|key| !present.contains(key))
        .copied()
        .collect();
    for (table, prefix) in gone {
        tx.fib(table, prefix, None);
    }
    for route in routes {
        tx.fib(route.table, route.prefix, Some(route));
    }
}

pub fn update(tx: &mut KernelTx<'_>, msg: &RouteMessage, present: bool) {
    if let Some(route) = fib_route(msg) {
        tx.fib(route.table, route.prefix, present.then_some(route));
    }
}
