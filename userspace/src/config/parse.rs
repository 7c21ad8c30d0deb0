//! Reading the config file into the typed tables, with errors that name the file's line.
//!
//! Parsing checks only what the typed tables cannot hold (syntax, types, a key given
//! twice, keys of the other port mode, values that do not fit). Every other rule is
//! `Config::validate`'s, the one the API and the CLI go through too: its FieldError is
//! mapped back to the line and key of the file it came from.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    ops::Range,
    path::Path,
};

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::*;
use crate::mac::MacAddr;

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

/// An item of a trunk's `vlans`: a VLAN ID, or a range "100-130" (both ends included).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawVlanItem {
    Id(i64),
    Range(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPort {
    name: Spanned<String>,
    mode: Spanned<PortModeName>,
    vlan: Option<Spanned<i64>>,
    vlans: Option<Spanned<Vec<Spanned<RawVlanItem>>>>,
    native_vlan: Option<Spanned<i64>>,
    datapath: Option<Spanned<DatapathChoice>>,
    mtu: Option<Spanned<i64>>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFdb {
    mac: Spanned<String>,
    vlan: Spanned<i64>,
    port: Spanned<String>,
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

    fn vlan_id(&self, value: &Spanned<i64>, key: &str) -> Result<u16, ConfigError> {
        let id = *value.get_ref();
        if let Some(message) = vlan_range_error(id) {
            return Err(self.error(value.span(), key, message));
        }
        Ok(id as u16)
    }

    /// The VLAN IDs of an item of `vlans`: one ID, or every ID of a range "100-130".
    fn vlan_item(
        &self,
        value: &Spanned<RawVlanItem>,
        key: &str,
    ) -> Result<std::ops::RangeInclusive<u16>, ConfigError> {
        let id = |n: i64| match vlan_range_error(n) {
            Some(message) => Err(self.error(value.span(), key, message)),
            None => Ok(n as u16),
        };
        match value.get_ref() {
            RawVlanItem::Id(n) => id(*n).map(|v| v..=v),
            RawVlanItem::Range(text) => {
                let bad = || {
                    self.error(
                        value.span(),
                        key,
                        format!("{text:?} is not a VLAN range (write \"100-130\", or a number)"),
                    )
                };
                let (first, last) = text.split_once('-').ok_or_else(bad)?;
                let first = id(first.trim().parse().map_err(|_| bad())?)?;
                let last = id(last.trim().parse().map_err(|_| bad())?)?;
                if first > last {
                    return Err(self.error(
                        value.span(),
                        key,
                        format!("VLAN range {text:?} ends before it starts"),
                    ));
                }
                Ok(first..=last)
            }
        }
    }

    /// An MTU as the typed row holds it; its range is `Config::validate`'s rule, but a
    /// value no u32 holds is refused here with the same words.
    fn mtu(&self, value: Option<&Spanned<i64>>, key: &str) -> Result<Option<u32>, ConfigError> {
        let Some(value) = value else {
            return Ok(None);
        };
        u32::try_from(*value.get_ref()).map(Some).map_err(|_| {
            let message = mtu_range_error(*value.get_ref()).unwrap_or_default();
            self.error(value.span(), key, message)
        })
    }
}

/// Where in the file each row of the typed tables, and each field of it, was written:
/// (table, row key, field) to (span, the file's key). The field "" is the whole row.
#[derive(Default)]
struct Locations(BTreeMap<(&'static str, String, &'static str), (Range<usize>, String)>);

impl Locations {
    fn row(
        &mut self,
        table: &'static str,
        key: impl ToString,
        span: Range<usize>,
        file_key: String,
    ) {
        self.0
            .insert((table, key.to_string(), ""), (span, file_key));
    }

    fn field<T>(
        &mut self,
        table: &'static str,
        key: impl ToString,
        field: &'static str,
        value: Option<&Spanned<T>>,
        file_key: String,
    ) {
        if let Some(value) = value {
            self.0
                .insert((table, key.to_string(), field), (value.span(), file_key));
        }
    }

    /// A validation error as the file's line and key: the field where it is written,
    /// else the row it belongs to, with the field named as the file names it.
    fn error(&self, src: &Source<'_>, e: FieldError) -> ConfigError {
        let at = |field: &str| {
            self.0
                .iter()
                .find(|((t, k, f), _)| *t == e.table && *k == e.key && *f == field)
                .map(|(_, at)| at.clone())
        };
        let (span, key) = match (at(&e.field), at("")) {
            (Some(at), _) => at,
            (None, Some((span, row))) => (span, format!("{row}.{}", e.field.replace('_', "-"))),
            (None, None) => (0..0, format!("{} {}.{}", e.table, e.key, e.field)),
        };
        src.error(span, key, e.message)
    }
}

impl Config {
    /// Read and validate a config file against the kernel interfaces `links` (tests
    /// name them without real interfaces).
    pub fn load(path: &Path, links: impl Links) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: 0,
            key: "(file)".into(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&file, &text, links)
    }

    pub fn parse(file: &str, text: &str, links: impl Links) -> Result<Config, ConfigError> {
        let src = Source { file, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            // toml leaves some syntax errors (a control character in a comment) without a
            // message: name the character it stopped at.
            let message = match e.message().trim() {
                "" => match text.get(span.start..).and_then(|s| s.chars().next()) {
                    Some(c) => format!("unexpected character {c:?}"),
                    None => "unexpected end of file".to_string(),
                },
                message => message.to_string(),
            };
            src.error(span, "(syntax)", message)
        })?;

        let mut config = Config::default();
        let mut at = Locations::default();
        if let Some(switch) = &raw.switch {
            let switch = switch.get_ref();
            if let Some(aging) = &switch.fdb_aging {
                let secs = *aging.get_ref();
                if let Some(message) = fdb_aging_error(secs) {
                    return Err(src.error(aging.span(), "switch.fdb-aging", message));
                }
                config.switch.fdb_aging_secs = secs as u64;
            }
            if let Some(mac) = &switch.router_mac {
                config.switch.router_mac = Some(mac.get_ref().parse().map_err(
                    |e: crate::mac::ParseMacError| {
                        src.error(mac.span(), "switch.router-mac", e.to_string())
                    },
                )?);
            }
            let key = "switch";
            at.field(
                key,
                key,
                "fdb-aging",
                switch.fdb_aging.as_ref(),
                "switch.fdb-aging".into(),
            );
            at.field(
                key,
                key,
                "router-mac",
                switch.router_mac.as_ref(),
                "switch.router-mac".into(),
            );
        }

        for (i, vlan) in raw.vlan.iter().enumerate() {
            let span = vlan.span();
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
            at.row("vlan", id, span, key.clone());
            at.field("vlan", id, "id", Some(&vlan.id), format!("{key}.id"));
            at.field(
                "vlan",
                id,
                "name",
                vlan.name.as_ref(),
                format!("{key}.name"),
            );
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
            if config.ports.contains_key(name) {
                return Err(src.error(
                    port.name.span(),
                    format!("{key}.name"),
                    format!("port {name:?} is listed twice"),
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
                        let item_key = format!("{key}.vlans[{j}]");
                        for id in src.vlan_item(v, &item_key)? {
                            if !vlans.insert(id) {
                                return Err(src.error(
                                    v.span(),
                                    item_key,
                                    format!("VLAN {id} is listed twice"),
                                ));
                            }
                        }
                    }
                    let native_vlan = port
                        .native_vlan
                        .as_ref()
                        .map(|v| src.vlan_id(v, &format!("{key}.native-vlan")))
                        .transpose()?;
                    PortMode::Trunk { vlans, native_vlan }
                }
            };
            let datapath = port
                .datapath
                .as_ref()
                .map_or(DatapathChoice::Auto, |d| *d.get_ref());
            at.row("port", name, span, key.clone());
            at.field(
                "port",
                name,
                "name",
                Some(&port.name),
                format!("{key}.name"),
            );
            at.field(
                "port",
                name,
                "vlan",
                port.vlan.as_ref(),
                format!("{key}.vlan"),
            );
            at.field(
                "port",
                name,
                "vlans",
                port.vlans.as_ref(),
                format!("{key}.vlans"),
            );
            at.field(
                "port",
                name,
                "native-vlan",
                port.native_vlan.as_ref(),
                format!("{key}.native-vlan"),
            );
            at.field("port", name, "mtu", port.mtu.as_ref(), format!("{key}.mtu"));
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
            let vlan = src.vlan_id(&fdb.vlan, &format!("{key}.vlan"))?;
            if config.fdb.contains_key(&(vlan, mac)) {
                return Err(src.error(
                    fdb.mac.span(),
                    format!("{key}.mac"),
                    format!("{mac} in VLAN {vlan} is defined twice"),
                ));
            }
            let row = crate::statedb::fdb_key(vlan, &mac);
            at.row("fdb-static", &row, span, key.clone());
            at.field(
                "fdb-static",
                &row,
                "mac",
                Some(&fdb.mac),
                format!("{key}.mac"),
            );
            at.field(
                "fdb-static",
                &row,
                "vlan",
                Some(&fdb.vlan),
                format!("{key}.vlan"),
            );
            at.field(
                "fdb-static",
                &row,
                "port",
                Some(&fdb.port),
                format!("{key}.port"),
            );
            config.fdb.insert(
                (vlan, mac),
                StaticFdb {
                    mac,
                    vlan,
                    port: fdb.port.get_ref().clone(),
                },
            );
        }

        for (i, iface) in raw.interface.iter().enumerate() {
            let span = iface.span();
            let iface = iface.get_ref();
            let key = format!("interface[{i}]");
            // The name is the row's key: it follows from `vlan` or `port`, so one of the
            // two must be there before there is a row to validate.
            let (name, vlan, port) = match (&iface.vlan, &iface.port) {
                (Some(vlan), None) => {
                    let id = src.vlan_id(vlan, &format!("{key}.vlan"))?;
                    (InterfaceConfig::svi_name(id), Some(id), None)
                }
                (None, Some(port)) => {
                    let name = port.get_ref();
                    (name.clone(), None, Some(name.clone()))
                }
                _ => return Err(src.error(span, key, INTERFACE_KIND)),
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
            at.row("interface", &name, span, key.clone());
            at.field(
                "interface",
                &name,
                "vlan",
                iface.vlan.as_ref(),
                format!("{key}.vlan"),
            );
            at.field(
                "interface",
                &name,
                "port",
                iface.port.as_ref(),
                format!("{key}.port"),
            );
            at.field(
                "interface",
                &name,
                "addresses",
                iface.addresses.first(),
                format!("{key}.addresses"),
            );
            at.field(
                "interface",
                &name,
                "mtu",
                iface.mtu.as_ref(),
                format!("{key}.mtu"),
            );
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
            // The file may name a route by any address in it: the route is to the network.
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
            at.row("route", prefix, span, key.clone());
            at.field(
                "route",
                prefix,
                "prefix",
                Some(&route.prefix),
                format!("{key}.prefix"),
            );
            at.field(
                "route",
                prefix,
                "nexthops",
                Some(&route.nexthops),
                format!("{key}.nexthops"),
            );
            config
                .routes
                .insert(prefix, RouteConfig { prefix, nexthops });
        }

        config.add_port_vlans();
        config.validate(&links).map_err(|e| at.error(&src, e))?;
        Ok(config)
    }
}
