//! The two cookie actions: answer a SYN with a SYN-ACK (XDP_TX), check a third ACK.

use aya_ebpf::{
    helpers::generated::{bpf_ktime_get_tai_ns, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use synguard_common::{
    cookie::{self, CookieError, CookieOptions},
    counters::Counter,
    frame::FrameBytes,
    maps::{FlowEntry, HandshakeEvent, WireOptions},
    syn_ack::write_syn_ack,
    verdict::{Action, Verdict},
};

use crate::{
    COOKIE_KEYS, FLOWS, Guarded, HANDSHAKES, SYN_ACK_SCRATCH, SYN_ACK_SETTINGS, frame::XdpFrame,
};

#[inline(always)]
fn verdict(action: Action, reason: Counter) -> Verdict {
    Verdict { action, reason }
}

#[inline(always)]
fn now_tai_ns() -> u64 {
    // SAFETY: no arguments, no memory.
    unsafe { bpf_ktime_get_tai_ns() }
}

/// Rewrites the SYN in place into our SYN-ACK: same L2 header with MACs swapped (VLAN tags
/// kept), then fresh IP and TCP headers.
#[inline(always)]
pub fn answer_syn(ctx: &XdpContext, guarded: &Guarded) -> Verdict {
    let (syn, flow) = (&guarded.tcp, &guarded.flow);
    let (Some(keys), Some(settings), Some(reply)) = (
        COOKIE_KEYS.get(0),
        SYN_ACK_SETTINGS.get(0),
        SYN_ACK_SCRATCH.get_ptr_mut(0),
    ) else {
        return verdict(Action::Drop, Counter::DropNoConfig);
    };
    // SAFETY: per-CPU entry, used only during this run of the program.
    let reply = unsafe { &mut *reply };
    if !keys.is_set() {
        return verdict(Action::Drop, Counter::DropNoConfig);
    }
    let now = now_tai_ns();
    let options = CookieOptions::from_syn(syn, flow.family == 6);
    let (key, phase) = keys.current();
    let cookie = cookie::make(key, phase, flow, syn.seq, cookie::counter_at(now), &options);
    // Our TSval: a millisecond clock (RFC 7323 section 5.4 asks only for monotony).
    let tsval = (now / 1_000_000) as u32;
    let len = write_syn_ack(flow, syn, cookie, &options, settings, tsval, reply);
    let l3 = guarded.l3_offset as usize;
    let delta = (l3 + len) as i32 - XdpFrame(ctx).len() as i32;
    // SAFETY: resizes the frame; later accesses go through helpers that re-check bounds.
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return verdict(Action::Drop, Counter::DropRewriteFailed);
    }
    let resized = XdpFrame(ctx);
    if !resized.store(l3, reply, len) || !resized.swap_macs() {
        return verdict(Action::Drop, Counter::DropRewriteFailed);
    }
    verdict(Action::Tx, Counter::TxSynCookie)
}

/// Checks the cookie a third ACK echoes; a valid one records the flow and tells the controller.
#[inline(always)]
pub fn check_ack(guarded: &Guarded) -> Verdict {
    let (ack, flow) = (&guarded.tcp, &guarded.flow);
    let Some(keys) = COOKIE_KEYS.get(0) else {
        return verdict(Action::Drop, Counter::DropNoConfig);
    };
    let now = now_tai_ns();
    let client_isn = ack.seq.wrapping_sub(1);
    let guard_isn = ack.ack.wrapping_sub(1);
    let options = match cookie::check(keys, flow, client_isn, guard_isn, cookie::counter_at(now)) {
        Ok(options) => options,
        Err(CookieError::Expired) => return verdict(Action::Drop, Counter::DropCookieExpired),
        Err(CookieError::Invalid) => return verdict(Action::Drop, Counter::DropCookieInvalid),
    };
    let (ts_val, ts_ecr) = match ack.options.timestamps {
        Some(ts) => ts,
        None => (0, 0),
    };
    let entry = FlowEntry {
        client_isn,
        guard_isn,
        options: WireOptions::new(&options, ack.options.timestamps.is_some()),
        validated_tai_ns: now,
    };
    let Some(mut event) = HANDSHAKES.reserve::<HandshakeEvent>(0) else {
        return verdict(Action::Drop, Counter::DropEventLost);
    };
    // Written field by field into the ring buffer: no event-sized copy on the stack.
    let slot = event.as_mut_ptr();
    // SAFETY: the reservation holds one HandshakeEvent; every field is written before submit.
    unsafe {
        (*slot).flow = *flow;
        (*slot).entry = entry;
        (*slot).ts_val = ts_val;
        (*slot).ts_ecr = ts_ecr;
    }
    event.submit(0);
    // A full LRU map evicts its oldest entry: insertion does not fail for lack of room.
    let _ = FLOWS.insert(flow, &entry, 0);
    verdict(Action::Drop, Counter::CookieValid)
}
