//! The SYN-ACK the data plane sends in answer to a SYN, written from scratch: IPv4 (20 bytes,
//! no options) or IPv6 (40 bytes, no extension headers), then TCP with our options.
//!
//! TCP options, in Linux's order and alignment:
//! `MSS` | `SACK-permitted, timestamps` (or `NOP NOP` instead of SACK-permitted) | `NOP, window scale`;
//! without timestamps: `MSS` | `NOP NOP SACK-permitted` | `NOP, window scale`.
//! SACK-permitted, timestamps and window scale appear only when the client offered them
//! (RFC 2018, RFC 7323 sections 1.3 and 3.2).

use crate::{
    checksum,
    cookie::{CookieOptions, FlowKey},
    parse::{IPPROTO_TCP, TcpFlags, TcpSegment},
};

/// Room for the longest SYN-ACK (IPv6 40 + TCP 40), rounded up so a masked length fits.
pub const SYN_ACK_BUF_LEN: usize = 128;

/// What the guard announces in its SYN-ACKs (a map value written by the controller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct SynAckSettings {
    pub mss_v4: u16,
    pub mss_v6: u16,
    /// The window field of the SYN-ACK (never scaled, RFC 7323 section 2.2).
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
            window: 65535,
            window_scale: 7,
            _pad: 0,
        }
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for SynAckSettings {}

/// Writes the IP and TCP headers answering `syn` of `flow` into `out`, starting with the IP
/// header; returns their length.
#[inline(always)]
pub fn write_syn_ack(
    flow: &FlowKey,
    syn: &TcpSegment,
    cookie: u32,
    client: &CookieOptions,
    settings: &SynAckSettings,
    our_tsval: u32,
    out: &mut [u8; SYN_ACK_BUF_LEN],
) -> usize {
    // Every byte up to the returned length is written below (the buffer is scratch memory
    // holding the previous reply): zeroing 128 bytes first would cost more than the reply.
    let (client_addr, server_addr) = (&flow.client, &flow.server);
    if flow.family == 4 {
        let tcp_len = write_tcp::<20>(
            syn,
            cookie,
            client,
            settings.mss_v4,
            settings,
            our_tsval,
            out,
        );
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
        out[12..16].copy_from_slice(&server_addr[..4]);
        out[16..20].copy_from_slice(&client_addr[..4]);
        let header_sum = checksum::add_words_at::<20, SYN_ACK_BUF_LEN>(0, out, 0, 20);
        out[10..12].copy_from_slice(&checksum::finish(header_sum).to_be_bytes());
        let mut server4 = [0u8; 4];
        let mut client4 = [0u8; 4];
        server4.copy_from_slice(&server_addr[..4]);
        client4.copy_from_slice(&client_addr[..4]);
        let pseudo = checksum::pseudo_header_v4(&server4, &client4, IPPROTO_TCP, tcp_len as u16);
        finish_tcp_checksum::<20>(pseudo, tcp_len, out);
        total as usize
    } else {
        let tcp_len = write_tcp::<40>(
            syn,
            cookie,
            client,
            settings.mss_v6,
            settings,
            our_tsval,
            out,
        );
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
        out[8..24].copy_from_slice(server_addr);
        out[24..40].copy_from_slice(client_addr);
        let pseudo =
            checksum::pseudo_header_v6(server_addr, client_addr, IPPROTO_TCP, tcp_len as u16);
        finish_tcp_checksum::<40>(pseudo, tcp_len, out);
        40 + tcp_len
    }
}

/// Writes the TCP header at `AT`; returns its length. The checksum field is left zero.
#[inline(always)]
fn write_tcp<const AT: usize>(
    syn: &TcpSegment,
    cookie: u32,
    client: &CookieOptions,
    mss: u16,
    settings: &SynAckSettings,
    our_tsval: u32,
    out: &mut [u8; SYN_ACK_BUF_LEN],
) -> usize {
    let mut flags = TcpFlags::SYN | TcpFlags::ACK;
    if client.ecn {
        flags |= TcpFlags::ECE; // RFC 3168 section 6.1.1
    }
    let o = AT + 20;
    out[o..o + 4].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
    let sack_or_nops = if client.sack_permitted {
        [4, 2]
    } else {
        [1, 1]
    };
    let after = match syn.options.timestamps {
        Some((client_tsval, _)) => {
            out[o + 4..o + 6].copy_from_slice(&sack_or_nops);
            out[o + 6..o + 8].copy_from_slice(&[8, 10]);
            out[o + 8..o + 12].copy_from_slice(&our_tsval.to_be_bytes());
            out[o + 12..o + 16].copy_from_slice(&client_tsval.to_be_bytes());
            o + 16
        }
        None if client.sack_permitted => {
            out[o + 4..o + 8].copy_from_slice(&[1, 1, 4, 2]);
            o + 8
        }
        None => o + 4,
    };
    let end = match client.window_scale {
        Some(_) => {
            // Each arm writes at constant offsets: what the verifier wants.
            if after == o + 16 {
                out[o + 16..o + 20].copy_from_slice(&[1, 3, 3, settings.window_scale]);
            } else if after == o + 8 {
                out[o + 8..o + 12].copy_from_slice(&[1, 3, 3, settings.window_scale]);
            } else {
                out[o + 4..o + 8].copy_from_slice(&[1, 3, 3, settings.window_scale]);
            }
            after + 4
        }
        None => after,
    };
    let len = end - AT;
    let ack = syn.seq.wrapping_add(1); // the SYN consumed one sequence number
    out[AT..AT + 2].copy_from_slice(&syn.dst_port.to_be_bytes());
    out[AT + 2..AT + 4].copy_from_slice(&syn.src_port.to_be_bytes());
    out[AT + 4..AT + 8].copy_from_slice(&cookie.to_be_bytes());
    out[AT + 8..AT + 12].copy_from_slice(&ack.to_be_bytes());
    out[AT + 12] = ((len / 4) as u8) << 4;
    out[AT + 13] = flags;
    out[AT + 14..AT + 16].copy_from_slice(&settings.window.to_be_bytes());
    out[AT + 16..AT + 20].copy_from_slice(&[0; 4]); // checksum (filled later), urgent pointer
    len
}

/// Sums the `len`-byte TCP header at `AT` (a multiple of 4, at most 40) with the
/// pseudo-header and stores the checksum.
#[inline(always)]
fn finish_tcp_checksum<const AT: usize>(pseudo: u64, len: usize, out: &mut [u8; SYN_ACK_BUF_LEN]) {
    let sum = checksum::finish(checksum::add_words_at::<40, SYN_ACK_BUF_LEN>(
        pseudo,
        out,
        AT,
        len & 63,
    ));
    out[AT + 16..AT + 18].copy_from_slice(&sum.to_be_bytes());
}
