//! Text shared by the verbs: tables and their JSON from one column definition, and
//! committed changes as config lines.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use xnos::statedb::{Change, Commit, vlan_ranges};

/// The width default tables fit in (`--wide` lifts it).
pub const WIDTH: usize = 80;

/// What elided text ends with.
const ELLIPSIS: char = '…';

/// One cell: typed for JSON, formatted for the table.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Text(String),
    /// A quantity: right-aligned.
    Count(u64),
    /// A number that names something (a VLAN, an ifindex): left-aligned like text.
    Id(u64),
    /// A rate per second: `pps` or `bps` with an SI prefix in the table, the plain number
    /// per second in JSON.
    Rate(f64, RateUnit),
    /// VLAN IDs: ranges in the table (`10,20,100-130`), an array of numbers in JSON.
    Vlans(Vec<u16>),
    List(Vec<String>),
    /// An IP prefix: elided in the middle, so the prefix length stays (`2001:db8:…/112`).
    Prefix(String),
    /// Counts by name: the non-zero ones in the table (`a=1 b=2`), all in JSON.
    Counts(BTreeMap<String, u64>),
    Bool(bool),
    /// Nothing there: `-` in the table, null in JSON.
    Absent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateUnit {
    Pps,
    Bps,
}

impl Cell {
    pub fn text(text: impl ToString) -> Cell {
        Cell::Text(text.to_string())
    }

    /// `text` when there is one, `-`/null when not.
    pub fn maybe<T: ToString>(value: Option<T>) -> Cell {
        value.map_or(Cell::Absent, |v| Cell::Text(v.to_string()))
    }

    /// An ID when there is one, `-`/null when not.
    pub fn id(value: Option<impl Into<u64>>) -> Cell {
        value.map_or(Cell::Absent, |v| Cell::Id(v.into()))
    }

    pub fn list<T: ToString>(items: &[T]) -> Cell {
        Cell::List(items.iter().map(ToString::to_string).collect())
    }

    pub fn json(&self) -> Value {
        match self {
            Cell::Text(s) | Cell::Prefix(s) => json!(s),
            Cell::Count(n) | Cell::Id(n) => json!(n),
            // Two decimals are finer than any counter's resolution over a sample.
            Cell::Rate(r, _) => json!((r * 100.0).round() / 100.0),
            Cell::Vlans(v) => json!(v),
            Cell::List(l) => json!(l),
            Cell::Counts(c) => json!(c),
            Cell::Bool(b) => json!(b),
            Cell::Absent => Value::Null,
        }
    }

    /// The cell as `--wide` shows it.
    pub fn show(&self) -> String {
        self.show_in(true)
    }

    /// The cell as a default table (`wide` false) or `--wide` shows it.
    fn show_in(&self, wide: bool) -> String {
        let or_dash = |s: String| if s.is_empty() { "-".into() } else { s };
        match self {
            Cell::Text(s) | Cell::Prefix(s) => or_dash(s.clone()),
            Cell::Count(n) => count(*n, wide),
            Cell::Id(n) => n.to_string(),
            Cell::Rate(r, unit) => rate(*r, *unit),
            Cell::Vlans(v) => or_dash(vlan_ranges(v)),
            Cell::List(l) => or_dash(l.join(",")),
            Cell::Counts(c) => or_dash(
                c.iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(k, n)| format!("{k}={n}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            Cell::Bool(b) => if *b { "yes" } else { "no" }.into(),
            Cell::Absent => "-".into(),
        }
    }

    fn is_number(&self) -> bool {
        matches!(self, Cell::Count(_) | Cell::Rate(..))
    }

    /// Where an elided cell is best cut: after a list item rather than inside one.
    fn separator(&self) -> Option<char> {
        match self {
            Cell::Vlans(_) | Cell::List(_) => Some(','),
            Cell::Counts(_) => Some(' '),
            _ => None,
        }
    }
}

/// A rate in one style for every table: an integer below 1000, else three significant
/// digits with an SI prefix (`950pps`, `1.20kpps`, `12.0kpps`, `2.27Mbps`).
pub fn rate(value: f64, unit: RateUnit) -> String {
    let unit = match unit {
        RateUnit::Pps => "pps",
        RateUnit::Bps => "bps",
    };
    format!("{}{unit}", si(value))
}

/// Counts above this are abbreviated in default tables (`123M`), to keep them narrow.
const EXACT_BELOW: u64 = 1_000_000;

/// A count: exact, or in a default table above [`EXACT_BELOW`] three significant digits
/// with an SI prefix (`12.3M`, `1.23G`).
fn count(n: u64, wide: bool) -> String {
    if wide || n < EXACT_BELOW {
        n.to_string()
    } else {
        si(n as f64)
    }
}

/// An integer below 1000, else three significant digits with an SI prefix.
fn si(value: f64) -> String {
    let mut scaled = value.max(0.0);
    let mut prefix = "";
    for next in ["k", "M", "G", "T", "P", "E"] {
        // Rounded as printed, so 999.7 becomes 1.00k rather than "1000".
        if scaled.round() < 1000.0 {
            break;
        }
        scaled /= 1000.0;
        prefix = next;
    }
    match (prefix, scaled) {
        ("", v) => format!("{v:.0}"),
        (p, v) if v < 9.995 => format!("{v:.2}{p}"),
        (p, v) if v < 99.95 => format!("{v:.1}{p}"),
        (p, v) => format!("{v:.0}{p}"),
    }
}

/// One column of a table: its header (the JSON key is the header in lower case), whether
/// the default table shows it or only `--wide` does, and how narrow it may be elided.
pub struct Column<T> {
    pub header: &'static str,
    pub wide_only: bool,
    /// The narrowest the column is elided to when the table is wider than [`WIDTH`];
    /// None: never elided.
    pub elide_to: Option<usize>,
    /// The least width, so cells that vary (rates) keep the column still.
    pub min_width: usize,
    pub cell: fn(&T) -> Cell,
}

impl<T> Column<T> {
    pub fn new(header: &'static str, cell: fn(&T) -> Cell) -> Self {
        Self {
            header,
            wide_only: false,
            elide_to: None,
            min_width: 0,
            cell,
        }
    }

    pub fn min_width(mut self, width: usize) -> Self {
        self.min_width = width;
        self
    }

    /// Shown only with `--wide` (and always in JSON).
    pub fn wide(mut self) -> Self {
        self.wide_only = true;
        self
    }

    pub fn elide(mut self, to: usize) -> Self {
        self.elide_to = Some(to);
        self
    }

    pub fn key(&self) -> String {
        self.header.to_lowercase()
    }
}

/// One row as `--json` prints it: every column's key and value, in the table's order.
pub struct JsonRow(Vec<(String, Value)>);

impl serde::Serialize for JsonRow {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// The rows as `--json` prints them: one object per row, keyed by every column.
pub fn json_rows<T>(columns: &[Column<T>], rows: &[T]) -> Vec<JsonRow> {
    rows.iter()
        .map(|row| {
            JsonRow(
                columns
                    .iter()
                    .map(|c| (c.key(), (c.cell)(row).json()))
                    .collect(),
            )
        })
        .collect()
}

/// Column widths that only grow, so a table redrawn in place (`--watch`) keeps its
/// columns still.
#[derive(Default)]
pub struct Widths(Vec<usize>);

/// The rows as a table: the default columns fitted to [`WIDTH`] by eliding the elidable
/// ones, or with `wide` every column in full. Numbers are right-aligned.
pub fn table<T>(columns: &[Column<T>], rows: &[T], wide: bool) -> String {
    table_in(columns, rows, wide, &mut Widths::default())
}

pub fn table_in<T>(columns: &[Column<T>], rows: &[T], wide: bool, kept: &mut Widths) -> String {
    let columns: Vec<&Column<T>> = columns.iter().filter(|c| wide || !c.wide_only).collect();
    let cells: Vec<Vec<Cell>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| (c.cell)(r)).collect())
        .collect();
    let text: Vec<Vec<String>> = cells
        .iter()
        .map(|r| r.iter().map(|c| c.show_in(wide)).collect())
        .collect();
    let right: Vec<bool> = (0..columns.len())
        .map(|i| cells.iter().any(|r| r[i].is_number()))
        .collect();
    kept.0.resize(columns.len(), 0);
    let mut widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let widest = text.iter().map(|r| r[i].chars().count()).max();
            kept.0[i] = kept.0[i]
                .max(c.header.len())
                .max(c.min_width)
                .max(widest.unwrap_or(0));
            kept.0[i]
        })
        .collect();
    if !wide {
        fit(&columns, &mut widths);
    }
    let mut out = String::new();
    let headers: Vec<String> = columns.iter().map(|c| c.header.to_string()).collect();
    for (row, cells) in
        std::iter::once((&headers, None)).chain(text.iter().zip(&cells).map(|(t, c)| (t, Some(c))))
    {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let shown = match cells.map(|c| &c[i]) {
                    Some(Cell::Prefix(_)) => elide_keeping_length(s, widths[i]),
                    cell => elide(s, widths[i], cell.and_then(Cell::separator)),
                };
                let pad = widths[i].saturating_sub(shown.chars().count());
                if right[i] {
                    format!("{}{shown}", " ".repeat(pad))
                } else {
                    format!("{shown}{}", " ".repeat(pad))
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Narrows the widest elidable column, one character at a time, until the table fits.
fn fit<T>(columns: &[&Column<T>], widths: &mut [usize]) {
    let total = |w: &[usize]| w.iter().sum::<usize>() + 2 * w.len().saturating_sub(1);
    while total(widths) > WIDTH {
        let narrowest = |i: usize| {
            columns[i]
                .elide_to
                .map(|to| to.max(columns[i].header.len()))
        };
        let Some(i) = (0..columns.len())
            .filter(|&i| narrowest(i).is_some_and(|n| widths[i] > n))
            .max_by_key(|&i| widths[i])
        else {
            return;
        };
        widths[i] -= 1;
    }
}

/// `text` cut to `width` characters ending in `…`, after the last whole item when it is
/// a list.
fn elide(text: &str, width: usize, separator: Option<char>) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let kept: String = text.chars().take(width.saturating_sub(1)).collect();
    let kept = match separator.and_then(|s| kept.rfind(s)) {
        Some(at) if at > 0 => &kept[..=at],
        _ => &kept,
    };
    format!("{kept}{ELLIPSIS}")
}

/// A prefix cut to `width` characters in its address, keeping `/length`.
fn elide_keeping_length(text: &str, width: usize) -> String {
    let Some((address, length)) = text.rsplit_once('/') else {
        return elide(text, width, None);
    };
    let keep = width.saturating_sub(length.chars().count() + 1);
    if text.chars().count() <= width || keep < 2 {
        return elide(text, width, None);
    }
    format!("{}/{length}", elide(address, keep, None))
}

/// A line about `subject` below a table, wrapped at [`WIDTH`] with an indented rest.
pub fn note(subject: &str, text: &str) -> String {
    let mut out = String::new();
    let mut line = format!("{subject}:");
    for word in text.split(' ') {
        if line.chars().count() + 1 + word.chars().count() > WIDTH && line.trim().contains(' ') {
            out.push_str(&line);
            out.push('\n');
            line = "   ".into();
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// One line per change in the config file's words.
pub fn render_changes(changes: &[Change]) -> String {
    changes.iter().map(|c| c.config_line() + "\n").collect()
}

pub fn render_commit(commit: &Commit) -> String {
    if commit.changes.is_empty() {
        return "no changes\n".into();
    }
    format!(
        "committed generation {}:\n{}",
        commit.generation,
        render_changes(&commit.changes)
    )
}

#[cfg(test)]
mod tests {
    use xnos::statedb::{ChangeOp, Table};

    use super::*;

    struct Row {
        name: &'static str,
        vlans: Vec<u16>,
        packets: u64,
    }

    fn columns() -> Vec<Column<Row>> {
        vec![
            Column::new("PORT", |r: &Row| Cell::text(r.name)).elide(8),
            Column::new("TAGGED", |r: &Row| Cell::Vlans(r.vlans.clone())).elide(10),
            Column::new("RX-PACKETS", |r: &Row| Cell::Count(r.packets)),
            Column::new("NOTE", |_: &Row| Cell::Absent).wide(),
        ]
    }

    #[test]
    fn tables_align_numbers_right_and_trim_line_ends() {
        let rows = [
            Row {
                name: "swp10",
                vlans: vec![],
                packets: 5,
            },
            Row {
                name: "swp2",
                vlans: vec![10, 11, 20, 30, 31, 32],
                packets: 12345,
            },
        ];
        assert_eq!(
            table(&columns(), &rows, false),
            "PORT   TAGGED          RX-PACKETS\n\
             swp10  -                        5\n\
             swp2   10,11,20,30-32       12345\n"
        );
        // In the table's order, not sorted.
        assert_eq!(
            serde_json::to_string(&json_rows(&columns(), &rows[..1])).unwrap(),
            r#"[{"port":"swp10","tagged":[],"rx-packets":5,"note":null}]"#
        );
    }

    #[test]
    fn default_tables_fit_80_columns_and_wide_ones_keep_everything() {
        let rows = [Row {
            name: "a-very-long-interface-name",
            vlans: (100..140).step_by(2).chain(200..300).collect(),
            packets: 1,
        }];
        let narrow = table(&columns(), &rows, false);
        assert!(
            narrow.lines().all(|l| l.chars().count() <= WIDTH),
            "{narrow}"
        );
        let line = narrow.lines().nth(1).unwrap();
        assert!(line.contains("100,102,") && line.contains(",…"), "{narrow}");
        let wide = table(&columns(), &rows, true);
        assert!(wide.contains("a-very-long-interface-name  "), "{wide}");
        assert!(wide.contains(",138,200-299  "), "{wide}");
        assert!(wide.starts_with("PORT") && wide.lines().next().unwrap().ends_with("NOTE"));
    }

    #[test]
    fn watched_tables_keep_their_columns_still() {
        let mut widths = Widths::default();
        let row = |packets| Row {
            name: "swp1",
            vlans: vec![],
            packets,
        };
        let first = table_in(&columns(), &[row(1_000_000_000_000)], false, &mut widths);
        let second = table_in(&columns(), &[row(7)], false, &mut widths);
        assert_eq!(first.lines().next(), second.lines().next());
        assert_eq!(
            first.lines().nth(1).unwrap().len(),
            second.lines().nth(1).unwrap().len()
        );
    }

    #[test]
    fn rates_in_one_style() {
        let pps = |v| rate(v, RateUnit::Pps);
        assert_eq!(pps(0.0), "0pps");
        assert_eq!(pps(999.4), "999pps");
        assert_eq!(pps(999.7), "1.00kpps");
        assert_eq!(pps(1200.0), "1.20kpps");
        assert_eq!(pps(12_340.0), "12.3kpps");
        assert_eq!(pps(123_400.0), "123kpps");
        assert_eq!(rate(2_270_000.0, RateUnit::Bps), "2.27Mbps");
        assert_eq!(rate(10e9, RateUnit::Bps), "10.0Gbps");
        assert_eq!(pps(999_960.0), "1.00Mpps");
        assert_eq!(pps(999_600.0), "1.00Mpps");
        assert_eq!(count(999_999, false), "999999");
        assert_eq!(count(1_234_567, false), "1.23M");
        assert_eq!(count(123_456_789, false), "123M");
        assert_eq!(count(123_456_789, true), "123456789");
    }

    #[test]
    fn vlan_lists_compress_to_ranges() {
        assert_eq!(
            vlan_ranges(&[10, 20, 100, 101, 102, 130]),
            "10,20,100-102,130"
        );
        assert_eq!(vlan_ranges(&[1, 2]), "1,2");
        assert_eq!(vlan_ranges(&[]), "");
    }

    #[test]
    fn notes_wrap_at_80_columns() {
        let text = "warning: native-XDP ports cannot send it frames (xdp-features: basic); \
                    on a veth, turn GRO on at its peer";
        let out = note("swp2", text);
        assert!(out.lines().all(|l| l.chars().count() <= WIDTH), "{out}");
        assert_eq!(out.lines().count(), 2, "{out}");
        assert_eq!(out.replace("\n   ", ""), format!("swp2: {text}\n"));
    }

    #[test]
    fn commits_show_one_config_line_per_change() {
        let change = |table,
                      key: &str,
                      op,
                      row: Option<serde_json::Value>,
                      old: Option<serde_json::Value>| Change {
            table,
            key: key.into(),
            op,
            row: row.map(Into::into),
            old: old.map(Into::into),
        };
        let commit = Commit {
            generation: 7,
            changes: vec![
                change(
                    Table::Vlan,
                    "30",
                    ChangeOp::Insert,
                    Some(json!({"id": 30, "name": "storage"})),
                    None,
                ),
                change(
                    Table::Port,
                    "swp2",
                    ChangeOp::Update,
                    Some(
                        json!({"name": "swp2", "mode": "trunk", "vlans": [10, 30, 31, 32], "native-vlan": 10}),
                    ),
                    Some(
                        json!({"name": "swp2", "mode": "trunk", "vlans": [10], "native-vlan": null}),
                    ),
                ),
                change(
                    Table::Switch,
                    "switch",
                    ChangeOp::Update,
                    Some(json!({"fdb-aging": 600, "router-mac": null})),
                    Some(json!({"fdb-aging": 300, "router-mac": null})),
                ),
                change(
                    Table::FdbStatic,
                    "10/02:00:00:00:00:10",
                    ChangeOp::Delete,
                    None,
                    Some(json!({"mac": "02:00:00:00:00:10", "vlan": 10, "port": "swp1"})),
                ),
            ],
        };
        assert_eq!(
            render_commit(&commit),
            "committed generation 7:\n\
             + [[vlan]] id = 30: name = \"storage\"\n\
             ~ [[port]] name = \"swp2\": native-vlan = (none) -> 10, vlans = [10] -> [10, \"30-32\"]\n\
             ~ [switch] fdb-aging = 300 -> 600\n\
             - [[fdb]] vlan = 10, mac = \"02:00:00:00:00:10\"\n"
        );
        let empty = Commit {
            generation: 7,
            changes: vec![],
        };
        assert_eq!(render_commit(&empty), "no changes\n");
    }
}
