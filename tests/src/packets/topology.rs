//! The switch the packet fuzzer runs against: access and trunk ports in three VLANs
//! (one without a router interface), static and learned FDB entries, two SVIs (VLAN 10's
//! with a 1400-byte MTU), IPv4 and IPv6 routes (connected, via a gateway, ECMP, local,
//! default, one without a neighbour).

use std::{collections::BTreeSet, time::Duration};

use anyhow::Context as _;
use xnos::{
    config::PortMode,
    datapath::{Datapath, module::age_fdb},
    testrun,
};
use xnos_common::{
    FDB_FLAG_STATIC, FdbEntry, FdbKey, L3Iface, ROUTE_FORWARD, ROUTE_LOCAL, RouteEntry,
};

use crate::{DatapathRig, Netns, nexthop, nexthop_group, test_frame};

/// The router MAC of both SVIs.
pub const ROUTER: [u8; 6] = [2, 0, 0, 0, 1, 0];

/// A station of the switch: its MAC, VLAN, the port it is on and whether that is a static
/// FDB entry (else it is learned from a frame it sends).
#[derive(Clone, Copy)]
pub struct Host {
    pub mac: [u8; 6],
    pub vlan: u16,
    pub port: &'static str,
    pub static_entry: bool,
}

pub const HOSTS: [Host; 6] = [
    host(0xa, 10, "swp1", false),
    host(0xd, 10, "swp3", true),
    host(0xb, 20, "swp2", true),
    host(0xc, 20, "swp3", false),
    host(0xe, 30, "swp4", false),
    host(0xf, 30, "swp5", true),
];

const fn host(last: u8, vlan: u16, port: &'static str, static_entry: bool) -> Host {
    Host {
        mac: [2, 0, 0, 0, 0, last],
        vlan,
        port,
        static_entry,
    }
}

/// One switch port as the fuzzer knows it.
pub struct Port {
    pub name: &'static str,
    pub ifindex: u32,
    pub slot: u32,
    pub access: bool,
    pub vlans: BTreeSet<u16>,
    /// The VLAN this port sends and receives untagged.
    pub untagged: Option<u16>,
    /// The SVI whose internal port this is.
    pub svi: Option<u16>,
}

impl Port {
    pub fn carries(&self, vlan: u16) -> bool {
        self.vlans.contains(&vlan)
    }
}

/// VLANs with a router interface.
pub const SVI_VLANS: [u16; 2] = [10, 20];

pub struct Switch {
    pub dp: Datapath,
    pub ports: Vec<Port>,
    pub ns: Netns,
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

impl Switch {
    pub fn new() -> anyhow::Result<Self> {
        let spec: [(&str, PortMode, Option<u16>); 7] = [
            ("swp1", access(10), None),
            ("swp2", access(20), None),
            ("swp3", trunk(&[10, 20, 30], None), None),
            ("swp4", trunk(&[20, 30], Some(30)), None),
            ("swp5", access(30), None),
            ("vlan10i", access(10), Some(10)),
            ("vlan20i", access(20), Some(20)),
        ];
        let modes: Vec<(&str, PortMode)> = spec.iter().map(|(n, m, _)| (*n, m.clone())).collect();
        let mut rig = DatapathRig::new(&modes)?;
        let mut ports = Vec::new();
        for (slot, (name, mode, svi)) in spec.into_iter().enumerate() {
            // Up, so that the clones of a TC flood really leave (a down device refuses them
            // and they would not be counted).
            for dev in [name.to_string(), format!("{name}p")] {
                rig.ns.ip(&["link", "set", dev.as_str(), "up"])?;
            }
            ports.push(Port {
                name,
                ifindex: rig.ports[name],
                slot: slot as u32,
                access: matches!(mode, PortMode::Access { .. }),
                vlans: mode.vlans(),
                untagged: mode.untagged_vlan(),
                svi,
            });
        }
        let (svi10, mut out10) = rig.add_svi("vlan10i", 10, ROUTER)?;
        // Below the ports' MTU, so that packets too big for the egress (punted) can arrive.
        out10.mtu = 1400;
        let (svi20, out20) = rig.add_svi("vlan20i", 20, ROUTER)?;
        let via = |svi: u32, out: L3Iface, gw: &str| nexthop(svi, out, Some(gw.parse().unwrap()));
        let groups = [
            (1, nexthop_group(&[nexthop(svi10, out10, None)])),
            (2, nexthop_group(&[nexthop(svi20, out20, None)])),
            (3, nexthop_group(&[via(svi20, out20, "10.0.20.3")])),
            (4, nexthop_group(&[via(svi20, out20, "10.0.20.2")])),
            (
                5,
                nexthop_group(&[
                    via(svi20, out20, "10.0.20.2"),
                    via(svi20, out20, "10.0.20.3"),
                    via(svi10, out10, "10.0.10.4"),
                ]),
            ),
            (6, nexthop_group(&[via(svi20, out20, "10.0.20.9")])),
            (7, nexthop_group(&[via(svi10, out10, "10.0.10.4")])),
            (
                8,
                nexthop_group(&[
                    via(svi20, out20, "fd00:20::2"),
                    via(svi20, out20, "fd00:20::3"),
                ]),
            ),
            (9, nexthop_group(&[via(svi10, out10, "fd00:10::4")])),
        ];
        let mut l3 = rig.dp.test_rig();
        for (id, group) in groups {
            l3.add_nexthop_group(id, group)?;
        }
        let forward = |nhg| RouteEntry {
            kind: ROUTE_FORWARD,
            nhg,
        };
        let local = RouteEntry {
            kind: ROUTE_LOCAL,
            nhg: 0,
        };
        let routes = [
            ("10.0.10.0/24", forward(1)),
            ("10.0.20.0/24", forward(2)),
            ("10.99.0.0/16", forward(3)),
            ("10.99.1.0/24", forward(4)),
            ("10.98.0.0/16", forward(5)),
            ("10.97.0.0/16", forward(6)),
            ("0.0.0.0/0", forward(7)),
            ("10.0.10.1/32", local),
            ("10.0.20.1/32", local),
            ("fd00:10::/64", forward(1)),
            ("fd00:20::/64", forward(2)),
            ("fd00:98::/64", forward(8)),
            ("::/0", forward(9)),
            ("fd00:10::1/128", local),
        ];
        for (prefix, entry) in routes {
            l3.add_route(prefix.parse()?, entry)?;
        }
        let neighbours = [
            (svi10, "10.0.10.2", 0xa),
            (svi10, "10.0.10.4", 0xd),
            (svi20, "10.0.20.2", 0xb),
            (svi20, "10.0.20.3", 0xc),
            (svi10, "fd00:10::2", 0xa),
            (svi10, "fd00:10::4", 0xd),
            (svi20, "fd00:20::2", 0xb),
            (svi20, "fd00:20::3", 0xc),
        ];
        for (svi, ip, last) in neighbours {
            l3.add_neighbour(svi, ip.parse()?, [2, 0, 0, 0, 0, last])?;
        }
        let DatapathRig { mut dp, ns, .. } = rig;
        for host in HOSTS.iter().filter(|h| h.static_entry) {
            let ifindex = port(&ports, host.port).ifindex;
            let key = FdbKey {
                mac: host.mac,
                vlan: host.vlan,
            };
            let entry = FdbEntry {
                ifindex,
                flags: FDB_FLAG_STATIC,
                last_seen_ns: 0,
            };
            dp.fdb_insert(key, entry)
                .with_context(|| format!("static FDB entry on {}", host.port))?;
        }
        ns.enter(|| learn_hosts(&mut dp, &ports))??;
        Ok(Self { dp, ports, ns })
    }
}

fn port<'a>(ports: &'a [Port], name: &str) -> &'a Port {
    ports
        .iter()
        .find(|p| p.name == name)
        .expect("a port of the fuzzed switch")
}

/// Teach the FDB where the learned hosts are, by a frame each sends (through XDP): at the
/// start, and again after the fuzzer's frames moved them or filled the FDB. Flushes every
/// learned entry first. The calling thread must be in the switch's namespace.
pub fn learn_hosts(dp: &mut Datapath, ports: &[Port]) -> anyhow::Result<()> {
    age_fdb(dp, Duration::ZERO).context("flushing learned FDB entries")?;
    for host in HOSTS.iter().filter(|h| !h.static_entry) {
        let port = port(ports, host.port);
        let tag = (port.untagged != Some(host.vlan)).then_some(host.vlan);
        let frame = test_frame([0xff; 6], host.mac, tag, 0);
        testrun::run_xdp(dp.ingress_fd()?, port.ifindex, &frame, 1)
            .with_context(|| format!("teaching the FDB where {} is", port.name))?;
    }
    Ok(())
}
