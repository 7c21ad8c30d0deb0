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

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    config::{Config, DatapathChoice, InterfaceConfig, PortConfig, PortMode},
    statedb::{BridgePort, KernelFeatures, LinkState, State},
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

/// Whether `auto` keeps a switch port (one whose driver reports a switch ID) on the fast
/// path, and why: a trunk needs a VLAN-aware bridge, which this kernel cannot make.
fn kept_on_fast_path(port: &PortConfig, kernel: &KernelFeatures) -> Option<String> {
    let trunk = matches!(port.mode, PortMode::Trunk { .. });
    (trunk && kernel.bridge_vlan_filtering == Some(false)).then(|| {
        "the driver reports a switch ID, but a trunk port needs bridge VLAN filtering, \
         which this kernel does not have (CONFIG_BRIDGE_VLAN_FILTERING): the fast path \
         forwards"
            .to_string()
    })
}

/// The ports `auto` keeps on the fast path although their driver has a switch ID, with
/// the reason.
pub fn kept_ports(
    config: &Config,
    links: &BTreeMap<String, LinkState>,
    kernel: &KernelFeatures,
) -> BTreeMap<String, String> {
    config
        .ports
        .values()
        .filter(|p| p.datapath == DatapathChoice::Auto)
        .filter(|p| links.get(&p.name).is_some_and(|l| l.switch_id.is_some()))
        .filter_map(|p| Some((p.name.clone(), kept_on_fast_path(p, kernel)?)))
        .collect()
}

/// Whether any port of `config` may go on the switchdev backend, whatever the kernel can
/// do.
pub fn may_bridge(config: &Config, links: &BTreeMap<String, LinkState>) -> bool {
    !ports(config, links, &KernelFeatures::default()).is_empty()
}

/// The switchdev ports of `config`: those configured so, and, with `auto`, those whose
/// driver reports a switch ID (unless this kernel cannot bridge them).
pub fn ports<'a>(
    config: &'a Config,
    links: &BTreeMap<String, LinkState>,
    kernel: &KernelFeatures,
) -> BTreeMap<String, SwitchdevPort<'a>> {
    let mut ports = BTreeMap::new();
    for port in config.ports.values() {
        let switch_id = links.get(&port.name).and_then(|l| l.switch_id.clone());
        if port.datapath == DatapathChoice::Auto && kept_on_fast_path(port, kernel).is_some() {
            continue;
        }
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

/// The VLANs whose SVI is an L3 interface of the VLAN-aware bridge, not a veth pair into
/// the fast path: on a kernel whose bridge filters VLANs, the routed VLANs that have
/// switchdev ports. Such an SVI is a VLAN upper of `xbr` with the SVI's name, the router
/// MAC and its addresses, which a switchdev driver makes a router interface of the ASIC
/// (the routes and neighbours over it are offloaded); the fast path reaches it through the
/// VLAN's CPU port.
pub fn bridged_svis(
    config: &Config,
    links: &BTreeMap<String, LinkState>,
    kernel: &KernelFeatures,
) -> BTreeSet<u16> {
    if kernel.bridge_vlan_filtering != Some(true) || kernel.vlan_devices != Some(true) {
        return BTreeSet::new();
    }
    let bridged: BTreeSet<u16> = ports(config, links, kernel)
        .values()
        .flat_map(|p| p.config.mode.vlans())
        .collect();
    config
        .interfaces
        .values()
        .filter_map(|i| i.vlan)
        .filter(|v| bridged.contains(v))
        .collect()
}

/// The fast-path port through which the SVI of `vlan` sends and receives: its veth's
/// internal end, or, for an SVI on the bridge, the VLAN's CPU port.
pub fn svi_port(state: &State, vlan: u16) -> String {
    let observed = &state.observed;
    if bridged_svis(&state.config, &observed.links, &observed.kernel).contains(&vlan) {
        cpu_port_xdp_name(vlan)
    } else {
        InterfaceConfig::svi_port_name(vlan)
    }
}

/// The XDP ends of the CPU ports the kernel module made (a `bridge-port` row per CPU
/// port, without an error), each an access port of its VLAN.
pub fn cpu_ports(rows: &BTreeMap<String, BridgePort>) -> BTreeMap<String, PortMode> {
    rows.values()
        .filter(|r| is_cpu_bridge_end(&r.port) && r.error.is_none() && r.bridge.is_some())
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
                oper_state: crate::statedb::OperState::Up,
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
            |_: &str| true,
        )
        .unwrap();
        let links = BTreeMap::from([
            link("sw1", Some("00aa")),
            link("sw2", Some("00aa")),
            link("eth1", None),
            link("eth2", None),
        ]);
        let ports = ports(&config, &links, &KernelFeatures::default());
        assert_eq!(ports.keys().collect::<Vec<_>>(), ["eth2", "sw1", "sw2"]);
        assert!(ports["sw1"].reason.contains("switch ID 00aa"));
        assert!(
            ports["eth2"]
                .reason
                .contains("the kernel bridge forwards in software")
        );
        assert_eq!(ports["sw1"].vlan(), Some(10));
    }

    // On a kernel whose bridge cannot filter VLANs, `auto` keeps a trunk port with a
    // switch ID on the fast path (saying why) instead of giving it to a bridge that cannot
    // carry it; its access ports still go to the bridge, and `switchdev` is still obeyed.
    #[test]
    fn auto_trunks_stay_on_the_fast_path_without_bridge_vlan_filtering() {
        let config = Config::parse(
            "t.toml",
            "[[port]]\nname = \"sw1\"\nmode = \"access\"\nvlan = 10\n\
             [[port]]\nname = \"sw2\"\nmode = \"trunk\"\nvlans = [10]\n\
             [[port]]\nname = \"sw3\"\nmode = \"trunk\"\nvlans = [10]\ndatapath = \"switchdev\"\n",
            |_: &str| true,
        )
        .unwrap();
        let links = BTreeMap::from([
            link("sw1", Some("00aa")),
            link("sw2", Some("00aa")),
            link("sw3", Some("00aa")),
        ]);
        let without = KernelFeatures {
            bridge_vlan_filtering: Some(false),
            vlan_devices: Some(true),
        };
        let with = KernelFeatures {
            bridge_vlan_filtering: Some(true),
            vlan_devices: Some(true),
        };
        assert_eq!(
            ports(&config, &links, &without).keys().collect::<Vec<_>>(),
            ["sw1", "sw3"]
        );
        let kept = kept_ports(&config, &links, &without);
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["sw2"]);
        assert!(
            kept["sw2"].contains("needs bridge VLAN filtering"),
            "{kept:?}"
        );
        assert_eq!(ports(&config, &links, &with).len(), 3);
        assert!(kept_ports(&config, &links, &with).is_empty());
        // Not probed yet: any of them may go to the bridge.
        assert!(may_bridge(&config, &links));
        assert_eq!(ports(&config, &links, &KernelFeatures::default()).len(), 3);
    }

    // The SVI of a routed VLAN with switchdev ports goes on the bridge, where the kernel can
    // make VLAN netdevs on a VLAN-aware bridge; a VLAN of fast-path ports only keeps its
    // veth SVI.
    #[test]
    fn which_svis_go_on_the_bridge() {
        let config = Config::parse(
            "t.toml",
            "[[port]]\nname = \"sw1\"\nmode = \"access\"\nvlan = 10\n\
             [[port]]\nname = \"eth1\"\nmode = \"access\"\nvlan = 20\n\
             [[interface]]\nvlan = 10\naddresses = [\"10.0.10.1/24\"]\n\
             [[interface]]\nvlan = 20\naddresses = [\"10.0.20.1/24\"]\n",
            |_: &str| true,
        )
        .unwrap();
        let links = BTreeMap::from([link("sw1", Some("00aa")), link("eth1", None)]);
        let features = |filtering, vlan_devices| KernelFeatures {
            bridge_vlan_filtering: Some(filtering),
            vlan_devices: Some(vlan_devices),
        };
        assert_eq!(
            bridged_svis(&config, &links, &features(true, true)),
            BTreeSet::from([10])
        );
        assert!(bridged_svis(&config, &links, &features(true, false)).is_empty());
        assert!(bridged_svis(&config, &links, &features(false, true)).is_empty());
        assert!(bridged_svis(&config, &links, &KernelFeatures::default()).is_empty());
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
