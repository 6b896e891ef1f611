//! In-memory token buckets, one set per rate-limit policy.
//!
//! SEAM (agreed interface between the limiter and the request path; do not change without
//! telling the lead): `RateSpec`, `KeySpec`, `LimitKey`, `Decision`, `PolicyLimiter`,
//! `LimiterRegistry`, `PolicyDef`, `Mode`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A policy's rate: `limit` tokens per `period`, bucket capacity `burst` (already defaulted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    /// Tokens added per `period`.
    pub limit: u64,
    /// Refill period (whole seconds, >= 1s).
    pub period: Duration,
    /// Bucket capacity (>= 1).
    pub burst: u64,
}

/// What a policy keys clients by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpec {
    /// The client IP (already resolved through trusted proxies by the request path).
    ClientIp,
    /// The value of this request header.
    Header(http::HeaderName),
}

/// Enforce or only count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Over-limit requests are rejected with 429.
    Enforce,
    /// Nothing is rejected; over-limit requests are counted.
    Shadow,
}

/// One request's key for one policy.
#[derive(Debug, Clone, Copy)]
pub enum LimitKey<'a> {
    /// Client IP.
    Ip(IpAddr),
    /// Header value; `None` when the header is missing (all such requests share one key).
    Header(Option<&'a [u8]>),
}

/// The outcome of one check, with what the RateLimit headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether a token was taken.
    pub allowed: bool,
    /// Tokens left in the bucket after this decision (whole tokens).
    pub remaining: u64,
    /// Whole seconds until the bucket is full again (RateLimit `t`).
    pub reset_secs: u64,
    /// When rejected: whole seconds until one token is available, never 0. 0 when allowed.
    pub retry_after_secs: u64,
}

/// A policy definition as the request path compiled it from config.
#[derive(Debug, Clone)]
pub struct PolicyDef {
    /// Policy name (the RateLimit list key).
    pub name: Arc<str>,
    /// Key source.
    pub key: KeySpec,
    /// Rate.
    pub rate: RateSpec,
    /// Mode.
    pub mode: Mode,
}

/// The buckets of one policy. `Send + Sync`; shared as `Arc` across config versions.
#[derive(Debug)]
pub struct PolicyLimiter {
    _todo: (),
}

impl PolicyLimiter {
    /// The policy name.
    pub fn name(&self) -> &str {
        todo!()
    }
    /// The key source.
    pub fn key_spec(&self) -> &KeySpec {
        todo!()
    }
    /// Current mode (may change on reconcile).
    pub fn mode(&self) -> Mode {
        todo!()
    }
    /// Current rate (may change on reconcile).
    pub fn rate(&self) -> RateSpec {
        todo!()
    }
    /// Takes one token for `key` if available. A rejected check takes nothing.
    pub fn check(&self, key: LimitKey<'_>, now: Instant) -> Decision {
        let _ = (key, now);
        todo!()
    }
    /// Gives back a token taken by `check` (a later policy rejected the same request).
    pub fn refund(&self, key: LimitKey<'_>, now: Instant) {
        let _ = (key, now);
        todo!()
    }
    /// Evicts buckets that are full and idle; returns how many. Called periodically off the
    /// request path.
    pub fn sweep(&self, now: Instant) -> usize {
        let _ = now;
        todo!()
    }
    /// Buckets tracked now.
    pub fn tracked_keys(&self) -> usize {
        todo!()
    }
    /// Checks that could not get a bucket of their own because the policy already tracks
    /// `max_keys` keys (and a sweep freed none); such keys share one overflow bucket.
    pub fn overflowed(&self) -> u64 {
        todo!()
    }
    /// Value for the `RateLimit-Policy` header item of this policy, e.g. `"api";q=5;w=60`.
    pub fn policy_header_item(&self) -> &str {
        todo!()
    }
}

/// Owns every policy's limiter across config versions.
#[derive(Debug)]
pub struct LimiterRegistry {
    _todo: (),
}

impl LimiterRegistry {
    /// `max_keys`: per-policy cap on tracked keys.
    pub fn new(max_keys: usize) -> Self {
        let _ = max_keys;
        todo!()
    }
    /// Returns one limiter per definition, in order: the existing one (buckets kept) when name
    /// and key are unchanged, with rate/mode updated in place; a new one otherwise. Policies
    /// absent from `defs` are dropped. Called off the request path on each config apply.
    pub fn reconcile(&self, defs: &[PolicyDef]) -> Vec<Arc<PolicyLimiter>> {
        let _ = defs;
        todo!()
    }
    /// Every live limiter (for metrics and the sweeper).
    pub fn all(&self) -> Vec<Arc<PolicyLimiter>> {
        todo!()
    }
}
