//! The two cookie actions: answer a SYN with a SYN-ACK (XDP_TX); check a third ACK and, when
//! its cookie holds, turn it into the SYN that opens the connection to the server (XDP_PASS:
//! the kernel routes it).

use aya_ebpf::programs::XdpContext;
use synguard_common::{
    cookie::{self, CookieError, CookieOptions},
    counters::Counter,
    maps::{EventKind, FlowStart, TO_SERVER, WireOptions, phase},
    segment::SegmentSpec,
    seq::rescale_window,
    verdict::{Action, Verdict},
};

use crate::{
    COOKIE_KEYS, FLOWS, Guarded, NEW_FLOW, SYN_ACK_SETTINGS, clock::now_coarse_ns, emit::emit,
    events, flows, tcp_checksum::tcp_checksum_holds, vouch,
};

/// Answers the SYN with our SYN-ACK, the cookie as ISN; `now_coarse` is [`now_coarse_ns`]
/// as the caller read it for this SYN.
#[inline(always)]
pub fn answer_syn(ctx: &XdpContext, guarded: &Guarded, now_coarse: u64) -> Verdict {
    let (syn, flow) = (&guarded.tcp, &guarded.flow);
    let (Some(keys), Some(settings)) = (COOKIE_KEYS.get(0), SYN_ACK_SETTINGS.get(0)) else {
        return Verdict::new(Action::Drop, Counter::DropNoConfig);
    };
    if !keys.is_set() {
        return Verdict::new(Action::Drop, Counter::DropNoConfig);
    }
    if !tcp_checksum_holds(ctx, guarded) {
        return Verdict::new(Action::Drop, Counter::DropTcpChecksum);
    }
    let now = keys.tai_ns(now_coarse);
    let ipv6 = flow.family == 6;
    let options = CookieOptions::from_syn(syn, ipv6);
    let (key, phase) = keys.current();
    let cookie = cookie::make(key, phase, flow, syn.seq, cookie::counter_at(now), &options);
    // Our TSval: a millisecond clock (RFC 7323 section 5.4 asks only for monotony).
    let tsval = (now / 1_000_000) as u32;
    let spec = SegmentSpec::syn_ack(syn, cookie, &options, settings, ipv6, tsval);
    emit(ctx, guarded, &spec, true, Counter::TxSynCookie)
}

/// Checks the cookie an ACK echoes (the third ACK, the client's first data, or its probe of
/// a zero window). A valid one records the flow, tells the controller (and hands it the
/// data), vouches for the source, and becomes the SYN to the server: the client's ISN and
/// options, as its SYN had them.
#[inline(always)]
pub fn check_ack(ctx: &XdpContext, guarded: &Guarded) -> Verdict {
    let (ack, flow) = (&guarded.tcp, &guarded.flow);
    let (Some(keys), Some(settings)) = (COOKIE_KEYS.get(0), SYN_ACK_SETTINGS.get(0)) else {
        return Verdict::new(Action::Drop, Counter::DropNoConfig);
    };
    let now_coarse = now_coarse_ns();
    let guard_isn = ack.ack.wrapping_sub(1);
    let now = cookie::counter_at(keys.tai_ns(now_coarse));
    let (options, client_isn) =
        match cookie::check_ack(keys, flow, ack, now, settings.expects_window_probes(now)) {
            Ok(checked) => checked,
            Err(CookieError::Expired) => {
                return Verdict::new(Action::Drop, Counter::DropCookieExpired);
            }
            Err(CookieError::Invalid) => {
                return Verdict::new(Action::Drop, Counter::DropCookieInvalid);
            }
        };
    // Checked once the cookie holds: a forged ACK costs no sum.
    if !tcp_checksum_holds(ctx, guarded) {
        return Verdict::new(Action::Drop, Counter::DropTcpChecksum);
    }
    // We answered a window-scale option with ours (see `SegmentSpec::syn_ack`).
    let (client_shift, client_view_of_server_shift) = match options.window_scale {
        Some(shift) => (shift, settings.window_scale),
        None => (0, 0),
    };
    let Some(entry) = NEW_FLOW.get_ptr_mut(0) else {
        return Verdict::new(Action::Drop, Counter::DropNoConfig);
    };
    // SAFETY: per-CPU entry, used only during this run of the program.
    let entry = unsafe { &mut *entry };
    entry.begin(&FlowStart {
        phase: phase::AWAITING_BACKEND,
        client_isn,
        guard_isn,
        guard_tsval: match ack.options.timestamps {
            Some((_, tsecr)) => tsecr,
            None => 0,
        },
        options: WireOptions::new(&options, ack.options.timestamps.is_some()),
        client_shift,
        client_view_of_server_shift,
        now_coarse_ns: now_coarse,
        next_seq: client_isn.wrapping_add(1),
        window: (ack.window as u32) << client_shift,
    });
    // A full LRU map evicts its oldest entry: insertion does not fail for lack of room. A
    // SYN on a closed tuple overwrites the old connection here.
    if flows::insert(flow, entry).is_err() {
        return Verdict::new(Action::Drop, Counter::DropRewriteFailed);
    }
    if !events::report(EventKind::Validated, TO_SERVER, flow, ack, entry, 0, 0) {
        let _ = FLOWS.remove(flow);
        return Verdict::new(Action::Drop, Counter::DropEventLost);
    }
    // The client's first data (its third ACK lost, or carrying data): the frame becomes the
    // SYN, so its payload goes to the controller first. Unreported, the client sends it again.
    if ack.payload_len > 0 {
        let _ = events::report_early_data(ctx, guarded, entry);
    }
    let spec = SegmentSpec::syn_to_server(
        client_isn,
        // A SYN's window is never scaled (RFC 7323 section 2.2).
        rescale_window(ack.window, client_shift, 0),
        options.mss,
        options.sack_permitted,
        options.window_scale,
        options.ecn,
        ack.options.timestamps.map(|(tsval, _)| tsval),
    );
    let validated = emit(ctx, guarded, &spec, false, Counter::CookieValid);
    if validated.reason == Counter::CookieValid {
        vouch(&guarded.source, now_coarse);
    }
    validated
}
