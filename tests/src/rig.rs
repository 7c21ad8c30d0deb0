//! The datapath rig the datapath tests and the benchmark share: the real programs, loaded
//! through the verifier without a daemon, with ports on veths in a private namespace
//! (BPF_PROG_TEST_RUN needs real ifindexes), and routes written through the datapath's
//! test-only interface.

use std::{collections::BTreeMap, net::IpAddr};

use anyhow::Context as _;
use xnos::{
    config::PortMode,
    datapath::{Datapath, module::port_conf, route::addr16},
    testrun::{self, XdpRun},
};
use xnos_common::{
    FdbEntry, FdbKey, L3Iface, MAX_ECMP, NEXTHOP_CONNECTED, Nexthop, NexthopGroup, PortStats,
};

use crate::Netns;

pub struct DatapathRig {
    pub dp: Datapath,
    /// The ifindex of each port, by name.
    pub ports: BTreeMap<String, u32>,
    pub ns: Netns,
}

impl DatapathRig {
    /// A datapath with one port per entry of `ports` (stats slots in that order), each a
    /// veth whose peer is named `<port>p`.
    pub fn new(ports: &[(&str, PortMode)]) -> anyhow::Result<Self> {
        Self::new_with(ports, false)
    }

    /// `new`, with the datapath's log on if `log` (see `Datapath::load_with`).
    pub fn new_with(ports: &[(&str, PortMode)], log: bool) -> anyhow::Result<Self> {
        let dp =
            Datapath::load_with(None, log).context("loading the datapath through the verifier")?;
        Self::with_datapath(dp, ports)
    }

    /// `new`, with the datapath loaded from `object`, another build of xnos's (see
    /// `Datapath::load_object`).
    pub fn with_object(ports: &[(&str, PortMode)], object: &[u8]) -> anyhow::Result<Self> {
        let dp = Datapath::load_object(object)
            .context("loading the datapath's other build through the verifier")?;
        Self::with_datapath(dp, ports)
    }

    fn with_datapath(mut dp: Datapath, ports: &[(&str, PortMode)]) -> anyhow::Result<Self> {
        let ns = Netns::new("xd")?;
        let mut map = BTreeMap::new();
        for (slot, (name, mode)) in ports.iter().enumerate() {
            ns.veth(name, &format!("{name}p"))?;
            let ifindex = ns.ifindex(name)?;
            // Devmap entries resolve the ifindex in the caller's namespace.
            ns.enter(|| dp.set_port(ifindex, port_conf(slot as u32, mode)))?
                .with_context(|| format!("programming port {name}"))?;
            map.insert(name.to_string(), ifindex);
        }
        Ok(Self { dp, ports: map, ns })
    }

    fn ifindex(&self, port: &str) -> anyhow::Result<u32> {
        self.ports
            .get(port)
            .copied()
            .with_context(|| format!("{port} is not a port of the rig"))
    }

    /// Run XDP ingress on `frame` arriving on `port`.
    pub fn run_xdp(&self, port: &str, frame: &[u8]) -> anyhow::Result<XdpRun> {
        let (ifindex, fd) = (self.ifindex(port)?, self.dp.ingress_fd()?);
        Ok(self
            .ns
            .enter(|| testrun::run_xdp(fd, ifindex, frame, 1))??)
    }

    /// Run TC ingress on `frame` arriving on `port`; `action` is the TC verdict.
    pub fn run_tc(&self, port: &str, frame: &[u8]) -> anyhow::Result<XdpRun> {
        let (ifindex, fd) = (self.ifindex(port)?, self.dp.tc_fd()?);
        Ok(self.ns.enter(|| testrun::run_tc(fd, ifindex, frame, 1))??)
    }

    /// The counters of `port`.
    pub fn stats(&self, port: &str) -> anyhow::Result<PortStats> {
        let ifindex = self.ifindex(port)?;
        let conf = self.dp.ports()?[&ifindex];
        Ok(self.dp.port_stats(conf.stats_slot)?)
    }

    /// The FDB entry of `mac` in `vlan`, if learned or programmed.
    pub fn fdb(&self, vlan: u16, mac: [u8; 6]) -> Option<FdbEntry> {
        self.dp.fdb_get(&FdbKey { mac, vlan })
    }

    /// Route VLAN `vlan` with router MAC `mac`: `port` (an access port of `vlan`) is its
    /// internal port, and that port's veth peer stands in for the kernel's SVI netdev.
    /// Returns the SVI's ifindex and the L3 interface that nexthops through it use.
    pub fn add_svi(
        &mut self,
        port: &str,
        vlan: u16,
        mac: [u8; 6],
    ) -> anyhow::Result<(u32, L3Iface)> {
        let svi = self.ns.ifindex(&format!("{port}p"))?;
        let iface = L3Iface {
            port_ifindex: self.ifindex(port)?,
            vlan,
            mac,
            mtu: 1500,
            _pad: 0,
        };
        self.dp.test_rig().add_l3_interface(svi, iface)?;
        Ok((svi, iface))
    }
}

/// A nexthop through the L3 interface `ifindex` (leaving as `out`): to `gateway`, or to the
/// destination itself on a connected route.
pub fn nexthop(ifindex: u32, out: L3Iface, gateway: Option<IpAddr>) -> Nexthop {
    Nexthop {
        ifindex,
        out,
        flags: if gateway.is_none() {
            NEXTHOP_CONNECTED
        } else {
            0
        },
        gateway: gateway.map(addr16).unwrap_or_default(),
    }
}

/// An ECMP group of `nexthops` (at most MAX_ECMP).
pub fn nexthop_group(nexthops: &[Nexthop]) -> NexthopGroup {
    let mut group = NexthopGroup {
        count: nexthops.len() as u32,
        _pad: 0,
        nexthops: [nexthop(0, L3Iface::default(), None); MAX_ECMP],
    };
    group.nexthops[..nexthops.len()].copy_from_slice(nexthops);
    group
}
