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
    parse::{IPPROTO_TCP, TcpFlags, TcpSegment},
};

/// Room for the longest segment (IPv6 40 + TCP 40), rounded up so a masked length fits.
pub const SEGMENT_BUF_LEN: usize = 128;

/// What the guard announces in its SYN-ACKs (a map value written by the controller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct SynAckSettings {
    pub mss_v4: u16,
    pub mss_v6: u16,
    /// The window field of the SYN-ACK (never scaled, RFC 7323 section 2.2). Zero keeps a
    /// client from sending data before the server has joined the flow (see `flows` in the
    /// controller); the window update that follows the server's SYN-ACK opens it.
    pub window: u16,
    /// Our window-scale shift, sent when the client sent one.
    pub window_scale: u8,
    pub _pad: u8,
}

impl Default for SynAckSettings {
    fn default() -> Self {
        Self {
            mss_v4: 1460,
            mss_v6: 1440,
            window: 0,
            window_scale: 7,
            _pad: 0,
        }
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
        let tcp_len = write_tcp::<20>(spec, src_port, dst_port, out);
        let total = (20 + tcp_len) as u16;
        out[..12].copy_from_slice(&[
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0x40, // don't fragment
            0,
            64,
            IPPROTO_TCP,
            0,
            0,
        ]);
        out[12..16].copy_from_slice(&src[..4]);
        out[16..20].copy_from_slice(&dst[..4]);
        let header_sum = checksum::add_words_at::<20, SEGMENT_BUF_LEN>(0, out, 0, 20);
        out[10..12].copy_from_slice(&checksum::finish(header_sum).to_be_bytes());
        let mut src4 = [0u8; 4];
        let mut dst4 = [0u8; 4];
        src4.copy_from_slice(&src[..4]);
        dst4.copy_from_slice(&dst[..4]);
        let pseudo = checksum::pseudo_header_v4(&src4, &dst4, IPPROTO_TCP, tcp_len as u16);
        finish_tcp_checksum::<20>(pseudo, tcp_len, out);
        total as usize
    } else {
        let tcp_len = write_tcp::<40>(spec, src_port, dst_port, out);
        out[..8].copy_from_slice(&[
            0x60,
            0,
            0,
            0,
            (tcp_len >> 8) as u8,
            tcp_len as u8,
            IPPROTO_TCP,
            64,
        ]);
        out[8..24].copy_from_slice(src);
        out[24..40].copy_from_slice(dst);
        let pseudo = checksum::pseudo_header_v6(src, dst, IPPROTO_TCP, tcp_len as u16);
        finish_tcp_checksum::<40>(pseudo, tcp_len, out);
        40 + tcp_len
    }
}

/// Writes the TCP header at `AT`; returns its length. The checksum field is left zero.
#[inline(always)]
fn write_tcp<const AT: usize>(
    spec: &SegmentSpec,
    src_port: u16,
    dst_port: u16,
    out: &mut [u8; SEGMENT_BUF_LEN],
) -> usize {
    // Options go byte by byte through a masked cursor: any combination of them, and every
    // index visibly inside the buffer for the verifier.
    let mut at = AT + 20;
    let mut put = |bytes: &[u8]| {
        for byte in bytes {
            out[at & (SEGMENT_BUF_LEN - 1)] = *byte;
            at += 1;
        }
    };
    if spec.mss != 0 {
        put(&[2, 4, (spec.mss >> 8) as u8, spec.mss as u8]);
    }
    match spec.timestamps {
        Some((tsval, tsecr)) => {
            put(if spec.sack_permitted {
                &[4, 2]
            } else {
                &[1, 1]
            });
            put(&[8, 10]);
            put(&tsval.to_be_bytes());
            put(&tsecr.to_be_bytes());
        }
        None if spec.sack_permitted => put(&[1, 1, 4, 2]),
        None => {}
    }
    if let Some(shift) = spec.window_scale {
        put(&[1, 3, 3, shift]);
    }
    let len = (at - AT) & 63;
    out[AT..AT + 2].copy_from_slice(&src_port.to_be_bytes());
    out[AT + 2..AT + 4].copy_from_slice(&dst_port.to_be_bytes());
    out[AT + 4..AT + 8].copy_from_slice(&spec.seq.to_be_bytes());
    out[AT + 8..AT + 12].copy_from_slice(&spec.ack.to_be_bytes());
    out[AT + 12] = ((len / 4) as u8) << 4;
    out[AT + 13] = spec.flags;
    out[AT + 14..AT + 16].copy_from_slice(&spec.window.to_be_bytes());
    out[AT + 16..AT + 20].copy_from_slice(&[0; 4]); // checksum (filled later), urgent pointer
    len
}

/// Sums the `len`-byte TCP header at `AT` (a multiple of 4, at most 40) with the
/// pseudo-header and stores the checksum.
#[inline(always)]
fn finish_tcp_checksum<const AT: usize>(pseudo: u64, len: usize, out: &mut [u8; SEGMENT_BUF_LEN]) {
    let sum = checksum::finish(checksum::add_words_at::<40, SEGMENT_BUF_LEN>(
        pseudo,
        out,
        AT,
        len & 63,
    ));
    out[AT + 16..AT + 18].copy_from_slice(&sum.to_be_bytes());
}
