//! `xnos route`: add and delete config routes.

use xnos::{
    api::{Client, ClientError},
    cli::route_row,
    statedb::{Op, Table},
};

use crate::{args::RouteAction, transact};

pub async fn run(client: &Client, action: RouteAction) -> Result<(), ClientError> {
    let op = match action {
        RouteAction::Add { prefix, via } => Op::Insert {
            table: Table::Route,
            row: serde_json::to_value(route_row(prefix, via)).expect("a route row serialises"),
        },
        RouteAction::Del { prefix } => Op::Delete {
            table: Table::Route,
            key: prefix.trunc().to_string(),
        },
    };
    transact(client, vec![op]).await
}
