//! What a data plane remembers about one key of a GLOBAL policy between round trips to Redis,
//! so that the hot path stays local where exactness allows.
//!
//! - **Leases.** A hot key takes several tokens per round trip and spends them locally. The
//!   lease size follows the key's recent rate on this node (what it spends in [`HORIZON_US`])
//!   and is bounded by [`Sizing::max_lease`]: 2 % of a second's worth of the limit (and an
//!   eighth of the burst). A policy under 100 requests per second never leases (the bound
//!   rounds down to one), so small limits are exact.
//! - **One round trip at a time.** While a round trip for a key is in flight from this node,
//!   the key's other requests wait for its answer ([`Local::Wait`]) instead of asking too: the
//!   lease asked for covers them. Besides saving round trips, this is what keeps the count
//!   right: answers are only ever added to the lease, never written over it.
//! - **Over-limit cache.** A key Redis rejected (or gave fewer tokens than asked for, once
//!   they are spent) is rejected locally for a while ([`hold_us`]): until the tokens it asked
//!   for are back, and, when that is under a second (the resolution of `Retry-After`, so no
//!   client told to come back is turned away), for as long as the fleet's other nodes would
//!   take to get theirs too. Tokens that come back meanwhile wait in Redis for whichever node
//!   asks first.
//!
//! # The bound
//!
//! Leases never admit more than the fleet's bucket gave out. Admissions fall short of the
//! bucket only by tokens that are taken and never spent: a lease still unspent after
//! [`LEASE_TTL_US`] (at most one lease per node each time a key's traffic stops there), and
//! tokens sitting in Redis when a measurement ends (at most what one hold lets come back,
//! which is at most half the burst, and only while no node asks). The hold can never let the
//! bucket overflow (that would lose tokens): a node holds only after Redis had fewer than it
//! asked for, and a hold lasts at most as long as half the burst takes to come back. The
//! fleet simulation in `fleet_sim` checks the bound at 2x the limit, 70/10/10/10 over four
//! nodes, for round trips of 0.2 to 3 ms.
//!
//! Before this design the answers of concurrent round trips for one key were written over
//! each other (a grant over a grant lost the first lease; a rejection zeroed a lease granted
//! meanwhile), which lost 9 to 12 % of a hot key's budget at round trips of 1 to 3 ms, and
//! each node's rejected requests went to Redis every few milliseconds (0.3 to 0.6 round trips
//! per request).
//!
//! Time is microseconds on the policy's own clock; every function takes it as an argument, so
//! the tests drive a fake clock.

use crate::limiter::redis::Reply;
use crate::limiter::spec::{Decision, RateSpec};

/// The window over which a key's recent rate is measured.
pub const WINDOW_US: u64 = 100_000;
/// A lease covers what the key spends in this long at its recent rate. Long enough that a
/// node seeing a tenth of a 1,000 req/s key leases several tokens at once; half of
/// [`LEASE_TTL_US`], so a lease is spent in time even if the key slows to half its rate.
pub const HORIZON_US: u64 = 100_000;
/// Leased tokens not spent within this long are dropped, so a node that no longer sees the
/// key does not sit on tokens the fleet could use.
pub const LEASE_TTL_US: u64 = 200_000;
/// A lease is at most this fraction (1/N) of a second's worth of the limit.
const LEASE_FRACTION: u64 = 50;
/// The over-limit cache holds a key at most this long beyond its own tokens' return: the
/// resolution of `Retry-After`.
const MAX_SPREAD_HOLD_US: u64 = 1_000_000;

/// A policy's rate as the lease arithmetic needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizing {
    /// The largest lease.
    pub max_lease: u64,
    limit: u64,
    period_us: u64,
    burst: u64,
}

impl Sizing {
    /// The sizing of `rate`: the largest lease is 2 % of a second's worth of the limit and an
    /// eighth of the burst, at least 1.
    pub fn new(rate: &RateSpec) -> Self {
        let per_sec = rate.limit / rate.period.as_secs().max(1);
        Self {
            max_lease: (per_sec / LEASE_FRACTION).min(rate.burst / 8).max(1),
            limit: rate.limit.max(1),
            period_us: u64::try_from(rate.period.as_micros()).unwrap_or(u64::MAX),
            burst: rate.burst,
        }
    }

    /// Microseconds `n` tokens take to come back, rounded up.
    fn tokens_us(&self, n: u64) -> u64 {
        let us = (u128::from(n) * u128::from(self.period_us)).div_ceil(u128::from(self.limit));
        u64::try_from(us).unwrap_or(u64::MAX)
    }
}

/// How long a key Redis just rejected (having asked for `want` tokens) is answered locally,
/// when `live` data planes share the policy (see the module docs).
pub fn hold_us(sizing: &Sizing, reply: &Reply, want: u64, live: u32) -> u64 {
    // Asking sooner would only fetch fewer (when asking for one, this is exactly when one
    // is back, so small limits stay exact).
    let own = reply.until_want_us.max(reply.until_one_us);
    if own >= MAX_SPREAD_HOLD_US || live <= 1 {
        return own;
    }
    // The other nodes' turns: each asks for about as many.
    let others = want.saturating_mul(u64::from(live) - 1);
    let spread = own.saturating_add(sizing.tokens_us(others));
    let ceiling = sizing.tokens_us(sizing.burst / 2).min(MAX_SPREAD_HOLD_US);
    spread.min(ceiling).max(own)
}

/// What the local state can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// Decided here, without Redis.
    Decided(Decision),
    /// Ask Redis for up to this many tokens; the caller must then call [`KeyState::answer`]
    /// or [`KeyState::failed`].
    Ask(u64),
    /// A round trip for the key is in flight: wait for its answer, then ask again.
    Wait,
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
    /// A round trip for this key is in flight from this node.
    asking: bool,
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
            asking: false,
            window_start_us: now_us,
            hits: 0,
            last_hits: 0,
        }
    }

    /// Counts one request of the key (once per request, however often it waits).
    pub fn arrive(&mut self, now_us: u64) {
        let age = now_us.saturating_sub(self.window_start_us);
        if age >= WINDOW_US {
            // A window with nothing in between means the key went quiet.
            self.last_hits = if age < 2 * WINDOW_US { self.hits } else { 0 };
            self.hits = 0;
            self.window_start_us = now_us;
        }
        self.hits += 1;
    }

    /// Answers a request locally if it can; otherwise says whether to ask Redis (and for how
    /// many tokens) or to wait for the round trip in flight.
    pub fn local(&mut self, now_us: u64, max_lease: u64) -> Local {
        if let Some(d) = self.spend(now_us) {
            return Local::Decided(d);
        }
        if now_us < self.blocked_until_us {
            return Local::Decided(Decision {
                allowed: false,
                remaining: 0,
                reset_secs: secs_ceil(self.full_at_us.saturating_sub(now_us)),
                retry_after_secs: secs_ceil(self.retry_at_us.saturating_sub(now_us)).max(1),
            });
        }
        if self.asking {
            return Local::Wait;
        }
        self.asking = true;
        Local::Ask(self.want(max_lease))
    }

    /// Spends a leased token, if one is there and still valid.
    fn spend(&mut self, now_us: u64) -> Option<Decision> {
        if self.leased == 0 {
            return None;
        }
        if now_us >= self.lease_until_us {
            self.leased = 0;
            return None;
        }
        self.leased -= 1;
        Some(Decision {
            allowed: true,
            remaining: self.remaining + self.leased,
            reset_secs: secs_ceil(self.full_at_us.saturating_sub(now_us)),
            retry_after_secs: 0,
        })
    }

    /// Tokens to ask for: what the key spends in [`HORIZON_US`] at its recent rate here,
    /// between 1 and `max_lease`.
    fn want(&self, max_lease: u64) -> u64 {
        let per_window = self.hits.max(self.last_hits);
        (per_window * HORIZON_US / WINDOW_US).clamp(1, max_lease.max(1))
    }

    /// Takes Redis's answer for the request that asked for `want` tokens, at `now_us`: it
    /// spends one granted token and the rest are added to the lease. Fewer than `want`
    /// means the fleet's bucket is empty: the key is held for `hold_us` (see [`hold_us`]),
    /// at once if nothing was granted, after the lease is spent otherwise.
    pub fn answer(&mut self, now_us: u64, reply: &Reply, want: u64, hold_us: u64) -> Decision {
        self.asking = false;
        self.remaining = reply.remaining;
        self.full_at_us = now_us + reply.until_full_us;
        self.retry_at_us = now_us + reply.until_one_us;
        if reply.granted > 0 {
            if self.leased == 0 || now_us >= self.lease_until_us {
                self.leased = 0;
            }
            self.leased += reply.granted - 1;
            self.lease_until_us = now_us + LEASE_TTL_US;
            // The lease is spent before the hold is looked at.
            self.blocked_until_us = if reply.granted < want {
                now_us + hold_us
            } else {
                0
            };
            return decision(reply);
        }
        // A refund may have left a token here meanwhile.
        if let Some(d) = self.spend(now_us) {
            return d;
        }
        self.blocked_until_us = now_us + hold_us;
        decision(reply)
    }

    /// The round trip in flight failed or was abandoned: the next request asks again.
    pub fn failed(&mut self) {
        self.asking = false;
    }

    /// Gives back a token this node took for a request that a later policy rejected: it is
    /// spent locally by the next request of the key (or dropped with the lease).
    pub fn refund(&mut self, now_us: u64) {
        if now_us >= self.lease_until_us {
            self.leased = 0;
        }
        self.leased += 1;
        self.lease_until_us = self.lease_until_us.max(now_us + LEASE_TTL_US);
    }

    /// Whether the state carries nothing worth keeping at `now_us`.
    pub fn idle(&self, now_us: u64) -> bool {
        !self.asking
            && now_us >= self.blocked_until_us
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
mod fleet_sim;
#[cfg(test)]
mod tests;
