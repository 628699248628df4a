//! Flow events for the controller, through the ring buffer.

use synguard_common::{
    cookie::FlowKey,
    maps::{FlowEntry, FlowEvent},
    parse::TcpSegment,
};

use crate::FLOW_EVENTS;

/// Reports `tcp` of `flow`; `seq`/`ack` are passed as the server sees them. False when the
/// ring buffer is full (the caller drops the segment, so the sender retransmits it).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn report_numbers(
    kind: u8,
    direction: u8,
    flow: &FlowKey,
    tcp: &TcpSegment,
    seq: u32,
    ack: u32,
    entry: &FlowEntry,
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
        (*slot).flow = *flow;
        (*slot).kind = kind;
        (*slot).direction = direction;
        (*slot).flags = tcp.flags.0;
        (*slot)._pad = 0;
        (*slot).seq = seq;
        (*slot).ack = ack;
        (*slot).payload_len = tcp.payload_len as u32;
        (*slot).receiver_next = receiver_next;
        (*slot).receiver_window = receiver_window;
        (*slot).ts_val = ts_val;
        (*slot).ts_ecr = ts_ecr;
        (*slot).entry = *entry;
    }
    event.submit(0);
    true
}

/// Reports `tcp` with its own sequence and acknowledgement numbers.
#[inline(always)]
pub fn report(
    kind: u8,
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
        entry,
        receiver_next,
        receiver_window,
    )
}
