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
