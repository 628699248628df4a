//! Flow events for the controller, through the ring buffer.

use aya_ebpf::programs::XdpContext;
use synguard_common::{
    cookie::FlowKey,
    maps::{EarlyData, EventKind, FlowEntry, FlowEvent, record_tag},
    parse::TcpSegment,
};

use crate::{FLOW_EVENTS, Guarded, frame::XdpFrame};

/// Reports `tcp` of `flow`; `seq`/`ack` are passed as the server sees them; `entry` is the
/// flow's (none for a flow the guard forgot: the event carries a zeroed one). False when the
/// ring buffer is full (the caller drops the segment, so the sender retransmits it).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn report_numbers(
    kind: EventKind,
    direction: u8,
    flow: &FlowKey,
    tcp: &TcpSegment,
    seq: u32,
    ack: u32,
    entry: Option<&FlowEntry>,
    receiver_next: u32,
    receiver_window: u32,
) -> bool {
    let Some(mut event) = FLOW_EVENTS.reserve::<FlowEvent>(0) else {
        return false;
    };
    // Written field by field into the ring buffer: no event-sized copy on the stack.
    let slot = event.as_mut_ptr();
    let (ts_val, ts_ecr) = match tcp.options.timestamps {
        Some(ts) => ts,
        None => (0, 0),
    };
    // SAFETY: the reservation holds one FlowEvent; every field is written before submit.
    unsafe {
        (*slot).tag = record_tag::FLOW_EVENT;
        (*slot).kind = kind as u8;
        (*slot).direction = direction;
        (*slot).flags = tcp.flags.0;
        (*slot).flow = *flow;
        (*slot).seq = seq;
        (*slot).ack = ack;
        (*slot).payload_len = tcp.payload_len as u32;
        (*slot).receiver_next = receiver_next;
        (*slot).receiver_window = receiver_window;
        (*slot).ts_val = ts_val;
        (*slot).ts_ecr = ts_ecr;
        match entry {
            Some(entry) => (*slot).entry = *entry,
            None => core::ptr::write_bytes(&mut (*slot).entry, 0, 1),
        }
    }
    event.submit(0);
    true
}

/// Reports `tcp` with its own sequence and acknowledgement numbers.
#[inline(always)]
pub fn report(
    kind: EventKind,
    direction: u8,
    flow: &FlowKey,
    tcp: &TcpSegment,
    entry: &FlowEntry,
    receiver_next: u32,
    receiver_window: u32,
) -> bool {
    report_numbers(
        kind,
        direction,
        flow,
        tcp,
        tcp.seq,
        tcp.ack,
        Some(entry),
        receiver_next,
        receiver_window,
    )
}

/// Hands the payload of a client's segment that came before its server joined `entry`'s flow
/// to the controller. False when there is no payload, more than a record holds, or no room.
#[inline(always)]
pub fn report_early_data(ctx: &XdpContext, guarded: &Guarded, entry: &FlowEntry) -> bool {
    let tcp = &guarded.tcp;
    let Some(mut record) = FLOW_EVENTS.reserve::<EarlyData>(0) else {
        return false;
    };
    let slot = record.as_mut_ptr();
    let payload_at = guarded.l4_offset as usize + tcp.header_len as usize;
    let (ts_val, ts_ecr) = match tcp.options.timestamps {
        Some(ts) => ts,
        None => (0, 0),
    };
    // SAFETY: the reservation holds one EarlyData; the payload is copied straight into it,
    // and every other field is written before submit.
    unsafe {
        if !XdpFrame(ctx).load_payload(payload_at, &mut (*slot).payload, tcp.payload_len as usize) {
            record.discard(0);
            return false;
        }
        (*slot).tag = record_tag::EARLY_DATA;
        (*slot)._pad = [0; 3];
        (*slot).flow = guarded.flow;
        (*slot).client_isn = entry.client_isn;
        (*slot).guard_isn = entry.guard_isn;
        (*slot).seq = tcp.seq;
        (*slot).ts_val = ts_val;
        (*slot).ts_ecr = ts_ecr;
        (*slot).window = tcp.window;
        (*slot).len = tcp.payload_len;
    }
    record.submit(0);
    true
}
