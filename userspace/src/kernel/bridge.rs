//! The switchdev backend: make the kernel bridge carry the switchdev ports (switchdev.rs
//! has the model), level-triggered like l3.rs, and read back what the kernel reports:
//! bridge membership per port, and the bridge's FDB (learned and hardware-offloaded
//! entries) into the `fdb-learned` table beside the fast path's.
//!
//! [`plan`] computes what the bridge should look like from config, the links the kernel
//! has and what its bridge can do, without touching the kernel (unit-tested below);
//! [`apply`] makes it so over netlink and reads the result back.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context as _;
use futures::TryStreamExt as _;
use rtnetlink::{
    Handle, LinkBridge, LinkBridgeVlan, LinkUnspec, LinkVeth, LinkVlan,
    packet_core::{NLM_F_ACK, NLM_F_REQUEST},
    packet_route::{
        AddressFamily,
        link::{
            AfSpecBridge, BridgeVlanInfoFlags, InfoBridge, InfoData, LinkAttribute, LinkExtentMask,
        },
        neighbour::{NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState},
    },
};

use super::l3::{ETHTOOL_SGRO, ethtool_set, ifindex};
use crate::{
    config::{Config, PortMode},
    kernel::link,
    mac::MacAddr,
    statedb::{BridgeMac, BridgePort, KernelFeatures, KernelTx, KernelWriter, LinkState},
    switchdev::{self, BRIDGE_ALIAS},
};

/// Whether `name` is a bridge or CPU port xnos made (by its alias).
fn ours(link: &LinkState) -> bool {
    link.alias.as_deref() == Some(BRIDGE_ALIAS)
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

/// The bridge, made if missing, up; a VLAN-aware one filters VLANs (turned back on if
/// someone turned it off) and gives new ports no default VLAN (xnos sets every port's).
async fn ensure_bridge(
    handle: &Handle,
    links: &BTreeMap<String, LinkState>,
    bridge: &str,
    vlan_aware: bool,
    mac: Option<MacAddr>,
) -> anyhow::Result<u32> {
    if let Some(index) = link::ifindex(bridge) {
        link::ensure_made_by_xnos(handle, index, bridge, BRIDGE_ALIAS).await?;
    } else {
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
        link::mark_made_by_xnos(handle, bridge, BRIDGE_ALIAS).await?;
    }
    let index = ifindex(bridge)?;
    if vlan_aware && !vlan_filtering(handle, index).await? {
        tracing::warn!(
            bridge,
            "VLAN filtering was off on our bridge; turning it on"
        );
        // RTM_NEWLINK on the existing bridge, as `ip link set type bridge` does: RTM_SETLINK
        // ignores the bridge's options.
        handle
            .link()
            .add(
                LinkBridge::new(bridge)
                    .index(index)
                    .vlan_filtering(true)
                    .build(),
            )
            .set_flags(NLM_F_REQUEST | NLM_F_ACK)
            .execute()
            .await
            .with_context(|| format!("turning VLAN filtering on for {bridge}"))?;
        if !vlan_filtering(handle, index).await? {
            anyhow::bail!("VLAN filtering on {bridge} stays off after turning it on");
        }
    }
    // With SVIs on it, the bridge has the router MAC: frames to it are the bridge's own.
    if let Some(mac) = mac
        && links.get(bridge).is_none_or(|l| l.mac != Some(mac))
    {
        handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .address(mac.0.to_vec())
                    .build(),
            )
            .execute()
            .await
            .with_context(|| format!("giving {bridge} the router MAC"))?;
    }
    set_up(handle, links, bridge, None).await?;
    Ok(index)
}

/// Whether the VLAN-aware bridge of ours has lost its VLAN filtering (someone ran `ip link
/// set xbr type bridge vlan_filtering 0`): the kernel sends no notification for a change
/// of a bridge option, so the kernel module asks now and then.
pub async fn filtering_lost(handle: &Handle, db: &KernelWriter) -> bool {
    let bridge = db.read(|s| {
        s.observed
            .links
            .get(switchdev::VLAN_AWARE_BRIDGE)
            .filter(|l| ours(l))
            .map(|l| l.ifindex)
    });
    match bridge {
        Some(index) => vlan_filtering(handle, index).await.is_ok_and(|on| !on),
        None => false,
    }
}

/// Whether the bridge `index` filters VLANs, as the kernel says (IFLA_BR_VLAN_FILTERING).
async fn vlan_filtering(handle: &Handle, index: u32) -> anyhow::Result<bool> {
    let messages = link::get(handle, index)
        .await
        .context("reading the bridge back")?;
    Ok(link::info_data(&messages).any(|data| {
        matches!(data, InfoData::Bridge(options)
            if options.iter().any(|o| matches!(o, InfoBridge::VlanFiltering(true))))
    }))
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
        // Half a pair of ours goes; a netdev of someone else's by that name stays.
        for end in [cpu, cpu_xdp] {
            if let Some(index) = link::ifindex(end) {
                link::ensure_made_by_xnos(handle, index, end, BRIDGE_ALIAS)
                    .await
                    .with_context(|| format!("cannot make the CPU port of VLAN {vid}"))?;
                handle.link().del(index).execute().await.ok();
            }
        }
        handle
            .link()
            .add(LinkVeth::new(cpu, cpu_xdp).build())
            .execute()
            .await
            .with_context(|| format!("creating CPU port {cpu} (veth pair with {cpu_xdp})"))?;
        link::mark_made_by_xnos(handle, cpu, BRIDGE_ALIAS).await?;
        link::mark_made_by_xnos(handle, cpu_xdp, BRIDGE_ALIAS).await?;
    }
    // XDP can redirect into the XDP end only if its peer has NAPI (GRO).
    ethtool_set(cpu, ETHTOOL_SGRO, true)?;
    set_up(handle, links, cpu, Some(bridge_index)).await?;
    set_up(handle, links, cpu_xdp, None).await
}

/// The names of the netdevs [`probe`] makes for a moment.
pub const PROBE_PREFIX: &str = "xnosvlanprobe";

/// What this kernel's bridge can do: filter VLANs (needed for trunk ports), and carry
/// VLAN netdevs (SVIs on the bridge). A throwaway bridge (named so that its own link events
/// trigger nothing) is made with VLAN filtering on, and a VLAN netdev on it. A kernel
/// without the feature refuses with EOPNOTSUPP; any other failure leaves the answer
/// unknown (Err), to be asked again.
pub async fn probe(handle: &Handle) -> Result<KernelFeatures, String> {
    const PROBE: &str = PROBE_PREFIX;
    const PROBE_VLAN: &str = "xnosvlanprobe.1";
    let remove = || async {
        for name in [PROBE_VLAN, PROBE] {
            if let Some(index) = link::ifindex(name) {
                handle.link().del(index).execute().await.ok();
            }
        }
    };
    let lacks = |e: &rtnetlink::Error| matches!(e, rtnetlink::Error::NetlinkError(e) if e.raw_code() == -libc::EOPNOTSUPP);
    // A probe left behind by a process that died mid-probe would make the add fail.
    remove().await;
    let result = async {
        let filtering = match handle
            .link()
            .add(LinkBridge::new(PROBE).vlan_filtering(true).build())
            .execute()
            .await
        {
            Ok(()) => true,
            Err(e) if lacks(&e) => {
                handle
                    .link()
                    .add(LinkBridge::new(PROBE).build())
                    .execute()
                    .await
                    .map_err(|e| format!("creating a test bridge: {e}"))?;
                false
            }
            Err(e) => return Err(format!("creating a test bridge: {e}")),
        };
        let bridge = link::ifindex(PROBE).ok_or("the test bridge vanished")?;
        let vlan_devices = match handle
            .link()
            .add(LinkVlan::new(PROBE_VLAN, bridge, 1).build())
            .execute()
            .await
        {
            Ok(()) => true,
            Err(e) if lacks(&e) => false,
            Err(e) => return Err(format!("creating a test VLAN netdev: {e}")),
        };
        Ok(KernelFeatures {
            bridge_vlan_filtering: Some(filtering),
            vlan_devices: Some(vlan_devices),
        })
    }
    .await;
    remove().await;
    result.map_err(|e| format!("cannot tell what this kernel's bridge can do: {e}"))
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
        // A port whose own driver reports bridge state sends a message of its own.
        ports
            .entry(message.header.index)
            .or_insert_with(VlanFlags::new)
            .extend(vlans);
    }
    Ok(ports)
}

/// Make a port of a VLAN-aware bridge carry exactly `wanted` (`bridge vlan add/del`).
/// `bridge_self`: the VLANs of the bridge device itself (`bridge vlan ... self`).
async fn sync_vlans(
    handle: &Handle,
    name: &str,
    current: &VlanFlags,
    wanted: &VlanFlags,
    bridge_self: bool,
) -> anyhow::Result<()> {
    let index = ifindex(name)?;
    let message = |vid: u16, flags: BridgeVlanInfoFlags| {
        let message = LinkBridgeVlan::new(index).vlan(vid, flags);
        if bridge_self {
            message.bridge_self().build()
        } else {
            message.build()
        }
    };
    for (&vid, &flags) in wanted {
        if current.get(&vid) != Some(&flags) {
            handle
                .link()
                .set(message(vid, flags))
                .execute()
                .await
                .with_context(|| format!("adding VLAN {vid} to {name}"))?;
        }
    }
    for &vid in current.keys().filter(|v| !wanted.contains_key(v)) {
        handle
            .link()
            .del_with_message(message(vid, BridgeVlanInfoFlags::empty()))
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

/// Add `error` to what went wrong with a row.
fn note(row: &mut Option<String>, error: impl std::fmt::Display) {
    *row = Some(match row.take() {
        Some(before) => format!("{before}; {error}"),
        None => error.to_string(),
    });
}

/// `.map_err` for a step whose failure is recorded in a row, not propagated.
fn text(e: anyhow::Error) -> String {
    format!("{e:#}")
}

/// The VLAN of a bridge FDB entry (NDA_VLAN; only on a VLAN-aware bridge).
fn fdb_vlan(msg: &NeighbourMessage) -> Option<u16> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Vlan(vid) => Some(*vid),
        _ => None,
    })
}

/// What the kernel bridge should look like for a config, the links the kernel has and what
/// its bridge can do: computed without touching the kernel, applied by [`apply`].
#[derive(Debug)]
pub struct BridgePlan<'a> {
    /// The ports the kernel bridge forwards.
    pub ports: BTreeMap<String, switchdev::SwitchdevPort<'a>>,
    /// One VLAN-aware bridge (`xbr`), or one bridge per VLAN.
    pub vlan_aware: bool,
    /// The VLANs whose SVI is a VLAN upper of the bridge.
    pub svis: BTreeSet<u16>,
    /// The bridge's MAC: the router MAC when SVIs are on it.
    pub router_mac: Option<MacAddr>,
    /// Each bridge and the VLANs it carries (one CPU port each).
    pub bridges: BTreeMap<String, BTreeSet<u16>>,
    /// The bridge of each port, or why it has none.
    pub member_of: BTreeMap<String, Result<String, String>>,
    /// A `bridge-port` row per port and per CPU port (bridge end), before anything is
    /// applied.
    pub rows: BTreeMap<String, BridgePort>,
    /// The netdevs of ours that stay: bridges and both ends of their CPU ports.
    pub keep: BTreeSet<String>,
    /// The VLANs each row's port carries on a VLAN-aware bridge.
    pub port_vlans: BTreeMap<String, VlanFlags>,
}

/// The kernel bridge for `config`, given the `links` the kernel has and its `features`.
pub fn plan<'a>(
    config: &'a Config,
    links: &BTreeMap<String, LinkState>,
    features: &KernelFeatures,
) -> BridgePlan<'a> {
    let ports = switchdev::ports(config, links, features);
    let vlan_aware = features.bridge_vlan_filtering == Some(true);
    let svis = switchdev::bridged_svis(config, links, features);
    let router_mac = (!svis.is_empty()).then(|| config.switch.router_mac());

    // Which bridge each port belongs to, and the VLANs (CPU ports) of each bridge.
    let mut bridges: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    let mut member_of: BTreeMap<String, Result<String, String>> = BTreeMap::new();
    for (name, port) in &ports {
        let bridge = match (vlan_aware, port.vlan(), &features.bridge_vlan_filtering) {
            (true, _, _) => Ok(switchdev::VLAN_AWARE_BRIDGE.to_string()),
            (false, Some(vid), _) => Ok(switchdev::bridge_name(vid)),
            (false, None, Some(_)) => Err("trunk ports on the switchdev backend need bridge \
                                           VLAN filtering: not supported by this kernel \
                                           (CONFIG_BRIDGE_VLAN_FILTERING)"
                .to_string()),
            (false, None, None) => Err("trunk ports on the switchdev backend need bridge \
                                        VLAN filtering, and whether this kernel has it is \
                                        not known yet"
                .to_string()),
        };
        if let Ok(bridge) = &bridge {
            bridges
                .entry(bridge.clone())
                .or_default()
                .extend(port.config.mode.vlans());
        }
        member_of.insert(name.clone(), bridge);
    }
    let mut rows: BTreeMap<String, BridgePort> = ports
        .iter()
        .map(|(name, port)| {
            let bridge = member_of[name].clone();
            let row = BridgePort {
                port: name.clone(),
                vlans: port.config.mode.vlans().into_iter().collect(),
                bridge: bridge.clone().ok(),
                member: false,
                switch_id: port.switch_id.clone(),
                error: bridge.err(),
            };
            (name.clone(), row)
        })
        .collect();
    let mut port_vlans: BTreeMap<String, VlanFlags> = ports
        .iter()
        .map(|(name, port)| (name.clone(), self::port_vlans(&port.config.mode)))
        .collect();
    // The bridge end of every CPU port has a row too: the datapath attaches to the XDP
    // end of those that were made.
    for (bridge, vlans) in &bridges {
        for &vid in vlans {
            let cpu = switchdev::cpu_port_name(vid);
            rows.insert(
                cpu.clone(),
                BridgePort {
                    port: cpu.clone(),
                    vlans: vec![vid],
                    bridge: Some(bridge.clone()),
                    member: false,
                    switch_id: None,
                    error: None,
                },
            );
            port_vlans.insert(cpu, self::port_vlans(&PortMode::Access { vlan: vid }));
        }
    }
    let keep = bridges
        .iter()
        .flat_map(|(bridge, vlans)| {
            std::iter::once(bridge.clone()).chain(vlans.iter().flat_map(|&vid| {
                [
                    switchdev::cpu_port_name(vid),
                    switchdev::cpu_port_xdp_name(vid),
                ]
            }))
        })
        .collect();
    BridgePlan {
        ports,
        vlan_aware,
        svis,
        router_mac,
        bridges,
        member_of,
        rows,
        keep,
        port_vlans,
    }
}

/// The netdevs of ours (bridges, CPU ports) the plan no longer has.
pub fn unwanted<'l>(
    plan: &BridgePlan<'_>,
    links: &'l BTreeMap<String, LinkState>,
) -> Vec<&'l LinkState> {
    links
        .values()
        .filter(|l| ours(l) && !plan.keep.contains(&l.name))
        .collect()
}

/// The links in a bridge of ours that the plan does not put there (CPU ports aside), each
/// with that bridge's name.
pub fn misplaced<'l>(
    plan: &BridgePlan<'_>,
    links: &'l BTreeMap<String, LinkState>,
) -> Vec<(&'l LinkState, String)> {
    let our_bridges: BTreeMap<u32, &str> = links
        .values()
        .filter(|l| ours(l) && plan.bridges.contains_key(&l.name))
        .map(|l| (l.ifindex, l.name.as_str()))
        .collect();
    links
        .values()
        .filter_map(|link| {
            let &bridge = link.master.and_then(|m| our_bridges.get(&m))?;
            if switchdev::is_cpu_bridge_end(&link.name) {
                return None;
            }
            let wanted = plan
                .member_of
                .get(&link.name)
                .and_then(|b| b.as_deref().ok());
            (wanted != Some(bridge)).then(|| (link, bridge.to_string()))
        })
        .collect()
}

/// Make the kernel bridge carry the switchdev ports of the config; record per port (and
/// per CPU port) what was programmed and read back, with what failed. A failure stays
/// with the port or VLAN it concerns: the others are programmed all the same.
///
/// On a kernel whose bridge filters VLANs there is one VLAN-aware bridge, `xbr`, with
/// every switchdev port (access and trunk) and one CPU port per VLAN; otherwise each VLAN
/// has its own bridge `xbr<vid>` with its CPU port, and trunk ports cannot be bridged.
pub async fn apply(handle: &Handle, db: &KernelWriter) {
    let (config, links, features) = db.read(|s| {
        (
            s.config.clone(),
            s.observed.links.clone(),
            s.observed.kernel.clone(),
        )
    });
    let plan = plan(&config, &links, &features);
    let unwanted = unwanted(&plan, &links);
    let misplaced = misplaced(&plan, &links);
    let BridgePlan {
        ports,
        vlan_aware,
        svis,
        router_mac,
        bridges: plans,
        member_of,
        mut rows,
        keep: _,
        port_vlans,
    } = plan;
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

    // Bridges and CPU ports no longer wanted go (members are released with them).
    for link in unwanted {
        // (The other end of a CPU port goes with the first.)
        if link::ifindex(&link.name) == Some(link.ifindex)
            && let Err(e) = handle.link().del(link.ifindex).execute().await
        {
            tracing::warn!(link = link.name, error = %e, "cannot remove a netdev xnos no longer needs");
        }
    }
    // Ports left in a bridge of ours they no longer belong to are released.
    for (link, bridge) in misplaced {
        let released = handle
            .link()
            .set(
                LinkUnspec::new_with_index(link.ifindex)
                    .nocontroller()
                    .build(),
            )
            .execute()
            .await;
        if let Err(e) = released {
            let error = format!("cannot release {} from bridge {bridge}: {e}", link.name);
            match rows.get_mut(&link.name) {
                Some(row) => note(&mut row.error, error),
                None => tracing::warn!("{error}"),
            }
        }
    }

    // Bridges, then their CPU ports, then the ports.
    let mut bridges: BTreeMap<String, Result<u32, String>> = BTreeMap::new();
    for (bridge, vlans) in &plans {
        let made = ensure_bridge(handle, &links, bridge, vlan_aware, router_mac)
            .await
            .map_err(text);
        if let Ok(index) = made {
            for &vid in vlans {
                let Err(e) = ensure_cpu_port(handle, &links, vid, index).await else {
                    continue;
                };
                let error = text(e);
                // The ports of that VLAN are bridged, but cut off from the fast path.
                for row in rows.values_mut() {
                    if row.vlans.contains(&vid) && row.bridge.as_ref() == Some(bridge) {
                        note(&mut row.error, &error);
                    }
                }
            }
        }
        bridges.insert(bridge.clone(), made);
    }
    let mut joined: BTreeSet<String> = BTreeSet::new();
    for (name, row) in &mut rows {
        let Some(bridge) = row.bridge.clone() else {
            continue;
        };
        match &bridges[&bridge] {
            Err(e) => note(&mut row.error, e),
            Ok(_) if switchdev::is_cpu_bridge_end(name) => {}
            Ok(index) => match enslave(handle, &links, name, *index).await {
                Ok(true) => {
                    joined.insert(bridge);
                }
                Ok(false) => {}
                Err(e) => note(&mut row.error, text(e)),
            },
        }
    }
    // Ports' VLANs, read after enslaving (a port gets the bridge's default VLAN, if it
    // has one, as it joins).
    if vlan_aware {
        match dump_port_vlans(handle).await {
            Ok(current) => {
                let no_vlans = VlanFlags::new();
                for (name, row) in &mut rows {
                    let Some(index) = link::ifindex(name) else {
                        continue;
                    };
                    if row.bridge.as_ref().is_some_and(|b| bridges[b].is_ok()) {
                        let have = current.get(&index).unwrap_or(&no_vlans);
                        let wanted = &port_vlans[name];
                        if let Err(e) = sync_vlans(handle, name, have, wanted, false).await {
                            note(&mut row.error, text(e));
                        }
                    }
                }
                // The bridge itself carries the VLANs of its SVIs (tagged, to their
                // uppers).
                let bridge = switchdev::VLAN_AWARE_BRIDGE;
                if let Some(Ok(index)) = bridges.get(bridge) {
                    let wanted: VlanFlags = svis
                        .iter()
                        .map(|&vid| (vid, BridgeVlanInfoFlags::empty()))
                        .collect();
                    let have = current.get(index).unwrap_or(&no_vlans);
                    if let Err(e) = sync_vlans(handle, bridge, have, &wanted, true).await {
                        let error = text(e);
                        for row in rows.values_mut() {
                            // (Not on CPU ports: they still switch.)
                            if !switchdev::is_cpu_bridge_end(&row.port)
                                && row.vlans.iter().any(|v| svis.contains(v))
                            {
                                note(&mut row.error, format!("routing: {error}"));
                            }
                        }
                    }
                }
            }
            Err(e) => {
                for row in rows.values_mut() {
                    note(&mut row.error, format!("{e:#}"));
                }
            }
        }
    }
    for (bridge, vlans) in &plans {
        if !joined.contains(bridge) {
            continue;
        }
        for &vid in vlans {
            let cpu = switchdev::cpu_port_name(vid);
            if let Err(e) = flush_cpu_port(handle, &cpu).await {
                tracing::warn!(error = %format!("{e:#}"), "stations behind the CPU port may be stale");
            }
        }
    }

    if !bridges.is_empty() {
        sync_static(
            handle, &config, &ports, &member_of, &bridges, vlan_aware, &mut rows,
        )
        .await;
    }

    // Read back from the kernel, not from our intentions.
    for row in rows.values_mut() {
        let (Some(bridge), Some(index)) = (&row.bridge, link::ifindex(&row.port)) else {
            continue;
        };
        match read_master(handle, index).await {
            Ok(master) => row.member = master.is_some() && master == link::ifindex(bridge),
            Err(e) => note(&mut row.error, format!("reading {} back: {e}", row.port)),
        }
    }
    db.write(|tx| {
        tx.replace_all(
            |o| &o.bridge_ports,
            |tx, name, row| tx.bridge_port(&name, row),
            rows,
        )
    });
}

/// The master of link `index`, as the kernel has it now.
async fn read_master(handle: &Handle, index: u32) -> Result<Option<u32>, rtnetlink::Error> {
    Ok(link::get(handle, index)
        .await?
        .iter()
        .filter_map(link::link_state)
        .find_map(|l| l.master))
}

/// Static entries: those config no longer has go from our bridges, the others are
/// (re)written. An entry is keyed by port, MAC and (on a VLAN-aware bridge) VLAN.
async fn sync_static(
    handle: &Handle,
    config: &Config,
    ports: &BTreeMap<String, switchdev::SwitchdevPort<'_>>,
    member_of: &BTreeMap<String, Result<String, String>>,
    bridges: &BTreeMap<String, Result<u32, String>>,
    vlan_aware: bool,
    rows: &mut BTreeMap<String, BridgePort>,
) {
    // Those whose port is in a bridge that is there.
    let wanted: Vec<(&str, u32, MacAddr, Option<u16>)> = config
        .fdb
        .iter()
        .filter(|((vlan, _), entry)| {
            ports
                .get(&entry.port)
                .is_some_and(|p| p.config.mode.vlans().contains(vlan))
                && member_of[&entry.port]
                    .as_ref()
                    .is_ok_and(|b| bridges[b].is_ok())
        })
        .filter_map(|((vlan, mac), entry)| {
            let index = link::ifindex(&entry.port)?;
            Some((
                entry.port.as_str(),
                index,
                *mac,
                vlan_aware.then_some(*vlan),
            ))
        })
        .collect();
    let wanted_keys: BTreeSet<(u32, MacAddr, Option<u16>)> = wanted
        .iter()
        .map(|&(_, index, mac, vlan)| (index, mac, vlan))
        .collect();
    let bridge_indexes: BTreeSet<u32> = bridges.values().filter_map(|b| b.clone().ok()).collect();
    match dump_fdb(handle).await {
        Ok(entries) => {
            for message in entries {
                let Some((mac, master)) = fdb_mac_master(&message) else {
                    continue;
                };
                let key = (message.header.ifindex, mac, fdb_vlan(&message));
                if message.header.state != NeighbourState::Noarp
                    || !bridge_indexes.contains(&master)
                    || wanted_keys.contains(&key)
                {
                    continue;
                }
                // The bridge's entry (`bridge fdb del ... master`): as dumped, an entry the
                // hardware carries has NTF_OFFLOADED instead, which the kernel refuses.
                let mut message = message;
                message.header.flags = NeighbourFlags::Controller;
                if let Err(e) = handle.neighbours().del(message).execute().await {
                    tracing::warn!(%mac, error = %e, "cannot remove a static FDB entry config no longer has");
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot remove stale static FDB entries")
        }
    }
    for (port, index, mac, vlan) in wanted {
        if let Err(e) = add_static(handle, index, mac, vlan).await
            && let Some(row) = rows.get_mut(port)
        {
            note(&mut row.error, text(e));
        }
    }
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
pub fn fdb_update(tx: &mut KernelTx<'_>, msg: &NeighbourMessage, present: bool) {
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
    let Some(vlan) = switchdev::bridge_vlan(&bridge.name).or(fdb_vlan(msg)) else {
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
    let old = tx.observed().bridge_fdb.get(&(vlan, mac)).cloned();
    if !present {
        if old.is_some_and(|o| o.port == port) {
            tx.bridge_fdb(vlan, mac, None);
        }
        return;
    }
    let moves = old
        .as_ref()
        .map_or(0, |o| o.moves + u64::from(o.port != port));
    tx.bridge_fdb(
        vlan,
        mac,
        Some(BridgeMac {
            vlan,
            mac,
            port,
            moves,
            offloaded: msg.header.flags.contains(NeighbourFlags::Offloaded)
                || msg.header.flags.contains(NeighbourFlags::ExtLearned),
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, ifindex: u32, master: Option<u32>, ours: bool) -> (String, LinkState) {
        (
            name.to_string(),
            LinkState {
                mtu: None,
                alias: ours.then(|| BRIDGE_ALIAS.to_string()),
                master,
                ..LinkState::up(name, ifindex)
            },
        )
    }

    fn features(filtering: Option<bool>) -> KernelFeatures {
        KernelFeatures {
            bridge_vlan_filtering: filtering,
            vlan_devices: filtering,
        }
    }

    const CONFIG: &str = "[[port]]\nname = \"sw1\"\nmode = \"access\"\nvlan = 10\ndatapath = \"switchdev\"\n\
         [[port]]\nname = \"sw2\"\nmode = \"trunk\"\nvlans = [10, 20]\nnative-vlan = 30\ndatapath = \"switchdev\"\n\
         [[port]]\nname = \"sw3\"\nmode = \"access\"\nvlan = 20\ndatapath = \"switchdev\"\n\
         [[port]]\nname = \"eth1\"\nmode = \"access\"\nvlan = 10\n\
         [[interface]]\nvlan = 20\naddresses = [\"10.0.20.1/24\"]\n";

    fn config() -> Config {
        Config::parse("t.toml", CONFIG, |_: &str| true).unwrap()
    }

    // What this shows: a kernel whose bridge filters VLANs gets one bridge `xbr` with every
    // switchdev port, a CPU port per VLAN, the VLANs each port carries (untagged one as
    // PVID), and the router MAC because an SVI sits on the bridge.
    #[test]
    fn a_vlan_aware_kernel_gets_one_bridge_with_every_port() {
        let config = config();
        let links = BTreeMap::new();
        let plan = plan(&config, &links, &features(Some(true)));
        assert!(plan.vlan_aware);
        assert_eq!(
            plan.bridges,
            BTreeMap::from([("xbr".to_string(), BTreeSet::from([10, 20, 30]))])
        );
        assert_eq!(
            plan.rows.keys().collect::<Vec<_>>(),
            ["sw1", "sw2", "sw3", "xcpu10", "xcpu20", "xcpu30"]
        );
        assert!(
            plan.rows
                .values()
                .all(|r| r.bridge.as_deref() == Some("xbr") && r.error.is_none())
        );
        assert_eq!(
            plan.keep,
            [
                "xbr", "xcpu10", "xcpu10i", "xcpu20", "xcpu20i", "xcpu30", "xcpu30i"
            ]
            .map(String::from)
            .into()
        );
        let untagged = BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged;
        assert_eq!(
            plan.port_vlans["sw2"],
            VlanFlags::from([
                (10, BridgeVlanInfoFlags::empty()),
                (20, BridgeVlanInfoFlags::empty()),
                (30, untagged)
            ])
        );
        assert_eq!(plan.port_vlans["xcpu20"], VlanFlags::from([(20, untagged)]));
        assert_eq!(plan.svis, BTreeSet::from([20]));
        assert_eq!(plan.router_mac, Some(config.switch.router_mac()));
    }

    // What this shows: without bridge VLAN filtering each VLAN has its own bridge, and a
    // trunk port gets no bridge but the reason, which says whether the kernel lacks the
    // feature or has not been asked yet.
    #[test]
    fn without_vlan_filtering_each_vlan_has_a_bridge_and_trunks_say_why_not() {
        let config = config();
        let links = BTreeMap::new();
        let plan = plan(&config, &links, &features(Some(false)));
        assert!(!plan.vlan_aware);
        assert_eq!(
            plan.bridges,
            BTreeMap::from([
                ("xbr10".to_string(), BTreeSet::from([10])),
                ("xbr20".to_string(), BTreeSet::from([20])),
            ])
        );
        assert_eq!(plan.member_of["sw1"], Ok("xbr10".to_string()));
        assert_eq!(plan.member_of["sw3"], Ok("xbr20".to_string()));
        let trunk = &plan.rows["sw2"];
        assert_eq!(trunk.bridge, None);
        assert!(
            trunk
                .error
                .as_deref()
                .unwrap()
                .contains("not supported by this kernel")
        );
        assert!(plan.svis.is_empty() && plan.router_mac.is_none());

        let unknown = super::plan(&config, &links, &features(None));
        let error = unknown.rows["sw2"].error.clone().unwrap();
        assert!(error.contains("not known yet"), "{error}");
    }

    // What this shows: what is ours and no longer planned goes (a bridge and CPU port of a
    // VLAN left behind), someone else's netdev stays whatever its name; a port in one of our
    // bridges it does not belong to is released, CPU ports aside.
    #[test]
    fn leftovers_of_ours_go_and_misplaced_ports_are_released() {
        let config = config();
        let links = BTreeMap::from([
            link("xbr", 100, None, true),
            link("xcpu10", 101, Some(100), true),
            link("xcpu10i", 102, None, true),
            link("xcpu40", 103, Some(100), true),
            link("xcpu40i", 104, None, true),
            link("xbr40", 105, None, true),
            link("xbr41", 106, None, false),
            link("sw1", 1, Some(100), false),
            link("eth1", 2, Some(100), false),
            link("eth2", 3, Some(106), false),
        ]);
        let plan = plan(&config, &links, &features(Some(true)));
        let gone: Vec<&str> = unwanted(&plan, &links)
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(gone, ["xbr40", "xcpu40", "xcpu40i"]);
        let released: Vec<(&str, String)> = misplaced(&plan, &links)
            .into_iter()
            .map(|(l, bridge)| (l.name.as_str(), bridge))
            .collect();
        assert_eq!(released, [("eth1", "xbr".to_string())]);
    }
}
