//! Reading the config file into the typed tables, with errors that name the file's line.

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
            config.ports.insert(
                name.clone(),
                PortConfig {
                    name: name.clone(),
                    mode,
                    datapath,
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
            config.interfaces.insert(
                name.clone(),
                InterfaceConfig {
                    name,
                    vlan,
                    port,
                    addresses,
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
}
