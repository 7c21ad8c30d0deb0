//! The rows of StateDb's state tables (the config tables' rows are in `config`).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::kinds::{
    DatapathMode, Hardware, ModuleState, NeighborState, OperState, RouteAction, RouteKind,
    RouteProtocol, RouteTable,
};
use crate::mac::MacAddr;

/// A kernel network interface, as the kernel module sees it through netlink.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LinkState {
    pub name: String,
    pub ifindex: u32,
    pub oper_state: OperState,
    pub mac: Option<MacAddr>,
    pub mtu: Option<u32>,
    /// `ip link set ... alias`; xnos marks the netdevs it creates with it.
    #[serde(default)]
    pub alias: Option<String>,
    /// The switch ID of a port of a switch ASIC with a switchdev driver (hex).
    #[serde(default)]
    pub switch_id: Option<String>,
    /// ifindex of the bridge (or other master) the link is enslaved to.
    #[serde(default)]
    pub master: Option<u32>,
    /// Administratively up (IFF_UP).
    #[serde(default)]
    pub up: bool,
}

#[cfg(test)]
impl LinkState {
    /// A link that is up, with an MTU of 1500 and nothing else set: the fixture unit
    /// tests change from.
    pub(crate) fn up(name: &str, ifindex: u32) -> Self {
        LinkState {
            name: name.into(),
            ifindex,
            oper_state: super::OperState::Up,
            mac: None,
            mtu: Some(1500),
            alias: None,
            switch_id: None,
            master: None,
            up: true,
        }
    }
}

/// What the datapath reports about one configured port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PortStatus {
    pub name: String,
    pub ifindex: u32,
    /// Slot of the port's counters in the PORT_STATS map.
    pub stats_slot: u32,
    pub datapath: DatapathMode,
    /// Why the port uses that mode.
    #[serde(default)]
    pub datapath_reason: Option<String>,
    /// The XDP features the driver reports (`basic,redirect,ndo-xmit...`), if known.
    #[serde(default)]
    pub xdp_features: Option<String>,
    /// Whether native-XDP ports can redirect frames to this port (`ndo-xmit`), if known.
    #[serde(default)]
    pub xdp_redirect_target: Option<bool>,
    /// Why the port is not forwarding, if it is not.
    pub error: Option<String>,
}

/// A MAC address the fast path learned (a row of `fdb-learned`, written by the datapath
/// module).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LearnedMac {
    pub vlan: u16,
    pub mac: MacAddr,
    pub port: String,
    /// How often the station moved between ports since it was learned.
    pub moves: u64,
}

/// A MAC address the kernel bridge of the switchdev ports learned (or the switch ASIC
/// under it): a row of `bridge-fdb`, written by the kernel module.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BridgeMac {
    pub vlan: u16,
    pub mac: MacAddr,
    pub port: String,
    /// How often the station moved between ports since it was learned.
    pub moves: u64,
    /// The kernel reports the entry as offloaded to hardware.
    pub offloaded: bool,
}

/// A switchdev port: what the kernel module programmed into the kernel bridge for it, and
/// what it read back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BridgePort {
    pub port: String,
    /// The VLANs the port carries.
    pub vlans: Vec<u16>,
    /// The bridge that carries the port (and, through its CPU port, the way to the XDP
    /// ports of its VLANs).
    pub bridge: Option<String>,
    /// Read back: the kernel has the port enslaved to `bridge`.
    pub member: bool,
    /// The port's switch ID, if its driver has one (the ASIC forwards; otherwise the
    /// kernel bridge does, in software).
    pub switch_id: Option<String>,
    pub error: Option<String>,
}

/// What the running kernel can do, as probed by the kernel module (the single row of the
/// `kernel-features` table): modules decide by it, not by probing on their own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct KernelFeatures {
    /// Whether the bridge can filter VLANs (CONFIG_BRIDGE_VLAN_FILTERING); None until
    /// probed.
    pub bridge_vlan_filtering: Option<bool>,
    /// Whether the kernel can make 802.1Q VLAN netdevs (8021q); None until probed.
    #[serde(default)]
    pub vlan_devices: Option<bool>,
}

/// What the kernel module made of one L3 interface of the config (a row of the
/// `interface-status` table).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct InterfaceStatus {
    pub name: String,
    /// What failed (the other interfaces are programmed all the same).
    pub error: Option<String>,
}

/// What the kernel module made of one config route (a row of the `route-status` table).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RouteStatus {
    pub prefix: IpNet,
    /// Why the kernel does not have the route (the other routes are installed all the
    /// same; it is tried again when the kernel's links, addresses or routes change).
    pub error: Option<String>,
}

/// The nexthops of a kernel route: one kept inline (no heap block of its own), more
/// (ECMP) on the heap.
pub type Nexthops = smallvec::SmallVec<[FibNexthop; 1]>;

/// One nexthop of a kernel route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FibNexthop {
    /// None for a directly connected route.
    pub gateway: Option<IpAddr>,
    pub ifindex: u32,
}

/// The kernel's identity of a route: routes that differ in any of these are different
/// routes, even to one prefix (the key of the `fib` table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FibKey {
    pub table: RouteTable,
    pub prefix: IpNet,
    pub tos: u8,
    pub metric: u32,
    /// The interface of a route without a gateway (the kernel keeps such a route per
    /// interface: `fe80::/64` on each); 0 for a route through gateways.
    pub ifindex: u32,
}

impl FibKey {
    /// The first and last keys of the routes of `table` to `prefix`: the keys sort by
    /// table and prefix first, so these bound a `BTreeMap` range holding exactly them.
    pub fn bounds(table: RouteTable, prefix: IpNet) -> std::ops::RangeInclusive<FibKey> {
        let first = FibKey {
            table,
            prefix,
            tos: 0,
            metric: 0,
            ifindex: 0,
        };
        first..=FibKey {
            tos: u8::MAX,
            metric: u32::MAX,
            ifindex: u32::MAX,
            ..first
        }
    }
}

impl std::fmt::Display for FibKey {
    /// `main/10.0.0.0/8/0/20/0`: table, prefix, TOS, metric, ifindex.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}/{}",
            self.table, self.prefix, self.tos, self.metric, self.ifindex
        )
    }
}

/// A route of the kernel's FIB (main and local tables), as the kernel module mirrors it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FibRoute {
    pub prefix: IpNet,
    pub table: RouteTable,
    /// The TOS (DSCP) the route is for; 0 for any.
    #[serde(default)]
    pub tos: u8,
    /// The route's metric (priority): of routes to one prefix, the kernel uses the lowest.
    #[serde(default)]
    pub metric: u32,
    pub kind: RouteKind,
    /// Who installed it.
    pub protocol: RouteProtocol,
    pub nexthops: Nexthops,
    /// What hardware does with it, as the kernel reports; None when no driver took it.
    #[serde(default)]
    pub hardware: Option<Hardware>,
}

impl FibRoute {
    pub fn key(&self) -> FibKey {
        let ifindex = match self.nexthops.as_slice() {
            [only] if only.gateway.is_none() => only.ifindex,
            _ => 0,
        };
        FibKey {
            table: self.table,
            prefix: self.prefix,
            tos: self.tos,
            metric: self.metric,
            ifindex,
        }
    }

    /// A route to a subnet the switch is on (`scope link`, no gateway): its addresses are
    /// reachable as nexthops.
    pub fn is_connected(&self) -> bool {
        self.table == RouteTable::Main
            && self.kind == RouteKind::Unicast
            && !self.nexthops.is_empty()
            && self.nexthops.iter().all(|n| n.gateway.is_none())
    }
}

/// A kernel neighbour (ARP/ND) entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Neighbor {
    pub ip: IpAddr,
    pub ifindex: u32,
    pub mac: Option<MacAddr>,
    pub state: NeighborState,
}

/// What the datapath module has programmed, and up to which commit (the single row of
/// the `datapath` table).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DatapathStatus {
    /// The last StateDb generation the maps reflect.
    pub generation: u64,
    pub ports: usize,
    pub routes_v4: usize,
    pub routes_v6: usize,
    pub nexthop_groups: usize,
    pub neighbors: usize,
    pub l3_interfaces: usize,
    /// Stations seen moving between ports since xnosd started.
    pub station_moves: u64,
}

/// A request to forget learned MACs (the single row of `fdb-clear`, written by the API):
/// the datapath module, the only writer of the FDB map, acts once on each new `request`
/// and answers in `fdb-cleared`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FdbClear {
    /// Counts up from 1; 0: nothing asked yet.
    pub request: u64,
    /// Only entries of this VLAN; None: of every VLAN.
    pub vlan: Option<u16>,
    /// Only entries learned on this port; None: on every port.
    pub port: Option<String>,
}

/// The datapath module's answer to the newest `fdb-clear` request it acted on (the single
/// row of `fdb-cleared`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FdbCleared {
    pub request: u64,
    /// How many learned entries went from the FDB map.
    pub removed: u64,
    /// Why the request was not carried out in full, if it was not.
    pub error: Option<String>,
}

/// A supervised module, as the supervisor reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ModuleStatus {
    pub name: String,
    pub state: ModuleState,
    pub restarts: u64,
    pub last_error: Option<String>,
    /// The generation whose state this run of the module has brought about in full (its
    /// first sync), for modules that report one; None until then and after a restart.
    #[serde(default)]
    pub synced: Option<u64>,
}

/// What the datapath programmed for one prefix of the kernel's FIB (a row of
/// `datapath-route`, keyed like the `fib` row of the route the datapath followed: of
/// several routes to a prefix, the one the kernel uses; the key names the prefix):
/// views, trace and metrics read this, never what the datapath should have done. One row
/// per route of the FIB: kept to what the key does not say.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DatapathRoute {
    /// What the maps hold for the prefix; None when nothing could be written (then a
    /// shorter prefix, or none, decides: see `error`).
    pub action: Option<RouteAction>,
    /// The nexthop group (`NHGS` key) of a forwarded prefix.
    pub nexthop_group: Option<u32>,
    /// Why the maps do not hold what the FIB asks for.
    pub error: Option<Box<str>>,
}

/// A neighbour the datapath programmed, or failed to (a row of `datapath-neighbor`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DatapathNeighbor {
    pub ip: IpAddr,
    pub ifindex: u32,
    /// The MAC in the map; None when the write failed (see `error`).
    pub mac: Option<MacAddr>,
    pub error: Option<String>,
}

/// The ports the fast path floods a VLAN's broadcast, multicast and unknown unicast to
/// (a row of `datapath-flood`), as programmed: every attached port that is a member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DatapathFlood {
    pub vlan: u16,
    pub ports: Vec<FloodMember>,
}

/// A port of a VLAN's flood set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FloodMember {
    pub port: String,
    /// The copy leaves with the VLAN's tag (a trunk's tagged VLAN).
    pub tagged: bool,
}
