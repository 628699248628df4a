//! The pinned maps' layout is held to `MAP_LAYOUT_VERSION`: a build adopts (upgrades in place)
//! a running guard of the same version, so any change to a pinned map's key or value, or to a
//! ring record, must move the version. This test fails when one changes and the version does
//! not: move `MAP_LAYOUT_VERSION` and record the new fingerprint below.

use core::mem::{align_of, size_of};

use synguard_common::{
    checksum::PAYLOAD_SUM_BUF_LEN,
    cookie::{CookieKeys, FlowKey},
    counters::CounterBlock,
    flow_filter::FlowFilterHalf,
    maps::{
        AllowValue, BlockValue, EarlyData, FlowEntry, FlowEvent, ForgottenFlow, MAP_LAYOUT_VERSION,
        PolicySettings, ProtectedAddress, ProtectedPorts, STAGE_COUNT, ServiceConfig,
        ServiceCounters, SourceCounters, SourceKey,
    },
    parse::ParseScratch,
    segment::{SEGMENT_BUF_LEN, SynAckSettings},
    sketch::SketchBlock,
    token_bucket::TokenBucket,
};

/// Every type laid out in a pinned map or a ring record, by name: size and alignment.
fn layouts() -> Vec<(&'static str, usize, usize)> {
    macro_rules! of {
        ($($t:ty),* $(,)?) => { vec![$((stringify!($t), size_of::<$t>(), align_of::<$t>())),*] };
    }
    let mut layouts = of![
        CounterBlock,
        ParseScratch,
        [u8; SEGMENT_BUF_LEN],
        [u8; PAYLOAD_SUM_BUF_LEN],
        FlowEntry,
        CookieKeys,
        SynAckSettings,
        ProtectedAddress,
        ProtectedPorts,
        ServiceConfig,
        ServiceCounters,
        SourceKey,
        SourceCounters,
        BlockValue,
        AllowValue,
        SketchBlock,
        PolicySettings,
        FlowKey,
        FlowFilterHalf,
        FlowEvent,
        EarlyData,
        TokenBucket,
        ForgottenFlow,
    ];
    // The tail-call map's size is part of the layout too.
    layouts.push(("STAGES entries", STAGE_COUNT as usize, 4));
    layouts
}

fn fingerprint() -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, size, align) in layouts() {
        for byte in format!("{name}:{size}:{align};").bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

#[test]
fn the_map_layout_version_moves_with_the_layouts() {
    assert_eq!(
        (MAP_LAYOUT_VERSION, format!("{:016x}", fingerprint())),
        (3, "c6cd001f01ee8669".to_string()),
        "a pinned map's layout changed: move MAP_LAYOUT_VERSION and record the new \
         fingerprint here ({:?})",
        layouts()
    );
}
