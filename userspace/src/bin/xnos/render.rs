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
