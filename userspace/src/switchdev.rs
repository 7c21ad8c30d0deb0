//! switchdev ports: the ports the kernel bridge forwards (offloaded to the switch ASIC by
//! its switchdev driver, where there is one), and the names of the netdevs xnos makes for
//! them. The kernel module programs the bridge (kernel/bridge.rs); the datapath module
//! leaves these ports alone and attaches XDP to the CPU ports instead.
//!
//! Model: every VLAN with switchdev ports has a CPU port, the veth pair `xcpu<vid>` (in the
//! bridge, untagged in that VLAN) <-> `xcpu<vid>i` (an XDP access port of the VLAN). Where
//! the kernel's bridge filters VLANs there is one VLAN-aware bridge, `xbr`, with every
//! switchdev port (access and trunk, `bridge vlan` per port) and the CPU ports; elsewhere
//! one bridge per VLAN, `xbr<vid>`, with the VLAN's switchdev access ports and its CPU port
//! (trunk ports cannot be bridged there). Frames between switchdev ports stay in the bridge
//! (in the ASIC, offloaded); frames between a switchdev port and an XDP port cross the CPU
//! port of their VLAN.

use std::collections::BTreeMap;

use crate::{
    config::{Config, DatapathChoice, PortConfig, PortMode},
    statedb::{BridgePort, LinkState},
};

/// The alias that marks the bridges and CPU ports xnos made.
pub const BRIDGE_ALIAS: &str = "xnos-bridge";

/// The one bridge of a kernel whose bridge filters VLANs.
pub const VLAN_AWARE_BRIDGE: &str = "xbr";

/// The bridge of VLAN `vid` on a kernel without bridge VLAN filtering.
pub fn bridge_name(vid: u16) -> String {
    format!("xbr{vid}")
}

/// The VLAN of a per-VLAN bridge, by its name (None for the VLAN-aware one).
pub fn bridge_vlan(bridge: &str) -> Option<u16> {
    bridge.strip_prefix("xbr")?.parse().ok()
}

/// The bridge end of the CPU port of VLAN `vid` (untagged: no tag ever crosses a CPU
/// port, so none can get lost in skb metadata on its way into XDP).
pub fn cpu_port_name(vid: u16) -> String {
    format!("xcpu{vid}")
}

/// The XDP end of the CPU port of VLAN `vid`.
pub fn cpu_port_xdp_name(vid: u16) -> String {
    format!("xcpu{vid}i")
}

/// The XDP end of a CPU port.
pub fn is_cpu_port(name: &str) -> bool {
    name.strip_prefix("xcpu")
        .and_then(|rest| rest.strip_suffix('i'))
        .is_some_and(|vid| vid.parse::<u16>().is_ok())
}

/// The bridge end of a CPU port.
pub fn is_cpu_bridge_end(name: &str) -> bool {
    name.strip_prefix("xcpu")
        .is_some_and(|vid| vid.parse::<u16>().is_ok())
}

/// A port the kernel bridge forwards, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwitchdevPort<'a> {
    pub config: &'a PortConfig,
    pub switch_id: Option<String>,
    pub reason: String,
}

impl SwitchdevPort<'_> {
    /// The VLAN whose per-VLAN bridge takes the port (access ports only).
    pub fn vlan(&self) -> Option<u16> {
        match self.config.mode {
            PortMode::Access { vlan } => Some(vlan),
            PortMode::Trunk { .. } => None,
        }
    }
}

/// The switchdev ports of `config`: those configured so, and, with `auto`, those whose
/// driver reports a switch ID.
pub fn ports<'a>(
    config: &'a Config,
    links: &BTreeMap<String, LinkState>,
) -> BTreeMap<String, SwitchdevPort<'a>> {
    let mut ports = BTreeMap::new();
    for port in config.ports.values() {
        let switch_id = links.get(&port.name).and_then(|l| l.switch_id.clone());
        let reason = match (port.datapath, &switch_id) {
            (DatapathChoice::Switchdev, Some(id)) => {
                format!("configured: datapath = \"switchdev\" (switch ID {id})")
            }
            (DatapathChoice::Switchdev, None) => "configured: datapath = \"switchdev\"; \
                 no switch ID: the kernel bridge forwards in software"
                .to_string(),
            (DatapathChoice::Auto, Some(id)) => {
                format!("auto: the driver reports switch ID {id}: the ASIC forwards")
            }
            _ => continue,
        };
        ports.insert(
            port.name.clone(),
            SwitchdevPort {
                config: port,
                switch_id,
                reason,
            },
        );
    }
    ports
}

/// The XDP ends of the CPU ports the kernel module keeps (one per VLAN of the bridged
/// ports in its `bridge-port` rows), each an access port of its VLAN.
pub fn cpu_ports(rows: &BTreeMap<String, BridgePort>) -> BTreeMap<String, PortMode> {
    rows.values()
        .filter(|r| r.error.is_none() && r.bridge.is_some())
        .flat_map(|r| r.vlans.iter().copied())
        .map(|vlan| (cpu_port_xdp_name(vlan), PortMode::Access { vlan }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, switch_id: Option<&str>) -> (String, LinkState) {
        (
            name.to_string(),
            LinkState {
                name: name.into(),
                ifindex: 1,
                oper_state: "up".into(),
                mac: None,
                mtu: None,
                alias: None,
                switch_id: switch_id.map(String::from),
                master: None,
                up: true,
            },
        )
    }

    // `auto` sends ports with a switch ID to the bridge, the others stay on the fast
    // path; `switchdev` is honoured either way, and says when software forwards.
    #[test]
    fn which_ports_the_bridge_forwards() {
        let config = Config::parse(
            "t.toml",
            "[[port]]\nname = \"sw1\"\nmode = \"access\"\nvlan = 10\n\
             [[port]]\nname = \"sw2\"\nmode = \"trunk\"\nvlans = [10]\n\
             [[port]]\nname = \"eth1\"\nmode = \"access\"\nvlan = 10\n\
             [[port]]\nname = \"eth2\"\nmode = \"access\"\nvlan = 10\ndatapath = \"switchdev\"\n",
            |_| true,
        )
        .unwrap();
        let links = BTreeMap::from([
            link("sw1", Some("00aa")),
            link("sw2", Some("00aa")),
            link("eth1", None),
            link("eth2", None),
        ]);
        let ports = ports(&config, &links);
        assert_eq!(ports.keys().collect::<Vec<_>>(), ["eth2", "sw1", "sw2"]);
        assert!(ports["sw1"].reason.contains("switch ID 00aa"));
        assert!(
            ports["eth2"]
                .reason
                .contains("the kernel bridge forwards in software")
        );
        assert_eq!(ports["sw1"].vlan(), Some(10));
    }

    #[test]
    fn cpu_port_names() {
        assert!(is_cpu_port(&cpu_port_xdp_name(10)));
        assert!(!is_cpu_port(&cpu_port_name(10)));
        assert!(is_cpu_bridge_end(&cpu_port_name(10)));
        assert!(!is_cpu_bridge_end(&cpu_port_xdp_name(10)));
        assert!(!is_cpu_port("xcpuXi"));
        assert_eq!(bridge_vlan("xbr10"), Some(10));
        assert_eq!(bridge_vlan(VLAN_AWARE_BRIDGE), None);
    }
}
