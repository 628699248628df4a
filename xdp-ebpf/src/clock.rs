//! The data plane's clock.

use aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns;

/// The data plane's one clock: `FlowEntry::last_seen_ns`, token buckets, and with the keys'
/// offset the cookie counter (`synguard_common::cookie`, Clock). Cheap; tick resolution is
/// plenty for all three.
#[inline(always)]
pub fn now_coarse_ns() -> u64 {
    // SAFETY: no arguments, no memory.
    unsafe { bpf_ktime_get_coarse_ns() }
}
