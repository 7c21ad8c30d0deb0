//! `xnos port`: make interfaces switch ports, change and remove them.

use serde_json::{Value, json};
use xnos::{
    api::{Client, ClientError, RowView},
    statedb::{Op, Table},
};

use crate::{args::PortAction, transact};

pub async fn run(client: &Client, action: PortAction) -> Result<(), ClientError> {
    match action {
        PortAction::Set {
            name,
            access,
            trunk,
            native,
            no_native,
        } => {
            let rows: Vec<RowView> = client.get("/v1/db/port").await?;
            let existing = rows.iter().find(|r| r.key == name);
            let mode = match (access, trunk) {
                (Some(vlan), None) => json!({ "mode": "access", "vlan": vlan }),
                (None, Some(vlans)) => {
                    // Without --native/--no-native a trunk keeps its native VLAN.
                    let kept = existing
                        .and_then(|r| r.row.get("native_vlan"))
                        .cloned()
                        .unwrap_or(Value::Null);
                    let native = match (native, no_native) {
                        (Some(v), _) => json!(v),
                        (None, true) => Value::Null,
                        (None, false) => kept,
                    };
                    json!({ "mode": "trunk", "vlans": vlans, "native_vlan": native })
                }
                _ => {
                    return Err(ClientError::Refused(
                    "say how the port carries VLANs: --access <vlan> or --trunk <vlans> [--native <vlan>]".into(),
                ));
                }
            };
            let mut row = mode;
            row["name"] = json!(name);
            let op = if existing.is_some() {
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
