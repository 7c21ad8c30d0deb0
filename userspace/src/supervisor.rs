//! The supervisor: runs each module as its own task, and restarts one that fails or panics
//! with exponential backoff while the others (and the datapath in the kernel) carry on.
//! Module status is written to StateDb's `module` table.

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{sync::watch, task::JoinHandle};

use crate::statedb::{ModuleState, ModuleStatus, StateDb, SupervisorWriter};

pub type ModuleFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// What a module gets each time it is (re)started.
#[derive(Clone)]
pub struct ModuleCtx {
    pub name: &'static str,
    pub db: Arc<StateDb>,
    /// The supervisor's writer of the module table, for `synced` alone.
    status: SupervisorWriter,
    pub shutdown: watch::Receiver<bool>,
    /// Count of faults injected; subscribed afresh at each start, so one injection
    /// makes exactly one run panic.
    fault: watch::Receiver<u64>,
}

impl ModuleCtx {
    /// Completes (by panicking) when a fault is injected into this module; never
    /// completes in builds without the `fault-injection` feature. Modules select on it.
    pub async fn fault(&self) {
        if cfg!(feature = "fault-injection") && self.fault.clone().changed().await.is_ok() {
            panic!("fault injected through the debug API");
        }
        std::future::pending::<()>().await;
    }

    /// Records in the module's row that this run has brought the state StateDb holds now
    /// about in full. xnosd reports ready once the kernel module has, and the datapath
    /// reflects the same generation.
    pub fn synced(&self) {
        let generation = self.db.generation();
        self.status.write(|tx| {
            if let Some(mut row) = tx.observed().modules.get(self.name).cloned() {
                row.synced = Some(generation);
                tx.module(self.name, Some(row));
            }
        });
    }

    /// Completes when the daemon shuts down.
    pub async fn stopping(&self) {
        let _ = self.shutdown.clone().wait_for(|stop| *stop).await;
    }
}

/// A module: its name and how to start it.
pub struct Module {
    pub name: &'static str,
    pub start: Box<dyn Fn(ModuleCtx) -> ModuleFuture + Send + Sync>,
}

impl Module {
    pub fn new<F, Fut>(name: &'static str, start: F) -> Self
    where
        F: Fn(ModuleCtx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        Self {
            name,
            start: Box::new(move |ctx| Box::pin(start(ctx))),
        }
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A module that ran this long before failing starts again from the first backoff.
const STABLE: Duration = Duration::from_secs(30);

/// Handles for injecting faults into modules by name (used only with `fault-injection`).
#[derive(Clone, Default)]
pub struct Faults(Arc<BTreeMap<&'static str, watch::Sender<u64>>>);

impl Faults {
    /// Fault handles for the modules called `names`.
    pub fn new(names: &[&'static str]) -> Self {
        Self(Arc::new(
            names.iter().map(|n| (*n, watch::Sender::new(0))).collect(),
        ))
    }

    /// Make module `name` panic; false if there is no such module.
    pub fn inject(&self, name: &str) -> bool {
        match self.0.get(name) {
            Some(faults) => {
                faults.send_modify(|count| *count += 1);
                true
            }
            None => false,
        }
    }
}

fn set_status(
    db: &SupervisorWriter,
    name: &str,
    state: ModuleState,
    restarts: u64,
    last_error: Option<String>,
) {
    db.write(|tx| {
        tx.module(
            name,
            Some(ModuleStatus {
                name: name.into(),
                state,
                restarts,
                last_error,
                synced: None,
            }),
        )
    });
}

fn panic_message(err: tokio::task::JoinError) -> String {
    match err.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .map_or_else(|| "panicked".into(), |m| format!("panicked: {m}")),
        Err(err) => format!("task failed: {err}"),
    }
}

/// Start every module under supervision; the returned handle completes once all have
/// stopped after `shutdown` fired. `faults` reaches the modules it names.
pub fn start(
    db: SupervisorWriter,
    modules: Vec<Module>,
    faults: &Faults,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let handles: Vec<JoinHandle<()>> = modules
        .into_iter()
        .map(|module| {
            let fault = faults
                .0
                .get(module.name)
                .cloned()
                .unwrap_or_else(|| watch::Sender::new(0));
            tokio::spawn(supervise(module, db.clone(), shutdown.clone(), fault))
        })
        .collect();
    tokio::spawn(async move {
        for handle in handles {
            let _ = handle.await;
        }
    })
}

async fn supervise(
    module: Module,
    db: SupervisorWriter,
    shutdown: watch::Receiver<bool>,
    fault: watch::Sender<u64>,
) {
    let name = module.name;
    let mut restarts = 0;
    let mut last_error = None;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let ctx = ModuleCtx {
            name,
            db: db.db().clone(),
            status: db.clone(),
            shutdown: shutdown.clone(),
            fault: fault.subscribe(),
        };
        set_status(
            &db,
            name,
            ModuleState::Running,
            restarts,
            last_error.clone(),
        );
        let started = Instant::now();
        let mut task = tokio::spawn((module.start)(ctx.clone()));
        let outcome = tokio::select! {
            outcome = &mut task => outcome,
            _ = ctx.stopping() => {
                // Dropping the module's future runs its destructors (guards, links).
                task.abort();
                let _ = task.await;
                break;
            }
        };
        if *ctx.shutdown.borrow() {
            break;
        }
        let error = match outcome {
            Ok(Ok(())) => "stopped unexpectedly".to_string(),
            Ok(Err(e)) => format!("{e:#}"),
            Err(join) => panic_message(join),
        };
        tracing::error!(module = name, error = %error, "module failed; restarting");
        if started.elapsed() > STABLE {
            backoff = FIRST_BACKOFF;
        }
        restarts += 1;
        last_error = Some(error);
        set_status(
            &db,
            name,
            ModuleState::Restarting,
            restarts,
            last_error.clone(),
        );
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = ctx.stopping() => break,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    set_status(&db, name, ModuleState::Stopped, restarts, last_error);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::config::Config;

    // What this shows: a module that fails and one that panics are both restarted and
    // recorded, while a healthy module keeps running untouched.
    #[tokio::test(start_paused = true)]
    async fn failing_modules_are_restarted_and_recorded() {
        let db = StateDb::new(Config::default(), |_: &str| true);
        let (stop_tx, stop_rx) = watch::channel(false);
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        let modules = vec![
            Module::new("flaky", move |_ctx| {
                let run = counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    match run {
                        0 => anyhow::bail!("first run fails"),
                        1 => panic!("second run panics"),
                        _ => std::future::pending().await,
                    }
                }
            }),
            Module::new("steady", |ctx| async move {
                ctx.stopping().await;
                Ok(())
            }),
        ];
        let all = start(
            db.writers().supervisor,
            modules,
            &Faults::default(),
            stop_rx,
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        db.read(|s| {
            let flaky = &s.observed.modules["flaky"];
            assert_eq!((flaky.state, flaky.restarts), (ModuleState::Running, 2));
            assert_eq!(
                flaky.last_error.as_deref(),
                Some("panicked: second run panics")
            );
            let steady = &s.observed.modules["steady"];
            assert_eq!((steady.state, steady.restarts), (ModuleState::Running, 0));
        });
        stop_tx.send(true).unwrap();
        all.await.unwrap();
        db.read(|s| {
            assert!(
                s.observed
                    .modules
                    .values()
                    .all(|m| m.state == ModuleState::Stopped)
            )
        });
    }
}
