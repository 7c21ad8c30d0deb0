//! Datapath tests: the real XDP program, loaded through the verifier, run on crafted frames
//! with BPF_PROG_TEST_RUN; we check verdicts, the bytes it leaves, and the maps.

use std::collections::BTreeMap;

use xnos::{
    config::{Config, PortMode},
    datapath::{Datapath, module},
    testrun::{self, XDP_DROP, XDP_PASS, XDP_REDIRECT, XdpRun},
};
use xnos_common::{DropReason, FDB_FLAG_STATIC, FdbEntry, FdbKey, LearnEvent, PortStats};
use xnos_tests::{Netns, require_root, test_frame};

const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
const C: [u8; 6] = [2, 0, 0, 0, 0, 0xc];
const BROADCAST: [u8; 6] = [0xff; 6];

/// A datapath with ports on veths in a private namespace (TEST_RUN needs real ifindexes).
struct Rig {
    dp: Datapath,
    ports: BTreeMap<&'static str, u32>,
    ns: Netns,
}

fn access(vlan: u16) -> PortMode {
    PortMode::Access { vlan }
}

fn trunk(vlans: &[u16], native_vlan: Option<u16>) -> PortMode {
    PortMode::Trunk {
        vlans: vlans.iter().copied().collect(),
        native_vlan,
    }
}

impl Rig {
    fn new(ports: &[(&'static str, PortMode)]) -> Self {
        let ns = Netns::new("xd").unwrap();
        let mut dp = Datapath::load(None).expect("datapath loads through the verifier");
        let mut map = BTreeMap::new();
        for (slot, (name, mode)) in ports.iter().enumerate() {
            ns.ip(&[
                "link",
                "add",
                name,
                "type",
                "veth",
                "peer",
                "name",
                &format!("{name}p"),
            ])
            .unwrap();
            let ifindex = ns.ifindex(name).unwrap();
            // Devmap entries resolve the ifindex in the caller's namespace.
            ns.enter(|| dp.set_port(ifindex, module::port_conf(slot as u32, mode)))
                .unwrap()
                .unwrap();
            map.insert(*name, ifindex);
        }
        Self { dp, ports: map, ns }
    }

    fn run(&self, port: &str, frame: &[u8]) -> XdpRun {
        let ifindex = self.ports[port];
        let fd = self.dp.ingress_fd().unwrap();
        self.ns
            .enter(|| testrun::run_xdp(fd, ifindex, frame, 1))
            .unwrap()
            .expect("BPF_PROG_TEST_RUN")
    }

    fn stats(&self, port: &str) -> PortStats {
        let conf = self.dp.ports().unwrap()[&self.ports[port]];
        self.dp.port_stats(conf.stats_slot).unwrap()
    }

    fn fdb(&self, vlan: u16, mac: [u8; 6]) -> Option<FdbEntry> {
        self.dp.fdb_get(&FdbKey { mac, vlan })
    }
}

fn with_tag(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut out = frame[..12].to_vec();
    out.extend_from_slice(&[0x81, 0x00]);
    out.extend_from_slice(&vid.to_be_bytes());
    out.extend_from_slice(&frame[12..]);
    out
}

fn without_tag(frame: &[u8]) -> Vec<u8> {
    let mut out = frame[..12].to_vec();
    out.extend_from_slice(&frame[16..]);
    out
}

fn drops(stats: &PortStats, reason: DropReason) -> u64 {
    stats.drops[reason as usize]
}

// What this shows: an untagged frame on an access port is learned on that port and
// flooded, normalised to carry its VLAN tag for the per-port egress program.
#[test]
fn access_frame_is_learned_and_flooded_with_its_vlan_tag() {
    require_root!();
    let rig = Rig::new(&[("swp1", access(10)), ("swp2", access(10))]);
    let frame = test_frame(BROADCAST, A, None, 1);
    let out = rig.run("swp1", &frame);
    assert_eq!(out.action, XDP_REDIRECT);
    assert_eq!(out.frame, with_tag(&frame, 10));
    let entry = rig.fdb(10, A).expect("A learned in VLAN 10");
    assert_eq!(entry.ifindex, rig.ports["swp1"]);
    assert_eq!(entry.flags & FDB_FLAG_STATIC, 0);
    assert!(entry.last_seen_ns > 0);
    let stats = rig.stats("swp1");
    assert_eq!((stats.rx_packets, stats.flooded, stats.learned), (1, 1, 1));
    assert_eq!(stats.rx_bytes, frame.len() as u64);
}

// What this shows: known unicast goes straight to the egress port, with the tag exactly as
// that port wants it: untouched between access ports, pushed towards a trunk, popped from a
// trunk to an access port, popped for the native VLAN.
#[test]
fn known_unicast_gets_the_egress_ports_tagging() {
    require_root!();
    let rig = Rig::new(&[
        ("swp1", access(10)),
        ("swp2", access(10)),
        ("swp3", trunk(&[10, 20], Some(30))),
        ("swp4", access(30)),
    ]);
    // Learn B on swp2, C (VLAN 10) on the trunk, and A in VLAN 30 on swp4.
    rig.run("swp2", &test_frame(BROADCAST, B, None, 0));
    rig.run("swp3", &test_frame(BROADCAST, C, Some(10), 0));
    rig.run("swp4", &test_frame(BROADCAST, A, None, 0));
    assert_eq!(rig.fdb(10, C).unwrap().ifindex, rig.ports["swp3"]);

    // access -> access: unchanged.
    let frame = test_frame(B, A, None, 2);
    let out = rig.run("swp1", &frame);
    assert_eq!((out.action, &out.frame), (XDP_REDIRECT, &frame));
    assert_eq!(rig.stats("swp2").tx_packets, 1);

    // access -> trunk: tag pushed.
    let frame = test_frame(C, A, None, 3);
    let out = rig.run("swp1", &frame);
    assert_eq!(
        (out.action, out.frame),
        (XDP_REDIRECT, with_tag(&frame, 10))
    );

    // trunk (tagged 10) -> access: tag popped.
    let frame = test_frame(B, C, Some(10), 4);
    let out = rig.run("swp3", &frame);
    assert_eq!((out.action, out.frame), (XDP_REDIRECT, without_tag(&frame)));

    // trunk untagged (native VLAN 30) -> access 30: stays untagged, learned in VLAN 30.
    let frame = test_frame(A, C, None, 5);
    let out = rig.run("swp3", &frame);
    assert_eq!((out.action, &out.frame), (XDP_REDIRECT, &frame));
    assert_eq!(rig.fdb(30, C).unwrap().ifindex, rig.ports["swp3"]);

    // access 30 -> trunk native VLAN 30: stays untagged.
    let frame = test_frame(C, A, None, 6);
    let out = rig.run("swp4", &frame);
    assert_eq!((out.action, &out.frame), (XDP_REDIRECT, &frame));
    assert_eq!(rig.stats("swp3").tx_packets, 2);
}

// What this shows: every frame a port may not carry is dropped and counted by reason.
#[test]
fn frames_a_port_may_not_carry_are_dropped_by_reason() {
    require_root!();
    let rig = Rig::new(&[
        ("swp1", access(10)),
        ("swp2", trunk(&[10, 20], None)),
        ("swp3", trunk(&[10], Some(1))),
    ]);
    let cases = [
        (
            "swp1",
            test_frame(BROADCAST, A, Some(10), 1),
            DropReason::TaggedOnAccess,
        ),
        (
            "swp2",
            test_frame(BROADCAST, A, Some(30), 2),
            DropReason::VlanNotAllowed,
        ),
        (
            "swp3",
            test_frame(BROADCAST, A, Some(20), 3),
            DropReason::VlanNotAllowed,
        ),
        (
            "swp2",
            test_frame(BROADCAST, A, None, 4),
            DropReason::UntaggedNoNative,
        ),
        (
            "swp1",
            test_frame(BROADCAST, [3, 0, 0, 0, 0, 1], None, 5),
            DropReason::InvalidSrcMac,
        ),
        (
            "swp1",
            test_frame(BROADCAST, [0; 6], None, 6),
            DropReason::InvalidSrcMac,
        ),
    ];
    for (port, frame, reason) in &cases {
        let before = drops(&rig.stats(port), *reason);
        let out = rig.run(port, frame);
        assert_eq!(out.action, XDP_DROP, "{port} {reason:?}");
        assert_eq!(
            drops(&rig.stats(port), *reason),
            before + 1,
            "{port} {reason:?}"
        );
    }
    assert!(
        rig.fdb(10, A).is_none() && rig.fdb(30, A).is_none(),
        "dropped frames teach nothing"
    );
    // Priority-tagged (VID 0) frames are untagged frames as far as VLANs go.
    let out = rig.run("swp1", &test_frame(BROADCAST, A, Some(0), 7));
    assert_eq!(out.action, XDP_REDIRECT);
    assert!(rig.fdb(10, A).is_some());
}

// What this shows: truncated headers are dropped as malformed, never read past the end.
#[test]
fn truncated_frames_are_dropped_as_malformed() {
    require_root!();
    let rig = Rig::new(&[("swp1", trunk(&[10], Some(10)))]);
    let tagged = test_frame(BROADCAST, A, Some(10), 1);
    // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header (14 bytes), as
    // does the wire; a 802.1Q header needs 18.
    for len in 14..18 {
        let out = rig.run("swp1", &tagged[..len]);
        assert_eq!(out.action, XDP_DROP, "length {len}");
    }
    assert_eq!(drops(&rig.stats("swp1"), DropReason::Malformed), 4);
    // A bare untagged header is a valid (if useless) frame.
    let out = rig.run("swp1", &test_frame(BROADCAST, A, None, 2)[..14]);
    assert_eq!(out.action, XDP_REDIRECT);
}

// What this shows: a destination learned on the ingress port is filtered, like a bridge.
#[test]
fn unicast_back_to_its_ingress_port_is_filtered() {
    require_root!();
    let rig = Rig::new(&[("swp1", access(10)), ("swp2", access(10))]);
    rig.run("swp1", &test_frame(BROADCAST, B, None, 0));
    let out = rig.run("swp1", &test_frame(B, A, None, 1));
    assert_eq!(out.action, XDP_DROP);
    assert_eq!(drops(&rig.stats("swp1"), DropReason::SamePort), 1);
}

// What this shows: IEEE link-local control frames (STP, LLDP, LACP) go to the kernel
// unchanged and are never flooded or learned from.
#[test]
fn link_local_frames_are_punted_to_the_kernel() {
    require_root!();
    let rig = Rig::new(&[("swp1", access(10)), ("swp2", access(10))]);
    let lldp = test_frame([0x01, 0x80, 0xc2, 0, 0, 0x0e], A, None, 1);
    let out = rig.run("swp1", &lldp);
    assert_eq!((out.action, &out.frame), (XDP_PASS, &lldp));
    let stats = rig.stats("swp1");
    assert_eq!((stats.punted, stats.flooded), (1, 0));
    assert!(rig.fdb(10, A).is_none());
}

// What this shows: learning follows a station that moves, reports new and moved MACs on
// the ring buffer, and never overwrites a static entry.
#[test]
fn station_moves_are_followed_but_static_entries_stay() {
    require_root!();
    let mut rig = Rig::new(&[("swp1", access(10)), ("swp2", access(10))]);
    let mut ring = rig.dp.take_learn_events().unwrap();
    let (swp1, swp2) = (rig.ports["swp1"], rig.ports["swp2"]);

    rig.run("swp1", &test_frame(BROADCAST, A, None, 1));
    rig.run("swp2", &test_frame(BROADCAST, A, None, 2));
    assert_eq!(rig.fdb(10, A).unwrap().ifindex, swp2, "moved to swp2");
    let mut events = Vec::new();
    while let Some(item) = ring.next() {
        // SAFETY: the datapath writes whole LearnEvents.
        events.push(unsafe { (item.as_ptr() as *const LearnEvent).read_unaligned() });
    }
    let key = FdbKey { mac: A, vlan: 10 };
    assert_eq!(
        events,
        [
            LearnEvent {
                key,
                ifindex: swp1,
                old_ifindex: 0
            },
            LearnEvent {
                key,
                ifindex: swp2,
                old_ifindex: swp1
            },
        ]
    );

    let static_key = FdbKey { mac: B, vlan: 10 };
    rig.dp
        .fdb_insert(
            static_key,
            FdbEntry {
                ifindex: swp1,
                flags: FDB_FLAG_STATIC,
                last_seen_ns: 0,
            },
        )
        .unwrap();
    rig.run("swp2", &test_frame(BROADCAST, B, None, 3));
    let entry = rig.fdb(10, B).unwrap();
    assert_eq!((entry.ifindex, entry.flags), (swp1, FDB_FLAG_STATIC));
    assert!(ring.next().is_none(), "no learn event for a static MAC");
}

// What this shows: the reconciler programs ports, attachments and static FDB entries from
// config, leaves correct state alone when run again, and removes what config dropped.
#[test]
fn reconcile_converges_and_is_idempotent() {
    require_root!();
    let ns = Netns::new("xr").unwrap();
    for name in ["swp1", "swp2"] {
        ns.ip(&[
            "link",
            "add",
            name,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{name}p"),
        ])
        .unwrap();
    }
    let text = "[[port]]\nname = \"swp1\"\nmode = \"access\"\nvlan = 10\n\
                [[port]]\nname = \"swp2\"\nmode = \"trunk\"\nvlans = [10, 20]\n\
                [[fdb]]\nmac = \"02:00:00:00:00:0b\"\nvlan = 10\nport = \"swp1\"\n";
    let config = Config::parse("t.toml", text, |_| true).unwrap();
    let mut dp = Datapath::load(None).unwrap();
    ns.enter(|| {
        let statuses = module::reconcile(&mut dp, &config, xnos::kernel::link::ifindex).unwrap();
        assert!(
            statuses
                .values()
                .all(|s| s.error.is_none() && s.xdp_mode == "native"),
            "{statuses:?}"
        );
        let ports = dp.ports().unwrap();
        assert_eq!(ports.len(), 2);
        let swp1 = statuses["swp1"].ifindex;
        let static_entry = dp.fdb_get(&FdbKey { mac: B, vlan: 10 }).unwrap();
        assert_eq!(
            (static_entry.ifindex, static_entry.flags),
            (swp1, FDB_FLAG_STATIC)
        );

        // A learned entry on swp2 in VLAN 20, then run again: nothing changes.
        let learned = FdbKey { mac: C, vlan: 20 };
        let swp2 = statuses["swp2"].ifindex;
        dp.fdb_insert(
            learned,
            FdbEntry {
                ifindex: swp2,
                flags: 0,
                last_seen_ns: 1,
            },
        )
        .unwrap();
        let again = module::reconcile(&mut dp, &config, xnos::kernel::link::ifindex).unwrap();
        assert_eq!(again, statuses);
        assert_eq!(dp.ports().unwrap(), ports);
        assert!(dp.fdb_get(&learned).is_some());

        // swp2 leaves VLAN 20 and swp1 leaves the switch: its entries and XDP go too.
        let text = "[[port]]\nname = \"swp2\"\nmode = \"trunk\"\nvlans = [10]\n";
        let smaller = Config::parse("t.toml", text, |_| true).unwrap();
        let statuses = module::reconcile(&mut dp, &smaller, xnos::kernel::link::ifindex).unwrap();
        assert_eq!(statuses.len(), 1);
        assert_eq!(
            dp.ports().unwrap().keys().copied().collect::<Vec<_>>(),
            [swp2]
        );
        assert!(dp.attached(swp1).is_none());
        assert!(
            dp.fdb_get(&learned).is_none(),
            "learned entry flushed with its VLAN"
        );
        assert!(
            dp.fdb_get(&FdbKey { mac: B, vlan: 10 }).is_none(),
            "static entry removed"
        );
    })
    .unwrap();
}

// What this shows: aging removes learned entries older than the aging time, never static ones.
#[test]
fn aging_removes_only_stale_learned_entries() {
    require_root!();
    let mut rig = Rig::new(&[("swp1", access(10))]);
    let swp1 = rig.ports["swp1"];
    rig.run("swp1", &test_frame(BROADCAST, A, None, 1));
    rig.dp
        .fdb_insert(
            FdbKey { mac: B, vlan: 10 },
            FdbEntry {
                ifindex: swp1,
                flags: 0,
                last_seen_ns: 1,
            },
        )
        .unwrap();
    rig.dp
        .fdb_insert(
            FdbKey { mac: C, vlan: 10 },
            FdbEntry {
                ifindex: swp1,
                flags: FDB_FLAG_STATIC,
                last_seen_ns: 0,
            },
        )
        .unwrap();
    let aged = module::age_fdb(&mut rig.dp, std::time::Duration::from_secs(60)).unwrap();
    assert_eq!(aged, 1);
    assert!(rig.fdb(10, A).is_some(), "fresh entry kept");
    assert!(rig.fdb(10, B).is_none(), "stale entry aged out");
    assert!(rig.fdb(10, C).is_some(), "static entry never ages");
}
