//! Builds the eBPF object with the pinned nightly and embeds it (see `xtask bootstrap`).
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let toolchain = include_str!("../xdp-ebpf/nightly-toolchain").trim();
    println!("cargo:rerun-if-changed=../common/src");
    // A build's mark inside its eBPF object (the upgrade test builds a second, different one).
    println!("cargo:rerun-if-env-changed=SYNGUARD_BUILD_SALT");
    aya_build::build_ebpf(
        [Package {
            name: "xdp-ebpf",
            root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../xdp-ebpf"),
            ..Default::default()
        }],
        Toolchain::Custom(toolchain),
    )
}
