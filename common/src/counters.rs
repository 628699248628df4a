//! Data-plane counters: one per-CPU block of `u64`s, indexed by [`Counter`].
//!
//! One map lookup per packet reaches the whole block; userspace sums the CPUs.

use crate::parse::{IpPacket, L3, ParseError, ParsedFrame};

macro_rules! counters {
    ($($variant:ident => $name:literal: $help:literal,)*) => {
        /// Every counter the data plane keeps.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u32)]
        pub enum Counter { $($variant,)* }

        impl Counter {
            pub const ALL: &'static [Counter] = &[$(Counter::$variant,)*];
            pub const COUNT: usize = Self::ALL.len();

            /// Stable snake_case name, used in output and metrics.
            pub const fn name(self) -> &'static str {
                match self { $(Counter::$variant => $name,)* }
            }

            /// One-line meaning, for help texts and metric descriptions.
            pub const fn help(self) -> &'static str {
                match self { $(Counter::$variant => $help,)* }
            }
        }
    };
}

counters! {
    Seen => "seen": "frames the XDP program ran on",
    Passed => "passed": "frames handed to the kernel stack (XDP_PASS)",
    Dropped => "dropped": "frames dropped (XDP_DROP)",
    Transmitted => "transmitted": "frames sent back out (XDP_TX): cookie SYN-ACKs, ACKs to the server",
    Redirected => "redirected": "forwarded frames sent straight to their next hop (XDP_REDIRECT)",
    Ipv4 => "ipv4": "well-formed IPv4 packets",
    Ipv6 => "ipv6": "well-formed IPv6 packets",
    VlanTagged => "vlan_tagged": "frames with one or two VLAN tags",
    PassNonIp => "pass_non_ip": "passed: not IPv4 or IPv6 (ARP, LLDP, ...)",
    PassTcp => "pass_tcp": "passed: well-formed TCP segments",
    PassFragment => "pass_fragment": "passed: IP fragments",
    PassOtherProtocol => "pass_other_protocol": "passed: IP protocols other than TCP",
    DropTruncatedEthernet => "drop_truncated_ethernet": "dropped: shorter than an Ethernet header",
    DropTruncatedVlan => "drop_truncated_vlan": "dropped: VLAN tag cut short",
    DropTooManyVlanTags => "drop_too_many_vlan_tags": "dropped: more than two VLAN tags",
    DropTruncatedIp => "drop_truncated_ip": "dropped: IP header or extension header cut short",
    DropBadIpVersion => "drop_bad_ip_version": "dropped: IP version disagrees with the ethertype",
    DropBadIpv4HeaderLength => "drop_bad_ipv4_header_length": "dropped: IPv4 IHL below 5",
    DropBadIpLength => "drop_bad_ip_length": "dropped: IP length field disagrees with the frame",
    DropIpv6ExtensionChainTooLong => "drop_ipv6_extension_chain_too_long": "dropped: more than six IPv6 extension headers",
    DropTruncatedTcp => "drop_truncated_tcp": "dropped: TCP header cut short",
    DropBadTcpDataOffset => "drop_bad_tcp_data_offset": "dropped: TCP data offset below 5 or past the packet",
    DropBadTcpOptions => "drop_bad_tcp_options": "dropped: TCP option list malformed",
    DropBadTcpFlags => "drop_bad_tcp_flags": "dropped: TCP flag combination no sender produces",
    DropBlocked => "drop_blocked": "dropped: source in the blocked list (policy or operator)",
    DropSynRate => "drop_syn_rate": "dropped: SYNs over their source's token bucket (--max-syn-rate and --syn-burst, per CPU)",
    PassMonitored => "pass_monitored": "passed: segments to a service in monitor mode (counted, never acted on)",
    PassAdmitted => "pass_admitted": "passed: SYNs let straight through to the server (auto mode under its threshold, allowlist) and segments of such flows before the server answers",
    TxSynCookie => "tx_syn_cookie": "SYNs to a protected service answered with a cookie SYN-ACK",
    CookieValid => "cookie_valid": "third ACKs whose cookie validated: rewritten into the SYN to the server",
    DropCookieInvalid => "drop_cookie_invalid": "dropped: bare ACKs of no validated flow with a forged cookie (ACK flood)",
    DropCookieExpired => "drop_cookie_expired": "dropped: ACK to a protected service with an expired cookie",
    EarlyDataHeld => "early_data_held": "client data before its server answered, handed to the controller to send on after the join",
    DropAwaitingBackend => "drop_awaiting_backend": "dropped: segments of a validated flow without data (or with more than a record holds) before its server answered",
    BackendJoined => "backend_joined": "server SYN-ACKs joined to their client: turned into the client's window update",
    TxBackendAck => "tx_backend_ack": "retransmitted server SYN-ACKs answered with the ACK (XDP_TX)",
    BackendRefused => "backend_refused": "dropped: server RSTs to our SYN (the controller resets the client)",
    ResetBeforeJoin => "reset_before_join": "dropped: client RSTs before the server answered (the controller ends the flow)",
    ForwardToServer => "forward_to_server": "segments of validated flows forwarded to the server",
    ForwardToClient => "forward_to_client": "segments of validated flows forwarded to the client",
    PassTooBig => "pass_too_big": "passed untranslated: forwarded segments larger than the egress link's MTU (IPv4 with DF, IPv6); the kernel drops them and tells the sender to send smaller ones",
    PassTtlExpired => "pass_ttl_expired": "passed untranslated: forwarded segments whose TTL (hop limit) runs out at the guard; the kernel sends the sender time exceeded",
    IcmpTranslated => "icmp_translated": "ICMP errors about a validated flow (unreachable, fragmentation needed, packet too big, time exceeded): the quoted header translated for the receiver, passed to the kernel to route",
    DropIcmpNoFlow => "drop_icmp_no_flow": "dropped: ICMP errors quoting a segment of a protected service that belongs to no validated flow",
    DropIcmpOutOfWindow => "drop_icmp_out_of_window": "dropped: ICMP errors about a validated flow whose quoted sequence number lies outside what the sender has in flight (forged)",
    TxResetForgotten => "tx_reset_forgotten": "segments of a flow the guard no longer holds (server segments of any such flow; client segments of one it remembers forgetting): answered with the RST the other end would send (XDP_TX)",
    DropForgottenOverRate => "drop_forgotten_over_rate": "dropped: segments of flows the guard no longer holds, past the per-CPU rate of such RSTs",
    DropTcpChecksum => "drop_tcp_checksum": "dropped: SYNs, third ACKs and segments of forgotten flows whose TCP checksum is wrong (or, with over 1,460 bytes of data, that a handshake cannot carry)",
    DropRstOutOfWindow => "drop_rst_out_of_window": "dropped: RSTs of a validated flow outside the receiver's window",
    DropStraySynAck => "drop_stray_syn_ack": "dropped: SYN-ACKs from the client side",
    DropStrayFin => "drop_stray_fin": "dropped: FINs of no validated flow (FIN flood)",
    DropStrayRst => "drop_stray_rst": "dropped: RSTs of no validated flow (RST flood)",
    DropEventLost => "drop_event_lost": "dropped: the flow event ring buffer was full (the sender retransmits)",
    DropRewriteFailed => "drop_rewrite_failed": "dropped: the frame could not be resized or rewritten",
    DropNoConfig => "drop_no_config": "dropped: cookie keys, settings or forwarding programs missing (controller not started)",
}

impl Counter {
    /// The drop counter for a malformed frame.
    pub const fn for_parse_error(error: ParseError) -> Counter {
        match error {
            ParseError::TruncatedEthernet => Counter::DropTruncatedEthernet,
            ParseError::TruncatedVlan => Counter::DropTruncatedVlan,
            ParseError::TooManyVlanTags => Counter::DropTooManyVlanTags,
            ParseError::TruncatedIp => Counter::DropTruncatedIp,
            ParseError::BadIpVersion => Counter::DropBadIpVersion,
            ParseError::BadIpv4HeaderLength => Counter::DropBadIpv4HeaderLength,
            ParseError::BadIpLength => Counter::DropBadIpLength,
            ParseError::Ipv6ExtensionChainTooLong => Counter::DropIpv6ExtensionChainTooLong,
            ParseError::TruncatedTcp => Counter::DropTruncatedTcp,
            ParseError::BadTcpDataOffset => Counter::DropBadTcpDataOffset,
            ParseError::BadTcpOptions => Counter::DropBadTcpOptions,
            ParseError::BadTcpFlags => Counter::DropBadTcpFlags,
        }
    }
}

/// Which family of metrics a counter belongs to: each frame is counted once in `Seen`, once
/// by the action taken, once by the reason for it, and by its IP family and VLAN tagging; so
/// summing within a group counts each frame once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterGroup {
    Seen,
    Action,
    Family,
    Reason,
}

impl Counter {
    pub const fn group(self) -> CounterGroup {
        match self {
            Counter::Seen => CounterGroup::Seen,
            Counter::Passed | Counter::Dropped | Counter::Transmitted | Counter::Redirected => {
                CounterGroup::Action
            }
            Counter::Ipv4 | Counter::Ipv6 | Counter::VlanTagged => CounterGroup::Family,
            _ => CounterGroup::Reason,
        }
    }
}

/// What a frame adds to the family and VLAN counters, noted right after the parse so the
/// parse result need not live until the frame is counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub vlan_tagged: bool,
    pub family: Option<Counter>,
}

impl Tally {
    #[inline(always)]
    pub fn of(parsed: &Result<ParsedFrame, ParseError>) -> Self {
        match parsed {
            Err(_) => Tally::default(),
            Ok(frame) => Tally {
                vlan_tagged: frame.vlan_tags > 0,
                family: match frame.l3 {
                    L3::Ip(IpPacket { addrs, .. }) if addrs.is_v6() => Some(Counter::Ipv6),
                    L3::Ip(_) => Some(Counter::Ipv4),
                    L3::NonIp { .. } => None,
                },
            },
        }
    }
}

/// Name of the per-CPU array map holding one [`CounterBlock`].
pub const COUNTERS_MAP: &str = "COUNTERS";

/// The value of the counters map: every counter of one CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct CounterBlock {
    pub values: [u64; Counter::COUNT],
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for CounterBlock {}

impl Default for CounterBlock {
    fn default() -> Self {
        Self {
            values: [0; Counter::COUNT],
        }
    }
}

impl CounterBlock {
    #[inline(always)]
    pub fn bump(&mut self, counter: Counter) {
        // A checked index: a counter read back from map memory (a tail-called program's
        // tally) is any number to the verifier until compared.
        if let Some(value) = self.values.get_mut(counter as usize) {
            *value += 1;
        }
    }

    pub fn get(&self, counter: Counter) -> u64 {
        self.values[counter as usize]
    }

    /// Adds another block (another CPU's) into this one.
    pub fn accumulate(&mut self, other: &CounterBlock) {
        for (sum, value) in self.values.iter_mut().zip(other.values.iter()) {
            *sum = sum.wrapping_add(*value);
        }
    }
}
