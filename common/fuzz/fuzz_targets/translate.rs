//! Any frame the parser takes as TCP, translated by any offsets: its checksum holds after the
//! rewrite exactly when it held before (RFC 1624 keeps a corruption a corruption), and the
//! inverse translation gives the header back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use synguard_common::{
    checksum::{add_slice, holds, tcp_header_sum},
    field::tcp,
    parse::{L3, ParseScratch, TransportKind, parse_frame_with},
    translate::{Translation, translate_header},
};

fuzz_target!(|input: &[u8]| {
    if input.len() < 20 {
        return;
    }
    let (offsets, frame) = input.split_at(20);
    let word = |i: usize| u32::from_le_bytes(offsets[4 * i..4 * i + 4].try_into().unwrap());
    let translation = Translation {
        seq: word(0),
        ack: word(1),
        sack: word(2),
        tsval: word(3),
        tsecr: word(4),
        window_from: 0,
        window_to: 0,
    };
    let mut scratch = ParseScratch::default();
    let Ok(parsed) = parse_frame_with(frame, &mut scratch) else {
        return;
    };
    let L3::Ip(packet) = parsed.l3 else { return };
    if packet.transport.kind != TransportKind::Tcp {
        return;
    }
    let segment = scratch.segment;
    let header_len = segment.header_len as usize;
    let payload = &frame[packet.l4_offset as usize + header_len..packet.ip_end as usize];
    let sum = |header: &[u8; synguard_common::frame::TCP_HEADER_BUF_LEN]| {
        add_slice(
            tcp_header_sum(&packet.addrs, header, header_len, payload.len()),
            payload,
        )
    };
    let original = scratch.walker.header;
    let mut header = original;
    translate_header(&mut header, &segment.options, &translation);
    assert_eq!(holds(sum(&original)), holds(sum(&header)));
    translate_header(&mut header, &segment.options, &translation.inverse());
    let checksum = |h: &[u8]| u16::from_be_bytes([h[tcp::CHECKSUM], h[tcp::CHECKSUM + 1]]);
    let (before, after) = (checksum(&original), checksum(&header));
    // 0x0000 and 0xffff are one number in ones' complement.
    assert!(before == after || (before | after) == 0xffff && (before & after) == 0);
    header[tcp::CHECKSUM..tcp::CHECKSUM + 2].copy_from_slice(&before.to_be_bytes());
    assert_eq!(&header[..header_len], &original[..header_len]);
});
