//! `xnos config`: apply, diff, show and save whole configs.

use std::path::PathBuf;

use serde_json::json;
use xnos::api::{Client, ClientError, ConfigDiff, ConfigText, Saved};
use xnos::statedb::Commit;

use crate::{
    args::ConfigAction,
    render::{render_changes, render_commit},
};

pub async fn run(client: &Client, action: ConfigAction) -> Result<(), ClientError> {
    match action {
        ConfigAction::Apply { file, format } => {
            let body = read_config(&file)?;
            let diff: ConfigDiff = client.post("/v1/config/diff", &body).await?;
            let commit: Commit = client.post("/v1/config/apply", &body).await?;
            if format.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&commit).expect("serialises")
                );
            } else if diff.changes.is_empty() {
                println!(
                    "no changes: the running config already matches {}",
                    file.display()
                );
            } else {
                print!("{}", render_commit(&commit));
            }
            Ok(())
        }
        ConfigAction::Diff { file, format } => {
            let diff: ConfigDiff = client.post("/v1/config/diff", &read_config(&file)?).await?;
            if format.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&diff).expect("serialises")
                );
            } else if diff.changes.is_empty() {
                println!(
                    "no changes: the running config already matches {}",
                    file.display()
                );
            } else {
                print!("{}", render_changes(&diff.changes));
            }
            Ok(())
        }
        ConfigAction::Show => {
            print!("{}", client.get_text("/v1/config").await?);
            Ok(())
        }
        ConfigAction::Save => {
            let saved: Saved = client.post("/v1/config/save", &json!({})).await?;
            match saved.backup {
                Some(backup) => println!(
                    "saved running config to {} (previous version in {})",
                    saved.path.display(),
                    backup.display()
                ),
                None => println!("saved running config to {}", saved.path.display()),
            }
            Ok(())
        }
    }
}

fn read_config(file: &PathBuf) -> Result<ConfigText, ClientError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| ClientError::Refused(format!("cannot read {}: {e}", file.display())))?;
    Ok(ConfigText {
        file: file.display().to_string(),
        text,
    })
}
