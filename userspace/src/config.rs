//! The TOML config file: parsing, validation, and the desired-state tables it produces.
//!
//! Every error names the key and the line it is on, and a config that fails validation
//! produces nothing: the daemon then refuses to start before touching any interface.

use std::{
    collections::{BTreeMap, BTreeSet},
    ops::Range,
    path::Path,
};

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use toml::Spanned;
use xnos_common::{MAX_ECMP, VLAN_MAX, VLAN_MIN};

use crate::mac::MacAddr;

/// Default FDB aging time in seconds, as on most switches.
pub const DEFAULT_FDB_AGING_SECS: u64 = 300;

/// A config value that is wrong, named by table, row key and field.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Serialize, Deserialize)]
#[error("{table} {key}: {field}: {message}")]
pub struct FieldError {
    pub table: String,
    pub key: String,
    pub field: String,
    pub message: String,
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
/// Linux's bounds for an Ethernet netdev's MTU (ETH_MIN_MTU, and the 16-bit IP length).
const MTU_RANGE: std::ops::RangeInclusive<i64> = 68..=65535;

fn mtu_range_error(mtu: i64) -> Option<String> {
    (!MTU_RANGE.contains(&mtu)).then(|| format!("MTU {mtu} is out of range 68..65535"))
}

fn vlan_range_error(id: i64) -> Option<String> {
    (id < i64::from(VLAN_MIN) || id > i64::from(VLAN_MAX))
        .then(|| format!("VLAN {id} is out of range {VLAN_MIN}..{VLAN_MAX}"))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}:{line}: {key}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub key: String,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortModeName {
    Access,
    Trunk,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    #[serde(default)]
    switch: Option<Spanned<RawSwitch>>,
    #[serde(default)]
    vlan: Vec<Spanned<RawVlan>>,
    #[serde(default)]
    port: Vec<Spanned<RawPort>>,
    #[serde(default)]
    fdb: Vec<Spanned<RawFdb>>,
    #[serde(default)]
    interface: Vec<Spanned<RawInterface>>,
    #[serde(default)]
    route: Vec<Spanned<RawRoute>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSwitch {
    fdb_aging: Option<Spanned<i64>>,
    router_mac: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawInterface {
    vlan: Option<Spanned<i64>>,
    port: Option<Spanned<String>>,
    #[serde(default)]
    addresses: Vec<Spanned<String>>,
    mtu: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRoute {
    prefix: Spanned<String>,
    nexthops: Spanned<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawVlan {
    id: Spanned<i64>,
    name: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPort {
    name: Spanned<String>,
    mode: Spanned<PortModeName>,
    vlan: Option<Spanned<i64>>,
    vlans: Option<Spanned<Vec<Spanned<i64>>>>,
    native_vlan: Option<Spanned<i64>>,
    datapath: Option<Spanned<DatapathChoice>>,
    mtu: Option<Spanned<i64>>,
}

/// Which kernel fast path a port uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFdb {
    mac: Spanned<String>,
    vlan: Spanned<i64>,
    port: Spanned<String>,
}

/// How a port carries VLANs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
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
pub struct VlanConfig {
    pub id: u16,
    /// None for VLANs that exist only because a port uses them.
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticFdb {
    pub mac: MacAddr,
    pub vlan: u16,
    pub port: String,
}

/// Switch-wide settings (the single row of the `switch` table).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchConfig {
    /// Seconds a learned MAC lives without being seen.
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

/// Turns byte spans into line numbers for error messages.
struct Source<'a> {
    file: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn error(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let start = span.start.min(self.text.len());
        ConfigError {
            file: self.file.into(),
            line: self.text[..start].matches('\n').count() + 1,
            key: key.into(),
            message: message.into(),
        }
    }

    fn mtu(&self, value: Option<&Spanned<i64>>, key: &str) -> Result<Option<u32>, ConfigError> {
        let Some(value) = value else {
            return Ok(None);
        };
        if let Some(message) = mtu_range_error(*value.get_ref()) {
            return Err(self.error(value.span(), key, message));
        }
        Ok(Some(*value.get_ref() as u32))
    }

    fn vlan_id(&self, value: &Spanned<i64>, key: &str) -> Result<u16, ConfigError> {
        let id = *value.get_ref();
        if let Some(message) = vlan_range_error(id) {
            return Err(self.error(value.span(), key, message));
        }
        Ok(id as u16)
    }
}

impl Config {
    /// Read and validate a config file. `link_exists` says whether a kernel interface of
    /// that name exists (so tests can validate without real interfaces).
    pub fn load(path: &Path, link_exists: impl Fn(&str) -> bool) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: 0,
            key: "(file)".into(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&file, &text, link_exists)
    }

    pub fn parse(
        file: &str,
        text: &str,
        link_exists: impl Fn(&str) -> bool,
    ) -> Result<Config, ConfigError> {
        let src = Source { file, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            src.error(span, "(syntax)", e.message().to_string())
        })?;

        let mut config = Config::default();
        if let Some(switch) = &raw.switch
            && let Some(aging) = &switch.get_ref().fdb_aging
        {
            let secs = *aging.get_ref();
            if !(1..=1_000_000).contains(&secs) {
                return Err(src.error(
                    aging.span(),
                    "switch.fdb-aging",
                    format!("{secs} is out of range 1..1000000 seconds"),
                ));
            }
            config.switch.fdb_aging_secs = secs as u64;
        }
        if let Some(switch) = &raw.switch
            && let Some(mac) = &switch.get_ref().router_mac
        {
            let parsed: MacAddr =
                mac.get_ref()
                    .parse()
                    .map_err(|e: crate::mac::ParseMacError| {
                        src.error(mac.span(), "switch.router-mac", e.to_string())
                    })?;
            if parsed.is_multicast() || parsed.is_zero() {
                return Err(src.error(
                    mac.span(),
                    "switch.router-mac",
                    format!("{parsed} is not a unicast address"),
                ));
            }
            config.switch.router_mac = Some(parsed);
        }

        // Where each row starts, to give whole-config validation errors a line.
        let mut rows: BTreeMap<(&str, String), Range<usize>> = BTreeMap::new();
        let mut vlan_names = BTreeSet::new();
        for (i, vlan) in raw.vlan.iter().enumerate() {
            rows.insert(
                ("vlan", vlan.get_ref().id.get_ref().to_string()),
                vlan.span(),
            );
            let vlan = vlan.get_ref();
            let key = format!("vlan[{i}]");
            let id = src.vlan_id(&vlan.id, &format!("{key}.id"))?;
            if config.vlans.contains_key(&id) {
                return Err(src.error(
                    vlan.id.span(),
                    format!("{key}.id"),
                    format!("VLAN {id} is defined twice"),
                ));
            }
            if let Some(name) = &vlan.name {
                if name.get_ref().is_empty() {
                    return Err(src.error(
                        name.span(),
                        format!("{key}.name"),
                        "name must not be empty",
                    ));
                }
                if !vlan_names.insert(name.get_ref().clone()) {
                    return Err(src.error(
                        name.span(),
                        format!("{key}.name"),
                        format!("VLAN name {:?} is used twice", name.get_ref()),
                    ));
                }
            }
            config.vlans.insert(
                id,
                VlanConfig {
                    id,
                    name: vlan.name.as_ref().map(|n| n.get_ref().clone()),
                },
            );
        }

        for (i, port) in raw.port.iter().enumerate() {
            let span = port.span();
            let port = port.get_ref();
            let key = format!("port[{i}]");
            let name = port.name.get_ref();
            rows.insert(("port", name.clone()), span.clone());
            if config.ports.contains_key(name) {
                return Err(src.error(
                    port.name.span(),
                    format!("{key}.name"),
                    format!("port {name:?} is listed twice"),
                ));
            }
            if !link_exists(name) {
                return Err(src.error(
                    port.name.span(),
                    format!("{key}.name"),
                    format!("no kernel interface named {name:?}"),
                ));
            }
            let mode = match port.mode.get_ref() {
                PortModeName::Access => {
                    if let Some(v) = &port.vlans {
                        return Err(src.error(
                            v.span(),
                            format!("{key}.vlans"),
                            "`vlans` is for trunk ports; an access port has one `vlan`",
                        ));
                    }
                    if let Some(v) = &port.native_vlan {
                        return Err(src.error(
                            v.span(),
                            format!("{key}.native-vlan"),
                            "`native-vlan` is for trunk ports; an access port has one `vlan`",
                        ));
                    }
                    let vlan = port.vlan.as_ref().ok_or_else(|| {
                        src.error(
                            span.clone(),
                            format!("{key}.vlan"),
                            format!("access port {name:?} needs `vlan = <1..4094>`"),
                        )
                    })?;
                    PortMode::Access {
                        vlan: src.vlan_id(vlan, &format!("{key}.vlan"))?,
                    }
                }
                PortModeName::Trunk => {
                    if let Some(v) = &port.vlan {
                        return Err(src.error(v.span(), format!("{key}.vlan"), "`vlan` is for access ports; a trunk has `vlans` and an optional `native-vlan`"));
                    }
                    let mut vlans = BTreeSet::new();
                    for (j, v) in port.vlans.iter().flat_map(|v| v.get_ref()).enumerate() {
                        let id = src.vlan_id(v, &format!("{key}.vlans[{j}]"))?;
                        if !vlans.insert(id) {
                            return Err(src.error(
                                v.span(),
                                format!("{key}.vlans[{j}]"),
                                format!("VLAN {id} is listed twice"),
                            ));
                        }
                    }
                    let native_vlan = port
                        .native_vlan
                        .as_ref()
                        .map(|v| src.vlan_id(v, &format!("{key}.native-vlan")))
                        .transpose()?;
                    if vlans.is_empty() && native_vlan.is_none() {
                        return Err(src.error(span.clone(), format!("{key}.vlans"), format!("trunk port {name:?} carries no VLAN: give `vlans` and/or `native-vlan`")));
                    }
                    PortMode::Trunk { vlans, native_vlan }
                }
            };
            for id in mode.vlans() {
                config
                    .vlans
                    .entry(id)
                    .or_insert(VlanConfig { id, name: None });
            }
            let datapath = port
                .datapath
                .as_ref()
                .map_or(DatapathChoice::Auto, |d| *d.get_ref());
            let mtu = src.mtu(port.mtu.as_ref(), &format!("{key}.mtu"))?;
            config.ports.insert(
                name.clone(),
                PortConfig {
                    name: name.clone(),
                    mode,
                    datapath,
                    mtu,
                },
            );
        }

        for (i, fdb) in raw.fdb.iter().enumerate() {
            let span = fdb.span();
            let fdb = fdb.get_ref();
            let key = format!("fdb[{i}]");
            let mac: MacAddr =
                fdb.mac
                    .get_ref()
                    .parse()
                    .map_err(|e: crate::mac::ParseMacError| {
                        src.error(fdb.mac.span(), format!("{key}.mac"), e.to_string())
                    })?;
            if mac.is_multicast() || mac.is_zero() {
                return Err(src.error(
                    fdb.mac.span(),
                    format!("{key}.mac"),
                    format!("{mac} is not a unicast address"),
                ));
            }
            let vlan = src.vlan_id(&fdb.vlan, &format!("{key}.vlan"))?;
            let port_name = fdb.port.get_ref();
            let Some(port) = config.ports.get(port_name) else {
                return Err(src.error(
                    fdb.port.span(),
                    format!("{key}.port"),
                    format!("{port_name:?} is not a configured [[port]]"),
                ));
            };
            if !port.mode.vlans().contains(&vlan) {
                return Err(src.error(
                    fdb.vlan.span(),
                    format!("{key}.vlan"),
                    format!("port {port_name:?} is not in VLAN {vlan}"),
                ));
            }
            if config.fdb.contains_key(&(vlan, mac)) {
                return Err(src.error(
                    fdb.mac.span(),
                    format!("{key}.mac"),
                    format!("{mac} in VLAN {vlan} is defined twice"),
                ));
            }
            rows.insert(("fdb-static", format!("{vlan}/{mac}")), span);
            config.fdb.insert(
                (vlan, mac),
                StaticFdb {
                    mac,
                    vlan,
                    port: port_name.clone(),
                },
            );
        }
        for (i, iface) in raw.interface.iter().enumerate() {
            let span = iface.span();
            let iface = iface.get_ref();
            let key = format!("interface[{i}]");
            let (name, vlan, port) = match (&iface.vlan, &iface.port) {
                (Some(vlan), None) => {
                    let id = src.vlan_id(vlan, &format!("{key}.vlan"))?;
                    if !config.vlans.contains_key(&id) {
                        return Err(src.error(
                            vlan.span(),
                            format!("{key}.vlan"),
                            format!("VLAN {id} is not used by any port or [[vlan]]"),
                        ));
                    }
                    (InterfaceConfig::svi_name(id), Some(id), None)
                }
                (None, Some(port)) => {
                    let name = port.get_ref();
                    if config.ports.contains_key(name) {
                        return Err(src.error(
                            port.span(),
                            format!("{key}.port"),
                            format!(
                                "{name:?} is a switch ([[port]]) port; a routed port must not be"
                            ),
                        ));
                    }
                    if !link_exists(name) {
                        return Err(src.error(
                            port.span(),
                            format!("{key}.port"),
                            format!("no kernel interface named {name:?}"),
                        ));
                    }
                    (name.clone(), None, Some(name.clone()))
                }
                _ => {
                    return Err(src.error(
                        span,
                        key,
                        "give exactly one of `vlan` (an SVI) or `port` (a routed port)",
                    ));
                }
            };
            if config.interfaces.contains_key(&name) {
                return Err(src.error(span, key, format!("interface {name} is defined twice")));
            }
            let mut addresses = Vec::new();
            for (j, address) in iface.addresses.iter().enumerate() {
                let parsed: IpNet = address.get_ref().parse().map_err(|_| {
                    src.error(
                        address.span(),
                        format!("{key}.addresses[{j}]"),
                        format!(
                            "{:?} is not an address with a prefix length, like 10.0.10.1/24",
                            address.get_ref()
                        ),
                    )
                })?;
                addresses.push(parsed);
            }
            rows.insert(("interface", name.clone()), span);
            let mtu = src.mtu(iface.mtu.as_ref(), &format!("{key}.mtu"))?;
            config.interfaces.insert(
                name.clone(),
                InterfaceConfig {
                    name,
                    vlan,
                    port,
                    addresses,
                    mtu,
                },
            );
        }

        for (i, route) in raw.route.iter().enumerate() {
            let span = route.span();
            let route = route.get_ref();
            let key = format!("route[{i}]");
            let prefix: IpNet = route.prefix.get_ref().parse().map_err(|_| {
                src.error(
                    route.prefix.span(),
                    format!("{key}.prefix"),
                    format!(
                        "{:?} is not a prefix like 10.99.0.0/16",
                        route.prefix.get_ref()
                    ),
                )
            })?;
            let prefix = prefix.trunc();
            let mut nexthops = Vec::new();
            for (j, nh) in route.nexthops.get_ref().iter().enumerate() {
                let addr: IpAddr = nh.get_ref().parse().map_err(|_| {
                    src.error(
                        nh.span(),
                        format!("{key}.nexthops[{j}]"),
                        format!("{:?} is not an IP address", nh.get_ref()),
                    )
                })?;
                nexthops.push(addr);
            }
            if config.routes.contains_key(&prefix) {
                return Err(src.error(
                    route.prefix.span(),
                    format!("{key}.prefix"),
                    format!("a route to {prefix} is defined twice"),
                ));
            }
            rows.insert(("route", prefix.to_string()), span);
            config
                .routes
                .insert(prefix, RouteConfig { prefix, nexthops });
        }

        // The checks above name keys precisely; this catches whatever rule they miss.
        config.validate(&link_exists).map_err(|e| {
            let span = rows
                .get(&(e.table.as_str(), e.key.clone()))
                .cloned()
                .unwrap_or(0..0);
            src.error(
                span,
                format!("{} {}.{}", e.table, e.key, e.field),
                e.message,
            )
        })?;
        Ok(config)
    }

    /// Check the config as a whole: ranges, references between tables, uniqueness, and that
    /// every port is a kernel interface. The first problem is returned.
    pub fn validate(&self, link_exists: &dyn Fn(&str) -> bool) -> Result<(), FieldError> {
        let aging = self.switch.fdb_aging_secs;
        if !(1..=1_000_000).contains(&aging) {
            return Err(field_error(
                "switch",
                "switch",
                "fdb_aging_secs",
                format!("{aging} is out of range 1..1000000 seconds"),
            ));
        }
        let mut names = BTreeSet::new();
        for (id, vlan) in &self.vlans {
            if let Some(message) = vlan_range_error(i64::from(*id)) {
                return Err(field_error("vlan", id, "id", message));
            }
            if let Some(name) = &vlan.name {
                if name.is_empty() {
                    return Err(field_error("vlan", id, "name", "name must not be empty"));
                }
                if !names.insert(name) {
                    return Err(field_error(
                        "vlan",
                        id,
                        "name",
                        format!("VLAN name {name:?} is used twice"),
                    ));
                }
            }
        }
        let vlan_exists = |port: &str, field: &str, id: u16| match vlan_range_error(i64::from(id)) {
            Some(message) => Err(field_error("port", port, field, message)),
            None if !self.vlans.contains_key(&id) => Err(field_error(
                "port",
                port,
                field,
                format!("VLAN {id} does not exist (add it to the vlan table first)"),
            )),
            None => Ok(()),
        };
        for (name, port) in &self.ports {
            if !link_exists(name) {
                return Err(field_error(
                    "port",
                    name,
                    "name",
                    format!("no kernel interface named {name:?}"),
                ));
            }
            if let Some(message) = port.mtu.and_then(|m| mtu_range_error(i64::from(m))) {
                return Err(field_error("port", name, "mtu", message));
            }
            match &port.mode {
                PortMode::Access { vlan } => vlan_exists(name, "vlan", *vlan)?,
                PortMode::Trunk { vlans, native_vlan } => {
                    if vlans.is_empty() && native_vlan.is_none() {
                        return Err(field_error(
                            "port",
                            name,
                            "vlans",
                            "a trunk must carry at least one VLAN (vlans and/or native_vlan)",
                        ));
                    }
                    for vlan in vlans {
                        vlan_exists(name, "vlans", *vlan)?;
                    }
                    if let Some(native) = native_vlan {
                        vlan_exists(name, "native_vlan", *native)?;
                    }
                }
            }
        }
        for ((vlan, mac), fdb) in &self.fdb {
            let key = format!("{vlan}/{mac}");
            if mac.is_multicast() || mac.is_zero() {
                return Err(field_error(
                    "fdb-static",
                    &key,
                    "mac",
                    format!("{mac} is not a unicast address"),
                ));
            }
            let Some(port) = self.ports.get(&fdb.port) else {
                return Err(field_error(
                    "fdb-static",
                    &key,
                    "port",
                    format!("{:?} is not a configured port", fdb.port),
                ));
            };
            if !port.mode.vlans().contains(vlan) {
                return Err(field_error(
                    "fdb-static",
                    &key,
                    "vlan",
                    format!("port {:?} is not in VLAN {vlan}", fdb.port),
                ));
            }
        }
        self.validate_l3(link_exists)
    }

    fn validate_l3(&self, link_exists: &dyn Fn(&str) -> bool) -> Result<(), FieldError> {
        if let Some(mac) = self.switch.router_mac
            && (mac.is_multicast() || mac.is_zero())
        {
            return Err(field_error(
                "switch",
                "switch",
                "router_mac",
                format!("{mac} is not a unicast address"),
            ));
        }
        let mut addresses = BTreeMap::new();
        for (name, iface) in &self.interfaces {
            if let Some(message) = iface.mtu.and_then(|m| mtu_range_error(i64::from(m))) {
                return Err(field_error("interface", name, "mtu", message));
            }
            match (iface.vlan, &iface.port) {
                (Some(vlan), None) => {
                    if *name != InterfaceConfig::svi_name(vlan) {
                        return Err(field_error(
                            "interface",
                            name,
                            "name",
                            format!(
                                "the SVI of VLAN {vlan} is named {}",
                                InterfaceConfig::svi_name(vlan)
                            ),
                        ));
                    }
                    if !self.vlans.contains_key(&vlan) {
                        return Err(field_error(
                            "interface",
                            name,
                            "vlan",
                            format!("VLAN {vlan} does not exist (add it to the vlan table first)"),
                        ));
                    }
                }
                (None, Some(port)) => {
                    if port != name {
                        return Err(field_error(
                            "interface",
                            name,
                            "name",
                            format!("a routed port's interface is named like the port ({port})"),
                        ));
                    }
                    if self.ports.contains_key(port) {
                        return Err(field_error(
                            "interface",
                            name,
                            "port",
                            format!("{port:?} is a switch port; a routed port must not be"),
                        ));
                    }
                    if !link_exists(port) {
                        return Err(field_error(
                            "interface",
                            name,
                            "port",
                            format!("no kernel interface named {port:?}"),
                        ));
                    }
                }
                _ => {
                    return Err(field_error(
                        "interface",
                        name,
                        "vlan",
                        "give exactly one of vlan (an SVI) or port (a routed port)",
                    ));
                }
            }
            for address in &iface.addresses {
                if let Some(other) = addresses.insert(address.addr(), name) {
                    return Err(field_error(
                        "interface",
                        name,
                        "addresses",
                        format!("{} is also an address of {other}", address.addr()),
                    ));
                }
            }
        }
        for (prefix, route) in &self.routes {
            let key = prefix.to_string();
            if route.prefix != *prefix || prefix.trunc() != *prefix {
                return Err(field_error(
                    "route",
                    &key,
                    "prefix",
                    format!(
                        "{} has host bits set; the route is to {}",
                        route.prefix,
                        route.prefix.trunc()
                    ),
                ));
            }
            if route.nexthops.is_empty() || route.nexthops.len() > MAX_ECMP {
                return Err(field_error(
                    "route",
                    &key,
                    "nexthops",
                    format!("a route needs 1 to {MAX_ECMP} nexthops"),
                ));
            }
            for nh in &route.nexthops {
                if nh.is_ipv4() != prefix.addr().is_ipv4() {
                    return Err(field_error(
                        "route",
                        &key,
                        "nexthops",
                        format!("nexthop {nh} is not of the prefix's address family"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The config in the file format, as `xnos config show` prints and `config save` writes.
    pub fn to_toml(&self) -> String {
        let mut out = format!("[switch]\nfdb-aging = {}\n", self.switch.fdb_aging_secs);
        if let Some(mac) = self.switch.router_mac {
            out.push_str(&format!("router-mac = \"{mac}\"\n"));
        }
        for vlan in self.vlans.values() {
            out.push_str(&format!("\n[[vlan]]\nid = {}\n", vlan.id));
            if let Some(name) = &vlan.name {
                out.push_str(&format!("name = {}\n", toml::Value::from(name.as_str())));
            }
        }
        for port in self.ports.values() {
            out.push_str(&format!(
                "\n[[port]]\nname = {}\n",
                toml::Value::from(port.name.as_str())
            ));
            match &port.mode {
                PortMode::Access { vlan } => {
                    out.push_str(&format!("mode = \"access\"\nvlan = {vlan}\n"))
                }
                PortMode::Trunk { vlans, native_vlan } => {
                    let list: Vec<String> = vlans.iter().map(u16::to_string).collect();
                    out.push_str(&format!(
                        "mode = \"trunk\"\nvlans = [{}]\n",
                        list.join(", ")
                    ));
                    if let Some(native) = native_vlan {
                        out.push_str(&format!("native-vlan = {native}\n"));
                    }
                }
            }
            if !port.datapath.is_auto() {
                out.push_str(&format!("datapath = \"{}\"\n", port.datapath.name()));
            }
            if let Some(mtu) = port.mtu {
                out.push_str(&format!("mtu = {mtu}\n"));
            }
        }
        for fdb in self.fdb.values() {
            out.push_str(&format!(
                "\n[[fdb]]\nmac = \"{}\"\nvlan = {}\nport = {}\n",
                fdb.mac,
                fdb.vlan,
                toml::Value::from(fdb.port.as_str())
            ));
        }
        let quoted = |items: Vec<String>| {
            items
                .iter()
                .map(|i| format!("\"{i}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        for iface in self.interfaces.values() {
            out.push_str("\n[[interface]]\n");
            match (iface.vlan, &iface.port) {
                (Some(vlan), _) => out.push_str(&format!("vlan = {vlan}\n")),
                (None, Some(port)) => {
                    out.push_str(&format!("port = {}\n", toml::Value::from(port.as_str())))
                }
                (None, None) => {}
            }
            out.push_str(&format!(
                "addresses = [{}]\n",
                quoted(iface.addresses.iter().map(IpNet::to_string).collect())
            ));
            if let Some(mtu) = iface.mtu {
                out.push_str(&format!("mtu = {mtu}\n"));
            }
        }
        for route in self.routes.values() {
            out.push_str(&format!(
                "\n[[route]]\nprefix = \"{}\"\nnexthops = [{}]\n",
                route.prefix,
                quoted(route.nexthops.iter().map(IpAddr::to_string).collect())
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse("test.toml", text, |name| name.starts_with("swp"))
    }

    fn err(text: &str) -> ConfigError {
        parse(text).expect_err("config should be rejected")
    }

    const GOOD: &str = r#"
[switch]
fdb-aging = 60

[[vlan]]
id = 10
name = "servers"

[[port]]
name = "swp1"        # an existing kernel interface
mode = "access"
vlan = 10

[[port]]
name = "swp3"
mode = "trunk"
vlans = [10, 20]
native-vlan = 1      # optional

[[fdb]]
mac = "02:00:00:00:00:10"
vlan = 10
port = "swp1"
"#;

    #[test]
    fn parses_the_documented_example() {
        let config = parse(GOOD).unwrap();
        assert_eq!(config.switch.fdb_aging_secs, 60);
        assert_eq!(config.ports["swp1"].mode, PortMode::Access { vlan: 10 });
        assert_eq!(
            config.ports["swp3"].mode,
            PortMode::Trunk {
                vlans: [10, 20].into(),
                native_vlan: Some(1)
            }
        );
        assert_eq!(
            config.vlans.keys().copied().collect::<Vec<_>>(),
            [1, 10, 20]
        );
        assert_eq!(config.vlans[&10].name.as_deref(), Some("servers"));
        assert_eq!(config.vlans[&20].name, None);
        let mac = "02:00:00:00:00:10".parse().unwrap();
        assert_eq!(config.fdb[&(10, mac)].port, "swp1");
    }

    #[test]
    fn empty_config_is_valid() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_port_names_key_and_line() {
        let e = err("[[port]]\nname = \"eth9\"\nmode = \"access\"\nvlan = 1\n");
        assert_eq!((e.line, e.key.as_str()), (2, "port[0].name"));
        assert!(
            e.message.contains("no kernel interface named \"eth9\""),
            "{e}"
        );
    }

    #[test]
    fn vlan_out_of_range() {
        for (text, key, line) in [
            ("[[vlan]]\nid = 4095\n", "vlan[0].id", 2),
            ("[[vlan]]\nid = 0\n", "vlan[0].id", 2),
            (
                "[[port]]\nname = \"swp1\"\nmode = \"access\"\nvlan = 5000\n",
                "port[0].vlan",
                4,
            ),
            (
                "[[port]]\nname = \"swp1\"\nmode = \"trunk\"\nvlans = [10,\n 4095]\n",
                "port[0].vlans[1]",
                5,
            ),
            (
                "[[port]]\nname = \"swp1\"\nmode = \"trunk\"\nnative-vlan = -1\n",
                "port[0].native-vlan",
                4,
            ),
        ] {
            let e = err(text);
            assert_eq!((e.key.as_str(), e.line), (key, line), "{e}");
            assert!(e.message.contains("out of range 1..4094"), "{e}");
        }
    }

    #[test]
    fn access_port_without_vlan() {
        let e = err("\n[[port]]\nname = \"swp1\"\nmode = \"access\"\n");
        assert_eq!((e.key.as_str(), e.line), ("port[0].vlan", 2));
    }

    #[test]
    fn duplicates() {
        let e = err(
            "[[port]]\nname = \"swp1\"\nmode = \"access\"\nvlan = 1\n[[port]]\nname = \"swp1\"\nmode = \"access\"\nvlan = 2\n",
        );
        assert_eq!((e.key.as_str(), e.line), ("port[1].name", 6));
        let e = err("[[vlan]]\nid = 10\n[[vlan]]\nid = 10\n");
        assert_eq!((e.key.as_str(), e.line), ("vlan[1].id", 4));
        let e = err("[[vlan]]\nid = 10\nname = \"a\"\n[[vlan]]\nid = 11\nname = \"a\"\n");
        assert_eq!((e.key.as_str(), e.line), ("vlan[1].name", 6));
    }

    #[test]
    fn syntax_and_unknown_keys_name_the_line() {
        let e = err("[[vlan]]\nid = 10\nname = \"x\n");
        assert_eq!((e.key.as_str(), e.line), ("(syntax)", 3));
        let e = err("[[port]]\nname = \"swp1\"\nmode = \"access\"\nvlan = 1\nspeed = 10\n");
        assert_eq!(e.line, 5);
        assert!(e.message.contains("unknown field `speed`"), "{e}");
        let e = err("[[port]]\nname = \"swp1\"\nmode = \"hybrid\"\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("unknown variant `hybrid`"), "{e}");
    }

    #[test]
    fn mode_specific_keys() {
        let e = err("[[port]]\nname = \"swp1\"\nmode = \"access\"\nvlan = 1\nvlans = [2]\n");
        assert_eq!(e.key, "port[0].vlans");
        let e = err("[[port]]\nname = \"swp1\"\nmode = \"trunk\"\nvlan = 1\n");
        assert_eq!(e.key, "port[0].vlan");
        let e = err("[[port]]\nname = \"swp1\"\nmode = \"trunk\"\n");
        assert_eq!(e.key, "port[0].vlans");
    }

    #[test]
    fn static_fdb_is_checked() {
        let base = "[[port]]\nname = \"swp1\"\nmode = \"access\"\nvlan = 10\n";
        for (fdb, key) in [
            (
                "mac = \"02:00:00:00:00:10\"\nvlan = 10\nport = \"swp2\"\n",
                "fdb[0].port",
            ),
            (
                "mac = \"02:00:00:00:00:10\"\nvlan = 20\nport = \"swp1\"\n",
                "fdb[0].vlan",
            ),
            (
                "mac = \"01:00:5e:00:00:01\"\nvlan = 10\nport = \"swp1\"\n",
                "fdb[0].mac",
            ),
            (
                "mac = \"nonsense\"\nvlan = 10\nport = \"swp1\"\n",
                "fdb[0].mac",
            ),
        ] {
            let e = err(&format!("{base}[[fdb]]\n{fdb}"));
            assert_eq!(e.key, key, "{e}");
        }
    }

    const L3: &str = r#"
[switch]
router-mac = "02:00:00:00:01:00"

[[vlan]]
id = 10

[[port]]
name = "swp1"
mode = "access"
vlan = 10

[[interface]]
vlan = 10
addresses = ["10.0.10.1/24", "fd00:10::1/64"]

[[interface]]
port = "swp5"
addresses = ["10.0.99.1/30"]

[[route]]
prefix = "10.99.0.0/16"
nexthops = ["10.0.10.2", "10.0.10.3"]
"#;

    #[test]
    fn parses_l3_interfaces_and_routes() {
        let config = parse(L3).unwrap();
        assert_eq!(
            config.switch.router_mac(),
            "02:00:00:00:01:00".parse().unwrap()
        );
        let svi = &config.interfaces["vlan10"];
        assert_eq!((svi.vlan, svi.addresses.len()), (Some(10), 2));
        assert_eq!(config.interfaces["swp5"].port.as_deref(), Some("swp5"));
        let prefix: IpNet = "10.99.0.0/16".parse().unwrap();
        assert_eq!(config.routes[&prefix].nexthops.len(), 2);
        assert_eq!(parse(&config.to_toml()).unwrap(), config);
    }

    #[test]
    fn bad_l3_config_names_key_and_line() {
        for (from, to, key, line) in [
            (
                "vlan = 10\naddresses",
                "vlan = 11\naddresses",
                "interface[0].vlan",
                14,
            ),
            (
                "port = \"swp5\"",
                "port = \"swp1\"",
                "interface[1].port",
                18,
            ),
            (
                "\"10.0.99.1/30\"",
                "\"10.0.99.1\"",
                "interface[1].addresses[0]",
                19,
            ),
            (
                "\"10.99.0.0/16\"",
                "\"10.99.0.0/33\"",
                "route[0].prefix",
                22,
            ),
            (
                "\"10.0.10.3\"",
                "\"fd00::3\"",
                "route 10.99.0.0/16.nexthops",
                21,
            ),
            (
                "\"02:00:00:00:01:00\"",
                "\"01:00:00:00:01:00\"",
                "switch.router-mac",
                3,
            ),
        ] {
            let e = err(&L3.replace(from, to));
            assert_eq!((e.key.as_str(), e.line), (key, line), "{e}");
        }
    }

    #[test]
    fn mtu_on_ports_and_interfaces() {
        let text = L3
            .replace(
                "vlan = 10\n\n[[interface]]",
                "vlan = 10\nmtu = 9000\n\n[[interface]]",
            )
            .replace("\"10.0.99.1/30\"]", "\"10.0.99.1/30\"]\nmtu = 1400");
        let config = parse(&text).unwrap();
        assert_eq!(config.ports["swp1"].mtu, Some(9000));
        assert_eq!(config.interfaces["swp5"].mtu, Some(1400));
        assert_eq!(config.interfaces["vlan10"].mtu, None);
        assert_eq!(parse(&config.to_toml()).unwrap(), config);
        let e = err(&text.replace("mtu = 1400", "mtu = 67"));
        assert_eq!((e.key.as_str(), e.line), ("interface[1].mtu", 21), "{e}");
        let e = err(&text.replace("mtu = 9000", "mtu = 65536"));
        assert_eq!((e.key.as_str(), e.line), ("port[0].mtu", 12), "{e}");
        let mut config = config;
        config.ports.get_mut("swp1").unwrap().mtu = Some(10);
        let e = config.validate(&|_| true).unwrap_err();
        assert_eq!((e.table.as_str(), e.field.as_str()), ("port", "mtu"), "{e}");
    }

    #[test]
    fn datapath_choice_per_port() {
        let base = "[[port]]\nname = \"swp1\"\nmode = \"access\"\nvlan = 10\n";
        let config = parse(&format!("{base}datapath = \"xdp-generic\"\n")).unwrap();
        assert_eq!(config.ports["swp1"].datapath, DatapathChoice::XdpGeneric);
        assert_eq!(parse(&config.to_toml()).unwrap(), config);
        assert_eq!(
            parse(base).unwrap().ports["swp1"].datapath,
            DatapathChoice::Auto
        );
        let config = parse(&format!("{base}datapath = \"tc\"\n")).unwrap();
        assert_eq!(config.ports["swp1"].datapath, DatapathChoice::Tc);
        assert_eq!(parse(&config.to_toml()).unwrap(), config);
        let e = err(&format!("{base}datapath = \"dpdk\"\n"));
        assert_eq!(e.line, 5);
        assert!(
            e.message.contains("unknown variant `dpdk`") && e.message.contains("switchdev"),
            "{e}"
        );
    }

    #[test]
    fn router_mac_is_derived_stably_when_not_set() {
        let config = parse("").unwrap();
        let mac = config.switch.router_mac();
        assert_eq!(mac, config.switch.router_mac());
        assert!(
            !mac.is_multicast() && mac.0[0] & 2 != 0,
            "{mac} is not locally administered unicast"
        );
    }

    #[test]
    fn to_toml_round_trips() {
        let config = parse(GOOD).unwrap();
        let text = config.to_toml();
        assert_eq!(parse(&text).unwrap(), config, "{text}");
        assert_eq!(parse("").unwrap().to_toml(), "[switch]\nfdb-aging = 300\n");
    }

    #[test]
    fn validate_checks_references_between_tables() {
        let mut config = parse(GOOD).unwrap();
        config.vlans.remove(&20);
        let e = config.validate(&|_| true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "port swp3: vlans: VLAN 20 does not exist (add it to the vlan table first)"
        );
    }

    #[test]
    fn error_display_is_one_line_with_file_and_line() {
        let e = err("[[vlan]]\nid = 9999\n");
        assert_eq!(
            e.to_string(),
            "test.toml:2: vlan[0].id: VLAN 9999 is out of range 1..4094"
        );
    }
}
