//! What the data plane does with a parsed frame.
//!
//! Verdicts in this version (the guard only parses and counts; protection builds on this):
//! - malformed IP or TCP headers: drop, counted by reason (the protected host must never see
//!   them, and the kernel would discard most of them anyway);
//! - non-IP frames (ARP, LLDP, ...): pass, so the link keeps working;
//! - IP fragments: pass (their TCP header is absent or partial, so no TCP decision can be made);
//! - well-formed TCP and other IP protocols: pass.

use crate::{
    counters::Counter,
    parse::{L3, ParseError, ParsedFrame, Transport},
};

/// The XDP action taken, in terms independent of the kernel's numbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Pass,
    Drop,
}

impl Action {
    /// The kernel's `enum xdp_action` value (uapi, stable).
    #[inline(always)]
    pub const fn xdp_code(self) -> u32 {
        match self {
            Action::Drop => 1,
            Action::Pass => 2,
        }
    }

    /// The action for an `enum xdp_action` value, if it is one of ours.
    pub const fn from_xdp_code(code: u32) -> Option<Action> {
        match code {
            1 => Some(Action::Drop),
            2 => Some(Action::Pass),
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
            Transport::Tcp(_) => (Action::Pass, Counter::PassTcp),
            Transport::Fragment => (Action::Pass, Counter::PassFragment),
            Transport::Other { .. } => (Action::Pass, Counter::PassOtherProtocol),
        },
    };
    Verdict { action, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        counters::CounterBlock,
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
        block.record(&parsed, classify(&parsed));
        let dropped = Err(ParseError::TruncatedTcp);
        block.record(&dropped, classify(&dropped));
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
    fn xdp_codes_roundtrip() {
        for action in [Action::Pass, Action::Drop] {
            assert_eq!(Action::from_xdp_code(action.xdp_code()), Some(action));
        }
        assert_eq!(Action::from_xdp_code(0), None); // XDP_ABORTED is never ours
    }
}
