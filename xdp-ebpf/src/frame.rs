//! [`FrameBytes`] for an XDP frame, through `bpf_xdp_load_bytes`: the helper checks bounds at
//! run time, so the verifier only has to bound the copy length, never a packet pointer.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::{
        bpf_xdp_adjust_head, bpf_xdp_adjust_tail, bpf_xdp_load_bytes, bpf_xdp_store_bytes,
    },
    programs::XdpContext,
};
use synguard_common::{
    frame::{FrameBytes, TCP_HEADER_BUF_LEN},
    segment::SEGMENT_BUF_LEN,
};

pub struct XdpFrame<'a>(pub &'a XdpContext);

/// Largest header offset read with direct packet access (a mask: one less than a power of 2).
const MAX_DIRECT_OFFSET: usize = 1023;

impl FrameBytes for XdpFrame<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.0.data_end() - self.0.data()
    }

    #[inline(always)]
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        // Direct packet access: a helper call costs more than the whole copy. The mask bounds
        // the offset for the verifier (headers sit in the first 1 KiB); the comparison against
        // data_end then proves the N bytes readable.
        if offset > MAX_DIRECT_OFFSET {
            return None;
        }
        let start = self.0.data() + (offset & MAX_DIRECT_OFFSET);
        if start + N > self.0.data_end() {
            return None;
        }
        // SAFETY: start..start + N lies within the frame, checked just above.
        Some(unsafe { core::ptr::read_unaligned(start as *const [u8; N]) })
    }

    #[inline(always)]
    fn load_tcp_header(
        &self,
        offset: usize,
        len: usize,
        buf: &mut [u8; TCP_HEADER_BUF_LEN],
    ) -> bool {
        // One helper call: a variable length, which direct access would turn into a loop
        // whose paths the verifier multiplies with every parse path before it.
        // Same value for len in 20..=60, and a form the verifier bounds to 20..=83 whatever
        // LLVM does with the caller's range checks (83 < TCP_HEADER_BUF_LEN).
        let len = ((len.wrapping_sub(20)) & 63) + 20;
        self.copy_out(offset, buf.as_mut_ptr(), len)
    }
}

impl XdpFrame<'_> {
    /// Copies `len` frame bytes at `offset` to `dst`; false when the frame is shorter.
    /// Callers pass a `dst` of at least `len` bytes.
    #[inline(always)]
    fn copy_out(&self, offset: usize, dst: *mut u8, len: usize) -> bool {
        // SAFETY: the helper writes at most `len` bytes to `dst`, which holds that many.
        unsafe {
            bpf_xdp_load_bytes(self.0.ctx, offset as u32, dst as *mut c_void, len as u32) == 0
        }
    }

    /// Copies a segment's payload of `len` bytes (1..=`N`) at `offset` to `dst`; false when
    /// the length is out of that range or the frame is shorter.
    #[inline(always)]
    pub fn load_payload<const N: usize>(
        &self,
        offset: usize,
        dst: &mut [u8; N],
        len: usize,
    ) -> bool {
        if len == 0 || len > N {
            return false;
        }
        self.copy_out(offset, dst.as_mut_ptr(), len)
    }

    /// Writes `len` bytes from `src` at `offset`; false when the frame is shorter. Callers
    /// pass a `src` of at least `len` bytes.
    #[inline(always)]
    fn copy_in(&self, offset: usize, src: *const u8, len: usize) -> bool {
        // SAFETY: the helper reads `len` bytes from `src`, which holds that many.
        unsafe {
            bpf_xdp_store_bytes(self.0.ctx, offset as u32, src as *mut c_void, len as u32) == 0
        }
    }

    /// Writes a few fixed bytes at `offset`.
    #[inline(always)]
    pub fn store_small<const N: usize>(&self, offset: usize, bytes: &[u8; N]) -> bool {
        self.copy_in(offset, bytes.as_ptr(), N)
    }

    /// Writes the first `len` bytes of a written segment at `offset`.
    #[inline(always)]
    pub fn store_segment(&self, offset: usize, bytes: &[u8; SEGMENT_BUF_LEN], len: usize) -> bool {
        // Masked so the verifier sees len < SEGMENT_BUF_LEN; real lengths are at most 80.
        self.copy_in(offset, bytes.as_ptr(), len & (SEGMENT_BUF_LEN - 1))
    }

    /// Writes a (rewritten) TCP header of `len` bytes (20..=60) back at `offset`.
    #[inline(always)]
    pub fn store_tcp_header(
        &self,
        offset: usize,
        header: &[u8; TCP_HEADER_BUF_LEN],
        len: usize,
    ) -> bool {
        // The same bounding form as the load (see `load_tcp_header`).
        let len = ((len.wrapping_sub(20)) & 63) + 20;
        self.copy_in(offset, header.as_ptr(), len)
    }

    /// Swaps destination and source MAC addresses, with direct access (no helper calls).
    #[inline(always)]
    pub fn swap_macs(&self) -> bool {
        let data = self.0.data();
        if data + 12 > self.0.data_end() {
            return false;
        }
        // SAFETY: the 12 bytes were just checked to lie within the frame.
        unsafe {
            let p = data as *mut u8;
            for i in 0..6 {
                core::ptr::swap(p.add(i), p.add(6 + i));
            }
        }
        true
    }
}

/// Replaces everything from the IP header on with the `len`-byte segment in `bytes` (the L2
/// header, VLAN tags included, stays); `reply` also swaps the MACs, for XDP_TX.
#[inline(always)]
pub fn replace_l3(
    ctx: &XdpContext,
    l3_offset: usize,
    bytes: &[u8; SEGMENT_BUF_LEN],
    len: usize,
    reply: bool,
) -> bool {
    let delta = (l3_offset + len) as i32 - XdpFrame(ctx).len() as i32;
    // SAFETY: resizes the frame; later accesses go through helpers that re-check bounds.
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        // Some drivers leave little tailroom (veth under a small skb): grow at the front
        // instead, where XDP always has headroom, and move the L2 header there.
        if delta < 0 || !grow_at_head(ctx, l3_offset, delta) {
            return false;
        }
    }
    let resized = XdpFrame(ctx);
    resized.store_segment(l3_offset, bytes, len) && (!reply || resized.swap_macs())
}

/// Longest L2 header the parser accepts: Ethernet and two VLAN tags.
const MAX_L2_LEN: usize = 22;

/// Prepends `delta` bytes and moves the `l2_len`-byte L2 header to the new start.
#[inline(always)]
fn grow_at_head(ctx: &XdpContext, l2_len: usize, delta: i32) -> bool {
    let mut l2 = [0u8; 32];
    let l2_len = l2_len & 31;
    if l2_len < 14 || l2_len > MAX_L2_LEN || !XdpFrame(ctx).copy_out(0, l2.as_mut_ptr(), l2_len) {
        return false;
    }
    // SAFETY: moves the frame start; later accesses go through helpers that re-check bounds.
    let moved = unsafe { bpf_xdp_adjust_head(ctx.ctx, -delta) } == 0;
    moved && XdpFrame(ctx).copy_in(0, l2.as_ptr(), l2_len)
}
