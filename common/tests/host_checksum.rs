//! The check of a TCP segment's checksum (the part the data plane sums itself, pseudo-header
//! and header, plus the payload's words) against segments etherparse builds.

use etherparse::{PacketBuilder, TcpOptionElement};
use synguard_common::{
    checksum::{add_slice, holds, tcp_header_sum},
    parse::{L3, ParseScratch, parse_frame_with},
    test_frames::*,
};

/// The segment's full sum, as the data plane makes it; `None` when the frame no longer
/// parses as TCP.
fn sum_of(frame: &[u8]) -> Option<u64> {
    let mut scratch = ParseScratch::default();
    let L3::Ip(packet) = parse_frame_with(frame, &mut scratch).ok()?.l3 else {
        return None;
    };
    let header_len = scratch.segment.header_len as usize;
    let payload = frame.get(packet.l4_offset as usize + header_len..packet.ip_end as usize)?;
    let header = tcp_header_sum(
        &packet.addrs,
        &scratch.walker.header,
        header_len,
        payload.len(),
    );
    Some(add_slice(header, payload))
}

/// Both families, with options, payloads of every length parity up to a full segment: the
/// sum holds as built, and fails with any single bit of the addresses or the segment flipped.
#[test]
fn a_tcp_segments_checksum_holds_and_any_flipped_bit_breaks_it() {
    for v6 in [false, true] {
        for payload_len in [0usize, 1, 2, 3, 100, 1459, 1460] {
            let payload: Vec<u8> = (0..payload_len).map(|i| (i * 7 + 3) as u8).collect();
            let eth = PacketBuilder::ethernet2(MAC_CLIENT, MAC_GUARD);
            let ip = if v6 {
                eth.ipv6(CLIENT6, SERVER6, 64)
            } else {
                eth.ipv4(CLIENT4, SERVER4, 64)
            };
            let mut frame = Vec::new();
            ip.tcp(CLIENT_PORT, SERVER_PORT, CLIENT_ISN, 502)
                .ack(0x1234_5678)
                .options(&[TcpOptionElement::Timestamp(5, 6)])
                .unwrap()
                .write(&mut frame, &payload)
                .unwrap();
            assert!(
                holds(sum_of(&frame).unwrap()),
                "v6 {v6}, {payload_len} bytes"
            );
            let (source, l4) = if v6 {
                (14 + 8, 14 + 40)
            } else {
                (14 + 12, 14 + 20)
            };
            for at in (source..source + 4).chain(l4..frame.len()) {
                for bit in [0x01, 0x80] {
                    let mut broken = frame.clone();
                    broken[at] ^= bit;
                    if let Some(sum) = sum_of(&broken) {
                        assert!(!holds(sum), "v6 {v6}, {payload_len} bytes, byte {at}");
                    }
                }
            }
        }
    }
}
