//! The SYN-ACK writer, checked by an independent implementation (etherparse): addresses and
//! ports swapped, ack = ISN + 1, our options, valid IPv4 and TCP checksums.

use etherparse::{IpHeaders, PacketBuilder, TcpHeaderSlice, TcpOptionElement};
use proptest::prelude::*;
use synguard_common::{
    cookie::{CookieOptions, FlowKey},
    parse::{IpAddrs, L3, TcpFlags, TcpSegment, Transport, parse_frame},
    syn_ack::{SYN_ACK_BUF_LEN, SynAckSettings, write_syn_ack},
    test_frames::*,
};

fn tcp_of(frame: &[u8]) -> (IpAddrs, TcpSegment) {
    let parsed = parse_frame(frame).unwrap();
    let L3::Ip(packet) = parsed.l3 else {
        panic!("not IP")
    };
    let Transport::Tcp(tcp) = packet.transport else {
        panic!("not TCP")
    };
    (packet.addrs, tcp)
}

/// Writes our answer to `syn_frame` and returns the L3 bytes.
fn answer(syn_frame: &[u8], cookie: u32, tsval: u32) -> (Vec<u8>, CookieOptions) {
    let (addrs, syn) = tcp_of(syn_frame);
    let options = CookieOptions::from_syn(&syn, matches!(addrs, IpAddrs::V6 { .. }));
    let mut out = [0xaau8; SYN_ACK_BUF_LEN];
    let len = write_syn_ack(
        &FlowKey::from_client_segment(&addrs, &syn),
        &syn,
        cookie,
        &options,
        &SynAckSettings::default(),
        tsval,
        &mut out,
    );
    (out[..len].to_vec(), options)
}

/// Checks every field an independent parser sees; returns the TCP options found.
fn verify(l3: &[u8], v6: bool) -> Vec<TcpOptionElement> {
    let (ip, rest) = IpHeaders::from_slice(l3).unwrap();
    let tcp = TcpHeaderSlice::from_slice(rest.payload)
        .unwrap()
        .to_header();
    assert!(
        rest.payload.len() == tcp.header_len(),
        "no payload in a SYN-ACK"
    );
    assert_eq!(
        (tcp.source_port, tcp.destination_port),
        (SERVER_PORT, CLIENT_PORT)
    );
    assert_eq!(tcp.acknowledgment_number, CLIENT_ISN.wrapping_add(1));
    assert!(tcp.syn && tcp.ack && !tcp.fin && !tcp.rst);
    match (&ip, v6) {
        (IpHeaders::Ipv4(v4, _), false) => {
            assert_eq!((v4.source, v4.destination), (SERVER4, CLIENT4));
            assert_eq!(
                v4.header_checksum,
                v4.calc_header_checksum(),
                "IPv4 checksum"
            );
            assert_eq!(
                tcp.checksum,
                tcp.calc_checksum_ipv4(v4, &[]).unwrap(),
                "TCP checksum"
            );
            assert_eq!(v4.total_len as usize, l3.len());
        }
        (IpHeaders::Ipv6(v6, _), true) => {
            assert_eq!((v6.source, v6.destination), (SERVER6, CLIENT6));
            assert_eq!(
                tcp.checksum,
                tcp.calc_checksum_ipv6(v6, &[]).unwrap(),
                "TCP checksum"
            );
            assert_eq!(v6.payload_length as usize, l3.len() - 40);
        }
        other => panic!("wrong IP version: {other:?}"),
    }
    tcp.options_iterator().map(|o| o.unwrap()).collect()
}

fn without_noops(options: Vec<TcpOptionElement>) -> Vec<TcpOptionElement> {
    options
        .into_iter()
        .filter(|o| *o != TcpOptionElement::Noop)
        .collect()
}

#[test]
fn answers_a_linux_ipv4_syn() {
    let (l3, _) = answer(&syn_v4(0), 0x1234_5678, 777);
    let options = without_noops(verify(&l3, false));
    assert_eq!(
        options,
        [
            TcpOptionElement::MaximumSegmentSize(1460),
            TcpOptionElement::SelectiveAcknowledgementPermitted,
            TcpOptionElement::Timestamp(777, 0x1122_3344),
            TcpOptionElement::WindowScale(7),
        ]
    );
    let (_, tcp) = IpHeaders::from_slice(&l3).unwrap();
    assert_eq!(
        &tcp.payload[4..8],
        &0x1234_5678u32.to_be_bytes(),
        "seq = cookie"
    );
}

#[test]
fn answers_an_ipv6_syn_with_the_ipv6_mss() {
    let (l3, _) = answer(&syn_v6(), 1, 2);
    let options = without_noops(verify(&l3, true));
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
        let options = without_noops(verify(&l3, false));
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
