//! `xnos fdb`: add and delete static FDB entries.

use serde_json::json;
use xnos::{
    api::{Client, ClientError},
    statedb::{Op, Table, fdb_key},
};

use crate::{args::FdbAction, transact};

pub async fn run(client: &Client, action: FdbAction) -> Result<(), ClientError> {
    let op = match action {
        FdbAction::Add { mac, vlan, port } => Op::Insert {
            table: Table::FdbStatic,
            row: json!({ "mac": mac, "vlan": vlan, "port": port }),
        },
        FdbAction::Del { mac, vlan } => Op::Delete {
            table: Table::FdbStatic,
            key: fdb_key(vlan, &mac),
        },
    };
    transact(client, vec![op]).await
}
