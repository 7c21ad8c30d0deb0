//! `xnos port`: make interfaces switch ports, change and remove them.

use xnos::{
    api::{Client, ClientError, RowView},
    cli::set_port,
    config::PortConfig,
    statedb::{Op, Table},
};

use crate::{args::PortAction, transact};

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
