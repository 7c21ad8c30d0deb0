//! Builds the eBPF programs (ebpf/xnos-ebpf) for bpfel-unknown-none with the nightly
//! toolchain and bpf-linker; the object is embedded into the binaries with include_bytes.

use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    // `cargo xtask setup` picks a nightly whose LLVM matches bpf-linker's and exports it here.
    println!("cargo:rerun-if-env-changed=XNOS_EBPF_TOOLCHAIN");
    let toolchain_name = std::env::var("XNOS_EBPF_TOOLCHAIN").ok();
    let toolchain = match toolchain_name.as_deref() {
        Some(name) if !name.is_empty() && name != "nightly" => Toolchain::Custom(name),
        _ => Toolchain::Nightly,
    };
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../ebpf/xnos-ebpf");
    if std::env::var_os("CARGO_FEATURE_NEXT_BUILD").is_some() {
        // SAFETY: the build script is single-threaded; the eBPF build it spawns inherits it.
        unsafe { std::env::set_var("XNOS_EBPF_NEXT_BUILD", "1") };
    }
    aya_build::build_ebpf(
        [Package {
            name: "xnos-ebpf",
            root_dir,
            ..Default::default()
        }],
        toolchain,
    )
}
