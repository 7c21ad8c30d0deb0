//! Builds the benchmark's eBPF programs (ebpf/xnos-bench-ebpf) into an object of their own,
//! which only `xnos-bench` embeds: xnosd's object carries nothing it does not use. Also
//! builds the datapath (ebpf/xnos-ebpf) a second time with its `stages` feature: the same
//! pipeline and maps, plus the programs that stop it after each stage, for the per-stage
//! costs.

use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    // The same toolchain choice as userspace/build.rs (`cargo xtask setup` exports it).
    println!("cargo:rerun-if-env-changed=XNOS_EBPF_TOOLCHAIN");
    let toolchain_name = std::env::var("XNOS_EBPF_TOOLCHAIN").ok();
    let toolchain = match toolchain_name.as_deref() {
        Some(name) if !name.is_empty() && name != "nightly" => Toolchain::Custom(name),
        _ => Toolchain::Nightly,
    };
    aya_build::build_ebpf(
        [
            Package {
                name: "xnos-bench-ebpf",
                root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../ebpf/xnos-bench-ebpf"),
                ..Default::default()
            },
            Package {
                name: "xnos-ebpf",
                root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../ebpf/xnos-ebpf"),
                features: &["stages"],
                ..Default::default()
            },
        ],
        toolchain,
    )
}
