//! Test-only writes to the L3 maps (feature `test-rig`), for the datapath tests and the
//! benchmark, which program routes without a StateDb, and the loading of the benchmark's
//! stages build of the object. xnosd is never built with it: in the daemon only
//! `route::L3` writes these maps, and only `EBPF_OBJECT` is loaded.

use std::{
    net::IpAddr,
    os::fd::{AsFd, BorrowedFd},
};

use aya::{
    maps::{MapError, PerCpuArray, lpm_trie::Key},
    programs::{ProgramError, Xdp},
};
use ipnet::IpNet;
use xnos_common::{L3Iface, L3Stats, NeighEntry, NeighKey, NexthopGroup, RouteEntry};

use super::{
    Datapath, DatapathError, L3Maps, load_retrying, map_err, prog_err, route::addr16, sum_l3_stats,
};

impl Datapath {
    /// The datapath loaded from another build of the xnos object than xnosd's (the
    /// benchmark's stages build, with the same maps and more programs), without pins.
    pub fn load_object(object: &[u8]) -> Result<Self, DatapathError> {
        Self::load_reusing(object, None, false, &[])
    }

    /// Load the XDP program `name` of the object, one xnosd does not load (through the
    /// verifier).
    pub fn load_xdp(&mut self, name: &'static str) -> Result<(), DatapathError> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .ok_or(ProgramError::NotLoaded)
            .and_then(|p| p.try_into())
            .map_err(prog_err(name))?;
        load_retrying(|| program.load()).map_err(prog_err(name))
    }

    /// The XDP program `name`, loaded by [`Datapath::load_xdp`], for BPF_PROG_TEST_RUN.
    pub fn xdp_fd(&self, name: &'static str) -> Result<BorrowedFd<'_>, DatapathError> {
        let program: &Xdp = self
            .ebpf
            .program(name)
            .ok_or(ProgramError::NotLoaded)
            .and_then(|p| p.try_into())
            .map_err(prog_err(name))?;
        Ok(program.fd().map_err(prog_err(name))?.as_fd())
    }

    /// Write access to the L3 maps, one entry at a time.
    pub fn test_rig(&mut self) -> TestRig<'_> {
        TestRig { l3: &mut self.l3 }
    }

    /// The L3 counters, summed over CPUs.
    pub fn l3_stats(&self) -> Result<L3Stats, DatapathError> {
        let map = self.ebpf.map("L3_STATS").ok_or_else(|| {
            map_err("L3_STATS")(MapError::InvalidName {
                name: "L3_STATS".into(),
            })
        })?;
        let stats: PerCpuArray<_, L3Stats> =
            PerCpuArray::try_from(map).map_err(map_err("L3_STATS"))?;
        let per_cpu = stats.get(&0, 0).map_err(map_err("L3_STATS"))?;
        Ok(sum_l3_stats(per_cpu.iter()))
    }
}

/// The L3 maps of one datapath, borrowed for writing.
pub struct TestRig<'a> {
    l3: &'a mut L3Maps,
}

impl TestRig<'_> {
    /// Route `prefix` (its host bits ignored) as `entry`.
    pub fn add_route(&mut self, prefix: IpNet, entry: RouteEntry) -> Result<(), DatapathError> {
        let len = u32::from(prefix.prefix_len());
        match prefix.network() {
            IpAddr::V4(net) => self
                .l3
                .routes4
                .insert(&Key::new(len, net.octets()), entry, 0)
                .map_err(map_err("ROUTES4")),
            IpAddr::V6(net) => self
                .l3
                .routes6
                .insert(&Key::new(len, net.octets()), entry, 0)
                .map_err(map_err("ROUTES6")),
        }
    }

    /// The ECMP group that routes refer to by `id`.
    pub fn add_nexthop_group(&mut self, id: u32, group: NexthopGroup) -> Result<(), DatapathError> {
        self.l3.nhgs.insert(id, group, 0).map_err(map_err("NHGS"))
    }

    /// The neighbour `ip` at `mac`, behind the L3 interface `ifindex`.
    pub fn add_neighbour(
        &mut self,
        ifindex: u32,
        ip: IpAddr,
        mac: [u8; 6],
    ) -> Result<(), DatapathError> {
        let key = NeighKey {
            ifindex,
            addr: addr16(ip),
        };
        self.l3
            .neighs
            .insert(key, NeighEntry { mac, _pad: [0; 2] }, 0)
            .map_err(map_err("NEIGHS"))
    }

    /// The L3 interface whose kernel netdev is `ifindex`, and the router of its VLAN.
    pub fn add_l3_interface(&mut self, ifindex: u32, iface: L3Iface) -> Result<(), DatapathError> {
        self.l3
            .ifaces
            .insert(ifindex, iface, 0)
            .map_err(map_err("L3_IFACES"))?;
        self.l3
            .vlan_l3
            .set(u32::from(iface.vlan), iface, 0)
            .map_err(map_err("VLAN_L3"))
    }
}
