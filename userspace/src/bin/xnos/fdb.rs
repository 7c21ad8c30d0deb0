//! `xnos fdb`: add and delete static FDB entries.

use xnos::{
    api::{Client, ClientError},
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
    };
    transact(client, vec![op]).await
}
