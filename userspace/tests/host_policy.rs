//! The policy engine on synthetic counter streams: token bucket and decay arithmetic, blocks
//! and their TTLs, the allowlist, prefix aggregation, monitor-mode reports, operator blocks.

use std::net::IpAddr;

use ipnet::IpNet;
use synguard::policy::engine::{
    BlockRules, Limits, Outcome, Policy, Reason, decayed, source_address, source_key,
};
use synguard_common::maps::{SourceCounters, SourceKey};

fn addr(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

/// Only a SYN-rate limit, so each test isolates one limit.
fn syn_rate_only(rate: u64, burst: u64) -> Limits {
    Limits {
        max_half_open: None,
        max_syn_rate: Some(rate),
        syn_burst: burst,
        max_invalid_ack_rate: None,
        max_out_of_state_rate: None,
        half_open_half_life: 10.0,
    }
}

fn syns(count: u64) -> SourceCounters {
    SourceCounters {
        syns: count,
        ..SourceCounters::default()
    }
}

#[test]
fn half_open_decays_by_half_each_half_life() {
    assert_eq!(decayed(800.0, 10.0, 10.0), 400.0);
    assert_eq!(decayed(800.0, 30.0, 10.0), 100.0);
    assert_eq!(decayed(800.0, 0.0, 10.0), 800.0);
    assert!((decayed(1000.0, 5.0, 10.0) - 707.1).abs() < 0.1);
    assert_eq!(decayed(5.0, 1.0, 0.0), 0.0, "no half-life, no memory");
}

#[test]
fn a_source_over_its_syn_rate_is_blocked_once() {
    let mut policy = Policy::new(syn_rate_only(100, 200), BlockRules::default());
    let flooder = source_key(addr("198.18.0.66"), 1);
    let calm = source_key(addr("198.18.0.2"), 1);
    let mut total = 0;
    let mut decisions = Vec::new();
    for second in 0..5 {
        total += 5000;
        decisions.extend(policy.observe(
            1000.0 + second as f64,
            [(flooder, syns(total)), (calm, syns(50 * second))],
            |_| true,
            NOBODY,
        ));
    }
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    let block = &decisions[0];
    assert_eq!(block.action, Outcome::Block);
    assert_eq!(block.prefix, net("198.18.0.66/32"));
    assert_eq!(block.reason, Reason::SynRate);
    assert_eq!(block.service, 1);
    assert_eq!(block.measured, 5000.0);
    assert_eq!(block.limit, 100.0);
    assert_eq!(block.until, Some(1000.0 + 60.0));
    assert_eq!(block.offence, 1);
    assert_eq!(policy.blocks().count(), 1);
}

/// What the controller seeds into each new sketch interval: the sources that sent something
/// in the last round, not every source the per-source map still holds.
#[test]
fn only_sources_whose_counters_moved_are_active() {
    let mut policy = Policy::new(syn_rate_only(100, 200), BlockRules::default());
    let steady = source_key(addr("198.18.0.2"), 1);
    let one_off = source_key(addr("198.18.200.9"), 1);
    policy.observe(
        1000.0,
        [(steady, syns(5)), (one_off, syns(1))],
        |_| true,
        NOBODY,
    );
    let mut active: Vec<_> = policy.active_at(1000.0).copied().collect();
    active.sort_by_key(|key| key.addr);
    assert_eq!(active, [steady, one_off]);
    policy.observe(
        1001.0,
        [(steady, syns(9)), (one_off, syns(1))],
        |_| true,
        NOBODY,
    );
    assert_eq!(
        policy.active_at(1001.0).copied().collect::<Vec<_>>(),
        [steady]
    );
}

#[test]
fn the_burst_absorbs_a_short_spike() {
    let mut policy = Policy::new(syn_rate_only(100, 1000), BlockRules::default());
    let source = source_key(addr("198.18.0.7"), 1);
    assert!(
        policy
            .observe(0.0, [(source, syns(0))], |_| true, NOBODY)
            .is_empty()
    );
    assert!(
        policy
            .observe(1.0, [(source, syns(900))], |_| true, NOBODY)
            .is_empty(),
        "900 SYNs in one second fit a burst of 1000"
    );
    let decisions = policy.observe(2.0, [(source, syns(1800))], |_| true, NOBODY);
    assert_eq!(decisions.len(), 1, "the burst is spent: {decisions:?}");
}

#[test]
fn half_open_counts_cookies_never_completed() {
    let limits = Limits {
        max_half_open: Some(500.0),
        max_syn_rate: None,
        ..syn_rate_only(0, 0)
    };
    let mut policy = Policy::new(limits, BlockRules::default());
    let honest = source_key(addr("198.18.0.2"), 1);
    let spoofer = source_key(addr("198.18.0.9"), 1);
    let mut decisions = Vec::new();
    for second in 1..=4u64 {
        let honest_counts = SourceCounters {
            syns: 300 * second,
            cookies_sent: 300 * second,
            cookies_validated: 300 * second,
            ..SourceCounters::default()
        };
        let spoofer_counts = SourceCounters {
            syns: 200 * second,
            cookies_sent: 200 * second,
            ..SourceCounters::default()
        };
        decisions.extend(policy.observe(
            second as f64,
            [(honest, honest_counts), (spoofer, spoofer_counts)],
            |_| true,
            NOBODY,
        ));
    }
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    assert_eq!(decisions[0].prefix, net("198.18.0.9/32"));
    assert_eq!(decisions[0].reason, Reason::HalfOpen);
    assert!(decisions[0].measured > 500.0);
    let figures: Vec<_> = policy.figures().map(|(k, f)| (*k, *f)).collect();
    let honest_figures = figures.iter().find(|(k, _)| *k == honest).unwrap().1;
    assert_eq!(honest_figures.half_open, 0.0);
    assert_eq!(honest_figures.syn_rate, 300.0);
}

/// No source completed a handshake lately.
const NOBODY: &[SourceKey] = &[];

/// A real client at 200 connections/s whose address a flood also spoofs at 5,000 SYN/s (it
/// answers the flood's SYN-ACKs with RSTs): cumulative counters after `second` seconds.
fn spoofed_real_client(second: u64) -> SourceCounters {
    SourceCounters {
        syns: 5200 * second,
        cookies_sent: 5200 * second,
        cookies_validated: 200 * second,
        out_of_state: 5000 * second,
        ..SourceCounters::default()
    }
}

#[test]
fn syns_spoofed_in_the_name_of_a_real_client_do_not_get_it_blocked() {
    let limits = Limits {
        max_half_open: Some(1000.0),
        max_invalid_ack_rate: Some(100.0),
        max_out_of_state_rate: Some(1000.0),
        ..syn_rate_only(1000, 2000)
    };
    let mut policy = Policy::new(limits, BlockRules::default());
    let client = source_key(addr("198.18.1.2"), 1);
    let spoofed = source_key(addr("198.18.1.3"), 1);
    let flood = |second: u64| SourceCounters {
        cookies_validated: 0,
        out_of_state: 0,
        ..spoofed_real_client(second)
    };
    let vouched = [client];
    let mut decisions = Vec::new();
    for second in 0..=5u64 {
        decisions.extend(policy.observe(
            second as f64,
            [
                (client, spoofed_real_client(second)),
                (spoofed, flood(second)),
            ],
            |_| true,
            &vouched[..],
        ));
    }
    let blocked: Vec<_> = decisions.iter().map(|d| d.prefix).collect();
    assert_eq!(blocked, [net("198.18.1.3/32")], "{decisions:?}");
    let client_figures = policy.figures().find(|(k, _)| **k == client).unwrap().1;
    assert!(
        client_figures.half_open > 1000.0
            && client_figures.syn_rate > 1000.0
            && client_figures.out_of_state_rate > 1000.0,
        "over the half-open, SYN and out-of-state limits: {client_figures:?}"
    );

    // Forged cookies are not SYN-side: they block whoever sends them.
    let mut counters = spoofed_real_client(6);
    counters.invalid_acks = 1000;
    let decisions = policy.observe(6.0, [(client, counters)], |_| true, &vouched[..]);
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    assert_eq!(decisions[0].reason, Reason::InvalidAckRate);

    // Once nothing vouches for it, the same figures block it.
    let mut policy = Policy::new(syn_rate_only(1000, 2000), BlockRules::default());
    policy.observe(0.0, [(client, spoofed_real_client(0))], |_| true, NOBODY);
    let decisions = policy.observe(1.0, [(client, spoofed_real_client(1))], |_| true, NOBODY);
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    assert_eq!(decisions[0].reason, Reason::SynRate);
}

#[test]
fn invalid_acks_and_strays_have_their_own_limits() {
    let limits = Limits {
        max_half_open: None,
        max_syn_rate: None,
        syn_burst: 0,
        max_invalid_ack_rate: Some(100.0),
        max_out_of_state_rate: Some(50.0),
        half_open_half_life: 10.0,
    };
    let mut policy = Policy::new(limits, BlockRules::default());
    let acker = source_key(addr("198.18.1.1"), 1);
    let rst = source_key(addr("198.18.1.2"), 1);
    policy.observe(0.0, [], |_| true, NOBODY);
    let decisions = policy.observe(
        1.0,
        [
            (
                acker,
                SourceCounters {
                    invalid_acks: 101,
                    ..SourceCounters::default()
                },
            ),
            (
                rst,
                SourceCounters {
                    out_of_state: 51,
                    ..SourceCounters::default()
                },
            ),
        ],
        |_| true,
        NOBODY,
    );
    let reasons: Vec<_> = decisions.iter().map(|d| (d.prefix, d.reason)).collect();
    assert!(reasons.contains(&(net("198.18.1.1/32"), Reason::InvalidAckRate)));
    assert!(reasons.contains(&(net("198.18.1.2/32"), Reason::OutOfStateRate)));
}

#[test]
fn blocks_expire_and_repeat_offenders_wait_longer() {
    let rules = BlockRules {
        ttl: 10,
        max_ttl: 35,
        ..BlockRules::default()
    };
    let mut policy = Policy::new(syn_rate_only(10, 10), rules);
    let source = source_key(addr("198.18.0.66"), 1);
    let mut total = 0;
    let mut ttls = Vec::new();
    let mut now = 0.0;
    policy.observe(now, [(source, syns(0))], |_| true, NOBODY);
    for _ in 0..4 {
        now += 1.0;
        total += 1000;
        let decisions = policy.observe(now, [(source, syns(total))], |_| true, NOBODY);
        assert_eq!(decisions.len(), 1);
        let until = decisions[0].until.unwrap();
        ttls.push(until - now);
        assert!(policy.expire(until - 0.5).is_empty(), "not before its time");
        let lifted = policy.expire(until);
        assert_eq!(lifted.len(), 1);
        assert_eq!(
            (lifted[0].action, lifted[0].reason),
            (Outcome::Unblock, Reason::Expired)
        );
        now = until;
    }
    assert_eq!(ttls, [10.0, 20.0, 35.0, 35.0], "doubling, capped");
}

#[test]
fn allowlisted_sources_are_never_blocked() {
    let mut policy = Policy::new(syn_rate_only(10, 10), BlockRules::default());
    assert!(policy.allow(0.0, net("198.18.0.0/28"), false).is_empty());
    let inside = source_key(addr("198.18.0.5"), 1);
    let outside = source_key(addr("198.18.0.20"), 1);
    policy.observe(
        0.0,
        [(inside, syns(0)), (outside, syns(0))],
        |_| true,
        NOBODY,
    );
    let decisions = policy.observe(
        1.0,
        [(inside, syns(10_000)), (outside, syns(10_000))],
        |_| true,
        NOBODY,
    );
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].prefix, net("198.18.0.20/32"));
    assert!(policy.is_allowed(addr("198.18.0.5")));
    let error = policy.block(2.0, net("198.18.0.0/24"), None).unwrap_err();
    assert!(error.contains("overlaps the allowlist"), "{error}");
}

#[test]
fn allowing_a_prefix_lifts_the_blocks_inside() {
    let mut policy = Policy::new(syn_rate_only(10, 10), BlockRules::default());
    policy.block(0.0, net("198.18.0.9/32"), None).unwrap();
    policy.block(0.0, net("198.18.5.0/24"), Some(30)).unwrap();
    let lifted = policy.allow(1.0, net("198.18.0.0/24"), true);
    assert_eq!(lifted.len(), 1);
    assert_eq!(lifted[0].prefix, net("198.18.0.9/32"));
    assert_eq!(policy.blocks().count(), 1);
    assert!(policy.allows().all(|a| a.bypass));
    assert!(policy.disallow(net("198.18.0.0/24")).is_some());
    assert!(!policy.is_allowed(addr("198.18.0.9")));
}

#[test]
fn enough_bad_sources_in_a_prefix_block_the_prefix() {
    let mut policy = Policy::new(syn_rate_only(10, 10), rules_of_three());
    let keys: Vec<_> = (1..=3)
        .map(|i| source_key(addr(&format!("198.18.7.{i}")), 1))
        .collect();
    let v6 = source_key(addr("2001:db8:1:2::66"), 1);
    policy.observe(0.0, keys.iter().map(|k| (*k, syns(0))), |_| true, NOBODY);
    let two: Vec<_> = keys[..2].iter().map(|k| (*k, syns(5000))).collect();
    let decisions = policy.observe(1.0, two.clone(), |_| true, NOBODY);
    assert_eq!(decisions.len(), 2, "two sources: below the threshold");
    let mut three = two;
    three.push((keys[2], syns(5000)));
    three.push((v6, syns(5000)));
    let decisions = policy.observe(2.0, three, |_| true, NOBODY);
    let aggregate: Vec<_> = decisions
        .iter()
        .filter(|d| d.reason == Reason::Aggregate)
        .collect();
    assert_eq!(aggregate.len(), 1, "{decisions:?}");
    assert_eq!(aggregate[0].prefix, net("198.18.7.0/24"));
    assert_eq!((aggregate[0].measured, aggregate[0].limit), (3.0, 3.0));
    assert!(
        decisions
            .iter()
            .any(|d| d.prefix == net("2001:db8:1:2::66/128")),
        "IPv6 sources are blocked by their /128"
    );

    // Spoofed sources around a real client stay blocked one by one; its prefix stays open.
    let mut policy = Policy::new(syn_rate_only(10, 10), rules_of_three());
    let client = source_key(addr("198.18.9.2"), 1);
    let spoofed: Vec<_> = (3..=6)
        .map(|i| source_key(addr(&format!("198.18.9.{i}")), 1))
        .collect();
    let round = |second: u64| {
        let mut samples: Vec<_> = spoofed.iter().map(|k| (*k, syns(5000 * second))).collect();
        samples.push((client, spoofed_real_client(second)));
        samples
    };
    policy.observe(0.0, round(0), |_| true, &[client][..]);
    let decisions = policy.observe(1.0, round(1), |_| true, &[client][..]);
    assert_eq!(decisions.len(), 4, "{decisions:?}");
    assert!(decisions.iter().all(|d| d.prefix.prefix_len() == 32));
    assert!(decisions.iter().all(|d| d.prefix != net("198.18.9.2/32")));
}

fn rules_of_three() -> BlockRules {
    BlockRules {
        aggregate_sources: 3,
        ..BlockRules::default()
    }
}

#[test]
fn monitor_mode_reports_once_and_blocks_nothing() {
    let mut policy = Policy::new(syn_rate_only(10, 10), BlockRules::default());
    let source = source_key(addr("198.18.0.66"), 2);
    policy.observe(0.0, [(source, syns(0))], |_| false, NOBODY);
    let first = policy.observe(1.0, [(source, syns(5000))], |slot| slot != 2, NOBODY);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].action, Outcome::Report);
    let again = policy.observe(2.0, [(source, syns(10_000))], |slot| slot != 2, NOBODY);
    assert!(again.is_empty(), "reported once per TTL: {again:?}");
    assert_eq!(policy.blocks().count(), 0);
}

#[test]
fn operator_blocks_last_until_lifted_or_their_ttl() {
    let mut policy = Policy::new(Limits::default(), BlockRules::default());
    let forever = policy.block(0.0, net("198.18.9.1/32"), None).unwrap();
    assert_eq!((forever.reason, forever.until), (Reason::Operator, None));
    let brief = policy.block(0.0, net("198.18.9.2/32"), Some(5)).unwrap();
    assert_eq!(brief.until, Some(5.0));
    assert_eq!(
        policy.expire(1e9).len(),
        1,
        "only the one with a TTL expires"
    );
    assert!(policy.unblock(1.0, net("198.18.9.1/32")).is_some());
    assert!(policy.unblock(1.0, net("198.18.9.1/32")).is_none());
}

#[test]
fn keys_and_addresses_roundtrip() {
    for text in ["198.18.0.1", "2001:db8::1", "::1"] {
        assert_eq!(source_address(&source_key(addr(text), 3)), addr(text));
    }
}
