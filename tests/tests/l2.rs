//! End-to-end L2 tests: hosts in namespaces cabled by veths to a switch namespace running
//! the real xnosd, real traffic (ping, raw tagged and untagged frames), and proof that the
//! XDP datapath did the forwarding (programs attached, counters, no Linux bridge).

use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    process::Stdio,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use xnos_tests::{
    Config, Daemon, ForeignXdp, PacketSocket, RandomMacs, Topology, binary, cpu_time, find_by,
    format_mac, http_get, parse_test_frame, require_root, sample, status_kib, test_frame,
};

const BROADCAST: [u8; 6] = [0xff; 6];
/// Long enough for a frame that is coming to arrive on a loaded 2-core machine.
const ARRIVE: Duration = Duration::from_secs(3);
/// How long we listen to be sure a frame does not come.
const QUIET: Duration = Duration::from_millis(500);

/// The VLAN tags (None = untagged) of the frames with `marker` that `sock` receives,
/// returning as soon as one arrives (or after `wait`).
fn received(sock: &PacketSocket, marker: u32, wait: Duration) -> Vec<Option<u16>> {
    let deadline = Instant::now() + wait;
    let mut tags = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let frames = sock.collect(left.min(Duration::from_millis(100)), |f| {
            parse_test_frame(f).is_some_and(|(_, m)| m == marker)
        });
        tags.extend(
            frames
                .iter()
                .filter_map(|f| parse_test_frame(f))
                .map(|(vlan, _)| vlan),
        );
        if !tags.is_empty() {
            break;
        }
    }
    tags
}

fn assert_arrives(sock: &PacketSocket, marker: u32, tag: Option<u16>, what: &str) {
    assert_eq!(received(sock, marker, ARRIVE), [tag], "{what}");
}

fn assert_silent(sock: &PacketSocket, marker: u32, what: &str) {
    assert_eq!(received(sock, marker, QUIET), [], "{what}");
}

fn counter(daemon: &Daemon, port: &str, name: &str) -> u64 {
    daemon.counters(port).unwrap()[name].as_u64().unwrap()
}

fn drop_counter(daemon: &Daemon, port: &str, reason: &str) -> u64 {
    daemon.counters(port).unwrap()["drops"][reason]
        .as_u64()
        .unwrap()
}

fn assert_fast_path(topo: &Topology, daemon: &Daemon) {
    assert!(
        topo.no_bridge().unwrap(),
        "a Linux bridge exists in the switch namespace"
    );
    for host in &topo.hosts {
        assert!(
            topo.xdp_attached(&host.port).unwrap(),
            "no XDP program on {}",
            host.port
        );
    }
    let ports = daemon.json("ports").unwrap();
    for port in ports.as_array().unwrap() {
        assert_eq!(port["datapath"], "xdp-native", "{port}");
    }
}

// What this shows: hosts on access ports of one VLAN reach each other through the XDP
// switch, and a host in another VLAN is unreachable.
#[test]
fn access_ports_of_a_vlan_ping_and_vlans_are_isolated() {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2", "swp3"]).unwrap();
    for (i, host) in topo.hosts.iter().enumerate() {
        host.add_address(&format!("10.0.0.{}/24", i + 1)).unwrap();
    }
    let config = Config::new()
        .vlan(10)
        .set("name", "servers")
        .access("swp1", 10)
        .access("swp2", 10)
        .access("swp3", 20);
    let daemon = Daemon::start(&topo.switch, &config).unwrap();
    assert_fast_path(&topo, &daemon);

    assert!(
        topo.hosts[0].ping("10.0.0.2", 3),
        "h1 cannot ping h2 in VLAN 10"
    );
    assert!(
        !topo.hosts[0].ping("10.0.0.3", 1),
        "h1 reached h3 across VLANs"
    );

    // Three echo requests and the ARP exchange went through XDP on swp1 and out of swp2.
    assert!(counter(&daemon, "swp1", "rx-packets") >= 4);
    assert!(counter(&daemon, "swp2", "tx-packets") >= 4);
    assert!(
        counter(&daemon, "swp1", "flooded") >= 1,
        "the ARP request was flooded"
    );
    // Nothing of VLAN 10 ever left through swp3.
    assert_eq!(counter(&daemon, "swp3", "tx-packets"), 0);
    daemon.wait_fdb(10, topo.hosts[0].mac, "swp1").unwrap();
    daemon.wait_fdb(10, topo.hosts[1].mac, "swp2").unwrap();

    let table = daemon.xnos(&["show", "ports"]).unwrap();
    assert!(table.starts_with("PORT"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("swp3") && l.contains("native")),
        "{table}"
    );
    let vlans = daemon.xnos(&["show", "vlans"]).unwrap();
    assert!(
        vlans
            .lines()
            .any(|l| l.starts_with("10") && l.contains("servers") && l.contains("swp1,swp2")),
        "{vlans}"
    );
}

// What this shows: a trunk carries tagged frames of its VLANs to the right access ports
// (untagged there) and back (tagged), untagged frames ride the native VLAN, known unicast
// gets the same treatment, and a tagged frame on an access port is dropped and counted.
#[test]
fn trunk_tags_and_untags_between_access_ports() {
    trunk_case("auto", "auto");
}

// What this shows: the same, with the trunk and one access port on the TC datapath and the
// others on XDP: TC sees the kernel-stripped tag in the skb, floods by cloning, and the two
// program types forward to each other.
#[test]
fn trunk_tags_and_untags_with_tc_and_xdp_ports_mixed() {
    trunk_case("tc", "auto");
}

/// The trunk scenario with swp1 and swp3 (the trunk) on datapath `odd`, swp2 and swp4 on
/// `even`.
fn trunk_case(odd: &str, even: &str) {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2", "swp3", "swp4"]).unwrap();
    let config = Config::new()
        .access("swp1", 10)
        .set("datapath", odd)
        .access("swp2", 20)
        .set("datapath", even)
        .trunk("swp3", &[10, 20])
        .set("native-vlan", 30u16)
        .set("datapath", odd)
        .access("swp4", 30)
        .set("datapath", even);
    let daemon = Daemon::start(&topo.switch, &config).unwrap();
    if odd == "tc" {
        let ports = daemon.json("ports").unwrap();
        for port in ports.as_array().unwrap() {
            let tc = port["name"] == "swp1" || port["name"] == "swp3";
            let want = if tc { "tc" } else { "xdp-native" };
            assert_eq!(port["datapath"], want, "{port}");
            let name = port["name"].as_str().unwrap();
            let programs = topo.tc_programs(name).unwrap();
            assert_eq!(programs.len(), usize::from(tc), "{name}: {programs:?}");
            assert_eq!(topo.xdp_attached(name).unwrap(), !tc, "{name}");
        }
    } else {
        assert_fast_path(&topo, &daemon);
    }
    let [h1, h2, h3, h4] = [0, 1, 2, 3].map(|i| &topo.hosts[i]);
    let [s1, s2, s3, s4] = [h1, h2, h3, h4].map(|h| h.socket().unwrap());

    s3.send(&test_frame(BROADCAST, h3.mac, Some(10), 1))
        .unwrap();
    assert_arrives(&s1, 1, None, "trunk VLAN 10 -> access 10, untagged");
    assert_silent(&s2, 1, "VLAN 10 frame leaked into VLAN 20");
    assert_silent(&s4, 1, "VLAN 10 frame leaked into VLAN 30");

    s3.send(&test_frame(BROADCAST, h3.mac, Some(20), 2))
        .unwrap();
    assert_arrives(&s2, 2, None, "trunk VLAN 20 -> access 20, untagged");
    assert_silent(&s1, 2, "VLAN 20 frame leaked into VLAN 10");

    s1.send(&test_frame(BROADCAST, h1.mac, None, 3)).unwrap();
    assert_arrives(&s3, 3, Some(10), "access 10 -> trunk, tagged 10");
    assert_silent(&s2, 3, "VLAN 10 frame leaked into VLAN 20");

    s3.send(&test_frame(BROADCAST, h3.mac, None, 4)).unwrap();
    assert_arrives(&s4, 4, None, "untagged on trunk -> native VLAN 30");
    assert_silent(&s1, 4, "native VLAN frame leaked into VLAN 10");

    s4.send(&test_frame(BROADCAST, h4.mac, None, 5)).unwrap();
    assert_arrives(&s3, 5, None, "access 30 -> trunk native VLAN, untagged");

    // Known unicast: h2 makes itself known, then the trunk sends to it (tag popped), and
    // h1 sends to h3, learned in VLAN 10 from frame 1 (tag pushed).
    s2.send(&test_frame(BROADCAST, h2.mac, None, 6)).unwrap();
    assert_arrives(&s3, 6, Some(20), "access 20 -> trunk, tagged 20");
    daemon.wait_fdb(20, h2.mac, "swp2").unwrap();
    daemon.wait_fdb(10, h3.mac, "swp3").unwrap();
    let flooded = counter(&daemon, "swp3", "flooded");
    s3.send(&test_frame(h2.mac, h3.mac, Some(20), 7)).unwrap();
    assert_arrives(&s2, 7, None, "known unicast trunk -> access, untagged");
    s1.send(&test_frame(h3.mac, h1.mac, None, 8)).unwrap();
    assert_arrives(&s3, 8, Some(10), "known unicast access -> trunk, tagged");
    assert_eq!(
        counter(&daemon, "swp3", "flooded"),
        flooded,
        "known unicast was flooded"
    );

    s1.send(&test_frame(BROADCAST, h1.mac, Some(10), 9))
        .unwrap();
    assert_silent(&s3, 9, "tagged frame accepted on an access port");
    assert_eq!(drop_counter(&daemon, "swp1", "tagged-on-access"), 1);
    s3.send(&test_frame(BROADCAST, h3.mac, Some(99), 10))
        .unwrap();
    assert_silent(&s1, 10, "VLAN 99 frame forwarded");
    assert_eq!(drop_counter(&daemon, "swp3", "vlan-not-allowed"), 1);
}

// What this shows: unknown unicast is flooded to every port of its VLAN (tagged on trunks)
// but not to other VLANs nor back to its ingress port; once learned it is not flooded.
#[test]
fn unknown_unicast_floods_only_within_its_vlan() {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2", "swp3", "swp4"]).unwrap();
    let config = Config::access_ports(&[10, 10, 20]).trunk("swp4", &[10, 20]);
    let daemon = Daemon::start(&topo.switch, &config).unwrap();
    assert_fast_path(&topo, &daemon);
    let sockets: Vec<PacketSocket> = topo.hosts.iter().map(|h| h.socket().unwrap()).collect();
    let [s1, s2, s3, s4] = [0, 1, 2, 3].map(|i| &sockets[i]);
    let (h1, h2) = (&topo.hosts[0], &topo.hosts[1]);
    let unknown = [2, 0, 0, 0, 0x99, 0x99];

    s1.send(&test_frame(unknown, h1.mac, None, 1)).unwrap();
    assert_arrives(s2, 1, None, "flooded to the other access port of VLAN 10");
    assert_arrives(s4, 1, Some(10), "flooded to the trunk, tagged");
    assert_silent(s3, 1, "flooded into VLAN 20");
    assert_silent(s1, 1, "flooded back out of its ingress port");
    assert_eq!(counter(&daemon, "swp1", "flooded"), 1);

    s2.send(&test_frame(BROADCAST, h2.mac, None, 2)).unwrap();
    daemon.wait_fdb(10, h2.mac, "swp2").unwrap();
    s1.send(&test_frame(h2.mac, h1.mac, None, 3)).unwrap();
    assert_arrives(s2, 3, None, "known unicast delivered");
    assert_silent(s4, 3, "known unicast flooded to the trunk");
    assert_eq!(counter(&daemon, "swp1", "flooded"), 1);
}

// What this shows: learned MACs appear in `xnos show fdb --json`, a station move is
// followed, a static entry is never overwritten by learning, and learned entries age out.
#[test]
fn fdb_learns_follows_moves_keeps_statics_and_ages() {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2"]).unwrap();
    let config = Config::access_ports(&[10, 10])
        .switch("fdb-aging", 2u32)
        .fdb("02:00:00:00:00:55", 10, "swp1");
    let daemon = Daemon::start(&topo.switch, &config).unwrap();
    assert_fast_path(&topo, &daemon);
    let (h1, h2) = (&topo.hosts[0], &topo.hosts[1]);
    let (s1, s2) = (h1.socket().unwrap(), h2.socket().unwrap());

    s1.send(&test_frame(BROADCAST, h1.mac, None, 1)).unwrap();
    let entry = daemon.wait_fdb(10, h1.mac, "swp1").unwrap();
    assert_eq!(
        (entry["kind"].as_str(), entry["moves"].as_u64()),
        (Some("learned"), Some(0))
    );

    // h1's MAC now shows up behind swp2: the station moved.
    s2.send(&test_frame(BROADCAST, h1.mac, None, 2)).unwrap();
    let entry = daemon.wait_fdb(10, h1.mac, "swp2").unwrap();
    assert_eq!(entry["moves"], 1);

    let fixed = [2, 0, 0, 0, 0, 0x55];
    s2.send(&test_frame(BROADCAST, fixed, None, 3)).unwrap();
    assert_arrives(&s1, 3, None, "frame from the static MAC still forwarded");
    let fdb = daemon.json("fdb").unwrap();
    let rows: Vec<_> = fdb
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["mac"] == format_mac(fixed).as_str())
        .collect();
    assert_eq!(rows.len(), 1, "{fdb}");
    assert_eq!(
        (rows[0]["port"].as_str(), rows[0]["kind"].as_str()),
        (Some("swp1"), Some("static"))
    );
    let table = daemon.xnos(&["show", "fdb"]).unwrap();
    assert!(
        table.contains(&format_mac(h1.mac)) && table.contains("static"),
        "{table}"
    );

    // With 2 s aging the learned entry goes within a few seconds; the static one stays.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let fdb = daemon.json("fdb").unwrap();
        let rows = fdb.as_array().unwrap();
        if rows.iter().all(|e| e["kind"] == "static") {
            assert_eq!(rows.len(), 1);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "learned entries never aged out: {fdb}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How many clients of each listing stop reading it in the MAC flood test.
const STALLED_LISTINGS: usize = 8;

/// How much those clients may grow xnosd's RSS by, in kB, together.
const STALLED_LISTINGS_KB: u64 = 32 << 10;

/// `GET path` from `daemon`'s API, read until the answer has begun, and then not read any
/// more: a client that stalls.
fn stalled_listing(daemon: &Daemon, path: &str) -> UnixStream {
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: xnosd\r\n\r\n").unwrap();
    let mut begun = Vec::new();
    let mut buf = [0; 4096];
    // The header and a first byte of the body.
    while begun
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .is_none_or(|end| begun.len() <= end + 4)
    {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "GET {path}: the connection closed");
        begun.extend_from_slice(&buf[..n]);
    }
    assert!(
        begun.starts_with(b"HTTP/1.1 200"),
        "GET {path}: {}",
        String::from_utf8_lossy(&begun)
    );
    stream
}

/// Ask `GET /v1/ready` every 200 ms until `stop`: each answer's status (or why none came
/// within 30 s), and the longest wait for one.
fn poll_ready(daemon: &Daemon, stop: &AtomicBool) -> (Vec<Result<u16, String>>, Duration) {
    let mut answers = Vec::new();
    let mut slowest = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        let asked = Instant::now();
        let answer = daemon
            .api_get("/v1/ready", Duration::from_secs(30))
            .map(|(status, _)| status)
            .map_err(|e| format!("{e:#}"));
        slowest = slowest.max(asked.elapsed());
        answers.push(answer);
        std::thread::sleep(Duration::from_millis(200));
    }
    (answers, slowest)
}

// What this shows: a flood of random source MACs fills the FDB; then new MACs are
// refused and counted (in `show ports`, `show fdb` and the metrics) while the stations
// learned before and a static entry keep forwarding as known unicast, and xnosd's memory
// stays bounded (printed, with a generous bound: the bench judges memory).
#[test]
fn a_mac_flood_fills_the_fdb_without_evicting_stations() {
    require_root!();
    const METRICS: &str = "127.0.0.1:9417";
    let topo = Topology::new(&["swp1", "swp2", "swp3"]).unwrap();
    let config = Config::access_ports(&[10, 10, 10])
        .switch("fdb-aging", 120u32)
        .fdb("02:00:00:00:00:55", 10, "swp2");
    let daemon = Daemon::start_with(&topo.switch, &config, &["--metrics-listen", METRICS]).unwrap();
    assert_fast_path(&topo, &daemon);
    let (h1, h2, h3) = (&topo.hosts[0], &topo.hosts[1], &topo.hosts[2]);
    h1.add_address("10.0.10.1/24").unwrap();
    h2.add_address("10.0.10.2/24").unwrap();
    assert!(h1.reachable("10.0.10.2"), "h1 and h2 talk before the flood");
    let s3 = h3.socket().unwrap();
    s3.send(&test_frame(BROADCAST, h3.mac, None, 1)).unwrap();
    daemon.wait_fdb(10, h3.mac, "swp3").unwrap();
    daemon.wait_fdb(10, h1.mac, "swp1").unwrap();
    daemon.wait_fdb(10, h2.mac, "swp2").unwrap();

    let commits = |metrics: &str| sample(metrics, "xnos_statedb_commits_total").unwrap();
    let commits_before = commits(&http_get(&topo.switch, METRICS, "/metrics").unwrap());
    let pid = daemon.pid().unwrap();
    let (rss_before, cpu_before) = (status_kib(pid, "VmRSS"), cpu_time(pid));
    let capacity = u64::from(xnos_common::FDB_SIZE);
    let stop_polling = AtomicBool::new(false);
    // The API is asked all along the flood and the sync of the full table that follows it.
    let (refused, metrics) = std::thread::scope(|scope| {
        let poller = scope.spawn(|| poll_ready(&daemon, &stop_polling));
        let ping = h1
            .ns
            .command("ping")
            .args(["-i", "0.2", "-c", "25", "-W", "1", "-q", "10.0.10.2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Addressed to h3 itself: the switch learns the source and filters the frame
        // (same port), so the flood costs the learning and not the stations' links.
        let start = Instant::now();
        let mut sent = 0u64;
        for mac in RandomMacs(0x9e37_79b9_7f4a_7c15).take(2 * capacity as usize) {
            s3.send(&test_frame(h3.mac, mac, None, 2)).unwrap();
            sent += 1;
            if sent.is_multiple_of(1024) && start.elapsed() > Duration::from_secs(20) {
                break;
            }
        }
        let flood_secs = start.elapsed().as_secs_f64();
        let ping = ping.wait_with_output().unwrap();
        let ping = String::from_utf8_lossy(&ping.stdout);
        let (rss_after, cpu_after) = (status_kib(pid, "VmRSS"), cpu_time(pid));
        println!(
            "sent {sent} source MACs in {flood_secs:.1} s; xnosd RSS {rss_before} -> {rss_after} kB \
         (peak {} kB), CPU time {:?} -> {:?}; ping during the flood: {}",
            status_kib(pid, "VmHWM"),
            cpu_before,
            cpu_after,
            ping.lines()
                .find(|l| l.contains("transmitted"))
                .unwrap_or("?"),
        );

        let refused = counter(&daemon, "swp3", "learn-refused");
        println!("refused {refused}");
        assert!(
            refused > 0,
            "the flood did not fill the FDB: {sent} MACs sent, none refused"
        );
        assert_eq!(counter(&daemon, "swp1", "learn-refused"), 0);

        // The stations and the static entry forward as known unicast: nothing floods.
        let flooded = counter(&daemon, "swp1", "flooded");
        assert!(h1.ping("10.0.10.2", 3), "h1 reaches h2 with the FDB full");
        let s1 = h1.socket().unwrap();
        let s2 = h2.socket().unwrap();
        s1.send(&test_frame([2, 0, 0, 0, 0, 0x55], h1.mac, None, 3))
            .unwrap();
        assert_arrives(&s2, 3, None, "a frame to the static MAC goes to swp2");
        assert_eq!(
            counter(&daemon, "swp1", "flooded"),
            flooded,
            "h1's frames flooded"
        );
        daemon.wait_fdb(10, h1.mac, "swp1").unwrap();
        daemon.wait_fdb(10, h2.mac, "swp2").unwrap();

        // The learn-event ring had no room for most of the burst: xnosd reads those entries
        // from the map when it sees events lost, within a second or two, not at its next
        // scan (fdb-aging / 4 = 30 s here).
        let deadline = Instant::now() + Duration::from_secs(10);
        let metrics = loop {
            let metrics = http_get(&topo.switch, METRICS, "/metrics").unwrap();
            let entries = sample(&metrics, r#"xnos_table_entries{table="fdb"}"#);
            if entries == Some(capacity) || Instant::now() > deadline {
                break metrics;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        stop_polling.store(true, Ordering::Relaxed);
        let (answers, slowest) = poller.join().unwrap();
        println!(
            "GET /v1/ready during the flood and the sync of the full table: {} answers, the \
         slowest in {:.2} s",
            answers.len(),
            slowest.as_secs_f64()
        );
        assert!(
            !answers.is_empty() && answers.iter().all(|a| a.as_ref().is_ok_and(|s| *s == 200)),
            "the API did not answer every request during the flood: {answers:?}"
        );
        (refused, metrics)
    });
    println!(
        "StateDb commits: {} during the flood and after it",
        commits(&metrics) - commits_before
    );
    assert_eq!(
        sample(&metrics, r#"xnos_table_entries{table="fdb"}"#),
        Some(capacity),
        "the whole table in StateDb"
    );
    assert_eq!(
        sample(&metrics, r#"xnos_fdb_learn_refused_total{port="swp3"}"#),
        Some(refused)
    );
    // What the ring had no room for is counted where an operator looks, the same in both.
    let events_lost = sample(&metrics, r#"xnos_fdb_learn_events_lost_total{port="swp3"}"#);
    println!("learn events lost: {events_lost:?}");
    assert_eq!(
        events_lost,
        Some(counter(&daemon, "swp3", "learn-events-lost")),
        "xnos_fdb_learn_events_lost_total and show ports' learn-events-lost"
    );
    // Listings of the full table stream: a client that stops reading holds up a chunk or
    // two of JSON in xnosd, not a copy of the table nor all of its JSON (13 MiB for
    // /v1/fdb). The bound is far above the former (a 64 KiB chunk and hyper's buffers per
    // client) and far below what the latter costs for this many clients.
    let rss_listing = status_kib(pid, "VmRSS");
    let stalled: Vec<UnixStream> = ["/v1/fdb", "/v1/db/fdb-learned"]
        .into_iter()
        .cycle()
        .take(2 * STALLED_LISTINGS)
        .map(|path| stalled_listing(&daemon, path))
        .collect();
    let rss_stalled = status_kib(pid, "VmRSS");
    println!(
        "{STALLED_LISTINGS} clients each of /v1/fdb and /v1/db/fdb-learned that stopped \
         reading: xnosd RSS {rss_listing} -> {rss_stalled} kB"
    );
    assert!(
        rss_stalled.saturating_sub(rss_listing) < STALLED_LISTINGS_KB,
        "{} clients that stopped reading listings of the full FDB grew xnosd from \
         {rss_listing} to {rss_stalled} kB; the bound is {STALLED_LISTINGS_KB} kB",
        2 * STALLED_LISTINGS
    );
    drop(stalled);
    let shown = Instant::now();
    let fdb = daemon.json_raw(&["show", "fdb", "--json"]).unwrap();
    assert_eq!(fdb.as_array().unwrap().len() as u64, capacity);
    let rows = daemon
        .json_raw(&["db", "get", "fdb-learned", "--json"])
        .unwrap();
    assert_eq!(rows.as_array().unwrap().len() as u64, capacity - 1);
    let text = daemon.xnos(&["show", "fdb"]).unwrap();
    println!(
        "show fdb --json, db get fdb-learned --json and show fdb of the full table: {:.1} s",
        shown.elapsed().as_secs_f64()
    );
    let tail: Vec<&str> = text.lines().skip(text.lines().count() - 3).collect();
    println!("{}", tail.join("\n"));
    assert_eq!(
        tail[1..],
        [
            format!("fast-path FDB: {capacity} of {capacity} entries in use (full)"),
            format!("{refused} new MACs refused (no room to learn them): swp3 {refused}"),
        ]
    );
    // Every learned MAC is a row in StateDb: that much memory is the table's, whatever
    // the flood's size. The bound is generous (the bench judges memory): 4 kB a row.
    let rss_final = status_kib(pid, "VmRSS");
    println!("xnosd RSS after showing the table: {rss_final} kB");
    assert!(
        rss_final.saturating_sub(rss_before) < capacity * 4,
        "xnosd grew from {rss_before} to {rss_final} kB"
    );
}

// What this shows: a bad config keeps xnosd from starting, with an error naming the key
// and line, and leaves every interface untouched.
#[test]
fn invalid_config_is_refused_and_nothing_is_attached() {
    require_root!();
    let topo = Topology::new(&["swp1"]).unwrap();
    let cases = [
        (
            "[[port]]\nname = \"swp9\"\nmode = \"access\"\nvlan = 10\n",
            "2: port[0].name: no kernel interface named \"swp9\"",
        ),
        (
            "[[port]]\nname = \"swp1\"\nmode = \"access\"\nvlan = 5000\n",
            "4: port[0].vlan: VLAN 5000 is out of range 1..4094",
        ),
        (
            "[[port]]\nname = \"swp1\"\nmode = \"access\"\n",
            "1: port[0].vlan: access port \"swp1\" needs",
        ),
        (
            "[[port]]\nname = \"swp1\"\nmode = \"access\"\nvlan = 1\n[[port]]\nname = \"swp1\"\nmode = \"access\"\nvlan = 2\n",
            "6: port[1].name: port \"swp1\" is listed twice",
        ),
        ("[[port]\nname = \"swp1\"\n", "1: (syntax)"),
    ];
    let dir = std::env::temp_dir().join(xnos_tests::unique_name("xnos-bad-"));
    std::fs::create_dir_all(&dir).unwrap();
    for (config, expected) in cases {
        let path = dir.join("bad.toml");
        std::fs::write(&path, config).unwrap();
        let output = topo
            .switch
            .command(binary("xnosd").unwrap().to_str().unwrap())
            .arg("--config")
            .arg(&path)
            .arg("--socket")
            .arg(dir.join("sock"))
            .arg("--pin-dir")
            .arg(dir.join("bpf"))
            .stdout(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr:?}"
        );
        assert!(
            !topo.xdp_attached("swp1").unwrap(),
            "XDP attached despite a bad config"
        );
        assert!(!dir.join("sock").exists() && !dir.join("bpf").exists());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

// What this shows: SIGTERM leaves the programs on the ports (for the next xnosd to take
// over) and removes the socket and pins; `xnosd --remove-datapath` takes the programs off,
// and is refused while an xnosd runs.
#[test]
fn sigterm_keeps_the_datapath_and_remove_datapath_takes_it_off() {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2"]).unwrap();
    let config = Config::new().access("swp1", 1).trunk("swp2", &[1]);
    let mut daemon = Daemon::start(&topo.switch, &config).unwrap();
    assert!(topo.xdp_attached("swp1").unwrap() && topo.xdp_attached("swp2").unwrap());
    let status = daemon.stop().unwrap();
    assert!(
        status.success(),
        "xnosd exited with {status}: {}",
        daemon.log()
    );
    assert!(topo.xdp_attached("swp1").unwrap() && topo.xdp_attached("swp2").unwrap());
    assert!(!daemon.socket.exists(), "socket left behind");
    assert!(
        !daemon.dir.join("bpf").exists(),
        "pin directory left behind"
    );
    assert!(
        daemon.log().contains("the datapath stays on the ports"),
        "{}",
        daemon.log()
    );
    let (socket, pins) = (daemon.socket.clone(), daemon.dir.join("bpf"));
    let remove = || {
        topo.switch
            .command(binary("xnosd").unwrap().to_str().unwrap())
            .args(["--remove-datapath", "--socket"])
            .arg(&socket)
            .arg("--pin-dir")
            .arg(&pins)
            .output()
            .unwrap()
    };
    // Refused while an xnosd serves the socket, and nothing is taken off.
    daemon.start_again(&topo.switch).unwrap();
    let refused = remove();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("stop it first"),
        "{refused:?}"
    );
    assert!(topo.xdp_attached("swp1").unwrap() && topo.xdp_attached("swp2").unwrap());
    daemon.stop().unwrap();
    let removed = remove();
    let out = String::from_utf8_lossy(&removed.stdout);
    assert!(removed.status.success(), "{removed:?}");
    assert!(
        out.contains("swp1: xdp-native removed") && out.contains("datapath removed from 2 ports"),
        "{out}"
    );
    assert!(!topo.xdp_attached("swp1").unwrap() && !topo.xdp_attached("swp2").unwrap());
}

// What this shows: the CLI says clearly when no daemon is listening.
#[test]
fn cli_without_a_daemon_fails_clearly() {
    let output = std::process::Command::new(binary("xnos").unwrap())
        .args(["--socket", "/nonexistent/xnosd.sock", "show", "ports"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach xnosd at /nonexistent/xnosd.sock"),
        "{stderr}"
    );
}

// What this shows: `datapath` picks the XDP mode per port, `xnos show ports` says which
// mode is in use and why, and ports in different modes switch to each other.
#[test]
fn per_port_datapath_mode_is_applied_and_explained() {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2"]).unwrap();
    for (i, host) in topo.hosts.iter().enumerate() {
        host.add_address(&format!("10.0.0.{}/24", i + 1)).unwrap();
    }
    let config = Config::new()
        .access("swp1", 10)
        .access("swp2", 10)
        .set("datapath", "xdp-generic");
    let daemon = Daemon::start(&topo.switch, &config).unwrap();
    let ports = daemon.json("ports").unwrap();
    let port = |name: &str| find_by(&ports, "name", name);
    assert_eq!(port("swp1")["datapath"], "xdp-native");
    assert!(
        port("swp1")["datapath-reason"]
            .as_str()
            .unwrap()
            .starts_with("auto"),
        "{ports}"
    );
    assert_eq!(port("swp2")["datapath"], "xdp-generic");
    assert_eq!(
        port("swp2")["datapath-reason"],
        "configured: datapath = \"xdp-generic\""
    );
    let link = topo
        .switch
        .ip(&["-d", "link", "show", "dev", "swp2"])
        .unwrap();
    assert!(link.contains("xdpgeneric"), "{link}");
    let table = daemon.xnos(&["show", "ports"]).unwrap();
    assert!(table.contains("swp2: xdp-generic, configured"), "{table}");
    assert!(
        topo.hosts[0].ping("10.0.0.2", 3),
        "native <-> generic ports do not switch"
    );
    assert!(
        counter(&daemon, "swp2", "rx-packets") >= 3,
        "generic XDP did not see the replies"
    );
}

// What this shows: `auto` falls back port by port, and says why: a port whose XDP hook
// another program already holds gets the TC datapath (behind that program), a port whose
// peer MTU is too large for native XDP on veth gets generic XDP, a VXLAN port (whose driver
// reports no native XDP) gets generic XDP without trying; the driver's XDP features are
// shown, with a warning for a port native XDP cannot redirect to; and they all switch.
#[test]
fn auto_falls_back_to_generic_xdp_and_to_tc_with_the_reason() {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2", "swp3", "swp4"]).unwrap();
    for (i, host) in topo.hosts.iter().enumerate() {
        host.add_address(&format!("10.0.0.{}/24", i + 1)).unwrap();
    }
    // Another program (one that passes every frame; not one of xnos, which xnosd would
    // take over) holds swp1's XDP hook in native mode.
    let other = ForeignXdp::attach(&topo.switch, "swp1", aya::programs::XdpMode::Driver).unwrap();
    // Jumbo frames on swp3's peer: veth refuses native XDP programs that lack multi-buffer
    // support.
    topo.hosts[2]
        .ns
        .ip(&["link", "set", "eth0", "mtu", "9000"])
        .unwrap();
    // Without GRO (or XDP) on its peer, a veth cannot take XDP-redirected frames.
    topo.hosts[3]
        .ns
        .exec("ethtool", &["-K", "eth0", "gro", "off"])
        .unwrap();
    topo.switch
        .ip(&[
            "link", "add", "vx0", "type", "vxlan", "id", "5", "dstport", "4789",
        ])
        .unwrap();
    topo.switch.ip(&["link", "set", "vx0", "up"]).unwrap();

    let config = Config::access_ports(&[10, 10, 10, 20]).access("vx0", 10);
    let daemon = Daemon::start(&topo.switch, &config).unwrap();
    let ports = daemon.json("ports").unwrap();
    let port = |name: &str| find_by(&ports, "name", name);
    let reason = |name: &str| port(name)["datapath-reason"].as_str().unwrap().to_string();
    assert_eq!(port("swp1")["datapath"], "tc", "{ports}");
    assert!(
        reason("swp1").contains("xdp-native unavailable")
            && reason("swp1").contains("xdp-generic unavailable"),
        "{ports}"
    );
    assert_eq!(topo.tc_programs("swp1").unwrap(), ["xnos_tc_ingress"]);
    assert_eq!(port("swp2")["datapath"], "xdp-native", "{ports}");
    assert_eq!(port("swp3")["datapath"], "xdp-generic", "{ports}");
    assert!(reason("swp3").contains("xdp-native unavailable"), "{ports}");
    assert_eq!(port("vx0")["datapath"], "xdp-generic", "{ports}");
    assert_eq!(port("vx0")["xdp-features"], "none", "{ports}");
    assert!(
        reason("vx0").contains("the driver has no native XDP (xdp-features: none)"),
        "{ports}"
    );
    assert!(
        port("swp2")["xdp-features"]
            .as_str()
            .unwrap()
            .contains("redirect,ndo-xmit"),
        "{ports}"
    );
    assert_eq!(port("swp2")["xdp-redirect-target"], true, "{ports}");
    assert_eq!(port("swp4")["xdp-redirect-target"], false, "{ports}");
    let table = daemon.xnos(&["show", "ports"]).unwrap();
    assert!(
        table.contains("swp1: tc, auto: xdp-native unavailable"),
        "{table}"
    );
    assert!(
        table.contains("swp4: warning: native-XDP ports cannot send it frames"),
        "{table}"
    );
    assert!(!table.contains("swp2: warning"), "{table}");

    assert!(topo.hosts[0].ping("10.0.0.2", 3), "tc <-> native XDP");
    assert!(topo.hosts[0].ping("10.0.0.3", 3), "tc <-> generic XDP");
    assert!(topo.hosts[2].ping("10.0.0.2", 3), "generic <-> native XDP");
    assert!(
        counter(&daemon, "swp1", "rx-packets") >= 6,
        "the TC pipeline did not count swp1's frames"
    );
    drop(other);
}
