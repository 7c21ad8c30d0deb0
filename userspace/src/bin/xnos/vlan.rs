//! `xnos vlan`: add and delete VLANs.

use xnos::{
    api::{Client, ClientError},
    config::VlanConfig,
    statedb::{Op, Table},
};

use crate::{args::VlanAction, transact};

pub async fn run(client: &Client, action: VlanAction) -> Result<(), ClientError> {
    let op = match action {
        VlanAction::Add { id, name } => Op::Insert {
            table: Table::Vlan,
            row: serde_json::to_value(VlanConfig { id, name }).expect("a VLAN row serialises"),
        },
        VlanAction::Del { id } => Op::Delete {
            table: Table::Vlan,
            key: id.to_string(),
        },
    };
    transact(client, vec![op]).await
}
