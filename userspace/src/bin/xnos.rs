//! xnos: the command-line interface to a running xnosd.

use std::{collections::BTreeSet, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use xnos::{
    DEFAULT_SOCKET,
    api::{
        Client, ClientError, ConfigDiff, ConfigText, FdbView, InterfaceView, NeighborView,
        PortView, RouteView, RoutesView, RowView, Saved, Transaction, VlanView, WatchEvent,
    },
    mac::MacAddr,
    statedb::{Change, ChangeOp, Commit, DatapathMode, LearnedBy, Op, Table, fdb_key},
    trace::Verdict,
    trace::{TraceRequest, TraceView},
};

/// Show and change an xnos switch.
///
/// Examples:
///   xnos show ports                     ports, VLANs, datapath (XDP/TC/switchdev), link, counters
///   xnos vlan add 30 --name storage     create VLAN 30
///   xnos port set swp2 --trunk 10,30 --native 1
///   xnos fdb add 02:00:00:00:00:10 --vlan 10 --port swp1
///   xnos config apply new.toml          validate, show the diff, apply atomically
///   xnos config save                    write the running config to xnosd's config file
///   xnos db watch fdb-learned           stream changes of a StateDb table
///   xnos --socket /run/xnos/sw1.sock show fdb --json
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
        table: Show,
    },
    /// Add or remove VLANs.
    Vlan {
        #[command(subcommand)]
        action: VlanAction,
    },
    /// Configure switch ports.
    Port {
        #[command(subcommand)]
        action: PortAction,
    },
    /// Add or remove static FDB entries.
    Fdb {
        #[command(subcommand)]
        action: FdbAction,
    },
    /// Work with whole configs: apply, diff, show, save.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Run a described packet through the real datapath program against the live tables
    /// and show what the switch would do with it. Changes nothing (no learning, no counters).
    /// It runs the XDP build of the pipeline; TC ports run the same code, so the decision
    /// is theirs too (the verdict is named in XDP's terms). Switchdev ports are not traced.
    ///
    /// Examples:
    ///   xnos trace --port swp1 --dst-mac 02:00:00:00:00:02
    ///   xnos trace --port swp1 --dst-ip 10.0.20.2 --proto tcp --dport 443
    ///   xnos trace --port swp3 --vlan 20 --dst-mac ff:ff:ff:ff:ff:ff
    ///   xnos trace --port swp1 --hex 0200000000020200000000010800...
    #[command(verbatim_doc_comment)]
    Trace(TraceArgs),
    /// Read and watch the raw StateDb tables.
    Db {
        #[command(subcommand)]
        action: DbAction,
    },
    /// Test builds only: make a module panic, to see the supervisor restart it.
    #[cfg(feature = "fault-injection")]
    #[command(hide = true)]
    InjectFault { module: String },
}

#[derive(Subcommand, Clone, Copy)]
enum Show {
    /// Ports: mode, VLANs, datapath in use and why, link state and counters.
    Ports(Format),
    /// VLANs with their untagged and tagged member ports.
    Vlans(Format),
    /// Forwarding database: static (config) and learned MAC addresses per VLAN.
    Fdb(Format),
    /// The daemon's modules: state, restarts, last error.
    Modules(Format),
    /// L3 interfaces (SVIs and routed ports) with their addresses.
    Interfaces(Format),
    /// Routes of the kernel FIB, whether the fast path carries each, routed/punt counters.
    Routes(Format),
    /// ARP/ND neighbours and whether the fast path uses each.
    Neighbors(Format),
    /// Per-port counters with current rates (sampled over --interval).
    Counters(CountersArgs),
}

#[derive(Args, Clone, Copy)]
struct CountersArgs {
    /// Refresh in place, like top, until interrupted.
    #[arg(long)]
    watch: bool,
    /// Seconds between samples.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// With --watch: stop after this many refreshes.
    #[arg(long)]
    count: Option<u32>,
    #[command(flatten)]
    format: Format,
}

/// One port's counters and rates, for `show counters --json`.
#[derive(serde::Serialize)]
#[serde(rename_all = "kebab-case")]
struct CounterRow {
    port: String,
    rx_packets: u64,
    tx_packets: u64,
    rx_bytes: u64,
    tx_bytes: u64,
    drops: u64,
    flooded: u64,
    rx_pps: f64,
    tx_pps: f64,
    rx_bps: f64,
    tx_bps: f64,
    drops_per_sec: f64,
}

#[derive(Args, Clone, Copy)]
struct Format {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct TraceArgs {
    /// Ingress port.
    #[arg(long)]
    port: String,
    /// The whole frame in hex (instead of describing it with the options below).
    #[arg(long, conflicts_with_all = ["src_mac", "dst_mac", "vlan", "src_ip", "dst_ip", "proto", "sport", "dport", "ttl"])]
    hex: Option<String>,
    #[arg(long, default_value = "02:00:00:00:00:01")]
    src_mac: MacAddr,
    /// Default: the router MAC when --dst-ip is given.
    #[arg(long)]
    dst_mac: Option<MacAddr>,
    /// 802.1Q tag to put on the frame.
    #[arg(long)]
    vlan: Option<u16>,
    #[arg(long)]
    src_ip: Option<std::net::IpAddr>,
    #[arg(long)]
    dst_ip: Option<std::net::IpAddr>,
    /// udp, tcp or icmp.
    #[arg(long, default_value = "udp")]
    proto: String,
    #[arg(long, default_value_t = 12345)]
    sport: u16,
    #[arg(long, default_value_t = 80)]
    dport: u16,
    /// TTL / hop limit.
    #[arg(long, default_value_t = 64)]
    ttl: u8,
    #[command(flatten)]
    format: Format,
}

#[derive(Subcommand)]
enum VlanAction {
    /// Create a VLAN.
    Add {
        /// VLAN ID, 1..4094.
        id: u16,
        /// A name for it.
        #[arg(long)]
        name: Option<String>,
    },
    /// Delete a VLAN (no port may use it).
    Del { id: u16 },
}

#[derive(Subcommand)]
enum PortAction {
    /// Make an interface a switch port, or change one (its VLANs must exist).
    Set {
        /// Kernel interface name.
        name: String,
        /// Access port: untagged frames, all in this VLAN.
        #[arg(long, conflicts_with_all = ["trunk", "native", "no_native"])]
        access: Option<u16>,
        /// Trunk port: tagged frames of these VLANs, e.g. 10,20,30-39.
        #[arg(long, value_parser = parse_vlan_list)]
        trunk: Option<BTreeSet<u16>>,
        /// With --trunk: untagged frames belong to this VLAN.
        #[arg(long, requires = "trunk")]
        native: Option<u16>,
        /// With --trunk: no native VLAN (untagged frames are dropped).
        #[arg(long, requires = "trunk", conflicts_with = "native")]
        no_native: bool,
    },
    /// Remove a port from the switch (its XDP or TC program is detached).
    Del { name: String },
}

#[derive(Subcommand)]
enum FdbAction {
    /// Add a static entry (never overwritten by learning).
    Add {
        mac: MacAddr,
        #[arg(long)]
        vlan: u16,
        #[arg(long)]
        port: String,
    },
    /// Remove a static entry.
    Del {
        mac: MacAddr,
        #[arg(long)]
        vlan: u16,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate FILE, show how it differs from the running config, and apply it as one
    /// transaction. A bad file changes nothing.
    Apply {
        file: PathBuf,
        #[command(flatten)]
        format: Format,
    },
    /// Show how FILE differs from the running config, without applying it.
    Diff {
        file: PathBuf,
        #[command(flatten)]
        format: Format,
    },
    /// Print the running config as TOML.
    Show,
    /// Write the running config to xnosd's config file (the old one is kept as .bak).
    Save,
}

#[derive(Subcommand)]
enum DbAction {
    /// List the tables.
    Tables,
    /// Print every row of a table.
    Get {
        table: Table,
        #[command(flatten)]
        format: Format,
    },
    /// Print a table, then every change to it as it is committed (until interrupted).
    Watch {
        table: Table,
        #[command(flatten)]
        format: Format,
    },
}

fn parse_vlan_list(text: &str) -> Result<BTreeSet<u16>, String> {
    let mut vlans = BTreeSet::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("{part:?} is not a VLAN or a range like 30-39");
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to): (u16, u16) = (
                    from.parse().map_err(|_| bad())?,
                    to.parse().map_err(|_| bad())?,
                );
                if from > to {
                    return Err(bad());
                }
                vlans.extend(from..=to);
            }
            None => {
                vlans.insert(part.parse().map_err(|_| bad())?);
            }
        }
    }
    Ok(vlans)
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

async fn show<T: DeserializeOwned + Serialize>(
    client: &Client,
    path: &str,
    format: Format,
    render: impl FnOnce(&T) -> String,
) -> Result<(), ClientError> {
    let value: T = client.get(path).await?;
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

async fn transact(client: &Client, ops: Vec<Op>) -> Result<(), ClientError> {
    let commit: Commit = client.post("/v1/transact", &Transaction { ops }).await?;
    print!("{}", render_commit(&commit));
    Ok(())
}

async fn run(cli: Cli) -> Result<(), ClientError> {
    let client = Client::new(&cli.socket);
    match cli.command {
        Command::Show { table } => match table {
            Show::Ports(f) => show(&client, "/v1/ports", f, render_ports).await,
            Show::Vlans(f) => show(&client, "/v1/vlans", f, render_vlans).await,
            Show::Fdb(f) => show(&client, "/v1/fdb", f, render_fdb).await,
            Show::Modules(f) => show(&client, "/v1/modules", f, render_modules).await,
            Show::Interfaces(f) => show(&client, "/v1/interfaces", f, render_interfaces).await,
            Show::Routes(f) => show(&client, "/v1/routes", f, render_routes).await,
            Show::Neighbors(f) => show(&client, "/v1/neighbors", f, render_neighbors).await,
            Show::Counters(args) => counters(&client, args).await,
        },
        Command::Vlan { action } => {
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
            transact(&client, vec![op]).await
        }
        Command::Port { action } => match action {
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
                transact(&client, vec![op]).await
            }
            PortAction::Del { name } => {
                transact(
                    &client,
                    vec![Op::Delete {
                        table: Table::Port,
                        key: name,
                    }],
                )
                .await
            }
        },
        Command::Fdb { action } => {
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
            transact(&client, vec![op]).await
        }
        Command::Config { action } => match action {
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
        },
        Command::Trace(args) => {
            let frame = match &args.hex {
                Some(hex) => hex.clone(),
                None => xnos::trace::hex(&build_frame(&client, &args).await?),
            };
            let view: TraceView = client
                .post(
                    "/v1/trace",
                    &TraceRequest {
                        port: args.port.clone(),
                        frame,
                    },
                )
                .await?;
            if args.format.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&view).expect("serialises")
                );
            } else {
                print!("{}", render_trace(&view));
            }
            Ok(())
        }
        #[cfg(feature = "fault-injection")]
        Command::InjectFault { module } => {
            let message: String = client
                .post(&format!("/v1/debug/fault/{module}"), &json!({}))
                .await?;
            println!("{message}");
            Ok(())
        }
        Command::Db { action } => match action {
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
                        }
                    })
                    .await
            }
        },
    }
}

/// The frame `xnos trace` describes with its options.
async fn build_frame(client: &Client, args: &TraceArgs) -> Result<Vec<u8>, ClientError> {
    use etherparse::PacketBuilder;
    let dst_mac = match (args.dst_mac, args.dst_ip) {
        (Some(mac), _) => mac,
        (None, Some(_)) => {
            let ifaces: Vec<InterfaceView> = client.get("/v1/interfaces").await?;
            ifaces.first().map(|i| i.mac).ok_or_else(|| {
                ClientError::Refused("the switch has no L3 interface: give --dst-mac".into())
            })?
        }
        (None, None) => {
            return Err(ClientError::Refused(
                "give --dst-mac, --dst-ip or --hex".into(),
            ));
        }
    };
    let mut frame = Vec::new();
    let payload = [0u8; 18];
    let eth = PacketBuilder::ethernet2(args.src_mac.0, dst_mac.0);
    let bad = |e: etherparse::err::packet::BuildWriteError| {
        ClientError::Refused(format!("cannot build the frame: {e}"))
    };
    match args.dst_ip {
        None => {
            frame.extend_from_slice(&dst_mac.0);
            frame.extend_from_slice(&args.src_mac.0);
            frame.extend_from_slice(&[0x88, 0xb5]);
            frame.extend_from_slice(&[0; 46]);
        }
        Some(dst) => {
            let ip = match (args.src_ip, dst) {
                (Some(std::net::IpAddr::V4(s)), std::net::IpAddr::V4(d)) => {
                    eth.ipv4(s.octets(), d.octets(), args.ttl)
                }
                (None, std::net::IpAddr::V4(d)) => eth.ipv4([192, 0, 2, 1], d.octets(), args.ttl),
                (Some(std::net::IpAddr::V6(s)), std::net::IpAddr::V6(d)) => {
                    eth.ipv6(s.octets(), d.octets(), args.ttl)
                }
                (None, std::net::IpAddr::V6(d)) => eth.ipv6(
                    "2001:db8::1"
                        .parse::<std::net::Ipv6Addr>()
                        .expect("valid")
                        .octets(),
                    d.octets(),
                    args.ttl,
                ),
                _ => {
                    return Err(ClientError::Refused(
                        "--src-ip and --dst-ip must be of one family".into(),
                    ));
                }
            };
            match (args.proto.as_str(), dst) {
                ("udp", _) => ip
                    .udp(args.sport, args.dport)
                    .write(&mut frame, &payload)
                    .map_err(bad)?,
                ("tcp", _) => ip
                    .tcp(args.sport, args.dport, 1, 65535)
                    .write(&mut frame, &payload)
                    .map_err(bad)?,
                ("icmp", std::net::IpAddr::V4(_)) => ip
                    .icmpv4_echo_request(1, 1)
                    .write(&mut frame, &payload)
                    .map_err(bad)?,
                ("icmp", std::net::IpAddr::V6(_)) => ip
                    .icmpv6_echo_request(1, 1)
                    .write(&mut frame, &payload)
                    .map_err(bad)?,
                (other, _) => {
                    return Err(ClientError::Refused(format!(
                        "--proto {other:?}: use udp, tcp or icmp"
                    )));
                }
            }
        }
    }
    if let Some(vlan) = args.vlan {
        if vlan > 4094 {
            return Err(ClientError::Refused(format!(
                "--vlan {vlan} is out of range 0..4094"
            )));
        }
        let tci = (vlan & 0xfff).to_be_bytes();
        frame.splice(12..12, [0x81, 0x00, tci[0], tci[1]]);
    }
    Ok(frame)
}

fn render_trace(t: &TraceView) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<10}{v}\n"));
    line(
        "ingress",
        match t.vlan {
            Some(v) => format!("{} (VLAN {v})", t.ingress),
            None => t.ingress.clone(),
        },
    );
    let verdict = match t.verdict {
        Verdict::Forward | Verdict::Route => format!(
            "{}: out of {} {}",
            t.verdict,
            t.egress.clone().unwrap_or_default(),
            t.egress_tagging.clone().unwrap_or_default()
        ),
        Verdict::Flood => format!(
            "flood in VLAN {} to {}",
            t.vlan.unwrap_or(0),
            if t.flood.is_empty() {
                "no other port".into()
            } else {
                t.flood
                    .iter()
                    .map(|p| format!("{} ({})", p.port, p.tagging))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
        Verdict::Drop => format!("drop: {}", t.drop_reason.clone().unwrap_or_default()),
        Verdict::Punt => format!(
            "punt to the kernel ({}) through {}",
            t.punt_reason.clone().unwrap_or_default(),
            t.egress.clone().unwrap_or_default()
        ),
        Verdict::ToKernel => "to the kernel (not switched or routed)".into(),
        Verdict::Unknown => t.verdict.to_string(),
    };
    line("verdict", format!("{verdict}  [XDP {}]", t.action));
    if let Some(e) = &t.fdb_entry {
        line("fdb", e.clone());
    }
    if let Some(r) = &t.route {
        line("route", r.clone());
    }
    if let Some(n) = &t.nexthop {
        line("nexthop", n.clone());
    }
    if let Some(n) = t.neighbor {
        line("neighbor", n.to_string());
    }
    if !t.rewrites.is_empty() {
        line("rewrites", t.rewrites.join("; "));
    }
    out
}

fn counter_rows(before: &[PortView], after: &[PortView], secs: f64) -> Vec<CounterRow> {
    after
        .iter()
        .map(|p| {
            let old = before
                .iter()
                .find(|b| b.name == p.name)
                .map(|b| &b.counters);
            let rate = |now: u64, then: Option<u64>| {
                then.map_or(0.0, |t| now.saturating_sub(t) as f64 / secs)
            };
            let c = &p.counters;
            CounterRow {
                port: p.name.clone(),
                rx_packets: c.rx_packets,
                tx_packets: c.tx_packets,
                rx_bytes: c.rx_bytes,
                tx_bytes: c.tx_bytes,
                drops: c.total_drops(),
                flooded: c.flooded,
                rx_pps: rate(c.rx_packets, old.map(|o| o.rx_packets)),
                tx_pps: rate(c.tx_packets, old.map(|o| o.tx_packets)),
                rx_bps: 8.0 * rate(c.rx_bytes, old.map(|o| o.rx_bytes)),
                tx_bps: 8.0 * rate(c.tx_bytes, old.map(|o| o.tx_bytes)),
                drops_per_sec: rate(c.total_drops(), old.map(|o| o.total_drops())),
            }
        })
        .collect()
}

fn human_rate(value: f64, unit: &str) -> String {
    match value {
        v if v >= 1e9 => format!("{:.2}G{unit}", v / 1e9),
        v if v >= 1e6 => format!("{:.2}M{unit}", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k{unit}", v / 1e3),
        v => format!("{v:.0}{unit}"),
    }
}

fn render_counters(rows: &[CounterRow]) -> String {
    let mut table_rows = vec![
        [
            "PORT",
            "RX-PKTS",
            "TX-PKTS",
            "DROPS",
            "RX-RATE",
            "TX-RATE",
            "RX-BITS",
            "TX-BITS",
            "DROP-RATE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in rows {
        table_rows.push(vec![
            r.port.clone(),
            r.rx_packets.to_string(),
            r.tx_packets.to_string(),
            r.drops.to_string(),
            human_rate(r.rx_pps, "pps"),
            human_rate(r.tx_pps, "pps"),
            human_rate(r.rx_bps, "bps"),
            human_rate(r.tx_bps, "bps"),
            human_rate(r.drops_per_sec, "/s"),
        ]);
    }
    table(&table_rows)
}

async fn counters(client: &Client, args: CountersArgs) -> Result<(), ClientError> {
    if !(0.05..=3600.0).contains(&args.interval) {
        return Err(ClientError::Refused(
            "--interval must be between 0.05 and 3600 seconds".into(),
        ));
    }
    let interval = std::time::Duration::from_secs_f64(args.interval);
    let mut before: Vec<PortView> = client.get("/v1/ports").await?;
    let mut shown = 0;
    loop {
        tokio::time::sleep(interval).await;
        let after: Vec<PortView> = client.get("/v1/ports").await?;
        let rows = counter_rows(&before, &after, args.interval);
        if args.format.json {
            println!("{}", serde_json::to_string(&rows).expect("serialises"));
        } else {
            if args.watch {
                // Clear the screen and go home, like top.
                print!("\x1b[H\x1b[2J");
                println!("xnos counters, every {}s (Ctrl-C to stop)\n", args.interval);
            }
            print!("{}", render_counters(&rows));
        }
        shown += 1;
        if !args.watch || args.count.is_some_and(|c| shown >= c) {
            return Ok(());
        }
        before = after;
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

fn render_changes(changes: &[Change]) -> String {
    let mut out = String::new();
    for c in changes {
        let line = match c.op {
            ChangeOp::Insert => format!(
                "+ {} {}  {}",
                c.table,
                c.key,
                c.row.clone().unwrap_or_default()
            ),
            ChangeOp::Delete => format!("- {} {}", c.table, c.key),
            ChangeOp::Update => format!(
                "~ {} {}  {} -> {}",
                c.table,
                c.key,
                c.old.clone().unwrap_or_default(),
                c.row.clone().unwrap_or_default()
            ),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn render_commit(commit: &Commit) -> String {
    if commit.changes.is_empty() {
        return "no changes\n".into();
    }
    format!(
        "committed generation {}:\n{}",
        commit.generation,
        render_changes(&commit.changes)
    )
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
            "PORT", "MODE", "UNTAGGED", "TAGGED", "DATAPATH", "LINK", "RX-PKTS", "TX-PKTS",
            "FLOODED", "DROPS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for p in ports {
        rows.push(vec![
            p.name.clone(),
            p.mode.to_string(),
            p.untagged_vlan.map_or("-".into(), |v| v.to_string()),
            vlan_list(&p.tagged_vlans),
            p.datapath.to_string(),
            p.link.map_or("absent".into(), |l| l.to_string()),
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
        if let (Some(bridge), Some(member)) = (&p.bridge, p.bridge_member) {
            let state = if member { "member of" } else { "NOT in" };
            out.push_str(&format!("{}: {state} bridge {bridge}\n", p.name));
        }
        if p.datapath != DatapathMode::XdpNative
            && let Some(reason) = &p.datapath_reason
        {
            out.push_str(&format!("{}: {}, {reason}\n", p.name, p.datapath));
        }
        if p.xdp_redirect_target == Some(false)
            && ports
                .iter()
                .any(|other| other.datapath == DatapathMode::XdpNative)
        {
            out.push_str(&format!(
                "{}: warning: native-XDP ports cannot send it frames (xdp-features: {}); \
                 on a veth, turn GRO on at its peer\n",
                p.name,
                p.xdp_features.as_deref().unwrap_or("none"),
            ));
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
        ["VLAN", "MAC", "PORT", "TYPE", "MOVES", "HW"]
            .map(String::from)
            .to_vec(),
    ];
    for f in fdb {
        let kind = match f.learned_by {
            Some(LearnedBy::Bridge) => format!("{} (bridge)", f.kind),
            _ => f.kind.to_string(),
        };
        rows.push(vec![
            f.vlan.to_string(),
            f.mac.to_string(),
            f.port.clone(),
            kind,
            f.moves.to_string(),
            if f.hardware { "offloaded" } else { "-" }.into(),
        ]);
    }
    let mut out = table(&rows);
    out.push_str(&format!("{} entries\n", fdb.len()));
    out
}

fn render_interfaces(ifaces: &Vec<InterfaceView>) -> String {
    let mut rows = vec![
        [
            "INTERFACE",
            "KIND",
            "VLAN",
            "PORT",
            "LINK",
            "MAC",
            "ADDRESSES",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let mut errors = String::new();
    for i in ifaces {
        if let Some(error) = &i.error {
            errors.push_str(&format!("{}: {error}\n", i.name));
        }
        rows.push(vec![
            i.name.clone(),
            i.kind.to_string(),
            i.vlan.map_or("-".into(), |v| v.to_string()),
            i.port.clone().unwrap_or_else(|| "-".into()),
            i.link.map_or("absent".into(), |l| l.to_string()),
            i.mac.to_string(),
            i.addresses
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(" "),
        ]);
    }
    let mut out = table(&rows);
    out.push_str(&errors);
    out
}

fn route_nexthops(r: &RouteView) -> String {
    r.nexthops
        .iter()
        .map(|n| match n.gateway {
            Some(gw) => format!("via {gw} dev {}", n.interface),
            None => format!("dev {}", n.interface),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn render_routes(view: &RoutesView) -> String {
    let mut rows = vec![
        [
            "PREFIX",
            "TABLE",
            "TYPE",
            "PROTO",
            "NEXTHOPS",
            "FAST-PATH",
            "HW",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in &view.routes {
        rows.push(vec![
            r.prefix.to_string(),
            r.table.to_string(),
            r.kind.to_string(),
            r.protocol.to_string(),
            route_nexthops(r),
            match (r.fast_path, &r.fast_path_error) {
                (_, Some(_)) => "no (error)",
                (true, None) => "yes",
                (false, None) => "no (kernel)",
            }
            .into(),
            r.hardware.map_or("-".into(), |h| h.to_string()),
        ]);
    }
    let mut out = table(&rows);
    for r in &view.routes {
        if let Some(error) = &r.fast_path_error {
            out.push_str(&format!("{} ({}): {error}\n", r.prefix, r.table));
        }
    }
    let c = &view.counters;
    let punts: Vec<String> = c
        .punts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{r}={n}"))
        .collect();
    out.push_str(&format!(
        "routed by the fast path: {} IPv4, {} IPv6; punted to the kernel: {}{}\n",
        c.routed_v4,
        c.routed_v6,
        if punts.is_empty() {
            "none".to_string()
        } else {
            punts.join(" ")
        },
        if c.punts_rate_limited > 0 {
            format!(" (rate-limited: {})", c.punts_rate_limited)
        } else {
            String::new()
        },
    ));
    out
}

fn render_neighbors(neighbors: &Vec<NeighborView>) -> String {
    let mut rows = vec![
        ["ADDRESS", "MAC", "INTERFACE", "STATE", "FAST-PATH"]
            .map(String::from)
            .to_vec(),
    ];
    for n in neighbors {
        rows.push(vec![
            n.ip.to_string(),
            n.mac.map_or("-".into(), |m| m.to_string()),
            n.interface.clone(),
            n.state.to_string(),
            match (n.fast_path, &n.fast_path_error) {
                (_, Some(_)) => "no (error)",
                (true, None) => "yes",
                (false, None) => "no",
            }
            .into(),
        ]);
    }
    let mut out = table(&rows);
    for n in neighbors {
        if let Some(error) = &n.fast_path_error {
            out.push_str(&format!("{} ({}): {error}\n", n.ip, n.interface));
        }
    }
    out
}

fn render_modules(modules: &Vec<RowView>) -> String {
    let mut rows = vec![
        ["MODULE", "STATE", "RESTARTS", "LAST-ERROR"]
            .map(String::from)
            .to_vec(),
    ];
    for m in modules {
        let field = |name: &str| match &m.row[name] {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            other => other.to_string(),
        };
        rows.push(vec![
            m.key.clone(),
            field("state"),
            field("restarts"),
            field("last_error"),
        ]);
    }
    table(&rows)
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
