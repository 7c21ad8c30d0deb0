//! The packet fuzzer: random and mutated frames through the real XDP and TC programs
//! (BPF_PROG_TEST_RUN) against a populated switch, every result checked against the
//! invariants of check.rs. A run is reproducible from its seed; the frames of the corpus
//! (tests/fuzz/seeds/packets) run first, and a frame that breaks an invariant is added to
//! it.

mod check;
mod generate;
mod topology;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use xnos::{
    datapath::Datapath,
    testrun::{self, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, XDP_DROP, XDP_PASS, XDP_REDIRECT},
    trace::{hex, unhex},
};
use xnos_common::{FdbKey, PortStats};

pub use check::Outcome;
use check::{Effects, Run, Verdict};
use generate::Rng;
use topology::{Port, Switch};

/// The two program types the pipeline is built as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    Xdp,
    Tc,
}

impl Program {
    pub const ALL: [Program; 2] = [Program::Xdp, Program::Tc];

    pub fn name(self) -> &'static str {
        match self {
            Program::Xdp => "xdp",
            Program::Tc => "tc",
        }
    }
}

/// The corpus kept in the repository.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/packets")
}

/// How often learned FDB entries are flushed and the hosts learned again: random source
/// MACs would otherwise move them away for good, and fill the FDB over a long run.
const RELEARN_EVERY: u64 = 100_000;

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    /// Random frames, and frames from the corpus; each ran through both programs.
    pub frames: u64,
    pub corpus_frames: u64,
    /// Frames BPF_PROG_TEST_RUN refused to run TC on (`short_l3`).
    pub refused: u64,
    /// Per program (`Program::ALL` order), frames per outcome (`Outcome::ALL` order).
    pub outcomes: [[u64; Outcome::ALL.len()]; 2],
    pub elapsed: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        writeln!(
            f,
            "packet fuzzing, seed {:#018x}: {} random frames and {} from the corpus through \
             XDP and TC each in {secs:.1} s ({:.0} frames/s)",
            self.seed,
            self.frames,
            self.corpus_frames,
            (self.frames + self.corpus_frames) as f64 / secs.max(1e-9)
        )?;
        writeln!(
            f,
            "  {} frames TC could not run on (BPF_PROG_TEST_RUN refuses an IP EtherType \
             without a whole IP header)",
            self.refused
        )?;
        for (program, counts) in Program::ALL.iter().zip(&self.outcomes) {
            let parts: Vec<String> = Outcome::ALL
                .iter()
                .zip(counts)
                .map(|(o, n)| format!("{} {n}", o.name()))
                .collect();
            writeln!(f, "  {:<3} {}", program.name(), parts.join(", "))?;
        }
        Ok(())
    }
}

/// A frame that broke an invariant.
struct Failure {
    program: Program,
    port: &'static str,
    input: Vec<u8>,
    output: Vec<u8>,
    why: String,
}

/// The fuzzer: the switch's datapath and ports, and its port counters as of the last run.
struct Fuzzer {
    dp: Datapath,
    ports: Vec<Port>,
    counters: Vec<PortStats>,
    report: Report,
}

impl Fuzzer {
    fn counters(&self) -> anyhow::Result<Vec<PortStats>> {
        self.ports
            .iter()
            .map(|p| {
                self.dp
                    .port_stats(p.slot)
                    .with_context(|| format!("reading the counters of {}", p.name))
            })
            .collect()
    }

    /// Run `frame` from port `ingress` through both programs and check each result. The
    /// calling thread must be in the switch's namespace.
    fn frame(&mut self, ingress: usize, frame: &[u8]) -> anyhow::Result<Option<Failure>> {
        // Per program: the outcome and the port a redirect left by (TC's floods leave by
        // many, XDP's by a devmap BPF_PROG_TEST_RUN does not carry out: not compared).
        let mut seen: [Option<(Outcome, Option<usize>)>; 2] = [None, None];
        let mut tc_output = Vec::new();
        for (index, program) in Program::ALL.into_iter().enumerate() {
            let dp = &self.dp;
            let port = &self.ports[ingress];
            let run = match program {
                Program::Xdp => testrun::run_xdp(dp.ingress_fd()?, port.ifindex, frame, 1),
                Program::Tc => testrun::run_tc(dp.tc_fd()?, port.ifindex, frame, 1),
            };
            let run = match run {
                Err(e)
                    if program == Program::Tc
                        && short_l3(frame)
                        && e.kind() == std::io::ErrorKind::InvalidInput =>
                {
                    self.report.refused += 1;
                    continue;
                }
                run => run.with_context(|| {
                    format!(
                        "running {} on a frame from {}: {}",
                        program.name(),
                        port.name,
                        hex(frame)
                    )
                })?,
            };
            let after = self.counters()?;
            let effects = effects(&self.counters, &after, ingress);
            self.counters = after;
            let verdict = match (program, run.action) {
                (Program::Xdp, XDP_DROP) | (Program::Tc, TC_ACT_SHOT) => Verdict::Drop,
                (Program::Xdp, XDP_PASS) | (Program::Tc, TC_ACT_OK) => Verdict::Pass,
                (Program::Xdp, XDP_REDIRECT) | (Program::Tc, TC_ACT_REDIRECT) => Verdict::Redirect,
                (_, other) => Verdict::Other(other),
            };
            let result = check::check(&Run {
                ports: &self.ports,
                ingress,
                tc: program == Program::Tc,
                input: frame,
                verdict,
                output: &run.frame,
                effects: &effects,
            });
            let result = result.and_then(|outcome| {
                let egress = match outcome {
                    Outcome::Forwarded | Outcome::Routed | Outcome::Punted => {
                        effects.tx.first().map(|(p, _)| *p)
                    }
                    _ => None,
                };
                if outcome == Outcome::Forwarded {
                    self.check_fdb(ingress, frame, egress)?;
                }
                seen[index] = Some((outcome, egress));
                Ok(outcome)
            });
            if program == Program::Tc {
                tc_output.clone_from(&run.frame);
            }
            match result {
                Ok(outcome) => self.report.outcomes[index][outcome as usize] += 1,
                Err(why) => {
                    return Ok(Some(Failure {
                        program,
                        port: port.name,
                        input: frame.to_vec(),
                        output: run.frame,
                        why,
                    }));
                }
            }
        }
        // One pipeline built as two program types: the same frame meets the same fate.
        if let [Some(xdp), Some(tc)] = seen
            && xdp != tc
        {
            let name = |(outcome, egress): (Outcome, Option<usize>)| {
                let port = egress.map_or(String::new(), |p| format!(" to {}", self.ports[p].name));
                format!("{}{port}", outcome.name())
            };
            return Ok(Some(Failure {
                program: Program::Tc,
                port: self.ports[ingress].name,
                input: frame.to_vec(),
                output: tc_output,
                why: format!("XDP and TC disagree: XDP {}, TC {}", name(xdp), name(tc)),
            }));
        }
        Ok(None)
    }

    /// A frame forwarded as known unicast left by the port the FDB holds for its
    /// destination in its VLAN (as the run left the FDB: it learns the source first).
    fn check_fdb(&self, ingress: usize, frame: &[u8], egress: Option<usize>) -> Result<(), String> {
        let vlan = check::classify(&self.ports[ingress], frame).map_err(String::from)?;
        let mac: [u8; 6] = frame[..6]
            .try_into()
            .expect("a frame has 14 bytes at least");
        let entry = self.dp.fdb_get(&FdbKey { mac, vlan });
        let held = entry.and_then(|e| self.ports.iter().position(|p| p.ifindex == e.ifindex));
        if held.is_none() || held != egress {
            let name =
                |p: Option<usize>| p.map_or("none".to_string(), |p| self.ports[p].name.into());
            return Err(format!(
                "forwarded to {} although the FDB holds {} in VLAN {vlan} on {}",
                name(egress),
                crate::format_mac(mac),
                name(held)
            ));
        }
        Ok(())
    }

    fn relearn(&mut self) -> anyhow::Result<()> {
        topology::learn_hosts(&mut self.dp, &self.ports)?;
        self.counters = self.counters()?;
        Ok(())
    }
}

/// Whether `frame` says IPv4 or IPv6 (right after the MACs) but is too short for the
/// header: the kernel refuses to run a TC program on such a frame through
/// BPF_PROG_TEST_RUN (EINVAL), though one can arrive from the wire.
fn short_l3(frame: &[u8]) -> bool {
    match frame[12..14] {
        [0x08, 0x00] => frame.len() < 14 + 20,
        [0x86, 0xdd] => frame.len() < 14 + 40,
        _ => false,
    }
}

/// What the counters moved between two readings: frames sent per port, floods and punts
/// of the ingress port.
fn effects(before: &[PortStats], after: &[PortStats], ingress: usize) -> Effects {
    Effects {
        tx: before
            .iter()
            .zip(after)
            .enumerate()
            .filter(|(_, (b, a))| a.tx_packets != b.tx_packets)
            .map(|(i, (b, a))| (i, a.tx_packets - b.tx_packets))
            .collect(),
        flooded: after[ingress].flooded - before[ingress].flooded,
        punted: after[ingress].punted - before[ingress].punted,
    }
}

/// The frames of the corpus: files of lines `<port> <frame in hex>` (`#` starts a comment).
fn corpus(dir: &Path) -> anyhow::Result<Vec<(String, String, Vec<u8>)>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading the corpus {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "frames"))
        .collect();
    files.sort();
    let mut frames = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = format!("{}:{}", file.display(), number + 1);
            let (port, frame) = line
                .split_once(' ')
                .with_context(|| format!("{at}: not `<port> <hex>`"))?;
            let frame = unhex(frame).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
            frames.push((at, port.to_string(), frame));
        }
    }
    Ok(frames)
}

/// Write a failing frame into the corpus, so that every later run replays it.
fn save(dir: &Path, seed: u64, index: u64, failure: &Failure) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("found-{seed:016x}-{index}.frames"));
    let text = format!(
        "# seed {seed:#018x}, frame {index}, {}: {}\n{} {}\n",
        failure.program.name(),
        failure.why,
        failure.port,
        hex(&failure.input)
    );
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn progress(line: &str) {
    // Straight to stderr: the test harness captures print!, and the counts are the point.
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Run the corpus, then `frames` random frames from `seed`, each from a random port
/// through XDP and TC, checking every result. Fails at the first frame that breaks an
/// invariant, naming it and adding it to `corpus`.
pub fn run(seed: u64, frames: u64, corpus: &Path) -> anyhow::Result<Report> {
    let replay = self::corpus(corpus)?;
    let Switch { dp, ports, ns } = Switch::new().context("building the switch to fuzz")?;
    let start = Instant::now();
    let mut fuzzer = Fuzzer {
        dp,
        ports,
        counters: Vec::new(),
        report: Report {
            seed,
            ..Default::default()
        },
    };
    // In the switch's namespace for the whole run: BPF_PROG_TEST_RUN resolves ifindexes
    // there, and a setns per frame would cost more than the frame.
    let result = ns.enter(|| -> anyhow::Result<()> {
        fuzzer.counters = fuzzer.counters()?;
        for (at, port, frame) in &replay {
            let ingress = fuzzer
                .ports
                .iter()
                .position(|p| p.name == port)
                .with_context(|| format!("{at}: no port {port}"))?;
            if frame.len() < 14 {
                bail!("{at}: a frame needs 14 bytes at least");
            }
            if let Some(failure) = fuzzer.frame(ingress, frame)? {
                bail!("{at}: {}", describe(&failure));
            }
            fuzzer.report.corpus_frames += 1;
        }
        let mut rng = Rng::new(seed);
        let step = (frames / 10).max(1_000_000);
        for index in 0..frames {
            if index > 0 && index % RELEARN_EVERY == 0 {
                fuzzer.relearn()?;
            }
            if index > 0 && index % step == 0 {
                let secs = start.elapsed().as_secs_f64();
                progress(&format!(
                    "packet fuzzing: {index} frames in {secs:.0} s ({:.0}/s)",
                    index as f64 / secs
                ));
            }
            let ingress = rng.below(fuzzer.ports.len());
            let frame = generate::frame(&mut rng);
            if let Some(failure) = fuzzer.frame(ingress, &frame)? {
                let saved = save(corpus, seed, index, &failure)?;
                bail!(
                    "seed {seed:#018x}, frame {index}: {}\nsaved as {}; replay the run with \
                     `cargo xtask fuzz --target packets --seed {seed:#x} --frames {}`",
                    describe(&failure),
                    saved.display(),
                    index + 1
                );
            }
            fuzzer.report.frames += 1;
        }
        Ok(())
    });
    result??;
    // The L3 counters agree with the outcomes judged from port counters and frames.
    let l3 = fuzzer.dp.l3_stats()?;
    let routed: u64 = fuzzer
        .report
        .outcomes
        .iter()
        .map(|o| o[Outcome::Routed as usize])
        .sum();
    if l3.routed_v4 + l3.routed_v6 != routed {
        bail!(
            "the datapath counted {} routed packets, the fuzzer saw {routed}",
            l3.routed_v4 + l3.routed_v6
        );
    }
    fuzzer.report.elapsed = start.elapsed();
    progress(&fuzzer.report.to_string());
    Ok(fuzzer.report)
}

fn describe(failure: &Failure) -> String {
    format!(
        "{} on a frame from {}: {}\n  in:  {}\n  out: {}",
        failure.program.name(),
        failure.port,
        failure.why,
        hex(&failure.input),
        hex(&failure.output)
    )
}
