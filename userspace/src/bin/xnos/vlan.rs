//! `xnos vlan`: add and delete VLANs.

use serde_json::json;
use xnos::{
    api::{Client, ClientError},
    statedb::{Op, Table},
};

use crate::{args::VlanAction, transact};

pub async fn run(client: &Client, action: VlanAction) -> Result<(), ClientError> {
    let op = match action {
        VlanAction::Add { id, name } => Op::Insert {
            table: Table::Vlan,
            row: json!({ "id": id, "name": name }),
        },
        VlanAction::Del { id } => Op::Delete {
            table: Table::Vlan,
            key: id.to_string(),
        },
    };
    transact(client, vec![op]).await
}
