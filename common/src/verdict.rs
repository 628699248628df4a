//! What the data plane does with a parsed frame.
//!
//! [`classify`] gives every frame its verdict from the parse alone:
//! - malformed IP or TCP headers: drop, counted by reason (the protected host must never see
//!   them, and the kernel would discard most of them anyway);
//! - TCP segments with a flag combination no TCP sends (SYN+FIN, SYN+RST, FIN+RST, none, FIN
//!   or URG without ACK, ...): drop;
//! - non-IP frames (ARP, LLDP, ...): pass, so the link keeps working;
//! - IP fragments: pass (their TCP header is absent or partial, so no TCP decision can be made);
//! - other well-formed TCP and IP: pass.
//!
//! A TCP segment to a protected service then takes the guard's [`protected_step`].

use crate::{
    counters::Counter,
    parse::{L3, ParseError, ParsedFrame, TcpFlags, Transport},
};

/// The XDP action taken, in terms independent of the kernel's numbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Pass,
    Drop,
    /// Sent back out of the interface it came in on (the SYN-ACK).
    Tx,
}

impl Action {
    /// The kernel's `enum xdp_action` value (uapi, stable).
    #[inline(always)]
    pub const fn xdp_code(self) -> u32 {
        match self {
            Action::Drop => 1,
            Action::Pass => 2,
            Action::Tx => 3,
        }
    }

    /// The action for an `enum xdp_action` value, if it is one of ours.
    pub const fn from_xdp_code(code: u32) -> Option<Action> {
        match code {
            1 => Some(Action::Drop),
            2 => Some(Action::Pass),
            3 => Some(Action::Tx),
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
        }) => match packet.transport {
            Transport::Tcp(tcp) if !flags_are_valid(tcp.flags) => {
                (Action::Drop, Counter::DropBadTcpFlags)
            }
            Transport::Tcp(_) => (Action::Pass, Counter::PassTcp),
            Transport::Fragment => (Action::Pass, Counter::PassFragment),
            Transport::Other { .. } => (Action::Pass, Counter::PassOtherProtocol),
        },
    };
    Verdict { action, reason }
}

/// Whether a TCP sender can produce these flags: netfilter's table of valid combinations
/// (PSH, ECE and CWR are free to appear with any of them).
#[inline(always)]
pub fn flags_are_valid(flags: TcpFlags) -> bool {
    const FIN: u8 = TcpFlags::FIN;
    const SYN: u8 = TcpFlags::SYN;
    const RST: u8 = TcpFlags::RST;
    const ACK: u8 = TcpFlags::ACK;
    const URG: u8 = TcpFlags::URG;
    matches!(
        flags.0 & (FIN | SYN | RST | ACK | URG),
        SYN | 0x22 /* SYN|URG */ | 0x12 /* SYN|ACK */ | RST | 0x14 /* RST|ACK */
            | 0x11 /* FIN|ACK */ | 0x31 /* FIN|ACK|URG */ | ACK | 0x30 /* ACK|URG */
    )
}

/// What the guard does with a (valid-flagged) TCP segment to a protected service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtectedStep {
    /// A SYN: answer with a cookie SYN-ACK, keep no state.
    AnswerWithCookie,
    /// An ACK of no known flow: it must echo a valid cookie.
    CheckCookie,
    /// A (non-SYN) segment of a flow the guard already validated. Forwarding validated flows
    /// to the server is the flows stage; until then they end here.
    AwaitBackend,
    /// Anything else (RST, FIN without a flow ...): handed to the kernel for now; the flows
    /// stage judges them against the flow table.
    Pass,
}

/// `known_flow` is asked only for segments other than SYNs: a SYN is answered with a cookie
/// whatever came before on its 4-tuple (it may open a new connection on a reused tuple), so
/// the SYN path needs no flow lookup.
#[inline(always)]
pub fn protected_step(flags: TcpFlags, known_flow: impl FnOnce() -> bool) -> ProtectedStep {
    if flags.has(TcpFlags::SYN) && !flags.has(TcpFlags::ACK) {
        ProtectedStep::AnswerWithCookie
    } else if known_flow() {
        ProtectedStep::AwaitBackend
    } else if flags.has(TcpFlags::ACK) && flags.0 & (TcpFlags::SYN | TcpFlags::RST) == 0 {
        ProtectedStep::CheckCookie
    } else {
        ProtectedStep::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        counters::{CounterBlock, Tally},
        parse::{IpAddrs, IpPacket},
    };

    fn ip(transport: Transport, v6: bool) -> Result<ParsedFrame, ParseError> {
        let addrs = if v6 {
            IpAddrs::V6 {
                src: [0; 16],
                dst: [0; 16],
            }
        } else {
            IpAddrs::V4 {
                src: [0; 4],
                dst: [0; 4],
            }
        };
        Ok(ParsedFrame {
            vlan_tags: 1,
            l3: L3::Ip(IpPacket {
                addrs,
                l3_offset: 18,
                l4_offset: 38,
                ip_end: 60,
                transport,
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
            (ip(Transport::Fragment, false), Counter::PassFragment),
            (
                ip(Transport::Other { protocol: 17 }, true),
                Counter::PassOtherProtocol,
            ),
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
        let parsed = ip(Transport::Fragment, true);
        block.record(Tally::of(&parsed), classify(&parsed));
        let dropped = Err(ParseError::TruncatedTcp);
        block.record(Tally::of(&dropped), classify(&dropped));
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

    #[test]
    fn protected_steps() {
        use ProtectedStep::*;
        use TcpFlags as F;
        let step = |flags: u8, known: bool| protected_step(TcpFlags(flags), || known);
        assert_eq!(step(F::SYN, false), AnswerWithCookie);
        assert_eq!(step(F::SYN | F::ECE | F::CWR, false), AnswerWithCookie);
        assert_eq!(step(F::ACK, false), CheckCookie);
        assert_eq!(step(F::ACK | F::PSH, false), CheckCookie);
        assert_eq!(step(F::FIN | F::ACK, false), CheckCookie);
        assert_eq!(step(F::RST, false), Pass);
        assert_eq!(step(F::RST | F::ACK, false), Pass);
        assert_eq!(step(F::SYN | F::ACK, false), Pass);
        for flags in [F::ACK, F::FIN | F::ACK, F::RST] {
            assert_eq!(step(flags, true), AwaitBackend);
        }
        assert_eq!(
            step(F::SYN, true),
            AnswerWithCookie,
            "a reused tuple opens anew"
        );
    }

    #[test]
    fn xdp_codes_roundtrip() {
        for action in [Action::Pass, Action::Drop, Action::Tx] {
            assert_eq!(Action::from_xdp_code(action.xdp_code()), Some(action));
        }
        assert_eq!(Action::from_xdp_code(0), None); // XDP_ABORTED is never ours
    }
}
