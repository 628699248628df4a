//! The cookie scheme: roundtrip, binding to the flow, expiry, key rotation, forgery rate.

use proptest::prelude::*;
use synguard_common::{
    cookie::{
        CookieError, CookieKeys, CookieOptions, FlowKey, MSS_TABLE, check, check_ack, counter_at,
        epoch_key, make,
    },
    parse::{TcpFlags, TcpSegment, parse_tcp_frame},
    siphash::SipKey,
    tcp_options::TcpOptions,
    test_frames::{flow_of, syn_v4, syn_v6},
};

const KEY_A: SipKey = SipKey {
    k0: 0x0706_0504_0302_0100,
    k1: 0x0f0e_0d0c_0b0a_0908,
};
const KEY_B: SipKey = SipKey { k0: 1, k1: 2 };
const KEY_C: SipKey = SipKey { k0: 3, k1: 4 };

/// `current` live in phase 0, `previous` in phase 1.
fn keys(current: SipKey, previous: SipKey) -> CookieKeys {
    CookieKeys::new(current, previous, 0)
}

fn flow_strategy() -> impl Strategy<Value = FlowKey> {
    (
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        any::<u16>(),
        any::<u16>(),
        any::<bool>(),
    )
        .prop_map(|(mut client, mut server, client_port, server_port, v6)| {
            if !v6 {
                client[4..].fill(0);
                server[4..].fill(0);
            }
            FlowKey {
                client,
                server,
                client_port,
                server_port,
                family: if v6 { 6 } else { 4 },
                _pad: [0; 3],
            }
        })
}

fn options_strategy() -> impl Strategy<Value = CookieOptions> {
    (
        proptest::sample::select(MSS_TABLE.to_vec()),
        proptest::option::of(0u8..=14),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(mss, window_scale, sack_permitted, ecn)| CookieOptions {
            mss,
            window_scale,
            sack_permitted,
            ecn,
        })
}

proptest! {
    #[test]
    fn roundtrip_over_the_whole_option_space(
        flow in flow_strategy(), isn in any::<u32>(), counter in any::<u32>(),
        options in options_strategy(),
    ) {
        let cookie = make(&KEY_A, 0, &flow, isn, counter, &options);
        let keys = keys(KEY_A, KEY_B);
        prop_assert_eq!(check(&keys, &flow, isn, cookie, counter), Ok(options));
        prop_assert_eq!(check(&keys, &flow, isn, cookie, counter.wrapping_add(1)), Ok(options));
        prop_assert_eq!(check(&keys, &flow, isn, cookie, counter.wrapping_add(2)), Err(CookieError::Expired));
        prop_assert_eq!(check(&keys, &flow, isn, cookie, counter.wrapping_sub(1)), Err(CookieError::Expired));
    }

    #[test]
    fn a_cookie_fails_for_any_other_flow_or_isn(
        flow in flow_strategy(), isn in any::<u32>(), counter in any::<u32>(),
        options in options_strategy(), field in 0usize..6, flip in 1u8..=255, at in 0usize..16,
    ) {
        let cookie = make(&KEY_A, 0, &flow, isn, counter, &options);
        let mut other = flow;
        let mut other_isn = isn;
        match field {
            0 => other.client[at % if flow.family == 4 { 4 } else { 16 }] ^= flip,
            1 => other.server[at % if flow.family == 4 { 4 } else { 16 }] ^= flip,
            2 => other.client_port ^= flip as u16,
            3 => other.server_port ^= (flip as u16) << 8,
            4 => other_isn ^= flip as u32,
            _ => other.family = if flow.family == 4 { 6 } else { 4 },
        }
        prop_assert_eq!(check(&keys(KEY_A, KEY_A), &other, other_isn, cookie, counter), Err(CookieError::Invalid));
    }

    #[test]
    fn the_phase_bit_selects_the_key(
        flow in flow_strategy(), isn in any::<u32>(), counter in any::<u32>(),
        options in options_strategy(),
    ) {
        let cookie = make(&KEY_B, 1, &flow, isn, counter, &options);
        prop_assert!(check(&keys(KEY_A, KEY_B), &flow, isn, cookie, counter).is_ok());
        prop_assert_eq!(check(&keys(KEY_A, KEY_B), &flow, isn, cookie ^ (1 << 20), counter), Err(CookieError::Invalid));
    }

    #[test]
    fn altered_option_bits_fail(
        flow in flow_strategy(), isn in any::<u32>(), counter in any::<u32>(),
        options in options_strategy(), bit in 21u32..30,
    ) {
        let cookie = make(&KEY_A, 0, &flow, isn, counter, &options) ^ (1 << bit);
        prop_assert_eq!(check(&keys(KEY_A, KEY_A), &flow, isn, cookie, counter), Err(CookieError::Invalid));
    }
}

fn flow() -> FlowKey {
    flow_of(&syn_v4(0))
}

#[test]
fn previous_key_cookies_pass_until_rotated_out() {
    let options = CookieOptions::default();
    let cookie = make(&KEY_A, 0, &flow(), 7, 100, &options);
    // Rotation 1: B becomes current in phase 1; A, previous, stays in phase 0.
    assert!(check(&CookieKeys::new(KEY_B, KEY_A, 1), &flow(), 7, cookie, 100).is_ok());
    // Rotation 2: C takes phase 0; A is gone.
    assert_eq!(
        check(&CookieKeys::new(KEY_C, KEY_B, 0), &flow(), 7, cookie, 100),
        Err(CookieError::Invalid)
    );
}

#[test]
fn guards_sharing_a_master_secret_issue_interchangeable_cookies() {
    let master = SipKey::from_bytes(*b"shared by guards");
    let (box_a, box_b) = (epoch_key(&master, 42), epoch_key(&master, 42));
    assert_eq!(box_a, box_b);
    assert_ne!(epoch_key(&master, 42), epoch_key(&master, 43));
    assert_ne!(
        epoch_key(&master, 42),
        epoch_key(&SipKey::from_bytes(*b"another secret!!"), 42)
    );
    let cookie = make(&box_a, 0, &flow(), 1, 5, &CookieOptions::default());
    assert!(check(&keys(box_b, box_b), &flow(), 1, cookie, 5).is_ok());
}

#[test]
fn counters_step_every_64_seconds() {
    assert_eq!(counter_at(0), 0);
    assert_eq!(counter_at(63_999_999_999), 0);
    assert_eq!(counter_at(64_000_000_000), 1);
}

fn syn_with(options: TcpOptions, flags: u8) -> TcpSegment {
    TcpSegment {
        src_port: 1,
        dst_port: 2,
        seq: 3,
        ack: 0,
        flags: TcpFlags(flags),
        window: 0,
        header_len: 20,
        payload_len: 0,
        options,
    }
}

#[test]
fn syn_options_map_onto_what_a_cookie_carries() {
    let full = TcpOptions {
        mss: Some(1455),
        window_scale: Some(9),
        sack_permitted: true,
        timestamps: Some((1, 0)),
        ..TcpOptions::default()
    };
    let options = CookieOptions::from_syn(
        &syn_with(full, TcpFlags::SYN | TcpFlags::ECE | TcpFlags::CWR),
        false,
    );
    assert_eq!(
        options,
        CookieOptions {
            mss: 1452,
            window_scale: Some(9),
            sack_permitted: true,
            ecn: true
        }
    );
    // No options at all: RFC 9293 default MSS, no scaling, no SACK; ECE alone is no ECN request.
    let bare = CookieOptions::from_syn(
        &syn_with(TcpOptions::default(), TcpFlags::SYN | TcpFlags::ECE),
        false,
    );
    assert_eq!(
        bare,
        CookieOptions {
            mss: 536,
            window_scale: None,
            sack_permitted: false,
            ecn: false
        }
    );
    assert_eq!(
        CookieOptions::from_syn(&syn_with(TcpOptions::default(), TcpFlags::SYN), true).mss,
        1220
    );
    // Shifts above 14 count as 14 (RFC 7323 section 2.3); tiny MSS values floor at the table.
    let odd = TcpOptions {
        mss: Some(100),
        window_scale: Some(15),
        ..TcpOptions::default()
    };
    let options = CookieOptions::from_syn(&syn_with(odd, TcpFlags::SYN), false);
    assert_eq!((options.mss, options.window_scale), (536, Some(14)));
}

#[test]
fn ipv4_and_ipv6_flows_differ() {
    for frame in [syn_v4(0), syn_v6()] {
        let (packet, tcp) = parse_tcp_frame(&frame[..]).unwrap();
        let key = FlowKey::from_client_segment(&packet.addrs, &tcp);
        assert_eq!(key.family, if frame == syn_v6() { 6 } else { 4 });
    }
}

/// An ACK of `flow()` with `payload_len` bytes.
fn ack_with(seq: u32, ack: u32, payload_len: u16) -> TcpSegment {
    TcpSegment {
        seq,
        ack,
        flags: TcpFlags(TcpFlags::ACK),
        payload_len,
        ..syn_with(TcpOptions::default(), 0)
    }
}

#[test]
fn third_acks_first_data_and_zero_window_probes_echo_the_cookie() {
    let options = CookieOptions {
        mss: 1460,
        window_scale: Some(7),
        sack_permitted: true,
        ecn: false,
    };
    let isn = 7;
    let cookie = make(&KEY_A, 0, &flow(), isn, 100, &options);
    let keys = keys(KEY_A, KEY_B);
    for window_probes in [true, false] {
        let checked = |seq, payload| {
            check_ack(
                &keys,
                &flow(),
                &ack_with(seq, cookie + 1, payload),
                100,
                window_probes,
            )
        };
        assert_eq!(checked(isn + 1, 0), Ok((options, isn)), "the third ACK");
        assert_eq!(checked(isn + 1, 120), Ok((options, isn)), "the first data");
        assert_eq!(
            checked(isn, 120),
            Err(CookieError::Invalid),
            "data below the ISN + 1"
        );
        assert_eq!(checked(isn + 2, 0), Err(CookieError::Invalid));
        let probe = checked(isn, 0);
        if window_probes {
            assert_eq!(probe, Ok((options, isn)), "a probe: snd_una - 1");
        } else {
            assert_eq!(probe, Err(CookieError::Invalid), "no zero window to probe");
        }
    }
}

/// Every one of the 2^32 ACK numbers against one flow and ISN, split over the CPUs: those
/// `accepts` takes (every one of them a successful forgery for a blind guesser).
fn accepted_acks(accepts: impl Fn(u32) -> bool + Sync) -> Vec<u32> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let span = (1u64 << 32) / threads + 1;
    let accepts = &accepts;
    std::thread::scope(|scope| {
        let parts: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let end = ((t + 1) * span).min(1 << 32);
                    (t * span..end)
                        .map(|value| value as u32)
                        .filter(|&value| accepts(value))
                        .collect::<Vec<u32>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|part| part.join().unwrap())
            .collect()
    })
}

/// The documented bound, counted exactly: for one flow and ISN, each of the 2 accepted
/// counters, 2^9 option patterns and 2 phases has exactly one accepted MAC, so exactly 2^11
/// of the 2^32 ACK numbers pass (a blind guess: 2^-21), one per pattern of the bits above
/// the MAC.
#[test]
fn exactly_two_to_the_eleven_ack_numbers_pass_for_a_known_isn() {
    let (keys, flow) = (keys(KEY_A, KEY_B), flow());
    let accepted = accepted_acks(|cookie| check(&keys, &flow, 12345, cookie, 1000).is_ok());
    assert_eq!(accepted.len(), 1 << 11);
    let patterns: std::collections::BTreeSet<u32> =
        accepted.iter().map(|cookie| cookie >> 20).collect();
    assert_eq!(
        patterns.len(),
        1 << 11,
        "one MAC per counter, options and phase"
    );
    // The two live counters (1000 and 999: low bits 0 and 3) and nothing older.
    let counters: std::collections::BTreeSet<u32> = patterns.iter().map(|p| p >> 10).collect();
    assert_eq!(counters, [0, 3].into());
}

/// A bare ACK read as a third ACK only: exactly 2^11 pass; read also as a zero-window probe
/// (its ISN one higher) while our SYN-ACKs offer a zero window: exactly 2^12 (the two readings'
/// sets, disjoint for this key and flow), the documented 2^-20.
#[test]
fn a_blind_bare_ack_passes_exactly_as_documented_read_once_or_twice() {
    let (keys, flow) = (keys(KEY_A, KEY_B), flow());
    let read = |window_probes| {
        accepted_acks(|ack| {
            check_ack(&keys, &flow, &ack_with(12346, ack, 0), 1000, window_probes).is_ok()
        })
    };
    let (once, twice) = (read(false), read(true));
    assert_eq!(once.len(), 1 << 11);
    assert_eq!(twice.len(), 1 << 12);
    assert!(once.iter().all(|ack| twice.binary_search(ack).is_ok()));
}
