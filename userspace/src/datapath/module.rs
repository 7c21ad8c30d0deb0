//! The datapath module: reconciles the BPF maps with StateDb (level-triggered), feeds
//! learned MACs back into StateDb, and ages out learned FDB entries.

use std::{
    collections::{BTreeMap, BTreeSet},
    ops::Bound,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use ipnet::IpNet;
use tokio::{io::unix::AsyncFd, sync::broadcast};
use xnos_common::{
    FDB_FLAG_STATIC, FdbEntry, FdbKey, LearnEvent, MAX_PORTS, PORT_MODE_ACCESS, PORT_MODE_ROUTED,
    PORT_MODE_TRUNK, PortConf,
};

use super::{
    Datapath,
    route::{L3, Touched},
};
use crate::{
    config::{Config, DatapathChoice, InterfaceConfig, PortMode},
    mac::MacAddr,
    statedb::{
        CHUNK_ROWS, Commit, DatapathFlood, DatapathMode, DatapathStatus, DatapathTx,
        DatapathWriter, FdbCleared, FibRoute, FloodMember, LearnedMac, Observed, Owner, PortStatus,
        Table, blocking,
    },
    supervisor::ModuleCtx,
};

/// Learn events taken from the ring at a time, recorded in one commit. What the daemon
/// holds of a flood of new MACs is at most this, whatever the rate: the ring buffer
/// holds the rest, and what does not fit there is lost, to be found in the FDB map
/// (`sync_learned`) on the next tick.
const LEARN_BATCH: usize = 1024;

/// How often a port another instance holds is claimed again.
const CLAIM_RETRY: Duration = Duration::from_secs(5);

/// How often the routes the maps refused are tried again when nothing of ours went from
/// the maps (memory an ENOMEM lacked can come back from elsewhere).
const REFUSED_RETRY: Duration = Duration::from_secs(30);

/// How the datapath treats a port.
enum PortKind {
    /// A switch port (configured, or the internal port of an SVI or of a CPU port).
    Switched(PortMode, DatapathChoice),
    /// A routed port: L3 only.
    Routed,
}

/// What the switchdev backend takes from the fast path, as StateDb says (see switchdev.rs).
#[derive(Clone, Debug, Default)]
pub struct Backends {
    /// The switchdev ports, with the reason (the kernel bridge forwards them).
    pub switchdev: BTreeMap<String, String>,
    /// The XDP ends of the CPU ports, as access ports of their VLANs.
    pub cpu_ports: BTreeMap<String, PortMode>,
    /// The VLANs whose SVI is on the bridge (reached through the CPU port, no veth).
    pub bridged_svis: BTreeSet<u16>,
    /// Ports with a switch ID that `auto` keeps on the fast path, with the reason.
    pub kept: BTreeMap<String, String>,
}

impl Backends {
    pub fn of(state: &crate::statedb::State) -> Self {
        let (config, observed) = (&state.config, &state.observed);
        Self {
            switchdev: crate::switchdev::ports(config, &observed.links, &observed.kernel)
                .into_iter()
                .map(|(name, port)| (name, port.reason))
                .collect(),
            cpu_ports: crate::switchdev::cpu_ports(&observed.bridge_ports),
            bridged_svis: crate::switchdev::bridged_svis(config, &observed.links, &observed.kernel),
            kept: crate::switchdev::kept_ports(config, &observed.links, &observed.kernel),
        }
    }
}

/// Every port the datapath attaches to: configured switch ports, the internal ports of
/// SVIs, and routed ports.
fn datapath_ports(config: &Config, backends: &Backends) -> Vec<(String, PortKind)> {
    let Backends {
        switchdev,
        cpu_ports,
        bridged_svis,
        ..
    } = backends;
    let mut ports: Vec<(String, PortKind)> = config
        .ports
        .values()
        .filter(|p| !switchdev.contains_key(&p.name))
        .map(|p| {
            (
                p.name.clone(),
                PortKind::Switched(p.mode.clone(), p.datapath),
            )
        })
        .collect();
    // The XDP ends of the CPU ports towards the bridge of the switchdev ports.
    for (name, mode) in cpu_ports {
        ports.push((
            name.clone(),
            PortKind::Switched(mode.clone(), DatapathChoice::Auto),
        ));
    }
    for iface in config.interfaces.values() {
        match (iface.vlan, &iface.port) {
            // Its CPU port is in the list already.
            (Some(vlan), _) if bridged_svis.contains(&vlan) => {}
            (Some(vlan), _) => ports.push((
                InterfaceConfig::svi_port_name(vlan),
                PortKind::Switched(PortMode::Access { vlan }, DatapathChoice::Auto),
            )),
            (None, Some(port)) => ports.push((port.clone(), PortKind::Routed)),
            (None, None) => {}
        }
    }
    ports
}

/// The datapath form of a port's config.
pub fn port_conf(slot: u32, mode: &PortMode) -> PortConf {
    let (kind, pvid) = match mode {
        PortMode::Access { vlan } => (PORT_MODE_ACCESS, *vlan),
        PortMode::Trunk { native_vlan, .. } => (PORT_MODE_TRUNK, native_vlan.unwrap_or(0)),
    };
    let mut conf = PortConf::new(slot, kind, pvid);
    for vid in mode.vlans() {
        conf.add_member(vid);
    }
    conf
}

fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// What reconcile programmed: every configured port's status, and each VLAN's flood set.
pub struct Reconciled {
    pub ports: BTreeMap<String, PortStatus>,
    pub flood: BTreeMap<u16, DatapathFlood>,
}

/// Bring the maps and attachments in line with the desired config, touching only what
/// differs; `ifindex` resolves port names.
pub fn reconcile(
    dp: &mut Datapath,
    config: &Config,
    backends: &Backends,
    ifindex: impl Fn(&str) -> Option<u32>,
) -> anyhow::Result<Reconciled> {
    let switchdev = &backends.switchdev;
    let current = dp.ports()?;
    let refused_before = dp.forget_refused();
    let mut free_slots: BTreeSet<u32> = (0..MAX_PORTS).collect();
    for conf in current.values() {
        free_slots.remove(&conf.stats_slot);
    }

    let mut statuses = BTreeMap::new();
    // Switchdev ports: the kernel bridge forwards them; nothing of ours is attached.
    for (name, reason) in switchdev {
        statuses.insert(
            name.clone(),
            PortStatus {
                name: name.clone(),
                ifindex: ifindex(name).unwrap_or(0),
                stats_slot: 0,
                datapath: DatapathMode::Switchdev,
                datapath_reason: Some(reason.clone()),
                xdp_features: None,
                xdp_redirect_target: None,
                error: None,
            },
        );
    }
    let mut desired: BTreeMap<u32, PortConf> = BTreeMap::new();
    let mut flood: BTreeMap<u16, DatapathFlood> = BTreeMap::new();
    for (name, kind) in datapath_ports(config, backends) {
        let mut status = PortStatus {
            name: name.clone(),
            ifindex: 0,
            stats_slot: 0,
            datapath: DatapathMode::None,
            datapath_reason: None,
            xdp_features: None,
            xdp_redirect_target: None,
            error: None,
        };
        let Some(ifindex) = ifindex(&name) else {
            status.error = Some(format!("no kernel interface named {name:?}"));
            statuses.insert(name, status);
            continue;
        };
        if let Err(e) = dp.claim(ifindex) {
            // Another instance drives it: nothing of ours goes onto it, the others go on.
            if !refused_before.contains(&ifindex) {
                tracing::warn!(port = %name, ifindex, error = %e, "port not attached");
            }
            status.error = Some(format!("not attached: {e}"));
            statuses.insert(name, status);
            continue;
        }

        let slot = match current.get(&ifindex) {
            Some(conf) => conf.stats_slot,
            None => {
                let slot = free_slots.pop_first().context("no free port slot")?;
                dp.reset_stats(slot)?;
                slot
            }
        };
        let conf = match &kind {
            PortKind::Switched(mode, _) => port_conf(slot, mode),
            PortKind::Routed => PortConf::new(slot, PORT_MODE_ROUTED, 0),
        };
        if current.get(&ifindex) != Some(&conf)
            && let Err(e) = dp.set_port(ifindex, conf)
        {
            // This port cannot join (its driver refuses a devmap entry, say); the others
            // go on.
            let _ = dp.remove_port(ifindex);
            status.ifindex = ifindex;
            status.error = Some(format!(
                "cannot be a fast-path port: {}",
                super::error_chain(&e)
            ));
            statuses.insert(name, status);
            continue;
        }
        status.ifindex = ifindex;
        status.stats_slot = slot;
        let choice = match &kind {
            PortKind::Switched(_, choice) => *choice,
            PortKind::Routed => DatapathChoice::Auto,
        };
        if let Ok(features) = crate::kernel::xdp_features::xdp_features(ifindex) {
            status.xdp_features = Some(features.to_string());
            status.xdp_redirect_target = Some(features.ndo_xmit());
        }
        match dp.attach(ifindex, choice) {
            Ok((mode, reason)) => {
                status.datapath = mode.into();
                status.datapath_reason = Some(match backends.kept.get(&name) {
                    Some(kept) => format!("{kept}; {reason}"),
                    None => reason,
                });
            }
            Err(e) => status.error = Some(format!("{e:#}")),
        }
        // Every port in the flood devmap gets a VLAN's floods, and the egress program
        // passes them where the port is a member: the flood set is what is written here.
        if let PortKind::Switched(mode, _) = &kind {
            for vlan in mode.vlans() {
                flood
                    .entry(vlan)
                    .or_insert_with(|| DatapathFlood {
                        vlan,
                        ports: Vec::new(),
                    })
                    .ports
                    .push(FloodMember {
                        port: name.clone(),
                        tagged: mode.untagged_vlan() != Some(vlan),
                    });
            }
        }
        desired.insert(ifindex, conf);
        statuses.insert(name, status);
    }
    for ifindex in current.keys().filter(|i| !desired.contains_key(i)) {
        dp.remove_port(*ifindex)?;
    }
    dp.release_claims(|ifindex| desired.contains_key(&ifindex));

    let desired_static: BTreeMap<FdbKey, u32> = config
        .fdb
        .values()
        .filter_map(|f| {
            // A station behind a switchdev port is reached through its VLAN's CPU port.
            let port = if switchdev.contains_key(&f.port) {
                crate::switchdev::cpu_port_xdp_name(f.vlan)
            } else {
                f.port.clone()
            };
            let ifindex = statuses.get(&port)?.ifindex;
            (ifindex != 0).then_some((
                FdbKey {
                    mac: f.mac.0,
                    vlan: f.vlan,
                },
                ifindex,
            ))
        })
        .collect();
    // Stations learned behind a CPU port may have been on a port that just moved from the
    // bridge to the fast path: forget them in the VLANs of newly attached ports.
    let cpu_ports: BTreeSet<u32> = statuses
        .iter()
        .filter(|(name, s)| crate::switchdev::is_cpu_port(name) && s.ifindex != 0)
        .map(|(_, s)| s.ifindex)
        .collect();
    let joined: Vec<&PortConf> = desired
        .iter()
        .filter(|(ifindex, _)| !current.contains_key(ifindex))
        .map(|(_, conf)| conf)
        .collect();
    for (key, entry) in dp.fdb_entries()? {
        let behind_cpu = entry.flags & FDB_FLAG_STATIC == 0
            && cpu_ports.contains(&entry.ifindex)
            && joined.iter().any(|conf| conf.is_member(key.vlan));
        let keep = if behind_cpu {
            false
        } else if entry.flags & FDB_FLAG_STATIC != 0 {
            desired_static.get(&key) == Some(&entry.ifindex)
        } else {
            // Learned entries go when their port left the VLAN (or the switch), and when
            // config now owns the address statically.
            !desired_static.contains_key(&key)
                && desired
                    .get(&entry.ifindex)
                    .is_some_and(|conf| conf.is_member(key.vlan))
        };
        if !keep {
            dp.fdb_remove(&key)?;
        }
    }
    for (key, ifindex) in &desired_static {
        if dp.fdb_get(key).is_none() {
            dp.fdb_insert(
                *key,
                FdbEntry {
                    ifindex: *ifindex,
                    flags: FDB_FLAG_STATIC,
                    last_seen_ns: 0,
                },
            )?;
        }
    }
    Ok(Reconciled {
        ports: statuses,
        flood,
    })
}

/// Delete learned entries not seen for `aging`; returns how many went.
pub fn age_fdb(dp: &mut Datapath, aging: Duration) -> anyhow::Result<usize> {
    let now = monotonic_ns();
    let limit = aging.as_nanos() as u64;
    let mut aged = 0;
    for (key, entry) in dp.fdb_entries()? {
        if entry.flags & FDB_FLAG_STATIC == 0 && now.saturating_sub(entry.last_seen_ns) > limit {
            dp.fdb_remove(&key)?;
            aged += 1;
        }
    }
    Ok(aged)
}

/// Make StateDb's learned-MAC table match the FDB map exactly (covers ring-buffer
/// overflows and entries removed by reconcile or aging). A full map (a MAC flood fills it)
/// is 131,072 rows: it is read off the async runtime ([`blocking`]) and written in
/// commits of at most `CHUNK_ROWS` rows, with readers (the API) served between them.
fn sync_learned(db: &DatapathWriter, dp: &Datapath) -> anyhow::Result<()> {
    blocking(|| {
        let names = db.read(|s| port_names(&s.observed));
        let mut in_map: Vec<((u16, MacAddr), String)> = dp
            .fdb_entries()?
            .into_iter()
            .filter(|(_, entry)| entry.flags & FDB_FLAG_STATIC == 0)
            .filter_map(|(key, entry)| {
                let port = names
                    .get(&entry.ifindex)
                    .cloned()
                    .unwrap_or_else(|| format!("ifindex {}", entry.ifindex));
                // Behind the bridge of switchdev ports: the bridge says which port (in
                // `bridge-fdb`), and an older fast-path row for the station is stale.
                (!crate::switchdev::is_cpu_port(&port))
                    .then_some(((key.vlan, MacAddr(key.mac)), port))
            })
            .collect();
        in_map.sort_unstable_by_key(|(key, _)| *key);
        let mut sync = LearnedSync::default();
        while db.write(|tx| sync.next_commit(tx, &in_map, CHUNK_ROWS)).0 {}
        Ok(())
    })
}

/// Where a sync of the learned-MAC table in several commits has come to.
#[derive(Default)]
struct LearnedSync {
    /// The rows before this key are done.
    after: Option<(u16, MacAddr)>,
    /// The next row of the map to write.
    next: usize,
}

impl LearnedSync {
    /// Write the next `rows` rows of the table as `in_map` (the map's rows, sorted by key)
    /// says: each of its rows, and the removal of each row it lacks. False once every row
    /// is done.
    fn next_commit(
        &mut self,
        tx: &mut DatapathTx<'_>,
        in_map: &[((u16, MacAddr), String)],
        rows: usize,
    ) -> bool {
        let from = self.after.map_or(Bound::Unbounded, Bound::Excluded);
        // The table's keys this commit may reach: it takes one at least at each step.
        let mut in_table = tx
            .observed()
            .fdb_learned
            .range((from, Bound::Unbounded))
            .take(rows)
            .map(|(key, _)| *key)
            .collect::<Vec<_>>()
            .into_iter()
            .peekable();
        for _ in 0..rows {
            let mapped = in_map.get(self.next);
            let key = match (mapped, in_table.peek()) {
                (None, None) => return false,
                (Some((key, _)), None) | (None, Some(key)) => *key,
                (Some((mapped, _)), Some(tabled)) => *mapped.min(tabled),
            };
            in_table.next_if_eq(&key);
            let (vlan, mac) = key;
            match mapped.filter(|(mapped, _)| *mapped == key) {
                Some((_, port)) => {
                    self.next += 1;
                    let moves = tx
                        .observed()
                        .fdb_learned
                        .get(&key)
                        .map_or(0, |old| old.moves + u64::from(old.port != *port));
                    let row = LearnedMac {
                        vlan,
                        mac,
                        port: port.clone(),
                        moves,
                    };
                    tx.learned(vlan, mac, Some(row));
                }
                None => tx.learned(vlan, mac, None),
            }
            self.after = Some(key);
        }
        true
    }
}

/// Learn events the ring buffer had no room for, on every fast-path port together.
fn learn_events_lost(db: &DatapathWriter, dp: &Datapath) -> u64 {
    let slots: Vec<u32> = db.read(|s| {
        s.observed
            .port_status
            .values()
            .filter(|p| p.ifindex != 0 && p.datapath != DatapathMode::Switchdev)
            .map(|p| p.stats_slot)
            .collect()
    });
    slots
        .into_iter()
        .filter_map(|slot| dp.port_stats(slot).ok())
        .map(|s| s.learn_events_lost)
        .sum()
}

/// Carry out the `fdb-clear` request if it is new: remove the learned entries it names
/// from the FDB map, and answer in `fdb-cleared` once `fdb-learned` shows it.
fn clear_fdb(db: &DatapathWriter, dp: &Mutex<Datapath>) -> anyhow::Result<()> {
    let (request, ifindex) = db.read(|s| {
        let request = s.observed.fdb_clear.clone();
        let ifindex = request.port.as_ref().map(|port| {
            s.observed
                .port_status
                .get(port)
                .map_or(0, |status| status.ifindex)
        });
        (
            (request.request > s.observed.fdb_cleared.request).then_some(request),
            ifindex,
        )
    });
    let Some(request) = request else {
        return Ok(());
    };
    let mut answer = FdbCleared {
        request: request.request,
        ..Default::default()
    };
    // Clearing a full map is 131,072 removals: off the async runtime.
    blocking(|| {
        let mut guard = lock(dp);
        if ifindex == Some(0) {
            answer.error = Some(format!(
                "port {} is not on the fast path: the FDB map has no entries of its",
                request.port.as_deref().unwrap_or_default()
            ));
        } else {
            for (key, entry) in guard.fdb_entries()? {
                let named = entry.flags & FDB_FLAG_STATIC == 0
                    && request.vlan.is_none_or(|vlan| vlan == key.vlan)
                    && ifindex.is_none_or(|ifindex| ifindex == entry.ifindex);
                if named {
                    guard.fdb_remove(&key)?;
                    answer.removed += 1;
                }
            }
        }
        sync_learned(db, &guard)?;
        drop(guard);
        db.write(|tx| tx.fdb_cleared(answer));
        Ok(())
    })
}

fn port_names(observed: &Observed) -> BTreeMap<u32, String> {
    observed
        .port_status
        .values()
        .map(|p| (p.ifindex, p.name.clone()))
        .collect()
}

/// Record a batch of learn events in one commit: a burst of new MACs costs one commit per
/// batch rather than one per MAC, and a MAC seen several times in the batch one row change.
fn record_learns(db: &DatapathWriter, events: &[LearnEvent]) {
    if events.is_empty() {
        return;
    }
    db.write(|tx| {
        let names = port_names(tx.observed());
        // The rows as the events leave them, applied in order; written once each below.
        let mut rows: BTreeMap<(u16, MacAddr), Option<LearnedMac>> = BTreeMap::new();
        let mut station_moves = 0;
        for event in events {
            let Some(port) = names.get(&event.ifindex) else {
                continue;
            };
            let key = (event.key.vlan, MacAddr(event.key.mac));
            let row = rows
                .entry(key)
                .or_insert_with(|| tx.observed().fdb_learned.get(&key).cloned());
            if crate::switchdev::is_cpu_port(port) {
                // Now behind the bridge: a fast-path row for it is stale.
                *row = None;
                continue;
            }
            let row = row.get_or_insert_with(|| LearnedMac {
                vlan: key.0,
                mac: key.1,
                port: port.clone(),
                moves: 0,
            });
            if event.old_ifindex != 0 && row.port != *port {
                row.moves += 1;
                station_moves += 1;
            }
            row.port.clone_from(port);
        }
        if station_moves > 0 {
            let mut status = tx.observed().datapath.clone();
            status.station_moves += station_moves;
            tx.datapath(status);
        }
        for ((vlan, mac), row) in rows {
            tx.learned(vlan, mac, row);
        }
    });
}

fn lock(dp: &Mutex<Datapath>) -> MutexGuard<'_, Datapath> {
    // A module that panicked while holding the lock left the maps as they were: the
    // next reconcile reads them back, so the poison carries no information.
    dp.lock().unwrap_or_else(|e| e.into_inner())
}

fn apply(
    db: &DatapathWriter,
    dp: &Mutex<Datapath>,
    l3: &mut L3,
    inbox: &mut Inbox,
) -> anyhow::Result<()> {
    blocking(|| {
        let mut guard = lock(dp);
        // Under StateDb's read lock: a consistent view without copying big tables.
        let (reconciled, touched, generation) = db.read(|state| -> anyhow::Result<_> {
            let links = &state.observed.links;
            let backends = Backends::of(state);
            let reconciled = reconcile(&mut guard, &state.config, &backends, |name| {
                links.get(name).map(|l| l.ifindex)
            })?;
            let touched = l3.sync_start(&mut guard, state)?;
            Ok((reconciled, touched, state.generation))
        })?;
        let Reconciled { ports, flood } = reconciled;
        db.write(|tx| {
            tx.replace_all(
                |o| &o.port_status,
                |tx, name, row| tx.port_status(&name, row),
                ports,
            );
            tx.replace_all(|o| &o.datapath_flood, DatapathTx::flood, flood);
            l3.publish(tx, &touched);
        });
        sync_learned(db, &guard)?;
        drop(guard);
        // Every route, a chunk at a time: each chunk sees the state at `generation` or a
        // later one, and what changed after it comes as commits, applied next.
        let mut after = Bound::Unbounded;
        loop {
            let mut touched = Touched::default();
            let mut guard = lock(dp);
            let next = db.read(|state| {
                l3.sync_routes_after(&mut guard, state, after, CHUNK_ROWS, &mut touched)
            })?;
            drop(guard);
            l3.compact();
            db.write(|tx| l3.publish(tx, &touched));
            inbox.drain();
            match next {
                Some(last) => after = Bound::Excluded(last),
                None => break,
            }
        }
        db.read(|state| l3.sync_gone_ifaces(&mut lock(dp), state))?;
        report(db, dp, l3, &Touched::default(), generation)?;
        // A full sync (a start with a million routes) leaves the memory of its chunks'
        // commits and of the maps read back free in between live blocks.
        crate::statedb::release_free_memory();
        Ok(())
    })
}

/// The learn-event ring buffer, borrowed from the datapath for one run of the module and
/// handed back when the run ends, even by a panic, so that a restarted module finds it.
struct LearnRing {
    fd: Option<AsyncFd<RingBuf<MapData>>>,
    dp: Arc<Mutex<Datapath>>,
}

impl LearnRing {
    fn take(dp: &Arc<Mutex<Datapath>>) -> anyhow::Result<Self> {
        let ring = lock(dp)
            .take_learn_events()
            .context("learn-event ring buffer already taken")?;
        // SAFETY: the ring buffer owns its fd and is moved into the AsyncFd, so the fd
        // stays open exactly as long as it is registered.
        let fd = match unsafe { AsyncFd::register(ring) } {
            Ok(fd) => fd,
            Err(e) => {
                // Hand the ring back so that the next run can try again.
                let (ring, error) = e.into_parts();
                lock(dp).put_learn_events(ring);
                return Err(error).context("polling the learn-event ring buffer");
            }
        };
        Ok(Self {
            fd: Some(fd),
            dp: dp.clone(),
        })
    }

    fn fd(&mut self) -> &mut AsyncFd<RingBuf<MapData>> {
        self.fd.as_mut().expect("present until dropped")
    }
}

impl Drop for LearnRing {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            lock(&self.dp).put_learn_events(fd.into_inner());
        }
    }
}

/// What a batch of commits asks of the datapath.
#[derive(Default)]
struct Work {
    /// Config or links changed: reconcile everything.
    all: bool,
    /// The API asked for learned MACs to be cleared.
    clear: bool,
    prefixes: BTreeSet<IpNet>,
    neighbors: BTreeSet<(u32, std::net::IpAddr)>,
    /// The newest commit of another writer in the batch: once the batch is done, the maps
    /// reflect it (what the datapath does not act on needs nothing of it).
    seen: u64,
}

/// The module's subscription to StateDb's commits, read even during a long sync (a
/// million routes at a start): what the commits ask is kept as work for after the sync,
/// and the commits themselves, thousands of rows each (the module's own among them), are
/// freed as they come instead of waiting in the channel until the sync ends (at a start
/// with a million routes they held about 200 MB, in blocks between the tables' own).
struct Inbox {
    commits: broadcast::Receiver<Arc<Commit>>,
    pending: Work,
    closed: bool,
}

impl Inbox {
    fn receive(&mut self, commit: Result<Arc<Commit>, broadcast::error::RecvError>) {
        match commit {
            Ok(commit) => self.pending.add(&commit),
            // Level-triggered: having missed commits only means reconciling all.
            Err(broadcast::error::RecvError::Lagged(_)) => self.pending.all = true,
            Err(broadcast::error::RecvError::Closed) => self.closed = true,
        }
    }

    /// Take every commit already waiting.
    fn drain(&mut self) {
        loop {
            match self.commits.try_recv() {
                Ok(commit) => self.pending.add(&commit),
                Err(broadcast::error::TryRecvError::Lagged(_)) => self.pending.all = true,
                Err(broadcast::error::TryRecvError::Closed) => {
                    self.closed = true;
                    return;
                }
                Err(broadcast::error::TryRecvError::Empty) => return,
            }
        }
    }

    /// Do what the commits read so far ask, once; what comes meanwhile is left pending
    /// for the next turn of the module's loop, so that stopping, faults, learn events and
    /// ticks get their turn during a long burst of commits.
    fn step(
        &mut self,
        db: &DatapathWriter,
        dp: &Mutex<Datapath>,
        l3: &mut L3,
    ) -> anyhow::Result<()> {
        self.drain();
        if self.pending.is_idle() || self.closed {
            return Ok(());
        }
        let work = std::mem::take(&mut self.pending);
        let (seen, clear) = (work.seen, work.clear);
        work.run(db, dp, l3, self)?;
        if clear {
            clear_fdb(db, dp)?;
        }
        advance(db, seen);
        self.drain();
        Ok(())
    }
}

impl Work {
    fn add(&mut self, commit: &Commit) {
        // Its own commits say what it did; counting them would make each report the
        // cause of the next.
        if commit
            .changes
            .iter()
            .any(|c| c.table.owner() != Owner::Datapath)
        {
            self.seen = self.seen.max(commit.generation);
        }
        for change in &commit.changes {
            match change.table {
                t if t.is_config()
                    || matches!(t, Table::Link | Table::BridgePort | Table::KernelFeatures) =>
                {
                    self.all = true
                }
                Table::FdbClear => self.clear = true,
                Table::Fib => {
                    // The maps are keyed by prefix: any route to it may change what the
                    // prefix gets.
                    let prefix = change
                        .row
                        .as_ref()
                        .or(change.old.as_ref())
                        .and_then(|row| row.get::<FibRoute>())
                        .map(|route| route.prefix);
                    if let Some(prefix) = prefix {
                        self.prefixes.insert(prefix);
                    }
                }
                Table::Neighbor => {
                    if let Some((ifindex, ip)) = change.key.split_once('/')
                        && let (Ok(ifindex), Ok(ip)) = (ifindex.parse(), ip.parse())
                    {
                        self.neighbors.insert((ifindex, ip));
                    }
                }
                _ => {}
            }
        }
    }

    /// Nothing to do, not even a generation to acknowledge.
    fn is_idle(&self) -> bool {
        !self.all
            && !self.clear
            && self.prefixes.is_empty()
            && self.neighbors.is_empty()
            && self.seen == 0
    }

    fn run(
        self,
        db: &DatapathWriter,
        dp: &Mutex<Datapath>,
        l3: &mut L3,
        inbox: &mut Inbox,
    ) -> anyhow::Result<()> {
        if self.all {
            return apply(db, dp, l3, inbox);
        }
        if self.prefixes.is_empty() && self.neighbors.is_empty() {
            return Ok(());
        }
        blocking(|| {
            // A chunk at a time, each under its own read lock, published as it is done.
            let prefixes: Vec<IpNet> = self.prefixes.into_iter().collect();
            let prefixes_len = prefixes.len();
            let mut chunks = prefixes.chunks(CHUNK_ROWS);
            let mut neighbors = Some(self.neighbors);
            let mut generation = None;
            loop {
                let prefixes = chunks.next().unwrap_or_default();
                let mut guard = lock(dp);
                let touched = db.read(|state| {
                    generation.get_or_insert(state.generation);
                    l3.sync_changed(
                        &mut guard,
                        state,
                        prefixes.iter().copied(),
                        neighbors.take().unwrap_or_default(),
                    )
                })?;
                drop(guard);
                l3.compact();
                if chunks.len() == 0 {
                    let generation = generation.expect("read once");
                    report(db, dp, l3, &touched, generation)?;
                    if prefixes_len > CHUNK_ROWS {
                        // The commits that carried a large change are freed by now.
                        crate::statedb::release_free_memory();
                    }
                    return Ok(());
                }
                db.write(|tx| l3.publish(tx, &touched));
                inbox.drain();
            }
        })
    }
}

/// The maps reflect `generation` (no change in it concerned them): say so, so that whoever
/// waits for the datapath to catch up (readiness) is not left waiting for a change that
/// never comes.
fn advance(db: &DatapathWriter, generation: u64) {
    db.write(|tx| {
        let mut status = tx.observed().datapath.clone();
        if status.generation < generation {
            status.generation = generation;
            tx.datapath(status);
        }
    });
}

/// Record in StateDb, in one commit, what the maps now hold for the routes and
/// neighbours a sync touched, and which generation they reflect.
fn report(
    db: &DatapathWriter,
    dp: &Mutex<Datapath>,
    l3: &L3,
    touched: &Touched,
    generation: u64,
) -> anyhow::Result<()> {
    let ports = lock(dp).ports()?.len();
    let sizes = l3.sizes();
    db.write(|tx| {
        l3.publish(tx, touched);
        let station_moves = tx.observed().datapath.station_moves;
        tx.datapath(DatapathStatus {
            generation,
            ports,
            routes_v4: sizes.routes_v4,
            routes_v6: sizes.routes_v6,
            nexthop_groups: sizes.nexthop_groups,
            neighbors: sizes.neighbors,
            l3_interfaces: sizes.interfaces,
            station_moves,
        });
    });
    Ok(())
}

/// The datapath module: the only writer of the BPF maps.
pub async fn run(
    ctx: ModuleCtx,
    dp: Arc<Mutex<Datapath>>,
    db: DatapathWriter,
) -> anyhow::Result<()> {
    let mut ring = LearnRing::take(&dp)?;
    // Subscribe before the first reconcile so that no change slips between the two.
    let mut inbox = Inbox {
        commits: db.commits(),
        pending: Work::default(),
        closed: false,
    };
    // Mark and sweep, never a timer: the maps (an earlier xnosd's, taken over) lose
    // nothing until the kernel module has read the kernel completely. Before that StateDb
    // lacks links and routes the kernel has, and a reconcile would take them away.
    loop {
        if db
            .read(|s| s.observed.modules.get("kernel").and_then(|m| m.synced))
            .is_some()
        {
            break;
        }
        tokio::select! {
            // The full sync below covers what these change.
            commit = inbox.commits.recv() => match commit {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = ctx.stopping() => return Ok(()),
        }
    }
    let mut l3 = blocking(|| L3::load(&mut lock(&dp)))?;
    apply(&db, &dp, &mut l3, &mut inbox)?;
    // A request the previous run of the module did not answer is answered now.
    clear_fdb(&db, &dp)?;
    // What changed during the first sync is pending: the loop's first turns do it.

    let mut learns = Vec::with_capacity(LEARN_BATCH);
    let mut events_lost = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_scan = Instant::now();
    let mut last_claim = Instant::now();
    let mut last_refused_retry = Instant::now();
    loop {
        tokio::select! {
            commit = inbox.commits.recv() => {
                // Every commit already waiting too: one pass for a burst of changes.
                inbox.receive(commit);
                inbox.step(&db, &dp, &mut l3)?;
                if inbox.closed {
                    return Ok(());
                }
            }
            // Work that came in while the last was done, one pass per turn.
            _ = std::future::ready(()), if !inbox.pending.is_idle() => {
                inbox.step(&db, &dp, &mut l3)?;
                if inbox.closed {
                    return Ok(());
                }
            }
            guard = ring.fd().readable_mut() => {
                let mut guard = guard.context("learn-event ring buffer")?;
                let ring = guard.get_inner_mut();
                learns.clear();
                while learns.len() < LEARN_BATCH {
                    let Some(item) = ring.next() else {
                        break;
                    };
                    if item.len() >= size_of::<LearnEvent>() {
                        // SAFETY: the datapath writes exactly one LearnEvent per record;
                        // read_unaligned copes with the ring's 8-byte record alignment.
                        learns.push(unsafe { (item.as_ptr() as *const LearnEvent).read_unaligned() });
                    }
                }
                // A full batch leaves the ring readable, so the next turn of the loop
                // takes more, after commits and ticks had their turn.
                if learns.len() < LEARN_BATCH {
                    guard.clear_ready();
                }
                record_learns(&db, &learns);
            }
            _ = tick.tick() => {
                // Level-triggered has nothing to trigger it when another instance lets a
                // port go: ask again now and then.
                if last_claim.elapsed() >= CLAIM_RETRY && lock(&dp).claims_refused() {
                    last_claim = Instant::now();
                    apply(&db, &dp, &mut l3, &mut inbox)?;
                }
                // The routes and neighbours the maps refused are tried again once there
                // may be room for them (some deleted since): a chunk a tick, not all.
                let periodic = last_refused_retry.elapsed() >= REFUSED_RETRY;
                if periodic {
                    last_refused_retry = Instant::now();
                }
                let refused = l3.refused_to_retry(CHUNK_ROWS, periodic);
                let refused_neighbors = l3.refused_neighbors_to_retry(CHUNK_ROWS, periodic);
                if !refused.is_empty() || !refused_neighbors.is_empty() {
                    inbox.pending.prefixes.extend(refused);
                    inbox.pending.neighbors.extend(refused_neighbors);
                    inbox.step(&db, &dp, &mut l3)?;
                    if inbox.closed {
                        return Ok(());
                    }
                }
                // Learn events lost to a full ring (a burst of new MACs): their entries
                // are in the map; read it now rather than at the next scan, at most once a
                // tick.
                let lost = learn_events_lost(&db, &lock(&dp));
                if lost != events_lost {
                    events_lost = lost;
                    sync_learned(&db, &lock(&dp))?;
                }
                // Scan a few times per aging period: a MAC goes within aging * 1.25.
                let aging = Duration::from_secs(db.read(|s| s.config.switch.fdb_aging_secs));
                let period = (aging / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
                if last_scan.elapsed() >= period {
                    last_scan = Instant::now();
                    // A walk of the whole map: off the async runtime.
                    let aged = blocking(|| age_fdb(&mut lock(&dp), aging))?;
                    if aged > 0 {
                        tracing::debug!(aged, "aged out FDB entries");
                    }
                    sync_learned(&db, &lock(&dp))?;
                }
            }
            _ = ctx.fault() => {}
            _ = ctx.stopping() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statedb::{Change, ChangeOp, StateDb};

    // What this shows: a sync of the learned-MAC table in commits of at most `rows` rows
    // ends with the table as the map says, MACs new, moved and gone mixed (or every one
    // gone), whatever the size of the commits.
    #[test]
    fn a_learned_sync_commits_a_chunk_at_a_time_and_ends_as_the_map() {
        let mac = |i: u8| MacAddr([2, 0, 0, 0, 0, i]);
        let port = |i: u8| if i == 4 { "swp2" } else { "swp1" };
        // The table has MACs 0..10 on swp1; the map has the even ones (4 moved to swp2),
        // and 20..25.
        let mixed: Vec<((u16, MacAddr), String)> = (0..10)
            .step_by(2)
            .chain(20..25)
            .map(|i| ((10, mac(i)), port(i).into()))
            .collect();
        for in_map in [mixed, Vec::new()] {
            for rows in [1, 2, 3, 7, CHUNK_ROWS] {
                let db = StateDb::new(Config::default(), |_: &str| true);
                let dp = db.writers().datapath;
                dp.write(|tx| {
                    for i in 0..10 {
                        let row = LearnedMac {
                            vlan: 10,
                            mac: mac(i),
                            port: "swp1".into(),
                            moves: 0,
                        };
                        tx.learned(10, mac(i), Some(row));
                    }
                });
                let mut sync = LearnedSync::default();
                let mut changes = 0;
                loop {
                    let (more, commit) = dp.write(|tx| sync.next_commit(tx, &in_map, rows));
                    assert!(commit.changes.len() <= rows, "{commit:?}");
                    changes += commit.changes.len();
                    if !more {
                        break;
                    }
                }
                let table: Vec<(u16, MacAddr, String, u64)> = db.read(|s| {
                    s.observed
                        .fdb_learned
                        .values()
                        .map(|r| (r.vlan, r.mac, r.port.clone(), r.moves))
                        .collect()
                });
                let expected: Vec<(u16, MacAddr, String, u64)> = in_map
                    .iter()
                    .map(|((vlan, mac), port)| {
                        (*vlan, *mac, port.clone(), u64::from(mac.0[5] == 4))
                    })
                    .collect();
                assert_eq!(table, expected, "{rows} rows a commit");
                // Gone, moved and new: none more, none twice.
                let expected_changes = if in_map.is_empty() { 10 } else { 5 + 1 + 5 };
                assert_eq!(changes, expected_changes, "{rows} rows a commit");
            }
        }
    }

    fn commit(generation: u64, table: Table) -> Commit {
        Commit {
            generation,
            changes: vec![Change {
                table,
                key: "k".into(),
                op: ChangeOp::Insert,
                row: None,
                old: None,
            }],
        }
    }

    // What this shows: a batch of commits the datapath need not act on (a module row, the
    // kernel's interface status) still moves the generation it reflects, so readiness,
    // which waits for it, cannot hang; its own commits do not, or each report would cause
    // the next.
    #[test]
    fn a_batch_reflects_other_writers_commits_but_not_its_own() {
        let mut work = Work::default();
        work.add(&commit(7, Table::Module));
        work.add(&commit(8, Table::InterfaceStatus));
        work.add(&commit(9, Table::Datapath));
        work.add(&commit(10, Table::FdbLearned));
        assert_eq!(work.seen, 8);
        assert!(!work.all && work.prefixes.is_empty() && work.neighbors.is_empty());
    }

    fn learn(mac: u8, ifindex: u32, old_ifindex: u32) -> LearnEvent {
        LearnEvent {
            key: FdbKey {
                mac: [2, 0, 0, 0, 0, mac],
                vlan: 10,
            },
            ifindex,
            old_ifindex,
        }
    }

    // What this shows: a batch of learn events is one commit with one row change per MAC,
    // however often the MAC came up in it, and the moves within the batch are all counted.
    #[test]
    fn a_batch_of_learn_events_is_one_commit_with_a_row_per_mac() {
        let db = crate::statedb::StateDb::new(Config::default(), |_: &str| true);
        let writer = db.writers().datapath;
        writer.write(|tx| {
            for (name, ifindex) in [("swp1", 11), ("swp2", 12)] {
                let status = PortStatus {
                    name: name.into(),
                    ifindex,
                    stats_slot: 0,
                    datapath: DatapathMode::XdpNative,
                    datapath_reason: None,
                    xdp_features: None,
                    xdp_redirect_target: None,
                    error: None,
                };
                tx.port_status(name, Some(status));
            }
        });
        let mut commits = db.subscribe().commits;
        // A moves swp1 -> swp2 -> swp1; B is learned; an unknown port's event is skipped.
        let mut events = vec![learn(0xa, 11, 0), learn(0xa, 12, 11), learn(0xa, 11, 12)];
        events.extend((0..100).map(|_| learn(0xb, 12, 0)));
        events.push(learn(0xc, 99, 0));
        record_learns(&writer, &events);

        let commit = commits.try_recv().expect("one commit");
        assert!(commits.try_recv().is_err(), "only one commit");
        let learned: Vec<&str> = commit
            .changes
            .iter()
            .filter(|c| c.table == Table::FdbLearned)
            .map(|c| c.key.as_str())
            .collect();
        assert_eq!(learned.len(), 2, "{learned:?}");
        db.read(|s| {
            let a = &s.observed.fdb_learned[&(10, MacAddr([2, 0, 0, 0, 0, 0xa]))];
            assert_eq!((a.port.as_str(), a.moves), ("swp1", 2));
            let b = &s.observed.fdb_learned[&(10, MacAddr([2, 0, 0, 0, 0, 0xb]))];
            assert_eq!((b.port.as_str(), b.moves), ("swp2", 0));
            assert_eq!(s.observed.fdb_learned.len(), 2);
            assert_eq!(s.observed.datapath.station_moves, 2);
        });
    }
}
