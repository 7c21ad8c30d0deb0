//! `xnos vlan`: add and delete VLANs.

use xnos::{
    api::{Client, ClientError, RowView},
    config::VlanConfig,
    statedb::{Op, Table},
};

use crate::{args::VlanAction, transact};

pub async fn run(client: &Client, action: VlanAction) -> Result<(), ClientError> {
    let op = match action {
        VlanAction::Add { id, name } => {
            let rows: Vec<RowView> = client.get("/v1/db/vlan").await?;
            let current = rows
                .into_iter()
                .find(|r| r.key == id.to_string())
                .map(|r| {
                    serde_json::from_value::<VlanConfig>(r.row).map_err(|e| {
                        ClientError::Refused(format!("xnosd sent a VLAN row xnos cannot read: {e}"))
                    })
                })
                .transpose()?;
            let row = VlanConfig { id, name };
            // Adding a VLAN that is there is no error (as `bridge vlan add`): it names
            // it when --name differs, and changes nothing otherwise.
            match current {
                None => Op::Insert {
                    table: Table::Vlan,
                    row: serde_json::to_value(row).expect("a VLAN row serialises"),
                },
                Some(current) if row.name.is_some() && row.name != current.name => Op::Update {
                    table: Table::Vlan,
                    row: serde_json::to_value(row).expect("a VLAN row serialises"),
                },
                Some(_) => {
                    println!("VLAN {id} exists already: nothing changed");
                    return Ok(());
                }
            }
        }
        VlanAction::Del { id } => Op::Delete {
            table: Table::Vlan,
            key: id.to_string(),
        },
    };
    transact(client, vec![op]).await
}
