//! Names and value types of the maps the XDP program and the controller share.
//! Everything here is `#[repr(C)]` with explicit padding and no Rust enums or `Option`s, since
//! the two sides are built by different compilers.

use crate::cookie::{CookieOptions, FlowKey};

pub const COOKIE_KEYS_MAP: &str = "COOKIE_KEYS";
pub const SYN_ACK_SETTINGS_MAP: &str = "SYN_ACK_SETTINGS";
pub const PROTECTED_MAP: &str = "PROTECTED";
pub const FLOWS_MAP: &str = "FLOWS";
pub const HANDSHAKES_MAP: &str = "HANDSHAKES";

/// Default number of validated flows the data plane remembers (LRU).
pub const FLOWS_CAPACITY: u32 = 65536;
/// Most protected prefixes.
pub const PROTECTED_CAPACITY: u32 = 1024;
/// Bytes of the handshake event ring buffer.
pub const HANDSHAKES_RING_BYTES: u32 = 1 << 20;

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

/// The ports protected under one prefix: one bit per port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct ProtectedPorts {
    pub bits: [u64; 1024],
}

impl Default for ProtectedPorts {
    fn default() -> Self {
        Self { bits: [0; 1024] }
    }
}

impl ProtectedPorts {
    pub fn insert(&mut self, port: u16) {
        self.bits[port as usize / 64] |= 1 << (port % 64);
    }

    #[inline(always)]
    pub fn contains(&self, port: u16) -> bool {
        self.bits[(port as usize / 64) & 1023] & (1 << (port % 64)) != 0
    }
}

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

/// A validated flow, as the data plane records it (value of the flows map).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct FlowEntry {
    pub client_isn: u32,
    /// Our ISN toward the client: the cookie.
    pub guard_isn: u32,
    pub options: WireOptions,
    /// When the cookie validated (CLOCK_TAI, ns).
    pub validated_tai_ns: u64,
}

/// What the data plane tells the controller when a third ACK proves a client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct HandshakeEvent {
    pub flow: FlowKey,
    pub entry: FlowEntry,
    /// TSval and TSecr of the third ACK (zero without timestamps).
    pub ts_val: u32,
    pub ts_ecr: u32,
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    use crate::cookie::CookieKeys;

    unsafe impl aya::Pod for ProtectedPorts {}
    unsafe impl aya::Pod for FlowEntry {}
    unsafe impl aya::Pod for HandshakeEvent {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for CookieKeys {}
}
