//! synguard's XDP programs. Thin by design: parse, look up maps, act, count. Everything with
//! logic in it (parser, verdicts, cookies, the SYN-ACK) lives in `synguard_common`, shared
//! with the host tests.
#![no_std]
#![no_main]

mod frame;
mod syn_cookie;

use aya_ebpf::{
    bindings::{
        BPF_F_NO_PREALLOC,
        xdp_action::{XDP_ABORTED, XDP_PASS, XDP_TX},
    },
    macros::{map, xdp},
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use synguard_common::{
    cookie::{CookieKeys, FlowKey},
    counters::{Counter, CounterBlock, Tally},
    maps::{
        FLOWS_CAPACITY, FlowEntry, HANDSHAKES_RING_BYTES, PROTECTED_CAPACITY, ProtectedAddress,
        ProtectedPorts, ipv4_mapped,
    },
    parse::{IpAddrs, L3, ParsedFrame, TcpSegment, Transport, parse_frame_with},
    syn_ack::{SYN_ACK_BUF_LEN, SynAckSettings},
    tcp_options::TcpOptionWalker,
    verdict::{Action, ProtectedStep, Verdict, classify, protected_step},
};

use crate::frame::XdpFrame;

/// Per-CPU counters; the map name is `synguard_common::counters::COUNTERS_MAP`.
#[map]
static COUNTERS: PerCpuArray<CounterBlock> = PerCpuArray::with_max_entries(1, 0);

/// Scratch space for the TCP option walk, kept in map memory on purpose (see
/// `synguard_common::parse::parse_frame_with`).
#[map]
static TCP_WALKER: PerCpuArray<TcpOptionWalker> = PerCpuArray::with_max_entries(1, 0);

/// Scratch space for the SYN-ACK being written: too large for the 512-byte BPF stack.
#[map]
static SYN_ACK_SCRATCH: PerCpuArray<[u8; SYN_ACK_BUF_LEN]> = PerCpuArray::with_max_entries(1, 0);

/// A TCP segment to a protected service, handed to the cookie actions (scratch, per CPU).
#[map]
static GUARDED: PerCpuArray<Guarded> = PerCpuArray::with_max_entries(1, 0);

/// Current and previous cookie keys, written by the controller.
#[map]
static COOKIE_KEYS: Array<CookieKeys> = Array::with_max_entries(1, 0);

/// What our SYN-ACKs announce, written by the controller.
#[map]
static SYN_ACK_SETTINGS: Array<SynAckSettings> = Array::with_max_entries(1, 0);

/// Protected destinations: prefix (IPv4 as IPv4-mapped IPv6) to its protected ports.
#[map]
static PROTECTED: LpmTrie<ProtectedAddress, ProtectedPorts> =
    LpmTrie::with_max_entries(PROTECTED_CAPACITY, BPF_F_NO_PREALLOC);

/// Flows whose cookie validated.
#[map]
static FLOWS: LruHashMap<FlowKey, FlowEntry> = LruHashMap::with_max_entries(FLOWS_CAPACITY, 0);

/// Validated handshakes, for the controller.
#[map]
static HANDSHAKES: RingBuf = RingBuf::with_byte_size(HANDSHAKES_RING_BYTES, 0);

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
    let mut verdict = classify(&parsed);
    let tally = Tally::of(&parsed);
    if let (
        Ok(ParsedFrame {
            l3: L3::Ip(packet), ..
        }),
        Action::Pass,
    ) = (&parsed, verdict.action)
        && let Transport::Tcp(tcp) = &packet.transport
        && is_protected(&packet.addrs, tcp.dst_port)
        && let Some(guarded) = GUARDED.get_ptr_mut(0)
    {
        // Copied into map memory: the cookie work then needs no stack for it.
        // SAFETY: per-CPU entry, used only during this run of the program.
        let guarded = unsafe { &mut *guarded };
        guarded.flow = FlowKey::from_client_segment(&packet.addrs, tcp);
        guarded.tcp = *tcp;
        guarded.l3_offset = packet.l3_offset;
        verdict = guard_tcp(&ctx, guarded);
    }
    if let Some(block) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: per-CPU value, only this CPU writes it and nothing else holds the pointer.
        unsafe { (*block).record(tally, verdict) };
    }
    if verdict.action == Action::Drop {
        debug!(&ctx, "drop: {}", verdict.reason.name());
    }
    verdict.action.xdp_code()
}

/// A TCP segment to a protected service: what the cookie actions need of it.
pub struct Guarded {
    pub flow: FlowKey,
    pub tcp: TcpSegment,
    pub l3_offset: u16,
}

#[inline(always)]
fn is_protected(addrs: &IpAddrs, port: u16) -> bool {
    let address = match addrs {
        IpAddrs::V4 { dst, .. } => ipv4_mapped(dst),
        IpAddrs::V6 { dst, .. } => *dst,
    };
    PROTECTED
        .get(Key::new(128, address))
        .is_some_and(|ports| ports.contains(port))
}

#[inline(always)]
fn guard_tcp(ctx: &XdpContext, guarded: &Guarded) -> Verdict {
    let known = || FLOWS.get_ptr(&guarded.flow).is_some();
    match protected_step(guarded.tcp.flags, known) {
        ProtectedStep::AnswerWithCookie => syn_cookie::answer_syn(ctx, guarded),
        ProtectedStep::CheckCookie => syn_cookie::check_ack(guarded),
        ProtectedStep::AwaitBackend => Verdict {
            action: Action::Drop,
            reason: Counter::DropAwaitingBackend,
        },
        ProtectedStep::Pass => Verdict {
            action: Action::Pass,
            reason: Counter::PassTcp,
        },
    }
}

/// Does nothing but pass. Native XDP on veth delivers XDP_TX/XDP_REDIRECT frames only when the
/// peer device runs an XDP program too, so the lab attaches this one to the peers.
#[xdp]
pub fn lab_peer_pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

/// The benchmark floor: the least a reply path can do. Swaps MACs, IPv4 addresses and TCP
/// ports of an untagged IPv4/TCP frame in place and sends it back.
#[xdp]
pub fn bench_floor(ctx: XdpContext) -> u32 {
    frame::swap_for_floor(&ctx);
    XDP_TX
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
