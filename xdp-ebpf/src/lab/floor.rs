//! The benchmark floor's work, the least a reply path can do.

use aya_ebpf::programs::XdpContext;

/// The benchmark floor's work: swap MACs, IPv4 addresses and TCP ports of an untagged
/// IPv4/TCP frame (IHL 5), in place, with direct packet access.
#[inline(always)]
pub fn swap_for_floor(ctx: &XdpContext) {
    let data = ctx.data();
    if data + 38 > ctx.data_end() {
        return;
    }
    // SAFETY: the 38 bytes were just checked to lie within the frame.
    unsafe {
        let p = data as *mut u8;
        for i in 0..6 {
            core::ptr::swap(p.add(i), p.add(6 + i));
        }
        for i in 0..4 {
            core::ptr::swap(p.add(26 + i), p.add(30 + i));
        }
        for i in 0..2 {
            core::ptr::swap(p.add(34 + i), p.add(36 + i));
        }
    }
}
