//! Byte access to a frame, abstracted so that one parser serves both sides.
//!
//! Inside XDP every read must be provably in bounds for the verifier; the XDP program implements
//! [`FrameBytes`] with `bpf_xdp_load_bytes`, which checks bounds at run time and only needs a
//! length the verifier can bound. On the host a plain byte slice implements it.

/// Size of the buffer a TCP header (with options) is copied into.
///
/// A TCP header is 20 to 60 bytes. The XDP implementation derives the copy length as
/// `((len - 20) & 63) + 20`, a form the verifier can bound to 20..=83, so the buffer must hold 83.
pub const TCP_HEADER_BUF_LEN: usize = 84;

/// Read-only access to the bytes of a frame.
pub trait FrameBytes {
    /// Total frame length in bytes.
    fn len(&self) -> usize;

    /// True when the frame holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `N` bytes starting at `offset`, or `None` when the frame is shorter.
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;

    /// Copies a TCP header of `len` bytes (20..=60, checked by the caller) at `offset` into `buf`.
    /// Returns false when the frame is shorter.
    fn load_tcp_header(
        &self,
        offset: usize,
        len: usize,
        buf: &mut [u8; TCP_HEADER_BUF_LEN],
    ) -> bool;
}

impl FrameBytes for [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        self.get(offset..end)?.try_into().ok()
    }

    fn load_tcp_header(
        &self,
        offset: usize,
        len: usize,
        buf: &mut [u8; TCP_HEADER_BUF_LEN],
    ) -> bool {
        let Some(end) = offset.checked_add(len) else {
            return false;
        };
        match (self.get(offset..end), buf.get_mut(..len)) {
            (Some(src), Some(dst)) => {
                dst.copy_from_slice(src);
                true
            }
            _ => false,
        }
    }
}
