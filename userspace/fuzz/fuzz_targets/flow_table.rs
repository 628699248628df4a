//! The controller's flow table fed any sequence of data-plane records and timer ticks (four
//! tuples, every event kind either way, any flags and numbers, entries evicted at random):
//! it never panics, its state histogram always counts every flow it holds, and every command
//! it returns is about one of the flows it was told of.
#![no_main]

use libfuzzer_sys::fuzz_target;
use synguard::flows::{
    events::Event,
    table::{Command, FlowTable, FlowTimers},
};
use synguard_common::{
    cookie::FlowKey,
    maps::{
        EARLY_DATA_MAX, EarlyData, EventKind, FlowEntry, FlowEvent, TO_CLIENT, TO_SERVER, phase,
        record_tag,
    },
};

const MS: u64 = 1_000_000;

fn key(index: u8) -> FlowKey {
    FlowKey::v4(
        [198, 18, 1, 2],
        40_000 + u16::from(index % 4),
        [198, 19, 1, 2],
        80,
    )
}

/// The data plane's entry of flow `index`, as far as it got.
fn entry(index: u8, joined: bool, step: &[u8; 12]) -> FlowEntry {
    let client_isn = 1000 * u32::from(index % 4);
    let mut entry = FlowEntry {
        client_isn,
        guard_isn: 0x4000_0000 + client_isn,
        phase: if joined {
            phase::JOINED
        } else {
            phase::AWAITING_BACKEND
        },
        ..FlowEntry::default()
    };
    if joined {
        entry.server_isn = 0x9000_0000 + client_isn;
        entry.seq_offset = entry.server_isn.wrapping_sub(entry.guard_isn);
    }
    entry.to_server.next_seq = client_isn.wrapping_add(u32::from(step[4]));
    entry.to_client.next_seq = entry.server_isn.wrapping_add(u32::from(step[5]));
    entry.to_server.fin_seen = step[6] & 1;
    entry.to_client.fin_seen = step[6] >> 1 & 1;
    entry.to_server.fin_acked = step[6] >> 2 & 1;
    entry.to_client.fin_acked = step[6] >> 3 & 1;
    entry
}

fuzz_target!(|data: &[u8]| {
    let mut table = FlowTable::new(FlowTimers {
        msl_ns: 1000 * MS,
        ..FlowTimers::default()
    });
    let mut now = 0u64;
    let keys: Vec<FlowKey> = (0..4).map(key).collect();
    for step in data.chunks_exact(12) {
        let step: &[u8; 12] = step.try_into().unwrap();
        let (op, index, flags) = (step[0] % 8, step[1], step[2]);
        now += u64::from(step[3]) * 50 * MS;
        let word = |at: usize| u32::from_le_bytes(step[at..at + 4].try_into().unwrap());
        let commands = match op {
            0..=5 => {
                let kind = EventKind::from_wire(op + 1).unwrap();
                let wire = FlowEvent {
                    tag: record_tag::FLOW_EVENT,
                    kind: kind as u8,
                    direction: if flags & 0x80 != 0 {
                        TO_CLIENT
                    } else {
                        TO_SERVER
                    },
                    flags: flags & 0x3f,
                    flow: key(index),
                    seq: word(4),
                    ack: word(8),
                    payload_len: u32::from(step[7]),
                    receiver_next: word(4).wrapping_add(u32::from(step[6])),
                    receiver_window: 65535,
                    entry: entry(
                        index,
                        kind != EventKind::Validated && kind != EventKind::Admitted,
                        step,
                    ),
                    ..FlowEvent::default()
                };
                table.on_event(&Event::decode(&wire).unwrap(), now)
            }
            6 => table.on_tick(now, |flow| {
                let index = (flow.client_port - 40_000) as u8;
                (step[index as usize + 4] % 5 != 0).then(|| {
                    let mut entry = entry(index, step[8] & 1 != 0, step);
                    entry.last_seen_ns = now.saturating_sub(u64::from(step[9]) * 1000 * MS);
                    entry
                })
            }),
            _ => {
                let data = EarlyData {
                    tag: record_tag::EARLY_DATA,
                    _pad: [0; 3],
                    flow: key(index),
                    client_isn: 1000 * u32::from(index % 4),
                    guard_isn: 0x4000_0000 + 1000 * u32::from(index % 4),
                    seq: word(4),
                    ts_val: 0,
                    ts_ecr: 0,
                    window: 502,
                    len: (word(8) % (EARLY_DATA_MAX as u32 + 1)) as u16,
                    payload: [0; EARLY_DATA_MAX],
                };
                table.on_early_data(&data)
            }
        };
        let counted: usize = table.histogram().iter().map(|(_, n)| n).sum();
        assert_eq!(counted, table.len());
        for command in &commands {
            let flow = match command {
                Command::SynServer { flow, .. }
                | Command::AckServer { flow, .. }
                | Command::Reset { flow, .. }
                | Command::Remove { flow, .. }
                | Command::RememberForgotten { flow, .. }
                | Command::ClearForgotten { flow } => flow,
            };
            assert!(keys.contains(flow), "{command:?}");
        }
    }
});
