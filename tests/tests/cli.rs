//! End-to-end tests of the CLI's output conventions through the real `xnos` binary:
//! iproute2-style abbreviations, `--json` keyed by the table's headers, and changes
//! printed in the config file's words.

use std::process::Command;

use xnos_tests::{Config, Daemon, Topology, binary, find_by, require_root};

/// swp1 in VLAN 10, swp2 a trunk of it.
fn config() -> Config {
    Config::new()
        .vlan(10)
        .access("swp1", 10)
        .trunk("swp2", &[10])
}

/// `xnos ARGS` against a socket no daemon listens on: (success, stderr).
fn without_daemon(args: &[&str]) -> (bool, String) {
    let output = Command::new(binary("xnos").unwrap())
        .args(["--socket", "/nonexistent/xnos.sock"])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

// What this shows: unambiguous prefixes of verbs and tables are accepted (they get as
// far as connecting), ambiguous ones fail listing the candidates, before any connection.
#[test]
fn abbreviations_are_accepted_unless_ambiguous() {
    for args in [
        &["sh", "po"][..],
        &["show", "int"],
        &["show", "neigh"],
        &["show", "neighbours"],
        &["show", "route"],
        &["show", "c", "--interval", "0.1"],
    ] {
        let (ok, stderr) = without_daemon(args);
        assert!(
            !ok && stderr.contains("/nonexistent/xnos.sock"),
            "xnos {args:?} should parse and then fail to connect: {stderr}"
        );
    }
    let (ok, stderr) = without_daemon(&["config", "s"]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("'show'") && stderr.contains("'save'"),
        "an ambiguous prefix names the candidates: {stderr}"
    );
    assert!(!stderr.contains("/nonexistent"), "{stderr}");
    // A flag that does nothing with another is refused, not ignored.
    let (ok, stderr) = without_daemon(&["show", "ports", "--json", "--wide"]);
    assert!(!ok && stderr.contains("cannot be used with"), "{stderr}");
}

// What this shows: with a real xnosd, an abbreviated show prints the same as the full
// one; its JSON rows are keyed by the table's headers; a change prints config lines.
#[test]
fn show_json_has_the_table_keys_and_changes_use_config_words() {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2"]).unwrap();
    let daemon = Daemon::start(&topo.switch, &config()).unwrap();

    let full = daemon.xnos(&["show", "ports", "--json"]).unwrap();
    let short = daemon.xnos(&["sh", "po", "--json"]).unwrap();
    let ports: serde_json::Value = serde_json::from_str(&short).unwrap();
    let (full, short): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&full).unwrap(),
        serde_json::from_str(&short).unwrap(),
    );
    // Counters may move between the two calls; the rest is the same.
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].to_string())
            .collect()
    };
    assert_eq!(names(&full), names(&short));

    let swp2 = find_by(&ports, "port", "swp2");
    assert_eq!(swp2["mode"], "trunk", "{swp2}");
    assert_eq!(swp2["tagged"], serde_json::json!([10]), "{swp2}");
    assert!(swp2["rx-packets"].is_u64(), "{swp2}");
    assert!(swp2["untagged"].is_null(), "{swp2}");
    let table = daemon.xnos(&["show", "ports", "--wide"]).unwrap();
    let headers: Vec<String> = table
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .map(str::to_lowercase)
        .collect();
    let mut keys: Vec<&String> = swp2.as_object().unwrap().keys().collect();
    let mut sorted: Vec<&String> = headers.iter().collect();
    keys.sort();
    sorted.sort();
    assert_eq!(keys, sorted, "{table}");

    let commit = daemon.xnos(&["vlan", "add", "20"]).unwrap();
    assert!(commit.contains("+ [[vlan]] id = 20"), "{commit}");
    let commit = daemon
        .xnos(&["port", "set", "swp2", "--trunk", "20", "--native", "10"])
        .unwrap();
    assert!(commit.contains("~ [[port]] name = \"swp2\": "), "{commit}");
    assert!(commit.contains("native-vlan = (none) -> 10"), "{commit}");
    assert!(commit.contains("vlans = [10] -> [20]"), "{commit}");
    assert!(!commit.contains('{') && !commit.contains('_'), "{commit}");
}
