//! The TOML config file: parsing, validation, and the desired-state tables it produces.
//!
//! Every error names the key and the line it is on, and a config that fails validation
//! produces nothing: the daemon then refuses to start before touching any interface.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use xnos_common::{VLAN_MAX, VLAN_MIN};

use crate::mac::MacAddr;

/// Default FDB aging time in seconds, as on most switches.
pub const DEFAULT_FDB_AGING_SECS: u64 = 300;

/// A config value that is wrong, named by table, row key and field.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Serialize, Deserialize)]
#[error("{}: {field}: {message}", subject(.table, .key))]
pub struct FieldError {
    pub table: String,
    pub key: String,
    pub field: String,
    pub message: String,
}

/// The row an error is about, as the config file names it: `[[fdb]]` entries by MAC and
/// VLAN (the StateDb table is `fdb-static`, keyed `<vlan>/<mac>`).
fn subject(table: &str, key: &str) -> String {
    match (table, key.split_once('/')) {
        ("fdb-static", Some((vlan, mac))) => format!("fdb {mac} vlan {vlan}"),
        _ => format!("{table} {key}"),
    }
}

fn field_error(
    table: &str,
    key: impl ToString,
    field: &str,
    message: impl Into<String>,
) -> FieldError {
    FieldError {
        table: table.into(),
        key: key.to_string(),
        field: field.into(),
        message: message.into(),
    }
}

/// Why a VLAN ID is not usable, if it is not.
pub(crate) fn vlan_range_error(id: i64) -> Option<String> {
    (id < i64::from(VLAN_MIN) || id > i64::from(VLAN_MAX))
        .then(|| format!("VLAN {id} is out of range {VLAN_MIN}..{VLAN_MAX}"))
}

/// Linux's bounds for an Ethernet netdev's MTU (ETH_MIN_MTU, and the 16-bit IP length).
const MTU_RANGE: std::ops::RangeInclusive<i64> = 68..=65535;

/// Why an MTU is not usable, if it is not.
fn mtu_range_error(mtu: i64) -> Option<String> {
    (!MTU_RANGE.contains(&mtu)).then(|| format!("MTU {mtu} is out of range 68..65535"))
}

/// Why an FDB aging time is not usable, if it is not.
fn fdb_aging_error(secs: i64) -> Option<String> {
    (!(1..=1_000_000).contains(&secs)).then(|| format!("{secs} is out of range 1..1000000 seconds"))
}

/// An L3 interface is an SVI or a routed port, never both or neither.
const INTERFACE_KIND: &str = "give exactly one of vlan (an SVI) or port (a routed port)";

/// What validation needs to know of a kernel interface that exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkFacts {
    /// The kernel flags it IFF_LOOPBACK.
    pub loopback: bool,
}

/// The kernel interfaces a config is validated against: tests give a closure saying which
/// names exist, xnosd asks the kernel ([`crate::kernel::link::KernelLinks`]).
pub trait Links {
    /// None: no interface of that name.
    fn facts(&self, name: &str) -> Option<LinkFacts>;
}

impl<F: Fn(&str) -> bool> Links for F {
    fn facts(&self, name: &str) -> Option<LinkFacts> {
        self(name).then(LinkFacts::default)
    }
}

/// A config file error: the file, line and key (as written in the file) at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}:{line}: {key}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub key: String,
    pub message: String,
}

crate::statedb::words! {
    /// A port's VLAN mode.
    pub enum PortModeName {
        Access = "access",
        Trunk = "trunk",
    }
}

/// Which kernel fast path a port uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DatapathChoice {
    /// The best the port supports: native XDP, else generic XDP, else TC.
    #[default]
    Auto,
    /// Native (driver) XDP only: the port fails if the driver lacks it.
    XdpNative,
    /// Generic (skb) XDP: works on any interface, slower.
    XdpGeneric,
    /// The same pipeline as a TC ingress program (tcx): any interface, skb based; for
    /// drivers whose XDP is missing or in use by something else.
    Tc,
    /// The kernel bridge forwards the port, offloaded to the switch ASIC by its switchdev
    /// driver where there is one (`auto` picks this for ports with a switch ID); frames to
    /// and from XDP ports of the same VLAN cross through a CPU port.
    Switchdev,
}

impl DatapathChoice {
    pub fn is_auto(&self) -> bool {
        *self == DatapathChoice::Auto
    }

    pub fn name(self) -> &'static str {
        match self {
            DatapathChoice::Auto => "auto",
            DatapathChoice::XdpNative => "xdp-native",
            DatapathChoice::XdpGeneric => "xdp-generic",
            DatapathChoice::Tc => "tc",
            DatapathChoice::Switchdev => "switchdev",
        }
    }
}
/// How a port carries VLANs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "mode",
    rename_all = "lowercase",
    rename_all_fields = "kebab-case"
)]
pub enum PortMode {
    /// Untagged frames only, all in one VLAN.
    Access { vlan: u16 },
    /// Tagged frames of `vlans`, plus untagged frames in `native_vlan` if set.
    Trunk {
        #[serde(default)]
        vlans: BTreeSet<u16>,
        #[serde(default)]
        native_vlan: Option<u16>,
    },
}

impl PortMode {
    /// Every VLAN the port is a member of.
    pub fn vlans(&self) -> BTreeSet<u16> {
        match self {
            PortMode::Access { vlan } => [*vlan].into(),
            PortMode::Trunk { vlans, native_vlan } => {
                vlans.iter().copied().chain(*native_vlan).collect()
            }
        }
    }

    /// The VLAN whose frames the port sends and receives untagged.
    pub fn untagged_vlan(&self) -> Option<u16> {
        match self {
            PortMode::Access { vlan } => Some(*vlan),
            PortMode::Trunk { native_vlan, .. } => *native_vlan,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PortConfig {
    pub name: String,
    #[serde(flatten)]
    pub mode: PortMode,
    /// `auto` (default), `xdp-native` or `xdp-generic`.
    #[serde(default, skip_serializing_if = "DatapathChoice::is_auto")]
    pub datapath: DatapathChoice,
    /// The MTU xnos sets on the port's netdev; None: left as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct VlanConfig {
    pub id: u16,
    /// None for VLANs that exist only because a port uses them.
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StaticFdb {
    pub mac: MacAddr,
    pub vlan: u16,
    pub port: String,
}

/// Switch-wide settings (the single row of the `switch` table).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SwitchConfig {
    /// Seconds a learned MAC lives without being seen (`fdb-aging` in the file).
    #[serde(rename = "fdb-aging")]
    pub fdb_aging_secs: u64,
    /// The MAC of every L3 interface; derived from /etc/machine-id when not set.
    #[serde(default)]
    pub router_mac: Option<MacAddr>,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        Self {
            fdb_aging_secs: DEFAULT_FDB_AGING_SECS,
            router_mac: None,
        }
    }
}

impl SwitchConfig {
    /// The router MAC in use: the configured one, or a stable locally administered MAC
    /// derived from the machine id (the same across restarts of this box).
    pub fn router_mac(&self) -> MacAddr {
        self.router_mac.unwrap_or_else(|| {
            let seed = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
            // FNV-1a: tiny, stable across Rust versions (unlike DefaultHasher).
            let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
            for byte in seed.trim().bytes() {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
            let b = hash.to_be_bytes();
            MacAddr([0x02, b[1], b[2], b[3], b[4], b[5]])
        })
    }
}

/// An L3 interface: an SVI (`vlan`) or a routed port (`port`), with its addresses.
/// Its name is the kernel netdev that carries the addresses: `vlan<ID>` for an SVI,
/// the port's own name for a routed port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct InterfaceConfig {
    pub name: String,
    #[serde(default)]
    pub vlan: Option<u16>,
    #[serde(default)]
    pub port: Option<String>,
    #[serde(default)]
    pub addresses: Vec<IpNet>,
    /// The MTU of the interface's netdev; None: an SVI gets the smallest MTU of its
    /// VLAN's ports, a routed port keeps its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

impl Config {
    /// How many rows each table of the file has, in words: "3 VLANs, 2 ports, 1 static
    /// FDB entry, 1 interface, 0 routes".
    pub fn counts(&self) -> String {
        let n = |count: usize, one: &str, many: &str| {
            format!("{count} {}", if count == 1 { one } else { many })
        };
        [
            n(self.vlans.len(), "VLAN", "VLANs"),
            n(self.ports.len(), "port", "ports"),
            n(self.fdb.len(), "static FDB entry", "static FDB entries"),
            n(self.interfaces.len(), "interface", "interfaces"),
            n(self.routes.len(), "route", "routes"),
        ]
        .join(", ")
    }

    /// Every netdev the datapath may be attached to for this config: the switch ports, the
    /// internal ports of SVIs, routed ports, and the XDP ends of the CPU ports of switchdev
    /// ports (one per VLAN). A starting xnosd takes over programs on these alone.
    pub fn datapath_port_names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.ports.keys().cloned().collect();
        for iface in self.interfaces.values() {
            match (iface.vlan, &iface.port) {
                (Some(vlan), _) => names.insert(InterfaceConfig::svi_port_name(vlan)),
                (None, Some(port)) => names.insert(port.clone()),
                (None, None) => false,
            };
        }
        for vlan in self.ports.values().flat_map(|p| p.mode.vlans()) {
            names.insert(crate::switchdev::cpu_port_xdp_name(vlan));
        }
        names
    }

    /// A VLAN a port names exists without a row of its own: give it one (unnamed), as the
    /// file, the CLI and the API all do. IDs out of range are left to validation to name.
    pub fn add_port_vlans(&mut self) {
        let used: BTreeSet<u16> = self.ports.values().flat_map(|p| p.mode.vlans()).collect();
        for id in used {
            if vlan_range_error(i64::from(id)).is_none() {
                self.vlans
                    .entry(id)
                    .or_insert(VlanConfig { id, name: None });
            }
        }
    }
}

impl InterfaceConfig {
    /// The kernel netdev name of an SVI.
    pub fn svi_name(vlan: u16) -> String {
        format!("vlan{vlan}")
    }

    /// The internal switch port (the other end of the SVI's veth pair).
    pub fn svi_port_name(vlan: u16) -> String {
        format!("vlan{vlan}i")
    }
}

/// A static route from config, installed into the kernel (and from there mirrored into
/// the fast path like every kernel route).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RouteConfig {
    pub prefix: IpNet,
    pub nexthops: Vec<IpAddr>,
}

/// The desired state of the switch: the config tables of StateDb.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub switch: SwitchConfig,
    pub vlans: BTreeMap<u16, VlanConfig>,
    pub ports: BTreeMap<String, PortConfig>,
    pub fdb: BTreeMap<(u16, MacAddr), StaticFdb>,
    pub interfaces: BTreeMap<String, InterfaceConfig>,
    pub routes: BTreeMap<IpNet, RouteConfig>,
}

mod emit;
mod parse;
#[cfg(test)]
mod tests;
mod validate;
