//! ICMP and ICMPv6 errors about a segment of a validated flow (RFC 792, RFC 4443, RFC 5927).
//!
//! A router that cannot deliver a segment the guard forwarded (too big for its next link, a
//! hop limit run out, no route) quotes it back to the segment's source. The quote carries the
//! numbers as the guard wrote them, in the receiver's sequence space, and the source checks
//! the quoted sequence number against what it has in flight (RFC 5927 section 4.1): untouched,
//! the error is ignored and path MTU discovery stalls. The guard finds the flow by the quoted
//! addresses and ports, checks the quote against what the flow's sender has in flight (a
//! forged error must not reach it), and turns the quoted numbers back into the sender's space.

use crate::{
    field::{IPPROTO_TCP, be16, be32, icmp, ipv4, ipv6, tcp},
    frame::FrameBytes,
    parse::IpAddrs,
};

/// Whether an ICMP (`family` 4) or ICMPv6 (6) message of `icmp_type` is an error the guard
/// relays for a flow: destination unreachable (fragmentation needed among them), packet too
/// big, time exceeded.
#[inline(always)]
pub fn is_relayed_error(family: u8, icmp_type: u8) -> bool {
    if family == 4 {
        icmp_type == 3 || icmp_type == 11
    } else {
        icmp_type == 1 || icmp_type == 2 || icmp_type == 3
    }
}

/// The TCP segment an ICMP error quotes: who sent it, and where its header lies in the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quote {
    /// The quoted packet's addresses: its source is the one the error goes back to.
    pub addrs: IpAddrs,
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    /// Offset of the quoted TCP header in the frame.
    pub tcp_offset: u16,
    /// How many bytes of the TCP header (and beyond) the quote holds: at least the 8 of
    /// RFC 792 (ports and sequence number); routers following RFC 1812 quote more.
    pub tcp_len: u16,
}

/// The quoted TCP segment of the ICMP error whose ICMP header is at `l4_offset` of an IP
/// packet of `family` ending at `ip_end`; `None` when the message is not an error the guard
/// relays, or quotes no TCP segment it can read (a fragment past the first, an IPv6 extension
/// header, fewer than 8 bytes of TCP).
#[inline(always)]
pub fn locate_quote<F: FrameBytes + ?Sized>(
    frame: &F,
    l4_offset: usize,
    ip_end: usize,
    family: u8,
) -> Option<Quote> {
    let header: [u8; icmp::HEADER_LEN] = frame.load(l4_offset)?;
    if !is_relayed_error(family, header[icmp::TYPE]) {
        return None;
    }
    let inner = l4_offset + icmp::HEADER_LEN;
    let (addrs, tcp_offset) = if family == 4 {
        let h: [u8; ipv4::MIN_HEADER_LEN] = frame.load(inner)?;
        let header_len = (h[ipv4::VERSION_IHL] & 0x0f) as usize * 4;
        let first_fragment = be16(&h, ipv4::FLAGS_FRAGMENT) & 0x1fff == 0;
        if h[ipv4::VERSION_IHL] >> 4 != 4
            || header_len < ipv4::MIN_HEADER_LEN
            || h[ipv4::PROTOCOL] != IPPROTO_TCP
            || !first_fragment
        {
            return None;
        }
        let addrs = IpAddrs::v4(
            be32(&h, ipv4::SOURCE).to_be_bytes(),
            be32(&h, ipv4::DESTINATION).to_be_bytes(),
        );
        (addrs, inner + header_len)
    } else {
        let h: [u8; ipv6::HEADER_LEN] = frame.load(inner)?;
        if h[ipv6::VERSION_CLASS_FLOW] >> 4 != 6 || h[ipv6::NEXT_HEADER] != IPPROTO_TCP {
            return None;
        }
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        src.copy_from_slice(&h[ipv6::SOURCE..ipv6::SOURCE + 16]);
        dst.copy_from_slice(&h[ipv6::DESTINATION..ipv6::DESTINATION + 16]);
        (IpAddrs::v6(src, dst), inner + ipv6::HEADER_LEN)
    };
    if tcp_offset + 8 > ip_end {
        return None;
    }
    let first: [u8; 8] = frame.load(tcp_offset)?;
    Some(Quote {
        addrs,
        src_port: be16(&first, tcp::SOURCE_PORT),
        dst_port: be16(&first, tcp::DESTINATION_PORT),
        seq: be32(&first, tcp::SEQ),
        tcp_offset: tcp_offset as u16,
        tcp_len: (ip_end - tcp_offset) as u16,
    })
}

/// The smallest span a quote may lie behind the sender's next sequence number: a window
/// the receiver may have shrunk since.
pub const MIN_IN_FLIGHT_SPAN: u32 = 0xffff;

/// Whether a quoted sequence number (in the sender's space) names data the sender may still
/// have in flight: not past its next sequence number, and at most a window behind it (the
/// receiver's last window, at least [`MIN_IN_FLIGHT_SPAN`]). The guard does not track the
/// sender's SND.UNA, so this is RFC 5927's check as far as the guard can see.
#[inline(always)]
pub fn quote_in_flight(seq: u32, sender_next: u32, receiver_window: u32) -> bool {
    let span = if receiver_window > MIN_IN_FLIGHT_SPAN {
        receiver_window
    } else {
        MIN_IN_FLIGHT_SPAN
    };
    sender_next.wrapping_sub(seq) <= span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_in_flight_lie_up_to_a_window_behind_the_next_sequence_number() {
        assert!(quote_in_flight(1000, 1000, 0));
        assert!(!quote_in_flight(1001, 1000, 0), "past what was sent");
        assert!(quote_in_flight(100_000 - 0xffff, 100_000, 0));
        assert!(!quote_in_flight(100_000 - 0x10000, 100_000, 0));
        assert!(
            quote_in_flight(5u32.wrapping_sub(1 << 20), 5, 1 << 20),
            "wraps"
        );
        assert!(!quote_in_flight(
            5u32.wrapping_sub((1 << 20) + 1),
            5,
            1 << 20
        ));
    }

    #[test]
    fn relayed_errors_by_family() {
        for relayed in [3, 11] {
            assert!(is_relayed_error(4, relayed));
        }
        for relayed in [1, 2, 3] {
            assert!(is_relayed_error(6, relayed));
        }
        for other in [0, 8, 5, 12] {
            assert!(!is_relayed_error(4, other), "ICMP type {other}");
        }
        for other in [128, 129, 4, 135] {
            assert!(!is_relayed_error(6, other), "ICMPv6 type {other}");
        }
    }
}
