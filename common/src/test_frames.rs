//! Frames for tests, crafted with etherparse: shared by the host tests and the data-plane
//! tests so that both speak of the same packets. Only built with the `test-frames` feature.

extern crate std;

use std::vec::Vec;

use etherparse::{IpHeaders, PacketBuilder, PacketBuilderStep, TcpOptionElement, VlanId};

use crate::{cookie::FlowKey, parse::parse_tcp_frame};

pub const MAC_CLIENT: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const MAC_GUARD: [u8; 6] = [2, 0, 0, 0, 0, 2];
pub const CLIENT4: [u8; 4] = [198, 18, 1, 2];
pub const SERVER4: [u8; 4] = [198, 19, 1, 2];
/// Documentation prefix (RFC 3849); never routed.
pub const CLIENT6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
pub const SERVER6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
pub const CLIENT_PORT: u16 = 40000;
pub const SERVER_PORT: u16 = 80;
pub const CLIENT_ISN: u32 = 0xdead_beef;
pub const VLAN_ID: u16 = 42;

/// What a Linux client puts in its SYN: MSS, SACK permitted, timestamps, NOP, window scale.
pub fn linux_syn_options() -> [TcpOptionElement; 5] {
    [
        TcpOptionElement::MaximumSegmentSize(1460),
        TcpOptionElement::SelectiveAcknowledgementPermitted,
        TcpOptionElement::Timestamp(0x1122_3344, 0),
        TcpOptionElement::Noop,
        TcpOptionElement::WindowScale(7),
    ]
}

/// A client SYN over IPv4 with Linux's options, under 0, 1 or 2 VLAN tags.
pub fn syn_v4(vlans: usize) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(MAC_CLIENT, MAC_GUARD);
    let id = VlanId::try_new(VLAN_ID).unwrap();
    let ip = match vlans {
        0 => eth.ipv4(CLIENT4, SERVER4, 64),
        1 => eth.single_vlan(id).ipv4(CLIENT4, SERVER4, 64),
        _ => eth.double_vlan(id, id).ipv4(CLIENT4, SERVER4, 64),
    };
    linux_syn(ip, CLIENT_PORT)
}

/// The untagged IPv4 client SYN from another source port: a new flow each port.
pub fn syn_v4_from_port(port: u16) -> Vec<u8> {
    let ip = PacketBuilder::ethernet2(MAC_CLIENT, MAC_GUARD).ipv4(CLIENT4, SERVER4, 64);
    linux_syn(ip, port)
}

/// A client SYN over IPv6 with Linux's options.
pub fn syn_v6() -> Vec<u8> {
    let ip = PacketBuilder::ethernet2(MAC_CLIENT, MAC_GUARD).ipv6(CLIENT6, SERVER6, 64);
    linux_syn(ip, CLIENT_PORT)
}

/// The fixture SYN (ISN, Linux's options) from `port` over the given IP layer.
fn linux_syn(ip: PacketBuilderStep<IpHeaders>, port: u16) -> Vec<u8> {
    let mut out = Vec::new();
    ip.tcp(port, SERVER_PORT, CLIENT_ISN, 64240)
        .syn()
        .options(&linux_syn_options())
        .unwrap()
        .write(&mut out, &[])
        .unwrap();
    out
}

/// A client ACK over IPv6 (seq 7, ack 99) carrying `payload`.
pub fn ack_v6(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_CLIENT, MAC_GUARD)
        .ipv6(CLIENT6, SERVER6, 64)
        .tcp(CLIENT_PORT, SERVER_PORT, 7, 1000)
        .ack(99)
        .write(&mut out, payload)
        .unwrap();
    out
}

/// A UDP datagram over IPv4.
pub fn udp_v4() -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_CLIENT, MAC_GUARD)
        .ipv4(CLIENT4, SERVER4, 64)
        .udp(5353, 53)
        .write(&mut out, b"query")
        .unwrap();
    out
}

/// An ARP-typed frame (contents irrelevant to the guard).
pub fn arp() -> Vec<u8> {
    let mut frame = std::vec![0u8; 42];
    frame[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    frame
}

/// The flow of a client TCP frame (panics on anything else).
pub fn flow_of(frame: &[u8]) -> FlowKey {
    let (packet, tcp) = parse_tcp_frame(frame).expect("a TCP frame");
    FlowKey::from_client_segment(&packet.addrs, &tcp)
}

/// `frame` with `bytes` written at `at`.
pub fn patched(mut frame: Vec<u8>, at: usize, bytes: &[u8]) -> Vec<u8> {
    frame[at..at + bytes.len()].copy_from_slice(bytes);
    frame
}

/// An untagged IPv6 `frame` with extension headers inserted before its transport header.
/// Each is (its own type, its body after the next-header byte); lengths must already be right.
pub fn with_ipv6_extensions(frame: &[u8], chain: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let ip = 14;
    let mut out = frame[..ip + 40].to_vec();
    let transport = frame[ip + 6];
    out[ip + 6] = chain.first().map_or(transport, |(kind, _)| *kind);
    let nexts = chain
        .iter()
        .skip(1)
        .map(|(kind, _)| *kind)
        .chain(std::iter::once(transport));
    let mut added = 0;
    for ((_, body), next) in chain.iter().zip(nexts) {
        out.push(next);
        out.extend_from_slice(body);
        added += body.len() + 1;
    }
    out.extend_from_slice(&frame[ip + 40..]);
    let payload_len = u16::from_be_bytes([frame[ip + 4], frame[ip + 5]]) + added as u16;
    out[ip + 4..ip + 6].copy_from_slice(&payload_len.to_be_bytes());
    out
}

/// A client ACK over IPv4 with the given sequence and acknowledgement numbers and, optionally,
/// timestamps (TSval, TSecr).
pub fn ack_v4(seq: u32, ack: u32, timestamps: Option<(u32, u32)>) -> Vec<u8> {
    let mut options = Vec::new();
    if let Some((val, ecr)) = timestamps {
        options.extend([
            TcpOptionElement::Noop,
            TcpOptionElement::Noop,
            TcpOptionElement::Timestamp(val, ecr),
        ]);
    }
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_CLIENT, MAC_GUARD)
        .ipv4(CLIENT4, SERVER4, 64)
        .tcp(CLIENT_PORT, SERVER_PORT, seq, 502)
        .ack(ack)
        .options(&options)
        .unwrap()
        .write(&mut out, &[])
        .unwrap();
    out
}

/// An IPv4 TCP segment from the client with raw flags (for nonsense combinations).
pub fn tcp_v4_with_flags(flags: u8, dst_port: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_CLIENT, MAC_GUARD)
        .ipv4(CLIENT4, SERVER4, 64)
        .tcp(CLIENT_PORT, dst_port, CLIENT_ISN, 1000)
        .write(&mut out, &[])
        .unwrap();
    let flags_at = 14 + 20 + 13;
    out[flags_at] = flags;
    // The TCP checksum no longer matches; the guard does not check it (the kernel does).
    out
}

/// Asserts the IPv4 header checksum and the TCP checksum (payload included) of an IP packet
/// holding a TCP segment, computed independently by etherparse; returns the TCP header.
pub fn assert_checksums(l3: &[u8]) -> etherparse::TcpHeader {
    use etherparse::{IpHeaders, TcpHeaderSlice};
    let (ip, rest) = IpHeaders::from_slice(l3).unwrap();
    let tcp = TcpHeaderSlice::from_slice(rest.payload)
        .unwrap()
        .to_header();
    let payload = &rest.payload[tcp.header_len()..];
    match &ip {
        IpHeaders::Ipv4(v4, _) => {
            assert_eq!(
                v4.header_checksum,
                v4.calc_header_checksum(),
                "IPv4 checksum"
            );
            assert_eq!(
                tcp.checksum,
                tcp.calc_checksum_ipv4(v4, payload).unwrap(),
                "TCP checksum"
            );
            assert_eq!(v4.total_len as usize, l3.len(), "IPv4 total length");
        }
        IpHeaders::Ipv6(v6, _) => {
            assert_eq!(
                tcp.checksum,
                tcp.calc_checksum_ipv6(v6, payload).unwrap(),
                "TCP checksum"
            );
            assert_eq!(
                v6.payload_length as usize + 40,
                l3.len(),
                "IPv6 payload length"
            );
        }
    }
    tcp
}

/// Asserts that `l3` (IP onwards) answers the fixture SYN: addresses and ports swapped,
/// ack = ISN + 1, SYN+ACK only, valid checksums. Returns our ISN (the cookie) and the TCP
/// options other than NOPs.
pub fn assert_syn_ack(l3: &[u8]) -> (u32, Vec<TcpOptionElement>) {
    use etherparse::IpHeaders;
    let tcp = assert_checksums(l3);
    let (ip, rest) = IpHeaders::from_slice(l3).unwrap();
    assert_eq!(
        rest.payload.len(),
        tcp.header_len(),
        "no payload in a SYN-ACK"
    );
    match ip {
        IpHeaders::Ipv4(v4, _) => assert_eq!((v4.source, v4.destination), (SERVER4, CLIENT4)),
        IpHeaders::Ipv6(v6, _) => assert_eq!((v6.source, v6.destination), (SERVER6, CLIENT6)),
    }
    assert_eq!(
        (tcp.source_port, tcp.destination_port),
        (SERVER_PORT, CLIENT_PORT)
    );
    assert_eq!(
        tcp.acknowledgment_number,
        CLIENT_ISN.wrapping_add(1),
        "the SYN consumed one number"
    );
    assert!(tcp.syn && tcp.ack && !tcp.fin && !tcp.rst);
    let options = tcp
        .options_iterator()
        .map(|o| o.unwrap())
        .filter(|o| *o != TcpOptionElement::Noop)
        .collect();
    (tcp.sequence_number, options)
}
