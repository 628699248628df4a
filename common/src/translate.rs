//! Sequence translation of a forwarded TCP header, in place, with the checksum updated
//! incrementally (RFC 1624).
//!
//! The client saw our cookie as the server's ISN; the server chose its own. Every number that
//! lives in the server's sequence space is shifted by their difference on the way through:
//! client to server the acknowledgement and the SACK block edges, server to client the
//! sequence number. The same holds for timestamps when the server's clock differs from ours
//! (server TSval, client TSecr), and for window fields when the two sides scale differently.
//! A `Translation` of zeros changes nothing.

use crate::{
    field::{be16, be32, tcp},
    frame::TCP_HEADER_BUF_LEN,
    parse::TcpFlags,
    seq::rescale_window,
    tcp_options::TcpOptions,
};

/// What to add to each field of a header going one way through the guard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Translation {
    pub seq: u32,
    pub ack: u32,
    pub sack: u32,
    pub tsval: u32,
    pub tsecr: u32,
    /// The shift the sender applied to its window field, and the one the receiver applies.
    pub window_from: u8,
    pub window_to: u8,
}

impl Translation {
    /// What undoes this translation: for an ICMP error quoting a segment the guard forwarded,
    /// whose quote must read as its sender sent it. (Window fields are left alone: a rescale
    /// loses bits, and no receiver reads the window of a quote.)
    #[inline(always)]
    pub fn inverse(&self) -> Translation {
        Translation {
            seq: self.seq.wrapping_neg(),
            ack: self.ack.wrapping_neg(),
            sack: self.sack.wrapping_neg(),
            tsval: self.tsval.wrapping_neg(),
            tsecr: self.tsecr.wrapping_neg(),
            window_from: 0,
            window_to: 0,
        }
    }
}

/// Adds `add` to the big-endian word at `at`; returns the RFC 1624 checksum adjustment
/// (the complement of the old 16-bit halves plus the new ones). An option may sit at an odd
/// offset (nothing makes a sender pad it): its bytes then fall into the checksum's 16-bit
/// words the other way round, and the adjustment is the byte-swapped one (RFC 1071 2(B)).
#[inline(always)]
pub fn shift_word<const N: usize>(header: &mut [u8; N], at: usize, add: u32) -> u64 {
    let at = at & 63;
    let old = be32(header, at);
    let new = old.wrapping_add(add);
    header[at..at + 4].copy_from_slice(&new.to_be_bytes());
    let adjust = (!(old >> 16) & 0xffff) as u64
        + (!old & 0xffff) as u64
        + (new >> 16) as u64
        + (new & 0xffff) as u64;
    if at & 1 == 0 {
        adjust
    } else {
        let folded = (adjust & 0xffff) + (adjust >> 16);
        let folded = (folded & 0xffff) + (folded >> 16);
        (folded as u16).swap_bytes() as u64
    }
}

/// Rewrites the header (20..=60 bytes at the start of `header`) whose decoded options are
/// `options`, and fixes its checksum. Returns the RFC 1624 adjustment of everything it changed,
/// the checksum field included: what a checksum covering the whole header (that of an ICMP
/// error quoting it) needs.
#[inline(always)]
pub fn translate_header(
    header: &mut [u8; TCP_HEADER_BUF_LEN],
    options: &TcpOptions,
    t: &Translation,
) -> u64 {
    let mut adjust = 0u64;
    if t.seq != 0 {
        adjust += shift_word(header, tcp::SEQ, t.seq);
    }
    if t.ack != 0 && header[tcp::FLAGS] & TcpFlags::ACK != 0 {
        adjust += shift_word(header, tcp::ACK, t.ack);
    }
    if t.window_from != t.window_to {
        let old = be16(header, tcp::WINDOW);
        let new = rescale_window(old, t.window_from, t.window_to);
        header[tcp::WINDOW..tcp::WINDOW + 2].copy_from_slice(&new.to_be_bytes());
        adjust += (!old) as u64 + new as u64;
    }
    if options.timestamps_at != 0 {
        let at = options.timestamps_at as usize;
        if t.tsval != 0 {
            adjust += shift_word(header, at, t.tsval);
        }
        if t.tsecr != 0 {
            adjust += shift_word(header, at + 4, t.tsecr);
        }
    }
    if t.sack != 0 && options.sack_at != 0 {
        let mut block = 0;
        // At most 4 blocks fit in 40 option bytes; each has a left and a right edge.
        while block < 4 && block < options.sack_blocks as usize {
            let at = options.sack_at as usize + block * 8;
            adjust += shift_word(header, at, t.sack);
            adjust += shift_word(header, at + 4, t.sack);
            block += 1;
        }
    }
    if adjust != 0 {
        let old = be16(header, tcp::CHECKSUM);
        let updated = crate::checksum::finish((!old) as u64 + adjust);
        header[tcp::CHECKSUM..tcp::CHECKSUM + 2].copy_from_slice(&updated.to_be_bytes());
        adjust += (!old) as u64 + updated as u64;
    }
    adjust
}
