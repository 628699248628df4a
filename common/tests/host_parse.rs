//! The frame parser on well-formed and malformed input.

use etherparse::{PacketBuilder, TcpOptionElement};
use proptest::prelude::*;
use synguard_common::{
    parse::{
        IpAddrs, L3, ParseError, TcpFlags, Transport, TransportKind, flags_are_valid, parse_frame,
        parse_tcp_frame,
    },
    tcp_options::TcpOptions,
    test_frames::*,
};

/// Hop-by-hop or destination options header body (after the next-header byte): 8 bytes.
fn options_ext_body() -> Vec<u8> {
    vec![0, 1, 4, 0, 0, 0, 0]
}

fn tcp_of(frame: &[u8]) -> (IpAddrs, synguard_common::parse::TcpSegment) {
    let (packet, tcp) = parse_tcp_frame(frame).expect("a well-formed TCP frame");
    (packet.addrs, tcp)
}

#[test]
fn ipv4_syn_is_decoded() {
    let frame = syn_v4(0);
    let parsed = parse_frame(&frame[..]).unwrap();
    assert_eq!(parsed.vlan_tags, 0);
    let (addrs, tcp) = tcp_of(&frame[..]);
    assert_eq!(addrs, IpAddrs::v4(CLIENT4, SERVER4));
    assert_eq!((tcp.src_port, tcp.dst_port), (CLIENT_PORT, SERVER_PORT));
    assert_eq!(tcp.seq, 0xdead_beef);
    assert_eq!(tcp.flags, TcpFlags(TcpFlags::SYN));
    assert_eq!(tcp.window, 64240);
    assert_eq!(tcp.header_len, 40);
    assert_eq!(tcp.payload_len, 0);
    assert_eq!(
        tcp.options,
        TcpOptions {
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            timestamps: Some((0x1122_3344, 0)),
            sack_blocks: 0,
            timestamps_at: 28,
            sack_at: 0,
        }
    );
}

#[test]
fn vlan_tags_are_skipped() {
    for tags in [1u8, 2] {
        let frame = syn_v4(tags as usize);
        let parsed = parse_frame(&frame[..]).unwrap();
        assert_eq!(parsed.vlan_tags, tags);
        let L3::Ip(packet) = parsed.l3 else {
            panic!("not IP")
        };
        assert_eq!(packet.l3_offset as usize, 14 + 4 * tags as usize);
        assert_eq!(tcp_of(&frame[..]).1.seq, 0xdead_beef);
    }
}

#[test]
fn three_vlan_tags_are_refused() {
    let mut frame = syn_v4(2);
    // Insert a third 802.1Q tag after the outer two.
    frame.splice(22..22, [0x81, 0x00, 0x00, 0x2a]);
    frame[20..22].copy_from_slice(&[0x81, 0x00]);
    assert_eq!(parse_frame(&frame[..]), Err(ParseError::TooManyVlanTags));
}

#[test]
fn ipv6_tcp_is_decoded_with_payload_length() {
    let frame = ack_v6(b"hello");
    let (addrs, tcp) = tcp_of(&frame[..]);
    assert_eq!(addrs, IpAddrs::v6(CLIENT6, SERVER6));
    assert_eq!(
        (tcp.src_port, tcp.dst_port, tcp.ack),
        (CLIENT_PORT, SERVER_PORT, 99)
    );
    assert_eq!(tcp.payload_len, 5);
}

#[test]
fn ipv6_extension_chain_is_followed() {
    let routing = vec![0, 0, 0, 0, 0, 0, 0]; // type 0 routing header, 8 bytes
    let chain = [
        (0u8, options_ext_body()),
        (43, routing),
        (60, options_ext_body()),
    ];
    let frame = with_ipv6_extensions(&ack_v6(b"x"), &chain);
    let parsed = parse_frame(&frame[..]).unwrap();
    let L3::Ip(packet) = parsed.l3 else {
        panic!("not IP")
    };
    assert_eq!(packet.l4_offset as usize, 14 + 40 + 24);
    assert_eq!(tcp_of(&frame[..]).1.payload_len, 1);
}

#[test]
fn ipv6_chain_longer_than_six_is_refused() {
    let chain: Vec<_> = (0..7).map(|_| (60u8, options_ext_body())).collect();
    let frame = with_ipv6_extensions(&ack_v6(b""), &chain);
    assert_eq!(
        parse_frame(&frame[..]),
        Err(ParseError::Ipv6ExtensionChainTooLong)
    );
    let frame = with_ipv6_extensions(&ack_v6(b""), &chain[..6]);
    assert!(parse_frame(&frame[..]).is_ok());
}

#[test]
fn ipv6_fragments_and_atomic_fragments() {
    // Fragment header body: reserved, offset/flags (2 bytes), identification (4 bytes).
    let first_of_many = vec![0, 0x00, 0x01, 0, 0, 0, 1];
    let atomic = vec![0, 0x00, 0x00, 0, 0, 0, 1];
    let frame = with_ipv6_extensions(&ack_v6(b""), &[(44, first_of_many)]);
    let L3::Ip(packet) = parse_frame(&frame[..]).unwrap().l3 else {
        panic!("not IP")
    };
    assert_eq!(packet.transport.kind, TransportKind::Fragment);
    let frame = with_ipv6_extensions(&ack_v6(b""), &[(44, atomic)]);
    tcp_of(&frame[..]);
}

#[test]
fn ipv4_fragments_are_not_parsed_as_tcp() {
    for flags_and_offset in [0x2000u16, 0x0001, 0x2010] {
        let mut frame = syn_v4(0);
        frame[14 + 6..14 + 8].copy_from_slice(&flags_and_offset.to_be_bytes());
        let L3::Ip(packet) = parse_frame(&frame[..]).unwrap().l3 else {
            panic!("not IP")
        };
        assert_eq!(
            packet.transport.kind,
            TransportKind::Fragment,
            "{flags_and_offset:#x}"
        );
    }
}

#[test]
fn non_ip_is_reported_with_its_ethertype() {
    assert_eq!(
        parse_frame(&arp()[..]).unwrap().l3,
        L3::NonIp { ethertype: 0x0806 }
    );
}

#[test]
fn udp_is_other_protocol() {
    let L3::Ip(packet) = parse_frame(&udp_v4()[..]).unwrap().l3 else {
        panic!("not IP")
    };
    assert_eq!(
        packet.transport,
        Transport {
            kind: TransportKind::Other,
            protocol: 17
        }
    );
}

#[test]
fn bad_ipv4_header_length_and_version() {
    for ihl in 0u8..5 {
        let mut frame = syn_v4(0);
        frame[14] = 0x40 | ihl;
        assert_eq!(
            parse_frame(&frame[..]),
            Err(ParseError::BadIpv4HeaderLength)
        );
    }
    let mut frame = syn_v4(0);
    frame[14] = 0x65;
    assert_eq!(parse_frame(&frame[..]), Err(ParseError::BadIpVersion));
}

#[test]
fn ipv4_total_length_must_fit_header_and_frame() {
    let mut frame = syn_v4(0);
    frame[16..18].copy_from_slice(&19u16.to_be_bytes());
    assert_eq!(parse_frame(&frame[..]), Err(ParseError::BadIpLength));
    let mut frame = syn_v4(0);
    let too_long = (frame.len() - 14 + 1) as u16;
    frame[16..18].copy_from_slice(&too_long.to_be_bytes());
    assert_eq!(parse_frame(&frame[..]), Err(ParseError::BadIpLength));
}

#[test]
fn ethernet_padding_is_not_payload() {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(MAC_CLIENT, MAC_GUARD)
        .ipv4(CLIENT4, SERVER4, 64)
        .tcp(1, 2, 3, 4)
        .ack(5)
        .write(&mut frame, &[])
        .unwrap();
    frame.resize(60, 0); // minimum Ethernet frame
    assert_eq!(tcp_of(&frame[..]).1.payload_len, 0);
}

#[test]
fn bad_tcp_data_offset() {
    let tcp = 14 + 20;
    for doff in [0u8, 4] {
        let mut frame = syn_v4(0);
        frame[tcp + 12] = doff << 4;
        assert_eq!(parse_frame(&frame[..]), Err(ParseError::BadTcpDataOffset));
    }
    // A data offset of 60 bytes in a segment that only has 40.
    let mut frame = syn_v4(0);
    frame[tcp + 12] = 15 << 4;
    assert_eq!(parse_frame(&frame[..]), Err(ParseError::BadTcpDataOffset));
}

#[test]
fn tcp_option_running_past_header_is_refused() {
    let mut frame = syn_v4(0);
    // The MSS option's length byte claims 40 bytes.
    frame[14 + 20 + 21] = 40;
    assert_eq!(parse_frame(&frame[..]), Err(ParseError::BadTcpOptions));
}

#[test]
fn truncated_at_every_byte_is_an_error() {
    let chain = [(0u8, options_ext_body())];
    let frames = [
        syn_v4(0),
        syn_v4(2),
        with_ipv6_extensions(&ack_v6(b""), &chain),
    ];
    for frame in frames {
        assert!(parse_frame(&frame[..]).is_ok());
        for cut in 0..frame.len() {
            let result = parse_frame(&frame[..cut]);
            assert!(
                result.is_err(),
                "cut at {cut} of {}: {result:?}",
                frame.len()
            );
        }
    }
}

#[test]
fn truncation_reasons_follow_the_layer() {
    let frame = syn_v4(1);
    assert_eq!(
        parse_frame(&frame[..13]),
        Err(ParseError::TruncatedEthernet)
    );
    assert_eq!(parse_frame(&frame[..16]), Err(ParseError::TruncatedVlan));
    assert_eq!(parse_frame(&frame[..30]), Err(ParseError::TruncatedIp));
}

fn option_strategy() -> impl Strategy<Value = Vec<TcpOptionElement>> {
    (
        proptest::option::of(any::<u16>()),
        proptest::option::of(0u8..=14),
        any::<bool>(),
        proptest::option::of((any::<u32>(), any::<u32>())),
    )
        .prop_map(|(mss, wscale, sack, ts)| {
            let mut options = Vec::new();
            if let Some(mss) = mss {
                options.push(TcpOptionElement::MaximumSegmentSize(mss));
            }
            if sack {
                options.push(TcpOptionElement::SelectiveAcknowledgementPermitted);
            }
            if let Some((val, ecr)) = ts {
                options.push(TcpOptionElement::Timestamp(val, ecr));
            }
            if let Some(shift) = wscale {
                options.push(TcpOptionElement::Noop);
                options.push(TcpOptionElement::WindowScale(shift));
            }
            options
        })
}

proptest! {
    #[test]
    fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_frame(&bytes[..]);
    }

    #[test]
    fn corrupted_frames_never_panic(at in 0usize..80, value in any::<u8>(), vlans in 0usize..3) {
        let mut frame = syn_v4(vlans);
        let at = at % frame.len();
        frame[at] = value;
        let _ = parse_frame(&frame[..]);
    }

    #[test]
    fn tcp_fields_roundtrip(
        src_port in any::<u16>(), dst_port in any::<u16>(), seq in any::<u32>(),
        ack in any::<u32>(), window in any::<u16>(), flags in any::<u8>(),
        options in option_strategy(), payload in proptest::collection::vec(any::<u8>(), 0..64),
        v6 in any::<bool>(),
    ) {
        let eth = PacketBuilder::ethernet2(MAC_CLIENT, MAC_GUARD);
        let ip = if v6 { eth.ipv6(CLIENT6, SERVER6, 64) } else { eth.ipv4(CLIENT4, SERVER4, 64) };
        let mut builder = ip.tcp(src_port, dst_port, seq, window).ack(ack);
        if flags & TcpFlags::SYN != 0 { builder = builder.syn(); }
        if flags & TcpFlags::FIN != 0 { builder = builder.fin(); }
        if flags & TcpFlags::RST != 0 { builder = builder.rst(); }
        if flags & TcpFlags::PSH != 0 { builder = builder.psh(); }
        let builder = builder.options(&options).unwrap();
        let mut frame = Vec::new();
        builder.write(&mut frame, &payload).unwrap();

        let expected_flags = TcpFlags::ACK | (flags & (TcpFlags::SYN | TcpFlags::FIN | TcpFlags::RST | TcpFlags::PSH));
        if !flags_are_valid(TcpFlags(expected_flags)) {
            prop_assert_eq!(parse_frame(&frame[..]), Err(ParseError::BadTcpFlags));
            return Ok(());
        }
        let (_, tcp) = tcp_of(&frame[..]);
        prop_assert_eq!((tcp.src_port, tcp.dst_port, tcp.seq, tcp.ack, tcp.window),
            (src_port, dst_port, seq, ack, window));
        prop_assert_eq!(tcp.flags, TcpFlags(expected_flags));
        prop_assert_eq!(tcp.payload_len as usize, payload.len());
        for option in &options {
            match *option {
                TcpOptionElement::MaximumSegmentSize(mss) => prop_assert_eq!(tcp.options.mss, Some(mss)),
                TcpOptionElement::WindowScale(shift) => prop_assert_eq!(tcp.options.window_scale, Some(shift)),
                TcpOptionElement::SelectiveAcknowledgementPermitted => prop_assert!(tcp.options.sack_permitted),
                TcpOptionElement::Timestamp(val, ecr) => prop_assert_eq!(tcp.options.timestamps, Some((val, ecr))),
                _ => {}
            }
        }
    }
}
