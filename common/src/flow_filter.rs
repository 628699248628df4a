//! The filter in front of the flows map. Nearly every segment a flood sends (a random-source
//! SYN, a stray ACK, RST or FIN) belongs to no flow, and a flows-map lookup that misses still
//! walks a bucket of a megabyte-sized table: a cache miss per segment, the largest single cost
//! of a random-source SYN in `cargo xtask bench xdp`. The filter answers "no flow here" from a
//! small byte array instead; only segments whose slot is marked pay for the lookup.
//!
//! # Invariant
//!
//! Every flow in the flows map has its slot marked in the active half. The data plane marks a
//! flow's slot in both halves before it inserts the flow; nothing else inserts flows. Slots
//! are never unmarked one by one (flows leave the map by deletion or LRU eviction, unseen): a
//! marked slot of a gone flow only costs a lookup. The controller clears stale marks by
//! rebuilding the inactive half from the flows map and making it the active one (the steps,
//! and why they are safe, are in the controller's `flow_filter`).
//!
//! One byte per slot, not one bit: the data plane and the controller then only ever store 1s,
//! with no read-modify-write to race (the BPF target here has no atomic OR).

use crate::cookie::FlowKey;

/// Slots per half: 128 KiB, so the half a segment reads stays in the guard core's cache. At
/// 65,536 live flows (the flows map's default size) about 39 % of slots are marked after a
/// rebuild; a flood segment then skips the lookup 61 % of the time.
pub const FLOW_FILTER_SLOTS: usize = 1 << 17;
const SLOT_BITS: u32 = FLOW_FILTER_SLOTS.trailing_zeros();

/// One half of the filter (one entry of the filter map).
pub type FlowFilterHalf = [u8; FLOW_FILTER_SLOTS];

/// A flow's slot: a multiplicative hash of its key's words. Not keyed: a sender who crafts
/// tuples that land on marked slots only brings back the lookup the filter saves.
#[inline(always)]
pub fn flow_filter_slot(flow: &FlowKey) -> usize {
    let word = |b: &[u8; 16], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let client = word(&flow.client, 0)
        ^ word(&flow.client, 4)
        ^ word(&flow.client, 8)
        ^ word(&flow.client, 12);
    let server = word(&flow.server, 0)
        ^ word(&flow.server, 4)
        ^ word(&flow.server, 8)
        ^ word(&flow.server, 12);
    let ports = (flow.client_port as u64) << 16 | flow.server_port as u64;
    let mut h = ((client as u64) << 32 | server as u64) ^ ports.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h = (h ^ (h >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (h >> (64 - SLOT_BITS)) as usize
}

/// Marks `slot` in a half (the data plane does it in both before inserting a flow).
#[inline(always)]
pub fn mark(half: &mut FlowFilterHalf, slot: usize) {
    half[slot % FLOW_FILTER_SLOTS] = 1;
}

/// False when no flow of this slot can be in the flows map.
#[inline(always)]
pub fn may_hold(half: &FlowFilterHalf, slot: usize) -> bool {
    half[slot % FLOW_FILTER_SLOTS] != 0
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::{boxed::Box, collections::BTreeSet};

    use super::*;

    fn flow(client: [u8; 4], client_port: u16, server_port: u16) -> FlowKey {
        FlowKey::v4(client, client_port, [198, 19, 1, 2], server_port)
    }

    fn half() -> Box<FlowFilterHalf> {
        std::vec![0u8; FLOW_FILTER_SLOTS]
            .into_boxed_slice()
            .try_into()
            .unwrap()
    }

    /// The flows a flood or a busy server has differ in a port or an address byte: they must
    /// spread over the slots like random numbers (so the marked share is what the docs say).
    #[test]
    fn flows_differing_in_one_field_spread_over_the_slots() {
        let mut by_port = BTreeSet::new();
        let mut by_source = BTreeSet::new();
        for i in 0..65_536u32 {
            by_port.insert(flow_filter_slot(&flow([198, 18, 0, 2], i as u16, 80)));
            by_source.insert(flow_filter_slot(&flow(
                [198, 18, (i >> 8) as u8, i as u8],
                40_000,
                80,
            )));
        }
        // Random placement of 65,536 keys in 131,072 slots fills 1 - e^-0.5 = 39.3 % of them.
        for (what, slots) in [("ports", by_port.len()), ("sources", by_source.len())] {
            let share = slots as f64 / FLOW_FILTER_SLOTS as f64;
            assert!(
                (0.37..0.42).contains(&share),
                "{what}: {share:.3} of slots marked"
            );
        }
        let v6 = |last: u8| FlowKey {
            client: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last],
            family: 6,
            ..flow([0; 4], 1, 80)
        };
        let v6_slots: BTreeSet<usize> = (0..=255).map(|last| flow_filter_slot(&v6(last))).collect();
        assert!(
            v6_slots.len() > 250,
            "IPv6 hosts share slots: {}",
            v6_slots.len()
        );
    }

    #[test]
    fn a_marked_flow_may_be_held_and_an_unmarked_one_is_not() {
        let mut filter = half();
        let (held, other) = (
            flow([198, 18, 0, 2], 40_000, 80),
            flow([198, 18, 0, 2], 40_001, 80),
        );
        assert_ne!(flow_filter_slot(&held), flow_filter_slot(&other));
        mark(&mut filter, flow_filter_slot(&held));
        assert!(may_hold(&filter, flow_filter_slot(&held)));
        assert!(!may_hold(&filter, flow_filter_slot(&other)));
    }
}
