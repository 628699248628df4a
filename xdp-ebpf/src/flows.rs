//! Validated flows: the join with the server's SYN-ACK, and forwarding in both directions with
//! sequence translation. Forwarded segments go back to the kernel (XDP_PASS), which routes them.

use aya_ebpf::programs::XdpContext;
use synguard_common::{
    cookie::FlowKey,
    counters::Counter,
    flow_filter::{flow_filter_slot, mark},
    maps::{
        EventKind, FORGOTTEN_RESET_BURST, FORGOTTEN_RESETS_PER_SECOND, FlowDirection, FlowEntry,
        FlowStart, NO_WINDOW_SCALE, TO_CLIENT, TO_SERVER, WireOptions, phase,
    },
    parse::{TcpFlags, TcpSegment},
    segment::SegmentSpec,
    seq::{in_window, rescale_window, seq_le, seq_lt, window_field},
    tcp_options::TcpOptionWalker,
    translate::translate_header,
    verdict::{Action, Verdict},
};

use crate::{
    FLOW_FILTER, FLOWS, FORGOTTEN, Guarded, NEW_FLOW, RESET_BUDGET,
    clock::now_coarse_ns,
    emit::emit,
    events,
    frame::XdpFrame,
    route::{self, Route},
    tcp_checksum::tcp_checksum_holds,
};

/// Records a new flow: its slot in both halves of the flows filter first, so that the filter
/// never says "no flow" of a flow in the map (see `synguard_common::flow_filter`).
#[inline(always)]
pub fn insert(flow: &FlowKey, entry: &FlowEntry) -> Result<(), i32> {
    let slot = flow_filter_slot(flow);
    let (Some(zero), Some(one)) = (FLOW_FILTER.get_ptr_mut(0), FLOW_FILTER.get_ptr_mut(1)) else {
        return Err(-1);
    };
    // SAFETY: shared map memory; concurrent writers (other CPUs, the controller) only store
    // whole bytes, so a store cannot tear anyone else's.
    unsafe {
        mark(&mut *zero, slot);
        mark(&mut *one, slot);
    }
    FLOWS.insert(flow, entry, 0)
}

/// Notes a segment the sender sent: its end, its FIN, its window, its size.
#[inline(always)]
fn track(sender: &mut FlowDirection, tcp: &TcpSegment, shift: u8) {
    let flags = tcp.flags;
    let data_end = tcp.seq.wrapping_add(tcp.payload_len as u32);
    // SYN and FIN each take one sequence number (RFC 9293 section 3.4).
    let mut end = data_end;
    if flags.has(TcpFlags::SYN) {
        end = end.wrapping_add(1);
    }
    if flags.has(TcpFlags::FIN) {
        if sender.fin_seen == 0 {
            sender.fin_seen = 1;
            sender.fin_seq = data_end;
        }
        end = end.wrapping_add(1);
    }
    if seq_lt(sender.next_seq, end) {
        sender.next_seq = end;
    }
    if !flags.has(TcpFlags::RST) && !flags.has(TcpFlags::SYN) {
        sender.window = (tcp.window as u32) << (shift & 15);
    }
    // Plain adds: one direction of one flow arrives on one receive queue (RSS hashes the
    // 4-tuple), so one CPU at a time counts it; the BPF target has no atomic fetch-add here.
    sender.packets += 1;
    sender.bytes += tcp.payload_len as u64;
}

/// Forwards a segment of a joined flow one way: out-of-window RSTs die here (RFC 5961 section
/// 3: a blind RST must hit the receiver's window), the rest is translated, noted and passed on;
/// SYN, FIN and RST, and the first ACK of a FIN, are reported to the controller.
#[inline(always)]
pub fn forward(
    ctx: &XdpContext,
    guarded: &Guarded,
    entry: &mut FlowEntry,
    walker: &mut TcpOptionWalker,
    direction: u8,
) -> Verdict {
    let tcp = &guarded.tcp;
    let offset = entry.seq_offset;
    let to_server = direction == TO_SERVER;
    let translation = entry.translation(direction);
    let (sender_shift, ack_as_server_sees, forwarded) = if to_server {
        (
            entry.client_shift,
            tcp.ack.wrapping_add(offset),
            Counter::ForwardToServer,
        )
    } else {
        (entry.server_shift, tcp.ack, Counter::ForwardToClient)
    };
    let (sender, receiver) = if to_server {
        (&mut entry.to_server, &mut entry.to_client)
    } else {
        (&mut entry.to_client, &mut entry.to_server)
    };
    // What the receiver expects of the sender, and the window it offered.
    let (receiver_next, receiver_window) = (sender.next_seq, receiver.window);
    if tcp.flags.has(TcpFlags::RST) && !in_window(tcp.seq, receiver_next, receiver_window) {
        return Verdict::new(Action::Drop, Counter::DropRstOutOfWindow);
    }
    let lookup = route::look_up(ctx, guarded, to_server);
    // Untranslated and untracked: the kernel drops it and tells the sender, in the sender's
    // own sequence space, to send smaller segments or that its TTL ran out.
    match lookup.route {
        Route::TooBig => return Verdict::new(Action::Pass, Counter::PassTooBig),
        Route::Expiring => return Verdict::new(Action::Pass, Counter::PassTtlExpired),
        Route::Direct | Route::Kernel => {}
    }
    translate_header(&mut walker.header, &tcp.options, &translation);
    if !XdpFrame(ctx).store_tcp_header(
        guarded.l4_offset as usize,
        &walker.header,
        tcp.header_len as usize,
    ) {
        return Verdict::new(Action::Drop, Counter::DropRewriteFailed);
    }
    track(sender, tcp, sender_shift);
    let acks_fin = tcp.flags.has(TcpFlags::ACK)
        && receiver.fin_seen != 0
        && receiver.fin_acked == 0
        && seq_le(receiver.fin_seq.wrapping_add(1), ack_as_server_sees);
    if acks_fin {
        receiver.fin_acked = 1;
    }
    entry.last_seen_ns = now_coarse_ns();
    let report = |kind, entry: &FlowEntry| {
        events::report_numbers(
            kind,
            direction,
            &guarded.flow,
            tcp,
            tcp.seq,
            ack_as_server_sees,
            Some(entry),
            receiver_next,
            receiver_window,
        )
    };
    // The first segment of a client let straight through is its third ACK: the controller
    // needs it to see the server's end reach ESTABLISHED (nobody sends an ACK on its behalf).
    let control = tcp.flags.0 & (TcpFlags::SYN | TcpFlags::FIN | TcpFlags::RST) != 0
        || (to_server && entry.admitted_directly != 0 && entry.to_server.packets == 1);
    // A control segment reports its ACK along with it (a FIN+ACK must not count twice).
    if acks_fin && !control && !report(EventKind::FinAcked, entry) {
        // Unreported: let the next ACK try again.
        if to_server {
            entry.to_client.fin_acked = 0;
        } else {
            entry.to_server.fin_acked = 0;
        }
    }
    if control && !report(EventKind::Control, entry) {
        return Verdict::new(Action::Drop, Counter::DropEventLost);
    }
    match lookup.route {
        Route::Direct => match route::send(ctx, guarded, &lookup.header) {
            Some(code) if code == Action::Redirect.xdp_code() => {
                Verdict::new(Action::Redirect, forwarded)
            }
            _ => Verdict::new(Action::Pass, forwarded),
        },
        // No next hop we can reach ourselves (or an IPv4 packet to fragment): the kernel
        // routes it.
        _ => Verdict::new(Action::Pass, forwarded),
    }
}

/// A SYN let straight through to the server (no cookie): the flow is recorded so that the
/// server's SYN-ACK joins it and its segments are forwarded; the SYN passes to the kernel.
#[inline(always)]
pub fn admit(guarded: &Guarded) -> Verdict {
    let syn = &guarded.tcp;
    let Some(entry) = NEW_FLOW.get_ptr_mut(0) else {
        return Verdict::new(Action::Drop, Counter::DropNoConfig);
    };
    // SAFETY: per-CPU entry, used only during this run of the program.
    let entry = unsafe { &mut *entry };
    let window_scale = match syn.options.window_scale {
        Some(shift) if shift > 14 => 14,
        Some(shift) => shift,
        None => NO_WINDOW_SCALE,
    };
    entry.begin(&FlowStart {
        phase: phase::ADMITTED,
        client_isn: syn.seq,
        // Client and server handshake with each other: the client's view of our ISN is the
        // server's, set at the join, so nothing is translated.
        guard_isn: 0,
        guard_tsval: 0,
        options: WireOptions {
            mss: match syn.options.mss {
                Some(mss) => mss,
                None => 0,
            },
            window_scale,
            sack_permitted: syn.options.sack_permitted as u8,
            ecn: syn.flags.has(TcpFlags::ECE | TcpFlags::CWR) as u8,
            timestamps: syn.options.timestamps.is_some() as u8,
            _pad: [0; 2],
        },
        client_shift: 0,
        client_view_of_server_shift: 0,
        now_coarse_ns: now_coarse_ns(),
        next_seq: syn.seq.wrapping_add(1),
        window: syn.window as u32, // a SYN's window is never scaled
    });
    if insert(&guarded.flow, entry).is_err() {
        return Verdict::new(Action::Drop, Counter::DropRewriteFailed);
    }
    if !events::report(
        EventKind::Admitted,
        TO_SERVER,
        &guarded.flow,
        syn,
        entry,
        0,
        0,
    ) {
        let _ = FLOWS.remove(&guarded.flow);
        return Verdict::new(Action::Drop, Counter::DropEventLost);
    }
    Verdict::new(Action::Pass, Counter::PassAdmitted)
}

/// The server's SYN-ACK to a SYN let straight through: the flow is joined with nothing to
/// translate (scaling as the two ends agreed it), and the SYN-ACK goes on to the client.
#[inline(always)]
pub fn join_direct(guarded: &Guarded, entry: &mut FlowEntry) -> Verdict {
    let syn_ack = &guarded.tcp;
    entry.server_isn = syn_ack.seq;
    entry.guard_isn = syn_ack.seq;
    if syn_ack.options.timestamps.is_some() && entry.options.timestamps != 0 {
        entry.server_timestamps = 1;
    }
    // Scaling holds only when both SYNs carried the option (RFC 7323 section 2.2).
    if let Some(shift) = syn_ack.options.window_scale
        && entry.options.window_scale != NO_WINDOW_SCALE
    {
        let shift = if shift > 14 { 14 } else { shift };
        entry.server_shift = shift;
        entry.client_view_of_server_shift = shift;
        entry.client_shift = entry.options.window_scale;
        entry.server_view_of_client_shift = entry.options.window_scale;
    }
    entry.server_mss = match syn_ack.options.mss {
        Some(mss) => mss,
        None => 0,
    };
    entry.to_client.next_seq = syn_ack.seq.wrapping_add(1);
    entry.to_client.window = syn_ack.window as u32;
    entry.phase = phase::JOINED;
    entry.last_seen_ns = now_coarse_ns();
    // Unreported, the controller catches up from the map when its backend timer fires.
    let _ = events::report(
        EventKind::Joined,
        TO_CLIENT,
        &guarded.flow,
        syn_ack,
        entry,
        0,
        0,
    );
    Verdict::new(Action::Pass, Counter::BackendJoined)
}

/// The server's SYN-ACK to our SYN: the flow's translation is now known. The SYN-ACK becomes
/// the client's window update (our SYN-ACK offered only `--early-data` bytes), so the client
/// sends the rest at once; the controller sends the server its ACK and the data held so far
/// (and a client that speaks first completes the server's handshake with its first segment
/// anyway).
#[inline(always)]
pub fn join(ctx: &XdpContext, guarded: &Guarded, entry: &mut FlowEntry) -> Verdict {
    let syn_ack = &guarded.tcp;
    entry.server_isn = syn_ack.seq;
    entry.seq_offset = syn_ack.seq.wrapping_sub(entry.guard_isn);
    // Timestamps hold on the joined connection only when both ends use them.
    let server_timestamps = match syn_ack.options.timestamps {
        Some(ts) if entry.options.timestamps != 0 => Some(ts),
        _ => None,
    };
    if let Some((tsval, _)) = server_timestamps {
        entry.ts_offset = tsval.wrapping_sub(entry.guard_tsval);
        entry.server_timestamps = 1;
    }
    // Scaling is on between client and server only when both SYNs carried the option
    // (RFC 7323 section 2.2); our SYN to the server carried the client's.
    if let Some(shift) = syn_ack.options.window_scale
        && entry.options.window_scale != synguard_common::maps::NO_WINDOW_SCALE
    {
        entry.server_shift = if shift > 14 { 14 } else { shift };
        entry.server_view_of_client_shift = entry.client_shift;
    }
    entry.server_mss = match syn_ack.options.mss {
        Some(mss) => mss,
        None => 0,
    };
    entry.to_client.next_seq = syn_ack.seq.wrapping_add(1);
    entry.to_client.window = syn_ack.window as u32; // a SYN's window is never scaled
    entry.phase = phase::JOINED;
    entry.last_seen_ns = now_coarse_ns();
    if !events::report(
        EventKind::Joined,
        TO_CLIENT,
        &guarded.flow,
        syn_ack,
        entry,
        0,
        0,
    ) {
        // The flow stays joined (the controller reads the phase from the map when its
        // backend timer fires); the client's window probe opens its window through the server.
        return Verdict::new(Action::Drop, Counter::DropEventLost);
    }
    let update = SegmentSpec {
        to_client: true,
        seq: entry.guard_isn.wrapping_add(1),
        ack: entry.client_isn.wrapping_add(1),
        flags: TcpFlags::ACK,
        window: rescale_window(syn_ack.window, 0, entry.client_view_of_server_shift),
        mss: 0,
        sack_permitted: false,
        timestamps: match server_timestamps {
            Some((tsval, tsecr)) => Some((tsval.wrapping_sub(entry.ts_offset), tsecr)),
            None => None,
        },
        window_scale: None,
    };
    emit(ctx, guarded, &update, false, Counter::BackendJoined)
}

/// A SYN-ACK again on a joined flow: the server missed our ACK. Answer it in the client's
/// name (XDP_TX back to the server).
#[inline(always)]
pub fn re_ack(ctx: &XdpContext, guarded: &Guarded, entry: &FlowEntry) -> Verdict {
    let syn_ack = &guarded.tcp;
    let ack = SegmentSpec {
        to_client: false,
        seq: entry.to_server.next_seq,
        ack: syn_ack.seq.wrapping_add(1),
        flags: TcpFlags::ACK,
        window: window_field(entry.to_server.window, entry.server_view_of_client_shift),
        mss: 0,
        sack_permitted: false,
        // Echo what the server sent; the client's clock value it last saw is still valid.
        timestamps: match syn_ack.options.timestamps {
            Some((tsval, tsecr)) if entry.server_timestamps != 0 => Some((tsecr, tsval)),
            _ => None,
        },
        window_scale: None,
    };
    emit(ctx, guarded, &ack, true, Counter::TxBackendAck)
}

/// A segment of a flow the guard no longer holds (idled out, evicted, or opened before the
/// guard came), from the client (`from_client`) or the server: what the other end would do
/// with a segment of no connection (RFC 9293 section 3.10.7.1), a RST whose sequence number is
/// the segment's acknowledgement, exactly what the sender expects next, sent back to it; so
/// that its end closes instead of talking to a peer that will never hear it (untranslated, the
/// segment would mean nothing to the other end). When the guard remembers forgetting the flow
/// (`FORGOTTEN`), the controller resets the other end too: a client's sequence number is the
/// server's own, a server's is put back into the client's view by the flow's offset.
/// Rate-limited per CPU.
#[inline(always)]
pub fn reset_forgotten(ctx: &XdpContext, guarded: &Guarded, from_client: bool) -> Verdict {
    if !tcp_checksum_holds(ctx, guarded) {
        return Verdict::new(Action::Drop, Counter::DropTcpChecksum);
    }
    let within = match RESET_BUDGET.get_ptr_mut(0) {
        // SAFETY: per-CPU value, only this CPU writes it.
        Some(bucket) => unsafe {
            (*bucket).take(
                now_coarse_ns(),
                FORGOTTEN_RESETS_PER_SECOND,
                FORGOTTEN_RESET_BURST,
                1,
            )
        },
        None => false,
    };
    if !within {
        return Verdict::new(Action::Drop, Counter::DropForgottenOverRate);
    }
    let tcp = &guarded.tcp;
    if let Some(forgotten) = FORGOTTEN.get_ptr(&guarded.flow) {
        // SAFETY: a live map value; only the controller writes it, whole.
        let offset = unsafe { (*forgotten).seq_offset };
        let (direction, other_seq, other_ack) = if from_client {
            (TO_SERVER, tcp.seq, tcp.ack.wrapping_add(offset))
        } else {
            (TO_CLIENT, tcp.seq.wrapping_sub(offset), tcp.ack)
        };
        // Unreported (the ring is full), the other end hears of it when it speaks.
        let _ = events::report_numbers(
            EventKind::Forgotten,
            direction,
            &guarded.flow,
            tcp,
            other_seq,
            other_ack,
            None,
            0,
            0,
        );
    }
    let reset = SegmentSpec {
        to_client: from_client,
        seq: tcp.ack,
        ack: 0,
        flags: TcpFlags::RST,
        window: 0,
        mss: 0,
        sack_permitted: false,
        timestamps: None,
        window_scale: None,
    };
    emit(ctx, guarded, &reset, true, Counter::TxResetForgotten)
}

/// A client's segment before the server answered: its data goes to the controller, which
/// sends it on after the join; the frame drops either way (a FIN or a bare ACK the client
/// sends again).
#[inline(always)]
pub fn hold_early_data(ctx: &XdpContext, guarded: &Guarded, entry: &FlowEntry) -> Verdict {
    let held = guarded.tcp.payload_len > 0 && events::report_early_data(ctx, guarded, entry);
    Verdict::new(
        Action::Drop,
        if held {
            Counter::EarlyDataHeld
        } else {
            Counter::DropAwaitingBackend
        },
    )
}

/// A RST before the server answered, from the client (`TO_SERVER`: the controller ends the
/// flow) or from the server (`TO_CLIENT`: it refused; the controller resets the client and
/// counts a backend failure). Reported, then dropped: there is no translation yet.
#[inline(always)]
pub fn reset_before_join(
    guarded: &Guarded,
    entry: &FlowEntry,
    direction: u8,
    reason: Counter,
) -> Verdict {
    let reported = events::report(
        EventKind::Control,
        direction,
        &guarded.flow,
        &guarded.tcp,
        entry,
        0,
        0,
    );
    Verdict::new(
        Action::Drop,
        if reported {
            reason
        } else {
            Counter::DropEventLost
        },
    )
}
