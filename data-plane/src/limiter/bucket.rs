//! Token-bucket arithmetic: a bucket is two integers, refilled lazily from timestamps.
//!
//! Units are chosen so that refilling is exact integer arithmetic: time is counted in
//! microseconds, and one token is `period_us` units, so a microsecond adds exactly `limit`
//! units. After exactly one `period` an empty bucket therefore holds exactly `limit` tokens
//! (capped at `burst`): there is no rounding that could drift over time. Microseconds rather
//! than nanoseconds keep `burst * period_us` within `u64` for every sane policy (a 24 h period
//! still allows a burst of about 213 million); larger bursts are clamped to what fits.

use crate::limiter::spec::{Decision, RateSpec};

const MICROS_PER_SEC: u64 = 1_000_000;

/// Division by a divisor fixed when the rate is set, done as a multiplication: a hardware
/// 64-bit division costs more than the rest of a decision, and every decision needs two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Divisor {
    d: u64,
    /// `floor(2^64 / d)`, so `x * m / 2^64` is `x / d` or one less.
    m: u64,
}

impl Divisor {
    /// `d` is raised to at least 2 so that `m` fits in 64 bits; every divisor used here is at
    /// least a million.
    pub(crate) fn new(d: u64) -> Self {
        let d = d.max(2);
        let m = u64::try_from((1u128 << 64) / u128::from(d)).unwrap_or(u64::MAX);
        Divisor { d, m }
    }

    pub(crate) fn get(self) -> u64 {
        self.d
    }

    /// `x / d`, rounded down.
    pub(crate) fn div(self, x: u64) -> u64 {
        // With m = 2^64/d - e (0 <= e < 1): x*m/2^64 = x/d - x*e/2^64 > x/d - 1, so the
        // estimate is the quotient or one less, and the remainder tells which.
        let q = ((u128::from(x) * u128::from(self.m)) >> 64) as u64;
        if x - q * self.d >= self.d { q + 1 } else { q }
    }

    /// `x / d`, rounded up.
    pub(crate) fn div_ceil(self, x: u64) -> u64 {
        let q = self.div(x);
        if q * self.d == x { q } else { q + 1 }
    }
}

/// A [`RateSpec`] compiled into the units buckets are kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    /// Units per token: the period in microseconds.
    token: Divisor,
    /// Units added per microsecond: the limit.
    per_us: u64,
    /// Bucket capacity in units: `burst * token`.
    cap: u64,
    /// Units added per second, saturating; only used to turn deficits into whole seconds.
    per_sec: Divisor,
}

impl Rate {
    /// Compiles `spec`; a zero limit, period or burst is raised to the smallest valid value
    /// (the control plane validates them, this only keeps the arithmetic total).
    pub(crate) fn new(spec: &RateSpec) -> Self {
        let period_us = u64::try_from(spec.period.as_micros()).unwrap_or(u64::MAX);
        let token = Divisor::new(period_us);
        let per_us = spec.limit.max(1);
        let burst = spec.burst.clamp(1, u64::MAX / token.get());
        Rate {
            token,
            per_us,
            cap: burst * token.get(),
            per_sec: Divisor::new(per_us.saturating_mul(MICROS_PER_SEC)),
        }
    }

    /// Converts a level kept in `old`'s units into this rate's units (only the token size
    /// matters; capacity is applied on the next refill).
    pub(crate) fn rescale(&self, old: &Rate, level: u64) -> u64 {
        if old.token == self.token {
            return level;
        }
        let scaled = u128::from(level) * u128::from(self.token.get()) / u128::from(old.token.get());
        u64::try_from(scaled).unwrap_or(u64::MAX)
    }

    /// Whole seconds needed to add `units`, rounded up.
    fn secs_for(&self, units: u64) -> u64 {
        self.per_sec.div_ceil(units)
    }
}

/// One client's bucket: its level and when it was last refilled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bucket {
    /// Tokens held, in [`Rate`] units.
    level: u64,
    /// Microseconds since the limiter's epoch at the last refill.
    last_us: u64,
}

impl Bucket {
    /// A full bucket, as a client that was never seen (or evicted while full) has.
    pub(crate) fn full(rate: &Rate, now_us: u64) -> Self {
        Bucket {
            level: rate.cap,
            last_us: now_us,
        }
    }

    /// Adds what accrued since the last refill. A `now_us` older than the last refill (two
    /// threads read the clock, then the later one got the lock first) adds nothing and does
    /// not move time backwards. A level above the capacity (the burst was lowered) is clamped.
    #[inline]
    fn refill(&mut self, rate: &Rate, now_us: u64) {
        let elapsed = now_us.saturating_sub(self.last_us);
        self.level = self
            .level
            .saturating_add(elapsed.saturating_mul(rate.per_us))
            .min(rate.cap);
        self.last_us = self.last_us.max(now_us);
    }

    /// Takes one token if one is available; a rejection takes nothing. Inlined into the
    /// lookup so that the decision is built in place rather than returned through memory.
    #[inline]
    pub(crate) fn take(&mut self, rate: &Rate, now_us: u64) -> Decision {
        self.refill(rate, now_us);
        let token = rate.token.get();
        let allowed = self.level >= token;
        if allowed {
            self.level -= token;
        }
        let retry_after_secs = if allowed {
            0
        } else {
            rate.secs_for(token - self.level).max(1)
        };
        Decision {
            allowed,
            remaining: rate.token.div(self.level),
            reset_secs: rate.secs_for(rate.cap - self.level),
            retry_after_secs,
        }
    }

    /// Gives one token back, up to the capacity.
    pub(crate) fn give_back(&mut self, rate: &Rate, now_us: u64) {
        self.refill(rate, now_us);
        self.level = self.level.saturating_add(rate.token.get()).min(rate.cap);
    }

    /// Whether the bucket would be full if refilled at `now_us`: it then carries no
    /// information and can be forgotten.
    pub(crate) fn is_full_at(&self, rate: &Rate, now_us: u64) -> bool {
        let elapsed = now_us.saturating_sub(self.last_us);
        self.level
            .saturating_add(elapsed.saturating_mul(rate.per_us))
            >= rate.cap
    }

    /// Re-expresses the level after the token size changed (see [`Rate::rescale`]).
    pub(crate) fn rescale(&mut self, old: &Rate, new: &Rate) {
        self.level = new.rescale(old, self.level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    proptest! {
        #[test]
        fn divisor_matches_hardware_division(x: u64, d in 2u64..) {
            let div = Divisor::new(d);
            prop_assert_eq!(div.div(x), x / d);
            prop_assert_eq!(div.div_ceil(x), x.div_ceil(d));
        }

        #[test]
        fn divisor_near_multiples(q in 0u64..1 << 40, d in 2u64..1 << 24, r in 0u64..3) {
            let x = (q * d).saturating_add(r).saturating_sub(1);
            let div = Divisor::new(d);
            prop_assert_eq!(div.div(x), x / d);
            prop_assert_eq!(div.div_ceil(x), x.div_ceil(d));
        }
    }

    #[test]
    fn divisor_edges() {
        for d in [
            2,
            3,
            7,
            1_000_000,
            60_000_000,
            u64::MAX / 2,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let div = Divisor::new(d);
            for x in [0, 1, d - 1, d, d.saturating_add(1), u64::MAX - 1, u64::MAX] {
                assert_eq!(
                    (div.div(x), div.div_ceil(x)),
                    (x / d, x.div_ceil(d)),
                    "{x}/{d}"
                );
            }
        }
    }

    fn rate(limit: u64, period_secs: u64, burst: u64) -> Rate {
        Rate::new(&RateSpec {
            limit,
            period: Duration::from_secs(period_secs),
            burst,
        })
    }

    const SEC: u64 = 1_000_000;

    #[test]
    fn burst_then_reject_and_rejection_takes_nothing() {
        let r = rate(5, 60, 5);
        let mut b = Bucket::full(&r, 0);
        for left in (0..5).rev() {
            let d = b.take(&r, 0);
            assert!(d.allowed);
            assert_eq!(d.remaining, left);
            assert_eq!(d.retry_after_secs, 0);
        }
        let before = b;
        let d = b.take(&r, 0);
        assert!(!d.allowed);
        assert_eq!(b, before, "a rejection must not change the bucket");
        // One token every 12 s; the bucket is full after 60 s.
        assert_eq!((d.remaining, d.retry_after_secs, d.reset_secs), (0, 12, 60));
    }

    #[test]
    fn exactly_one_period_refills_exactly_limit_tokens() {
        // Periods and limits that do not divide evenly, where float or truncated-interval
        // arithmetic would be off by one.
        for (limit, period, burst) in [(7, 60, 100), (3, 1, 10), (1000, 86_400, 5000), (1, 7, 1)] {
            let r = rate(limit, period, burst);
            let mut b = Bucket::full(&r, 0);
            while b.take(&r, 0).allowed {}
            let mut allowed = 0;
            while b.take(&r, period * SEC).allowed {
                allowed += 1;
            }
            assert_eq!(allowed, limit.min(burst), "{limit}/{period}s burst {burst}");
            // One microsecond short of a period: one token fewer.
            let mut b = Bucket::full(&r, 0);
            while b.take(&r, 0).allowed {}
            let mut allowed = 0;
            while b.take(&r, period * SEC - 1).allowed {
                allowed += 1;
            }
            assert_eq!(
                allowed,
                limit.min(burst) - 1,
                "{limit}/{period}s short by 1us"
            );
        }
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        // (limit, period, elapsed since emptied in us) -> retry_after_secs
        let cases = [
            (5, 60, 0, 12),                     // 12 s per token
            (5, 60, 11 * SEC, 1),               // 1 s left
            (5, 60, 11 * SEC + 1, 1),           // just under 1 s left: rounds up to 1
            (5, 60, 12 * SEC - 1, 1),           // 1 us left: still 1, never 0
            (5, 60, SEC / 2, 12),               // 11.5 s left: 12
            (1000, 1, 0, 1),                    // 1 ms per token: 1, never 0
            (1, 86_400, 3600 * SEC, 23 * 3600), // a daily token, an hour in
        ];
        for (limit, period, elapsed, want) in cases {
            let r = rate(limit, period, 1);
            let mut b = Bucket::full(&r, 0);
            assert!(b.take(&r, 0).allowed);
            let d = b.take(&r, elapsed);
            assert!(!d.allowed, "{limit}/{period}s after {elapsed}us");
            assert_eq!(
                d.retry_after_secs, want,
                "{limit}/{period}s after {elapsed}us"
            );
            assert!(
                b.take(&r, elapsed + want * SEC).allowed,
                "retry-after must suffice"
            );
        }
    }

    #[test]
    fn remaining_and_reset_track_partial_refill() {
        let r = rate(10, 10, 10); // one token per second
        let mut b = Bucket::full(&r, 0);
        for _ in 0..10 {
            b.take(&r, 0);
        }
        // 3.5 s later: 3 whole tokens accrued, one is taken.
        let d = b.take(&r, 3 * SEC + SEC / 2);
        assert_eq!((d.allowed, d.remaining), (true, 2));
        // 7.5 tokens missing: 7.5 s until full, rounded up.
        assert_eq!(d.reset_secs, 8);
        // A full bucket after a take is 1 s from full again.
        let mut b = Bucket::full(&r, 0);
        assert_eq!(b.take(&r, 0).reset_secs, 1);
    }

    #[test]
    fn give_back_is_capped_at_burst() {
        let r = rate(2, 60, 2);
        let mut b = Bucket::full(&r, 0);
        assert!(b.take(&r, 0).allowed);
        b.give_back(&r, 0);
        assert_eq!(b, Bucket::full(&r, 0));
        b.give_back(&r, 0);
        assert_eq!(b, Bucket::full(&r, 0), "never above burst");
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let r = rate(1, 1, 1);
        let mut b = Bucket::full(&r, 10 * SEC);
        assert!(b.take(&r, 10 * SEC).allowed);
        assert!(!b.take(&r, 9 * SEC).allowed);
        assert!(!b.take(&r, 10 * SEC + SEC / 2).allowed);
        assert!(b.take(&r, 11 * SEC).allowed);
    }

    #[test]
    fn fullness_for_sweeping() {
        let r = rate(1, 10, 2);
        let mut b = Bucket::full(&r, 0);
        assert!(b.is_full_at(&r, 0));
        b.take(&r, 0);
        assert!(!b.is_full_at(&r, 10 * SEC - 1));
        assert!(b.is_full_at(&r, 10 * SEC));
    }

    #[test]
    fn rescale_keeps_whole_tokens_when_the_period_changes() {
        let old = rate(5, 60, 5);
        let new = rate(5, 120, 5);
        let mut b = Bucket::full(&old, 0);
        for _ in 0..3 {
            b.take(&old, 0);
        }
        b.rescale(&old, &new);
        let d = b.take(&new, 0);
        assert_eq!((d.allowed, d.remaining), (true, 1));
    }

    #[test]
    fn huge_values_clamp_instead_of_overflowing() {
        let r = rate(u64::MAX, 86_400, u64::MAX);
        let mut b = Bucket::full(&r, 0);
        let d = b.take(&r, 0);
        assert!(d.allowed);
        assert!(d.remaining > 200_000_000);
        assert_eq!(b.take(&r, u64::MAX).reset_secs, 1);
    }
}
