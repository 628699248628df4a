//! The controller's event path on its own: validated-and-joined flows fed straight into the
//! flow table, as fast as it takes them (median of repeats), and the memory each tracked flow
//! costs. Run by `cargo xtask bench forward`; prints one JSON line last.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering},
    time::Instant,
};

use synguard::flows::{
    events::Event,
    table::{FlowTable, FlowTimers},
};
use synguard_common::{
    cookie::FlowKey,
    maps::{EventKind, FlowEntry, FlowEvent, TO_CLIENT, TO_SERVER, phase, record_tag},
    parse::TcpFlags,
};

/// Counts live heap bytes, to measure what the table holds per flow.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const FLOWS: u32 = 200_000;
const REPEATS: usize = 5;

fn events(i: u32) -> [Event; 2] {
    let flow = FlowKey::v4(
        [198, 18, (i >> 16) as u8, (i >> 8) as u8],
        (i % 60000) as u16 + 1024,
        [198, 19, 1, 2],
        80,
    );
    let mut entry = FlowEntry {
        client_isn: i.wrapping_mul(2_654_435_761),
        guard_isn: i,
        phase: phase::AWAITING_BACKEND,
        ..FlowEntry::default()
    };
    entry.to_server.next_seq = entry.client_isn.wrapping_add(1);
    let validated = FlowEvent {
        tag: record_tag::FLOW_EVENT,
        flow,
        kind: EventKind::Validated as u8,
        direction: TO_SERVER,
        flags: TcpFlags::ACK,
        entry,
        ..FlowEvent::default()
    };
    entry.phase = phase::JOINED;
    entry.server_isn = i ^ 0x5555_5555;
    let joined = FlowEvent {
        kind: EventKind::Joined as u8,
        direction: TO_CLIENT,
        flags: TcpFlags::SYN | TcpFlags::ACK,
        seq: entry.server_isn,
        ack: entry.client_isn.wrapping_add(1),
        entry,
        ..validated
    };
    [validated, joined].map(|wire| Event::decode(&wire).expect("a known kind"))
}

fn main() {
    let feed: Vec<[Event; 2]> = (0..FLOWS).map(events).collect();
    let mut rates = Vec::new();
    let mut bytes_per_flow = 0.0;
    for _ in 0..REPEATS {
        let before = LIVE.load(Ordering::Relaxed);
        let mut table = FlowTable::new(FlowTimers::default());
        let started = Instant::now();
        for (n, [validated, joined]) in feed.iter().enumerate() {
            let now = n as u64 * 1000;
            std::hint::black_box(table.on_event(validated, now));
            std::hint::black_box(table.on_event(joined, now));
        }
        rates.push(FLOWS as f64 / started.elapsed().as_secs_f64());
        assert_eq!(table.len(), FLOWS as usize);
        bytes_per_flow = (LIVE.load(Ordering::Relaxed) - before) as f64 / FLOWS as f64;
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[REPEATS / 2];
    // The data plane's share: key and value of the flows map (the kernel adds its own
    // per-element header, about 50 bytes for an LRU hash).
    let map_bytes = size_of::<FlowKey>() + size_of::<FlowEntry>();
    println!(
        "controller: {median:.0} validated+joined flows/s (median of {REPEATS} x {FLOWS}); \
         {bytes_per_flow:.0} heap bytes per tracked flow; {map_bytes} bytes of flows-map key+value"
    );
    println!(
        "{}",
        serde_json::json!({
            "flows_per_s": median,
            "flows_per_s_runs": rates,
            "controller_bytes_per_flow": bytes_per_flow,
            "map_key_value_bytes_per_flow": map_bytes,
        })
    );
}
