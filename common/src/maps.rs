//! Names and value types of the maps the XDP program and the controller share.
//! Everything here is `#[repr(C)]` with explicit padding and no Rust enums or `Option`s, since
//! the two sides are built by different compilers.

/// The layout of the pinned maps (their names, key and value types, sizes). A build adopts
/// the pinned maps of a running guard whose layout version is its own; a change to any map's
/// layout moves it (a test holds the layouts' fingerprint to this number).
pub const MAP_LAYOUT_VERSION: u32 = 3;

use crate::{
    cookie::{CookieOptions, FlowKey},
    token_bucket::TokenBucket,
    translate::Translation,
};

pub const COOKIE_KEYS_MAP: &str = "COOKIE_KEYS";
pub const SYN_ACK_SETTINGS_MAP: &str = "SYN_ACK_SETTINGS";
pub const PROTECTED_MAP: &str = "PROTECTED";
pub const FLOWS_MAP: &str = "FLOWS";
/// Flows the guard let go of while their ends may still be open (see [`ForgottenFlow`]).
pub const FORGOTTEN_MAP: &str = "FORGOTTEN";
pub const FLOW_EVENTS_MAP: &str = "FLOW_EVENTS";
/// The filter in front of the flows map (`flow_filter`): two entries, the halves, memory-mapped
/// by the controller; and the index of the half the data plane reads (one `u32` entry).
pub const FLOW_FILTER_MAP: &str = "FLOW_FILTER";
pub const FLOW_FILTER_ACTIVE_MAP: &str = "FLOW_FILTER_ACTIVE";
/// The lab's live-frames flood generator's template frame (one entry).
pub const LAB_FLOOD_TEMPLATE_MAP: &str = "LAB_FLOOD_TEMPLATE";
/// Its length: untagged Ethernet, IPv4 without options, TCP without options.
pub const LAB_FLOOD_FRAME_LEN: usize = 14 + 20 + 20;
/// The generator's pace (one [`FloodPacing`] entry).
pub const LAB_FLOOD_PACING_MAP: &str = "LAB_FLOOD_PACING";

/// How fast the lab's live-frames generator sends: written by its loader, the schedule kept by
/// the generator, which waits (spins) for each frame's slot. It cannot pace by dropping the
/// frames over the rate: live-frames returns a dropped frame's page to the pool through a
/// locked ring, the lock the guard's CPU takes to return the pages of the frames it answered,
/// and contending for it cost that CPU about a third of its time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct FloodPacing {
    /// Nanoseconds between frames (0: unpaced).
    pub interval_ns: u64,
    /// The next frame's slot (`bpf_ktime_get_ns`).
    pub next_ns: u64,
}

impl FloodPacing {
    /// Frames sent back to back at most when the generator fell behind its schedule (a
    /// call's set-up gap): a quarter of the guard's 256-slot veth input queue.
    pub const BURST: u64 = 64;
    /// The longest a frame waits for its slot; a slot further away is not this frame's (it
    /// drops, and the slot stays for a later one).
    pub const MAX_WAIT_NS: u64 = 50_000;

    /// `rate` frames per second (0: unpaced).
    pub fn at_rate(rate: u64) -> Self {
        Self {
            interval_ns: 1_000_000_000u64
                .checked_div(rate)
                .map_or(0, |interval| interval.max(1)),
            next_ns: 0,
        }
    }

    /// The slot of the frame made at `now_ns`, taken from the schedule; `None` when the next
    /// slot lies more than [`Self::MAX_WAIT_NS`] ahead.
    #[inline(always)]
    pub fn take_slot(&mut self, now_ns: u64) -> Option<u64> {
        let earliest = now_ns.saturating_sub(Self::BURST.saturating_mul(self.interval_ns));
        let slot = if self.next_ns > earliest {
            self.next_ns
        } else {
            earliest
        };
        if slot > now_ns.saturating_add(Self::MAX_WAIT_NS) {
            return None;
        }
        self.next_ns = slot.saturating_add(self.interval_ns);
        Some(slot)
    }
}

#[cfg(test)]
mod flood_pacing_tests {
    extern crate std;

    use super::FloodPacing;

    #[test]
    fn a_burst_then_one_slot_per_interval() {
        let mut pacing = FloodPacing::at_rate(1_000_000); // 1 us apart
        let start = 1_000_000_000;
        // Fallen behind (a fresh schedule): the burst goes at once, back to back.
        let burst: std::vec::Vec<u64> = (0..FloodPacing::BURST)
            .map(|_| pacing.take_slot(start).unwrap())
            .collect();
        assert!(burst.iter().all(|&slot| slot <= start));
        // Then one slot per microsecond from now on.
        assert_eq!(pacing.take_slot(start), Some(start));
        assert_eq!(pacing.take_slot(start), Some(start + 1_000));
        // A slot over MAX_WAIT_NS away is nobody's yet, and stays free.
        for _ in 0..49 {
            pacing.take_slot(start).unwrap();
        }
        assert_eq!(pacing.take_slot(start), None);
        assert_eq!(pacing.take_slot(start + 1_000), Some(start + 51_000));
        // Behind again after a gap: at most a burst is made up, not the whole gap.
        let later = start + 1_000_000_000;
        let caught_up = (0..1_000)
            .filter(|_| pacing.take_slot(later).is_some_and(|slot| slot <= later))
            .count() as u64;
        assert_eq!(caught_up, FloodPacing::BURST + 1);
        assert_eq!(FloodPacing::at_rate(0).interval_ns, 0);
    }
}

pub const SERVICES_MAP: &str = "SERVICES";
pub const SERVICE_COUNTERS_MAP: &str = "SERVICE_COUNTERS";
pub const SOURCES_MAP: &str = "SOURCES";
pub const VOUCHED_MAP: &str = "VOUCHED";
pub const BLOCKED_MAP: &str = "BLOCKED";
pub const ALLOWED_MAP: &str = "ALLOWED";
pub const POLICY_SETTINGS_MAP: &str = "POLICY_SETTINGS";
pub const SOURCE_SKETCH_MAP: &str = "SOURCE_SKETCH";

/// Default number of validated flows the data plane remembers (LRU; `--max-flows`).
pub const FLOWS_CAPACITY: u32 = 65536;
/// Most protected prefixes.
pub const PROTECTED_CAPACITY: u32 = 1024;
/// Bytes of the flow event ring buffer.
pub const FLOW_EVENTS_RING_BYTES: u32 = 1 << 22;
/// Protected services (slot 0 means "not protected", so 255 services).
pub const SERVICES_CAPACITY: u32 = 256;
/// Sources (per service) the data plane keeps counters for (LRU).
pub const SOURCES_CAPACITY: u32 = 65536;
/// Sources that completed a handshake lately (LRU hash shared by all CPUs: SourceKey -> when
/// the last cookie validated, monotonic coarse ns).
pub const VOUCHED_CAPACITY: u32 = 65536;
/// Blocked and allowed prefixes.
pub const BLOCKED_CAPACITY: u32 = 65536;
pub const ALLOWED_CAPACITY: u32 = 4096;

/// The key data of the protected-prefix LPM trie: IPv4 addresses as IPv4-mapped IPv6
/// (`::ffff:a.b.c.d`, prefix length + 96), so one trie serves both families.
pub type ProtectedAddress = [u8; 16];

/// IPv4-mapped form of an IPv4 address.
#[inline(always)]
pub fn ipv4_mapped(v4: &[u8; 4]) -> ProtectedAddress {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3],
    ]
}

/// The services under one protected prefix: for each port, its service slot (an index into
/// the services map), 0 when the port is not protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct ProtectedPorts {
    pub slots: [u8; 65536],
}

impl Default for ProtectedPorts {
    fn default() -> Self {
        Self { slots: [0; 65536] }
    }
}

impl ProtectedPorts {
    pub fn insert(&mut self, port: u16, slot: u8) {
        self.slots[port as usize] = slot;
    }

    /// The service slot of `port` (0: not protected).
    #[inline(always)]
    pub fn slot(&self, port: u16) -> u8 {
        self.slots[port as usize]
    }
}

/// The RSTs the data plane sends for segments of flows it no longer holds, per CPU: a rate
/// and a burst (a token bucket), so that no traffic makes the guard a RST source faster than
/// this.
pub const FORGOTTEN_RESETS_PER_SECOND: u64 = 1000;
pub const FORGOTTEN_RESET_BURST: u64 = 100;

/// Most forgotten flows remembered (LRU: the oldest go first).
pub const FORGOTTEN_CAPACITY: u32 = 16384;

/// A flow the guard let go of while its ends may still hold the connection (evicted from a
/// full flows map, or idled out with resets that may not have arrived), keyed by its
/// [`FlowKey`]: what it takes to reset both ends when either speaks again. The controller
/// writes it and marks the key in the flows filter; the data plane reads it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ForgottenFlow {
    /// The flow's server ISN minus our ISN ([`FlowEntry::seq_offset`]): takes a server
    /// sequence number into the client's view.
    pub seq_offset: u32,
    pub _pad: u32,
    /// When the guard let go of it (monotonic coarse ns, as the data plane's clock).
    pub forgotten_ns: u64,
}

/// How a protected service treats SYNs ([`ServiceConfig::mode`]).
pub mod mode {
    /// Count and report, never act: everything passes untouched.
    pub const MONITOR: u8 = 1;
    /// SYNs go straight to the server (flows tracked) until the controller turns cookies on.
    pub const AUTO: u8 = 2;
    /// Every SYN is answered with a cookie.
    pub const ALWAYS: u8 = 3;
}

/// A protected service as the data plane applies it (services map, indexed by slot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ServiceConfig {
    /// [`mode`] value; 0 for an unused slot.
    pub mode: u8,
    /// In `AUTO` mode: the controller saw the SYN rate over the threshold, SYNs get cookies.
    pub cookies_on: u8,
    pub _pad: [u8; 2],
    /// In `AUTO` mode with cookies off: SYNs per second (and burst) each CPU lets straight
    /// through; past it a SYN gets a cookie. The controller switches only once a second, so
    /// this keeps the start of a flood from reaching the server before it does.
    pub direct_syn_rate: u32,
}

/// Per-service counters (per-CPU array indexed by slot): the global SYN rate of a service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ServiceCounters {
    pub syns: u64,
    pub cookies_sent: u64,
    /// SYNs let straight through to the server (auto mode below its threshold, allowlist).
    pub admitted: u64,
    /// This CPU's bucket of direct admissions in auto mode ([`ServiceConfig::direct_syn_rate`]).
    pub direct_bucket: TokenBucket,
}

/// How long a completed handshake vouches for its source, seconds: it receives what is sent
/// to it, so it is a real host, and SYNs and RSTs in its name may be a flood spoofing it. Its
/// SYNs skip the data plane's bucket (they get cookies) and the policy's SYN-side limits do
/// not block it.
pub const COMPLETED_VOUCHES_FOR_SECS: u64 = 60;

/// Whether a source whose cookie last validated at `validated_ns` (monotonic coarse ns, the
/// vouched map's value) is still vouched for at `now_ns`.
#[inline(always)]
pub fn vouched(validated_ns: u64, now_ns: u64) -> bool {
    now_ns.saturating_sub(validated_ns) <= COMPLETED_VOUCHES_FOR_SECS * 1_000_000_000
}

/// Key of the per-source counters: a source address (IPv4 as IPv4-mapped IPv6) and the
/// service it talks to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(C)]
pub struct SourceKey {
    pub addr: [u8; 16],
    pub slot: u8,
    pub _pad: [u8; 3],
}

/// What one source did to one service (per-CPU LRU hash; cumulative, the controller turns
/// them into rates and half-open counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SourceCounters {
    pub syns: u64,
    /// Cookie SYN-ACKs sent: half-open connections the source may complete.
    pub cookies_sent: u64,
    pub cookies_validated: u64,
    /// Bare ACKs with a forged or expired cookie.
    pub invalid_acks: u64,
    /// Stray FIN, RST and SYN-ACK segments of no flow.
    pub out_of_state: u64,
    /// SYNs over this CPU's token bucket (dropped, or only counted in monitor mode).
    pub syns_over_rate: u64,
    /// This CPU's SYN token bucket for the source.
    pub bucket: TokenBucket,
}

/// What the data plane enforces per source on its own (policy settings map, one entry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PolicySettings {
    /// SYNs per second per source and CPU (0: no limit), and the burst on top.
    pub syn_rate: u64,
    pub syn_burst: u64,
    /// Segments a source sends within one policy interval before it gets per-source counters
    /// (the sketch's gate, see `crate::sketch`; 0: every source at once).
    pub track_after: u16,
    pub _pad: [u8; 6],
}

/// Value of the blocked-prefix trie: why it is there ([`block_origin`]).
pub type BlockValue = u32;

/// Who put a prefix in the blocked trie.
pub mod block_origin {
    pub const POLICY: u32 = 1;
    pub const OPERATOR: u32 = 2;
}

/// Value of the allowed-prefix trie: 1 when its SYNs skip the cookie challenge too.
pub type AllowValue = u32;

/// Handshake options in a form both compilers lay out alike.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct WireOptions {
    pub mss: u16,
    /// 0xff: the client sent no window-scale option.
    pub window_scale: u8,
    pub sack_permitted: u8,
    pub ecn: u8,
    /// The client's third ACK carried timestamps.
    pub timestamps: u8,
    pub _pad: [u8; 2],
}

pub const NO_WINDOW_SCALE: u8 = 0xff;

impl WireOptions {
    #[inline(always)]
    pub fn new(options: &CookieOptions, timestamps: bool) -> Self {
        Self {
            mss: options.mss,
            window_scale: match options.window_scale {
                Some(shift) => shift,
                None => NO_WINDOW_SCALE,
            },
            sack_permitted: options.sack_permitted as u8,
            ecn: options.ecn as u8,
            timestamps: timestamps as u8,
            _pad: [0; 2],
        }
    }
}

/// Where a validated flow stands in the data plane.
pub mod phase {
    /// The cookie validated and the SYN went to the server; its SYN-ACK has not come back.
    pub const AWAITING_BACKEND: u8 = 1;
    /// The server answered: both halves are joined and segments are forwarded.
    pub const JOINED: u8 = 2;
    /// Let straight through (no cookie): the client's SYN went to the server, whose SYN-ACK
    /// has not come back yet.
    pub const ADMITTED: u8 = 3;
}

/// One direction of a flow, as the data plane tracks it while forwarding. Sequence numbers
/// are in the sender's own space (before translation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct FlowDirection {
    pub packets: u64,
    /// TCP payload bytes.
    pub bytes: u64,
    /// The sender's next sequence number: the highest segment end seen (SYN and FIN count one).
    pub next_seq: u32,
    /// The receive window the sender last advertised, in bytes (scaling applied).
    pub window: u32,
    /// Sequence number of the sender's FIN, once `fin_seen`.
    pub fin_seq: u32,
    pub fin_seen: u8,
    /// The other side acknowledged the FIN.
    pub fin_acked: u8,
    pub _pad: [u8; 2],
}

/// Zeroes `value` a word at a time. Plain zero stores would do, but LLVM merges runs of them
/// into memsets, which the BPF target can only call as a byte-at-a-time loop (5 % of a
/// validating ACK); volatile stores are kept as they are.
#[inline(always)]
fn zero_in_words<T: Copy>(value: &mut T) {
    const { assert!(size_of::<T>().is_multiple_of(8) && align_of::<T>() >= 8) };
    let words = value as *mut T as *mut u64;
    for i in 0..size_of::<T>() / 8 {
        // SAFETY: in bounds and aligned (asserted above); any bit pattern of T's plain-data
        // fields is valid, zero included.
        unsafe { words.add(i).write_volatile(0) };
    }
}

/// A validated flow (value of the flows map). The controller creates nothing here: the data
/// plane inserts the entry when the cookie validates and fills it in as the server answers;
/// the controller removes it when its state machine reaches CLOSED.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct FlowEntry {
    pub client_isn: u32,
    /// Our ISN toward the client: the cookie.
    pub guard_isn: u32,
    /// The server's ISN (valid once joined).
    pub server_isn: u32,
    /// `server_isn - guard_isn`: added to what the client acknowledges, taken off what the
    /// server sends.
    pub seq_offset: u32,
    /// The server's TSval clock minus ours (0 without timestamps).
    pub ts_offset: u32,
    /// TSval of our SYN-ACK, echoed by the client's third ACK.
    pub guard_tsval: u32,
    /// The client's handshake options.
    pub options: WireOptions,
    /// Window shifts per direction: what the sender applies, what the receiver applies.
    pub client_shift: u8,
    pub server_view_of_client_shift: u8,
    pub server_shift: u8,
    pub client_view_of_server_shift: u8,
    /// The server's MSS option (0 until joined).
    pub server_mss: u16,
    /// [`phase`] value.
    pub phase: u8,
    /// The server's SYN-ACK carried timestamps.
    pub server_timestamps: u8,
    /// Let straight through without a cookie: client and server handshake with each other,
    /// so there is nothing to translate.
    pub admitted_directly: u8,
    pub _pad: [u8; 7],
    /// Last segment seen either way (CLOCK_MONOTONIC coarse, ns), for idle timeouts.
    pub last_seen_ns: u64,
    pub to_server: FlowDirection,
    pub to_client: FlowDirection,
}

/// How a flow begins: what [`FlowEntry::begin`] needs.
#[derive(Clone, Copy, Debug, Default)]
pub struct FlowStart {
    /// [`phase`] value: `AWAITING_BACKEND` after a cookie, `ADMITTED` without one.
    pub phase: u8,
    pub client_isn: u32,
    pub guard_isn: u32,
    pub guard_tsval: u32,
    pub options: WireOptions,
    pub client_shift: u8,
    pub client_view_of_server_shift: u8,
    pub now_coarse_ns: u64,
    /// The client's next sequence number and its (scaled) window.
    pub next_seq: u32,
    pub window: u32,
}

impl FlowEntry {
    /// What forwarding does to a segment of this flow going `direction` ([`TO_SERVER`] or
    /// [`TO_CLIENT`]): the client saw our cookie as the server's ISN, and our clock in the
    /// timestamps; the server's own numbers go the other way.
    #[inline(always)]
    pub fn translation(&self, direction: u8) -> Translation {
        let ts_offset = if self.server_timestamps != 0 {
            self.ts_offset
        } else {
            0
        };
        if direction == TO_SERVER {
            Translation {
                ack: self.seq_offset,
                sack: self.seq_offset,
                tsecr: ts_offset,
                window_from: self.client_shift,
                window_to: self.server_view_of_client_shift,
                ..Translation::default()
            }
        } else {
            Translation {
                seq: self.seq_offset.wrapping_neg(),
                tsval: ts_offset.wrapping_neg(),
                window_from: self.server_shift,
                window_to: self.client_view_of_server_shift,
                ..Translation::default()
            }
        }
    }

    /// Starts a new flow in place: the entry is zeroed first, so nothing of an earlier flow
    /// built in the same memory survives (the data plane builds entries in map memory, no
    /// entry-sized copy on its stack).
    #[inline(always)]
    pub fn begin(&mut self, start: &FlowStart) {
        zero_in_words(self);
        self.client_isn = start.client_isn;
        self.guard_isn = start.guard_isn;
        self.guard_tsval = start.guard_tsval;
        self.options = start.options;
        self.client_shift = start.client_shift;
        self.client_view_of_server_shift = start.client_view_of_server_shift;
        self.phase = start.phase;
        self.admitted_directly = (start.phase == phase::ADMITTED) as u8;
        self.last_seen_ns = start.now_coarse_ns;
        self.to_server.next_seq = start.next_seq;
        self.to_server.window = start.window;
    }

    /// Both FINs sent and acknowledged: the connection is over on both ends (a new SYN on
    /// the same 4-tuple may start another, RFC 9293 section 3.10.7.4 TIME-WAIT).
    #[inline(always)]
    pub fn both_closed(&self) -> bool {
        self.to_server.fin_acked != 0 && self.to_client.fin_acked != 0
    }
}

/// What a [`FlowEvent`] reports (its `kind` byte on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EventKind {
    /// A third ACK's cookie validated; the SYN went to the server.
    Validated = 1,
    /// The server's SYN-ACK arrived: the flow is joined (seq/ack are the SYN-ACK's).
    Joined = 2,
    /// A SYN, FIN or RST of a validated flow, forwarded (or, before the join, a RST that ends it).
    Control = 3,
    /// The first segment acknowledging the other direction's FIN.
    FinAcked = 4,
    /// A SYN let straight through to the server (no cookie).
    Admitted = 5,
    /// A segment of a forgotten flow ([`ForgottenFlow`]): the data plane reset its sender;
    /// seq/ack are the RST the other end needs, in that end's view.
    Forgotten = 6,
}

impl EventKind {
    pub const fn from_wire(kind: u8) -> Option<Self> {
        match kind {
            1 => Some(EventKind::Validated),
            2 => Some(EventKind::Joined),
            3 => Some(EventKind::Control),
            4 => Some(EventKind::FinAcked),
            5 => Some(EventKind::Admitted),
            6 => Some(EventKind::Forgotten),
            _ => None,
        }
    }
}

/// The first byte of every record of the flow event ring buffer: which record it is.
pub mod record_tag {
    /// A [`super::FlowEvent`].
    pub const FLOW_EVENT: u8 = 1;
    /// A [`super::EarlyData`].
    pub const EARLY_DATA: u8 = 2;
}

/// Most payload one [`EarlyData`] record holds: one segment of a client with Ethernet's MSS.
/// A larger one (a jumbo MSS and an `--early-data` window over 2,920 bytes, of which a client
/// sends at most half at once) is not held: the client sends it again after the join.
pub const EARLY_DATA_MAX: usize = 1460;

/// A client's data that arrived before its server joined the flow (our SYN-ACK offered a
/// window of `--early-data` bytes, so a client sends its request at once, with or after its
/// third ACK). The data plane cannot hold a frame: it drops it and hands the payload to the
/// controller through the flow event ring buffer (told apart from a [`FlowEvent`] by its
/// tag), and the controller sends it to the server after the join. Numbers are as the client
/// sent them, in the guard's sequence space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct EarlyData {
    /// [`record_tag::EARLY_DATA`].
    pub tag: u8,
    pub _pad: [u8; 3],
    pub flow: FlowKey,
    /// Which connection on the tuple: as in its [`FlowEntry`].
    pub client_isn: u32,
    pub guard_isn: u32,
    pub seq: u32,
    /// TSval and TSecr of the segment (zero without timestamps).
    pub ts_val: u32,
    pub ts_ecr: u32,
    /// The segment's window field (scaled by the client's shift).
    pub window: u16,
    /// Payload bytes in `payload`.
    pub len: u16,
    pub payload: [u8; EARLY_DATA_MAX],
}

/// Directions of a [`FlowEvent`] (and the indices of the forwarding stages).
pub const TO_SERVER: u8 = 0;
pub const TO_CLIENT: u8 = 1;

/// The tail-call map of the later stages: forwarding at `TO_SERVER` and `TO_CLIENT`, a client's
/// IP packet at `STAGE_CLIENT_SEGMENT`, ICMP errors from either side at `STAGE_ICMP_*`.
pub const STAGES_MAP: &str = "STAGES";
pub const STAGE_CLIENT_SEGMENT: u32 = 2;
pub const STAGE_ICMP_FROM_CLIENT: u32 = 3;
pub const STAGE_ICMP_FROM_SERVER: u32 = 4;
pub const STAGE_COUNT: u32 = 5;

/// What the data plane tells the controller about a validated flow (flow events ring buffer).
/// Sequence and acknowledgement numbers are as the receiver sees them: client to server in
/// the server's space after translation, server to client as the server sent them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct FlowEvent {
    /// [`record_tag::FLOW_EVENT`].
    pub tag: u8,
    /// [`EventKind`] value.
    pub kind: u8,
    /// [`TO_SERVER`] or [`TO_CLIENT`].
    pub direction: u8,
    /// TCP flags of the segment.
    pub flags: u8,
    pub flow: FlowKey,
    pub seq: u32,
    pub ack: u32,
    pub payload_len: u32,
    /// For RSTs: what the receiver expects next, and its window (from the data plane's tracking).
    pub receiver_next: u32,
    pub receiver_window: u32,
    /// TSval and TSecr of the segment (zero without timestamps).
    pub ts_val: u32,
    pub ts_ecr: u32,
    /// The flow entry after this segment.
    pub entry: FlowEntry,
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    use crate::cookie::CookieKeys;

    unsafe impl aya::Pod for FloodPacing {}
    unsafe impl aya::Pod for ProtectedPorts {}
    unsafe impl aya::Pod for ServiceConfig {}
    unsafe impl aya::Pod for ServiceCounters {}
    unsafe impl aya::Pod for SourceKey {}
    unsafe impl aya::Pod for SourceCounters {}
    unsafe impl aya::Pod for PolicySettings {}
    unsafe impl aya::Pod for FlowEntry {}
    unsafe impl aya::Pod for ForgottenFlow {}
    unsafe impl aya::Pod for FlowEvent {}
    unsafe impl aya::Pod for EarlyData {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for CookieKeys {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn begin_leaves_nothing_of_an_earlier_flow() {
        let start = FlowStart {
            phase: phase::AWAITING_BACKEND,
            client_isn: 1,
            guard_isn: 2,
            guard_tsval: 3,
            options: WireOptions {
                mss: 1460,
                window_scale: 7,
                sack_permitted: 1,
                ecn: 0,
                timestamps: 1,
                _pad: [0; 2],
            },
            client_shift: 7,
            client_view_of_server_shift: 9,
            now_coarse_ns: 4,
            next_seq: 5,
            window: 6,
        };
        // Every byte of the earlier flow set.
        // SAFETY: FlowEntry is plain data: any bit pattern is a value.
        let mut entry: FlowEntry =
            unsafe { core::mem::transmute([0xa5u8; size_of::<FlowEntry>()]) };
        entry.begin(&start);
        assert_eq!(
            entry,
            FlowEntry {
                client_isn: 1,
                guard_isn: 2,
                guard_tsval: 3,
                options: start.options,
                client_shift: 7,
                client_view_of_server_shift: 9,
                phase: phase::AWAITING_BACKEND,
                last_seen_ns: 4,
                to_server: FlowDirection {
                    next_seq: 5,
                    window: 6,
                    ..FlowDirection::default()
                },
                ..FlowEntry::default()
            }
        );
    }
}
