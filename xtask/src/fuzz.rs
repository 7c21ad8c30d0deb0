//! `cargo xtask fuzz` and the fuzzing step of `cargo xtask test`: every target of
//! tests/fuzz under cargo-fuzz (libFuzzer), from the seeds kept in the repository, and the
//! packet fuzzer (xnos_tests::packets) for its long run.

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::{setup::Env, status, step};

/// Every target of tests/fuzz/Cargo.toml.
pub const TARGETS: &[&str] = &["config", "transact", "transact_json", "cli_rows"];

/// cargo-fuzz's flags for every build and run: no sanitizer (the code fuzzed is safe Rust,
/// and ASan would double the build), debug assertions on (an overflow is a bug found).
const FLAGS: &[&str] = &[
    "--fuzz-dir",
    "tests/fuzz",
    "--sanitizer",
    "none",
    "--debug-assertions",
];

/// The packet fuzzer: not a cargo-fuzz target (it needs root, the BPF object and a
/// namespace, and judges whole runs of frames from a seed), but a test of xnos-tests.
pub const PACKETS: &str = "packets";

/// Refuse target names that are none of ours.
pub fn check_targets(names: &[String]) -> anyhow::Result<()> {
    for name in names {
        if name != PACKETS && !TARGETS.contains(&name.as_str()) {
            bail!(
                "no fuzz target {name:?}: the targets are {}, {PACKETS}",
                TARGETS.join(", ")
            );
        }
    }
    Ok(())
}

/// The packet fuzzer's long run: `frames` frames from `seed` (or a new seed) through XDP
/// and TC; fails at the first broken invariant, which the fuzzer adds to its corpus.
pub fn packets(mut cargo: Command, frames: u64, seed: Option<&str>) -> anyhow::Result<()> {
    step(&format!("fuzzing the datapath with {frames} frames"));
    cargo
        .args(["test", "--package", "xnos-tests", "--test", "packets", "--"])
        .args([
            "--exact",
            "fuzzed_frames_keep_the_invariants",
            "--nocapture",
        ])
        .env("XNOS_FUZZ_FRAMES", frames.to_string());
    if let Some(seed) = seed {
        cargo.env("XNOS_FUZZ_SEED", seed);
    }
    status(&mut cargo)
}

/// Run `targets` for `seconds` each; fail on the first crash, naming its reproducer.
pub fn run(env: &Env, targets: &[&str], seconds: u64) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let fuzz = |args: &[&str]| {
        let mut cmd = Command::new("rustup");
        // libFuzzer's coverage instrumentation needs nightly; setup installed this one.
        cmd.args(["run", &env.ebpf_toolchain, "cargo", "fuzz"])
            .args(args)
            .current_dir(&root)
            .env("XNOS_EBPF_TOOLCHAIN", &env.ebpf_toolchain)
            .stdin(std::process::Stdio::null());
        cmd
    };
    step("building the fuzz targets (tests/fuzz)");
    status(fuzz(&["build"]).args(FLAGS))?;
    for target in targets {
        step(&format!("fuzzing {target} for {seconds} s"));
        // libFuzzer writes what it learns into the first directory (not kept in git) and
        // only reads the seeds.
        let corpus = root.join("tests/fuzz/corpus").join(target);
        std::fs::create_dir_all(&corpus).with_context(|| format!("creating {corpus:?}"))?;
        let artifacts = root.join("tests/fuzz/artifacts").join(target);
        let before = files(&artifacts);
        let result = status(
            fuzz(&["run"])
                .args(FLAGS)
                .arg(target)
                .arg(&corpus)
                .arg(root.join("tests/fuzz/seeds").join(target))
                .args([
                    "--",
                    &format!("-max_total_time={seconds}"),
                    "-print_final_stats=1",
                ]),
        );
        if let Err(e) = result {
            let found: Vec<String> = files(&artifacts)
                .into_iter()
                .filter(|f| !before.contains(f))
                .map(|f| f.display().to_string())
                .collect();
            bail!(
                "fuzz target {target} failed ({e:#}); reproducer: {}; rerun with \
                 `cargo +nightly fuzz run {} {target} <reproducer>`",
                if found.is_empty() {
                    "none written".into()
                } else {
                    found.join(", ")
                },
                FLAGS.join(" "),
            );
        }
    }
    Ok(())
}

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}
