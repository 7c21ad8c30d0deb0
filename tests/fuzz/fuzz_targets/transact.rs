//! API transactions built from the words a config uses (structure-aware): every table,
//! known fields and keys, values near the limits, mixed with arbitrary ones. Applied to a
//! switch holding the example config, under `check_transact`'s rules.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use xnos::statedb::{Op, Table};
use xnos_fuzz::{base_db, check_transact};

const FIELDS: &[&str] = &[
    "name",
    "id",
    "mode",
    "vlan",
    "vlans",
    "native-vlan",
    "datapath",
    "mtu",
    "mac",
    "port",
    "fdb-aging",
    "router-mac",
    "addresses",
    "prefix",
    "nexthops",
];

const WORDS: &[&str] = &[
    "swp1",
    "swp2",
    "swp4",
    "swp5",
    "swp9",
    "vlan10",
    "vlan10i",
    "vlan30",
    "lo",
    "gone0",
    "access",
    "trunk",
    "auto",
    "xdp-generic",
    "tc",
    "switchdev",
    "servers",
    "storage",
    "",
    "02:00:00:00:00:02",
    "01:00:5e:00:00:01",
    "00:00:00:00:00:00",
    "10.0.10.1/24",
    "10.0.99.1/30",
    "fd00:10::1/64",
    "10.99.0.0/16",
    "0.0.0.0/0",
    "10.0.99.2",
    "10.0.10.7",
    "fd00:10::2",
    "10/02:00:00:00:00:02",
    "10",
    "20",
    "100-130",
];

const NUMBERS: &[i64] = &[
    0, 1, 10, 20, 30, 40, 4094, 4095, 68, 9000, 65535, 65536, -1, 300,
];

#[derive(Debug)]
struct Ops(Vec<Op>);

fn word(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    Ok(if u.ratio(7, 8)? {
        u.choose(WORDS)?.to_string()
    } else {
        String::arbitrary(u)?
    })
}

fn value(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<Value> {
    Ok(match u.int_in_range(0..=6)? {
        0 => Value::Null,
        1 => Value::Bool(bool::arbitrary(u)?),
        2 => Value::from(*u.choose(NUMBERS)?),
        3 => Value::from(i64::arbitrary(u)?),
        4 if depth < 2 => Value::Array(
            (0..u.int_in_range(0..=4)?)
                .map(|_| value(u, depth + 1))
                .collect::<arbitrary::Result<_>>()?,
        ),
        _ => Value::String(word(u)?),
    })
}

fn row(u: &mut Unstructured<'_>) -> arbitrary::Result<Value> {
    let mut map = Map::new();
    for _ in 0..u.int_in_range(0..=6)? {
        let field = if u.ratio(15, 16)? {
            u.choose(FIELDS)?.to_string()
        } else {
            String::arbitrary(u)?
        };
        map.insert(field, value(u, 0)?);
    }
    Ok(Value::Object(map))
}

impl<'a> Arbitrary<'a> for Ops {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut ops = Vec::new();
        for _ in 0..u.int_in_range(1..=4)? {
            // Mostly the config tables; now and then a state table, which no
            // transaction may write.
            let table = if u.ratio(7, 8)? {
                *u.choose(&Table::ALL[..6])?
            } else {
                *u.choose(&Table::ALL)?
            };
            ops.push(match u.int_in_range(0..=2)? {
                0 => Op::Insert {
                    table,
                    row: row(u)?,
                },
                1 => Op::Update {
                    table,
                    row: row(u)?,
                },
                _ => Op::Delete {
                    table,
                    key: word(u)?,
                },
            });
        }
        Ok(Ops(ops))
    }
}

fuzz_target!(|ops: Ops| {
    let _ = check_transact(&base_db(), &ops.0);
});
