//! The tables of StateDb, and which module is the one writer of each.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

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
    RouteStatus,
    BridgeFdb,
    DatapathRoute,
    DatapathNeighbor,
    DatapathFlood,
    FdbClear,
    FdbCleared,
}

impl Table {
    pub const ALL: [Table; 23] = [
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
        Table::RouteStatus,
        Table::BridgeFdb,
        Table::DatapathRoute,
        Table::DatapathNeighbor,
        Table::DatapathFlood,
        Table::FdbClear,
        Table::FdbCleared,
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
            Table::RouteStatus => "route-status",
            Table::BridgeFdb => "bridge-fdb",
            Table::DatapathRoute => "datapath-route",
            Table::DatapathNeighbor => "datapath-neighbor",
            Table::DatapathFlood => "datapath-flood",
            Table::FdbClear => "fdb-clear",
            Table::FdbCleared => "fdb-cleared",
        }
    }

    /// Who writes the table: config tables change only by validated transactions; every
    /// state table has exactly one writer module, which alone holds the [`Writer`] for it.
    ///
    /// [`Writer`]: super::Writer
    pub const fn owner(self) -> Owner {
        match self {
            Table::Switch
            | Table::Vlan
            | Table::Port
            | Table::FdbStatic
            | Table::Interface
            | Table::Route => Owner::Config,
            Table::Link
            | Table::Fib
            | Table::Neighbor
            | Table::BridgePort
            | Table::BridgeFdb
            | Table::KernelFeatures
            | Table::InterfaceStatus
            | Table::RouteStatus => Owner::Kernel,
            Table::PortStatus
            | Table::FdbLearned
            | Table::Datapath
            | Table::DatapathRoute
            | Table::DatapathNeighbor
            | Table::DatapathFlood
            | Table::FdbCleared => Owner::Datapath,
            Table::Module => Owner::Supervisor,
            Table::FdbClear => Owner::Api,
        }
    }

    /// Desired-config tables, written only by validated transactions.
    pub const fn is_config(self) -> bool {
        matches!(self.owner(), Owner::Config)
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

/// The writer of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Owner {
    /// The operator: config file, CLI and API transactions, all validated alike.
    Config,
    /// The kernel module (rtnetlink): links, routes, neighbours, the kernel bridge.
    Kernel,
    /// The datapath module: what the BPF maps and attachments hold.
    Datapath,
    /// The supervisor: module states.
    Supervisor,
    /// The API: requests the datapath module acts on (`fdb-clear`).
    Api,
}

impl Owner {
    pub const fn name(self) -> &'static str {
        match self {
            Owner::Config => "config",
            Owner::Kernel => "kernel",
            Owner::Datapath => "datapath",
            Owner::Supervisor => "supervisor",
            Owner::Api => "api",
        }
    }
}
