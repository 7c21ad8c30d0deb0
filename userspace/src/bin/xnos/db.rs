//! `xnos db`: the raw StateDb tables, read once or watched.

use xnos::{
    api::{Client, ClientError, RowView, WatchEvent},
    statedb::Table,
};

use crate::{args::DbAction, render::render_changes};

pub async fn run(client: &Client, action: DbAction) -> Result<(), ClientError> {
    match action {
        DbAction::Tables => {
            let tables: Vec<String> = client.get("/v1/db").await?;
            for table in tables {
                let kind = if table.parse::<Table>().is_ok_and(|t| t.is_config()) {
                    "config"
                } else {
                    "state"
                };
                println!("{table:<12} {kind}");
            }
            Ok(())
        }
        DbAction::Get { table, format } => {
            let rows: Vec<RowView> = client.get(&format!("/v1/db/{table}")).await?;
            if format.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).expect("serialises")
                );
            } else {
                for row in rows {
                    println!("{}  {}", row.key, row.row);
                }
            }
            Ok(())
        }
        DbAction::Watch { table, format } => {
            client
                .watch(table.name(), |event| {
                    if format.json {
                        println!("{}", serde_json::to_string(&event).expect("serialises"));
                        return;
                    }
                    match event {
                        WatchEvent::Snapshot { generation, rows } => {
                            println!("generation {generation}: {} rows in {table}", rows.len());
                            for row in rows {
                                println!("  {}  {}", row.key, row.row);
                            }
                        }
                        WatchEvent::Change { generation, change } => {
                            print!("generation {generation}: {}", render_changes(&[change]));
                        }
                        // The client returns its error, which `xnos` prints.
                        WatchEvent::FellBehind { .. } => {}
                    }
                })
                .await
        }
    }
}
