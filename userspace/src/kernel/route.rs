//! Routes: mirroring the kernel's main and local tables into the `fib` table.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::Stream;
use ipnet::IpNet;
use rtnetlink::{
    Handle, RouteMessageBuilder,
    packet_route::route::{
        RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol, RouteType, RouteVia,
    },
};

use crate::statedb::{FibNexthop, FibRoute, ObservedTx};

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

pub fn protocol_name(protocol: RouteProtocol) -> String {
    match protocol {
        RouteProtocol::Other(PROTOCOL_XNOS) => "xnos".into(),
        RouteProtocol::Other(n) => n.to_string(),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn kind_name(kind: RouteType) -> String {
    match kind {
        RouteType::BlackHole => "blackhole".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// A route message as a `fib` row: (table name, row), for the main and local tables only.
pub fn fib_route(msg: &RouteMessage) -> Option<(&'static str, FibRoute)> {
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
    let table_name = match table {
        TABLE_MAIN => "main",
        TABLE_LOCAL => "local",
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
    Some((
        table_name,
        FibRoute {
            prefix,
            table: table_name.into(),
            kind: kind_name(msg.header.kind),
            protocol: protocol_name(msg.header.protocol),
            nexthops,
            hardware: hardware(msg.header.flags),
        },
    ))
}

/// What the kernel reports hardware does with a route (RTM_F_OFFLOAD, RTM_F_TRAP,
/// RTM_F_OFFLOAD_FAILED; set by switchdev drivers that offload the FIB).
fn hardware(flags: RouteFlags) -> Option<String> {
    if flags.contains(RouteFlags::OffloadFailed) {
        Some("offload-failed".into())
    } else if flags.contains(RouteFlags::RtOffload) {
        Some("offloaded".into())
    } else if flags.contains(RouteFlags::RtTrap) {
        Some("trap".into())
    } else {
        None
    }
}

pub fn replace_all(tx: &mut ObservedTx<'_>, messages: &[RouteMessage]) {
    let routes: Vec<(&str, FibRoute)> = messages.iter().filter_map(fib_route).collect();
    let present: std::collections::BTreeSet<(&str, IpNet)> =
        routes.iter().map(|(t, r)| (*t, r.prefix)).collect();
    let gone: Vec<(String, IpNet)> = tx
        .observed()
        .fib
        .keys()
        .filter(|(table, prefix)| !present.contains(&(table.as_str(), *prefix)))
        .cloned()
        .collect();
    for (table, prefix) in gone {
        tx.fib(&table, prefix, None);
    }
    for (table, route) in routes {
        tx.fib(table, route.prefix, Some(route));
    }
}

pub fn update(tx: &mut ObservedTx<'_>, msg: &RouteMessage, present: bool) {
    if let Some((table, route)) = fib_route(msg) {
        let prefix = route.prefix;
        tx.fib(table, prefix, present.then_some(route));
    }
}
