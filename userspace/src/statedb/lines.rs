//! Changes in the config file's words, for the CLI and the log alike.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Change, ChangeOp, Row, Table};

/// VLAN IDs with runs of three or more as ranges: `10,20,100-130`.
pub fn vlan_ranges(vlans: &[u16]) -> String {
    let mut sorted = vlans.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        match j - i {
            0 => parts.push(sorted[i].to_string()),
            1 => parts.extend([sorted[i].to_string(), sorted[j].to_string()]),
            _ => parts.push(format!("{}-{}", sorted[i], sorted[j])),
        }
        i = j + 1;
    }
    parts.join(",")
}

/// A trunk's `vlans` as the config file takes them: runs as quoted ranges
/// (`[10, 20, "100-130"]`), so 40 VLANs stay one short line.
pub fn vlans_toml(vlans: &[u16]) -> String {
    let items: Vec<String> = vlan_ranges(vlans)
        .split(',')
        .filter(|item| !item.is_empty())
        .map(|item| {
            if item.contains('-') {
                format!("\"{item}\"")
            } else {
                item.to_string()
            }
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// The config file's name of a StateDb table, as a TOML header (`[[port]]`, `[switch]`).
fn config_table(table: Table) -> String {
    match table {
        Table::Switch => "[switch]".into(),
        Table::FdbStatic => "[[fdb]]".into(),
        other => format!("[[{}]]", other.name()),
    }
}

/// The fields that name a row of `table` in the config file.
fn key_fields(table: Table) -> &'static [&'static str] {
    match table {
        Table::Vlan => &["id"],
        Table::Port | Table::Interface => &["name"],
        Table::FdbStatic => &["vlan", "mac"],
        Table::Route => &["prefix"],
        _ => &[],
    }
}

/// A JSON value as TOML writes it.
fn toml_value(value: &Value) -> String {
    match value {
        Value::Null => "(none)".into(),
        // VLAN lists as ranges, as `--trunk` takes them: 40 VLANs stay one short line.
        Value::Array(items) => match items
            .iter()
            .map(|i| i.as_u64().and_then(|n| u16::try_from(n).ok()))
            .collect::<Option<Vec<u16>>>()
        {
            Some(vlans) if !vlans.is_empty() => vlans_toml(&vlans),
            _ => format!(
                "[{}]",
                items.iter().map(toml_value).collect::<Vec<_>>().join(", ")
            ),
        },
        other => other.to_string(),
    }
}

fn fields(row: &Option<Row>) -> BTreeMap<String, Value> {
    match row.as_ref().map(Row::to_value) {
        Some(Value::Object(map)) => map.into_iter().filter(|(_, v)| !v.is_null()).collect(),
        _ => BTreeMap::new(),
    }
}

impl Change {
    /// The change in the config file's words: the table and the fields that name the
    /// row, then what changed (`~ [[port]] name = "swp2": native-vlan = 1 -> 10`).
    pub fn config_line(&self) -> String {
        let c = self;
        let row = fields(if c.op == ChangeOp::Delete {
            &c.old
        } else {
            &c.row
        });
        let keys = key_fields(c.table);
        let mut name: Vec<String> = keys
            .iter()
            .filter_map(|k| row.get(*k).map(|v| format!("{k} = {}", toml_value(v))))
            .collect();
        if name.is_empty() && c.table != Table::Switch {
            name.push(c.key.clone());
        }
        let rest = |row: &BTreeMap<String, Value>| -> Vec<String> {
            row.iter()
                .filter(|(k, _)| !keys.contains(&k.as_str()))
                .map(|(k, v)| format!("{k} = {}", toml_value(v)))
                .collect()
        };
        let (sign, what) = match c.op {
            ChangeOp::Insert => ("+", rest(&row)),
            ChangeOp::Delete => ("-", Vec::new()),
            ChangeOp::Update => {
                let old = fields(&c.old);
                let names: std::collections::BTreeSet<&String> =
                    old.keys().chain(row.keys()).collect();
                let changed = names
                    .into_iter()
                    .filter(|k| old.get(*k) != row.get(*k))
                    .map(|k| {
                        let side = |r: &BTreeMap<String, Value>| {
                            r.get(k).map_or("(none)".into(), toml_value)
                        };
                        format!("{k} = {} -> {}", side(&old), side(&row))
                    })
                    .collect();
                ("~", changed)
            }
        };
        let mut line = format!("{sign} {}", config_table(c.table));
        if !name.is_empty() {
            line.push(' ');
            line.push_str(&name.join(", "));
        }
        if !what.is_empty() {
            line.push_str(if name.is_empty() { " " } else { ": " });
            line.push_str(&what.join(", "));
        }
        line
    }
}
