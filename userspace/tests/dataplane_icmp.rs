//! Data-plane tests of ICMP and ICMPv6 errors about validated flows, through
//! BPF_PROG_TEST_RUN on the real object: a router's error quoting a segment the guard
//! forwarded reaches its sender with the quote back in the sender's own numbers (sequence,
//! acknowledgement, timestamps) and every checksum valid; forged or unmatched errors drop.
//! They need root (CAP_BPF): run them through `cargo xtask test`.

mod support;

use etherparse::{
    Icmpv4Type, Icmpv6Type, PacketBuilder, TcpOptionElement as O, icmpv4::DestUnreachableHeader,
};
use support::{Family, guard, server_syn_ack_options, syn_ack_for, tcp_frame};
use synguard::dataplane::{
    object::{GUARD_PROGRAM, SERVER_PROGRAM},
    test_run::DataPlane,
};
use synguard_common::{
    checksum,
    counters::Counter,
    field::{icmp, ipv4, ipv6},
    parse::TcpFlags as F,
    test_frames::*,
    verdict::Action,
};

const SERVER_ISN: u32 = 0x7000_0000;
const CLIENT_TS: u32 = 0x1122_4000;
const SERVER_TS: u32 = 0x5555_0000;
/// A router between the guard and the clients, and one between the guard and the servers.
const ROUTER4: [u8; 4] = [198, 18, 9, 9];
const ROUTER6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];

/// A joined flow over `family`: the cookie handshake, then the server's SYN-ACK. Returns the
/// cookie, our TSval and the sequence offset (server ISN - cookie).
fn joined(guard: &mut DataPlane, family: Family) -> (u32, u32) {
    let syn = match family {
        Family::V4 => syn_v4(0),
        Family::V6 => syn_v6(),
    };
    let (cookie, tsval, _) = syn_ack_for(guard, &syn, 0);
    let tsval = tsval.unwrap();
    let third = tcp_frame(
        family,
        true,
        CLIENT_PORT,
        CLIENT_ISN + 1,
        cookie.wrapping_add(1),
        F::ACK,
        &[O::Noop, O::Noop, O::Timestamp(CLIENT_TS, tsval)],
        &[],
    );
    let backend_syn = guard.run_program(GUARD_PROGRAM, &third).unwrap();
    assert_eq!(
        backend_syn.action().unwrap(),
        Action::Pass,
        "the backend SYN"
    );
    let syn_ack = tcp_frame(
        family,
        false,
        CLIENT_PORT,
        SERVER_ISN,
        CLIENT_ISN + 1,
        F::SYN | F::ACK,
        &server_syn_ack_options(SERVER_TS, CLIENT_TS),
        &[],
    );
    let update = guard.run_program(SERVER_PROGRAM, &syn_ack).unwrap();
    assert_eq!(update.action().unwrap(), Action::Pass, "the window update");
    (cookie, tsval)
}

/// The errors a router sends about a packet it could not deliver.
#[derive(Clone, Copy, Debug)]
enum ErrorKind {
    /// "Fragmentation needed" (IPv4) or "packet too big" (IPv6), MTU 1280.
    TooBig,
    /// Destination (host) unreachable.
    Unreachable,
    /// Time (hop limit) exceeded in transit.
    TimeExceeded,
}

const KINDS: [ErrorKind; 3] = [
    ErrorKind::TooBig,
    ErrorKind::Unreachable,
    ErrorKind::TimeExceeded,
];

/// An ICMP error of `kind` about `quoted` (an IP packet, as its receiver got it) from a
/// router, sent to the quoted packet's source.
fn error_about(
    family: Family,
    kind: ErrorKind,
    quoted_from_server: bool,
    quoted: &[u8],
) -> Vec<u8> {
    use etherparse::{icmpv4::TimeExceededCode, icmpv6};
    let eth = PacketBuilder::ethernet2(MAC_CLIENT, MAC_GUARD);
    let mut frame = Vec::new();
    match family {
        Family::V4 => {
            let to = if quoted_from_server { SERVER4 } else { CLIENT4 };
            let icmp_type =
                match kind {
                    ErrorKind::TooBig => Icmpv4Type::DestinationUnreachable(
                        DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1280 },
                    ),
                    ErrorKind::Unreachable => {
                        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Host)
                    }
                    ErrorKind::TimeExceeded => {
                        Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit)
                    }
                };
            eth.ipv4(ROUTER4, to, 64)
                .icmpv4(icmp_type)
                .write(&mut frame, quoted)
                .unwrap();
        }
        Family::V6 => {
            let to = if quoted_from_server { SERVER6 } else { CLIENT6 };
            let icmp_type = match kind {
                ErrorKind::TooBig => Icmpv6Type::PacketTooBig { mtu: 1280 },
                ErrorKind::Unreachable => {
                    Icmpv6Type::DestinationUnreachable(icmpv6::DestUnreachableCode::Address)
                }
                ErrorKind::TimeExceeded => {
                    Icmpv6Type::TimeExceeded(icmpv6::TimeExceededCode::HopLimitExceeded)
                }
            };
            eth.ipv6(ROUTER6, to, 64)
                .icmpv6(icmp_type)
                .write(&mut frame, quoted)
                .unwrap();
        }
    }
    frame
}

/// [`error_about`] of the kind path MTU discovery lives on.
fn too_big_error(family: Family, quoted_from_server: bool, quoted: &[u8]) -> Vec<u8> {
    error_about(family, ErrorKind::TooBig, quoted_from_server, quoted)
}

/// Where the ICMP message and the quoted packet start in a frame built above.
fn offsets(family: Family) -> (usize, usize) {
    let l4 = 14 + family.ip_header_len();
    (l4, l4 + icmp::HEADER_LEN)
}

/// Checks the ICMP checksum of an output frame (for ICMPv6 over its pseudo-header).
fn assert_icmp_checksum(family: Family, frame: &[u8]) {
    let (l4, _) = offsets(family);
    let message = &frame[l4..];
    let sum = match family {
        Family::V4 => checksum::add_slice(0, message),
        Family::V6 => {
            let ip = &frame[14..];
            let src: [u8; 16] = ip[ipv6::SOURCE..ipv6::SOURCE + 16].try_into().unwrap();
            let dst: [u8; 16] = ip[ipv6::DESTINATION..ipv6::DESTINATION + 16]
                .try_into()
                .unwrap();
            checksum::add_slice(
                checksum::pseudo_header_v6(&src, &dst, icmp::IPPROTO_ICMPV6, message.len() as u16),
                message,
            )
        }
    };
    assert_eq!(checksum::finish(sum), 0, "the ICMP checksum is valid");
}

/// The TCP header of the quoted packet in an output frame, its checksum checked over the
/// whole quoted segment.
fn quoted_tcp(family: Family, frame: &[u8]) -> etherparse::TcpHeader {
    let (_, quote) = offsets(family);
    quoted_tcp_at(&frame[quote..])
}

/// The TCP header of an IP packet, its checksums checked.
fn quoted_tcp_at(packet: &[u8]) -> etherparse::TcpHeader {
    assert_checksums(packet)
}

fn run(guard: &mut DataPlane, program: &str, frame: &[u8]) -> (Action, Vec<u8>) {
    let outcome = guard.run_program(program, frame).unwrap();
    (outcome.action().unwrap(), outcome.output)
}

#[test]
fn a_router_error_from_the_clients_side_reaches_the_server_in_its_own_numbers() {
    for (family, kind) in [Family::V4, Family::V6]
        .into_iter()
        .flat_map(|family| KINDS.map(|kind| (family, kind)))
    {
        let mut guard = guard();
        let (cookie, tsval) = joined(&mut guard, family);
        // The server sent 1000 bytes at ISN + 1; the guard forwarded them in our numbers.
        let server_sent = tcp_frame(
            family,
            false,
            CLIENT_PORT,
            SERVER_ISN + 1,
            CLIENT_ISN + 1,
            F::ACK,
            &[O::Noop, O::Noop, O::Timestamp(SERVER_TS + 3, CLIENT_TS)],
            &[0x5a; 1000],
        );
        let (action, forwarded) = run(&mut guard, SERVER_PROGRAM, &server_sent);
        assert_eq!(action, Action::Pass, "{family:?} {kind:?}: forwarded");
        let as_forwarded = quoted_tcp_at(&forwarded[14..]);
        assert_eq!(
            as_forwarded.sequence_number,
            cookie.wrapping_add(1),
            "{family:?} {kind:?}"
        );
        assert!(
            as_forwarded
                .options_iterator()
                .any(|o| o.unwrap() == O::Timestamp(tsval + 3, CLIENT_TS)),
            "{family:?} {kind:?}: our clock"
        );
        let error = error_about(family, kind, true, &forwarded[14..]);
        let (action, out) = run(&mut guard, GUARD_PROGRAM, &error);
        assert_eq!(action, Action::Pass, "{family:?} {kind:?}");
        let tcp = quoted_tcp(family, &out);
        assert_eq!(
            tcp.sequence_number,
            SERVER_ISN + 1,
            "{family:?} {kind:?}: the server's own"
        );
        assert_eq!(
            tcp.acknowledgment_number,
            CLIENT_ISN + 1,
            "{family:?} {kind:?}"
        );
        let options: Vec<O> = tcp.options_iterator().map(Result::unwrap).collect();
        assert!(
            options.contains(&O::Timestamp(SERVER_TS + 3, CLIENT_TS)),
            "{family:?} {kind:?}: the server's TSval: {options:?}"
        );
        assert_icmp_checksum(family, &out);
        let (l4, _) = offsets(family);
        assert_eq!(
            out[..l4 + 2],
            error[..l4 + 2],
            "{family:?} {kind:?}: IP header, type, code"
        );
        assert_eq!(
            out[l4 + 4..l4 + 8],
            error[l4 + 4..l4 + 8],
            "{family:?} {kind:?}: the MTU"
        );
        assert_eq!(
            guard.counters().unwrap().get(Counter::IcmpTranslated),
            1,
            "{family:?} {kind:?}"
        );
    }
}

#[test]
fn a_router_error_from_the_servers_side_reaches_the_client_in_its_own_numbers() {
    for (family, kind) in [Family::V4, Family::V6]
        .into_iter()
        .flat_map(|family| KINDS.map(|kind| (family, kind)))
    {
        let mut guard = guard();
        let (cookie, tsval) = joined(&mut guard, family);
        let offset = SERVER_ISN.wrapping_sub(cookie);
        // The client's data as the guard forwarded it: its ack and TSecr in the server's
        // numbers.
        let forwarded = tcp_frame(
            family,
            true,
            CLIENT_PORT,
            CLIENT_ISN + 1,
            SERVER_ISN + 1,
            F::ACK,
            &[O::Noop, O::Noop, O::Timestamp(CLIENT_TS + 1, SERVER_TS)],
            &[0xa5; 1200],
        );
        let error = error_about(family, kind, false, &forwarded[14..]);
        let (action, out) = run(&mut guard, SERVER_PROGRAM, &error);
        assert_eq!(action, Action::Pass, "{family:?} {kind:?}");
        let tcp = quoted_tcp(family, &out);
        assert_eq!(
            tcp.sequence_number,
            CLIENT_ISN + 1,
            "{family:?} {kind:?}: shared space"
        );
        assert_eq!(
            tcp.acknowledgment_number,
            (SERVER_ISN + 1).wrapping_sub(offset),
            "{family:?} {kind:?}: the ack as the client sent it"
        );
        let options: Vec<O> = tcp.options_iterator().map(Result::unwrap).collect();
        assert!(
            options.contains(&O::Timestamp(CLIENT_TS + 1, tsval)),
            "{family:?} {kind:?}: TSecr on our clock: {options:?}"
        );
        assert_icmp_checksum(family, &out);
    }
}

#[test]
fn a_quote_of_only_eight_bytes_has_its_sequence_number_translated() {
    for family in [Family::V4, Family::V6] {
        let mut guard = guard();
        let (cookie, tsval) = joined(&mut guard, family);
        let forwarded = tcp_frame(
            family,
            false,
            CLIENT_PORT,
            cookie.wrapping_add(1),
            CLIENT_ISN + 1,
            F::ACK,
            &[O::Noop, O::Noop, O::Timestamp(tsval, CLIENT_TS)],
            &[1; 100],
        );
        let ip_len = family.ip_header_len();
        // RFC 792's minimum quote: the IP header and the first 8 bytes of TCP.
        let error = too_big_error(family, true, &forwarded[14..14 + ip_len + 8]);
        let (action, out) = run(&mut guard, GUARD_PROGRAM, &error);
        assert_eq!(action, Action::Pass, "{family:?}");
        let (_, quote) = offsets(family);
        let tcp = quote + ip_len;
        assert_eq!(
            u32::from_be_bytes(out[tcp + 4..tcp + 8].try_into().unwrap()),
            SERVER_ISN + 1,
            "{family:?}"
        );
        assert_eq!(out[tcp..tcp + 4], error[tcp..tcp + 4], "{family:?}: ports");
        assert_icmp_checksum(family, &out);
    }
}

#[test]
fn forged_and_unmatched_errors_drop_and_others_pass_untouched() {
    for family in [Family::V4, Family::V6] {
        let mut guard = guard();
        let (cookie, tsval) = joined(&mut guard, family);
        let quote_of = |seq: u32, client_port: u16, server_port_shift: bool| {
            let mut segment = tcp_frame(
                family,
                false,
                client_port,
                seq,
                CLIENT_ISN + 1,
                F::ACK,
                &[O::Noop, O::Noop, O::Timestamp(tsval, CLIENT_TS)],
                &[2; 64],
            );
            if server_port_shift {
                // Another service on the same server (port 22): not protected.
                let at = 14 + family.ip_header_len();
                segment[at..at + 2].copy_from_slice(&22u16.to_be_bytes());
            }
            too_big_error(family, true, &segment[14..])
        };
        // A quoted sequence number far from what the server has in flight: forged.
        let forged = quote_of(cookie.wrapping_add(1 << 30), CLIENT_PORT, false);
        assert_eq!(run(&mut guard, GUARD_PROGRAM, &forged).0, Action::Drop);
        // One past what the server sent: no sender has that in flight either.
        let ahead = quote_of(cookie.wrapping_add(2), CLIENT_PORT, false);
        assert_eq!(run(&mut guard, GUARD_PROGRAM, &ahead).0, Action::Drop);
        // A protected service's segment of no flow.
        let stray = quote_of(cookie.wrapping_add(1), CLIENT_PORT + 1, false);
        assert_eq!(run(&mut guard, GUARD_PROGRAM, &stray).0, Action::Drop);
        // Not a protected service: routed as before, byte for byte.
        let other = quote_of(cookie.wrapping_add(1), CLIENT_PORT, true);
        assert_eq!(
            run(&mut guard, GUARD_PROGRAM, &other),
            (Action::Pass, other.clone())
        );
        let counters = guard.counters().unwrap();
        assert_eq!(
            (
                counters.get(Counter::DropIcmpOutOfWindow),
                counters.get(Counter::DropIcmpNoFlow),
                counters.get(Counter::IcmpTranslated),
                counters.get(Counter::PassOtherProtocol),
            ),
            (2, 1, 0, 1),
            "{family:?}"
        );
        let entry = guard.flow(&flow_of(&match family {
            Family::V4 => syn_v4(0),
            Family::V6 => syn_v6(),
        }));
        let entry = entry.unwrap().expect("the flow is still there");
        assert_eq!(
            entry.to_client.next_seq,
            SERVER_ISN + 1,
            "{family:?}: a forged error changes nothing of the flow"
        );
    }
}

#[test]
fn a_segment_whose_ttl_runs_out_at_the_guard_goes_to_the_kernel_as_sent() {
    for family in [Family::V4, Family::V6] {
        let mut guard = guard();
        joined(&mut guard, family);
        // The server's segment arrives with one hop left: the guard's kernel must answer
        // "time exceeded" quoting the server's own numbers, so nothing is rewritten.
        let mut expiring = tcp_frame(
            family,
            false,
            CLIENT_PORT,
            SERVER_ISN + 1,
            CLIENT_ISN + 1,
            F::ACK,
            &[O::Noop, O::Noop, O::Timestamp(SERVER_TS + 7, CLIENT_TS)],
            b"probe",
        );
        let ttl_at = 14
            + match family {
                Family::V4 => ipv4::TTL,
                Family::V6 => ipv6::HOP_LIMIT,
            };
        expiring[ttl_at] = 1;
        if family == Family::V4 {
            // The IPv4 header checksum covers the TTL: recompute it.
            expiring[14 + ipv4::CHECKSUM..14 + ipv4::CHECKSUM + 2].fill(0);
            let sum = checksum::finish(checksum::add_slice(0, &expiring[14..34]));
            expiring[14 + ipv4::CHECKSUM..14 + ipv4::CHECKSUM + 2]
                .copy_from_slice(&sum.to_be_bytes());
        }
        let (action, out) = run(&mut guard, SERVER_PROGRAM, &expiring);
        assert_eq!(
            (action, out),
            (Action::Pass, expiring.clone()),
            "{family:?}: untouched"
        );
        let counters = guard.counters().unwrap();
        assert_eq!(
            (
                counters.get(Counter::PassTtlExpired),
                counters.get(Counter::ForwardToClient)
            ),
            (1, 0),
            "{family:?}"
        );
    }
}
