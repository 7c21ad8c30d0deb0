//! The datapath module: reconciles the BPF maps with StateDb (level-triggered), feeds
//! learned MACs back into StateDb, and ages out learned FDB entries.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::{io::unix::AsyncFd, sync::watch};
use xnos_common::{
    FDB_FLAG_STATIC, FdbEntry, FdbKey, LearnEvent, MAX_PORTS, PORT_MODE_ACCESS, PORT_MODE_TRUNK,
    PortConf,
};

use super::Datapath;
use crate::{
    config::{Config, PortMode},
    link,
    mac::MacAddr,
    statedb::{LearnedMac, PortStatus, StateDb},
};

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

/// Bring the maps and attachments in line with the desired config, touching only what
/// differs. Returns the observed status of every configured port.
pub fn reconcile(
    dp: &mut Datapath,
    config: &Config,
) -> anyhow::Result<BTreeMap<String, PortStatus>> {
    let current = dp.ports()?;
    let mut free_slots: BTreeSet<u32> = (0..MAX_PORTS).collect();
    for conf in current.values() {
        free_slots.remove(&conf.stats_slot);
    }

    let mut statuses = BTreeMap::new();
    let mut desired: BTreeMap<u32, PortConf> = BTreeMap::new();
    for port in config.ports.values() {
        let mut status = PortStatus {
            name: port.name.clone(),
            ifindex: 0,
            stats_slot: 0,
            xdp_mode: "none".into(),
            error: None,
        };
        let Some(ifindex) = link::ifindex(&port.name) else {
            status.error = Some(format!("no kernel interface named {:?}", port.name));
            statuses.insert(port.name.clone(), status);
            continue;
        };
        let slot = match current.get(&ifindex) {
            Some(conf) => conf.stats_slot,
            None => {
                let slot = free_slots.pop_first().context("no free port slot")?;
                dp.reset_stats(slot)?;
                slot
            }
        };
        let conf = port_conf(slot, &port.mode);
        if current.get(&ifindex) != Some(&conf) {
            dp.set_port(ifindex, conf)?;
        }
        status.ifindex = ifindex;
        status.stats_slot = slot;
        match dp.attach(ifindex) {
            Ok(mode) => status.xdp_mode = mode.name().into(),
            Err(e) => status.error = Some(format!("{e:#}")),
        }
        desired.insert(ifindex, conf);
        statuses.insert(port.name.clone(), status);
    }
    for ifindex in current.keys().filter(|i| !desired.contains_key(i)) {
        dp.remove_port(*ifindex)?;
    }

    let desired_static: BTreeMap<FdbKey, u32> = config
        .fdb
        .values()
        .filter_map(|f| {
            let ifindex = statuses.get(&f.port)?.ifindex;
            (ifindex != 0).then_some((
                FdbKey {
                    mac: f.mac.0,
                    vlan: f.vlan,
                },
                ifindex,
            ))
        })
        .collect();
    for (key, entry) in dp.fdb_entries()? {
        let keep = if entry.flags & FDB_FLAG_STATIC != 0 {
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
    Ok(statuses)
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
/// overflows and entries removed by reconcile or aging).
fn sync_learned(db: &StateDb, dp: &Datapath) -> anyhow::Result<()> {
    let entries = dp.fdb_entries()?;
    db.update_observed(|observed| {
        let names: BTreeMap<u32, String> = observed
            .ports
            .values()
            .map(|p| (p.ifindex, p.name.clone()))
            .collect();
        let mut learned = BTreeMap::new();
        for (key, entry) in &entries {
            if entry.flags & FDB_FLAG_STATIC != 0 {
                continue;
            }
            let mac = MacAddr(key.mac);
            let port = names
                .get(&entry.ifindex)
                .cloned()
                .unwrap_or_else(|| format!("ifindex {}", entry.ifindex));
            let moves = observed
                .fdb
                .get(&(key.vlan, mac))
                .map_or(0, |old| old.moves + u64::from(old.port != port));
            learned.insert(
                (key.vlan, mac),
                LearnedMac {
                    vlan: key.vlan,
                    mac,
                    port,
                    moves,
                },
            );
        }
        let changed = learned != observed.fdb;
        observed.fdb = learned;
        changed
    });
    Ok(())
}

fn record_learn(db: &StateDb, event: &LearnEvent) {
    db.update_observed(|observed| {
        let Some(port) = observed
            .ports
            .values()
            .find(|p| p.ifindex == event.ifindex)
            .map(|p| p.name.clone())
        else {
            return false;
        };
        let mac = MacAddr(event.key.mac);
        let entry = observed
            .fdb
            .entry((event.key.vlan, mac))
            .or_insert_with(|| LearnedMac {
                vlan: event.key.vlan,
                mac,
                port: port.clone(),
                moves: 0,
            });
        if event.old_ifindex != 0 && entry.port != port {
            entry.moves += 1;
        }
        entry.port = port;
        true
    });
}

fn apply(db: &StateDb, dp: &mut Datapath) -> anyhow::Result<()> {
    let config = db.read(|s| s.config.clone());
    let statuses = reconcile(dp, &config)?;
    db.update_observed(|observed| {
        let changed = observed.ports != statuses;
        observed.ports = statuses;
        changed
    });
    sync_learned(db, dp)
}

/// Run the datapath module until `shutdown` fires; hands the datapath back for cleanup.
pub async fn run(
    db: Arc<StateDb>,
    mut dp: Datapath,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Datapath> {
    let ring = dp
        .take_learn_events()
        .context("learn-event ring buffer already taken")?;
    // SAFETY: the ring buffer owns its fd and is moved into the AsyncFd, so the fd stays
    // open exactly as long as it is registered.
    let mut ring = unsafe { AsyncFd::register(ring) }
        .map_err(std::io::Error::from)
        .context("polling the learn-event ring buffer")?;
    let mut config_rx = db.watch_config();
    config_rx.mark_unchanged();
    apply(&db, &mut dp)?;

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_scan = Instant::now();
    loop {
        tokio::select! {
            changed = config_rx.changed() => {
                if changed.is_err() {
                    break;
                }
                apply(&db, &mut dp)?;
            }
            guard = ring.readable_mut() => {
                let mut guard = guard.context("learn-event ring buffer")?;
                let ring = guard.get_inner_mut();
                while let Some(item) = ring.next() {
                    if item.len() >= size_of::<LearnEvent>() {
                        // SAFETY: the datapath writes exactly one LearnEvent per record;
                        // read_unaligned copes with the ring's 8-byte record alignment.
                        let event = unsafe { (item.as_ptr() as *const LearnEvent).read_unaligned() };
                        record_learn(&db, &event);
                    }
                }
                guard.clear_ready();
            }
            _ = tick.tick() => {
                // Scan a few times per aging period: a MAC goes within aging * 1.25.
                let aging = Duration::from_secs(db.read(|s| s.config.fdb_aging_secs));
                let period = (aging / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
                if last_scan.elapsed() >= period {
                    last_scan = Instant::now();
                    let aged = age_fdb(&mut dp, aging)?;
                    if aged > 0 {
                        tracing::debug!(aged, "aged out FDB entries");
                    }
                    sync_learned(&db, &dp)?;
                }
            }
            _ = shutdown.changed() => break,
        }
    }
    Ok(dp)
}
