//! Writing the typed tables back in the file format.

use std::net::IpAddr;

use ipnet::IpNet;

use super::*;

impl Config {
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
                    let list: Vec<u16> = vlans.iter().copied().collect();
                    out.push_str(&format!(
                        "mode = \"trunk\"\nvlans = {}\n",
                        crate::statedb::vlans_toml(&list)
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
