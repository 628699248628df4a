//! The gate in front of the per-source counters: a count-min sketch of recent segments per
//! source (two rows of small counters, per CPU, zeroed by the controller every policy
//! interval). A source gets an entry in the per-source map only once both its cells reach the
//! gate, so a random-source flood, where each source sends a segment or two, never pays for an
//! LRU insert (which costs as much as the cookie itself); a source that sends more is counted
//! from then on. The sketch only overestimates, so no heavy source stays out.

/// Cells per block (one per-CPU array entry: a per-CPU value holds at most 32 KiB).
pub const SKETCH_BLOCK_CELLS: usize = 8192;
/// Blocks per row; the sketch map holds two rows.
pub const SKETCH_ROW_BLOCKS: u32 = 16;
pub const SKETCH_BLOCKS: u32 = 2 * SKETCH_ROW_BLOCKS;

/// One entry of the sketch map.
pub type SketchBlock = [u16; SKETCH_BLOCK_CELLS];

/// Where an address counts: (block, cell) in each row. Two multiplicative hashes of the
/// address folded to 32 bits; 17 bits each pick one of a row's 131,072 cells.
#[inline(always)]
pub fn sketch_cells(addr: &[u8; 16]) -> [(u32, usize); 2] {
    let word = |i: usize| u32::from_le_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    let folded =
        word(0) ^ word(4).rotate_left(7) ^ word(8).rotate_left(13) ^ word(12).rotate_left(19);
    let first = folded.wrapping_mul(0x9e37_79b1) >> 15;
    let second = (folded ^ 0x5bd1_e995).wrapping_mul(0x85eb_ca6b) >> 15;
    let place = |hash: u32, row: u32| {
        (
            row * SKETCH_ROW_BLOCKS + (hash >> 13) % SKETCH_ROW_BLOCKS,
            (hash as usize) % SKETCH_BLOCK_CELLS,
        )
    };
    [place(first, 0), place(second, 1)]
}

/// Counts one segment in the source's two cells; true once both reach `gate`
/// (a gate of 0 lets every source through).
#[inline(always)]
pub fn count_and_pass(first: &mut u16, second: &mut u16, gate: u16) -> bool {
    *first = first.saturating_add(1);
    *second = second.saturating_add(1);
    *first >= gate && *second >= gate
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> [u8; 16] {
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d]
    }

    #[test]
    fn cells_stay_in_their_row() {
        for i in 0..100_000u32 {
            let [a, b] = sketch_cells(&v4(198, 18, (i >> 8) as u8, i as u8));
            assert!(a.0 < SKETCH_ROW_BLOCKS && a.1 < SKETCH_BLOCK_CELLS);
            assert!((SKETCH_ROW_BLOCKS..SKETCH_BLOCKS).contains(&b.0) && b.1 < SKETCH_BLOCK_CELLS);
        }
    }

    /// A million random sources in one interval: about 7.6 per cell, so with a gate of 32
    /// (practically) none is let in; a source sending 32 segments always is.
    #[test]
    fn one_off_sources_stay_out_and_heavy_ones_get_in() {
        let cells = SKETCH_BLOCKS as usize * SKETCH_BLOCK_CELLS;
        let mut sketch = std::vec![0u16; cells];
        let index = |(block, cell): (u32, usize)| block as usize * SKETCH_BLOCK_CELLS + cell;
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
            let [a, b] = sketch_cells(&addr);
            let (i, j) = (index(a), index(b));
            let (mut x, mut y) = (sketch[i], sketch[j]);
            if count_and_pass(&mut x, &mut y, 32) {
                let_in += 1;
            }
            sketch[i] = x;
            sketch[j] = y;
        }
        assert!(let_in < 10, "{let_in} one-off sources let in");
        let heavy = v4(198, 18, 1, 66);
        let [a, b] = sketch_cells(&heavy);
        let mut passed = 0;
        for _ in 0..32 {
            let (i, j) = (index(a), index(b));
            let (mut x, mut y) = (sketch[i], sketch[j]);
            passed += count_and_pass(&mut x, &mut y, 32) as usize;
            sketch[i] = x;
            sketch[j] = y;
        }
        assert!(passed >= 1, "a source with 32 segments gets in");
        let (mut x, mut y) = (0, 0);
        assert!(count_and_pass(&mut x, &mut y, 0), "gate 0: everyone");
    }
}
