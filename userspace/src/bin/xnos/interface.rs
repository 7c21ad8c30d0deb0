//! `xnos interface`: add, change and remove L3 interfaces (SVIs and routed ports).

use xnos::{
    api::{Client, ClientError, RowView},
    cli::set_interface,
    config::InterfaceConfig,
    statedb::{Op, Table},
};

use crate::{args::InterfaceAction, transact};

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
