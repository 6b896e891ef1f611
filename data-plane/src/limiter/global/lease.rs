//! What a data plane remembers about one key of a GLOBAL policy between round trips to Redis,
//! so that the hot path stays local where exactness allows:
//!
//! - **Over-limit cache.** A key Redis rejected is rejected locally until Redis said tokens
//!   would be there again, so an abusive client does not reach Redis on every request. It is
//!   exact: the key cannot be admitted anywhere before that time.
//! - **Leases.** A hot key takes several tokens per round trip and spends them locally. The
//!   lease size follows the key's recent rate on this node (what it would spend in
//!   [`HORIZON_US`]) and is bounded by [`max_lease`]: 1 % of a second's worth of the limit
//!   (and an eighth of the burst). Leases never admit more than the fleet's bucket gave out;
//!   the error is tokens leased and not spent before [`LEASE_TTL_US`], at most one lease per
//!   node per key when its traffic stops. A policy under 200 requests per second never leases
//!   (the bound rounds down to one), so small limits are exact; nor does a key arriving at a
//!   node slower than 200 requests per second (it would spend less than two in the horizon).
//!
//! Time is microseconds on the policy's own clock; every function takes it as an argument, so
//! the tests below drive a fake clock.

use crate::limiter::redis::Reply;
use crate::limiter::spec::{Decision, RateSpec};

/// The window over which a key's recent rate is measured.
pub const WINDOW_US: u64 = 100_000;
/// A lease covers what the key spends in this long at its recent rate.
pub const HORIZON_US: u64 = 10_000;
/// Leased tokens not spent within this long are dropped, so a node that no longer sees the
/// key does not sit on tokens the fleet could use.
pub const LEASE_TTL_US: u64 = 100_000;
/// A lease is at most this fraction (1/N) of a second's worth of the limit.
const LEASE_FRACTION: u64 = 100;

/// The largest lease for `rate`: 1 % of a second's worth of the limit and an eighth of the
/// burst, at least 1.
pub fn max_lease(rate: &RateSpec) -> u64 {
    let per_sec = rate.limit / rate.period.as_secs().max(1);
    (per_sec / LEASE_FRACTION).min(rate.burst / 8).max(1)
}

/// What the local state can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// Decided here, without Redis.
    Decided(Decision),
    /// Ask Redis for up to this many tokens.
    Ask(u64),
}

/// One key's local state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyState {
    /// Tokens taken from Redis and not yet spent.
    leased: u64,
    lease_until_us: u64,
    /// Over-limit cache: rejected locally until then.
    blocked_until_us: u64,
    /// When Redis expected one token to be back (for Retry-After while blocked).
    retry_at_us: u64,
    /// When Redis expected the bucket to be full (RateLimit `t`).
    full_at_us: u64,
    /// Fleet tokens left at the last round trip.
    remaining: u64,
    window_start_us: u64,
    hits: u64,
    last_hits: u64,
}

fn secs_ceil(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

impl KeyState {
    /// A key first seen at `now_us`.
    pub fn new(now_us: u64) -> Self {
        Self {
            leased: 0,
            lease_until_us: 0,
            blocked_until_us: 0,
            retry_at_us: 0,
            full_at_us: 0,
            remaining: 0,
            window_start_us: now_us,
            hits: 0,
            last_hits: 0,
        }
    }

    /// Counts one request and answers it locally if it can; otherwise says how many tokens
    /// to ask Redis for.
    pub fn local(&mut self, now_us: u64, max_lease: u64) -> Local {
        self.count(now_us);
        if now_us < self.blocked_until_us {
            return Local::Decided(Decision {
                allowed: false,
                remaining: 0,
                reset_secs: secs_ceil(self.full_at_us.saturating_sub(now_us)),
                retry_after_secs: secs_ceil(self.retry_at_us.saturating_sub(now_us)).max(1),
            });
        }
        if self.leased > 0 && now_us < self.lease_until_us {
            self.leased -= 1;
            return Local::Decided(Decision {
                allowed: true,
                remaining: self.remaining + self.leased,
                reset_secs: secs_ceil(self.full_at_us.saturating_sub(now_us)),
                retry_after_secs: 0,
            });
        }
        self.leased = 0;
        Local::Ask(self.want(max_lease))
    }

    /// Tokens to ask for: what the key spends in [`HORIZON_US`] at its recent rate here,
    /// between 1 and `max_lease`.
    fn want(&self, max_lease: u64) -> u64 {
        let per_window = self.hits.max(self.last_hits);
        (per_window * HORIZON_US / WINDOW_US).clamp(1, max_lease.max(1))
    }

    fn count(&mut self, now_us: u64) {
        let age = now_us.saturating_sub(self.window_start_us);
        if age >= WINDOW_US {
            // A window with nothing in between means the key went quiet.
            self.last_hits = if age < 2 * WINDOW_US { self.hits } else { 0 };
            self.hits = 0;
            self.window_start_us = now_us;
        }
        self.hits += 1;
    }

    /// Takes Redis's answer for one request at `now_us`; the request spends one granted
    /// token and the rest are leased.
    pub fn answer(&mut self, now_us: u64, reply: &Reply) -> Decision {
        self.remaining = reply.remaining;
        self.full_at_us = now_us + reply.until_full_us;
        self.retry_at_us = now_us + reply.until_one_us;
        if reply.granted > 0 {
            self.leased = reply.granted - 1;
            self.lease_until_us = now_us + LEASE_TTL_US;
            self.blocked_until_us = 0;
        } else {
            self.leased = 0;
            // Until the tokens a request would ask for are back: asking sooner would only
            // fetch fewer (when asking for one, that is exactly when one is back).
            self.blocked_until_us = now_us + reply.until_want_us.max(reply.until_one_us);
        }
        decision(reply)
    }

    /// Gives back a token this node took for a request that a later policy rejected: it is
    /// spent locally by the next request of the key (or dropped with the lease).
    pub fn refund(&mut self, now_us: u64) {
        self.leased += 1;
        self.lease_until_us = self.lease_until_us.max(now_us + LEASE_TTL_US);
    }

    /// Whether the state carries nothing worth keeping at `now_us`.
    pub fn idle(&self, now_us: u64) -> bool {
        now_us >= self.blocked_until_us
            && (self.leased == 0 || now_us >= self.lease_until_us)
            && now_us.saturating_sub(self.window_start_us) >= 2 * WINDOW_US
    }
}

/// The decision for one request from Redis's answer, without local state.
pub fn decision(reply: &Reply) -> Decision {
    let allowed = reply.granted > 0;
    Decision {
        allowed,
        remaining: reply.remaining + reply.granted.saturating_sub(1),
        reset_secs: secs_ceil(reply.until_full_us),
        retry_after_secs: if allowed {
            0
        } else {
            secs_ceil(reply.until_one_us).max(1)
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MS: u64 = 1_000;
    const SEC: u64 = 1_000_000;

    fn rate(limit: u64, secs: u64, burst: u64) -> RateSpec {
        RateSpec {
            limit,
            period: Duration::from_secs(secs),
            burst,
        }
    }

    fn reply(granted: u64, remaining: u64, until_one_us: u64, until_want_us: u64) -> Reply {
        Reply {
            granted,
            remaining,
            until_one_us,
            until_want_us,
            until_full_us: 60 * SEC,
        }
    }

    #[test]
    fn lease_bound_table() {
        // (limit, period s, burst) -> max lease
        for (limit, secs, burst, want) in [
            (5, 60, 5, 1),
            (10, 1, 10, 1),
            (1_000, 1, 1_000, 10),
            (1_000, 1, 16, 2),
            (100_000, 1, 100_000, 1_000),
            (60_000, 60, 60_000, 10),
        ] {
            assert_eq!(
                max_lease(&rate(limit, secs, burst)),
                want,
                "{limit}/{secs}s b{burst}"
            );
        }
    }

    #[test]
    fn a_rejected_key_is_answered_locally_until_its_retry_time() {
        let mut k = KeyState::new(0);
        assert_eq!(k.local(0, 1), Local::Ask(1));
        // Redis: no token, the next in 12 s (5 per minute).
        let d = k.answer(0, &reply(0, 0, 12 * SEC, 12 * SEC));
        assert_eq!(
            (d.allowed, d.retry_after_secs, d.reset_secs),
            (false, 12, 60)
        );
        let Local::Decided(d) = k.local(5 * SEC, 1) else {
            panic!("must be answered locally")
        };
        assert_eq!(
            (d.allowed, d.retry_after_secs, d.reset_secs),
            (false, 7, 55)
        );
        // One microsecond before the token, still local; at it, Redis is asked again.
        assert!(matches!(k.local(12 * SEC - 1, 1), Local::Decided(_)));
        assert_eq!(k.local(12 * SEC, 1), Local::Ask(1));
    }

    #[test]
    fn a_hot_key_leases_up_to_the_bound_and_spends_locally() {
        let mut k = KeyState::new(0);
        // 1,400 requests per second (one every ~714 us) for a window: the lease grows to
        // what 10 ms of that spends, capped at 10.
        let mut now = 0;
        let mut asks = Vec::new();
        for _ in 0..300 {
            now += 714;
            match k.local(now, 10) {
                Local::Decided(_) => {}
                Local::Ask(want) => {
                    asks.push(want);
                    k.answer(now, &reply(want, 500, 0, 0));
                }
            }
        }
        assert_eq!(asks[0], 1);
        assert_eq!(*asks.last().unwrap(), 10);
        // Once leasing, about one round trip per ten requests.
        let late = asks.iter().rev().take_while(|w| **w == 10).count();
        assert!((15..=25).contains(&late), "{asks:?}");
    }

    #[test]
    fn a_partial_grant_is_spent_and_a_rejection_blocks_until_the_wanted_tokens() {
        let mut k = KeyState::new(0);
        for i in 0..200 {
            k.count(i * 100);
        }
        let want = match k.local(20 * MS, 10) {
            Local::Ask(w) => w,
            other => panic!("{other:?}"),
        };
        assert_eq!(want, 10);
        // Only 3 left in the fleet: 1 now, 2 leased.
        let d = k.answer(20 * MS, &reply(3, 0, MS, 10 * MS));
        assert_eq!((d.allowed, d.remaining), (true, 2));
        assert!(matches!(k.local(20 * MS + 1, 10), Local::Decided(d) if d.allowed));
        assert!(matches!(k.local(20 * MS + 2, 10), Local::Decided(d) if d.allowed));
        assert!(matches!(k.local(20 * MS + 3, 10), Local::Ask(10)));
        // None left: blocked for the 10 ms that 10 tokens take, Retry-After still 1 s.
        k.answer(20 * MS + 3, &reply(0, 0, MS, 10 * MS));
        match k.local(25 * MS, 10) {
            Local::Decided(d) => assert_eq!((d.allowed, d.retry_after_secs), (false, 1)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(k.local(30 * MS + 3, 10), Local::Ask(_)));
    }

    #[test]
    fn leases_expire_and_refunds_are_spent_locally() {
        let mut k = KeyState::new(0);
        k.answer(0, &reply(5, 10, 0, 0));
        assert!(matches!(k.local(LEASE_TTL_US - 1, 10), Local::Decided(d) if d.allowed));
        // The other three are dropped with the lease.
        assert!(matches!(k.local(LEASE_TTL_US, 10), Local::Ask(_)));
        k.answer(LEASE_TTL_US, &reply(1, 10, 0, 0));
        k.refund(LEASE_TTL_US + 1);
        assert!(matches!(k.local(LEASE_TTL_US + 2, 10), Local::Decided(d) if d.allowed));
        assert!(matches!(k.local(LEASE_TTL_US + 3, 10), Local::Ask(_)));
    }

    #[test]
    fn idle_once_nothing_is_pending() {
        let mut k = KeyState::new(0);
        k.answer(0, &reply(0, 0, SEC, SEC));
        assert!(!k.idle(SEC - 1));
        assert!(k.idle(SEC));
        let mut k = KeyState::new(0);
        k.answer(0, &reply(3, 0, 0, 0));
        assert!(!k.idle(2 * WINDOW_US - 1));
        assert!(k.idle(2 * WINDOW_US));
    }
}
