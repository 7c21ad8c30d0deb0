//! `xnos interface`: add, change and remove L3 interfaces (SVIs and routed ports).

use xnos::{
    api::{Client, ClientError, RowView},
    config::InterfaceConfig,
    statedb::{Op, Table},
};

use crate::{
    args::{AddressList, InterfaceAction, InterfaceSet},
    transact,
};

pub async fn run(client: &Client, action: InterfaceAction) -> Result<(), ClientError> {
    match action {
        InterfaceAction::Set(set) => {
            let rows: Vec<RowView> = client.get("/v1/db/interface").await?;
            let current = rows
                .into_iter()
                .find(|r| r.key == set.name)
                .map(|r| {
                    serde_json::from_value::<InterfaceConfig>(r.row).map_err(|e| {
                        ClientError::Refused(format!(
                            "xnosd sent an interface row xnos cannot read: {e}"
                        ))
                    })
                })
                .transpose()?;
            let exists = current.is_some();
            let row =
                serde_json::to_value(set_interface(current, set).map_err(ClientError::Refused)?)
                    .expect("an interface row serialises");
            let table = Table::Interface;
            let op = if exists {
                Op::Update { table, row }
            } else {
                Op::Insert { table, row }
            };
            transact(client, vec![op]).await
        }
        InterfaceAction::Del { name } => {
            transact(
                client,
                vec![Op::Delete {
                    table: Table::Interface,
                    key: name,
                }],
            )
            .await
        }
    }
}

/// The interface `set` asks for: `current` (if it exists) with only the named fields
/// changed. Whether the result is a valid interface is for xnosd's validation to say.
fn set_interface(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str) -> InterfaceSet {
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
                ..set("vlan10")
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
                ..set("vlan10")
            },
        )
        .unwrap();
        assert_eq!((no_mtu.mtu, no_mtu.addresses.len()), (None, 0));
    }

    #[test]
    fn refusals_name_the_interface_and_what_to_give() {
        let err = set_interface(None, set("vlan20")).unwrap_err();
        assert!(err.contains("vlan20 is not an interface yet"), "{err}");
        assert!(err.contains("--vlan <id>"), "{err}");
        let err = set_interface(
            Some(svi()),
            InterfaceSet {
                del_address: vec!["10.9.9.9/24".parse().unwrap()],
                ..set("vlan10")
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
                ..set("swp5")
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
