//! StateDb: the central database every module reads and writes, and nothing else.
//!
//! It keeps the desired config (what the operator asked for) apart from the observed state
//! (what the datapath and the kernel report), like SONiC's CONFIG_DB and STATE_DB. Each
//! commit bumps a generation number; modules wait for changes on a watch channel and
//! reconcile level-triggered, so a missed wake-up only delays them, never desynchronises.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use serde::Serialize;
use tokio::sync::watch;

use crate::{config::Config, mac::MacAddr};

/// What the datapath reports about one configured port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PortStatus {
    pub name: String,
    pub ifindex: u32,
    /// Slot of the port's counters in the PORT_STATS map.
    pub stats_slot: u32,
    /// `native` or `generic` XDP, or `none` if not attached.
    pub xdp_mode: String,
    /// Why the port is not forwarding, if it is not.
    pub error: Option<String>,
}

/// A MAC address the datapath learned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LearnedMac {
    pub vlan: u16,
    pub mac: MacAddr,
    pub port: String,
    /// How often the station moved between ports since it was learned.
    pub moves: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Observed {
    pub ports: BTreeMap<String, PortStatus>,
    pub fdb: BTreeMap<(u16, MacAddr), LearnedMac>,
}

#[derive(Clone, Debug, Serialize)]
pub struct State {
    pub generation: u64,
    pub config: Config,
    pub observed: Observed,
}

pub struct StateDb {
    state: RwLock<State>,
    config_changed: watch::Sender<u64>,
    observed_changed: watch::Sender<u64>,
}

impl StateDb {
    pub fn new(config: Config) -> Arc<Self> {
        Arc::new(Self {
            state: RwLock::new(State {
                generation: 1,
                config,
                observed: Observed::default(),
            }),
            config_changed: watch::Sender::new(1),
            observed_changed: watch::Sender::new(1),
        })
    }

    /// Run `f` on a consistent view of the whole database.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.state.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replace the desired config (already validated) as one commit.
    pub fn set_config(&self, config: Config) -> u64 {
        let generation = {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            if state.config == config {
                return state.generation;
            }
            state.config = config;
            state.generation += 1;
            state.generation
        };
        self.config_changed.send_replace(generation);
        generation
    }

    /// Change observed state; `f` returns whether it changed anything.
    pub fn update_observed(&self, f: impl FnOnce(&mut Observed) -> bool) -> u64 {
        let generation = {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            if !f(&mut state.observed) {
                return state.generation;
            }
            state.generation += 1;
            state.generation
        };
        self.observed_changed.send_replace(generation);
        generation
    }

    /// Wakes on every config commit (with the generation of the latest).
    pub fn watch_config(&self) -> watch::Receiver<u64> {
        self.config_changed.subscribe()
    }

    /// Wakes on every observed-state commit (with the generation of the latest).
    pub fn watch_observed(&self) -> watch::Receiver<u64> {
        self.observed_changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commits_bump_generation_and_wake_watchers() {
        let db = StateDb::new(Config::default());
        let mut config_rx = db.watch_config();
        let mut observed_rx = db.watch_observed();
        config_rx.mark_unchanged();
        observed_rx.mark_unchanged();

        let same = db.set_config(Config::default());
        assert_eq!(same, 1, "an identical config is not a commit");
        assert!(!config_rx.has_changed().unwrap());

        let config = Config {
            fdb_aging_secs: 5,
            ..Config::default()
        };
        assert_eq!(db.set_config(config), 2);
        assert!(config_rx.has_changed().unwrap());
        assert!(!observed_rx.has_changed().unwrap());

        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let generation = db.update_observed(|o| {
            o.fdb.insert(
                (10, mac),
                LearnedMac {
                    vlan: 10,
                    mac,
                    port: "swp1".into(),
                    moves: 0,
                },
            );
            true
        });
        assert_eq!(generation, 3);
        assert_eq!(*observed_rx.borrow_and_update(), 3);
        assert_eq!(db.update_observed(|_| false), 3);
        db.read(|s| {
            assert_eq!(s.config.fdb_aging_secs, 5);
            assert_eq!(s.observed.fdb[&(10, mac)].port, "swp1");
        });
    }
}
