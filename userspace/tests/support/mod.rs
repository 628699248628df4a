//! What the data-plane test files share: a configured guard and the SYN -> SYN-ACK step.
#![allow(dead_code)] // each test file uses its own part

use etherparse::{PacketBuilder, TcpOptionElement, TcpOptionElement as O};
use synguard::{
    config::service::ProtectedService, dataplane::privilege, dataplane::test_run::DataPlane,
};
use synguard_common::{
    cookie::CookieKeys,
    field::{ipv4, ipv6},
    parse::TcpFlags as F,
    segment::SynAckSettings,
    siphash::SipKey,
    test_frames::*,
    verdict::Action,
};

pub const KEY_A: SipKey = SipKey { k0: 11, k1: 12 };
pub const KEY_B: SipKey = SipKey { k0: 21, k1: 22 };

/// The flow events emitted since the last call, as the data plane wrote them (the tests read
/// their numbers; `DataPlane::events` gives them decoded).
pub fn wire_events(plane: &mut DataPlane) -> Vec<synguard_common::maps::FlowEvent> {
    plane
        .events()
        .unwrap()
        .into_iter()
        .map(|e| e.wire)
        .collect()
}

/// `current` live in phase 0, `previous` in phase 1.
pub fn keys(current: SipKey, previous: SipKey) -> CookieKeys {
    CookieKeys::new(current, previous, 0)
}

pub fn guard() -> DataPlane {
    privilege::require_xdp_privileges("the data-plane tests")
        .expect("run the data-plane tests as root, e.g. through `cargo xtask test`");
    let mut guard = DataPlane::load(synguard::dataplane::object::GUARD_PROGRAM).unwrap();
    let protected: Vec<ProtectedService> = ["198.19.1.0/24:80", "[2001:db8:1::/48]:80"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    guard.configure(&keys(KEY_A, KEY_B), &protected).unwrap();
    guard
}

/// Runs a SYN and checks the SYN-ACK: L2 kept with MACs swapped, the frame trimmed to the
/// packet, and everything `assert_syn_ack` checks. Returns (cookie, our TSval, options).
pub fn syn_ack_for(
    guard: &mut DataPlane,
    syn: &[u8],
    vlans: usize,
) -> (u32, Option<u32>, Vec<TcpOptionElement>) {
    let outcome = guard.run(syn).unwrap();
    assert_eq!(outcome.action().unwrap(), Action::Tx);
    let out = &outcome.output;
    assert_eq!(&out[..6], &MAC_CLIENT);
    assert_eq!(&out[6..12], &MAC_GUARD);
    let l2 = 14 + 4 * vlans;
    assert_eq!(&out[12..l2], &syn[12..l2], "VLAN tags and ethertype kept");
    let (cookie, options) = assert_syn_ack(&out[l2..]);
    let Some(etherparse::TransportSlice::Tcp(tcp)) = etherparse::SlicedPacket::from_ip(&out[l2..])
        .unwrap()
        .transport
    else {
        panic!("not TCP")
    };
    assert_eq!(
        tcp.window_size(),
        SynAckSettings::default().window,
        "the window offered before the join: what the guard holds for the server"
    );
    let tsval = options.iter().find_map(|o| match o {
        TcpOptionElement::Timestamp(val, _) => Some(*val),
        _ => None,
    });
    (cookie, tsval, options)
}

/// A TCP/IPv4 frame of the fixture flow, either way.
pub fn segment(
    from_client: bool,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    options: &[O],
    payload: &[u8],
) -> Vec<u8> {
    let (src, dst, sport, dport) = if from_client {
        (CLIENT4, SERVER4, CLIENT_PORT, SERVER_PORT)
    } else {
        (SERVER4, CLIENT4, SERVER_PORT, CLIENT_PORT)
    };
    let mut tcp = PacketBuilder::ethernet2(MAC_CLIENT, MAC_GUARD)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, seq, window);
    if flags & F::ACK != 0 {
        tcp = tcp.ack(ack);
    }
    if flags & F::SYN != 0 {
        tcp = tcp.syn();
    }
    if flags & F::FIN != 0 {
        tcp = tcp.fin();
    }
    if flags & F::RST != 0 {
        tcp = tcp.rst();
    }
    let tcp = tcp.options(options).unwrap();
    let mut frame = Vec::new();
    tcp.write(&mut frame, payload).unwrap();
    frame
}

/// The client's probe of our zero window: a bare ACK one below its next sequence number
/// (RFC 9293 3.8.6.1; Linux sends `snd_una - 1`).
pub fn zero_window_probe(cookie: u32, options: &[O]) -> Vec<u8> {
    segment(
        true,
        CLIENT_ISN,
        cookie.wrapping_add(1),
        F::ACK,
        502,
        options,
        &[],
    )
}

/// Runs `frame` through the named program; expects XDP_PASS and returns the TCP header of
/// the output (its checksums verified) and the payload.
pub fn passes(
    guard: &mut DataPlane,
    program: &str,
    frame: &[u8],
) -> (etherparse::TcpHeader, Vec<u8>) {
    let (tcp, payload, _) = passes_with_ip(guard, program, frame);
    (tcp, payload)
}

/// [`passes`], with the output's IP headers too.
pub fn passes_with_ip(
    guard: &mut DataPlane,
    program: &str,
    frame: &[u8],
) -> (etherparse::TcpHeader, Vec<u8>, etherparse::IpHeaders) {
    let outcome = guard.run_program(program, frame).unwrap();
    assert_eq!(outcome.action().unwrap(), Action::Pass);
    let l3 = &outcome.output[14..];
    let tcp = assert_checksums(l3);
    let (ip, rest) = etherparse::IpHeaders::from_slice(l3).unwrap();
    (tcp.clone(), rest.payload[tcp.header_len()..].to_vec(), ip)
}

pub fn options(tcp: &etherparse::TcpHeader) -> Vec<O> {
    tcp.options_iterator()
        .map(Result::unwrap)
        .filter(|o| *o != O::Noop)
        .collect()
}

/// A server's SYN-ACK options (they differ from the guard's on purpose: MSS 1400, window
/// scale 9), with timestamps (`tsval`, `tsecr`).
pub fn server_syn_ack_options(tsval: u32, tsecr: u32) -> [O; 5] {
    [
        O::MaximumSegmentSize(1400),
        O::SelectiveAcknowledgementPermitted,
        O::Timestamp(tsval, tsecr),
        O::Noop,
        O::WindowScale(9),
    ]
}

/// What the backend SYN carries for the fixture client's SYN, Noops left out: the client's
/// own options, its TSval the one of its third ACK (`client_ts`).
pub fn clients_own_options(client_ts: u32) -> [O; 4] {
    [
        O::MaximumSegmentSize(1460),
        O::SelectiveAcknowledgementPermitted,
        O::Timestamp(client_ts, 0),
        O::WindowScale(7),
    ]
}

/// A server's SYN-ACK to the fixture client's SYN (see [`server_syn_ack_options`]).
pub fn server_syn_ack(server_isn: u32, tsval: u32, tsecr: u32) -> Vec<u8> {
    segment(
        false,
        server_isn,
        CLIENT_ISN + 1,
        F::SYN | F::ACK,
        65160,
        &server_syn_ack_options(tsval, tsecr),
        &[],
    )
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The IP header length of the frames built here (no IPv4 options, no IPv6 extensions).
    pub fn ip_header_len(self) -> usize {
        match self {
            Family::V4 => ipv4::MIN_HEADER_LEN,
            Family::V6 => ipv6::HEADER_LEN,
        }
    }
}

/// A TCP frame of the fixture flow over `family`, either way.
#[allow(clippy::too_many_arguments)]
pub fn tcp_frame(
    family: Family,
    from_client: bool,
    client_port: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    options: &[O],
    payload: &[u8],
) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(MAC_CLIENT, MAC_GUARD);
    let ip = match (family, from_client) {
        (Family::V4, true) => eth.ipv4(CLIENT4, SERVER4, 64),
        (Family::V4, false) => eth.ipv4(SERVER4, CLIENT4, 64),
        (Family::V6, true) => eth.ipv6(CLIENT6, SERVER6, 64),
        (Family::V6, false) => eth.ipv6(SERVER6, CLIENT6, 64),
    };
    let (sport, dport) = if from_client {
        (client_port, SERVER_PORT)
    } else {
        (SERVER_PORT, client_port)
    };
    let mut tcp = ip.tcp(sport, dport, seq, 1000);
    if flags & F::ACK != 0 {
        tcp = tcp.ack(ack);
    }
    if flags & F::SYN != 0 {
        tcp = tcp.syn();
    }
    let mut frame = Vec::new();
    tcp.options(options)
        .unwrap()
        .write(&mut frame, payload)
        .unwrap();
    frame
}
