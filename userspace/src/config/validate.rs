//! The rules a config must keep, whichever way it arrives (file, API, CLI).

use std::collections::{BTreeMap, BTreeSet};

use xnos_common::MAX_ECMP;

use super::*;

impl Config {
    /// Check the config as a whole: ranges, references between tables, uniqueness, and that
    /// every port is a kernel interface that can be one. The first problem is returned.
    pub fn validate(&self, links: &dyn Links) -> Result<(), FieldError> {
        let aging = i64::try_from(self.switch.fdb_aging_secs).unwrap_or(i64::MAX);
        if let Some(message) = fdb_aging_error(aging) {
            return Err(field_error("switch", "switch", "fdb-aging", message));
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
            if let Some(message) = self.port_refusal(name, links) {
                return Err(field_error("port", name, "name", message));
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
                            "a trunk must carry at least one VLAN: tagged (vlans) and/or native",
                        ));
                    }
                    for vlan in vlans {
                        vlan_exists(name, "vlans", *vlan)?;
                    }
                    if let Some(native) = native_vlan {
                        vlan_exists(name, "native-vlan", *native)?;
                        if vlans.contains(native) {
                            return Err(field_error(
                                "port",
                                name,
                                "native-vlan",
                                format!(
                                    "VLAN {native} is also in vlans: a trunk carries a VLAN \
                                     either untagged (native-vlan) or tagged (vlans), not both"
                                ),
                            ));
                        }
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
        self.validate_l3(links)
    }

    /// Why the kernel interface `name` cannot be a port (switched or routed), if it cannot:
    /// it is missing, the loopback device, or a netdev xnos makes itself (attaching the
    /// fast path to those breaks what xnos made them for).
    fn port_refusal(&self, name: &str, links: &dyn Links) -> Option<String> {
        let made = |what: String| {
            Some(format!(
                "{name} is {what}, made by xnos; it cannot be a port"
            ))
        };
        let vlan_of = |prefix: &str, suffix: &str| {
            name.strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(suffix))
                .and_then(|vid| vid.parse::<u16>().ok())
        };
        let svi = |vlan: u16| {
            self.interfaces
                .values()
                .any(|i| i.vlan == Some(vlan) && i.name == InterfaceConfig::svi_name(vlan))
        };
        if let Some(vlan) = vlan_of("vlan", "i").filter(|v| svi(*v)) {
            return made(format!(
                "the internal port of interface {}",
                InterfaceConfig::svi_name(vlan)
            ));
        }
        if let Some(vlan) = vlan_of("vlan", "").filter(|v| svi(*v)) {
            return made(format!(
                "the kernel side of interface {}",
                InterfaceConfig::svi_name(vlan)
            ));
        }
        if name == crate::switchdev::VLAN_AWARE_BRIDGE {
            return made("the kernel bridge of the switchdev ports".into());
        }
        if let Some(vlan) = crate::switchdev::bridge_vlan(name) {
            return made(format!(
                "the kernel bridge of VLAN {vlan}'s switchdev ports"
            ));
        }
        if let Some(vlan) = vlan_of("xcpu", "i").or_else(|| vlan_of("xcpu", "")) {
            return made(format!(
                "an end of the CPU port of VLAN {vlan} (between the kernel bridge and the fast path)"
            ));
        }
        if name.starts_with(crate::kernel::bridge::PROBE_PREFIX) {
            return made("a netdev that probes what the kernel's bridge can do".into());
        }
        match links.facts(name) {
            None => Some(format!("no kernel interface named {name:?}")),
            Some(facts) if facts.loopback || name == "lo" => Some(format!(
                "{name} is the loopback device; it cannot be a port"
            )),
            Some(_) => None,
        }
    }

    fn validate_l3(&self, links: &dyn Links) -> Result<(), FieldError> {
        if let Some(mac) = self.switch.router_mac
            && (mac.is_multicast() || mac.is_zero())
        {
            return Err(field_error(
                "switch",
                "switch",
                "router-mac",
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
                    if let Some(message) = self.port_refusal(port, links) {
                        return Err(field_error("interface", name, "port", message));
                    }
                }
                _ => {
                    return Err(field_error("interface", name, "vlan", INTERFACE_KIND));
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

    /// Refuse a config route whose nexthop no subnet the switch is on reaches: none of
    /// the configured interfaces' subnets, none of the kernel's `connected` subnets (its
    /// routes without a gateway). The kernel would refuse the route ("Network is
    /// unreachable").
    ///
    /// Given the config this one replaces, a route it had alike is refused only when this
    /// change breaks it: one that already waited for its nexthop (a connected route the
    /// kernel lost for a while, a management address gone) blocks no unrelated change.
    pub fn validate_nexthops(
        &self,
        before: Option<&Config>,
        connected: &[IpNet],
    ) -> Result<(), FieldError> {
        for (prefix, route) in &self.routes {
            let Some(problem) = self.nexthop_problem(route, connected) else {
                continue;
            };
            // A route the config had alike is refused only when this change breaks it: one
            // that already waited for its nexthop (a management address gone, say) blocks
            // no unrelated change.
            let waited_before = before.is_some_and(|b| {
                b.routes.get(prefix) == Some(route) && b.nexthop_problem(route, connected).is_some()
            });
            if waited_before {
                continue;
            }
            return Err(field_error("route", prefix, "nexthops", problem));
        }
        Ok(())
    }

    /// Why the kernel would refuse `route`'s nexthops with this config's interfaces and the
    /// kernel's `connected` subnets, if it would.
    fn nexthop_problem(&self, route: &RouteConfig, connected: &[IpNet]) -> Option<String> {
        let own = route.nexthops.iter().find_map(|nh| {
            self.interfaces
                .values()
                .find(|i| i.addresses.iter().any(|a| a.addr() == *nh))
                .map(|i| (nh, &i.name))
        });
        if let Some((nh, iface)) = own {
            return Some(format!(
                "nexthop {nh} is an address of interface {iface}, the switch itself (use the \
                 address of the next router on that subnet)"
            ));
        }
        let on_link = |nh: &IpAddr| {
            self.interfaces
                .values()
                .flat_map(|i| &i.addresses)
                .chain(connected)
                .any(|net| net.contains(nh))
        };
        route.nexthops.iter().find(|nh| !on_link(nh)).map(|nh| {
            format!(
                "nexthop {nh} is on no subnet the switch is on: no interface address and no \
                 connected kernel route reaches it (give an [[interface]] an address on its \
                 subnet, or use a nexthop on a connected subnet)"
            )
        })
    }
}
