//! synguard's XDP programs. Thin by design: parse (with `synguard_common`), decide (with
//! `synguard_common`), count, act. Everything with logic in it is shared with the host tests.
#![no_std]
#![no_main]

mod frame;

use aya_ebpf::{
    bindings::xdp_action::{XDP_ABORTED, XDP_PASS},
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use synguard_common::{
    counters::CounterBlock,
    parse::parse_frame_with,
    tcp_options::TcpOptionWalker,
    verdict::{Action, classify},
};

use crate::frame::XdpFrame;

/// Per-CPU counters; the map name is `synguard_common::counters::COUNTERS_MAP`.
#[map]
static COUNTERS: PerCpuArray<CounterBlock> = PerCpuArray::with_max_entries(1, 0);

/// Scratch space for the TCP option walk, kept in map memory on purpose (see
/// `synguard_common::parse::parse_frame_with`).
#[map]
static TCP_WALKER: PerCpuArray<TcpOptionWalker> = PerCpuArray::with_max_entries(1, 0);

/// The guard: attached to the interface that faces the clients.
#[xdp]
pub fn synguard(ctx: XdpContext) -> u32 {
    let Some(walker) = TCP_WALKER.get_ptr_mut(0) else {
        // Index 0 of a one-entry array always exists; XDP_ABORTED shows in the xdp_exception
        // tracepoint should that ever be wrong.
        return XDP_ABORTED;
    };
    // SAFETY: per-CPU entry, used only during this run of the program.
    let parsed = parse_frame_with(&XdpFrame(&ctx), unsafe { &mut *walker });
    let verdict = classify(&parsed);
    if let Some(block) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: per-CPU value, only this CPU writes it and nothing else holds the pointer.
        unsafe { (*block).record(&parsed, verdict) };
    }
    if verdict.action == Action::Drop {
        debug!(&ctx, "drop: {}", verdict.reason.name());
    }
    verdict.action.xdp_code()
}

/// Does nothing but pass. Native XDP on veth delivers XDP_TX/XDP_REDIRECT frames only when the
/// peer device runs an XDP program too, so the lab attaches this one to the peers.
#[xdp]
pub fn lab_peer_pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Reachable only if a bounds check could fail; the verifier then refuses the infinite
    // loop at load time, which is the error we want (never a silent assumption).
    loop {}
}

/// GPL-compatible so that GPL-only helpers stay available.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
