//! xnos: the command-line interface to a running xnosd.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use serde::{Serialize, de::DeserializeOwned};
use xnos::{
    DEFAULT_SOCKET,
    api::{self, FdbView, PortView, VlanView},
};

/// Show and control an xnos switch.
///
/// Examples:
///   xnos show ports            ports, VLANs, XDP mode, link and counters
///   xnos show fdb --json       the forwarding database as JSON
///   xnos --socket /run/xnos/sw1.sock show vlans
#[derive(Parser)]
#[command(version, about, long_about, verbatim_doc_comment)]
struct Cli {
    /// API socket of the xnosd instance to talk to.
    #[arg(long, global = true, env = "XNOS_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a table of the switch state.
    Show {
        #[command(subcommand)]
        table: Table,
    },
}

#[derive(Subcommand, Clone, Copy)]
enum Table {
    /// Ports: mode, VLANs, XDP attachment, link state and counters.
    Ports(Format),
    /// VLANs with their untagged and tagged member ports.
    Vlans(Format),
    /// Forwarding database: static (config) and learned MAC addresses per VLAN.
    Fdb(Format),
}

#[derive(clap::Args, Clone, Copy)]
struct Format {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
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

async fn fetch<T: DeserializeOwned + Serialize>(
    cli: &Cli,
    path: &str,
    format: Format,
    render: impl FnOnce(&T) -> String,
) -> Result<(), api::ClientError> {
    let value: T = api::get(&cli.socket, path).await?;
    if format.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).expect("views serialise")
        );
    } else {
        print!("{}", render(&value));
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<(), api::ClientError> {
    match cli.command {
        Command::Show { table } => match table {
            Table::Ports(f) => fetch(&cli, "/v1/ports", f, render_ports).await,
            Table::Vlans(f) => fetch(&cli, "/v1/vlans", f, render_vlans).await,
            Table::Fdb(f) => fetch(&cli, "/v1/fdb", f, render_fdb).await,
        },
    }
}

fn vlan_list(vlans: &[u16]) -> String {
    if vlans.is_empty() {
        return "-".into();
    }
    vlans
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn render_ports(ports: &Vec<PortView>) -> String {
    let mut rows = vec![
        [
            "PORT", "MODE", "UNTAGGED", "TAGGED", "XDP", "LINK", "RX-PKTS", "TX-PKTS", "FLOODED",
            "DROPS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for p in ports {
        rows.push(vec![
            p.name.clone(),
            p.mode.clone(),
            p.untagged_vlan.map_or("-".into(), |v| v.to_string()),
            vlan_list(&p.tagged_vlans),
            p.xdp.clone(),
            p.link.clone(),
            p.counters.rx_packets.to_string(),
            p.counters.tx_packets.to_string(),
            p.counters.flooded.to_string(),
            p.counters.total_drops().to_string(),
        ]);
    }
    let mut out = table(&rows);
    for p in ports {
        if let Some(error) = &p.error {
            out.push_str(&format!("{}: {error}\n", p.name));
        }
        let drops: Vec<String> = p
            .counters
            .drops
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(reason, n)| format!("{reason}={n}"))
            .collect();
        if !drops.is_empty() {
            out.push_str(&format!("{} drops: {}\n", p.name, drops.join(" ")));
        }
    }
    out
}

fn render_vlans(vlans: &Vec<VlanView>) -> String {
    let mut rows = vec![
        ["VLAN", "NAME", "UNTAGGED", "TAGGED", "FDB"]
            .map(String::from)
            .to_vec(),
    ];
    for v in vlans {
        let ports = |list: &[String]| {
            if list.is_empty() {
                "-".into()
            } else {
                list.join(",")
            }
        };
        rows.push(vec![
            v.id.to_string(),
            v.name.clone().unwrap_or_else(|| "-".into()),
            ports(&v.untagged_ports),
            ports(&v.tagged_ports),
            v.fdb_entries.to_string(),
        ]);
    }
    table(&rows)
}

fn render_fdb(fdb: &Vec<FdbView>) -> String {
    let mut rows = vec![
        ["VLAN", "MAC", "PORT", "TYPE", "MOVES"]
            .map(String::from)
            .to_vec(),
    ];
    for f in fdb {
        rows.push(vec![
            f.vlan.to_string(),
            f.mac.to_string(),
            f.port.clone(),
            f.kind.clone(),
            f.moves.to_string(),
        ]);
    }
    let mut out = table(&rows);
    out.push_str(&format!("{} entries\n", fdb.len()));
    out
}

/// Left-aligned columns separated by two spaces.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
