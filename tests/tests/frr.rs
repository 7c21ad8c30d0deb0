//! FRR end to end: a BGP session between FRR on the switch and FRR in a host namespace;
//! the prefixes the host announces are installed by FRR in the switch's kernel and
//! forwarded by the xnos fast path, and withdrawing them stops the forwarding.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use xnos_tests::{Config, Daemon, Netns, Topology, require_root, unique_name};

const FRR_DIR: &str = "/usr/lib/frr";

/// zebra and bgpd of one FRR instance in a namespace; killed on drop.
struct Frr {
    name: String,
    run_dir: PathBuf,
    conf_dir: PathBuf,
}

impl Frr {
    fn start(ns: &Netns, bgpd_conf: &str) -> Self {
        assert!(
            Path::new(FRR_DIR).join("bgpd").exists(),
            "FRR is not installed (cargo xtask setup installs the Debian package frr)"
        );
        let name = unique_name("xf");
        let run_dir = PathBuf::from("/var/run/frr").join(&name);
        let conf_dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&run_dir).unwrap();
        // The daemons drop to the frr user and keep their sockets and pid files here.
        xnos_tests::run("chown", &["frr:frr", run_dir.to_str().unwrap()]).unwrap();
        std::fs::create_dir_all(&conf_dir).unwrap();
        let frr = Self {
            name,
            run_dir,
            conf_dir,
        };
        std::fs::write(frr.conf_dir.join("zebra.conf"), "hostname zebra\n").unwrap();
        std::fs::write(frr.conf_dir.join("bgpd.conf"), bgpd_conf).unwrap();
        for daemon in ["zebra", "bgpd"] {
            let conf = frr.conf_dir.join(format!("{daemon}.conf"));
            ns.exec(
                Path::new(FRR_DIR).join(daemon).to_str().unwrap(),
                &["-d", "-N", &frr.name, "-f", conf.to_str().unwrap()],
            )
            .unwrap_or_else(|e| panic!("starting {daemon}: {e}"));
        }
        frr
    }

    fn vtysh(&self, commands: &[&str]) -> String {
        let mut args = vec!["-N".to_string(), self.name.clone()];
        for c in commands {
            args.push("-c".into());
            args.push((*c).into());
        }
        let out = Command::new("vtysh")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        for daemon in ["bgpd", "zebra"] {
            if let Ok(pid) = std::fs::read_to_string(self.run_dir.join(format!("{daemon}.pid"))) {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        let _ = std::fs::remove_dir_all(&self.run_dir);
        let _ = std::fs::remove_dir_all(&self.conf_dir);
    }
}

fn bgpd_conf(
    asn: u32,
    router_id: &str,
    peer: &str,
    peer_asn: u32,
    network: Option<&str>,
) -> String {
    let network = network
        .map(|n| format!(" address-family ipv4 unicast\n  network {n}\n exit-address-family\n"))
        .unwrap_or_default();
    format!(
        "hostname bgpd\nrouter bgp {asn}\n bgp router-id {router_id}\n no bgp ebgp-requires-policy\n no bgp network import-check\n timers bgp 3 9\n neighbor {peer} remote-as {peer_asn}\n neighbor {peer} timers connect 2\n{network}"
    )
}

fn route_fast_path(daemon: &Daemon, prefix: &str) -> Option<(String, bool)> {
    let routes = daemon.json("routes").unwrap();
    routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["prefix"] == prefix)
        .map(|r| {
            (
                r["protocol"].as_str().unwrap().to_string(),
                r["fast-path"].as_bool().unwrap(),
            )
        })
}

#[test]
fn bgp_routes_from_frr_are_forwarded_by_the_fast_path() {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2"]).unwrap();
    let config = Config::access_ports(&[10, 20])
        .svi(10, &["10.0.10.1/24"])
        .svi(20, &["10.0.20.1/24"]);
    let daemon = Daemon::start(&topo.switch, &config).unwrap();
    let (h1, peer) = (&topo.hosts[0], &topo.hosts[1]);
    h1.add_address_via("10.0.10.2/24", "10.0.10.1").unwrap();
    peer.add_address_via("10.0.20.2/24", "10.0.20.1").unwrap();
    peer.ns
        .ip(&["addr", "add", "10.77.1.1/24", "dev", "lo"])
        .unwrap();

    let _switch_frr = Frr::start(
        &topo.switch,
        &bgpd_conf(65000, "10.0.20.1", "10.0.20.2", 65001, None),
    );
    let peer_frr = Frr::start(
        &peer.ns,
        &bgpd_conf(65001, "10.0.20.2", "10.0.20.1", 65000, Some("10.77.1.0/24")),
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((protocol, fast_path)) = route_fast_path(&daemon, "10.77.1.0/24") {
            assert_eq!(protocol, "bgp");
            assert!(fast_path, "the BGP route is not carried by the fast path");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "BGP route never arrived: {}",
            peer_frr.vtysh(&["show bgp summary"])
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let kernel = topo.switch.ip(&["route", "show", "10.77.1.0/24"]).unwrap();
    assert!(
        kernel.contains("proto bgp") && kernel.contains("via 10.0.20.2"),
        "{kernel}"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    while !h1.ping("10.77.1.1", 1) {
        assert!(Instant::now() < deadline, "BGP-learned prefix unreachable");
    }
    let before = daemon.json("routes").unwrap()["counters"]["routed-v4"]
        .as_u64()
        .unwrap();
    assert!(h1.ping("10.77.1.1", 3));
    let after = daemon.json("routes").unwrap()["counters"]["routed-v4"]
        .as_u64()
        .unwrap();
    assert!(
        after >= before + 6,
        "not forwarded by XDP: {before} -> {after}"
    );

    peer_frr.vtysh(&[
        "configure terminal",
        "router bgp 65001",
        "address-family ipv4 unicast",
        "no network 10.77.1.0/24",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while route_fast_path(&daemon, "10.77.1.0/24").is_some() {
        assert!(
            Instant::now() < deadline,
            "withdrawn route still in the FIB"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !h1.ping("10.77.1.1", 1),
        "still forwarded after the withdrawal"
    );
}
