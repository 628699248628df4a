//! Data-plane tests of admission: blocked and allowed sources, the service modes (monitor,
//! auto, always) and a flow let straight through, and the per-source counters. The real
//! compiled programs through BPF_PROG_TEST_RUN; outputs byte-checked. They need root.

mod support;

use etherparse::TcpOptionElement as O;
use support::{KEY_A, KEY_B, keys, options, passes, segment, server_syn_ack, syn_ack_for};
use synguard::{
    clock::monotonic_coarse_ns,
    config::service::ProtectedService,
    dataplane::object::{GUARD_PROGRAM, SERVER_PROGRAM},
    dataplane::privilege,
    dataplane::test_run::DataPlane,
    policy::engine::source_key,
};
use synguard_common::{
    counters::Counter,
    maps::{COMPLETED_VOUCHES_FOR_SECS, EventKind, PolicySettings, SourceCounters, phase},
    parse::TcpFlags as F,
    test_frames::*,
    verdict::Action,
};

const SERVER_ISN: u32 = 0x7000_0000;

/// The fixture server's port 80 in the given mode (slot 1), port 81 always (slot 2), the
/// IPv6 fixture server always (slot 3).
fn services(mode: &str) -> Vec<ProtectedService> {
    [
        format!("198.19.1.0/24:80:{mode}"),
        "198.19.1.0/24:81".to_string(),
        "[2001:db8:1::/48]:80".to_string(),
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect()
}

fn guard_in(mode: &str) -> DataPlane {
    privilege::require_xdp_privileges("the data-plane tests")
        .expect("run the data-plane tests as root, e.g. through `cargo xtask test`");
    let mut guard = DataPlane::load(GUARD_PROGRAM).unwrap();
    guard
        .configure(&keys(KEY_A, KEY_B), &services(mode))
        .unwrap();
    guard
}

fn client_source() -> synguard_common::maps::SourceKey {
    source_key(std::net::IpAddr::from(CLIENT4), 1)
}

/// Runs `frame` and expects `action` counted under `reason`; returns the output.
fn expect(guard: &mut DataPlane, frame: &[u8], action: Action, reason: Counter) -> Vec<u8> {
    let before = guard.counters().unwrap().get(reason);
    let outcome = guard.run(frame).unwrap();
    assert_eq!(outcome.action().unwrap(), action, "{}", reason.name());
    assert_eq!(
        guard.counters().unwrap().get(reason),
        before + 1,
        "counted as {}",
        reason.name()
    );
    outcome.output
}

#[test]
fn a_blocked_source_drops_before_anything_else() {
    let mut guard = guard_in("always");
    guard.block(&"198.18.1.0/24".parse().unwrap()).unwrap();
    expect(&mut guard, &syn_v4(0), Action::Drop, Counter::DropBlocked);
    expect(&mut guard, &udp_v4(), Action::Drop, Counter::DropBlocked);
    let unprotected = tcp_v4_with_flags(F::ACK, 22);
    expect(&mut guard, &unprotected, Action::Drop, Counter::DropBlocked);
    expect(&mut guard, &syn_v6(), Action::Tx, Counter::TxSynCookie);
    // An allowed host inside the blocked prefix stays reachable.
    guard
        .allow(&"198.18.1.2/32".parse().unwrap(), false)
        .unwrap();
    expect(&mut guard, &syn_v4(0), Action::Tx, Counter::TxSynCookie);
}

#[test]
fn monitor_mode_passes_everything_untouched_and_counts() {
    let mut guard = guard_in("monitor");
    let syn = syn_v4(0);
    let out = expect(&mut guard, &syn, Action::Pass, Counter::PassMonitored);
    assert_eq!(out, syn, "not a byte changed");
    let stray_rst = tcp_v4_with_flags(F::RST, 80);
    let out = expect(&mut guard, &stray_rst, Action::Pass, Counter::PassMonitored);
    assert_eq!(out, stray_rst);
    let forged = ack_v4(CLIENT_ISN + 1, 0x1234_5678, None);
    expect(&mut guard, &forged, Action::Pass, Counter::PassMonitored);
    assert_eq!(
        guard.source_counters(&client_source()).unwrap(),
        SourceCounters {
            syns: 1,
            ..SourceCounters::default()
        }
    );
    // Port 81 of the same prefix is another service, in always mode.
    let mut syn81 = syn.clone();
    syn81[14 + 20 + 2..14 + 20 + 4].copy_from_slice(&81u16.to_be_bytes());
    syn81 = fix_checksums(syn81);
    expect(&mut guard, &syn81, Action::Tx, Counter::TxSynCookie);
}

/// Recomputes a TCP/IPv4 frame's checksums after a test patched it.
fn fix_checksums(frame: Vec<u8>) -> Vec<u8> {
    let (headers, payload) = {
        let sliced = etherparse::SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = sliced.net else {
            panic!("IPv4 expected")
        };
        let Some(etherparse::TransportSlice::Tcp(tcp)) = sliced.transport else {
            panic!("TCP expected")
        };
        (
            (ip.header().to_header(), tcp.to_header()),
            tcp.payload().to_vec(),
        )
    };
    let (mut ip, mut tcp) = headers;
    tcp.checksum = tcp.calc_checksum_ipv4(&ip, &payload).unwrap();
    ip.header_checksum = ip.calc_header_checksum();
    let mut out = frame[..14].to_vec();
    ip.write(&mut out).unwrap();
    tcp.write(&mut out).unwrap();
    out.extend_from_slice(&payload);
    out
}

#[test]
fn auto_mode_under_its_threshold_lets_the_flow_straight_through() {
    let mut guard = guard_in("auto");
    let syn = syn_v4(0);
    let out = expect(&mut guard, &syn, Action::Pass, Counter::PassAdmitted);
    assert_eq!(out, syn, "the client's own SYN goes to the server");
    let flow = flow_of(&syn);
    let entry = guard.flow(&flow).unwrap().expect("the flow is recorded");
    assert_eq!(entry.phase, phase::ADMITTED);
    assert_eq!(entry.admitted_directly, 1);
    assert_eq!(entry.client_isn, CLIENT_ISN);
    // A retransmitted SYN passes as well (the client's own retransmission).
    expect(&mut guard, &syn, Action::Pass, Counter::PassAdmitted);

    let syn_ack = server_syn_ack(SERVER_ISN, 0x5555_0000, 0x1122_3344);
    let outcome = guard.run_program(SERVER_PROGRAM, &syn_ack).unwrap();
    assert_eq!(outcome.action().unwrap(), Action::Pass);
    assert_eq!(
        outcome.output, syn_ack,
        "the server's SYN-ACK reaches the client as it is"
    );
    let entry = guard.flow(&flow).unwrap().unwrap();
    assert_eq!(entry.phase, phase::JOINED);
    assert_eq!((entry.server_isn, entry.seq_offset), (SERVER_ISN, 0));
    assert_eq!((entry.client_shift, entry.server_shift), (7, 9));

    // The third ACK and data go through untranslated (only the route may change the frame).
    let data = segment(
        true,
        CLIENT_ISN + 1,
        SERVER_ISN + 1,
        F::ACK,
        502,
        &[O::Noop, O::Noop, O::Timestamp(0x1122_3345, 0x5555_0000)],
        b"GET / HTTP/1.1\r\n\r\n",
    );
    let (tcp, payload) = passes(&mut guard, GUARD_PROGRAM, &data);
    assert_eq!(
        (
            tcp.sequence_number,
            tcp.acknowledgment_number,
            tcp.window_size
        ),
        (CLIENT_ISN + 1, SERVER_ISN + 1, 502)
    );
    assert_eq!(options(&tcp), [O::Timestamp(0x1122_3345, 0x5555_0000)]);
    assert_eq!(payload, b"GET / HTTP/1.1\r\n\r\n");
    let reply = segment(
        false,
        SERVER_ISN + 1,
        CLIENT_ISN + 19,
        F::ACK,
        500,
        &[],
        b"ok",
    );
    let (tcp, _) = passes(&mut guard, SERVER_PROGRAM, &reply);
    assert_eq!(
        (tcp.sequence_number, tcp.acknowledgment_number),
        (SERVER_ISN + 1, CLIENT_ISN + 19)
    );

    let events = support::wire_events(&mut guard);
    let kinds: Vec<(u8, u8)> = events.iter().map(|e| (e.kind, e.flags)).collect();
    assert_eq!(
        kinds,
        [
            (EventKind::Admitted as u8, F::SYN),
            (EventKind::Joined as u8, F::SYN | F::ACK),
            (EventKind::Control as u8, F::ACK),
        ],
        "the admission, the join, and the client's first segment (its third ACK)"
    );
    let counted = guard.source_counters(&client_source()).unwrap();
    assert_eq!((counted.syns, counted.cookies_sent), (2, 0));
}

#[test]
fn auto_mode_above_its_threshold_answers_with_cookies() {
    let mut guard = guard_in("auto");
    guard.set_cookies_on(1, &services("auto")[0], true).unwrap();
    let (cookie, _, _) = syn_ack_for(&mut guard, &syn_v4(0), 0);
    assert!(
        guard.flow(&flow_of(&syn_v4(0))).unwrap().is_none(),
        "no state for a SYN"
    );
    let forged = ack_v4(CLIENT_ISN + 1, cookie ^ 0x0100_0000, None);
    expect(
        &mut guard,
        &forged,
        Action::Drop,
        Counter::DropCookieInvalid,
    );
    let stray = tcp_v4_with_flags(F::FIN | F::ACK, 80);
    expect(&mut guard, &stray, Action::Drop, Counter::DropStrayFin);
    assert_eq!(
        guard.source_counters(&client_source()).unwrap(),
        SourceCounters {
            syns: 1,
            cookies_sent: 1,
            cookies_validated: 0,
            invalid_acks: 1,
            out_of_state: 1,
            ..SourceCounters::default()
        }
    );
    // Back under the threshold: straight through again.
    guard
        .set_cookies_on(1, &services("auto")[0], false)
        .unwrap();
    expect(&mut guard, &syn_v4(0), Action::Pass, Counter::PassAdmitted);
}

#[test]
fn auto_mode_answers_with_cookies_past_its_rate_before_the_controller_switches() {
    let mut guard = guard_in("auto=5");
    for port in CLIENT_PORT + 1..=CLIENT_PORT + 5 {
        expect(
            &mut guard,
            &syn_v4_from_port(port),
            Action::Pass,
            Counter::PassAdmitted,
        );
    }
    let over = syn_v4_from_port(CLIENT_PORT);
    let output = expect(&mut guard, &over, Action::Tx, Counter::TxSynCookie);
    assert_syn_ack(&output[14..]);
    assert!(
        guard.flow(&flow_of(&over)).unwrap().is_none(),
        "no state for the SYN past the rate"
    );
    // A retransmitted SYN of a flow already let through takes no token and stays its flow's.
    let retransmitted = syn_v4_from_port(CLIENT_PORT + 1);
    expect(
        &mut guard,
        &retransmitted,
        Action::Pass,
        Counter::PassAdmitted,
    );
    // The allowlist's bypass is not auto mode's to limit.
    guard
        .allow(&"198.18.1.2/32".parse().unwrap(), true)
        .unwrap();
    expect(
        &mut guard,
        &syn_v4_from_port(CLIENT_PORT + 6),
        Action::Pass,
        Counter::PassAdmitted,
    );
}

#[test]
fn an_allowlisted_source_with_bypass_skips_the_cookie() {
    let mut guard = guard_in("always");
    guard
        .allow(&"198.18.1.0/24".parse().unwrap(), false)
        .unwrap();
    expect(&mut guard, &syn_v4(0), Action::Tx, Counter::TxSynCookie);
    guard
        .allow(&"198.18.1.2/32".parse().unwrap(), true)
        .unwrap();
    expect(&mut guard, &syn_v4(0), Action::Pass, Counter::PassAdmitted);
}

/// A guard in `mode` whose SYN bucket per source holds three tokens and refills one a second.
fn guard_with_syn_bucket_of_three(mode: &str) -> DataPlane {
    let mut guard = guard_in(mode);
    let settings = PolicySettings {
        syn_rate: 1,
        syn_burst: 3,
        ..PolicySettings::default()
    };
    guard.set_policy_settings(&settings).unwrap();
    guard
}

/// Runs the fixture SYN and returns the third ACK that completes its handshake (not run).
fn third_ack_after_syn(guard: &mut DataPlane) -> Vec<u8> {
    let (cookie, tsval, _) = syn_ack_for(guard, &syn_v4(0), 0);
    let echoed = Some((0x1122_4000, tsval.unwrap()));
    ack_v4(CLIENT_ISN + 1, cookie.wrapping_add(1), echoed)
}

#[test]
fn syns_over_their_source_bucket_drop_at_once() {
    let mut guard = guard_with_syn_bucket_of_three("always");
    for _ in 0..3 {
        expect(&mut guard, &syn_v4(0), Action::Tx, Counter::TxSynCookie);
    }
    expect(&mut guard, &syn_v4(0), Action::Drop, Counter::DropSynRate);
    // Another source has its own bucket.
    expect(&mut guard, &syn_v6(), Action::Tx, Counter::TxSynCookie);
    let counted = guard.source_counters(&client_source()).unwrap();
    assert_eq!((counted.syns, counted.syns_over_rate), (4, 1));

    // Once one of its cookies validated, the source is a real host: SYNs in its name (maybe a
    // flood spoofing it) get cookies, not drops.
    let mut guard = guard_with_syn_bucket_of_three("always");
    let ack = third_ack_after_syn(&mut guard);
    expect(&mut guard, &ack, Action::Pass, Counter::CookieValid);
    for port in CLIENT_PORT + 1..=CLIENT_PORT + 10 {
        expect(
            &mut guard,
            &syn_v4_from_port(port),
            Action::Tx,
            Counter::TxSynCookie,
        );
    }

    // Monitor mode counts the excess and drops nothing.
    let mut guard = guard_with_syn_bucket_of_three("monitor");
    for _ in 0..5 {
        expect(&mut guard, &syn_v4(0), Action::Pass, Counter::PassMonitored);
    }
    let counted = guard.source_counters(&client_source()).unwrap();
    assert_eq!((counted.syns, counted.syns_over_rate), (5, 2));
}

#[test]
fn a_new_handshake_renews_a_lapsed_vouch() {
    let vouched_at = |guard: &DataPlane| {
        let at = guard.vouched_at(&client_source()).unwrap();
        at.expect("the source is in the vouched map")
    };
    let mut guard = guard_with_syn_bucket_of_three("always");
    let first_ack = third_ack_after_syn(&mut guard);
    expect(&mut guard, &first_ack, Action::Pass, Counter::CookieValid);
    let first = vouched_at(&guard);
    assert!(
        monotonic_coarse_ns().abs_diff(first) < 1_000_000_000,
        "vouched now"
    );

    // The vouch lapses; the same tuple's flow is gone (a later connection reuses it).
    let lapsed = first.saturating_sub(2 * COMPLETED_VOUCHES_FOR_SECS * 1_000_000_000);
    guard.set_vouched_at(&client_source(), lapsed).unwrap();
    guard.remove_flow(&flow_of(&syn_v4(0))).unwrap();
    let second_ack = third_ack_after_syn(&mut guard);
    expect(
        &mut guard,
        &syn_v4_from_port(CLIENT_PORT + 1),
        Action::Tx,
        Counter::TxSynCookie,
    );
    // Three SYNs took the burst: with the vouch lapsed, the bucket applies again.
    expect(
        &mut guard,
        &syn_v4_from_port(CLIENT_PORT + 2),
        Action::Drop,
        Counter::DropSynRate,
    );

    // The new handshake rewrites the time in place, and the source is vouched for again.
    expect(&mut guard, &second_ack, Action::Pass, Counter::CookieValid);
    let renewed = vouched_at(&guard);
    assert!(
        renewed >= first,
        "renewed at {renewed}, first vouched at {first}"
    );
    expect(
        &mut guard,
        &syn_v4_from_port(CLIENT_PORT + 3),
        Action::Tx,
        Counter::TxSynCookie,
    );
}

#[test]
fn a_source_gets_counters_once_it_passes_the_sketch_gate() {
    let mut guard = guard_in("always");
    guard
        .set_policy_settings(&PolicySettings {
            track_after: 3,
            ..PolicySettings::default()
        })
        .unwrap();
    let source = client_source();
    for _ in 0..2 {
        expect(&mut guard, &syn_v4(0), Action::Tx, Counter::TxSynCookie);
    }
    assert_eq!(
        guard.source_counters(&source).unwrap(),
        SourceCounters::default(),
        "two SYNs: not tracked yet"
    );
    for _ in 0..2 {
        expect(&mut guard, &syn_v4(0), Action::Tx, Counter::TxSynCookie);
    }
    let counted = guard.source_counters(&source).unwrap();
    assert_eq!(
        (counted.syns, counted.cookies_sent),
        (2, 2),
        "counted from the third SYN on"
    );
}
