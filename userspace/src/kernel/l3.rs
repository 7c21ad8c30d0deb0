//! Make the kernel carry the L3 config, level-triggered: SVI netdevs, the router MAC,
//! addresses, forwarding sysctls and config routes.
//!
//! This kernel has no 8021q, so an SVI is a veth pair: `vlan<ID>` stays in the kernel
//! with the router MAC and the addresses (the kernel answers ARP/ND and pings on it,
//! sends ICMP errors from it, and FRR can run on it), and `vlan<ID>i` is an internal
//! switch port, an access port of the VLAN with XDP attached like every port. Frames for
//! the kernel reach it through that port; what the kernel sends comes back through it.
//!
//! On a kernel whose bridge filters VLANs, the SVI of a VLAN with switchdev ports is a
//! VLAN upper of the bridge instead (switchdev::bridged_svis), so that a switchdev driver
//! routes it in the ASIC; the fast path reaches it through the VLAN's CPU port.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use anyhow::Context as _;
use futures::TryStreamExt as _;
use ipnet::IpNet;
use rtnetlink::{
    Handle, LinkUnspec, LinkVeth, LinkVlan, RouteMessageBuilder,
    packet_route::{
        address::{AddressAttribute, AddressMessage},
        link::{InfoData, InfoVlan, LinkAttribute},
        route::{RouteAttribute, RouteMessage, RouteNextHop, RouteProtocol},
    },
};

use super::route::{PROTOCOL_XNOS, TABLE_MAIN};
use crate::{
    claim,
    config::{Config, InterfaceConfig, RouteConfig},
    kernel::link,
    mac::MacAddr,
    statedb::{
        FibKey, FibRoute, InterfaceStatus, KernelWriter, LinkState, ProtocolName, RouteStatus,
        RouteTable,
    },
    switchdev,
};

/// Alias that marks the SVI netdevs xnos created (and may delete).
pub const SVI_ALIAS: &str = "xnos-svi";

fn sysctl(path: &str, value: &str) -> anyhow::Result<()> {
    std::fs::write(format!("/proc/sys/{path}"), value)
        .with_context(|| format!("sysctl {path}={value}"))
}

const ETHTOOL_STXCSUM: u32 = 0x17;
pub(super) const ETHTOOL_SGRO: u32 = 0x2c;

/// `ethtool -K <name> <feature> on|off` for one of the simple on/off features.
pub(super) fn ethtool_set(name: &str, cmd: u32, on: bool) -> anyhow::Result<()> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    let mut value = EthtoolValue {
        cmd,
        data: u32::from(on),
    };
    // SAFETY: a zeroed ifreq is valid; the name fits (checked); the fd is closed below.
    unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        let bytes = name.as_bytes();
        anyhow::ensure!(
            bytes.len() < libc::IFNAMSIZ,
            "interface name {name} too long"
        );
        for (dst, src) in ifr.ifr_name.iter_mut().zip(bytes) {
            *dst = *src as libc::c_char;
        }
        ifr.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        anyhow::ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let ret = libc::ioctl(fd, SIOCETHTOOL, &mut ifr);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        anyhow::ensure!(ret == 0, "ethtool command {cmd:#x} on {name}: {err}");
    }
    Ok(())
}

pub(super) fn ifindex(name: &str) -> anyhow::Result<u32> {
    link::ifindex(name).with_context(|| format!("interface {name} does not exist"))
}

/// Create the SVI's veth pair unless both ends exist.
async fn ensure_svi(handle: &Handle, vlan: u16, mac: MacAddr) -> anyhow::Result<()> {
    let name = InterfaceConfig::svi_name(vlan);
    let port = InterfaceConfig::svi_port_name(vlan);
    if link::ifindex(&name).is_some() && link::ifindex(&port).is_some() {
        return Ok(());
    }
    if let Some(index) = link::ifindex(&name) {
        link::ensure_made_by_xnos(handle, index, &name, SVI_ALIAS).await?;
    }
    // A half-made pair (one end deleted by hand), or the SVI's VLAN upper of the bridge
    // (its VLAN has no switchdev ports any more), is made again.
    for end in [&name, &port] {
        if let Some(index) = link::ifindex(end) {
            handle
                .link()
                .del(index)
                .execute()
                .await
                .with_context(|| format!("deleting {end}"))?;
        }
    }
    let message = LinkVeth::new(&name, &port)
        .address(mac.0.to_vec())
        .alias(SVI_ALIAS)
        .build();
    handle
        .link()
        .add(message)
        .execute()
        .await
        .with_context(|| format!("creating SVI {name} (veth pair with {port})"))?;
    link::mark_made_by_xnos(handle, &name, SVI_ALIAS).await
}

/// The device and VLAN a VLAN netdev sits on (None for any other kind of netdev).
async fn vlan_upper_of(handle: &Handle, index: u32) -> anyhow::Result<Option<(u32, u16)>> {
    let messages = link::get(handle, index)
        .await
        .context("reading an SVI back")?;
    let lower = messages
        .iter()
        .flat_map(|m| &m.attributes)
        .find_map(|a| match a {
            LinkAttribute::Link(index) => Some(*index),
            _ => None,
        });
    let id = link::info_data(&messages)
        .filter_map(|data| match data {
            InfoData::Vlan(vlan) => Some(vlan),
            _ => None,
        })
        .flatten()
        .find_map(|v| match v {
            InfoVlan::Id(id) => Some(*id),
            _ => None,
        });
    Ok(lower.zip(id))
}

/// Make the SVI of `vlan` a VLAN upper of the VLAN-aware bridge (replacing a veth pair
/// the SVI was before the VLAN had switchdev ports).
async fn ensure_bridged_svi(handle: &Handle, vlan: u16, mac: MacAddr) -> anyhow::Result<()> {
    let name = InterfaceConfig::svi_name(vlan);
    let bridge = ifindex(switchdev::VLAN_AWARE_BRIDGE)?;
    link::ensure_made_by_xnos(
        handle,
        bridge,
        switchdev::VLAN_AWARE_BRIDGE,
        switchdev::BRIDGE_ALIAS,
    )
    .await?;
    if let Some(index) = link::ifindex(&name) {
        link::ensure_made_by_xnos(handle, index, &name, SVI_ALIAS).await?;
        if vlan_upper_of(handle, index).await? == Some((bridge, vlan)) {
            return Ok(());
        }
        handle
            .link()
            .del(index)
            .execute()
            .await
            .with_context(|| format!("deleting {name} to make it an upper of the bridge"))?;
    }
    handle
        .link()
        .add(
            LinkVlan::new(&name, bridge, vlan)
                .address(mac.0.to_vec())
                .build(),
        )
        .execute()
        .await
        .with_context(|| {
            format!(
                "creating SVI {name} on bridge {}",
                switchdev::VLAN_AWARE_BRIDGE
            )
        })?;
    link::mark_made_by_xnos(handle, &name, SVI_ALIAS).await
}

/// Set `name` up, with `mac` if given; nothing is written if StateDb saw it so already
/// (setting even the same MAC makes the kernel flush the interface's neighbours).
async fn set_up(
    handle: &Handle,
    links: &BTreeMap<String, LinkState>,
    name: &str,
    mac: Option<MacAddr>,
) -> anyhow::Result<u32> {
    let index = ifindex(name)?;
    if links
        .get(name)
        .is_some_and(|l| l.ifindex == index && l.up && (mac.is_none() || l.mac == mac))
    {
        return Ok(index);
    }
    let mut message = LinkUnspec::new_with_index(index).up();
    if let Some(mac) = mac {
        message = message.address(mac.0.to_vec());
    }
    handle
        .link()
        .set(message.build())
        .execute()
        .await
        .with_context(|| format!("setting {name} up"))?;
    Ok(index)
}

/// Set the MTU of `name` unless StateDb saw it so already.
async fn set_mtu(
    handle: &Handle,
    links: &BTreeMap<String, LinkState>,
    name: &str,
    mtu: u32,
) -> anyhow::Result<()> {
    if links.get(name).is_some_and(|l| l.mtu == Some(mtu)) {
        return Ok(());
    }
    let message = LinkUnspec::new_with_index(ifindex(name)?).mtu(mtu).build();
    handle
        .link()
        .set(message)
        .execute()
        .await
        .with_context(|| format!("setting the MTU of {name} to {mtu}"))
}

/// The MTU an L3 interface should have: its own `mtu`, else, for an SVI, the smallest MTU
/// of its VLAN's ports (a packet the kernel routes into the VLAN must fit every port of
/// it, or it is lost without an ICMP error), else (a routed port) none: it stays as it is.
fn interface_mtu(
    config: &Config,
    links: &BTreeMap<String, LinkState>,
    iface: &InterfaceConfig,
) -> Option<u32> {
    if iface.mtu.is_some() {
        return iface.mtu;
    }
    let vlan = iface.vlan?;
    config
        .ports
        .values()
        .filter(|p| p.mode.vlans().contains(&vlan))
        .filter_map(|p| p.mtu.or_else(|| links.get(&p.name)?.mtu))
        .min()
}

/// Give the ports the MTU their config asks for (the others are left as they are).
async fn sync_port_mtus(handle: &Handle, config: &Config, links: &BTreeMap<String, LinkState>) {
    for port in config.ports.values() {
        // A port another xnosd drives (the datapath refused it) keeps the MTU that one set.
        let elsewhere = links.get(&port.name).is_some_and(|link| {
            claim::held_elsewhere(std::path::Path::new(claim::CLAIM_DIR), link.ifindex)
        });
        if let Some(mtu) = port.mtu
            && !elsewhere
            && let Err(e) = set_mtu(handle, links, &port.name, mtu).await
        {
            tracing::warn!(
                port = port.name,
                error = format!("{e:#}"),
                "port MTU not set"
            );
        }
    }
}

fn address_of(message: &AddressMessage) -> Option<IpNet> {
    message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => IpNet::new(*ip, message.header.prefix_len).ok(),
        _ => None,
    })
}

fn is_link_local(net: &IpNet) -> bool {
    match net.addr() {
        IpAddr::V6(a) => a.segments()[0] & 0xffc0 == 0xfe80,
        IpAddr::V4(_) => false,
    }
}

/// Make the addresses of `index` exactly `wanted` (IPv6 link-local ones excepted).
async fn sync_addresses(
    handle: &Handle,
    index: u32,
    name: &str,
    wanted: &[IpNet],
) -> anyhow::Result<()> {
    let current: Vec<AddressMessage> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .with_context(|| format!("reading addresses of {name}"))?;
    let mut have = BTreeSet::new();
    for message in current {
        let Some(net) = address_of(&message) else {
            continue;
        };
        if is_link_local(&net) {
            continue;
        }
        if wanted.contains(&net) {
            have.insert(net);
        } else {
            handle
                .address()
                .del(message)
                .execute()
                .await
                .with_context(|| format!("removing {net} from {name}"))?;
        }
    }
    for net in wanted.iter().filter(|n| !have.contains(*n)) {
        handle
            .address()
            .add(index, net.addr(), net.prefix_len())
            .execute()
            .await
            .with_context(|| format!("adding {net} to {name}"))?;
    }
    Ok(())
}

fn route_message(route: &RouteConfig) -> anyhow::Result<RouteMessage> {
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(route.prefix.addr(), route.prefix.prefix_len())
        .with_context(|| format!("route to {}", route.prefix))?
        .protocol(RouteProtocol::Other(PROTOCOL_XNOS))
        .table_id(TABLE_MAIN);
    if let [gateway] = route.nexthops.as_slice() {
        builder = builder
            .gateway(*gateway)
            .with_context(|| format!("route to {} via {gateway}", route.prefix))?;
    } else {
        let hops = route
            .nexthops
            .iter()
            .map(|gateway| {
                let mut hop = RouteNextHop::default();
                hop.attributes
                    .push(RouteAttribute::Gateway((*gateway).into()));
                hop
            })
            .collect();
        builder = builder.multipath(hops);
    }
    Ok(builder.build())
}

/// Whether the kernel's route already is the config route.
fn same_route(kernel: &FibRoute, route: &RouteConfig) -> bool {
    let mut have: Vec<IpAddr> = kernel.nexthops.iter().filter_map(|n| n.gateway).collect();
    let mut want = route.nexthops.clone();
    have.sort();
    want.sort();
    have == want
}

/// The main table's routes of protocol xnos: the config routes as the kernel has them.
fn xnos_routes(fib: &BTreeMap<FibKey, FibRoute>) -> Vec<FibRoute> {
    let xnos = crate::statedb::RouteProtocol::Named(ProtocolName::Xnos);
    fib.iter()
        .filter(|(key, r)| key.table == RouteTable::Main && r.protocol == xnos)
        .map(|(_, r)| r.clone())
        .collect()
}

/// Make the kernel's xnos routes the config routes; returns what became of each config
/// route: one the kernel refuses (its nexthop unreachable, say) fails alone.
async fn sync_routes(
    handle: &Handle,
    config: &Config,
    ours: &[FibRoute],
    before: &BTreeMap<IpNet, RouteStatus>,
) -> BTreeMap<IpNet, RouteStatus> {
    let mut statuses = BTreeMap::new();
    for (prefix, route) in &config.routes {
        let error = if ours
            .iter()
            .any(|k| k.prefix == *prefix && same_route(k, route))
        {
            None
        } else {
            install_route(handle, route).await.err()
        };
        // Tried again on every kernel change: said once, not at each try.
        let was = before.get(prefix).and_then(|s| s.error.as_ref());
        match &error {
            Some(error) if was != Some(error) => {
                tracing::warn!(%prefix, error, "config route not installed");
            }
            None if was.is_some() => tracing::info!(%prefix, "config route installed"),
            _ => {}
        }
        statuses.insert(
            *prefix,
            RouteStatus {
                prefix: *prefix,
                error,
            },
        );
    }
    for kernel in ours {
        if config.routes.contains_key(&kernel.prefix) {
            continue;
        }
        let stale = RouteConfig {
            prefix: kernel.prefix,
            nexthops: kernel.nexthops.iter().filter_map(|n| n.gateway).collect(),
        };
        let removed = match route_message(&stale) {
            Ok(mut message) => {
                message
                    .attributes
                    .push(RouteAttribute::Priority(kernel.metric));
                handle
                    .route()
                    .del(message)
                    .execute()
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(format!("{e:#}")),
        };
        if let Err(error) = removed {
            tracing::warn!(prefix = %kernel.prefix, error, "removing a route xnos no longer has in its config");
        }
    }
    statuses
}

async fn install_route(handle: &Handle, route: &RouteConfig) -> Result<(), String> {
    let message = route_message(route).map_err(|e| format!("{e:#}"))?;
    handle
        .route()
        .add(message)
        .replace()
        .execute()
        .await
        .map_err(|e| {
            let via: Vec<String> = route.nexthops.iter().map(IpAddr::to_string).collect();
            // The kernel's own words ("Network is unreachable"), not the wrapper's.
            let e = match e {
                rtnetlink::Error::NetlinkError(message) => message.to_io().to_string(),
                e => e.to_string(),
            };
            format!(
                "installing route {} via {}: {e}",
                route.prefix,
                via.join(", ")
            )
        })
}

/// Write the desired L3 state to the kernel, changing only what differs.
pub async fn apply(handle: &Handle, db: &KernelWriter) -> anyhow::Result<()> {
    let (config, links, ours, bridged, route_status) = db.read(|s| {
        let o = &s.observed;
        (
            s.config.clone(),
            o.links.clone(),
            // The routes xnos installed, not a copy of the FIB (a million routes).
            xnos_routes(&o.fib),
            switchdev::bridged_svis(&s.config, &o.links, &o.kernel),
            o.route_status.clone(),
        )
    });
    // Not an SVI whose internal port another xnosd of this namespace drives: its config
    // has the SVI.
    let elsewhere = |svi: &str| {
        links.get(&format!("{svi}i")).is_some_and(|port| {
            claim::held_elsewhere(std::path::Path::new(claim::CLAIM_DIR), port.ifindex)
        })
    };
    let stale_svis: Vec<u32> = links
        .values()
        .filter(|l| {
            l.alias.as_deref() == Some(SVI_ALIAS)
                && !config.interfaces.contains_key(&l.name)
                && !elsewhere(&l.name)
        })
        .map(|l| l.ifindex)
        .collect();
    for index in stale_svis {
        // Deleting one end of a veth pair deletes both.
        let _ = handle.link().del(index).execute().await;
    }
    // Forwarding is only turned on for a switch that routes; stale config routes are
    // removed below either way.
    if !config.interfaces.is_empty() || !config.routes.is_empty() {
        sysctl("net/ipv4/ip_forward", "1")?;
        sysctl("net/ipv6/conf/all/forwarding", "1")?;
    }
    sync_port_mtus(handle, &config, &links).await;
    let mac = config.switch.router_mac();
    // One interface failing (a driver refusing a router interface, say) leaves the others
    // and the routes programmed; its error is in its `interface-status` row.
    let mut statuses = BTreeMap::new();
    for iface in config.interfaces.values() {
        let bridged = iface.vlan.is_some_and(|v| bridged.contains(&v));
        let mtu = interface_mtu(&config, &links, iface);
        let error = apply_interface(handle, &links, iface, mac, mtu, bridged)
            .await
            .err()
            .map(|e| format!("{e:#}"));
        if let Some(error) = &error {
            tracing::warn!(interface = iface.name, error, "L3 interface not programmed");
        }
        statuses.insert(
            iface.name.clone(),
            InterfaceStatus {
                name: iface.name.clone(),
                error,
            },
        );
    }
    let routes = sync_routes(handle, &config, &ours, &route_status).await;
    db.write(|tx| {
        tx.replace_all(
            |o| &o.interface_status,
            |tx, name, row| tx.interface_status(&name, row),
            statuses,
        );
        tx.replace_all(
            |o| &o.route_status,
            |tx, prefix, row| tx.route_status(prefix, row),
            routes,
        );
    });
    Ok(())
}

/// Make the kernel carry one L3 interface: its netdev (an SVI's veth pair, or its VLAN
/// upper on the bridge), the router MAC, up, and its addresses.
async fn apply_interface(
    handle: &Handle,
    links: &BTreeMap<String, LinkState>,
    iface: &InterfaceConfig,
    mac: MacAddr,
    mtu: Option<u32>,
    bridged: bool,
) -> anyhow::Result<()> {
    match iface.vlan {
        Some(vlan) if bridged => ensure_bridged_svi(handle, vlan, mac).await?,
        Some(vlan) => ensure_svi(handle, vlan, mac).await?,
        None => {}
    }
    // An MTU the kernel refuses (a veth with native XDP caps it at about 3.5 KB) must not
    // leave the interface down and without addresses: the rest is done, then it is told.
    let mtu_set = match mtu {
        Some(mtu) => {
            let mut result = set_mtu(handle, links, &iface.name, mtu).await;
            if let Some(vlan) = iface.vlan.filter(|_| !bridged)
                && result.is_ok()
            {
                // The internal end receives what the kernel sends out of the SVI: a veth
                // drops frames longer than the receiving end's MTU.
                result = set_mtu(handle, links, &InterfaceConfig::svi_port_name(vlan), mtu).await;
            }
            result.with_context(|| format!("MTU {mtu} not set; the interface keeps its own"))
        }
        None => Ok(()),
    };
    // Router addresses are configured, not autoconfigured: no duplicate detection delay.
    sysctl(&format!("net/ipv6/conf/{}/accept_dad", iface.name), "0")?;
    // A new router MAC must reach the hosts at once, not when their neighbour entries for
    // the gateway time out: on the MAC change (NETDEV_CHANGEADDR) the kernel then sends a
    // gratuitous ARP for each IPv4 address and an unsolicited neighbour advertisement with
    // the override flag for each IPv6 address.
    sysctl(&format!("net/ipv4/conf/{}/arp_notify", iface.name), "1")?;
    sysctl(&format!("net/ipv6/conf/{}/ndisc_notify", iface.name), "1")?;
    let index = set_up(handle, links, &iface.name, Some(mac)).await?;
    if let Some(vlan) = iface.vlan {
        // What the kernel sends through the SVI may go through XDP (the veth's internal
        // end, or the CPU port), which does not finish offloaded checksums: compute them
        // in software.
        ethtool_set(&iface.name, ETHTOOL_STXCSUM, false)?;
        if !bridged {
            // XDP can redirect into a veth only if its peer has NAPI (GRO or XDP).
            ethtool_set(&iface.name, ETHTOOL_SGRO, true)?;
            set_up(handle, links, &InterfaceConfig::svi_port_name(vlan), None).await?;
        }
    }
    sync_addresses(handle, index, &iface.name, &iface.addresses).await?;
    mtu_set
}
