//! Sequence-number arithmetic modulo 2^32 (RFC 9293 section 3.4), shared by the data plane's
//! window checks and the controller's state machine.

/// `a < b` in sequence space.
#[inline(always)]
pub const fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `a <= b` in sequence space.
#[inline(always)]
pub const fn seq_le(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) <= 0
}

/// Whether `seq` lies in the receive window `[next, next + window)`; with a zero window only
/// `seq == next` is acceptable (RFC 9293 section 3.10.7.4, for segments of no length).
#[inline(always)]
pub const fn in_window(seq: u32, next: u32, window: u32) -> bool {
    if window == 0 {
        seq == next
    } else {
        seq.wrapping_sub(next) < window
    }
}

/// A window field announced with shift `from`, re-expressed for a receiver that applies
/// shift `to`, saturating at the largest field value (RFC 7323 section 2.3).
#[inline(always)]
pub const fn rescale_window(field: u16, from: u8, to: u8) -> u16 {
    let bytes = (field as u64) << (from & 15);
    let scaled = bytes >> (to & 15);
    if scaled > 0xffff {
        0xffff
    } else {
        scaled as u16
    }
}

/// The window field announcing `bytes` to a receiver that applies shift `shift`, saturating
/// at the largest field value.
#[inline(always)]
pub const fn window_field(bytes: u32, shift: u8) -> u16 {
    let field = bytes >> (shift & 15);
    if field > 0xffff { 0xffff } else { field as u16 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_wrap() {
        assert!(seq_lt(0xffff_fff0, 5));
        assert!(!seq_lt(5, 0xffff_fff0));
        assert!(seq_le(7, 7));
        assert!(!seq_lt(7, 7));
    }

    #[test]
    fn windows_wrap_and_zero_windows_take_only_the_next() {
        assert!(in_window(0xffff_ffff, 0xffff_fffe, 10));
        assert!(in_window(3, 0xffff_fffe, 10));
        assert!(!in_window(8, 0xffff_fffe, 10));
        assert!(!in_window(0xffff_fffd, 0xffff_fffe, 10));
        assert!(in_window(100, 100, 0));
        assert!(!in_window(101, 100, 0));
    }

    #[test]
    fn rescaling() {
        assert_eq!(rescale_window(1000, 7, 7), 1000);
        assert_eq!(rescale_window(1000, 7, 5), 4000);
        assert_eq!(rescale_window(1000, 5, 7), 250);
        assert_eq!(rescale_window(0xffff, 0, 14), 3);
        assert_eq!(rescale_window(0xffff, 14, 0), 0xffff);
        assert_eq!(window_field(64_000, 0), 64_000);
        assert_eq!(window_field(64_000 << 7, 7), 64_000);
        assert_eq!(window_field(1 << 20, 0), 0xffff);
        assert_eq!(
            window_field(256, 20),
            16,
            "a shift over 15 is masked, never a panic"
        );
    }
}
