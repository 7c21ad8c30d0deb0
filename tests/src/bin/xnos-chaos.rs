//! `cargo xtask chaos`: steady switched and routed UDP traffic through a real xnosd while
//! it is restarted, killed, upgraded, has faults injected into its modules and has its
//! ports flapped, one event at a time; frames are counted per flow at the receivers and
//! the loss is reported per kind of event.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use serde_json::json;
use xnos_tests::{
    Config, Daemon, Host, Topology, binary, format_mac,
    traffic::{Counters, Flow, Traffic},
};

const ROUTER_MAC: [u8; 6] = [2, 0, 0, 0, 1, 0];
/// Ports and their VLANs: two hosts per VLAN, so that traffic is both switched (within a
/// VLAN) and routed (between the VLANs, through the SVIs).
const PORTS: [(&str, u16); 4] = [("swp1", 10), ("swp2", 10), ("swp3", 20), ("swp4", 20)];
const METRICS: &str = "127.0.0.1:9417";
/// How long a flap's or outage's flows may take to deliver again before the event
/// counts as never resumed.
const RESUME_LIMIT: Duration = Duration::from_secs(10);
/// The modules a fault is injected into, in turn.
const MODULES: [&str; 4] = ["kernel", "datapath", "api", "metrics"];
/// Targets: no loss on these kinds, and traffic through a flapped port resumes within
/// this long.
const LOSSLESS: [Kind; 5] = [
    Kind::Idle,
    Kind::Restart,
    Kind::Kill,
    Kind::Upgrade,
    Kind::Fault,
];
const RESUME_TARGET_MS: f64 = 100.0;

/// Measure what xnosd's restarts, kills, upgrades, module faults and port flaps cost
/// traffic. Exits nonzero if a target is missed (no loss on restart, kill, upgrade and
/// module fault, nor when nothing happens; traffic through a flapped port resumes within
/// 100 ms).
#[derive(Parser)]
struct Options {
    /// Restarts: SIGTERM, wait for the exit, start, `xnos wait-ready`.
    #[arg(long)]
    restarts: Option<u32>,
    /// SIGKILLs, each followed by a start.
    #[arg(long)]
    kills: Option<u32>,
    /// Upgrades: stop, start the `--upgrade-to` binary; they alternate between it and the
    /// first binary, so that every one changes the build.
    #[arg(long)]
    upgrades: Option<u32>,
    /// Faults injected into a module (kernel, datapath, api, metrics in turn).
    #[arg(long)]
    faults: Option<u32>,
    /// Port flaps: a switch port down, then up.
    #[arg(long)]
    flaps: Option<u32>,
    /// Control windows with no event at all, first of all (the loss here must be 0).
    #[arg(long, default_value_t = 1)]
    idle: u32,
    /// Control outages: a switch port down for `--outage-ms`, counted apart from the
    /// events (proves that the counters see loss).
    #[arg(long, default_value_t = 0)]
    outages: u32,
    /// A few of each event instead of the full run.
    #[arg(long)]
    quick: bool,
    /// The xnosd binary upgrades start (default: `xnosd-next` next to xnosd, the build with
    /// a changed program that `cargo xtask chaos` makes; else the same binary).
    #[arg(long)]
    upgrade_to: Option<PathBuf>,
    /// Frames per second, all flows together.
    #[arg(long, default_value_t = 20_000)]
    rate: u32,
    /// Flows (UDP), spread over every ordered pair of hosts.
    #[arg(long, default_value_t = 64)]
    flows: u32,
    /// Quiet time after each event before the next one starts.
    #[arg(long, default_value_t = 1000)]
    quiet_ms: u64,
    /// How long a flapped port stays down.
    #[arg(long, default_value_t = 100)]
    flap_down_ms: u64,
    /// How long an outage keeps its port down.
    #[arg(long, default_value_t = 300)]
    outage_ms: u64,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Idle,
    Restart,
    Kill,
    Upgrade,
    Fault,
    Flap,
    Outage,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Idle => "idle",
            Kind::Restart => "restart",
            Kind::Kill => "kill",
            Kind::Upgrade => "upgrade",
            Kind::Fault => "fault",
            Kind::Flap => "flap",
            Kind::Outage => "outage",
        }
    }
}

/// Set by SIGINT, SIGTERM or SIGHUP: the run stops at the next check and cleans up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn check_interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleep, waking up early (with an error) if interrupted.
fn pause(time: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + time;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        check_interrupted()?;
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
    check_interrupted()
}

/// Every ordered pair of hosts in turn, `count` flows in all.
fn flows(hosts: usize, count: u32) -> Vec<Flow> {
    let pairs: Vec<Flow> = (0..hosts)
        .flat_map(|src| (0..hosts).map(move |dst| Flow { src, dst }))
        .filter(|f| f.src != f.dst)
        .collect();
    (0..count as usize)
        .map(|i| pairs[i % pairs.len()])
        .collect()
}

/// Whether `flow` is routed (between the VLANs) rather than switched.
fn routed(flow: &Flow) -> bool {
    PORTS[flow.src].1 != PORTS[flow.dst].1
}

fn host_ip(host: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, PORTS[host].1 as u8, 11 + host as u8)
}

/// The switch's configuration: access ports in two VLANs, an SVI per VLAN.
fn config() -> Config {
    Config::access_ports(&PORTS.map(|(_, vlan)| vlan))
        .switch("router-mac", format_mac(ROUTER_MAC))
        .svi(10, &["10.0.10.1/24"])
        .svi(20, &["10.0.20.1/24"])
}

/// Addresses and neighbours of the hosts. The neighbours are permanent: the hosts are not
/// under test, and an ARP probe that fell into an outage must not add its own loss.
fn address(topo: &Topology) -> anyhow::Result<()> {
    for (i, host) in topo.hosts.iter().enumerate() {
        let vlan = PORTS[i].1;
        host.add_address_via(&format!("{}/24", host_ip(i)), &format!("10.0.{vlan}.1"))?;
        host.ns.ip(&[
            "neigh",
            "replace",
            &format!("10.0.{vlan}.1"),
            "lladdr",
            &format_mac(ROUTER_MAC),
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])?;
        for (j, peer) in topo.hosts.iter().enumerate() {
            if j != i && PORTS[j].1 == vlan {
                host.ns.ip(&[
                    "neigh",
                    "replace",
                    &host_ip(j).to_string(),
                    "lladdr",
                    &format_mac(peer.mac),
                    "dev",
                    "eth0",
                    "nud",
                    "permanent",
                ])?;
            }
        }
    }
    Ok(())
}

/// One event's result.
struct Outcome {
    kind: Kind,
    /// What it was done to: a module or a port.
    target: String,
    lost: u64,
    duplicates: u64,
    late: u64,
    /// How long the event's own action took (a restart: until ready again).
    action_ms: f64,
    /// Flaps and outages: from the port's coming back until every flow through it
    /// delivered again (None: not within RESUME_LIMIT).
    resume_ms: Option<f64>,
    /// Flows that had not delivered again RESUME_LIMIT after the quiet time.
    stalled: usize,
    /// Frames the pacer skipped meanwhile: the generator itself fell behind (the machine
    /// was busy), which also delays what the receivers see.
    skipped: u64,
}

struct Chaos<'a> {
    topo: &'a Topology,
    daemon: Daemon,
    counters: Arc<Counters>,
    quiet: Duration,
    /// The two builds upgrades alternate between, and which one runs now.
    builds: [PathBuf; 2],
    current: usize,
}

impl Chaos<'_> {
    fn restart(&mut self) -> anyhow::Result<()> {
        self.daemon.stop().context("stopping xnosd")?;
        self.start()
    }

    fn start(&mut self) -> anyhow::Result<()> {
        let build = self.builds[self.current].clone();
        self.daemon
            .start_again_from(&self.topo.switch, &build)
            .with_context(|| format!("starting {}", build.display()))?;
        self.daemon
            .xnos(&["wait-ready", "--timeout", "20"])
            .context("xnos wait-ready")?;
        Ok(())
    }

    /// Take `port` down for `down`, bring it up, and return how long after that every
    /// flow through it delivered again.
    fn port_down(&mut self, host: usize, down: Duration) -> anyhow::Result<Option<f64>> {
        let port = PORTS[host].0;
        self.topo.switch.ip(&["link", "set", port, "down"])?;
        pause(down)?;
        self.topo.switch.ip(&["link", "set", port, "up"])?;
        let up = Instant::now();
        let flows: Vec<usize> = self.counters.through(host).collect();
        for &flow in &flows {
            let mut r = self.counters.received[flow].lock().unwrap();
            r.resume_after = Some(up);
            r.resumed = None;
        }
        let resumed = loop {
            check_interrupted()?;
            let times: Option<Vec<Instant>> = flows
                .iter()
                .map(|&f| self.counters.received[f].lock().unwrap().resumed)
                .collect();
            if let Some(times) = times {
                break times.into_iter().max();
            }
            if up.elapsed() > RESUME_LIMIT {
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        for &flow in &flows {
            self.counters.received[flow].lock().unwrap().resume_after = None;
        }
        Ok(resumed.map(|t| t.duration_since(up).as_secs_f64() * 1000.0))
    }

    /// Run one event and its quiet time; the loss counted in between is the event's.
    fn event(&mut self, kind: Kind, index: u32, opts: &Options) -> anyhow::Result<Outcome> {
        check_interrupted()?;
        let before = self.counters.totals();
        let skipped = self.counters.skipped.load(Ordering::Relaxed);
        let start = Instant::now();
        let mut resume_ms = None;
        let target = match kind {
            Kind::Idle => String::new(),
            Kind::Restart => {
                self.restart()?;
                String::new()
            }
            Kind::Kill => {
                self.daemon.crash().context("killing xnosd")?;
                self.start()?;
                String::new()
            }
            Kind::Upgrade => {
                self.daemon.stop().context("stopping xnosd")?;
                self.current = 1 - self.current;
                self.start()?;
                self.builds[self.current].display().to_string()
            }
            Kind::Fault => {
                let module = MODULES[index as usize % MODULES.len()];
                self.daemon.fault(module)?;
                module.to_string()
            }
            Kind::Flap | Kind::Outage => {
                let host = index as usize % PORTS.len();
                let down = if kind == Kind::Flap {
                    opts.flap_down_ms
                } else {
                    opts.outage_ms
                };
                resume_ms = self.port_down(host, Duration::from_millis(down))?;
                PORTS[host].0.to_string()
            }
        };
        let action_ms = start.elapsed().as_secs_f64() * 1000.0;
        let done = Instant::now();
        pause(self.quiet)?;
        // A flow that stopped shows no gap until it delivers again: the window closes
        // only once every flow has delivered since the event.
        let mut stalled;
        loop {
            stalled = self
                .counters
                .received
                .iter()
                .filter(|r| r.lock().unwrap().last.is_none_or(|last| last < done))
                .count();
            if stalled == 0 || done.elapsed() > self.quiet + RESUME_LIMIT {
                break;
            }
            pause(Duration::from_millis(20))?;
        }
        let after = self.counters.totals();
        Ok(Outcome {
            kind,
            target,
            stalled,
            skipped: self.counters.skipped.load(Ordering::Relaxed) - skipped,
            // A late frame fills an earlier window's gap: it lowers the total.
            lost: after.lost.saturating_sub(before.lost),
            duplicates: after.duplicates - before.duplicates,
            late: after.late - before.late,
            action_ms,
            resume_ms: if matches!(kind, Kind::Flap | Kind::Outage) {
                Some(resume_ms.unwrap_or(f64::INFINITY))
            } else {
                None
            },
        })
    }
}

/// The nearest-rank percentile `p` (0..=1) of `values`.
fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p * sorted.len() as f64).ceil() as usize).max(1);
    sorted.get(rank - 1).copied()
}

/// Counts per kind: the options', or `--quick`'s, or the full run's.
fn plan(opts: &Options) -> Vec<(Kind, u32)> {
    let pick = |given: Option<u32>, quick: u32, full: u32| {
        given.unwrap_or(if opts.quick { quick } else { full })
    };
    vec![
        (Kind::Idle, opts.idle),
        (Kind::Restart, pick(opts.restarts, 2, 20)),
        (Kind::Kill, pick(opts.kills, 1, 5)),
        (Kind::Upgrade, pick(opts.upgrades, 2, 2)),
        (Kind::Fault, pick(opts.faults, 4, 10)),
        (Kind::Flap, pick(opts.flaps, 5, 100)),
        (Kind::Outage, opts.outages),
    ]
}

fn run(opts: &Options) -> anyhow::Result<bool> {
    let first = binary("xnosd")?;
    let upgrade_to = match &opts.upgrade_to {
        Some(path) => std::path::absolute(path)?,
        None => binary("xnosd-next").unwrap_or_else(|_| first.clone()),
    };
    anyhow::ensure!(
        upgrade_to.is_file(),
        "--upgrade-to {}: no such file",
        upgrade_to.display()
    );
    let plan = plan(opts);
    let topo = Topology::new(&PORTS.map(|(port, _)| port))?;
    address(&topo)?;
    let daemon = Daemon::start_with(&topo.switch, &config(), &["--metrics-listen", METRICS])
        .context("starting xnosd")?;
    daemon
        .xnos(&["wait-ready", "--timeout", "20"])
        .context("xnos wait-ready")?;
    let hosts: Vec<(&Host, Ipv4Addr)> = topo.hosts.iter().zip((0..).map(host_ip)).collect();
    let traffic = Traffic::start(&hosts, flows(hosts.len(), opts.flows), opts.rate)?;
    let counters = traffic.counters.clone();
    // Warm up: the switch resolves its neighbours and learns the hosts' MACs; what is
    // lost until every flow delivers is not any event's.
    let deadline = Instant::now() + Duration::from_secs(20);
    while counters
        .received
        .iter()
        .any(|r| r.lock().unwrap().received == 0)
    {
        if Instant::now() > deadline {
            bail!("not every flow delivered within 20 s of the start");
        }
        pause(Duration::from_millis(20))?;
    }
    pause(Duration::from_secs(1))?;
    let warmup = counters.totals();
    let mut chaos = Chaos {
        topo: &topo,
        daemon,
        counters: counters.clone(),
        quiet: Duration::from_millis(opts.quiet_ms),
        builds: [first.clone(), upgrade_to.clone()],
        current: 0,
    };
    let started = Instant::now();
    let mut outcomes = Vec::new();
    let mut missed = Vec::new();
    'events: for &(kind, count) in &plan {
        for index in 0..count {
            let outcome = chaos
                .event(kind, index, opts)
                .with_context(|| format!("{} {}", kind.name(), index + 1))?;
            if !opts.json {
                eprintln!(
                    "{} {}/{count}{}: {} lost{}{}",
                    kind.name(),
                    index + 1,
                    if outcome.target.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", outcome.target)
                    },
                    outcome.lost,
                    outcome
                        .resume_ms
                        .map(|ms| format!(", resumed after {ms:.1} ms"))
                        .unwrap_or_default(),
                    if outcome.skipped > 0 {
                        format!(" (the generator fell {} frames behind)", outcome.skipped)
                    } else {
                        String::new()
                    }
                );
            }
            let stalled = outcome.stalled;
            outcomes.push(outcome);
            if stalled > 0 {
                missed.push(format!(
                    "{} {}: {stalled} of {} flows never delivered again (stopped the run; \
                     their frames count as lost at the end)",
                    kind.name(),
                    index + 1,
                    counters.flows.len()
                ));
                break 'events;
            }
        }
    }
    let duration = started.elapsed();
    // Stop sending, let the last frames arrive, and compare what was sent with what came.
    counters.stop_sending.store(true, Ordering::Relaxed);
    pause(Duration::from_millis(500))?;
    drop(traffic);
    let end = counters.totals();
    let receiver_drops = topo
        .hosts
        .iter()
        .map(|h| udp_receive_errors(h).unwrap_or(0))
        .sum::<u64>();
    drop(chaos);

    let mut kinds = Vec::new();
    for (kind, _) in &plan {
        let mine: Vec<&Outcome> = outcomes.iter().filter(|o| o.kind == *kind).collect();
        let count = mine.len();
        if count == 0 {
            continue;
        }
        let lost: u64 = mine.iter().map(|o| o.lost).sum();
        let max_lost = mine.iter().map(|o| o.lost).max().unwrap_or(0);
        let action: Vec<f64> = mine.iter().map(|o| o.action_ms).collect();
        let resume: Vec<f64> = mine.iter().filter_map(|o| o.resume_ms).collect();
        if LOSSLESS.contains(kind) && (lost > 0 || mine.iter().any(|o| o.stalled > 0)) {
            missed.push(format!(
                "{}: {lost} frames lost over {count} event{} (at most {max_lost} in one), target 0",
                kind.name(),
                if count == 1 { "" } else { "s" }
            ));
        }
        let resume_max = percentile(&resume, 1.0);
        if *kind == Kind::Flap
            && let Some(max) = resume_max
            && max > RESUME_TARGET_MS
        {
            missed.push(format!(
                "flap: traffic resumed up to {} after the port came back, target {RESUME_TARGET_MS} ms",
                ms(max)
            ));
        }
        kinds.push(json!({
            "kind": kind.name(),
            "events": count,
            "lost": lost,
            "max-lost": max_lost,
            "duplicates": mine.iter().map(|o| o.duplicates).sum::<u64>(),
            "late": mine.iter().map(|o| o.late).sum::<u64>(),
            "stalled-flows": mine.iter().map(|o| o.stalled).sum::<usize>(),
            "skipped": mine.iter().map(|o| o.skipped).sum::<u64>(),
            "action-ms": {"p50": percentile(&action, 0.5), "max": percentile(&action, 1.0)},
            "resume-ms": (!resume.is_empty()).then(|| json!({
                "p50": finite(percentile(&resume, 0.5)),
                "max": finite(resume_max),
            })),
            "targets": mine.iter().map(|o| o.target.clone()).filter(|t| !t.is_empty())
                .collect::<std::collections::BTreeSet<_>>(),
        }));
    }
    let attributed: u64 = outcomes.iter().map(|o| o.lost).sum();
    // What was sent and never came, independent of the gaps the windows counted: the two
    // agree if the counting is right.
    let lost = end.sent - (end.received - end.duplicates);
    let report = json!({
        "rate": opts.rate,
        "flows": counters.flows.len(),
        "routed-flows": counters.flows.iter().filter(|f| routed(f)).count(),
        "quiet-ms": opts.quiet_ms,
        "flap-down-ms": opts.flap_down_ms,
        "outage-ms": opts.outage_ms,
        "xnosd": first,
        "upgrade-to": upgrade_to,
        "upgrade-changes-binary": upgrade_to != first,
        "seconds": duration.as_secs_f64(),
        "kinds": kinds,
        "totals": {
            "sent": end.sent,
            "received": end.received - end.duplicates,
            "lost": lost,
            "lost-in-warmup": warmup.lost,
            "lost-in-events": attributed,
            "lost-after-events": end.lost.saturating_sub(warmup.lost + attributed),
            "lost-at-end": end.unseen_tail,
            "duplicates": end.duplicates,
            "late": end.late,
            "send-errors": counters.send_errors.load(Ordering::Relaxed),
            "skipped": counters.skipped.load(Ordering::Relaxed),
            "receiver-drops": receiver_drops,
        },
        "missed": missed,
    });
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(missed.is_empty())
}

fn finite(value: Option<f64>) -> Option<f64> {
    value.filter(|v| v.is_finite())
}

fn ms(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.1} ms")
    } else {
        format!("never (within {} s)", RESUME_LIMIT.as_secs())
    }
}

/// Datagrams the receivers' sockets dropped (RcvbufErrors in the host's /proc/net/snmp):
/// loss that would be the harness's, not the switch's.
fn udp_receive_errors(host: &Host) -> anyhow::Result<u64> {
    let snmp = host.ns.exec("cat", &["/proc/net/snmp"])?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (
        udp.next().context("no Udp header")?,
        udp.next().context("no Udp values")?,
    );
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, value)| value.parse().ok())
        .context("no RcvbufErrors")
}

fn print_table(report: &serde_json::Value) {
    let num = |v: &serde_json::Value| match v.as_f64() {
        Some(x) => format!("{x:.1}"),
        None => "-".into(),
    };
    println!(
        "chaos: {} frames/s over {} UDP flows ({} routed, the rest switched), {} s quiet after each event, {:.0} s in all",
        report["rate"],
        report["flows"],
        report["routed-flows"],
        report["quiet-ms"].as_f64().unwrap_or(0.0) / 1000.0,
        report["seconds"].as_f64().unwrap_or(0.0)
    );
    let upgrade = report["upgrade-to"].as_str().unwrap_or_default();
    if report["upgrade-changes-binary"] == true {
        println!(
            "upgrades alternate between {} and {upgrade}",
            report["xnosd"].as_str().unwrap_or_default()
        );
    } else {
        println!(
            "upgrades restart the same binary ({upgrade}): no program changes (use --upgrade-to PATH)"
        );
    }
    println!();
    println!(
        "{:<8} {:>6} {:>8} {:>10} {:>5} {:>5} {:>17} {:>17} {:>8}",
        "event",
        "count",
        "lost",
        "max/event",
        "dup",
        "late",
        "action ms p50/max",
        "resume ms p50/max",
        "skipped"
    );
    for kind in report["kinds"].as_array().into_iter().flatten() {
        let pair = |v: &serde_json::Value| {
            if v.is_null() {
                "-".to_string()
            } else {
                format!("{}/{}", num(&v["p50"]), num(&v["max"]))
            }
        };
        println!(
            "{:<8} {:>6} {:>8} {:>10} {:>5} {:>5} {:>17} {:>17} {:>8}",
            kind["kind"].as_str().unwrap_or_default(),
            kind["events"].to_string(),
            kind["lost"].to_string(),
            kind["max-lost"].to_string(),
            kind["duplicates"].to_string(),
            kind["late"].to_string(),
            pair(&kind["action-ms"]),
            pair(&kind["resume-ms"]),
            kind["skipped"].to_string(),
        );
    }
    let t = &report["totals"];
    println!();
    println!(
        "frames: {} sent, {} received, {} lost ({} in warm-up, {} in events, {} after the last, {} at the end); \
         {} duplicates, {} late, {} receiver drops, {} send errors, {} skipped by the pacer",
        t["sent"],
        t["received"],
        t["lost"],
        t["lost-in-warmup"],
        t["lost-in-events"],
        t["lost-after-events"],
        t["lost-at-end"],
        t["duplicates"],
        t["late"],
        t["receiver-drops"],
        t["send-errors"],
        t["skipped"],
    );
    let missed = report["missed"].as_array().cloned().unwrap_or_default();
    if missed.is_empty() {
        println!("every target met");
    } else {
        println!("targets missed:");
        for m in missed {
            println!("  {}", m.as_str().unwrap_or_default());
        }
    }
}

fn main() -> ExitCode {
    let opts = Options::parse();
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
    }
    match run(&opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("xnos-chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}
