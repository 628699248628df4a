//! [`FrameBytes`] for an XDP frame, through `bpf_xdp_load_bytes`: the helper checks bounds at
//! run time, so the verifier only has to bound the copy length, never a packet pointer.

use core::ffi::c_void;

use aya_ebpf::{helpers::generated::bpf_xdp_load_bytes, programs::XdpContext};
use synguard_common::frame::{FrameBytes, TCP_HEADER_BUF_LEN};

pub struct XdpFrame<'a>(pub &'a XdpContext);

impl FrameBytes for XdpFrame<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.0.data_end() - self.0.data()
    }

    #[inline(always)]
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let mut buf = [0u8; N];
        self.copy_out(offset, buf.as_mut_ptr(), N).then_some(buf)
    }

    #[inline(always)]
    fn load_tcp_header(
        &self,
        offset: usize,
        len: usize,
        buf: &mut [u8; TCP_HEADER_BUF_LEN],
    ) -> bool {
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
}
