//! The command line: every verb and option as clap derive types, each doc comment its help.

use std::{net::IpAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
pub use xnos::cli::{InterfaceSet, PortSet};
use xnos::{DEFAULT_SOCKET, mac::MacAddr, statedb::Table};

/// Show and change an xnos switch.
///
/// Examples:
///   xnos show ports                     ports, VLANs, datapath (XDP/TC/switchdev), link, drops
///   xnos vlan add 30 --name storage     create VLAN 30
///   xnos port set swp2 --trunk 10,30 --native 1
///   xnos fdb add 02:00:00:00:00:10 --vlan 10 --port swp1
///   xnos route add 10.99.0.0/16 --via 10.0.20.2
///   xnos fdb clear --port swp1          forget the MACs learned on swp1
///   xnos interface set vlan10 --vlan 10 --addresses 10.0.10.1/24
///   xnos config apply new.toml          validate, show the diff, apply atomically
///   xnos config save                    write the running config to xnosd's config file
///   xnos db watch fdb-learned           stream changes of a StateDb table
///   xnos --socket /run/xnos/sw1.sock show fdb --json
///
/// Verbs and tables may be abbreviated to any unambiguous prefix, as in iproute2:
///   xnos sh po, xnos show int, xnos show neigh, xnos show route
#[derive(Parser)]
#[command(
    version,
    about,
    long_about,
    verbatim_doc_comment,
    infer_subcommands = true
)]
pub struct Cli {
    /// API socket of the xnosd instance to talk to.
    #[arg(long, global = true, env = "XNOS_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// Add or remove static FDB entries; clear learned ones.
    Fdb {
        #[command(subcommand)]
        action: FdbAction,
    },
    /// Add or remove config routes (the config's [[route]] rows), which xnosd installs
    /// into the kernel; `show routes` shows what the kernel made of them.
    ///
    /// Examples:
    ///   xnos route add 10.99.0.0/16 --via 10.0.20.2
    ///   xnos route add 10.98.0.0/16 --via 10.0.20.2,10.0.20.3     ECMP
    ///   xnos route add 2001:db8:99::/48 --via fd00:20::2
    ///   xnos route del 10.99.0.0/16
    #[command(verbatim_doc_comment)]
    Route {
        #[command(subcommand)]
        action: RouteAction,
    },
    /// Configure L3 interfaces: SVIs (`vlan<ID>`) and routed ports, with their addresses.
    /// `xnos show interfaces` shows them.
    ///
    /// Examples:
    ///   xnos interface set vlan10 --vlan 10 --addresses 10.0.10.1/24,fd00:10::1/64
    ///   xnos interface set swp5 --port swp5 --addresses 10.0.99.1/30
    ///   xnos interface set vlan10 --add-address 10.0.11.1/24 --mtu 9000
    ///   xnos interface set vlan10 --del-address fd00:10::1/64 --no-mtu
    ///   xnos interface del swp5
    #[command(verbatim_doc_comment)]
    Interface {
        #[command(subcommand)]
        action: InterfaceAction,
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
    /// Wait until xnosd is ready: its API socket is there and every configured port has
    /// its fast path. Exits 0 then, or fails naming what it still waited for.
    ///
    /// Examples:
    ///   xnosd & xnos wait-ready && ping ...
    ///   xnos wait-ready --timeout 60
    #[command(verbatim_doc_comment)]
    WaitReady {
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
    },
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
pub enum Show {
    /// Ports: mode, VLANs, datapath in use and why, link state and counters.
    Ports(ShowFormat),
    /// VLANs with their untagged and tagged member ports.
    Vlans(ShowFormat),
    /// Forwarding database: static (config) and learned MAC addresses per VLAN.
    Fdb(ShowFormat),
    /// The daemon's modules: state, restarts, last error.
    Modules(ShowFormat),
    /// L3 interfaces (SVIs and routed ports) with their addresses.
    Interfaces(ShowFormat),
    /// Routes of the kernel FIB, whether the fast path carries each, routed/punt counters.
    ///
    /// Every route the kernel has is a row (routes to one prefix through several
    /// interfaces, or with several metrics, each); local-table and link-local routes
    /// (fe80::/10, 169.254.0.0/16) only with --all. A config route the kernel refused is
    /// shown with its error.
    Routes(RoutesArgs),
    /// ARP/ND neighbors and whether the fast path uses each.
    #[command(visible_alias = "neighbours")]
    Neighbors(ShowFormat),
    /// Per-port counters with current rates (sampled over --interval).
    Counters(CountersArgs),
}

#[derive(Args, Clone, Copy)]
pub struct CountersArgs {
    /// Refresh in place, like top, until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// Seconds between samples.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// With --watch: stop after this many refreshes.
    #[arg(long, requires = "watch")]
    pub count: Option<u32>,
    #[command(flatten)]
    pub format: ShowFormat,
}

#[derive(Args, Clone, Copy)]
pub struct RoutesArgs {
    /// Show the local table's routes and link-local routes too.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub format: ShowFormat,
}

#[derive(Args, Clone, Copy)]
pub struct Format {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// How `show` prints a table: fitted to 80 columns, `--wide`, or `--json` (an array of
/// objects keyed by the column headers, every column included).
#[derive(Args, Clone, Copy)]
pub struct ShowFormat {
    /// Print JSON: an array of objects whose keys are the table's headers in lower case,
    /// with every column --wide shows.
    #[arg(long)]
    pub json: bool,
    /// Show every column, nothing elided (the default fits 80 columns).
    #[arg(long, conflicts_with = "json")]
    pub wide: bool,
}

#[derive(Args)]
pub struct TraceArgs {
    /// Ingress port.
    #[arg(long)]
    pub port: String,
    /// The whole frame in hex (instead of describing it with the options below).
    #[arg(long, conflicts_with_all = ["src_mac", "dst_mac", "vlan", "src_ip", "dst_ip", "proto", "sport", "dport", "ttl"])]
    pub hex: Option<String>,
    #[arg(long, default_value = "02:00:00:00:00:01")]
    pub src_mac: MacAddr,
    /// Default: the router MAC when --dst-ip is given.
    #[arg(long)]
    pub dst_mac: Option<MacAddr>,
    /// 802.1Q tag to put on the frame.
    #[arg(long)]
    pub vlan: Option<u16>,
    #[arg(long)]
    pub src_ip: Option<std::net::IpAddr>,
    #[arg(long)]
    pub dst_ip: Option<std::net::IpAddr>,
    /// udp, tcp or icmp.
    #[arg(long, default_value = "udp")]
    pub proto: String,
    #[arg(long, default_value_t = 12345)]
    pub sport: u16,
    #[arg(long, default_value_t = 80)]
    pub dport: u16,
    /// TTL / hop limit.
    #[arg(long, default_value_t = 64)]
    pub ttl: u8,
    #[command(flatten)]
    pub format: Format,
}

#[derive(Subcommand)]
pub enum VlanAction {
    /// Create a VLAN, or name one that exists (adding a VLAN that exists changes nothing
    /// else and is no error).
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
pub enum RouteAction {
    /// Add a config route. Each nexthop must be on a subnet the switch is on (an
    /// interface's address, or a connected route of the kernel).
    Add {
        /// Destination, address/prefix-length; host bits are cleared.
        prefix: IpNet,
        /// Gateway; several (repeated or comma-separated, up to 8) make an ECMP route.
        #[arg(long, required = true, value_delimiter = ',')]
        via: Vec<IpAddr>,
    },
    /// Delete a config route (xnosd removes it from the kernel).
    Del { prefix: IpNet },
}

#[derive(Subcommand)]
pub enum PortAction {
    /// Make an interface a switch port, or change one (a VLAN it names that the vlan table
    /// lacks is added to it). Only what the options name changes: the rest of an existing
    /// port stays as it is.
    Set(PortSet),
    /// Remove a port from the switch (its XDP or TC program is detached).
    Del { name: String },
}

#[derive(Subcommand)]
pub enum FdbAction {
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
    /// Forget learned entries (static ones stay): all, or those of a VLAN and/or a port.
    /// Waits until the datapath has removed them and says how many went; the stations
    /// are learned again from their next frame.
    ///
    /// Examples:
    ///   xnos fdb clear
    ///   xnos fdb clear --port swp1
    ///   xnos fdb clear --vlan 10 --port swp3
    #[command(verbatim_doc_comment)]
    Clear {
        /// Only entries of this VLAN.
        #[arg(long)]
        vlan: Option<u16>,
        /// Only entries learned on this port.
        #[arg(long)]
        port: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum InterfaceAction {
    /// Add an L3 interface, or change one. Only what the options name changes. A new one
    /// needs --vlan (an SVI, named vlan<ID>) or --port (a routed port, named like the port).
    Set(InterfaceSet),
    /// Remove an L3 interface (an SVI's netdevs go; a routed port loses its addresses).
    Del { name: String },
}

#[derive(Subcommand)]
pub enum ConfigAction {
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
pub enum DbAction {
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

#[cfg(test)]
mod tests {
    use xnos::cli::{AddressList, parse_address_list};

    use super::*;

    #[test]
    fn flags_that_do_nothing_alone_are_refused() {
        let refused = Cli::try_parse_from(["xnos", "show", "counters", "--count", "3"]);
        let error = refused.err().expect("--count without --watch").to_string();
        assert!(error.contains("--watch"), "{error}");
        assert!(
            Cli::try_parse_from(["xnos", "show", "counters", "--watch", "--count", "3"]).is_ok()
        );
    }

    #[test]
    fn interface_addresses_parse_as_a_list_in_order() {
        let cli = Cli::try_parse_from([
            "xnos",
            "interface",
            "set",
            "vlan10",
            "--vlan",
            "10",
            "--addresses",
            "fd00::1/64,10.0.10.1/24",
        ])
        .unwrap();
        let Command::Interface {
            action: InterfaceAction::Set(set),
        } = cli.command
        else {
            panic!("not interface set");
        };
        assert_eq!(
            set.addresses,
            Some(AddressList(vec![
                "fd00::1/64".parse().unwrap(),
                "10.0.10.1/24".parse().unwrap()
            ]))
        );
        assert!(
            parse_address_list("10.0.10.1")
                .unwrap_err()
                .contains("\"10.0.10.1\" is not an address with a prefix length")
        );
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
