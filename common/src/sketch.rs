//! The gate in front of the per-source counters: a count-min sketch of recent segments per
//! source (small counters, per CPU, cleared by the controller every policy interval). A source
//! gets an entry in the per-source map only once both its cells reach the gate, so a
//! random-source flood, where each source sends a segment or two, never pays for an LRU insert
//! (which costs as much as the cookie itself), nor even for a lookup in the per-source map (a
//! cache miss per SYN in a flood); a source that sends more is counted from then on. The
//! sketch only overestimates, so no heavy source stays out; the controller seeds the sources
//! it already tracks into each new interval, so they stay counted.
//!
//! Both cells of a source lie in one 16-byte group: one cache miss per segment, not two (a
//! blocked count-min sketch; the cells per source and in all are as with two rows).

/// Cells per block (one per-CPU array entry). Cells are bytes: the gate is at most 32, and
/// the whole sketch (256 KiB per CPU) stays mostly in the guard's core's cache.
pub const SKETCH_BLOCK_CELLS: usize = 8192;
/// Blocks in the sketch map: 262,144 cells in all.
pub const SKETCH_BLOCKS: u32 = 32;
/// Cells per group: a source's two cells are in the same one.
const GROUP_CELLS: usize = 16;
const GROUPS_PER_BLOCK: usize = SKETCH_BLOCK_CELLS / GROUP_CELLS;
const GROUP_BITS: u32 = (SKETCH_BLOCKS as usize * GROUPS_PER_BLOCK).trailing_zeros();

/// One entry of the sketch map.
pub type SketchBlock = [u8; SKETCH_BLOCK_CELLS];

/// Where a source counts: its block, and its two (distinct) cells in that block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SketchPlace {
    pub block: u32,
    pub cells: [usize; 2],
}

/// Where an address counts. Two multiplicative hashes of the address folded to 32 bits: the
/// first picks one of the 16,384 groups, the second two cells in it.
#[inline(always)]
pub fn sketch_place(addr: &[u8; 16]) -> SketchPlace {
    let word = |i: usize| u32::from_le_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    let folded =
        word(0) ^ word(4).rotate_left(7) ^ word(8).rotate_left(13) ^ word(12).rotate_left(19);
    let group = (folded.wrapping_mul(0x9e37_79b1) >> (32 - GROUP_BITS)) as usize;
    let pick = (folded ^ 0x5bd1_e995).wrapping_mul(0x85eb_ca6b);
    let first = (pick >> 28) as usize;
    let mut second = ((pick >> 24) & 0xf) as usize;
    if second == first {
        second ^= 1;
    }
    let base = (group % GROUPS_PER_BLOCK) * GROUP_CELLS;
    SketchPlace {
        block: (group / GROUPS_PER_BLOCK) as u32,
        cells: [base + first, base + second],
    }
}

/// Counts one segment in the source's two cells of `block`; true once both reach `gate`
/// (a gate of 0 lets every source through; cells saturate at 255, which passes any gate).
#[inline(always)]
pub fn count_and_pass(block: &mut SketchBlock, cells: [usize; 2], gate: u16) -> bool {
    // The masks keep the indexes provably in range for the verifier.
    let (first, second) = (cells[0] % SKETCH_BLOCK_CELLS, cells[1] % SKETCH_BLOCK_CELLS);
    block[first] = block[first].saturating_add(1);
    block[second] = block[second].saturating_add(1);
    let gate = gate.min(u8::MAX as u16) as u8;
    block[first] >= gate && block[second] >= gate
}

/// Marks a source the per-source map already holds as past any gate in a fresh interval's
/// `blocks` (the controller does this when it clears the sketch).
pub fn seed_tracked(blocks: &mut [SketchBlock], addr: &[u8; 16]) {
    let place = sketch_place(addr);
    if let Some(block) = blocks.get_mut(place.block as usize) {
        for cell in place.cells {
            block[cell] = u8::MAX;
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> [u8; 16] {
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d]
    }

    fn fresh() -> std::vec::Vec<SketchBlock> {
        std::vec![[0u8; SKETCH_BLOCK_CELLS]; SKETCH_BLOCKS as usize]
    }

    fn count(sketch: &mut [SketchBlock], addr: &[u8; 16], gate: u16) -> bool {
        let place = sketch_place(addr);
        count_and_pass(&mut sketch[place.block as usize], place.cells, gate)
    }

    #[test]
    fn both_cells_are_distinct_and_in_one_group() {
        let mut groups = std::collections::BTreeSet::new();
        for i in 0..100_000u32 {
            let place = sketch_place(&v4(198, 18, (i >> 8) as u8, i as u8));
            let [a, b] = place.cells;
            assert!(
                place.block < SKETCH_BLOCKS && a < SKETCH_BLOCK_CELLS && b < SKETCH_BLOCK_CELLS
            );
            assert_ne!(a, b);
            assert_eq!(
                a / GROUP_CELLS,
                b / GROUP_CELLS,
                "one group: one cache miss"
            );
            groups.insert((place.block, a / GROUP_CELLS));
        }
        // 100,000 addresses over 16,384 groups: nearly all of them used (the hash spreads).
        assert!(groups.len() > 16_000, "{} groups used", groups.len());
    }

    /// A million random sources in one interval: about 7.6 per cell, so with a gate of 32
    /// (practically) none is let in; a source sending 32 segments always is.
    #[test]
    fn one_off_sources_stay_out_and_heavy_ones_get_in() {
        let mut sketch = fresh();
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut let_in = 0;
        for _ in 0..1_000_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let addr = v4(
                (state >> 8) as u8,
                (state >> 16) as u8,
                (state >> 24) as u8,
                state as u8,
            );
            let_in += count(&mut sketch, &addr, 32) as usize;
        }
        assert!(let_in < 10, "{let_in} one-off sources let in");
        let heavy = v4(198, 18, 1, 66);
        let passed = (0..32).filter(|_| count(&mut sketch, &heavy, 32)).count();
        assert!(passed >= 1, "a source with 32 segments gets in");
        let mut block = [0u8; SKETCH_BLOCK_CELLS];
        assert!(count_and_pass(&mut block, [0, 1], 0), "gate 0: everyone");
        for _ in 0..300 {
            count_and_pass(&mut block, [2, 3], 1000);
        }
        assert_eq!(block[2], u8::MAX, "cells saturate");
        assert!(
            count_and_pass(&mut block, [2, 3], 1000),
            "a saturated cell passes any gate"
        );
    }

    #[test]
    fn a_seeded_source_passes_at_once_and_others_do_not() {
        let mut sketch = fresh();
        let tracked = v4(198, 18, 1, 2);
        seed_tracked(&mut sketch, &tracked);
        assert!(
            count(&mut sketch, &tracked, 32),
            "tracked: counted from its first segment"
        );
        assert!(!count(&mut sketch, &v4(198, 18, 7, 9), 32));
    }
}
