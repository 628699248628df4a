//! The lab's and the benchmarks' XDP programs, in an object of their own: the guard's object
//! (`src/main.rs`) carries only guard programs, and the product never loads this one.
//!
//! `lab_peer_pass` lets native XDP on veth deliver XDP_TX frames (and makes the lab's loss);
//! `lab_flood_frames` is the live-frames flood generator; `bench_floor` and
//! `bench_kernel_cookie` are the XDP benchmark's references.
#![no_std]
#![no_main]

mod flood;
mod floor;
mod kernel_cookie;

use aya_ebpf::{
    bindings::xdp_action::{XDP_ABORTED, XDP_PASS, XDP_TX},
    macros::{map, xdp},
    maps::Array,
    programs::XdpContext,
};
use synguard_common::maps::{FloodPacing, LAB_FLOOD_FRAME_LEN};

/// Set at load time for the lab's loss tests: drop about one in this many frames larger than
/// a bare ACK (0: drop nothing). This kernel has no netem, so the lab makes its own loss.
#[unsafe(no_mangle)]
static LAB_DROP_ONE_IN: u32 = 0;

/// Set at load time for the lab's client side: its IPv4 address (as the frame's bytes read
/// it), so that frames to any other address drop here (0: keep everything). Answers to a
/// flood's spoofed sources come back this way in the lab; a real network never delivers
/// them to this host, so they should not cost its TCP stack anything.
#[unsafe(no_mangle)]
static LAB_ONLY_FOR_IPV4: u32 = 0;

/// Passes everything (or, for loss tests, nearly everything; on the client side, everything
/// for its own address). Native XDP on veth delivers XDP_TX/XDP_REDIRECT frames only when the
/// peer device runs an XDP program too, so the lab attaches this one to the peers.
#[xdp]
pub fn lab_peer_pass(ctx: XdpContext) -> u32 {
    // SAFETY: read-only globals the loader may have overridden.
    let only_for = unsafe { core::ptr::read_volatile(&LAB_ONLY_FOR_IPV4) };
    // An untagged IPv4 frame's destination address ends 34 bytes in.
    let (data, end) = (ctx.data(), ctx.data_end());
    if only_for != 0 && data + 34 <= end {
        // SAFETY: the first 34 bytes are in the frame, checked just above.
        let (ethertype, destination) = unsafe {
            (
                core::ptr::read_unaligned((data + 12) as *const u16),
                core::ptr::read_unaligned((data + 30) as *const u32),
            )
        };
        if ethertype == u16::from_ne_bytes([0x08, 0x00]) && destination != only_for {
            return aya_ebpf::bindings::xdp_action::XDP_DROP;
        }
    }
    // SAFETY: as above.
    let one_in = unsafe { core::ptr::read_volatile(&LAB_DROP_ONE_IN) };
    // SAFETY: no arguments, no memory.
    if one_in != 0
        && ctx.data_end() - ctx.data() > 100
        && unsafe { aya_ebpf::helpers::generated::bpf_get_prandom_u32() } % one_in == 0
    {
        return aya_ebpf::bindings::xdp_action::XDP_DROP;
    }
    XDP_PASS
}

/// Set at load time for the lab's live-frames flood generator: the interface its frames go
/// out of, and how many low bits of the template's IPv4 source it randomizes.
#[unsafe(no_mangle)]
static LAB_FLOOD_IFINDEX: u32 = 0;
#[unsafe(no_mangle)]
static LAB_FLOOD_SOURCE_BITS: u32 = 0;

/// The lab flood generator's template, written by its loader before each batch: a recycled
/// page holds whatever the receiver left in it, so every run writes the whole frame.
#[map]
static LAB_FLOOD_TEMPLATE: Array<[u8; LAB_FLOOD_FRAME_LEN]> = Array::with_max_entries(1, 0);

/// The lab flood generator's pace, written by its loader (see `FloodPacing`).
#[map]
static LAB_FLOOD_PACING: Array<FloodPacing> = Array::with_max_entries(1, 0);

/// The lab's flood generator (see `flood`), run through BPF_PROG_TEST_RUN in live-frames
/// mode; never attached.
#[xdp]
pub fn lab_flood_frames(ctx: XdpContext) -> u32 {
    // SAFETY: read-only globals the loader overrides.
    let (ifindex, source_bits) = unsafe {
        (
            core::ptr::read_volatile(&LAB_FLOOD_IFINDEX),
            core::ptr::read_volatile(&LAB_FLOOD_SOURCE_BITS),
        )
    };
    if let Some(pacing) = LAB_FLOOD_PACING.get_ptr_mut(0) {
        // SAFETY: one generator runs a loaded object, from one thread: nothing else writes
        // the entry.
        let pacing = unsafe { &mut *pacing };
        if pacing.interval_ns != 0 {
            match pacing.take_slot(flood::now_ns()) {
                Some(slot) => flood::wait_until(slot),
                None => return aya_ebpf::bindings::xdp_action::XDP_DROP,
            }
        }
    }
    let Some(template) = LAB_FLOOD_TEMPLATE.get(0) else {
        return XDP_ABORTED;
    };
    if !flood::randomize(&ctx, template, source_bits) {
        return aya_ebpf::bindings::xdp_action::XDP_DROP;
    }
    // SAFETY: a helper call with plain integers.
    unsafe { aya_ebpf::helpers::generated::bpf_redirect(ifindex, 0) as u32 }
}

/// The benchmark floor: the least a reply path can do. Swaps MACs, IPv4 addresses and TCP
/// ports of an untagged IPv4/TCP frame in place and sends it back.
#[xdp]
pub fn bench_floor(ctx: XdpContext) -> u32 {
    floor::swap_for_floor(&ctx);
    XDP_TX
}

/// A benchmark reference: a SYN answered with the kernel's own cookie helper (see
/// `kernel_cookie`).
#[xdp]
pub fn bench_kernel_cookie(ctx: XdpContext) -> u32 {
    kernel_cookie::kernel_cookie_syn_ack(&ctx)
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
