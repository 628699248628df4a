//! The controller's table of validated flows: each flow's TCP state, its timers, and what the
//! controller must do about them.
//!
//! Who does what, and why:
//! - The data plane does everything per packet, because a SYN flood must never wait on
//!   userspace: the cookie SYN-ACK; on a valid third ACK, the flow entry and the SYN to the
//!   server (the client's ISN and options, rewritten from the ACK in place); on the server's
//!   SYN-ACK, the translation offsets and the client's window update (our SYN-ACK offered
//!   only `--early-data` bytes); forwarding with translation. Data a client sends before the
//!   join it hands to the controller (it cannot hold a frame).
//! - The controller owns the decision and the lifetime: it answers the server's SYN-ACK with
//!   the ACK that completes the server's handshake (a client that speaks first completes it
//!   anyway with its first segment) and sends it the client's held data in the client's
//!   name, translated as the data plane would; it resets the client when the server refuses
//!   or never answers, runs the state machine of every flow from the control segments the
//!   data plane reports, and removes flows from the data plane when they close, idle out or
//!   time out.
//!
//! Time is passed in (monotonic nanoseconds, the data plane's coarse clock) so tests drive it.

use std::collections::HashMap;

use synguard_common::{
    cookie::FlowKey,
    maps::{
        EARLY_DATA_MAX, EarlyData, EventKind, FlowDirection, FlowEntry, FlowEvent, NO_WINDOW_SCALE,
        phase,
    },
    parse::TcpFlags,
    segment::EARLY_DATA_WINDOW,
    seq::{rescale_window, window_field},
};

use crate::{
    control::protocol::{FlowRow, FlowStatus, Traffic},
    flows::{
        events::{Direction, Event, client, server},
        tcp_state::{Endpoint, Reaction, Segment, State},
    },
};

/// Timers of the flow table.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowTimers {
    /// Maximum segment lifetime; TIME-WAIT lasts twice this (RFC 9293 section 3.4.2).
    pub msl_ns: u64,
    /// How long the server may take to answer our SYN before the client is reset.
    pub backend_timeout_ns: u64,
    /// Idle timeout per state (indexed like `State::ALL`); 0 means never.
    pub idle_ns: [u64; 11],
}

const SECOND: u64 = 1_000_000_000;

impl Default for FlowTimers {
    fn default() -> Self {
        let mut idle_ns = [0; 11];
        for (state, seconds) in DEFAULT_IDLE_SECONDS {
            idle_ns[state as usize] = seconds * SECOND;
        }
        Self {
            msl_ns: 60 * SECOND,
            backend_timeout_ns: 5 * SECOND,
            idle_ns,
        }
    }
}

/// Idle timeouts by state (seconds): netfilter conntrack's defaults, ESTABLISHED's 5 days
/// among them (Linux's TCP keepalive first probes after 2 hours); CLOSE-WAIT longer than
/// conntrack's minute, since a flow the guard forgets is cut, where conntrack picks it up
/// again.
pub const DEFAULT_IDLE_SECONDS: [(State, u64); 8] = [
    (State::SynReceived, 60),
    (State::Established, 5 * 24 * 3600),
    (State::FinWait1, 120),
    (State::FinWait2, 120),
    (State::CloseWait, 3600),
    (State::Closing, 120),
    (State::LastAck, 30),
    (State::SynSent, 120),
];

/// One validated flow, as the controller knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Flow {
    /// The protected server's end of the connection.
    pub server: Endpoint,
    /// The server answered our SYN (or, let straight through, the client's).
    pub joined: bool,
    /// Let straight through without a cookie: client and server handshake with each other,
    /// so the controller neither retransmits the SYN nor acknowledges for the client.
    pub direct: bool,
    pub client_isn: u32,
    pub guard_isn: u32,
    pub server_isn: u32,
    pub validated_ns: u64,
    pub state_since_ns: u64,
    /// When TIME-WAIT ends (2*MSL after entering it or after the last FIN).
    pub time_wait_until_ns: u64,
    /// The SYN to the server, kept for retransmission until the server answers (a server
    /// with a full accept queue drops SYNs and waits for the retransmission).
    pub backend_syn: BackendSyn,
    /// When the SYN goes out again, and the interval after that (doubling, RFC 6298).
    pub syn_retransmit_at_ns: u64,
    pub syn_retransmit_interval_ns: u64,
    /// Data the client sent before the server joined, held until the join.
    pub early_data: Vec<EarlySegment>,
    /// How the client's segments read on the server's side, known from the join on.
    pub to_server: Option<ServerView>,
}

/// A client's data segment held for its server (see `synguard_common::maps::EarlyData`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EarlySegment {
    pub seq: u32,
    pub ts_val: u32,
    pub ts_ecr: u32,
    pub window: u16,
    pub payload: Vec<u8>,
}

/// What the data plane's translation does to a client's segment, for the segments the
/// controller sends in the client's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerView {
    /// The server's ISN + 1: what a client segment acknowledges before the server sent data.
    pub ack: u32,
    /// Added to the client's TSecr, when both ends use timestamps.
    pub ts_offset: Option<u32>,
    pub client_shift: u8,
    pub server_view_of_client_shift: u8,
}

impl ServerView {
    fn of(entry: &FlowEntry) -> Self {
        Self {
            ack: entry.server_isn.wrapping_add(1),
            ts_offset: (entry.server_timestamps != 0).then_some(entry.ts_offset),
            client_shift: entry.client_shift,
            server_view_of_client_shift: entry.server_view_of_client_shift,
        }
    }

    /// The client's held segment as the server must see it.
    fn send(&self, flow: &FlowKey, segment: EarlySegment) -> Command {
        Command::AckServer {
            flow: *flow,
            seq: segment.seq,
            ack: self.ack,
            window: rescale_window(
                segment.window,
                self.client_shift,
                self.server_view_of_client_shift,
            ),
            timestamps: self
                .ts_offset
                .map(|offset| (segment.ts_val, segment.ts_ecr.wrapping_add(offset))),
            payload: segment.payload,
        }
    }
}

/// Most early data the controller holds for all flows together: a client that completed a
/// handshake to a server that does not answer cannot grow it past this.
pub const EARLY_DATA_BUFFER_BYTES: usize = 16 << 20;

/// What the data plane's SYN to the server carried: the client's ISN and options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendSyn {
    pub seq: u32,
    pub window: u16,
    pub mss: u16,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    pub ecn: bool,
    /// The client's TSval (from its third ACK), when it uses timestamps.
    pub tsval: Option<u32>,
}

/// First retransmission of the backend SYN; it doubles after each.
pub const FIRST_SYN_RETRANSMIT_NS: u64 = 250_000_000;

/// What the controller must do in the world after an event or a tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Send the SYN to the server again (it has not answered).
    SynServer { flow: FlowKey, syn: BackendSyn },
    /// Complete the server's handshake in the client's name, or (with a payload) send it the
    /// data the client sent before the join.
    AckServer {
        flow: FlowKey,
        seq: u32,
        ack: u32,
        window: u16,
        timestamps: Option<(u32, u32)>,
        payload: Vec<u8>,
    },
    /// Reset one end: the client (in the server's name) when the server refused or never
    /// answered, or either end when the flow idled out.
    Reset {
        flow: FlowKey,
        to_client: bool,
        seq: u32,
        ack: u32,
    },
    /// Remove the flow from the data plane, if the entry there is still this connection's.
    Remove { flow: FlowKey, guard_isn: u32 },
    /// Remember, for the data plane, a flow let go of while its ends may still hold it
    /// (`synguard_common::maps::ForgottenFlow`), so that both are reset when either speaks.
    RememberForgotten {
        flow: FlowKey,
        seq_offset: u32,
        forgotten_ns: u64,
    },
    /// Both ends of a forgotten flow have their resets: forget it for good.
    ClearForgotten { flow: FlowKey },
}

/// What an event of a known flow brings.
#[derive(Clone, Copy)]
enum Step {
    /// The server's SYN-ACK.
    Join,
    /// A SYN, FIN or RST.
    Control,
    /// The first ACK of the other direction's FIN.
    FinAcked,
}

/// Why flows ended, and other events worth counting.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FlowCounts {
    pub validated: u64,
    /// SYNs let straight through (auto mode under its threshold, allowlist).
    pub admitted: u64,
    pub joined: u64,
    pub closed: u64,
    pub backend_refused: u64,
    pub backend_timeouts: u64,
    pub syn_retransmits: u64,
    /// ACKs to the server left out because the client's segments got there first.
    pub server_acks_skipped: u64,
    pub client_gave_up: u64,
    pub idle_timeouts: u64,
    pub evicted: u64,
    /// Forgotten flows (evicted or idled out) whose ends were both reset when one spoke again.
    pub forgotten_reset: u64,
    pub challenge_acks: u64,
    pub ignored_segments: u64,
    pub time_wait_restarts: u64,
    /// Client data segments held until their server joined, sent on, and refused (held
    /// already, past our window, the flow gone, or the buffer full: the client sends them
    /// again).
    pub early_data_held: u64,
    pub early_data_sent: u64,
    pub early_data_refused: u64,
    /// Flows found in the data plane at start (a restart adopted them).
    pub adopted: u64,
    /// Ring-buffer records the controller could not decode (a data plane of another build).
    pub malformed_records: u64,
}

impl FlowCounts {
    /// Every count by its field name.
    pub fn named(&self) -> Vec<(String, u64)> {
        let serde_json::Value::Object(fields) = serde_json::to_value(self).unwrap_or_default()
        else {
            return Vec::new();
        };
        fields
            .into_iter()
            .filter_map(|(name, value)| Some((name, value.as_u64()?)))
            .collect()
    }
}

#[derive(Default)]
pub struct FlowTable {
    pub timers: FlowTimers,
    flows: HashMap<FlowKey, Flow>,
    pub counts: FlowCounts,
    /// The window our SYN-ACKs offer (`--early-data`): held data must lie within it.
    pub early_data_window: u32,
    /// Payload bytes held in all flows' `early_data`.
    early_data_bytes: usize,
}

impl FlowTable {
    pub fn new(timers: FlowTimers) -> Self {
        Self {
            timers,
            early_data_window: EARLY_DATA_WINDOW as u32,
            ..Self::default()
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn get(&self, flow: &FlowKey) -> Option<&Flow> {
        self.flows.get(flow)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&FlowKey, &Flow)> {
        self.flows.iter()
    }

    /// Flow count per state, in `State::ALL` order.
    pub fn histogram(&self) -> [(State, usize); 11] {
        let mut counts = State::ALL.map(|state| (state, 0));
        for flow in self.flows.values() {
            counts[flow.server.state as usize].1 += 1;
        }
        counts
    }

    /// Validated flows whose server has not answered yet.
    pub fn awaiting_server(&self) -> usize {
        self.flows.values().filter(|flow| !flow.joined).count()
    }

    /// The flows by state (as `ss` names them), and how many await their server.
    pub fn status(&self) -> FlowStatus {
        FlowStatus {
            total: self.len() as u64,
            states: self
                .histogram()
                .iter()
                .map(|(state, count)| (state.name().to_string(), *count as u64))
                .collect(),
            awaiting_server: self.awaiting_server() as u64,
            counts: None,
            filter: None,
        }
    }

    /// Every flow as `synguard flows` shows it, with its data-plane entry (`entry`) at
    /// `now_ns`.
    pub fn rows(&self, entry: impl Fn(&FlowKey) -> FlowEntry, now_ns: u64) -> Vec<FlowRow> {
        let traffic = |d: &FlowDirection| Traffic {
            packets: d.packets,
            bytes: d.bytes,
        };
        let seconds = |ns: u64| now_ns.saturating_sub(ns) as f64 / 1e9;
        self.iter()
            .map(|(key, flow)| {
                let entry = entry(key);
                FlowRow {
                    client: client(key).to_string(),
                    server: server(key).to_string(),
                    state: flow.server.state.name().to_string(),
                    joined: flow.joined,
                    age_s: Some(seconds(flow.validated_ns)),
                    idle_s: seconds(entry.last_seen_ns),
                    to_server: traffic(&entry.to_server),
                    to_client: traffic(&entry.to_client),
                }
            })
            .collect()
    }

    /// Applies one data-plane event; returns what to do.
    pub fn on_event(&mut self, event: &Event, now_ns: u64) -> Vec<Command> {
        match event.kind {
            EventKind::Validated => self.on_opened(&event.wire, false, now_ns),
            EventKind::Admitted => self.on_opened(&event.wire, true, now_ns),
            EventKind::Joined => self.on_known(event, Step::Join, now_ns),
            EventKind::Control => self.on_known(event, Step::Control, now_ns),
            EventKind::FinAcked => self.on_known(event, Step::FinAcked, now_ns),
            EventKind::Forgotten => self.on_forgotten(event),
        }
    }

    /// An end of a forgotten flow spoke and the data plane reset it: the other end's reset,
    /// with the numbers the data plane worked out for it.
    fn on_forgotten(&mut self, event: &Event) -> Vec<Command> {
        self.counts.forgotten_reset += 1;
        let flow = event.wire.flow;
        vec![
            Command::Reset {
                flow,
                to_client: event.direction == Direction::ToClient,
                seq: event.wire.seq,
                ack: event.wire.ack,
            },
            Command::ClearForgotten { flow },
        ]
    }

    /// A new connection (`direct`: let straight through, no cookie), also on a tuple whose
    /// previous one is over.
    fn on_opened(&mut self, event: &FlowEvent, direct: bool, now_ns: u64) -> Vec<Command> {
        let mut server = Endpoint::listening();
        let syn = Segment {
            seq: event.entry.client_isn,
            ack: 0,
            flags: TcpFlags(TcpFlags::SYN),
            len: 0,
        };
        server.received(&syn, 0);
        let options = &event.entry.options;
        let backend_syn = BackendSyn {
            seq: event.entry.client_isn,
            window: (event.entry.to_server.window).min(0xffff) as u16,
            mss: options.mss,
            window_scale: (options.window_scale != NO_WINDOW_SCALE).then_some(options.window_scale),
            sack_permitted: options.sack_permitted != 0,
            ecn: options.ecn != 0,
            tsval: (options.timestamps != 0).then_some(event.ts_val),
        };
        self.put(
            event.flow,
            Flow {
                server,
                joined: false,
                direct,
                client_isn: event.entry.client_isn,
                guard_isn: event.entry.guard_isn,
                server_isn: 0,
                validated_ns: now_ns,
                state_since_ns: now_ns,
                time_wait_until_ns: 0,
                backend_syn,
                // The client retransmits its own SYN when it went straight through.
                syn_retransmit_at_ns: if direct {
                    u64::MAX
                } else {
                    now_ns + FIRST_SYN_RETRANSMIT_NS
                },
                syn_retransmit_interval_ns: FIRST_SYN_RETRANSMIT_NS,
                early_data: Vec::new(),
                to_server: None,
            },
        );
        if direct {
            self.counts.admitted += 1;
        } else {
            self.counts.validated += 1;
        }
        Vec::new()
    }

    /// The join, a control segment or the first ACK of a FIN, of a known flow.
    fn on_known(&mut self, decoded: &Event, step: Step, now_ns: u64) -> Vec<Command> {
        let mut commands = Vec::new();
        let event = &decoded.wire;
        let key = event.flow;
        let Some(flow) = self.flows.get_mut(&key) else {
            return commands; // an event of a flow already forgotten
        };
        // A late event of an earlier connection on this tuple? (A direct flow learns its
        // "guard" ISN, the server's, at the join.)
        if flow.client_isn != event.entry.client_isn
            || (!flow.direct && flow.guard_isn != event.entry.guard_isn)
        {
            return commands;
        }
        let before = flow.server.state;
        let segment = Segment {
            seq: event.seq,
            ack: event.ack,
            flags: TcpFlags(event.flags),
            len: event.payload_len,
        };
        let rst = segment.flags.has(TcpFlags::RST);
        match (step, decoded.direction) {
            (Step::Join, Direction::ToClient | Direction::ToServer) => {
                self.early_data_bytes -= join(
                    flow,
                    &key,
                    &event.entry,
                    (event.ts_val, event.ts_ecr),
                    &mut self.counts,
                    &mut commands,
                );
            }
            (Step::Control, Direction::ToServer) if !flow.joined && rst => {
                self.counts.client_gave_up += 1;
                flow.server.state = State::Closed;
            }
            (Step::Control, Direction::ToClient) if !flow.joined && rst => {
                self.counts.backend_refused += 1;
                commands.push(reset_client(&key, flow));
                flow.server.state = State::Closed;
            }
            (Step::Control | Step::FinAcked, Direction::ToServer) => {
                if rst {
                    // The data plane tracks what the server expects next; we see no data.
                    flow.server.rcv_nxt = event.receiver_next;
                }
                match flow.server.received(&segment, event.receiver_window) {
                    Reaction::Accepted => {}
                    Reaction::ChallengeAck => self.counts.challenge_acks += 1,
                    Reaction::Ignored => self.counts.ignored_segments += 1,
                    Reaction::TimeWaitRestarted => {
                        self.counts.time_wait_restarts += 1;
                        flow.time_wait_until_ns = now_ns + 2 * self.timers.msl_ns;
                    }
                }
            }
            (Step::Control | Step::FinAcked, Direction::ToClient) => flow.server.sent(&segment),
        }
        let after = flow.server.state;
        if after != before {
            flow.state_since_ns = now_ns;
            if after == State::TimeWait {
                flow.time_wait_until_ns = now_ns + 2 * self.timers.msl_ns;
            }
        }
        if after == State::Closed {
            self.forget(&key, &mut commands);
        }
        commands
    }

    /// Takes a client's data that came before its server joined: held until the join, or sent
    /// at once when the join is already known (the two records can cross in the ring).
    pub fn on_early_data(&mut self, data: &EarlyData) -> Vec<Command> {
        let Some(flow) = self.flows.get_mut(&data.flow) else {
            self.counts.early_data_refused += 1;
            return Vec::new();
        };
        let len = (data.len as usize).min(EARLY_DATA_MAX);
        let this_connection =
            flow.client_isn == data.client_isn && flow.guard_isn == data.guard_isn && !flow.direct;
        // Only what our window let the client send (RFC 9293 section 3.10.7.4): a client that
        // ignores it cannot make the controller hold more.
        let offset = data.seq.wrapping_sub(flow.client_isn.wrapping_add(1));
        let within_window = offset as u64 + len as u64 <= self.early_data_window as u64;
        // A retransmission of a segment held already adds nothing.
        let held_already = flow.early_data.iter().any(|held| held.seq == data.seq);
        // Data of a joined flow goes at once; held data must fit the bound.
        let room =
            flow.to_server.is_some() || self.early_data_bytes + len <= EARLY_DATA_BUFFER_BYTES;
        if !this_connection || !within_window || held_already || len == 0 || !room {
            self.counts.early_data_refused += 1;
            return Vec::new();
        }
        let segment = EarlySegment {
            seq: data.seq,
            ts_val: data.ts_val,
            ts_ecr: data.ts_ecr,
            window: data.window,
            payload: data.payload[..len].to_vec(),
        };
        if let Some(view) = flow.to_server {
            self.counts.early_data_sent += 1;
            flow.server.received(&segment_of(&segment), 0);
            return vec![view.send(&data.flow, segment)];
        }
        self.early_data_bytes += len;
        self.counts.early_data_held += 1;
        flow.early_data.push(segment);
        Vec::new()
    }

    /// Takes over a flow found in the data plane (the controller restarted): its state comes
    /// from what the data plane tracked ([`server_end_of`]); its timers start now.
    pub fn adopt(&mut self, key: FlowKey, entry: &FlowEntry, now_ns: u64) {
        let server = server_end_of(entry);
        let time_wait_until_ns = if server.state == State::TimeWait {
            now_ns + 2 * self.timers.msl_ns
        } else {
            0
        };
        let options = &entry.options;
        self.put(
            key,
            Flow {
                server,
                joined: entry.phase == phase::JOINED,
                direct: entry.admitted_directly != 0,
                client_isn: entry.client_isn,
                guard_isn: entry.guard_isn,
                server_isn: entry.server_isn,
                validated_ns: now_ns,
                state_since_ns: now_ns,
                time_wait_until_ns,
                backend_syn: BackendSyn {
                    seq: entry.client_isn,
                    window: entry.to_server.window.min(0xffff) as u16,
                    mss: options.mss,
                    window_scale: (options.window_scale != NO_WINDOW_SCALE)
                        .then_some(options.window_scale),
                    sack_permitted: options.sack_permitted != 0,
                    ecn: options.ecn != 0,
                    tsval: None,
                },
                // The client's TSval of the first SYN is gone: no retransmission, the backend
                // timeout still ends a flow whose server never answers.
                syn_retransmit_at_ns: u64::MAX,
                syn_retransmit_interval_ns: FIRST_SYN_RETRANSMIT_NS,
                early_data: Vec::new(),
                to_server: (entry.phase == phase::JOINED).then(|| ServerView::of(entry)),
            },
        );
        self.counts.adopted += 1;
    }

    /// Runs the timers: servers that never answered, TIME-WAIT expiry, idle flows, flows the
    /// data plane's LRU evicted. `entry_of` reads a flow's data-plane entry.
    pub fn on_tick(
        &mut self,
        now_ns: u64,
        entry_of: impl Fn(&FlowKey) -> Option<FlowEntry>,
    ) -> Vec<Command> {
        let mut commands = Vec::new();
        let keys: Vec<FlowKey> = self.flows.keys().copied().collect();
        for key in keys {
            let Some(entry) = entry_of(&key) else {
                // The data plane's map was full and evicted it: its ends still hold the
                // connection, and hear of it when one of them speaks (a client let in by a
                // cookie whose server never joined, at once).
                self.counts.evicted += 1;
                let flow = self.flows.remove(&key).expect("listed just above");
                self.early_data_bytes -= held_bytes(&flow.early_data);
                if flow.joined && !matches!(flow.server.state, State::Closed | State::TimeWait) {
                    commands.push(remember_forgotten(&key, &flow, now_ns));
                } else if !flow.joined && !flow.direct {
                    commands.push(reset_client(&key, &flow));
                }
                continue;
            };
            let flow = self.flows.get_mut(&key).expect("listed just above");
            if !flow.joined
                && now_ns.saturating_sub(flow.validated_ns) >= self.timers.backend_timeout_ns
            {
                if entry.phase == phase::JOINED {
                    // The join happened but its event was lost: catch up from the map.
                    let (server_tsval, client_tsval) = (0, 0);
                    self.early_data_bytes -= join(
                        flow,
                        &key,
                        &entry,
                        (server_tsval, client_tsval),
                        &mut self.counts,
                        &mut commands,
                    );
                } else {
                    self.counts.backend_timeouts += 1;
                    // A client let straight through hears from the server (or times out) itself.
                    if !flow.direct {
                        commands.push(reset_client(&key, flow));
                    }
                    self.forget(&key, &mut commands);
                    continue;
                }
            } else if !flow.joined && now_ns >= flow.syn_retransmit_at_ns {
                self.counts.syn_retransmits += 1;
                commands.push(Command::SynServer {
                    flow: key,
                    syn: flow.backend_syn,
                });
                flow.syn_retransmit_interval_ns *= 2;
                flow.syn_retransmit_at_ns = now_ns + flow.syn_retransmit_interval_ns;
            }
            let state = flow.server.state;
            let idle_limit = self.timers.idle_ns[state as usize];
            let idle_for = now_ns.saturating_sub(entry.last_seen_ns.max(flow.state_since_ns));
            if state == State::TimeWait && now_ns >= flow.time_wait_until_ns {
                self.counts.closed += 1;
                self.forget_quietly(&key, &mut commands);
            } else if idle_limit != 0 && idle_for >= idle_limit {
                self.counts.idle_timeouts += 1;
                // Forgotten silently, each end would learn of it only when its next segment
                // died at the guard, and hang until its own timeout.
                if flow.joined && state != State::Closed {
                    commands.extend(reset_both_ends(&key, &entry));
                    // Should a reset get lost, the end that speaks again is reset then.
                    commands.push(remember_forgotten(&key, flow, now_ns));
                }
                self.forget_quietly(&key, &mut commands);
            }
        }
        commands
    }

    /// Records `flow`; a connection it replaces on the tuple leaves with its held data.
    fn put(&mut self, key: FlowKey, flow: Flow) {
        if let Some(old) = self.flows.insert(key, flow) {
            self.early_data_bytes -= held_bytes(&old.early_data);
        }
    }

    fn forget(&mut self, key: &FlowKey, commands: &mut Vec<Command>) {
        if self
            .flows
            .get(key)
            .is_some_and(|f| f.server.state == State::Closed && f.joined)
        {
            self.counts.closed += 1;
        }
        self.forget_quietly(key, commands);
    }

    fn forget_quietly(&mut self, key: &FlowKey, commands: &mut Vec<Command>) {
        if let Some(flow) = self.flows.remove(key) {
            self.early_data_bytes -= held_bytes(&flow.early_data);
            commands.push(Command::Remove {
                flow: *key,
                guard_isn: flow.guard_isn,
            });
        }
    }
}

/// The server's end of a flow as the data plane's entry shows it: the FINs each way, whether
/// each was acknowledged, and the next sequence numbers (RFC 9293 section 3.3.2).
pub fn server_end_of(entry: &FlowEntry) -> Endpoint {
    if entry.phase != phase::JOINED {
        // A SYN the server has (or will have) received, not answered yet.
        let mut server = Endpoint::listening();
        server.received(
            &Segment {
                seq: entry.client_isn,
                ack: 0,
                flags: TcpFlags(TcpFlags::SYN),
                len: 0,
            },
            0,
        );
        return server;
    }
    // Client to server is what the server receives; server to client what it sends.
    let (received, sent) = (&entry.to_server, &entry.to_client);
    let state = match (
        received.fin_seen != 0,
        received.fin_acked != 0,
        sent.fin_seen != 0,
        sent.fin_acked != 0,
    ) {
        (false, _, false, _) => State::Established,
        (true, _, false, _) => State::CloseWait,
        (false, _, true, false) => State::FinWait1,
        (false, _, true, true) => State::FinWait2,
        // Both FINs, ours not acknowledged yet: after theirs (LAST-ACK) or crossing (CLOSING).
        (true, true, true, false) => State::LastAck,
        (true, false, true, false) => State::Closing,
        // Both acknowledged: over; TIME-WAIT lets late segments die.
        (true, _, true, true) => State::TimeWait,
    };
    Endpoint {
        state,
        snd_nxt: sent.next_seq,
        fin_seq: (sent.fin_seen != 0).then_some(sent.fin_seq),
        rcv_nxt: received.next_seq,
    }
}

/// The server answered: it sent its SYN-ACK, we acknowledge it in the client's name (unless
/// the flow went straight through: then the client's own ACK follows, reported by the data
/// plane as its first segment) and send it the client's held data. `timestamps` are the
/// server's TSval and its echo of the client's. Returns the held bytes it released.
fn join(
    flow: &mut Flow,
    key: &FlowKey,
    entry: &FlowEntry,
    (server_tsval, client_tsval): (u32, u32),
    counts: &mut FlowCounts,
    commands: &mut Vec<Command>,
) -> usize {
    counts.joined += 1;
    flow.joined = true;
    flow.server_isn = entry.server_isn;
    if flow.direct {
        flow.guard_isn = entry.guard_isn;
    }
    let syn_ack = Segment {
        seq: entry.server_isn,
        ack: flow.client_isn.wrapping_add(1),
        flags: TcpFlags(TcpFlags::SYN | TcpFlags::ACK),
        len: 0,
    };
    flow.server.sent(&syn_ack);
    if flow.direct {
        return 0;
    }
    let view = ServerView::of(entry);
    flow.to_server = Some(view);
    let ack = Segment {
        seq: entry.to_server.next_seq,
        ack: view.ack,
        flags: TcpFlags(TcpFlags::ACK),
        len: 0,
    };
    commands.push(Command::AckServer {
        flow: *key,
        seq: ack.seq,
        ack: ack.ack,
        window: window_field(entry.to_server.window, entry.server_view_of_client_shift),
        timestamps: (entry.server_timestamps != 0 && server_tsval != 0)
            .then_some((client_tsval, server_tsval)),
        payload: Vec::new(),
    });
    flow.server.received(&ack, 0);
    let mut held = std::mem::take(&mut flow.early_data);
    let released = held_bytes(&held);
    // In sequence order (they may have come in any): the server takes them without a gap.
    held.sort_by_key(|segment| segment.seq.wrapping_sub(flow.client_isn));
    for segment in held {
        flow.server.received(&segment_of(&segment), 0);
        commands.push(view.send(key, segment));
        counts.early_data_sent += 1;
    }
    released
}

fn held_bytes(segments: &[EarlySegment]) -> usize {
    segments.iter().map(|segment| segment.payload.len()).sum()
}

/// A held segment as the server's end of the flow receives it.
fn segment_of(segment: &EarlySegment) -> Segment {
    Segment {
        seq: segment.seq,
        ack: 0,
        flags: TcpFlags(TcpFlags::ACK),
        len: segment.payload.len() as u32,
    }
}

fn remember_forgotten(key: &FlowKey, flow: &Flow, now_ns: u64) -> Command {
    Command::RememberForgotten {
        flow: *key,
        seq_offset: flow.server_isn.wrapping_sub(flow.guard_isn),
        forgotten_ns: now_ns,
    }
}

fn reset_client(key: &FlowKey, flow: &Flow) -> Command {
    Command::Reset {
        flow: *key,
        to_client: true,
        seq: flow.guard_isn.wrapping_add(1),
        ack: flow.client_isn.wrapping_add(1),
    }
}

/// Resets for both ends of a joined flow that fell silent, each exact (its sequence number
/// what that end expects next, RFC 9293 section 3.10.7.4), from the data plane's entry: no
/// segment has crossed since, so the entry's next sequence numbers are the ends' own. The
/// client's is in our numbers, the server's in its own.
fn reset_both_ends(key: &FlowKey, entry: &FlowEntry) -> [Command; 2] {
    let client_next = entry.to_server.next_seq;
    let server_next = entry.to_client.next_seq;
    [
        Command::Reset {
            flow: *key,
            to_client: false,
            seq: client_next,
            ack: server_next,
        },
        Command::Reset {
            flow: *key,
            to_client: true,
            seq: server_next.wrapping_sub(entry.seq_offset),
            ack: client_next,
        },
    ]
}
