//! synguard's XDP programs. Thin by design: parse, look up maps, act, count. Everything with
//! logic in it (parser, verdicts, cookies, segments, translation) lives in `synguard_common`,
//! shared with the host tests.
//!
//! Two guard programs, one per side: `synguard` on the interface facing the clients (cookies,
//! the backend SYN, client-to-server forwarding) and `synguard_server` on the interface facing
//! the protected servers (the join, server-to-client forwarding).
#![no_std]
#![no_main]

mod clock;
mod emit;
mod events;
mod flows;
mod frame;
mod icmp;
mod route;
mod syn_cookie;
mod tcp_checksum;

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, xdp_action::XDP_ABORTED},
    macros::{map, xdp},
    maps::{
        Array, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, ProgramArray, RingBuf,
        lpm_trie::Key,
    },
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use synguard_common::{
    checksum::PAYLOAD_SUM_BUF_LEN,
    cookie::{CookieKeys, FlowKey},
    counters::{Counter, CounterBlock, Tally},
    field::icmp::{IPPROTO_ICMP, IPPROTO_ICMPV6},
    flow_filter::{FlowFilterHalf, flow_filter_slot, may_hold},
    maps::{
        ALLOWED_CAPACITY, AllowValue, BLOCKED_CAPACITY, BlockValue, FLOW_EVENTS_RING_BYTES,
        FLOWS_CAPACITY, FORGOTTEN_CAPACITY, FlowEntry, ForgottenFlow, PROTECTED_CAPACITY,
        PolicySettings, ProtectedAddress, ProtectedPorts, SERVICES_CAPACITY, SOURCES_CAPACITY,
        STAGE_CLIENT_SEGMENT, STAGE_COUNT, STAGE_ICMP_FROM_CLIENT, STAGE_ICMP_FROM_SERVER,
        ServiceConfig, ServiceCounters, SourceCounters, SourceKey, TO_CLIENT, TO_SERVER,
        VOUCHED_CAPACITY, ipv4_mapped, mode, phase,
    },
    parse::{
        IpAddrs, L3, ParseScratch, ParsedFrame, TcpFlags, TcpSegment, TransportKind,
        parse_frame_with,
    },
    segment::{SEGMENT_BUF_LEN, SynAckSettings},
    sketch::{SKETCH_BLOCKS, SketchBlock, count_and_pass, sketch_place},
    token_bucket::TokenBucket,
    verdict::{
        Action, Admission, ClientStep, Known, ServerStep, Verdict, admission, classify,
        client_step, of_a_forgotten_flow, pass_ip, server_step,
    },
};

use crate::{clock::now_coarse_ns, frame::XdpFrame};

/// Per-CPU counters; the map name is `synguard_common::counters::COUNTERS_MAP`.
#[map]
static COUNTERS: PerCpuArray<CounterBlock> = PerCpuArray::with_max_entries(1, 0);

/// The parser's scratch space, kept in map memory on purpose (see
/// `synguard_common::parse::parse_frame_with`). It also holds the TCP header that forwarding
/// rewrites in place.
#[map]
static PARSE_SCRATCH: PerCpuArray<ParseScratch> = PerCpuArray::with_max_entries(1, 0);

/// Scratch space for a segment being written: too large for the 512-byte BPF stack.
#[map]
static SEGMENT_SCRATCH: PerCpuArray<[u8; SEGMENT_BUF_LEN]> = PerCpuArray::with_max_entries(1, 0);

/// A payload copied for its checksum (see `tcp_checksum`).
#[map]
static PAYLOAD_SCRATCH: PerCpuArray<[u8; PAYLOAD_SUM_BUF_LEN]> =
    PerCpuArray::with_max_entries(1, 0);

/// Scratch space for the FIB lookup of a forwarded frame (too large for the stack).
#[map]
static FIB_SCRATCH: PerCpuArray<aya_ebpf::bindings::bpf_fib_lookup> =
    PerCpuArray::with_max_entries(1, 0);

/// The later stages, reached by tail call: the forwarding programs at index `TO_SERVER` and
/// `TO_CLIENT`, the client-segment program at `STAGE_CLIENT_SEGMENT`. Each has its own
/// instruction budget (the verifier walks the parser's paths and the actions' apart). The
/// controller fills it at load time (`synguard::object::load_stages`).
#[map]
static STAGES: ProgramArray = ProgramArray::with_max_entries(STAGE_COUNT, 0);

/// A new flow entry being built before it goes into the flows map (too large for the stack).
#[map]
static NEW_FLOW: PerCpuArray<FlowEntry> = PerCpuArray::with_max_entries(1, 0);

/// A TCP segment to or from a protected service, handed to the actions (scratch, per CPU).
#[map]
static GUARDED: PerCpuArray<Guarded> = PerCpuArray::with_max_entries(1, 0);

/// Current and previous cookie keys, written by the controller.
#[map]
static COOKIE_KEYS: Array<CookieKeys> = Array::with_max_entries(1, 0);

/// What our SYN-ACKs announce, written by the controller.
#[map]
static SYN_ACK_SETTINGS: Array<SynAckSettings> = Array::with_max_entries(1, 0);

/// Protected destinations: prefix (IPv4 as IPv4-mapped IPv6) to the service slot of each port.
#[map]
static PROTECTED: LpmTrie<ProtectedAddress, ProtectedPorts> =
    LpmTrie::with_max_entries(PROTECTED_CAPACITY, BPF_F_NO_PREALLOC);

/// Each protected service's mode, by slot; written by the controller (auto mode's switch too).
#[map]
static SERVICES: Array<ServiceConfig> = Array::with_max_entries(SERVICES_CAPACITY, 0);

/// Each protected service's SYN counts, by slot, per CPU (every SYN touches them).
#[map]
static SERVICE_COUNTERS: PerCpuArray<ServiceCounters> =
    PerCpuArray::with_max_entries(SERVICES_CAPACITY, 0);

/// What each source did to each service, per CPU (a flood from one source is hot).
#[map]
static SOURCES: LruPerCpuHashMap<SourceKey, SourceCounters> =
    LruPerCpuHashMap::with_max_entries(SOURCES_CAPACITY, 0);

/// When each source last completed a handshake with each service, shared by all CPUs
/// (written once per validated cookie, read only for SYNs over their bucket).
#[map]
static VOUCHED: LruHashMap<SourceKey, u64> = LruHashMap::with_max_entries(VOUCHED_CAPACITY, 0);

/// Blocked source prefixes (policy decisions and the operator's): dropped before anything else.
#[map]
static BLOCKED: LpmTrie<ProtectedAddress, BlockValue> =
    LpmTrie::with_max_entries(BLOCKED_CAPACITY, BPF_F_NO_PREALLOC);

/// Allowed source prefixes: never blocked; a value of 1 also skips the cookie challenge.
#[map]
static ALLOWED: LpmTrie<ProtectedAddress, AllowValue> =
    LpmTrie::with_max_entries(ALLOWED_CAPACITY, BPF_F_NO_PREALLOC);

/// The key of the trie lookup at hand (scratch, per CPU: the stack is full).
#[map]
static TRIE_KEY: PerCpuArray<Key<ProtectedAddress>> = PerCpuArray::with_max_entries(1, 0);

/// What a source's counters start from (read-only; no zeroed value on the stack).
static NEW_SOURCE: SourceCounters = SourceCounters {
    syns: 0,
    cookies_sent: 0,
    cookies_validated: 0,
    invalid_acks: 0,
    out_of_state: 0,
    syns_over_rate: 0,
    bucket: TokenBucket {
        micro_tokens: 0,
        refilled_ns: 0,
    },
};

/// The gate in front of `SOURCES` (see `synguard_common::sketch`), zeroed by the controller
/// every policy interval.
#[map]
static SOURCE_SKETCH: PerCpuArray<SketchBlock> = PerCpuArray::with_max_entries(SKETCH_BLOCKS, 0);

/// What the data plane enforces per source on its own, written by the controller.
#[map]
static POLICY_SETTINGS: Array<PolicySettings> = Array::with_max_entries(1, 0);

/// Validated flows. The controller sets the size at load time (`--max-flows`).
#[map]
static FLOWS: LruHashMap<FlowKey, FlowEntry> = LruHashMap::with_max_entries(FLOWS_CAPACITY, 0);

/// The filter in front of `FLOWS` (see `synguard_common::flow_filter`): its two halves,
/// memory-mapped by the controller, which rebuilds one while the other is read.
#[map]
static FLOW_FILTER: Array<FlowFilterHalf> = Array::with_max_entries(2, BPF_F_MMAPABLE);

/// Which half of `FLOW_FILTER` the client side reads, written by the controller.
#[map]
static FLOW_FILTER_ACTIVE: Array<u32> = Array::with_max_entries(1, 0);

/// The budget of RSTs for segments of forgotten flows, per CPU (see
/// `synguard_common::maps::FORGOTTEN_RESETS_PER_SECOND`).
#[map]
static RESET_BUDGET: PerCpuArray<TokenBucket> = PerCpuArray::with_max_entries(1, 0);

/// Flows the controller let go of while their ends may still hold them, with what it takes to
/// reset both (see `synguard_common::maps::ForgottenFlow`); their keys are marked in the flows
/// filter, so a client segment of no flow looks here only when the filter let it through.
#[map]
static FORGOTTEN: LruHashMap<FlowKey, ForgottenFlow> =
    LruHashMap::with_max_entries(FORGOTTEN_CAPACITY, 0);

/// Flow events (validations, joins, control segments), for the controller.
#[map]
static FLOW_EVENTS: RingBuf = RingBuf::with_byte_size(FLOW_EVENTS_RING_BYTES, 0);

/// An IP packet from a client, or a TCP segment from a server: what the later stages and the
/// actions need of it.
pub struct Guarded {
    pub flow: FlowKey,
    /// The packet's addresses, as parsed.
    pub addrs: IpAddrs,
    /// The source as the allow/block tries and the per-source counters key it (with the
    /// service slot once known), filled in by the client-segment stage.
    pub source: SourceKey,
    /// What the packet carries (`transport_code`): the client side hands on every IP packet
    /// (for the blocked check), not only TCP segments. A plain byte: a Rust enum read back
    /// from map memory would let LLVM assume its range, and the verifier cannot.
    pub transport: u8,
    /// The IP protocol number (the last next-header for IPv6).
    pub protocol: u8,
    pub tcp: TcpSegment,
    pub l3_offset: u16,
    pub l4_offset: u16,
    /// Offset just past the IP payload.
    pub ip_end: u16,
    /// What the frame adds to the counters, for a tail-called program to record.
    pub tally: Tally,
}

/// A parsed frame: its verdict so far, what it adds to the counters, and (for well-formed TCP
/// of a protected service) the segment for the actions.
struct Parsed {
    verdict: Verdict,
    tally: Tally,
    guarded: Option<&'static mut Guarded>,
}

/// Parses the frame; `from_client` says which side it came from. A client's IP packet goes on
/// to the client-segment stage whatever it carries (its source may be blocked); a server's
/// TCP segment is looked up in the flows map.
/// Plain code, no closures: a closure LLVM declines to inline becomes a BPF subprogram, and
/// the Rust types crossing it trip the verifier.
#[inline(always)]
fn parse(ctx: &XdpContext, scratch: &mut ParseScratch, from_client: bool) -> Parsed {
    let parsed = parse_frame_with(&XdpFrame(ctx), scratch);
    let verdict = classify(&parsed);
    let tally = Tally::of(&parsed);
    let mut guarded = None;
    if let (
        Ok(ParsedFrame {
            l3: L3::Ip(packet), ..
        }),
        Action::Pass,
    ) = (&parsed, verdict.action)
        && let transport = transport_code(packet.transport.kind, packet.transport.protocol)
        && (from_client || transport == TRANSPORT_TCP || transport == TRANSPORT_ICMP)
        && let Some(slot) = GUARDED.get_ptr_mut(0)
    {
        // Copied into map memory: the later stages and the actions then need no stack for it.
        // SAFETY: per-CPU entry, used only during this run of the program.
        let slot = unsafe { &mut *slot };
        let tcp = &scratch.segment;
        slot.flow = if from_client {
            FlowKey::from_client_segment(&packet.addrs, tcp)
        } else {
            FlowKey::from_server_segment(&packet.addrs, tcp)
        };
        // Copied as parsed: mapping IPv4 into IPv6 here (a branch on the family) makes the
        // verifier track the parser's paths apart and run out of budget.
        slot.addrs = packet.addrs;
        slot.transport = transport;
        slot.protocol = packet.transport.protocol;
        // A plain copy, not `slot.tcp = *tcp`: LLVM turns that into a memmove, which it
        // cannot inline for BPF and the byte loop it calls costs a few percent of a SYN.
        // SAFETY: two distinct per-CPU map values.
        unsafe { core::ptr::copy_nonoverlapping(tcp, &mut slot.tcp, 1) };
        slot.l3_offset = packet.l3_offset;
        slot.l4_offset = packet.l4_offset;
        slot.ip_end = packet.ip_end;
        guarded = Some(slot);
    }
    Parsed {
        verdict,
        tally,
        guarded,
    }
}

/// Counts the outcome and returns the XDP action.
#[inline(always)]
fn finish(ctx: &XdpContext, tally: Tally, verdict: Verdict) -> u32 {
    if let Some(block) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: per-CPU value, only this CPU writes it and nothing else holds the pointer.
        unsafe { verdict.count_into(&mut *block, tally) };
    }
    if verdict.action == Action::Drop {
        debug!(ctx, "drop: {}", verdict.reason.name());
    }
    verdict.action.xdp_code()
}

#[inline(always)]
fn scratch() -> Option<&'static mut ParseScratch> {
    // SAFETY: per-CPU entry, used only during this run of the program.
    PARSE_SCRATCH
        .get_ptr_mut(0)
        .map(|scratch| unsafe { &mut *scratch })
}

/// What the flows map says of a flow, and its entry when there is one.
#[inline(always)]
fn lookup(flow: &FlowKey) -> (Known, *mut FlowEntry) {
    match FLOWS.get_ptr_mut(flow) {
        None => (Known::No, core::ptr::null_mut()),
        Some(entry) => {
            // SAFETY: a live map value; the LRU may recycle it only after this program returns.
            let e = unsafe { &*entry };
            let known = if e.phase == phase::ADMITTED {
                Known::Admitted
            } else if e.phase != phase::JOINED {
                Known::AwaitingBackend
            } else if e.both_closed() {
                Known::Closed
            } else {
                Known::Joined
            };
            (known, entry)
        }
    }
}

/// [`lookup`] for a client's segment: the filter first, so that a segment of no flow (nearly
/// all of a flood) skips the flows map and the cache miss its lookup costs; past the filter, a
/// flow not in the flows map may be one the guard forgot.
#[inline(always)]
fn lookup_from_client(flow: &FlowKey) -> (Known, *mut FlowEntry) {
    let active = match FLOW_FILTER_ACTIVE.get(0) {
        Some(active) => *active & 1,
        None => 0,
    };
    match FLOW_FILTER.get(active) {
        Some(half) if !may_hold(half, flow_filter_slot(flow)) => (Known::No, core::ptr::null_mut()),
        _ => match lookup(flow) {
            (Known::No, _) if FORGOTTEN.get_ptr(flow).is_some() => {
                (Known::Forgotten, core::ptr::null_mut())
            }
            found => found,
        },
    }
}

/// The client side: attached to the interface that faces the clients. Parses, and hands every
/// well-formed IP packet to the client-segment stage.
#[xdp]
pub fn synguard(ctx: XdpContext) -> u32 {
    let Some(scratch) = scratch() else {
        // Index 0 of a one-entry array always exists; XDP_ABORTED shows in the xdp_exception
        // tracepoint should that ever be wrong.
        return XDP_ABORTED;
    };
    let Parsed {
        mut verdict,
        tally,
        guarded,
    } = parse(&ctx, scratch, true);
    if let Some(guarded) = guarded {
        guarded.tally = tally;
        // SAFETY: a tail call with our own context; on success it does not return.
        unsafe { STAGES.tail_call(&ctx, STAGE_CLIENT_SEGMENT) };
        verdict = Verdict {
            action: Action::Drop,
            reason: Counter::DropNoConfig,
        };
    }
    finish(&ctx, tally, verdict)
}

/// A client's IP packet (tail-called by `synguard`, which left it in the per-CPU scratch
/// maps): blocked sources drop first; then, for a segment to a protected service, admission by
/// the service's mode, the step its flow is at, and the per-source accounting.
#[xdp]
pub fn client_segment(ctx: XdpContext) -> u32 {
    let Some(guarded) = GUARDED.get_ptr_mut(0) else {
        return XDP_ABORTED;
    };
    // SAFETY: per-CPU entry, used only during this run of the program.
    let guarded = unsafe { &mut *guarded };
    let tally = guarded.tally;
    guarded.source = SourceKey {
        addr: mapped(&guarded.addrs, true),
        slot: 0,
        _pad: [0; 3],
    };
    if is_blocked(&guarded.source.addr) {
        let blocked = Verdict {
            action: Action::Drop,
            reason: Counter::DropBlocked,
        };
        return finish(&ctx, tally, blocked);
    }
    if guarded.transport == TRANSPORT_ICMP {
        // SAFETY: a tail call with our own context; on success it does not return.
        unsafe { STAGES.tail_call(&ctx, STAGE_ICMP_FROM_CLIENT) };
    }
    let transport = match guarded.transport {
        TRANSPORT_TCP => TransportKind::Tcp,
        TRANSPORT_FRAGMENT => TransportKind::Fragment,
        _ => TransportKind::Other,
    };
    let service = if transport == TransportKind::Tcp {
        service_slot(&mapped(&guarded.addrs, false), guarded.tcp.dst_port)
    } else {
        0
    };
    if service == 0 {
        return finish(&ctx, tally, pass_ip(transport));
    }
    guarded.source.slot = service;
    let syn = guarded.tcp.flags.has(TcpFlags::SYN);
    let config = SERVICES.get(guarded.source.slot as u32);
    let (service_mode, cookies_on) = match config {
        Some(config) => (config.mode, config.cookies_on != 0),
        None => (0, true),
    };
    let service_counters = SERVICE_COUNTERS.get_ptr_mut(guarded.source.slot as u32);
    // The allowlist is looked up for SYNs only: nothing else opens a connection.
    let bypass = syn && allowed_source(&guarded.source.addr) == Some(1);
    let admission = admission(service_mode, cookies_on, bypass);
    let settings = POLICY_SETTINGS.get(0);
    let gate = match settings {
        Some(settings) => settings.track_after,
        None => 0,
    };
    // The source's counters, then the flows filter: for a flood's segment each is a cache
    // miss, and back to back the CPU waits for both at once.
    let counters = source_counters(&guarded.source, gate);
    let (known, entry) = lookup_from_client(&guarded.flow);
    let mut step = client_step(&guarded.tcp, known, admission);
    // One clock read for a SYN: the buckets it may take tokens from, and its cookie.
    let now = if syn { now_coarse_ns() } else { 0 };
    // Auto mode below its switch: past the service's direct rate on this CPU, cookies at once.
    if step == ClientStep::AdmitDirectly && !bypass {
        let within = match (config, service_counters) {
            // SAFETY: per-CPU value, only this CPU writes it.
            (Some(config), Some(service)) => unsafe { (*service).admit_direct(now, config) },
            _ => false,
        };
        if !within {
            step = client_step(&guarded.tcp, known, Admission::Cookie);
        }
    }
    // A SYN that would open a connection takes a token from its source's bucket (per CPU);
    // over the rate it drops here, or in monitor mode is only counted. (`& syn`, not `&&`:
    // with the short circuit LLVM left the value undefined on some paths yet spilled it, and
    // the verifier refuses to read a register never written.)
    let opens = matches!(
        step,
        ClientStep::AnswerWithCookie
            | ClientStep::AdmitDirectly
            | ClientStep::PassUntouched(Counter::PassMonitored)
    ) & syn;
    let over_rate = opens
        && !counters.is_null()
        && match settings {
            // SAFETY: checked non-null; a per-CPU value only this CPU writes.
            Some(settings) => !unsafe {
                (*counters).admit_syn(now, settings, || VOUCHED.get(&guarded.source).copied())
            },
            None => false,
        };
    let verdict = match step {
        _ if over_rate && admission != Admission::Untouched => Verdict {
            action: Action::Drop,
            reason: Counter::DropSynRate,
        },
        // Only SYNs are answered: `now` was read.
        ClientStep::AnswerWithCookie => syn_cookie::answer_syn(&ctx, guarded, now),
        ClientStep::AdmitDirectly => flows::admit(guarded),
        ClientStep::PassUntouched(reason) => Verdict {
            action: Action::Pass,
            reason,
        },
        // One call of each action per program: every inlined copy is walked by the verifier.
        ClientStep::CheckCookie
        | ClientStep::CheckCookieElseForward
        | ClientStep::CheckCookieElseResetForgotten
        | ClientStep::ResetForgotten => {
            let checked = if step == ClientStep::ResetForgotten {
                Verdict::new(Action::Drop, Counter::DropCookieInvalid)
            } else {
                syn_cookie::check_ack(&ctx, guarded)
            };
            let failed = checked.action == Action::Drop
                && matches!(
                    checked.reason,
                    Counter::DropCookieInvalid | Counter::DropCookieExpired
                );
            match step {
                _ if !failed => checked,
                // No valid cookie: a late segment of the connection that ended there.
                ClientStep::CheckCookieElseForward => {
                    jump_to_forward(&ctx, guarded, tally, TO_SERVER)
                }
                // No valid cookie: a segment of the connection the guard forgot.
                ClientStep::CheckCookieElseResetForgotten | ClientStep::ResetForgotten => {
                    flows::reset_forgotten(&ctx, guarded, true)
                }
                _ => checked,
            }
        }
        ClientStep::Forward => jump_to_forward(&ctx, guarded, tally, TO_SERVER),
        // SAFETY: `entry` is non-null whenever the flow is known.
        ClientStep::ResetBeforeJoin => flows::reset_before_join(
            guarded,
            unsafe { &*entry },
            TO_SERVER,
            Counter::ResetBeforeJoin,
        ),
        // SAFETY: `entry` is non-null whenever the flow is known.
        ClientStep::AwaitBackend => flows::hold_early_data(&ctx, guarded, unsafe { &*entry }),
        ClientStep::DropStray(reason) => Verdict {
            action: Action::Drop,
            reason,
        },
    };
    if let Some(service) = service_counters {
        // SAFETY: per-CPU value, only this CPU writes it.
        unsafe { (*service).note(syn, verdict.reason) };
    }
    if !counters.is_null() {
        // SAFETY: per-CPU value of a live entry, only this CPU writes it.
        unsafe { (*counters).note(syn, verdict.reason) };
    }
    finish(&ctx, tally, verdict)
}

/// Records that `source` just completed a handshake. A source already vouched for (a real
/// client connecting again) has its time rewritten in place: an LRU insert takes a free node,
/// copies the key and unlinks the old node under the map's locks, every time.
#[inline(always)]
fn vouch(source: &SourceKey, now_coarse: u64) {
    match VOUCHED.get_ptr_mut(source) {
        // SAFETY: a live map value; a concurrent writer on another CPU writes a time as good
        // as this one.
        Some(vouched) => unsafe { *vouched = now_coarse },
        // Best effort: a full LRU map evicts, and a lost entry only means the bucket applies.
        None => {
            let _ = VOUCHED.insert(source, &now_coarse, 0);
        }
    }
}

/// The per-CPU counters of a source and service; looked up (and created) only once the source
/// passes the sketch's `gate` (a lookup that misses is a cache miss, one per SYN of a
/// random-source flood), null before that (and if the map refused, which a full LRU map does
/// not: it evicts).
#[inline(always)]
fn source_counters(source: &SourceKey, gate: u16) -> *mut SourceCounters {
    if gate != 0 {
        let place = sketch_place(&source.addr);
        let Some(block) = SOURCE_SKETCH.get_ptr_mut(place.block) else {
            return core::ptr::null_mut();
        };
        // SAFETY: a per-CPU value only this CPU writes.
        if !count_and_pass(unsafe { &mut *block }, place.cells, gate) {
            return core::ptr::null_mut();
        }
    }
    if let Some(counters) = SOURCES.get_ptr_mut(source) {
        return counters;
    }
    let _ = SOURCES.insert(source, &NEW_SOURCE, 0);
    SOURCES.get_ptr_mut(source).unwrap_or(core::ptr::null_mut())
}

/// The server side: attached to the interface that faces the protected servers.
#[xdp]
pub fn synguard_server(ctx: XdpContext) -> u32 {
    let Some(scratch) = scratch() else {
        return XDP_ABORTED;
    };
    let Parsed {
        mut verdict,
        tally,
        guarded,
    } = parse(&ctx, scratch, false);
    if let Some(guarded) = guarded {
        if guarded.transport == TRANSPORT_ICMP {
            guarded.tally = tally;
            // SAFETY: a tail call with our own context; on success it does not return (when
            // the stage is missing, the error passes as any other IP packet).
            unsafe { STAGES.tail_call(&ctx, STAGE_ICMP_FROM_SERVER) };
            return finish(&ctx, tally, verdict);
        }
        let (known, entry) = lookup(&guarded.flow);
        // SAFETY: checked non-null first.
        let (acks_our_syn, direct) = if entry.is_null() {
            (false, false)
        } else {
            let e = unsafe { &*entry };
            (
                guarded.tcp.ack == e.client_isn.wrapping_add(1),
                e.admitted_directly != 0,
            )
        };
        // SAFETY (all arms but Untracked): `entry` is non-null whenever the flow is known.
        verdict = match server_step(guarded.tcp.flags, known, acks_our_syn, direct) {
            ServerStep::Untracked
                if known == Known::No
                    && of_a_forgotten_flow(guarded.tcp.flags)
                    && tracks_flows_of(&guarded.addrs, guarded.tcp.src_port) =>
            {
                flows::reset_forgotten(&ctx, guarded, false)
            }
            ServerStep::Untracked => verdict,
            ServerStep::Join => flows::join(&ctx, guarded, unsafe { &mut *entry }),
            ServerStep::JoinDirect => flows::join_direct(guarded, unsafe { &mut *entry }),
            ServerStep::ReAck => flows::re_ack(&ctx, guarded, unsafe { &*entry }),
            ServerStep::Forward => jump_to_forward(&ctx, guarded, tally, TO_CLIENT),
            ServerStep::RefusedBeforeJoin => flows::reset_before_join(
                guarded,
                unsafe { &*entry },
                TO_CLIENT,
                Counter::BackendRefused,
            ),
            ServerStep::AwaitBackend => Verdict {
                action: Action::Drop,
                reason: Counter::DropAwaitingBackend,
            },
        };
    }
    finish(&ctx, tally, verdict)
}

/// Hands the segment to the forwarding program of `direction`; returns only when that
/// program is missing (the controller has not loaded it).
#[inline(always)]
fn jump_to_forward(
    ctx: &XdpContext,
    guarded: &mut Guarded,
    tally: Tally,
    direction: u8,
) -> Verdict {
    guarded.tally = tally;
    // SAFETY: a tail call with our own context; on success it does not return.
    unsafe { STAGES.tail_call(ctx, direction as u32) };
    Verdict {
        action: Action::Drop,
        reason: Counter::DropNoConfig,
    }
}

/// Forwards a segment of a joined flow from the clients to the server (tail-called).
#[xdp]
pub fn forward_to_server(ctx: XdpContext) -> u32 {
    forward_program(&ctx, TO_SERVER)
}

/// Forwards a segment of a joined flow from the server to its client (tail-called).
#[xdp]
pub fn forward_to_client(ctx: XdpContext) -> u32 {
    forward_program(&ctx, TO_CLIENT)
}

/// The caller left the parsed segment in the per-CPU scratch maps (a tail call stays on its
/// CPU and keeps the frame as the caller left it).
#[inline(always)]
fn forward_program(ctx: &XdpContext, direction: u8) -> u32 {
    let (Some(scratch), Some(guarded)) = (scratch(), GUARDED.get_ptr_mut(0)) else {
        return XDP_ABORTED;
    };
    // SAFETY: per-CPU entry, used only during this run of the program.
    let guarded = unsafe { &mut *guarded };
    // Looked up again: a map value pointer cannot cross a tail call.
    let verdict = match FLOWS.get_ptr_mut(&guarded.flow) {
        // SAFETY: a live map value for as long as this program runs.
        Some(entry) => flows::forward(
            ctx,
            guarded,
            unsafe { &mut *entry },
            &mut scratch.walker,
            direction,
        ),
        // Evicted between the caller's lookup and now.
        None => Verdict {
            action: Action::Drop,
            reason: Counter::DropRewriteFailed,
        },
    };
    finish(ctx, guarded.tally, verdict)
}

const TRANSPORT_TCP: u8 = 0;
const TRANSPORT_FRAGMENT: u8 = 1;
const TRANSPORT_OTHER: u8 = 2;
/// ICMP or ICMPv6 (whether it matches the packet's family is the ICMP stage's check: a branch
/// on the family here splits the parser's paths for the verifier).
const TRANSPORT_ICMP: u8 = 3;

#[inline(always)]
fn transport_code(kind: TransportKind, protocol: u8) -> u8 {
    match kind {
        TransportKind::Tcp => TRANSPORT_TCP,
        TransportKind::Fragment => TRANSPORT_FRAGMENT,
        TransportKind::Other if protocol == IPPROTO_ICMP || protocol == IPPROTO_ICMPV6 => {
            TRANSPORT_ICMP
        }
        TransportKind::Other => TRANSPORT_OTHER,
    }
}

/// An ICMP error that came in from the clients' side (tail-called by `client_segment`).
#[xdp]
pub fn icmp_from_client(ctx: XdpContext) -> u32 {
    icmp_program(&ctx, true)
}

/// An ICMP error that came in from the servers' side (tail-called by `synguard_server`).
#[xdp]
pub fn icmp_from_server(ctx: XdpContext) -> u32 {
    icmp_program(&ctx, false)
}

#[inline(always)]
fn icmp_program(ctx: &XdpContext, from_client: bool) -> u32 {
    let (Some(scratch), Some(guarded)) = (scratch(), GUARDED.get_ptr_mut(0)) else {
        return XDP_ABORTED;
    };
    // SAFETY: per-CPU entry, used only during this run of the program.
    let guarded = unsafe { &*guarded };
    // ICMPv6 in IPv4 or ICMP in IPv6 is no error about a flow: it passes like other IP.
    let protocol_fits = match guarded.addrs.family {
        4 => guarded.protocol == IPPROTO_ICMP,
        _ => guarded.protocol == IPPROTO_ICMPV6,
    };
    let verdict = if protocol_fits {
        icmp::relay(ctx, guarded, scratch, from_client)
    } else {
        pass_ip(TransportKind::Other)
    };
    finish(ctx, guarded.tally, verdict)
}

/// An address as the tries key it: IPv4 as IPv4-mapped IPv6. `source` picks which one.
#[inline(always)]
fn mapped(addrs: &IpAddrs, source: bool) -> ProtectedAddress {
    let address = if source { &addrs.src } else { &addrs.dst };
    if addrs.is_v6() {
        *address
    } else {
        ipv4_mapped(&[address[0], address[1], address[2], address[3]])
    }
}

/// A full-length trie key for `address` (scratch, per CPU: the stack is full).
#[inline(always)]
fn trie_key(address: &ProtectedAddress) -> Option<&'static Key<ProtectedAddress>> {
    let key = TRIE_KEY.get_ptr_mut(0)?;
    // SAFETY: per-CPU entry, used only during this run of the program.
    let key = unsafe { &mut *key };
    key.prefix_len = 128;
    key.data = *address;
    Some(key)
}

/// The service slot of a destination port (0: not protected).
#[inline(always)]
fn service_slot(destination: &ProtectedAddress, port: u16) -> u8 {
    match trie_key(destination).and_then(|key| PROTECTED.get(key)) {
        Some(ports) => ports.slot(port),
        None => 0,
    }
}

/// Whether the service a server's segment comes from (its source) is protected in a mode that
/// tracks its flows (any but monitor).
#[inline(always)]
fn tracks_flows_of(addrs: &IpAddrs, port: u16) -> bool {
    let slot = service_slot(&mapped(addrs, true), port);
    slot != 0
        && match SERVICES.get(slot as u32) {
            Some(config) => config.mode != mode::MONITOR,
            None => false,
        }
}

/// The allowlist's value for a source, if it is on the list.
#[inline(always)]
fn allowed_source(source: &ProtectedAddress) -> Option<AllowValue> {
    trie_key(source).and_then(|key| ALLOWED.get(key).copied())
}

/// Blocked, and not on the allowlist (an allowed host inside a blocked prefix stays reachable).
#[inline(always)]
fn is_blocked(source: &ProtectedAddress) -> bool {
    match trie_key(source) {
        Some(key) => BLOCKED.get(key).is_some() && ALLOWED.get(key).is_none(),
        None => false,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Reachable only if a bounds check could fail; the verifier then refuses the infinite
    // loop at load time, which is the error we want (never a silent assumption).
    loop {}
}

/// A build's own mark: `SYNGUARD_BUILD_SALT` at build time, empty by default. Two builds of
/// the same source differ here only (the upgrade test starts one and upgrades it to the other).
const fn build_salt() -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Some(salt) = option_env!("SYNGUARD_BUILD_SALT") {
        let bytes = salt.as_bytes();
        let mut i = 0;
        while i < bytes.len() && i < out.len() {
            out[i] = bytes[i];
            i += 1;
        }
    }
    out
}

#[used]
#[unsafe(no_mangle)]
static SYNGUARD_BUILD_SALT: [u8; 32] = build_salt();

/// GPL-compatible so that GPL-only helpers stay available.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
