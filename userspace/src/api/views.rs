//! The views `xnos show` prints and `GET /v1/<view>` sends: computed from one consistent
//! StateDb state (and the live counters), never from what the datapath should have done.
//! Pure functions of the state, so they are unit-tested without root.

use std::{collections::BTreeMap, net::IpAddr, ops::Bound};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use xnos_common::{DropReason, PortStats, PuntReason};

use crate::{
    config::{PortMode, PortModeName},
    datapath::StatsReader,
    mac::MacAddr,
    statedb::{
        Change, DatapathMode, DatapathRoute, FibKey, Hardware, LearnedBy, NeighborState, OperState,
        ProtocolName, RouteAction, RouteKind, RouteProtocol, RouteTable, State, words,
    },
};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CountersView {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub flooded: u64,
    /// Frames passed to the kernel's netdev of the port by the L2 pipeline (control
    /// frames, routed-port traffic not for the router); not L3 punts.
    pub to_kernel: u64,
    /// Packets received on the port that L3 punted to the kernel (by reason, for all ports
    /// together, in `show routes`).
    pub punted: u64,
    pub learned: u64,
    /// New MACs the full FDB had no room for.
    pub learn_refused: u64,
    /// Learn events the full ring had no room for: their MACs are in the FDB map, and
    /// xnosd reads the map whole when this moves (no entry is lost, only news of it).
    #[serde(default)]
    pub learn_events_lost: u64,
    /// Drops by reason (every reason listed, zero or not).
    pub drops: BTreeMap<String, u64>,
}

impl From<PortStats> for CountersView {
    fn from(s: PortStats) -> Self {
        Self {
            rx_packets: s.rx_packets,
            rx_bytes: s.rx_bytes,
            tx_packets: s.tx_packets,
            tx_bytes: s.tx_bytes,
            flooded: s.flooded,
            to_kernel: s.to_kernel,
            punted: s.punted,
            learned: s.learned,
            learn_refused: s.learn_refused,
            learn_events_lost: s.learn_events_lost,
            drops: DropReason::ALL
                .iter()
                .map(|r| (r.name().to_string(), s.drops[*r as usize]))
                .collect(),
        }
    }
}

impl CountersView {
    pub fn total_drops(&self) -> u64 {
        self.drops.values().sum()
    }
}

words! {
    /// Where an FDB entry comes from.
    pub enum FdbKind {
        /// From config (`[[fdb]]`); learning never overwrites it.
        Static = "static",
        Learned = "learned",
    }
}

words! {
    /// What an L3 interface routes for.
    pub enum InterfaceKind {
        /// A VLAN's routed interface.
        Svi = "svi",
        /// A port that is not in any VLAN.
        Routed = "routed",
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PortView {
    pub name: String,
    pub ifindex: u32,
    pub mode: PortModeName,
    /// The VLAN of untagged frames (access VLAN or trunk native VLAN).
    pub untagged_vlan: Option<u16>,
    /// VLANs carried tagged (trunk ports).
    pub tagged_vlans: Vec<u16>,
    /// How the port is forwarded.
    pub datapath: DatapathMode,
    /// Why the port uses that fast path.
    pub datapath_reason: Option<String>,
    /// The XDP features the port's driver reports (`basic,redirect,ndo-xmit,...`).
    pub xdp_features: Option<String>,
    /// Whether native-XDP ports can redirect frames to this port (the driver has
    /// `ndo-xmit`); frames they send it are dropped otherwise.
    pub xdp_redirect_target: Option<bool>,
    /// Switchdev ports: the bridge that carries the port, and whether the kernel reports
    /// the port in it.
    pub bridge: Option<String>,
    pub bridge_member: Option<bool>,
    /// The link's operational state; None when the kernel has no such link.
    pub link: Option<OperState>,
    pub error: Option<String>,
    pub counters: CountersView,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct VlanView {
    pub id: u16,
    pub name: Option<String>,
    pub untagged_ports: Vec<String>,
    pub tagged_ports: Vec<String>,
    pub fdb_entries: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FdbView {
    pub vlan: u16,
    pub mac: MacAddr,
    pub port: String,
    pub kind: FdbKind,
    /// Station moves seen since it was learned.
    pub moves: u64,
    /// Who learned it; None for static entries.
    pub learned_by: Option<LearnedBy>,
    /// The kernel reports the entry as offloaded to the switch ASIC.
    pub hardware: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct InterfaceView {
    pub name: String,
    pub kind: InterfaceKind,
    pub vlan: Option<u16>,
    pub port: Option<String>,
    pub addresses: Vec<IpNet>,
    pub mac: MacAddr,
    pub ifindex: u32,
    /// The link's operational state; None when the kernel has no such link.
    pub link: Option<OperState>,
    /// What the kernel module could not program.
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NexthopView {
    pub gateway: Option<IpAddr>,
    pub interface: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RouteView {
    pub prefix: IpNet,
    pub table: RouteTable,
    /// Of routes to one prefix, the kernel uses the one of lowest metric.
    pub metric: u32,
    pub kind: RouteKind,
    pub protocol: RouteProtocol,
    pub nexthops: Vec<NexthopView>,
    /// Whether the fast path forwards (or, for local routes, recognises) it, as the
    /// datapath programmed it; the kernel handles the rest.
    pub fast_path: bool,
    /// What the fast path's maps hold for the prefix (None: nothing), as the datapath
    /// reports it.
    pub fast_path_action: Option<RouteAction>,
    /// Why the maps do not hold what the kernel's route asks for.
    pub fast_path_error: Option<String>,
    /// What a switch ASIC does with it, as the kernel reports; None when no switchdev
    /// driver took it.
    pub hardware: Option<Hardware>,
    /// For a config route: why the kernel does not have it as configured (a config route
    /// the kernel refused is shown with it, though not in the FIB).
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct L3CountersView {
    pub routed_v4: u64,
    pub routed_v6: u64,
    /// Packets handed to the kernel, by reason.
    pub punts: BTreeMap<String, u64>,
    /// Punts dropped by the punt rate limiter.
    pub punts_rate_limited: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RoutesView {
    pub routes: Vec<RouteView>,
    pub counters: L3CountersView,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NeighborView {
    pub ip: IpAddr,
    pub mac: Option<MacAddr>,
    pub interface: String,
    pub state: NeighborState,
    /// Whether the fast path has it, as the datapath programmed it.
    pub fast_path: bool,
    /// Why the datapath could not write it.
    pub fast_path_error: Option<String>,
}

/// One row of a raw table (`GET /v1/db/<table>`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowView {
    pub key: String,
    pub row: Value,
}

/// One line of a watch stream (`GET /v1/watch/<table>`), newline-delimited JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum WatchEvent {
    /// The whole table; sent first.
    Snapshot { generation: u64, rows: Vec<RowView> },
    /// One row changed in commit `generation`.
    Change {
        generation: u64,
        #[serde(flatten)]
        change: Change,
    },
    /// The last line: the watcher did not read its changes fast enough and xnosd stopped
    /// queueing them after commit `generation`. Watch again to start from a fresh snapshot.
    FellBehind { generation: u64, error: String },
}

pub fn ports(state: &State, stats: Option<&StatsReader>) -> Vec<PortView> {
    {
        state
            .config
            .ports
            .values()
            .map(|port| {
                let status = state.observed.port_status.get(&port.name);
                let bridge = state.observed.bridge_ports.get(&port.name);
                let counters = match (status, stats) {
                    // A switchdev port has no fast-path counters (the bridge or
                    // the ASIC forwards it).
                    (Some(s), Some(stats))
                        if s.ifindex != 0 && s.datapath != DatapathMode::Switchdev =>
                    {
                        stats.get(s.stats_slot).map(Into::into).unwrap_or_default()
                    }
                    _ => CountersView::from(PortStats::default()),
                };
                let (mode, tagged_vlans) = match &port.mode {
                    PortMode::Access { .. } => (PortModeName::Access, Vec::new()),
                    PortMode::Trunk { vlans, .. } => {
                        (PortModeName::Trunk, vlans.iter().copied().collect())
                    }
                };
                PortView {
                    name: port.name.clone(),
                    ifindex: status.map_or(0, |s| s.ifindex),
                    mode,
                    untagged_vlan: port.mode.untagged_vlan(),
                    tagged_vlans,
                    datapath: status.map_or(DatapathMode::None, |s| s.datapath),
                    datapath_reason: status.and_then(|s| s.datapath_reason.clone()),
                    xdp_features: status.and_then(|s| s.xdp_features.clone()),
                    xdp_redirect_target: status.and_then(|s| s.xdp_redirect_target),
                    link: state.observed.links.get(&port.name).map(|l| l.oper_state),
                    bridge: bridge.and_then(|b| b.bridge.clone()),
                    bridge_member: bridge.map(|b| b.member),
                    error: status
                        .and_then(|s| s.error.clone())
                        .or_else(|| bridge.and_then(|b| b.error.clone())),
                    counters,
                }
            })
            .collect()
    }
}

pub fn vlans(state: &State) -> Vec<VlanView> {
    {
        state
            .config
            .vlans
            .values()
            .map(|vlan| {
                let mut view = VlanView {
                    id: vlan.id,
                    name: vlan.name.clone(),
                    untagged_ports: Vec::new(),
                    tagged_ports: Vec::new(),
                    fdb_entries: fdb_entries(state, vlan.id),
                };
                for port in state.config.ports.values() {
                    if port.mode.untagged_vlan() == Some(vlan.id) {
                        view.untagged_ports.push(port.name.clone());
                    } else if port.mode.vlans().contains(&vlan.id) {
                        view.tagged_ports.push(port.name.clone());
                    }
                }
                view
            })
            .collect()
    }
}

pub fn fdb(state: &State) -> Vec<FdbView> {
    fdb_views(state, Bound::Unbounded)
        .map(|(_, view)| view)
        .collect()
}

pub fn interfaces(state: &State) -> Vec<InterfaceView> {
    {
        let mac = state.config.switch.router_mac();
        state
            .config
            .interfaces
            .values()
            .map(|iface| {
                let link = state.observed.links.get(&iface.name);
                InterfaceView {
                    name: iface.name.clone(),
                    kind: if iface.vlan.is_some() {
                        InterfaceKind::Svi
                    } else {
                        InterfaceKind::Routed
                    },
                    vlan: iface.vlan,
                    port: iface
                        .port
                        .clone()
                        .or_else(|| iface.vlan.map(|v| crate::switchdev::svi_port(state, v))),
                    addresses: iface.addresses.clone(),
                    mac,
                    ifindex: link.map_or(0, |l| l.ifindex),
                    link: link.map(|l| l.oper_state),
                    error: state
                        .observed
                        .interface_status
                        .get(&iface.name)
                        .and_then(|s| s.error.clone()),
                }
            })
            .collect()
    }
}

/// The L3 counters, summed over CPUs; zeros without a counter reader.
pub fn l3_counters(stats: Option<&StatsReader>) -> L3CountersView {
    stats
        .and_then(|s| s.l3().ok())
        .map(|c| L3CountersView {
            routed_v4: c.routed_v4,
            routed_v6: c.routed_v6,
            punts: PuntReason::ALL
                .iter()
                .map(|r| (r.name().to_string(), c.punts[*r as usize]))
                .collect(),
            punts_rate_limited: c.punts_rate_limited,
        })
        .unwrap_or_default()
}

pub fn routes(state: &State, counters: L3CountersView) -> RoutesView {
    let names = ifnames(state);
    let routes = route_views(state, &names, Bound::Unbounded)
        .map(|(_, view)| view)
        .chain(refused_routes(state))
        .collect();
    RoutesView { routes, counters }
}

/// The routes of the FIB that `show routes` lists, in key order from `from` on, each with
/// its key (where a listing in parts goes on from); `names` are the links' names by
/// ifindex. The config routes the kernel refused follow them ([`refused_routes`]).
pub fn route_views<'a>(
    state: &'a State,
    names: &'a BTreeMap<u32, String>,
    from: Bound<FibKey>,
) -> impl Iterator<Item = (FibKey, RouteView)> + 'a {
    state
        .observed
        .fib
        .range((from, Bound::Unbounded))
        .filter(|(_, r)| {
            matches!(
                r.kind,
                RouteKind::Unicast
                    | RouteKind::Local
                    | RouteKind::Blackhole
                    | RouteKind::Unreachable
                    | RouteKind::Prohibit
            )
        })
        .map(move |(key, r)| {
            let programmed = published(state, key);
            let view = RouteView {
                prefix: key.prefix,
                table: key.table,
                metric: key.metric,
                kind: r.kind,
                protocol: r.protocol,
                nexthops: r
                    .nexthops
                    .iter()
                    .map(|n| NexthopView {
                        gateway: n.gateway,
                        interface: names
                            .get(&n.ifindex)
                            .cloned()
                            .unwrap_or_else(|| n.ifindex.to_string()),
                    })
                    .collect(),
                // The maps are keyed by prefix: what they hold answers for the route
                // that decides (local before main, then the lowest metric, as the
                // kernel does), which alone has a `datapath-route` row.
                fast_path: programmed.and_then(|p| p.action).is_some_and(|action| {
                    match key.table {
                        RouteTable::Local => {
                            action == RouteAction::Local && r.kind == RouteKind::Local
                        }
                        RouteTable::Main => action == RouteAction::Forward,
                    }
                }),
                fast_path_action: programmed.and_then(|p| p.action),
                fast_path_error: programmed.and_then(|p| p.error.as_deref().map(str::to_owned)),
                hardware: r.hardware,
                error: (r.protocol == RouteProtocol::Named(ProtocolName::Xnos))
                    .then(|| route_error(state, &key.prefix))
                    .flatten(),
            };
            (*key, view)
        })
}

/// What the datapath published for a FIB route. The maps hold an address as local
/// whichever interface has it: every local route to it shares the row of the one the
/// datapath followed.
fn published<'a>(state: &'a State, key: &FibKey) -> Option<&'a DatapathRoute> {
    let rows = &state.observed.datapath_routes;
    rows.get(key).or_else(|| {
        (key.table == RouteTable::Local)
            .then(|| {
                rows.range(FibKey::bounds(RouteTable::Local, key.prefix))
                    .next()
            })
            .flatten()
            .map(|(_, row)| row)
    })
}

fn route_error(state: &State, prefix: &IpNet) -> Option<String> {
    state.observed.route_status.get(prefix)?.error.clone()
}

/// The config routes the kernel refused and has no route of xnos for: they are not in the
/// FIB, and are shown with their error.
pub fn refused_routes(state: &State) -> impl Iterator<Item = RouteView> + '_ {
    let xnos = RouteProtocol::Named(ProtocolName::Xnos);
    state
        .config
        .routes
        .values()
        .filter(move |route| {
            !state
                .observed
                .fib
                .range(FibKey::bounds(RouteTable::Main, route.prefix))
                .any(|(_, r)| r.protocol == xnos)
        })
        .filter_map(move |route| {
            Some(RouteView {
                prefix: route.prefix,
                table: RouteTable::Main,
                metric: 0,
                kind: RouteKind::Unicast,
                protocol: xnos,
                nexthops: route
                    .nexthops
                    .iter()
                    .map(|gateway| NexthopView {
                        gateway: Some(*gateway),
                        interface: String::new(),
                    })
                    .collect(),
                fast_path: false,
                fast_path_action: None,
                fast_path_error: None,
                hardware: None,
                error: Some(route_error(state, &route.prefix)?),
            })
        })
}

pub fn neighbors(state: &State) -> Vec<NeighborView> {
    let names = ifnames(state);
    neighbor_views(state, &names, Bound::Unbounded)
        .map(|(_, view)| view)
        .collect()
}

/// The neighbours `show neighbors` lists, in key order (ifindex, address) from `from`
/// on, each with its key (where a listing in parts goes on from); `names` are the links'
/// names by ifindex.
pub fn neighbor_views<'a>(
    state: &'a State,
    names: &'a BTreeMap<u32, String>,
    from: Bound<(u32, IpAddr)>,
) -> impl Iterator<Item = ((u32, IpAddr), NeighborView)> + 'a {
    state
        .observed
        .neighbors
        .range((from, Bound::Unbounded))
        .filter(|(_, n)| !n.ip.is_multicast())
        .map(move |(key, n)| {
            let interface = names
                .get(&n.ifindex)
                .cloned()
                .unwrap_or_else(|| n.ifindex.to_string());
            let programmed = state.observed.datapath_neighbors.get(&(n.ifindex, n.ip));
            let view = NeighborView {
                ip: n.ip,
                mac: n.mac,
                fast_path: programmed.is_some_and(|p| p.mac.is_some()),
                fast_path_error: programmed.and_then(|p| p.error.clone()),
                interface,
                state: n.state,
            };
            (*key, view)
        })
}

pub fn ifnames(state: &State) -> BTreeMap<u32, String> {
    state
        .observed
        .links
        .values()
        .map(|l| (l.ifindex, l.name.clone()))
        .collect()
}

/// Where a row of `show fdb` sorts: by VLAN and MAC, then by where it comes from
/// ([`FdbSource`]), as one MAC may be in several of them.
pub type FdbPosition = (u16, MacAddr, FdbSource);

/// Where an FDB row comes from, in the order `show fdb` lists the rows of one MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FdbSource {
    Static,
    Xdp,
    Bridge,
}

/// The rows `show fdb` lists, in [`FdbPosition`] order from `from` on, each with its
/// position (where a listing in parts goes on from): the static entries of the config,
/// the MACs the fast path learned and those the kernel bridge learned, merged.
pub fn fdb_views(
    state: &State,
    from: Bound<FdbPosition>,
) -> impl Iterator<Item = (FdbPosition, FdbView)> + '_ {
    // Where each source starts: after `from`'s MAC in the sources up to its own, at it in
    // those after.
    let start = |source: FdbSource| match from {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Excluded((vlan, mac, after)) if source <= after => Bound::Excluded((vlan, mac)),
        Bound::Included((vlan, mac, at)) if source < at => Bound::Excluded((vlan, mac)),
        Bound::Excluded((vlan, mac, _)) | Bound::Included((vlan, mac, _)) => {
            Bound::Included((vlan, mac))
        }
    };
    type Rows<'a> = Box<dyn Iterator<Item = (FdbPosition, FdbView)> + 'a>;
    let statics: Rows<'_> = Box::new(
        state
            .config
            .fdb
            .range((start(FdbSource::Static), Bound::Unbounded))
            .map(|(&(vlan, mac), f)| {
                let view = FdbView {
                    vlan,
                    mac,
                    port: f.port.clone(),
                    kind: FdbKind::Static,
                    moves: 0,
                    learned_by: None,
                    hardware: false,
                };
                ((vlan, mac, FdbSource::Static), view)
            }),
    );
    let learned: Rows<'_> = Box::new(
        state
            .observed
            .fdb_learned
            .range((start(FdbSource::Xdp), Bound::Unbounded))
            .map(|(&(vlan, mac), f)| {
                let view = FdbView {
                    vlan,
                    mac,
                    port: f.port.clone(),
                    kind: FdbKind::Learned,
                    moves: f.moves,
                    learned_by: Some(LearnedBy::Xdp),
                    hardware: false,
                };
                ((vlan, mac, FdbSource::Xdp), view)
            }),
    );
    let bridge: Rows<'_> = Box::new(
        state
            .observed
            .bridge_fdb
            .range((start(FdbSource::Bridge), Bound::Unbounded))
            .map(|(&(vlan, mac), f)| {
                let view = FdbView {
                    vlan,
                    mac,
                    port: f.port.clone(),
                    kind: FdbKind::Learned,
                    moves: f.moves,
                    learned_by: Some(LearnedBy::Bridge),
                    hardware: f.offloaded,
                };
                ((vlan, mac, FdbSource::Bridge), view)
            }),
    );
    let mut sources = [statics.peekable(), learned.peekable(), bridge.peekable()];
    std::iter::from_fn(move || {
        let (_, first) = sources
            .iter_mut()
            .enumerate()
            .filter_map(|(i, rows)| Some((rows.peek()?.0, i)))
            .min()?;
        sources[first].next()
    })
}

/// How many FDB rows VLAN `vlan` has, from every source.
fn fdb_entries(state: &State, vlan: u16) -> usize {
    let macs = (vlan, MacAddr([0; 6]))..=(vlan, MacAddr([0xff; 6]));
    state.config.fdb.range(macs.clone()).count()
        + state.observed.fdb_learned.range(macs.clone()).count()
        + state.observed.bridge_fdb.range(macs).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::Config,
        statedb::{
            BridgeMac, DatapathNeighbor, DatapathRoute, FibKey, FibNexthop, FibRoute, LearnedMac,
            LinkState, Neighbor, ProtocolName, StateDb,
        },
    };

    /// A switch with SVI vlan10 (ifindex 9), two routes, a neighbor and two learned MACs,
    /// as the kernel module wrote them; the datapath wrote `programmed`.
    fn state(programmed: impl FnOnce(&mut crate::statedb::DatapathTx<'_>)) -> State {
        let text = "[[vlan]]\nid = 10\n[[interface]]\nvlan = 10\naddresses = [\"10.0.10.1/24\"]\n";
        let db = StateDb::new(
            Config::parse("t.toml", text, |_: &str| true).unwrap(),
            |_: &str| true,
        );
        let w = db.writers();
        w.kernel.write(|tx| {
            tx.link("vlan10", Some(LinkState::up("vlan10", 9)));
            for prefix in ["10.1.0.0/16", "10.2.0.0/16"] {
                let route = FibRoute {
                    prefix: prefix.parse().unwrap(),
                    table: RouteTable::Main,
                    tos: 0,
                    metric: 0,
                    kind: RouteKind::Unicast,
                    protocol: RouteProtocol::Named(ProtocolName::Bgp),
                    nexthops: smallvec::smallvec![FibNexthop {
                        gateway: Some("10.0.10.2".parse().unwrap()),
                        ifindex: 9,
                    }],
                    hardware: None,
                };
                tx.fib(route.key(), Some(route));
            }
            let ip: IpAddr = "10.0.10.2".parse().unwrap();
            tx.neighbor(
                9,
                ip,
                Some(Neighbor {
                    ip,
                    ifindex: 9,
                    mac: Some(MacAddr([2, 0, 0, 0, 0, 2])),
                    state: NeighborState::Reachable,
                }),
            );
            let mac = MacAddr([2, 0, 0, 0, 0, 7]);
            tx.bridge_fdb(
                10,
                mac,
                Some(BridgeMac {
                    vlan: 10,
                    mac,
                    port: "swp9".into(),
                    moves: 0,
                    offloaded: true,
                }),
            );
        });
        w.datapath.write(|tx| {
            let mac = MacAddr([2, 0, 0, 0, 0, 1]);
            tx.learned(
                10,
                mac,
                Some(LearnedMac {
                    vlan: 10,
                    mac,
                    port: "swp1".into(),
                    moves: 2,
                }),
            );
            programmed(tx);
        });
        db.read(Clone::clone)
    }

    fn main_key(prefix: &str) -> FibKey {
        FibKey {
            table: RouteTable::Main,
            prefix: prefix.parse().unwrap(),
            tos: 0,
            metric: 0,
            ifindex: 0,
        }
    }

    // What this shows: a route's fast-path column is what the datapath published, not what
    // the FIB suggests: a prefix the maps could not take says so, one never published says
    // "no" with no error.
    #[test]
    fn routes_show_what_the_datapath_programmed() {
        let s = state(|tx| {
            let route = main_key("10.1.0.0/16");
            tx.route(
                route,
                Some(DatapathRoute {
                    action: None,
                    nexthop_group: None,
                    error: Some("route not written: map ROUTES4: full".into()),
                }),
            );
        });
        let view = routes(&s, L3CountersView::default());
        let by = |p: &str| {
            view.routes
                .iter()
                .find(|r| r.prefix.to_string() == p)
                .unwrap()
                .clone()
        };
        let failed = by("10.1.0.0/16");
        assert!(!failed.fast_path);
        assert_eq!(failed.fast_path_action, None);
        assert_eq!(
            failed.fast_path_error.as_deref(),
            Some("route not written: map ROUTES4: full")
        );
        assert_eq!(failed.nexthops[0].interface, "vlan10");
        let unpublished = by("10.2.0.0/16");
        assert!(!unpublished.fast_path && unpublished.fast_path_error.is_none());

        let s = state(|tx| {
            let route = main_key("10.2.0.0/16");
            tx.route(
                route,
                Some(DatapathRoute {
                    action: Some(RouteAction::Forward),
                    nexthop_group: Some(1),
                    error: None,
                }),
            );
        });
        let view = routes(&s, L3CountersView::default());
        assert!(view.routes.iter().any(|r| r.fast_path));
        // The JSON keys are kebab-case like every key xnos shows.
        let json = serde_json::to_value(&view).unwrap();
        assert!(json["routes"][0].get("fast-path-error").is_some(), "{json}");
    }

    // What this shows: a config route the kernel refused is shown with the kernel's error
    // though it is not in the FIB; one the kernel has shows no error.
    #[test]
    fn routes_show_a_refused_config_route_with_its_error() {
        let mut s = state(|_| {});
        for (prefix, gateway, error) in [
            ("10.8.0.0/16", "192.0.2.5", Some("Network is unreachable")),
            ("10.9.0.0/16", "10.0.10.2", None),
        ] {
            let prefix: IpNet = prefix.parse().unwrap();
            s.config.routes.insert(
                prefix,
                crate::config::RouteConfig {
                    prefix,
                    nexthops: vec![gateway.parse().unwrap()],
                },
            );
            s.observed.route_status.insert(
                prefix,
                crate::statedb::RouteStatus {
                    prefix,
                    error: error.map(String::from),
                },
            );
        }
        let view = routes(&s, L3CountersView::default());
        let refused: Vec<_> = view.routes.iter().filter(|r| r.error.is_some()).collect();
        assert_eq!(refused.len(), 1, "{view:?}");
        assert_eq!(
            (
                refused[0].prefix.to_string(),
                refused[0].protocol,
                refused[0].error.as_deref()
            ),
            (
                "10.8.0.0/16".into(),
                RouteProtocol::Named(ProtocolName::Xnos),
                Some("Network is unreachable")
            )
        );
        assert!(
            !view
                .routes
                .iter()
                .any(|r| r.prefix.to_string() == "10.9.0.0/16")
        );
    }

    // What this shows: an address local on two interfaces (the router MAC's link-local
    // address on every SVI) has one entry in the maps, and both local routes show it.
    #[test]
    fn every_local_route_to_an_address_shows_its_fast_path() {
        let mut s = state(|_| {});
        let prefix: IpNet = "fe80::ff:fe00:100/128".parse().unwrap();
        let mut keys = Vec::new();
        for ifindex in [9, 10] {
            let route = FibRoute {
                prefix,
                table: RouteTable::Local,
                tos: 0,
                metric: 0,
                kind: RouteKind::Local,
                protocol: RouteProtocol::Named(ProtocolName::Kernel),
                nexthops: smallvec::smallvec![FibNexthop {
                    gateway: None,
                    ifindex,
                }],
                hardware: None,
            };
            keys.push(route.key());
            s.observed.fib.insert(route.key(), route);
        }
        s.observed.datapath_routes.insert(
            keys[0],
            DatapathRoute {
                action: Some(RouteAction::Local),
                nexthop_group: None,
                error: None,
            },
        );
        let view = routes(&s, L3CountersView::default());
        let shown: Vec<bool> = view
            .routes
            .iter()
            .filter(|r| r.prefix == prefix)
            .map(|r| r.fast_path)
            .collect();
        assert_eq!(shown, [true, true]);
    }

    #[test]
    fn neighbors_show_what_the_datapath_programmed() {
        let ip: IpAddr = "10.0.10.2".parse().unwrap();
        let s = state(|_| {});
        let view = neighbors(&s);
        assert_eq!((view.len(), view[0].fast_path), (1, false));
        let s = state(|tx| {
            tx.neighbor(
                9,
                ip,
                Some(DatapathNeighbor {
                    ip,
                    ifindex: 9,
                    mac: Some(MacAddr([2, 0, 0, 0, 0, 2])),
                    error: None,
                }),
            )
        });
        let view = neighbors(&s);
        assert_eq!(
            (view[0].interface.as_str(), view[0].fast_path, view[0].state),
            ("vlan10", true, NeighborState::Reachable)
        );
    }

    #[test]
    fn fdb_merges_both_learners_and_vlans_count_them() {
        let s = state(|_| {});
        let rows = fdb(&s);
        let seen: Vec<(String, Option<LearnedBy>, bool)> = rows
            .iter()
            .map(|r| (r.port.clone(), r.learned_by, r.hardware))
            .collect();
        assert_eq!(
            seen,
            [
                ("swp1".into(), Some(LearnedBy::Xdp), false),
                ("swp9".into(), Some(LearnedBy::Bridge), true),
            ]
        );
        assert_eq!(vlans(&s)[0].fdb_entries, 2);
        let iface = &interfaces(&s)[0];
        assert_eq!(
            (iface.kind, iface.link),
            (InterfaceKind::Svi, Some(OperState::Up))
        );
    }
}
