//! Internet checksums (RFC 1071) for headers the data plane writes, and the check of those
//! it answers.
//!
//! Sums run over fixed-size, zero-padded buffers: zeros add nothing, and constant lengths give
//! the verifier constant loop bounds.

use crate::{
    field::{IPPROTO_TCP, tcp},
    frame::TCP_HEADER_BUF_LEN,
    parse::IpAddrs,
};

/// Adds big-endian 16-bit words of `bytes` to `sum`.
#[inline(always)]
pub fn add_words<const N: usize>(mut sum: u64, bytes: &[u8; N]) -> u64 {
    let mut i = 0;
    while i + 1 < N {
        sum += u16::from_be_bytes([bytes[i], bytes[i + 1]]) as u64;
        i += 2;
    }
    if N % 2 == 1 {
        sum += (bytes[N - 1] as u64) << 8;
    }
    sum
}

/// Adds the big-endian 16-bit words of `bytes`, of any length (an odd last byte padded with
/// zero), to `sum`. For the host: the data plane sums fixed-size buffers ([`add_words`]).
pub fn add_slice(mut sum: u64, bytes: &[u8]) -> u64 {
    for pair in bytes.chunks(2) {
        sum += u64::from(pair[0]) << 8 | pair.get(1).map_or(0, |low| u64::from(*low));
    }
    sum
}

/// Folds a running sum to 16 bits and complements it.
#[inline(always)]
pub fn finish(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// The TCP/UDP pseudo-header sum (RFC 9293 section 3.1; RFC 8200 section 8.1 for IPv6).
#[inline(always)]
pub fn pseudo_header_v4(src: &[u8; 4], dst: &[u8; 4], protocol: u8, length: u16) -> u64 {
    add_words(add_words(0, src), dst) + protocol as u64 + length as u64
}

#[inline(always)]
pub fn pseudo_header_v6(src: &[u8; 16], dst: &[u8; 16], protocol: u8, length: u16) -> u64 {
    add_words(add_words(0, src), dst) + protocol as u64 + length as u64
}

/// What a TCP segment's checksum completes, but for the payload's words (the caller adds
/// them): its pseudo-header (RFC 9293 section 3.1) and its header, the first `header_len`
/// bytes of `header` (a multiple of 4, at most 60; the copy past them is not summed). One sum
/// for both families: `IpAddrs` holds IPv4 addresses zero-padded, and IPv6's pseudo-header
/// (RFC 8200 section 8.1) has the same words.
#[inline(always)]
pub fn tcp_header_sum(
    addrs: &IpAddrs,
    header: &[u8; TCP_HEADER_BUF_LEN],
    header_len: usize,
    payload_len: usize,
) -> u64 {
    let mut sum = add_words(add_words(0, &addrs.src), &addrs.dst)
        + IPPROTO_TCP as u64
        + (header_len + payload_len) as u64;
    let mut at = 0;
    while at < tcp::MAX_HEADER_LEN {
        if at < header_len {
            sum += u16::from_be_bytes([header[at], header[at + 1]]) as u64
                + u16::from_be_bytes([header[at + 2], header[at + 3]]) as u64;
        }
        at += 4;
    }
    sum
}

/// The data plane's buffer for summing a payload (`EARLY_DATA_MAX` bytes at most, the most a
/// segment the guard answers may carry), with room past any byte index under 2048 for the
/// last word's zero padding.
pub const PAYLOAD_SUM_BUF_LEN: usize = 2048 + 4;

/// Whether summed words that include their own checksum add up to all ones (the checksum
/// holds).
#[inline(always)]
pub fn holds(sum: u64) -> bool {
    finish(sum) == 0
}

/// The checksum after bytes `old` of the summed data (an even count, starting at an even
/// offset) became `new`, without summing the rest again (RFC 1624, eqn. 3).
#[inline(always)]
pub fn replace<const N: usize>(checksum: u16, old: &[u8; N], new: &[u8; N]) -> u16 {
    let mut complement = [0u8; N];
    let mut i = 0;
    while i < N {
        complement[i] = !old[i];
        i += 1;
    }
    finish(add_words(add_words(!checksum as u64, &complement), new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: words 0001 f203 f4f5 f6f7 sum to ddf2 (before complement).
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(finish(add_words(0, &bytes)), !0xddf2);
    }

    #[test]
    fn a_buffer_with_its_checksum_sums_to_zero() {
        let mut header = [
            0x45u8, 0, 0, 0x3c, 0x1c, 0x46, 0x40, 0, 0x40, 6, 0, 0, 0xac, 0x10, 0x0a, 0x63, 0xac,
            0x10, 0x0a, 0x0c,
        ];
        let checksum = finish(add_words(0, &header));
        header[10..12].copy_from_slice(&checksum.to_be_bytes());
        assert_eq!(finish(add_words(0, &header)), 0);
        assert_eq!(checksum, 0xb1e6);
    }

    #[test]
    fn an_update_in_place_matches_a_full_sum() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..10_000 {
            let mut data = [0u8; 40];
            data.iter_mut().for_each(|byte| *byte = next() as u8);
            let before = finish(add_words(0, &data));
            let at = (next() % 18) as usize * 2;
            let old: [u8; 4] = data[at..at + 4].try_into().unwrap();
            let new = (next() as u32).to_be_bytes();
            data[at..at + 4].copy_from_slice(&new);
            let full = finish(add_words(0, &data));
            let updated = replace(before, &old, &new);
            // 0x0000 and 0xffff are the same number in ones' complement.
            assert!(updated == full || (updated | full) == 0xffff && (updated & full) == 0);
        }
    }

    #[test]
    fn odd_lengths_pad_with_a_zero_byte() {
        assert_eq!(add_words(0, &[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }
}
