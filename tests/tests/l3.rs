//! End-to-end L3 tests: hosts in two VLANs routed by the XDP fast path through SVIs, a
//! routed port, kernel routes followed by the fast path, and ECMP.

use std::time::{Duration, Instant};

use xnos_tests::{Config, Daemon, Host, PacketSocket, Topology, require_root};

const ROUTER_MAC: [u8; 6] = [2, 0, 0, 0, 1, 0];

/// swp1 in VLAN 10, swp2 and swp3 in VLAN 20, an SVI with IPv4 and IPv6 in each.
fn two_vlans() -> Config {
    Config::access_ports(&[10, 20, 20])
        .switch("router-mac", "02:00:00:00:01:00")
        .svi(10, &["10.0.10.1/24", "fd00:10::1/64"])
        .svi(20, &["10.0.20.1/24", "fd00:20::1/64"])
}

/// Give host `host` addresses in its VLAN's subnets and default routes via the SVI.
fn address(host: &Host, vlan: u16, id: u8) {
    host.add_address_via(&format!("10.0.{vlan}.{id}/24"), &format!("10.0.{vlan}.1"))
        .unwrap();
    host.ns
        .exec("sysctl", &["-qw", "net.ipv6.conf.all.disable_ipv6=0"])
        .unwrap();
    host.ns
        .exec("sysctl", &["-qw", "net.ipv6.conf.eth0.disable_ipv6=0"])
        .unwrap();
    host.ns
        .ip(&[
            "-6",
            "addr",
            "add",
            &format!("fd00:{vlan}::{id}/64"),
            "dev",
            "eth0",
            "nodad",
        ])
        .unwrap();
    host.ns
        .ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &format!("fd00:{vlan}::1"),
        ])
        .unwrap();
}

fn routes(daemon: &Daemon) -> serde_json::Value {
    daemon.json("routes").unwrap()
}

fn routed(daemon: &Daemon, family: &str) -> u64 {
    routes(daemon)["counters"][family].as_u64().unwrap()
}

fn punts(daemon: &Daemon, reason: &str) -> u64 {
    routes(daemon)["counters"]["punts"][reason]
        .as_u64()
        .unwrap()
}

/// The IPv4 or IPv6 ICMP echo requests `sock` receives within `wait`: (src MAC, TTL).
fn echo_requests(sock: &PacketSocket, wait: Duration) -> Vec<([u8; 6], u8)> {
    sock.collect(wait, |_| true)
        .iter()
        .filter_map(|frame| {
            let packet = etherparse::SlicedPacket::from_ethernet(frame).ok()?;
            let Some(etherparse::LinkSlice::Ethernet2(eth)) = &packet.link else {
                return None;
            };
            let ttl = match &packet.net {
                Some(etherparse::NetSlice::Ipv4(ip)) => ip.header().ttl(),
                Some(etherparse::NetSlice::Ipv6(ip)) => ip.header().hop_limit(),
                _ => return None,
            };
            let request = match &packet.transport {
                Some(etherparse::TransportSlice::Icmpv4(icmp)) => {
                    matches!(icmp.icmp_type(), etherparse::Icmpv4Type::EchoRequest(_))
                }
                Some(etherparse::TransportSlice::Icmpv6(icmp)) => {
                    matches!(icmp.icmp_type(), etherparse::Icmpv6Type::EchoRequest(_))
                }
                _ => false,
            };
            request.then_some((eth.source(), ttl))
        })
        .collect()
}

// What this shows: hosts in two VLANs ping each other over IPv4 and IPv6 through the
// SVIs; the packets were routed by XDP (routed counters) with TTL decreased by exactly one
// and the router MAC as source; traceroute shows the switch as a hop.
#[test]
fn hosts_in_two_vlans_are_routed_by_the_fast_path() {
    routed_case(false);
}

// What this shows: the same with the host ports on the TC datapath: the shared pipeline
// routes at TC ingress, into the XDP SVI ports and back.
#[test]
fn hosts_in_two_vlans_are_routed_by_the_tc_datapath() {
    routed_case(true);
}

fn routed_case(tc: bool) {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2", "swp3"]).unwrap();
    let config = if tc {
        two_vlans().replace(
            "mode = \"access\"\n",
            "mode = \"access\"\ndatapath = \"tc\"\n",
        )
    } else {
        two_vlans().to_string()
    };
    let daemon = Daemon::start(&topo.switch, &config).unwrap();
    let (h1, h2) = (&topo.hosts[0], &topo.hosts[1]);
    address(h1, 10, 2);
    address(h2, 20, 2);
    assert!(topo.no_bridge().unwrap());
    for port in ["swp1", "swp2"] {
        if tc {
            assert_eq!(topo.tc_programs(port).unwrap(), ["xnos_tc_ingress"]);
        } else {
            assert!(topo.xdp_attached(port).unwrap(), "no XDP on {port}");
        }
    }
    for port in ["vlan10i", "vlan20i"] {
        assert!(topo.xdp_attached(port).unwrap(), "no XDP on {port}");
    }
    let ifaces = daemon.json("interfaces").unwrap();
    assert_eq!(ifaces.as_array().unwrap().len(), 2, "{ifaces}");

    assert!(h1.reachable("10.0.20.2"), "no IPv4 path between the VLANs");
    assert!(h1.reachable("fd00:20::2"), "no IPv6 path between the VLANs");
    let (v4, v6) = (routed(&daemon, "routed-v4"), routed(&daemon, "routed-v6"));
    let capture = h2.socket().unwrap();
    assert!(h1.ping("10.0.20.2", 5) && h1.ping("fd00:20::2", 5));
    assert!(
        routed(&daemon, "routed-v4") >= v4 + 10,
        "IPv4 echo and reply not routed by the fast path"
    );
    assert!(
        routed(&daemon, "routed-v6") >= v6 + 10,
        "IPv6 echo and reply not routed by the fast path"
    );
    let requests = echo_requests(&capture, Duration::from_millis(300));
    assert_eq!(requests.len(), 10, "{requests:?}");
    for (src, ttl) in requests {
        assert_eq!(src, ROUTER_MAC, "routed packets leave with the router MAC");
        assert_eq!(ttl, 63, "TTL/hop limit decreased by exactly one");
    }

    let trace = h1
        .ns
        .exec("traceroute", &["-n", "-q", "1", "-w", "2", "10.0.20.2"])
        .unwrap();
    let hops: Vec<&str> = trace
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(hops, ["10.0.10.1", "10.0.20.2"], "{trace}");
    assert!(
        punts(&daemon, "ttl-expired") >= 1,
        "TTL expiry not punted to the kernel"
    );

    let table = daemon.xnos(&["show", "routes"]).unwrap();
    assert!(
        table.lines().any(|l| l.starts_with("10.0.20.0/24")
            && l.contains("dev vlan20")
            && l.contains("yes")),
        "{table}"
    );
    let neighbors = daemon.json("neighbors").unwrap();
    assert!(
        neighbors
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["ip"] == "10.0.20.2" && n["fast-path"] == true),
        "{neighbors}"
    );
}

// What this shows: a route added with `ip route` in the switch namespace is followed by
// the fast path, and removing it stops the forwarding; a routed port carries traffic too.
#[test]
fn kernel_routes_are_followed_and_routed_ports_route() {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2", "swp5"]).unwrap();
    let config = two_vlans().replace(
        "[[port]]\nname = \"swp3\"\nmode = \"access\"\nvlan = 20\n",
        "[[interface]]\nport = \"swp5\"\naddresses = [\"10.0.99.1/30\"]\n",
    );
    let daemon = Daemon::start(&topo.switch, &config).unwrap();
    let (h1, h2, h5) = (&topo.hosts[0], &topo.hosts[1], &topo.hosts[2]);
    address(h1, 10, 2);
    address(h2, 20, 2);
    h5.add_address_via("10.0.99.2/30", "10.0.99.1").unwrap();
    assert!(h1.reachable("10.0.99.2"), "routed port unreachable");
    let ports = daemon.json("ports").unwrap();
    assert_eq!(
        ports.as_array().unwrap().len(),
        2,
        "the routed port is no switch port: {ports}"
    );

    h2.ns
        .ip(&["addr", "add", "10.99.1.1/32", "dev", "lo"])
        .unwrap();
    assert!(!h1.ping("10.99.1.1", 1));
    topo.switch
        .ip(&["route", "add", "10.99.0.0/16", "via", "10.0.20.2"])
        .unwrap();
    assert!(
        h1.reachable("10.99.1.1"),
        "route added with ip route not followed"
    );
    let before = routed(&daemon, "routed-v4");
    assert!(h1.ping("10.99.1.1", 3));
    assert!(
        routed(&daemon, "routed-v4") >= before + 6,
        "not forwarded by XDP"
    );
    let view = routes(&daemon);
    let route = view["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["prefix"] == "10.99.0.0/16")
        .cloned()
        .unwrap_or_else(|| panic!("{view}"));
    assert_eq!(
        (route["fast-path"].as_bool(), route["protocol"].as_str()),
        (Some(true), Some("boot"))
    );

    topo.switch.ip(&["route", "del", "10.99.0.0/16"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while h1.ping("10.99.1.1", 1) {
        assert!(
            Instant::now() < deadline,
            "still forwarded after the route was removed"
        );
    }
}

/// A UDP packet from `src` to 10.99.1.1 through the router, from source port `port`.
fn udp_to_anycast(src: &Host, port: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    etherparse::PacketBuilder::ethernet2(src.mac, ROUTER_MAC)
        .ipv4([10, 0, 10, 2], [10, 99, 1, 1], 64)
        .udp(port, 9999)
        .write(&mut frame, b"ecmp")
        .unwrap();
    frame
}

fn udp_count(sock: &PacketSocket) -> usize {
    sock.collect(Duration::from_millis(500), |frame| {
        etherparse::SlicedPacket::from_ethernet(frame).is_ok_and(|p| {
            matches!(&p.transport, Some(etherparse::TransportSlice::Udp(u)) if u.destination_port() == 9999)
        })
    })
    .len()
}

// What this shows: a config route with two nexthops becomes a kernel multipath route and
// an ECMP group in the fast path, which spreads many flows over both nexthops.
#[test]
fn ecmp_spreads_flows_over_both_nexthops() {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2", "swp3"]).unwrap();
    let config = two_vlans().route("10.99.0.0/16", &["10.0.20.2", "10.0.20.3"]);
    let daemon = Daemon::start(&topo.switch, &config).unwrap();
    let (h1, h2, h3) = (&topo.hosts[0], &topo.hosts[1], &topo.hosts[2]);
    address(h1, 10, 2);
    address(h2, 20, 2);
    address(h3, 20, 3);
    for host in [h2, h3] {
        host.ns
            .ip(&["addr", "add", "10.99.1.1/32", "dev", "lo"])
            .unwrap();
    }
    // The kernel resolves both nexthops (in real life, its own traffic or the punted
    // first packets do this).
    for gw in ["10.0.20.2", "10.0.20.3"] {
        topo.switch
            .exec("ping", &["-c", "1", "-W", "2", gw])
            .unwrap();
    }
    let route = topo.switch.ip(&["route", "show", "10.99.0.0/16"]).unwrap();
    assert!(
        route.contains("nexthop via 10.0.20.2") && route.contains("nexthop via 10.0.20.3"),
        "{route}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !routes(&daemon)["routes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["prefix"] == "10.99.0.0/16" && r["fast-path"] == true)
    {
        assert!(Instant::now() < deadline, "ECMP route not in the fast path");
        std::thread::sleep(Duration::from_millis(50));
    }

    let (s1, s2, s3) = (
        h1.socket().unwrap(),
        h2.socket().unwrap(),
        h3.socket().unwrap(),
    );
    let flows = 64;
    let before = routed(&daemon, "routed-v4");
    for port in 0..flows {
        s1.send(&udp_to_anycast(h1, 20_000 + port)).unwrap();
    }
    let (at_h2, at_h3) = (udp_count(&s2), udp_count(&s3));
    assert_eq!(
        at_h2 + at_h3,
        flows as usize,
        "every flow arrives exactly once"
    );
    assert!(
        at_h2 >= 8 && at_h3 >= 8,
        "flows not spread: {at_h2} via h2, {at_h3} via h3"
    );
    assert!(routed(&daemon, "routed-v4") >= before + u64::from(flows));

    // One flow always takes the same path.
    for _ in 0..10 {
        s1.send(&udp_to_anycast(h1, 20_000)).unwrap();
    }
    let (again_h2, again_h3) = (udp_count(&s2), udp_count(&s3));
    assert!(
        (again_h2, again_h3) == (10, 0) || (again_h2, again_h3) == (0, 10),
        "{again_h2} {again_h3}"
    );
}

// What this shows: SVIs and config routes added and removed at runtime (config apply)
// reach the kernel and the fast path, and removing them undoes both.
#[test]
fn l3_config_changes_take_effect_at_runtime() {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2"]).unwrap();
    let base = Config::access_ports(&[10, 20])
        .switch("router-mac", "02:00:00:00:01:00")
        .svi(10, &["10.0.10.1/24"]);
    let daemon = Daemon::start(&topo.switch, &base).unwrap();
    let (h1, h2) = (&topo.hosts[0], &topo.hosts[1]);
    h1.add_address_via("10.0.10.2/24", "10.0.10.1").unwrap();
    h2.add_address_via("10.0.20.2/24", "10.0.20.1").unwrap();
    h2.ns
        .ip(&["addr", "add", "10.99.1.1/32", "dev", "lo"])
        .unwrap();
    assert!(
        !h1.ping("10.0.20.2", 1),
        "VLAN 20 routed before it has an SVI"
    );

    let more = daemon.dir.join("more.toml");
    let more_config = base
        .clone()
        .svi(20, &["10.0.20.1/24"])
        .route("10.99.0.0/16", &["10.0.20.2"]);
    std::fs::write(&more, more_config).unwrap();
    let applied = daemon
        .xnos(&["config", "apply", more.to_str().unwrap()])
        .unwrap();
    assert!(
        applied.contains("+ [[interface]] name = \"vlan20\"")
            && applied.contains("+ [[route]] prefix = \"10.99.0.0/16\""),
        "{applied}"
    );
    assert!(
        h1.reachable("10.0.20.2"),
        "SVI added at runtime does not route"
    );
    assert!(
        h1.reachable("10.99.1.1"),
        "route added at runtime not followed"
    );
    let kernel = topo.switch.ip(&["route", "show", "10.99.0.0/16"]).unwrap();
    assert!(
        kernel.contains("via 10.0.20.2") && kernel.contains("proto 201"),
        "{kernel}"
    );

    let again = daemon.dir.join("base.toml");
    std::fs::write(&again, &base).unwrap();
    let applied = daemon
        .xnos(&["config", "apply", again.to_str().unwrap()])
        .unwrap();
    assert!(
        applied.contains("- [[interface]] name = \"vlan20\"")
            && applied.contains("- [[route]] prefix = \"10.99.0.0/16\""),
        "{applied}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !topo
        .switch
        .ip(&["route", "show", "10.99.0.0/16"])
        .unwrap()
        .trim()
        .is_empty()
        || topo.switch.ip(&["link", "show", "vlan20"]).is_ok()
    {
        assert!(Instant::now() < deadline, "config route or SVI left behind");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !h1.ping("10.0.20.2", 1),
        "still routed after the SVI was removed"
    );
}

/// The MAC `host` holds for `ip` in its neighbour table, if any.
fn neighbor_mac(host: &Host, ip: &str) -> Option<String> {
    let out = host.ns.ip(&["neigh", "show", ip, "dev", "eth0"]).unwrap();
    let mut words = out.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next().map(str::to_string)
}

/// The sum of the L3 punt counters over every reason.
fn all_punts(daemon: &Daemon) -> u64 {
    routes(daemon)["counters"]["punts"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum()
}

// What this shows: a packet L3 punts to the kernel (a ping to the router itself) counts as
// punted on its ingress port, one for one with the global punt counters; and a new router
// MAC applied at runtime reaches the hosts at once (gratuitous ARP, unsolicited neighbour
// advertisement), without their probing, so they keep reaching and routing through their
// gateway.
#[test]
fn punts_count_per_port_and_a_new_router_mac_is_announced() {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2"]).unwrap();
    let config = two_vlans().replace(
        "\n[[port]]\nname = \"swp3\"\nmode = \"access\"\nvlan = 20\n",
        "",
    );
    let daemon = Daemon::start(&topo.switch, &config).unwrap();
    let (h1, h2) = (&topo.hosts[0], &topo.hosts[1]);
    address(h1, 10, 2);
    address(h2, 20, 2);
    assert!(h1.reachable("10.0.10.1") && h1.reachable("fd00:10::1"));
    assert!(h1.reachable("10.0.20.2") && h1.reachable("fd00:20::2"));

    let punted = |port: &str| daemon.counters(port).unwrap()["punted"].as_u64().unwrap();
    let (before, global_before) = (punted("swp1"), all_punts(&daemon));
    let to_self = punts(&daemon, "to-self");
    assert!(h1.ping("10.0.10.1", 5));
    assert_eq!(
        punts(&daemon, "to-self") - to_self,
        5,
        "echo requests to the router"
    );
    let (after, global_after) = (punted("swp1"), all_punts(&daemon));
    assert!(after - before >= 5, "swp1 punted {before} -> {after}");
    assert_eq!(
        after - before,
        global_after - global_before,
        "every punt is h1's, through swp1"
    );
    assert_eq!(daemon.counters("swp1").unwrap()["to-kernel"], 0);

    let old = "02:00:00:00:01:00";
    let new = "02:00:00:00:01:99";
    for gateway in ["10.0.10.1", "fd00:10::1"] {
        assert_eq!(neighbor_mac(h1, gateway).as_deref(), Some(old), "{gateway}");
    }
    let changed = daemon.dir.join("new-mac.toml");
    std::fs::write(&changed, config.replace(old, new)).unwrap();
    daemon
        .xnos(&["config", "apply", changed.to_str().unwrap()])
        .unwrap();
    // h1 sends nothing meanwhile: only an announcement can change its entries.
    let deadline = Instant::now() + Duration::from_secs(2);
    for gateway in ["10.0.10.1", "fd00:10::1"] {
        while neighbor_mac(h1, gateway).as_deref() != Some(new) {
            assert!(
                Instant::now() < deadline,
                "h1 still has {:?} for {gateway} 2 s after the router MAC changed",
                neighbor_mac(h1, gateway)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert_eq!(neighbor_mac(h2, "10.0.20.1").as_deref(), Some(new));
    assert!(h1.ping("10.0.10.1", 1) && h1.ping("fd00:10::1", 1));
    assert!(h1.ping("10.0.20.2", 3) && h1.ping("fd00:20::2", 3));
}

/// `ping` from `host` with `args`; its output, whether or not every reply came back.
fn ping_output(host: &Host, args: &[&str]) -> String {
    let out = host.ns.command("ping").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The MTU of `name` in `ns`.
fn mtu_of(ns: &xnos_tests::Netns, name: &str) -> u32 {
    let link = ns.ip(&["-j", "link", "show", name]).unwrap();
    let link: serde_json::Value = serde_json::from_str(&link).unwrap();
    link[0]["mtu"].as_u64().unwrap() as u32
}

// What this shows: a packet routed into a VLAN whose port has a smaller MTU is no black
// hole: `mtu` on a [[port]] sets the port's MTU and the VLAN's SVI takes the smallest MTU
// of its ports; the fast path hands oversize packets to the kernel, which fragments them
// (DF clear: the replies come back) or answers "fragmentation needed" (DF set) and, for
// IPv6, "packet too big", with that MTU.
#[test]
fn packets_over_the_egress_mtu_are_fragmented_or_get_icmp() {
    mtu_case(false);
}

// What this shows: the same with the host ports on the TC datapath.
#[test]
fn packets_over_the_egress_mtu_are_fragmented_or_get_icmp_on_tc() {
    mtu_case(true);
}

fn mtu_case(tc: bool) {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2"]).unwrap();
    let mut config = two_vlans()
        .replace(
            "name = \"swp2\"\nmode = \"access\"\nvlan = 20\n",
            "name = \"swp2\"\nmode = \"access\"\nvlan = 20\nmtu = 1400\n",
        )
        .replace(
            "[[port]]\nname = \"swp3\"\nmode = \"access\"\nvlan = 20\n",
            "",
        );
    if tc {
        config = config.replace(
            "mode = \"access\"\n",
            "mode = \"access\"\ndatapath = \"tc\"\n",
        );
    }
    let daemon = Daemon::start(&topo.switch, &config).unwrap();
    if tc {
        assert_eq!(topo.tc_programs("swp1").unwrap(), ["xnos_tc_ingress"]);
    }
    let (h1, h2) = (&topo.hosts[0], &topo.hosts[1]);
    h2.ns.ip(&["link", "set", "eth0", "mtu", "1400"]).unwrap();
    address(h1, 10, 2);
    address(h2, 20, 2);
    assert!(h1.reachable("10.0.20.2") && h1.reachable("fd00:20::2"));
    assert_eq!(
        mtu_of(&topo.switch, "swp2"),
        1400,
        "[[port]] mtu not applied"
    );
    assert_eq!(
        mtu_of(&topo.switch, "vlan20"),
        1400,
        "SVI MTU is not its port's"
    );
    assert_eq!(mtu_of(&topo.switch, "vlan10"), 1500);

    // DF clear: the switch fragments, the replies come back.
    let too_big = punts(&daemon, "too-big");
    let before = routed(&daemon, "routed-v4");
    let out = ping_output(
        h1,
        &[
            "-c",
            "2",
            "-W",
            "2",
            "-M",
            "dont",
            "-s",
            "1472",
            "10.0.20.2",
        ],
    );
    assert!(out.contains(" 0% packet loss"), "{out}");
    assert!(
        punts(&daemon, "too-big") >= too_big + 2,
        "oversize not punted"
    );
    assert!(
        routed(&daemon, "routed-v4") > before,
        "the fragmented replies did not take the fast path"
    );

    // DF set: "fragmentation needed" with the MTU of VLAN 20.
    let out = ping_output(
        h1,
        &["-c", "1", "-W", "2", "-M", "do", "-s", "1472", "10.0.20.2"],
    );
    assert!(out.contains("Frag needed and DF set (mtu = 1400)"), "{out}");
    let out = ping_output(
        h1,
        &[
            "-6",
            "-c",
            "1",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            "1452",
            "fd00:20::2",
        ],
    );
    assert!(out.contains("Packet too big: mtu=1400"), "{out}");
    // And what fits still takes the fast path.
    let before = routed(&daemon, "routed-v4");
    assert!(h1.ping("10.0.20.2", 2));
    assert!(routed(&daemon, "routed-v4") >= before + 4);
}

// What this shows: an IPv4 packet whose header checksum is wrong is not routed: the
// far host never sees it, and the ingress port counts it as bad-checksum.
#[test]
fn packets_with_a_bad_checksum_are_not_routed() {
    require_root!();
    let topo = Topology::new(&["swp1", "swp2", "swp3"]).unwrap();
    let daemon = Daemon::start(&topo.switch, &two_vlans()).unwrap();
    let (h1, h2) = (&topo.hosts[0], &topo.hosts[1]);
    address(h1, 10, 2);
    address(h2, 20, 2);
    assert!(h1.reachable("10.0.20.2"));
    let (s1, s2) = (h1.socket().unwrap(), h2.socket().unwrap());
    let udp = |checksum_ok: bool| {
        let mut frame = Vec::new();
        etherparse::PacketBuilder::ethernet2(h1.mac, ROUTER_MAC)
            .ipv4([10, 0, 10, 2], [10, 0, 20, 2], 64)
            .udp(4000, 9999)
            .write(&mut frame, b"checksum")
            .unwrap();
        if !checksum_ok {
            frame[24] ^= 0xff;
        }
        frame
    };
    let drops = |daemon: &Daemon| {
        daemon.counters("swp1").unwrap()["drops"]["bad-checksum"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(drops(&daemon), 0);
    s1.send(&udp(false)).unwrap();
    assert_eq!(udp_count(&s2), 0, "a packet with a bad checksum was routed");
    assert_eq!(drops(&daemon), 1);
    s1.send(&udp(true)).unwrap();
    assert_eq!(
        udp_count(&s2),
        1,
        "the same packet with a good checksum is routed"
    );
}
