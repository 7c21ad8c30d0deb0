//! End-to-end tests of readiness: xnosd's API socket, `READY=1` for systemd and
//! `xnos wait-ready` all come only once every configured port has its fast path, so that
//! whatever starts right after xnosd does not race the first attach.

use std::{
    os::unix::net::UnixDatagram,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use xnos_tests::{Config, Daemon, Topology, binary, require_root};

const PORTS: [&str; 3] = ["swp1", "swp2", "swp3"];
/// swp1 and swp2 in VLAN 10, swp3 a trunk.
fn config() -> Config {
    Config::access_ports(&[10, 10]).trunk("swp3", &[10, 20])
}

fn assert_every_port_attached(topo: &Topology, when: &str) {
    for port in PORTS {
        let link = topo
            .switch
            .ip(&["-j", "-d", "link", "show", "dev", port])
            .unwrap();
        let link: serde_json::Value = serde_json::from_str(&link).unwrap();
        assert!(
            link[0]["xdp"]["prog"]["id"].as_u64().is_some(),
            "{port} has no XDP program {when}: {link}"
        );
    }
}

// What this shows: the moment the API socket appears, every configured port already has
// its XDP program (the socket is the ready signal a script or test can wait for).
#[test]
fn the_socket_appears_only_when_every_port_has_its_fast_path() {
    require_root!();
    let topo = Topology::new(&PORTS).unwrap();
    let daemon = Daemon::launch(&topo.switch, &config(), &[], &[]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !daemon.socket.exists() {
        assert!(
            Instant::now() < deadline,
            "no API socket after 20 s: {}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_every_port_attached(&topo, "when the API socket appeared");
    let modules = daemon.json_raw(&["db", "get", "module", "--json"]).unwrap();
    let kernel = modules
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["key"] == "kernel")
        .unwrap_or_else(|| panic!("no kernel module row: {modules}"));
    assert!(
        kernel["row"]["synced"].is_u64(),
        "the kernel module's row does not say which generation it synced: {modules}"
    );
}

// What this shows: under systemd with Type=notify (NOTIFY_SOCKET set), xnosd sends
// READY=1, and only once the API socket is there and every port has its fast path.
#[test]
fn ready_is_sent_to_notify_socket() {
    require_root!();
    let topo = Topology::new(&PORTS).unwrap();
    // Daemon removes this directory when dropped, the notify socket with it.
    let dir = std::env::temp_dir().join(format!("xnos-{}", topo.switch.name()));
    std::fs::create_dir_all(&dir).unwrap();
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let daemon = Daemon::launch(
        &topo.switch,
        &config(),
        &[],
        &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())],
    )
    .unwrap();
    let mut buf = [0u8; 512];
    let len = notify
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no notification from xnosd ({e}): {}", daemon.log()));
    let message = String::from_utf8_lossy(&buf[..len]);
    assert_eq!(message.lines().collect::<Vec<_>>(), ["READY=1"]);
    assert!(daemon.socket.exists(), "READY=1 before the API socket");
    assert_every_port_attached(&topo, "at READY=1");
}

// What this shows: `xnos wait-ready` started before xnosd returns 0 once xnosd is ready
// (every port attached), returns at once on a running daemon, and on timeout fails
// saying what it waited for.
#[test]
fn wait_ready_waits_for_the_daemon_and_fails_clearly_on_timeout() {
    require_root!();
    let topo = Topology::new(&PORTS).unwrap();
    let dir = std::env::temp_dir().join(format!("xnos-{}", topo.switch.name()));
    let waiter = Command::new(binary("xnos").unwrap())
        .arg("--socket")
        .arg(dir.join("xnosd.sock"))
        .args(["wait-ready", "--timeout", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let daemon = Daemon::launch(&topo.switch, &config(), &[], &[]).unwrap();
    let output = waiter.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "wait-ready failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        daemon.log()
    );
    assert_every_port_attached(&topo, "when wait-ready returned");
    let out = daemon.xnos(&["wait-ready", "--timeout", "1"]).unwrap();
    assert!(out.contains("is ready"), "{out}");

    let missing = dir.join("nobody.sock");
    let output = Command::new(binary("xnos").unwrap())
        .arg("--socket")
        .arg(&missing)
        .args(["wait-ready", "--timeout", "0.3"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "wait-ready succeeded without xnosd"
    );
    assert!(
        stderr.contains(&format!(
            "xnosd not ready after 0.3s: still waiting for its API socket {} to appear",
            missing.display()
        )),
        "{stderr}"
    );
}

// What this shows: while xnosd loads its datapath (held here by a test hook; with a large
// datapath to take over it takes a second), its starting socket answers at once: `GET
// /v1/ready` says it is loading, anything else is refused saying so. Without this a
// request waited in the listen queue until the API module started.
#[test]
fn the_starting_socket_answers_while_the_datapath_loads() {
    require_root!();
    let topo = Topology::new(&PORTS).unwrap();
    let dir = std::env::temp_dir().join(format!("xnos-{}", topo.switch.name()));
    std::fs::create_dir_all(&dir).unwrap();
    // In the daemon's directory, which it removes when dropped.
    let hold = dir.join("hold-loading");
    std::fs::write(&hold, "").unwrap();
    let mut daemon = Daemon::launch(
        &topo.switch,
        &config(),
        &[],
        &[("XNOSD_TEST_HOLD_LOADING", hold.to_str().unwrap())],
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !daemon.starting_socket().exists() {
        assert!(
            Instant::now() < deadline,
            "no starting socket after 20 s: {}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, body) = daemon
        .starting_api_get("/v1/ready", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("no answer while loading: {e}: {}", daemon.log()));
    assert_eq!(status, 200, "{body}");
    let readiness: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(readiness["ready"], false, "{body}");
    assert_eq!(readiness["datapath-loaded"], false, "{body}");
    let (status, body) = daemon
        .starting_api_get("/v1/ports", Duration::from_secs(10))
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("loading its datapath"), "{body}");
    // Still held: nothing attached yet, so the answers above came before the datapath.
    let link = topo
        .switch
        .ip(&["-j", "-d", "link", "show", "dev", "swp1"])
        .unwrap();
    assert!(
        !link.contains("\"xdp\""),
        "swp1 attached while held: {link}"
    );

    std::fs::remove_file(&hold).unwrap();
    daemon.wait_ready().unwrap();
    assert_every_port_attached(&topo, "once ready");
    let (status, body) = daemon
        .api_get("/v1/ready", Duration::from_secs(10))
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let readiness: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(readiness["ready"], true, "{body}");
    assert_eq!(readiness["datapath-loaded"], true, "{body}");
}
