//! Data-plane tests of the SYN cookie path: the real compiled object through
//! BPF_PROG_TEST_RUN. SYN in, byte-checked SYN-ACK out; third ACKs validated or dropped.
//! They need root (CAP_BPF): run them through `cargo xtask test`.

use etherparse::{SlicedPacket, TcpOptionElement};
use synguard::{
    clock::cookie_counter_now, dataplane::privilege, dataplane::test_run::DataPlane,
    flows::events::Record, lab,
};
use synguard_common::{
    cookie::{self, CookieKeys, CookieOptions},
    counters::Counter,
    maps::{EarlyData, EventKind, FlowEvent, NO_WINDOW_SCALE},
    parse::TcpFlags as F,
    segment::SynAckSettings,
    siphash::SipKey,
    test_frames::*,
    verdict::Action,
};

mod support;

use support::{KEY_A, KEY_B, guard, keys, segment, syn_ack_for, zero_window_probe};

/// The options the host code recovers from a cookie the guard made for `syn`.
fn decode(syn: &[u8], cookie: u32) -> Result<CookieOptions, cookie::CookieError> {
    cookie::check(
        &keys(KEY_A, KEY_B),
        &flow_of(syn),
        CLIENT_ISN,
        cookie,
        cookie_counter_now(),
    )
}

#[test]
fn ipv4_syn_is_answered_with_a_byte_checked_cookie_syn_ack() {
    let mut guard = guard();
    let syn = syn_v4(0);
    let (cookie, tsval, options) = syn_ack_for(&mut guard, &syn, 0);
    assert_eq!(
        options,
        [
            TcpOptionElement::MaximumSegmentSize(1460),
            TcpOptionElement::SelectiveAcknowledgementPermitted,
            TcpOptionElement::Timestamp(tsval.unwrap(), 0x1122_3344),
            TcpOptionElement::WindowScale(7),
        ]
    );
    // The cookie is ours: the host code validates it and recovers the client's options.
    let decoded = decode(&syn, cookie).unwrap();
    assert_eq!(
        decoded,
        CookieOptions {
            mss: 1460,
            window_scale: Some(7),
            sack_permitted: true,
            ecn: false
        }
    );
    let counters = guard.counters().unwrap();
    assert_eq!(counters.get(Counter::TxSynCookie), 1);
    assert_eq!(counters.get(Counter::Transmitted), 1);
}

/// The benchmark's reference program answers the same SYN with a correct SYN-ACK too (the
/// kernel's cookie, MSS only), so `bench xdp` compares like with like.
#[test]
fn the_kernel_cookie_reference_answers_with_a_valid_syn_ack() {
    privilege::require_xdp_privileges("the data-plane tests").unwrap();
    let mut reference = DataPlane::load_lab(lab::BENCH_KERNEL_COOKIE_PROGRAM).unwrap();
    let outcome = reference.run(&syn_v4(0)).unwrap();
    assert_eq!(outcome.action().unwrap(), Action::Tx);
    let out = &outcome.output;
    assert_eq!((&out[0..6], &out[6..12]), (&MAC_CLIENT[..], &MAC_GUARD[..]));
    let tcp = assert_checksums(&out[14..]);
    assert_eq!((&out[26..30], &out[30..34]), (&SERVER4[..], &CLIENT4[..]));
    assert_eq!(
        (tcp.source_port, tcp.destination_port),
        (SERVER_PORT, CLIENT_PORT)
    );
    assert!(tcp.syn && tcp.ack && !tcp.rst && !tcp.fin);
    assert_eq!(tcp.acknowledgment_number, CLIENT_ISN.wrapping_add(1));
    assert_eq!(
        support::options(&tcp)[0],
        TcpOptionElement::MaximumSegmentSize(1460)
    );
}

#[test]
fn vlan_tagged_and_ipv6_syns_are_answered() {
    let mut guard = guard();
    for vlans in [1, 2] {
        let syn = syn_v4(vlans);
        let (cookie, _, _) = syn_ack_for(&mut guard, &syn, vlans);
        assert!(decode(&syn, cookie).is_ok());
    }
    let syn = syn_v6();
    let (cookie, _, options) = syn_ack_for(&mut guard, &syn, 0);
    assert_eq!(options[0], TcpOptionElement::MaximumSegmentSize(1440));
    assert!(decode(&syn, cookie).is_ok());
}

/// The records a data segment that validated leaves: the validation, then its payload.
fn validation_then_data(guard: &mut DataPlane) -> (FlowEvent, EarlyData) {
    let records = guard.records().unwrap();
    let [Record::Event(validated), Record::EarlyData(data)] = &records[..] else {
        panic!("expected the validation, then the data: {records:?}")
    };
    assert_eq!(validated.kind, EventKind::Validated);
    (validated.wire, **data)
}

/// The IPv6 client's first data in place of its third ACK: `body`, acknowledging `cookie`,
/// echoing our `tsval`.
fn ipv6_first_data(cookie: u32, tsval: u32, body: &[u8]) -> Vec<u8> {
    let mut request = Vec::new();
    etherparse::PacketBuilder::ethernet2(MAC_CLIENT, MAC_GUARD)
        .ipv6(CLIENT6, SERVER6, 64)
        .tcp(CLIENT_PORT, SERVER_PORT, CLIENT_ISN.wrapping_add(1), 502)
        .ack(cookie.wrapping_add(1))
        .psh()
        .options(&[TcpOptionElement::Timestamp(0x1122_4001, tsval)])
        .unwrap()
        .write(&mut request, body)
        .unwrap();
    request
}

#[test]
fn ipv6_first_data_validates_and_its_payload_goes_to_the_controller() {
    let mut guard = guard();
    let syn = syn_v6();
    let (cookie, tsval, _) = syn_ack_for(&mut guard, &syn, 0);
    let request = ipv6_first_data(cookie, tsval.unwrap(), b"GET /v6");
    let outcome = guard.run(&request).unwrap();
    assert_eq!(
        outcome.action().unwrap(),
        Action::Pass,
        "the SYN to the server"
    );
    let (_, data) = validation_then_data(&mut guard);
    assert_eq!(
        (data.flow, data.seq),
        (flow_of(&syn), CLIENT_ISN.wrapping_add(1))
    );
    assert_eq!(&data.payload[..data.len as usize], b"GET /v6");
}

#[test]
fn options_ride_in_the_cookie_without_timestamps() {
    let mut guard = guard();
    // A Windows-like SYN: MSS, window scale, SACK, no timestamps.
    let syn = {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ethernet2(MAC_CLIENT, MAC_GUARD)
            .ipv4(CLIENT4, SERVER4, 128)
            .tcp(CLIENT_PORT, SERVER_PORT, CLIENT_ISN, 64240)
            .syn()
            .options(&[
                TcpOptionElement::MaximumSegmentSize(1400),
                TcpOptionElement::Noop,
                TcpOptionElement::WindowScale(8),
                TcpOptionElement::Noop,
                TcpOptionElement::Noop,
                TcpOptionElement::SelectiveAcknowledgementPermitted,
            ])
            .unwrap()
            .write(&mut out, &[])
            .unwrap();
        out
    };
    let (cookie, tsval, options) = syn_ack_for(&mut guard, &syn, 0);
    assert_eq!(tsval, None);
    assert_eq!(
        options,
        [
            TcpOptionElement::MaximumSegmentSize(1460),
            TcpOptionElement::SelectiveAcknowledgementPermitted,
            TcpOptionElement::WindowScale(7),
        ]
    );
    let decoded = decode(&syn, cookie).unwrap();
    assert_eq!(
        decoded,
        CookieOptions {
            mss: 1400,
            window_scale: Some(8),
            sack_permitted: true,
            ecn: false
        }
    );
}

#[test]
fn unprotected_destinations_pass_untouched() {
    let mut guard = guard();
    let mut syn = syn_v4(0);
    syn[14 + 20 + 2..14 + 20 + 4].copy_from_slice(&81u16.to_be_bytes());
    let outcome = guard.run(&syn).unwrap();
    assert_eq!(outcome.action().unwrap(), Action::Pass);
    assert_eq!(outcome.output, syn);
}

#[test]
fn a_valid_third_ack_hands_the_flow_to_the_controller_once() {
    let mut guard = guard();
    let syn = syn_v4(0);
    let (cookie, tsval, _) = syn_ack_for(&mut guard, &syn, 0);
    let ack = ack_v4(
        CLIENT_ISN.wrapping_add(1),
        cookie.wrapping_add(1),
        Some((0x1122_4000, tsval.unwrap())),
    );
    let outcome = guard.run(&ack).unwrap();
    assert_eq!(
        outcome.action().unwrap(),
        Action::Pass,
        "rewritten into the SYN to the server (see tests/dataplane_flows.rs)"
    );
    assert_eq!(guard.counters().unwrap().get(Counter::CookieValid), 1);
    let events = support::wire_events(&mut guard);
    assert_eq!(events.len(), 1);
    let event = events[0];
    assert_eq!(event.flow, flow_of(&syn));
    assert_eq!(event.kind, EventKind::Validated as u8);
    assert_eq!(
        (event.entry.client_isn, event.entry.guard_isn),
        (CLIENT_ISN, cookie)
    );
    let o = event.entry.options;
    assert_eq!(
        (o.mss, o.window_scale, o.sack_permitted, o.ecn, o.timestamps),
        (1460, 7, 1, 0, 1)
    );
    assert_eq!((event.ts_val, event.ts_ecr), (0x1122_4000, tsval.unwrap()));
    assert_eq!(guard.flow(&flow_of(&syn)).unwrap(), Some(event.entry));
    // The same ACK again (a retransmission) belongs to a known flow: no second event.
    guard.run(&ack).unwrap();
    assert_eq!(
        guard.counters().unwrap().get(Counter::DropAwaitingBackend),
        1
    );
    assert!(guard.events().unwrap().is_empty());
}

#[test]
fn the_clients_first_data_or_window_probe_completes_a_handshake_whose_third_ack_was_lost() {
    let mut guard = guard();
    let syn = syn_v4(0);
    let (cookie, tsval, _) = syn_ack_for(&mut guard, &syn, 0);
    let request = segment(
        true,
        CLIENT_ISN.wrapping_add(1),
        cookie.wrapping_add(1),
        F::ACK | F::PSH,
        502,
        &[TcpOptionElement::Timestamp(0x1122_4001, tsval.unwrap())],
        b"GET / HTTP/1.1\r\nHost: lab\r\n\r\n",
    );
    let outcome = guard.run(&request).unwrap();
    assert_eq!(outcome.action().unwrap(), Action::Pass);
    assert_eq!(guard.counters().unwrap().get(Counter::CookieValid), 1);
    let tcp = assert_checksums(&outcome.output[14..]);
    assert!(tcp.syn && !tcp.ack && !tcp.psh, "the SYN to the server");
    assert_eq!(
        tcp.sequence_number, CLIENT_ISN,
        "the client's ISN, as its SYN had it"
    );
    assert_eq!(
        outcome.output.len(),
        14 + 20 + tcp.header_len(),
        "no payload in the SYN"
    );
    let (validated, data) = validation_then_data(&mut guard);
    assert_eq!(
        (data.flow, data.client_isn, data.guard_isn, data.seq),
        (
            flow_of(&syn),
            CLIENT_ISN,
            cookie,
            CLIENT_ISN.wrapping_add(1)
        ),
        "the data, held for the server"
    );
    assert_eq!(
        &data.payload[..data.len as usize],
        b"GET / HTTP/1.1\r\nHost: lab\r\n\r\n"
    );
    assert_eq!(
        (data.ts_val, data.ts_ecr, data.window),
        (0x1122_4001, tsval.unwrap(), 502)
    );
    let to_server = validated.entry.to_server;
    assert_eq!(
        (to_server.next_seq, to_server.bytes),
        (CLIENT_ISN.wrapping_add(1), 0),
        "the dropped data is not counted as received"
    );

    // A client whose third ACK was lost and that has nothing to send probes a zero window
    // (`--early-data 0`) one below its next sequence number: the cookie holds all the same.
    let mut guard = support::guard();
    let (cookie, tsval, _) = syn_ack_for(&mut guard, &syn, 0);
    let probe = zero_window_probe(
        cookie,
        &[TcpOptionElement::Timestamp(0x1122_4300, tsval.unwrap())],
    );
    let outcome = guard.run(&probe).unwrap();
    assert_eq!(outcome.action().unwrap(), Action::Pass);
    let tcp = assert_checksums(&outcome.output[14..]);
    assert!(tcp.syn && !tcp.ack);
    assert_eq!(tcp.sequence_number, CLIENT_ISN);
    let entry = guard.flow(&flow_of(&syn)).unwrap().expect("recorded");
    assert_eq!(
        (entry.client_isn, entry.to_server.next_seq),
        (CLIENT_ISN, CLIENT_ISN.wrapping_add(1))
    );

    // Data acknowledging no cookie is an ACK flood like any other.
    let mut guard = support::guard();
    let stray = segment(true, 5, 0x1eed_beef, F::ACK | F::PSH, 100, &[], b"data");
    assert_eq!(guard.run(&stray).unwrap().action().unwrap(), Action::Drop);
    let counters = guard.counters().unwrap();
    assert_eq!(
        counters.get(Counter::DropCookieInvalid) + counters.get(Counter::DropCookieExpired),
        1
    );
}

#[test]
fn a_bare_ack_is_read_as_a_window_probe_only_while_a_zero_window_cookie_can_validate() {
    let syn = syn_v4(0);
    let now = cookie_counter_now();
    let zero_window = SynAckSettings {
        window: 0,
        ..SynAckSettings::default()
    };
    // The guard offered a zero window until three counters ago: every cookie that went out
    // with it has expired, so a bare ACK gets one reading.
    let mut guard = guard();
    guard.set_syn_ack_settings(&zero_window, now - 3).unwrap();
    guard
        .set_syn_ack_settings(&SynAckSettings::default(), now - 3)
        .unwrap();
    let (cookie, _, _) = syn_ack_for(&mut guard, &syn, 0);
    let probe = zero_window_probe(cookie, &[]);
    assert_eq!(guard.run(&probe).unwrap().action().unwrap(), Action::Drop);
    assert_eq!(
        guard.counters().unwrap().get(Counter::DropCookieInvalid),
        1,
        "no zero window to probe"
    );
    // The third ACK validates all the same.
    let third_ack = segment(
        true,
        CLIENT_ISN.wrapping_add(1),
        cookie.wrapping_add(1),
        F::ACK,
        502,
        &[],
        &[],
    );
    assert_eq!(
        guard.run(&third_ack).unwrap().action().unwrap(),
        Action::Pass
    );

    // The window closes again (`synguard set early-data 0`): probes are read again.
    let mut guard = support::guard();
    guard.set_syn_ack_settings(&zero_window, now - 3).unwrap();
    guard
        .set_syn_ack_settings(&SynAckSettings::default(), now - 3)
        .unwrap();
    let (cookie, _, _) = syn_ack_for(&mut guard, &syn, 0);
    guard.set_syn_ack_settings(&zero_window, now).unwrap();
    let probe = zero_window_probe(cookie, &[]);
    assert_eq!(guard.run(&probe).unwrap().action().unwrap(), Action::Pass);
    assert_eq!(guard.counters().unwrap().get(Counter::CookieValid), 1);
}

#[test]
fn forged_stale_and_wrong_key_acks_are_dropped() {
    let mut guard = guard();
    let flow = flow_of(&syn_v4(0));
    let options = CookieOptions {
        mss: 1460,
        window_scale: None,
        sack_permitted: false,
        ecn: false,
    };
    let now = cookie_counter_now();
    let cases = [
        // Current counter bits, so only the MAC can refuse it.
        (
            "forged",
            (now & 3) << 30 | 0x1eed_1234,
            Counter::DropCookieInvalid,
        ),
        (
            "stale",
            cookie::make(&KEY_A, 0, &flow, CLIENT_ISN, now.wrapping_sub(2), &options),
            Counter::DropCookieExpired,
        ),
        (
            "wrong key",
            cookie::make(
                &SipKey { k0: 99, k1: 98 },
                0,
                &flow,
                CLIENT_ISN,
                now,
                &options,
            ),
            Counter::DropCookieInvalid,
        ),
    ];
    for (name, cookie, counter) in cases {
        let before = guard.counters().unwrap().get(counter);
        let outcome = guard
            .run(&ack_v4(
                CLIENT_ISN.wrapping_add(1),
                cookie.wrapping_add(1),
                None,
            ))
            .unwrap();
        assert_eq!(outcome.action().unwrap(), Action::Drop, "{name}");
        assert_eq!(guard.counters().unwrap().get(counter), before + 1, "{name}");
    }
    assert!(guard.events().unwrap().is_empty());
    assert_eq!(guard.flow(&flow).unwrap(), None);
}

#[test]
fn cookies_survive_one_key_rotation_but_not_two() {
    let mut guard = guard();
    let syn = syn_v4(0);
    let (cookie, _, _) = syn_ack_for(&mut guard, &syn, 0);
    let ack = ack_v4(CLIENT_ISN.wrapping_add(1), cookie.wrapping_add(1), None);
    let key_c = SipKey { k0: 31, k1: 32 };
    guard
        .set_keys(&keys(key_c, SipKey { k0: 41, k1: 42 }))
        .unwrap();
    guard.run(&ack).unwrap();
    assert_eq!(
        guard.counters().unwrap().get(Counter::DropCookieInvalid),
        1,
        "A rotated out twice"
    );
    // C current in phase 1, A previous in phase 0 (where the cookie was made).
    guard.set_keys(&CookieKeys::new(key_c, KEY_A, 1)).unwrap();
    guard.run(&ack).unwrap();
    assert_eq!(
        guard.counters().unwrap().get(Counter::CookieValid),
        1,
        "A as the previous key"
    );
    let event = guard.events().unwrap()[0].wire;
    assert_eq!(event.entry.options.window_scale, 7);
    assert_ne!(event.entry.options.window_scale, NO_WINDOW_SCALE);
}

/// The cookie counter is TAI time, which guards sharing keys share; the data plane gets it
/// from its monotonic clock plus the offset the controller writes with the keys.
#[test]
fn the_cookie_counter_is_tai_time_through_the_offset_written_with_the_keys() {
    let mut guard = guard();
    let syn = syn_v4(0);
    let flow = flow_of(&syn);
    let check =
        |cookie, counter| cookie::check(&keys(KEY_A, KEY_B), &flow, CLIENT_ISN, cookie, counter);
    let (cookie, _, _) = syn_ack_for(&mut guard, &syn, 0);
    let now = cookie_counter_now();
    assert!(check(cookie, now).is_ok(), "made at TAI's counter");

    // The data plane's clock two counters ahead (as if the system clock had been stepped
    // after the keys were written): its cookies are two counters ahead too.
    let two_counters_ns = 2 * cookie::COUNTER_PERIOD_SECS * 1_000_000_000;
    guard
        .set_keys_with_clock_ahead(&keys(KEY_A, KEY_B), two_counters_ns)
        .unwrap();
    let (ahead, _, _) = syn_ack_for(&mut guard, &syn, 0);
    let now = cookie_counter_now();
    assert_eq!(check(ahead, now), Err(cookie::CookieError::Expired));
    assert!(check(ahead, now.wrapping_add(2)).is_ok());
    // And the ACK check reads the same clock: its own cookie passes, one of TAI's counter is
    // two counters old there.
    let ack_of = |cookie: u32| ack_v4(CLIENT_ISN.wrapping_add(1), cookie.wrapping_add(1), None);
    guard.run(&ack_of(cookie)).unwrap();
    assert_eq!(guard.counters().unwrap().get(Counter::DropCookieExpired), 1);
    guard.run(&ack_of(ahead)).unwrap();
    assert_eq!(guard.counters().unwrap().get(Counter::CookieValid), 1);
}

#[test]
fn without_keys_syns_are_dropped_not_answered() {
    privilege::require_xdp_privileges("the data-plane tests").unwrap();
    let mut guard = DataPlane::load(synguard::dataplane::object::GUARD_PROGRAM).unwrap();
    guard
        .configure(
            &CookieKeys::default(),
            &["198.19.1.2/32:80".parse().unwrap()],
        )
        .unwrap();
    assert_eq!(
        guard.run(&syn_v4(0)).unwrap().action().unwrap(),
        Action::Drop
    );
    assert_eq!(guard.counters().unwrap().get(Counter::DropNoConfig), 1);
}

#[test]
fn nonsense_flags_to_a_protected_service_are_dropped() {
    let mut guard = guard();
    for flags in [0x03u8, 0x06, 0x00, 0x29 /* FIN PSH URG */] {
        let outcome = guard.run(&tcp_v4_with_flags(flags, SERVER_PORT)).unwrap();
        assert_eq!(outcome.action().unwrap(), Action::Drop, "{flags:#x}");
    }
    assert_eq!(guard.counters().unwrap().get(Counter::DropBadTcpFlags), 4);
}

/// Corrupted SYNs and ACKs against a guard with protected services: no XDP_ABORTED, no fault,
/// and every SYN-ACK it does send carries valid checksums.
#[test]
fn malformed_frames_on_the_cookie_path_never_fault() {
    use proptest::{
        prelude::*,
        test_runner::{Config, TestRunner},
    };
    let guard = std::cell::RefCell::new(guard());
    let seeds = [
        syn_v4(0),
        syn_v4(1),
        syn_v6(),
        ack_v4(CLIENT_ISN.wrapping_add(1), 77, None),
    ];
    let mut runner = TestRunner::new(Config {
        cases: 1500,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(
                0usize..seeds.len(),
                proptest::collection::vec((0usize..100, any::<u8>()), 1..4),
            ),
            |(seed, edits)| {
                let mut frame = seeds[seed].clone();
                for (at, value) in edits {
                    let at = at % frame.len();
                    frame[at] = value;
                }
                let outcome = guard.borrow_mut().run(&frame).unwrap();
                let action = outcome.action().unwrap();
                if action == Action::Tx {
                    // Past the L2 header (untagged or tagged), checksums must hold.
                    let sliced = SlicedPacket::from_ethernet(&outcome.output).unwrap();
                    let l3_len = match sliced.net {
                        Some(etherparse::NetSlice::Ipv4(ip)) => ip.header().total_len() as usize,
                        Some(etherparse::NetSlice::Ipv6(ip)) => {
                            40 + ip.header().payload_length() as usize
                        }
                        other => panic!("a Tx frame that is not IP: {other:?}"),
                    };
                    let out = &outcome.output;
                    assert_checksums(&out[out.len() - l3_len..]);
                }
                Ok(())
            },
        )
        .unwrap();
    let counters = guard.borrow().counters().unwrap();
    assert_eq!(counters.get(Counter::Seen), 1500);
    assert!(
        counters.get(Counter::TxSynCookie) > 0,
        "the corpus must reach the SYN path"
    );
}

/// The frame with one bit of its TCP checksum field flipped (`l4`: where TCP starts).
fn wrong_checksum(frame: &[u8], l4: usize) -> Vec<u8> {
    let mut broken = frame.to_vec();
    broken[l4 + 16] ^= 0x01;
    broken
}

#[test]
fn syns_and_third_acks_with_a_wrong_tcp_checksum_get_no_answer() {
    let mut guard = guard();
    let dropped = |guard: &mut DataPlane, frame: &[u8], what: &str| {
        let before = guard.counters().unwrap().get(Counter::DropTcpChecksum);
        let outcome = guard.run(frame).unwrap();
        assert_eq!(outcome.action().unwrap(), Action::Drop, "{what}");
        assert_eq!(
            guard.counters().unwrap().get(Counter::DropTcpChecksum),
            before + 1,
            "{what}"
        );
        assert!(guard.records().unwrap().is_empty(), "{what}: no event");
    };
    for (syn, l4) in [(syn_v4(0), 14 + 20), (syn_v6(), 14 + 40)] {
        dropped(&mut guard, &wrong_checksum(&syn, l4), "a SYN");
        assert_eq!(guard.counters().unwrap().get(Counter::TxSynCookie), 0);
    }
    // A bare third ACK whose cookie holds.
    let syn = syn_v4(0);
    let (cookie, tsval, _) = syn_ack_for(&mut guard, &syn, 0);
    let ack = ack_v4(
        CLIENT_ISN.wrapping_add(1),
        cookie.wrapping_add(1),
        Some((0x1122_4000, tsval.unwrap())),
    );
    dropped(&mut guard, &wrong_checksum(&ack, 14 + 20), "a third ACK");
    assert_eq!(guard.flow(&flow_of(&syn)).unwrap(), None, "no flow");
    // The client's first data in its place, one payload bit flipped (IPv6).
    let syn = syn_v6();
    let (cookie, tsval, _) = syn_ack_for(&mut guard, &syn, 0);
    let request = ipv6_first_data(cookie, tsval.unwrap(), b"GET /checksum");
    let mut corrupted = request.clone();
    *corrupted.last_mut().unwrap() ^= 0x20;
    dropped(&mut guard, &corrupted, "first data");
    assert_eq!(guard.flow(&flow_of(&syn)).unwrap(), None, "no flow");
    // The same segments intact: validated, so the checksum alone dropped them.
    assert_eq!(guard.run(&request).unwrap().action().unwrap(), Action::Pass);
    let (_, data) = validation_then_data(&mut guard);
    assert_eq!(&data.payload[..data.len as usize], b"GET /checksum");
    assert_eq!(guard.run(&ack).unwrap().action().unwrap(), Action::Pass);
    assert_eq!(guard.counters().unwrap().get(Counter::CookieValid), 2);
}
