//! The config rows the `xnos` CLI builds from its options (`port set`, `interface set`,
//! `route add`): in the library so that the fuzz targets (tests/fuzz) reach them too.

use std::{collections::BTreeSet, net::IpAddr};

use clap::Args;
use ipnet::IpNet;

use crate::config::{DatapathChoice, InterfaceConfig, PortConfig, PortMode, RouteConfig};

#[derive(Args)]
pub struct PortSet {
    /// Kernel interface name.
    pub name: String,
    /// Access port: untagged frames, all in this VLAN.
    #[arg(long, conflicts_with_all = ["trunk", "native", "no_native"])]
    pub access: Option<u16>,
    /// Trunk port: tagged frames of these VLANs, e.g. 10,20,30-39.
    #[arg(long, value_parser = parse_vlan_list)]
    pub trunk: Option<BTreeSet<u16>>,
    /// Trunk port: untagged frames belong to this VLAN.
    #[arg(long)]
    pub native: Option<u16>,
    /// Trunk port: no native VLAN (untagged frames are dropped).
    #[arg(long, conflicts_with = "native")]
    pub no_native: bool,
    /// The fast path the port uses.
    #[arg(long)]
    pub datapath: Option<DatapathChoice>,
    /// The MTU xnosd sets on the port's netdev (68..65535).
    #[arg(long, conflicts_with = "no_mtu")]
    pub mtu: Option<u32>,
    /// No MTU from xnos: the netdev keeps whatever MTU it has.
    #[arg(long)]
    pub no_mtu: bool,
}

#[derive(Args)]
pub struct InterfaceSet {
    /// The interface: vlan<ID> for an SVI, the port's name for a routed port.
    pub name: String,
    /// An SVI: the routed interface of this VLAN.
    #[arg(long, conflicts_with = "port")]
    pub vlan: Option<u16>,
    /// A routed port: this kernel interface, which is not a switch port.
    #[arg(long)]
    pub port: Option<String>,
    /// The addresses (replacing the current ones), e.g. 10.0.10.1/24,fd00:10::1/64; ""
    /// for none.
    #[arg(long, value_parser = parse_address_list, conflicts_with_all = ["add_address", "del_address"])]
    pub addresses: Option<AddressList>,
    /// Add an address (repeatable).
    #[arg(long)]
    pub add_address: Vec<ipnet::IpNet>,
    /// Remove an address (repeatable).
    #[arg(long)]
    pub del_address: Vec<ipnet::IpNet>,
    /// The MTU of the interface's netdev (68..65535).
    #[arg(long, conflicts_with = "no_mtu")]
    pub mtu: Option<u32>,
    /// No MTU of its own: an SVI gets the smallest of its VLAN's ports, a routed port keeps
    /// its own.
    #[arg(long)]
    pub no_mtu: bool,
}

/// Addresses in the order given (the first of a subnet is the kernel's primary one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressList(pub Vec<ipnet::IpNet>);

pub fn parse_address_list(text: &str) -> Result<AddressList, String> {
    text.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse().map_err(|_| {
                format!("{a:?} is not an address with a prefix length like 10.0.10.1/24")
            })
        })
        .collect::<Result<_, _>>()
        .map(AddressList)
}

pub fn parse_vlan_list(text: &str) -> Result<BTreeSet<u16>, String> {
    let mut vlans = BTreeSet::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("{part:?} is not a VLAN or a range like 30-39");
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to): (u16, u16) = (
                    from.parse().map_err(|_| bad())?,
                    to.parse().map_err(|_| bad())?,
                );
                if from > to {
                    return Err(bad());
                }
                vlans.extend(from..=to);
            }
            None => {
                vlans.insert(part.parse().map_err(|_| bad())?);
            }
        }
    }
    Ok(vlans)
}

/// The port `set` asks for: `current` (if the port exists) with only the named fields
/// changed. Whether the result is a valid port is for xnosd's validation to say.
pub fn set_port(current: Option<PortConfig>, set: PortSet) -> Result<PortConfig, String> {
    let current_mode = current.as_ref().map(|p| &p.mode);
    let native_named = set.native.is_some() || set.no_native;
    let mode = match (set.access, set.trunk, current_mode) {
        (Some(vlan), _, _) => PortMode::Access { vlan },
        (None, trunk, Some(PortMode::Trunk { vlans, native_vlan })) => PortMode::Trunk {
            vlans: trunk.unwrap_or_else(|| vlans.clone()),
            native_vlan: if native_named {
                set.native
            } else {
                *native_vlan
            },
        },
        (None, Some(vlans), _) => PortMode::Trunk {
            vlans,
            native_vlan: set.native,
        },
        (None, None, Some(PortMode::Access { .. })) if native_named => {
            return Err(format!(
                "{} is an access port: --native and --no-native are for trunks (give --trunk <vlans> too)",
                set.name
            ));
        }
        (None, None, Some(mode)) => mode.clone(),
        (None, None, None) => {
            return Err(format!(
                "{} is not a switch port yet: say how it carries VLANs: --access <vlan> or --trunk <vlans> [--native <vlan>]",
                set.name
            ));
        }
    };
    Ok(PortConfig {
        mode,
        datapath: set
            .datapath
            .or(current.as_ref().map(|p| p.datapath))
            .unwrap_or_default(),
        mtu: match (set.mtu, set.no_mtu) {
            (_, true) => None,
            (Some(mtu), false) => Some(mtu),
            (None, false) => current.and_then(|p| p.mtu),
        },
        name: set.name,
    })
}

/// The interface `set` asks for: `current` (if it exists) with only the named fields
/// changed. Whether the result is a valid interface is for xnosd's validation to say.
pub fn set_interface(
    current: Option<InterfaceConfig>,
    set: InterfaceSet,
) -> Result<InterfaceConfig, String> {
    let (vlan, port) = match (set.vlan, set.port, &current) {
        (Some(vlan), _, _) => (Some(vlan), None),
        (None, Some(port), _) => (None, Some(port)),
        (None, None, Some(current)) => (current.vlan, current.port.clone()),
        (None, None, None) => {
            return Err(format!(
                "{} is not an interface yet: say what it is: --vlan <id> (an SVI, named \
                 vlan<id>) or --port <port> (a routed port, named like the port)",
                set.name
            ));
        }
    };
    let mut addresses = match set.addresses {
        Some(AddressList(addresses)) => addresses,
        None => current
            .as_ref()
            .map(|c| c.addresses.clone())
            .unwrap_or_default(),
    };
    for address in set.add_address {
        if !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    for address in &set.del_address {
        if !addresses.contains(address) {
            return Err(format!("{} has no address {address}", set.name));
        }
        addresses.retain(|a| a != address);
    }
    let mtu = match (set.mtu, set.no_mtu) {
        (Some(mtu), _) => Some(mtu),
        (None, true) => None,
        (None, false) => current.as_ref().and_then(|c| c.mtu),
    };
    Ok(InterfaceConfig {
        name: set.name,
        vlan,
        port,
        addresses,
        mtu,
    })
}

/// The route `xnos route add` asks for: the prefix with its host bits cleared, as the
/// kernel keys it.
pub fn route_row(prefix: IpNet, via: Vec<IpAddr>) -> RouteConfig {
    RouteConfig {
        prefix: prefix.trunc(),
        nexthops: via,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_lists_take_ranges_and_name_what_is_wrong() {
        assert_eq!(
            parse_vlan_list("10, 20,30-32").unwrap(),
            [10, 20, 30, 31, 32].into()
        );
        assert_eq!(
            parse_vlan_list("10-5").unwrap_err(),
            "\"10-5\" is not a VLAN or a range like 30-39"
        );
        assert!(parse_vlan_list("x").is_err());
    }

    fn port_set(name: &str) -> PortSet {
        PortSet {
            name: name.into(),
            access: None,
            trunk: None,
            native: None,
            no_native: false,
            datapath: None,
            mtu: None,
            no_mtu: false,
        }
    }

    #[test]
    fn the_mtu_stays_unless_set_or_removed() {
        let current = || Some(port(PortMode::Access { vlan: 10 }, DatapathChoice::Auto));
        assert_eq!(
            set_port(current(), port_set("swp1")).unwrap().mtu,
            Some(9000)
        );
        let new = PortSet {
            mtu: Some(1500),
            ..port_set("swp1")
        };
        assert_eq!(set_port(current(), new).unwrap().mtu, Some(1500));
        let none = PortSet {
            no_mtu: true,
            ..port_set("swp1")
        };
        assert_eq!(set_port(current(), none).unwrap().mtu, None);
    }

    fn trunk(vlans: &[u16], native_vlan: Option<u16>) -> PortMode {
        PortMode::Trunk {
            vlans: vlans.iter().copied().collect::<BTreeSet<_>>(),
            native_vlan,
        }
    }

    fn port(mode: PortMode, datapath: DatapathChoice) -> PortConfig {
        PortConfig {
            name: "swp1".into(),
            mode,
            datapath,
            mtu: Some(9000),
        }
    }

    #[test]
    fn changing_the_mode_keeps_the_datapath() {
        let current = port(trunk(&[10], None), DatapathChoice::XdpGeneric);
        let new = set_port(
            Some(current),
            PortSet {
                access: Some(30),
                ..port_set("swp1")
            },
        )
        .unwrap();
        assert_eq!(
            new,
            port(PortMode::Access { vlan: 30 }, DatapathChoice::XdpGeneric)
        );
    }

    #[test]
    fn changing_the_datapath_keeps_the_mode() {
        let current = port(trunk(&[10, 20], Some(1)), DatapathChoice::Auto);
        let new = set_port(
            Some(current),
            PortSet {
                datapath: Some(DatapathChoice::Tc),
                ..port_set("swp1")
            },
        )
        .unwrap();
        assert_eq!(new, port(trunk(&[10, 20], Some(1)), DatapathChoice::Tc));
    }

    #[test]
    fn trunk_options_change_only_what_they_name() {
        let current = || Some(port(trunk(&[10, 20], Some(1)), DatapathChoice::Auto));
        let vlans_only = PortSet {
            trunk: Some([30].into()),
            ..port_set("swp1")
        };
        assert_eq!(
            set_port(current(), vlans_only).unwrap().mode,
            trunk(&[30], Some(1))
        );
        let native_only = PortSet {
            native: Some(20),
            ..port_set("swp1")
        };
        assert_eq!(
            set_port(current(), native_only).unwrap().mode,
            trunk(&[10, 20], Some(20))
        );
        let no_native = PortSet {
            no_native: true,
            ..port_set("swp1")
        };
        assert_eq!(
            set_port(current(), no_native).unwrap().mode,
            trunk(&[10, 20], None)
        );
    }

    #[test]
    fn an_access_port_becoming_a_trunk_has_no_native_vlan_unless_named() {
        let current = port(PortMode::Access { vlan: 10 }, DatapathChoice::Auto);
        let new = set_port(
            Some(current),
            PortSet {
                trunk: Some([10, 20].into()),
                ..port_set("swp1")
            },
        )
        .unwrap();
        assert_eq!(new.mode, trunk(&[10, 20], None));
    }

    #[test]
    fn refusals_name_the_port_and_what_to_give() {
        let err = set_port(None, port_set("swp9")).unwrap_err();
        assert!(err.contains("swp9 is not a switch port yet"), "{err}");
        assert!(err.contains("--access <vlan>"), "{err}");
        let access = port(PortMode::Access { vlan: 10 }, DatapathChoice::Auto);
        let native = PortSet {
            native: Some(10),
            ..port_set("swp1")
        };
        let err = set_port(Some(access), native).unwrap_err();
        assert!(err.contains("swp1 is an access port"), "{err}");
    }

    #[test]
    fn a_new_port_gets_the_default_datapath() {
        let new = set_port(
            None,
            PortSet {
                access: Some(10),
                ..port_set("swp2")
            },
        )
        .unwrap();
        assert_eq!(
            new,
            PortConfig {
                name: "swp2".into(),
                mode: PortMode::Access { vlan: 10 },
                datapath: DatapathChoice::Auto,
                mtu: None,
            }
        );
    }

    fn interface_set(name: &str) -> InterfaceSet {
        InterfaceSet {
            name: name.into(),
            vlan: None,
            port: None,
            addresses: None,
            add_address: Vec::new(),
            del_address: Vec::new(),
            mtu: None,
            no_mtu: false,
        }
    }

    fn svi() -> InterfaceConfig {
        InterfaceConfig {
            name: "vlan10".into(),
            vlan: Some(10),
            port: None,
            addresses: vec!["10.0.10.1/24".parse().unwrap()],
            mtu: Some(9000),
        }
    }

    #[test]
    fn options_change_only_what_they_name() {
        let changed = set_interface(
            Some(svi()),
            InterfaceSet {
                add_address: vec!["fd00:10::1/64".parse().unwrap()],
                ..interface_set("vlan10")
            },
        )
        .unwrap();
        assert_eq!(
            changed,
            InterfaceConfig {
                addresses: vec![
                    "10.0.10.1/24".parse().unwrap(),
                    "fd00:10::1/64".parse().unwrap()
                ],
                ..svi()
            }
        );
        let no_mtu = set_interface(
            Some(svi()),
            InterfaceSet {
                no_mtu: true,
                del_address: vec!["10.0.10.1/24".parse().unwrap()],
                ..interface_set("vlan10")
            },
        )
        .unwrap();
        assert_eq!((no_mtu.mtu, no_mtu.addresses.len()), (None, 0));
    }

    #[test]
    fn refusals_name_the_interface_and_what_to_give() {
        let err = set_interface(None, interface_set("vlan20")).unwrap_err();
        assert!(err.contains("vlan20 is not an interface yet"), "{err}");
        assert!(err.contains("--vlan <id>"), "{err}");
        let err = set_interface(
            Some(svi()),
            InterfaceSet {
                del_address: vec!["10.9.9.9/24".parse().unwrap()],
                ..interface_set("vlan10")
            },
        )
        .unwrap_err();
        assert_eq!(err, "vlan10 has no address 10.9.9.9/24");
    }

    #[test]
    fn a_new_routed_port_takes_what_is_given() {
        let new = set_interface(
            None,
            InterfaceSet {
                port: Some("swp5".into()),
                addresses: Some(AddressList(vec!["10.0.99.1/30".parse().unwrap()])),
                ..interface_set("swp5")
            },
        )
        .unwrap();
        assert_eq!(
            new,
            InterfaceConfig {
                name: "swp5".into(),
                vlan: None,
                port: Some("swp5".into()),
                addresses: vec!["10.0.99.1/30".parse().unwrap()],
                mtu: None,
            }
        );
    }
}
