//! Sequence translation on the host: the incrementally updated checksum must equal one
//! computed from scratch (by etherparse), for any offsets, SACK blocks and windows.

use etherparse::{PacketBuilder, TcpHeaderSlice, TcpOptionElement as O};
use proptest::prelude::*;
use synguard_common::{
    frame::TCP_HEADER_BUF_LEN,
    parse::parse_tcp_frame,
    test_frames::*,
    translate::{Translation, translate_header},
};

proptest! {
    #[test]
    fn translated_headers_keep_valid_checksums(
        seq in any::<u32>(), ack in any::<u32>(), window in any::<u16>(),
        tsval in any::<u32>(), tsecr in any::<u32>(), blocks in 0usize..=3,
        edges in any::<[u32; 6]>(), payload in proptest::collection::vec(any::<u8>(), 0..40),
        t_seq in any::<u32>(), t_ack in any::<u32>(), t_ts in any::<u32>(),
        window_from in 0u8..=14, window_to in 0u8..=14, leading_nops in 0usize..=3,
    ) {
        let sack = (blocks > 0).then(|| O::SelectiveAcknowledgement(
            (edges[0], edges[1]),
            [
                (blocks > 1).then_some((edges[2], edges[3])),
                (blocks > 2).then_some((edges[4], edges[5])),
                None,
            ],
        ));
        // Any alignment: senders need not pad options to even offsets.
        let mut options = vec![O::Noop; leading_nops];
        options.push(O::Timestamp(tsval, tsecr));
        if let Some(sack) = sack {
            options.extend([O::Noop, sack]);
        }
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(MAC_CLIENT, MAC_GUARD)
            .ipv4(CLIENT4, SERVER4, 64)
            .tcp(CLIENT_PORT, SERVER_PORT, seq, window)
            .ack(ack)
            .options(&options)
            .unwrap()
            .write(&mut frame, &payload)
            .unwrap();
        let (packet, tcp) = parse_tcp_frame(&frame[..]).unwrap();
        let at = packet.l4_offset as usize;
        let len = tcp.header_len as usize;
        let mut header = [0u8; TCP_HEADER_BUF_LEN];
        header[..len].copy_from_slice(&frame[at..at + len]);
        let translation = Translation {
            seq: t_seq, ack: t_ack, sack: t_ack, tsval: t_ts, tsecr: t_ts.wrapping_neg(),
            window_from, window_to,
        };
        translate_header(&mut header, &tcp.options, &translation);
        frame[at..at + len].copy_from_slice(&header[..len]);
        let l3 = &frame[14..];
        let out = assert_checksums(l3); // the incremental checksum equals a fresh one
        prop_assert_eq!(out.sequence_number, seq.wrapping_add(t_seq));
        prop_assert_eq!(out.acknowledgment_number, ack.wrapping_add(t_ack));
        let parsed = TcpHeaderSlice::from_slice(&l3[20..]).unwrap().to_header();
        let expected_window = (((window as u64) << window_from) >> window_to).min(0xffff) as u16;
        prop_assert_eq!(parsed.window_size, expected_window);
        let got: Vec<O> = parsed.options_iterator().map(Result::unwrap).filter(|o| *o != O::Noop).collect();
        prop_assert_eq!(&got[0], &O::Timestamp(tsval.wrapping_add(t_ts), tsecr.wrapping_sub(t_ts)));
        if blocks > 0 {
            let O::SelectiveAcknowledgement(first, rest) = got[1].clone() else { panic!("SACK lost") };
            prop_assert_eq!(first, (edges[0].wrapping_add(t_ack), edges[1].wrapping_add(t_ack)));
            for (i, block) in rest.iter().enumerate().take(blocks - 1) {
                let shifted = (edges[2 + 2 * i].wrapping_add(t_ack), edges[3 + 2 * i].wrapping_add(t_ack));
                prop_assert_eq!(*block, Some(shifted));
            }
        }
    }
}

#[test]
fn a_zero_translation_changes_nothing() {
    let frame = ack_v4(5, 6, Some((7, 8)));
    let (packet, tcp) = parse_tcp_frame(&frame[..]).unwrap();
    let at = packet.l4_offset as usize;
    let len = tcp.header_len as usize;
    let mut header = [0u8; TCP_HEADER_BUF_LEN];
    header[..len].copy_from_slice(&frame[at..at + len]);
    translate_header(&mut header, &tcp.options, &Translation::default());
    assert_eq!(&header[..len], &frame[at..at + len]);
}
