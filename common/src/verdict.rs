//! What the data plane does with a parsed frame.
//!
//! [`classify`] gives every frame its verdict from the parse alone:
//! - malformed IP or TCP headers, and TCP flag combinations no sender produces (SYN+FIN,
//!   SYN+RST, none, FIN or URG without ACK, ...): drop, counted by reason (the protected host
//!   must never see them, and the kernel would discard most of them anyway);
//! - non-IP frames (ARP, LLDP, ...): pass, so the link keeps working;
//! - IP fragments: pass (their TCP header is absent or partial, so no TCP decision can be made);
//! - other well-formed TCP and IP: pass.
//!
//! A TCP segment to a protected service then takes the guard's [`protected_step`].

use crate::{
    counters::{Counter, CounterBlock, Tally},
    maps::mode,
    parse::{L3, ParseError, ParsedFrame, TcpFlags, TcpSegment, TransportKind},
};

/// The XDP action taken, in terms independent of the kernel's numbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Pass,
    Drop,
    /// Sent back out of the interface it came in on (the SYN-ACK).
    Tx,
    /// Sent out of another interface, to the next hop (forwarded flows).
    Redirect,
}

impl Action {
    /// The kernel's `enum xdp_action` value (uapi, stable).
    #[inline(always)]
    pub const fn xdp_code(self) -> u32 {
        match self {
            Action::Drop => 1,
            Action::Pass => 2,
            Action::Tx => 3,
            Action::Redirect => 4,
        }
    }

    /// The action for an `enum xdp_action` value, if it is one of ours.
    pub const fn from_xdp_code(code: u32) -> Option<Action> {
        match code {
            1 => Some(Action::Drop),
            2 => Some(Action::Pass),
            3 => Some(Action::Tx),
            4 => Some(Action::Redirect),
            _ => None,
        }
    }
}

/// An action and the counter that explains it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub action: Action,
    pub reason: Counter,
}

impl Verdict {
    #[inline(always)]
    pub const fn new(action: Action, reason: Counter) -> Self {
        Self { action, reason }
    }

    /// Counts one frame with this verdict: seen, its action, its reason, and what `tally`
    /// noted.
    #[inline(always)]
    pub fn count_into(self, block: &mut CounterBlock, tally: Tally) {
        block.bump(Counter::Seen);
        block.bump(match self.action {
            Action::Pass => Counter::Passed,
            Action::Drop => Counter::Dropped,
            Action::Tx => Counter::Transmitted,
            Action::Redirect => Counter::Redirected,
        });
        block.bump(self.reason);
        if tally.vlan_tagged {
            block.bump(Counter::VlanTagged);
        }
        if let Some(family) = tally.family {
            block.bump(family);
        }
    }
}

#[inline(always)]
pub fn classify(parsed: &Result<ParsedFrame, ParseError>) -> Verdict {
    let (action, reason) = match parsed {
        Err(error) => (Action::Drop, Counter::for_parse_error(*error)),
        Ok(ParsedFrame {
            l3: L3::NonIp { .. },
            ..
        }) => (Action::Pass, Counter::PassNonIp),
        Ok(ParsedFrame {
            l3: L3::Ip(packet), ..
        }) => return pass_ip(packet.transport.kind),
    };
    Verdict { action, reason }
}

/// The verdict of a well-formed IP packet, by what it carries.
#[inline(always)]
pub fn pass_ip(kind: TransportKind) -> Verdict {
    let reason = match kind {
        TransportKind::Tcp => Counter::PassTcp,
        TransportKind::Fragment => Counter::PassFragment,
        TransportKind::Other => Counter::PassOtherProtocol,
    };
    Verdict {
        action: Action::Pass,
        reason,
    }
}

/// What the flows map says about a segment's 4-tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    No,
    AwaitingBackend,
    /// Let straight through without a cookie; the server has not answered yet.
    Admitted,
    Joined,
    /// Joined, and both FINs acknowledged.
    Closed,
    /// Let go of while its ends may still hold it (`maps::ForgottenFlow`).
    Forgotten,
}

/// How a protected service takes a new connection, from its mode and the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Monitor mode: nothing of no flow is touched (the counters still count it).
    Untouched,
    /// Auto mode under its threshold, or an allowlisted source that skips the challenge: the
    /// SYN goes straight to the server and the flow is tracked from there.
    Direct,
    /// The SYN gets a cookie.
    Cookie,
}

/// `service_mode` and `cookies_on` from the services map; `bypass` when the source is on the
/// allowlist with the challenge skipped.
#[inline(always)]
pub fn admission(service_mode: u8, cookies_on: bool, bypass: bool) -> Admission {
    match service_mode {
        mode::MONITOR => Admission::Untouched,
        _ if bypass => Admission::Direct,
        mode::AUTO if !cookies_on => Admission::Direct,
        _ => Admission::Cookie,
    }
}

/// What the guard does with a (valid-flagged) TCP segment from a client to a protected service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientStep {
    /// A SYN opening a connection: answer with a cookie SYN-ACK, keep no state.
    AnswerWithCookie,
    /// An ACK (bare, or the client's first data) of no known flow: it must echo a valid cookie.
    CheckCookie,
    /// An ACK on a tuple whose connection is over: the third ACK (or first data) of a new
    /// connection when it echoes a valid cookie, else a late segment of the old one (forwarded).
    CheckCookieElseForward,
    /// A segment of a joined flow: translate and forward (a SYN included: the server answers
    /// it with a challenge ACK, RFC 5961 section 4).
    Forward,
    /// A segment of a flow whose server has not answered yet: its data is held for the
    /// server (`maps::EarlyData`); retransmitted ACKs, window probes and FINs drop.
    AwaitBackend,
    /// A RST before the server answered: the controller ends the flow.
    ResetBeforeJoin,
    /// A SYN let straight through to the server: the flow is recorded, the SYN passes.
    AdmitDirectly,
    /// Passed as it is, counted by the reason: monitor mode, or a segment of an admitted
    /// flow whose server has not answered yet (a retransmitted SYN, the client's RST).
    PassUntouched(Counter),
    /// Belongs to no flow and cannot open one: dropped, counted by kind (ACK/RST/FIN floods).
    DropStray(Counter),
    /// An ACK on a tuple whose flow the guard forgot: the third ACK (or first data) of a new
    /// connection when it echoes a valid cookie, else the old one's: both ends get a RST.
    CheckCookieElseResetForgotten,
    /// A FIN of a forgotten flow: both ends get a RST.
    ResetForgotten,
}

/// A SYN, then anything of a known flow, then the strays. A SYN on a tuple whose connection
/// is over (both FINs acknowledged) opens a new one, as a SYN in TIME-WAIT may. Known flows
/// go on as they started whatever the service's admission is now.
#[inline(always)]
pub fn client_step(tcp: &TcpSegment, known: Known, admission: Admission) -> ClientStep {
    let flags = tcp.flags;
    let syn = flags.has(TcpFlags::SYN);
    // The third ACK, or, when that was lost, the client's first data: it carries the same
    // acknowledgment of the cookie (RFC 9293 3.5: the connection is open on the client's side).
    let may_complete =
        flags.0 & (TcpFlags::SYN | TcpFlags::FIN | TcpFlags::RST) == 0 && flags.has(TcpFlags::ACK);
    match known {
        Known::Joined => return ClientStep::Forward,
        Known::Closed if may_complete => return ClientStep::CheckCookieElseForward,
        Known::Closed if !syn => return ClientStep::Forward,
        Known::AwaitingBackend if flags.has(TcpFlags::RST) => return ClientStep::ResetBeforeJoin,
        Known::AwaitingBackend => return ClientStep::AwaitBackend,
        Known::Admitted => return ClientStep::PassUntouched(Counter::PassAdmitted),
        // What the client's end would get from a server that no longer holds the connection
        // (RFC 9293 section 3.10.7.1); a RST is answered by nothing, a SYN opens anew.
        Known::Forgotten if may_complete => return ClientStep::CheckCookieElseResetForgotten,
        Known::Forgotten if of_a_forgotten_flow(flags) => return ClientStep::ResetForgotten,
        Known::No | Known::Closed | Known::Forgotten => {}
    }
    if admission == Admission::Untouched {
        return ClientStep::PassUntouched(Counter::PassMonitored);
    }
    if syn && flags.has(TcpFlags::ACK) {
        ClientStep::DropStray(Counter::DropStraySynAck)
    } else if syn && admission == Admission::Direct {
        ClientStep::AdmitDirectly
    } else if syn {
        ClientStep::AnswerWithCookie
    } else if flags.has(TcpFlags::RST) {
        ClientStep::DropStray(Counter::DropStrayRst)
    } else if flags.has(TcpFlags::FIN) {
        ClientStep::DropStray(Counter::DropStrayFin)
    } else {
        ClientStep::CheckCookie
    }
}

/// What the guard does with a segment coming back from the server side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerStep {
    /// Not a validated flow (the server's own connections): passed untouched.
    Untracked,
    /// The server's SYN-ACK to our SYN: record its ISN, turn it into the client's window update.
    Join,
    /// The server's SYN-ACK to a SYN let straight through: record it, pass it to the client.
    JoinDirect,
    /// A retransmitted SYN-ACK of a joined flow (our ACK got lost): answer it with the ACK.
    ReAck,
    /// A segment of a joined flow: translate and forward.
    Forward,
    /// The server refused the connection (RST before joining): the controller resets the client.
    RefusedBeforeJoin,
    /// Anything else before the join (a SYN-ACK that does not acknowledge our SYN, ...).
    AwaitBackend,
}

/// Whether a segment that belongs to no validated flow (a server's, from a service whose flows
/// the guard tracks; or a client's, on a tuple the guard remembers forgetting) is one of a
/// flow the guard no longer holds (idled out, evicted, closed, or opened before the guard
/// came): an acknowledgement that is neither a RST (nothing answers a RST) nor a SYN (an end
/// opening a connection).
#[inline(always)]
pub fn of_a_forgotten_flow(flags: TcpFlags) -> bool {
    flags.has(TcpFlags::ACK) && flags.0 & (TcpFlags::SYN | TcpFlags::RST) == 0
}

/// `acks_our_syn`: the segment acknowledges exactly the SYN we sent (client ISN + 1);
/// `direct`: the flow was let straight through, so its client answers a retransmitted SYN-ACK.
#[inline(always)]
pub fn server_step(flags: TcpFlags, known: Known, acks_our_syn: bool, direct: bool) -> ServerStep {
    let syn_ack = flags.has(TcpFlags::SYN) && flags.has(TcpFlags::ACK);
    match known {
        Known::No | Known::Forgotten => ServerStep::Untracked,
        Known::AwaitingBackend if flags.has(TcpFlags::RST) => ServerStep::RefusedBeforeJoin,
        Known::AwaitingBackend if syn_ack && acks_our_syn => ServerStep::Join,
        Known::AwaitingBackend => ServerStep::AwaitBackend,
        Known::Admitted if syn_ack && acks_our_syn => ServerStep::JoinDirect,
        // Anything else (a refusal included) reaches the client, which deals with it; the
        // controller forgets the flow when no SYN-ACK comes.
        Known::Admitted => ServerStep::Untracked,
        Known::Joined | Known::Closed if syn_ack && !direct => ServerStep::ReAck,
        Known::Joined | Known::Closed => ServerStep::Forward,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forgotten_flows_segment_is_an_ack_that_is_no_rst_and_no_syn() {
        for (flags, forgotten) in [
            (TcpFlags::ACK, true),
            (TcpFlags::ACK | TcpFlags::PSH, true),
            (TcpFlags::ACK | TcpFlags::FIN, true),
            (TcpFlags::ACK | TcpFlags::RST, false),
            (TcpFlags::RST, false),
            (TcpFlags::SYN | TcpFlags::ACK, false),
            (TcpFlags::SYN, false),
        ] {
            assert_eq!(
                of_a_forgotten_flow(TcpFlags(flags)),
                forgotten,
                "{flags:#x}"
            );
        }
    }
    use crate::{
        counters::{CounterBlock, Tally},
        parse::{IpAddrs, IpPacket, Transport, flags_are_valid},
    };

    fn ip(kind: TransportKind, v6: bool) -> Result<ParsedFrame, ParseError> {
        let addrs = if v6 {
            IpAddrs::v6([0; 16], [0; 16])
        } else {
            IpAddrs::v4([0; 4], [0; 4])
        };
        Ok(ParsedFrame {
            vlan_tags: 1,
            l3: L3::Ip(IpPacket {
                addrs,
                l3_offset: 18,
                l4_offset: 38,
                ip_end: 60,
                transport: Transport { kind, protocol: 17 },
            }),
        })
    }

    #[test]
    fn every_parse_error_drops_with_its_own_counter() {
        let reasons = ParseError::ALL.map(|error| {
            let verdict = classify(&Err(error));
            assert_eq!(verdict.action, Action::Drop);
            assert!(verdict.reason.name().starts_with("drop_"));
            verdict.reason
        });
        for (i, a) in reasons.iter().enumerate() {
            for b in &reasons[i + 1..] {
                assert_ne!(a, b, "two errors share a counter");
            }
        }
    }

    #[test]
    fn passes_and_their_reasons() {
        let cases = [
            (ip(TransportKind::Fragment, false), Counter::PassFragment),
            (ip(TransportKind::Other, true), Counter::PassOtherProtocol),
            (
                Ok(ParsedFrame {
                    vlan_tags: 0,
                    l3: L3::NonIp { ethertype: 0x0806 },
                }),
                Counter::PassNonIp,
            ),
        ];
        for (parsed, reason) in cases {
            assert_eq!(
                classify(&parsed),
                Verdict {
                    action: Action::Pass,
                    reason
                }
            );
        }
    }

    #[test]
    fn record_counts_seen_action_reason_family_and_vlan() {
        let mut block = CounterBlock::default();
        let parsed = ip(TransportKind::Fragment, true);
        classify(&parsed).count_into(&mut block, Tally::of(&parsed));
        let dropped = Err(ParseError::TruncatedTcp);
        classify(&dropped).count_into(&mut block, Tally::of(&dropped));
        for (counter, expected) in [
            (Counter::Seen, 2),
            (Counter::Passed, 1),
            (Counter::Dropped, 1),
            (Counter::PassFragment, 1),
            (Counter::DropTruncatedTcp, 1),
            (Counter::Ipv6, 1),
            (Counter::Ipv4, 0),
            (Counter::VlanTagged, 1),
        ] {
            assert_eq!(block.get(counter), expected, "{}", counter.name());
        }
        let mut sum = CounterBlock::default();
        sum.accumulate(&block);
        sum.accumulate(&block);
        assert_eq!(sum.get(Counter::Seen), 4);
    }

    #[test]
    fn flag_table() {
        use TcpFlags as F;
        let valid = [
            F::SYN,
            F::SYN | F::ACK,
            F::SYN | F::ECE | F::CWR,
            F::ACK,
            F::ACK | F::PSH,
            F::FIN | F::ACK,
            F::FIN | F::ACK | F::PSH,
            F::RST,
            F::RST | F::ACK,
            F::ACK | F::URG,
        ];
        let invalid = [
            0,
            F::SYN | F::FIN,
            F::SYN | F::RST,
            F::FIN | F::RST | F::ACK,
            F::FIN,
            F::PSH,
            F::URG,
            F::FIN | F::PSH | F::URG, // "Xmas"
            F::SYN | F::FIN | F::RST | F::ACK | F::URG | F::PSH,
        ];
        for flags in valid {
            assert!(flags_are_valid(TcpFlags(flags)), "{flags:#x}");
        }
        for flags in invalid {
            assert!(!flags_are_valid(TcpFlags(flags)), "{flags:#x}");
        }
    }

    fn segment(flags: u8, payload_len: u16) -> TcpSegment {
        TcpSegment {
            src_port: 1,
            dst_port: 2,
            seq: 3,
            ack: 4,
            flags: TcpFlags(flags),
            window: 5,
            header_len: 20,
            payload_len,
            options: Default::default(),
        }
    }

    #[test]
    fn client_steps() {
        use ClientStep::*;
        use TcpFlags as F;
        let step = |flags: u8, payload: u16, known: Known| {
            client_step(&segment(flags, payload), known, Admission::Cookie)
        };
        assert_eq!(step(F::SYN, 0, Known::No), AnswerWithCookie);
        assert_eq!(
            step(F::SYN | F::ECE | F::CWR, 0, Known::No),
            AnswerWithCookie
        );
        assert_eq!(step(F::ACK, 0, Known::No), CheckCookie);
        assert_eq!(step(F::ACK | F::PSH, 0, Known::No), CheckCookie);
        assert_eq!(
            step(F::ACK | F::PSH, 10, Known::No),
            CheckCookie,
            "the client's first data may complete the handshake"
        );
        assert_eq!(
            step(F::FIN | F::ACK, 0, Known::No),
            DropStray(Counter::DropStrayFin)
        );
        assert_eq!(step(F::RST, 0, Known::No), DropStray(Counter::DropStrayRst));
        assert_eq!(
            step(F::RST | F::ACK, 0, Known::No),
            DropStray(Counter::DropStrayRst)
        );
        assert_eq!(
            step(F::SYN | F::ACK, 0, Known::No),
            DropStray(Counter::DropStraySynAck)
        );
        for flags in [F::ACK, F::FIN | F::ACK, F::RST, F::SYN] {
            assert_eq!(step(flags, 0, Known::Joined), Forward);
        }
        assert_eq!(step(F::ACK, 0, Known::AwaitingBackend), AwaitBackend);
        assert_eq!(step(F::RST, 0, Known::AwaitingBackend), ResetBeforeJoin);
        assert_eq!(
            step(F::SYN, 0, Known::Closed),
            AnswerWithCookie,
            "a reused tuple opens anew"
        );
        assert_eq!(
            step(F::ACK, 0, Known::Closed),
            CheckCookieElseForward,
            "a new connection's third ACK, or the old one's last"
        );
        assert_eq!(step(F::ACK, 10, Known::Closed), CheckCookieElseForward);
        assert_eq!(step(F::FIN | F::ACK, 0, Known::Closed), Forward);
        for flags in [F::SYN, F::RST, F::ACK] {
            assert_eq!(
                step(flags, 0, Known::Admitted),
                PassUntouched(Counter::PassAdmitted)
            );
        }
    }

    #[test]
    fn a_forgotten_flows_acks_and_fins_reset_it_and_a_syn_opens_anew() {
        use ClientStep::*;
        use TcpFlags as F;
        let step = |flags: u8, payload: u16| {
            client_step(
                &segment(flags, payload),
                Known::Forgotten,
                Admission::Cookie,
            )
        };
        // An ACK may be a new connection's third ACK on the same tuple: its cookie first.
        assert_eq!(step(F::ACK, 0), CheckCookieElseResetForgotten);
        assert_eq!(step(F::ACK | F::PSH, 100), CheckCookieElseResetForgotten);
        assert_eq!(step(F::FIN | F::ACK, 0), ResetForgotten);
        assert_eq!(step(F::SYN, 0), AnswerWithCookie);
        assert_eq!(step(F::RST | F::ACK, 0), DropStray(Counter::DropStrayRst));
        assert_eq!(
            step(F::SYN | F::ACK, 0),
            DropStray(Counter::DropStraySynAck)
        );
        // Without ACK, not a segment of the connection (RFC 9293 section 3.10.7.4): no reset.
        assert_eq!(step(F::PSH, 10), CheckCookie);
    }

    #[test]
    fn admission_by_mode_and_source() {
        use Admission::*;
        for (service_mode, cookies_on, bypass, expected) in [
            (mode::MONITOR, false, false, Untouched),
            (mode::MONITOR, true, true, Untouched),
            (mode::AUTO, false, false, Direct),
            (mode::AUTO, true, false, Cookie),
            (mode::AUTO, true, true, Direct),
            (mode::ALWAYS, false, false, Cookie),
            (mode::ALWAYS, false, true, Direct),
        ] {
            assert_eq!(
                admission(service_mode, cookies_on, bypass),
                expected,
                "mode {service_mode} cookies {cookies_on} bypass {bypass}"
            );
        }
    }

    #[test]
    fn client_steps_by_admission() {
        use ClientStep::*;
        use TcpFlags as F;
        let step = |flags: u8, payload: u16, known: Known, admission: Admission| {
            client_step(&segment(flags, payload), known, admission)
        };
        assert_eq!(step(F::SYN, 0, Known::No, Admission::Direct), AdmitDirectly);
        assert_eq!(
            step(F::SYN, 0, Known::Closed, Admission::Direct),
            AdmitDirectly
        );
        assert_eq!(
            step(F::ACK, 0, Known::No, Admission::Direct),
            CheckCookie,
            "a third ACK of a cookie handshake begun before the switch"
        );
        for flags in [F::SYN, F::ACK, F::RST, F::FIN | F::ACK] {
            assert_eq!(
                step(flags, 0, Known::No, Admission::Untouched),
                PassUntouched(Counter::PassMonitored)
            );
        }
        assert_eq!(
            step(F::ACK, 0, Known::Joined, Admission::Untouched),
            Forward,
            "flows validated before a switch to monitor go on"
        );
    }

    #[test]
    fn server_steps() {
        use ServerStep::*;
        use TcpFlags as F;
        let syn_ack = TcpFlags(F::SYN | F::ACK);
        assert_eq!(server_step(syn_ack, Known::No, false, false), Untracked);
        assert_eq!(
            server_step(syn_ack, Known::AwaitingBackend, true, false),
            Join
        );
        assert_eq!(
            server_step(syn_ack, Known::AwaitingBackend, false, false),
            AwaitBackend
        );
        assert_eq!(
            server_step(
                TcpFlags(F::RST | F::ACK),
                Known::AwaitingBackend,
                true,
                false
            ),
            RefusedBeforeJoin
        );
        assert_eq!(server_step(syn_ack, Known::Joined, true, false), ReAck);
        assert_eq!(
            server_step(syn_ack, Known::Admitted, true, false),
            JoinDirect
        );
        assert_eq!(
            server_step(syn_ack, Known::Joined, true, true),
            Forward,
            "a direct flow's client answers the retransmission itself"
        );
        assert_eq!(
            server_step(syn_ack, Known::Admitted, false, false),
            Untracked
        );
        assert_eq!(
            server_step(TcpFlags(F::RST | F::ACK), Known::Admitted, true, false),
            Untracked
        );
        assert_eq!(
            server_step(TcpFlags(F::ACK), Known::Joined, false, false),
            Forward
        );
        assert_eq!(
            server_step(TcpFlags(F::FIN | F::ACK), Known::Closed, false, false),
            Forward
        );
    }

    #[test]
    fn xdp_codes_roundtrip() {
        for action in [Action::Pass, Action::Drop, Action::Tx, Action::Redirect] {
            assert_eq!(Action::from_xdp_code(action.xdp_code()), Some(action));
        }
        assert_eq!(Action::from_xdp_code(0), None); // XDP_ABORTED is never ours
    }
}
