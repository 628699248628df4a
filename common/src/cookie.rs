//! SYN cookies: our ISN in the SYN-ACK proves, when the client's third ACK echoes it, that the
//! client received our answer, without any state kept for the SYN.
//!
//! # Layout (32 bits, the one place it is defined)
//!
//! ```text
//!  31 30 | 29 28 27 | 26 25 24 23 | 22   | 21  | 20    | 19 .................... 0
//!  count |  MSS idx | window scale | SACK | ECN | phase | MAC: SipHash-1-3, 20 low bits
//! ```
//! - `count`: the low 2 bits of the time counter (TAI seconds / 64) when the cookie was made.
//!   A cookie is valid during its counter and the next one (64 to 128 s), like Linux's.
//! - `MSS idx`: index of the largest [`MSS_TABLE`] entry not above the client's MSS.
//! - `window scale`: the client's shift (0..=14), or 15 when it sent no window-scale option.
//! - `SACK`, `ECN`: the client sent SACK-permitted; the client asked for ECN (ECE+CWR).
//! - `phase`: which of the two live keys made the cookie (the rotation epoch's parity), so a
//!   check computes one MAC, under that key, never two.
//! - MAC: SipHash-1-3 keyed with a 128-bit secret over the 4-tuple, the client's ISN, the full
//!   counter and the 9 option bits, so none of them can be altered without detection.
//!
//! The options ride in the cookie whether or not the client uses timestamps (Windows sends
//! none by default), so every client keeps its window scale, SACK and ECN.
//!
//! # Forgery bound
//!
//! For one 4-tuple and client ISN, each of the 2 accepted counters, 2^9 option patterns and 2
//! phases (keys) has exactly one accepted MAC: at most 2 * 2^9 * 2 = 2^11 of the 2^32 ACK
//! numbers pass, so a blind guess succeeds with probability at most 2^-21 (4.8e-7). (The phase
//! bit costs no security: it takes a MAC bit but halves the keys a guess can match.) While our
//! SYN-ACKs offer a zero window (`--early-data 0`) and for one cookie lifetime after, a bare
//! ACK is read twice, as a third ACK and as a zero-window probe (its ISN one higher,
//! [`check_ack`]), so a blind bare ACK passes with probability at most 2^-20 (9.5e-7). Linux's
//! cookies, which carry only 2 bits of MSS, bound it near 2^-29 but lose window scale and SACK
//! for clients without timestamps.
//!
//! # Keys
//!
//! [`CookieKeys`] holds the two live keys by phase: cookies are made with the current one and
//! accepted under both, so handshakes in flight survive a rotation. Keys derive from a
//! master secret and the rotation epoch ([`epoch_key`]), so guards sharing a master secret and
//! a clock issue interchangeable cookies (several guards behind ECMP).
//!
//! # Clock
//!
//! The counter counts TAI time, the clock guards sharing a secret share. The data plane does
//! not read CLOCK_TAI per SYN (a full clock read, 5 % of a SYN's cost here): it reads the
//! coarse monotonic clock it needs anyway and adds [`CookieKeys::tai_offset_ns`], which the
//! controller writes with the keys and refreshes when the system clock is stepped. The sum
//! lags TAI by at most one scheduler tick, nothing against a 64-second counter.

use crate::{
    parse::{IpAddrs, TcpFlags, TcpSegment},
    siphash::{SipKey, siphash13, siphash24},
};

/// MSS values a cookie can carry (3 bits): common path MTUs minus headers.
pub const MSS_TABLE: [u16; 8] = [536, 1220, 1300, 1360, 1400, 1440, 1452, 1460];
/// Seconds per time counter step.
pub const COUNTER_PERIOD_SECS: u64 = 64;
/// Encoded window scale meaning "no window-scale option".
const NO_WINDOW_SCALE: u32 = 15;
/// RFC 7323 section 2.3: shifts above 14 are treated as 14.
pub const MAX_WINDOW_SCALE: u8 = 14;
const MAC_BITS: u32 = 20;
const MAC_MASK: u32 = (1 << MAC_BITS) - 1;
const PHASE_SHIFT: u32 = MAC_BITS;
const OPTION_BITS_SHIFT: u32 = 21;
const COUNTER_SHIFT: u32 = 30;

/// The two live cookie keys, indexed by phase, and the current phase (a map value written by
/// the controller). The other phase holds the previous key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CookieKeys {
    pub by_phase: [SipKey; 2],
    /// 0 or 1.
    pub current_phase: u32,
    pub _pad: u32,
    /// CLOCK_TAI minus CLOCK_MONOTONIC, in ns, as the controller read them (see Clock above).
    pub tai_offset_ns: u64,
}

impl CookieKeys {
    /// `current` in `phase`, `previous` in the other one.
    pub const fn new(current: SipKey, previous: SipKey, phase: u32) -> Self {
        let phase = phase & 1;
        let mut by_phase = [previous; 2];
        by_phase[phase as usize] = current;
        Self {
            by_phase,
            current_phase: phase,
            _pad: 0,
            tai_offset_ns: 0,
        }
    }

    /// TAI time, in ns, at `monotonic_ns` of the data plane's (coarse) monotonic clock.
    #[inline(always)]
    pub fn tai_ns(&self, monotonic_ns: u64) -> u64 {
        monotonic_ns.wrapping_add(self.tai_offset_ns)
    }

    /// Whether the data plane has keys at all (the controller writes them at start).
    #[inline(always)]
    pub fn is_set(&self) -> bool {
        self.by_phase[0] != SipKey::default() || self.by_phase[1] != SipKey::default()
    }

    /// The key cookies are made with now, and its phase.
    #[inline(always)]
    pub fn current(&self) -> (&SipKey, u32) {
        let phase = self.current_phase & 1;
        (&self.by_phase[phase as usize], phase)
    }
}

/// The key for rotation epoch `epoch`, derived from the master secret (SipHash as a PRF).
pub fn epoch_key(master: &SipKey, epoch: u64) -> SipKey {
    SipKey {
        k0: siphash24(master, &[epoch, 0]),
        k1: siphash24(master, &[epoch, 1]),
    }
}

/// The time counter for a TAI time in nanoseconds.
#[inline(always)]
pub fn counter_at(tai_ns: u64) -> u32 {
    (tai_ns / 1_000_000_000 / COUNTER_PERIOD_SECS) as u32
}

/// A connection as the client sees it: client address and port first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct FlowKey {
    /// IPv4 addresses sit in the first 4 bytes, the rest zero.
    pub client: [u8; 16],
    pub server: [u8; 16],
    pub client_port: u16,
    pub server_port: u16,
    /// 4 or 6.
    pub family: u8,
    pub _pad: [u8; 3],
}

impl FlowKey {
    /// An IPv4 flow.
    pub fn v4(client: [u8; 4], client_port: u16, server: [u8; 4], server_port: u16) -> Self {
        let mut key = FlowKey {
            client_port,
            server_port,
            family: 4,
            ..FlowKey::default()
        };
        key.client[..4].copy_from_slice(&client);
        key.server[..4].copy_from_slice(&server);
        key
    }

    /// The flow of a segment sent by the client.
    #[inline(always)]
    pub fn from_client_segment(addrs: &IpAddrs, tcp: &TcpSegment) -> Self {
        Self::from_segment(addrs, tcp, true)
    }

    /// The flow of a segment sent by the server.
    #[inline(always)]
    pub fn from_server_segment(addrs: &IpAddrs, tcp: &TcpSegment) -> Self {
        Self::from_segment(addrs, tcp, false)
    }

    #[inline(always)]
    fn from_segment(addrs: &IpAddrs, tcp: &TcpSegment, from_client: bool) -> Self {
        let (client_port, server_port) = if from_client {
            (tcp.src_port, tcp.dst_port)
        } else {
            (tcp.dst_port, tcp.src_port)
        };
        let mut key = FlowKey {
            client_port,
            server_port,
            ..FlowKey::default()
        };
        if from_client {
            key.client = addrs.src;
            key.server = addrs.dst;
        } else {
            key.client = addrs.dst;
            key.server = addrs.src;
        }
        key.family = addrs.family;
        key
    }

    /// The words the MAC covers: the addresses, then ports and client ISN, then counter and
    /// option bits. IPv4 and IPv6 differ in length, so their MACs never collide.
    #[inline(always)]
    fn mac(&self, key: &SipKey, client_isn: u32, counter: u32, option_bits: u32) -> u32 {
        let ports_isn =
            (self.client_port as u64) << 48 | (self.server_port as u64) << 32 | client_isn as u64;
        let counter_options = (counter as u64) << 32 | option_bits as u64;
        let word = |b: &[u8; 16], at: usize| {
            u64::from_le_bytes([
                b[at],
                b[at + 1],
                b[at + 2],
                b[at + 3],
                b[at + 4],
                b[at + 5],
                b[at + 6],
                b[at + 7],
            ])
        };
        let hash = if self.family == 4 {
            let addrs = u32::from_le_bytes([
                self.client[0],
                self.client[1],
                self.client[2],
                self.client[3],
            ]) as u64
                | (u32::from_le_bytes([
                    self.server[0],
                    self.server[1],
                    self.server[2],
                    self.server[3],
                ]) as u64)
                    << 32;
            siphash13(key, &[addrs, ports_isn, counter_options])
        } else {
            siphash13(
                key,
                &[
                    word(&self.client, 0),
                    word(&self.client, 8),
                    word(&self.server, 0),
                    word(&self.server, 8),
                    ports_isn,
                    counter_options,
                ],
            )
        };
        hash as u32 & MAC_MASK
    }
}

/// The client's handshake options, as far as a cookie carries them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CookieOptions {
    /// Rounded down to [`MSS_TABLE`].
    pub mss: u16,
    /// The client's shift, clamped to 14; `None` when it sent no window-scale option.
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    pub ecn: bool,
}

impl CookieOptions {
    /// What a SYN asks for. Without an MSS option the RFC 9293 defaults apply (536 / 1220).
    #[inline(always)]
    pub fn from_syn(tcp: &TcpSegment, ipv6: bool) -> Self {
        let default_mss = if ipv6 { 1220 } else { 536 };
        let wanted = match tcp.options.mss {
            Some(mss) => mss,
            None => default_mss,
        };
        Self {
            mss: MSS_TABLE[mss_index(wanted) as usize],
            window_scale: match tcp.options.window_scale {
                Some(shift) if shift > MAX_WINDOW_SCALE => Some(MAX_WINDOW_SCALE),
                other => other,
            },
            sack_permitted: tcp.options.sack_permitted,
            ecn: tcp.flags.has(TcpFlags::ECE | TcpFlags::CWR),
        }
    }

    #[inline(always)]
    fn encode(&self) -> u32 {
        let window_scale = match self.window_scale {
            Some(shift) => shift as u32,
            None => NO_WINDOW_SCALE,
        };
        (mss_index(self.mss) as u32) << 6
            | window_scale << 2
            | (self.sack_permitted as u32) << 1
            | self.ecn as u32
    }

    #[inline(always)]
    fn decode(bits: u32) -> Self {
        let window_scale = (bits >> 2) & 0xf;
        Self {
            mss: MSS_TABLE[((bits >> 6) & 7) as usize],
            window_scale: match window_scale {
                NO_WINDOW_SCALE => None,
                shift => Some(shift as u8),
            },
            sack_permitted: bits & 2 != 0,
            ecn: bits & 1 != 0,
        }
    }
}

/// Index of the largest table MSS not above `mss` (0 when `mss` is below them all).
#[inline(always)]
fn mss_index(mss: u16) -> u8 {
    let mut index = 0;
    let mut i = 1;
    while i < MSS_TABLE.len() {
        if MSS_TABLE[i] <= mss {
            index = i as u8;
        }
        i += 1;
    }
    index
}

/// The cookie for a SYN of `flow` with ISN `client_isn`, made at `counter` with `key`, the
/// key of `phase`.
#[inline(always)]
pub fn make(
    key: &SipKey,
    phase: u32,
    flow: &FlowKey,
    client_isn: u32,
    counter: u32,
    options: &CookieOptions,
) -> u32 {
    let bits = options.encode();
    (counter & 3) << COUNTER_SHIFT
        | bits << OPTION_BITS_SHIFT
        | (phase & 1) << PHASE_SHIFT
        | flow.mac(key, client_isn, counter, bits)
}

/// Why a cookie was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CookieError {
    /// Made more than one counter ago (or in the future).
    Expired,
    /// The MAC does not match under the key of the cookie's phase.
    Invalid,
}

/// Checks the cookie an ACK of no flow echoes (`ack - 1`) at counter `now`; on success, the
/// options the SYN carried and the client's ISN. The third ACK and the client's first data
/// carry `seq` = ISN + 1. A bare ACK may also be a zero-window probe, `seq` = ISN: with
/// `--early-data 0` our SYN-ACK offers a zero window until the server joins, and a client
/// whose third ACK was lost probes it with one sequence number below its next (RFC 9293
/// 3.8.6.1; Linux sends `snd_una - 1`), and would wait forever if the probe were refused.
/// That second reading doubles a bare ACK's forgery bound (see the module's documentation),
/// so it is made only when `window_probes` says such a probe may come
/// (`SynAckSettings::expects_window_probes`).
#[inline(always)]
pub fn check_ack(
    keys: &CookieKeys,
    flow: &FlowKey,
    segment: &TcpSegment,
    now: u32,
    window_probes: bool,
) -> Result<(CookieOptions, u32), CookieError> {
    let cookie = segment.ack.wrapping_sub(1);
    let third_ack_isn = segment.seq.wrapping_sub(1);
    match check(keys, flow, third_ack_isn, cookie, now) {
        Err(CookieError::Invalid) if window_probes && segment.payload_len == 0 => {
            check(keys, flow, segment.seq, cookie, now).map(|options| (options, segment.seq))
        }
        checked => checked.map(|options| (options, third_ack_isn)),
    }
}

/// Checks `cookie` for a SYN from `flow` with `client_isn` at counter `now`; on success, the
/// options the SYN carried.
#[inline(always)]
pub fn check(
    keys: &CookieKeys,
    flow: &FlowKey,
    client_isn: u32,
    cookie: u32,
    now: u32,
) -> Result<CookieOptions, CookieError> {
    let age = now.wrapping_sub(cookie >> COUNTER_SHIFT) & 3;
    if age > 1 {
        return Err(CookieError::Expired);
    }
    let counter = now.wrapping_sub(age);
    let bits = (cookie >> OPTION_BITS_SHIFT) & 0x1ff;
    let key = &keys.by_phase[((cookie >> PHASE_SHIFT) & 1) as usize];
    if flow.mac(key, client_isn, counter, bits) == cookie & MAC_MASK {
        Ok(CookieOptions::decode(bits))
    } else {
        Err(CookieError::Invalid)
    }
}
