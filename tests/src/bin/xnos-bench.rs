//! `cargo xtask bench`: what xnos costs per packet (the real datapath through
//! BPF_PROG_TEST_RUN, next to a program that only redirects) and per stage of its
//! pipeline, what its control plane takes to program routes and learn MACs, and what a
//! flood of source MACs costs it. Writes target/bench/results.json and
//! target/bench/datapath.svg and prints a table.

use std::{
    collections::BTreeMap,
    collections::BTreeSet,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use etherparse::PacketBuilder;
use serde_json::json;
use xnos::{datapath::Datapath, testrun};
use xnos_common::{ROUTE_FORWARD, RouteEntry};
use xnos_tests::{
    Netns, PacketSocket, RandomMacs, Topology,
    bench::{BenchSwitch, FLOWS, Frames, PATHS, ROUTER},
    binary, sample, status_kib,
};

struct Options {
    quick: bool,
    /// Only the control plane section.
    control_plane: bool,
    /// Only the MAC flood.
    mac_flood: bool,
    /// Only the per-stage costs.
    stages: bool,
    out: PathBuf,
}

/// Per-packet cost of one mode: mean over flows, and the spread of the flow means.
#[derive(Clone, Debug)]
struct Cost {
    mode: String,
    mean_ns: f64,
    min_ns: f64,
    max_ns: f64,
}

/// Run each frame `calls` times with BPF_PROG_TEST_RUN (one repetition per call, so that
/// every run sees the frame as sent: repetitions would see the previous run's rewrites).
fn measure(
    ns: &Netns,
    prog: std::os::fd::BorrowedFd<'_>,
    ifindex: u32,
    frames: &[Vec<u8>],
    calls: usize,
    mode: &str,
) -> anyhow::Result<Cost> {
    let mut means = Vec::new();
    ns.enter(|| -> anyhow::Result<()> {
        for frame in frames {
            let mut total = 0u64;
            for _ in 0..calls {
                total += u64::from(testrun::run_xdp(prog, ifindex, frame, 1)?.duration_ns);
            }
            means.push(total as f64 / calls as f64);
        }
        Ok(())
    })??;
    let mean = means.iter().sum::<f64>() / means.len() as f64;
    Ok(Cost {
        mode: mode.into(),
        mean_ns: mean,
        min_ns: means.iter().copied().fold(f64::MAX, f64::min),
        max_ns: means.iter().copied().fold(0.0, f64::max),
    })
}

/// A minimal XDP program that redirects every frame to slot 0 of a devmap: the cost
/// floor of any XDP pipeline that forwards.
fn bare_redirect(target_ifindex: u32) -> anyhow::Result<(OwnedFd, OwnedFd)> {
    #[repr(C)]
    #[derive(Default)]
    struct MapAttr {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }
    #[repr(C)]
    #[derive(Default)]
    struct ProgAttr {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
    }
    #[repr(C)]
    struct ElemAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    const BPF_MAP_CREATE: i64 = 0;
    const BPF_MAP_UPDATE_ELEM: i64 = 2;
    const BPF_PROG_LOAD: i64 = 5;
    const BPF_MAP_TYPE_DEVMAP: u32 = 14;
    const BPF_PROG_TYPE_XDP: u32 = 6;
    let bpf = |cmd: i64, attr: *mut u8, size: usize| -> std::io::Result<i32> {
        // SAFETY: attr points at a live, correctly sized attribute struct.
        let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr, size) };
        if ret < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(ret as i32)
    };
    let mut map = MapAttr {
        map_type: BPF_MAP_TYPE_DEVMAP,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        map_flags: 0,
    };
    let map_fd = bpf(
        BPF_MAP_CREATE,
        (&mut map as *mut MapAttr).cast(),
        size_of::<MapAttr>(),
    )
    .context("creating the devmap")?;
    // SAFETY: a fresh fd we own.
    let map_fd = unsafe { OwnedFd::from_raw_fd(map_fd) };
    let (key, value) = (0u32, target_ifindex);
    let mut elem = ElemAttr {
        map_fd: map_fd.as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        flags: 0,
    };
    bpf(
        BPF_MAP_UPDATE_ELEM,
        (&mut elem as *mut ElemAttr).cast(),
        size_of::<ElemAttr>(),
    )
    .context("filling the devmap")?;
    // r1 = map (ld_imm64 pseudo map fd), r2 = 0, r3 = 0, call bpf_redirect_map, exit.
    let fd = map_fd.as_raw_fd() as u64;
    let insns: [u64; 6] = [
        0x18 | (1 << 8) | (1 << 12) | (fd << 32),
        0,
        0xb7 | (2 << 8),
        0xb7 | (3 << 8),
        0x85 | (51 << 32),
        0x95,
    ];
    let license = b"GPL\0";
    let mut prog = ProgAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    let prog_fd = bpf(
        BPF_PROG_LOAD,
        (&mut prog as *mut ProgAttr).cast(),
        size_of::<ProgAttr>(),
    )
    .context("loading the bare redirect program")?;
    // SAFETY: a fresh fd we own.
    Ok((unsafe { OwnedFd::from_raw_fd(prog_fd) }, map_fd))
}

/// A one-instruction XDP_PASS program: with it on a veth, frames sent into the veth pair
/// take the XDP receive path even when the device under test uses none itself.
fn xdp_pass() -> anyhow::Result<OwnedFd> {
    #[repr(C)]
    #[derive(Default)]
    struct ProgAttr {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
    }
    const BPF_PROG_LOAD: i64 = 5;
    const BPF_PROG_TYPE_XDP: u32 = 6;
    // r0 = XDP_PASS (2); exit.
    let insns: [u64; 2] = [0xb7 | (2 << 32), 0x95];
    let license = b"GPL\0";
    let mut attr = ProgAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
    };
    // SAFETY: attr is a valid bpf_attr prefix for BPF_PROG_LOAD.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &mut attr as *mut ProgAttr,
            size_of::<ProgAttr>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("loading an XDP_PASS program");
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Pseudo-random /8../32 prefixes (a fixed LCG: the same tables every run).
fn fill_routes(dp: &mut Datapath, count: usize, v6: bool) -> anyhow::Result<()> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let entry = RouteEntry {
        kind: ROUTE_FORWARD,
        nhg: 1,
    };
    for _ in 0..count {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let bits = (state >> 32) as u32;
        if v6 {
            let len = 32 + (bits % 97);
            let mut addr = [0u8; 16];
            addr[0] = 0x20;
            addr[1] = 0x01;
            addr[2..10].copy_from_slice(&state.to_be_bytes());
            let prefix = ipnet::Ipv6Net::new(addr.into(), len as u8)?;
            dp.test_rig().add_route(prefix.into(), entry)?;
        } else {
            // Stay clear of 10.0.0.0/8, which the measured flows use.
            let len = 8 + (bits % 25);
            let mut addr = ((state >> 8) as u32).to_be_bytes();
            if addr[0] == 10 {
                addr[0] = 11;
            }
            let prefix = ipnet::Ipv4Net::new(addr.into(), len as u8)?;
            dp.test_rig().add_route(prefix.into(), entry)?;
        }
    }
    Ok(())
}

fn datapath_costs(opts: &Options) -> anyhow::Result<Vec<Cost>> {
    let calls = if opts.quick { 200 } else { 1000 };
    let BenchSwitch { mut rig, frames } = BenchSwitch::new(None)?;
    let Frames {
        unicast,
        push,
        flood,
        routed4,
        routed6,
    } = &frames;
    let (ns, swp1) = (&rig.ns, rig.ports["swp1"]);
    let (bare, _bare_map) = ns.enter(|| bare_redirect(rig.ports["swp2"]))??;
    let ingress = rig.dp.ingress_fd()?;
    let mut costs = vec![
        measure(ns, bare.as_fd(), swp1, unicast, calls, "bare redirect")?,
        measure(ns, ingress, swp1, unicast, calls, "L2 known unicast")?,
        measure(ns, ingress, swp1, push, calls, "L2 unicast + VLAN push")?,
        measure(ns, ingress, swp1, flood, calls, "L2 flood decision")?,
    ];
    let sizes: &[usize] = if opts.quick {
        &[1, 10_000]
    } else {
        &[1, 10_000, 1_000_000]
    };
    let mut installed = 1;
    for &size in sizes {
        if size > installed {
            fill_routes(&mut rig.dp, size - installed, false)?;
            fill_routes(&mut rig.dp, size - installed, true)?;
            installed = size;
        }
        let label = match size {
            1 => "1 route".to_string(),
            n if n >= 1_000_000 => format!("{}M routes", n / 1_000_000),
            n => format!("{}k routes", n / 1000),
        };
        let ingress = rig.dp.ingress_fd()?;
        costs.push(measure(
            &rig.ns,
            ingress,
            swp1,
            routed4,
            calls,
            &format!("IPv4 routed, {label}"),
        )?);
        costs.push(measure(
            &rig.ns,
            ingress,
            swp1,
            routed6,
            calls,
            &format!("IPv6 routed, {label}"),
        )?);
    }
    Ok(costs)
}

/// The cost of each segment of one path through the pipeline.
struct PathCosts {
    path: &'static str,
    /// A program that stops at once: the cost of any program run with BPF_PROG_TEST_RUN.
    floor_ns: f64,
    /// The whole pipeline above the floor.
    total_ns: f64,
    /// Per segment (`PATHS`' stages after the first): name, ns per packet, and half the
    /// interquartile range of the segment's per-round differences (its noise).
    stages: Vec<(&'static str, f64, f64)>,
}

struct StageCosts {
    rounds: usize,
    runs: usize,
    paths: Vec<PathCosts>,
}

/// A new permutation for every turn (Fisher-Yates over xorshift64 from a fixed seed): every
/// turn runs every program once, in an order that varies, so that neither a slow spell of
/// this shared VM nor the program run just before lands on one stage more than another.
fn shuffle(order: &mut [usize], state: &mut u64) {
    for i in (1..order.len()).rev() {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        order.swap(i, (*state % (i as u64 + 1)) as usize);
    }
}

/// The mean of the middle half: a run that an interrupt or another task on this shared VM
/// lengthened by microseconds would weigh on a plain mean; the middle keeps sub-ns
/// resolution, which a median of whole nanoseconds would not.
fn interquartile_mean(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = &values[values.len() / 4..values.len() - values.len() / 4];
    middle.iter().sum::<f64>() / middle.len() as f64
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// Each stage's cost, from the pipeline stopped after each stage (the stages build, see
/// xnos_tests::bench): every round runs each program `runs` times over the path's flows
/// with BPF_PROG_TEST_RUN (one repetition per call: repetitions would see the previous
/// run's rewrites), all programs one call each in turn, and keeps each program's
/// interquartile mean; a stage costs the difference between the medians
/// over rounds of the program that stops after it and the one that stops before it.
fn stage_costs(opts: &Options) -> anyhow::Result<StageCosts> {
    let (rounds, runs) = if opts.quick { (8, 256) } else { (60, 1024) };
    let switch = BenchSwitch::with_stages()?;
    let swp1 = switch.rig.ports["swp1"];
    let programs: Vec<(usize, usize)> = PATHS
        .iter()
        .enumerate()
        .flat_map(|(p, path)| (0..path.stages.len()).map(move |s| (p, s)))
        .collect();
    let fds = programs
        .iter()
        .map(|&(p, s)| switch.rig.dp.xdp_fd(PATHS[p].stages[s].program))
        .collect::<Result<Vec<_>, _>>()?;
    let mut samples = vec![Vec::with_capacity(rounds); programs.len()];
    let mut durations = vec![Vec::with_capacity(runs); programs.len()];
    let mut order: Vec<usize> = (0..programs.len()).collect();
    let mut state = 0x9e37_79b9_7f4a_7c15;
    switch.rig.ns.enter(|| -> anyhow::Result<()> {
        for _ in 0..rounds {
            for run in 0..runs {
                shuffle(&mut order, &mut state);
                for &i in &order {
                    let (p, s) = programs[i];
                    let (path, stage) = (&PATHS[p], &PATHS[p].stages[s]);
                    let frames = switch.path_frames(path);
                    let result = testrun::run_xdp(fds[i], swp1, &frames[run % frames.len()], 1)?;
                    // A program that stops elsewhere than where it should measures nothing.
                    if result.action != stage.expected_action() {
                        bail!(
                            "{} on {}: {} instead of {}",
                            stage.program,
                            path.name,
                            testrun::action_name(result.action),
                            testrun::action_name(stage.expected_action())
                        );
                    }
                    durations[i].push(f64::from(result.duration_ns));
                }
            }
            for (sample, runs) in samples.iter_mut().zip(&mut durations) {
                sample.push(interquartile_mean(runs));
                runs.clear();
            }
        }
        Ok(())
    })??;
    let mut samples = samples.into_iter();
    let paths = PATHS
        .iter()
        .map(|path| {
            let mut rounds: Vec<Vec<f64>> = samples.by_ref().take(path.stages.len()).collect();
            // The same difference in each round, for its spread.
            let spreads: Vec<f64> = rounds
                .windows(2)
                .map(|pair| {
                    let mut diffs: Vec<f64> =
                        pair[1].iter().zip(&pair[0]).map(|(b, a)| b - a).collect();
                    diffs.sort_by(f64::total_cmp);
                    let n = diffs.len();
                    (diffs[n - 1 - n / 4] - diffs[n / 4]) / 2.0
                })
                .collect();
            let times: Vec<f64> = rounds.iter_mut().map(|r| median(r)).collect();
            PathCosts {
                path: path.name,
                floor_ns: times[0],
                total_ns: times[times.len() - 1] - times[0],
                stages: path.stages[1..]
                    .iter()
                    .zip(times.windows(2))
                    .zip(spreads)
                    .map(|((stage, pair), spread)| (stage.name, pair[1] - pair[0], spread))
                    .collect(),
            }
        })
        .collect();
    Ok(StageCosts {
        rounds,
        runs,
        paths,
    })
}

/// The stages of every path, in one order that keeps each path's (a routed packet's
/// stages after the switched frame's at the same place).
fn stage_rows(costs: &StageCosts) -> Vec<&'static str> {
    let mut rows: Vec<&'static str> = Vec::new();
    for path in costs.paths.iter().rev() {
        let mut at = 0;
        for (name, ..) in &path.stages {
            match rows.iter().position(|r| r == name) {
                Some(i) => at = i + 1,
                None => {
                    rows.insert(at, name);
                    at += 1;
                }
            }
        }
    }
    rows
}

fn print_stage_costs(costs: &StageCosts) {
    println!(
        "==> cost per stage of the ingress pipeline, ns per packet (BPF_PROG_TEST_RUN, XDP; median of {} interleaved rounds of {} runs per stage)",
        costs.rounds, costs.runs
    );
    print!("{:<16}", "STAGE");
    for path in &costs.paths {
        print!(" {:>20}", path.path.to_uppercase());
    }
    println!();
    for row in stage_rows(costs) {
        print!("{row:<16}");
        for path in &costs.paths {
            match path.stages.iter().find(|(name, ..)| *name == row) {
                Some((_, ns, spread)) => print!(
                    " {ns:>7.1} ±{spread:<4.1} {:>5.1}%",
                    100.0 * ns / path.total_ns
                ),
                None => print!(" {:>20}", "-"),
            }
        }
        println!();
    }
    print!("{:<16}", "total");
    for path in &costs.paths {
        print!(" {:>7.1} {:>12}", path.total_ns, "100.0%");
    }
    println!();
    print!("{:<16}", "floor");
    for path in &costs.paths {
        print!(" {:>7.1} {:>12}", path.floor_ns, "");
    }
    println!(
        "\n(±: half the interquartile range of the stage's difference over rounds; floor: a program that returns at once, not in the total)"
    );
}

fn stage_costs_json(costs: &StageCosts) -> serde_json::Value {
    json!({
        "rounds": costs.rounds,
        "runs-per-round": costs.runs,
        "paths": costs.paths.iter().map(|p| json!({
            "path": p.path,
            "floor-ns": p.floor_ns,
            "total-ns": p.total_ns,
            "stages": p.stages.iter().map(|(name, ns, spread)| json!({
                "stage": name,
                "ns": ns,
                "spread-ns": spread,
                "share": ns / p.total_ns,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

use xnos_tests::BENCH_OBJECT;

/// A traffic generator (live-frames BPF_PROG_TEST_RUN of `xnos_bench_gen`) and a sink
/// (`xnos_bench_sink` counting what arrives), from the benchmark's eBPF object.
struct Traffic {
    ebpf: aya::Ebpf,
}

impl Traffic {
    fn load() -> anyhow::Result<Self> {
        let mut ebpf =
            aya::Ebpf::load(BENCH_OBJECT).context("loading the benchmark's eBPF object")?;
        for name in ["xnos_bench_gen", "xnos_bench_sink"] {
            let program: &mut aya::programs::Xdp =
                ebpf.program_mut(name).context(name)?.try_into()?;
            program.load()?;
        }
        Ok(Self { ebpf })
    }

    fn attach_sink(&mut self, ns: &Netns, ifname: &str) -> anyhow::Result<()> {
        let index = ns.ifindex(ifname)?;
        let program: &mut aya::programs::Xdp = self
            .ebpf
            .program_mut("xnos_bench_sink")
            .context("sink")?
            .try_into()?;
        // The link belongs to the program (alive as long as `self`) until the veth goes.
        ns.enter(|| program.attach_to_if_index(index, aya::programs::XdpMode::Driver))??;
        Ok(())
    }

    fn received(&self) -> anyhow::Result<u64> {
        let map: aya::maps::PerCpuArray<_, u64> =
            aya::maps::PerCpuArray::try_from(self.ebpf.map("BENCH_SINK").context("sink map")?)?;
        Ok(map.get(&0, 0)?.iter().sum())
    }

    /// Send `count` copies of `template` (one of 64 flows each) out of `ifname` in `ns`;
    /// returns what arrived per second at the sinks.
    fn run(
        &mut self,
        ns: &Netns,
        ifname: &str,
        template: &[u8; 60],
        count: u32,
    ) -> anyhow::Result<f64> {
        let mut map: aya::maps::Array<_, [u8; 60]> = aya::maps::Array::try_from(
            self.ebpf
                .map_mut("BENCH_TEMPLATE")
                .context("template map")?,
        )?;
        map.set(0, *template, 0)?;
        let index = ns.ifindex(ifname)?;
        let before = self.received()?;
        let program: &aya::programs::Xdp = self
            .ebpf
            .program("xnos_bench_gen")
            .context("gen")?
            .try_into()?;
        let fd = program.fd()?.as_fd();
        let start = Instant::now();
        ns.enter(|| testrun::run_xdp_live(fd, index, template, count))??;
        let elapsed = start.elapsed();
        std::thread::sleep(Duration::from_millis(50));
        Ok((self.received()? - before) as f64 / elapsed.as_secs_f64())
    }
}

/// An Ethernet/IPv4/UDP frame of 60 bytes (64 on the wire).
fn template(dst: [u8; 6], src: [u8; 6]) -> [u8; 60] {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(src, dst)
        .ipv4([10, 1, 1, 2], [10, 1, 2, 2], 64)
        .udp(1024, 9)
        .write(&mut frame, &[0; 18])
        .expect("valid frame");
    let mut out = [0u8; 60];
    out.copy_from_slice(&frame[..60]);
    // UDP checksum 0: "none" in IPv4, so varying the source port needs no fix-up.
    out[40] = 0;
    out[41] = 0;
    out
}

/// generator ns (gen0) -- device under test (swp1, swp2) -- sink ns (sink0).
struct Lab {
    mode: &'static str,
    gen_ns: Netns,
    dut: Netns,
    sink: Netns,
    dst: [u8; 6],
    _daemon: Option<xnos_tests::Daemon>,
    /// Programs, maps and links that must live as long as the lab.
    _fds: Vec<OwnedFd>,
}

const GEN_MAC: [u8; 6] = [2, 0x9e, 0, 0, 0, 1];
const SINK_MAC: [u8; 6] = [2, 0x5e, 0, 0, 0, 1];

fn veth(
    a_ns: &Netns,
    a: &str,
    b_ns: &Netns,
    b: &str,
    a_mac: Option<[u8; 6]>,
    b_mac: Option<[u8; 6]>,
) -> anyhow::Result<()> {
    a_ns.cable(a, b_ns, b)?;
    for (ns, name, mac) in [(a_ns, a, a_mac), (b_ns, b, b_mac)] {
        if let Some(mac) = mac {
            ns.ip(&["link", "set", name, "address", &xnos_tests::format_mac(mac)])?;
        }
        // NAPI on every end: XDP_TX and redirects into veths need it when no XDP is attached.
        ns.exec("ethtool", &["-K", name, "gro", "on"])?;
        ns.ip(&["link", "set", name, "up"])?;
    }
    Ok(())
}

fn lab(mode: &'static str, traffic: &mut Traffic) -> anyhow::Result<Lab> {
    let gen_ns = Netns::new("xg")?;
    let sink = Netns::new("xk")?;
    let dut = Netns::new("xd")?;
    let mut daemon = None;
    let mut fds = Vec::new();
    let mut dst = SINK_MAC;
    if mode == "direct" {
        veth(
            &gen_ns,
            "gen0",
            &sink,
            "sink0",
            Some(GEN_MAC),
            Some(SINK_MAC),
        )?;
    } else {
        veth(&gen_ns, "gen0", &dut, "swp1", Some(GEN_MAC), None)?;
        veth(&dut, "swp2", &sink, "sink0", None, Some(SINK_MAC))?;
    }
    traffic.attach_sink(&sink, "sink0")?;
    if matches!(
        mode,
        "Linux bridge" | "kernel IPv4 forwarding" | "xnos L2 (TC)"
    ) {
        // The generator's frames only enter a veth that has an XDP program (GRO alone
        // does not take them here): give the non-XDP devices under test a pass-through.
        let pass = xdp_pass()?;
        let swp1 = dut.ifindex("swp1")?;
        let link = dut.enter(|| attach_fd(pass.as_fd(), swp1))??;
        fds.extend([pass, link]);
    }
    match mode {
        "Linux bridge" => {
            dut.ip(&["link", "add", "br0", "type", "bridge"])?;
            for port in ["swp1", "swp2"] {
                dut.ip(&["link", "set", port, "master", "br0"])?;
            }
            dut.ip(&["link", "set", "br0", "up"])?;
            xnos_tests::run(
                "ip",
                &[
                    "netns",
                    "exec",
                    dut.name(),
                    "bridge",
                    "fdb",
                    "replace",
                    &xnos_tests::format_mac(SINK_MAC),
                    "dev",
                    "swp2",
                    "master",
                    "static",
                ],
            )?;
        }
        "kernel IPv4 forwarding" | "xnos L3 IPv4" => {
            if mode == "kernel IPv4 forwarding" {
                dut.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
                dut.ip(&["addr", "add", "10.1.1.1/24", "dev", "swp1"])?;
                dut.ip(&["addr", "add", "10.1.2.1/24", "dev", "swp2"])?;
                dst = dut.mac("swp1")?;
            } else {
                let config = "[switch]\nrouter-mac = \"02:00:00:00:01:00\"\n[[interface]]\nport = \"swp1\"\naddresses = [\"10.1.1.1/24\"]\n[[interface]]\nport = \"swp2\"\naddresses = [\"10.1.2.1/24\"]\n";
                daemon = Some(xnos_tests::Daemon::start(&dut, config)?);
                dst = ROUTER;
                // Let the kernel module give the ports their addresses.
                let deadline = Instant::now() + Duration::from_secs(10);
                while !dut
                    .ip(&["-o", "addr", "show", "dev", "swp2"])?
                    .contains("10.1.2.1")
                {
                    if Instant::now() > deadline {
                        bail!("xnosd did not configure swp2");
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            dut.ip(&[
                "neigh",
                "replace",
                "10.1.2.2",
                "lladdr",
                &xnos_tests::format_mac(SINK_MAC),
                "dev",
                "swp2",
                "nud",
                "permanent",
            ])?;
        }
        "xnos L2" | "xnos L2 (TC)" => {
            let datapath = if mode == "xnos L2" { "auto" } else { "tc" };
            let config = format!(
                "[[port]]\nname = \"swp1\"\nmode = \"access\"\nvlan = 10\ndatapath = \"{datapath}\"\n[[port]]\nname = \"swp2\"\nmode = \"access\"\nvlan = 10\ndatapath = \"{datapath}\"\n[[fdb]]\nmac = \"{}\"\nvlan = 10\nport = \"swp2\"\n",
                xnos_tests::format_mac(SINK_MAC)
            );
            daemon = Some(xnos_tests::Daemon::start(&dut, &config)?);
        }
        "bare redirect" => {
            let swp2 = dut.ifindex("swp2")?;
            let swp1 = dut.ifindex("swp1")?;
            let (prog, map) = dut.enter(|| bare_redirect(swp2))??;
            let link = dut.enter(|| attach_fd(prog.as_fd(), swp1))??;
            fds.extend([prog, map, link]);
        }
        _ => {}
    }
    Ok(Lab {
        mode,
        gen_ns,
        dut,
        sink,
        dst,
        _daemon: daemon,
        _fds: fds,
    })
}

/// Attach an XDP program in native mode with BPF_LINK_CREATE; detached when the
/// returned link fd is closed.
fn attach_fd(prog: std::os::fd::BorrowedFd<'_>, ifindex: u32) -> anyhow::Result<OwnedFd> {
    #[repr(C)]
    struct LinkAttr {
        prog_fd: u32,
        target_ifindex: u32,
        attach_type: u32,
        flags: u32,
    }
    const BPF_LINK_CREATE: i64 = 28;
    const BPF_XDP: u32 = 37;
    const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
    let mut attr = LinkAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags: XDP_FLAGS_DRV_MODE,
    };
    // SAFETY: attr is a valid bpf_attr prefix for BPF_LINK_CREATE.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE,
            &mut attr as *mut LinkAttr,
            size_of::<LinkAttr>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("attaching the bare redirect program");
    }
    // SAFETY: a fresh link fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The pids of the kernel's threaded-NAPI threads (`napi/<dev>-<id>`).
fn napi_threads() -> BTreeSet<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    entries
        .filter_map(|e| {
            let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            comm.starts_with("napi/").then_some(pid)
        })
        .collect()
}

/// Split the work over the two cores: the receive processing of the device under test
/// (the NAPI of its ingress veth, which runs its program and, as softirq work in the same
/// thread, the sink's) moves into a threaded-NAPI kernel thread pinned to CPU 1, while the
/// generator keeps CPU 0. The thread busy-polls where the kernel can (threaded = 2), so
/// that it is not woken for every batch. Returns the threaded mode used.
fn split_over_two_cores(labs: &[Lab]) -> anyhow::Result<&'static str> {
    let mut cpu1 = nix::sched::CpuSet::new();
    cpu1.set(1)?;
    let mut mode = "busy-polling";
    for lab in labs {
        let (ns, dev) = if lab.mode == "direct" {
            (&lab.sink, "sink0")
        } else {
            (&lab.dut, "swp1")
        };
        {
            let before = napi_threads();
            let set = |value: u8| {
                ns.exec(
                    "sh",
                    &[
                        "-c",
                        &format!("echo {value} > /sys/class/net/{dev}/threaded"),
                    ],
                )
            };
            if set(2).is_err() {
                mode = "woken per batch";
                set(1)?;
            }
            let new: Vec<i32> = napi_threads().difference(&before).copied().collect();
            if new.is_empty() {
                bail!("no NAPI thread appeared for {dev} ({})", lab.mode);
            }
            for pid in new {
                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(pid), &cpu1)
                    .with_context(|| format!("pinning NAPI thread {pid} to CPU 1"))?;
            }
        }
    }
    Ok(mode)
}

/// Interleaved runs over all labs (A B C A B C ...): median, min and max pps per mode.
fn measure_labs(
    labs: &[Lab],
    traffic: &mut Traffic,
    runs: usize,
    frames: u32,
    suffix: &str,
) -> anyhow::Result<Vec<Cost>> {
    let mut rates: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for _ in 0..runs {
        for lab in labs {
            let rate = traffic.run(&lab.gen_ns, "gen0", &template(lab.dst, GEN_MAC), frames)?;
            rates.entry(lab.mode).or_default().push(rate);
        }
    }
    Ok(labs
        .iter()
        .map(|lab| {
            let mut r = rates[lab.mode].clone();
            r.sort_by(f64::total_cmp);
            Cost {
                mode: format!("{}{suffix}", lab.mode),
                mean_ns: r[r.len() / 2],
                min_ns: r[0],
                max_ns: r[r.len() - 1],
            }
        })
        .collect())
}

/// End-to-end rates: all on one core, then with the work split over two.
fn e2e(opts: &Options) -> anyhow::Result<(Vec<Cost>, Vec<Cost>, &'static str)> {
    // The generator runs on CPU 0; on one core, so does everything else.
    let mut cpus = nix::sched::CpuSet::new();
    cpus.set(0)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus)?;
    let mut traffic = Traffic::load()?;
    let modes = [
        "direct",
        "bare redirect",
        "Linux bridge",
        "kernel IPv4 forwarding",
        "xnos L2",
        "xnos L2 (TC)",
        "xnos L3 IPv4",
    ];
    let labs: Vec<Lab> = modes
        .iter()
        .map(|m| lab(m, &mut traffic))
        .collect::<anyhow::Result<_>>()?;
    let (runs, frames) = if opts.quick {
        (2, 300_000)
    } else {
        (5, 2_000_000)
    };
    let one = measure_labs(&labs, &mut traffic, runs, frames, "")?;
    let napi = split_over_two_cores(&labs)?;
    let two = measure_labs(&labs, &mut traffic, runs, frames, " (2 cores)")?;
    Ok((one, two, napi))
}

/// How long after a load xnosd's memory is read again: what it keeps, once the load's
/// last commits are read and freed, as opposed to what it holds the moment the last route
/// is in the fast path.
const SETTLE: Duration = Duration::from_secs(5);

/// xnosd's memory now and at its peak so far.
fn memory(pid: u32) -> serde_json::Value {
    json!({ "vm_rss_kib": status_kib(pid, "VmRSS"), "vm_hwm_kib": status_kib(pid, "VmHWM") })
}

/// Asks xnosd's API for something small (`GET /v1/ready`) every 10 ms in a thread of its
/// own, and records how long each answer took: what an operator or a monitoring system
/// waits while xnosd is busy. Before xnosd is ready its API answers on the starting socket.
struct ApiProbe {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<f64>>,
}

impl ApiProbe {
    fn start(socket: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut starting = socket.as_os_str().to_owned();
            starting.push(".starting");
            let starting = PathBuf::from(starting);
            let mut times = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                let start = Instant::now();
                if api_get(&socket, "/v1/ready")
                    .or_else(|_| api_get(&starting, "/v1/ready"))
                    .is_ok()
                {
                    times.push(start.elapsed().as_secs_f64() * 1000.0);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            times
        });
        Self { stop, thread }
    }

    /// The answers' times: count, p50, p99, max (ms).
    fn finish(self) -> serde_json::Value {
        self.stop.store(true, Ordering::Relaxed);
        let mut times = self.thread.join().unwrap_or_default();
        times.sort_by(f64::total_cmp);
        let at = |q: f64| {
            times
                .get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1)))
                .copied()
        };
        json!({
            "answers": times.len(),
            "p50_ms": at(0.5),
            "p99_ms": at(0.99),
            "max_ms": times.last(),
        })
    }
}

/// One HTTP/1.1 GET on a Unix socket, the whole answer read.
fn api_get(socket: &std::path::Path, path: &str) -> anyhow::Result<()> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: xnosd\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    anyhow::ensure!(answer.starts_with(b"HTTP/1.1 200"), "GET {path} failed");
    Ok(())
}

fn datapath_status(daemon: &xnos_tests::Daemon) -> serde_json::Value {
    let rows = daemon
        .json_raw(&["db", "get", "datapath", "--json"])
        .unwrap_or_default();
    rows[0]["row"].clone()
}

/// Routes the datapath has programmed (IPv4 and IPv6).
fn programmed_routes(daemon: &xnos_tests::Daemon) -> u64 {
    let status = datapath_status(daemon);
    status["routes-v4"].as_u64().unwrap_or(0) + status["routes-v6"].as_u64().unwrap_or(0)
}

/// Wait until the datapath has programmed `target` routes, or all but a few of them and no
/// more for 5 s (a map write the kernel refuses under memory pressure, ENOMEM, leaves its
/// prefix to the kernel until the route changes). Returns when the last route went in and
/// how many are missing.
fn wait_for_routes(
    daemon: &xnos_tests::Daemon,
    target: u64,
    limit: Duration,
) -> anyhow::Result<(Instant, u64)> {
    let start = Instant::now();
    let (mut last, mut count) = (Instant::now(), programmed_routes(daemon));
    while count < target {
        if start.elapsed() > limit {
            bail!("routes never reached {target}: {}", datapath_status(daemon));
        }
        std::thread::sleep(Duration::from_millis(20));
        let now = programmed_routes(daemon);
        if now != count {
            (last, count) = (Instant::now(), now);
        } else if last.elapsed() > Duration::from_secs(5) && count + target / 1000 >= target {
            eprintln!(
                "{} routes not programmed: {}",
                target - count,
                datapath_status(daemon)
            );
            break;
        }
    }
    Ok((last, target.saturating_sub(count)))
}

fn control_plane(opts: &Options) -> anyhow::Result<serde_json::Value> {
    let topo = Topology::new(&["swp1"])?;
    let config = "[[port]]\nname = \"swp1\"\nmode = \"access\"\nvlan = 20\n[[interface]]\nvlan = 20\naddresses = [\"10.0.20.1/24\"]\n";
    let mut daemon = xnos_tests::Daemon::start(&topo.switch, config)?;
    let host = &topo.hosts[0];
    host.add_address("10.0.20.2/24")?;
    let pid = daemon.pid().context("xnosd pid")?;
    std::thread::sleep(Duration::from_millis(500));
    let idle_kib = status_kib(pid, "VmRSS");
    let mut result = json!({ "xnosd_rss_idle_kib": idle_kib });

    // Single route changes: from `ip route add` to the datapath having it.
    let mut latencies = Vec::new();
    for i in 0..20 {
        let before = programmed_routes(&daemon);
        let start = Instant::now();
        topo.switch.ip(&[
            "route",
            "add",
            &format!("10.201.{i}.0/24"),
            "via",
            "10.0.20.2",
        ])?;
        wait_for_routes(&daemon, before + 1, Duration::from_secs(10))?;
        latencies.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    result["route_change_to_fast_path_ms_median"] = json!(latencies[latencies.len() / 2]);
    result["route_change_to_fast_path_ms_max"] = json!(latencies[latencies.len() - 1]);

    let counts: &[usize] = if opts.quick {
        &[100_000]
    } else {
        &[200_000, 1_000_000]
    };
    let mut done = 0usize;
    for &count in counts {
        let dir = std::env::temp_dir().join(xnos_tests::unique_name("xnos-bench-"));
        std::fs::create_dir_all(&dir)?;
        let batch = dir.join("routes");
        let mut text = String::new();
        for i in done..count {
            text.push_str(&format!(
                "route add 10.{}.{}.{}/32 via 10.0.20.2\n",
                100 + i / 65536,
                (i / 256) % 256,
                i % 256
            ));
        }
        std::fs::write(&batch, text)?;
        let before = programmed_routes(&daemon);
        let probe = ApiProbe::start(daemon.socket.clone());
        let start = Instant::now();
        topo.switch
            .ip(&["-batch", batch.to_str().context("path")?])?;
        let kernel = start.elapsed();
        let (programmed, missing) = wait_for_routes(
            &daemon,
            before + (count - done) as u64,
            Duration::from_secs(600),
        )?;
        let total = programmed.duration_since(start);
        std::fs::remove_dir_all(&dir)?;
        let (loaded, api) = (memory(pid), probe.finish());
        std::thread::sleep(SETTLE);
        result[format!("routes_{count}")] = json!({
            "kernel_s": kernel.as_secs_f64(),
            "in_fast_path_s": total.as_secs_f64(),
            "not_programmed": missing,
            "xnosd_rss_kib": loaded["vm_rss_kib"],
            "xnosd_memory": loaded,
            "xnosd_memory_settled": memory(pid),
            "api_while_loading": api,
        });
        eprintln!("{}", result[format!("routes_{count}")]);
        done = count;
    }

    // Learning: 100k source MACs sent from the host as fast as AF_PACKET goes.
    let learn = if opts.quick { 20_000 } else { 100_000 };
    let sock: PacketSocket = host.socket()?;
    let start = Instant::now();
    for i in 0..learn {
        sock.send(&xnos_tests::test_frame(
            [0xff; 6],
            [2, 0x4c, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8],
            None,
            0,
        ))?;
    }
    let sent = start.elapsed();
    // The per-VLAN FDB counts: cheap to ask for, unlike a listing of every entry (whose
    // cost would be measured along).
    let learned = || -> anyhow::Result<usize> {
        let vlans = daemon.json("vlans")?;
        Ok(vlans
            .as_array()
            .context("vlans")?
            .iter()
            .filter_map(|v| v["fdb-entries"].as_u64())
            .sum::<u64>() as usize)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while learned()? < learn {
        if Instant::now() > deadline {
            bail!("only {} of {learn} MACs learned", learned()?);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    result["learn"] = json!({
        "macs": learn,
        "send_s": sent.as_secs_f64(),
        "in_statedb_s": start.elapsed().as_secs_f64(),
        "xnosd_rss_kib": status_kib(pid, "VmRSS"),
        "xnosd_memory": memory(pid),
    });

    // A start with every route already in the kernel: the first sync reads them all.
    let routes = done as u64;
    eprintln!("{}", serde_json::to_string(&result)?);
    let stopping = Instant::now();
    // A stop that takes long is killed (and said so): the start after it is measured all
    // the same.
    if let Err(e) = daemon.stop() {
        eprintln!("stopping xnosd with {routes} routes: {e}");
    }
    result["stop_s"] = json!(stopping.elapsed().as_secs_f64());
    let probe = ApiProbe::start(daemon.socket.clone());
    let start = Instant::now();
    daemon.launch_again(&topo.switch)?;
    let pid = daemon.pid().context("xnosd pid")?;
    let deadline = start + Duration::from_secs(600);
    while !daemon.socket.exists() {
        if Instant::now() > deadline {
            bail!(
                "xnosd did not become ready with {routes} routes: {}",
                daemon.log()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let ready = start.elapsed();
    let (programmed, missing) = wait_for_routes(&daemon, routes, Duration::from_secs(600))?;
    let (loaded, api) = (memory(pid), probe.finish());
    std::thread::sleep(SETTLE);
    result[format!("start_with_routes_{done}")] = json!({
        "ready_s": ready.as_secs_f64(),
        "in_fast_path_s": programmed.duration_since(start).as_secs_f64(),
        "not_programmed": missing,
        "xnosd_memory": loaded,
        "xnosd_memory_settled": memory(pid),
        "api_while_loading": api,
    });
    Ok(result)
}

/// A flood of random source MACs from one access port (issue #14, "Bounded resources"):
/// what the full FDB refuses, what xnosd spends on it, and whether the stations learned
/// before it and a static entry keep forwarding while it lasts.
fn mac_flood(opts: &Options) -> anyhow::Result<serde_json::Value> {
    const METRICS: &str = "127.0.0.1:9417";
    const STATIC_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x55];
    let macs = if opts.quick { 300_000 } else { 1_000_000 };
    let capacity = u64::from(xnos_common::FDB_SIZE);
    let topo = Topology::new(&["swp1", "swp2", "swp3"])?;
    let config = xnos_tests::Config::access_ports(&[10, 10, 10]).fdb(
        &xnos_tests::format_mac(STATIC_MAC),
        10,
        "swp2",
    );
    let daemon =
        xnos_tests::Daemon::start_with(&topo.switch, &config, &["--metrics-listen", METRICS])?;
    let pid = daemon.pid().context("xnosd pid")?;
    let (h1, h2, h3) = (&topo.hosts[0], &topo.hosts[1], &topo.hosts[2]);
    h1.add_address("10.0.10.1/24")?;
    h2.add_address("10.0.10.2/24")?;
    anyhow::ensure!(
        h1.reachable("10.0.10.2"),
        "h1 does not reach h2 before the flood"
    );
    let s3 = h3.socket()?;
    s3.send(&xnos_tests::test_frame([0xff; 6], h3.mac, None, 1))?;
    daemon.wait_fdb(10, h3.mac, "swp3")?;
    daemon.wait_fdb(10, h1.mac, "swp1")?;
    daemon.wait_fdb(10, h2.mac, "swp2")?;

    let traffic = xnos_tests::traffic::Traffic::start(
        &[(h1, [10, 0, 10, 1].into()), (h2, [10, 0, 10, 2].into())],
        vec![
            xnos_tests::traffic::Flow { src: 0, dst: 1 },
            xnos_tests::traffic::Flow { src: 1, dst: 0 },
        ],
        10_000,
    )?;
    std::thread::sleep(Duration::from_secs(1));
    let rx_before = daemon.counters("swp3")?["rx-packets"]
        .as_u64()
        .context("swp3 rx-packets")?;
    let commits = |metrics: &str| sample(metrics, "xnos_statedb_commits_total").unwrap_or(0);
    let commits_before = commits(&xnos_tests::http_get(&topo.switch, METRICS, "/metrics")?);
    let (memory_before, cpu_before) = (memory(pid), xnos_tests::cpu_time(pid));
    let probe = ApiProbe::start(daemon.socket.clone());
    // Addressed to h3 itself: the switch learns the source and filters the frame (same
    // port), so the flood costs the learning and not the stations' links.
    let mut frame = xnos_tests::test_frame(h3.mac, [0; 6], None, 2);
    let start = Instant::now();
    for mac in RandomMacs(0x9e37_79b9_7f4a_7c15).take(macs) {
        frame[6..12].copy_from_slice(&mac);
        s3.send(&frame)?;
    }
    let sent = start.elapsed();
    let (memory_sent, cpu_sent) = (memory(pid), xnos_tests::cpu_time(pid));
    // Learn events the ring had no room for are not lost entries: xnosd reads the map
    // whole when it sees events lost. Settled is the whole table in StateDb.
    let deadline = Instant::now() + Duration::from_secs(120);
    let metrics = loop {
        let metrics = xnos_tests::http_get(&topo.switch, METRICS, "/metrics")?;
        let entries = sample(&metrics, r#"xnos_table_entries{table="fdb"}"#);
        if entries == Some(capacity) || Instant::now() > deadline {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let settled = start.elapsed();
    let (memory_settled, cpu_settled) = (memory(pid), xnos_tests::cpu_time(pid));
    let api = probe.finish();
    let counters = traffic.counters.clone();
    let flows = traffic.finish();
    let lost: u64 = flows.iter().map(|f| f.lost + f.unseen_tail).sum();
    let rx = daemon.counters("swp3")?["rx-packets"]
        .as_u64()
        .context("swp3 rx-packets")?
        - rx_before;

    // With the table full: a frame from h1 to the static MAC reaches h2 alone.
    let s2 = h2.socket()?;
    let s3 = h3.socket()?;
    h1.socket()?
        .send(&xnos_tests::test_frame(STATIC_MAC, h1.mac, None, 3))?;
    let to_static = |f: &[u8]| f[..6] == STATIC_MAC && f[6..12] == h1.mac;
    let static_forwards = s2.collect(Duration::from_secs(1), to_static).len() == 1
        && s3.collect(Duration::from_millis(200), to_static).is_empty();

    let listed = Instant::now();
    let fdb = daemon.json_raw(&["show", "fdb", "--json"])?;
    let text = daemon.xnos(&["show", "fdb"])?;
    let listed = listed.elapsed();
    let wall = |d: Duration| d.as_secs_f64();
    let cpu = |from: Duration, to: Duration, over: Duration| {
        let used = wall(to - from);
        json!({ "s": used, "of_wall": used / wall(over) })
    };
    let notes: Vec<&str> = text
        .lines()
        .skip(text.lines().count().saturating_sub(2))
        .collect();
    let result = json!({
        "macs": macs,
        "send_s": wall(sent),
        "send_rate_per_s": macs as f64 / wall(sent),
        "received_by_switch": rx,
        "in_statedb_s": wall(settled),
        "fdb_capacity": capacity,
        "fdb_entries_statedb": sample(&metrics, r#"xnos_table_entries{table="fdb"}"#),
        "fdb_entries_show_fdb": fdb.as_array().map(Vec::len),
        "learn_refused": sample(&metrics, r#"xnos_fdb_learn_refused_total{port="swp3"}"#),
        "learn_events_lost": sample(&metrics, r#"xnos_fdb_learn_events_lost_total{port="swp3"}"#),
        "statedb_commits": commits(&metrics) - commits_before,
        "show_fdb_notes": notes,
        "show_fdb_json_and_text_s": wall(listed),
        "xnosd_cpu_while_sending": cpu(cpu_before, cpu_sent, sent),
        "xnosd_cpu_until_in_statedb": cpu(cpu_before, cpu_settled, settled),
        "xnosd_memory_before": memory_before,
        "xnosd_memory_sent": memory_sent,
        "xnosd_memory_in_statedb": memory_settled,
        "established_flow": {
            "sent": flows.iter().map(|f| f.sent).sum::<u64>(),
            "received": flows.iter().map(|f| f.received).sum::<u64>(),
            "lost": lost,
            "late": flows.iter().map(|f| f.late).sum::<u64>(),
            "duplicates": flows.iter().map(|f| f.duplicates).sum::<u64>(),
            "not_sent_behind_schedule": counters.skipped.load(Ordering::Relaxed),
            "send_errors": counters.send_errors.load(Ordering::Relaxed),
        },
        "static_entry_forwards": static_forwards,
        "api_during_flood": api,
    });
    eprintln!("{result}");
    Ok(result)
}

/// A bar chart, one bar per mode (median or mean) with whiskers from min to max.
fn svg(title: &str, costs: &[Cost]) -> String {
    let width = 760.0;
    let bar_h = 22.0;
    let left = 230.0;
    let max = costs.iter().map(|c| c.max_ns).fold(1.0, f64::max) * 1.1;
    let scale = (width - left - 60.0) / max;
    let height = 40.0 + costs.len() as f64 * (bar_h + 8.0);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n<text x=\"10\" y=\"20\" font-size=\"14\">{title}</text>\n"
    );
    for (i, c) in costs.iter().enumerate() {
        let y = 34.0 + i as f64 * (bar_h + 8.0);
        let w = c.mean_ns * scale;
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n<rect x=\"{left}\" y=\"{y}\" width=\"{w:.1}\" height=\"{bar_h}\" fill=\"{}\"/>\n<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\n<text x=\"{:.1}\" y=\"{:.1}\">{:.0}</text>\n",
            left - 6.0,
            y + 15.0,
            c.mode,
            if c.mode.starts_with("xnos") || c.mode.contains("routed") || c.mode.starts_with("L2") {
                "#3b7dd8"
            } else {
                "#999"
            },
            left + c.min_ns * scale,
            left + c.max_ns * scale,
            y + bar_h / 2.0,
            y + bar_h / 2.0,
            left + c.max_ns * scale + 6.0,
            y + 15.0,
            c.mean_ns
        ));
    }
    out.push_str("</svg>\n");
    out
}

fn main() -> anyhow::Result<()> {
    let mut opts = Options {
        quick: false,
        control_plane: false,
        mac_flood: false,
        stages: false,
        out: PathBuf::from("target/bench"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => opts.quick = true,
            "--control-plane" => opts.control_plane = true,
            "--mac-flood" => opts.mac_flood = true,
            "--stages" => opts.stages = true,
            "--out" => opts.out = PathBuf::from(args.next().context("--out needs a directory")?),
            other => bail!(
                "unknown argument {other:?} (use --quick, --control-plane, --mac-flood, --stages, --out DIR)"
            ),
        }
    }
    let _ = binary("xnosd")?;
    std::fs::create_dir_all(&opts.out)?;
    let machine = format!(
        "{} CPUs, kernel {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        String::from_utf8_lossy(
            &Command::new("uname")
                .arg("-r")
                .stderr(Stdio::null())
                .output()?
                .stdout
        )
        .trim()
    );
    if opts.mac_flood {
        println!("==> MAC flood ({machine})");
        let flood = mac_flood(&opts)?;
        println!("{}", serde_json::to_string_pretty(&flood)?);
        let results = json!({ "machine": machine, "quick": opts.quick, "mac_flood": flood });
        std::fs::write(
            opts.out.join("mac-flood.json"),
            serde_json::to_string_pretty(&results)? + "\n",
        )?;
        return Ok(());
    }
    if opts.control_plane {
        println!("==> control plane ({machine})");
        let mut control = control_plane(&opts)?;
        control["mac_flood"] = mac_flood(&opts)?;
        println!("{}", serde_json::to_string_pretty(&control)?);
        let results = json!({ "machine": machine, "quick": opts.quick, "control_plane": control });
        std::fs::write(
            opts.out.join("control-plane.json"),
            serde_json::to_string_pretty(&results)? + "\n",
        )?;
        return Ok(());
    }
    if opts.stages {
        let stages = stage_costs(&opts)?;
        print_stage_costs(&stages);
        let results = json!({
            "machine": machine,
            "quick": opts.quick,
            "per-stage-costs": stage_costs_json(&stages),
        });
        std::fs::write(
            opts.out.join("stages.json"),
            serde_json::to_string_pretty(&results)? + "\n",
        )?;
        println!("==> wrote {}/stages.json", opts.out.display());
        return Ok(());
    }
    println!("==> datapath cost per packet ({machine})");
    let costs = datapath_costs(&opts)?;
    let bare = costs[0].mean_ns;
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>12}",
        "MODE", "MEAN-NS", "MIN-NS", "MAX-NS", "VS-BARE"
    );
    for c in &costs {
        println!(
            "{:<28} {:>9.1} {:>9.1} {:>9.1} {:>11.2}x",
            c.mode,
            c.mean_ns,
            c.min_ns,
            c.max_ns,
            c.mean_ns / bare
        );
    }
    let stages = stage_costs(&opts)?;
    print_stage_costs(&stages);
    let (rates, split, napi) = e2e(&opts)?;
    let split_title = format!(
        "generator on CPU 0; device under test and sink in a threaded NAPI thread ({napi}) on CPU 1"
    );
    for (title, rates) in [
        ("generator + device under test + sink on one core", &rates),
        (split_title.as_str(), &split),
    ] {
        println!("==> end to end, 64-byte frames, {title}");
        println!(
            "{:<36} {:>12} {:>12} {:>12}",
            "MODE", "MEDIAN-PPS", "MIN-PPS", "MAX-PPS"
        );
        for r in rates {
            // Far below every other mode means the frames were lost, not forwarded slowly.
            let note = if r.mean_ns < rates[0].mean_ns / 1000.0 {
                "  (frames lost: not a valid measurement)"
            } else {
                ""
            };
            println!(
                "{:<36} {:>12.0} {:>12.0} {:>12.0}{note}",
                r.mode, r.mean_ns, r.min_ns, r.max_ns
            );
        }
    }
    println!("==> control plane");
    let mut control = control_plane(&opts)?;
    control["mac_flood"] = mac_flood(&opts)?;
    println!("{}", serde_json::to_string_pretty(&control)?);
    let results = json!({
        "machine": machine,
        "quick": opts.quick,
        "per-stage-costs": stage_costs_json(&stages),
        "datapath_ns_per_packet": costs.iter().map(|c| json!({"mode": c.mode, "mean": c.mean_ns, "min": c.min_ns, "max": c.max_ns})).collect::<Vec<_>>(),
        "end_to_end_pps_one_core": rates.iter().map(|r| json!({"mode": r.mode, "median": r.mean_ns, "min": r.min_ns, "max": r.max_ns})).collect::<Vec<_>>(),
        "two_cores_napi": napi,
        "end_to_end_pps_two_cores": split.iter().map(|r| json!({"mode": r.mode, "median": r.mean_ns, "min": r.min_ns, "max": r.max_ns})).collect::<Vec<_>>(),
        "control_plane": control,
    });
    std::fs::write(
        opts.out.join("results.json"),
        serde_json::to_string_pretty(&results)? + "\n",
    )?;
    std::fs::write(
        opts.out.join("datapath.svg"),
        svg(
            &format!(
                "xnos datapath cost per packet (ns, BPF_PROG_TEST_RUN; whiskers: spread over {FLOWS} flows)"
            ),
            &costs,
        ),
    )?;
    let all: Vec<Cost> = rates.iter().chain(&split).cloned().collect();
    std::fs::write(
        opts.out.join("end-to-end.svg"),
        svg(
            &format!(
                "end to end, 64-byte frames, packets/s (median of {} interleaved runs; whiskers: min-max)",
                if opts.quick { 2 } else { 5 }
            ),
            &all,
        ),
    )?;
    println!(
        "==> wrote {0}/results.json, {0}/datapath.svg and {0}/end-to-end.svg",
        opts.out.display()
    );
    Ok(())
}
