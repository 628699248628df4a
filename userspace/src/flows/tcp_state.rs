//! The TCP state machine of one endpoint (RFC 9293 section 3.3.2, with RFC 5961's defenses),
//! driven by the segments the endpoint sends and receives.
//!
//! The guard models the protected server's end of every validated flow with it: segments from
//! the client are "received", segments from the server "sent". That is the view an operator
//! knows from `ss` on the server: SYN-RECEIVED counts half-open handshakes, CLOSE-WAIT
//! pile-ups show a server application that never closes. The data plane reports only control
//! segments (SYN, FIN, RST) and the first ACK of each FIN, so data segments move no state here;
//! sequence accounting follows RFC 9293 section 3.4: SYN and FIN take one sequence number each,
//! a bare ACK none.

use synguard_common::{
    parse::TcpFlags,
    seq::{in_window, seq_le, seq_lt},
};

/// The eleven states of RFC 9293 section 3.3.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    Closed,
    Listen,
    SynSent,
    SynReceived,
    Established,
    FinWait1,
    FinWait2,
    CloseWait,
    Closing,
    LastAck,
    TimeWait,
}

impl State {
    pub const ALL: [State; 11] = [
        State::Closed,
        State::Listen,
        State::SynSent,
        State::SynReceived,
        State::Established,
        State::FinWait1,
        State::FinWait2,
        State::CloseWait,
        State::Closing,
        State::LastAck,
        State::TimeWait,
    ];

    /// The name `ss` prints.
    pub const fn name(self) -> &'static str {
        match self {
            State::Closed => "CLOSED",
            State::Listen => "LISTEN",
            State::SynSent => "SYN-SENT",
            State::SynReceived => "SYN-RECV",
            State::Established => "ESTAB",
            State::FinWait1 => "FIN-WAIT-1",
            State::FinWait2 => "FIN-WAIT-2",
            State::CloseWait => "CLOSE-WAIT",
            State::Closing => "CLOSING",
            State::LastAck => "LAST-ACK",
            State::TimeWait => "TIME-WAIT",
        }
    }

    /// Snake-case name, for configuration keys and metrics.
    pub const fn key(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Listen => "listen",
            State::SynSent => "syn_sent",
            State::SynReceived => "syn_received",
            State::Established => "established",
            State::FinWait1 => "fin_wait_1",
            State::FinWait2 => "fin_wait_2",
            State::CloseWait => "close_wait",
            State::Closing => "closing",
            State::LastAck => "last_ack",
            State::TimeWait => "time_wait",
        }
    }
}

/// A segment, as far as the state machine looks at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    /// Payload bytes.
    pub len: u32,
}

impl Segment {
    fn has(&self, flag: u8) -> bool {
        self.flags.has(flag)
    }

    /// The sequence number after this segment: SYN and FIN take one each.
    pub fn end(&self) -> u32 {
        let mut end = self.seq.wrapping_add(self.len);
        if self.has(TcpFlags::SYN) {
            end = end.wrapping_add(1);
        }
        if self.has(TcpFlags::FIN) {
            end = end.wrapping_add(1);
        }
        end
    }
}

/// What the endpoint does with a received segment besides any state change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reaction {
    /// Processed (the state may have changed).
    Accepted,
    /// RFC 5961: an in-window RST that is not exactly next, or a SYN in a synchronized state,
    /// is answered with an ACK and otherwise ignored.
    ChallengeAck,
    /// Dropped without effect (an out-of-window RST, anything in CLOSED ...).
    Ignored,
    /// A FIN again in TIME-WAIT: acknowledged, and the 2*MSL timer restarts
    /// (RFC 9293 section 3.10.7.4, TIME-WAIT).
    TimeWaitRestarted,
}

/// One endpoint of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub state: State,
    /// Next sequence number this endpoint sends.
    pub snd_nxt: u32,
    /// Sequence number of this endpoint's FIN, once sent.
    pub fin_seq: Option<u32>,
    /// Next sequence number this endpoint expects.
    pub rcv_nxt: u32,
}

impl Endpoint {
    /// A passive endpoint waiting for a SYN.
    pub fn listening() -> Self {
        Self {
            state: State::Listen,
            snd_nxt: 0,
            fin_seq: None,
            rcv_nxt: 0,
        }
    }

    /// A fresh endpoint with no connection (an active open starts here).
    pub fn closed() -> Self {
        Self {
            state: State::Closed,
            ..Self::listening()
        }
    }

    /// Whether `ack` acknowledges our FIN.
    fn acks_our_fin(&self, segment: &Segment) -> bool {
        segment.has(TcpFlags::ACK)
            && self
                .fin_seq
                .is_some_and(|fin| seq_le(fin.wrapping_add(1), segment.ack))
    }

    /// The endpoint sent `segment` (RFC 9293 section 3.10: OPEN, SEND, CLOSE, ABORT).
    pub fn sent(&mut self, segment: &Segment) {
        // A SYN sets the send sequence (our ISS); later segments only move it forward.
        if segment.has(TcpFlags::SYN) || seq_lt(self.snd_nxt, segment.end()) {
            self.snd_nxt = segment.end();
        }
        if segment.has(TcpFlags::RST) {
            // ABORT (section 3.10.5): the connection is gone at once.
            self.state = State::Closed;
            return;
        }
        let syn = segment.has(TcpFlags::SYN);
        if syn && !segment.has(TcpFlags::ACK) && self.state == State::Closed {
            // Active OPEN (section 3.10.1).
            self.state = State::SynSent;
            return;
        }
        if segment.has(TcpFlags::FIN) {
            // CLOSE (section 3.10.4): the FIN takes the sequence number after the data.
            if self.fin_seq.is_none() {
                self.fin_seq = Some(segment.seq.wrapping_add(segment.len));
            }
            self.state = match self.state {
                State::SynReceived | State::Established => State::FinWait1,
                State::CloseWait => State::LastAck,
                // A retransmitted FIN, or one before the connection is synchronized.
                state @ (State::Closed
                | State::Listen
                | State::SynSent
                | State::FinWait1
                | State::FinWait2
                | State::Closing
                | State::LastAck
                | State::TimeWait) => state,
            };
        }
    }

    /// The endpoint received `segment` while offering `window` bytes (RFC 9293 section
    /// 3.10.7, SEGMENT ARRIVES).
    pub fn received(&mut self, segment: &Segment, window: u32) -> Reaction {
        let syn = segment.has(TcpFlags::SYN);
        let ack = segment.has(TcpFlags::ACK);
        if segment.has(TcpFlags::RST) {
            return self.received_rst(segment, window);
        }
        match self.state {
            // Section 3.10.7.1: anything but a RST is answered with a RST; no state.
            State::Closed => return Reaction::Ignored,
            // Section 3.10.7.2: only a SYN opens.
            State::Listen if syn && !ack => {
                self.rcv_nxt = segment.seq.wrapping_add(1);
                self.state = State::SynReceived;
                return Reaction::Accepted;
            }
            State::Listen => return Reaction::Ignored,
            // Section 3.10.7.3.
            State::SynSent if syn && ack && segment.ack == self.snd_nxt => {
                self.rcv_nxt = segment.seq.wrapping_add(1);
                self.state = State::Established;
                return Reaction::Accepted;
            }
            State::SynSent if syn && !ack => {
                // Simultaneous open.
                self.rcv_nxt = segment.seq.wrapping_add(1);
                self.state = State::SynReceived;
                return Reaction::Accepted;
            }
            State::SynSent => return Reaction::Ignored,
            // A new SYN above the old sequence space may reopen a TIME-WAIT connection
            // (section 3.10.7.4, RFC 6191).
            State::TimeWait if syn && !ack && seq_lt(self.rcv_nxt, segment.seq) => {
                *self = Self::listening();
                return self.received(segment, window);
            }
            // RFC 5961 section 4: a SYN in a synchronized state (RFC 9293 section 3.5.2) gets a
            // challenge ACK.
            State::Established
            | State::FinWait1
            | State::FinWait2
            | State::CloseWait
            | State::Closing
            | State::LastAck
            | State::TimeWait
                if syn =>
            {
                return Reaction::ChallengeAck;
            }
            State::SynReceived if syn => return Reaction::Ignored, // a retransmitted SYN
            // Everything else goes on to the ACK field.
            State::SynReceived
            | State::Established
            | State::FinWait1
            | State::FinWait2
            | State::CloseWait
            | State::Closing
            | State::LastAck
            | State::TimeWait => {}
        }
        // Section 3.10.7.4, fifth step: the ACK field.
        if self.state == State::SynReceived {
            if !ack || segment.ack != self.snd_nxt {
                return Reaction::Ignored;
            }
            self.state = State::Established;
        }
        let acks_fin = self.acks_our_fin(segment);
        if acks_fin {
            self.state = match self.state {
                State::FinWait1 => State::FinWait2,
                State::Closing => State::TimeWait,
                State::LastAck => State::Closed,
                // No FIN of ours is outstanding in these.
                state @ (State::Closed
                | State::Listen
                | State::SynSent
                | State::SynReceived
                | State::Established
                | State::FinWait2
                | State::CloseWait
                | State::TimeWait) => state,
            };
        }
        if seq_lt(self.rcv_nxt, segment.end()) {
            self.rcv_nxt = segment.end();
        }
        // Eighth step: the FIN bit.
        if !segment.has(TcpFlags::FIN) {
            return Reaction::Accepted;
        }
        self.state = match self.state {
            State::Established => State::CloseWait,
            // FIN and the ACK of our FIN together go straight to TIME-WAIT.
            State::FinWait1 => State::Closing,
            State::FinWait2 => State::TimeWait,
            State::TimeWait => return Reaction::TimeWaitRestarted,
            // A retransmitted FIN: already counted.
            state @ (State::Closed
            | State::Listen
            | State::SynSent
            | State::SynReceived
            | State::CloseWait
            | State::Closing
            | State::LastAck) => state,
        };
        Reaction::Accepted
    }

    /// RFC 5961 section 3.2: a RST resets only when its sequence number is exactly the next
    /// expected; anywhere else in the window it draws a challenge ACK; outside, nothing.
    fn received_rst(&mut self, segment: &Segment, window: u32) -> Reaction {
        match self.state {
            State::Closed | State::Listen => Reaction::Ignored,
            // Section 3.10.7.3: in SYN-SENT a RST counts when it acknowledges our SYN.
            State::SynSent => {
                if segment.has(TcpFlags::ACK) && segment.ack == self.snd_nxt {
                    self.state = State::Closed;
                    Reaction::Accepted
                } else {
                    Reaction::Ignored
                }
            }
            State::SynReceived
            | State::Established
            | State::FinWait1
            | State::FinWait2
            | State::CloseWait
            | State::Closing
            | State::LastAck
            | State::TimeWait => {
                if segment.seq == self.rcv_nxt {
                    self.state = State::Closed;
                    Reaction::Accepted
                } else if in_window(segment.seq, self.rcv_nxt, window) {
                    Reaction::ChallengeAck
                } else {
                    Reaction::Ignored
                }
            }
        }
    }
}
