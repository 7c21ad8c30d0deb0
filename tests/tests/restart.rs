//! Restarts without loss: a stopped, killed or restarted xnosd leaves its programs on the
//! ports forwarding, and the next one takes them over (the maps reused, the programs
//! swapped in place), changing only what differs after it has read the kernel completely.
//! Traffic is counted frame by frame at the receivers.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use xnos_tests::{
    Config, Daemon, Host, Topology, require_root,
    traffic::{Flow, Totals, Traffic},
};

/// swp1 and swp2 in VLAN 10, swp3 in VLAN 20, an SVI in each.
fn config() -> Config {
    Config::access_ports(&[10, 10, 20])
        .svi(10, &["10.0.10.254/24"])
        .svi(20, &["10.0.20.254/24"])
}

/// h1 and h2 in VLAN 10 (switched), h3 in VLAN 20 (routed from h1).
fn topology() -> Topology {
    let topo = Topology::new(&["swp1", "swp2", "swp3"]).unwrap();
    for (host, cidr, gateway) in [
        (&topo.hosts[0], "10.0.10.1/24", "10.0.10.254"),
        (&topo.hosts[1], "10.0.10.2/24", "10.0.10.254"),
        (&topo.hosts[2], "10.0.20.3/24", "10.0.20.254"),
    ] {
        host.add_address_via(cidr, gateway).unwrap();
    }
    topo
}

/// The topology with xnosd running on it (with `args`), once both flows' paths answer.
fn running(args: &[&str]) -> (Topology, Daemon) {
    let topo = topology();
    let daemon = Daemon::start_with(&topo.switch, &config(), args).unwrap();
    assert!(topo.hosts[0].reachable("10.0.10.2"));
    assert!(topo.hosts[0].reachable("10.0.20.3"));
    (topo, daemon)
}

/// The ID and tag of the XDP program on a port of the switch.
fn xdp_program(topo: &Topology, port: &str) -> Option<(u64, String)> {
    let out = topo
        .switch
        .ip(&["-j", "-d", "link", "show", "dev", port])
        .unwrap();
    let link: serde_json::Value = serde_json::from_str(&out).unwrap();
    let prog = &link[0]["xdp"]["prog"];
    Some((prog["id"].as_u64()?, prog["tag"].as_str()?.to_string()))
}

fn programs(topo: &Topology) -> Vec<Option<(u64, String)>> {
    ["swp1", "swp2", "swp3"]
        .iter()
        .map(|p| xdp_program(topo, p))
        .collect()
}

// What this shows: with 20,000 datagrams/s switched (h1 to h2) and routed (h1 to h3)
// through the switch, a restart (SIGTERM, then a new xnosd until ready) and a crash
// (SIGKILL, then a new xnosd) lose no frame: the programs stay on the ports while no
// xnosd runs, and each new xnosd puts its own programs in their place (new program IDs)
// without a gap. The counters go on from where they were (the maps are reused).
#[test]
fn restarts_and_crashes_lose_no_frame() {
    require_root!();
    let (topo, mut daemon) = running(&[]);
    let first = programs(&topo);
    assert!(first.iter().all(Option::is_some), "{first:?}");

    let flows = send_flows(&topo);
    std::thread::sleep(Duration::from_millis(500));
    daemon.restart(&topo.switch).unwrap();
    let restarted = programs(&topo);
    std::thread::sleep(Duration::from_millis(500));
    let rx_before_crash = daemon.counters("swp1").unwrap()["rx-packets"]
        .as_u64()
        .unwrap_or(0);
    daemon.crash().unwrap();
    // No xnosd at all for a while: the ports go on forwarding.
    std::thread::sleep(Duration::from_millis(500));
    daemon.start_again(&topo.switch).unwrap();
    let after_crash = programs(&topo);
    std::thread::sleep(Duration::from_millis(500));
    assert_none_lost(&flows.finish(), &daemon);
    for (before, after) in [(&first, &restarted), (&restarted, &after_crash)] {
        for (b, a) in before.iter().zip(after) {
            assert!(
                a.is_some() && a != b,
                "programs not replaced: {before:?} -> {after:?}"
            );
        }
    }
    let rx_after = daemon.counters("swp1").unwrap()["rx-packets"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        rx_before_crash > 10_000 && rx_after >= rx_before_crash,
        "the counters started again: {rx_before_crash} -> {rx_after}"
    );
    assert!(daemon.log().contains("taking over from an earlier xnosd"));
}

/// 20,000 datagrams/s from h1: switched to h2 and routed to h3.
fn send_flows(topo: &Topology) -> Traffic {
    let hosts: Vec<(&Host, Ipv4Addr)> = topo
        .hosts
        .iter()
        .zip([[10, 0, 10, 1], [10, 0, 10, 2], [10, 0, 20, 3]].map(Ipv4Addr::from))
        .collect();
    let flows = vec![Flow { src: 0, dst: 1 }, Flow { src: 0, dst: 2 }];
    Traffic::start(&hosts, flows, 20_000).unwrap()
}

fn assert_none_lost(results: &[Totals], daemon: &Daemon) {
    let named = ["switched", "routed"].iter().zip(results);
    for (name, flow) in named.clone() {
        println!("{name}: {flow:?}");
    }
    for (name, flow) in named {
        let (sent, lost) = (flow.sent, flow.lost + flow.unseen_tail);
        assert!(sent > 10_000, "{name}: only {sent} sent");
        assert_eq!(lost, 0, "{name}: {lost} of {sent} lost\n{}", daemon.log());
    }
}

// What this shows: an upgrade to a build whose programs differ (`xnosd-next`: another
// instruction in the ingress programs, larger FDB and TX_PORTS maps) and back again swaps
// the program on every port (another tag, then the first one again) without losing a frame
// of 20,000/s switched and routed; the FDB map, whose size changed, is made new with the
// learned stations copied into it, and the unicast devmap is made new and filled from the
// ports (known unicast would go nowhere otherwise).
#[test]
fn an_upgrade_to_a_changed_program_and_back_loses_no_frame() {
    require_root!();
    let (topo, mut daemon) = running(&[]);
    let first = programs(&topo);
    let flows = send_flows(&topo);
    std::thread::sleep(Duration::from_millis(500));
    daemon.restart_as(&topo.switch, "xnosd-next").unwrap();
    let upgraded = programs(&topo);
    let log = daemon.log();
    std::thread::sleep(Duration::from_millis(500));
    daemon.restart_as(&topo.switch, "xnosd").unwrap();
    let back = programs(&topo);
    std::thread::sleep(Duration::from_millis(500));
    assert_none_lost(&flows.finish(), &daemon);
    for ((f, u), b) in first.iter().zip(&upgraded).zip(&back) {
        let (f, u, b) = (
            f.as_ref().unwrap(),
            u.as_ref().unwrap(),
            b.as_ref().unwrap(),
        );
        assert!(
            f.1 != u.1,
            "the next build's program has the same tag: {f:?} {u:?}"
        );
        assert!(
            b.1 == f.1 && b.0 != f.0,
            "not back to the first build: {f:?} {b:?}"
        );
    }
    let migrated = log
        .lines()
        .find(|l| l.contains("map changed layout, made new: FDB"))
        .unwrap_or_else(|| panic!("no FDB migration in the log:\n{log}"));
    let copied: u64 = migrated
        .split(": ")
        .last()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{migrated}"));
    // h1, h2, h3 and the SVIs' internal ports were learned before the upgrade.
    assert!(copied >= 3, "{migrated}");
    assert!(
        log.contains("map changed layout, made new: TX_PORTS"),
        "no TX_PORTS migration in the log:\n{log}"
    );
}

// What this shows: a route deleted from the kernel while no xnosd ran is gone from the
// maps once the next xnosd has read the kernel (the datapath's trace finds no route for
// it), and one added meanwhile is in them; a route that did not change forwards
// throughout.
#[test]
fn routes_changed_while_xnosd_was_down_are_swept_after_the_dump() {
    require_root!();
    let topo = topology();
    let mut daemon = Daemon::start(&topo.switch, &config()).unwrap();
    assert!(topo.hosts[0].reachable("10.0.20.3"));
    let trace = |daemon: &Daemon, dst: &str| -> serde_json::Value {
        let out = daemon
            .xnos(&[
                "trace",
                "--json",
                "--port",
                "swp1",
                "--dst-ip",
                dst,
                "--src-ip",
                "10.0.10.1",
            ])
            .unwrap();
        serde_json::from_str(&out).unwrap()
    };
    let routed_by = |t: &serde_json::Value| {
        t["route"]
            .as_str()
            .map(|r| r.split(' ').next().unwrap().to_string())
    };
    topo.switch
        .ip(&["route", "add", "10.9.1.0/24", "via", "10.0.20.3"])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while routed_by(&trace(&daemon, "10.9.1.5")).as_deref() != Some("10.9.1.0/24") {
        assert!(Instant::now() < deadline, "{}", trace(&daemon, "10.9.1.5"));
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.stop().unwrap();
    topo.switch.ip(&["route", "del", "10.9.1.0/24"]).unwrap();
    topo.switch
        .ip(&["route", "add", "10.9.2.0/24", "via", "10.0.20.3"])
        .unwrap();
    daemon.start_again(&topo.switch).unwrap();
    let gone = trace(&daemon, "10.9.1.5");
    assert_eq!(routed_by(&gone), None, "{gone}");
    let added = trace(&daemon, "10.9.2.5");
    assert_eq!(routed_by(&added).as_deref(), Some("10.9.2.0/24"), "{added}");
    let kept = trace(&daemon, "10.0.20.3");
    assert_eq!(routed_by(&kept).as_deref(), Some("10.0.20.0/24"), "{kept}");
    assert_eq!(kept["egress"], "swp3", "{kept}");
}

// What this shows: a fault injected into each module of a running xnosd in turn (kernel,
// datapath, api, metrics; a panic, which the supervisor answers by restarting the module,
// which reconciles from StateDb and the maps) loses no frame of 20,000/s switched and
// routed.
#[test]
fn module_faults_lose_no_frame() {
    require_root!();
    let (topo, daemon) = running(&["--metrics-listen", "127.0.0.1:9417"]);
    let modules = ["kernel", "datapath", "api", "metrics"];
    let flows = send_flows(&topo);
    for _ in 1..=2 {
        for name in modules {
            std::thread::sleep(Duration::from_millis(200));
            // Restarted (and running again) before the next one.
            daemon
                .fault(name)
                .unwrap_or_else(|e| panic!("{e:#}: {}", daemon.log()));
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_none_lost(&flows.finish(), &daemon);
}

// What this shows: a port the config no longer names when xnosd starts again does not keep
// the earlier xnosd's program (which would go on switching into this switch's maps with
// nobody driving it): the first reconcile takes it off, though this xnosd never attached
// it; the other ports are taken over.
#[test]
fn a_port_left_out_of_the_config_while_xnosd_was_down_is_taken_off() {
    require_root!();
    let (topo, mut daemon) = running(&[]);
    assert!(xdp_program(&topo, "swp2").is_some());
    daemon.stop().unwrap();
    let without_swp2 = config().replace(
        "[[port]]\nname = \"swp2\"\nmode = \"access\"\nvlan = 10\n\n",
        "",
    );
    assert_ne!(without_swp2, *config());
    std::fs::write(daemon.config_path(), without_swp2).unwrap();
    daemon.start_again(&topo.switch).unwrap();
    assert_eq!(xdp_program(&topo, "swp2"), None, "{}", daemon.log());
    assert!(xdp_program(&topo, "swp1").is_some() && xdp_program(&topo, "swp3").is_some());
    assert!(topo.hosts[0].reachable("10.0.20.3"));
}
