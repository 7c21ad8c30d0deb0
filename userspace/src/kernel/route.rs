//! Routes: mirroring the kernel's main and local tables into the `fib` table.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::Context as _;
use ipnet::IpNet;
use rtnetlink::{
    packet_core::{NLM_F_DUMP, NetlinkMessage},
    packet_route::{
        AddressFamily, RouteNetlinkMessage,
        route::{
            RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol as Proto,
            RouteType, RouteVia,
        },
    },
    sys::protocols::NETLINK_ROUTE,
};

use super::netlink;
use crate::statedb::{
    CHUNK_ROWS, FibKey, FibNexthop, FibRoute, Hardware, KernelTx, KernelWriter, Nexthops,
    ProtocolName, RouteKind, RouteProtocol, RouteTable,
};

pub const TABLE_MAIN: u32 = 254;
pub const TABLE_LOCAL: u32 = 255;
/// Routes xnos installs from its config carry this protocol number (`ip route` shows
/// `proto 201`); it is not one of the numbers iproute2 or routing daemons use.
pub const PROTOCOL_XNOS: u8 = 201;

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
    let mut metric = 0;
    let mut multipath = Vec::new();
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(a) => destination = address(a),
            RouteAttribute::Gateway(a) => gateway = address(a),
            RouteAttribute::Via(v) => gateway = via(v),
            RouteAttribute::Oif(i) => oif = *i,
            RouteAttribute::Priority(p) => metric = *p,
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
        smallvec::smallvec![FibNexthop {
            gateway,
            ifindex: oif,
        }]
    } else {
        multipath.into()
    };
    Some(FibRoute {
        prefix,
        table,
        tos: msg.header.tos,
        metric,
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

/// Read every route of the kernel's main and local tables into the `fib` table, in
/// commits of at most [`CHUNK_ROWS`] rows; the rows the kernel no longer has go last. It
/// blocks: run it off the async runtime. The kernel writes a dump as it is read, so xnosd
/// holds one receive buffer of it and one chunk of rows at a time, however large the
/// table, and readers of StateDb are served between the chunks.
pub fn load(db: &KernelWriter) -> anyhow::Result<()> {
    let mut routes = Vec::new();
    let mut failed = None;
    let mut loader = Loader::new(db);
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        if let Err(e) = dump(family, |message| {
            if let Some(route) = fib_route(message) {
                routes.push(route);
                if routes.len() == CHUNK_ROWS {
                    loader.write(std::mem::take(&mut routes));
                }
            }
        }) {
            failed = Some(e);
            break;
        }
    }
    if let Some(e) = failed {
        // What was read is right, but what the dump did not reach may not be gone.
        loader.write(routes);
        return Err(e);
    }
    loader.write(routes);
    loader.finish();
    Ok(())
}

/// Writes a dump of the FIB into StateDb a chunk at a time, and then removes what the dump
/// did not have.
pub struct Loader<'a> {
    db: &'a KernelWriter,
    /// The rows from before the dump that it has not renewed (yet).
    stale: BTreeSet<FibKey>,
}

impl<'a> Loader<'a> {
    pub fn new(db: &'a KernelWriter) -> Self {
        Self {
            db,
            stale: db.read(|s| s.observed.fib.keys().copied().collect()),
        }
    }

    /// Write dumped routes, in commits of at most [`CHUNK_ROWS`] rows.
    pub fn write(&mut self, routes: Vec<FibRoute>) {
        let db = self.db;
        let mut routes = routes.into_iter().peekable();
        while routes.peek().is_some() {
            db.write(|tx| {
                for route in routes.by_ref().take(CHUNK_ROWS) {
                    let key = route.key();
                    self.stale.remove(&key);
                    tx.fib(key, Some(route));
                }
            });
        }
    }

    /// Remove the rows the dump did not have, in commits of at most [`CHUNK_ROWS`].
    pub fn finish(self) {
        let stale: Vec<FibKey> = self.stale.into_iter().collect();
        for chunk in stale.chunks(CHUNK_ROWS) {
            self.db.write(|tx| {
                for key in chunk {
                    tx.fib(*key, None);
                }
            });
        }
    }
}

/// Dump the routes of one address family on a blocking netlink socket of its own, handing
/// each message to `each` as it is read.
fn dump(family: AddressFamily, mut each: impl FnMut(&RouteMessage)) -> anyhow::Result<()> {
    let socket =
        netlink::socket(NETLINK_ROUTE).context("opening a netlink socket for the route dump")?;
    let mut message = RouteMessage::default();
    message.header.address_family = family;
    let mut request = NetlinkMessage::from(RouteNetlinkMessage::GetRoute(message));
    request.header.sequence_number = 1;
    netlink::send(&socket, request, NLM_F_DUMP)
        .with_context(|| format!("asking the kernel for its {family:?} routes"))?;
    netlink::dump(&socket, |message| {
        if let RouteNetlinkMessage::NewRoute(route) = message {
            each(&route);
        }
    })
    .with_context(|| format!("dumping the kernel's {family:?} routes"))
}

pub fn update(tx: &mut KernelTx<'_>, msg: &RouteMessage, present: bool) {
    let Some(route) = fib_route(msg) else {
        return;
    };
    let key = route.key();
    let row = if present {
        Some(route)
    } else {
        remaining(tx.observed().fib.get(&key), &route)
    };
    tx.fib(key, row);
}

/// What is left of `current` once the kernel deleted `deleted`: an IPv6 multipath route
/// loses one nexthop at a time (`ip -6 route del P via G` deletes that sibling and
/// notifies it alone), while any other deletion names every nexthop.
fn remaining(current: Option<&FibRoute>, deleted: &FibRoute) -> Option<FibRoute> {
    let current = current?;
    let nexthops: Nexthops = current
        .nexthops
        .iter()
        .filter(|n| !deleted.nexthops.contains(n))
        .cloned()
        .collect();
    (!nexthops.is_empty() && nexthops.len() < current.nexthops.len()).then(|| FibRoute {
        nexthops,
        ..current.clone()
    })
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_route::AddressFamily;

    use super::*;
    use crate::{
        config::Config,
        statedb::{ChangeOp, StateDb},
    };

    fn message(prefix: &str, metric: u32, hops: &[(Option<&str>, u32)]) -> RouteMessage {
        let prefix: IpNet = prefix.parse().unwrap();
        let mut msg = RouteMessage::default();
        msg.header.address_family = match prefix {
            IpNet::V4(_) => AddressFamily::Inet,
            IpNet::V6(_) => AddressFamily::Inet6,
        };
        msg.header.destination_prefix_length = prefix.prefix_len();
        msg.header.table = TABLE_MAIN as u8;
        msg.header.kind = RouteType::Unicast;
        let addr = |ip: IpAddr| match ip {
            IpAddr::V4(a) => RouteAddress::Inet(a),
            IpAddr::V6(a) => RouteAddress::Inet6(a),
        };
        msg.attributes
            .push(RouteAttribute::Destination(addr(prefix.addr())));
        msg.attributes.push(RouteAttribute::Priority(metric));
        let gateway =
            |g: Option<&str>| g.map(|g| RouteAttribute::Gateway(addr(g.parse().unwrap())));
        match hops {
            [(g, oif)] => {
                msg.attributes.push(RouteAttribute::Oif(*oif));
                msg.attributes.extend(gateway(*g));
            }
            _ => msg.attributes.push(RouteAttribute::MultiPath(
                hops.iter()
                    .map(|(g, oif)| {
                        let mut hop = rtnetlink::packet_route::route::RouteNextHop::default();
                        hop.interface_index = *oif;
                        hop.attributes.extend(gateway(*g));
                        hop
                    })
                    .collect(),
            )),
        }
        msg
    }

    fn fib(messages: &[RouteMessage]) -> Vec<String> {
        let db = StateDb::new(
            Config::parse("t.toml", "", |_: &str| true).unwrap(),
            |_: &str| true,
        );
        let w = db.writers();
        let mut loader = Loader::new(&w.kernel);
        loader.write(messages.iter().filter_map(fib_route).collect());
        loader.finish();
        db.read(|s| s.observed.fib.keys().map(ToString::to_string).collect())
    }

    // What this shows: every route the kernel has is a row of its own: the same prefix
    // through several interfaces (fe80::/64 on each), or with several metrics.
    #[test]
    fn routes_to_one_prefix_are_rows_of_their_own() {
        let keys = fib(&[
            message("fe80::/64", 256, &[(None, 2)]),
            message("fe80::/64", 256, &[(None, 3)]),
            message("10.1.0.0/16", 20, &[(Some("10.0.0.2"), 2)]),
            message("10.1.0.0/16", 10, &[(Some("10.0.1.2"), 3)]),
        ]);
        assert_eq!(
            keys,
            [
                "main/10.1.0.0/16/0/10/0",
                "main/10.1.0.0/16/0/20/0",
                "main/fe80::/64/0/256/2",
                "main/fe80::/64/0/256/3",
            ]
        );
    }

    // What this shows: a dump of a large table goes into StateDb in commits of at most
    // CHUNK_ROWS rows (each commit takes the write lock on its own, readers go between
    // them), and the rows the dump no longer has go afterwards, in commits of their own.
    #[test]
    fn a_large_dump_is_written_in_bounded_commits() {
        let db = StateDb::new(
            Config::parse("t.toml", "", |_: &str| true).unwrap(),
            |_: &str| true,
        );
        let w = db.writers();
        let route = |i: usize| {
            fib_route(&message(
                &format!("10.{}.{}.0/24", i / 256, i % 256),
                20,
                &[(Some("10.255.0.2"), 2)],
            ))
            .unwrap()
        };
        let mut first = Loader::new(&w.kernel);
        first.write((0..100).map(route).collect());
        first.finish();

        let count = 3 * CHUNK_ROWS + 5;
        let mut commits = db.commits();
        let mut loader = Loader::new(&w.kernel);
        // The first 50 routes are gone from the kernel; the others come in two pieces.
        loader.write((50..1000).map(route).collect());
        loader.write((1000..count).map(route).collect());
        loader.finish();
        let mut sizes = Vec::new();
        while let Ok(commit) = commits.try_recv() {
            sizes.push((commit.changes.len(), commit.changes[0].op));
        }
        assert_eq!(
            sizes,
            [
                // 50..100 were there already: no change.
                (900, ChangeOp::Insert),
                (CHUNK_ROWS, ChangeOp::Insert),
                (CHUNK_ROWS, ChangeOp::Insert),
                (count - 1000 - 2 * CHUNK_ROWS, ChangeOp::Insert),
                (50, ChangeOp::Delete),
            ],
            "(changes, first op) of each commit"
        );
        assert_eq!(db.read(|s| s.observed.fib.len()), count - 50);
    }

    // What this shows: IPv6 multipath siblings are one route with several nexthops; the
    // deletion of one sibling (which the kernel notifies alone) leaves the others.
    #[test]
    fn a_deleted_ipv6_sibling_leaves_the_others() {
        let db = StateDb::new(
            Config::parse("t.toml", "", |_: &str| true).unwrap(),
            |_: &str| true,
        );
        let w = db.writers();
        let both = message(
            "2001:db8:1::/64",
            1024,
            &[(Some("2001:db8::2"), 2), (Some("2001:db8::3"), 2)],
        );
        w.kernel.write(|tx| update(tx, &both, true));
        let one = message("2001:db8:1::/64", 1024, &[(Some("2001:db8::2"), 2)]);
        w.kernel.write(|tx| update(tx, &one, false));
        let left: Vec<_> = db.read(|s| {
            s.observed
                .fib
                .values()
                .flat_map(|r| r.nexthops.iter().filter_map(|n| n.gateway))
                .collect()
        });
        assert_eq!(left, ["2001:db8::3".parse::<IpAddr>().unwrap()]);
        let last = message("2001:db8:1::/64", 1024, &[(Some("2001:db8::3"), 2)]);
        w.kernel.write(|tx| update(tx, &last, false));
        assert!(db.read(|s| s.observed.fib.is_empty()));
    }
}
