//! Header-only TCP segments the data plane writes from scratch: the cookie SYN-ACK to a client,
//! the SYN that opens the backend connection, the window update that releases the client once
//! the server answered, and the ACK that answers a retransmitted server SYN-ACK.
//!
//! IPv4 (20 bytes, no options, DF) or IPv6 (40 bytes, no extension headers), then TCP with
//! options in Linux's order and alignment:
//! `MSS` | `SACK-permitted, timestamps` (or `NOP NOP` instead of SACK-permitted) | `NOP, window scale`;
//! without timestamps: `MSS` | `NOP NOP SACK-permitted` | `NOP, window scale`.
//! Each option appears only when the segment carries it (SYN-only options on SYNs only,
//! RFC 2018, RFC 7323 sections 1.3 and 3.2).

use crate::{
    checksum,
    cookie::{CookieOptions, FlowKey},
    field::{IPPROTO_TCP, be16, ipv4, ipv6, tcp},
    parse::{TcpFlags, TcpSegment},
};

/// Room for the longest segment (IPv6 40 + TCP 40), rounded up so a masked length fits.
pub const SEGMENT_BUF_LEN: usize = 128;

/// The SYN-ACK's window by default (`--early-data`): room for a request or a TLS ClientHello
/// with a post-quantum key share; a client sends it in segments of at most half of it.
pub const EARLY_DATA_WINDOW: u16 = 4096;

/// What the guard announces in its SYN-ACKs (a map value written by the controller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct SynAckSettings {
    pub mss_v4: u16,
    pub mss_v6: u16,
    /// The window field of the SYN-ACK (never scaled, RFC 7323 section 2.2): what a client
    /// may send before the server has joined the flow, which the guard holds until then
    /// (`maps::EarlyData`). Zero keeps the client waiting; either way the window update that
    /// follows the server's SYN-ACK opens the server's window.
    pub window: u16,
    /// Our window-scale shift, sent when the client sent one.
    pub window_scale: u8,
    pub _pad: u8,
    /// The last cookie counter at which a cookie of a zero-window SYN-ACK may still validate
    /// (see [`SynAckSettings::expects_window_probes`]); kept by [`SynAckSettings::succeeding`].
    pub zero_window_cookies_until: u32,
}

impl Default for SynAckSettings {
    fn default() -> Self {
        Self {
            mss_v4: 1460,
            mss_v6: 1440,
            window: EARLY_DATA_WINDOW,
            window_scale: 7,
            _pad: 0,
            zero_window_cookies_until: 0,
        }
    }
}

impl SynAckSettings {
    /// Whether a bare ACK at cookie counter `now` may be a client's probe of a zero window we
    /// offered (see `cookie::check_ack`): while we offer one, and while a cookie that went out
    /// with one can still validate. Otherwise a bare ACK gets one reading, not two, which
    /// halves its forgery bound and its cost.
    #[inline(always)]
    pub fn expects_window_probes(&self, now: u32) -> bool {
        self.window == 0 || now <= self.zero_window_cookies_until
    }

    /// These settings as they replace `previous` at cookie counter `now`. When they end a
    /// zero window (or nothing says what came before: `previous` is a fresh, zeroed map
    /// value), the cookies it went out with validate until the end of the next counter
    /// (`cookie::check`), and their clients' probes with them.
    pub fn succeeding(mut self, previous: &SynAckSettings, now: u32) -> Self {
        self.zero_window_cookies_until = if previous.window == 0 {
            now.saturating_add(1)
        } else {
            previous.zero_window_cookies_until
        };
        self
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for SynAckSettings {}

/// One header-only segment to write. Addresses come from the flow: `to_client` picks the
/// direction (server to client, or client to server).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentSpec {
    pub to_client: bool,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// MSS option (SYNs only); 0 leaves it out.
    pub mss: u16,
    pub sack_permitted: bool,
    pub timestamps: Option<(u32, u32)>,
    pub window_scale: Option<u8>,
}

impl SegmentSpec {
    /// The SYN that opens a validated client's connection to its server: the client's ISN
    /// and the options its SYN offered (its TSval from the third ACK). The data plane writes
    /// it first; the controller retransmits the very same segment.
    #[inline(always)]
    pub fn syn_to_server(
        seq: u32,
        window: u16,
        mss: u16,
        sack_permitted: bool,
        window_scale: Option<u8>,
        ecn: bool,
        tsval: Option<u32>,
    ) -> Self {
        let mut flags = TcpFlags::SYN;
        if ecn {
            flags |= TcpFlags::ECE | TcpFlags::CWR; // RFC 3168 section 6.1.1
        }
        Self {
            to_client: false,
            seq,
            ack: 0,
            flags,
            window,
            mss,
            sack_permitted,
            timestamps: tsval.map(|tsval| (tsval, 0)),
            window_scale,
        }
    }

    /// Our SYN-ACK answering `syn`, with the cookie as ISN.
    #[inline(always)]
    pub fn syn_ack(
        syn: &TcpSegment,
        cookie: u32,
        client: &CookieOptions,
        settings: &SynAckSettings,
        ipv6: bool,
        our_tsval: u32,
    ) -> Self {
        let mut flags = TcpFlags::SYN | TcpFlags::ACK;
        if client.ecn {
            flags |= TcpFlags::ECE; // RFC 3168 section 6.1.1
        }
        Self {
            to_client: true,
            seq: cookie,
            ack: syn.seq.wrapping_add(1), // the SYN consumed one sequence number
            flags,
            window: settings.window,
            mss: if ipv6 {
                settings.mss_v6
            } else {
                settings.mss_v4
            },
            sack_permitted: client.sack_permitted,
            timestamps: syn
                .options
                .timestamps
                .map(|(client_tsval, _)| (our_tsval, client_tsval)),
            window_scale: client.window_scale.map(|_| settings.window_scale),
        }
    }
}

/// Writes the IP and TCP headers of `spec` into `out`, starting with the IP header; returns
/// their length.
#[inline(always)]
pub fn write_segment(flow: &FlowKey, spec: &SegmentSpec, out: &mut [u8; SEGMENT_BUF_LEN]) -> usize {
    // Every byte up to the returned length is written below (the buffer is scratch memory
    // holding the previous segment): zeroing 128 bytes first would cost more than the segment.
    let (src, dst) = if spec.to_client {
        (&flow.server, &flow.client)
    } else {
        (&flow.client, &flow.server)
    };
    let (src_port, dst_port) = if spec.to_client {
        (flow.server_port, flow.client_port)
    } else {
        (flow.client_port, flow.server_port)
    };
    if flow.family == 4 {
        let (tcp_len, tcp_sum) =
            write_tcp::<{ ipv4::MIN_HEADER_LEN }>(spec, src_port, dst_port, out);
        let total = (20 + tcp_len) as u16;
        // Version and header length, total length, id, don't fragment, TTL and protocol, and
        // the checksum (zero while summing): the words from VERSION_IHL up to SOURCE, written
        // and summed from the same values.
        let words = [0x4500, total, 0, 0x4000, 64 << 8 | IPPROTO_TCP as u16, 0];
        let mut header_sum = 0u64;
        for (i, word) in words.iter().enumerate() {
            out[2 * i..2 * i + 2].copy_from_slice(&word.to_be_bytes());
            header_sum += *word as u64;
        }
        out[ipv4::SOURCE..ipv4::SOURCE + 4].copy_from_slice(&src[..4]);
        out[ipv4::DESTINATION..ipv4::DESTINATION + 4].copy_from_slice(&dst[..4]);
        let mut src4 = [0u8; 4];
        let mut dst4 = [0u8; 4];
        src4.copy_from_slice(&src[..4]);
        dst4.copy_from_slice(&dst[..4]);
        header_sum = checksum::add_words(checksum::add_words(header_sum, &src4), &dst4);
        out[ipv4::CHECKSUM..ipv4::CHECKSUM + 2]
            .copy_from_slice(&checksum::finish(header_sum).to_be_bytes());
        let pseudo = checksum::pseudo_header_v4(&src4, &dst4, IPPROTO_TCP, tcp_len as u16);
        store_tcp_checksum::<{ ipv4::MIN_HEADER_LEN }>(pseudo + tcp_sum, out);
        total as usize
    } else {
        let (tcp_len, tcp_sum) = write_tcp::<{ ipv6::HEADER_LEN }>(spec, src_port, dst_port, out);
        // Version, no traffic class or flow label; the payload length, TCP, the hop limit.
        out[..ipv6::SOURCE].copy_from_slice(&[
            0x60,
            0,
            0,
            0,
            (tcp_len >> 8) as u8,
            tcp_len as u8,
            IPPROTO_TCP,
            64,
        ]);
        out[ipv6::SOURCE..ipv6::DESTINATION].copy_from_slice(src);
        out[ipv6::DESTINATION..ipv6::HEADER_LEN].copy_from_slice(dst);
        let pseudo = checksum::pseudo_header_v6(src, dst, IPPROTO_TCP, tcp_len as u16);
        store_tcp_checksum::<{ ipv6::HEADER_LEN }>(pseudo + tcp_sum, out);
        ipv6::HEADER_LEN + tcp_len
    }
}

/// Makes a segment [`write_segment`] wrote (`header_len` bytes of `packet`) carry the
/// `payload_len` bytes copied right after it: the IP length and both checksums then cover
/// them. For the controller's segments with data; the data plane writes headers only.
pub fn cover_payload(packet: &mut [u8], header_len: usize, payload_len: usize, ipv4: bool) {
    let checksum_at = tcp::CHECKSUM
        + if ipv4 {
            ipv4::MIN_HEADER_LEN
        } else {
            ipv6::HEADER_LEN
        };
    let payload = &packet[header_len..header_len + payload_len];
    // The pseudo-header's TCP length grows by the payload's, and its words join the sum.
    let added = checksum::add_slice(payload_len as u64, payload);
    let stored = be16(packet, checksum_at);
    let tcp_sum = checksum::finish(u64::from(!stored) + added);
    packet[checksum_at..checksum_at + 2].copy_from_slice(&tcp_sum.to_be_bytes());
    if ipv4 {
        let at = ipv4::TOTAL_LEN;
        let old = [packet[at], packet[at + 1]];
        let new = ((header_len + payload_len) as u16).to_be_bytes();
        packet[at..at + 2].copy_from_slice(&new);
        let ip_sum = checksum::replace(be16(packet, ipv4::CHECKSUM), &old, &new);
        packet[ipv4::CHECKSUM..ipv4::CHECKSUM + 2].copy_from_slice(&ip_sum.to_be_bytes());
    } else {
        let length = (header_len - ipv6::HEADER_LEN + payload_len) as u16;
        packet[ipv6::PAYLOAD_LEN..ipv6::PAYLOAD_LEN + 2].copy_from_slice(&length.to_be_bytes());
    }
}

/// Writes the TCP header at `AT`; returns its length and the sum of its 16-bit words (for the
/// checksum, summed as written rather than read back). The checksum field is left zero.
#[inline(always)]
fn write_tcp<const AT: usize>(
    spec: &SegmentSpec,
    src_port: u16,
    dst_port: u16,
    out: &mut [u8; SEGMENT_BUF_LEN],
) -> (usize, u64) {
    // Options go in 16-bit words (every option here is laid out on word boundaries) through a
    // masked cursor: any combination of them, every index visibly inside the buffer for the
    // verifier, and each word added to the checksum as it is written.
    let mut at = AT + tcp::MIN_HEADER_LEN;
    let mut sum = 0u64;
    let mut put = |word: u16| {
        out[at & (SEGMENT_BUF_LEN - 1)] = (word >> 8) as u8;
        out[(at + 1) & (SEGMENT_BUF_LEN - 1)] = word as u8;
        sum += word as u64;
        at += 2;
    };
    if spec.mss != 0 {
        put(0x0204); // kind 2, length 4
        put(spec.mss);
    }
    match spec.timestamps {
        Some((tsval, tsecr)) => {
            put(if spec.sack_permitted { 0x0402 } else { 0x0101 }); // SACK-permitted, or NOP NOP
            put(0x080a); // kind 8, length 10
            for value in [tsval, tsecr] {
                put((value >> 16) as u16);
                put(value as u16);
            }
        }
        None if spec.sack_permitted => {
            put(0x0101); // NOP NOP
            put(0x0402);
        }
        None => {}
    }
    if let Some(shift) = spec.window_scale {
        put(0x0103); // NOP, kind 3
        put(0x0300 | shift as u16); // length 3, shift
    }
    let len = (at - AT) & 63;
    let offset_and_flags = ((len / 4) as u64) << 12 | spec.flags as u64;
    sum += src_port as u64
        + dst_port as u64
        + (spec.seq >> 16) as u64
        + (spec.seq & 0xffff) as u64
        + (spec.ack >> 16) as u64
        + (spec.ack & 0xffff) as u64
        + offset_and_flags
        + spec.window as u64;
    let port = AT + tcp::SOURCE_PORT;
    out[port..port + 2].copy_from_slice(&src_port.to_be_bytes());
    let port = AT + tcp::DESTINATION_PORT;
    out[port..port + 2].copy_from_slice(&dst_port.to_be_bytes());
    out[AT + tcp::SEQ..AT + tcp::SEQ + 4].copy_from_slice(&spec.seq.to_be_bytes());
    out[AT + tcp::ACK..AT + tcp::ACK + 4].copy_from_slice(&spec.ack.to_be_bytes());
    out[AT + tcp::DATA_OFFSET] = ((len / 4) as u8) << 4;
    out[AT + tcp::FLAGS] = spec.flags;
    out[AT + tcp::WINDOW..AT + tcp::WINDOW + 2].copy_from_slice(&spec.window.to_be_bytes());
    // The checksum (filled in later) and the urgent pointer.
    out[AT + tcp::CHECKSUM..AT + tcp::MIN_HEADER_LEN].copy_from_slice(&[0; 4]);
    (len, sum)
}

/// Stores the checksum of the TCP header at `AT` from `sum`, its words and the pseudo-header's.
#[inline(always)]
fn store_tcp_checksum<const AT: usize>(sum: u64, out: &mut [u8; SEGMENT_BUF_LEN]) {
    out[AT + tcp::CHECKSUM..AT + tcp::CHECKSUM + 2]
        .copy_from_slice(&checksum::finish(sum).to_be_bytes());
}
