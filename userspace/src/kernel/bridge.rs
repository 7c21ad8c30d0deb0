//! The switchdev backend: make the kernel bridge carry the switchdev ports (switchdev.rs
//! has the model), level-triggered like l3.rs, and read back what the kernel reports:
//! bridge membership per port, and the bridge's FDB (learned and hardware-offloaded
//! entries) into the `fdb-learned` table beside the fast path's.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context as _;
use futures::TryStreamExt as _;
use rtnetlink::{
    Handle, LinkBridge, LinkUnspec, LinkVeth,
    packet_route::{
        AddressFamily,
        neighbour::{NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState},
    },
};

use super::l3::{ETHTOOL_SGRO, ethtool_set, ifindex};
use crate::{
    config::Config,
    kernel::link,
    mac::MacAddr,
    statedb::{BridgePort, LearnedMac, LinkState, ObservedTx, StateDb},
    switchdev::{self, BRIDGE_ALIAS, SwitchdevPort},
};

/// Whether `name` is a bridge or CPU port xnos made (by its alias).
fn ours(link: &LinkState) -> bool {
    link.alias.as_deref() == Some(BRIDGE_ALIAS)
}

/// The VLAN of an xnos bridge, by its name.
fn bridge_vlan(name: &str) -> Option<u16> {
    name.strip_prefix("xbr")?.parse().ok()
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

/// The bridge of VLAN `vid` and its CPU port, made if missing, up.
async fn ensure_bridge(
    handle: &Handle,
    links: &BTreeMap<String, LinkState>,
    vid: u16,
) -> anyhow::Result<u32> {
    let bridge = switchdev::bridge_name(vid);
    let (cpu, cpu_xdp) = (
        switchdev::cpu_port_name(vid),
        switchdev::cpu_port_xdp_name(vid),
    );
    if link::ifindex(&bridge).is_none() {
        handle
            .link()
            .add(LinkBridge::new(&bridge).build())
            .execute()
            .await
            .with_context(|| format!("creating bridge {bridge}"))?;
        set_alias(handle, &bridge).await?;
    }
    let bridge_index = ifindex(&bridge)?;
    if link::ifindex(&cpu).is_none() || link::ifindex(&cpu_xdp).is_none() {
        for end in [&cpu, &cpu_xdp] {
            if let Some(index) = link::ifindex(end) {
                handle.link().del(index).execute().await.ok();
            }
        }
        handle
            .link()
            .add(LinkVeth::new(&cpu, &cpu_xdp).build())
            .execute()
            .await
            .with_context(|| format!("creating CPU port {cpu} (veth pair with {cpu_xdp})"))?;
        set_alias(handle, &cpu).await?;
        set_alias(handle, &cpu_xdp).await?;
    }
    // XDP can redirect into xcpu<vid>i only if its peer has NAPI (GRO).
    ethtool_set(&cpu, ETHTOOL_SGRO, true)?;
    set_up(handle, links, &cpu, Some(bridge_index)).await?;
    set_up(handle, links, &bridge, None).await?;
    set_up(handle, links, &cpu_xdp, None).await?;
    Ok(bridge_index)
}

/// Whether this kernel's bridge can filter VLANs (needed for trunk ports). Probed once per
/// process with a throwaway bridge (named so that its own link events trigger nothing).
async fn vlan_filtering_supported(handle: &Handle) -> bool {
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

/// One port into its VLAN's bridge; the error that keeps it out otherwise.
async fn enslave(
    handle: &Handle,
    links: &BTreeMap<String, LinkState>,
    port: &SwitchdevPort<'_>,
    bridges: &BTreeMap<u16, u32>,
) -> anyhow::Result<()> {
    let name = &port.config.name;
    let Some(vid) = port.vlan() else {
        anyhow::bail!(if vlan_filtering_supported(handle).await {
            "trunk ports on the switchdev backend need a VLAN-aware bridge, which xnos \
             does not program yet: use access ports"
        } else {
            "trunk ports on the switchdev backend need bridge VLAN filtering: not \
             supported by this kernel (CONFIG_BRIDGE_VLAN_FILTERING)"
        });
    };
    // The port's admin state is the operator's: only its master is ours.
    if links
        .get(name)
        .is_some_and(|l| l.master == Some(bridges[&vid]))
    {
        return Ok(());
    }
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(ifindex(name)?)
                .controller(bridges[&vid])
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("adding {name} to {}", switchdev::bridge_name(vid)))?;
    // Stations the bridge learned behind the CPU port may be on the port that just joined:
    // a down/up of the CPU port makes the bridge forget them.
    let cpu = ifindex(&switchdev::cpu_port_name(vid))?;
    for message in [
        LinkUnspec::new_with_index(cpu).down().build(),
        LinkUnspec::new_with_index(cpu).up().build(),
    ] {
        handle
            .link()
            .set(message)
            .execute()
            .await
            .with_context(|| format!("flushing the CPU port of {}", switchdev::bridge_name(vid)))?;
    }
    Ok(())
}

/// `bridge fdb replace <mac> dev <port> master static`.
async fn add_static(handle: &Handle, port: u32, mac: MacAddr) -> anyhow::Result<()> {
    handle
        .neighbours()
        .add_bridge(port, &mac.0)
        .state(NeighbourState::Noarp)
        .flags(NeighbourFlags::Controller)
        .replace()
        .execute()
        .await
        .with_context(|| format!("adding static FDB entry {mac}"))
}

/// Make the kernel bridge carry the switchdev ports of the config; record per port what
/// was programmed and read back.
pub async fn apply(handle: &Handle, db: &StateDb) -> anyhow::Result<()> {
    let (config, links): (Config, BTreeMap<String, LinkState>) =
        db.read(|s| (s.config.clone(), s.observed.links.clone()));
    let ports = switchdev::ports(&config, &links);
    let vlans: BTreeSet<u16> = ports.values().filter_map(SwitchdevPort::vlan).collect();
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

    // Bridges and CPU ports of VLANs without switchdev ports go (members are released).
    for link in links.values().filter(|l| ours(l)) {
        let vid = bridge_vlan(&link.name).or_else(|| {
            link.name
                .strip_prefix("xcpu")
                .map(|r| r.trim_end_matches('i'))
                .and_then(|v| v.parse().ok())
        });
        if vid.is_none_or(|v| !vlans.contains(&v)) {
            handle.link().del(link.ifindex).execute().await.ok();
        }
    }
    // Ports left in an xnos bridge they no longer belong to are released.
    let our_bridges: BTreeMap<u32, u16> = links
        .values()
        .filter(|l| ours(l))
        .filter_map(|l| Some((l.ifindex, bridge_vlan(&l.name)?)))
        .collect();
    for link in links.values() {
        let Some(vid) = link.master.and_then(|m| our_bridges.get(&m)) else {
            continue;
        };
        if switchdev::is_cpu_port(&link.name) || link.name == switchdev::cpu_port_name(*vid) {
            continue;
        }
        if ports.get(&link.name).and_then(SwitchdevPort::vlan) != Some(*vid) {
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

    let mut bridges = BTreeMap::new();
    let mut bridge_errors = BTreeMap::new();
    for &vid in &vlans {
        match ensure_bridge(handle, &links, vid).await {
            Ok(index) => {
                bridges.insert(vid, index);
            }
            Err(e) => {
                bridge_errors.insert(vid, format!("{e:#}"));
            }
        }
    }
    let mut rows = BTreeMap::new();
    for (name, port) in &ports {
        let vlan = port.vlan();
        let error = match vlan.and_then(|v| bridge_errors.get(&v)) {
            Some(e) => Some(e.clone()),
            None => enslave(handle, &links, port, &bridges)
                .await
                .err()
                .map(|e| format!("{e:#}")),
        };
        rows.insert(
            name.clone(),
            BridgePort {
                port: name.clone(),
                vlan,
                bridge: vlan.map(switchdev::bridge_name),
                member: false,
                switch_id: port.switch_id.clone(),
                error,
            },
        );
    }
    // Static entries xnos put on bridge ports that config no longer has go.
    let wanted_static: BTreeSet<(u32, MacAddr)> = config
        .fdb
        .iter()
        .filter(|((vlan, _), entry)| {
            ports
                .get(&entry.port)
                .is_some_and(|p| p.vlan() == Some(*vlan))
        })
        .filter_map(|((_, mac), entry)| Some((link::ifindex(&entry.port)?, *mac)))
        .collect();
    let bridge_indexes: BTreeSet<u32> = bridges.values().copied().collect();
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
            && port.vlan() == Some(*vlan)
            && let Some(index) = link::ifindex(&entry.port)
            && let Err(e) = add_static(handle, index, *mac).await
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
    let Some(vlan) = links
        .values()
        .find(|l| l.ifindex == master && ours(l))
        .and_then(|l| bridge_vlan(&l.name))
    else {
        return;
    };
    let Some(port) = links
        .values()
        .find(|l| l.ifindex == msg.header.ifindex)
        .map(|l| l.name.clone())
    else {
        return;
    };
    if port == switchdev::cpu_port_name(vlan) {
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
