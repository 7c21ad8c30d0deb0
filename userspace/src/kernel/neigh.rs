//! Neighbours: mirroring the kernel's ARP and ND entries into the `neighbor` table.

use std::net::IpAddr;

use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};

use crate::{
    mac::MacAddr,
    statedb::{KernelTx, Neighbor, NeighborState},
};

fn state(state: NeighbourState) -> NeighborState {
    match state {
        NeighbourState::Incomplete => NeighborState::Incomplete,
        NeighbourState::Reachable => NeighborState::Reachable,
        NeighbourState::Stale => NeighborState::Stale,
        NeighbourState::Delay => NeighborState::Delay,
        NeighbourState::Probe => NeighborState::Probe,
        NeighbourState::Failed => NeighborState::Failed,
        NeighbourState::Noarp => NeighborState::Noarp,
        NeighbourState::Permanent => NeighborState::Permanent,
        NeighbourState::None => NeighborState::None,
        _ => NeighborState::Other,
    }
}

fn neighbor(msg: &NeighbourMessage) -> Option<Neighbor> {
    let mut ip = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(IpAddr::V4(*a)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                ip = Some(IpAddr::V6(*a))
            }
            NeighbourAttribute::LinkLayerAddress(bytes) => {
                mac = <[u8; 6]>::try_from(bytes.as_slice()).ok().map(MacAddr);
            }
            _ => {}
        }
    }
    Some(Neighbor {
        ip: ip?,
        ifindex: msg.header.ifindex,
        mac,
        state: state(msg.header.state),
    })
}

pub fn replace_all(tx: &mut KernelTx<'_>, messages: &[NeighbourMessage]) {
    let neighbors: Vec<Neighbor> = messages.iter().filter_map(neighbor).collect();
    let present: std::collections::BTreeSet<(u32, IpAddr)> =
        neighbors.iter().map(|n| (n.ifindex, n.ip)).collect();
    let gone: Vec<(u32, IpAddr)> = tx
        .observed()
        .neighbors
        .keys()
        .filter(|key| !present.contains(key))
        .copied()
        .collect();
    for (ifindex, ip) in gone {
        tx.neighbor(ifindex, ip, None);
    }
    for n in neighbors {
        tx.neighbor(n.ifindex, n.ip, Some(n));
    }
}

pub fn update(tx: &mut KernelTx<'_>, msg: &NeighbourMessage, present: bool) {
    if let Some(n) = neighbor(msg) {
        tx.neighbor(n.ifindex, n.ip, present.then_some(n));
    }
}
