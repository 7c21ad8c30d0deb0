//! `xnos fdb`: add and delete static FDB entries, clear learned ones.

use xnos::{
    api::{Client, ClientError, FdbClearRequest, FdbClearedView},
    config::StaticFdb,
    statedb::{Op, Table, fdb_key},
};

use crate::{args::FdbAction, transact};

pub async fn run(client: &Client, action: FdbAction) -> Result<(), ClientError> {
    let op = match action {
        FdbAction::Add { mac, vlan, port } => Op::Insert {
            table: Table::FdbStatic,
            row: serde_json::to_value(StaticFdb { mac, vlan, port })
                .expect("an FDB row serialises"),
        },
        FdbAction::Del { mac, vlan } => Op::Delete {
            table: Table::FdbStatic,
            key: fdb_key(vlan, &mac),
        },
        FdbAction::Clear { vlan, port } => {
            let cleared: FdbClearedView = client
                .post("/v1/fdb/clear", &FdbClearRequest { vlan, port })
                .await?;
            let entries = if cleared.removed == 1 {
                "entry"
            } else {
                "entries"
            };
            println!("removed {} learned {entries}", cleared.removed);
            return Ok(());
        }
    };
    transact(client, vec![op]).await
}
