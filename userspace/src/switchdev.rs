//! switchdev ports: the ports the kernel bridge forwards (offloaded to the switch ASIC by
//! its switchdev driver, where there is one), and the names of the netdevs xnos makes for
//! them. The kernel module programs the bridge (kernel/bridge.rs); the datapath module
//! leaves these ports alone and attaches XDP to the CPU ports instead.
//!
//! Model: where the kernel's bridge filters VLANs, one VLAN-aware bridge `xbr` with every
//! switchdev port (access and trunk, `bridge vlan` per port) and a CPU port: the veth pair
//! `xcpu` (in the bridge, all those VLANs tagged) <-> `xcpui` (an XDP trunk port of the
//! same VLANs). Elsewhere one bridge per VLAN, `xbr<vid>`, with the VLAN's switchdev access
//! ports and the CPU port `xcpu<vid>` <-> `xcpu<vid>i` (an XDP access port); trunk ports
//! cannot be bridged there. Frames between switchdev ports stay in the bridge (in the
//! ASIC, offloaded); frames between a switchdev port and an XDP port cross the CPU port.

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

/// The bridge end of the CPU port of `bridge`.
pub fn cpu_port_name_of(bridge: &str) -> String {
    format!("xcpu{}", bridge.trim_start_matches("xbr"))
}

/// The XDP end of the CPU port of `bridge`.
pub fn cpu_port_xdp_name_of(bridge: &str) -> String {
    format!("xcpu{}i", bridge.trim_start_matches("xbr"))
}

pub fn is_cpu_port(name: &str) -> bool {
    name.strip_prefix("xcpu")
        .and_then(|rest| rest.strip_suffix('i'))
        .is_some_and(|vid| vid.is_empty() || vid.parse::<u16>().is_ok())
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

/// The XDP ends of the CPU ports of the bridges the kernel module keeps (from its
/// `bridge-port` rows), with the VLANs each must carry: an access port of its VLAN for a
/// per-VLAN bridge, a trunk of all its members' VLANs for the VLAN-aware one.
pub fn cpu_ports(rows: &BTreeMap<String, BridgePort>) -> BTreeMap<String, PortMode> {
    let mut vlans: BTreeMap<&str, std::collections::BTreeSet<u16>> = BTreeMap::new();
    for row in rows.values().filter(|r| r.error.is_none()) {
        if let Some(bridge) = &row.bridge {
            vlans.entry(bridge).or_default().extend(&row.vlans);
        }
    }
    vlans
        .into_iter()
        .map(|(bridge, vlans)| {
            let mode = match bridge_vlan(bridge) {
                Some(vlan) => PortMode::Access { vlan },
                None => PortMode::Trunk {
                    vlans,
                    native_vlan: None,
                },
            };
            (cpu_port_xdp_name_of(bridge), mode)
        })
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
        assert!(is_cpu_port(&cpu_port_xdp_name_of(&bridge_name(10))));
        assert!(is_cpu_port(&cpu_port_xdp_name_of(VLAN_AWARE_BRIDGE)));
        assert!(!is_cpu_port(&cpu_port_name_of(&bridge_name(10))));
        assert!(!is_cpu_port("xcpuXi"));
        assert_eq!(bridge_vlan("xbr10"), Some(10));
        assert_eq!(bridge_vlan(VLAN_AWARE_BRIDGE), None);
    }
}
