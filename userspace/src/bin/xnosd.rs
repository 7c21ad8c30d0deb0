//! xnosd: the xnos switch daemon.

use std::{
    io::IsTerminal as _,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use clap::Parser;
use tokio::sync::watch;
use xnos::{
    DEFAULT_CONFIG, DEFAULT_PIN_DIR, DEFAULT_SOCKET,
    api::{self, Api},
    bpffs::PinDir,
    claim::{CLAIM_DIR, Claims},
    config::Config,
    datapath::{Datapath, StatsReader, module},
    kernel::{self, link},
    metrics::{self, Metrics},
    ready::{self, Readiness},
    statedb::{Commit, CommitSource, StateDb, diff_config},
    supervisor::{self, Faults, Module},
    trace::Tracer,
};

/// The xnos switch daemon: loads the XDP datapath onto the ports named in the config,
/// keeps the switch state, and serves the API that `xnos` talks to.
///
/// The API socket appears once every configured port has its fast path (and systemd gets
/// READY=1 with `Type=notify`): whatever waits for the socket, or runs `xnos wait-ready`,
/// finds a switch that forwards.
///
/// Several instances can run side by side (for example one per network namespace) as long
/// as each has its own --socket and --pin-dir.
#[derive(Parser)]
#[command(name = "xnosd", version, about, long_about)]
struct Args {
    /// Switch configuration (TOML): [switch], [[vlan]], [[port]], [[fdb]], [[interface]],
    /// [[route]] (docs/configuration.md has every key).
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Unix socket for the API (created root-only).
    #[arg(long, env = "XNOS_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// bpffs directory for pinned programs and maps; bpffs is mounted there if needed.
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9417, [::]:9417).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Log the datapath's exceptional events (a MAC not learned because the FDB is full)
    /// here. Off, the logging code is removed from the programs when they load.
    #[arg(long)]
    datapath_log: bool,
    /// Check the config and exit without touching any interface.
    #[arg(long)]
    check: bool,
    /// Take the datapath off every port of this network namespace and exit: the explicit
    /// teardown. A stopped (or crashed) xnosd leaves its programs on the ports, forwarding
    /// with what they last had, for the next xnosd to take over without losing a frame;
    /// this removes them, and the pins, instead. Refused while an xnosd serves --socket;
    /// ports another running instance holds are left alone.
    #[arg(long, conflicts_with = "check")]
    remove_datapath: bool,
}

/// SIGTERM and SIGINT.
fn stop_signals() -> nix::sys::signal::SigSet {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGTERM);
    set.add(nix::sys::signal::Signal::SIGINT);
    set
}

/// At most two malloc arenas, unless MALLOC_ARENA_MAX says otherwise. glibc gives each
/// thread that allocates an arena of its own (up to eight per core), and each keeps the
/// memory freed in it: the tables a module rebuilds and the commits it frees were spread
/// over several. Measured with a million routes from `ip -batch`: 351 MB of RSS with the
/// default, 222 MB with two arenas (peak 553 -> 408 MB).
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called first thing in main, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    // Held back until xnosd catches them (`run`): one that comes while the config is read
    // or the runtime made would otherwise kill it outright, not stop it. The runtime's
    // threads keep them blocked; they are delivered to this one.
    let _ = stop_signals().thread_block();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("XNOS_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in journald or a log file.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    if args.remove_datapath {
        // Interruptible like any command: nothing to clean up after it.
        let _ = stop_signals().thread_unblock();
        // Needs no config: it removes what any config put on the ports.
        return match remove_datapath(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xnosd: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load(&args.config, link::KernelLinks) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("xnosd: invalid config, nothing attached: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        println!("{}: OK ({})", args.config.display(), config.counts());
        return ExitCode::SUCCESS;
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xnosd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xnosd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, config: Config) -> anyhow::Result<()> {
    // Caught from the start: a signal while starting must not kill xnosd before the guards
    // below have removed what it made so far.
    let stop = stop_on_signal()?;
    let _ = stop_signals().thread_unblock();
    let stopping = || {
        let stop = *stop.borrow();
        if stop {
            tracing::info!("stopped before ready");
        }
        stop
    };
    // Another instance on the socket (ready, or still starting) is refused before anything
    // is made; ours is bound under a private name and moved into place once xnosd is ready.
    let starting = starting_path(&args.socket);
    for path in [&args.socket, &starting] {
        if let Ok(stream) = tokio::net::UnixStream::connect(path).await {
            let pid = stream
                .peer_cred()
                .ok()
                .and_then(|c| c.pid())
                .map_or("unknown".into(), |p| p.to_string());
            anyhow::bail!(
                "another xnosd is serving {}, pid {pid}",
                args.socket.display()
            );
        }
    }
    let listener = Arc::new(
        api::bind(&starting)
            .await
            .with_context(|| format!("API socket {}", starting.display()))?,
    );
    // Declared before everything else xnosd makes, so dropped after it: the socket goes
    // last, on every way out of this function.
    let mut socket_files = SocketFiles {
        starting: starting.clone(),
        socket: None,
    };
    let loading = api::serve_while_loading(listener.clone());
    let metrics_listener = match args.metrics_listen {
        Some(addr) => Some(Arc::new(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("metrics address {addr}"))?,
        )),
        None => None,
    };
    if stopping() {
        return Ok(());
    }
    #[cfg(feature = "fault-injection")]
    hold_loading(&stop).await;
    if stopping() {
        return Ok(());
    }
    let pin_dir = PinDir::open(&args.pin_dir)
        .with_context(|| format!("pin directory {}", args.pin_dir.display()))?;
    let socket = std::path::absolute(&args.socket).unwrap_or(args.socket.clone());
    let claims =
        Claims::new(Path::new(CLAIM_DIR), &socket).context("claiming ports for this instance")?;
    let (mut datapath, adopted) = Datapath::start(
        pin_dir,
        args.datapath_log,
        claims,
        &config.datapath_port_names(),
    )
    .context("loading the datapath")?;
    if adopted.ports > 0 {
        tracing::info!(
            ports = adopted.ports,
            maps = adopted.maps.len(),
            "taking over from an earlier xnosd: its programs forward on the ports until this one's replace them, its maps are reused"
        );
    }
    for map in &adopted.migrated {
        tracing::warn!("map changed layout, made new: {map}");
    }
    if stopping() {
        return Ok(());
    }
    if let Some(logger) = datapath.take_log(log::logger()) {
        tokio::spawn(datapath_log(
            logger.context("reading the datapath's log ring")?,
        ));
    }
    let pin_path = datapath.pin_dir().expect("pinned above").to_path_buf();
    let stats = StatsReader::open(&pin_path).context("opening the pinned counters")?;
    // The datapath outlives module restarts: forwarding never stops because a module did.
    let datapath = Arc::new(Mutex::new(datapath));

    let changes = diff_config(&Config::default(), &config);
    let db = StateDb::new(config, link::KernelLinks);
    let loaded = Commit {
        generation: db.generation(),
        changes,
    };
    tracing::info!(
        "{} ({})",
        loaded.summary(CommitSource::File),
        args.config.display()
    );
    // Each module gets the writer of its own tables, and no other.
    let writers = db.writers();
    let (kernel_writer, datapath_writer) = (writers.kernel, writers.datapath);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let dp = datapath.clone();
    let config_path = std::path::absolute(&args.config).unwrap_or(args.config.clone());
    let faults = Faults::new(&["kernel", "datapath", "api", "metrics"]);
    let tracer = Tracer::open(&pin_path).context("opening the pinned trace program")?;
    let api = Api::new(
        writers.api,
        Some(stats),
        Some(tracer),
        config_path,
        faults.clone(),
    );
    let mut modules = vec![
        Module::new("kernel", move |ctx| kernel::run(ctx, kernel_writer.clone())),
        Module::new("datapath", move |ctx| {
            module::run(ctx, dp.clone(), datapath_writer.clone())
        }),
        Module::new("api", move |ctx| {
            api::run(ctx, listener.clone(), api.clone())
        }),
    ];
    if let Some(metrics_listener) = metrics_listener {
        let stats = StatsReader::open(&pin_path).context("opening the pinned counters")?;
        let metrics = Metrics::new(db.clone(), stats);
        modules.push(Module::new("metrics", move |ctx| {
            metrics::run(ctx, metrics_listener.clone(), metrics.clone())
        }));
    }
    // The API module takes the socket over from here.
    drop(loading);
    let supervisor = supervisor::start(writers.supervisor, modules, &faults, shutdown_rx);
    tracing::info!(socket = %args.socket.display(), pin_dir = %args.pin_dir.display(), "xnosd running");

    let mut stop_wait = stop.clone();
    let became_ready = tokio::select! {
        _ = stop_wait.wait_for(|s| *s) => {
            tracing::info!("stopped before ready");
            Ok(false)
        }
        result = report_ready(&db, &starting, &args.socket) => result.map(|()| true),
    };
    if let Ok(true) = became_ready {
        socket_files.socket = Some(args.socket.clone());
        tracing::info!(socket = %args.socket.display(), pin_dir = %args.pin_dir.display(), "xnosd ready");
        let _ = stop_wait.wait_for(|s| *s).await;
    }
    let _ = shutdown_tx.send(true);
    let _ = supervisor.await;
    drop(socket_files);
    // The programs stay on the ports and forward with what the maps hold; the pins go.
    drop(datapath);
    tracing::info!(
        "stopped; the datapath stays on the ports (xnosd --remove-datapath takes it off)"
    );
    became_ready.map(|_| ())
}

/// `--remove-datapath`: take every program of xnos off the ports of this network namespace
/// that no running instance holds, and the pins.
fn remove_datapath(args: &Args) -> anyhow::Result<()> {
    for path in [args.socket.clone(), starting_path(&args.socket)] {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            anyhow::bail!(
                "an xnosd is serving {}: stop it first (its datapath stays on the ports), then remove the datapath",
                args.socket.display()
            );
        }
    }
    let socket = std::path::absolute(&args.socket).unwrap_or(args.socket.clone());
    let mut claims =
        Claims::new(Path::new(CLAIM_DIR), &socket).context("claiming ports for this instance")?;
    let removed = xnos::datapath::remove_everywhere(&mut claims)?;
    for (name, mode) in &removed {
        println!("{name}: {mode} removed");
    }
    xnos::bpffs::remove_pins(&args.pin_dir);
    println!(
        "datapath removed from {} port{}",
        removed.len(),
        if removed.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

/// Set once SIGTERM or SIGINT comes.
fn stop_on_signal() -> anyhow::Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate()).context("catching SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("catching SIGINT")?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = sigint.recv() => {}
        }
        let _ = tx.send(true);
    });
    Ok(rx)
}

/// Tests hold xnosd before it loads its datapath for as long as the file named by
/// `XNOSD_TEST_HOLD_LOADING` exists, to see what it answers meanwhile (a large datapath
/// takes a while to load; a test's does not).
#[cfg(feature = "fault-injection")]
async fn hold_loading(stop: &watch::Receiver<bool>) {
    let Some(path) = std::env::var_os("XNOSD_TEST_HOLD_LOADING") else {
        return;
    };
    while Path::new(&path).exists() && !*stop.borrow() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The API socket files of this instance, removed when dropped: `<socket>.starting` always
/// (it is ours once bound), the socket only once ours (renamed from it).
struct SocketFiles {
    starting: PathBuf,
    socket: Option<PathBuf>,
}

impl Drop for SocketFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.starting);
        if let Some(socket) = &self.socket {
            let _ = std::fs::remove_file(socket);
        }
    }
}

/// Where the API socket is bound until xnosd is ready.
fn starting_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".starting");
    PathBuf::from(name)
}

/// Waits until the datapath carries the startup state, then reports ready: the API
/// socket appears under its name (one rename: a client never finds it half made) and
/// systemd, if it started us with `Type=notify`, gets `READY=1`.
async fn report_ready(db: &StateDb, starting: &Path, socket: &Path) -> anyhow::Result<()> {
    let mut reminder = tokio::time::interval(std::time::Duration::from_secs(10));
    reminder.tick().await;
    let wait = ready::wait(db);
    tokio::pin!(wait);
    loop {
        tokio::select! {
            () = &mut wait => break,
            _ = reminder.tick() => {
                let waiting_for = db.read(Readiness::of).waiting_for();
                tracing::warn!("not ready yet: waiting for {waiting_for}");
            }
        }
    }
    std::fs::rename(starting, socket).with_context(|| {
        format!(
            "moving the API socket {} to {}",
            starting.display(),
            socket.display()
        )
    })?;
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot tell systemd READY=1 (NOTIFY_SOCKET)");
    }
    Ok(())
}

/// The datapath's log records into xnosd's log (through the `log` facade, which the
/// tracing subscriber forwards), as they arrive.
async fn datapath_log(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    use tokio::io::{Interest, unix::AsyncFd};
    // SAFETY: the logger owns the ring buffer's fd and is moved into the AsyncFd, so the fd
    // stays open and the same while registered.
    let mut ring = match unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) } {
        Ok(ring) => ring,
        Err(e) => {
            tracing::warn!(error = %e, "watching the datapath's log ring failed; no datapath log");
            return;
        }
    };
    loop {
        let Ok(mut ready) = ring.readable_mut().await else {
            return;
        };
        ready.get_inner_mut().flush();
        ready.clear_ready();
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::Args;

    #[test]
    fn version_and_help_name_xnosd_and_every_config_table() {
        let command = Args::command();
        assert_eq!(command.get_name(), "xnosd");
        assert!(command.render_version().starts_with("xnosd "));
        let help = command.clone().render_long_help().to_string();
        for table in [
            "[switch]",
            "[[vlan]]",
            "[[port]]",
            "[[fdb]]",
            "[[interface]]",
            "[[route]]",
        ] {
            assert!(help.contains(table), "{table} missing from --help");
        }
    }
}
