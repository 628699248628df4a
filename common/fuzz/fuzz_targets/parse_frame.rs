//! Any bytes as an Ethernet frame: the parser returns a verdict without panicking, and what it
//! reports of a frame lies within the frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use synguard_common::{
    counters::Tally,
    parse::{L3, ParseScratch, ParsedFrame, TransportKind, parse_frame_with},
    verdict::classify,
};

fuzz_target!(|frame: &[u8]| {
    let mut scratch = ParseScratch::default();
    let parsed = parse_frame_with(frame, &mut scratch);
    let _ = classify(&parsed);
    let _ = Tally::of(&parsed);
    if let Ok(ParsedFrame {
        l3: L3::Ip(packet), ..
    }) = parsed
    {
        let (l3, l4, end) = (
            packet.l3_offset as usize,
            packet.l4_offset as usize,
            packet.ip_end as usize,
        );
        assert!(l3 < l4 && l4 <= end && end <= frame.len(), "{packet:?}");
        if packet.transport.kind == TransportKind::Tcp {
            let tcp = &scratch.segment;
            let header_len = tcp.header_len as usize;
            assert!((20..=60).contains(&header_len) && header_len % 4 == 0);
            assert_eq!(l4 + header_len + tcp.payload_len as usize, end);
            assert_eq!(
                &scratch.walker.header[..header_len],
                &frame[l4..l4 + header_len]
            );
        }
    }
});
