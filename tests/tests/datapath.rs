//! Datapath tests: the real programs, loaded through the verifier, run on crafted frames
//! with BPF_PROG_TEST_RUN; we check verdicts, the bytes they leave, and the maps.
//!
//! Every case runs twice, against the XDP program and against the TC program built from
//! the same pipeline code: both must give the same verdicts (compared in XDP's terms), the
//! same bytes and the same map changes.

use xnos::{
    config::{Config, PortMode},
    datapath::{Datapath, module},
    testrun::{self, XDP_DROP, XDP_PASS, XDP_REDIRECT, XdpRun},
};
use xnos_common::{DropReason, FDB_FLAG_STATIC, FdbEntry, FdbKey, LearnEvent, PortStats};
use xnos_tests::{DatapathRig, Netns, require_root, test_frame};

const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
const C: [u8; 6] = [2, 0, 0, 0, 0, 0xc];
const BROADCAST: [u8; 6] = [0xff; 6];

/// Which program type runs the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Xdp,
    Tc,
}

/// `both!(case)`: the test `case::xdp` and `case::tc`, each calling `case(kind)`.
macro_rules! both {
    ($case:ident) => {
        mod $case {
            #[test]
            fn xdp() {
                super::$case(super::Kind::Xdp);
            }
            #[test]
            fn tc() {
                super::$case(super::Kind::Tc);
            }
        }
    };
}

/// The shared datapath rig, driven through the XDP or the TC program.
struct Rig {
    kind: Kind,
    rig: DatapathRig,
}

impl std::ops::Deref for Rig {
    type Target = DatapathRig;

    fn deref(&self) -> &DatapathRig {
        &self.rig
    }
}

impl std::ops::DerefMut for Rig {
    fn deref_mut(&mut self) -> &mut DatapathRig {
        &mut self.rig
    }
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
    fn new(kind: Kind, ports: &[(&str, PortMode)]) -> Self {
        let rig = DatapathRig::new(ports).expect("datapath rig");
        Self { kind, rig }
    }

    /// Run the pipeline on `frame` arriving on `port`; the verdict in XDP's terms (a TC
    /// redirect, or a flood's clones, count as XDP_REDIRECT).
    fn run(&self, port: &str, frame: &[u8]) -> XdpRun {
        match self.kind {
            Kind::Xdp => self.rig.run_xdp(port, frame).expect("BPF_PROG_TEST_RUN"),
            Kind::Tc => {
                let flooded = self.stats(port).flooded;
                let mut run = self.rig.run_tc(port, frame).expect("BPF_PROG_TEST_RUN");
                // A TC flood sends clones and then drops the original.
                let cloned = self.stats(port).flooded > flooded;
                run.action = match run.action {
                    testrun::TC_ACT_OK => XDP_PASS,
                    testrun::TC_ACT_SHOT if cloned => XDP_REDIRECT,
                    testrun::TC_ACT_SHOT => XDP_DROP,
                    testrun::TC_ACT_REDIRECT => XDP_REDIRECT,
                    other => panic!("unexpected TC verdict {other}"),
                };
                run
            }
        }
    }

    fn stats(&self, port: &str) -> PortStats {
        self.rig.stats(port).expect("port counters")
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
both!(access_frame_is_learned_and_flooded_with_its_vlan_tag);
fn access_frame_is_learned_and_flooded_with_its_vlan_tag(kind: Kind) {
    require_root!();
    let rig = Rig::new(kind, &[("swp1", access(10)), ("swp2", access(10))]);
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
both!(known_unicast_gets_the_egress_ports_tagging);
fn known_unicast_gets_the_egress_ports_tagging(kind: Kind) {
    require_root!();
    let rig = Rig::new(
        kind,
        &[
            ("swp1", access(10)),
            ("swp2", access(10)),
            ("swp3", trunk(&[10, 20], Some(30))),
            ("swp4", access(30)),
        ],
    );
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
both!(frames_a_port_may_not_carry_are_dropped_by_reason);
fn frames_a_port_may_not_carry_are_dropped_by_reason(kind: Kind) {
    require_root!();
    let rig = Rig::new(
        kind,
        &[
            ("swp1", access(10)),
            ("swp2", trunk(&[10, 20], None)),
            ("swp3", trunk(&[10], Some(1))),
        ],
    );
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

// What this shows: truncated headers, a stacked tag's included, are dropped as malformed,
// never read past the end.
both!(truncated_frames_are_dropped_as_malformed);
fn truncated_frames_are_dropped_as_malformed(kind: Kind) {
    require_root!();
    let rig = Rig::new(kind, &[("swp1", trunk(&[10], Some(10)))]);
    let tagged = test_frame(BROADCAST, A, Some(10), 1);
    // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header (14 bytes), as
    // does the wire; a 802.1Q header needs 18.
    for len in 14..18 {
        let out = rig.run("swp1", &tagged[..len]);
        assert_eq!(out.action, XDP_DROP, "length {len}");
    }
    // A tag stacked inside the first (802.1Q or 802.1ad) is payload, but a stump of one
    // is malformed too: TC's tag pop would take it along and fail halfway through a flood.
    for inner in [0x8100u16, 0x88a8] {
        let mut stump = tagged[..16].to_vec();
        stump.extend_from_slice(&inner.to_be_bytes());
        stump.push(0x2c);
        let out = rig.run("swp1", &stump);
        assert_eq!(out.action, XDP_DROP, "inner tag {inner:#06x} cut short");
    }
    assert_eq!(drops(&rig.stats("swp1"), DropReason::Malformed), 6);
    // A bare untagged header is a valid (if useless) frame.
    let out = rig.run("swp1", &test_frame(BROADCAST, A, None, 2)[..14]);
    assert_eq!(out.action, XDP_REDIRECT);
}

// What this shows: a destination learned on the ingress port is filtered, like a bridge.
both!(unicast_back_to_its_ingress_port_is_filtered);
fn unicast_back_to_its_ingress_port_is_filtered(kind: Kind) {
    require_root!();
    let rig = Rig::new(kind, &[("swp1", access(10)), ("swp2", access(10))]);
    rig.run("swp1", &test_frame(BROADCAST, B, None, 0));
    let out = rig.run("swp1", &test_frame(B, A, None, 1));
    assert_eq!(out.action, XDP_DROP);
    assert_eq!(drops(&rig.stats("swp1"), DropReason::SamePort), 1);
}

// What this shows: IEEE link-local control frames (STP, LLDP, LACP) go to the kernel
// unchanged and are never flooded or learned from.
both!(link_local_frames_are_punted_to_the_kernel);
fn link_local_frames_are_punted_to_the_kernel(kind: Kind) {
    require_root!();
    let rig = Rig::new(kind, &[("swp1", access(10)), ("swp2", access(10))]);
    let lldp = test_frame([0x01, 0x80, 0xc2, 0, 0, 0x0e], A, None, 1);
    let out = rig.run("swp1", &lldp);
    assert_eq!((out.action, &out.frame), (XDP_PASS, &lldp));
    let stats = rig.stats("swp1");
    assert_eq!((stats.to_kernel, stats.flooded), (1, 0));
    assert!(rig.fdb(10, A).is_none());
}

// What this shows: learning follows a station that moves, reports new and moved MACs on
// the ring buffer, and never overwrites a static entry.
both!(station_moves_are_followed_but_static_entries_stay);
fn station_moves_are_followed_but_static_entries_stay(kind: Kind) {
    require_root!();
    let mut rig = Rig::new(kind, &[("swp1", access(10)), ("swp2", access(10))]);
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
both!(reconcile_converges_and_is_idempotent);
fn reconcile_converges_and_is_idempotent(kind: Kind) {
    require_root!();
    let ns = Netns::new("xr").unwrap();
    for name in ["swp1", "swp2"] {
        ns.veth(name, &format!("{name}p")).unwrap();
    }
    let (choice, mode) = match kind {
        Kind::Xdp => ("auto", "xdp-native"),
        Kind::Tc => ("tc", "tc"),
    };
    let text = format!(
        "[[port]]\nname = \"swp1\"\nmode = \"access\"\nvlan = 10\ndatapath = \"{choice}\"\n\
         [[port]]\nname = \"swp2\"\nmode = \"trunk\"\nvlans = [10, 20]\ndatapath = \"{choice}\"\n\
         [[fdb]]\nmac = \"02:00:00:00:00:0b\"\nvlan = 10\nport = \"swp1\"\n"
    );
    let config = Config::parse("t.toml", &text, |_: &str| true).unwrap();
    let mut dp = Datapath::load(None).unwrap();
    ns.enter(|| {
        let statuses = module::reconcile(
            &mut dp,
            &config,
            &Default::default(),
            xnos::kernel::link::ifindex,
        )
        .unwrap()
        .ports;
        assert!(
            statuses
                .values()
                .all(|s| s.error.is_none() && s.datapath.name() == mode),
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
        let again = module::reconcile(
            &mut dp,
            &config,
            &Default::default(),
            xnos::kernel::link::ifindex,
        )
        .unwrap()
        .ports;
        assert_eq!(again, statuses);
        assert_eq!(dp.ports().unwrap(), ports);
        assert!(dp.fdb_get(&learned).is_some());

        // swp2 leaves VLAN 20 and swp1 leaves the switch: its entries and XDP go too.
        let text = format!(
            "[[port]]\nname = \"swp2\"\nmode = \"trunk\"\nvlans = [10]\ndatapath = \"{choice}\"\n"
        );
        let smaller = Config::parse("t.toml", &text, |_: &str| true).unwrap();
        let statuses = module::reconcile(
            &mut dp,
            &smaller,
            &Default::default(),
            xnos::kernel::link::ifindex,
        )
        .unwrap()
        .ports;
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
both!(aging_removes_only_stale_learned_entries);
fn aging_removes_only_stale_learned_entries(kind: Kind) {
    require_root!();
    let mut rig = Rig::new(kind, &[("swp1", access(10))]);
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

// What this shows: a full FDB refuses new MACs and counts them on their port (their
// frames still flooded, no learn event), while static entries and stations already
// learned keep forwarding, and a learned station that moves is still followed.
both!(a_full_fdb_refuses_new_macs_but_keeps_its_stations);
fn a_full_fdb_refuses_new_macs_but_keeps_its_stations(kind: Kind) {
    require_root!();
    let mut rig = Rig::new(
        kind,
        &[
            ("swp1", access(10)),
            ("swp2", access(10)),
            ("swp3", access(10)),
        ],
    );
    let mut ring = rig.dp.take_learn_events().unwrap();
    let (swp1, swp2, swp3) = (rig.ports["swp1"], rig.ports["swp2"], rig.ports["swp3"]);
    rig.run("swp1", &test_frame(BROADCAST, A, None, 1));
    rig.run("swp2", &test_frame(BROADCAST, B, None, 2));
    rig.dp
        .fdb_insert(
            FdbKey { mac: C, vlan: 10 },
            FdbEntry {
                ifindex: swp3,
                flags: FDB_FLAG_STATIC,
                last_seen_ns: 0,
            },
        )
        .unwrap();
    // Fill the rest with learned entries, as a flood on swp3 would.
    let now = rig.fdb(10, A).unwrap().last_seen_ns;
    for i in 3..xnos_common::FDB_SIZE {
        let mac = [2, 0xf, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8];
        let entry = FdbEntry {
            ifindex: swp3,
            flags: 0,
            last_seen_ns: now,
        };
        rig.dp.fdb_insert(FdbKey { mac, vlan: 10 }, entry).unwrap();
    }
    while ring.next().is_some() {}

    let before = rig.stats("swp3");
    let flood = 500u32;
    for i in 0..flood {
        let mac = [2, 0xe, 0, 0, (i >> 8) as u8, i as u8];
        let out = rig.run("swp3", &test_frame(BROADCAST, mac, None, i));
        assert_eq!(
            out.action, XDP_REDIRECT,
            "a refused MAC's frame is still flooded"
        );
        assert!(rig.fdb(10, mac).is_none(), "no room for {mac:x?}");
    }
    let after = rig.stats("swp3");
    assert_eq!(after.learn_refused - before.learn_refused, u64::from(flood));
    assert_eq!(after.learned, before.learned);
    assert!(ring.next().is_none(), "no learn event for a refused MAC");

    // The stations learned before the flood, and the static entry, still forward.
    let out = rig.run("swp1", &test_frame(B, A, None, 3));
    assert_eq!(out.action, XDP_REDIRECT);
    assert_eq!(rig.stats("swp2").tx_packets, 1, "A -> B as known unicast");
    let out = rig.run("swp2", &test_frame(C, B, None, 4));
    assert_eq!(out.action, XDP_REDIRECT);
    assert_eq!(
        rig.stats("swp3").tx_packets,
        1,
        "B -> C by its static entry"
    );
    assert_eq!(rig.stats("swp1").learn_refused, 0);
    assert_eq!(rig.stats("swp2").learn_refused, 0);
    assert_eq!(rig.fdb(10, A).unwrap().ifindex, swp1);
    assert_eq!(rig.fdb(10, B).unwrap().ifindex, swp2);
    assert!(
        ring.next().is_none(),
        "a station seen again on its port is no event"
    );

    // A move needs no room: the entry is updated in place.
    rig.run("swp2", &test_frame(BROADCAST, A, None, 5));
    assert_eq!(rig.fdb(10, A).unwrap().ifindex, swp2);
    assert!(ring.next().is_some(), "the move is reported");
    let entry = rig.fdb(10, C).unwrap();
    assert_eq!((entry.ifindex, entry.flags), (swp3, FDB_FLAG_STATIC));
}

/// Log records, kept for the test to read.
#[derive(Clone, Default)]
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = format!("{} {}", record.level(), record.args());
        self.0.lock().unwrap().push(line);
    }

    fn flush(&self) {}
}

// What this shows: with the datapath log on, a MAC the FDB has no room for is logged with
// its VLAN (and the frame still flooded); with it off there is no log to read at all.
#[test]
fn a_full_fdb_is_logged_when_the_datapath_log_is_on() {
    require_root!();
    let off = DatapathRig::new(&[("swp1", access(10))]).unwrap();
    let mut off = off.dp;
    assert!(off.take_log(Capture::default()).is_none());

    let mut rig = DatapathRig::new_with(&[("swp1", access(10)), ("swp2", access(10))], true)
        .expect("datapath with logging through the verifier");
    let capture = Capture::default();
    let mut log = rig
        .dp
        .take_log(capture.clone())
        .expect("log on")
        .expect("log ring");
    let swp2 = rig.ports["swp2"];
    for i in 0..xnos_common::FDB_SIZE {
        let mac = [2, 0xf, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8];
        let entry = FdbEntry {
            ifindex: swp2,
            flags: 0,
            last_seen_ns: 1,
        };
        rig.dp.fdb_insert(FdbKey { mac, vlan: 10 }, entry).unwrap();
    }
    let out = rig
        .run_xdp("swp1", &test_frame(BROADCAST, A, None, 1))
        .unwrap();
    assert_eq!(out.action, XDP_REDIRECT);
    assert!(rig.fdb(10, A).is_none(), "no room for A");
    log.flush();
    let lines = capture.0.lock().unwrap().clone();
    assert_eq!(
        lines,
        ["WARN FDB full: 02:00:00:00:00:0a not learned in VLAN 10"]
    );
}

mod l3 {
    //! The L3 pipeline through BPF_PROG_TEST_RUN: LPM, ECMP, TTL/hop limit, checksum,
    //! MAC rewrite, VLAN tagging on egress, and punts by reason.

    use etherparse::{Ethernet2Header, PacketBuilder, SlicedPacket};
    use xnos_common::{
        L3Iface, L3Stats, Nexthop, PuntReason, ROUTE_FORWARD, ROUTE_LOCAL, RouteEntry,
    };
    use xnos_tests::{nexthop, nexthop_group};

    use super::*;

    const ROUTER: [u8; 6] = [2, 0, 0, 0, 1, 0];

    struct L3Rig {
        rig: Rig,
    }

    /// A nexthop through `svi` (leaving as `out`) to the gateway `via`.
    fn via(svi: u32, out: L3Iface, via: &str) -> Nexthop {
        nexthop(svi, out, Some(via.parse().unwrap()))
    }

    fn route(rig: &mut Rig, prefix: &str, entry: RouteEntry) {
        rig.dp
            .test_rig()
            .add_route(prefix.parse().unwrap(), entry)
            .unwrap();
    }

    fn forward(nhg: u32) -> RouteEntry {
        RouteEntry {
            kind: ROUTE_FORWARD,
            nhg,
        }
    }

    fn neighbour(rig: &mut Rig, ifindex: u32, ip: &str, mac: [u8; 6]) {
        rig.dp
            .test_rig()
            .add_neighbour(ifindex, ip.parse().unwrap(), mac)
            .unwrap();
    }

    /// VLANs 10 and 20 with SVIs; B (10.0.20.2) behind swp2, C (10.0.20.3) behind the trunk.
    fn l3_rig(kind: Kind) -> L3Rig {
        let mut rig = Rig::new(
            kind,
            &[
                ("swp1", access(10)),
                ("swp2", access(20)),
                ("swp3", trunk(&[10, 20], None)),
                ("vlan10i", access(10)),
                ("vlan20i", access(20)),
            ],
        );
        rig.add_svi("vlan10i", 10, ROUTER).unwrap();
        let (svi20, out20) = rig.add_svi("vlan20i", 20, ROUTER).unwrap();
        let groups = [
            (1, nexthop_group(&[nexthop(svi20, out20, None)])),
            (2, nexthop_group(&[via(svi20, out20, "10.0.20.3")])),
            (3, nexthop_group(&[via(svi20, out20, "10.0.20.2")])),
            (
                4,
                nexthop_group(&[
                    via(svi20, out20, "10.0.20.2"),
                    via(svi20, out20, "10.0.20.3"),
                ]),
            ),
            (5, nexthop_group(&[via(svi20, out20, "10.0.20.9")])),
        ];
        for (id, g) in groups {
            rig.dp.test_rig().add_nexthop_group(id, g).unwrap();
        }
        route(&mut rig, "10.0.20.0/24", forward(1));
        route(&mut rig, "10.99.0.0/16", forward(2));
        route(&mut rig, "10.99.1.0/24", forward(3));
        route(&mut rig, "10.98.0.0/16", forward(4));
        route(&mut rig, "10.97.0.0/16", forward(5));
        route(
            &mut rig,
            "10.0.10.1/32",
            RouteEntry {
                kind: ROUTE_LOCAL,
                nhg: 0,
            },
        );
        route(&mut rig, "fd00:20::/64", forward(1));
        neighbour(&mut rig, svi20, "10.0.20.2", B);
        neighbour(&mut rig, svi20, "10.0.20.3", C);
        neighbour(&mut rig, svi20, "fd00:20::2", B);
        // B and C are known in VLAN 20.
        rig.run("swp2", &test_frame(BROADCAST, B, None, 0));
        rig.run("swp3", &test_frame(BROADCAST, C, Some(20), 0));
        L3Rig { rig }
    }

    fn udp4(dst: [u8; 4], ttl: u8, sport: u16) -> Vec<u8> {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(A, ROUTER)
            .ipv4([10, 0, 10, 2], dst, ttl)
            .udp(sport, 53)
            .write(&mut frame, b"payload")
            .unwrap();
        frame
    }

    fn l3_stats(rig: &Rig) -> L3Stats {
        rig.dp.l3_stats().unwrap()
    }

    fn punts(rig: &Rig, reason: PuntReason) -> u64 {
        l3_stats(rig).punts[reason as usize]
    }

    // What this shows: a routed IPv4 packet leaves with the neighbour's MAC, the router
    // MAC as source, TTL - 1 and a header checksum equal to one computed from scratch.
    both!(ipv4_is_routed_with_ttl_checksum_and_mac_rewrite);
    fn ipv4_is_routed_with_ttl_checksum_and_mac_rewrite(kind: Kind) {
        require_root!();
        let l3 = l3_rig(kind);
        let frame = udp4([10, 0, 20, 2], 64, 1000);
        let out = l3.rig.run("swp1", &frame);
        assert_eq!(out.action, XDP_REDIRECT);
        let packet = SlicedPacket::from_ethernet(&out.frame).unwrap();
        let Some(etherparse::LinkSlice::Ethernet2(eth)) = &packet.link else {
            panic!()
        };
        assert_eq!((eth.destination(), eth.source()), (B, ROUTER));
        assert!(packet.vlan.is_none(), "access port egress is untagged");
        let Some(etherparse::NetSlice::Ipv4(ip)) = &packet.net else {
            panic!()
        };
        let header = ip.header().to_header();
        assert_eq!(header.time_to_live, 63);
        assert_eq!(header.header_checksum, header.calc_header_checksum());
        assert_eq!(out.frame[14 + 20..], frame[14 + 20..], "payload untouched");
        assert_eq!(l3_stats(&l3.rig).routed_v4, 1);
        assert_eq!(l3.rig.stats("swp2").tx_packets, 1);
        // Checksum carries: a header whose checksum wraps (TTL 1 -> 0 excluded) stays valid.
        for ttl in [2, 255, 128] {
            let out = l3.rig.run("swp1", &udp4([10, 0, 20, 2], ttl, 7));
            let (header, _) = etherparse::Ipv4Header::from_slice(&out.frame[14..]).unwrap();
            assert_eq!(
                (header.time_to_live, header.header_checksum),
                (ttl - 1, header.calc_header_checksum())
            );
        }
    }

    // What this shows: the longest prefix wins, and a nexthop behind a trunk gets the
    // egress VLAN's tag.
    both!(longest_prefix_match_and_egress_tagging);
    fn longest_prefix_match_and_egress_tagging(kind: Kind) {
        require_root!();
        let l3 = l3_rig(kind);
        let out = l3.rig.run("swp1", &udp4([10, 99, 1, 5], 64, 1));
        assert_eq!(out.frame[..6], B, "10.99.1.0/24 beats 10.99.0.0/16");
        let out = l3.rig.run("swp1", &udp4([10, 99, 2, 5], 64, 1));
        assert_eq!(out.frame[..6], C, "10.99.0.0/16 for the rest");
        assert_eq!(
            out.frame[12..16],
            [0x81, 0x00, 0x00, 20],
            "C is behind the trunk: tagged VLAN 20"
        );
        assert_eq!(
            Ethernet2Header::from_slice(&out.frame).unwrap().0.source,
            ROUTER
        );
    }

    // What this shows: ECMP picks the same nexthop for every packet of a flow and spreads
    // flows over all nexthops of the group.
    both!(ecmp_is_stable_per_flow_and_uses_every_nexthop);
    fn ecmp_is_stable_per_flow_and_uses_every_nexthop(kind: Kind) {
        require_root!();
        let l3 = l3_rig(kind);
        let mut seen = std::collections::BTreeMap::new();
        for sport in 0..64u16 {
            let first = l3.rig.run("swp1", &udp4([10, 98, 0, 1], 64, sport)).frame[..6].to_vec();
            let again = l3.rig.run("swp1", &udp4([10, 98, 0, 1], 64, sport)).frame[..6].to_vec();
            assert_eq!(first, again, "flow {sport} changed nexthop");
            *seen.entry(first).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(
            seen.values().all(|n| *n >= 8),
            "flows badly spread: {seen:?}"
        );
    }

    // What this shows: IPv6 is routed with hop limit - 1 and the MACs rewritten.
    both!(ipv6_is_routed_with_hop_limit_and_mac_rewrite);
    fn ipv6_is_routed_with_hop_limit_and_mac_rewrite(kind: Kind) {
        require_root!();
        let l3 = l3_rig(kind);
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(A, ROUTER)
            .ipv6(
                "fd00:10::2".parse::<std::net::Ipv6Addr>().unwrap().octets(),
                "fd00:20::2".parse::<std::net::Ipv6Addr>().unwrap().octets(),
                64,
            )
            .udp(1000, 53)
            .write(&mut frame, b"payload")
            .unwrap();
        let out = l3.rig.run("swp1", &frame);
        assert_eq!(out.action, XDP_REDIRECT);
        assert_eq!((&out.frame[..6], &out.frame[6..12]), (&B[..], &ROUTER[..]));
        let (ip, _) = etherparse::Ipv6Header::from_slice(&out.frame[14..]).unwrap();
        assert_eq!(ip.hop_limit, 63);
        assert_eq!(l3_stats(&l3.rig).routed_v6, 1);
    }

    // What this shows: what the fast path must not or cannot route goes, untagged, to
    // the SVI's internal port (the kernel), counted by reason and on its ingress port as
    // punted (not as to-kernel, which is the L2 pipeline's).
    both!(punts_go_to_the_kernel_counted_by_reason);
    fn punts_go_to_the_kernel_counted_by_reason(kind: Kind) {
        require_root!();
        let l3 = l3_rig(kind);
        let mut options = udp4([10, 0, 20, 2], 64, 1);
        options[14] = 0x46;
        let mut arp = test_frame(ROUTER, A, None, 1);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        // An option of unknown type 0x9e: "discard, send a parameter problem" (RFC 8200
        // 4.2), which only the kernel would do.
        let mut hop_by_hop = udp6("fd00:10::2", "fd00:20::2", b"payload");
        hop_by_hop.splice(54..54, [17, 0, 0x9e, 4, 0, 0, 0, 0]);
        hop_by_hop[20] = 0;
        hop_by_hop[19] += 8;
        let cases = [
            (udp4([10, 0, 20, 2], 1, 1), PuntReason::TtlExpired),
            (udp4([10, 0, 10, 1], 64, 1), PuntReason::ToSelf),
            (udp4([192, 0, 2, 1], 64, 1), PuntReason::NoRoute),
            (udp4([10, 97, 0, 1], 64, 1), PuntReason::NoNeighbor),
            (options, PuntReason::IpOptions),
            (arp, PuntReason::Unsupported),
            (hop_by_hop, PuntReason::IpOptions),
        ];
        for (i, (frame, reason)) in cases.iter().enumerate() {
            let out = l3.rig.run("swp1", frame);
            assert_eq!(
                (out.action, &out.frame),
                (XDP_REDIRECT, frame),
                "{reason:?} not punted untouched"
            );
            let earlier = cases[..=i].iter().filter(|(_, r)| r == reason).count();
            assert_eq!(punts(&l3.rig, *reason), earlier as u64, "{reason:?}");
            assert_eq!(
                l3.rig.stats("vlan10i").tx_packets,
                i as u64 + 1,
                "{reason:?} not sent to the kernel"
            );
            let swp1 = l3.rig.stats("swp1");
            assert_eq!(
                (swp1.punted, swp1.to_kernel),
                (i as u64 + 1, 0),
                "{reason:?} not counted as punted on its ingress port"
            );
        }
        // A tagged packet from the trunk is punted untagged (the internal port is access).
        let tagged = with_tag(&udp4([10, 0, 20, 2], 1, 1), 10);
        let out = l3.rig.run("swp3", &tagged);
        assert_eq!(
            (out.action, out.frame),
            (XDP_REDIRECT, udp4([10, 0, 20, 2], 1, 1))
        );
        assert_eq!(l3.rig.stats("swp3").punted, 1, "punt from the trunk");
        assert_eq!(l3_stats(&l3.rig).routed_v4, 0);
    }

    fn udp6(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(A, ROUTER)
            .ipv6(
                src.parse::<std::net::Ipv6Addr>().unwrap().octets(),
                dst.parse::<std::net::Ipv6Addr>().unwrap().octets(),
                64,
            )
            .udp(1000, 53)
            .write(&mut frame, payload)
            .unwrap();
        frame
    }

    fn udp4_from(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(A, ROUTER)
            .ipv4(src, dst, 64)
            .udp(1000, 53)
            .write(&mut frame, payload)
            .unwrap();
        frame
    }

    /// Recompute the IPv4 header checksum (20 bytes) after a test changed the header.
    fn fix_checksum(frame: &mut [u8]) {
        frame[24..26].copy_from_slice(&[0, 0]);
        let mut sum: u32 = frame[14..34]
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        frame[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    }

    // What this shows: packets a router must not forward (RFC 1812 §5.2.2, §5.3.7; RFC
    // 4291), and that Linux drops, are dropped and counted by reason on the ingress port;
    // an IPv6 link-local source goes to the kernel, which answers "beyond scope".
    both!(invalid_packets_are_dropped_by_reason);
    fn invalid_packets_are_dropped_by_reason(kind: Kind) {
        require_root!();
        let l3 = l3_rig(kind);
        let good = udp4([10, 0, 20, 2], 64, 1);
        let mut bad_checksum = good.clone();
        bad_checksum[24] ^= 0x01;
        let mut short_ihl = good.clone();
        short_ihl[14] = 0x44;
        fix_checksum(&mut short_ihl);
        let mut len_under_header = good.clone();
        len_under_header[16..18].copy_from_slice(&19u16.to_be_bytes());
        fix_checksum(&mut len_under_header);
        let mut len_over_frame = good.clone();
        let total = (good.len() - 14 + 1) as u16;
        len_over_frame[16..18].copy_from_slice(&total.to_be_bytes());
        fix_checksum(&mut len_over_frame);
        let mut v6_over_frame = udp6("fd00:10::2", "fd00:20::2", b"payload");
        v6_over_frame[18..20].copy_from_slice(&100u16.to_be_bytes());
        let cases = [
            (bad_checksum, DropReason::BadChecksum),
            (short_ihl, DropReason::BadLength),
            (len_under_header, DropReason::BadLength),
            (len_over_frame, DropReason::BadLength),
            (v6_over_frame, DropReason::BadLength),
            (
                udp4_from([0, 1, 2, 3], [10, 0, 20, 2], b"x"),
                DropReason::MartianSource,
            ),
            (
                udp4_from([127, 0, 0, 1], [10, 0, 20, 2], b"x"),
                DropReason::MartianSource,
            ),
            (
                udp4_from([224, 0, 0, 5], [10, 0, 20, 2], b"x"),
                DropReason::MartianSource,
            ),
            (
                udp4_from([255; 4], [10, 0, 20, 2], b"x"),
                DropReason::MartianSource,
            ),
            (udp6("::", "fd00:20::2", b"x"), DropReason::MartianSource),
            (udp6("::1", "fd00:20::2", b"x"), DropReason::MartianSource),
            (
                udp6("ff02::1", "fd00:20::2", b"x"),
                DropReason::MartianSource,
            ),
        ];
        for (frame, reason) in &cases {
            let before = drops(&l3.rig.stats("swp1"), *reason);
            let out = l3.rig.run("swp1", frame);
            assert_eq!(out.action, XDP_DROP, "{reason:?}: {frame:02x?}");
            assert_eq!(
                drops(&l3.rig.stats("swp1"), *reason),
                before + 1,
                "{reason:?}"
            );
        }
        let stats = l3_stats(&l3.rig);
        assert_eq!((stats.routed_v4, stats.routed_v6), (0, 0));
        assert_eq!(l3.rig.stats("vlan10i").tx_packets, 0, "nothing punted");

        let link_local = udp6("fe80::2", "fd00:20::2", b"x");
        let out = l3.rig.run("swp1", &link_local);
        assert_eq!((out.action, &out.frame), (XDP_REDIRECT, &link_local));
        assert_eq!(punts(&l3.rig, PuntReason::Unsupported), 1);
        // Class E (240/4) is no martian to Linux, and the same packet with a valid header
        // is routed.
        for frame in [udp4_from([240, 0, 0, 1], [10, 0, 20, 2], b"x"), good] {
            assert_eq!(l3.rig.run("swp1", &frame).action, XDP_REDIRECT);
        }
        assert_eq!(l3_stats(&l3.rig).routed_v4, 2);
    }

    // What this shows: a packet shorter than its frame (Ethernet padding) is routed cut to
    // its own length, as Linux trims it.
    both!(padding_after_the_packet_is_cut);
    fn padding_after_the_packet_is_cut(kind: Kind) {
        require_root!();
        let l3 = l3_rig(kind);
        for frame in [
            udp4([10, 0, 20, 2], 64, 1),
            udp6("fd00:10::2", "fd00:20::2", b"payload"),
        ] {
            let mut padded = frame.clone();
            padded.extend_from_slice(&[0xee; 12]);
            let out = l3.rig.run("swp1", &padded);
            assert_eq!(out.action, XDP_REDIRECT);
            assert_eq!(out.frame.len(), frame.len(), "padding not cut");
            let routed = l3.rig.run("swp1", &frame);
            assert_eq!(out.frame, routed.frame, "padded and unpadded differ");
        }
    }

    // What this shows: a packet longer than the egress interface's MTU is not routed
    // (the fast path cannot fragment nor send ICMP) but punted to the kernel untouched;
    // one of exactly the MTU is routed.
    both!(packets_over_the_egress_mtu_go_to_the_kernel);
    fn packets_over_the_egress_mtu_go_to_the_kernel(kind: Kind) {
        require_root!();
        let l3 = l3_rig(kind);
        // 10.0.20.0/24 and fd00:20::/64 leave through VLAN 20, MTU 1500.
        let v4 = |ip_len: usize| udp4_from([10, 0, 10, 2], [10, 0, 20, 2], &vec![7; ip_len - 28]);
        let v6 = |ip_len: usize| udp6("fd00:10::2", "fd00:20::2", &vec![7; ip_len - 48]);
        for (fits, too_big) in [(v4(1500), v4(1501)), (v6(1500), v6(1501))] {
            assert_eq!(l3.rig.run("swp1", &fits).action, XDP_REDIRECT);
            let out = l3.rig.run("swp1", &too_big);
            assert_eq!((out.action, &out.frame), (XDP_REDIRECT, &too_big));
        }
        let stats = l3_stats(&l3.rig);
        assert_eq!((stats.routed_v4, stats.routed_v6), (1, 1));
        assert_eq!(punts(&l3.rig, PuntReason::TooBig), 2);
        assert_eq!(
            l3.rig.stats("vlan10i").tx_packets,
            2,
            "not sent to the kernel"
        );
    }

    // What this shows: a GSO packet (TC: GRO merged several) is judged by its segments,
    // as the kernel does (skb_gso_validate_network_len): routed when each segment fits
    // the egress MTU, punted when one would not.
    #[test]
    fn gso_packets_fit_by_their_segments() {
        require_root!();
        let l3 = l3_rig(Kind::Tc);
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(A, ROUTER)
            .ipv4([10, 0, 10, 2], [10, 0, 20, 2], 64)
            .tcp(1000, 80, 1, 65535)
            .write(&mut frame, &[7; 2 * 1400])
            .unwrap();
        let fd = l3.rig.dp.tc_fd().unwrap();
        let swp1 = l3.rig.ports["swp1"];
        let run = |gso_size| {
            l3.rig
                .ns
                .enter(|| testrun::run_tc_gso(fd, swp1, &frame, 2, gso_size))
                .unwrap()
                .expect("BPF_PROG_TEST_RUN")
        };
        // 20 (IP) + 20 (TCP) + 1460 = 1500: fits; 1461 does not.
        assert_eq!(run(1400).action, testrun::TC_ACT_REDIRECT);
        assert_eq!(run(1460).action, testrun::TC_ACT_REDIRECT);
        assert_eq!(l3_stats(&l3.rig).routed_v4, 2);
        assert_eq!(run(1461).action, testrun::TC_ACT_REDIRECT);
        assert_eq!(punts(&l3.rig, PuntReason::TooBig), 1);
        assert_eq!(l3_stats(&l3.rig).routed_v4, 2);
    }
}

// What this shows: what the datapath could not write is published as such, and `show
// routes` believes the publication, not the FIB: with the nexthop-group map full, a route
// needing a new group has no fast path and says why, while a route whose group exists
// is forwarded.
#[test]
fn a_route_the_maps_cannot_hold_is_published_with_its_error() {
    require_root!();
    use std::net::IpAddr;

    use xnos::{
        api::Api,
        datapath::route::L3,
        statedb::{
            FibNexthop, FibRoute, Hardware, LinkState, OperState, ProtocolName, RouteAction,
            RouteKind, RouteProtocol, RouteTable, StateDb,
        },
    };
    use xnos_common::{L3Iface, NHG_SIZE};
    use xnos_tests::{nexthop, nexthop_group};

    let text = "[[vlan]]\nid = 10\n[[interface]]\nvlan = 10\naddresses = [\"10.0.10.1/24\"]\n";
    let config = Config::parse("t.toml", text, |_: &str| true).unwrap();
    let db = StateDb::new(config, |_: &str| true);
    let writers = db.writers();
    let link = |name: &str, ifindex: u32| LinkState {
        name: name.into(),
        ifindex,
        oper_state: OperState::Up,
        mac: None,
        mtu: Some(1500),
        alias: None,
        switch_id: None,
        master: None,
        up: true,
    };
    let route = |prefix: &str, gateway: &str| FibRoute {
        prefix: prefix.parse().unwrap(),
        table: RouteTable::Main,
        tos: 0,
        metric: 0,
        kind: RouteKind::Unicast,
        protocol: RouteProtocol::Named(ProtocolName::Static),
        nexthops: [FibNexthop {
            gateway: Some(gateway.parse::<IpAddr>().unwrap()),
            ifindex: 900,
        }]
        .into(),
        hardware: None::<Hardware>,
    };
    writers.kernel.write(|tx| {
        tx.link("vlan10", Some(link("vlan10", 900)));
        tx.link("vlan10i", Some(link("vlan10i", 901)));
        for (prefix, gateway) in [("10.1.0.0/16", "10.0.10.2"), ("10.2.0.0/16", "10.0.10.3")] {
            let r = route(prefix, gateway);
            tx.fib(r.key(), Some(r));
        }
    });

    let mut dp = Datapath::load(None).unwrap();
    let mut l3 = L3::load(&mut dp).unwrap();
    // The first route's group goes in; then the map is filled to its capacity.
    db.read(|state| {
        let mut only_first = state.clone();
        only_first
            .observed
            .fib
            .retain(|key, _| key.prefix.to_string() == "10.1.0.0/16");
        l3.sync(&mut dp, &only_first).unwrap();
    });
    let out = L3Iface::default();
    for id in 100..(100 + NHG_SIZE) {
        if dp
            .test_rig()
            .add_nexthop_group(id, nexthop_group(&[nexthop(1, out, None)]))
            .is_err()
        {
            break;
        }
    }
    let touched = db.read(|state| l3.sync(&mut dp, state).unwrap());
    writers.datapath.write(|tx| l3.publish(tx, &touched));

    db.read(|state| {
        let published = |prefix: &str| {
            state
                .observed
                .datapath_routes
                .iter()
                .find(|(key, _)| key.prefix.to_string() == prefix)
                .unwrap()
                .1
        };
        let first = published("10.1.0.0/16");
        assert_eq!(
            (first.action, first.error.as_deref()),
            (Some(RouteAction::Forward), None)
        );
        let second = published("10.2.0.0/16");
        assert_eq!(second.action, None, "{second:?}");
        assert!(
            second
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with("nexthop group not written")),
            "{second:?}"
        );
    });
    let api = Api::new(
        writers.api,
        None,
        None,
        "/dev/null".into(),
        Default::default(),
    );
    let routes = api.routes().routes;
    let shown = |prefix: &str| {
        routes
            .iter()
            .find(|r| r.prefix.to_string() == prefix)
            .unwrap()
            .clone()
    };
    assert!(shown("10.1.0.0/16").fast_path);
    let failed = shown("10.2.0.0/16");
    assert!(!failed.fast_path, "{failed:?}");
    assert!(failed.fast_path_error.is_some(), "{failed:?}");
}
