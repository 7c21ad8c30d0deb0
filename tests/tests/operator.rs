//! End-to-end tests of the operator's surface: what cannot be a port is refused and
//! nothing changes, a port another xnosd drives is refused naming it, VLANs a port uses
//! exist whichever way the port comes, refusals name what is in the way, and the
//! `interface` and `fdb clear` verbs do what they say on a running switch.

use std::time::{Duration, Instant};

use serde_json::json;
use xnos_tests::{Config, Daemon, Topology, find_by, format_mac, require_root};

/// swp1 and swp2 in VLAN 10 and its SVI.
fn svi() -> Config {
    Config::new()
        .vlan(10)
        .access("swp1", 10)
        .access("swp2", 10)
        .svi(10, &["10.0.10.1/24"])
}

fn addressed(topo: &Topology) {
    for (i, host) in topo.hosts.iter().enumerate() {
        host.add_address(&format!("10.0.10.{}/24", i + 2)).unwrap();
    }
}

fn port(daemon: &Daemon, name: &str) -> serde_json::Value {
    find_by(&daemon.json("ports").unwrap(), "name", name)
}

/// Wait until `check` holds for port `name` of `show ports`; panics with the row if it
/// does not within 15 s.
fn wait_port(daemon: &Daemon, name: &str, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let row = port(daemon, name);
        if check(&row) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never {what}: {row}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// What this shows: `port set` of the loopback device or of an SVI's netdevs is refused,
// naming the port, why, and the key; nothing is committed and the switch and the SVI keep
// forwarding and routing.
#[test]
fn loopback_and_netdevs_of_xnos_are_refused_as_ports() {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2"]).unwrap();
    addressed(&topo);
    let daemon = Daemon::start(&topo.switch, &svi()).unwrap();
    assert!(topo.hosts[0].reachable("10.0.10.1"));
    let before = daemon.xnos(&["config", "show"]).unwrap();
    // What a refused port would have reached in the datapath is a port-status row (the
    // datapath row's route counts follow the kernel: IPv6 addresses finish DAD at their
    // own pace).
    let statuses = |daemon: &Daemon| -> Vec<String> {
        daemon
            .json_raw(&["db", "get", "port-status", "--json"])
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["key"].as_str().unwrap().to_string())
            .collect()
    };
    let statuses_before = statuses(&daemon);
    for (name, expected) in [
        (
            "lo",
            "port lo: name: lo is the loopback device; it cannot be a port",
        ),
        (
            "vlan10i",
            "port vlan10i: name: vlan10i is the internal port of interface vlan10, made by \
             xnos; it cannot be a port",
        ),
        (
            "vlan10",
            "port vlan10: name: vlan10 is the kernel side of interface vlan10, made by xnos; \
             it cannot be a port",
        ),
    ] {
        let err = daemon
            .xnos(&["port", "set", name, "--access", "10"])
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{name}: {err}");
    }
    assert_eq!(daemon.xnos(&["config", "show"]).unwrap(), before);
    let ports: Vec<String> = daemon
        .json("ports")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ports, ["swp1", "swp2"]);
    assert!(
        !topo
            .switch
            .ip(&["-d", "link", "show", "lo"])
            .unwrap()
            .contains("prog/xdp")
    );
    assert_eq!(
        statuses(&daemon),
        statuses_before,
        "a refused change reached the datapath"
    );
    assert!(topo.hosts[0].ping("10.0.10.3", 2), "switching disturbed");
    assert!(topo.hosts[1].ping("10.0.10.1", 2), "the SVI disturbed");
}

// What this shows: a second xnosd in the namespace whose config names a port the first
// drives does not attach to it; its port status and `show ports` name the owner (socket
// and pid) and its log says so once; it serves its other ports and leaves the first's SVI
// and the port's MTU alone. A crashed owner leaves no claim: restarted, it
// takes its ports back at once; stopped, the second instance takes the port over.
#[test]
fn a_port_another_instance_drives_is_refused_naming_it() {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2", "swp3"]).unwrap();
    addressed(&topo);
    let second_config = Config::new()
        .access("swp2", 10)
        .set("mtu", 1400u16)
        .access("swp3", 10);
    let mut first = Daemon::start(&topo.switch, &svi()).unwrap();
    let svi = topo.switch.ifindex("vlan10").unwrap();
    let second = Daemon::start_instance(&topo.switch, "second", &second_config).unwrap();
    let owner = format!(
        "claimed by another xnosd (socket {}, pid {})",
        first.socket.display(),
        first.pid().unwrap()
    );
    let refused = port(&second, "swp2");
    assert_eq!(refused["datapath"], "none", "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains(&owner)),
        "{refused}"
    );
    let shown = second.xnos(&["show", "ports"]).unwrap();
    // The note under the table wraps at 80 columns.
    let unwrapped = shown.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(unwrapped.contains(&owner), "{shown}");
    assert!(
        second.log().contains("port not attached"),
        "{}",
        second.log()
    );
    assert_ne!(port(&second, "swp3")["datapath"], "none");
    assert!(
        topo.hosts[0].ping("10.0.10.3", 2),
        "the first instance stopped forwarding"
    );
    // The second instance's config has no SVI; the first's is not its to remove.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        topo.switch.ifindex("vlan10").unwrap(),
        svi,
        "the SVI was made again"
    );
    let swp2 = topo.switch.ip(&["link", "show", "dev", "swp2"]).unwrap();
    assert!(
        swp2.contains("mtu 1500"),
        "the second instance set its MTU: {swp2}"
    );
    assert!(
        topo.hosts[0].ping("10.0.10.1", 2),
        "the first instance stopped routing"
    );
    let warned = second.log().matches("port not attached").count();
    assert_eq!(warned, 1, "{}", second.log());
    drop(second);

    first.crash().unwrap();
    first.start_again(&topo.switch).unwrap();
    for name in ["swp1", "swp2"] {
        let row = port(&first, name);
        assert!(row["error"].is_null() && row["datapath"] != "none", "{row}");
    }
    assert!(topo.hosts[0].reachable("10.0.10.3"));

    let second = Daemon::start_instance(&topo.switch, "second", &second_config).unwrap();
    assert_eq!(port(&second, "swp2")["datapath"], "none");
    first.stop().unwrap();
    wait_port(&second, "swp2", "taken over", |row| {
        row["error"].is_null() && row["datapath"] != "none"
    });
    assert!(topo.hosts[1].reachable("10.0.10.4"));
}

// What this shows: a port in a VLAN the vlan table lacks is taken, from the CLI and from
// the API alike, as from the config file: the VLAN exists and `show vlans` lists it.
#[test]
fn a_vlan_a_port_uses_exists_from_the_cli_and_the_api() {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2", "swp3"]).unwrap();
    addressed(&topo);
    let daemon = Daemon::start(&topo.switch, &svi()).unwrap();
    let set = daemon
        .xnos(&["port", "set", "swp1", "--access", "30"])
        .unwrap();
    assert!(set.contains("+ [[vlan]] id = 30"), "{set}");
    let (status, body) = daemon
        .api_post(
            "/v1/transact",
            &json!({"ops": [{"op": "update", "table": "port",
                "row": {"name": "swp2", "mode": "access", "vlan": 30}}]}),
        )
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = daemon
        .api_post(
            "/v1/transact",
            &json!({"ops": [{"op": "insert", "table": "port",
                "row": {"name": "swp3", "mode": "trunk", "vlans": [40], "native-vlan": 30}}]}),
        )
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let vlans = daemon.json("vlans").unwrap();
    for id in [30, 40] {
        assert!(
            vlans.as_array().unwrap().iter().any(|v| v["id"] == id),
            "VLAN {id} not in {vlans}"
        );
    }
    assert!(
        topo.hosts[0].reachable("10.0.10.3"),
        "swp1 and swp2 in VLAN 30"
    );
}

// What this shows: deleting a port that a static entry uses, or a VLAN that ports and an
// interface use, is refused naming each user and what to do.
#[test]
fn deletes_in_use_name_their_users() {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2"]).unwrap();
    let daemon = Daemon::start(&topo.switch, &svi()).unwrap();
    daemon
        .xnos(&[
            "fdb",
            "add",
            "02:00:00:00:00:99",
            "--vlan",
            "10",
            "--port",
            "swp1",
        ])
        .unwrap();
    for (args, expected) in [
        (
            ["port", "del", "swp1"].as_slice(),
            "port swp1 is used by static entry 02:00:00:00:00:99 in VLAN 10: remove it first \
             (xnos fdb del 02:00:00:00:00:99 --vlan 10",
        ),
        (
            ["vlan", "del", "10"].as_slice(),
            "VLAN 10 is used by ports swp1, swp2, interface vlan10 and static entry \
             02:00:00:00:00:99: change or remove them first",
        ),
    ] {
        let err = daemon.xnos(args).unwrap_err().to_string();
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

// What this shows: `xnos interface` adds, changes and removes an SVI on a running switch,
// and hosts reach (or stop reaching) its addresses accordingly.
#[test]
fn interface_verbs_change_l3_interfaces() {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2"]).unwrap();
    addressed(&topo);
    let config = Config::new().vlan(10).access("swp1", 10).access("swp2", 10);
    let daemon = Daemon::start(&topo.switch, &config).unwrap();
    let err = daemon
        .xnos(&["interface", "set", "vlan10", "--addresses", "10.0.10.1/24"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("vlan10 is not an interface yet"), "{err}");
    let added = daemon
        .xnos(&[
            "interface",
            "set",
            "vlan10",
            "--vlan",
            "10",
            "--addresses",
            "10.0.10.1/24",
        ])
        .unwrap();
    assert!(
        added.contains("+ [[interface]] name = \"vlan10\""),
        "{added}"
    );
    assert!(topo.hosts[0].reachable("10.0.10.1"));
    daemon
        .xnos(&[
            "interface",
            "set",
            "vlan10",
            "--add-address",
            "10.0.11.1/24",
            "--mtu",
            "1400",
        ])
        .unwrap();
    let iface = find_by(&daemon.json("interfaces").unwrap(), "name", "vlan10");
    assert!(iface.to_string().contains("10.0.11.1/24"), "{iface}");
    let kernel = topo.switch.ip(&["addr", "show", "dev", "vlan10"]).unwrap();
    assert!(
        kernel.contains("mtu 1400") && kernel.contains("inet 10.0.11.1/24"),
        "{kernel}"
    );
    assert!(topo.hosts[0].ping("10.0.10.1", 1));
    daemon.xnos(&["interface", "del", "vlan10"]).unwrap();
    assert!(
        !topo.hosts[0].ping("10.0.10.1", 2),
        "the SVI is still there"
    );
    assert!(topo.hosts[0].ping("10.0.10.3", 1), "switching disturbed");
}

// What this shows: `fdb clear --port` removes the learned entries of that port only,
// static entries stay, the CLI says how many went, and traffic learns them again.
#[test]
fn fdb_clear_removes_learned_entries_of_a_port_only() {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2", "swp3"]).unwrap();
    addressed(&topo);
    let config = svi()
        .access("swp3", 10)
        .fdb("02:00:00:00:00:99", 10, "swp3");
    let daemon = Daemon::start(&topo.switch, &config).unwrap();
    assert!(topo.hosts[0].reachable("10.0.10.3"));
    assert!(topo.hosts[2].reachable("10.0.10.3"));
    for host in &topo.hosts {
        daemon.wait_fdb(10, host.mac, &host.port).unwrap();
    }
    let learned_on = |port: &str| -> Vec<String> {
        daemon
            .json("fdb")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["port"] == port && e["kind"] == "learned")
            .map(|e| e["mac"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(learned_on("swp1"), [format_mac(topo.hosts[0].mac)]);

    let cleared = daemon.xnos(&["fdb", "clear", "--port", "swp1"]).unwrap();
    assert_eq!(cleared, "removed 1 learned entry\n");
    assert!(learned_on("swp1").is_empty());
    assert_eq!(learned_on("swp2"), [format_mac(topo.hosts[1].mac)]);
    let fdb = daemon.json("fdb").unwrap();
    assert!(
        fdb.as_array()
            .unwrap()
            .iter()
            .any(|e| e["mac"] == "02:00:00:00:00:99"),
        "the static entry went: {fdb}"
    );

    assert!(topo.hosts[0].ping("10.0.10.4", 1));
    daemon.wait_fdb(10, topo.hosts[0].mac, "swp1").unwrap();

    let err = daemon
        .xnos(&["fdb", "clear", "--port", "swp9"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("port: \"swp9\" is not a switch port"), "{err}");
}
