//! TCP options (RFC 9293 section 3.2, RFC 7323, RFC 2018).
//!
//! Malformed option lists (a length below 2, or an option running past the header) make the
//! whole segment malformed. A known option with an unexpected length is skipped, as Linux does.

/// The options synguard cares about, decoded from one segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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

/// Most option bytes a TCP header can carry (60 - 20).
pub const MAX_OPTIONS_LEN: usize = 40;

/// Parses the option bytes `buf[20..header_len]` of a TCP header copied into `buf`.
///
/// The loop is bounded by [`MAX_OPTIONS_LEN`] iterations so the verifier accepts it.
#[inline(always)]
pub fn parse_tcp_options(buf: &[u8], header_len: usize) -> Result<TcpOptions, MalformedOptions> {
    let mut options = TcpOptions::default();
    let end = if header_len < buf.len() {
        header_len
    } else {
        buf.len()
    };
    let mut at = 20;
    for _ in 0..MAX_OPTIONS_LEN {
        if at >= end {
            break;
        }
        let kind = buf[at];
        if kind == KIND_END {
            break;
        }
        if kind == KIND_NOP {
            at += 1;
            continue;
        }
        let Some(&len) = buf.get(at + 1).filter(|_| at + 1 < end) else {
            return Err(MalformedOptions);
        };
        let len = len as usize;
        if len < 2 || at + len > end {
            return Err(MalformedOptions);
        }
        let body = &buf[at + 2..at + len];
        match (kind, body) {
            (KIND_MSS, &[a, b]) => options.mss = Some(u16::from_be_bytes([a, b])),
            (KIND_WINDOW_SCALE, &[shift]) => options.window_scale = Some(shift),
            (KIND_SACK_PERMITTED, &[]) => options.sack_permitted = true,
            (KIND_SACK, blocks) if blocks.len() % 8 == 0 => {
                options.sack_blocks = (blocks.len() / 8) as u8
            }
            (KIND_TIMESTAMPS, &[a, b, c, d, e, f, g, h]) => {
                options.timestamps = Some((
                    u32::from_be_bytes([a, b, c, d]),
                    u32::from_be_bytes([e, f, g, h]),
                ))
            }
            _ => {}
        }
        at += len;
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(options: &[u8]) -> ([u8; 60], usize) {
        let mut buf = [0u8; 60];
        buf[20..20 + options.len()].copy_from_slice(options);
        (buf, 20 + options.len())
    }

    #[test]
    fn linux_syn_options() {
        // MSS 1460, SACK permitted, TS 1/0, NOP, wscale 7: what Linux sends in a SYN.
        let (buf, len) = with_header(&[
            2, 4, 5, 180, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ]);
        let o = parse_tcp_options(&buf, len).unwrap();
        assert_eq!(o.mss, Some(1460));
        assert!(o.sack_permitted);
        assert_eq!(o.timestamps, Some((1, 0)));
        assert_eq!(o.window_scale, Some(7));
    }

    #[test]
    fn end_of_list_stops_parsing() {
        let (buf, len) = with_header(&[0, 2, 4, 5, 180]);
        assert_eq!(parse_tcp_options(&buf, len), Ok(TcpOptions::default()));
    }

    #[test]
    fn zero_or_one_length_is_malformed() {
        for bad in [0u8, 1] {
            let (buf, len) = with_header(&[2, bad, 0, 0]);
            assert_eq!(parse_tcp_options(&buf, len), Err(MalformedOptions));
        }
    }

    #[test]
    fn option_running_past_header_is_malformed() {
        let (buf, len) = with_header(&[1, 1, 8, 10, 0, 0]);
        assert_eq!(parse_tcp_options(&buf, len), Err(MalformedOptions));
        // Kind byte as the very last byte of the header, with no room for a length.
        let (buf, len) = with_header(&[1, 1, 1, 2]);
        assert_eq!(parse_tcp_options(&buf, len), Err(MalformedOptions));
    }

    #[test]
    fn known_option_with_wrong_length_is_skipped() {
        let (buf, len) = with_header(&[2, 3, 5, 3, 3, 7, 1, 1]);
        let o = parse_tcp_options(&buf, len).unwrap();
        assert_eq!(o.mss, None);
        assert_eq!(o.window_scale, Some(7));
    }

    #[test]
    fn sack_blocks_are_counted() {
        let mut options = [9u8; 20];
        options[..4].copy_from_slice(&[1, 1, 5, 18]);
        let (buf, len) = with_header(&options);
        assert_eq!(parse_tcp_options(&buf, len).unwrap().sack_blocks, 2);
    }
}
