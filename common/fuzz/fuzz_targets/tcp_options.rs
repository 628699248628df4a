//! Any option bytes in a TCP header of any valid length: the walk ends without panicking, and
//! the offsets it hands the rewriters point at what it decoded, inside the header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use synguard_common::{frame::TCP_HEADER_BUF_LEN, tcp_options::TcpOptionWalker};

fuzz_target!(|data: &[u8]| {
    let Some((&length, options)) = data.split_first() else {
        return;
    };
    let header_len = 20 + 4 * (length as usize % 11);
    let mut walker = TcpOptionWalker::default();
    walker.reset();
    let copied = options.len().min(TCP_HEADER_BUF_LEN - 20);
    walker.header[20..20 + copied].copy_from_slice(&options[..copied]);
    walker.set_header_len(header_len);
    walker.walk();
    let Ok(decoded) = walker.finish() else {
        return;
    };
    let word = |at: usize| u32::from_be_bytes(walker.header[at..at + 4].try_into().unwrap());
    match decoded.timestamps {
        Some((tsval, tsecr)) => {
            let at = decoded.timestamps_at as usize;
            assert!(at >= 20 && at + 8 <= header_len, "{decoded:?}");
            assert_eq!((word(at), word(at + 4)), (tsval, tsecr));
        }
        None => assert_eq!(decoded.timestamps_at, 0),
    }
    if decoded.sack_blocks > 0 {
        let at = decoded.sack_at as usize;
        assert!(
            at >= 20 && at + 8 * decoded.sack_blocks as usize <= header_len,
            "{decoded:?}"
        );
    }
});
