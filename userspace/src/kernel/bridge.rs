//! The switchdev backend: make the kernel bridge carry the switchdev ports (switchdev.rs
//! has the model), level-triggered like l3.rs, and read back what the kernel reports:
//! bridge membership per port, and the bridge's FDB (learned and hardware-offloaded
//! entries) into the `fdb-learned` table beside the fast path's.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context as _;
use futures::TryStreamExt as _;
use rtnetlink::{
    Handle, LinkBridge, LinkBridgeVlan, LinkUnspec, LinkVeth,
    packet_route::{
        AddressFamily,
        link::{AfSpecBridge, BridgeVlanInfoFlags, LinkAttribute, LinkExtentMask},
        neighbour::{NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState},
    },
};

use super::l3::{ETHTOOL_SGRO, ethtool_set, ifindex};
use crate::{
    config::{Config, PortMode},
    kernel::link,
    mac::MacAddr,
    statedb::{BridgePort, LearnedMac, LinkState, ObservedTx, StateDb},
    switchdev::{self, BRIDGE_ALIAS},
};

/// Whether `name` is a bridge or CPU port xnos made (by its alias).
fn ours(link: &LinkState) -> bool {
    link.alias.as_deref() == Some(BRIDGE_ALIAS)
}

async fn set_alias(handle: &Handle, name: &str) -> anyhow::Result<()> {
    let index = ifindex(name)?;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .alias(BRIDGE_ALIAS)
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("marking {name} as made by xnos"))
}

/// Whether `name` is (as StateDb last saw it) up and, if `master` is given, enslaved to it:
/// then nothing is written, so that applying again makes no netlink events of its own.
fn in_place(links: &BTreeMap<String, LinkState>, name: &str, master: Option<u32>) -> bool {
    links
        .get(name)
        .is_some_and(|l| l.up && (master.is_none() || l.master == master))
}

/// Set one of our own netdevs (bridge, CPU port) up, and enslave it to `master` if given,
/// unless it is so already.
async fn set_up(
    handle: &Handle,
    links: &BTreeMap<String, LinkState>,
    name: &str,
    master: Option<u32>,
) -> anyhow::Result<()> {
    if in_place(links, name, master) {
        return Ok(());
    }
    let mut message = LinkUnspec::new_with_index(ifindex(name)?).up();
    if let Some(master) = master {
        message = message.controller(master);
    }
    handle
        .link()
        .set(message.build())
        .execute()
        .await
        .with_context(|| format!("setting {name} up"))
}

/// A bridge xnos keeps: the VLANs its members carry (one CPU port each).
struct BridgePlan {
    vlans: BTreeSet<u16>,
}

/// The bridge and its CPU ports, made if missing, up. A VLAN-aware bridge filters VLANs
/// and gives new ports no default VLAN (xnos sets every port's VLANs).
async fn ensure_bridge(
    handle: &Handle,
    links: &BTreeMap<String, LinkState>,
    bridge: &str,
    plan: &BridgePlan,
    vlan_aware: bool,
) -> anyhow::Result<u32> {
    let index = ensure_bridge_device(handle, links, bridge, vlan_aware).await?;
    for &vid in &plan.vlans {
        ensure_cpu_port(handle, links, vid, index).await?;
    }
    Ok(index)
}

async fn ensure_bridge_device(
    handle: &Handle,
    links: &BTreeMap<String, LinkState>,
    bridge: &str,
    vlan_aware: bool,
) -> anyhow::Result<u32> {
    if link::ifindex(bridge).is_none() {
        let mut message = LinkBridge::new(bridge);
        if vlan_aware {
            message = message.vlan_filtering(true).vlan_default_pvid(0);
        }
        handle
            .link()
            .add(message.build())
            .execute()
            .await
            .with_context(|| format!("creating bridge {bridge}"))?;
        set_alias(handle, bridge).await?;
    }
    set_up(handle, links, bridge, None).await?;
    ifindex(bridge)
}

/// The CPU port of VLAN `vid` in the bridge `bridge_index`, made if missing, up.
async fn ensure_cpu_port(
    handle: &Handle,
    links: &BTreeMap<String, LinkState>,
    vid: u16,
    bridge_index: u32,
) -> anyhow::Result<()> {
    let (cpu, cpu_xdp) = (
        &switchdev::cpu_port_name(vid),
        &switchdev::cpu_port_xdp_name(vid),
    );
    if link::ifindex(cpu).is_none() || link::ifindex(cpu_xdp).is_none() {
        for end in [cpu, cpu_xdp] {
            if let Some(index) = link::ifindex(end) {
                handle.link().del(index).execute().await.ok();
            }
        }
        handle
            .link()
            .add(LinkVeth::new(cpu, cpu_xdp).build())
            .execute()
            .await
            .with_context(|| format!("creating CPU port {cpu} (veth pair with {cpu_xdp})"))?;
        set_alias(handle, cpu).await?;
        set_alias(handle, cpu_xdp).await?;
    }
    // XDP can redirect into the XDP end only if its peer has NAPI (GRO).
    ethtool_set(cpu, ETHTOOL_SGRO, true)?;
    set_up(handle, links, cpu, Some(bridge_index)).await?;
    set_up(handle, links, cpu_xdp, None).await
}

/// Whether this kernel's bridge can filter VLANs (needed for trunk ports). Probed once per
/// process with a throwaway bridge (named so that its own link events trigger nothing).
pub async fn vlan_filtering_supported(handle: &Handle) -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if let Some(known) = SUPPORTED.get() {
        return *known;
    }
    const PROBE: &str = "xnosvlanprobe";
    let made = handle
        .link()
        .add(LinkBridge::new(PROBE).vlan_filtering(true).build())
        .execute()
        .await
        .is_ok();
    if let Some(index) = link::ifindex(PROBE) {
        handle.link().del(index).execute().await.ok();
    }
    *SUPPORTED.get_or_init(|| made)
}

/// Put `name` into `bridge` (its admin state is the operator's: only the master is ours).
/// Returns whether it was not there yet.
async fn enslave(
    handle: &Handle,
    links: &BTreeMap<String, LinkState>,
    name: &str,
    bridge: u32,
) -> anyhow::Result<bool> {
    if links.get(name).is_some_and(|l| l.master == Some(bridge)) {
        return Ok(false);
    }
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(ifindex(name)?)
                .controller(bridge)
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("adding {name} to its bridge"))?;
    Ok(true)
}

/// Stations the bridge learned behind a CPU port may be on a port that just joined: a
/// down/up of the CPU port makes the bridge forget them.
async fn flush_cpu_port(handle: &Handle, cpu: &str) -> anyhow::Result<()> {
    let index = ifindex(cpu)?;
    for message in [
        LinkUnspec::new_with_index(index).down().build(),
        LinkUnspec::new_with_index(index).up().build(),
    ] {
        handle
            .link()
            .set(message)
            .execute()
            .await
            .with_context(|| format!("flushing the CPU port {cpu}"))?;
    }
    Ok(())
}

type VlanFlags = BTreeMap<u16, BridgeVlanInfoFlags>;

/// The VLANs of every port of a VLAN-aware bridge, as the kernel has them.
async fn dump_port_vlans(handle: &Handle) -> anyhow::Result<BTreeMap<u32, VlanFlags>> {
    let messages: Vec<_> = handle
        .link()
        .get()
        .set_filter_mask(AddressFamily::Bridge, vec![LinkExtentMask::Brvlan])
        .execute()
        .try_collect()
        .await
        .context("dumping bridge port VLANs")?;
    let mut ports = BTreeMap::new();
    for message in messages {
        let mut vlans = VlanFlags::new();
        for attr in &message.attributes {
            if let LinkAttribute::AfSpecBridge(specs) = attr {
                for spec in specs {
                    if let AfSpecBridge::VlanInfo(info) = spec {
                        vlans.insert(info.vid, info.flags);
                    }
                }
            }
        }
        ports.insert(message.header.index, vlans);
    }
    Ok(ports)
}

/// Make a port of a VLAN-aware bridge carry exactly `wanted` (`bridge vlan add/del`).
async fn sync_vlans(
    handle: &Handle,
    name: &str,
    current: &VlanFlags,
    wanted: &VlanFlags,
) -> anyhow::Result<()> {
    let index = ifindex(name)?;
    for (&vid, &flags) in wanted {
        if current.get(&vid) != Some(&flags) {
            handle
                .link()
                .set(LinkBridgeVlan::new(index).vlan(vid, flags).build())
                .execute()
                .await
                .with_context(|| format!("adding VLAN {vid} to {name}"))?;
        }
    }
    for &vid in current.keys().filter(|v| !wanted.contains_key(v)) {
        handle
            .link()
            .del_with_message(
                LinkBridgeVlan::new(index)
                    .vlan(vid, BridgeVlanInfoFlags::empty())
                    .build(),
            )
            .execute()
            .await
            .with_context(|| format!("removing VLAN {vid} from {name}"))?;
    }
    Ok(())
}

/// The VLANs a switch port carries on a VLAN-aware bridge: its untagged VLAN as PVID.
fn port_vlans(mode: &PortMode) -> VlanFlags {
    let untagged = mode.untagged_vlan();
    mode.vlans()
        .into_iter()
        .map(|vid| {
            let flags = if Some(vid) == untagged {
                BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged
            } else {
                BridgeVlanInfoFlags::empty()
            };
            (vid, flags)
        })
        .collect()
}

/// `bridge fdb replace <mac> dev <port> [vlan <vid>] master static`.
async fn add_static(
    handle: &Handle,
    port: u32,
    mac: MacAddr,
    vlan: Option<u16>,
) -> anyhow::Result<()> {
    let mut request = handle
        .neighbours()
        .add_bridge(port, &mac.0)
        .state(NeighbourState::Noarp)
        .flags(NeighbourFlags::Controller)
        .replace();
    if let Some(vid) = vlan {
        request
            .message_mut()
            .attributes
            .push(NeighbourAttribute::Vlan(vid));
    }
    request
        .execute()
        .await
        .with_context(|| format!("adding static FDB entry {mac}"))
}

/// Make the kernel bridge carry the switchdev ports of the config; record per port what
/// was programmed and read back.
///
/// On a kernel whose bridge filters VLANs there is one VLAN-aware bridge, `xbr`, with
/// every switchdev port (access and trunk) and one CPU port per VLAN; otherwise each VLAN
/// has its own bridge `xbr<vid>` with its CPU port, and trunk ports cannot be bridged.
pub async fn apply(handle: &Handle, db: &StateDb) -> anyhow::Result<()> {
    let (config, links): (Config, BTreeMap<String, LinkState>) =
        db.read(|s| (s.config.clone(), s.observed.links.clone()));
    let ports = switchdev::ports(&config, &links);
    let vlan_aware = !ports.is_empty() && vlan_filtering_supported(handle).await;
    if !ports.is_empty() {
        // Without these the kernel does not tell when a driver offloads (or traps) a route
        // after it was added, and `xnos show routes` would keep the add-time flags.
        for path in [
            "net/ipv4/fib_notify_on_flag_change",
            "net/ipv6/fib_notify_on_flag_change",
        ] {
            if let Err(e) = std::fs::write(format!("/proc/sys/{path}"), "1") {
                tracing::info!(path, error = %e, "cannot ask for route offload notifications");
            }
        }
    }

    // Which bridge each port belongs to.
    let mut plans: BTreeMap<String, BridgePlan> = BTreeMap::new();
    let mut member_of: BTreeMap<String, Result<String, String>> = BTreeMap::new();
    for (name, port) in &ports {
        let bridge = if vlan_aware {
            Ok(switchdev::VLAN_AWARE_BRIDGE.to_string())
        } else {
            match port.vlan() {
                Some(vid) => Ok(switchdev::bridge_name(vid)),
                None => Err("trunk ports on the switchdev backend need bridge VLAN \
                             filtering: not supported by this kernel \
                             (CONFIG_BRIDGE_VLAN_FILTERING)"
                    .to_string()),
            }
        };
        if let Ok(bridge) = &bridge {
            let plan = plans.entry(bridge.clone()).or_insert_with(|| BridgePlan {
                vlans: BTreeSet::new(),
            });
            plan.vlans.extend(port.config.mode.vlans());
        }
        member_of.insert(name.clone(), bridge);
    }

    // Bridges and CPU ports no longer wanted go (members are released with them).
    let wanted_names: BTreeSet<String> = plans
        .iter()
        .flat_map(|(bridge, plan)| {
            std::iter::once(bridge.clone()).chain(plan.vlans.iter().flat_map(|&vid| {
                [
                    switchdev::cpu_port_name(vid),
                    switchdev::cpu_port_xdp_name(vid),
                ]
            }))
        })
        .collect();
    for link in links.values().filter(|l| ours(l)) {
        if !wanted_names.contains(&link.name) {
            handle.link().del(link.ifindex).execute().await.ok();
        }
    }
    // Ports left in a bridge of ours they no longer belong to are released.
    let our_bridges: BTreeMap<u32, &str> = links
        .values()
        .filter(|l| ours(l) && plans.contains_key(&l.name))
        .map(|l| (l.ifindex, l.name.as_str()))
        .collect();
    for link in links.values() {
        let Some(&bridge) = link.master.and_then(|m| our_bridges.get(&m)) else {
            continue;
        };
        if switchdev::is_cpu_bridge_end(&link.name) {
            continue;
        }
        let wanted = member_of.get(&link.name).and_then(|b| b.as_deref().ok());
        if wanted != Some(bridge) {
            handle
                .link()
                .set(
                    LinkUnspec::new_with_index(link.ifindex)
                        .nocontroller()
                        .build(),
                )
                .execute()
                .await
                .with_context(|| format!("releasing {} from its bridge", link.name))?;
        }
    }

    let mut bridges: BTreeMap<String, Result<u32, String>> = BTreeMap::new();
    for (bridge, plan) in &plans {
        let made = ensure_bridge(handle, &links, bridge, plan, vlan_aware)
            .await
            .map_err(|e| format!("{e:#}"));
        bridges.insert(bridge.clone(), made);
    }
    let current_vlans = if vlan_aware {
        dump_port_vlans(handle).await?
    } else {
        BTreeMap::new()
    };
    let no_vlans = VlanFlags::new();
    let mut joined: BTreeSet<String> = BTreeSet::new();
    let mut rows = BTreeMap::new();
    for (name, port) in &ports {
        let bridge = member_of[name].clone();
        let target = bridge
            .clone()
            .and_then(|b| bridges[&b].clone().map(|index| (b, index)));
        let error = match target {
            Err(e) => Some(e),
            Ok((bridge, index)) => {
                let result = async {
                    if enslave(handle, &links, name, index).await? {
                        joined.insert(bridge);
                    }
                    if vlan_aware {
                        let current = link::ifindex(name)
                            .and_then(|i| current_vlans.get(&i))
                            .unwrap_or(&no_vlans);
                        sync_vlans(handle, name, current, &port_vlans(&port.config.mode)).await?;
                    }
                    anyhow::Ok(())
                }
                .await;
                result.err().map(|e| format!("{e:#}"))
            }
        };
        rows.insert(
            name.clone(),
            BridgePort {
                port: name.clone(),
                vlans: port.config.mode.vlans().into_iter().collect(),
                bridge: bridge.ok(),
                member: false,
                switch_id: port.switch_id.clone(),
                error,
            },
        );
    }
    for (bridge, plan) in &plans {
        if bridges[bridge].is_err() {
            continue;
        }
        for &vid in &plan.vlans {
            let cpu = switchdev::cpu_port_name(vid);
            if vlan_aware {
                let wanted = port_vlans(&PortMode::Access { vlan: vid });
                let current = link::ifindex(&cpu)
                    .and_then(|i| current_vlans.get(&i))
                    .unwrap_or(&no_vlans);
                sync_vlans(handle, &cpu, current, &wanted).await?;
            }
            if joined.contains(bridge) {
                flush_cpu_port(handle, &cpu).await?;
            }
        }
    }

    // Static entries: those config no longer has go, the others are (re)written.
    let wanted_static: BTreeSet<(u32, MacAddr)> = config
        .fdb
        .iter()
        .filter(|((vlan, _), entry)| {
            ports
                .get(&entry.port)
                .is_some_and(|p| p.config.mode.vlans().contains(vlan))
        })
        .filter_map(|((_, mac), entry)| Some((link::ifindex(&entry.port)?, *mac)))
        .collect();
    let bridge_indexes: BTreeSet<u32> = bridges.values().filter_map(|b| b.clone().ok()).collect();
    for message in dump_fdb(handle).await? {
        let Some((mac, master)) = fdb_mac_master(&message) else {
            continue;
        };
        if message.header.state == NeighbourState::Noarp
            && bridge_indexes.contains(&master)
            && !wanted_static.contains(&(message.header.ifindex, mac))
        {
            handle
                .neighbours()
                .del(message)
                .execute()
                .await
                .with_context(|| format!("removing static FDB entry {mac}"))?;
        }
    }
    for ((vlan, mac), entry) in &config.fdb {
        if let Some(port) = ports.get(&entry.port)
            && member_of[&entry.port].is_ok()
            && port.config.mode.vlans().contains(vlan)
            && let Some(index) = link::ifindex(&entry.port)
            && let Err(e) = add_static(handle, index, *mac, vlan_aware.then_some(*vlan)).await
            && let Some(row) = rows.get_mut(&entry.port)
        {
            row.error = Some(format!("{e:#}"));
        }
    }

    // Read back from the kernel, not from our intentions.
    for row in rows.values_mut() {
        let (Some(bridge), Some(index)) = (&row.bridge, link::ifindex(&row.port)) else {
            continue;
        };
        let messages: Vec<_> = handle
            .link()
            .get()
            .match_index(index)
            .execute()
            .try_collect()
            .await
            .with_context(|| format!("reading {} back", row.port))?;
        let master = messages
            .iter()
            .filter_map(link::link_state)
            .find_map(|l| l.master);
        row.member = master.is_some() && master == link::ifindex(bridge);
    }
    db.write_observed(|tx| {
        let stale: Vec<String> = tx
            .observed()
            .bridge_ports
            .keys()
            .filter(|name| !rows.contains_key(*name))
            .cloned()
            .collect();
        for name in stale {
            tx.bridge_port(&name, None);
        }
        for (name, row) in rows {
            tx.bridge_port(&name, Some(row));
        }
    });
    Ok(())
}

/// Every bridge FDB entry of the kernel (an AF_UNSPEC neighbour dump has only ARP/ND).
pub async fn dump_fdb(handle: &Handle) -> anyhow::Result<Vec<NeighbourMessage>> {
    handle
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Bridge)
        .execute()
        .try_collect()
        .await
        .context("dumping the bridge FDB")
}

/// The MAC of a bridge FDB entry and the bridge it belongs to (NDA_MASTER).
fn fdb_mac_master(msg: &NeighbourMessage) -> Option<(MacAddr, u32)> {
    let mut mac = None;
    let mut master = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::LinkLayerAddress(bytes) => {
                mac = <[u8; 6]>::try_from(bytes.as_slice()).ok().map(MacAddr);
            }
            NeighbourAttribute::Controller(index) => master = Some(*index),
            _ => {}
        }
    }
    Some((mac?, master?))
}

/// A bridge FDB notification (or dump entry): entries an xnos bridge learned on a
/// switchdev port go into `fdb-learned` with source `bridge`.
pub fn fdb_update(tx: &mut ObservedTx<'_>, msg: &NeighbourMessage, present: bool) {
    // The bridge's own entries name it in NDA_MASTER (the ports' device entries do not).
    if msg.header.family != AddressFamily::Bridge {
        return;
    }
    // Local addresses of the ports themselves, and static entries (config), are not
    // learned stations.
    if matches!(
        msg.header.state,
        NeighbourState::Permanent | NeighbourState::Noarp
    ) {
        return;
    }
    let Some((mac, master)) = fdb_mac_master(msg) else {
        return;
    };
    let links = &tx.observed().links;
    let Some(bridge) = links.values().find(|l| l.ifindex == master && ours(l)) else {
        return;
    };
    // A VLAN-aware bridge says the VLAN in NDA_VLAN; a per-VLAN bridge by its name.
    let entry_vlan = msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Vlan(vid) => Some(*vid),
        _ => None,
    });
    let Some(vlan) = switchdev::bridge_vlan(&bridge.name).or(entry_vlan) else {
        return;
    };

    let Some(port) = links
        .values()
        .find(|l| l.ifindex == msg.header.ifindex)
        .map(|l| l.name.clone())
    else {
        return;
    };
    if switchdev::is_cpu_bridge_end(&port) {
        // Behind the CPU port: the fast path knows where, and reports it.
        return;
    }
    let old = tx.observed().fdb_learned.get(&(vlan, mac)).cloned();
    if !present {
        if old.is_some_and(|o| o.source == "bridge" && o.port == port) {
            tx.learned(vlan, mac, None);
        }
        return;
    }
    let moves = old
        .as_ref()
        .map_or(0, |o| o.moves + u64::from(o.port != port));
    tx.learned(
        vlan,
        mac,
        Some(LearnedMac {
            vlan,
            mac,
            port,
            moves,
            source: "bridge".into(),
            offloaded: msg.header.flags.contains(NeighbourFlags::Offloaded)
                || msg.header.flags.contains(NeighbourFlags::ExtLearned),
        }),
    );
}
