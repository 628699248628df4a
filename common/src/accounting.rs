//! What a segment to a protected service adds to its source's and its service's counters.
//! The data plane only counts; the controller turns the counts into rates, half-open counts
//! and decisions (`synguard::policy`).

use crate::{
    counters::Counter,
    maps::{PolicySettings, ServiceConfig, ServiceCounters, SourceCounters, vouched},
};

impl SourceCounters {
    /// Notes one segment: `syn` when it was a SYN, `reason` the counter of its verdict.
    #[inline(always)]
    pub fn note(&mut self, syn: bool, reason: Counter) {
        if syn {
            self.syns += 1;
        }
        match reason {
            Counter::TxSynCookie => self.cookies_sent += 1,
            Counter::CookieValid => self.cookies_validated += 1,
            Counter::DropCookieInvalid | Counter::DropCookieExpired => self.invalid_acks += 1,
            Counter::DropStrayFin | Counter::DropStrayRst | Counter::DropStraySynAck => {
                self.out_of_state += 1
            }
            _ => {}
        }
    }

    /// Takes a token from this CPU's bucket for a SYN at `now_ns`; false (and counted) when
    /// the source is over its rate, unless `validated_at` says it completed a handshake lately
    /// ([`vouched`]; asked only then, the lookup behind it costs). A rate of 0 is no limit.
    #[inline(always)]
    pub fn admit_syn(
        &mut self,
        now_ns: u64,
        settings: &PolicySettings,
        validated_at: impl FnOnce() -> Option<u64>,
    ) -> bool {
        if settings.syn_rate == 0
            || self
                .bucket
                .take(now_ns, settings.syn_rate, settings.syn_burst, 1)
            || validated_at().is_some_and(|validated_ns| vouched(validated_ns, now_ns))
        {
            return true;
        }
        self.syns_over_rate += 1;
        false
    }

    /// Adds another CPU's counts (the buckets stay each CPU's own).
    pub fn accumulate(&mut self, other: &SourceCounters) {
        self.syns += other.syns;
        self.cookies_sent += other.cookies_sent;
        self.cookies_validated += other.cookies_validated;
        self.invalid_acks += other.invalid_acks;
        self.out_of_state += other.out_of_state;
        self.syns_over_rate += other.syns_over_rate;
    }
}

impl ServiceCounters {
    #[inline(always)]
    pub fn note(&mut self, syn: bool, reason: Counter) {
        if syn {
            self.syns += 1;
        }
        match reason {
            Counter::TxSynCookie => self.cookies_sent += 1,
            Counter::PassAdmitted if syn => self.admitted += 1,
            _ => {}
        }
    }

    /// Takes a token from this CPU's direct-admission bucket for a SYN auto mode would let
    /// straight through at `now_ns`; false: the service is over its threshold on this CPU and
    /// the SYN gets a cookie.
    #[inline(always)]
    pub fn admit_direct(&mut self, now_ns: u64, config: &ServiceConfig) -> bool {
        let rate = config.direct_syn_rate as u64;
        self.direct_bucket.take(now_ns, rate, rate, 1)
    }

    /// Adds another CPU's counts (the buckets stay each CPU's own).
    pub fn accumulate(&mut self, other: &ServiceCounters) {
        self.syns += other.syns;
        self.cookies_sent += other.cookies_sent;
        self.admitted += other.admitted;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::COMPLETED_VOUCHES_FOR_SECS;

    #[test]
    fn each_verdict_lands_in_its_counter() {
        let mut source = SourceCounters::default();
        source.note(true, Counter::TxSynCookie);
        source.note(true, Counter::DropBlocked);
        source.note(false, Counter::CookieValid);
        source.note(false, Counter::DropCookieInvalid);
        source.note(false, Counter::DropCookieExpired);
        source.note(false, Counter::DropStrayRst);
        source.note(false, Counter::ForwardToServer);
        assert_eq!(
            source,
            SourceCounters {
                syns: 2,
                cookies_sent: 1,
                cookies_validated: 1,
                invalid_acks: 2,
                out_of_state: 1,
                ..SourceCounters::default()
            }
        );
        let mut sum = source;
        sum.accumulate(&source);
        assert_eq!(sum.invalid_acks, 4);

        let settings = PolicySettings {
            syn_rate: 10,
            syn_burst: 2,
            ..PolicySettings::default()
        };
        let mut flooder = SourceCounters::default();
        let admitted = [0; 4].map(|_| flooder.admit_syn(1_000, &settings, || None));
        assert_eq!(admitted, [true, true, false, false]);
        assert_eq!(flooder.syns_over_rate, 2);
        assert!(
            flooder.admit_syn(100_001_000, &settings, || None),
            "a tenth of a second later"
        );
        let unlimited = PolicySettings::default();
        assert!((0..100).all(|_| flooder.admit_syn(100_001_000, &unlimited, || None)));

        // A source that completes handshakes: a flood spoofing it gets cookies, not drops.
        const S: u64 = 1_000_000_000;
        let mut real = SourceCounters::default();
        let validated = || Some(10 * S);
        assert!((0..100).all(|_| real.admit_syn(10 * S, &settings, validated)));
        let vouched_until = (10 + COMPLETED_VOUCHES_FOR_SECS) * S;
        assert!((0..100).all(|_| real.admit_syn(vouched_until, &settings, validated)));
        let later = [0; 3].map(|_| real.admit_syn(vouched_until + S, &settings, validated));
        assert_eq!(later, [true, true, false], "judged by the bucket again");

        let mut service = ServiceCounters::default();
        service.note(true, Counter::PassAdmitted);
        service.note(false, Counter::PassAdmitted); // a later segment of that flow
        service.note(true, Counter::TxSynCookie);
        service.note(true, Counter::PassMonitored);
        assert_eq!(
            service,
            ServiceCounters {
                syns: 3,
                cookies_sent: 1,
                admitted: 1,
                ..ServiceCounters::default()
            }
        );
    }

    #[test]
    fn auto_mode_lets_its_rate_through_then_cookies() {
        const S: u64 = 1_000_000_000;
        let config = ServiceConfig {
            direct_syn_rate: 100,
            ..ServiceConfig::default()
        };
        let mut service = ServiceCounters::default();
        let direct = (0..250)
            .filter(|_| service.admit_direct(S, &config))
            .count();
        assert_eq!(direct, 100, "a second's burst at once");
        assert!(!service.admit_direct(S + S / 200, &config), "half a token");
        assert!(
            service.admit_direct(S + S / 100, &config),
            "one token a 1/100 s"
        );
        let mut busy = ServiceCounters::default();
        let first_second = (0..1000u64)
            .filter(|step| busy.admit_direct(10 * S + step * S / 1000, &config))
            .count();
        assert!(
            (199..=200).contains(&first_second),
            "the burst plus a second's rate at the start of a flood: {first_second}"
        );
    }
}
