//! A benchmark reference, not part of the guard: what answering a SYN costs with the kernel's
//! own cookie helper (`bpf_tcp_raw_gen_syncookie_ipv4`, the one the kernel's XDP SYN proxy
//! sample uses), for one frame shape: untagged IPv4 with a 20-byte header and a 40-byte TCP
//! header (Linux's SYN options). The SYN-ACK carries only the MSS the helper encoded (the
//! helper keeps nothing else without timestamps), with both checksums computed.

use aya_ebpf::{
    bindings::{
        iphdr, tcphdr,
        xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    },
    helpers::generated::bpf_tcp_raw_gen_syncookie_ipv4,
    programs::XdpContext,
};
use synguard_common::{
    checksum::{add_words, finish, pseudo_header_v4},
    field::{ethernet, ipv4},
};

use crate::floor::swap_for_floor;

const IP_AT: usize = ethernet::HEADER_LEN;
const IP_LEN: usize = ipv4::MIN_HEADER_LEN;
const TCP_AT: usize = IP_AT + IP_LEN;
const TCP_LEN: usize = 40;

#[inline(always)]
pub fn kernel_cookie_syn_ack(ctx: &XdpContext) -> u32 {
    let data = ctx.data();
    if data + TCP_AT + TCP_LEN > ctx.data_end() {
        return XDP_PASS;
    }
    let frame = data as *mut u8;
    // SAFETY: the whole frame shape was just checked to lie within the packet; the references
    // end before the swap below writes the same bytes.
    let (cookie, mss, client_isn) = unsafe {
        let ip = &mut *(frame.add(IP_AT) as *mut [u8; IP_LEN]);
        let tcp = &mut *(frame.add(TCP_AT) as *mut [u8; TCP_LEN]);
        if ip[0] != 0x45 || ip[9] != 6 || tcp[12] >> 4 != (TCP_LEN / 4) as u8 || tcp[13] != 0x02 {
            return XDP_PASS;
        }
        let answer = bpf_tcp_raw_gen_syncookie_ipv4(
            ip.as_mut_ptr() as *mut iphdr,
            tcp.as_mut_ptr() as *mut tcphdr,
            TCP_LEN as u32,
        );
        if answer < 0 {
            return XDP_DROP;
        }
        (
            answer as u32,
            (answer >> 32) as u16,
            u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        )
    };
    swap_for_floor(ctx);
    // SAFETY: as above.
    unsafe {
        let ip = &mut *(frame.add(IP_AT) as *mut [u8; IP_LEN]);
        let tcp = &mut *(frame.add(TCP_AT) as *mut [u8; TCP_LEN]);
        tcp[4..8].copy_from_slice(&cookie.to_be_bytes());
        tcp[8..12].copy_from_slice(&client_isn.wrapping_add(1).to_be_bytes());
        tcp[13] = 0x12;
        tcp[16] = 0;
        tcp[17] = 0;
        tcp[20..24].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
        tcp[24..].fill(1);
        ip[8] = 64;
        ip[10] = 0;
        ip[11] = 0;
        let ip_sum = finish(add_words(0, ip));
        ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        let src = [ip[12], ip[13], ip[14], ip[15]];
        let dst = [ip[16], ip[17], ip[18], ip[19]];
        let tcp_sum = finish(add_words(
            pseudo_header_v4(&src, &dst, 6, TCP_LEN as u16),
            tcp,
        ));
        tcp[16..18].copy_from_slice(&tcp_sum.to_be_bytes());
    }
    XDP_TX
}
