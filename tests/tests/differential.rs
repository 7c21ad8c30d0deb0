//! Differential test: the same seeded random frames through xnos and through the Linux
//! bridge and router in identical namespaces; what every host receives must be the same,
//! frame by frame, except for the documented differences (docs/architecture.md, "Where
//! xnos and Linux differ").

use std::time::Duration;

use xnos_tests::{Config, Daemon, Host, Netns, PacketSocket, Topology, format_mac, require_root};

const XNOS_ROUTER_MAC: [u8; 6] = [2, 0, 0, 0, 1, 0];
const LINUX_ROUTER_MAC: [u8; 6] = [2, 0, 0, 0, 2, 0];
/// What both router MACs become in generated and captured frames.
const ROUTER: [u8; 6] = [2, 0, 0, 0, 0xee, 0];
const BROADCAST: [u8; 6] = [0xff; 6];

/// The seed when XNOS_DIFF_SEED is not set: the default run is the same every time.
const DEFAULT_SEED: u64 = 14;
const FRAMES: usize = 400;
/// How long the frames one injected frame causes (forwarded copies, replies, ICMP errors)
/// take to arrive; a window that differs is listened to again for LATE before it counts.
const WINDOW: Duration = Duration::from_millis(25);
const LATE: Duration = Duration::from_millis(300);

/// The ports and, per host, its VLAN and address: two hosts in each of VLANs 10 and 20.
const PORTS: [&str; 4] = ["swp1", "swp2", "swp3", "swp4"];
const STATIONS: [(u16, [u8; 4]); 4] = [
    (10, [10, 0, 10, 2]),
    (10, [10, 0, 10, 3]),
    (20, [10, 0, 20, 2]),
    (20, [10, 0, 20, 3]),
];

/// Two hosts in each of VLANs 10 and 20, an SVI in each.
fn xnos_config() -> Config {
    Config::access_ports(&[10, 10, 20, 20])
        .switch("router-mac", "02:00:00:00:01:00")
        .svi(10, &["10.0.10.1/24"])
        .svi(20, &["10.0.20.1/24"])
}

/// Kinds of frame where xnos and Linux differ on purpose, with the standard that says why
/// (docs/architecture.md has the full entries). They are not sent.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[
    (
        "tagged-on-access-port",
        "IEEE 802.1Q-2018 6.9 and 8.6.2: an access port admits untagged frames only \
         (ingress filtering); a Linux bridge without VLAN filtering forwards the tag",
    ),
    (
        "bridge-group-address",
        "IEEE 802.1Q-2018 8.6.3, table 8-1: a bridge never forwards 01-80-C2-00-00-00; a \
         Linux bridge with STP off floods it",
    ),
    (
        "ip-hairpin",
        "RFC 1812 5.2.7.2: a router SHOULD send an ICMP redirect when it forwards a packet \
         out of the interface it came in on; the Linux router does, xnos's fast path \
         forwards without one",
    ),
];

/// splitmix64: small, fast and the same everywhere, which is all a reproducible random
/// sequence needs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn range(&mut self, low: usize, high: usize) -> usize {
        low + self.below(high - low + 1)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn host_mac(host: usize) -> [u8; 6] {
    [2, 0, 0, 0, host as u8 + 1, 1]
}

fn gateway(vlan: u16) -> [u8; 4] {
    [10, 0, vlan as u8, 1]
}

/// The internet checksum (RFC 1071) of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ethernet(dst: [u8; 6], src: [u8; 6], ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = [&dst[..], &src[..], &ether_type.to_be_bytes()].concat();
    frame.extend_from_slice(payload);
    frame
}

fn arp_request(src_mac: [u8; 6], src_ip: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&src_mac);
    arp.extend_from_slice(&src_ip);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&target);
    ethernet(BROADCAST, src_mac, 0x0806, &arp)
}

/// An IPv4 packet; `options` must be a multiple of 4 bytes long.
fn ipv4(
    rng: &mut Rng,
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    protocol: u8,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let header_len = 20 + options.len();
    let total = (header_len + payload.len()) as u16;
    let id = rng.bytes(2);
    let mut packet = vec![0x40 | (header_len / 4) as u8, 0];
    packet.extend_from_slice(&total.to_be_bytes());
    packet.extend_from_slice(&id);
    packet.extend_from_slice(&[0, 0, ttl, protocol, 0, 0]);
    packet.extend_from_slice(&src);
    packet.extend_from_slice(&dst);
    packet.extend_from_slice(options);
    let sum = checksum(&packet);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
    packet.extend_from_slice(payload);
    packet
}

/// An ICMP echo request or a UDP datagram (checksum 0: none, RFC 768) with random data.
fn transport(rng: &mut Rng, udp: bool) -> (u8, Vec<u8>) {
    let data_len = rng.below(48);
    let data = rng.bytes(data_len);
    if udp {
        let mut datagram = rng.bytes(2);
        datagram.extend_from_slice(&(33434 + rng.below(100) as u16).to_be_bytes());
        datagram.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
        datagram.extend_from_slice(&[0, 0]);
        datagram.extend_from_slice(&data);
        (17, datagram)
    } else {
        let mut icmp = vec![8, 0, 0, 0];
        icmp.extend_from_slice(&rng.bytes(4));
        icmp.extend_from_slice(&data);
        let sum = checksum(&icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        (1, icmp)
    }
}

const KINDS: &[&str] = &[
    "known-unicast",
    "unknown-unicast",
    "unicast-to-other-vlan-mac",
    "broadcast",
    "multicast",
    "link-local-multicast",
    "bridge-group-address",
    "arp-request-for-gateway",
    "arp-request-for-host",
    "arp-request-for-nobody",
    "ip-to-same-subnet",
    "ip-routed",
    "ip-routed-ttl-1",
    "ip-routed-ttl-0",
    "ip-unrouted",
    "ip-to-own-gateway",
    "ip-to-other-gateway",
    "ip-routed-with-options",
    "ip-routed-bad-checksum",
    "ip-routed-truncated",
    "ip-routed-padded",
    "ip-hairpin",
    "ip-directed-broadcast",
    "tagged-on-access-port",
];

/// One random frame of `kind` from host `from`, addressed to ROUTER where it goes to the
/// router.
fn frame(rng: &mut Rng, kind: &str, from: usize) -> Vec<u8> {
    let (vlan, ip) = STATIONS[from];
    let mac = host_mac(from);
    let peer = (0..STATIONS.len())
        .find(|&h| h != from && STATIONS[h].0 == vlan)
        .unwrap();
    let far: Vec<usize> = (0..STATIONS.len())
        .filter(|&h| STATIONS[h].0 != vlan)
        .collect();
    let far = far[rng.below(far.len())];
    let other_vlan = STATIONS[far].0;
    let test_payload = |rng: &mut Rng| {
        let len = rng.range(46, 80);
        rng.bytes(len)
    };
    let udp = rng.below(2) == 0;
    let routed = |rng: &mut Rng, dst: [u8; 4], ttl: u8, options: &[u8]| {
        let (protocol, payload) = transport(rng, udp);
        let packet = ipv4(rng, ip, dst, ttl, protocol, options, &payload);
        ethernet(ROUTER, mac, 0x0800, &packet)
    };
    match kind {
        "known-unicast" => ethernet(host_mac(peer), mac, 0x88b5, &test_payload(rng)),
        "unknown-unicast" => {
            let dst = [&[2, 0x99][..], &rng.bytes(4)].concat().try_into().unwrap();
            ethernet(dst, mac, 0x88b5, &test_payload(rng))
        }
        "unicast-to-other-vlan-mac" => ethernet(host_mac(far), mac, 0x88b5, &test_payload(rng)),
        "broadcast" => ethernet(BROADCAST, mac, 0x88b5, &test_payload(rng)),
        "multicast" => {
            let group = [224, 0, 0, rng.range(2, 254) as u8];
            let (protocol, payload) = transport(rng, true);
            let packet = ipv4(rng, ip, group, 1, protocol, &[], &payload);
            let dst = [1, 0, 0x5e, 0, 0, group[3]];
            ethernet(dst, mac, 0x0800, &packet)
        }
        "link-local-multicast" => {
            let dst = [1, 0x80, 0xc2, 0, 0, [2, 3, 0xe][rng.below(3)]];
            ethernet(dst, mac, 0x88b5, &test_payload(rng))
        }
        "bridge-group-address" => {
            ethernet([1, 0x80, 0xc2, 0, 0, 0], mac, 0x88b5, &test_payload(rng))
        }
        "arp-request-for-gateway" => arp_request(mac, ip, gateway(vlan)),
        "arp-request-for-host" => arp_request(mac, ip, STATIONS[peer].1),
        "arp-request-for-nobody" => arp_request(mac, ip, [10, 0, vlan as u8, 200]),
        "ip-to-same-subnet" => {
            let (protocol, payload) = transport(rng, udp);
            let packet = ipv4(rng, ip, STATIONS[peer].1, 64, protocol, &[], &payload);
            ethernet(host_mac(peer), mac, 0x0800, &packet)
        }
        "ip-routed" => {
            let ttl = rng.range(2, 255) as u8;
            routed(rng, STATIONS[far].1, ttl, &[])
        }
        "ip-routed-ttl-1" => routed(rng, STATIONS[far].1, 1, &[]),
        "ip-routed-ttl-0" => routed(rng, STATIONS[far].1, 0, &[]),
        "ip-unrouted" => {
            let dst = [192, 0, 2, rng.range(1, 254) as u8];
            routed(rng, dst, 64, &[])
        }
        "ip-to-own-gateway" => routed(rng, gateway(vlan), 64, &[]),
        "ip-to-other-gateway" => routed(rng, gateway(other_vlan), 64, &[]),
        "ip-routed-with-options" => {
            // NOPs, or an empty Record Route (RFC 791) the router must fill in.
            let options: &[u8] = if rng.below(2) == 0 {
                &[1, 1, 1, 1]
            } else {
                &[7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]
            };
            routed(rng, STATIONS[far].1, 64, options)
        }
        "ip-routed-bad-checksum" => {
            let mut frame = routed(rng, STATIONS[far].1, 64, &[]);
            frame[24] ^= 0x5a;
            frame
        }
        "ip-routed-truncated" => {
            let mut frame = routed(rng, STATIONS[far].1, 64, &[]);
            let len = rng.range(14, frame.len() - 1);
            frame.truncate(len);
            frame
        }
        "ip-routed-padded" => {
            let mut frame = routed(rng, STATIONS[far].1, 64, &[]);
            let pad = rng.range(1, 20);
            frame.extend(rng.bytes(pad));
            frame
        }
        "ip-hairpin" => routed(rng, STATIONS[peer].1, 64, &[]),
        "ip-directed-broadcast" => routed(rng, [10, 0, other_vlan as u8, 255], 64, &[]),
        "tagged-on-access-port" => {
            let tag = [vlan, other_vlan][rng.below(2)];
            let mut frame = ethernet(BROADCAST, mac, 0x8100, &tag.to_be_bytes());
            frame.extend_from_slice(&0x88b5u16.to_be_bytes());
            frame.extend(test_payload(rng));
            frame
        }
        _ => unreachable!("no frame kind {kind}"),
    }
}

/// Replace `from` by `to` wherever a MAC address is: Ethernet destination and source,
/// ARP sender and target hardware addresses.
fn swap_mac(frame: &mut [u8], from: [u8; 6], to: [u8; 6]) {
    let arp = frame.len() >= 42 && frame[12..14] == [8, 6];
    let offsets: &[usize] = if arp { &[0, 6, 22, 32] } else { &[0, 6] };
    for &offset in offsets {
        if frame.get(offset..offset + 6) == Some(&from[..]) {
            frame[offset..offset + 6].copy_from_slice(&to);
        }
    }
}

/// What may legitimately differ between the two switches, made equal: the router MAC; the
/// IPv4 ID (and so the header checksum) of packets the kernels make themselves (ICMP
/// errors and echo replies: the ID comes from a per-namespace hash).
fn normalise(mut frame: Vec<u8>, router_mac: [u8; 6]) -> Vec<u8> {
    swap_mac(&mut frame, router_mac, ROUTER);
    if frame.len() >= 34 && frame[12..14] == [8, 0] {
        let header_len = usize::from(frame[14] & 0xf) * 4;
        let icmp_type = frame.get(14 + header_len).copied();
        if frame[23] == 1 && icmp_type.is_some_and(|t| t != 8) {
            frame[18..20].fill(0);
            frame[24..26].fill(0);
        }
    }
    frame
}

/// One switch (xnos or the Linux reference) with its hosts and their capture sockets.
struct Side {
    topo: Topology,
    router_mac: [u8; 6],
    sockets: Vec<PacketSocket>,
    _daemon: Option<Daemon>,
}

impl Side {
    fn send(&self, host: usize, frame: &[u8]) {
        let mut frame = frame.to_vec();
        swap_mac(&mut frame, ROUTER, self.router_mac);
        self.sockets[host].send(&frame).unwrap();
    }

    /// What each host received since the last call, normalised and sorted.
    fn received(&self, wait: Duration) -> Vec<Vec<Vec<u8>>> {
        std::thread::sleep(wait);
        self.sockets
            .iter()
            .map(|s| {
                let mut frames: Vec<_> = s
                    .collect(Duration::from_millis(1), |_| true)
                    .into_iter()
                    .map(|f| normalise(f, self.router_mac))
                    .collect();
                frames.sort();
                frames
            })
            .collect()
    }
}

/// Quiet the switch namespace: no IPv6 (no router solicitations, MLD) and no ICMP rate
/// limit (whether an error is sent must not depend on timing).
fn quiet(ns: &Netns) {
    for setting in [
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1",
        "net.ipv4.icmp_ratelimit=0",
        "net.ipv4.icmp_msgs_per_sec=100000",
    ] {
        ns.exec("sysctl", &["-qw", setting]).unwrap();
    }
}

/// Addresses, a default route and permanent neighbours (the gateway, the other host of
/// the subnet) on every host, and the hosts as permanent neighbours of the router on
/// `svi(vlan)`: no ARP of the kernels' own, so what arrives is only what the frames cause.
fn address(topo: &Topology, router_mac: [u8; 6], svi: impl Fn(u16) -> String) {
    for (i, host) in topo.hosts.iter().enumerate() {
        let (vlan, ip) = STATIONS[i];
        let ip_text = |ip: [u8; 4]| std::net::Ipv4Addr::from(ip).to_string();
        host.add_address(&format!("{}/24", ip_text(ip))).unwrap();
        host.ns
            .exec("sysctl", &["-qw", "net.ipv4.icmp_ratelimit=0"])
            .unwrap();
        host.ns
            .ip(&["route", "add", "default", "via", &ip_text(gateway(vlan))])
            .unwrap();
        let mut neighbours = vec![(gateway(vlan), router_mac)];
        for (j, (other_vlan, other_ip)) in STATIONS.iter().enumerate() {
            if j != i && *other_vlan == vlan {
                neighbours.push((*other_ip, host_mac(j)));
            }
        }
        for (ip, mac) in neighbours {
            host.ns
                .ip(&[
                    "neigh",
                    "replace",
                    &ip_text(ip),
                    "lladdr",
                    &format_mac(mac),
                    "dev",
                    "eth0",
                    "nud",
                    "permanent",
                ])
                .unwrap();
        }
        topo.switch
            .ip(&[
                "neigh",
                "replace",
                &ip_text(ip),
                "lladdr",
                &format_mac(host_mac(i)),
                "dev",
                &svi(vlan),
                "nud",
                "permanent",
            ])
            .unwrap();
    }
}

fn sockets(hosts: &[Host]) -> Vec<PacketSocket> {
    hosts.iter().map(|h| h.socket().unwrap()).collect()
}

fn xnos_side() -> Side {
    let topo = Topology::new(&PORTS).unwrap();
    quiet(&topo.switch);
    let daemon = Daemon::start(&topo.switch, &xnos_config()).unwrap();
    for _ in 0..200 {
        if topo.switch.ip(&["link", "show", "vlan20"]).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    address(&topo, XNOS_ROUTER_MAC, |vlan| format!("vlan{vlan}"));
    // Every host's MAC learned before the random frames start.
    for (i, host) in topo.hosts.iter().enumerate() {
        host.socket()
            .unwrap()
            .send(&ethernet(BROADCAST, host_mac(i), 0x88b5, &[0; 46]))
            .unwrap();
        daemon
            .wait_fdb(STATIONS[i].0, host_mac(i), PORTS[i])
            .unwrap();
    }
    Side {
        sockets: sockets(&topo.hosts),
        topo,
        router_mac: XNOS_ROUTER_MAC,
        _daemon: Some(daemon),
    }
}

/// The reference: one Linux bridge per VLAN (this kernel has no bridge VLAN filtering),
/// each carrying the gateway address, and the kernel routing between them.
fn linux_side() -> Side {
    let topo = Topology::new(&PORTS).unwrap();
    quiet(&topo.switch);
    let router_mac = format_mac(LINUX_ROUTER_MAC);
    for vlan in [10u16, 20] {
        let bridge = format!("br{vlan}");
        topo.switch
            .ip(&[
                "link",
                "add",
                &bridge,
                "address",
                &router_mac,
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ])
            .unwrap();
        topo.switch
            .ip(&["addr", "add", &format!("10.0.{vlan}.1/24"), "dev", &bridge])
            .unwrap();
        topo.switch.ip(&["link", "set", &bridge, "up"]).unwrap();
    }
    for (port, (vlan, _)) in PORTS.iter().zip(STATIONS) {
        topo.switch
            .ip(&["link", "set", port, "master", &format!("br{vlan}")])
            .unwrap();
    }
    topo.switch
        .exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    address(&topo, LINUX_ROUTER_MAC, |vlan| format!("br{vlan}"));
    for (i, host) in topo.hosts.iter().enumerate() {
        host.socket()
            .unwrap()
            .send(&ethernet(BROADCAST, host_mac(i), 0x88b5, &[0; 46]))
            .unwrap();
    }
    Side {
        sockets: sockets(&topo.hosts),
        topo,
        router_mac: LINUX_ROUTER_MAC,
        _daemon: None,
    }
}

fn hex(frames: &[Vec<u8>]) -> String {
    frames
        .iter()
        .map(|f| f.iter().map(|b| format!("{b:02x}")).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n      ")
}

// What this shows: 400 random frames of 24 kinds (switched, flooded, routed, for the
// router, expiring, unroutable, malformed) from hosts in two VLANs give every host the
// same frames, ICMP errors included, through xnos as through a Linux bridge per VLAN
// and the Linux router; only the documented differences are left out.
#[test]
fn xnos_forwards_as_the_linux_bridge_and_router_do() {
    require_root!();
    let seed = std::env::var("XNOS_DIFF_SEED")
        .ok()
        .map(|s| s.parse().expect("XNOS_DIFF_SEED must be a number"))
        .unwrap_or(DEFAULT_SEED);
    eprintln!("differential: seed {seed} (XNOS_DIFF_SEED={seed} repeats this run)");
    let sides = [xnos_side(), linux_side()];
    for side in &sides {
        let (h1, h3) = (&side.topo.hosts[0], &side.topo.hosts[2]);
        assert!(h1.reachable("10.0.20.2"), "no route between the VLANs");
        assert!(h3.reachable("10.0.10.2"), "no route between the VLANs");
    }
    std::thread::sleep(Duration::from_millis(200));
    for side in &sides {
        side.received(Duration::ZERO);
    }

    let mut rng = Rng(seed);
    let (mut compared, mut skipped, mut received) = (0, 0, 0);
    let mut differences = Vec::new();
    // Per kind, the frames the hosts received through Linux.
    let mut delivered: std::collections::BTreeMap<&str, usize> = Default::default();
    for index in 0..FRAMES {
        let kind = KINDS[rng.below(KINDS.len())];
        let from = rng.below(STATIONS.len());
        let frame = frame(&mut rng, kind, from);
        if KNOWN_DIFFERENCES.iter().any(|(k, _)| *k == kind) {
            skipped += 1;
            continue;
        }
        for side in &sides {
            side.send(from, &frame);
        }
        let mut xnos = sides[0].received(WINDOW);
        let mut linux = sides[1].received(Duration::ZERO);
        if xnos != linux {
            for (all, more) in [
                (&mut xnos, sides[0].received(LATE)),
                (&mut linux, sides[1].received(Duration::ZERO)),
            ] {
                for (frames, late) in all.iter_mut().zip(more) {
                    frames.extend(late);
                    frames.sort();
                }
            }
        }
        compared += 1;
        let got = linux.iter().map(Vec::len).sum::<usize>();
        received += got;
        *delivered.entry(kind).or_default() += got;
        if xnos != linux {
            let hosts: String = (0..STATIONS.len())
                .filter(|&h| xnos[h] != linux[h])
                .map(|h| {
                    format!(
                        "\n  h{}: xnos\n      {}\n    linux\n      {}",
                        h + 1,
                        hex(&xnos[h]),
                        hex(&linux[h])
                    )
                })
                .collect();
            differences.push(format!(
                "frame {index} ({kind}) from h{}: {}{hosts}",
                from + 1,
                hex(&[frame])
            ));
        }
    }
    eprintln!(
        "differential: {compared} frames compared ({received} received by the hosts through \
         Linux), {skipped} of documented differences not sent, {} differ",
        differences.len()
    );
    assert!(
        received > compared,
        "the hosts received almost nothing: the comparison would show nothing"
    );
    // Switched, flooded, routed and ICMP-answered frames each reached a host: an empty
    // capture on both sides would compare equal and show nothing.
    for kind in [
        "known-unicast",
        "broadcast",
        "arp-request-for-gateway",
        "ip-to-same-subnet",
        "ip-routed",
        "ip-routed-ttl-1",
    ] {
        assert!(
            delivered.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} frame reached a host (seed {seed}): {delivered:?}"
        );
    }
    assert!(
        differences.is_empty(),
        "xnos and Linux differ (seed {seed}):\n{}",
        differences.join("\n")
    );
}
