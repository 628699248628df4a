//! The controller's flow table on synthetic data-plane events, with a clock the test drives:
//! joins, backend SYN retransmission and timeout, refusals, TIME-WAIT (2*MSL, restarted by a
//! retransmitted FIN), idle timeouts, LRU evictions, late events of an older connection, and
//! the client data held until the server joins.

use synguard::{
    flows::table::{
        Command, EARLY_DATA_BUFFER_BYTES, FIRST_SYN_RETRANSMIT_NS, FlowTable, FlowTimers,
    },
    flows::{events::Event, tcp_state::State},
};
use synguard_common::{
    cookie::FlowKey,
    maps::{
        EARLY_DATA_MAX, EarlyData, EventKind, FlowEntry, FlowEvent, TO_CLIENT, TO_SERVER, phase,
        record_tag,
    },
    parse::TcpFlags as F,
};

const MS: u64 = 1_000_000;
const S: u64 = 1_000 * MS;
const CLIENT_ISN: u32 = 1000;
const COOKIE: u32 = 0x4000_0000;
const SERVER_ISN: u32 = 0x9000_0000;

fn key(port: u16) -> FlowKey {
    FlowKey::v4([198, 18, 1, 2], port, [198, 19, 1, 2], 80)
}

fn entry(joined: bool) -> FlowEntry {
    let mut entry = FlowEntry {
        client_isn: CLIENT_ISN,
        guard_isn: COOKIE,
        phase: if joined {
            phase::JOINED
        } else {
            phase::AWAITING_BACKEND
        },
        ..FlowEntry::default()
    };
    entry.to_server.next_seq = CLIENT_ISN + 1;
    entry.to_server.window = 64_000;
    if joined {
        entry.server_isn = SERVER_ISN;
    }
    entry
}

/// The event as the ring buffer's decoder hands it to the table.
fn decoded(event: &FlowEvent) -> Event {
    Event::decode(event).expect("a known kind and direction")
}

fn event(kind: u8, direction: u8, flags: u8, seq: u32, ack: u32) -> FlowEvent {
    FlowEvent {
        tag: record_tag::FLOW_EVENT,
        flow: key(40000),
        kind,
        direction,
        flags,
        seq,
        ack,
        entry: entry(kind != EventKind::Validated as u8),
        receiver_window: 64_000,
        ..FlowEvent::default()
    }
}

/// The third ACK's cookie validated.
fn validated() -> FlowEvent {
    event(
        EventKind::Validated as u8,
        TO_SERVER,
        F::ACK,
        CLIENT_ISN + 1,
        COOKIE + 1,
    )
}

/// The third ACK of another connection, from client port `port`.
fn validated_on(port: u16) -> FlowEvent {
    FlowEvent {
        flow: key(port),
        ..validated()
    }
}

/// A SYN, FIN or RST of the flow, as the data plane reports it.
fn control(direction: u8, flags: u8, seq: u32, ack: u32) -> FlowEvent {
    event(EventKind::Control as u8, direction, flags, seq, ack)
}

fn timers() -> FlowTimers {
    FlowTimers {
        msl_ns: S,
        backend_timeout_ns: 3 * S,
        ..FlowTimers::default()
    }
}

/// A table holding one joined, established flow (at time 0).
fn established() -> FlowTable {
    let mut table = FlowTable::new(timers());
    assert!(
        table
            .on_event(
                &decoded(&event(
                    EventKind::Validated as u8,
                    TO_SERVER,
                    F::ACK,
                    CLIENT_ISN + 1,
                    COOKIE + 1
                )),
                0
            )
            .is_empty()
    );
    let commands = table.on_event(
        &decoded(&event(
            EventKind::Joined as u8,
            TO_CLIENT,
            F::SYN | F::ACK,
            SERVER_ISN,
            CLIENT_ISN + 1,
        )),
        0,
    );
    assert_eq!(
        commands,
        [Command::AckServer {
            flow: key(40000),
            seq: CLIENT_ISN + 1,
            ack: SERVER_ISN + 1,
            window: 64_000,
            timestamps: None,
            payload: Vec::new(),
        }],
        "the server's handshake is completed in the client's name"
    );
    assert_eq!(state(&table), State::Established);
    table
}

fn state(table: &FlowTable) -> State {
    table.get(&key(40000)).expect("flow present").server.state
}

/// Map lookups as the data plane would answer them: the entry, last seen at `last_seen`.
fn map_with(joined: bool, last_seen: u64) -> impl Fn(&FlowKey) -> Option<FlowEntry> {
    move |_| {
        let mut entry = entry(joined);
        entry.last_seen_ns = last_seen;
        Some(entry)
    }
}

#[test]
fn backend_syn_is_retransmitted_then_the_client_reset() {
    let mut table = FlowTable::new(timers());
    table.on_event(&decoded(&validated()), 0);
    assert_eq!(state(&table), State::SynReceived);
    assert_eq!(table.awaiting_server(), 1);
    assert!(
        table
            .on_tick(FIRST_SYN_RETRANSMIT_NS - 1, map_with(false, 0))
            .is_empty()
    );
    let mut retransmits = Vec::new();
    for now in (1..=29).map(|tenth| tenth * 100 * MS) {
        for command in table.on_tick(now, map_with(false, 0)) {
            assert!(matches!(command, Command::SynServer { syn, .. } if syn.seq == CLIENT_ISN));
            retransmits.push(now);
        }
    }
    assert_eq!(
        retransmits,
        [300 * MS, 800 * MS, 1800 * MS],
        "250 ms, doubling"
    );
    let commands = table.on_tick(3 * S, map_with(false, 0));
    assert_eq!(
        commands,
        [
            Command::Reset {
                flow: key(40000),
                to_client: true,
                seq: COOKIE + 1,
                ack: CLIENT_ISN + 1
            },
            Command::Remove {
                flow: key(40000),
                guard_isn: COOKIE
            },
        ]
    );
    assert!(table.is_empty());
    assert_eq!(table.counts.backend_timeouts, 1);
}

#[test]
fn a_join_whose_event_was_lost_is_caught_up_from_the_map() {
    let mut table = FlowTable::new(timers());
    table.on_event(&decoded(&validated()), 0);
    let commands = table.on_tick(3 * S, map_with(true, 3 * S));
    assert!(matches!(commands[..], [Command::AckServer { ack, .. }] if ack == SERVER_ISN + 1));
    assert_eq!(state(&table), State::Established);
}

#[test]
fn a_refusing_server_resets_the_client() {
    let mut table = FlowTable::new(timers());
    table.on_event(&decoded(&validated()), 0);
    let mut refusal = control(TO_CLIENT, F::RST | F::ACK, 0, CLIENT_ISN + 1);
    refusal.entry = entry(false);
    let commands = table.on_event(&decoded(&refusal), 10 * MS);
    assert!(matches!(
        commands[0],
        Command::Reset { to_client: true, seq, .. } if seq == COOKIE + 1
    ));
    assert!(matches!(commands[1], Command::Remove { .. }));
    assert_eq!(table.counts.backend_refused, 1);
    assert!(table.is_empty());
}

#[test]
fn time_wait_lasts_two_msl_and_restarts_on_a_retransmitted_fin() {
    let mut table = established();
    // The server closes, the client acknowledges and closes: TIME-WAIT at t = 1 s.
    table.on_event(
        &decoded(&control(
            TO_CLIENT,
            F::FIN | F::ACK,
            SERVER_ISN + 1,
            CLIENT_ISN + 1,
        )),
        500 * MS,
    );
    assert_eq!(state(&table), State::FinWait1);
    let client_fin = control(TO_SERVER, F::FIN | F::ACK, CLIENT_ISN + 1, SERVER_ISN + 2);
    table.on_event(&decoded(&client_fin), S);
    assert_eq!(state(&table), State::TimeWait);
    assert!(table.on_tick(2 * S, map_with(true, S)).is_empty());
    // The client's FIN again at 2.5 s: TIME-WAIT now ends at 4.5 s, not 3 s.
    table.on_event(&decoded(&client_fin), 2500 * MS);
    assert_eq!(table.counts.time_wait_restarts, 1);
    assert!(table.on_tick(3 * S, map_with(true, 2500 * MS)).is_empty());
    let commands = table.on_tick(4500 * MS, map_with(true, 2500 * MS));
    assert_eq!(
        commands,
        [Command::Remove {
            flow: key(40000),
            guard_isn: COOKIE
        }]
    );
    assert_eq!(table.counts.closed, 1);
}

#[test]
fn last_ack_closes_at_once_and_resets_close_from_any_state() {
    let mut table = established();
    table.on_event(
        &decoded(&control(
            TO_SERVER,
            F::FIN | F::ACK,
            CLIENT_ISN + 1,
            SERVER_ISN + 1,
        )),
        MS,
    );
    assert_eq!(state(&table), State::CloseWait);
    assert_eq!(
        table.histogram()[State::CloseWait as usize],
        (State::CloseWait, 1)
    );
    table.on_event(
        &decoded(&control(
            TO_CLIENT,
            F::FIN | F::ACK,
            SERVER_ISN + 1,
            CLIENT_ISN + 2,
        )),
        2 * MS,
    );
    assert_eq!(state(&table), State::LastAck);
    let commands = table.on_event(
        &decoded(&event(
            EventKind::FinAcked as u8,
            TO_SERVER,
            F::ACK,
            CLIENT_ISN + 2,
            SERVER_ISN + 2,
        )),
        3 * MS,
    );
    assert!(matches!(commands[..], [Command::Remove { .. }]));
    assert!(table.is_empty());

    let mut table = established();
    let mut rst = control(TO_SERVER, F::RST, CLIENT_ISN + 1, 0);
    rst.receiver_next = CLIENT_ISN + 1;
    let commands = table.on_event(&decoded(&rst), MS);
    assert!(matches!(commands[..], [Command::Remove { .. }]));
    let mut table = established();
    rst.seq = CLIENT_ISN + 100; // in the window, not exactly next: a challenge ACK
    assert!(table.on_event(&decoded(&rst), MS).is_empty());
    assert_eq!(
        (state(&table), table.counts.challenge_acks),
        (State::Established, 1)
    );
}

#[test]
fn idle_flows_time_out_per_state() {
    let mut timers = timers();
    timers.idle_ns[State::Established as usize] = 10 * S;
    let mut table = established();
    table.timers = timers;
    assert!(table.on_tick(9 * S, map_with(true, 0)).is_empty());
    // Traffic at 5 s keeps it alive past 10 s.
    assert!(table.on_tick(14 * S, map_with(true, 5 * S)).is_empty());
    // 1000 bytes from the client, 5000 from the server, then silence.
    let silent = |_: &FlowKey| {
        let mut entry = entry(true);
        entry.seq_offset = SERVER_ISN.wrapping_sub(COOKIE);
        entry.to_server.next_seq = CLIENT_ISN + 1001;
        entry.to_client.next_seq = SERVER_ISN + 5001;
        entry.last_seen_ns = 5 * S;
        Some(entry)
    };
    let commands = table.on_tick(15 * S, silent);
    assert_eq!(
        commands,
        [
            Command::Reset {
                flow: key(40000),
                to_client: false,
                seq: CLIENT_ISN + 1001,
                ack: SERVER_ISN + 5001,
            },
            Command::Reset {
                flow: key(40000),
                to_client: true,
                seq: COOKIE + 5001,
                ack: CLIENT_ISN + 1001,
            },
            Command::RememberForgotten {
                flow: key(40000),
                seq_offset: SERVER_ISN.wrapping_sub(COOKIE),
                forgotten_ns: 15 * S,
            },
            Command::Remove {
                flow: key(40000),
                guard_isn: COOKIE
            },
        ],
        "both ends reset exactly where each expects the other's next segment, remembered \
         should a reset get lost, then removed"
    );
    assert_eq!(table.counts.idle_timeouts, 1);
}

#[test]
fn an_idle_established_flow_is_kept_five_days_by_default() {
    let timers = FlowTimers::default();
    assert_eq!(
        timers.idle_ns[State::Established as usize],
        5 * 24 * 3600 * S,
        "conntrack's default: longer than the 2 hours before Linux's first keepalive probe"
    );
}

#[test]
fn evicted_entries_and_late_events_of_older_connections() {
    let mut table = established();
    assert_eq!(
        table.on_tick(S, |_| None),
        [Command::RememberForgotten {
            flow: key(40000),
            seq_offset: SERVER_ISN.wrapping_sub(COOKIE),
            forgotten_ns: S,
        }],
        "nothing to remove, it is gone; its ends still hold it: remembered"
    );
    assert!(table.is_empty());
    assert_eq!(table.counts.evicted, 1);

    // Evicted before its server answered: the client, which thinks itself connected, is
    // reset at once.
    let mut table = FlowTable::new(timers());
    table.on_event(&decoded(&validated()), 0);
    assert_eq!(
        table.on_tick(S, |_| None),
        [Command::Reset {
            flow: key(40000),
            to_client: true,
            seq: COOKIE + 1,
            ack: CLIENT_ISN + 1,
        }]
    );
    assert!(table.is_empty());

    let mut table = established();
    let mut stale = control(TO_SERVER, F::RST, CLIENT_ISN + 1, 0);
    stale.entry.guard_isn = COOKIE ^ 1; // another connection on the same tuple
    stale.receiver_next = CLIENT_ISN + 1;
    assert!(table.on_event(&decoded(&stale), MS).is_empty());
    assert_eq!(state(&table), State::Established);
}

#[test]
fn a_forgotten_flows_other_end_is_reset_with_the_data_planes_numbers() {
    for (direction, to_client) in [(TO_SERVER, false), (TO_CLIENT, true)] {
        let mut table = FlowTable::new(timers());
        let mut spoke = event(EventKind::Forgotten as u8, direction, F::ACK, 1234, 5678);
        spoke.entry = FlowEntry::default();
        assert_eq!(
            table.on_event(&decoded(&spoke), S),
            [
                Command::Reset {
                    flow: key(40000),
                    to_client,
                    seq: 1234,
                    ack: 5678,
                },
                Command::ClearForgotten { flow: key(40000) },
            ],
            "the data plane reset the end that spoke; the other is ours"
        );
        assert_eq!(table.counts.forgotten_reset, 1);
    }
}

/// A flow let straight through (auto mode under its threshold): the data plane's entry before
/// and after the server's SYN-ACK.
fn direct_entry(joined: bool) -> FlowEntry {
    let mut entry = FlowEntry {
        client_isn: CLIENT_ISN,
        guard_isn: if joined { SERVER_ISN } else { 0 },
        server_isn: if joined { SERVER_ISN } else { 0 },
        phase: if joined {
            phase::JOINED
        } else {
            phase::ADMITTED
        },
        admitted_directly: 1,
        ..FlowEntry::default()
    };
    entry.to_server.next_seq = CLIENT_ISN + 1;
    entry
}

#[test]
fn a_direct_flow_is_tracked_without_acting_for_either_end() {
    let mut table = FlowTable::new(timers());
    let admitted = FlowEvent {
        entry: direct_entry(false),
        ..event(EventKind::Admitted as u8, TO_SERVER, F::SYN, CLIENT_ISN, 0)
    };
    assert!(table.on_event(&decoded(&admitted), 0).is_empty());
    assert_eq!(table.counts.admitted, 1);
    assert!(
        table
            .on_tick(2 * S, |_| Some(direct_entry(false)))
            .is_empty(),
        "no SYN retransmission: the client retransmits its own"
    );
    let joined = FlowEvent {
        entry: direct_entry(true),
        ..event(
            EventKind::Joined as u8,
            TO_CLIENT,
            F::SYN | F::ACK,
            SERVER_ISN,
            CLIENT_ISN + 1,
        )
    };
    assert!(
        table.on_event(&decoded(&joined), 2 * S).is_empty(),
        "no ACK in the client's name"
    );
    let flow = table.get(&key(40000)).unwrap();
    assert_eq!(flow.server.state, State::SynReceived);
    assert_eq!(
        flow.guard_isn, SERVER_ISN,
        "the client sees the server's ISN"
    );
    let third_ack = FlowEvent {
        entry: direct_entry(true),
        ..control(TO_SERVER, F::ACK, CLIENT_ISN + 1, SERVER_ISN + 1)
    };
    table.on_event(&decoded(&third_ack), 2 * S);
    assert_eq!(
        table.get(&key(40000)).unwrap().server.state,
        State::Established
    );
}

#[test]
fn a_direct_flow_the_server_never_answers_is_forgotten_without_a_reset() {
    let mut table = FlowTable::new(timers());
    let admitted = FlowEvent {
        entry: direct_entry(false),
        ..event(EventKind::Admitted as u8, TO_SERVER, F::SYN, CLIENT_ISN, 0)
    };
    table.on_event(&decoded(&admitted), 0);
    let commands = table.on_tick(3 * S, |_| Some(direct_entry(false)));
    assert_eq!(
        commands,
        [Command::Remove {
            flow: key(40000),
            guard_isn: 0
        }]
    );
    assert_eq!(table.counts.backend_timeouts, 1);
    assert!(table.is_empty());
}

#[test]
fn a_restarted_controller_reads_each_state_from_the_data_plane() {
    use synguard::flows::table::server_end_of;
    // (client FIN seen, acked; server FIN seen, acked) -> the server's end.
    let table = [
        ((false, false, false, false), State::Established),
        ((true, false, false, false), State::CloseWait),
        ((true, true, false, false), State::CloseWait),
        ((false, false, true, false), State::FinWait1),
        ((false, false, true, true), State::FinWait2),
        ((true, true, true, false), State::LastAck),
        ((true, false, true, false), State::Closing),
        ((true, true, true, true), State::TimeWait),
    ];
    for ((client_fin, client_acked, server_fin, server_acked), state) in table {
        let mut entry = entry(true);
        entry.to_server.fin_seen = client_fin as u8;
        entry.to_server.fin_acked = client_acked as u8;
        entry.to_client.fin_seen = server_fin as u8;
        entry.to_client.fin_acked = server_acked as u8;
        entry.to_client.next_seq = SERVER_ISN + 101;
        entry.to_client.fin_seq = SERVER_ISN + 100;
        let server = server_end_of(&entry);
        assert_eq!(
            server.state, state,
            "{client_fin} {client_acked} {server_fin} {server_acked}"
        );
        assert_eq!(server.rcv_nxt, CLIENT_ISN + 1);
        assert_eq!(server.snd_nxt, SERVER_ISN + 101);
        assert_eq!(server.fin_seq, server_fin.then_some(SERVER_ISN + 100));
    }
    assert_eq!(server_end_of(&entry(false)).state, State::SynReceived);

    // Adopted, an established flow then closes as usual.
    let mut table = FlowTable::new(timers());
    let mut joined = entry(true);
    joined.to_client.next_seq = SERVER_ISN + 1;
    table.adopt(key(40000), &joined, 0);
    assert_eq!(table.counts.adopted, 1);
    let fin = control(TO_SERVER, F::FIN | F::ACK, CLIENT_ISN + 1, SERVER_ISN + 1);
    table.on_event(&decoded(&fin), S);
    assert_eq!(
        table.get(&key(40000)).unwrap().server.state,
        State::CloseWait
    );
}

/// A client's data segment before the join, as the data plane hands it over.
fn early(seq: u32, payload: &[u8], ts_val: u32) -> EarlyData {
    let mut data = EarlyData {
        tag: record_tag::EARLY_DATA,
        _pad: [0; 3],
        flow: key(40000),
        client_isn: CLIENT_ISN,
        guard_isn: COOKIE,
        seq,
        ts_val,
        ts_ecr: 777, // our SYN-ACK's TSval
        window: 500,
        len: payload.len() as u16,
        payload: [0; EARLY_DATA_MAX],
    };
    data.payload[..payload.len()].copy_from_slice(payload);
    data
}

/// The server's SYN-ACK joined the flow; both ends use timestamps, the server's clock runs
/// 1000 ahead of ours, and the client scales its window by 2^7 on both sides.
fn joined_with_timestamps() -> FlowEvent {
    let mut joined = event(
        EventKind::Joined as u8,
        TO_CLIENT,
        F::SYN | F::ACK,
        SERVER_ISN,
        CLIENT_ISN + 1,
    );
    joined.entry.server_timestamps = 1;
    joined.entry.ts_offset = 1000;
    joined.entry.client_shift = 7;
    joined.entry.server_view_of_client_shift = 7;
    (joined.ts_val, joined.ts_ecr) = (1777, 41);
    joined
}

/// What the controller sends the server for a held segment.
fn to_server(seq: u32, payload: &[u8], ts_val: u32) -> Command {
    Command::AckServer {
        flow: key(40000),
        seq,
        ack: SERVER_ISN + 1,
        window: 500,
        timestamps: Some((ts_val, 777 + 1000)),
        payload: payload.to_vec(),
    }
}

#[test]
fn early_data_waits_for_the_join_then_goes_in_order_as_the_server_sees_it() {
    let mut table = FlowTable::new(timers());
    table.on_event(&decoded(&validated()), 0);
    let world = early(CLIENT_ISN + 6, b"world", 51);
    let hello = early(CLIENT_ISN + 1, b"hello", 50);
    assert!(table.on_early_data(&world).is_empty(), "held");
    assert!(table.on_early_data(&hello).is_empty(), "held");
    assert!(
        table.on_early_data(&hello).is_empty(),
        "a retransmission is held once"
    );
    let commands = table.on_event(&decoded(&joined_with_timestamps()), MS);
    assert_eq!(
        commands,
        [
            Command::AckServer {
                flow: key(40000),
                seq: CLIENT_ISN + 1,
                ack: SERVER_ISN + 1,
                window: 500, // 64,000 >> 7
                timestamps: Some((41, 1777)),
                payload: Vec::new(),
            },
            to_server(CLIENT_ISN + 1, b"hello", 50),
            to_server(CLIENT_ISN + 6, b"world", 51),
        ],
        "the handshake's ACK, then the data in sequence order, acknowledging the server's \
         SYN and echoing its clock"
    );
    let counts = &table.counts;
    assert_eq!(
        (
            counts.early_data_held,
            counts.early_data_sent,
            counts.early_data_refused
        ),
        (2, 2, 1)
    );
    let server = table.get(&key(40000)).unwrap().server;
    assert_eq!(
        (server.state, server.rcv_nxt),
        (State::Established, CLIENT_ISN + 11),
        "the server's end has received the ten bytes"
    );

    // A record that crossed the join in the ring goes at once.
    let late = early(CLIENT_ISN + 11, b"!", 52);
    assert_eq!(
        table.on_early_data(&late),
        [to_server(CLIENT_ISN + 11, b"!", 52)]
    );
}

#[test]
fn early_data_of_no_flow_or_another_connection_is_refused() {
    let mut table = FlowTable::new(timers());
    assert!(
        table
            .on_early_data(&early(CLIENT_ISN + 1, b"x", 1))
            .is_empty()
    );
    table.on_event(&decoded(&validated()), 0);
    let mut older = early(CLIENT_ISN + 1, b"x", 1);
    older.guard_isn = COOKIE - 5;
    assert!(table.on_early_data(&older).is_empty());
    assert_eq!(table.counts.early_data_refused, 2);
    assert_eq!(table.counts.early_data_held, 0);
}

#[test]
fn early_data_is_held_within_our_window_only() {
    let mut table = FlowTable::new(timers());
    table.early_data_window = 100;
    table.on_event(&decoded(&validated()), 0);
    table.on_early_data(&early(CLIENT_ISN + 1, &[b'a'; 100], 1));
    table.on_early_data(&early(CLIENT_ISN + 101, b"b", 1));
    assert_eq!(
        (
            table.counts.early_data_held,
            table.counts.early_data_refused
        ),
        (1, 1),
        "the byte past the window is refused"
    );
}

#[test]
fn early_data_is_bounded_and_freed_when_its_flows_end() {
    let mut table = FlowTable::new(timers());
    table.early_data_window = u16::MAX.into();
    let full = [b'a'; EARLY_DATA_MAX];
    let per_flow = u16::MAX as usize / EARLY_DATA_MAX;
    let fits = EARLY_DATA_BUFFER_BYTES / EARLY_DATA_MAX;
    // Flows that each fill our largest window, until the next segment finds no room.
    for i in 0..=fits {
        let port = 1 + (i / per_flow) as u16;
        let seq = CLIENT_ISN + 1 + ((i % per_flow) * EARLY_DATA_MAX) as u32;
        if i % per_flow == 0 {
            table.on_event(&decoded(&validated_on(port)), 0);
        }
        let mut data = early(seq, &full, 1);
        data.flow = key(port);
        table.on_early_data(&data);
    }
    assert_eq!(table.counts.early_data_held, fits as u64);
    assert_eq!(table.counts.early_data_refused, 1, "the one past the bound");

    // A new connection on a tuple frees what the old one held.
    table.on_event(&decoded(&validated_on(1)), 0);
    let mut data = early(CLIENT_ISN + 1, &full, 1);
    data.flow = key(1);
    table.on_early_data(&data);
    assert_eq!(table.counts.early_data_held, fits as u64 + 1);

    // The servers never answer: the flows end, and their bytes are free again.
    table.on_tick(3 * S, map_with(false, 0));
    assert!(table.is_empty());
    table.on_event(&decoded(&validated()), 3 * S);
    for i in 0..per_flow {
        let seq = CLIENT_ISN + 1 + (i * EARLY_DATA_MAX) as u32;
        table.on_early_data(&early(seq, &full, 1));
    }
    assert_eq!(
        table.counts.early_data_held,
        (fits + 1 + per_flow) as u64,
        "nothing refused"
    );
}

#[test]
fn early_data_of_a_client_without_timestamps_or_scaling_goes_as_it_came() {
    let mut table = FlowTable::new(timers());
    table.on_event(&decoded(&validated()), 0);
    let mut request = early(CLIENT_ISN + 1, b"GET /", 0);
    request.ts_ecr = 0;
    table.on_early_data(&request);
    let joined = event(
        EventKind::Joined as u8,
        TO_CLIENT,
        F::SYN | F::ACK,
        SERVER_ISN,
        CLIENT_ISN + 1,
    );
    let commands = table.on_event(&decoded(&joined), MS);
    assert_eq!(
        commands.last().unwrap(),
        &Command::AckServer {
            flow: key(40000),
            seq: CLIENT_ISN + 1,
            ack: SERVER_ISN + 1,
            window: 500,
            timestamps: None,
            payload: b"GET /".to_vec(),
        }
    );
}
