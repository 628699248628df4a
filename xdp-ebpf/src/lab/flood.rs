//! The lab's live-frames flood generator, not part of the guard: run through
//! BPF_PROG_TEST_RUN with `BPF_F_TEST_XDP_LIVE_FRAMES` in the client namespace, it writes the
//! template frame (untagged IPv4 and TCP, no options) over each frame and gives it a random
//! source address
//! within the low `source_bits`, a random source port, sequence and acknowledgment number,
//! keeps both checksums valid, and redirects it into the client's link. The guard then
//! receives page-pool frames with XDP headroom, as from a NIC, not socket buffers veth must
//! copy first.

use aya_ebpf::{
    helpers::generated::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    programs::XdpContext,
};
use synguard_common::{
    checksum::replace,
    field::{ethernet, ipv4},
    maps::{FloodPacing, LAB_FLOOD_FRAME_LEN},
};

/// Clock reads a wait makes at most: more than [`FloodPacing::MAX_WAIT_NS`] takes, at the
/// 20-30 ns a read costs here.
const WAIT_READS: u32 = (FloodPacing::MAX_WAIT_NS / 10) as u32;

/// The precise clock: the coarse one moves by scheduler ticks, and a pace with it.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: no arguments, no memory.
    unsafe { bpf_ktime_get_ns() }
}

/// Spins until `slot` (a paced frame's, at most [`FloodPacing::MAX_WAIT_NS`] ahead).
#[inline(always)]
pub fn wait_until(slot: u64) {
    for _ in 0..WAIT_READS {
        if now_ns() >= slot {
            return;
        }
    }
}

const IP_AT: usize = ethernet::HEADER_LEN;
const TCP_AT: usize = IP_AT + ipv4::MIN_HEADER_LEN;

/// Writes `template` over the frame, randomized; false when the frame is not the template's
/// length or the template not IPv4/TCP.
#[inline(always)]
pub fn randomize(ctx: &XdpContext, template: &[u8; LAB_FLOOD_FRAME_LEN], source_bits: u32) -> bool {
    let data = ctx.data();
    if data + LAB_FLOOD_FRAME_LEN > ctx.data_end() {
        return false;
    }
    // SAFETY: the frame holds LAB_FLOOD_FRAME_LEN bytes (checked); the template is map memory.
    unsafe { *(data as *mut [u8; LAB_FLOOD_FRAME_LEN]) = *template };
    // SAFETY: no arguments, no memory.
    let (first, second, third) = unsafe {
        (
            bpf_get_prandom_u32(),
            bpf_get_prandom_u32(),
            bpf_get_prandom_u32(),
        )
    };
    // SAFETY: the IP header and the TCP header's first 20 bytes lie within the frame (checked).
    unsafe {
        let frame = data as *mut u8;
        let ip = &mut *(frame.add(IP_AT) as *mut [u8; 20]);
        let tcp = &mut *(frame.add(TCP_AT) as *mut [u8; 20]);
        if ip[0] != 0x45 || ip[9] != 6 {
            return false;
        }
        let mask = if source_bits >= 32 {
            u32::MAX
        } else {
            (1u32 << source_bits) - 1
        };
        let old_source = [ip[12], ip[13], ip[14], ip[15]];
        let source = ((u32::from_be_bytes(old_source) & !mask) | (first & mask)).to_be_bytes();
        // Port, sequence and acknowledgment: bytes 0-1 and 4-11 of the TCP header.
        let old_numbers = [
            tcp[0], tcp[1], tcp[4], tcp[5], tcp[6], tcp[7], tcp[8], tcp[9], tcp[10], tcp[11],
        ];
        let port = ((second >> 16) as u16 | 1024).to_be_bytes();
        let (seq, ack) = (third.to_be_bytes(), (second ^ third).to_be_bytes());
        let numbers = [
            port[0], port[1], seq[0], seq[1], seq[2], seq[3], ack[0], ack[1], ack[2], ack[3],
        ];
        ip[12..16].copy_from_slice(&source);
        tcp[0..2].copy_from_slice(&port);
        tcp[4..8].copy_from_slice(&seq);
        tcp[8..12].copy_from_slice(&ack);
        let ip_checksum = u16::from_be_bytes([ip[10], ip[11]]);
        ip[10..12].copy_from_slice(&replace(ip_checksum, &old_source, &source).to_be_bytes());
        // The source address is in the TCP pseudo-header too.
        let tcp_checksum = u16::from_be_bytes([tcp[16], tcp[17]]);
        let tcp_checksum = replace(
            replace(tcp_checksum, &old_source, &source),
            &old_numbers,
            &numbers,
        );
        tcp[16..18].copy_from_slice(&tcp_checksum.to_be_bytes());
    }
    true
}
