//! `xnos trace`: the real datapath program run on a described packet against the live
//! tables; one test per verdict kind, and proof that tracing changes no state.

use xnos_tests::{Config, Daemon, Topology, format_mac, require_root};

/// swp1 in VLAN 10, swp2 in VLAN 20, swp3 a trunk of both, an SVI in each.
fn config() -> Config {
    Config::new()
        .switch("router-mac", "02:00:00:00:01:00")
        .access("swp1", 10)
        .access("swp2", 20)
        .trunk("swp3", &[10, 20])
        .svi(10, &["10.0.10.1/24"])
        .svi(20, &["10.0.20.1/24"])
}

fn trace(daemon: &Daemon, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["trace", "--json"];
    full.extend_from_slice(args);
    serde_json::from_str(&daemon.xnos(&full).unwrap()).unwrap()
}

fn setup() -> (Topology, Daemon) {
    let topo = Topology::new(&["swp1", "swp2", "swp3"]).unwrap();
    let daemon = Daemon::start(&topo.switch, &config()).unwrap();
    let (h1, h2) = (&topo.hosts[0], &topo.hosts[1]);
    h1.add_address_via("10.0.10.2/24", "10.0.10.1").unwrap();
    h2.add_address_via("10.0.20.2/24", "10.0.20.1").unwrap();
    // Resolve both hosts in the kernel and teach the FDB where they are.
    assert!(
        h1.ping("10.0.20.2", 2),
        "no routed path to set up the trace tests"
    );
    (topo, daemon)
}

// What this shows: every verdict kind is explained, with the table entry that decided it.
#[test]
fn trace_explains_every_verdict() {
    require_root!();
    let (topo, daemon) = setup();
    let (h1, h2) = (&topo.hosts[0], &topo.hosts[1]);

    let t = trace(
        &daemon,
        &[
            "--port",
            "swp1",
            "--dst-ip",
            "10.0.20.2",
            "--src-ip",
            "10.0.10.2",
            "--proto",
            "tcp",
            "--dport",
            "443",
        ],
    );
    assert_eq!(
        (t["verdict"].as_str(), t["action"].as_str()),
        (Some("route"), Some("redirect")),
        "{t}"
    );
    assert_eq!(
        (t["egress"].as_str(), t["egress-tagging"].as_str()),
        (Some("swp2"), Some("untagged"))
    );
    assert!(
        t["route"].as_str().unwrap().starts_with("10.0.20.0/24"),
        "{t}"
    );
    assert_eq!(t["neighbor"], format_mac(h2.mac));
    let rewrites: Vec<&str> = t["rewrites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(rewrites.contains(&"TTL 64 -> 63"), "{rewrites:?}");
    assert!(
        rewrites
            .iter()
            .any(|r| r.starts_with("src MAC") && r.ends_with("02:00:00:00:01:00")),
        "{rewrites:?}"
    );

    let t = trace(
        &daemon,
        &["--port", "swp1", "--dst-ip", "10.0.20.2", "--ttl", "1"],
    );
    assert_eq!(
        (t["verdict"].as_str(), t["punt-reason"].as_str()),
        (Some("punt"), Some("ttl-expired")),
        "{t}"
    );
    assert_eq!(t["egress"], "vlan10i");

    let t = trace(
        &daemon,
        &[
            "--port",
            "swp3",
            "--vlan",
            "20",
            "--dst-mac",
            &format_mac(h2.mac),
        ],
    );
    assert_eq!(
        (t["verdict"].as_str(), t["egress"].as_str()),
        (Some("forward"), Some("swp2")),
        "{t}"
    );
    assert!(t["fdb-entry"].as_str().unwrap().contains("on swp2"), "{t}");
    assert!(
        t["rewrites"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "VLAN tag 20 popped"),
        "{t}"
    );

    let t = trace(
        &daemon,
        &["--port", "swp1", "--dst-mac", "ff:ff:ff:ff:ff:ff"],
    );
    assert_eq!(t["verdict"], "flood", "{t}");
    let flood: Vec<(String, String)> = t["flood"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["port"].as_str().unwrap().into(),
                p["tagging"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        flood,
        [
            ("swp3".into(), "tagged".into()),
            ("vlan10i".into(), "untagged".into())
        ]
    );

    let t = trace(
        &daemon,
        &[
            "--port",
            "swp1",
            "--vlan",
            "10",
            "--dst-mac",
            &format_mac(h2.mac),
        ],
    );
    assert_eq!(
        (t["verdict"].as_str(), t["drop-reason"].as_str()),
        (Some("drop"), Some("tagged-on-access")),
        "{t}"
    );
    let t = trace(
        &daemon,
        &[
            "--port",
            "swp3",
            "--vlan",
            "30",
            "--dst-mac",
            "ff:ff:ff:ff:ff:ff",
        ],
    );
    assert_eq!(t["drop-reason"], "vlan-not-allowed", "{t}");

    let t = trace(
        &daemon,
        &["--port", "swp1", "--dst-mac", "01:80:c2:00:00:0e"],
    );
    assert_eq!(
        (t["verdict"].as_str(), t["action"].as_str()),
        (Some("to-kernel"), Some("pass")),
        "{t}"
    );

    let table = daemon
        .xnos(&["trace", "--port", "swp1", "--dst-ip", "10.0.20.2"])
        .unwrap();
    assert!(
        table.contains("verdict   route: out of swp2 untagged"),
        "{table}"
    );
    let err = daemon
        .xnos(&["trace", "--port", "swp9", "--dst-mac", "ff:ff:ff:ff:ff:ff"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"swp9\" is not an attached port"), "{err}");
    let _ = h1;
}

/// What the traces below could change: swp1's receive-side counters (nothing else sends
/// into swp1: its host is quiet), the FDB, and the L3 counters.
fn state(daemon: &Daemon) -> (serde_json::Value, serde_json::Value, serde_json::Value) {
    let ports = daemon.json("ports").unwrap();
    let swp1 = ports
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "swp1")
        .unwrap()["counters"]
        .clone();
    let rx = serde_json::json!([
        swp1["rx-packets"],
        swp1["rx-bytes"],
        swp1["flooded"],
        swp1["to-kernel"],
        swp1["learned"],
        swp1["drops"]
    ]);
    (
        rx,
        daemon.json("fdb").unwrap(),
        daemon.json("routes").unwrap()["counters"].clone(),
    )
}

// What this shows: tracing neither learns MACs nor moves any counter.
#[test]
fn tracing_changes_no_state() {
    require_root!();
    let (_topo, daemon) = setup();
    let before = state(&daemon);
    for _ in 0..5 {
        trace(
            &daemon,
            &[
                "--port",
                "swp1",
                "--src-mac",
                "02:00:00:00:99:99",
                "--dst-ip",
                "10.0.20.2",
            ],
        );
        trace(
            &daemon,
            &[
                "--port",
                "swp1",
                "--src-mac",
                "02:00:00:00:99:98",
                "--dst-mac",
                "ff:ff:ff:ff:ff:ff",
            ],
        );
        trace(
            &daemon,
            &["--port", "swp1", "--dst-ip", "10.0.20.2", "--ttl", "1"],
        );
        trace(
            &daemon,
            &[
                "--port",
                "swp1",
                "--vlan",
                "7",
                "--dst-mac",
                "ff:ff:ff:ff:ff:ff",
            ],
        );
    }
    let after = state(&daemon);
    assert_eq!(before, after, "tracing changed counters or the FDB");
}
