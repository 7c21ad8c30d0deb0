//! xnos: the command-line interface to a running xnosd. One module per verb.

mod args;
mod config;
mod counters;
mod db;
mod fdb;
mod interface;
mod port;
mod ready;
mod render;
mod route;
mod show;
mod trace;
mod vlan;

use std::process::ExitCode;

use clap::Parser;
use xnos::{
    api::{Client, ClientError, Transaction},
    statedb::{Commit, Op},
};

use args::{Cli, Command};

fn main() -> ExitCode {
    // Like every Unix filter, end quietly when the reader goes away (`xnos ... | head`)
    // instead of panicking on a write to a closed pipe.
    // SAFETY: restoring a signal's default disposition before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xnos: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xnos: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), ClientError> {
    let client = Client::new(&cli.socket);
    match cli.command {
        Command::Show { table } => show::run(&client, table).await,
        Command::Vlan { action } => vlan::run(&client, action).await,
        Command::Port { action } => port::run(&client, action).await,
        Command::Fdb { action } => fdb::run(&client, action).await,
        Command::Route { action } => route::run(&client, action).await,
        Command::Interface { action } => interface::run(&client, action).await,
        Command::Config { action } => config::run(&client, action).await,
        Command::Trace(args) => trace::run(&client, args).await,
        Command::Db { action } => db::run(&client, action).await,
        Command::WaitReady { timeout } => ready::run(&client, &cli.socket, timeout).await,
        #[cfg(feature = "fault-injection")]
        Command::InjectFault { module } => {
            let message: String = client
                .post(&format!("/v1/debug/fault/{module}"), &serde_json::json!({}))
                .await?;
            println!("{message}");
            Ok(())
        }
    }
}

/// Commits `ops` as one transaction and prints what changed.
async fn transact(client: &Client, ops: Vec<Op>) -> Result<(), ClientError> {
    // A verb's transaction has one op: the API's "op 0 (table): " in front of a refusal
    // says nothing the operator did not type.
    let single = (ops.len() == 1).then(|| format!("op 0 ({}): ", ops[0].table()));
    let commit: Commit = client
        .post("/v1/transact", &Transaction { ops })
        .await
        .map_err(|e| match (e, single) {
            (ClientError::Refused(m), Some(prefix)) => {
                ClientError::Refused(m.strip_prefix(&prefix).map(str::to_string).unwrap_or(m))
            }
            (e, _) => e,
        })?;
    print!("{}", render::render_commit(&commit));
    Ok(())
}
