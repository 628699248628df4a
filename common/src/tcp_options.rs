//! TCP options (RFC 9293 section 3.2, RFC 7323, RFC 2018).
//!
//! Malformed option lists (a length below 2, or an option running past the header) make the
//! whole segment malformed. A known option with an unexpected length is skipped, as Linux does.
//!
//! The common option lists are recognised whole; any other is walked one option at a time by
//! [`TcpOptionWalker::step`], on a walker the XDP program keeps in map memory (see
//! `parse::ParseScratch`) so the verifier sees each step as one generic step.

use crate::frame::TCP_HEADER_BUF_LEN;

/// The options synguard cares about, decoded from one segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct TcpOptions {
    /// Maximum segment size (kind 2).
    pub mss: Option<u16>,
    /// Window scale shift (kind 3), as sent (not clamped).
    pub window_scale: Option<u8>,
    /// SACK permitted (kind 4).
    pub sack_permitted: bool,
    /// Timestamps (kind 8): (TSval, TSecr).
    pub timestamps: Option<(u32, u32)>,
    /// Number of SACK blocks (kind 5).
    pub sack_blocks: u8,
    /// Offset of the TSval in the header (0: no timestamps), for in-place rewriting.
    pub timestamps_at: u8,
    /// Offset of the first SACK block in the header (0: no SACK blocks).
    pub sack_at: u8,
}

/// The option list is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MalformedOptions;

const KIND_END: u8 = 0;
const KIND_NOP: u8 = 1;
const KIND_MSS: u8 = 2;
const KIND_WINDOW_SCALE: u8 = 3;
const KIND_SACK_PERMITTED: u8 = 4;
const KIND_SACK: u8 = 5;
const KIND_TIMESTAMPS: u8 = 8;

/// Most option bytes a TCP header can carry (60 - 20); also the most steps a walk takes.
pub const MAX_OPTIONS_LEN: usize = 40;

/// A TCP header copied out of the frame, and the state of the walk over its options.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct TcpOptionWalker {
    pub header: [u8; TCP_HEADER_BUF_LEN],
    at: usize,
    end: usize,
    options: TcpOptions,
    malformed: bool,
}

impl Default for TcpOptionWalker {
    fn default() -> Self {
        Self {
            header: [0; TCP_HEADER_BUF_LEN],
            at: 20,
            end: 20,
            options: TcpOptions::default(),
            malformed: false,
        }
    }
}

impl TcpOptionWalker {
    /// Forgets any earlier walk (a scratch walker is reused from packet to packet).
    #[inline(always)]
    pub fn reset(&mut self) {
        self.at = 20;
        self.end = 20;
        self.options = TcpOptions::default();
        self.malformed = false;
    }

    /// Sets where the options end: the header length (20..=60), once it is known.
    #[inline(always)]
    pub fn set_header_len(&mut self, header_len: usize) {
        self.end = header_len;
    }

    /// Decodes one option. Returns false when the walk is over (end of list or malformed).
    #[inline(always)]
    pub fn step(&mut self) -> bool {
        // Masks keep every index below 64 + 10 < TCP_HEADER_BUF_LEN, visibly to the verifier
        // (values here come from memory, so it knows nothing else about them). They change
        // nothing for real values: the walk stays within 20..=60.
        let at = self.at & 63;
        let end = self.end & 63;
        if at >= end {
            return false;
        }
        let kind = self.header[at];
        if kind == KIND_END {
            return false;
        }
        if kind == KIND_NOP {
            self.at = at + 1;
            return true;
        }
        if at + 1 >= end {
            self.malformed = true;
            return false;
        }
        let len = self.header[at + 1] as usize;
        if len < 2 || at + len > end {
            self.malformed = true;
            return false;
        }
        let h = &self.header;
        let be32 = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        match (kind, len) {
            (KIND_MSS, 4) => {
                self.options.mss = Some(u16::from_be_bytes([h[at + 2], h[at + 3]]));
            }
            (KIND_WINDOW_SCALE, 3) => self.options.window_scale = Some(h[at + 2]),
            (KIND_SACK_PERMITTED, 2) => self.options.sack_permitted = true,
            (KIND_SACK, _) if (len - 2).is_multiple_of(8) => {
                self.options.sack_blocks = ((len - 2) / 8) as u8;
                self.options.sack_at = (at + 2) as u8;
            }
            (KIND_TIMESTAMPS, 10) => {
                self.options.timestamps = Some((be32(at + 2), be32(at + 6)));
                self.options.timestamps_at = (at + 2) as u8;
            }
            _ => {}
        }
        self.at = at + len;
        true
    }

    /// Decodes the options: the common layouts at once, any other list step by step.
    #[inline(always)]
    pub fn walk(&mut self) {
        if !self.decode_common_layout() {
            self.walk_step_by_step();
        }
    }

    /// The option lists nearly every segment carries, recognised whole: Linux's SYN (and
    /// SYN-ACK) with and without timestamps, Windows' SYN, and the timestamps alone of every
    /// later segment of a connection that uses them. Returns false, decoding nothing, for any
    /// other list. (One comparison per layout instead of a step per option: a tenth of a
    /// flood SYN's parse.)
    #[inline(always)]
    fn decode_common_layout(&mut self) -> bool {
        let h = &self.header;
        let word = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let mss_at_20 = h[20] == KIND_MSS && h[21] == 4;
        let mss = u16::from_be_bytes([h[22], h[23]]);
        let o = &mut self.options;
        match self.end {
            // NOP NOP TS
            32 if word(20) == 0x0101_080a => {
                o.timestamps = Some((word(24), word(28)));
                o.timestamps_at = 24;
            }
            // Linux: MSS, SACK-permitted, TS, NOP, WS
            40 if mss_at_20 && word(24) == 0x0402_080a && word(36) >> 8 == 0x01_0303 => {
                o.mss = Some(mss);
                o.sack_permitted = true;
                o.timestamps = Some((word(28), word(32)));
                o.timestamps_at = 28;
                o.window_scale = Some(h[39]);
            }
            // Linux without timestamps: MSS, NOP, NOP, SACK-permitted, NOP, WS
            32 if mss_at_20 && word(24) == 0x0101_0402 && word(28) >> 8 == 0x01_0303 => {
                o.mss = Some(mss);
                o.sack_permitted = true;
                o.window_scale = Some(h[31]);
            }
            // Windows: MSS, NOP, WS, NOP, NOP, SACK-permitted
            32 if mss_at_20 && word(24) >> 8 == 0x01_0303 && word(28) == 0x0101_0402 => {
                o.mss = Some(mss);
                o.window_scale = Some(h[27]);
                o.sack_permitted = true;
            }
            _ => return false,
        }
        true
    }

    /// Runs the steps in a plain bounded loop.
    #[inline(always)]
    fn walk_step_by_step(&mut self) {
        for _ in 0..MAX_OPTIONS_LEN {
            if !self.step() {
                break;
            }
        }
    }

    /// The decoded options, once the walk is over.
    #[inline(always)]
    pub fn finish(&self) -> Result<TcpOptions, MalformedOptions> {
        if self.malformed {
            Err(MalformedOptions)
        } else {
            Ok(self.options)
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::{vec, vec::Vec};

    use super::*;

    fn walk(options: &[u8]) -> Result<TcpOptions, MalformedOptions> {
        let mut walker = TcpOptionWalker::default();
        walker.header[20..20 + options.len()].copy_from_slice(options);
        walker.set_header_len(20 + options.len());
        walker.walk();
        walker.finish()
    }

    #[test]
    fn linux_syn_options() {
        // MSS 1460, SACK permitted, TS 1/0, NOP, wscale 7: what Linux sends in a SYN.
        let o = walk(&[
            2, 4, 5, 180, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ])
        .unwrap();
        assert_eq!(o.mss, Some(1460));
        assert!(o.sack_permitted);
        assert_eq!(o.timestamps, Some((1, 0)));
        assert_eq!(o.window_scale, Some(7));
    }

    #[test]
    fn end_of_list_stops_parsing() {
        assert_eq!(walk(&[0, 2, 4, 5, 180]), Ok(TcpOptions::default()));
    }

    #[test]
    fn zero_or_one_length_is_malformed() {
        for bad in [0u8, 1] {
            assert_eq!(walk(&[2, bad, 0, 0]), Err(MalformedOptions));
        }
    }

    #[test]
    fn option_running_past_header_is_malformed() {
        assert_eq!(walk(&[1, 1, 8, 10, 0, 0]), Err(MalformedOptions));
        // Kind byte as the very last byte of the header, with no room for a length.
        assert_eq!(walk(&[1, 1, 1, 2]), Err(MalformedOptions));
    }

    #[test]
    fn known_option_with_wrong_length_is_skipped() {
        let o = walk(&[2, 3, 5, 3, 3, 7, 1, 1]).unwrap();
        assert_eq!(o.mss, None);
        assert_eq!(o.window_scale, Some(7));
    }

    #[test]
    fn sack_blocks_are_counted() {
        let mut options = [9u8; 20];
        options[..4].copy_from_slice(&[1, 1, 5, 18]);
        let options = walk(&options).unwrap();
        assert_eq!((options.sack_blocks, options.sack_at), (2, 24));
    }

    #[test]
    fn reset_forgets_an_earlier_walk() {
        let mut walker = TcpOptionWalker::default();
        walker.header[20..24].copy_from_slice(&[2, 1, 0, 0]);
        walker.set_header_len(24);
        walker.walk();
        assert_eq!(walker.finish(), Err(MalformedOptions));
        walker.reset();
        walker.header[20..24].copy_from_slice(&[2, 4, 1, 0]);
        walker.set_header_len(24);
        walker.walk();
        assert_eq!(walker.finish().unwrap().mss, Some(256));
    }

    /// `options` decoded by [`TcpOptionWalker::walk`] and by the steps alone.
    fn both_ways(options: &[u8]) -> [Result<TcpOptions, MalformedOptions>; 2] {
        let walker = || {
            let mut walker = TcpOptionWalker::default();
            walker.header[20..20 + options.len()].copy_from_slice(options);
            walker.set_header_len(20 + options.len());
            walker
        };
        let (mut whole, mut stepped) = (walker(), walker());
        whole.walk();
        stepped.walk_step_by_step();
        [whole.finish(), stepped.finish()]
    }

    /// The layouts `decode_common_layout` recognises, with the bytes a sender chooses.
    fn common_layouts(mss: [u8; 2], ws: u8, ts: [u8; 8]) -> [Vec<u8>; 4] {
        let [m0, m1] = mss;
        [
            [&[1, 1, 8, 10][..], &ts].concat(),
            [&[2, 4, m0, m1, 4, 2, 8, 10][..], &ts, &[1, 3, 3, ws]].concat(),
            vec![2, 4, m0, m1, 1, 1, 4, 2, 1, 3, 3, ws],
            vec![2, 4, m0, m1, 1, 3, 3, ws, 1, 1, 4, 2],
        ]
    }

    #[test]
    fn common_layouts_take_the_shortcut() {
        let layouts = common_layouts([5, 180], 7, [0, 0, 0, 1, 0, 0, 0, 2]);
        for layout in &layouts {
            let mut walker = TcpOptionWalker::default();
            walker.header[20..20 + layout.len()].copy_from_slice(layout);
            walker.set_header_len(20 + layout.len());
            assert!(walker.decode_common_layout(), "{layout:?}");
        }
        let [ts_only, linux, linux_no_ts, windows] = layouts.map(|l| both_ways(&l)[0].unwrap());
        assert_eq!(
            (ts_only.timestamps, ts_only.timestamps_at),
            (Some((1, 2)), 24)
        );
        assert_eq!((linux.timestamps, linux.timestamps_at), (Some((1, 2)), 28));
        for syn in [linux, linux_no_ts, windows] {
            assert_eq!(
                (syn.mss, syn.window_scale, syn.sack_permitted),
                (Some(1460), Some(7), true)
            );
        }
    }

    proptest::proptest! {
        /// The shortcut decodes exactly what the steps decode: the common layouts with any
        /// values, the same with any one byte changed (a near miss must not take it), and
        /// any bytes at all.
        #[test]
        fn the_shortcut_agrees_with_the_steps(
            mss: [u8; 2], ws: u8, ts: [u8; 8], which in 0usize..4,
            at in 0usize..20, byte: u8,
            any in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..=40),
        ) {
            let layout = common_layouts(mss, ws, ts)[which].clone();
            let [whole, stepped] = both_ways(&layout);
            proptest::prop_assert_eq!(whole, stepped);
            let mut near = layout.clone();
            let at = at % near.len();
            near[at] = byte;
            let [whole, stepped] = both_ways(&near);
            proptest::prop_assert_eq!(whole, stepped);
            let [whole, stepped] = both_ways(&any);
            proptest::prop_assert_eq!(whole, stepped);
        }
    }

    #[test]
    fn forty_nops_take_forty_steps() {
        let mut walker = TcpOptionWalker::default();
        walker.header[20..60].fill(KIND_NOP);
        walker.set_header_len(60);
        let steps = (0..MAX_OPTIONS_LEN + 1)
            .take_while(|_| walker.step())
            .count();
        assert_eq!(steps, MAX_OPTIONS_LEN);
        assert_eq!(walker.finish(), Ok(TcpOptions::default()));
    }
}
