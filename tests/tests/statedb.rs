//! End-to-end tests of the central database: runtime changes through the CLI reach the
//! datapath, bad input changes nothing, config survives a restart through `config save`,
//! a crashing module is restarted without disturbing forwarding, and `db watch` streams
//! changes as they are committed.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use xnos_tests::{
    Config, Daemon, Host, Topology, binary, find_by, format_mac, require_root, test_frame,
};

/// VLAN 10 ("servers") and VLAN 20, declared.
fn vlans() -> Config {
    Config::new().vlan(10).set("name", "servers").vlan(20)
}

/// swp1 and swp3 in VLAN 10, swp2 in VLAN 20.
fn three_ports() -> Config {
    vlans()
        .access("swp1", 10)
        .access("swp2", 20)
        .access("swp3", 10)
}

fn addressed(topo: &Topology) {
    for (i, host) in topo.hosts.iter().enumerate() {
        host.add_address(&format!("10.0.0.{}/24", i + 1)).unwrap();
    }
}

/// A ping running in the background: `count` echo requests, 50 ms apart.
fn background_ping(host: &Host, ip: &str, count: u32) -> Child {
    host.ns
        .command("ping")
        .args(["-i", "0.05", "-W", "2", "-c", &count.to_string(), ip])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait for a background ping and return (transmitted, received).
fn ping_result(child: Child) -> (u32, u32, String) {
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary: {text}"));
    let numbers: Vec<u32> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    (numbers[0], numbers[1], text)
}

fn module<'a>(modules: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    &modules
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["key"] == name)
        .unwrap_or_else(|| panic!("no module {name}: {modules}"))["row"]
}

// What this shows: moving a port between VLANs with the CLI takes effect in the datapath
// at once, without restarting anything, and traffic on the other ports loses nothing.
#[test]
fn vlan_membership_changes_through_the_cli_while_traffic_flows() {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2", "swp3"]).unwrap();
    addressed(&topo);
    let daemon = Daemon::start(&topo.switch, &three_ports()).unwrap();
    let [h1, h2, _] = [0, 1, 2].map(|i| &topo.hosts[i]);
    assert!(h1.reachable("10.0.0.3"));
    assert!(!h1.ping("10.0.0.2", 1), "h2 reachable while in VLAN 20");

    let steady = background_ping(h1, "10.0.0.3", 60);
    let out = daemon
        .xnos(&["port", "set", "swp2", "--access", "10"])
        .unwrap();
    assert!(
        out.contains("~ [[port]] name = \"swp2\": vlan = 20 -> 10"),
        "{out}"
    );
    assert!(
        h1.reachable("10.0.0.2"),
        "h2 unreachable after joining VLAN 10"
    );

    daemon
        .xnos(&["vlan", "add", "30", "--name", "lab"])
        .unwrap();
    daemon.xnos(&["vlan", "add", "40"]).unwrap();
    // (A native VLAN that is also tagged is refused: a trunk carries a VLAN one way.)
    assert!(
        daemon
            .xnos(&["port", "set", "swp2", "--trunk", "30", "--native", "30"])
            .is_err()
    );
    daemon
        .xnos(&["port", "set", "swp2", "--trunk", "40", "--native", "30"])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while h1.ping("10.0.0.2", 1) {
        assert!(
            Instant::now() < deadline,
            "h2 still reachable after leaving VLAN 10"
        );
    }
    let vlans = daemon.json("vlans").unwrap();
    let lab = vlans
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == 30)
        .unwrap();
    assert_eq!(lab["untagged-ports"], serde_json::json!(["swp2"]));

    let (sent, received, text) = ping_result(steady);
    assert_eq!(
        (sent, received),
        (60, 60),
        "h1 -> h3 lost packets during changes: {text}"
    );
    let _ = h2;
}

// What this shows: `xnos port set` changes only what its options name: a new VLAN keeps
// the port's configured datapath, and a new datapath keeps its VLAN.
#[test]
fn port_set_changes_only_what_it_names() {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2"]).unwrap();
    let config = vlans()
        .access("swp1", 10)
        .set("datapath", "xdp-generic")
        .access("swp2", 20);
    let daemon = Daemon::start(&topo.switch, &config).unwrap();
    let port_row = || {
        let rows = daemon.json_raw(&["db", "get", "port", "--json"]).unwrap();
        find_by(&rows, "key", "swp1")["row"].clone()
    };
    assert_eq!(port_row()["datapath"], "xdp-generic", "{config}");

    daemon
        .xnos(&["port", "set", "swp1", "--access", "20"])
        .unwrap();
    let row = port_row();
    assert_eq!((&row["mode"], &row["vlan"]), (&"access".into(), &20.into()));
    assert_eq!(
        row["datapath"], "xdp-generic",
        "datapath reset by a VLAN change"
    );
    let link = topo
        .switch
        .ip(&["-d", "link", "show", "dev", "swp1"])
        .unwrap();
    assert!(link.contains("xdpgeneric"), "{link}");

    daemon
        .xnos(&["port", "set", "swp1", "--datapath", "tc"])
        .unwrap();
    let row = port_row();
    assert_eq!((&row["vlan"], &row["datapath"]), (&20.into(), &"tc".into()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while topo.tc_programs("swp1").unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no TC program on swp1 after --datapath tc"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// What this shows: xnosd logs one line per config commit, naming its generation, where it
// came from (the file at start, the CLI, another API client) and what changed; its log,
// not a terminal here, carries no colour codes.
#[test]
fn each_commit_is_logged_with_its_source_and_no_colour_codes() {
    require_root!();
    let topo = Topology::new(&["swp1"]).unwrap();
    let config = vlans().access("swp1", 10);
    let daemon = Daemon::start(&topo.switch, &config).unwrap();
    daemon.xnos(&["vlan", "add", "30"]).unwrap();
    daemon
        .xnos(&["port", "set", "swp1", "--access", "20"])
        .unwrap();
    let body = r#"{"ops":[{"op":"delete","table":"vlan","key":"30"}]}"#;
    let socket = daemon.socket.to_str().unwrap();
    // Any client but the CLI counts as "api".
    xnos_tests::run(
        "curl",
        &[
            "-sf",
            "--unix-socket",
            socket,
            "-d",
            body,
            "http://xnosd/v1/transact",
        ],
    )
    .unwrap();

    let log = daemon.log();
    assert!(!log.contains('\x1b'), "colour codes in the log: {log:?}");
    let commits: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once(" commit ").map(|(_, rest)| rest))
        .collect();
    assert_eq!(commits.len(), 4, "{log}");
    assert!(
        commits[0].starts_with(
            "1 from file: + [[vlan]] id = 10: name = \"servers\"; + [[vlan]] id = 20; \
             + [[port]] name = \"swp1\": "
        ),
        "{log}"
    );
    let after_from = |line: &str| line.split_once(" from ").map(|(_, rest)| rest.to_string());
    assert_eq!(
        commits[1..]
            .iter()
            .map(|l| after_from(l))
            .collect::<Vec<_>>(),
        [
            Some("cli: + [[vlan]] id = 30".to_string()),
            Some("cli: ~ [[port]] name = \"swp1\": vlan = 10 -> 20".to_string()),
            Some("api: - [[vlan]] id = 30".to_string()),
        ],
        "{log}"
    );
    let generations: Vec<u64> = commits
        .iter()
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(
        generations.windows(2).all(|w| w[0] < w[1]),
        "generations not increasing: {generations:?}"
    );
}

// What this shows: bad changes (a bad config file, bad CLI values, references to things
// that do not exist) are refused with an error naming the problem, and the running state,
// forwarding included, is exactly as before.
#[test]
fn bad_changes_are_refused_and_change_nothing() {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2", "swp3"]).unwrap();
    addressed(&topo);
    let daemon = Daemon::start(&topo.switch, &three_ports()).unwrap();
    assert!(topo.hosts[0].reachable("10.0.0.3"));
    let before = daemon.xnos(&["config", "show"]).unwrap();

    let bad = daemon.dir.join("bad.toml");
    std::fs::write(&bad, three_ports().replace("vlan = 20", "vlan = 5000")).unwrap();
    let err = daemon
        .xnos(&["config", "apply", bad.to_str().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad.toml:17: port[1].vlan: VLAN 5000 is out of range 1..4094"),
        "{err}"
    );

    for (args, expected) in [
        (
            vec!["vlan", "add", "4095"],
            "vlan 4095: id: VLAN 4095 is out of range 1..4094",
        ),
        (vec!["vlan", "del", "99"], "VLAN 99 does not exist"),
        (
            vec!["vlan", "del", "10"],
            "VLAN 10 is used by ports swp1, swp3: change or remove them first",
        ),
        (
            vec!["port", "set", "swp9", "--access", "10"],
            "port swp9: name: no kernel interface named \"swp9\"",
        ),
        (
            vec!["port", "set", "swp1", "--access", "4095"],
            "port swp1: vlan: VLAN 4095 is out of range 1..4094",
        ),
        (
            vec![
                "fdb",
                "add",
                "02:00:00:00:00:99",
                "--vlan",
                "20",
                "--port",
                "swp1",
            ],
            "port \"swp1\" is not in VLAN 20",
        ),
        (
            vec![
                "fdb",
                "add",
                "01:00:00:00:00:99",
                "--vlan",
                "10",
                "--port",
                "swp1",
            ],
            "is not a unicast address",
        ),
        (
            vec!["fdb", "del", "02:00:00:00:00:99", "--vlan", "10"],
            "static entry 02:00:00:00:00:99 in VLAN 10 does not exist",
        ),
        (
            vec!["port", "set", "swp1", "--trunk", "10-5"],
            "is not a VLAN or a range",
        ),
        (vec!["db", "get", "nosuch"], "no table \"nosuch\""),
    ] {
        let err = daemon.xnos(&args).unwrap_err().to_string();
        assert!(
            err.contains(expected),
            "xnos {args:?}: expected {expected:?} in {err:?}"
        );
        // A verb's refusal does not speak of the API's ops and rows.
        assert!(!err.contains("op 0") && !err.contains(" row"), "{err}");
    }
    // Adding a VLAN that is there is no error and changes nothing.
    let again = daemon.xnos(&["vlan", "add", "10"]).unwrap();
    assert_eq!(again, "VLAN 10 exists already: nothing changed\n");
    assert_eq!(daemon.xnos(&["config", "show"]).unwrap(), before);
    assert!(
        topo.hosts[0].ping("10.0.0.3", 2),
        "forwarding disturbed by refused changes"
    );
    assert!(!topo.hosts[0].ping("10.0.0.2", 1));
}

// What this shows: `config diff` and `config apply` show and apply a new config as one
// transaction, and after `config save` it survives a daemon restart (with a backup kept).
#[test]
fn applied_and_saved_config_survives_a_restart() {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2", "swp3"]).unwrap();
    addressed(&topo);
    let mut daemon = Daemon::start(&topo.switch, &three_ports()).unwrap();
    let new = daemon.dir.join("new.toml");
    std::fs::write(&new, three_ports().replace("vlan = 20", "vlan = 10")).unwrap();
    let diff = daemon
        .xnos(&["config", "diff", new.to_str().unwrap()])
        .unwrap();
    assert!(
        diff.contains("~ [[port]] name = \"swp2\": vlan = 20 -> 10"),
        "{diff}"
    );
    assert!(
        daemon
            .xnos(&["config", "show"])
            .unwrap()
            .contains("vlan = 20"),
        "diff applied something"
    );
    let applied = daemon
        .xnos(&["config", "apply", new.to_str().unwrap()])
        .unwrap();
    assert!(applied.starts_with("committed generation"), "{applied}");
    assert!(topo.hosts[0].reachable("10.0.0.2"));

    daemon
        .xnos(&[
            "fdb",
            "add",
            "02:00:00:00:00:77",
            "--vlan",
            "10",
            "--port",
            "swp3",
        ])
        .unwrap();
    let saved = daemon.xnos(&["config", "save"]).unwrap();
    assert!(saved.contains("previous version in"), "{saved}");
    let backup = daemon.config_path().with_extension("toml.bak");
    assert_eq!(std::fs::read_to_string(backup).unwrap(), *three_ports());

    daemon.restart(&topo.switch).unwrap();
    let fdb = daemon.json("fdb").unwrap();
    assert!(
        fdb.as_array()
            .unwrap()
            .iter()
            .any(|e| e["mac"] == "02:00:00:00:00:77" && e["kind"] == "static"),
        "{fdb}"
    );
    assert!(
        topo.hosts[0].reachable("10.0.0.2"),
        "saved VLAN change lost on restart"
    );
}

// What this shows: a module that panics is restarted by the supervisor and reconciles
// from StateDb, while a ping across the switch the whole time loses no packet.
#[test]
fn a_panicking_module_is_restarted_and_forwarding_carries_on() {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2", "swp3"]).unwrap();
    addressed(&topo);
    let daemon = Daemon::start(&topo.switch, &three_ports()).unwrap();
    assert!(topo.hosts[0].reachable("10.0.0.3"));

    let ping = background_ping(&topo.hosts[0], "10.0.0.3", 60);
    std::thread::sleep(Duration::from_millis(500));
    for name in ["datapath", "kernel", "api"] {
        daemon
            .fault(name)
            .unwrap_or_else(|e| panic!("{e:#}: {}", daemon.log()));
    }
    let modules = daemon.json("modules").unwrap();
    for name in ["datapath", "kernel", "api"] {
        let m = module(&modules, name);
        assert!(m["state"] == "running" && m["restarts"] == 1, "{modules}");
    }
    let datapath = module(&modules, "datapath");
    assert!(
        datapath["last-error"]
            .as_str()
            .unwrap()
            .contains("fault injected"),
        "{modules}"
    );
    // A reader that went away ends xnos quietly, as it would any filter (it
    // panicked on the closed pipe once): its stdout is a pipe with no reader.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let piped = std::process::Command::new(xnos_tests::binary("xnos").unwrap())
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["db", "get", "link"])
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&piped.status),
        Some(libc::SIGPIPE),
        "{stderr}"
    );
    // The table shows it too (it read a key the rows no longer have, once).
    let shown = daemon.xnos(&["show", "modules"]).unwrap();
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("datapath") && l.contains("fault injected")),
        "{shown}"
    );
    // The restarted datapath module still does its job: a new VLAN change takes effect.
    daemon
        .xnos(&["port", "set", "swp2", "--access", "10"])
        .unwrap();
    assert!(topo.hosts[0].reachable("10.0.0.2"));

    let (sent, received, text) = ping_result(ping);
    assert_eq!(
        (sent, received),
        (60, 60),
        "packets lost across module restarts: {text}"
    );
    let table = daemon.xnos(&["show", "modules"]).unwrap();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("datapath") && l.contains("running")),
        "{table}"
    );
}

// What this shows: `xnos db watch` prints the table and then streams a learned MAC as
// soon as the datapath learns it.
#[test]
fn db_watch_streams_a_learned_mac() {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2"]).unwrap();
    let daemon = Daemon::start(&topo.switch, &Config::access_ports(&[10, 10])).unwrap();
    let mut watch = Command::new(binary("xnos").unwrap())
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["db", "watch", "fdb-learned", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let first: serde_json::Value =
        serde_json::from_str(&lines.recv_timeout(Duration::from_secs(10)).unwrap()).unwrap();
    assert_eq!(first["type"], "snapshot");

    let h1 = &topo.hosts[0];
    h1.socket()
        .unwrap()
        .send(&test_frame([0xff; 6], h1.mac, None, 1))
        .unwrap();
    let key = format!("10/{}", format_mac(h1.mac));
    let deadline = Instant::now() + Duration::from_secs(10);
    let event = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("learned MAC never streamed");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if event["key"] == key.as_str() {
            break event;
        }
    };
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(event["type"], "change");
    assert_eq!(event["op"], "insert");
    assert_eq!(event["table"], "fdb-learned");
    assert_eq!(event["row"]["port"], "swp1");
    assert!(event["generation"].as_u64().unwrap() > first["generation"].as_u64().unwrap());
}
