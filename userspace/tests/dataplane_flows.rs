//! Data-plane tests of validated flows: both guard programs of the real compiled object,
//! sharing their maps, through BPF_PROG_TEST_RUN. The third ACK becomes the backend SYN, the
//! server's SYN-ACK the client's window update, and segments both ways are translated; every
//! output is byte-checked (sequence numbers, SACK blocks, timestamps, windows, checksums).
//! They need root (CAP_BPF): run them through `cargo xtask test`.

mod support;

use etherparse::TcpOptionElement as O;
use support::{
    Family, clients_own_options, guard, options, passes, passes_with_ip, segment,
    server_syn_ack_options, syn_ack_for, tcp_frame, zero_window_probe,
};
use synguard::{
    dataplane::object::{GUARD_PROGRAM, SERVER_PROGRAM},
    dataplane::test_run::DataPlane,
    flows::events::Record,
};
use synguard_common::{
    counters::Counter,
    maps::{EARLY_DATA_MAX, EventKind, FORGOTTEN_RESET_BURST, FORGOTTEN_RESETS_PER_SECOND, phase},
    parse::TcpFlags as F,
    test_frames::*,
    verdict::Action,
};

const SERVER_ISN: u32 = 0x7000_0000;
const CLIENT_TS: u32 = 0x1122_4000;
const SERVER_TS: u32 = 0x5555_0000;

/// The server's SYN-ACK to the backend SYN, stamped `tsval`.
fn server_syn_ack(tsval: u32) -> Vec<u8> {
    support::server_syn_ack(SERVER_ISN, tsval, CLIENT_TS)
}

/// The client's third ACK echoing `cookie`, stamped `client_ts` (echoing our `tsval`).
fn third_ack(cookie: u32, client_ts: u32, tsval: u32) -> Vec<u8> {
    segment(
        true,
        CLIENT_ISN + 1,
        cookie.wrapping_add(1),
        F::ACK,
        502,
        &[O::Noop, O::Noop, O::Timestamp(client_ts, tsval)],
        &[],
    )
}

/// The server's FIN, before any data.
fn server_fin() -> Vec<u8> {
    segment(
        false,
        SERVER_ISN + 1,
        CLIENT_ISN + 1,
        F::FIN | F::ACK,
        100,
        &[],
        &[],
    )
}

/// Runs the handshake: SYN, third ACK (checked: the backend SYN), server SYN-ACK (checked:
/// the window update). Returns the cookie and our TSval.
/// The client's handshake with the guard, up to its third ACK: the flow waits for the server.
/// Returns the cookie, our TSval, and the SYN to the server the third ACK became.
fn awaiting_server(guard: &mut DataPlane) -> (u32, u32, etherparse::TcpHeader) {
    let (cookie, tsval, _) = syn_ack_for(guard, &syn_v4(0), 0);
    let tsval = tsval.unwrap();
    let third = third_ack(cookie, CLIENT_TS, tsval);
    let (backend_syn, _) = passes(guard, synguard::dataplane::object::GUARD_PROGRAM, &third);
    (cookie, tsval, backend_syn)
}

fn joined(guard: &mut DataPlane) -> (u32, u32) {
    let (cookie, tsval, backend_syn) = awaiting_server(guard);
    assert!(backend_syn.syn && !backend_syn.ack, "a SYN");
    assert_eq!(backend_syn.sequence_number, CLIENT_ISN, "the client's ISN");
    assert_eq!(
        (backend_syn.source_port, backend_syn.destination_port),
        (CLIENT_PORT, SERVER_PORT)
    );
    assert_eq!(
        backend_syn.window_size,
        502 << 7,
        "the client's window, unscaled"
    );
    assert_eq!(
        options(&backend_syn),
        clients_own_options(CLIENT_TS),
        "the client's own options"
    );
    let syn_ack = server_syn_ack(SERVER_TS);
    let (update, _) = passes(guard, SERVER_PROGRAM, &syn_ack);
    assert!(update.ack && !update.syn, "a bare ACK");
    assert_eq!(
        (update.source_port, update.destination_port),
        (SERVER_PORT, CLIENT_PORT)
    );
    assert_eq!(
        update.sequence_number,
        cookie.wrapping_add(1),
        "our ISN + 1"
    );
    assert_eq!(update.acknowledgment_number, CLIENT_ISN + 1);
    assert_eq!(
        update.window_size,
        65160 >> 7,
        "scaled by the shift we announced"
    );
    assert_eq!(
        options(&update),
        [O::Timestamp(tsval, CLIENT_TS)],
        "timestamps on our clock, no SYN options"
    );
    (cookie, tsval)
}

#[test]
fn handshake_joins_and_both_directions_translate_byte_for_byte() {
    let mut guard = guard();
    let (cookie, tsval) = joined(&mut guard);
    let offset = SERVER_ISN.wrapping_sub(cookie);
    let entry = guard.flow(&flow_of(&syn_v4(0))).unwrap().unwrap();
    assert_eq!(entry.phase, phase::JOINED);
    assert_eq!((entry.server_isn, entry.seq_offset), (SERVER_ISN, offset));
    let kinds: Vec<u8> = guard
        .events()
        .unwrap()
        .iter()
        .map(|e| e.wire.kind)
        .collect();
    assert_eq!(kinds, [EventKind::Validated as u8, EventKind::Joined as u8]);

    // Client to server: ack, SACK edges and TSecr move into the server's spaces.
    let data = segment(
        true,
        CLIENT_ISN + 1,
        cookie.wrapping_add(101),
        F::ACK,
        500,
        &[
            O::Noop,
            O::Noop,
            O::Timestamp(CLIENT_TS + 1, tsval + 5),
            O::Noop,
            O::Noop,
            O::SelectiveAcknowledgement(
                (cookie.wrapping_add(201), cookie.wrapping_add(301)),
                [
                    Some((cookie.wrapping_add(401), cookie.wrapping_add(501))),
                    None,
                    None,
                ],
            ),
        ],
        b"hello",
    );
    let (tcp, payload) = passes(
        &mut guard,
        synguard::dataplane::object::GUARD_PROGRAM,
        &data,
    );
    assert_eq!(payload, b"hello");
    assert_eq!(
        tcp.sequence_number,
        CLIENT_ISN + 1,
        "the client's space is shared"
    );
    assert_eq!(tcp.acknowledgment_number, SERVER_ISN.wrapping_add(101));
    assert_eq!(
        tcp.window_size, 500,
        "both sides scale the client's window alike"
    );
    assert_eq!(
        options(&tcp),
        [
            O::Timestamp(CLIENT_TS + 1, SERVER_TS + 5),
            O::SelectiveAcknowledgement(
                (SERVER_ISN + 201, SERVER_ISN + 301),
                [Some((SERVER_ISN + 401, SERVER_ISN + 501)), None, None]
            ),
        ]
    );

    // Server to client: seq and TSval back into ours, the window re-scaled (shift 9 -> 7).
    let reply = segment(
        false,
        SERVER_ISN + 1,
        CLIENT_ISN + 6,
        F::ACK,
        100,
        &[
            O::Noop,
            O::Noop,
            O::Timestamp(SERVER_TS + 10, CLIENT_TS + 1),
        ],
        b"world",
    );
    let (tcp, payload) = passes(&mut guard, SERVER_PROGRAM, &reply);
    assert_eq!(payload, b"world");
    assert_eq!(tcp.sequence_number, cookie.wrapping_add(1));
    assert_eq!(tcp.acknowledgment_number, CLIENT_ISN + 6);
    assert_eq!(tcp.window_size, 100 << 2);
    assert_eq!(options(&tcp), [O::Timestamp(tsval + 10, CLIENT_TS + 1)]);

    let entry = guard.flow(&flow_of(&syn_v4(0))).unwrap().unwrap();
    assert_eq!(
        (entry.to_server.packets, entry.to_server.bytes),
        (1, 5),
        "per-flow accounting"
    );
    assert_eq!((entry.to_client.packets, entry.to_client.bytes), (1, 5));
    let counters = guard.counters().unwrap();
    assert_eq!(counters.get(Counter::ForwardToServer), 1);
    assert_eq!(counters.get(Counter::ForwardToClient), 1);
    assert_eq!(counters.get(Counter::BackendJoined), 1);
}

/// Runs `frame` through `program`: the output's TCP header (checksums verified), payload,
/// and IPv6 source and destination.
fn passes_v6(
    guard: &mut DataPlane,
    program: &str,
    frame: &[u8],
) -> (etherparse::TcpHeader, Vec<u8>, ([u8; 16], [u8; 16])) {
    let (tcp, payload, ip) = passes_with_ip(guard, program, frame);
    let etherparse::IpHeaders::Ipv6(v6, _) = ip else {
        panic!("IPv6 out for IPv6 in")
    };
    (tcp, payload, (v6.source, v6.destination))
}

#[test]
fn ipv6_joins_and_translates_byte_for_byte() {
    let mut guard = guard();
    let (cookie, tsval, _) = syn_ack_for(&mut guard, &syn_v6(), 0);
    let tsval = tsval.unwrap();
    let v6 = |from_client, seq, ack, flags, options: &[O], payload: &[u8]| {
        tcp_frame(
            Family::V6,
            from_client,
            CLIENT_PORT,
            seq,
            ack,
            flags,
            options,
            payload,
        )
    };
    // The third ACK becomes the client's SYN to the server.
    let third = v6(
        true,
        CLIENT_ISN + 1,
        cookie.wrapping_add(1),
        F::ACK,
        &[O::Noop, O::Noop, O::Timestamp(CLIENT_TS, tsval)],
        &[],
    );
    let (syn, _, addresses) = passes_v6(&mut guard, GUARD_PROGRAM, &third);
    assert_eq!(addresses, (CLIENT6, SERVER6));
    assert!(syn.syn && !syn.ack, "a SYN");
    assert_eq!(
        (syn.sequence_number, syn.source_port, syn.destination_port),
        (CLIENT_ISN, CLIENT_PORT, SERVER_PORT)
    );
    assert_eq!(
        options(&syn),
        clients_own_options(CLIENT_TS),
        "the client's own options"
    );
    // The server's SYN-ACK becomes the client's window update, in our numbers.
    let syn_ack = v6(
        false,
        SERVER_ISN,
        CLIENT_ISN + 1,
        F::SYN | F::ACK,
        &server_syn_ack_options(SERVER_TS, CLIENT_TS),
        &[],
    );
    let (update, _, addresses) = passes_v6(&mut guard, SERVER_PROGRAM, &syn_ack);
    assert_eq!(addresses, (SERVER6, CLIENT6));
    assert!(update.ack && !update.syn, "a bare ACK");
    assert_eq!(
        (update.sequence_number, update.acknowledgment_number),
        (cookie.wrapping_add(1), CLIENT_ISN + 1)
    );
    assert_eq!(options(&update), [O::Timestamp(tsval, CLIENT_TS)]);
    // Client to server: the acknowledgement and TSecr into the server's numbers.
    let data = v6(
        true,
        CLIENT_ISN + 1,
        cookie.wrapping_add(101),
        F::ACK,
        &[O::Noop, O::Noop, O::Timestamp(CLIENT_TS + 1, tsval + 5)],
        b"hello",
    );
    let (tcp, payload, addresses) = passes_v6(&mut guard, GUARD_PROGRAM, &data);
    assert_eq!(
        (addresses, payload.as_slice()),
        ((CLIENT6, SERVER6), &b"hello"[..])
    );
    assert_eq!(
        (tcp.sequence_number, tcp.acknowledgment_number),
        (CLIENT_ISN + 1, SERVER_ISN.wrapping_add(101))
    );
    assert_eq!(options(&tcp), [O::Timestamp(CLIENT_TS + 1, SERVER_TS + 5)]);
    // Server to client: the sequence number and TSval back into ours.
    let reply = v6(
        false,
        SERVER_ISN + 1,
        CLIENT_ISN + 6,
        F::ACK,
        &[
            O::Noop,
            O::Noop,
            O::Timestamp(SERVER_TS + 10, CLIENT_TS + 1),
        ],
        b"world",
    );
    let (tcp, payload, addresses) = passes_v6(&mut guard, SERVER_PROGRAM, &reply);
    assert_eq!(
        (addresses, payload.as_slice()),
        ((SERVER6, CLIENT6), &b"world"[..])
    );
    assert_eq!(
        (tcp.sequence_number, tcp.acknowledgment_number),
        (cookie.wrapping_add(1), CLIENT_ISN + 6)
    );
    assert_eq!(options(&tcp), [O::Timestamp(tsval + 10, CLIENT_TS + 1)]);
    let counters = guard.counters().unwrap();
    assert_eq!(
        (
            counters.get(Counter::CookieValid),
            counters.get(Counter::BackendJoined),
            counters.get(Counter::ForwardToServer),
            counters.get(Counter::ForwardToClient)
        ),
        (1, 1, 1, 1)
    );
}

#[test]
fn fins_and_resets_are_reported_and_blind_resets_die() {
    let mut guard = guard();
    let (cookie, _) = joined(&mut guard);
    guard.events().unwrap();
    // A blind RST far outside the server's window: dropped, nothing reported.
    let blind = segment(
        true,
        CLIENT_ISN.wrapping_add(1 << 30),
        0,
        F::RST,
        0,
        &[],
        &[],
    );
    let outcome = guard.run(&blind).unwrap();
    assert_eq!(outcome.action().unwrap(), Action::Drop);
    assert_eq!(
        guard.counters().unwrap().get(Counter::DropRstOutOfWindow),
        1
    );
    assert!(guard.events().unwrap().is_empty());

    // The server closes: its FIN is reported in its own space; the client's ACK of it too.
    let fin = server_fin();
    let (tcp, _) = passes(&mut guard, SERVER_PROGRAM, &fin);
    assert!(tcp.fin);
    let ack_of_fin = segment(
        true,
        CLIENT_ISN + 1,
        cookie.wrapping_add(2),
        F::ACK,
        500,
        &[],
        &[],
    );
    passes(
        &mut guard,
        synguard::dataplane::object::GUARD_PROGRAM,
        &ack_of_fin,
    );
    let events = support::wire_events(&mut guard);
    let summary: Vec<(u8, u8, u32, u32)> = events
        .iter()
        .map(|e| (e.kind, e.flags, e.seq, e.ack))
        .collect();
    assert_eq!(
        summary,
        [
            (
                EventKind::Control as u8,
                F::FIN | F::ACK,
                SERVER_ISN + 1,
                CLIENT_ISN + 1
            ),
            (
                EventKind::FinAcked as u8,
                F::ACK,
                CLIENT_ISN + 1,
                SERVER_ISN + 2
            ),
        ]
    );
    // An in-window RST goes through, reported with what the receiver expected.
    let reset = segment(true, CLIENT_ISN + 1, 0, F::RST, 0, &[], &[]);
    passes(
        &mut guard,
        synguard::dataplane::object::GUARD_PROGRAM,
        &reset,
    );
    let event = guard.events().unwrap()[0].wire;
    assert_eq!(
        (event.kind, event.flags),
        (EventKind::Control as u8, F::RST)
    );
    assert_eq!(event.receiver_next, CLIENT_ISN + 1);
}

#[test]
fn segments_of_no_flow_die_by_kind() {
    let mut guard = guard();
    let cases = [
        (F::FIN | F::ACK, &b""[..], Counter::DropStrayFin),
        (F::RST, &b""[..], Counter::DropStrayRst),
        (F::SYN | F::ACK, &b""[..], Counter::DropStraySynAck),
    ];
    for (flags, payload, counter) in cases {
        let frame = segment(true, 5, 0x1eed_beef, flags, 100, &[], payload);
        let outcome = guard.run(&frame).unwrap();
        assert_eq!(
            outcome.action().unwrap(),
            Action::Drop,
            "{}",
            counter.name()
        );
        assert_eq!(
            guard.counters().unwrap().get(counter),
            1,
            "{}",
            counter.name()
        );
    }
    // A bare ACK must carry a cookie: this one fails it (invalid or, by its counter bits,
    // expired).
    let forged = segment(true, 5, 0x1eed_beef, F::ACK, 100, &[], &[]);
    assert_eq!(guard.run(&forged).unwrap().action().unwrap(), Action::Drop);
    let counters = guard.counters().unwrap();
    assert_eq!(
        counters.get(Counter::DropCookieInvalid) + counters.get(Counter::DropCookieExpired),
        1
    );
    // Server-side traffic of no validated flow from an unprotected port is the server's own
    // business: it passes.
    let mut own = segment(false, 1, 2, F::ACK, 100, &[], b"x");
    own[34..36].copy_from_slice(&22u16.to_be_bytes());
    let own = fix_tcp_checksum(own);
    let outcome = guard.run_program(SERVER_PROGRAM, &own).unwrap();
    assert_eq!(outcome.action().unwrap(), Action::Pass);
    assert!(guard.events().unwrap().is_empty());
}

/// Recomputes the TCP checksum of an IPv4 frame a test patched.
fn fix_tcp_checksum(mut frame: Vec<u8>) -> Vec<u8> {
    let (ip, rest) = etherparse::Ipv4Header::from_slice(&frame[14..]).unwrap();
    let mut tcp = etherparse::TcpHeader::from_slice(rest).unwrap().0;
    let payload = rest[tcp.header_len()..].to_vec();
    tcp.checksum = tcp.calc_checksum_ipv4(&ip, &payload).unwrap();
    let at = 14 + ip.header_len();
    frame[at..at + tcp.header_len()].copy_from_slice(&tcp.to_bytes());
    frame
}

#[test]
fn a_server_segment_of_a_forgotten_flow_gets_the_reset_the_client_would_send() {
    let mut guard = guard();
    joined(&mut guard);
    guard.remove_flow(&flow_of(&syn_v4(0))).unwrap();
    // The server speaks on a flow the guard no longer holds (idled out, evicted, closed).
    let late = segment(
        false,
        SERVER_ISN + 1,
        CLIENT_ISN + 1,
        F::ACK,
        100,
        &[],
        b"late",
    );
    // The budget's clock starts with this first RST.
    let started = std::time::Instant::now();
    let outcome = guard.run_program(SERVER_PROGRAM, &late).unwrap();
    assert_eq!(
        outcome.action().unwrap(),
        Action::Tx,
        "answered, not passed on"
    );
    let l3 = &outcome.output[14..];
    let tcp = assert_checksums(l3);
    let (ip, _) = etherparse::IpHeaders::from_slice(l3).unwrap();
    let etherparse::IpHeaders::Ipv4(v4, _) = ip else {
        panic!("IPv4")
    };
    assert_eq!(
        (v4.source, v4.destination),
        (CLIENT4, SERVER4),
        "in the client's name"
    );
    assert_eq!(
        (tcp.source_port, tcp.destination_port),
        (CLIENT_PORT, SERVER_PORT)
    );
    assert!(tcp.rst && !tcp.ack && !tcp.syn && !tcp.fin, "a bare RST");
    assert_eq!(
        tcp.sequence_number,
        CLIENT_ISN + 1,
        "what the server expects next: its segment's acknowledgement"
    );
    assert_eq!(&outcome.output[..6], &MAC_CLIENT, "MACs swapped: back out");
    // A RST of no flow is answered by nothing; it passes as before.
    let rst = segment(false, SERVER_ISN + 1, 0, F::RST, 0, &[], &[]);
    let outcome = guard.run_program(SERVER_PROGRAM, &rst).unwrap();
    assert_eq!(outcome.action().unwrap(), Action::Pass);
    // Past the per-CPU budget, the segments drop without an answer.
    for _ in 0..FORGOTTEN_RESET_BURST * 2 {
        guard.run_program(SERVER_PROGRAM, &late).unwrap();
    }
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let counters = guard.counters().unwrap();
    let sent = counters.get(Counter::TxResetForgotten);
    // The data plane reads the coarse clock, which moves a tick at a time (10 ms at most
    // on any kernel of 100 Hz or more): the bucket may see up to a tick more than elapsed.
    const COARSE_TICK_MS: u64 = 10;
    let refill = (elapsed_ms + COARSE_TICK_MS) * FORGOTTEN_RESETS_PER_SECOND / 1000 + 1;
    assert!(
        sent >= FORGOTTEN_RESET_BURST && sent <= FORGOTTEN_RESET_BURST + refill,
        "{sent} RSTs in {elapsed_ms} ms"
    );
    assert_eq!(
        sent + counters.get(Counter::DropForgottenOverRate),
        FORGOTTEN_RESET_BURST * 2 + 1
    );
}

/// The RST the guard sent back out (XDP_TX) for a segment of a forgotten flow: a bare RST
/// from `from` to `to`, checksums right, its sequence number `seq`.
fn assert_reset_back(outcome: &synguard::dataplane::test_run::Outcome, to_client: bool, seq: u32) {
    assert_eq!(
        outcome.action().unwrap(),
        Action::Tx,
        "answered, not passed on"
    );
    let tcp = assert_checksums(&outcome.output[14..]);
    let ports = if to_client {
        (SERVER_PORT, CLIENT_PORT)
    } else {
        (CLIENT_PORT, SERVER_PORT)
    };
    assert_eq!((tcp.source_port, tcp.destination_port), ports);
    assert!(tcp.rst && !tcp.ack && !tcp.syn && !tcp.fin, "a bare RST");
    assert_eq!(tcp.sequence_number, seq, "what the receiver expects next");
}

#[test]
fn a_remembered_forgotten_flow_gets_both_ends_reset_whichever_speaks() {
    let mut guard = guard();
    let (cookie, _) = joined(&mut guard);
    let flow = flow_of(&syn_v4(0));
    let offset = SERVER_ISN.wrapping_sub(cookie);
    // Evicted from the flows map; the controller remembers it and rebuilds the filter, which
    // must keep the forgotten flow's mark (without it the client's segment never looks).
    guard.events().unwrap(); // the handshake's
    guard.remove_flow(&flow).unwrap();
    guard.remember_forgotten(&flow, offset).unwrap();
    guard.rebuild_flow_filter().unwrap();
    // The client had 5000 bytes from the server (an ACK of the cookie itself would be a new
    // connection's third ACK, which it validates).
    let client_next = cookie.wrapping_add(5001);
    let client_data = segment(
        true,
        CLIENT_ISN + 1,
        client_next,
        F::ACK | F::PSH,
        502,
        &[],
        b"late",
    );
    let outcome = guard.run(&client_data).unwrap();
    assert_reset_back(&outcome, true, client_next);
    assert_eq!(&outcome.output[..6], &MAC_CLIENT, "back out to the client");
    let event = guard.events().unwrap()[0].wire;
    assert_eq!(
        (event.kind, event.direction, event.seq, event.ack),
        (
            EventKind::Forgotten as u8,
            synguard_common::maps::TO_SERVER,
            CLIENT_ISN + 1,
            SERVER_ISN + 5001
        ),
        "the server's RST, for the controller: the client's own sequence number, the \
         acknowledgement in the server's numbers"
    );
    // A FIN too; a SYN opens a new connection on the tuple (a cookie SYN-ACK).
    let client_fin = segment(
        true,
        CLIENT_ISN + 1,
        client_next,
        F::FIN | F::ACK,
        502,
        &[],
        &[],
    );
    assert_reset_back(&guard.run(&client_fin).unwrap(), true, client_next);
    syn_ack_for(&mut guard, &syn_v4(0), 0);
    guard.events().unwrap();
    // The server speaks: its RST back, and the client's, in our numbers, for the controller.
    let server_data = segment(
        false,
        SERVER_ISN + 5001,
        CLIENT_ISN + 1,
        F::ACK,
        100,
        &[],
        b"late",
    );
    let outcome = guard.run_program(SERVER_PROGRAM, &server_data).unwrap();
    assert_reset_back(&outcome, false, CLIENT_ISN + 1);
    let event = guard.events().unwrap()[0].wire;
    assert_eq!(
        (event.kind, event.direction, event.seq, event.ack),
        (
            EventKind::Forgotten as u8,
            synguard_common::maps::TO_CLIENT,
            client_next,
            CLIENT_ISN + 1
        )
    );
    // Corrupted on the way, it would have died in the client's kernel: no RST either way.
    let mut corrupted = server_data.clone();
    *corrupted.last_mut().unwrap() ^= 0x01;
    let outcome = guard.run_program(SERVER_PROGRAM, &corrupted).unwrap();
    assert_eq!(outcome.action().unwrap(), Action::Drop);
    assert!(guard.events().unwrap().is_empty());
    let counters = guard.counters().unwrap();
    assert_eq!(counters.get(Counter::DropTcpChecksum), 1);
    assert_eq!(counters.get(Counter::TxResetForgotten), 3);
    assert_eq!(counters.get(Counter::DropCookieInvalid), 0);
}

#[test]
fn a_client_segment_of_a_flow_not_remembered_is_a_forged_ack() {
    let mut guard = guard();
    let (cookie, _) = joined(&mut guard);
    guard.events().unwrap(); // the handshake's
    guard.remove_flow(&flow_of(&syn_v4(0))).unwrap();
    guard.rebuild_flow_filter().unwrap();
    // The client had 5000 bytes from the server (an ACK of the cookie itself would be a new
    // connection's third ACK, which it validates).
    let client_next = cookie.wrapping_add(5001);
    let client_data = segment(true, CLIENT_ISN + 1, client_next, F::ACK, 502, &[], b"late");
    let outcome = guard.run(&client_data).unwrap();
    assert_eq!(
        outcome.action().unwrap(),
        Action::Drop,
        "no RST to a forged ACK"
    );
    let counters = guard.counters().unwrap();
    assert_eq!(
        counters.get(Counter::DropCookieInvalid) + counters.get(Counter::DropCookieExpired),
        1
    );
    assert_eq!(counters.get(Counter::TxResetForgotten), 0);
    assert!(guard.events().unwrap().is_empty());
}

/// While the controller does not read the flow event ring and it fills: a third ACK that
/// cannot be reported leaves no flow behind (its client sends again), new clients still get
/// cookies, a live flow's data still flows, and its FIN waits for room (the sender
/// retransmits it); once the ring has room, the same third ACK opens its flow.
#[test]
fn a_full_event_ring_loses_no_flow_and_turns_away_no_new_client() {
    let mut guard = guard();
    let (cookie, tsval) = joined(&mut guard);
    guard.events().unwrap();
    // Our SYN-ACK to a SYN from `port`: its cookie and TSval.
    let answer = |guard: &mut DataPlane, port: u16| {
        let outcome = guard.run(&syn_v4_from_port(port)).unwrap();
        assert_eq!(outcome.action().unwrap(), Action::Tx, "a cookie SYN-ACK");
        let syn_ack = assert_checksums(&outcome.output[14..]);
        let tsval = options(&syn_ack).iter().find_map(|option| match option {
            O::Timestamp(tsval, _) => Some(*tsval),
            _ => None,
        });
        (syn_ack.sequence_number, tsval)
    };
    let third_ack_from = |guard: &mut DataPlane, port: u16| {
        let (cookie, tsval) = answer(guard, port);
        tcp_frame(
            Family::V4,
            true,
            port,
            CLIENT_ISN + 1,
            cookie.wrapping_add(1),
            F::ACK,
            &[O::Noop, O::Noop, O::Timestamp(CLIENT_TS, tsval.unwrap())],
            &[],
        )
    };
    // 4 MiB of ring at about 200 bytes an event: full after some 21,000 handshakes.
    let lost = (1000..40_000)
        .find_map(|port| {
            let third = third_ack_from(&mut guard, port);
            let outcome = guard.run(&third).unwrap();
            (outcome.action().unwrap() == Action::Drop).then_some((port, third))
        })
        .expect("the ring filled");
    let (port, third) = lost;
    assert!(port > 20_000, "filled after {} handshakes", port - 1000);
    let counters = guard.counters().unwrap();
    assert_eq!(counters.get(Counter::DropEventLost), 1);
    assert_eq!(
        guard.flow(&flow_of(&third)).unwrap(),
        None,
        "no flow without its event"
    );
    // A new client's SYN needs no event: answered.
    answer(&mut guard, 50_000);
    // The live flow's data needs none either.
    let data = segment(
        true,
        CLIENT_ISN + 1,
        cookie.wrapping_add(1),
        F::ACK | F::PSH,
        502,
        &[O::Noop, O::Noop, O::Timestamp(CLIENT_TS + 1, tsval)],
        b"still",
    );
    let (_, payload) = passes(&mut guard, GUARD_PROGRAM, &data);
    assert_eq!(payload, b"still");
    // Its FIN does: dropped until there is room (the sender retransmits it), the flow kept.
    let fin = segment(
        true,
        CLIENT_ISN + 6,
        cookie.wrapping_add(1),
        F::FIN | F::ACK,
        502,
        &[O::Noop, O::Noop, O::Timestamp(CLIENT_TS + 2, tsval)],
        &[],
    );
    assert_eq!(guard.run(&fin).unwrap().action().unwrap(), Action::Drop);
    assert_eq!(guard.counters().unwrap().get(Counter::DropEventLost), 2);
    let live = guard
        .flow(&flow_of(&syn_v4(0)))
        .unwrap()
        .expect("the live flow");
    assert_eq!(live.phase, phase::JOINED);
    // The controller reads the ring: the same third ACK and FIN go through.
    guard.records().unwrap();
    assert_eq!(guard.run(&third).unwrap().action().unwrap(), Action::Pass);
    assert!(guard.flow(&flow_of(&third)).unwrap().is_some());
    assert_eq!(guard.events().unwrap()[0].kind, EventKind::Validated);
    passes(&mut guard, GUARD_PROGRAM, &fin);
    let event = guard.events().unwrap()[0].wire;
    assert_eq!(
        (event.kind, event.flags),
        (EventKind::Control as u8, F::FIN | F::ACK)
    );
}

#[test]
fn data_before_the_join_goes_to_the_controller_and_the_frame_drops() {
    let mut guard = guard();
    let (cookie, tsval, _) = awaiting_server(&mut guard);
    guard.records().unwrap();
    let data = |payload: &[u8]| {
        segment(
            true,
            CLIENT_ISN + 1,
            cookie.wrapping_add(1),
            F::ACK | F::PSH,
            502,
            &[O::Noop, O::Noop, O::Timestamp(CLIENT_TS + 1, tsval)],
            payload,
        )
    };
    let request = b"GET / HTTP/1.1\r\n\r\n";
    let outcome = guard.run(&data(request)).unwrap();
    assert_eq!(outcome.action().unwrap(), Action::Drop);
    assert_eq!(guard.counters().unwrap().get(Counter::EarlyDataHeld), 1);
    let records = guard.records().unwrap();
    let [Record::EarlyData(held)] = &records[..] else {
        panic!("expected the held data alone: {records:?}")
    };
    assert_eq!(
        (held.client_isn, held.guard_isn, held.seq, held.window),
        (CLIENT_ISN, cookie, CLIENT_ISN + 1, 502)
    );
    assert_eq!((held.ts_val, held.ts_ecr), (CLIENT_TS + 1, tsval));
    assert_eq!(&held.payload[..held.len as usize], request);

    // More than a record holds (more than our SYN-ACK's window allowed): dropped, not held.
    let oversized = data(&[b'x'; EARLY_DATA_MAX + 1]);
    assert_eq!(
        guard.run(&oversized).unwrap().action().unwrap(),
        Action::Drop
    );
    let counters = guard.counters().unwrap();
    assert_eq!(counters.get(Counter::EarlyDataHeld), 1);
    assert_eq!(counters.get(Counter::DropAwaitingBackend), 1);
    assert!(guard.records().unwrap().is_empty());
}

#[test]
fn a_refusing_server_and_an_early_client_reset_are_reported_not_forwarded() {
    let mut guard = guard();
    let (cookie, _, _) = awaiting_server(&mut guard);
    // Before the server answers, the client's segments without data wait (dropped; a client
    // sends them again).
    let probe = zero_window_probe(cookie, &[]);
    assert_eq!(guard.run(&probe).unwrap().action().unwrap(), Action::Drop);
    assert_eq!(
        guard.counters().unwrap().get(Counter::DropAwaitingBackend),
        1
    );
    // The server refuses: dropped and reported (the controller resets the client).
    let refusal = segment(false, 0, CLIENT_ISN + 1, F::RST | F::ACK, 0, &[], &[]);
    let outcome = guard.run_program(SERVER_PROGRAM, &refusal).unwrap();
    assert_eq!(outcome.action().unwrap(), Action::Drop);
    assert_eq!(guard.counters().unwrap().get(Counter::BackendRefused), 1);
    let last = guard.events().unwrap().last().unwrap().wire;
    assert_eq!(
        (last.kind, last.flags),
        (EventKind::Control as u8, F::RST | F::ACK)
    );
    // The client gives up first in another flow of the same shape: reported too.
    let early = segment(true, CLIENT_ISN + 1, 0, F::RST, 0, &[], &[]);
    assert_eq!(guard.run(&early).unwrap().action().unwrap(), Action::Drop);
    assert_eq!(guard.counters().unwrap().get(Counter::ResetBeforeJoin), 1);
}

#[test]
fn a_retransmitted_server_syn_ack_is_answered_with_the_ack() {
    let mut guard = guard();
    joined(&mut guard);
    let again = server_syn_ack(SERVER_TS + 1000);
    let outcome = guard.run_program(SERVER_PROGRAM, &again).unwrap();
    assert_eq!(
        outcome.action().unwrap(),
        Action::Tx,
        "sent back to the server"
    );
    let out = &outcome.output;
    assert_eq!(
        (&out[..6], &out[6..12]),
        (&MAC_CLIENT[..], &MAC_GUARD[..]),
        "MACs swapped"
    );
    let tcp = assert_checksums(&out[14..]);
    assert!(tcp.ack && !tcp.syn);
    assert_eq!(
        (tcp.source_port, tcp.destination_port),
        (CLIENT_PORT, SERVER_PORT)
    );
    assert_eq!(tcp.sequence_number, CLIENT_ISN + 1);
    assert_eq!(tcp.acknowledgment_number, SERVER_ISN + 1);
    assert_eq!(
        tcp.window_size, 502,
        "the client's window in the server's scale"
    );
    assert_eq!(options(&tcp), [O::Timestamp(CLIENT_TS, SERVER_TS + 1000)]);
    assert_eq!(guard.counters().unwrap().get(Counter::TxBackendAck), 1);
}

#[test]
fn a_closed_tuple_is_reused_by_a_new_connection() {
    let mut guard = guard();
    let (cookie, _) = joined(&mut guard);
    // Both ends close and acknowledge each other's FIN.
    let server_fin = server_fin();
    passes(&mut guard, SERVER_PROGRAM, &server_fin);
    let client_fin = segment(
        true,
        CLIENT_ISN + 1,
        cookie.wrapping_add(2),
        F::FIN | F::ACK,
        500,
        &[],
        &[],
    );
    passes(
        &mut guard,
        synguard::dataplane::object::GUARD_PROGRAM,
        &client_fin,
    );
    let last_ack = segment(false, SERVER_ISN + 2, CLIENT_ISN + 2, F::ACK, 100, &[], &[]);
    passes(&mut guard, SERVER_PROGRAM, &last_ack);
    let flow = flow_of(&syn_v4(0));
    assert!(guard.flow(&flow).unwrap().unwrap().both_closed());
    // A late ACK of the old connection still goes through...
    let late = segment(
        true,
        CLIENT_ISN + 2,
        cookie.wrapping_add(2),
        F::ACK,
        500,
        &[],
        &[],
    );
    passes(
        &mut guard,
        synguard::dataplane::object::GUARD_PROGRAM,
        &late,
    );
    guard.events().unwrap();
    // ...and a new connection on the same tuple gets a cookie and replaces the old flow.
    let (new_cookie, new_tsval, _) = syn_ack_for(&mut guard, &syn_v4(0), 0);
    let third = third_ack(new_cookie, CLIENT_TS + 9, new_tsval.unwrap());
    let (backend_syn, _) = passes(
        &mut guard,
        synguard::dataplane::object::GUARD_PROGRAM,
        &third,
    );
    assert!(backend_syn.syn, "the new connection's SYN to the server");
    let entry = guard.flow(&flow).unwrap().unwrap();
    assert_eq!(
        (entry.guard_isn, entry.phase),
        (new_cookie, phase::AWAITING_BACKEND)
    );
    assert_eq!(
        guard.events().unwrap()[0].wire.kind,
        EventKind::Validated as u8
    );
}

/// The filter in front of the flows map: a flow the data plane recorded is found; an entry the
/// filter never saw (put into the map behind its back) is taken for no flow, so the map is not
/// even looked up, until the controller's rebuild from the map marks it; a rebuild after the
/// controller removed a flow forgets it.
#[test]
fn the_flows_filter_holds_what_the_map_holds_after_a_rebuild() {
    let mut guard = guard();
    let (recorded, unseen) = (syn_v4(0), syn_v4_from_port(CLIENT_PORT + 1));
    let (cookie, tsval, _) = syn_ack_for(&mut guard, &recorded, 0);
    let third = third_ack(cookie, CLIENT_TS, tsval.unwrap());
    passes(
        &mut guard,
        synguard::dataplane::object::GUARD_PROGRAM,
        &third,
    );
    let entry = guard.flow(&flow_of(&recorded)).unwrap().expect("recorded");
    guard
        .put_flow_unfiltered(&flow_of(&unseen), &entry)
        .unwrap();
    // A SYN of a flow waiting for the server is dropped; a SYN of no flow gets a cookie.
    let answer = |guard: &mut DataPlane, syn: &[u8]| {
        let before = guard.counters().unwrap();
        guard.run(syn).unwrap();
        let after = guard.counters().unwrap();
        [Counter::DropAwaitingBackend, Counter::TxSynCookie]
            .into_iter()
            .find(|&counter| after.get(counter) > before.get(counter))
            .expect("one of the two")
    };
    assert_eq!(answer(&mut guard, &recorded), Counter::DropAwaitingBackend);
    assert_eq!(
        answer(&mut guard, &unseen),
        Counter::TxSynCookie,
        "not in the filter: not looked up"
    );
    assert_eq!(guard.rebuild_flow_filter().unwrap(), 2);
    assert_eq!(answer(&mut guard, &recorded), Counter::DropAwaitingBackend);
    assert_eq!(answer(&mut guard, &unseen), Counter::DropAwaitingBackend);
    guard.remove_flow(&flow_of(&recorded)).unwrap();
    assert_eq!(guard.rebuild_flow_filter().unwrap(), 1);
    assert_eq!(answer(&mut guard, &recorded), Counter::TxSynCookie);
    assert_eq!(answer(&mut guard, &unseen), Counter::DropAwaitingBackend);
}
