//! Text shared by the verbs: aligned tables and committed changes.

use xnos::statedb::{Change, ChangeOp, Commit};

/// Left-aligned columns separated by two spaces.
pub fn table(rows: &[Vec<String>]) -> String {
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
pub fn render_changes(changes: &[Change]) -> String {
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
    use serde_json::json;
    use xnos::statedb::Table;

    use super::*;

    #[test]
    fn table_aligns_columns_and_trims_line_ends() {
        let rows = [["PORT", "MODE", "VLAN"], ["swp10", "access", ""]]
            .map(|r| r.map(String::from).to_vec());
        assert_eq!(table(&rows), "PORT   MODE    VLAN\nswp10  access\n");
    }

    #[test]
    fn commits_show_one_line_per_change() {
        let commit = Commit {
            generation: 7,
            changes: vec![
                Change {
                    table: Table::Vlan,
                    key: "30".into(),
                    op: ChangeOp::Insert,
                    row: Some(json!({"id": 30})),
                    old: None,
                },
                Change {
                    table: Table::Port,
                    key: "swp1".into(),
                    op: ChangeOp::Update,
                    row: Some(json!({"vlan": 30})),
                    old: Some(json!({"vlan": 10})),
                },
                Change {
                    table: Table::FdbStatic,
                    key: "10/02:00:00:00:00:10".into(),
                    op: ChangeOp::Delete,
                    row: None,
                    old: None,
                },
            ],
        };
        assert_eq!(
            render_commit(&commit),
            "committed generation 7:\n\
             + vlan 30  {\"id\":30}\n\
             ~ port swp1  {\"vlan\":10} -> {\"vlan\":30}\n\
             - fdb-static 10/02:00:00:00:00:10\n"
        );
        let empty = Commit {
            generation: 7,
            changes: vec![],
        };
        assert_eq!(render_commit(&empty), "no changes\n");
    }
}
