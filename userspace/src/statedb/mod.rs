//! StateDb: the central database every module reads and writes, and nothing else.
//!
//! Tables hold either desired config (`switch`, `vlan`, `port`, `fdb-static`,
//! `interface`, `route`: what the operator asked for, changed only by validated
//! transactions) or observed state (what the kernel, the datapath and the supervisor
//! report), like SONiC's CONFIG_DB and STATE_DB. Each state table has one writer module
//! ([`Table::owner`]), and only that module holds the [`Writer`] that can write it. Every
//! commit is atomic, gets the next generation number and a list of row changes;
//! subscribers get a snapshot and then every commit in order. A subscriber that falls
//! behind is told so and resynchronises from a new snapshot: writers never wait for
//! readers.

mod kinds;
mod lines;
mod rows;
mod table;
mod transaction;
mod writer;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    ops::Bound,
    sync::{Arc, RwLock},
};

use ipnet::IpNet;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

use self::transaction::{apply_op, row_value};
pub use self::{
    kinds::*,
    lines::{vlan_ranges, vlans_toml},
    rows::*,
    table::{Owner, Table},
    transaction::{
        Change, ChangeOp, Commit, CommitSource, Op, Row, TxError, diff_config, fdb_key,
        neighbor_key,
    },
    writer::{
        ApiTx, ApiWriter, DatapathTx, DatapathWriter, KernelTx, KernelWriter, ObservedTx,
        SupervisorTx, SupervisorWriter, Writer, Writers, owner,
    },
};
use crate::{
    config::{Config, Links},
    mac::MacAddr,
};

/// How many commits a subscriber may fall behind before it must resynchronise.
const SUBSCRIBER_BACKLOG: usize = 4096;

/// How many rows one commit of a large sync (a dump of the kernel's routes, the datapath
/// publishing what it programmed) writes at most. A commit holds the write lock while it is
/// made, and every subscriber holds it until it has read it: a million routes go in
/// hundreds of small commits, with readers (the API) served between them, rather than in
/// one that stops them for seconds and holds all of its rows twice over.
pub const CHUNK_ROWS: usize = 4096;

/// Observed state: written by modules (each table by its one writer), read by everyone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub links: BTreeMap<String, LinkState>,
    pub port_status: BTreeMap<String, PortStatus>,
    pub fdb_learned: BTreeMap<(u16, MacAddr), LearnedMac>,
    pub bridge_fdb: BTreeMap<(u16, MacAddr), BridgeMac>,
    pub fib: BTreeMap<FibKey, FibRoute>,
    /// Keyed by (ifindex, address).
    pub neighbors: BTreeMap<(u32, IpAddr), Neighbor>,
    pub modules: BTreeMap<String, ModuleStatus>,
    pub datapath: DatapathStatus,
    pub datapath_routes: BTreeMap<FibKey, DatapathRoute>,
    /// Keyed by (ifindex, address).
    pub datapath_neighbors: BTreeMap<(u32, IpAddr), DatapathNeighbor>,
    pub datapath_flood: BTreeMap<u16, DatapathFlood>,
    pub bridge_ports: BTreeMap<String, BridgePort>,
    pub kernel: KernelFeatures,
    pub interface_status: BTreeMap<String, InterfaceStatus>,
    pub route_status: BTreeMap<IpNet, RouteStatus>,
    pub fdb_clear: FdbClear,
    pub fdb_cleared: FdbCleared,
}

impl Observed {
    /// The subnets the kernel has connected routes to (what its nexthops may be on).
    pub fn connected(&self) -> Vec<IpNet> {
        self.fib
            .values()
            .filter(|r| r.is_connected())
            .map(|r| r.prefix)
            .collect()
    }
}

#[derive(Clone, Debug)]
pub struct State {
    pub generation: u64,
    pub config: Config,
    pub observed: Observed,
}

/// The snapshot a subscription starts from, with the receiver for what follows it.
pub struct Subscription {
    pub snapshot: State,
    pub commits: broadcast::Receiver<Arc<Commit>>,
}

type LinkCheck = dyn Links + Send + Sync;

pub struct StateDb {
    state: RwLock<State>,
    commits: broadcast::Sender<Arc<Commit>>,
    links: Box<LinkCheck>,
    writers_taken: std::sync::atomic::AtomicBool,
    /// When the large tables were last rebuilt, and how often they were written since.
    compacted: std::sync::Mutex<Compacted>,
}

/// A large table's rebuild bookkeeping (see [`compact`]).
#[derive(Default)]
struct Compaction {
    /// Rows at the last rebuild.
    at: usize,
    /// Commits that changed the table: a rebuilt copy replaces the table only if none
    /// came while it was made.
    writes: u64,
}

#[derive(Default)]
struct Compacted {
    fib: Compaction,
    datapath_routes: Compaction,
    fdb_learned: Compaction,
}

/// Below this many rows a table is never rebuilt: the space its nodes waste is small.
const COMPACT_MIN_ROWS: usize = 8192;

/// Whether a table of `len` rows, last rebuilt at `at`, is due a rebuild: it has grown by
/// a quarter since. A table that shrank to less than half counts from its new size.
fn compaction_due(len: usize, at: &mut usize) -> bool {
    if len < *at / 2 {
        *at = len;
    }
    len >= COMPACT_MIN_ROWS && len >= at.saturating_add(*at / 4)
}

/// Rebuild `map` with full nodes once it has grown by a quarter since it was last rebuilt
/// (at `at` rows); true if it did. A B-tree filled in key order, as routes arrive from a
/// dump or `ip -batch`, splits each full node in two and leaves both halves half empty
/// for good: at a million routes the nodes of each per-route table held almost as much
/// empty space as rows. A rebuild from the sorted rows packs the nodes full; doing it at
/// each growth by a quarter costs O(1) per row added over the table's life (about five
/// moves per row) and keeps the nodes at least 80% full on average. (StateDb's own
/// tables are rebuilt from a copy, outside its lock: [`StateDb::rebuild`].)
pub(crate) fn compact<K: Ord, V>(map: &mut BTreeMap<K, V>, at: &mut usize) -> bool {
    let len = map.len();
    if !compaction_due(len, at) {
        return false;
    }
    *map = std::mem::take(map).into_iter().collect();
    *at = len;
    true
}

/// Run a long synchronous piece of work (a million routes) without holding up the other
/// tasks of the runtime's worker thread: they move to another worker (a task woken on a
/// busy worker waits for it otherwise, however idle the others are). On a runtime with
/// one thread (the unit tests') there is none to move them to, and they wait.
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Hand the memory the allocator holds free back to the system: a large sync frees the
/// commits that carried it and a compaction a whole table's old nodes, in blocks between
/// live ones that glibc's malloc would otherwise keep (about a quarter of xnosd's RSS at
/// a million routes).
pub fn release_free_memory() {
    let start = std::time::Instant::now();
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
    tracing::debug!(
        ms = start.elapsed().as_secs_f64() * 1e3,
        "free memory returned to the kernel"
    );
}

impl StateDb {
    /// A database holding `config`; transactions are validated against the kernel
    /// interfaces `links`.
    pub fn new(config: Config, links: impl Links + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            state: RwLock::new(State {
                generation: 1,
                config,
                observed: Observed::default(),
            }),
            commits: broadcast::Sender::new(SUBSCRIBER_BACKLOG),
            links: Box::new(links),
            writers_taken: Default::default(),
            compacted: Default::default(),
        })
    }

    /// Run `f` on a consistent view of the whole database.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.state.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn generation(&self) -> u64 {
        self.read(|s| s.generation)
    }

    /// Every commit from the very next one on, in order, for a module that reads the state
    /// itself (no copy of it is made).
    pub fn commits(&self) -> broadcast::Receiver<Arc<Commit>> {
        self.commits.subscribe()
    }

    /// One table's rows, its generation and, from the very next commit on, every commit:
    /// only that table is copied, as typed rows.
    pub fn subscribe_table(
        &self,
        table: Table,
    ) -> (u64, RowsSnapshot, broadcast::Receiver<Arc<Commit>>) {
        // Holding the read lock keeps writers out between snapshot and subscription.
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        (
            state.generation,
            table_snapshot(&state, table),
            self.commits.subscribe(),
        )
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
    /// The commit is shared with the subscribers, not copied: a chunk of a large sync holds
    /// thousands of rows.
    fn commit(&self, state: &mut State, changes: Vec<Change>) -> Arc<Commit> {
        if changes.is_empty() {
            return Arc::new(Commit {
                generation: state.generation,
                changes,
            });
        }
        state.generation += 1;
        let commit = Arc::new(Commit {
            generation: state.generation,
            changes,
        });
        // Sent under the write lock, so subscribers see commits in generation order.
        let _ = self.commits.send(commit.clone());
        commit
    }

    /// Validate `config` as a whole and make it the desired config in one commit.
    pub fn replace_config(&self, config: Config) -> Result<Arc<Commit>, TxError> {
        config.validate(&*self.links).map_err(TxError::Invalid)?;
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        config
            .validate_nexthops(Some(&state.config), &state.observed.connected())
            .map_err(TxError::Invalid)?;
        let changes = diff_config(&state.config, &config);
        state.config = config;
        Ok(self.commit(&mut state, changes))
    }

    /// Apply config operations atomically: all of them, validated together, or none.
    pub fn transact(&self, ops: &[Op]) -> Result<Arc<Commit>, TxError> {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut config = state.config.clone();
        for (index, op) in ops.iter().enumerate() {
            apply_op(&mut config, op).map_err(|message| TxError::Op {
                index,
                table: op.table().to_string(),
                message,
            })?;
        }
        config.add_port_vlans();
        config.validate(&*self.links).map_err(TxError::Invalid)?;
        config
            .validate_nexthops(Some(&state.config), &state.observed.connected())
            .map_err(TxError::Invalid)?;
        let changes = diff_config(&state.config, &config);
        state.config = config;
        Ok(self.commit(&mut state, changes))
    }

    /// Write observed state; everything `f` writes is one commit (none if nothing changed).
    /// Modules reach this only through their [`Writer`].
    fn write_observed<O, R>(
        &self,
        f: impl FnOnce(&mut ObservedTx<'_, O>) -> R,
    ) -> (R, Arc<Commit>) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut tx = ObservedTx::new(&mut state.observed);
        let result = f(&mut tx);
        let changes = tx.into_changes();
        let mut due = Vec::new();
        if !changes.is_empty() {
            let mut guard = self.compacted.lock().unwrap_or_else(|e| e.into_inner());
            let books = &mut *guard;
            let o = &state.observed;
            for (table, len, book) in [
                (Table::Fib, o.fib.len(), &mut books.fib),
                (
                    Table::DatapathRoute,
                    o.datapath_routes.len(),
                    &mut books.datapath_routes,
                ),
                (
                    Table::FdbLearned,
                    o.fdb_learned.len(),
                    &mut books.fdb_learned,
                ),
            ] {
                if changes.iter().any(|c| c.table == table) {
                    book.writes += 1;
                    if compaction_due(len, &mut book.at) {
                        due.push(table);
                    }
                }
            }
        }
        let commit = self.commit(&mut state, changes);
        drop(state);
        if !due.is_empty() {
            blocking(|| self.rebuild_tables(&due));
        }
        (result, commit)
    }

    fn rebuild_tables(&self, due: &[Table]) {
        for table in due {
            match table {
                Table::Fib => self.rebuild(|o| &o.fib, |o| &mut o.fib, |c| &mut c.fib),
                Table::DatapathRoute => self.rebuild(
                    |o| &o.datapath_routes,
                    |o| &mut o.datapath_routes,
                    |c| &mut c.datapath_routes,
                ),
                _ => self.rebuild(
                    |o| &o.fdb_learned,
                    |o| &mut o.fdb_learned,
                    |c| &mut c.fdb_learned,
                ),
            }
        }
        release_free_memory();
    }

    /// Rebuild a large table with full nodes (see [`compact`]) without keeping readers or
    /// writers out for longer than a chunk: its rows are copied a chunk at a time, each
    /// under its own read lock, the new table is built with no lock held, and it replaces
    /// the old one under the write lock only if no commit changed the table meanwhile
    /// (then the next commit to it tries again). At a million routes a rebuild takes a
    /// few hundred milliseconds; the API answers all along.
    fn rebuild<K: Ord + Clone, V: Clone>(
        &self,
        table: fn(&Observed) -> &BTreeMap<K, V>,
        table_mut: fn(&mut Observed) -> &mut BTreeMap<K, V>,
        book: fn(&mut Compacted) -> &mut Compaction,
    ) {
        let writes = || book(&mut self.compacted.lock().unwrap_or_else(|e| e.into_inner())).writes;
        let mut rows: Vec<(K, V)> = Vec::new();
        let mut began = None;
        loop {
            let copied = self.read(|s| {
                let map = table(&s.observed);
                match began {
                    None => {
                        began = Some(writes());
                        rows.reserve_exact(map.len());
                    }
                    Some(began) if began != writes() => return None,
                    Some(_) => {}
                }
                let after = rows.last().map(|(k, _)| k.clone());
                let from = after.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
                let before = rows.len();
                rows.extend(
                    map.range((from, Bound::Unbounded))
                        .take(CHUNK_ROWS)
                        .map(|(k, v)| (k.clone(), v.clone())),
                );
                Some(rows.len() - before)
            });
            match copied {
                None => return,
                Some(n) if n < CHUNK_ROWS => break,
                Some(_) => {}
            }
        }
        let fresh: BTreeMap<K, V> = rows.into_iter().collect();
        let replaced = {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            let mut books = self.compacted.lock().unwrap_or_else(|e| e.into_inner());
            let book = book(&mut books);
            if Some(book.writes) != began {
                None
            } else {
                book.at = fresh.len();
                Some(std::mem::replace(table_mut(&mut state.observed), fresh))
            }
        };
        // The old table (or the unused copy) is freed with no lock held.
        drop(replaced);
    }

    /// The writers of the state tables, one per writing module: handed out once, to the
    /// code that starts the modules (a second call is a bug and panics).
    pub fn writers(self: &Arc<Self>) -> Writers {
        assert!(
            !self
                .writers_taken
                .swap(true, std::sync::atomic::Ordering::SeqCst),
            "the writers of StateDb are handed out once"
        );
        Writers::new(self)
    }

    /// All rows of a table as JSON, with each row's key.
    pub fn rows(&self, table: Table) -> Vec<(String, Value)> {
        self.read(|s| table_rows(s, table))
    }
}

/// All rows of one table of a state, keyed as in changes.
pub fn table_rows(s: &State, table: Table) -> Vec<(String, Value)> {
    table_snapshot(s, table).collect()
}

/// The rows of one table as they are now, turned into JSON one at a time as they are read.
/// It holds a copy of the table's typed rows, far smaller than their JSON values: a
/// watcher's snapshot is the table at one generation, sent without holding the state's
/// lock and without building all of its JSON at once.
pub type RowsSnapshot = Box<dyn Iterator<Item = (String, Value)> + Send>;

pub fn table_snapshot(s: &State, table: Table) -> RowsSnapshot {
    visit_table(table, Snapshot(s))
}

/// Copies a table's typed rows out of a state (see [`RowsSnapshot`]).
struct Snapshot<'a>(&'a State);

impl TableVisitor for Snapshot<'_> {
    type Output = RowsSnapshot;

    fn map<K, R>(self, rows: fn(&State) -> &BTreeMap<K, R>, key: fn(&K) -> String) -> RowsSnapshot
    where
        K: Ord + Clone + Send + 'static,
        R: Clone + Serialize + Send + 'static,
    {
        Box::new(
            rows(self.0)
                .clone()
                .into_iter()
                .map(move |(k, r)| (key(&k), row_value(&r))),
        )
    }

    fn one<R: Serialize + 'static>(self, key: &'static str, row: fn(&State) -> &R) -> RowsSnapshot {
        Box::new(std::iter::once((key.to_string(), row_value(row(self.0)))))
    }
}

/// What reads a table row by row, given the table's map and key types: a copy of it (a
/// watcher's snapshot), a listing by key range (the API's). [`visit_table`] hands each
/// table to it.
pub trait TableVisitor {
    type Output;

    /// A table of many rows: `rows` finds it in a state, `key` says each row's key as
    /// changes name it.
    fn map<K, R>(self, rows: fn(&State) -> &BTreeMap<K, R>, key: fn(&K) -> String) -> Self::Output
    where
        K: Ord + Clone + Send + 'static,
        R: Clone + Serialize + Send + 'static;

    /// A table of one row, whose key is `key`.
    fn one<R: Serialize + 'static>(self, key: &'static str, row: fn(&State) -> &R) -> Self::Output;
}

/// Hand `table`, with its types, to `visitor`.
pub fn visit_table<V: TableVisitor>(table: Table, visitor: V) -> V::Output {
    match table {
        Table::Switch => visitor.one("switch", |s| &s.config.switch),
        Table::Vlan => visitor.map(|s| &s.config.vlans, u16::to_string),
        Table::Port => visitor.map(|s| &s.config.ports, String::clone),
        Table::FdbStatic => visitor.map(|s| &s.config.fdb, |(v, m)| fdb_key(*v, m)),
        Table::Interface => visitor.map(|s| &s.config.interfaces, String::clone),
        Table::Route => visitor.map(|s| &s.config.routes, IpNet::to_string),
        Table::Link => visitor.map(|s| &s.observed.links, String::clone),
        Table::PortStatus => visitor.map(|s| &s.observed.port_status, String::clone),
        Table::FdbLearned => visitor.map(|s| &s.observed.fdb_learned, |(v, m)| fdb_key(*v, m)),
        Table::Fib => visitor.map(|s| &s.observed.fib, FibKey::to_string),
        Table::Neighbor => visitor.map(|s| &s.observed.neighbors, |(i, a)| neighbor_key(*i, a)),
        Table::Datapath => visitor.one("datapath", |s| &s.observed.datapath),
        Table::Module => visitor.map(|s| &s.observed.modules, String::clone),
        Table::BridgePort => visitor.map(|s| &s.observed.bridge_ports, String::clone),
        Table::KernelFeatures => visitor.one("kernel", |s| &s.observed.kernel),
        Table::InterfaceStatus => visitor.map(|s| &s.observed.interface_status, String::clone),
        Table::RouteStatus => visitor.map(|s| &s.observed.route_status, IpNet::to_string),
        Table::BridgeFdb => visitor.map(|s| &s.observed.bridge_fdb, |(v, m)| fdb_key(*v, m)),
        Table::DatapathRoute => visitor.map(|s| &s.observed.datapath_routes, FibKey::to_string),
        Table::DatapathNeighbor => visitor.map(
            |s| &s.observed.datapath_neighbors,
            |(i, a)| neighbor_key(*i, a),
        ),
        Table::DatapathFlood => visitor.map(|s| &s.observed.datapath_flood, u16::to_string),
        Table::FdbClear => visitor.one("fdb-clear", |s| &s.observed.fdb_clear),
        Table::FdbCleared => visitor.one("fdb-cleared", |s| &s.observed.fdb_cleared),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::*;
    use crate::config::PortMode;

    // A table is rebuilt when it has grown by a quarter since the last rebuild (never
    // below COMPACT_MIN_ROWS), keeps every row as it was, and after shrinking to less
    // than half is rebuilt again by the next growth by a quarter.
    #[test]
    fn compact_rebuilds_at_each_growth_by_a_quarter_and_keeps_every_row() {
        let mut map: BTreeMap<u32, String> = BTreeMap::new();
        let mut at = 0;
        let mut rebuilt_at = Vec::new();
        for i in 0..40_000u32 {
            map.insert(i, format!("row {i}"));
            if compact(&mut map, &mut at) {
                rebuilt_at.push(map.len());
            }
        }
        assert_eq!(
            rebuilt_at,
            [8192, 10240, 12800, 16000, 20000, 25000, 31250, 39062]
        );
        assert_eq!(map.len(), 40_000);
        assert!(map.iter().all(|(k, v)| *v == format!("row {k}")));
        map.retain(|k, _| *k < 10_000);
        assert!(
            !compact(&mut map, &mut at),
            "shrinking alone rebuilds nothing"
        );
        assert_eq!(at, 10_000);
        for i in 40_000..42_499u32 {
            map.insert(i, String::new());
            assert!(!compact(&mut map, &mut at));
        }
        map.insert(42_499, String::new());
        assert!(compact(&mut map, &mut at));
        assert_eq!(map.range(..10_000).count(), 10_000);
    }

    fn db() -> Arc<StateDb> {
        let config = Config::parse(
            "t.toml",
            "[[vlan]]\nid = 10\nname = \"a\"\n[[port]]\nname = \"swp1\"\nmode = \"access\"\nvlan = 10\n",
            |_: &str| true,
        )
        .unwrap();
        StateDb::new(config, |name: &str| name.starts_with("swp"))
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
    fn a_commit_summary_names_source_tables_keys_and_changed_fields() {
        let db = db();
        let commit = db
            .transact(&[
                insert(Table::Vlan, json!({"id": 20})),
                Op::Update {
                    table: Table::Port,
                    row: json!({"name": "swp1", "mode": "access", "vlan": 20}),
                },
                Op::Delete {
                    table: Table::Vlan,
                    key: "10".into(),
                },
            ])
            .unwrap();
        assert_eq!(
            commit.summary(CommitSource::Cli),
            "commit 2 from cli: + [[vlan]] id = 20; - [[vlan]] id = 10; ~ [[port]] name = \"swp1\": \
             vlan = 10 -> 20"
        );
        let unchanged = db.transact(&[]).unwrap();
        assert_eq!(
            unchanged.summary(CommitSource::Api),
            "no commit from api: nothing changed (generation stays 2)"
        );
    }

    #[test]
    fn a_rejected_transaction_changes_nothing_and_names_row_and_field() {
        let db = db();
        let before = db.read(|s| s.config.clone());
        // The first op is fine, the second names a VLAN out of range.
        let err = db
            .transact(&[
                insert(Table::Vlan, json!({"id": 30})),
                insert(
                    Table::Port,
                    json!({"name": "swp2", "mode": "access", "vlan": 5000}),
                ),
            ])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "port swp2: vlan: VLAN 5000 is out of range 1..4094"
        );
        assert_eq!(db.read(|s| s.config.clone()), before);
        assert_eq!(db.generation(), 1);

        for (ops, expected) in [
            (
                vec![insert(Table::Vlan, json!({"id": 10}))],
                "op 0 (vlan): VLAN 10 exists already",
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
                "op 0 (vlan): VLAN 10 is used by port swp1: change or remove them first",
            ),
            (
                vec![Op::Delete {
                    table: Table::Port,
                    key: "swp9".into(),
                }],
                "op 0 (port): port swp9 does not exist",
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
                "fdb 02:00:00:00:00:01 vlan 10: port: \"swp9\" is not a configured port",
            ),
            (
                vec![insert(Table::Vlan, json!({"id": 30, "colour": "red"}))],
                "op 0 (vlan): bad row: unknown field `colour`, expected `id` or `name`",
            ),
            (
                vec![insert(
                    Table::Port,
                    json!({"name": "swp2", "mode": "access", "vlan": 10, "colour": "red"}),
                )],
                "op 0 (port): bad row: unknown field `colour`, expected one of `name`, `mode`, \
                 `vlan`, `vlans`, `native-vlan`, `datapath`, `mtu`",
            ),
            (
                vec![insert(
                    Table::Port,
                    json!({"name": "swp2", "mode": "trunk", "vlans": [10], "native-vlan": 10}),
                )],
                "port swp2: native-vlan: VLAN 10 is also in vlans: a trunk carries a VLAN either \
                 untagged (native-vlan) or tagged (vlans), not both",
            ),
        ] {
            assert_eq!(db.transact(&ops).unwrap_err().to_string(), expected);
        }
        assert_eq!(db.read(|s| s.config.clone()), before);
    }

    // What this shows: a port in a VLAN the vlan table lacks makes the VLAN exist, in the
    // same commit, as a port of the config file does; the VLAN stays when the port goes.
    #[test]
    fn a_vlan_a_port_uses_exists_in_the_same_commit() {
        let db = db();
        let commit = db
            .transact(&[insert(
                Table::Port,
                json!({"name": "swp2", "mode": "trunk", "vlans": [40], "native-vlan": 41}),
            )])
            .unwrap();
        let inserted: Vec<(Table, &str)> = commit
            .changes
            .iter()
            .map(|c| (c.table, c.key.as_str()))
            .collect();
        assert_eq!(
            inserted,
            [
                (Table::Vlan, "40"),
                (Table::Vlan, "41"),
                (Table::Port, "swp2")
            ]
        );
        db.transact(&[Op::Delete {
            table: Table::Port,
            key: "swp2".into(),
        }])
        .unwrap();
        assert!(db.read(|s| s.config.vlans.contains_key(&40)));
    }

    // What this shows: deleting what others use names the users, and the same delete
    // after them in one transaction goes through.
    #[test]
    fn deleting_a_row_in_use_names_its_users() {
        let db = db();
        db.transact(&[
            insert(
                Table::Port,
                json!({"name": "swp4", "mode": "trunk", "vlans": [20], "native-vlan": 10}),
            ),
            insert(Table::Vlan, json!({"id": 20})),
            insert(
                Table::FdbStatic,
                json!({"mac": "02:00:00:00:00:01", "vlan": 10, "port": "swp1"}),
            ),
            insert(
                Table::Interface,
                json!({"name": "vlan10", "vlan": 10, "addresses": ["10.0.10.1/24"]}),
            ),
        ])
        .unwrap();
        let delete = |table, key: &str| Op::Delete {
            table,
            key: key.into(),
        };
        assert_eq!(
            db.transact(&[delete(Table::Vlan, "10")])
                .unwrap_err()
                .to_string(),
            "op 0 (vlan): VLAN 10 is used by ports swp1, swp4, interface vlan10 and static \
             entry 02:00:00:00:00:01: change or remove them first"
        );
        assert_eq!(
            db.transact(&[delete(Table::Port, "swp1")])
                .unwrap_err()
                .to_string(),
            "op 0 (port): port swp1 is used by static entry 02:00:00:00:00:01 in VLAN 10: \
             remove it first (xnos fdb del 02:00:00:00:00:01 --vlan 10; in the API, an \
             earlier op of the same transaction)"
        );
        db.transact(&[
            delete(Table::FdbStatic, "10/02:00:00:00:00:01"),
            delete(Table::Port, "swp1"),
        ])
        .unwrap();
    }

    #[test]
    fn unchanged_observed_rows_are_not_commits() {
        let db = db();
        let kernel = db.writers().kernel;
        let link = LinkState::up("swp1", 3);
        let (_, commit) = kernel.write(|tx| tx.link("swp1", Some(link.clone())));
        assert_eq!((commit.generation, commit.changes.len()), (2, 1));
        let (_, commit) = kernel.write(|tx| tx.link("swp1", Some(link.clone())));
        assert_eq!((commit.generation, commit.changes.len()), (2, 0));
        let (_, commit) = kernel.write(|tx| tx.link("swp1", None));
        assert_eq!(commit.changes[0].op, ChangeOp::Delete);
        assert_eq!(db.generation(), 3);
    }

    // A table that grew by a quarter is rebuilt from a copy and swapped in: every row is
    // still there afterwards, its bookkeeping says when, and the commits were not held up
    // by it (each write returned its own commit).
    #[test]
    fn a_grown_table_is_rebuilt_with_every_row() {
        let db = db();
        let kernel = db.writers().kernel;
        let route = |i: u32| FibRoute {
            prefix: IpNet::new(std::net::Ipv4Addr::from(0x0a00_0000 + i).into(), 32).unwrap(),
            table: RouteTable::Main,
            tos: 0,
            metric: 0,
            kind: RouteKind::Unicast,
            protocol: RouteProtocol::Named(ProtocolName::Static),
            nexthops: smallvec::smallvec![FibNexthop {
                gateway: None,
                ifindex: 3,
            }],
            hardware: None,
        };
        for chunk in 0..20u32 {
            let (_, commit) = kernel.write(|tx| {
                for i in chunk * 1000..(chunk + 1) * 1000 {
                    let r = route(i);
                    tx.fib(r.key(), Some(r));
                }
            });
            assert_eq!(commit.changes.len(), 1000);
        }
        let at = db.compacted.lock().unwrap().fib.at;
        // Rebuilt at 9,000 (the first commit past 8,192), then at 12,000 and 15,000 and
        // 19,000 rows (each a quarter more than the last).
        assert_eq!(at, 19_000);
        db.read(|s| {
            assert_eq!(s.observed.fib.len(), 20_000);
            assert!((0..20_000).all(|i| s.observed.fib.get(&route(i).key()) == Some(&route(i))));
        });
    }

    /// Replay `commits` on top of `rows` the way a subscriber does.
    fn replay(rows: &mut BTreeMap<(Table, String), Value>, commit: &Commit) {
        for change in &commit.changes {
            match &change.row {
                Some(row) => rows.insert((change.table, change.key.clone()), row.to_value()),
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
        let datapath = db.writers().datapath;
        let sub = db.subscribe();
        let mut rows = all_rows(&sub.snapshot);
        let mut commits = sub.commits;
        let writers: Vec<_> = (0..4u8)
            .map(|w| {
                let datapath = datapath.clone();
                tokio::task::spawn_blocking(move || {
                    for i in 0..200u8 {
                        let mac = MacAddr([2, 0, 0, 0, w, i]);
                        datapath.write(|tx| {
                            tx.learned(
                                10,
                                mac,
                                Some(LearnedMac {
                                    vlan: 10,
                                    mac,
                                    port: "swp1".into(),
                                    moves: 0,
                                }),
                            )
                        });
                        if i % 3 == 0 {
                            datapath.write(|tx| tx.learned(10, mac, None));
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
        let datapath = db.writers().datapath;
        let mut sub = db.subscribe();
        for i in 0..(SUBSCRIBER_BACKLOG + 10) {
            let mac = MacAddr([2, 0, 0, 0, (i >> 8) as u8, i as u8]);
            datapath.write(|tx| {
                tx.learned(
                    10,
                    mac,
                    Some(LearnedMac {
                        vlan: 10,
                        mac,
                        port: "swp1".into(),
                        moves: 0,
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
            |_: &str| true,
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
            |_: &str| true,
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

#[cfg(test)]
mod owner_tests {
    use super::*;

    #[test]
    fn every_state_table_has_one_writer_and_config_tables_none() {
        for table in Table::ALL {
            assert_eq!(table.is_config(), table.owner() == Owner::Config, "{table}");
        }
        let db = StateDb::new(Config::default(), |_: &str| true);
        let writers = db.writers();
        // The kernel writes links; the datapath module learned MACs; the supervisor modules.
        let (_, commit) = writers.kernel.write(|tx| tx.interface_status("x", None));
        assert!(commit.changes.is_empty());
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| db.writers()));
        assert!(result.is_err(), "writers are handed out once");
    }
}
