//! The switch `xnos-bench` measures the datapath on, and the per-stage build of the
//! pipeline it times stage by stage; shared with the test that keeps that build working
//! (tests/tests/stages.rs), since timings are never asserted.

use anyhow::Context as _;
use xnos::{config::PortMode, datapath::route::addr16, testrun};
use xnos_common::{ROUTE_FORWARD, RouteEntry};

use crate::{DatapathRig, nexthop, nexthop_group};

/// The datapath built with its `stages` feature (tests/build.rs): xnosd's pipeline and
/// maps, plus one program per stage that stops the pipeline after it (ebpf stage.rs).
pub static STAGES_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xnos"));

/// The router MAC of both SVIs.
pub const ROUTER: [u8; 6] = [2, 0, 0, 0, 1, 0];
/// Flows per kind of traffic (hosts, or UDP source ports).
pub const FLOWS: usize = 64;

/// Host `i` of group `kind` (0xa: behind swp1, 0xb: swp2, 0xc: the trunk, 0xd: swp4).
pub fn mac(kind: u8, i: usize) -> [u8; 6] {
    [2, kind, 0, 0, (i >> 8) as u8, i as u8]
}

/// A 60-byte IPv4 UDP frame (64 bytes on the wire) from `src` to the router.
pub fn udp4(src: [u8; 6], dst: [u8; 4], sport: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    etherparse::PacketBuilder::ethernet2(src, ROUTER)
        .ipv4([10, 0, 10, 2], dst, 64)
        .udp(sport, 53)
        .write(&mut frame, &[0; 18])
        .expect("valid frame");
    frame
}

/// The IPv6 UDP frame with the same payload as `udp4`'s (80 bytes).
pub fn udp6(src: [u8; 6], dst: [u8; 16], sport: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    etherparse::PacketBuilder::ethernet2(src, ROUTER)
        .ipv6(addr16("fd00:10::2".parse().expect("valid")), dst, 64)
        .udp(sport, 53)
        .write(&mut frame, &[0; 18])
        .expect("valid frame");
    frame
}

pub fn l2_frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    crate::test_frame(dst, src, None, 0)
}

/// The frames of each kind of traffic, one per flow, all entering on swp1 (access, VLAN 10).
pub struct Frames {
    /// To hosts behind swp2 (access, VLAN 10).
    pub unicast: Vec<Vec<u8>>,
    /// To hosts behind the trunk swp3: the tag is pushed.
    pub push: Vec<Vec<u8>>,
    pub flood: Vec<Vec<u8>>,
    /// Routed from VLAN 10 to hosts of VLAN 20 (swp4).
    pub routed4: Vec<Vec<u8>>,
    pub routed6: Vec<Vec<u8>>,
}

/// A switch of six ports: swp1 and swp2 access ports of VLAN 10, swp3 a trunk of VLANs 10
/// and 20, swp4 an access port of VLAN 20; both VLANs routed (SVIs through vlan10i and
/// vlan20i) with one route each for IPv4 and IPv6; its FDB has learned every host and its
/// neighbour table holds every host of VLAN 20.
pub struct BenchSwitch {
    pub rig: DatapathRig,
    pub frames: Frames,
}

impl BenchSwitch {
    /// The switch on xnosd's datapath, or on the datapath loaded from `object`.
    pub fn new(object: Option<&[u8]>) -> anyhow::Result<Self> {
        let ports = [
            ("swp1", PortMode::Access { vlan: 10 }),
            ("swp2", PortMode::Access { vlan: 10 }),
            (
                "swp3",
                PortMode::Trunk {
                    vlans: [10, 20].into(),
                    native_vlan: None,
                },
            ),
            ("swp4", PortMode::Access { vlan: 20 }),
            ("vlan10i", PortMode::Access { vlan: 10 }),
            ("vlan20i", PortMode::Access { vlan: 20 }),
        ];
        let mut rig = match object {
            Some(object) => DatapathRig::with_object(&ports, object)?,
            None => DatapathRig::new(&ports)?,
        };
        rig.add_svi("vlan10i", 10, ROUTER)?;
        let (svi20, out20) = rig.add_svi("vlan20i", 20, ROUTER)?;
        let mut l3 = rig.dp.test_rig();
        l3.add_nexthop_group(1, nexthop_group(&[nexthop(svi20, out20, None)]))?;
        for prefix in ["10.0.20.0/24", "fd00:20::/64"] {
            l3.add_route(
                prefix.parse()?,
                RouteEntry {
                    kind: ROUTE_FORWARD,
                    nhg: 1,
                },
            )?;
        }

        // Teach the FDB: B_i behind swp2 (access), C_i behind the trunk, hosts of VLAN 20
        // on swp4.
        for i in 0..FLOWS {
            rig.run_xdp("swp2", &l2_frame([0xff; 6], mac(0xb, i)))?;
            let mut tagged = l2_frame([0xff; 6], mac(0xc, i));
            tagged.splice(12..12, [0x81, 0, 0, 10]);
            rig.run_xdp("swp3", &tagged)?;
            rig.run_xdp("swp4", &l2_frame([0xff; 6], mac(0xd, i)))?;
        }
        for i in 0..FLOWS {
            let v4 = std::net::IpAddr::from([10, 0, 20, i as u8 + 2]);
            let v6 = std::net::IpAddr::from(addr16(format!("fd00:20::{:x}", i + 2).parse()?));
            for ip in [v4, v6] {
                rig.dp.test_rig().add_neighbour(svi20, ip, mac(0xd, i))?;
            }
        }

        let frames = Frames {
            unicast: (0..FLOWS)
                .map(|i| l2_frame(mac(0xb, i), mac(0xa, i)))
                .collect(),
            push: (0..FLOWS)
                .map(|i| l2_frame(mac(0xc, i), mac(0xa, i)))
                .collect(),
            flood: (0..FLOWS)
                .map(|i| l2_frame([0xff; 6], mac(0xa, i)))
                .collect(),
            routed4: (0..FLOWS)
                .map(|i| udp4(mac(0xa, i), [10, 0, 20, i as u8 + 2], 1000 + i as u16))
                .collect(),
            routed6: (0..FLOWS)
                .map(|i| {
                    udp6(
                        mac(0xa, i),
                        addr16(format!("fd00:20::{:x}", i + 2).parse().expect("valid")),
                        1000 + i as u16,
                    )
                })
                .collect(),
        };
        Ok(Self { rig, frames })
    }

    /// The switch on the stages build, with every stage program loaded (through the
    /// verifier).
    pub fn with_stages() -> anyhow::Result<Self> {
        let mut switch = Self::new(Some(STAGES_OBJECT))?;
        let programs: std::collections::BTreeSet<&'static str> = PATHS
            .iter()
            .flat_map(|p| p.stages)
            .map(|s| s.program)
            .collect();
        for program in programs {
            if program != WHOLE_PIPELINE {
                switch
                    .rig
                    .dp
                    .load_xdp(program)
                    .with_context(|| format!("loading {program}"))?;
            }
        }
        Ok(switch)
    }

    /// The frames of `path`.
    pub fn path_frames(&self, path: &Path) -> &[Vec<u8>] {
        match path.traffic {
            Traffic::L2Unicast => &self.frames.unicast,
            Traffic::Routed4 => &self.frames.routed4,
            Traffic::Routed6 => &self.frames.routed6,
        }
    }
}

/// The program that runs the whole pipeline (xnosd's ingress program, in the stages
/// build's object).
pub const WHOLE_PIPELINE: &str = "xnos_ingress";

/// A segment of the pipeline: what it does, and the program that stops after it.
pub struct Stage {
    pub name: &'static str,
    pub program: &'static str,
}

impl Stage {
    /// What the program returns for its path's frames: where it stops, XDP_TX (a verdict
    /// the pipeline never gives); the whole pipeline redirects.
    pub fn expected_action(&self) -> u32 {
        if self.program == WHOLE_PIPELINE {
            testrun::XDP_REDIRECT
        } else {
            testrun::XDP_TX
        }
    }
}

pub enum Traffic {
    L2Unicast,
    Routed4,
    Routed6,
}

/// The way one kind of traffic takes through the pipeline: its segments in the order
/// the pipeline runs them, from a program that returns at once (the cost of running any
/// program with BPF_PROG_TEST_RUN) to the whole pipeline.
pub struct Path {
    pub name: &'static str,
    pub traffic: Traffic,
    pub stages: &'static [Stage],
}

const fn stage(name: &'static str, program: &'static str) -> Stage {
    Stage { name, program }
}

/// The segments every frame goes through, up to the router MAC check.
macro_rules! common_stages {
    ($($rest:expr),* $(,)?) => {
        &[
            stage("entry", "xnos_stage_entry"),
            stage("port lookup", "xnos_stage_port_lookup"),
            stage("stats (rx)", "xnos_stage_rx_counters"),
            stage("parse", "xnos_stage_parse"),
            stage("VLAN classify", "xnos_stage_vlan_classify"),
            stage("learn", "xnos_stage_learn"),
            stage("L3 interface", "xnos_stage_l3_interface"),
            $($rest),*
        ]
    };
}

/// A routed packet's segments after the router MAC check.
macro_rules! routed_stages {
    () => {
        common_stages![
            stage("IP checks", "xnos_stage_ip_checks"),
            stage("LPM", "xnos_stage_lpm"),
            stage("nexthop group", "xnos_stage_nexthop_group"),
            stage("neighbour", "xnos_stage_neighbour"),
            stage("egress port", "xnos_stage_l3_egress"),
            stage("rewrite", "xnos_stage_rewrite"),
            stage("stats (tx)", "xnos_stage_tx_counters"),
            stage("redirect", "xnos_stage_l3_redirect"),
            stage("stats (L3)", WHOLE_PIPELINE),
        ]
    };
}

/// Known unicast from access port to access port, IPv4 and IPv6 routed between VLANs.
pub const PATHS: [Path; 3] = [
    Path {
        name: "L2 unicast",
        traffic: Traffic::L2Unicast,
        stages: common_stages![
            stage("FDB lookup", "xnos_stage_fdb_lookup"),
            stage("egress port", "xnos_stage_egress_port"),
            stage("rewrite", "xnos_stage_tag_rewrite"),
            stage("redirect", "xnos_stage_redirect"),
            stage("stats (tx)", WHOLE_PIPELINE),
        ],
    },
    Path {
        name: "IPv4 routed",
        traffic: Traffic::Routed4,
        stages: routed_stages!(),
    },
    Path {
        name: "IPv6 routed",
        traffic: Traffic::Routed6,
        stages: routed_stages!(),
    },
];
