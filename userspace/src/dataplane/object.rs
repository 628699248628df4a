//! The compiled eBPF object, embedded at build time, and loading it into the kernel.

use std::path::Path;

use anyhow::{Context, Result};
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, ProgramArray},
    programs::Xdp,
};
use log::LevelFilter;

use crate::dataplane::map_source::MapSource;
use synguard_common::{
    counters::{COUNTERS_MAP, CounterBlock},
    maps::{
        FLOWS_CAPACITY, FLOWS_MAP, STAGE_CLIENT_SEGMENT, STAGE_ICMP_FROM_CLIENT,
        STAGE_ICMP_FROM_SERVER, STAGES_MAP, TO_CLIENT, TO_SERVER,
    },
};

/// The guard's object, built from `xdp-ebpf` by `build.rs` (guard programs only).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-ebpf"));

/// The guard program's name in the object (client side).
pub const GUARD_PROGRAM: &str = "synguard";
/// The guard's program for the interface facing the protected servers.
pub const SERVER_PROGRAM: &str = "synguard_server";
/// Loads the object (maps created, programs not yet verified). The in-kernel log level is fixed
/// at load time, so disabled log statements cost nothing per packet.
pub fn load(log_level: LevelFilter) -> Result<Ebpf> {
    load_sized(log_level, FLOWS_CAPACITY)
}

/// [`load`] with a flows map of `max_flows` entries.
pub fn load_sized(log_level: LevelFilter, max_flows: u32) -> Result<Ebpf> {
    load_with(log_level, max_flows, None)
}

/// [`load_sized`] with the maps pinned in `dir` (those already pinned there are reused: a
/// restarted controller adopts its predecessor's state).
pub fn load_pinned(log_level: LevelFilter, max_flows: u32, dir: &Path) -> Result<Ebpf> {
    load_with(log_level, max_flows, Some(dir))
}

fn load_with(log_level: LevelFilter, max_flows: u32, pin_dir: Option<&Path>) -> Result<Ebpf> {
    // aya-log numbers levels Error=1 .. Trace=5, and 0 silences everything, like LevelFilter.
    let level = log_level as usize as u8;
    let mut loader = EbpfLoader::new();
    loader
        .override_global(aya_log::LEVEL, &level, true)
        .map_max_entries(FLOWS_MAP, max_flows);
    if let Some(dir) = pin_dir {
        for name in crate::dataplane::persist::PINNED_MAPS {
            loader.map_pin_path(name, dir.join(name));
        }
    }
    loader
        .load(EBPF_OBJECT)
        .context("loading the eBPF object into the kernel")
}

/// Verifies and loads one XDP program of the object.
pub fn load_xdp<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    let program: &mut Xdp = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the eBPF object"))?
        .try_into()?;
    program
        .load()
        .with_context(|| format!("the kernel refused to load program {name}"))?;
    Ok(program)
}

/// The later stages, by their index in the `STAGES` tail-call map.
pub const STAGE_PROGRAMS: [(u32, &str); 5] = [
    (TO_SERVER as u32, "forward_to_server"),
    (TO_CLIENT as u32, "forward_to_client"),
    (STAGE_CLIENT_SEGMENT, "client_segment"),
    (STAGE_ICMP_FROM_CLIENT, "icmp_from_client"),
    (STAGE_ICMP_FROM_SERVER, "icmp_from_server"),
];

/// Loads the later stages and puts them where the guard programs tail-call them.
pub fn load_stages(ebpf: &mut Ebpf) -> Result<()> {
    for (index, name) in STAGE_PROGRAMS {
        let fd = load_xdp(ebpf, name)?
            .fd()
            .with_context(|| format!("program {name} has no fd"))?
            .try_clone()?;
        let mut jumps: ProgramArray<_> = ProgramArray::try_from(
            ebpf.map_mut(STAGES_MAP)
                .context("map STAGES missing from the eBPF object")?,
        )?;
        jumps
            .set(index, &fd, 0)
            .with_context(|| format!("registering {name} for tail calls"))?;
    }
    Ok(())
}

/// An (already loaded) program of the object.
pub fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    Ok(ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the eBPF object"))?
        .try_into()?)
}

/// The per-CPU counters map.
pub fn counters_map(maps: &mut impl MapSource) -> Result<PerCpuArray<MapData, CounterBlock>> {
    maps.take(COUNTERS_MAP)
}
