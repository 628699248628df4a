//! The lab's and the benchmarks' eBPF object (`xdp-ebpf/src/lab/`), for the `synguard-lab`
//! binary and the data-plane harness; built only with the `lab` feature, so neither the
//! `synguard` binary nor its package carries it.

use anyhow::{Context, Result};
use aya::{Ebpf, EbpfLoader, maps::Array};
use synguard_common::maps::{FloodPacing, LAB_FLOOD_PACING_MAP};

/// The lab object, built from `xdp-ebpf` by `build.rs` beside the guard's.
pub static LAB_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/synguard-lab"));

/// The program the lab attaches to peer veths (see the lab in xtask); also the benchmark's
/// measure of what BPF_PROG_TEST_RUN itself costs.
pub const PEER_PASS_PROGRAM: &str = "lab_peer_pass";
/// Its loss knob and its address filter (globals set at load time).
pub const LAB_DROP_ONE_IN: &str = "LAB_DROP_ONE_IN";
pub const LAB_ONLY_FOR_IPV4: &str = "LAB_ONLY_FOR_IPV4";
/// The lab's live-frames flood generator and its load-time settings.
pub const LAB_FLOOD_PROGRAM: &str = "lab_flood_frames";
pub const LAB_FLOOD_IFINDEX: &str = "LAB_FLOOD_IFINDEX";
pub const LAB_FLOOD_SOURCE_BITS: &str = "LAB_FLOOD_SOURCE_BITS";
/// The benchmark floor: swap addresses and ports, XDP_TX.
pub const BENCH_FLOOR_PROGRAM: &str = "bench_floor";
/// The benchmark reference: a SYN answered with the kernel's own cookie helper.
pub const BENCH_KERNEL_COOKIE_PROGRAM: &str = "bench_kernel_cookie";

/// Loads the lab object with `globals` (name, value) set.
pub fn load(globals: &[(&str, u32)]) -> Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    for (name, value) in globals {
        loader.override_global(name, value, true);
    }
    loader
        .load(LAB_OBJECT)
        .context("loading the lab's eBPF object into the kernel")
}

/// Sets the lab flood generator's pace, frames per second (0: unpaced), a fresh schedule.
pub fn set_flood_rate(ebpf: &mut Ebpf, rate: u64) -> Result<()> {
    let mut map: Array<_, FloodPacing> = Array::try_from(
        ebpf.map_mut(LAB_FLOOD_PACING_MAP)
            .context("the flood pacing map is missing")?,
    )?;
    map.set(0, FloodPacing::at_rate(rate), 0)?;
    Ok(())
}
