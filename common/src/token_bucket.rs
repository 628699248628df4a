//! The token bucket both sides run: the data plane per source and CPU, one SYN at a time; the
//! controller per source across CPUs, with an interval's SYNs at once. Integer arithmetic
//! (the BPF target has no floating point and no 128-bit multiply), tokens in millionths.

/// Millionths of a token per token.
const MICRO: u64 = 1_000_000;

/// `count` tokens in millionths, saturating. (Not `saturating_mul`: its overflow check is a
/// 128-bit multiply, which the BPF target lacks.)
#[inline(always)]
fn micro(count: u64) -> u64 {
    if count > u64::MAX / MICRO {
        u64::MAX
    } else {
        count * MICRO
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct TokenBucket {
    /// Tokens held, in millionths.
    pub micro_tokens: u64,
    /// When it was last refilled (ns of the caller's monotonic clock); 0: never, so the first
    /// take finds it full.
    pub refilled_ns: u64,
}

impl TokenBucket {
    /// Refills at `rate` tokens per second up to `burst` tokens, then takes `count`. False when
    /// there were not enough: the whole tokens there were go to the first of the `count`, the
    /// rest are refused, and no debt is kept (a source that calms down is welcome again after
    /// `1 / rate` seconds).
    #[inline(always)]
    pub fn take(&mut self, now_ns: u64, rate: u64, burst: u64, count: u64) -> bool {
        let full = micro(burst);
        if self.refilled_ns == 0 {
            self.micro_tokens = full;
        } else {
            // One microsecond at `rate` tokens per second is `rate` millionths of a token. Both
            // factors are kept under 2^32 so the product fits (an overflow check would be a
            // 128-bit multiply, which the BPF target lacks): past 71 minutes or 2^32 tokens per
            // second, the bucket is simply full.
            let elapsed_us = now_ns.saturating_sub(self.refilled_ns) / 1000;
            let refill = if elapsed_us >= 1 << 32 || rate >= 1 << 32 {
                full
            } else {
                elapsed_us * rate
            };
            let tokens = self.micro_tokens.saturating_add(refill);
            self.micro_tokens = if tokens > full { full } else { tokens };
        }
        // Whole microseconds only: the remainder stays for the next refill.
        self.refilled_ns = if self.refilled_ns == 0 {
            now_ns.max(1)
        } else {
            self.refilled_ns + now_ns.saturating_sub(self.refilled_ns) / 1000 * 1000
        };
        let need = micro(count);
        if self.micro_tokens >= need {
            self.micro_tokens -= need;
            true
        } else {
            self.micro_tokens %= MICRO;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn the_burst_then_the_rate() {
        let mut bucket = TokenBucket::default();
        assert!(bucket.take(5 * S, 10, 100, 100), "starts full");
        assert!(!bucket.take(5 * S, 10, 100, 1), "empty");
        assert!(bucket.take(6 * S, 10, 100, 10), "a second refills the rate");
        assert!(!bucket.take(6 * S, 10, 100, 1));
        assert!(!bucket.take(7 * S, 10, 100, 11), "one over the rate");
        assert!(
            bucket.take(1000 * S, 10, 100, 100),
            "refill stops at the burst"
        );
        assert!(!bucket.take(1000 * S, 10, 100, 1));
    }

    #[test]
    fn small_steps_add_up() {
        let mut bucket = TokenBucket::default();
        assert!(bucket.take(S, 1000, 1, 1));
        // 1000 tokens per second: one every millisecond, taken in 333 us steps.
        let mut taken = 0;
        for step in 1..=3000u64 {
            if bucket.take(S + step * 333_333, 1000, 1, 1) {
                taken += 1;
            }
        }
        assert!((998..=1000).contains(&taken), "{taken} in one second");
    }

    #[test]
    fn huge_gaps_and_rates_do_not_overflow() {
        let mut bucket = TokenBucket::default();
        assert!(bucket.take(1, u64::MAX, u64::MAX, 1));
        assert!(bucket.take(u64::MAX, u64::MAX, u64::MAX, 1));
        let mut bucket = TokenBucket::default();
        assert!(bucket.take(S, 0, 5, 5), "rate 0: the burst only");
        assert!(!bucket.take(1000 * S, 0, 5, 1));
    }
}
