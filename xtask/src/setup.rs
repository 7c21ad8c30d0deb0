//! Idempotent installation of everything the build and the tests need.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::{output, status, step};

/// Debian packages: LLVM 22 for bpf-linker, and the tools the tests and the demo run
/// (FRR for the BGP test, Prometheus and promtool for the observability tests, QEMU,
/// busybox, cpio and xz for the test that boots a Debian kernel in a small VM, gcc and make
/// to build netdevsim for it; g++ for libFuzzer, which the fuzz targets link).
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "iproute2",
    "ethtool",
    "iputils-ping",
    "procps",
    "traceroute",
    "frr",
    "prometheus",
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "xz-utils",
    "gcc",
    "make",
    "g++",
];
/// Where the VM test's kernel is kept (relative to the workspace root).
pub const VM_KERNEL_DIR: &str = "target/vm-kernel";
/// Modules the VM test loads (bridge with its dependencies, veth, 802.1Q, and psample
/// for netdevsim).
const VM_MODULES: &[&str] = &[
    "llc", "stp", "bridge", "veth", "garp", "mrp", "8021q", "psample",
];
/// The nightly whose LLVM (22) matches bpf-linker's, used when `nightly` is another one.
const PINNED_NIGHTLY: &str = "nightly-2026-05-19";
const LLVM_MAJOR: &str = "22";
const BPF_LINKER_VERSION: &str = "0.13.0";
/// The newest cargo-fuzz that builds with Rust 1.95 from its lock file.
const CARGO_FUZZ_VERSION: &str = "0.13.1";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// What setup decided, for the build steps after it.
pub struct Env {
    /// Toolchain for the eBPF build (`nightly` or the pinned dated nightly).
    pub ebpf_toolchain: String,
}

/// What the tasks need; `vm_test` also prepares the VM test's kernel (the test suite and
/// `setup` do; building, the demo and the bench do not wait for it).
pub fn run(vm_test: bool) -> anyhow::Result<Env> {
    let uid = output(Command::new("id").arg("-u"))?;
    if uid.trim() != "0" {
        bail!("xnos needs root (BPF, network namespaces): run this as root");
    }
    packages()?;
    let ebpf_toolchain = nightly()?;
    rust_src(&ebpf_toolchain)?;
    bpf_linker()?;
    cargo_fuzz()?;
    // Only the VM test needs it: without it the other tests go on (the test says why).
    if vm_test && let Err(e) = vm_kernel() {
        eprintln!("warning: no kernel for the VM test: {e:#}");
    }
    step(&format!(
        "set up: {}; eBPF toolchain {ebpf_toolchain} (LLVM {LLVM_MAJOR}, rust-src); bpf-linker {BPF_LINKER_VERSION}; cargo-fuzz {CARGO_FUZZ_VERSION}",
        PACKAGES.join(", ")
    ));
    Ok(Env { ebpf_toolchain })
}

/// A Debian 12 kernel for the VM test (its bridge filters VLANs, unlike this machine's):
/// the newest `linux-image-6.12.*+deb12-amd64-unsigned`, of which only the kernel image
/// and the modules the test needs are kept; and netdevsim, a switchdev driver Debian does
/// not ship, built for that kernel from Debian's kernel source and headers.
fn vm_kernel() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .to_path_buf();
    let dir = root.join(VM_KERNEL_DIR);
    if dir.join("vmlinuz").is_file() && dir.join("modules/netdevsim.ko").is_file() {
        return Ok(());
    }
    // The package lists may be older than the archive (whose old kernels are gone).
    status(Command::new("apt-get").args(["update", "-qq"]))?;
    let list = output(Command::new("apt-cache").args([
        "search",
        "--names-only",
        r"^linux-image-6\.12\.[0-9.]+\+deb12-amd64-unsigned$",
    ]))?;
    let version = |name: &str| -> Vec<u32> {
        name.trim_start_matches("linux-image-")
            .split(['.', '+', '-'])
            .map_while(|p| p.parse().ok())
            .collect()
    };
    let package = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .max_by_key(|name| version(name))
        .context("no linux-image-6.12.*+deb12-amd64-unsigned package in the Debian archive")?
        .to_string();
    let version = candidate(&package)?;
    step(&format!("downloading {package} {version} for the VM test"));
    let work = root.join("target/vm-kernel.tmp");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    status(Command::new("apt-get").current_dir(&work).args([
        "download",
        "-q",
        &format!("{package}={version}"),
    ]))?;
    let deb = std::fs::read_dir(&work)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download left no .deb")?;
    let tree = work.join("x");
    status(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("modules"))?;
    let vmlinuz = std::fs::read_dir(tree.join("boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz"))
        })
        .context("no vmlinuz in the kernel package")?;
    std::fs::copy(&vmlinuz, dir.join("vmlinuz"))?;
    let modules = output(
        Command::new("find")
            .arg(tree.join("lib/modules"))
            .args(["-name", "*.ko.xz"]),
    )?;
    for name in VM_MODULES {
        let file = modules
            .lines()
            .find(|l| l.ends_with(&format!("/{name}.ko.xz")))
            .with_context(|| format!("no module {name} in the kernel package"))?;
        let ko = Command::new("xz").args(["-dc", file]).output()?;
        if !ko.status.success() {
            bail!("xz -dc {file} failed");
        }
        std::fs::write(dir.join(format!("modules/{name}.ko")), ko.stdout)?;
    }
    build_netdevsim(&package, &version, &work, &dir.join("modules/netdevsim.ko"))?;
    std::fs::write(dir.join("package"), format!("{package}\n"))?;
    std::fs::remove_dir_all(&work)?;
    Ok(())
}

/// The version `apt-get` would fetch of `package` (its candidate; `apt-cache show` lists
/// every version the lists know, in no promised order).
fn candidate(package: &str) -> anyhow::Result<String> {
    let policy = output(Command::new("apt-cache").args(["policy", package]))?;
    policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate: "))
        .filter(|v| *v != "(none)")
        .map(str::to_string)
        .with_context(|| format!("apt has no candidate version of {package}"))
}

/// Build netdevsim.ko for the kernel of `image` (a linux-image-*-unsigned package) from
/// the matching linux-source, headers and kbuild packages, unpacked under `work`.
fn build_netdevsim(
    image: &str,
    version: &str,
    work: &std::path::Path,
    into: &std::path::Path,
) -> anyhow::Result<()> {
    // linux-image-6.12.117+deb12-amd64-unsigned: release 6.12.117+deb12-amd64.
    let release = image
        .trim_start_matches("linux-image-")
        .trim_end_matches("-unsigned")
        .to_string();
    let base = release.trim_end_matches("-amd64").to_string();
    let major_minor: String = base.split('.').take(2).collect::<Vec<_>>().join(".");
    let packages = [
        format!("linux-source-{major_minor}={version}"),
        format!("linux-headers-{release}={version}"),
        format!("linux-headers-{base}-common={version}"),
        format!("linux-kbuild-{base}={version}"),
    ];
    step(&format!(
        "building netdevsim for {release} (Debian does not ship it)"
    ));
    let src = work.join("src");
    std::fs::create_dir_all(&src)?;
    for package in &packages {
        status(
            Command::new("apt-get")
                .current_dir(&src)
                .args(["download", "-q", package]),
        )?;
    }
    let root = src.join("root");
    for deb in std::fs::read_dir(&src)?.filter_map(|e| e.ok().map(|e| e.path())) {
        if deb.extension().is_some_and(|x| x == "deb") {
            status(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
        }
    }
    let tarball = root.join(format!("usr/src/linux-source-{major_minor}.tar.xz"));
    let top = format!("linux-source-{major_minor}");
    status(
        Command::new("tar")
            .current_dir(&src)
            .arg("-xJf")
            .arg(&tarball)
            .arg("--wildcards")
            .arg(format!("{top}/drivers/net/netdevsim/*")),
    )?;
    // The headers' Makefile includes the common headers by their installed path.
    let headers = root.join(format!("usr/src/linux-headers-{release}"));
    std::fs::write(
        headers.join("Makefile"),
        format!(
            "include {}\n",
            root.join(format!("usr/src/linux-headers-{base}-common/Makefile"))
                .display()
        ),
    )?;
    let module_dir = src.join(format!("{top}/drivers/net/netdevsim"));
    status(
        Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(&headers)
            .arg(format!("M={}", module_dir.display()))
            // No pahole here: the module goes without BTF.
            .args([
                "CONFIG_NETDEVSIM=m",
                "CONFIG_DEBUG_INFO_BTF_MODULES=",
                "modules",
            ]),
    )?;
    std::fs::copy(module_dir.join("netdevsim.ko"), into)?;
    Ok(())
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

fn cargo_fuzz() -> anyhow::Result<()> {
    let version = Command::new("cargo-fuzz").arg("--version").output();
    if version.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION)) {
        return Ok(());
    }
    step(&format!(
        "installing cargo-fuzz {CARGO_FUZZ_VERSION} (a minute, once)"
    ));
    status(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())).args([
            "install",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
            "--locked",
        ]),
    )
    .context("installing cargo-fuzz")
}
