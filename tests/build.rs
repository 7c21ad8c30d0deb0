//! Builds the benchmark's eBPF programs (ebpf/xnos-bench-ebpf) into an object of their own,
//! which only `xnos-bench` embeds: xnosd's object carries nothing it does not use.

use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    // The same toolchain choice as userspace/build.rs (`cargo xtask setup` exports it).
    println!("cargo:rerun-if-env-changed=XNOS_EBPF_TOOLCHAIN");
    let toolchain_name = std::env::var("XNOS_EBPF_TOOLCHAIN").ok();
    let toolchain = match toolchain_name.as_deref() {
        Some(name) if !name.is_empty() && name != "nightly" => Toolchain::Custom(name),
        _ => Toolchain::Nightly,
    };
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../ebpf/xnos-bench-ebpf");
    aya_build::build_ebpf(
        [Package {
            name: "xnos-bench-ebpf",
            root_dir,
            ..Default::default()
        }],
        toolchain,
    )
}
