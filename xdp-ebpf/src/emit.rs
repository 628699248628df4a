//! Writing a segment of ours over the frame: an answer sent back out of the interface it came
//! in on, or a segment the kernel routes on.

use aya_ebpf::programs::XdpContext;
use synguard_common::{
    counters::Counter,
    segment::{SegmentSpec, write_segment},
    verdict::{Action, Verdict},
};

use crate::{Guarded, SEGMENT_SCRATCH, frame::replace_l3};

/// Writes `spec` over the frame from the IP header on; `reply` sends it back (XDP_TX), else
/// the kernel routes it (XDP_PASS).
#[inline(always)]
pub fn emit(
    ctx: &XdpContext,
    guarded: &Guarded,
    spec: &SegmentSpec,
    reply: bool,
    reason: Counter,
) -> Verdict {
    let Some(out) = SEGMENT_SCRATCH.get_ptr_mut(0) else {
        return Verdict::new(Action::Drop, Counter::DropNoConfig);
    };
    // SAFETY: per-CPU entry, used only during this run of the program.
    let out = unsafe { &mut *out };
    let len = write_segment(&guarded.flow, spec, out);
    if !replace_l3(ctx, guarded.l3_offset as usize, out, len, reply) {
        return Verdict::new(Action::Drop, Counter::DropRewriteFailed);
    }
    Verdict::new(if reply { Action::Tx } else { Action::Pass }, reason)
}
