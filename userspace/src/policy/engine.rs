//! Who gets blocked, for how long, and why.
//!
//! The data plane only counts (per source and service: SYNs, cookies sent, cookies validated,
//! invalid ACKs, out-of-state segments). Every policy interval the controller feeds the
//! cumulative counts to [`Policy::observe`], which turns them into a SYN token bucket, a
//! decaying half-open count and per-second rates, compares them with the limits, and returns
//! [`Decision`]s: records of who was blocked (or, for a service in monitor mode, who would
//! have been), which limit, the measured value, and until when. Blocks expire after a TTL that
//! doubles for each repeat offence; sources on the allowlist are never blocked; enough blocked
//! sources inside one /24 (/64) block the whole prefix. The caller applies the decisions to the
//! data plane and exports them.
//!
//! Time is passed in (seconds since the Unix epoch) so tests drive it.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv6Addr},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use synguard_common::{
    maps::{SourceCounters, SourceKey},
    token_bucket::TokenBucket,
};

/// A count that decays exponentially with the given half-life.
pub fn decayed(value: f64, elapsed: f64, half_life: f64) -> f64 {
    if half_life <= 0.0 {
        return 0.0;
    }
    value * 0.5f64.powf(elapsed.max(0.0) / half_life)
}

/// The limits a source is held to (per service it talks to); `None` is no limit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Limits {
    /// Half-open connections: cookie SYN-ACKs sent minus cookies validated, decaying. This,
    /// the SYN rate and the out-of-state rate spare a source that completes handshakes.
    pub max_half_open: Option<f64>,
    /// SYNs per second, with this burst on top (a token bucket over the interval's SYNs;
    /// the data plane runs the same bucket per CPU on each SYN).
    pub max_syn_rate: Option<u64>,
    pub syn_burst: u64,
    /// Bare ACKs with a forged or expired cookie, per second.
    pub max_invalid_ack_rate: Option<f64>,
    /// Stray FIN/RST/SYN-ACK segments of no flow, per second.
    pub max_out_of_state_rate: Option<f64>,
    /// Half-life of the half-open count, seconds.
    pub half_open_half_life: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_half_open: Some(1000.0),
            max_syn_rate: Some(1000),
            syn_burst: 2000,
            max_invalid_ack_rate: Some(1000.0),
            max_out_of_state_rate: Some(1000.0),
            half_open_half_life: 10.0,
        }
    }
}

/// How blocks last and spread.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BlockRules {
    /// First block of a prefix, seconds; doubled for each repeat offence.
    pub ttl: u64,
    /// The longest a policy block lasts, seconds.
    pub max_ttl: u64,
    /// How long an offence counts toward a repeat, seconds.
    pub memory: u64,
    /// Blocked sources in one aggregate prefix that block the whole prefix (0: never).
    pub aggregate_sources: usize,
    pub aggregate_v4: u8,
    pub aggregate_v6: u8,
}

impl Default for BlockRules {
    fn default() -> Self {
        Self {
            ttl: 60,
            max_ttl: 3600,
            memory: 86400,
            aggregate_sources: 0,
            aggregate_v4: 24,
            aggregate_v6: 64,
        }
    }
}

/// Why a decision was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    HalfOpen,
    SynRate,
    InvalidAckRate,
    OutOfStateRate,
    /// Enough blocked sources inside one prefix.
    Aggregate,
    /// `synguard block add` or a block list file.
    Operator,
    /// The TTL ran out.
    Expired,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::HalfOpen,
        Reason::SynRate,
        Reason::InvalidAckRate,
        Reason::OutOfStateRate,
        Reason::Aggregate,
        Reason::Operator,
        Reason::Expired,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reason::HalfOpen => "half_open",
            Reason::SynRate => "syn_rate",
            Reason::InvalidAckRate => "invalid_ack_rate",
            Reason::OutOfStateRate => "out_of_state_rate",
            Reason::Aggregate => "aggregate",
            Reason::Operator => "operator",
            Reason::Expired => "expired",
        }
    }
}

/// What a decision does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Dropped in XDP from now on.
    Block,
    /// No longer blocked.
    Unblock,
    /// Would have been blocked, but the service is in monitor mode.
    Report,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Block, Outcome::Unblock, Outcome::Report];

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Block => "block",
            Outcome::Unblock => "unblock",
            Outcome::Report => "report",
        }
    }
}

/// One decision, as it is exported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Seconds since the Unix epoch.
    pub time: f64,
    pub action: Outcome,
    pub prefix: IpNet,
    pub reason: Reason,
    /// The service slot whose limits the source broke (0 for operator and aggregate blocks).
    pub service: u8,
    /// What was measured, and the limit it broke (for aggregates: blocked sources inside).
    pub measured: f64,
    pub limit: f64,
    /// When the block ends (None: when the operator lifts it).
    pub until: Option<f64>,
    /// Offences of this prefix within the memory window, this one included.
    pub offence: u32,
}

/// A prefix in the blocked list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Block {
    pub prefix: IpNet,
    pub reason: Reason,
    pub since: f64,
    pub until: Option<f64>,
    pub measured: f64,
    pub limit: f64,
}

/// A prefix on the allowlist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allow {
    pub prefix: IpNet,
    /// Its SYNs skip the cookie challenge too.
    pub bypass: bool,
}

/// The blocked and allowed prefixes, as saved across restarts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Lists {
    pub blocks: Vec<Block>,
    pub allows: Vec<Allow>,
}

/// What the policy remembers of one source talking to one service.
#[derive(Clone, Debug)]
struct Tracked {
    last: SourceCounters,
    bucket: TokenBucket,
    half_open: f64,
    seen: f64,
}

/// The sources that completed a cookie handshake lately (the data plane's vouched map, see
/// `COMPLETED_VOUCHES_FOR_SECS`): they receive what is sent to them, so they are real hosts.
/// SYNs in their name that never complete may be spoofed by someone else, and cookies make
/// them harmless; such a host answers their SYN-ACKs with RSTs (RFC 9293 3.10.7.1), strays to
/// us. None of that gets it blocked, nor its prefix aggregated; forged cookies still do,
/// since a host's own stack sends no ACK for a connection it did not open.
pub trait Vouched {
    fn vouched(&self, key: &SourceKey) -> bool;
    /// Whether a vouched source lies inside `prefix` (asked only for aggregation).
    fn any_inside(&self, prefix: &IpNet) -> bool;
}

/// A fixed set of vouched sources (what the host tests hand the policy).
impl Vouched for [SourceKey] {
    fn vouched(&self, key: &SourceKey) -> bool {
        self.contains(key)
    }

    fn any_inside(&self, prefix: &IpNet) -> bool {
        self.iter().any(|key| prefix.contains(&source_address(key)))
    }
}

/// A source's figures in the last interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct SourceFigures {
    pub half_open: f64,
    pub syn_rate: f64,
    pub invalid_ack_rate: f64,
    pub out_of_state_rate: f64,
}

pub struct Policy {
    pub limits: Limits,
    pub rules: BlockRules,
    tracked: HashMap<SourceKey, Tracked>,
    figures: HashMap<SourceKey, SourceFigures>,
    blocks: BTreeMap<IpNet, Block>,
    /// Monitor-mode reports, so that one source is reported once per TTL.
    reported: HashMap<IpNet, f64>,
    allows: BTreeMap<IpNet, Allow>,
    /// Offence count and time of the last one, per prefix.
    offences: HashMap<IpNet, (u32, f64)>,
    last_observed: Option<f64>,
}

/// Sources unseen for this long are forgotten (their counts restart from the map).
const FORGET_AFTER: f64 = 600.0;

impl Policy {
    pub fn new(limits: Limits, rules: BlockRules) -> Self {
        Self {
            limits,
            rules,
            tracked: HashMap::new(),
            figures: HashMap::new(),
            blocks: BTreeMap::new(),
            reported: HashMap::new(),
            allows: BTreeMap::new(),
            offences: HashMap::new(),
            last_observed: None,
        }
    }

    pub fn blocks(&self) -> impl Iterator<Item = &Block> {
        self.blocks.values()
    }

    pub fn allows(&self) -> impl Iterator<Item = &Allow> {
        self.allows.values()
    }

    pub fn is_allowed(&self, address: IpAddr) -> bool {
        self.allows.keys().any(|net| net.contains(&address))
    }

    /// The figures of the last interval, per source and service.
    pub fn figures(&self) -> impl Iterator<Item = (&SourceKey, &SourceFigures)> {
        self.figures.iter()
    }

    /// Sum of every tracked source's half-open count.
    pub fn half_open_total(&self) -> f64 {
        self.tracked.values().map(|t| t.half_open).sum()
    }

    /// Feeds the cumulative counters of every source the data plane knows (summed over CPUs),
    /// `enforcing(slot)` tells whether a service acts (false in monitor mode). Returns the
    /// blocks and reports this interval decided.
    pub fn observe(
        &mut self,
        now: f64,
        samples: impl IntoIterator<Item = (SourceKey, SourceCounters)>,
        enforcing: impl Fn(u8) -> bool,
        vouched: &(impl Vouched + ?Sized),
    ) -> Vec<Decision> {
        let elapsed = self.last_observed.map_or(0.0, |last| (now - last).max(0.0));
        self.last_observed = Some(now);
        self.figures.clear();
        let mut decisions = Vec::new();
        for (key, counters) in samples {
            let limits = &self.limits;
            let fresh = !self.tracked.contains_key(&key);
            let tracked = self.tracked.entry(key).or_insert_with(|| Tracked {
                last: SourceCounters::default(),
                bucket: TokenBucket::default(),
                half_open: 0.0,
                seen: now,
            });
            // A source the LRU evicted and met again restarts from zero.
            let delta = |now: u64, before: u64| if now >= before { now - before } else { now };
            let syns = delta(counters.syns, tracked.last.syns) as f64;
            let sent = delta(counters.cookies_sent, tracked.last.cookies_sent) as f64;
            let validated =
                delta(counters.cookies_validated, tracked.last.cookies_validated) as f64;
            let invalid = delta(counters.invalid_acks, tracked.last.invalid_acks) as f64;
            let stray = delta(counters.out_of_state, tracked.last.out_of_state) as f64;
            if syns + sent + validated + invalid + stray > 0.0 {
                tracked.seen = now;
            }
            tracked.last = counters;
            // A source met for the first time has counted for about one interval.
            let span = if fresh || elapsed <= 0.0 {
                elapsed.max(1.0)
            } else {
                elapsed
            };
            tracked.half_open =
                (decayed(tracked.half_open, span, limits.half_open_half_life) + sent - validated)
                    .max(0.0);
            let now_ns = (now * 1e9) as u64;
            let overdrawn = limits.max_syn_rate.is_some_and(|rate| {
                !tracked
                    .bucket
                    .take(now_ns, rate, limits.syn_burst, syns as u64)
            });
            let figures = SourceFigures {
                half_open: tracked.half_open,
                syn_rate: syns / span,
                invalid_ack_rate: invalid / span,
                out_of_state_rate: stray / span,
            };
            self.figures.insert(key, figures);
            // The SYN rate is judged by its bucket (the burst allows spikes), the rest by value;
            // what spoofing in its name causes spares a vouched source (looked up only then).
            let over = |value: f64, limit: Option<f64>| limit.map(|limit| (value > limit, limit));
            let spoofable = |limit: Option<(bool, f64)>| {
                limit.filter(|(broken, _)| !broken || !vouched.vouched(&key))
            };
            let broken = [
                (
                    Reason::HalfOpen,
                    figures.half_open,
                    spoofable(over(figures.half_open, limits.max_half_open)),
                ),
                (
                    Reason::SynRate,
                    figures.syn_rate,
                    spoofable(limits.max_syn_rate.map(|limit| (overdrawn, limit as f64))),
                ),
                (
                    Reason::InvalidAckRate,
                    figures.invalid_ack_rate,
                    over(figures.invalid_ack_rate, limits.max_invalid_ack_rate),
                ),
                (
                    Reason::OutOfStateRate,
                    figures.out_of_state_rate,
                    spoofable(over(
                        figures.out_of_state_rate,
                        limits.max_out_of_state_rate,
                    )),
                ),
            ]
            .into_iter()
            .find_map(|(reason, measured, check)| match check {
                Some((true, limit)) => Some((reason, measured, limit)),
                _ => None,
            });
            let Some((reason, measured, limit)) = broken else {
                continue;
            };
            let address = source_address(&key);
            if self.is_allowed(address) {
                continue;
            }
            let prefix = IpNet::from(address);
            if let Some(decision) = self.decide(
                now,
                prefix,
                reason,
                key.slot,
                measured,
                limit,
                enforcing(key.slot),
            ) {
                decisions.push(decision);
            }
        }
        self.tracked
            .retain(|_, tracked| now - tracked.seen < FORGET_AFTER);
        decisions.extend(self.aggregate(now, vouched));
        decisions
    }

    /// Blocks (or, not `enforced`, reports) a prefix, unless it is already.
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &mut self,
        now: f64,
        prefix: IpNet,
        reason: Reason,
        service: u8,
        measured: f64,
        limit: f64,
        enforced: bool,
    ) -> Option<Decision> {
        if self.blocks.contains_key(&prefix)
            || self
                .blocks
                .keys()
                .any(|net| net != &prefix && net.contains(&prefix))
        {
            return None;
        }
        if !enforced && self.reported.get(&prefix).is_some_and(|until| *until > now) {
            return None;
        }
        let offence = self.offend(prefix, now);
        let ttl = self.ttl(offence) as f64;
        let until = Some(now + ttl);
        let action = if enforced {
            self.blocks.insert(
                prefix,
                Block {
                    prefix,
                    reason,
                    since: now,
                    until,
                    measured,
                    limit,
                },
            );
            Outcome::Block
        } else {
            self.reported.insert(prefix, now + ttl);
            Outcome::Report
        };
        Some(Decision {
            time: now,
            action,
            prefix,
            reason,
            service,
            measured,
            limit,
            until,
            offence,
        })
    }

    fn offend(&mut self, prefix: IpNet, now: f64) -> u32 {
        let memory = self.rules.memory as f64;
        let entry = self.offences.entry(prefix).or_insert((0, now));
        if now - entry.1 > memory {
            entry.0 = 0;
        }
        entry.0 += 1;
        entry.1 = now;
        entry.0
    }

    /// TTL of the `offence`-th block: doubled each time, capped.
    pub fn ttl(&self, offence: u32) -> u64 {
        let doublings = offence.saturating_sub(1).min(32);
        self.rules
            .ttl
            .saturating_mul(1u64 << doublings)
            .min(self.rules.max_ttl.max(self.rules.ttl))
    }

    /// Blocks every aggregate prefix holding enough blocked sources and no vouched one (its
    /// spoofed neighbours stay blocked one by one).
    fn aggregate(&mut self, now: f64, vouched: &(impl Vouched + ?Sized)) -> Vec<Decision> {
        let threshold = self.rules.aggregate_sources;
        if threshold == 0 {
            return Vec::new();
        }
        let mut members: BTreeMap<IpNet, usize> = BTreeMap::new();
        for block in self.blocks.values() {
            if block.reason == Reason::Aggregate || block.reason == Reason::Operator {
                continue;
            }
            let length = match block.prefix {
                IpNet::V4(_) => self.rules.aggregate_v4,
                IpNet::V6(_) => self.rules.aggregate_v6,
            };
            if block.prefix.prefix_len() > length
                && let Ok(wider) = IpNet::new(block.prefix.addr(), length)
            {
                *members.entry(wider.trunc()).or_default() += 1;
            }
        }
        let mut decisions = Vec::new();
        for (prefix, count) in members {
            if count >= threshold
                && !vouched.any_inside(&prefix)
                && let Some(decision) = self.decide(
                    now,
                    prefix,
                    Reason::Aggregate,
                    0,
                    count as f64,
                    threshold as f64,
                    true,
                )
            {
                decisions.push(decision);
            }
        }
        decisions
    }

    /// The sources whose counters moved in the round observed at `now`.
    pub fn active_at(&self, now: f64) -> impl Iterator<Item = &SourceKey> {
        self.tracked
            .iter()
            .filter(move |(_, tracked)| tracked.seen == now)
            .map(|(key, _)| key)
    }

    /// Lifts the blocks whose TTL ran out.
    pub fn expire(&mut self, now: f64) -> Vec<Decision> {
        self.reported.retain(|_, until| *until > now);
        let expired: Vec<IpNet> = self
            .blocks
            .values()
            .filter(|block| block.until.is_some_and(|until| until <= now))
            .map(|block| block.prefix)
            .collect();
        expired
            .into_iter()
            .filter_map(|prefix| self.blocks.remove(&prefix))
            .map(|block| Decision {
                time: now,
                action: Outcome::Unblock,
                prefix: block.prefix,
                reason: Reason::Expired,
                service: 0,
                measured: block.measured,
                limit: block.limit,
                until: None,
                offence: self.offences.get(&block.prefix).map_or(0, |o| o.0),
            })
            .collect()
    }

    /// The operator blocks a prefix (for `ttl` seconds, or until lifted). Refused for a
    /// prefix that overlaps the allowlist.
    pub fn block(&mut self, now: f64, prefix: IpNet, ttl: Option<u64>) -> Result<Decision, String> {
        let prefix = prefix.trunc();
        if let Some(allow) = self
            .allows
            .keys()
            .find(|net| net.contains(&prefix) || prefix.contains(*net))
        {
            return Err(format!(
                "{prefix} overlaps the allowlist entry {allow}: remove it first with `synguard allow del {allow}`"
            ));
        }
        let until = ttl.map(|ttl| now + ttl as f64);
        self.blocks.insert(
            prefix,
            Block {
                prefix,
                reason: Reason::Operator,
                since: now,
                until,
                measured: 0.0,
                limit: 0.0,
            },
        );
        Ok(Decision {
            time: now,
            action: Outcome::Block,
            prefix,
            reason: Reason::Operator,
            service: 0,
            measured: 0.0,
            limit: 0.0,
            until,
            offence: 0,
        })
    }

    /// The operator lifts a block.
    pub fn unblock(&mut self, now: f64, prefix: IpNet) -> Option<Decision> {
        let block = self.blocks.remove(&prefix.trunc())?;
        Some(Decision {
            time: now,
            action: Outcome::Unblock,
            prefix: block.prefix,
            reason: Reason::Operator,
            service: 0,
            measured: 0.0,
            limit: 0.0,
            until: None,
            offence: 0,
        })
    }

    /// Puts a prefix on the allowlist; blocks inside it are lifted (returned).
    pub fn allow(&mut self, now: f64, prefix: IpNet, bypass: bool) -> Vec<Decision> {
        let prefix = prefix.trunc();
        self.allows.insert(prefix, Allow { prefix, bypass });
        let inside: Vec<IpNet> = self
            .blocks
            .keys()
            .filter(|net| prefix.contains(*net))
            .copied()
            .collect();
        inside
            .into_iter()
            .filter_map(|net| self.unblock(now, net))
            .collect()
    }

    /// What must survive a restart: the blocks (with their reasons and ends) and the allows.
    pub fn lists(&self) -> Lists {
        Lists {
            blocks: self.blocks.values().cloned().collect(),
            allows: self.allows.values().cloned().collect(),
        }
    }

    /// Takes the lists back after a restart.
    pub fn restore(&mut self, lists: Lists) {
        self.blocks = lists.blocks.into_iter().map(|b| (b.prefix, b)).collect();
        self.allows = lists.allows.into_iter().map(|a| (a.prefix, a)).collect();
    }

    pub fn disallow(&mut self, prefix: IpNet) -> Option<Allow> {
        self.allows.remove(&prefix.trunc())
    }
}

/// The address of a per-source key (IPv4 from its IPv4-mapped form).
pub fn source_address(key: &SourceKey) -> IpAddr {
    let v6 = Ipv6Addr::from(key.addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// The per-source key of an address.
pub fn source_key(address: IpAddr, slot: u8) -> SourceKey {
    let addr = match address {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    SourceKey {
        addr,
        slot,
        _pad: [0; 3],
    }
}
