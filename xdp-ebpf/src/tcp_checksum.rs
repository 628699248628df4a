//! The TCP checksum of the segments the guard acts on in an end's stead (SYNs it answers,
//! third ACKs it turns into SYNs, segments of forgotten flows it resets): a segment whose
//! checksum is wrong would have died in the receiving kernel, so it dies here. Forwarded
//! segments are not checked: their checksums are updated, not recomputed (RFC 1624), so a
//! corrupted one stays wrong and dies at its receiver.

use aya_ebpf::{helpers::generated::bpf_csum_diff, programs::XdpContext};
use synguard_common::{
    checksum::{PAYLOAD_SUM_BUF_LEN, holds, tcp_header_sum},
    maps::EARLY_DATA_MAX,
};

use crate::{Guarded, PAYLOAD_SCRATCH, frame::XdpFrame, scratch};

/// The most `bpf_csum_diff` sums in one call.
const CHUNK: usize = 512;

/// Whether the segment's checksum holds; a segment with more data than `EARLY_DATA_MAX` (more
/// than a segment of a handshake may carry) is not summed and fails.
#[inline(always)]
pub fn tcp_checksum_holds(ctx: &XdpContext, guarded: &Guarded) -> bool {
    let Some(parsed) = scratch() else {
        return false;
    };
    let tcp = &guarded.tcp;
    let (header_len, payload_len) = (tcp.header_len as usize, tcp.payload_len as usize);
    let mut sum = tcp_header_sum(
        &guarded.addrs,
        &parsed.walker.header,
        header_len,
        payload_len,
    );
    if payload_len > 0 {
        match payload_sum(ctx, guarded.l4_offset as usize + header_len, payload_len) {
            Some(words) => sum += words,
            None => return false,
        }
    }
    holds(sum)
}

/// The payload's words, big-endian as the rest of the sum, summed by the kernel's helper in
/// chunks from a copy.
#[inline(always)]
fn payload_sum(ctx: &XdpContext, offset: usize, len: usize) -> Option<u64> {
    if len > EARLY_DATA_MAX {
        return None;
    }
    // SAFETY: per-CPU entry, used only during this run of the program.
    let buf = unsafe { &mut *PAYLOAD_SCRATCH.get_ptr_mut(0)? };
    if !XdpFrame(ctx).load_payload(offset, buf, len) {
        return None;
    }
    // The last word's missing bytes count as zeros (RFC 1071): the copy's stale bytes past
    // the payload must not.
    let end = len & 2047;
    buf[end] = 0;
    buf[end + 1] = 0;
    buf[end + 2] = 0;
    let words = (end + 3) & !3;
    let mut sum = 0u64;
    let mut start = 0;
    while start < PAYLOAD_SUM_BUF_LEN - CHUNK {
        if start < words {
            let size = if words - start < CHUNK {
                words - start
            } else {
                CHUNK
            };
            // SAFETY: the helper reads `size` bytes (a multiple of 4) at `start`, within the
            // buffer; `from` is empty.
            let partial = unsafe {
                bpf_csum_diff(
                    core::ptr::null_mut(),
                    0,
                    buf.as_mut_ptr().add(start).cast(),
                    size as u32,
                    0,
                )
            };
            if partial < 0 {
                return None;
            }
            // Summed in the CPU's byte order; a ones' complement sum swaps with its words'
            // bytes (RFC 1071 section 2(B)).
            let mut folded = partial as u64;
            folded = (folded & 0xffff) + (folded >> 16);
            folded = (folded & 0xffff) + (folded >> 16);
            sum += u16::from_be(folded as u16) as u64;
        }
        start += CHUNK;
    }
    Some(sum)
}
