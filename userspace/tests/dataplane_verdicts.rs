//! Data-plane tests: the real compiled XDP object, run on frames through BPF_PROG_TEST_RUN.
//! They need root (CAP_BPF): run them through `cargo xtask test`.

use std::cell::{Cell, RefCell};

use etherparse::PacketBuilder;
use proptest::{
    prelude::*,
    test_runner::{Config, TestRunner},
};
use synguard::{dataplane::object, dataplane::privilege, dataplane::test_run::DataPlane, lab};
use synguard_common::{
    counters::Counter,
    maps::FloodPacing,
    parse::parse_frame,
    test_frames::{
        MAC_CLIENT, MAC_GUARD, SERVER_PORT, SERVER4, arp, assert_checksums, patched, syn_v4,
        syn_v6, tcp_v4_with_flags, udp_v4,
    },
    verdict::{Action, classify},
};

fn guard() -> DataPlane {
    privilege::require_xdp_privileges("the data-plane tests")
        .expect("run the data-plane tests as root, e.g. through `cargo xtask test`");
    DataPlane::load(object::GUARD_PROGRAM).expect("loading the guard program")
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
            patched(syn_v4(0), 14 + 6, &[0x20, 0]),
            Action::Pass,
            Counter::PassFragment,
        ),
        (
            "ihl 4",
            patched(syn_v4(0), 14, &[0x44]),
            Action::Drop,
            Counter::DropBadIpv4HeaderLength,
        ),
        (
            "ip version 6 in an ipv4 ethertype",
            patched(syn_v4(0), 14, &[0x65]),
            Action::Drop,
            Counter::DropBadIpVersion,
        ),
        (
            "ipv4 total length past the frame",
            patched(syn_v4(0), 14 + 2, &[0x05, 0xdc]),
            Action::Drop,
            Counter::DropBadIpLength,
        ),
        (
            "tcp doff 4",
            patched(syn_v4(0), tcp4 + 12, &[0x40]),
            Action::Drop,
            Counter::DropBadTcpDataOffset,
        ),
        (
            "tcp option running past the header",
            patched(syn_v4(0), tcp4 + 21, &[40]),
            Action::Drop,
            Counter::DropBadTcpOptions,
        ),
        (
            "tcp option of length 0",
            patched(syn_v4(0), tcp4 + 21, &[0]),
            Action::Drop,
            Counter::DropBadTcpOptions,
        ),
        (
            "truncated tcp header",
            {
                let frame = syn_v4(0);
                let cut = tcp4 + 10;
                patched(
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
            "SYN+FIN",
            tcp_v4_with_flags(0x03, 80),
            Action::Drop,
            Counter::DropBadTcpFlags,
        ),
        (
            "no flags at all",
            tcp_v4_with_flags(0, 80),
            Action::Drop,
            Counter::DropBadTcpFlags,
        ),
        (
            "three vlan tags",
            {
                let mut frame = syn_v4(2);
                frame.splice(22..22, [0x81, 0x00, 0x00, 0x07]);
                patched(frame, 20, &[0x81, 0x00])
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
        // Without protected services nothing is rewritten: the frame leaves as it came.
        assert_eq!(outcome.output, frame, "{name}: frame modified");
        let counters = guard.counters().unwrap();
        assert_eq!(counters.get(Counter::Seen), 1, "{name}");
        assert_eq!(counters.get(reason), 1, "{name}: {}", reason.name());
        for (each, counter) in [
            (Action::Pass, Counter::Passed),
            (Action::Drop, Counter::Dropped),
            (Action::Tx, Counter::Transmitted),
        ] {
            assert_eq!(counters.get(counter), u64::from(each == action), "{name}");
        }
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
    let mut peer = DataPlane::load_lab(lab::PEER_PASS_PROGRAM).unwrap();
    for frame in [syn_v4(0), arp(), patched(syn_v4(0), 14, &[0x44])] {
        assert_eq!(peer.run(&frame).unwrap().action().unwrap(), Action::Pass);
    }
}

/// The lab's live-frames flood generator, loaded with a SYN as its template.
fn flood_generator() -> (DataPlane, Vec<u8>) {
    privilege::require_xdp_privileges("the data-plane tests").unwrap();
    let mut generator = DataPlane::load_lab(lab::LAB_FLOOD_PROGRAM).unwrap();
    let mut template = Vec::new();
    PacketBuilder::ethernet2(MAC_CLIENT, MAC_GUARD)
        .ipv4([198, 18, 128, 0], SERVER4, 64)
        .tcp(40000, SERVER_PORT, 1, 64240)
        .syn()
        .write(&mut template, &[])
        .unwrap();
    generator
        .set_flood_template(&template.clone().try_into().unwrap())
        .unwrap();
    (generator, template)
}

/// The lab's live-frames flood generator writes its whole template over whatever the page
/// held (a recycled page holds the receiver's leftovers), with a fresh port and sequence
/// number each run and both checksums valid, and redirects it.
#[test]
fn the_lab_flood_generator_rewrites_its_template_with_valid_checksums() {
    let (mut generator, template) = flood_generator();
    let leftovers = vec![0xa5u8; template.len()];
    let mut ports = std::collections::BTreeSet::new();
    for _ in 0..16 {
        let outcome = generator.run(&leftovers).unwrap();
        assert_eq!(outcome.action().unwrap(), Action::Redirect);
        let out = &outcome.output;
        assert_eq!(
            &out[..34],
            &template[..34],
            "Ethernet and IPv4 as the template's"
        );
        let tcp = assert_checksums(&out[14..]);
        assert!(tcp.syn && !tcp.ack);
        assert_eq!(tcp.destination_port, SERVER_PORT);
        ports.insert(tcp.source_port);
    }
    assert!(ports.len() > 8, "random source ports: {ports:?}");
}

/// Paced, the generator sends a burst of 64 frames, then waits for each frame's slot, one per
/// 1/rate seconds; a frame whose slot is too far ahead drops.
#[test]
fn the_paced_lab_flood_generator_sends_its_burst_then_its_rate() {
    let (mut generator, template) = flood_generator();
    let run = |generator: &mut DataPlane, frames: usize| -> (usize, std::time::Duration) {
        let started = std::time::Instant::now();
        let sent = (0..frames)
            .filter(|_| {
                let action = generator.run(&template).unwrap().action().unwrap();
                assert!(
                    matches!(action, Action::Redirect | Action::Drop),
                    "{action:?}"
                );
                action == Action::Redirect
            })
            .count();
        (sent, started.elapsed())
    };
    let burst = FloodPacing::BURST as usize;
    // 100k frames/s: every slot is near enough to wait for, so every frame goes, 10 us apart.
    generator.set_flood_rate(100_000).unwrap();
    let (sent, took) = run(&mut generator, burst + 101);
    assert_eq!(sent, burst + 101, "all sent");
    assert!(took >= std::time::Duration::from_micros(1_000), "{took:?}");
    // 1,000 frames/s: after the burst, a slot 1 ms ahead is too far to wait for.
    generator.set_flood_rate(1_000).unwrap();
    let (sent, took) = run(&mut generator, burst + 100);
    let later_slots = took.as_millis() as usize + 1;
    assert!(
        (burst + 1..=burst + 1 + later_slots).contains(&sent),
        "{sent} sent in {took:?}"
    );
    // Unpaced again: every frame goes.
    generator.set_flood_rate(0).unwrap();
    assert_eq!(run(&mut generator, 100).0, 100);
}

#[test]
fn every_map_the_programs_keep_state_in_is_pinned_for_restarts() {
    privilege::require_xdp_privileges("the data-plane tests")
        .expect("run the data-plane tests as root, e.g. through `cargo xtask test`");
    let ebpf = object::load_sized(log::LevelFilter::Off, 1024).unwrap();
    // Globals (.rodata, .bss) are set at each load; aya-log's ring belongs to the loader; the
    // lab flood generator's template and pace belong to no guard program.
    let unpinned: Vec<&str> = ebpf
        .maps()
        .map(|(name, _)| name)
        .filter(|name| !name.starts_with('.') && *name != "AYA_LOGS")
        .filter(|name| {
            ![
                synguard_common::maps::LAB_FLOOD_TEMPLATE_MAP,
                synguard_common::maps::LAB_FLOOD_PACING_MAP,
            ]
            .contains(name)
        })
        .filter(|name| !synguard::dataplane::persist::PINNED_MAPS.contains(name))
        .collect();
    assert!(
        unpinned.is_empty(),
        "not in persist::PINNED_MAPS: {unpinned:?}"
    );
}
