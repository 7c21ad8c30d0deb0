//! Writing state tables: each module writes through its [`Writer`], whose transaction
//! type has setters for that module's tables and no others, so "one writer per table"
//! is kept by the compiler (a module cannot name another's table setters).

use std::{collections::BTreeMap, marker::PhantomData, net::IpAddr, sync::Arc};

use ipnet::IpNet;

use super::{
    BridgeMac, BridgePort, Change, ChangeOp, Commit, DatapathFlood, DatapathNeighbor,
    DatapathRoute, DatapathStatus, FdbClear, FdbCleared, FibKey, FibRoute, InterfaceStatus,
    KernelFeatures, LearnedMac, LinkState, ModuleStatus, Neighbor, Observed, PortStatus,
    RouteStatus, Row, StateDb, Table, fdb_key, neighbor_key,
};
use crate::mac::MacAddr;

/// The modules that write state tables, as type markers for [`Writer`] and [`ObservedTx`].
pub mod owner {
    /// The kernel module.
    #[derive(Debug)]
    pub enum Kernel {}
    /// The datapath module.
    #[derive(Debug)]
    pub enum Datapath {}
    /// The supervisor.
    #[derive(Debug)]
    pub enum Supervisor {}
    /// The API module.
    #[derive(Debug)]
    pub enum Api {}
}

/// The one handle through which a module writes its state tables.
pub struct Writer<O> {
    db: Arc<StateDb>,
    owner: PhantomData<fn() -> O>,
}

impl<O> Clone for Writer<O> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            owner: PhantomData,
        }
    }
}

impl<O> Writer<O> {
    fn of(db: &Arc<StateDb>) -> Self {
        Self {
            db: db.clone(),
            owner: PhantomData,
        }
    }

    /// Write this module's tables; everything `f` writes is one commit (none if nothing
    /// changed).
    pub fn write<R>(&self, f: impl FnOnce(&mut ObservedTx<'_, O>) -> R) -> (R, Arc<Commit>) {
        self.db.write_observed(f)
    }

    /// The database, to read and subscribe.
    pub fn db(&self) -> &Arc<StateDb> {
        &self.db
    }
}

/// A writer reads like the database it writes.
impl<O> std::ops::Deref for Writer<O> {
    type Target = StateDb;

    fn deref(&self) -> &StateDb {
        &self.db
    }
}

/// Every writer, as [`StateDb::writers`] hands them out.
pub struct Writers {
    pub kernel: Writer<owner::Kernel>,
    pub datapath: Writer<owner::Datapath>,
    pub supervisor: Writer<owner::Supervisor>,
    pub api: Writer<owner::Api>,
}

impl Writers {
    pub(super) fn new(db: &Arc<StateDb>) -> Self {
        Self {
            kernel: Writer::of(db),
            datapath: Writer::of(db),
            supervisor: Writer::of(db),
            api: Writer::of(db),
        }
    }
}

pub type KernelWriter = Writer<owner::Kernel>;
pub type DatapathWriter = Writer<owner::Datapath>;
pub type SupervisorWriter = Writer<owner::Supervisor>;
pub type ApiWriter = Writer<owner::Api>;

pub type KernelTx<'a> = ObservedTx<'a, owner::Kernel>;
pub type DatapathTx<'a> = ObservedTx<'a, owner::Datapath>;
pub type SupervisorTx<'a> = ObservedTx<'a, owner::Supervisor>;
pub type ApiTx<'a> = ObservedTx<'a, owner::Api>;

/// A batch of state writes by one module, applied as one commit.
pub struct ObservedTx<'a, O> {
    observed: &'a mut Observed,
    changes: Vec<Change>,
    owner: PhantomData<fn() -> O>,
}

impl<'a, O> ObservedTx<'a, O> {
    pub(super) fn new(observed: &'a mut Observed) -> Self {
        Self {
            observed,
            changes: Vec::new(),
            owner: PhantomData,
        }
    }

    pub(super) fn into_changes(self) -> Vec<Change> {
        self.changes
    }

    /// Everything observed so far (every table: reading is free for all).
    pub fn observed(&self) -> &Observed {
        self.observed
    }

    /// Make a table (`current` reads it, `put` writes a row) hold exactly `rows`: the rows
    /// not among them go.
    pub fn replace_all<K: Ord + Clone, R>(
        &mut self,
        current: fn(&Observed) -> &BTreeMap<K, R>,
        put: fn(&mut Self, K, Option<R>),
        rows: BTreeMap<K, R>,
    ) {
        let stale: Vec<K> = current(self.observed)
            .keys()
            .filter(|key| !rows.contains_key(*key))
            .cloned()
            .collect();
        for key in stale {
            put(self, key, None);
        }
        for (key, row) in rows {
            put(self, key, Some(row));
        }
    }

    fn put<K: Ord, R: TableRow>(
        &mut self,
        table: Table,
        map: fn(&mut Observed) -> &mut BTreeMap<K, R>,
        key: K,
        key_text: String,
        row: Option<R>,
    ) {
        put_row(
            table,
            map(self.observed),
            key,
            key_text,
            row,
            &mut self.changes,
        );
    }

    /// Write a single-row table.
    fn put_single<R: Default + TableRow>(
        &mut self,
        table: Table,
        slot: fn(&mut Observed) -> &mut R,
        key: &str,
        row: R,
    ) {
        let current = slot(self.observed);
        let mut single = BTreeMap::from([((), current.clone())]);
        put_row(
            table,
            &mut single,
            (),
            key.into(),
            Some(row),
            &mut self.changes,
        );
        *slot(self.observed) = single.remove(&()).unwrap_or_default();
    }
}

impl ObservedTx<'_, owner::Kernel> {
    pub fn link(&mut self, name: &str, row: Option<LinkState>) {
        self.put(Table::Link, |o| &mut o.links, name.into(), name.into(), row);
    }

    pub fn fib(&mut self, key: FibKey, row: Option<FibRoute>) {
        self.put(Table::Fib, |o| &mut o.fib, key, key.to_string(), row);
    }

    pub fn neighbor(&mut self, ifindex: u32, ip: IpAddr, row: Option<Neighbor>) {
        let key = neighbor_key(ifindex, &ip);
        self.put(
            Table::Neighbor,
            |o| &mut o.neighbors,
            (ifindex, ip),
            key,
            row,
        );
    }

    pub fn bridge_fdb(&mut self, vlan: u16, mac: MacAddr, row: Option<BridgeMac>) {
        let key = fdb_key(vlan, &mac);
        self.put(
            Table::BridgeFdb,
            |o| &mut o.bridge_fdb,
            (vlan, mac),
            key,
            row,
        );
    }

    pub fn bridge_port(&mut self, name: &str, row: Option<BridgePort>) {
        self.put(
            Table::BridgePort,
            |o| &mut o.bridge_ports,
            name.into(),
            name.into(),
            row,
        );
    }

    pub fn kernel_features(&mut self, row: KernelFeatures) {
        self.put_single(Table::KernelFeatures, |o| &mut o.kernel, "kernel", row);
    }

    pub fn route_status(&mut self, prefix: IpNet, row: Option<RouteStatus>) {
        self.put(
            Table::RouteStatus,
            |o| &mut o.route_status,
            prefix,
            prefix.to_string(),
            row,
        );
    }

    pub fn interface_status(&mut self, name: &str, row: Option<InterfaceStatus>) {
        self.put(
            Table::InterfaceStatus,
            |o| &mut o.interface_status,
            name.into(),
            name.into(),
            row,
        );
    }
}

impl ObservedTx<'_, owner::Datapath> {
    pub fn port_status(&mut self, name: &str, row: Option<PortStatus>) {
        self.put(
            Table::PortStatus,
            |o| &mut o.port_status,
            name.into(),
            name.into(),
            row,
        );
    }

    pub fn learned(&mut self, vlan: u16, mac: MacAddr, row: Option<LearnedMac>) {
        let key = fdb_key(vlan, &mac);
        self.put(
            Table::FdbLearned,
            |o| &mut o.fdb_learned,
            (vlan, mac),
            key,
            row,
        );
    }

    pub fn datapath(&mut self, row: DatapathStatus) {
        self.put_single(Table::Datapath, |o| &mut o.datapath, "datapath", row);
    }

    pub fn route(&mut self, key: FibKey, row: Option<DatapathRoute>) {
        self.put(
            Table::DatapathRoute,
            |o| &mut o.datapath_routes,
            key,
            key.to_string(),
            row,
        );
    }

    pub fn neighbor(&mut self, ifindex: u32, ip: IpAddr, row: Option<DatapathNeighbor>) {
        let key = neighbor_key(ifindex, &ip);
        self.put(
            Table::DatapathNeighbor,
            |o| &mut o.datapath_neighbors,
            (ifindex, ip),
            key,
            row,
        );
    }

    pub fn fdb_cleared(&mut self, row: FdbCleared) {
        self.put_single(
            Table::FdbCleared,
            |o| &mut o.fdb_cleared,
            "fdb-cleared",
            row,
        );
    }

    pub fn flood(&mut self, vlan: u16, row: Option<DatapathFlood>) {
        self.put(
            Table::DatapathFlood,
            |o| &mut o.datapath_flood,
            vlan,
            vlan.to_string(),
            row,
        );
    }
}

impl ObservedTx<'_, owner::Supervisor> {
    pub fn module(&mut self, name: &str, row: Option<ModuleStatus>) {
        self.put(
            Table::Module,
            |o| &mut o.modules,
            name.into(),
            name.into(),
            row,
        );
    }
}

impl ObservedTx<'_, owner::Api> {
    pub fn fdb_clear(&mut self, row: FdbClear) {
        self.put_single(Table::FdbClear, |o| &mut o.fdb_clear, "fdb-clear", row);
    }
}

/// What a row of a state table is: compared to tell a change, carried by it as it is.
trait TableRow: Clone + PartialEq + serde::Serialize + Send + Sync + std::fmt::Debug + 'static {}

impl<R: Clone + PartialEq + serde::Serialize + Send + Sync + std::fmt::Debug + 'static> TableRow
    for R
{
}

/// Set or remove one row, recording the change if there is one.
fn put_row<K: Ord, R: TableRow>(
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
                row: Some(Row::new(row.clone())),
                old: old.cloned().map(Row::new),
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
                    old: Some(Row::new(old)),
                });
            }
        }
    }
}
