//! TCP options (RFC 9293 section 3.2, RFC 7323, RFC 2018).
//!
//! Malformed option lists (a length below 2, or an option running past the header) make the
//! whole segment malformed. A known option with an unexpected length is skipped, as Linux does.
//!
//! Options are walked one at a time by [`TcpOptionWalker::step`], on a walker the XDP program
//! keeps in map memory (see `FrameBytes::with_tcp_walker`) so the verifier sees each step as
//! one generic step.

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

    /// Runs the steps in a plain bounded loop.
    #[inline(always)]
    pub fn walk(&mut self) {
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
