//! L3 programming: router interfaces, routes, ECMP nexthop groups and neighbours, from
//! StateDb's config and its mirror of the kernel FIB and neighbour tables.
//!
//! `L3` remembers what it wrote (read back from the maps when the module starts, so a
//! restarted module converges without flushing), which lets a route or neighbour change
//! be applied on its own instead of re-reading tables of a million routes.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    ops::Bound,
    sync::Arc,
};

use aya::maps::{MapError, lpm_trie::Key};
use ipnet::IpNet;
use xnos_common::{
    L3Iface, MAX_ECMP, NEXTHOP_CONNECTED, NeighEntry, NeighKey, Nexthop, NexthopGroup,
    ROUTE_FORWARD, ROUTE_KERNEL, ROUTE_LOCAL, RouteEntry,
};

use super::{Datapath, DatapathError, map_err};
use crate::statedb::{
    DatapathNeighbor, DatapathRoute, DatapathTx, FibKey, FibRoute, RouteAction, RouteKind,
    RouteTable, State,
};

/// An IP address in the 16-byte form the maps use (IPv4 as IPv4-mapped IPv6).
pub fn addr16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

fn ip_of(addr: [u8; 16]) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(addr);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

/// How the fast path handles one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Desired {
    /// Through a nexthop group: the routes through one group share one copy of it (a
    /// million routes have a few groups).
    Forward(Arc<[Nexthop]>),
    Local,
    Kernel,
}

impl Desired {
    fn action(&self) -> RouteAction {
        match self {
            Desired::Forward(_) => RouteAction::Forward,
            Desired::Local => RouteAction::Local,
            Desired::Kernel => RouteAction::Kernel,
        }
    }
}

/// The L3 interfaces config asks for, keyed by kernel ifindex, and which of them are SVIs
/// on the switchdev bridge.
#[derive(Clone, Debug, Default)]
pub struct Ifaces {
    map: BTreeMap<u32, L3Iface>,
    bridged: BTreeSet<u32>,
}

/// The L3 interfaces config asks for, keyed by kernel ifindex, and the routed VLANs.
fn desired_ifaces(state: &State) -> Ifaces {
    let mac = state.config.switch.router_mac().0;
    let observed = &state.observed;
    let links = &observed.links;
    let bridged = crate::switchdev::bridged_svis(&state.config, links, &observed.kernel);
    let mut ifaces = Ifaces::default();
    for iface in state.config.interfaces.values() {
        let Some(kernel) = links.get(&iface.name) else {
            continue;
        };
        let (port_ifindex, vlan) = match iface.vlan {
            Some(vlan) => {
                // An SVI on the bridge is reached through the VLAN's CPU port.
                let port = if bridged.contains(&vlan) {
                    ifaces.bridged.insert(kernel.ifindex);
                    crate::switchdev::cpu_port_xdp_name(vlan)
                } else {
                    crate::config::InterfaceConfig::svi_port_name(vlan)
                };
                match links.get(&port) {
                    Some(port) => (port.ifindex, vlan),
                    None => continue,
                }
            }
            None => (kernel.ifindex, 0),
        };
        ifaces.map.insert(
            kernel.ifindex,
            L3Iface {
                port_ifindex,
                vlan,
                mac,
                // The fast path checks the MTU the kernel would route with: that of the
                // interface's netdev.
                mtu: kernel.mtu.map_or(0, |m| m.min(u32::from(u16::MAX)) as u16),
                _pad: 0,
            },
        );
    }
    ifaces
}

fn main_route(route: &FibRoute, ifaces: &Ifaces) -> Desired {
    if route.kind != RouteKind::Unicast
        || route.nexthops.is_empty()
        || route.nexthops.len() > MAX_ECMP
    {
        return Desired::Kernel;
    }
    let mut nexthops = Vec::new();
    for nh in &route.nexthops {
        if !ifaces.map.contains_key(&nh.ifindex) {
            // Out of an interface the fast path does not own: the kernel forwards.
            return Desired::Kernel;
        }
        if ifaces.bridged.contains(&nh.ifindex) {
            // Into a VLAN whose SVI is on the switchdev bridge: the kernel routes it out
            // of that SVI (the ASIC would). A frame the fast path routed would enter the
            // bridge through the CPU port with the router MAC, the bridge's own, as its
            // source, which the bridge warns about.
            return Desired::Kernel;
        }
        nexthops.push(Nexthop {
            ifindex: nh.ifindex,
            flags: if nh.gateway.is_none() {
                NEXTHOP_CONNECTED
            } else {
                0
            },
            gateway: nh.gateway.map(addr16).unwrap_or_default(),
            out: ifaces.map[&nh.ifindex],
        });
    }
    Desired::Forward(nexthops.into())
}

/// The route the kernel uses among those of one table to one prefix, if the fast path can
/// tell which: the one of lowest metric. It cannot when a route is for a TOS (the maps
/// do not look at it), or when several share the lowest metric (the kernel's order among
/// them is its own): then the kernel must decide, and `Err` names the first of them.
fn preferred<'a>(
    routes: impl IntoIterator<Item = (&'a FibKey, &'a FibRoute)>,
) -> Option<Result<(&'a FibKey, &'a FibRoute), &'a FibKey>> {
    let routes: Vec<_> = routes.into_iter().collect();
    let lowest = routes.iter().map(|(k, _)| k.metric).min()?;
    let mut best = routes.iter().filter(|(k, _)| k.metric == lowest);
    let first = *best.next()?;
    if best.next().is_some() || routes.iter().any(|(k, _)| k.tos != 0) {
        return Some(Err(first.0));
    }
    Some(Ok(first))
}

/// What decides how the fast path handles a prefix.
enum Decider<'a> {
    /// A local route: the address is the switch's.
    Local,
    /// The main table's route the kernel uses.
    Main(&'a FibRoute),
    /// Routes the fast path cannot tell the kernel's choice among.
    Kernel,
}

/// The `fib` route that decides how the fast path handles `prefix`, and what it decides.
fn deciding<'a>(
    fib: &'a BTreeMap<FibKey, FibRoute>,
    prefix: &IpNet,
) -> Option<(FibKey, Decider<'a>)> {
    // Local before main, as the kernel's rules look them up.
    if let Some((key, _)) = fib
        .range(FibKey::bounds(RouteTable::Local, *prefix))
        .find(|(_, r)| r.kind == RouteKind::Local)
    {
        return Some((*key, Decider::Local));
    }
    match preferred(fib.range(FibKey::bounds(RouteTable::Main, *prefix)))? {
        Ok((key, route)) => Some((*key, Decider::Main(route))),
        Err(key) => Some((*key, Decider::Kernel)),
    }
}

/// How the fast path should handle `prefix`.
fn desired_route(state: &State, ifaces: &Ifaces, prefix: &IpNet) -> Option<Desired> {
    Some(match deciding(&state.observed.fib, prefix)?.1 {
        Decider::Local => Desired::Local,
        Decider::Main(route) => main_route(route, ifaces),
        Decider::Kernel => Desired::Kernel,
    })
}

fn desired_neighbor(
    state: &State,
    ifaces: &Ifaces,
    ifindex: u32,
    ip: IpAddr,
) -> Option<NeighEntry> {
    if !ifaces.map.contains_key(&ifindex) {
        return None;
    }
    let n = state.observed.neighbors.get(&(ifindex, ip))?;
    let mac = n.mac.filter(|_| n.state.usable())?;
    Some(NeighEntry {
        mac: mac.0,
        _pad: [0; 2],
    })
}

pub struct L3Sizes {
    pub routes_v4: usize,
    pub routes_v6: usize,
    pub nexthop_groups: usize,
    pub neighbors: usize,
    pub interfaces: usize,
}

/// The first `limit` prefixes after `after` that the FIB has a route to or the maps hold,
/// in order.
fn next_prefixes<V>(
    state: &State,
    programmed: &BTreeMap<IpNet, V>,
    after: Bound<IpNet>,
    limit: usize,
) -> Vec<IpNet> {
    let fib = &state.observed.fib;
    let mut prefixes: BTreeSet<IpNet> = programmed
        .range((after, Bound::Unbounded))
        .take(limit)
        .map(|(p, _)| *p)
        .collect();
    // The FIB is keyed by table first: each table's routes are in prefix order.
    for table in [RouteTable::Main, RouteTable::Local] {
        let start = match after {
            Bound::Included(p) => Bound::Included(*FibKey::bounds(table, p).start()),
            Bound::Excluded(p) => Bound::Excluded(*FibKey::bounds(table, p).end()),
            Bound::Unbounded => Bound::Included(*FibKey::bounds(table, LOWEST_PREFIX).start()),
        };
        let mut taken = 0;
        for key in fib
            .range((start, Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.table == table)
        {
            if prefixes.insert(key.prefix) {
                taken += 1;
                if taken == limit {
                    break;
                }
            }
        }
    }
    prefixes.into_iter().take(limit).collect()
}

/// The prefix every other sorts after.
const LOWEST_PREFIX: IpNet = IpNet::V4(ipnet::Ipv4Net::new_assert(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));

/// What the L3 maps hold, and what could not be written to them.
#[derive(Default)]
pub struct L3 {
    ifaces: BTreeMap<u32, L3Iface>,
    vlan_l3: BTreeMap<u16, L3Iface>,
    /// What the route maps hold per prefix (a million routes: this is the one per-route
    /// mirror the module keeps; what it means is in `groups`).
    routes: BTreeMap<IpNet, RouteEntry>,
    /// How many of `routes` are IPv4: counted as they change, since every report of a
    /// sync says it (a count of a million routes at each was most of a small sync's cost).
    routes_v4: usize,
    nhgs: BTreeMap<Arc<[Nexthop]>, (u32, usize)>,
    /// The nexthops of each group id of `nhgs`.
    groups: BTreeMap<u32, Arc<[Nexthop]>>,
    /// How many routes `routes` was last compacted at.
    compacted: usize,
    /// Where the search for a free group id starts: the id after the last one given.
    next_group: u32,
    neighs: BTreeMap<NeighKey, NeighEntry>,
    /// The refused routes: the prefixes whose entry or group a map would not take (full,
    /// or no memory), and why.
    route_errors: BTreeMap<IpNet, String>,
    route_retries: Retries<IpNet>,
    /// The refused neighbours: those the full (or memoryless) NEIGHS map would not take,
    /// and why; their packets go to the kernel meanwhile.
    neigh_errors: BTreeMap<NeighKey, String>,
    neigh_retries: Retries<NeighKey>,
}

/// Rounds of retries of what a map refused (routes, neighbours), a chunk at a time.
#[derive(Debug)]
struct Retries<K> {
    /// Something went from the maps since the last round began: they may have room now.
    room_freed: bool,
    /// Where the round under way goes on, after this key.
    after: Option<K>,
}

impl<K> Default for Retries<K> {
    fn default() -> Self {
        Self {
            room_freed: false,
            after: None,
        }
    }
}

impl<K: Ord + Copy> Retries<K> {
    /// The next refused keys to try again, at most `limit`, going round `refused` from
    /// where the last call stopped. A round starts when the maps may have room they lacked
    /// at the refusals (something went since), or on `periodic` (memory an ENOMEM lacked
    /// can come back without a change of ours); a round of a million refused entries goes
    /// a chunk at a time, and none starts without a reason.
    fn next<V>(&mut self, refused: &BTreeMap<K, V>, limit: usize, periodic: bool) -> Vec<K> {
        let after = match self.after {
            Some(key) => {
                // A periodic retry due during a round comes after it.
                self.room_freed |= periodic;
                Bound::Excluded(key)
            }
            None if self.room_freed || periodic => {
                // What goes during this round starts the next.
                self.room_freed = false;
                Bound::Unbounded
            }
            None => return Vec::new(),
        };
        let keys: Vec<K> = refused
            .range((after, Bound::Unbounded))
            .take(limit)
            .map(|(key, _)| *key)
            .collect();
        self.after = (keys.len() == limit)
            .then(|| keys.last().copied())
            .flatten();
        keys
    }
}

/// The routes and neighbours a sync looked at: their `datapath-route` and
/// `datapath-neighbor` rows are written again from what the maps now hold.
#[derive(Default)]
pub struct Touched {
    prefixes: BTreeSet<IpNet>,
    neighbors: BTreeSet<NeighKey>,
}

fn key4(prefix: &IpNet) -> Option<Key<[u8; 4]>> {
    match prefix {
        IpNet::V4(p) => Some(Key::new(u32::from(p.prefix_len()), p.network().octets())),
        IpNet::V6(_) => None,
    }
}

fn key6(prefix: &IpNet) -> Option<Key<[u8; 16]>> {
    match prefix {
        IpNet::V6(p) => Some(Key::new(u32::from(p.prefix_len()), p.network().octets())),
        IpNet::V4(_) => None,
    }
}

fn ignore_missing(result: Result<(), MapError>, name: &'static str) -> Result<(), DatapathError> {
    match result {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(map_err(name)(e)),
    }
}

impl L3 {
    /// Read back what the maps hold: a restarted module starts from there and changes
    /// only what differs.
    pub fn load(dp: &mut Datapath) -> Result<Self, DatapathError> {
        let mut l3 = L3::default();
        let mut groups = BTreeMap::new();
        for item in dp.l3.nhgs.iter() {
            let (id, group) = item.map_err(map_err("NHGS"))?;
            let count = (group.count as usize).min(MAX_ECMP);
            groups.insert(id, Arc::<[Nexthop]>::from(&group.nexthops[..count]));
        }
        let mut routes = Vec::new();
        for item in dp.l3.routes4.iter() {
            let (key, entry) = item.map_err(map_err("ROUTES4"))?;
            let addr = IpAddr::from(key.data());
            routes.push((IpNet::new(addr, key.prefix_len() as u8), entry));
        }
        for item in dp.l3.routes6.iter() {
            let (key, entry) = item.map_err(map_err("ROUTES6"))?;
            let addr = IpAddr::from(key.data());
            routes.push((IpNet::new(addr, key.prefix_len() as u8), entry));
        }
        for (prefix, entry) in routes {
            let Ok(prefix) = prefix else { continue };
            // A forward entry whose group is gone (an interrupted run) is kept: nothing
            // equals it, so the next sync of its prefix rewrites or removes it.
            if entry.kind == ROUTE_FORWARD
                && let Some(nexthops) = groups.get(&entry.nhg)
            {
                l3.nhgs.entry(nexthops.clone()).or_insert((entry.nhg, 0)).1 += 1;
                l3.groups.insert(entry.nhg, nexthops.clone());
            }
            l3.routes_v4 += usize::from(prefix.addr().is_ipv4());
            l3.routes.insert(prefix, entry);
        }
        // Groups no route uses are left from an interrupted run: remove them.
        for (id, nexthops) in groups {
            if !l3.nhgs.contains_key(&nexthops) {
                ignore_missing(dp.l3.nhgs.remove(&id), "NHGS")?;
            }
        }
        for item in dp.l3.ifaces.iter() {
            let (ifindex, iface) = item.map_err(map_err("L3_IFACES"))?;
            l3.ifaces.insert(ifindex, iface);
        }
        for (vid, item) in dp.l3.vlan_l3.iter().enumerate() {
            let iface = item.map_err(map_err("VLAN_L3"))?;
            if iface != L3Iface::default() {
                l3.vlan_l3.insert(vid as u16, iface);
            }
        }
        for item in dp.l3.neighs.iter() {
            let (key, entry) = item.map_err(map_err("NEIGHS"))?;
            l3.neighs.insert(key, entry);
        }
        Ok(l3)
    }

    /// Bring every L3 map in line with `state`, all under the one state. (The datapath
    /// module goes a chunk of routes at a time: [`L3::sync_start`],
    /// [`L3::sync_routes_after`], [`L3::sync_gone_ifaces`].)
    pub fn sync(&mut self, dp: &mut Datapath, state: &State) -> Result<Touched, DatapathError> {
        let mut touched = self.sync_start(dp, state)?;
        let mut after = Bound::Unbounded;
        while let Some(last) = self.sync_routes_after(dp, state, after, usize::MAX, &mut touched)? {
            after = Bound::Excluded(last);
        }
        self.sync_gone_ifaces(dp, state)?;
        Ok(touched)
    }

    /// Bring the L3 interfaces and neighbours in line with `state`: what goes before the
    /// routes.
    pub fn sync_start(
        &mut self,
        dp: &mut Datapath,
        state: &State,
    ) -> Result<Touched, DatapathError> {
        let mut touched = Touched::default();
        let ifaces = desired_ifaces(state);
        for (ifindex, iface) in &ifaces.map {
            if self.ifaces.get(ifindex) != Some(iface) {
                dp.l3
                    .ifaces
                    .insert(ifindex, iface, 0)
                    .map_err(map_err("L3_IFACES"))?;
                self.ifaces.insert(*ifindex, *iface);
            }
        }
        let vlan_l3: BTreeMap<u16, L3Iface> = ifaces
            .map
            .values()
            .filter(|i| i.vlan != 0)
            .map(|i| (i.vlan, *i))
            .collect();
        let vids: BTreeSet<u16> = vlan_l3.keys().chain(self.vlan_l3.keys()).copied().collect();
        for vid in vids {
            let want = vlan_l3.get(&vid).copied().unwrap_or_default();
            if self.vlan_l3.get(&vid).copied().unwrap_or_default() != want {
                dp.l3
                    .vlan_l3
                    .set(u32::from(vid), want, 0)
                    .map_err(map_err("VLAN_L3"))?;
                if want == L3Iface::default() {
                    self.vlan_l3.remove(&vid);
                } else {
                    self.vlan_l3.insert(vid, want);
                }
            }
        }

        let neighbors: Vec<(u32, IpAddr)> = state
            .observed
            .neighbors
            .keys()
            .copied()
            .chain(self.neighs.keys().map(|k| (k.ifindex, ip_of(k.addr))))
            .collect();
        self.sync_neighbors(dp, state, &ifaces, neighbors, &mut touched)?;
        Ok(touched)
    }

    /// Bring the routes to the next `limit` prefixes after `after` (of the FIB and of the
    /// maps, in prefix order) in line with `state`; returns the last of them, where the
    /// next chunk starts, or None when none are left. A sync of every route goes a chunk
    /// at a time, each under its own read lock of StateDb, so that writers (and the
    /// readers queued behind them) wait for one chunk, not for a million routes.
    pub fn sync_routes_after(
        &mut self,
        dp: &mut Datapath,
        state: &State,
        after: Bound<IpNet>,
        limit: usize,
        touched: &mut Touched,
    ) -> Result<Option<IpNet>, DatapathError> {
        let ifaces = desired_ifaces(state);
        let prefixes = next_prefixes(state, &self.routes, after, limit);
        let last = (prefixes.len() == limit)
            .then(|| prefixes.last().copied())
            .flatten();
        self.sync_routes(dp, state, &ifaces, prefixes, touched)?;
        Ok(last)
    }

    /// Remove the L3 interfaces config no longer asks for: after the routes, which no
    /// longer lead out of them then.
    pub fn sync_gone_ifaces(
        &mut self,
        dp: &mut Datapath,
        state: &State,
    ) -> Result<(), DatapathError> {
        let ifaces = desired_ifaces(state);
        let gone: Vec<u32> = self
            .ifaces
            .keys()
            .filter(|i| !ifaces.map.contains_key(i))
            .copied()
            .collect();
        for ifindex in gone {
            ignore_missing(dp.l3.ifaces.remove(&ifindex), "L3_IFACES")?;
            self.ifaces.remove(&ifindex);
        }
        Ok(())
    }

    /// Re-evaluate the given neighbours.
    pub fn sync_neighbors(
        &mut self,
        dp: &mut Datapath,
        state: &State,
        ifaces: &Ifaces,
        neighbors: impl IntoIterator<Item = (u32, IpAddr)>,
        touched: &mut Touched,
    ) -> Result<(), DatapathError> {
        for (ifindex, ip) in neighbors {
            let key = NeighKey {
                ifindex,
                addr: addr16(ip),
            };
            touched.neighbors.insert(key);
            let want = desired_neighbor(state, ifaces, ifindex, ip);
            if want.is_none() || self.neighs.get(&key) == want.as_ref() {
                self.neigh_errors.remove(&key);
            }
            match want {
                Some(entry) if self.neighs.get(&key) != Some(&entry) => {
                    // A full table leaves the neighbour to the kernel (packets punted).
                    match dp.l3.neighs.insert(key, entry, 0) {
                        Ok(()) => {
                            self.neighs.insert(key, entry);
                            self.neigh_errors.remove(&key);
                        }
                        Err(e) => {
                            let e = super::error_chain(&map_err("NEIGHS")(e));
                            tracing::warn!(%ip, error = %e, "neighbor not programmed");
                            self.neigh_errors.insert(key, e);
                        }
                    }
                }
                Some(_) => {}
                None => {
                    if self.neighs.remove(&key).is_some() {
                        ignore_missing(dp.l3.neighs.remove(&key), "NEIGHS")?;
                        self.neigh_retries.room_freed = true;
                    }
                }
            }
        }
        Ok(())
    }

    /// The group id for a set of nexthops, writing the group if it is new.
    fn acquire(&mut self, dp: &mut Datapath, nexthops: &[Nexthop]) -> Result<u32, DatapathError> {
        if let Some((id, refs)) = self.nhgs.get_mut(nexthops) {
            *refs += 1;
            return Ok(*id);
        }
        // The next id no group has, from where the last search stopped: O(1) for each new
        // group (finding the lowest free id meant a walk of every group, for each one).
        let mut id = self.next_group.max(1);
        while self.groups.contains_key(&id) {
            id = id.checked_add(1).unwrap_or(1);
        }
        self.next_group = id.checked_add(1).unwrap_or(1);
        let mut group = NexthopGroup {
            count: nexthops.len() as u32,
            _pad: 0,
            nexthops: [Nexthop {
                ifindex: 0,
                flags: 0,
                gateway: [0; 16],
                out: L3Iface::default(),
            }; MAX_ECMP],
        };
        group.nexthops[..nexthops.len()].copy_from_slice(nexthops);
        dp.l3.nhgs.insert(id, group, 0).map_err(map_err("NHGS"))?;
        let shared: Arc<[Nexthop]> = nexthops.into();
        self.nhgs.insert(shared.clone(), (id, 1));
        self.groups.insert(id, shared);
        Ok(id)
    }

    fn release(&mut self, dp: &mut Datapath, nexthops: &[Nexthop]) -> Result<(), DatapathError> {
        if let Some((id, refs)) = self.nhgs.get_mut(nexthops) {
            *refs -= 1;
            if *refs == 0 {
                let id = *id;
                self.nhgs.remove(nexthops);
                self.groups.remove(&id);
                ignore_missing(dp.l3.nhgs.remove(&id), "NHGS")?;
                self.route_retries.room_freed = true;
            }
        }
        Ok(())
    }

    /// Re-evaluate the routes to the given prefixes.
    pub fn sync_routes(
        &mut self,
        dp: &mut Datapath,
        state: &State,
        ifaces: &Ifaces,
        prefixes: impl IntoIterator<Item = IpNet>,
        touched: &mut Touched,
    ) -> Result<(), DatapathError> {
        for prefix in prefixes {
            touched.prefixes.insert(prefix);
            let want = desired_route(state, ifaces, &prefix);
            let have = self.routes.get(&prefix).map(|entry| self.desired(entry));
            if want == have {
                self.route_errors.remove(&prefix);
                continue;
            }
            // A full table (or any map failure) leaves the prefix to the kernel: it is
            // logged, and the next sync tries again.
            let entry = match &want {
                Some(Desired::Forward(nexthops)) => match self.acquire(dp, nexthops) {
                    Ok(nhg) => Some(RouteEntry {
                        kind: ROUTE_FORWARD,
                        nhg,
                    }),
                    Err(e) => {
                        let e = super::error_chain(&e);
                        let error = format!("nexthop group not written: {e}");
                        if self.route_errors.get(&prefix) != Some(&error) {
                            tracing::warn!(%prefix, error = %e, "nexthop group not programmed; the kernel forwards");
                        }
                        self.route_errors.insert(prefix, error);
                        self.demote_to_kernel(dp, prefix)?;
                        continue;
                    }
                },
                Some(Desired::Local) => Some(RouteEntry {
                    kind: ROUTE_LOCAL,
                    nhg: 0,
                }),
                Some(Desired::Kernel) => Some(RouteEntry {
                    kind: ROUTE_KERNEL,
                    nhg: 0,
                }),
                None => None,
            };
            let written = match (entry, key4(&prefix), key6(&prefix)) {
                (Some(entry), Some(key), _) => dp
                    .l3
                    .routes4
                    .insert(&key, entry, 0)
                    .map_err(map_err("ROUTES4")),
                (Some(entry), _, Some(key)) => dp
                    .l3
                    .routes6
                    .insert(&key, entry, 0)
                    .map_err(map_err("ROUTES6")),
                (None, Some(key), _) => ignore_missing(dp.l3.routes4.remove(&key), "ROUTES4"),
                (None, _, Some(key)) => ignore_missing(dp.l3.routes6.remove(&key), "ROUTES6"),
                _ => unreachable!("a prefix is IPv4 or IPv6"),
            };
            if let Err(e) = written {
                let e = super::error_chain(&e);
                let error = format!("route not written: {e}");
                // Tried again at each sync of the prefix: said once, not at each try.
                if self.route_errors.get(&prefix) != Some(&error) {
                    tracing::warn!(%prefix, error = %e, "route not programmed; the kernel forwards");
                }
                self.route_errors.insert(prefix, error);
                if let Some(Desired::Forward(nexthops)) = &want {
                    // The group written for this route only: its going frees no room the
                    // refusal lacked, and must not start another round of retries.
                    let freed = self.route_retries.room_freed;
                    self.release(dp, nexthops)?;
                    self.route_retries.room_freed = freed;
                }
                continue;
            }
            self.route_errors.remove(&prefix);
            let v4 = usize::from(prefix.addr().is_ipv4());
            let old = self.routes.remove(&prefix);
            if let Some(old) = old {
                self.routes_v4 -= v4;
                if let Desired::Forward(old) = self.desired(&old) {
                    self.release(dp, &old)?;
                }
            }
            match entry {
                Some(entry) => {
                    self.routes.insert(prefix, entry);
                    self.routes_v4 += v4;
                }
                None => self.route_retries.room_freed |= old.is_some(),
            }
        }
        Ok(())
    }

    /// A prefix whose new nexthops the maps refused goes to the kernel, which has the
    /// route as it is now, rather than on by the nexthops the maps held for it (a gateway
    /// the routing protocol may just have withdrawn). Overwriting its entry needs no room.
    fn demote_to_kernel(&mut self, dp: &mut Datapath, prefix: IpNet) -> Result<(), DatapathError> {
        let Some(old) = self.routes.get(&prefix).filter(|e| e.kind == ROUTE_FORWARD) else {
            return Ok(());
        };
        let Desired::Forward(old) = self.desired(old) else {
            return Ok(());
        };
        let entry = RouteEntry {
            kind: ROUTE_KERNEL,
            nhg: 0,
        };
        let written = match (key4(&prefix), key6(&prefix)) {
            (Some(key), _) => dp
                .l3
                .routes4
                .insert(&key, entry, 0)
                .map_err(map_err("ROUTES4")),
            (_, Some(key)) => dp
                .l3
                .routes6
                .insert(&key, entry, 0)
                .map_err(map_err("ROUTES6")),
            _ => unreachable!("a prefix is IPv4 or IPv6"),
        };
        if let Err(e) = written {
            tracing::warn!(%prefix, error = %super::error_chain(&e), "route not handed to the kernel; the fast path keeps its former nexthops");
            return Ok(());
        }
        self.routes.insert(prefix, entry);
        self.release(dp, &old)
    }

    /// The next refused prefixes to try again, at most `limit` (see `Retries::next`).
    pub fn refused_to_retry(&mut self, limit: usize, periodic: bool) -> Vec<IpNet> {
        self.route_retries.next(&self.route_errors, limit, periodic)
    }

    /// The next refused neighbours to try again, at most `limit` (see `Retries::next`).
    pub fn refused_neighbors_to_retry(
        &mut self,
        limit: usize,
        periodic: bool,
    ) -> Vec<(u32, IpAddr)> {
        self.neigh_retries
            .next(&self.neigh_errors, limit, periodic)
            .into_iter()
            .map(|key| (key.ifindex, ip_of(key.addr)))
            .collect()
    }

    /// Rebuild the route mirror with full nodes when it has grown by a quarter (see
    /// `statedb::compact`); called with no lock of StateDb held.
    pub fn compact(&mut self) {
        if crate::statedb::compact(&mut self.routes, &mut self.compacted) {
            crate::statedb::release_free_memory();
        }
    }

    /// What a route entry of the maps does.
    fn desired(&self, entry: &RouteEntry) -> Desired {
        match entry.kind {
            ROUTE_FORWARD => match self.groups.get(&entry.nhg) {
                Some(nexthops) => Desired::Forward(nexthops.clone()),
                // Not written by this module: nothing compares equal to it, so the next
                // sync of the prefix writes it anew.
                None => Desired::Forward(Arc::from([])),
            },
            ROUTE_LOCAL => Desired::Local,
            _ => Desired::Kernel,
        }
    }

    /// Apply only the fib and neighbour rows commits changed.
    pub fn sync_changed(
        &mut self,
        dp: &mut Datapath,
        state: &State,
        prefixes: impl IntoIterator<Item = IpNet>,
        neighbors: impl IntoIterator<Item = (u32, IpAddr)>,
    ) -> Result<Touched, DatapathError> {
        let ifaces = desired_ifaces(state);
        let mut touched = Touched::default();
        self.sync_neighbors(dp, state, &ifaces, neighbors, &mut touched)?;
        self.sync_routes(dp, state, &ifaces, prefixes, &mut touched)?;
        Ok(touched)
    }

    /// Write the `datapath-route` and `datapath-neighbor` rows of what a sync touched:
    /// what the maps hold for each, or why not.
    pub fn publish(&self, tx: &mut DatapathTx<'_>, touched: &Touched) {
        for prefix in &touched.prefixes {
            let programmed = self.routes.get(prefix).map(|e| (e, self.desired(e)));
            let error = self.route_errors.get(prefix).cloned();
            // The route that decides, as the FIB is now (not kept per prefix since the
            // sync: that would cost a key per route; a route that changed since is
            // synced again by its own commit).
            let row = deciding(&tx.observed().fib, prefix)
                .map(|(key, _)| key)
                .filter(|_| programmed.is_some() || error.is_some())
                .map(|key| {
                    (
                        key,
                        DatapathRoute {
                            action: programmed.as_ref().map(|(_, desired)| desired.action()),
                            nexthop_group: programmed
                                .as_ref()
                                .filter(|(entry, _)| entry.kind == ROUTE_FORWARD)
                                .map(|(entry, _)| entry.nhg),
                            error: error.map(String::into_boxed_str),
                        },
                    )
                });
            // The row follows the route that decides: a row under another route to the
            // prefix (the one that decided before) goes.
            let stale: Vec<FibKey> = [RouteTable::Main, RouteTable::Local]
                .into_iter()
                .flat_map(|table| {
                    tx.observed()
                        .datapath_routes
                        .range(FibKey::bounds(table, *prefix))
                        .map(|(k, _)| *k)
                        .filter(|k| row.as_ref().is_none_or(|(key, _)| key != k))
                        .collect::<Vec<_>>()
                })
                .collect();
            for key in stale {
                tx.route(key, None);
            }
            if let Some((key, row)) = row {
                tx.route(key, Some(row));
            }
        }
        for key in &touched.neighbors {
            let ip = ip_of(key.addr);
            let mac = self.neighs.get(key).map(|n| crate::mac::MacAddr(n.mac));
            let error = self.neigh_errors.get(key).cloned();
            let row = (mac.is_some() || error.is_some()).then_some(DatapathNeighbor {
                ip,
                ifindex: key.ifindex,
                mac,
                error,
            });
            tx.neighbor(key.ifindex, ip, row);
        }
    }

    /// What the L3 maps hold.
    pub fn sizes(&self) -> L3Sizes {
        L3Sizes {
            routes_v4: self.routes_v4,
            routes_v6: self.routes.len() - self.routes_v4,
            nexthop_groups: self.nhgs.len(),
            neighbors: self.neighs.len(),
            interfaces: self.ifaces.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statedb::{FibNexthop, ProtocolName, RouteProtocol};

    fn route(prefix: &str, tos: u8, metric: u32, ifindex: u32) -> (FibKey, FibRoute) {
        let route = FibRoute {
            prefix: prefix.parse().unwrap(),
            table: RouteTable::Main,
            tos,
            metric,
            kind: RouteKind::Unicast,
            protocol: RouteProtocol::Named(ProtocolName::Static),
            nexthops: smallvec::smallvec![FibNexthop {
                gateway: None,
                ifindex,
            }],
            hardware: None,
        };
        (route.key(), route)
    }

    fn choice(routes: &[(FibKey, FibRoute)]) -> Option<Result<u32, u32>> {
        preferred(routes.iter().map(|(k, r)| (k, r)))
            .map(|c| c.map(|(k, _)| k.ifindex).map_err(|k| k.ifindex))
    }

    // What this shows: of several routes to a prefix the fast path follows the one the
    // kernel uses, the lowest metric, and leaves to the kernel what it cannot tell: equal
    // lowest metrics, or a TOS route.
    #[test]
    fn the_lowest_metric_decides_and_the_rest_is_the_kernels() {
        assert_eq!(choice(&[]), None);
        let p = "10.1.0.0/16";
        assert_eq!(
            choice(&[route(p, 0, 20, 2), route(p, 0, 10, 3)]),
            Some(Ok(3))
        );
        assert_eq!(choice(&[route(p, 0, 20, 2)]), Some(Ok(2)));
        assert_eq!(
            choice(&[
                route(p, 0, 256, 2),
                route(p, 0, 256, 3),
                route(p, 0, 300, 4)
            ]),
            Some(Err(2))
        );
        assert_eq!(
            choice(&[route(p, 0, 10, 2), route(p, 8, 20, 3)]),
            Some(Err(2))
        );
    }

    // What this shows: the refused routes are tried again, a chunk at a time and each once
    // per round, only once room may have appeared (or on the periodic retry); room freed
    // during a round brings another round after it.
    #[test]
    fn refused_routes_are_retried_a_chunk_at_a_time_once_room_appears() {
        let prefix = |i: u8| -> IpNet { format!("10.{i}.0.0/16").parse().unwrap() };
        let mut l3 = L3::default();
        for i in 0..5 {
            l3.route_errors.insert(prefix(i), "full".into());
        }
        assert_eq!(l3.refused_to_retry(2, false), Vec::<IpNet>::new());
        l3.route_retries.room_freed = true;
        assert_eq!(l3.refused_to_retry(2, false), [prefix(0), prefix(1)]);
        // Room freed during the round: the round goes on, and another follows it.
        l3.route_retries.room_freed = true;
        assert_eq!(l3.refused_to_retry(2, false), [prefix(2), prefix(3)]);
        assert_eq!(l3.refused_to_retry(2, false), [prefix(4)]);
        assert_eq!(
            l3.refused_to_retry(3, false),
            [prefix(0), prefix(1), prefix(2)]
        );
        assert_eq!(l3.refused_to_retry(3, false), [prefix(3), prefix(4)]);
        assert_eq!(l3.refused_to_retry(3, false), Vec::<IpNet>::new());
        assert_eq!(l3.refused_to_retry(5, true).len(), 5);
        assert_eq!(l3.refused_to_retry(5, false), Vec::<IpNet>::new());
        // A periodic retry due during a round is not lost: another round follows.
        assert_eq!(l3.refused_to_retry(2, true), [prefix(0), prefix(1)]);
        assert_eq!(l3.refused_to_retry(2, true), [prefix(2), prefix(3)]);
        assert_eq!(l3.refused_to_retry(2, false), [prefix(4)]);
        assert_eq!(l3.refused_to_retry(5, false).len(), 5);
        assert_eq!(l3.refused_to_retry(5, false), Vec::<IpNet>::new());
    }
}
