//! When xnosd is ready: the fast path carries what the kernel and the config held at start.
//!
//! xnosd creates its API socket only then (and tells systemd `READY=1`), so that whatever
//! is started after it (a script, a unit ordered after it, a test) finds ports that
//! forward, not ports still being attached.

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::statedb::{State, StateDb};

/// How far xnosd's first sync has come (`GET /v1/ready`, `xnos wait-ready`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Readiness {
    pub ready: bool,
    /// The generation the kernel module's first sync (links, routes, neighbours read;
    /// bridge and L3 interfaces made) reflected; None until it is done.
    pub kernel_synced: Option<u64>,
    /// The generation the datapath's maps and port attachments reflect.
    pub datapath_generation: u64,
    /// Whether the datapath is loaded (programs verified, maps made or taken over); before
    /// that only the starting socket answers, and only this.
    #[serde(default = "loaded")]
    pub datapath_loaded: bool,
}

/// What an xnosd from before `datapath-loaded` existed means by its answer.
fn loaded() -> bool {
    true
}

impl Readiness {
    pub fn of(state: &State) -> Self {
        let kernel_synced = state.observed.modules.get("kernel").and_then(|m| m.synced);
        let datapath_generation = state.observed.datapath.generation;
        Self {
            ready: kernel_synced.is_some_and(|synced| datapath_generation >= synced),
            kernel_synced,
            datapath_generation,
            datapath_loaded: true,
        }
    }

    /// While xnosd loads its datapath, before StateDb exists.
    pub fn loading() -> Self {
        Self {
            ready: false,
            kernel_synced: None,
            datapath_generation: 0,
            datapath_loaded: false,
        }
    }

    /// What readiness still waits for, in words.
    pub fn waiting_for(&self) -> String {
        match self.kernel_synced {
            _ if self.ready => "nothing: ready".into(),
            _ if !self.datapath_loaded => {
                "xnosd to load its datapath (programs verified, maps made or taken over)".into()
            }
            None => "the kernel module's first sync".into(),
            Some(synced) => format!(
                "the datapath to reflect generation {synced} (it is at {})",
                self.datapath_generation
            ),
        }
    }
}

/// Completes once `db` is ready.
pub async fn wait(db: &StateDb) {
    let mut commits = db.commits();
    loop {
        if db.read(|s| Readiness::of(s).ready) {
            return;
        }
        if let Err(broadcast::error::RecvError::Closed) = commits.recv().await {
            // No commit will ever come: the state is final, and not ready.
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        config::Config,
        statedb::{DatapathStatus, ModuleState, ModuleStatus, Writers},
    };

    fn module_row(synced: Option<u64>) -> ModuleStatus {
        ModuleStatus {
            name: "kernel".into(),
            state: ModuleState::Running,
            restarts: 0,
            last_error: None,
            synced,
        }
    }

    fn datapath_at(w: &Writers, generation: u64) {
        w.datapath.write(|tx| {
            tx.datapath(DatapathStatus {
                generation,
                ..Default::default()
            })
        });
    }

    #[test]
    fn ready_once_the_datapath_reflects_the_kernel_sync() {
        let db = StateDb::new(Config::default(), |_: &str| true);
        let w = db.writers();
        let readiness = || db.read(Readiness::of);
        assert!(!readiness().ready);
        assert_eq!(readiness().waiting_for(), "the kernel module's first sync");

        w.supervisor
            .write(|tx| tx.module("kernel", Some(module_row(Some(5)))));
        datapath_at(&w, 4);
        assert!(!readiness().ready);
        assert_eq!(
            readiness().waiting_for(),
            "the datapath to reflect generation 5 (it is at 4)"
        );
        datapath_at(&w, 5);
        assert!(readiness().ready);

        // A restarted kernel module is not synced until its new run says so.
        w.supervisor
            .write(|tx| tx.module("kernel", Some(module_row(None))));
        assert!(!readiness().ready);
    }

    #[tokio::test]
    async fn wait_completes_on_the_commit_that_makes_it_ready() {
        let db = StateDb::new(Config::default(), |_: &str| true);
        let w = db.writers();
        w.supervisor
            .write(|tx| tx.module("kernel", Some(module_row(Some(3)))));
        let waiter = tokio::spawn({
            let db = db.clone();
            async move { wait(&db).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        datapath_at(&w, 3);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("wait did not complete")
            .unwrap();
    }
}
