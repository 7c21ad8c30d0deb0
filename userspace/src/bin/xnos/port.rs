//! `xnos port`: make interfaces switch ports, change and remove them.

use xnos::{
    api::{Client, ClientError, RowView},
    config::{PortConfig, PortMode},
    statedb::{Op, Table},
};

use crate::{
    args::{PortAction, PortSet},
    transact,
};

pub async fn run(client: &Client, action: PortAction) -> Result<(), ClientError> {
    match action {
        PortAction::Set(set) => {
            let rows: Vec<RowView> = client.get("/v1/db/port").await?;
            let current = rows
                .into_iter()
                .find(|r| r.key == set.name)
                .map(|r| {
                    serde_json::from_value::<PortConfig>(r.row).map_err(|e| {
                        ClientError::Refused(format!("xnosd sent a port row xnos cannot read: {e}"))
                    })
                })
                .transpose()?;
            let exists = current.is_some();
            let row = serde_json::to_value(set_port(current, set).map_err(ClientError::Refused)?)
                .expect("a port row serialises");
            let op = if exists {
                Op::Update {
                    table: Table::Port,
                    row,
                }
            } else {
                Op::Insert {
                    table: Table::Port,
                    row,
                }
            };
            transact(client, vec![op]).await
        }
        PortAction::Del { name } => {
            transact(
                client,
                vec![Op::Delete {
                    table: Table::Port,
                    key: name,
                }],
            )
            .await
        }
    }
}

/// The port `set` asks for: `current` (if the port exists) with only the named fields
/// changed. Whether the result is a valid port is for xnosd's validation to say.
fn set_port(current: Option<PortConfig>, set: PortSet) -> Result<PortConfig, String> {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use xnos::config::DatapathChoice;

    use super::*;

    fn set(name: &str) -> PortSet {
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
        assert_eq!(set_port(current(), set("swp1")).unwrap().mtu, Some(9000));
        let new = PortSet {
            mtu: Some(1500),
            ..set("swp1")
        };
        assert_eq!(set_port(current(), new).unwrap().mtu, Some(1500));
        let none = PortSet {
            no_mtu: true,
            ..set("swp1")
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
                ..set("swp1")
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
                ..set("swp1")
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
            ..set("swp1")
        };
        assert_eq!(
            set_port(current(), vlans_only).unwrap().mode,
            trunk(&[30], Some(1))
        );
        let native_only = PortSet {
            native: Some(20),
            ..set("swp1")
        };
        assert_eq!(
            set_port(current(), native_only).unwrap().mode,
            trunk(&[10, 20], Some(20))
        );
        let no_native = PortSet {
            no_native: true,
            ..set("swp1")
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
                ..set("swp1")
            },
        )
        .unwrap();
        assert_eq!(new.mode, trunk(&[10, 20], None));
    }

    #[test]
    fn refusals_name_the_port_and_what_to_give() {
        let err = set_port(None, set("swp9")).unwrap_err();
        assert!(err.contains("swp9 is not a switch port yet"), "{err}");
        assert!(err.contains("--access <vlan>"), "{err}");
        let access = port(PortMode::Access { vlan: 10 }, DatapathChoice::Auto);
        let native = PortSet {
            native: Some(10),
            ..set("swp1")
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
                ..set("swp2")
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
}
