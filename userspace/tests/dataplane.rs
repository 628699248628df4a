//! Data-plane tests: the real compiled XDP object, run on frames through BPF_PROG_TEST_RUN.
//! They need root (CAP_BPF): run them through `cargo xtask test`.

use std::cell::{Cell, RefCell};

use etherparse::{PacketBuilder, TcpOptionElement, VlanId};
use proptest::{
    prelude::*,
    test_runner::{Config, TestRunner},
};
use synguard::{object, privilege, prog_test_run::DataPlane};
use synguard_common::{
    counters::Counter,
    parse::parse_frame,
    verdict::{Action, classify},
};

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];
const CLIENT4: [u8; 4] = [198, 18, 1, 2];
const SERVER4: [u8; 4] = [198, 19, 1, 2];
const CLIENT6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const SERVER6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

fn guard() -> DataPlane {
    privilege::require_xdp_privileges("the data-plane tests")
        .expect("run the data-plane tests as root, e.g. through `cargo xtask test`");
    DataPlane::load(object::GUARD_PROGRAM).expect("loading the guard program")
}

fn syn_options() -> [TcpOptionElement; 5] {
    [
        TcpOptionElement::MaximumSegmentSize(1460),
        TcpOptionElement::SelectiveAcknowledgementPermitted,
        TcpOptionElement::Timestamp(7, 0),
        TcpOptionElement::Noop,
        TcpOptionElement::WindowScale(7),
    ]
}

fn syn_v4(vlans: usize) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(MAC_A, MAC_B);
    let id = VlanId::try_new(7).unwrap();
    let ip = match vlans {
        0 => eth.ipv4(CLIENT4, SERVER4, 64),
        1 => eth.single_vlan(id).ipv4(CLIENT4, SERVER4, 64),
        _ => eth.double_vlan(id, id).ipv4(CLIENT4, SERVER4, 64),
    };
    let mut out = Vec::new();
    ip.tcp(40000, 80, 1, 64240)
        .syn()
        .options(&syn_options())
        .unwrap()
        .write(&mut out, &[])
        .unwrap();
    out
}

fn syn_v6() -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv6(CLIENT6, SERVER6, 64)
        .tcp(40000, 80, 1, 64240)
        .syn()
        .options(&syn_options())
        .unwrap()
        .write(&mut out, &[])
        .unwrap();
    out
}

fn udp_v4() -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(CLIENT4, SERVER4, 64)
        .udp(5353, 53)
        .write(&mut out, b"query")
        .unwrap();
    out
}

fn arp() -> Vec<u8> {
    let mut frame = vec![0u8; 42];
    frame[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    frame
}

fn with(mut frame: Vec<u8>, at: usize, bytes: &[u8]) -> Vec<u8> {
    frame[at..at + bytes.len()].copy_from_slice(bytes);
    frame
}

/// (name, frame, expected action, expected reason)
fn table() -> Vec<(&'static str, Vec<u8>, Action, Counter)> {
    let tcp4 = 14 + 20;
    vec![
        ("ipv4 syn", syn_v4(0), Action::Pass, Counter::PassTcp),
        ("802.1Q syn", syn_v4(1), Action::Pass, Counter::PassTcp),
        ("QinQ syn", syn_v4(2), Action::Pass, Counter::PassTcp),
        ("ipv6 syn", syn_v6(), Action::Pass, Counter::PassTcp),
        ("udp", udp_v4(), Action::Pass, Counter::PassOtherProtocol),
        ("arp", arp(), Action::Pass, Counter::PassNonIp),
        (
            "ipv4 first fragment",
            with(syn_v4(0), 14 + 6, &[0x20, 0]),
            Action::Pass,
            Counter::PassFragment,
        ),
        (
            "ihl 4",
            with(syn_v4(0), 14, &[0x44]),
            Action::Drop,
            Counter::DropBadIpv4HeaderLength,
        ),
        (
            "ip version 6 in an ipv4 ethertype",
            with(syn_v4(0), 14, &[0x65]),
            Action::Drop,
            Counter::DropBadIpVersion,
        ),
        (
            "ipv4 total length past the frame",
            with(syn_v4(0), 14 + 2, &[0x05, 0xdc]),
            Action::Drop,
            Counter::DropBadIpLength,
        ),
        (
            "tcp doff 4",
            with(syn_v4(0), tcp4 + 12, &[0x40]),
            Action::Drop,
            Counter::DropBadTcpDataOffset,
        ),
        (
            "tcp option running past the header",
            with(syn_v4(0), tcp4 + 21, &[40]),
            Action::Drop,
            Counter::DropBadTcpOptions,
        ),
        (
            "tcp option of length 0",
            with(syn_v4(0), tcp4 + 21, &[0]),
            Action::Drop,
            Counter::DropBadTcpOptions,
        ),
        (
            "truncated tcp header",
            {
                let frame = syn_v4(0);
                let cut = tcp4 + 10;
                with(
                    frame[..cut].to_vec(),
                    14 + 2,
                    &((cut - 14) as u16).to_be_bytes(),
                )
            },
            Action::Drop,
            Counter::DropTruncatedTcp,
        ),
        (
            "truncated ipv4 header",
            syn_v4(0)[..14 + 12].to_vec(),
            Action::Drop,
            Counter::DropTruncatedIp,
        ),
        (
            "three vlan tags",
            {
                let mut frame = syn_v4(2);
                frame.splice(22..22, [0x81, 0x00, 0x00, 0x07]);
                with(frame, 20, &[0x81, 0x00])
            },
            Action::Drop,
            Counter::DropTooManyVlanTags,
        ),
    ]
}

#[test]
fn every_frame_class_gets_its_verdict_and_counter() {
    for (name, frame, action, reason) in table() {
        let mut guard = guard();
        let outcome = guard.run(&frame).unwrap();
        assert_eq!(outcome.action().unwrap(), action, "{name}");
        // This version never rewrites: the frame leaves as it came.
        assert_eq!(outcome.output, frame, "{name}: frame modified");
        let counters = guard.counters().unwrap();
        assert_eq!(counters.get(Counter::Seen), 1, "{name}");
        assert_eq!(counters.get(reason), 1, "{name}: {}", reason.name());
        let (taken, not_taken) = match action {
            Action::Pass => (Counter::Passed, Counter::Dropped),
            Action::Drop => (Counter::Dropped, Counter::Passed),
        };
        assert_eq!(counters.get(taken), 1, "{name}");
        assert_eq!(counters.get(not_taken), 0, "{name}");
    }
}

#[test]
fn family_and_vlan_counters() {
    let mut guard = guard();
    for frame in [syn_v4(0), syn_v4(1), syn_v4(2), syn_v6(), arp()] {
        guard.run(&frame).unwrap();
    }
    let counters = guard.counters().unwrap();
    assert_eq!(counters.get(Counter::Ipv4), 3);
    assert_eq!(counters.get(Counter::Ipv6), 1);
    assert_eq!(counters.get(Counter::VlanTagged), 2);
    assert_eq!(counters.get(Counter::Seen), 5);
}

/// The kernel and the host run the same parser: on arbitrary and corrupted frames, they must
/// reach the same verdict, and the program must never fault (XDP_ABORTED) or rewrite.
#[test]
fn kernel_agrees_with_host_on_malformed_frames() {
    // The runner takes an `Fn`: the program and the count are shared through cells.
    let guard = RefCell::new(guard());
    let runs = Cell::new(0u64);
    let seeds = [syn_v4(0), syn_v4(2), syn_v6(), udp_v4()];
    let strategy = (
        0usize..seeds.len(),
        proptest::collection::vec((0usize..100, any::<u8>()), 1..4),
        proptest::option::of(0usize..80),
    );
    let mut runner = TestRunner::new(Config {
        cases: 2000,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |(seed, edits, cut)| {
            let mut frame = seeds[seed].clone();
            for (at, value) in edits {
                let at = at % frame.len();
                frame[at] = value;
            }
            // Keep at least an Ethernet header: BPF_PROG_TEST_RUN refuses shorter input.
            if let Some(cut) = cut {
                frame.truncate(frame.len().saturating_sub(cut).max(14));
            }
            let outcome = guard.borrow_mut().run(&frame).unwrap();
            runs.set(runs.get() + 1);
            let expected = classify(&parse_frame(&frame[..]));
            prop_assert_eq!(outcome.action().unwrap(), expected.action);
            prop_assert_eq!(&outcome.output, &frame);
            Ok(())
        })
        .unwrap();
    let counters = guard.borrow().counters().unwrap();
    assert_eq!(counters.get(Counter::Seen), runs.get());
    assert_eq!(
        counters.get(Counter::Passed) + counters.get(Counter::Dropped),
        runs.get()
    );
    // The corpus must exercise both verdicts, or the agreement means little.
    assert!(counters.get(Counter::Passed) > 100 && counters.get(Counter::Dropped) > 100);
}

#[test]
fn lab_peer_program_passes_everything() {
    privilege::require_xdp_privileges("the data-plane tests").unwrap();
    let mut peer = DataPlane::load(object::PEER_PASS_PROGRAM).unwrap();
    for frame in [syn_v4(0), arp(), with(syn_v4(0), 14, &[0x44])] {
        assert_eq!(peer.run(&frame).unwrap().action().unwrap(), Action::Pass);
    }
}
