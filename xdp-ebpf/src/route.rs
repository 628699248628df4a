//! Sending a forwarded frame to its next hop ourselves: the kernel's FIB gives the egress
//! interface and the MAC addresses (`bpf_fib_lookup`); we take one off the TTL and redirect.
//! What the lookup cannot settle (no neighbour entry yet, an expiring TTL, a VLAN-tagged
//! frame, no route) goes to the kernel stack, which routes it the slow way and resolves the
//! neighbour for the frames after it.
//!
//! The lookup comes before the rewrite: a segment too large for its egress link, or whose TTL
//! runs out here, goes to the kernel as its sender sent it, so that the "fragmentation
//! needed" / "packet too big" / "time exceeded" error the kernel sends back quotes the
//! sender's own sequence numbers (RFC 1191, RFC 8201, RFC 792).

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_FIB_LKUP_RET_FRAG_NEEDED, bpf_fib_lookup},
    helpers::generated::{bpf_fib_lookup as fib_lookup, bpf_redirect},
    programs::XdpContext,
};
use synguard_common::{
    checksum,
    field::{IPPROTO_TCP, be16, ethernet, ipv4, ipv6},
    frame::FrameBytes,
};

use crate::{FIB_SCRATCH, Guarded, frame::XdpFrame};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// An address as the four words `bpf_fib_lookup` takes (network byte order kept).
#[inline(always)]
fn words(address: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([address[0], address[1], address[2], address[3]]),
        u32::from_ne_bytes([address[4], address[5], address[6], address[7]]),
        u32::from_ne_bytes([address[8], address[9], address[10], address[11]]),
        u32::from_ne_bytes([address[12], address[13], address[14], address[15]]),
    ]
}

/// Where a forwarded frame goes, as the kernel's FIB sees it (before it is rewritten).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A next hop we reach ourselves: [`send`] takes it there.
    Direct,
    /// Larger than the egress link's MTU, and not to be fragmented (IPv4 with DF, IPv6).
    TooBig,
    /// Its TTL (hop limit) runs out here.
    Expiring,
    /// What the kernel must settle: no neighbour entry yet, a VLAN tag, no route, or an IPv4
    /// packet without DF that the kernel fragments.
    Kernel,
}

/// What [`look_up`] found, and the first 12 bytes of the IP header it read them from (what
/// [`send`] rewrites: TTL or hop limit, IPv4 checksum), so the frame is read once.
pub struct Lookup {
    pub route: Route,
    pub header: [u8; 12],
}

impl Lookup {
    #[inline(always)]
    fn kernel() -> Lookup {
        Lookup {
            route: Route::Kernel,
            header: [0; 12],
        }
    }
}

/// Looks up the next hop of the frame (`to_server` picks the flow's direction), leaving it in
/// the per-CPU FIB scratch for [`send`].
#[inline(always)]
pub fn look_up(ctx: &XdpContext, guarded: &Guarded, to_server: bool) -> Lookup {
    if guarded.l3_offset as usize != ethernet::HEADER_LEN {
        return Lookup::kernel(); // VLAN-tagged: the egress tagging is the kernel's business
    }
    let Some(params) = FIB_SCRATCH.get_ptr_mut(0) else {
        return Lookup::kernel();
    };
    // SAFETY: per-CPU entry, used only during this run of the program.
    let p = unsafe { &mut *params };
    let flow = &guarded.flow;
    let (src, dst, sport, dport) = if to_server {
        (
            &flow.client,
            &flow.server,
            flow.client_port,
            flow.server_port,
        )
    } else {
        (
            &flow.server,
            &flow.client,
            flow.server_port,
            flow.client_port,
        )
    };
    let is_v4 = flow.family == 4;
    let Some(header) = XdpFrame(ctx).load::<12>(ethernet::HEADER_LEN) else {
        return Lookup::kernel();
    };
    let ttl = if is_v4 {
        header[ipv4::TTL]
    } else {
        header[ipv6::HOP_LIMIT]
    };
    if ttl <= 1 {
        return Lookup {
            route: Route::Expiring,
            header,
        };
    }
    p.l4_protocol = IPPROTO_TCP;
    p.sport = sport.to_be();
    p.dport = dport.to_be();
    // SAFETY: reading the context's plain integer field.
    p.ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    p.__bindgen_anon_5.tbid = 0;
    p.__bindgen_anon_2.rt_metric = 0;
    p.__bindgen_anon_3.ipv6_src = words(src);
    p.__bindgen_anon_4.ipv6_dst = words(dst);
    if is_v4 {
        p.family = AF_INET;
        p.__bindgen_anon_1.tot_len = be16(&header, ipv4::TOTAL_LEN);
        p.__bindgen_anon_2.tos = header[ipv4::VERSION_IHL + 1];
    } else {
        p.family = AF_INET6;
        p.__bindgen_anon_1.tot_len =
            be16(&header, ipv6::PAYLOAD_LEN).wrapping_add(ipv6::HEADER_LEN as u16);
    }
    // SAFETY: the params live in map memory of the size passed.
    let rc = unsafe {
        fib_lookup(
            ctx.ctx as *mut c_void,
            params,
            size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    let must_not_fragment =
        !is_v4 || be16(&header, ipv4::FLAGS_FRAGMENT) & ipv4::DONT_FRAGMENT != 0;
    let route = match rc {
        0 => Route::Direct,
        // The packet is larger than the egress link's MTU.
        code if code == BPF_FIB_LKUP_RET_FRAG_NEEDED as i64 && must_not_fragment => Route::TooBig,
        _ => Route::Kernel,
    };
    Lookup { route, header }
}

/// Takes the (rewritten) frame to the next hop [`look_up`] found: one hop less, the next
/// hop's MACs, a redirect. `header` is the one the lookup read (the TCP rewrite since left it
/// alone). `None` when the kernel must route it after all.
#[inline(always)]
pub fn send(ctx: &XdpContext, guarded: &Guarded, header: &[u8; 12]) -> Option<u32> {
    let params = FIB_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU entry, used only during this run of the program.
    let p = unsafe { &*params };
    let frame = XdpFrame(ctx);
    let l3 = ethernet::HEADER_LEN;
    // What routing owes the packet: one hop less (RFC 791, RFC 8200), the next hop's MACs.
    if guarded.flow.family == 4 {
        // TTL and protocol share a word: one hop less is 0x100 less.
        let old = be16(header, ipv4::TTL);
        let new = old.wrapping_sub(0x100);
        let sum = be16(header, ipv4::CHECKSUM);
        let updated = checksum::finish((!sum) as u64 + (!old) as u64 + new as u64);
        let [n0, n1] = new.to_be_bytes();
        let [s0, s1] = updated.to_be_bytes();
        if !frame.store_small(l3 + ipv4::TTL, &[n0, n1, s0, s1]) {
            return None;
        }
    } else if !frame.store_small(
        l3 + ipv6::HOP_LIMIT,
        &[header[ipv6::HOP_LIMIT].wrapping_sub(1)],
    ) {
        return None;
    }
    let d = p.dmac;
    let s = p.smac;
    let macs = [
        d[0], d[1], d[2], d[3], d[4], d[5], s[0], s[1], s[2], s[3], s[4], s[5],
    ];
    if !frame.store_small(0, &macs) {
        return None;
    }
    // SAFETY: plain helper call.
    Some(unsafe { bpf_redirect(p.ifindex, 0) } as u32)
}
