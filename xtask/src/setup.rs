//! Idempotent installation of everything the build and the tests need.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::{output, status, step};

/// Debian packages: LLVM 22 for bpf-linker, and the tools the tests and the demo run
/// (FRR for the BGP test, Prometheus and promtool for the observability tests).
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "iproute2",
    "ethtool",
    "iputils-ping",
    "procps",
    "traceroute",
    "frr",
    "prometheus",
];
/// The nightly whose LLVM (22) matches bpf-linker's, used when `nightly` is another one.
const PINNED_NIGHTLY: &str = "nightly-2026-05-19";
const LLVM_MAJOR: &str = "22";
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// What setup decided, for the build steps after it.
pub struct Env {
    /// Toolchain for the eBPF build (`nightly` or the pinned dated nightly).
    pub ebpf_toolchain: String,
}

pub fn run() -> anyhow::Result<Env> {
    let uid = output(Command::new("id").arg("-u"))?;
    if uid.trim() != "0" {
        bail!("xnos needs root (BPF, network namespaces): run this as root");
    }
    packages()?;
    let ebpf_toolchain = nightly()?;
    rust_src(&ebpf_toolchain)?;
    bpf_linker()?;
    step(&format!(
        "set up: {}; eBPF toolchain {ebpf_toolchain} (LLVM {LLVM_MAJOR}, rust-src); bpf-linker {BPF_LINKER_VERSION}",
        PACKAGES.join(", ")
    ));
    Ok(Env { ebpf_toolchain })
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(&format!(
        "installing Debian packages: {}",
        missing.join(" ")
    ));
    status(Command::new("apt-get").args(["update", "-qq"]))?;
    status(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )
}

fn llvm_major(toolchain: &str) -> Option<String> {
    let out = output(
        Command::new("rustc")
            .arg(format!("+{toolchain}"))
            .arg("-vV"),
    )
    .ok()?;
    out.lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .map(str::to_string)
}

/// bpf-linker reads the nightly's bitcode, so their LLVM majors must match.
fn nightly() -> anyhow::Result<String> {
    if llvm_major("nightly").as_deref() == Some(LLVM_MAJOR) {
        return Ok("nightly".into());
    }
    if llvm_major(PINNED_NIGHTLY).as_deref() != Some(LLVM_MAJOR) {
        step(&format!(
            "installing {PINNED_NIGHTLY} (its LLVM {LLVM_MAJOR} matches bpf-linker's; `nightly` here does not)"
        ));
        status(Command::new("rustup").args([
            "toolchain",
            "install",
            PINNED_NIGHTLY,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    match llvm_major(PINNED_NIGHTLY) {
        Some(major) if major == LLVM_MAJOR => Ok(PINNED_NIGHTLY.into()),
        other => bail!("{PINNED_NIGHTLY} reports LLVM {other:?}, expected {LLVM_MAJOR}"),
    }
}

fn rust_src(toolchain: &str) -> anyhow::Result<()> {
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        toolchain,
    ]))?;
    if components.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    step(&format!(
        "adding rust-src to {toolchain} (the eBPF build compiles core)"
    ));
    status(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", toolchain]))
}

fn bpf_linker() -> anyhow::Result<()> {
    let version = Command::new("bpf-linker").arg("--version").output();
    if version.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    step(&format!(
        "building bpf-linker {BPF_LINKER_VERSION} against LLVM {LLVM_MAJOR} (a few minutes, once)"
    ));
    // bpf-linker's build script finds LLVM through LLVM_PREFIX or the first llvm-config on
    // PATH (which may be an older LLVM), llvm-sys through LLVM_SYS_221_PREFIX.
    let path = std::env::var("PATH").unwrap_or_default();
    status(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX)
            .env("PATH", format!("{LLVM_PREFIX}/bin:{path}"))
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                "llvm-22",
            ]),
    )
    .context("installing bpf-linker")
}
