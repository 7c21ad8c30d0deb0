//! Commits and transactions: the row changes every subscriber sees, and the validated
//! operations that change the config tables.

use std::{any::Any, collections::BTreeMap, fmt, net::IpAddr, sync::Arc};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::DeserializeOwned};
use serde_json::Value;

use super::{Table, words};
use crate::{
    config::{
        Config, FieldError, InterfaceConfig, PortConfig, RouteConfig, StaticFdb, SwitchConfig,
        VlanConfig,
    },
    mac::MacAddr,
};

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
    pub row: Option<Row>,
    /// The row before the change (none for an insert).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub old: Option<Row>,
}

/// A row as a change carries it: the typed row of the table, made JSON only when the change
/// is sent or read as JSON. A commit stays in memory until every subscriber has read it,
/// and the JSON of a route is several times its typed row: a table of a million routes
/// going through in commits would hold gigabytes as JSON.
#[derive(Clone)]
pub struct Row(Arc<dyn AnyRow>);

/// What a row of any table is to a change.
trait AnyRow: Send + Sync + fmt::Debug + 'static {
    fn to_value(&self) -> Value;
    fn as_any(&self) -> &dyn Any;
}

impl<R: Serialize + Send + Sync + fmt::Debug + 'static> AnyRow for R {
    fn to_value(&self) -> Value {
        row_value(self)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Row {
    pub fn new<R: Serialize + Send + Sync + fmt::Debug + 'static>(row: R) -> Self {
        Self(Arc::new(row))
    }

    /// The row as JSON, as the API sends it.
    pub fn to_value(&self) -> Value {
        self.0.to_value()
    }

    /// The typed row, if it is an `R` (a change read from JSON is a `Value`).
    pub fn get<R: 'static>(&self) -> Option<&R> {
        self.0.as_any().downcast_ref()
    }
}

impl From<Value> for Row {
    fn from(value: Value) -> Self {
        Self::new(value)
    }
}

impl PartialEq for Row {
    fn eq(&self, other: &Self) -> bool {
        self.to_value() == other.to_value()
    }
}

impl fmt::Debug for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Row {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Row {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(Row::from)
    }
}

/// An atomic set of changes, in commit order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    pub generation: u64,
    pub changes: Vec<Change>,
}

words! {
    /// Where a config commit came from, for the log.
    pub enum CommitSource {
        /// The config file, read at start.
        File = "file",
        /// The `xnos` CLI (through the API).
        Cli = "cli",
        /// Any other API client.
        Api = "api",
    }
}

/// How many changes a commit's summary names before it only counts the rest.
const SUMMARY_CHANGES: usize = 8;

impl Commit {
    /// One log line for a config commit: its generation, its source and what changed in
    /// the config file's words, as the CLI prints it: "commit 7 from api: ~ [[port]]
    /// name = "swp2": vlan = 10 -> 20; + [[vlan]] id = 30".
    pub fn summary(&self, source: CommitSource) -> String {
        if self.changes.is_empty() {
            return format!(
                "no commit from {source}: nothing changed (generation stays {})",
                self.generation
            );
        }
        let mut parts: Vec<String> = self
            .changes
            .iter()
            .take(SUMMARY_CHANGES)
            .map(Change::config_line)
            .collect();
        if self.changes.len() > SUMMARY_CHANGES {
            parts.push(format!(
                "{} more changes",
                self.changes.len() - SUMMARY_CHANGES
            ));
        }
        format!(
            "commit {} from {source}: {}",
            self.generation,
            parts.join("; ")
        )
    }
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

impl Op {
    pub fn table(&self) -> Table {
        match self {
            Op::Insert { table, .. } | Op::Update { table, .. } | Op::Delete { table, .. } => {
                *table
            }
        }
    }
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

pub fn neighbor_key(ifindex: u32, ip: &IpAddr) -> String {
    format!("{ifindex}/{ip}")
}
pub(super) fn row_value<R: Serialize>(row: &R) -> Value {
    serde_json::to_value(row).expect("table rows serialise to JSON")
}

/// Append the changes that turn `old` into `new` for one table.
fn diff_table<K: Ord, R: Clone + PartialEq + Serialize + Send + Sync + fmt::Debug + 'static>(
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
                row: Some(Row::new(row.clone())),
                old: None,
            }),
            Some(before) if before != row => changes.push(Change {
                table,
                key: key(k),
                op: ChangeOp::Update,
                row: Some(Row::new(row.clone())),
                old: Some(Row::new(before.clone())),
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
                old: Some(Row::new(row.clone())),
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

fn parse_row<R: DeserializeOwned>(row: &Value) -> Result<R, String> {
    serde_json::from_value(row.clone()).map_err(|e| format!("bad row: {e}"))
}

/// The fields a port row may have. (Its mode's fields are flattened into it, which serde
/// cannot check for unknown fields itself, as it does for the other rows.)
const PORT_FIELDS: &[&str] = &[
    "name",
    "mode",
    "vlan",
    "vlans",
    "native-vlan",
    "datapath",
    "mtu",
];

fn parse_port(row: &Value) -> Result<PortConfig, String> {
    if let Some(unknown) = row
        .as_object()
        .and_then(|fields| fields.keys().find(|k| !PORT_FIELDS.contains(&k.as_str())))
    {
        return Err(format!(
            "bad row: unknown field `{unknown}`, expected one of {}",
            PORT_FIELDS
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    parse_row(row)
}

/// Insert/update/delete one row of a config map; `key` is the row's key as text. Refusals
/// name the thing as an operator does (`name`: "VLAN 10", "port swp1"), no API verb: the
/// CLI shows them as they are.
fn apply_row<K: Ord + Clone, R>(
    map: &mut BTreeMap<K, R>,
    op: &Op,
    parse: impl FnOnce(&Value) -> Result<(K, R), String>,
    parse_key: impl FnOnce(&str) -> Result<K, String>,
    name: impl Fn(&K) -> String,
) -> Result<(), String> {
    match op {
        Op::Insert { row, .. } => {
            let (key, row) = parse(row)?;
            if map.contains_key(&key) {
                return Err(format!("{} exists already", name(&key)));
            }
            map.insert(key, row);
        }
        Op::Update { row, .. } => {
            let (key, row) = parse(row)?;
            match map.get_mut(&key) {
                Some(slot) => *slot = row,
                None => return Err(format!("{} does not exist", name(&key))),
            }
        }
        Op::Delete { key, .. } => {
            let parsed = parse_key(key)?;
            if map.remove(&parsed).is_none() {
                return Err(format!("{} does not exist", name(&parsed)));
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

/// What in `config` uses VLAN `vlan`, in words ("ports swp1, swp4 and interface vlan10").
fn vlan_users(config: &Config, vlan: u16) -> Option<String> {
    let ports: Vec<&str> = config
        .ports
        .values()
        .filter(|p| p.mode.vlans().contains(&vlan))
        .map(|p| p.name.as_str())
        .collect();
    let interfaces: Vec<&str> = config
        .interfaces
        .values()
        .filter(|i| i.vlan == Some(vlan))
        .map(|i| i.name.as_str())
        .collect();
    let entries: Vec<String> = config
        .fdb
        .values()
        .filter(|f| f.vlan == vlan)
        .map(|f| f.mac.to_string())
        .collect();
    let mut users = Vec::new();
    for (one, many, names) in [
        (
            "port",
            "ports",
            ports.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        ),
        (
            "interface",
            "interfaces",
            interfaces.iter().map(|n| n.to_string()).collect(),
        ),
        ("static entry", "static entries", entries),
    ] {
        match names.len() {
            0 => {}
            1 => users.push(format!("{one} {}", names[0])),
            _ => users.push(format!("{many} {}", names.join(", "))),
        }
    }
    match users.len() {
        0 => None,
        1 => Some(users.remove(0)),
        _ => {
            let last = users.pop().expect("two or more");
            Some(format!("{} and {last}", users.join(", ")))
        }
    }
}

/// Refuse to delete a row that others refer to, naming them: the whole-config validation
/// would only see the dangling reference ("VLAN 10 does not exist") afterwards.
fn refuse_delete_in_use(config: &Config, table: Table, key: &str) -> Result<(), String> {
    match table {
        Table::Vlan => match key.parse::<u16>().ok().and_then(|v| vlan_users(config, v)) {
            Some(users) => Err(format!(
                "VLAN {key} is used by {users}: change or remove them first"
            )),
            None => Ok(()),
        },
        Table::Port => {
            let entries: Vec<&StaticFdb> = config.fdb.values().filter(|f| f.port == key).collect();
            let (first, more) = match entries.as_slice() {
                [] => return Ok(()),
                [one] => (one, ""),
                [one, ..] => (one, " and the others likewise"),
            };
            let named: Vec<String> = entries
                .iter()
                .map(|f| format!("{} in VLAN {}", f.mac, f.vlan))
                .collect();
            Err(format!(
                "{table} {key} is used by static {} {}: remove {} first (xnos fdb del {} \
                 --vlan {}{more}; in the API, an earlier op of the same transaction)",
                if entries.len() == 1 {
                    "entry"
                } else {
                    "entries"
                },
                named.join(", "),
                if entries.len() == 1 { "it" } else { "them" },
                first.mac,
                first.vlan,
            ))
        }
        _ => Ok(()),
    }
}

pub(super) fn apply_op(config: &mut Config, op: &Op) -> Result<(), String> {
    if let Op::Delete { table, key } = op {
        refuse_delete_in_use(config, *table, key)?;
    }
    match op.table() {
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
            |id| format!("VLAN {id}"),
        ),
        Table::Port => apply_row(
            &mut config.ports,
            op,
            |row| parse_port(row).map(|p| (p.name.clone(), p)),
            |key| Ok(key.to_string()),
            |name| format!("port {name}"),
        ),
        Table::FdbStatic => apply_row(
            &mut config.fdb,
            op,
            |row| parse_row::<StaticFdb>(row).map(|f| ((f.vlan, f.mac), f)),
            parse_fdb_key,
            |(vlan, mac)| format!("static entry {mac} in VLAN {vlan}"),
        ),
        Table::Interface => apply_row(
            &mut config.interfaces,
            op,
            |row| parse_row::<InterfaceConfig>(row).map(|i| (i.name.clone(), i)),
            |key| Ok(key.to_string()),
            |name| format!("interface {name}"),
        ),
        Table::Route => apply_row(
            &mut config.routes,
            op,
            |row| parse_row::<RouteConfig>(row).map(|r| (r.prefix, r)),
            |key| {
                key.parse()
                    .map_err(|_| format!("bad route key {key:?}: expected a prefix"))
            },
            |prefix| format!("route {prefix}"),
        ),
        table => Err(format!(
            "{table} is observed state, written by xnosd itself"
        )),
    }
}
