//! The segment writer's SYN-ACK, checked by an independent implementation (etherparse): addresses and
//! ports swapped, ack = ISN + 1, our options, valid IPv4 and TCP checksums.

use etherparse::{IpHeaders, PacketBuilder, TcpOptionElement};
use proptest::prelude::*;
use synguard_common::{
    cookie::{CookieOptions, FlowKey},
    parse::{IpAddrs, TcpFlags, TcpSegment, parse_tcp_frame},
    segment::{SEGMENT_BUF_LEN, SegmentSpec, SynAckSettings, write_segment},
    test_frames::*,
};

fn tcp_of(frame: &[u8]) -> (IpAddrs, TcpSegment) {
    let (packet, tcp) = parse_tcp_frame(frame).expect("a TCP frame");
    (packet.addrs, tcp)
}

/// Writes our answer to `syn_frame` and returns the L3 bytes.
fn answer(syn_frame: &[u8], cookie: u32, tsval: u32) -> (Vec<u8>, CookieOptions) {
    let (addrs, syn) = tcp_of(syn_frame);
    let options = CookieOptions::from_syn(&syn, addrs.is_v6());
    let mut out = [0xaau8; SEGMENT_BUF_LEN];
    let spec = SegmentSpec::syn_ack(
        &syn,
        cookie,
        &options,
        &SynAckSettings::default(),
        addrs.is_v6(),
        tsval,
    );
    let len = write_segment(&FlowKey::from_client_segment(&addrs, &syn), &spec, &mut out);
    (out[..len].to_vec(), options)
}

#[test]
fn answers_a_linux_ipv4_syn() {
    let (l3, _) = answer(&syn_v4(0), 0x1234_5678, 777);
    let (seq, options) = assert_syn_ack(&l3);
    assert_eq!(seq, 0x1234_5678, "seq = cookie");
    assert_eq!(
        options,
        [
            TcpOptionElement::MaximumSegmentSize(1460),
            TcpOptionElement::SelectiveAcknowledgementPermitted,
            TcpOptionElement::Timestamp(777, 0x1122_3344),
            TcpOptionElement::WindowScale(7),
        ]
    );
}

#[test]
fn answers_an_ipv6_syn_with_the_ipv6_mss() {
    let (l3, _) = answer(&syn_v6(), 1, 2);
    let options = assert_syn_ack(&l3).1;
    assert_eq!(options[0], TcpOptionElement::MaximumSegmentSize(1440));
}

fn syn_with(options: &[TcpOptionElement], ecn: bool) -> Vec<u8> {
    let mut builder = PacketBuilder::ethernet2(MAC_CLIENT, MAC_GUARD)
        .ipv4(CLIENT4, SERVER4, 64)
        .tcp(CLIENT_PORT, SERVER_PORT, CLIENT_ISN, 1000)
        .syn();
    if ecn {
        builder = builder.ece().cwr();
    }
    let mut frame = Vec::new();
    builder
        .options(options)
        .unwrap()
        .write(&mut frame, &[])
        .unwrap();
    frame
}

proptest! {
    /// Each option the client offers comes back, and only those; checksums always hold.
    #[test]
    fn options_follow_the_client(
        mss in proptest::option::of(500u16..9000), window_scale in proptest::option::of(0u8..=14),
        sack in any::<bool>(), timestamps in any::<bool>(), ecn in any::<bool>(),
        cookie in any::<u32>(), tsval in any::<u32>(),
    ) {
        let mut offered = Vec::new();
        if let Some(mss) = mss { offered.push(TcpOptionElement::MaximumSegmentSize(mss)); }
        if sack { offered.push(TcpOptionElement::SelectiveAcknowledgementPermitted); }
        if timestamps { offered.push(TcpOptionElement::Timestamp(99, 0)); }
        if let Some(shift) = window_scale {
            offered.push(TcpOptionElement::Noop);
            offered.push(TcpOptionElement::WindowScale(shift));
        }
        let (l3, _) = answer(&syn_with(&offered, ecn), cookie, tsval);
        let options = assert_syn_ack(&l3).1;
        let mut expected = vec![TcpOptionElement::MaximumSegmentSize(1460)];
        if sack { expected.push(TcpOptionElement::SelectiveAcknowledgementPermitted); }
        if timestamps { expected.push(TcpOptionElement::Timestamp(tsval, 99)); }
        if window_scale.is_some() { expected.push(TcpOptionElement::WindowScale(7)); }
        prop_assert_eq!(options, expected);
        // ECE answers an ECN request (RFC 3168), and nothing else sets it.
        let (_, rest) = IpHeaders::from_slice(&l3).unwrap();
        prop_assert_eq!(rest.payload[13] & TcpFlags::ECE != 0, ecn);
        // Our own parser reads our own output back, options and all.
        let mut frame = syn_v4(0)[..14].to_vec();
        frame.extend_from_slice(&l3);
        let (_, tcp) = tcp_of(&frame);
        prop_assert_eq!(tcp.seq, cookie);
        prop_assert_eq!(tcp.options.sack_permitted, sack);
    }
}

#[test]
fn window_probes_are_expected_while_a_zero_window_cookie_can_validate() {
    let zero = SynAckSettings {
        window: 0,
        ..SynAckSettings::default()
    };
    let open = SynAckSettings::default();
    let fresh_map = SynAckSettings {
        mss_v4: 0,
        mss_v6: 0,
        window: 0,
        window_scale: 0,
        _pad: 0,
        zero_window_cookies_until: 0,
    };
    // A zero window: every bare ACK may be a probe.
    let zero = zero.succeeding(&fresh_map, 100);
    assert!(zero.expects_window_probes(100) && zero.expects_window_probes(1_000));
    // The window opens at counter 100: cookies made during 100 validate through 101.
    let opened = open.succeeding(&zero, 100);
    assert!(opened.expects_window_probes(100) && opened.expects_window_probes(101));
    assert!(
        !opened.expects_window_probes(102),
        "every zero-window cookie expired"
    );
    // Rewriting an open window (a reload) keeps the deadline; it does not move it.
    let rewritten = open.succeeding(&opened, 105);
    assert_eq!(rewritten.zero_window_cookies_until, 101);
    assert!(!rewritten.expects_window_probes(105));
    // A fresh map says nothing of what came before (a start): assume a zero window.
    let started = open.succeeding(&fresh_map, 200);
    assert!(started.expects_window_probes(201) && !started.expects_window_probes(202));
    // Closed and opened again: a new deadline.
    let reopened = open.succeeding(&zero.succeeding(&rewritten, 300), 300);
    assert_eq!(reopened.zero_window_cookies_until, 301);
}
