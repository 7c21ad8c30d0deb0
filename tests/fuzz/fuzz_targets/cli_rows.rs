//! The CLI's row building: `xnos port set`, `interface set` and `route add` command lines
//! from known options and values (and arbitrary ones), parsed by the CLI's own clap
//! types, turned into rows by the CLI's own functions and sent as the CLI sends them.
//! A refusal names what is wrong; a committed row is the row the CLI built.

#![no_main]

use std::net::IpAddr;

use arbitrary::{Arbitrary, Unstructured};
use clap::Parser;
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use xnos::{
    cli::{InterfaceSet, PortSet, route_row, set_interface, set_port},
    statedb::{Op, Table},
};
use xnos_fuzz::{base_db, check_transact};

/// The three verbs, with the arguments `xnos` gives them (route add's are the bin's
/// own `RouteAction::Add`, repeated here).
#[derive(Parser)]
#[command(name = "xnos")]
enum Verb {
    PortSet(PortSet),
    InterfaceSet(InterfaceSet),
    RouteAdd {
        prefix: IpNet,
        #[arg(long, required = true, value_delimiter = ',')]
        via: Vec<IpAddr>,
    },
}

const VERBS: &[&str] = &["port-set", "interface-set", "route-add"];

/// Options of every verb, with whether they take a value.
const OPTIONS: &[(&str, bool)] = &[
    ("--access", true),
    ("--trunk", true),
    ("--native", true),
    ("--no-native", false),
    ("--datapath", true),
    ("--mtu", true),
    ("--no-mtu", false),
    ("--vlan", true),
    ("--port", true),
    ("--addresses", true),
    ("--add-address", true),
    ("--del-address", true),
    ("--via", true),
];

const WORDS: &[&str] = &[
    "swp1",
    "swp4",
    "swp5",
    "swp9",
    "vlan10",
    "vlan20",
    "vlan10i",
    "lo",
    "gone0",
    "10",
    "20",
    "30",
    "0",
    "4095",
    "65535",
    "68",
    "9000",
    "10,20",
    "30-39",
    "10-5",
    "1-4094",
    "auto",
    "xdp-generic",
    "tc",
    "switchdev",
    "10.0.10.1/24",
    "10.0.10.9/24",
    "fd00:10::1/64",
    "10.0.99.5/30",
    "10.0.10.1/24,10.0.20.1/24",
    "10.99.0.0/16",
    "10.99.1.1/16",
    "10.0.99.2",
    "10.0.10.7",
    "10.0.99.2,10.0.10.7",
    "fd00:10::2",
    "",
];

fn word(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    Ok(if u.ratio(7, 8)? {
        u.choose(WORDS)?.to_string()
    } else {
        String::arbitrary(u)?
    })
}

#[derive(Debug)]
struct CommandLine(Vec<String>);

impl<'a> Arbitrary<'a> for CommandLine {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut argv = vec!["xnos".to_string(), u.choose(VERBS)?.to_string(), word(u)?];
        for _ in 0..u.int_in_range(0..=5)? {
            let (option, takes_value) = *u.choose(OPTIONS)?;
            argv.push(option.to_string());
            if takes_value {
                argv.push(word(u)?);
            }
        }
        Ok(CommandLine(argv))
    }
}

fuzz_target!(|line: CommandLine| {
    let verb = match Verb::try_parse_from(&line.0) {
        Ok(verb) => verb,
        Err(e) => {
            assert!(
                !e.to_string().trim().is_empty(),
                "clap refused {line:?} without a word"
            );
            return;
        }
    };
    let db = base_db();
    let (table, key, row) = match verb {
        Verb::PortSet(set) => {
            let name = set.name.clone();
            let current = db.read(|s| s.config.ports.get(&name).cloned());
            match set_port(current, set) {
                Ok(row) => (Table::Port, name, serde_json::to_value(row).unwrap()),
                Err(e) => return assert!(e.contains(&name), "{e:?} does not name {name}"),
            }
        }
        Verb::InterfaceSet(set) => {
            let name = set.name.clone();
            let current = db.read(|s| s.config.interfaces.get(&name).cloned());
            match set_interface(current, set) {
                Ok(row) => (Table::Interface, name, serde_json::to_value(row).unwrap()),
                Err(e) => return assert!(e.contains(&name), "{e:?} does not name {name}"),
            }
        }
        Verb::RouteAdd { prefix, via } => {
            let row = route_row(prefix, via);
            (
                Table::Route,
                row.prefix.to_string(),
                serde_json::to_value(row).unwrap(),
            )
        }
    };
    let exists = db.rows(table).iter().any(|(k, _)| *k == key);
    let op = if exists {
        Op::Update {
            table,
            row: row.clone(),
        }
    } else {
        Op::Insert {
            table,
            row: row.clone(),
        }
    };
    if check_transact(&db, &[op]).is_ok() {
        let committed = db.rows(table).into_iter().find(|(k, _)| *k == key);
        assert_eq!(
            committed.map(|(_, r)| r),
            Some(row),
            "what {line:?} committed"
        );
    }
});
