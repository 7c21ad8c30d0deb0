//! StateDb: the central database every module reads and writes, and nothing else.
//!
//! Tables hold either desired config (`switch`, `vlan`, `port`, `fdb-static`: what the
//! operator asked for, changed only by validated transactions) or observed state (`link`,
//! `port-status`, `fdb-learned`, `module`: what the kernel, the datapath and the supervisor
//! report), like SONiC's CONFIG_DB and STATE_DB. Every commit is atomic, gets the next
//! generation number and a list of row changes; subscribers get a snapshot and then every
//! commit in order. A subscriber that falls behind is told so and resynchronises from a new
//! snapshot: writers never wait for readers.

use std::{
    collections::BTreeMap,
    fmt,
    net::IpAddr,
    str::FromStr,
    sync::{Arc, RwLock},
};

use ipnet::IpNet;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::{
    config::{
        Config, FieldError, InterfaceConfig, PortConfig, RouteConfig, StaticFdb, SwitchConfig,
        VlanConfig,
    },
    mac::MacAddr,
};

/// How many commits a subscriber may fall behind before it must resynchronise.
const SUBSCRIBER_BACKLOG: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Switch,
    Vlan,
    Port,
    FdbStatic,
    Interface,
    Route,
    Link,
    PortStatus,
    FdbLearned,
    Fib,
    Neighbor,
    Datapath,
    Module,
    BridgePort,
    KernelFeatures,
    InterfaceStatus,
}

impl Table {
    pub const ALL: [Table; 16] = [
        Table::Switch,
        Table::Vlan,
        Table::Port,
        Table::FdbStatic,
        Table::Interface,
        Table::Route,
        Table::Link,
        Table::PortStatus,
        Table::FdbLearned,
        Table::Fib,
        Table::Neighbor,
        Table::Datapath,
        Table::Module,
        Table::BridgePort,
        Table::KernelFeatures,
        Table::InterfaceStatus,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Table::Switch => "switch",
            Table::Vlan => "vlan",
            Table::Port => "port",
            Table::FdbStatic => "fdb-static",
            Table::Interface => "interface",
            Table::Route => "route",
            Table::Link => "link",
            Table::PortStatus => "port-status",
            Table::FdbLearned => "fdb-learned",
            Table::Fib => "fib",
            Table::Neighbor => "neighbor",
            Table::Datapath => "datapath",
            Table::Module => "module",
            Table::BridgePort => "bridge-port",
            Table::KernelFeatures => "kernel-features",
            Table::InterfaceStatus => "interface-status",
        }
    }

    /// Desired-config tables, written only by validated transactions.
    pub const fn is_config(self) -> bool {
        matches!(
            self,
            Table::Switch
                | Table::Vlan
                | Table::Port
                | Table::FdbStatic
                | Table::Interface
                | Table::Route
        )
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Table {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Table::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
                format!("no table {s:?}; tables are {}", names.join(", "))
            })
    }
}

impl Serialize for Table {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Table {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A kernel network interface, as the kernel module sees it through netlink.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    pub name: String,
    pub ifindex: u32,
    /// `up`, `down`, `lowerlayerdown`, ...
    pub oper_state: String,
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

/// What the datapath reports about one configured port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStatus {
    pub name: String,
    pub ifindex: u32,
    /// Slot of the port's counters in the PORT_STATS map.
    pub stats_slot: u32,
    /// `xdp-native`, `xdp-generic` or `tc`, or `none` if not attached.
    pub datapath: String,
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

/// A MAC address the datapath learned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedMac {
    pub vlan: u16,
    pub mac: MacAddr,
    pub port: String,
    /// How often the station moved between ports since it was learned.
    pub moves: u64,
    /// Who learned it: `xdp` (the fast path) or `bridge` (the kernel bridge of switchdev
    /// ports, or the switch ASIC through it).
    #[serde(default = "source_xdp")]
    pub source: String,
    /// The kernel reports the entry as offloaded to hardware.
    #[serde(default)]
    pub offloaded: bool,
}

fn source_xdp() -> String {
    "xdp".into()
}

/// A switchdev port: what the kernel module programmed into the kernel bridge for it, and
/// what it read back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
pub struct InterfaceStatus {
    pub name: String,
    /// What failed (the other interfaces are programmed all the same).
    pub error: Option<String>,
}

/// One nexthop of a kernel route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FibNexthop {
    /// None for a directly connected route.
    pub gateway: Option<IpAddr>,
    pub ifindex: u32,
}

/// A route of the kernel's FIB (main and local tables), as the kernel module mirrors it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FibRoute {
    pub prefix: IpNet,
    /// `main` or `local`.
    pub table: String,
    /// `unicast`, `local`, `blackhole`, `unreachable`, ...
    pub kind: String,
    /// Who installed it: `kernel`, `static`, `bgp`, `ospf`, `xnos`...
    pub protocol: String,
    pub nexthops: Vec<FibNexthop>,
    /// What hardware does with it, as the kernel reports: `offloaded`, `trap` (hardware
    /// sends its packets to the CPU), `offload-failed`; None when no driver took it.
    #[serde(default)]
    pub hardware: Option<String>,
}

/// A kernel neighbour (ARP/ND) entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Neighbor {
    pub ip: IpAddr,
    pub ifindex: u32,
    pub mac: Option<MacAddr>,
    /// `reachable`, `stale`, `failed`, ...
    pub state: String,
}

/// What the datapath module has programmed, and up to which commit (the single row of
/// the `datapath` table).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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

/// A supervised module, as the supervisor reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleStatus {
    pub name: String,
    /// `running`, `restarting` or `stopped`.
    pub state: String,
    pub restarts: u64,
    pub last_error: Option<String>,
    /// The generation whose state this run of the module has brought about in full (its
    /// first sync), for modules that report one; None until then and after a restart.
    #[serde(default)]
    pub synced: Option<u64>,
}

/// Observed state: written by modules, read by everyone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub links: BTreeMap<String, LinkState>,
    pub port_status: BTreeMap<String, PortStatus>,
    pub fdb_learned: BTreeMap<(u16, MacAddr), LearnedMac>,
    /// Keyed by (table, prefix).
    pub fib: BTreeMap<(String, IpNet), FibRoute>,
    /// Keyed by (ifindex, address).
    pub neighbors: BTreeMap<(u32, IpAddr), Neighbor>,
    pub modules: BTreeMap<String, ModuleStatus>,
    pub datapath: DatapathStatus,
    pub bridge_ports: BTreeMap<String, BridgePort>,
    pub kernel: KernelFeatures,
    pub interface_status: BTreeMap<String, InterfaceStatus>,
}

#[derive(Clone, Debug)]
pub struct State {
    pub generation: u64,
    pub config: Config,
    pub observed: Observed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeOp {
    Insert,
    Update,
    Delete,
}

/// One row changed by a commit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub table: Table,
    pub key: String,
    pub op: ChangeOp,
    /// The row after the change (none for a delete).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub row: Option<Value>,
    /// The row before the change (none for an insert).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub old: Option<Value>,
}

/// An atomic set of changes, in commit order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    pub generation: u64,
    pub changes: Vec<Change>,
}

/// A transaction operation on a config table, as the API receives it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    /// Add a row; fails if its key exists.
    Insert { table: Table, row: Value },
    /// Replace a row; fails if its key does not exist.
    Update { table: Table, row: Value },
    /// Remove the row with `key`; fails if it does not exist.
    Delete { table: Table, key: String },
}

/// Why a transaction was rejected. Nothing was changed.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxError {
    #[error("op {index} ({table}): {message}")]
    Op {
        index: usize,
        table: String,
        message: String,
    },
    #[error("{0}")]
    Invalid(FieldError),
}

/// Row keys as they appear in changes, the API and the CLI.
pub fn fdb_key(vlan: u16, mac: &MacAddr) -> String {
    format!("{vlan}/{mac}")
}

pub fn fib_key(table: &str, prefix: &IpNet) -> String {
    format!("{table}/{prefix}")
}

pub fn neighbor_key(ifindex: u32, ip: &IpAddr) -> String {
    format!("{ifindex}/{ip}")
}

fn row_value<R: Serialize>(row: &R) -> Value {
    serde_json::to_value(row).expect("table rows serialise to JSON")
}

/// Append the changes that turn `old` into `new` for one table.
fn diff_table<K: Ord, R: PartialEq + Serialize>(
    table: Table,
    old: &BTreeMap<K, R>,
    new: &BTreeMap<K, R>,
    key: impl Fn(&K) -> String,
    changes: &mut Vec<Change>,
) {
    for (k, row) in new {
        match old.get(k) {
            None => changes.push(Change {
                table,
                key: key(k),
                op: ChangeOp::Insert,
                row: Some(row_value(row)),
                old: None,
            }),
            Some(before) if before != row => changes.push(Change {
                table,
                key: key(k),
                op: ChangeOp::Update,
                row: Some(row_value(row)),
                old: Some(row_value(before)),
            }),
            Some(_) => {}
        }
    }
    for (k, row) in old {
        if !new.contains_key(k) {
            changes.push(Change {
                table,
                key: key(k),
                op: ChangeOp::Delete,
                row: None,
                old: Some(row_value(row)),
            });
        }
    }
}

/// The row changes between two configs.
pub fn diff_config(old: &Config, new: &Config) -> Vec<Change> {
    let mut changes = Vec::new();
    let single = |c: &Config| BTreeMap::from([((), c.switch.clone())]);
    diff_table(
        Table::Switch,
        &single(old),
        &single(new),
        |_| "switch".into(),
        &mut changes,
    );
    diff_table(
        Table::Vlan,
        &old.vlans,
        &new.vlans,
        u16::to_string,
        &mut changes,
    );
    diff_table(
        Table::Port,
        &old.ports,
        &new.ports,
        String::clone,
        &mut changes,
    );
    diff_table(
        Table::FdbStatic,
        &old.fdb,
        &new.fdb,
        |(v, m)| fdb_key(*v, m),
        &mut changes,
    );
    diff_table(
        Table::Interface,
        &old.interfaces,
        &new.interfaces,
        String::clone,
        &mut changes,
    );
    diff_table(
        Table::Route,
        &old.routes,
        &new.routes,
        IpNet::to_string,
        &mut changes,
    );
    changes
}

/// Set or remove one observed row, recording the change if there is one.
fn put_row<K: Ord, R: PartialEq + Serialize>(
    table: Table,
    map: &mut BTreeMap<K, R>,
    key: K,
    key_text: String,
    row: Option<R>,
    changes: &mut Vec<Change>,
) {
    match row {
        Some(row) => {
            let old = map.get(&key);
            if old == Some(&row) {
                return;
            }
            changes.push(Change {
                table,
                key: key_text,
                op: if old.is_some() {
                    ChangeOp::Update
                } else {
                    ChangeOp::Insert
                },
                row: Some(row_value(&row)),
                old: old.map(row_value),
            });
            map.insert(key, row);
        }
        None => {
            if let Some(old) = map.remove(&key) {
                changes.push(Change {
                    table,
                    key: key_text,
                    op: ChangeOp::Delete,
                    row: None,
                    old: Some(row_value(&old)),
                });
            }
        }
    }
}

/// A batch of observed-state writes, applied as one commit.
pub struct ObservedTx<'a> {
    observed: &'a mut Observed,
    changes: Vec<Change>,
}

impl ObservedTx<'_> {
    pub fn observed(&self) -> &Observed {
        self.observed
    }

    pub fn link(&mut self, name: &str, row: Option<LinkState>) {
        let o = &mut *self.observed;
        put_row(
            Table::Link,
            &mut o.links,
            name.to_string(),
            name.to_string(),
            row,
            &mut self.changes,
        );
    }

    pub fn port_status(&mut self, name: &str, row: Option<PortStatus>) {
        let o = &mut *self.observed;
        put_row(
            Table::PortStatus,
            &mut o.port_status,
            name.to_string(),
            name.to_string(),
            row,
            &mut self.changes,
        );
    }

    pub fn learned(&mut self, vlan: u16, mac: MacAddr, row: Option<LearnedMac>) {
        let o = &mut *self.observed;
        put_row(
            Table::FdbLearned,
            &mut o.fdb_learned,
            (vlan, mac),
            fdb_key(vlan, &mac),
            row,
            &mut self.changes,
        );
    }

    pub fn fib(&mut self, table: &str, prefix: IpNet, row: Option<FibRoute>) {
        let o = &mut *self.observed;
        let key = fib_key(table, &prefix);
        put_row(
            Table::Fib,
            &mut o.fib,
            (table.to_string(), prefix),
            key,
            row,
            &mut self.changes,
        );
    }

    pub fn neighbor(&mut self, ifindex: u32, ip: IpAddr, row: Option<Neighbor>) {
        let o = &mut *self.observed;
        let key = neighbor_key(ifindex, &ip);
        put_row(
            Table::Neighbor,
            &mut o.neighbors,
            (ifindex, ip),
            key,
            row,
            &mut self.changes,
        );
    }

    pub fn datapath(&mut self, row: DatapathStatus) {
        let o = &mut *self.observed;
        let mut single = BTreeMap::from([((), o.datapath.clone())]);
        put_row(
            Table::Datapath,
            &mut single,
            (),
            "datapath".into(),
            Some(row),
            &mut self.changes,
        );
        o.datapath = single.remove(&()).unwrap_or_default();
    }

    /// Make a table keyed by name (`current` reads it, `put` writes a row) hold exactly
    /// `rows`: the rows not among them go.
    pub fn replace_named<R>(
        &mut self,
        current: fn(&Observed) -> &BTreeMap<String, R>,
        put: fn(&mut Self, &str, Option<R>),
        rows: BTreeMap<String, R>,
    ) {
        let stale: Vec<String> = current(self.observed)
            .keys()
            .filter(|name| !rows.contains_key(*name))
            .cloned()
            .collect();
        for name in stale {
            put(self, &name, None);
        }
        for (name, row) in rows {
            put(self, &name, Some(row));
        }
    }

    pub fn kernel_features(&mut self, row: KernelFeatures) {
        let o = &mut *self.observed;
        let mut single = BTreeMap::from([((), o.kernel.clone())]);
        put_row(
            Table::KernelFeatures,
            &mut single,
            (),
            "kernel".into(),
            Some(row),
            &mut self.changes,
        );
        o.kernel = single.remove(&()).unwrap_or_default();
    }

    pub fn interface_status(&mut self, name: &str, row: Option<InterfaceStatus>) {
        let o = &mut *self.observed;
        put_row(
            Table::InterfaceStatus,
            &mut o.interface_status,
            name.to_string(),
            name.to_string(),
            row,
            &mut self.changes,
        );
    }

    pub fn bridge_port(&mut self, name: &str, row: Option<BridgePort>) {
        let o = &mut *self.observed;
        put_row(
            Table::BridgePort,
            &mut o.bridge_ports,
            name.to_string(),
            name.to_string(),
            row,
            &mut self.changes,
        );
    }

    pub fn module(&mut self, name: &str, row: Option<ModuleStatus>) {
        let o = &mut *self.observed;
        put_row(
            Table::Module,
            &mut o.modules,
            name.to_string(),
            name.to_string(),
            row,
            &mut self.changes,
        );
    }
}

/// The snapshot a subscription starts from, with the receiver for what follows it.
pub struct Subscription {
    pub snapshot: State,
    pub commits: broadcast::Receiver<Arc<Commit>>,
}

type LinkCheck = dyn Fn(&str) -> bool + Send + Sync;

pub struct StateDb {
    state: RwLock<State>,
    commits: broadcast::Sender<Arc<Commit>>,
    link_exists: Box<LinkCheck>,
}

impl StateDb {
    /// A database holding `config`. `link_exists` tells whether a kernel interface exists,
    /// for validating ports in transactions.
    pub fn new(
        config: Config,
        link_exists: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            state: RwLock::new(State {
                generation: 1,
                config,
                observed: Observed::default(),
            }),
            commits: broadcast::Sender::new(SUBSCRIBER_BACKLOG),
            link_exists: Box::new(link_exists),
        })
    }

    /// Run `f` on a consistent view of the whole database.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.state.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn generation(&self) -> u64 {
        self.read(|s| s.generation)
    }

    /// A snapshot and, from the very next commit on, every commit in order.
    pub fn subscribe(&self) -> Subscription {
        // Holding the read lock keeps writers out between snapshot and subscription.
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        Subscription {
            commits: self.commits.subscribe(),
            snapshot: state.clone(),
        }
    }

    /// Apply `changes` (already made to `state`) as the next commit.
    fn commit(&self, state: &mut State, changes: Vec<Change>) -> Commit {
        if changes.is_empty() {
            return Commit {
                generation: state.generation,
                changes,
            };
        }
        state.generation += 1;
        let commit = Commit {
            generation: state.generation,
            changes,
        };
        // Sent under the write lock, so subscribers see commits in generation order.
        let _ = self.commits.send(Arc::new(commit.clone()));
        commit
    }

    /// Validate `config` as a whole and make it the desired config in one commit.
    pub fn replace_config(&self, config: Config) -> Result<Commit, TxError> {
        config
            .validate(&*self.link_exists)
            .map_err(TxError::Invalid)?;
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let changes = diff_config(&state.config, &config);
        state.config = config;
        Ok(self.commit(&mut state, changes))
    }

    /// Apply config operations atomically: all of them, validated together, or none.
    pub fn transact(&self, ops: &[Op]) -> Result<Commit, TxError> {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut config = state.config.clone();
        for (index, op) in ops.iter().enumerate() {
            apply_op(&mut config, op).map_err(|message| TxError::Op {
                index,
                table: op_table(op).to_string(),
                message,
            })?;
        }
        config
            .validate(&*self.link_exists)
            .map_err(TxError::Invalid)?;
        let changes = diff_config(&state.config, &config);
        state.config = config;
        Ok(self.commit(&mut state, changes))
    }

    /// Write observed state; everything `f` writes is one commit (none if nothing changed).
    pub fn write_observed<R>(&self, f: impl FnOnce(&mut ObservedTx<'_>) -> R) -> (R, Commit) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut tx = ObservedTx {
            observed: &mut state.observed,
            changes: Vec::new(),
        };
        let result = f(&mut tx);
        let changes = tx.changes;
        let commit = self.commit(&mut state, changes);
        (result, commit)
    }

    /// All rows of a table as JSON, with each row's key.
    pub fn rows(&self, table: Table) -> Vec<(String, Value)> {
        self.read(|s| table_rows(s, table))
    }
}

/// All rows of one table of a state, keyed as in changes.
pub fn table_rows(s: &State, table: Table) -> Vec<(String, Value)> {
    fn rows<K, R: Serialize>(
        map: &BTreeMap<K, R>,
        key: impl Fn(&K) -> String,
    ) -> Vec<(String, Value)> {
        map.iter().map(|(k, r)| (key(k), row_value(r))).collect()
    }
    match table {
        Table::Switch => vec![("switch".into(), row_value(&s.config.switch))],
        Table::Vlan => rows(&s.config.vlans, u16::to_string),
        Table::Port => rows(&s.config.ports, String::clone),
        Table::FdbStatic => rows(&s.config.fdb, |(v, m)| fdb_key(*v, m)),
        Table::Interface => rows(&s.config.interfaces, String::clone),
        Table::Route => rows(&s.config.routes, IpNet::to_string),
        Table::Link => rows(&s.observed.links, String::clone),
        Table::PortStatus => rows(&s.observed.port_status, String::clone),
        Table::FdbLearned => rows(&s.observed.fdb_learned, |(v, m)| fdb_key(*v, m)),
        Table::Fib => rows(&s.observed.fib, |(t, p)| fib_key(t, p)),
        Table::Neighbor => rows(&s.observed.neighbors, |(i, a)| neighbor_key(*i, a)),
        Table::Datapath => vec![("datapath".into(), row_value(&s.observed.datapath))],
        Table::Module => rows(&s.observed.modules, String::clone),
        Table::BridgePort => rows(&s.observed.bridge_ports, String::clone),
        Table::KernelFeatures => vec![("kernel".into(), row_value(&s.observed.kernel))],
        Table::InterfaceStatus => rows(&s.observed.interface_status, String::clone),
    }
}

fn op_table(op: &Op) -> Table {
    match op {
        Op::Insert { table, .. } | Op::Update { table, .. } | Op::Delete { table, .. } => *table,
    }
}

fn parse_row<R: DeserializeOwned>(row: &Value) -> Result<R, String> {
    serde_json::from_value(row.clone()).map_err(|e| format!("bad row: {e}"))
}

/// Insert/update/delete one row of a config map; `key` is the row's key as text.
fn apply_row<K: Ord + Clone, R>(
    map: &mut BTreeMap<K, R>,
    op: &Op,
    parse: impl FnOnce(&Value) -> Result<(K, R), String>,
    parse_key: impl FnOnce(&str) -> Result<K, String>,
) -> Result<(), String> {
    match op {
        Op::Insert { row, .. } => {
            let (key, row) = parse(row)?;
            if map.contains_key(&key) {
                return Err("a row with this key exists already (use update)".into());
            }
            map.insert(key, row);
        }
        Op::Update { row, .. } => {
            let (key, row) = parse(row)?;
            match map.get_mut(&key) {
                Some(slot) => *slot = row,
                None => return Err("no row with this key to update (use insert)".into()),
            }
        }
        Op::Delete { key, .. } => {
            let parsed = parse_key(key)?;
            if map.remove(&parsed).is_none() {
                return Err(format!("no row with key {key:?} to delete"));
            }
        }
    }
    Ok(())
}

fn parse_fdb_key(key: &str) -> Result<(u16, MacAddr), String> {
    let (vlan, mac) = key
        .split_once('/')
        .ok_or_else(|| format!("bad key {key:?}: expected <vlan>/<mac>"))?;
    let vlan = vlan
        .parse()
        .map_err(|_| format!("bad VLAN in key {key:?}"))?;
    let mac = mac
        .parse()
        .map_err(|e: crate::mac::ParseMacError| e.to_string())?;
    Ok((vlan, mac))
}

fn apply_op(config: &mut Config, op: &Op) -> Result<(), String> {
    match op_table(op) {
        Table::Switch => match op {
            Op::Update { row, .. } => {
                config.switch = parse_row::<SwitchConfig>(row)?;
                Ok(())
            }
            _ => Err("the switch table has exactly one row: only update applies".into()),
        },
        Table::Vlan => apply_row(
            &mut config.vlans,
            op,
            |row| parse_row::<VlanConfig>(row).map(|v| (v.id, v)),
            |key| key.parse().map_err(|_| format!("bad VLAN key {key:?}")),
        ),
        Table::Port => apply_row(
            &mut config.ports,
            op,
            |row| parse_row::<PortConfig>(row).map(|p| (p.name.clone(), p)),
            |key| Ok(key.to_string()),
        ),
        Table::FdbStatic => apply_row(
            &mut config.fdb,
            op,
            |row| parse_row::<StaticFdb>(row).map(|f| ((f.vlan, f.mac), f)),
            parse_fdb_key,
        ),
        Table::Interface => apply_row(
            &mut config.interfaces,
            op,
            |row| parse_row::<InterfaceConfig>(row).map(|i| (i.name.clone(), i)),
            |key| Ok(key.to_string()),
        ),
        Table::Route => apply_row(
            &mut config.routes,
            op,
            |row| parse_row::<RouteConfig>(row).map(|r| (r.prefix, r)),
            |key| {
                key.parse()
                    .map_err(|_| format!("bad route key {key:?}: expected a prefix"))
            },
        ),
        table => Err(format!(
            "{table} is observed state, written by xnosd itself"
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::*;
    use crate::config::PortMode;

    fn db() -> Arc<StateDb> {
        let config = Config::parse(
            "t.toml",
            "[[vlan]]\nid = 10\nname = \"a\"\n[[port]]\nname = \"swp1\"\nmode = \"access\"\nvlan = 10\n",
            |_| true,
        )
        .unwrap();
        StateDb::new(config, |name| name.starts_with("swp"))
    }

    fn insert(table: Table, row: Value) -> Op {
        Op::Insert { table, row }
    }

    #[test]
    fn a_transaction_applies_all_ops_in_one_commit() {
        let db = db();
        let commit = db
            .transact(&[
                insert(Table::Vlan, json!({"id": 20, "name": "b"})),
                insert(
                    Table::Port,
                    json!({"name": "swp2", "mode": "trunk", "vlans": [10, 20]}),
                ),
                insert(
                    Table::FdbStatic,
                    json!({"mac": "02:00:00:00:00:01", "vlan": 20, "port": "swp2"}),
                ),
            ])
            .unwrap();
        assert_eq!(commit.generation, 2);
        let keys: Vec<(Table, &str, ChangeOp)> = commit
            .changes
            .iter()
            .map(|c| (c.table, c.key.as_str(), c.op))
            .collect();
        assert_eq!(
            keys,
            [
                (Table::Vlan, "20", ChangeOp::Insert),
                (Table::Port, "swp2", ChangeOp::Insert),
                (Table::FdbStatic, "20/02:00:00:00:00:01", ChangeOp::Insert),
            ]
        );
        db.read(|s| {
            assert_eq!(
                s.config.ports["swp2"].mode,
                PortMode::Trunk {
                    vlans: BTreeSet::from([10, 20]),
                    native_vlan: None
                }
            );
        });
    }

    #[test]
    fn a_rejected_transaction_changes_nothing_and_names_row_and_field() {
        let db = db();
        let before = db.read(|s| s.config.clone());
        // The first op is fine, the second references a VLAN that does not exist.
        let err = db
            .transact(&[
                insert(Table::Vlan, json!({"id": 30})),
                insert(
                    Table::Port,
                    json!({"name": "swp2", "mode": "access", "vlan": 40}),
                ),
            ])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "port swp2: vlan: VLAN 40 does not exist (add it to the vlan table first)"
        );
        assert_eq!(db.read(|s| s.config.clone()), before);
        assert_eq!(db.generation(), 1);

        for (ops, expected) in [
            (
                vec![insert(Table::Vlan, json!({"id": 10}))],
                "op 0 (vlan): a row with this key exists already (use update)",
            ),
            (
                vec![insert(Table::Vlan, json!({"id": 4095}))],
                "vlan 4095: id: VLAN 4095 is out of range 1..4094",
            ),
            (
                vec![insert(Table::Vlan, json!({"name": "x"}))],
                "op 0 (vlan): bad row: missing field `id`",
            ),
            (
                vec![insert(
                    Table::Port,
                    json!({"name": "eth7", "mode": "access", "vlan": 10}),
                )],
                "port eth7: name: no kernel interface named \"eth7\"",
            ),
            (
                vec![Op::Delete {
                    table: Table::Vlan,
                    key: "10".into(),
                }],
                "port swp1: vlan: VLAN 10 does not exist (add it to the vlan table first)",
            ),
            (
                vec![Op::Delete {
                    table: Table::Port,
                    key: "swp9".into(),
                }],
                "op 0 (port): no row with key \"swp9\" to delete",
            ),
            (
                vec![insert(Table::Link, json!({}))],
                "op 0 (link): link is observed state, written by xnosd itself",
            ),
            (
                vec![insert(
                    Table::FdbStatic,
                    json!({"mac": "02:00:00:00:00:01", "vlan": 10, "port": "swp9"}),
                )],
                "fdb-static 10/02:00:00:00:00:01: port: \"swp9\" is not a configured port",
            ),
        ] {
            assert_eq!(db.transact(&ops).unwrap_err().to_string(), expected);
        }
        assert_eq!(db.read(|s| s.config.clone()), before);
    }

    #[test]
    fn unchanged_observed_rows_are_not_commits() {
        let db = db();
        let link = LinkState {
            name: "swp1".into(),
            ifindex: 3,
            oper_state: "up".into(),
            mac: None,
            mtu: Some(1500),
            alias: None,
            switch_id: None,
            master: None,
            up: true,
        };
        let (_, commit) = db.write_observed(|tx| tx.link("swp1", Some(link.clone())));
        assert_eq!((commit.generation, commit.changes.len()), (2, 1));
        let (_, commit) = db.write_observed(|tx| tx.link("swp1", Some(link.clone())));
        assert_eq!((commit.generation, commit.changes.len()), (2, 0));
        let (_, commit) = db.write_observed(|tx| tx.link("swp1", None));
        assert_eq!(commit.changes[0].op, ChangeOp::Delete);
        assert_eq!(db.generation(), 3);
    }

    /// Replay `commits` on top of `rows` the way a subscriber does.
    fn replay(rows: &mut BTreeMap<(Table, String), Value>, commit: &Commit) {
        for change in &commit.changes {
            match &change.row {
                Some(row) => rows.insert((change.table, change.key.clone()), row.clone()),
                None => rows.remove(&(change.table, change.key.clone())),
            };
        }
    }

    fn all_rows(s: &State) -> BTreeMap<(Table, String), Value> {
        Table::ALL
            .iter()
            .flat_map(|t| {
                table_rows(s, *t)
                    .into_iter()
                    .map(move |(k, v)| ((*t, k), v))
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn subscribers_see_every_commit_of_concurrent_writers_in_order() {
        let db = db();
        let sub = db.subscribe();
        let mut rows = all_rows(&sub.snapshot);
        let mut commits = sub.commits;
        let writers: Vec<_> = (0..4u8)
            .map(|w| {
                let db = db.clone();
                tokio::task::spawn_blocking(move || {
                    for i in 0..200u8 {
                        let mac = MacAddr([2, 0, 0, 0, w, i]);
                        db.write_observed(|tx| {
                            tx.learned(
                                10,
                                mac,
                                Some(LearnedMac {
                                    vlan: 10,
                                    mac,
                                    port: "swp1".into(),
                                    moves: 0,
                                    source: "xdp".into(),
                                    offloaded: false,
                                }),
                            )
                        });
                        if i % 3 == 0 {
                            db.write_observed(|tx| tx.learned(10, mac, None));
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        let last = db.generation();
        let mut generation = sub.snapshot.generation;
        while generation < last {
            let commit = commits.recv().await.unwrap();
            assert_eq!(commit.generation, generation + 1, "gap or reordering");
            generation = commit.generation;
            replay(&mut rows, &commit);
        }
        assert_eq!(
            rows,
            db.read(all_rows),
            "replayed deltas equal the final state"
        );
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_told_to_resynchronise() {
        let db = db();
        let mut sub = db.subscribe();
        for i in 0..(SUBSCRIBER_BACKLOG + 10) {
            let mac = MacAddr([2, 0, 0, 0, (i >> 8) as u8, i as u8]);
            db.write_observed(|tx| {
                tx.learned(
                    10,
                    mac,
                    Some(LearnedMac {
                        vlan: 10,
                        mac,
                        port: "swp1".into(),
                        moves: 0,
                        source: "xdp".into(),
                        offloaded: false,
                    }),
                )
            });
        }
        match sub.commits.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 10),
            other => panic!("expected a lag notice, got {other:?}"),
        }
        // Resynchronising: a fresh snapshot equals the state.
        let fresh = db.subscribe();
        assert_eq!(all_rows(&fresh.snapshot), db.read(all_rows));
        assert_eq!(fresh.snapshot.generation, db.generation());
    }

    #[test]
    fn every_config_table_is_diffed() {
        let old = Config::default();
        let new = Config::parse(
            "t.toml",
            "[switch]\nfdb-aging = 9\n[[vlan]]\nid = 10\n[[port]]\nname = \"swp1\"\nmode = \"access\"\nvlan = 10\n\
             [[fdb]]\nmac = \"02:00:00:00:00:01\"\nvlan = 10\nport = \"swp1\"\n\
             [[interface]]\nvlan = 10\naddresses = [\"10.0.10.1/24\"]\n\
             [[route]]\nprefix = \"10.9.0.0/16\"\nnexthops = [\"10.0.10.2\"]\n",
            |_| true,
        )
        .unwrap();
        let tables: std::collections::BTreeSet<Table> =
            diff_config(&old, &new).iter().map(|c| c.table).collect();
        let config_tables: std::collections::BTreeSet<Table> =
            Table::ALL.into_iter().filter(|t| t.is_config()).collect();
        assert_eq!(tables, config_tables);
    }

    #[test]
    fn replace_config_diffs_rows() {
        let db = db();
        let new = Config::parse(
            "t.toml",
            "[[vlan]]\nid = 10\nname = \"renamed\"\n[[port]]\nname = \"swp2\"\nmode = \"access\"\nvlan = 10\n",
            |_| true,
        )
        .unwrap();
        let commit = db.replace_config(new).unwrap();
        let ops: Vec<(Table, &str, ChangeOp)> = commit
            .changes
            .iter()
            .map(|c| (c.table, c.key.as_str(), c.op))
            .collect();
        assert_eq!(
            ops,
            [
                (Table::Vlan, "10", ChangeOp::Update),
                (Table::Port, "swp2", ChangeOp::Insert),
                (Table::Port, "swp1", ChangeOp::Delete),
            ]
        );
    }
}
