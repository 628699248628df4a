//! The endpoint state machine, table-driven over every transition RFC 9293 and RFC 5961 give
//! it, with real sequence numbers (wrapping ones included).

use synguard::flows::tcp_state::{Endpoint, Reaction, Segment, State};
use synguard_common::parse::TcpFlags as F;

const CLIENT_ISN: u32 = 0xffff_fff0; // wraps within the first few segments
/// Above 2^31: "after 0" fails for it in sequence space, so nothing may start from 0.
const SERVER_ISN: u32 = 0xd000_0000;
const WINDOW: u32 = 64_000;

#[derive(Clone, Copy)]
enum Step {
    /// The endpoint receives flags/seq/ack/len; expect this reaction and state.
    Recv(u8, u32, u32, u32, Reaction, State),
    /// The endpoint sends flags/seq/ack/len; expect this state.
    Send(u8, u32, u32, u32, State),
}
use Reaction::*;
use State::*;
use Step::*;

fn c(offset: u32) -> u32 {
    CLIENT_ISN.wrapping_add(offset)
}
fn s(offset: u32) -> u32 {
    SERVER_ISN.wrapping_add(offset)
}

/// The passive open every server-side case starts from: SYN in, SYN-ACK out, ACK in.
fn handshake() -> Vec<Step> {
    vec![
        Recv(F::SYN, c(0), 0, 0, Accepted, SynReceived),
        Send(F::SYN | F::ACK, s(0), c(1), 0, SynReceived),
        Recv(F::ACK, c(1), s(1), 0, Accepted, Established),
    ]
}

fn run(name: &str, start: Endpoint, steps: &[Step]) {
    let mut endpoint = start;
    for (i, step) in steps.iter().enumerate() {
        let (got_reaction, want_reaction, want_state) = match *step {
            Recv(flags, seq, ack, len, reaction, state) => {
                let segment = Segment {
                    seq,
                    ack,
                    flags: F(flags),
                    len,
                };
                (
                    Some(endpoint.received(&segment, WINDOW)),
                    Some(reaction),
                    state,
                )
            }
            Send(flags, seq, ack, len, state) => {
                endpoint.sent(&Segment {
                    seq,
                    ack,
                    flags: F(flags),
                    len,
                });
                (None, None, state)
            }
        };
        assert_eq!(got_reaction, want_reaction, "{name}: step {i} reaction");
        assert_eq!(endpoint.state, want_state, "{name}: step {i} state");
    }
}

fn server(name: &str, after_handshake: &[Step]) {
    let mut steps = handshake();
    steps.extend_from_slice(after_handshake);
    run(name, Endpoint::listening(), &steps);
}

#[test]
fn passive_open() {
    server("3-way handshake", &[]);
    run(
        "an ACK that does not acknowledge our SYN keeps SYN-RECEIVED",
        Endpoint::listening(),
        &[
            Recv(F::SYN, c(0), 0, 0, Accepted, SynReceived),
            Send(F::SYN | F::ACK, s(0), c(1), 0, SynReceived),
            Recv(F::ACK, c(1), s(7), 0, Ignored, SynReceived),
            Recv(F::SYN, c(0), 0, 0, Ignored, SynReceived),
        ],
    );
    run(
        "LISTEN ignores all but a SYN",
        Endpoint::listening(),
        &[
            Recv(F::ACK, c(1), s(1), 0, Ignored, Listen),
            Recv(F::FIN | F::ACK, c(1), s(1), 0, Ignored, Listen),
            Recv(F::RST, c(1), 0, 0, Ignored, Listen),
        ],
    );
}

#[test]
fn active_and_simultaneous_open() {
    run(
        "active open",
        Endpoint::closed(),
        &[
            Send(F::SYN, s(0), 0, 0, SynSent),
            Recv(F::SYN | F::ACK, c(0), s(5), 0, Ignored, SynSent),
            Recv(F::SYN | F::ACK, c(0), s(1), 0, Accepted, Established),
        ],
    );
    run(
        "simultaneous open",
        Endpoint::closed(),
        &[
            Send(F::SYN, s(0), 0, 0, SynSent),
            Recv(F::SYN, c(0), 0, 0, Accepted, SynReceived),
            Send(F::SYN | F::ACK, s(0), c(1), 0, SynReceived),
            Recv(F::ACK, c(1), s(1), 0, Accepted, Established),
        ],
    );
    run(
        "RST acknowledging our SYN refuses the connection",
        Endpoint::closed(),
        &[
            Send(F::SYN, s(0), 0, 0, SynSent),
            Recv(F::RST | F::ACK, 0, s(7), 0, Ignored, SynSent),
            Recv(F::RST | F::ACK, 0, s(1), 0, Accepted, Closed),
        ],
    );
    run(
        "CLOSED ignores segments",
        Endpoint::closed(),
        &[Recv(F::ACK, 1, 2, 0, Ignored, Closed)],
    );
}

#[test]
fn peer_closes_first_with_half_close() {
    server(
        "client FIN, server keeps sending in CLOSE-WAIT, then closes",
        &[
            Recv(F::ACK, c(1), s(1), 100, Accepted, Established),
            // The client's FIN after 100 bytes: it takes sequence number c(101).
            Recv(F::FIN | F::ACK, c(101), s(1), 0, Accepted, CloseWait),
            Send(F::ACK, s(1), c(102), 5000, CloseWait),
            Recv(F::ACK, c(102), s(5001), 0, Accepted, CloseWait),
            Send(F::FIN | F::ACK, s(5001), c(102), 0, LastAck),
            // An ACK of the data but not of the FIN (which took s(5001)).
            Recv(F::ACK, c(102), s(5001), 0, Accepted, LastAck),
            Recv(F::ACK, c(102), s(5002), 0, Accepted, Closed),
        ],
    );
}

#[test]
fn we_close_first_with_half_close() {
    server(
        "server FIN, client keeps sending in FIN-WAIT-2, then its FIN",
        &[
            Send(F::FIN | F::ACK, s(1), c(1), 0, FinWait1),
            Recv(F::ACK, c(1), s(1), 0, Accepted, FinWait1),
            Recv(F::ACK, c(1), s(2), 0, Accepted, FinWait2),
            Recv(F::ACK, c(1), s(2), 10_000, Accepted, FinWait2),
            Recv(F::FIN | F::ACK, c(10_001), s(2), 0, Accepted, TimeWait),
            // A retransmitted FIN restarts the 2*MSL timer.
            Recv(
                F::FIN | F::ACK,
                c(10_001),
                s(2),
                0,
                TimeWaitRestarted,
                TimeWait,
            ),
        ],
    );
    server(
        "FIN+ACK of our FIN in FIN-WAIT-1 goes straight to TIME-WAIT",
        &[
            Send(F::FIN | F::ACK, s(1), c(1), 0, FinWait1),
            Recv(F::FIN | F::ACK, c(1), s(2), 0, Accepted, TimeWait),
        ],
    );
    server(
        "data after the FIN does not change the FIN's sequence number",
        &[
            Send(F::FIN | F::ACK, s(1), c(1), 0, FinWait1),
            Send(F::FIN | F::ACK, s(1), c(1), 0, FinWait1),
            Recv(F::ACK, c(1), s(2), 0, Accepted, FinWait2),
        ],
    );
}

#[test]
fn simultaneous_close() {
    server(
        "both FINs cross: CLOSING, then TIME-WAIT on the ACK",
        &[
            Send(F::FIN | F::ACK, s(1), c(1), 0, FinWait1),
            Recv(F::FIN | F::ACK, c(1), s(1), 0, Accepted, Closing),
            Recv(F::ACK, c(2), s(1), 0, Accepted, Closing),
            Recv(F::ACK, c(2), s(2), 0, Accepted, TimeWait),
        ],
    );
}

#[test]
fn resets() {
    // In every synchronized state: exact RST closes, in-window RST challenges, others nothing.
    let reach: [(&str, Vec<Step>, u32); 6] = [
        ("SYN-RECEIVED", vec![], 1),
        ("ESTABLISHED", handshake()[2..].to_vec(), 1),
        (
            "FIN-WAIT-1",
            vec![
                handshake()[2],
                Send(F::FIN | F::ACK, s(1), c(1), 0, FinWait1),
            ],
            1,
        ),
        (
            "CLOSE-WAIT",
            vec![
                handshake()[2],
                Recv(F::FIN | F::ACK, c(1), s(1), 0, Accepted, CloseWait),
            ],
            2,
        ),
        (
            "LAST-ACK",
            vec![
                handshake()[2],
                Recv(F::FIN | F::ACK, c(1), s(1), 0, Accepted, CloseWait),
                Send(F::FIN | F::ACK, s(1), c(2), 0, LastAck),
            ],
            2,
        ),
        (
            "CLOSING",
            vec![
                handshake()[2],
                Send(F::FIN | F::ACK, s(1), c(1), 0, FinWait1),
                Recv(F::FIN | F::ACK, c(1), s(1), 0, Accepted, Closing),
            ],
            2,
        ),
    ];
    for (name, path, next) in reach {
        let mut steps = handshake()[..2].to_vec();
        steps.extend(path);
        let mut endpoint = Endpoint::listening();
        run(name, endpoint, &steps);
        for step in &steps {
            match *step {
                Recv(flags, seq, ack, len, ..) => {
                    endpoint.received(
                        &Segment {
                            seq,
                            ack,
                            flags: F(flags),
                            len,
                        },
                        WINDOW,
                    );
                }
                Send(flags, seq, ack, len, _) => endpoint.sent(&Segment {
                    seq,
                    ack,
                    flags: F(flags),
                    len,
                }),
            }
        }
        let state = endpoint.state;
        for (seq, reaction, after) in [
            (c(next + WINDOW + 5), Ignored, state),
            (c(next + 100), ChallengeAck, state),
            (c(next), Accepted, Closed),
        ] {
            let rst = Segment {
                seq,
                ack: 0,
                flags: F(F::RST),
                len: 0,
            };
            assert_eq!(
                endpoint.received(&rst, WINDOW),
                reaction,
                "{name}: RST at {seq:#x}"
            );
            assert_eq!(endpoint.state, after, "{name}: RST at {seq:#x}");
        }
    }
    server("our own RST aborts", &[Send(F::RST, s(1), 0, 0, Closed)]);
}

#[test]
fn syns_in_synchronized_states_draw_challenge_acks() {
    server(
        "SYN in ESTABLISHED",
        &[Recv(F::SYN, c(500), 0, 0, ChallengeAck, Established)],
    );
    server(
        "a new SYN above the old sequence space reopens TIME-WAIT",
        &[
            Send(F::FIN | F::ACK, s(1), c(1), 0, FinWait1),
            Recv(F::FIN | F::ACK, c(1), s(2), 0, Accepted, TimeWait),
            Recv(F::SYN, c(0), 0, 0, ChallengeAck, TimeWait),
            Recv(F::SYN, c(100_000), 0, 0, Accepted, SynReceived),
        ],
    );
}

#[test]
fn sequence_accounting() {
    let bare_ack = Segment {
        seq: 7,
        ack: 0,
        flags: F(F::ACK),
        len: 0,
    };
    assert_eq!(bare_ack.end(), 7, "a bare ACK takes no sequence number");
    let syn = Segment {
        seq: u32::MAX,
        ack: 0,
        flags: F(F::SYN),
        len: 0,
    };
    assert_eq!(syn.end(), 0, "SYN takes one, wrapping");
    let fin = Segment {
        seq: 10,
        ack: 0,
        flags: F(F::FIN | F::ACK),
        len: 5,
    };
    assert_eq!(fin.end(), 16, "data, then the FIN's one");
    assert_eq!(State::ALL.len(), 11);
}
