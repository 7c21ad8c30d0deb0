//! Developer tasks: `cargo xtask setup|build|test|fuzz|demo|bench|chaos`.

mod demo;
mod fuzz;
mod setup;

use std::process::{Command, ExitCode};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

/// Set up, build, test and demonstrate xnos. Every task installs what it needs first
/// (a fast no-op once everything is there) and must run as root.
#[derive(Parser)]
#[command(about, long_about)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what a fresh Debian 12 machine lacks: LLVM 22, the nightly toolchain with
    /// rust-src, bpf-linker 0.13.0 and the network tools the tests use.
    Setup,
    /// Build the eBPF programs, xnosd and xnos.
    Build {
        /// Optimised build.
        #[arg(long)]
        release: bool,
    },
    /// Run the whole test suite (unit, datapath and end-to-end tests).
    Test {
        /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Fuzz the config parser and validator, API transactions and the CLI's row building
    /// (tests/fuzz, cargo-fuzz), and the datapath with random and mutated frames
    /// (`packets`); stops at the first crash or broken invariant and names its reproducer.
    Fuzz {
        /// How long each cargo-fuzz target runs.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// How many frames the packet fuzzer runs through each program.
        #[arg(long, default_value_t = 10_000_000)]
        frames: u64,
        /// The packet fuzzer's seed (decimal or 0x hex; default: a new one, printed).
        #[arg(long)]
        seed: Option<String>,
        /// Only these targets (repeatable): config, transact, transact_json, cli_rows,
        /// packets.
        #[arg(long = "target")]
        targets: Vec<String>,
    },
    /// Build, start xnosd on a namespace topology, show traffic being switched, clean up.
    Demo,
    /// Benchmarks: datapath cost per packet (next to a bare-redirect program) and per
    /// stage of the pipeline, and control plane (route programming, MAC learning, a MAC
    /// flood, memory). Results in target/bench/.
    Bench {
        /// A shorter run (10k routes instead of 1M, fewer samples).
        #[arg(long)]
        quick: bool,
        /// Only the control plane: routes and MACs into a running xnosd, a start with the
        /// routes in the kernel, a flood of 1M source MACs, xnosd's memory and API answer
        /// times meanwhile.
        #[arg(long)]
        control_plane: bool,
        /// Only the cost of each stage of the pipeline (target/bench/stages.json): for
        /// judging a change to one stage.
        #[arg(long)]
        stages: bool,
    },
    /// Chaos: steady switched and routed traffic through xnosd while it is restarted,
    /// killed, upgraded, has module faults injected and ports flapped; frames lost per
    /// kind of event. Exits nonzero if a target is missed. Options go to the harness
    /// (`cargo xtask chaos --help` lists them), e.g. `--quick`, `--upgrade-to PATH`,
    /// `--json`.
    #[command(disable_help_flag = true)]
    Chaos {
        /// Options for the harness (tests/src/bin/xnos-chaos.rs).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// How long each fuzz target runs as part of `cargo xtask test`.
const FUZZ_SECONDS_IN_TEST: u64 = 20;

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.task {
        Task::Setup => setup::run(true).map(drop),
        Task::Build { release } => {
            let env = setup::run(false)?;
            build(&env, release, &[])
        }
        Task::Test { args } => {
            let env = setup::run(true)?;
            build_next(&env)?;
            // The tests inject faults into modules; release builds never have this.
            build(&env, false, &["fault-injection"])?;
            step("running the test suite");
            let mut cargo = cargo(&env);
            cargo.args([
                "test",
                "--workspace",
                "--exclude",
                "xnos-ebpf",
                "--exclude",
                "xnos-bench-ebpf",
                "--all-targets",
                // Every test binary runs, so that one failure does not hide the others.
                "--no-fail-fast",
                "--",
            ]);
            // A filter names tests: the short fuzzing runs only with the whole suite (the
            // packet fuzzer's short run is a test of its own, tests/tests/packets.rs).
            let whole = args.is_empty();
            cargo.args(args);
            let tests = test(&mut cargo);
            if whole {
                fuzz::run(&env, fuzz::TARGETS, FUZZ_SECONDS_IN_TEST)?;
            }
            tests
        }
        Task::Fuzz {
            seconds,
            frames,
            seed,
            targets,
        } => {
            let env = setup::run(false)?;
            fuzz::check_targets(&targets)?;
            let all = targets.is_empty();
            let cargo_fuzz: Vec<&str> = fuzz::TARGETS
                .iter()
                .copied()
                .filter(|t| all || targets.iter().any(|n| n == t))
                .collect();
            if !cargo_fuzz.is_empty() {
                fuzz::run(&env, &cargo_fuzz, seconds)?;
            }
            if all || targets.iter().any(|t| t == fuzz::PACKETS) {
                build(&env, false, &[])?;
                fuzz::packets(cargo(&env), frames, seed.as_deref())?;
            }
            Ok(())
        }
        Task::Bench {
            quick,
            control_plane,
            stages,
        } => {
            let env = setup::run(false)?;
            build(&env, true, &[])?;
            let mut cargo = cargo(&env);
            cargo.args([
                "build",
                "--release",
                "--package",
                "xnos-tests",
                "--bin",
                "xnos-bench",
            ]);
            status(&mut cargo)?;
            step("running the benchmarks");
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let mut bench = Command::new(root.join("target/release/xnos-bench"));
            bench.arg("--out").arg(root.join("target/bench"));
            if quick {
                bench.arg("--quick");
            }
            if control_plane {
                bench.arg("--control-plane");
            }
            if stages {
                bench.arg("--stages");
            }
            status(&mut bench)
        }
        Task::Chaos { args } => {
            let env = setup::run(false)?;
            build_next(&env)?;
            // The harness injects faults into modules: the test build, which has them.
            build(&env, false, &["fault-injection"])?;
            let mut cargo = cargo(&env);
            cargo.args(["build", "--package", "xnos-tests", "--bin", "xnos-chaos"]);
            status(&mut cargo)?;
            step("running the chaos harness");
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let harness = root.join("target/debug/xnos-chaos");
            let code = Command::new(&harness)
                .args(args)
                .status()
                .with_context(|| format!("spawning {}", harness.display()))?
                .code();
            match code {
                Some(0) => Ok(()),
                // It printed which targets it missed.
                Some(1) => bail!("chaos: targets missed"),
                _ => bail!("chaos: the harness failed ({code:?})"),
            }
        }
        Task::Demo => {
            let env = setup::run(false)?;
            build(&env, false, &[])?;
            demo::run()
        }
    }
}

/// A cargo command that builds the eBPF programs with the toolchain setup chose.
fn cargo(env: &setup::Env) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.env("XNOS_EBPF_TOOLCHAIN", &env.ebpf_toolchain);
    cmd
}

/// The "next version" of xnosd that the upgrade test and the chaos run install over the one
/// under test (the test-only feature `next-build`), kept as `target/debug/xnosd-next`.
fn build_next(env: &setup::Env) -> anyhow::Result<()> {
    build(env, false, &["fault-injection", "next-build"])?;
    let debug = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug");
    std::fs::copy(debug.join("xnosd"), debug.join("xnosd-next"))
        .context("keeping the next build as target/debug/xnosd-next")?;
    Ok(())
}

fn build(env: &setup::Env, release: bool, features: &[&str]) -> anyhow::Result<()> {
    step("building the eBPF programs, xnosd and xnos");
    let mut cargo = cargo(env);
    cargo.args(["build", "--package", "xnos", "--bins"]);
    if release {
        cargo.arg("--release");
    }
    if !features.is_empty() {
        cargo.args(["--features", &features.join(",")]);
    }
    status(&mut cargo)
}

pub fn step(what: &str) {
    println!("==> {what}");
}

/// Run `cargo test`, passing its output through, and close with one line totalling
/// every test binary's result.
fn test(cargo: &mut Command) -> anyhow::Result<()> {
    use std::io::{BufRead as _, BufReader};

    let mut child = cargo
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("spawning cargo test")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    let stdout = child.stdout.take().context("cargo test stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(result) = line.strip_prefix("test result: ") {
            for part in result.split([';', '.']) {
                let mut words = part.split_whitespace();
                match (words.next().map(str::parse::<u64>), words.next()) {
                    (Some(Ok(n)), Some("passed")) => passed += n,
                    (Some(Ok(n)), Some("failed")) => failed += n,
                    _ => {}
                }
            }
        }
    }
    let status = child.wait()?;
    println!("summary: {passed} passed, {failed} failed");
    if !status.success() {
        bail!("cargo test failed with {status}");
    }
    Ok(())
}

/// Run a command, failing if it does.
pub fn status(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("spawning {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Run a command and return its stdout, failing with its stderr if it fails.
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("spawning {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
