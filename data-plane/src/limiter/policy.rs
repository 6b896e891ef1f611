//! Applying a service's rate-limit policies to one request, and the headers that report it
//! (draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy` and `RateLimit`, with the policy
//! name as the list key).
//!
//! A request passes only if every enforce-mode policy allows it. If a later policy rejects,
//! tokens taken by earlier ones are refunded, so a rejected request consumes nothing.
//! Shadow-mode rejections are counted and otherwise ignored.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use crate::limiter::local::PolicyLimiter;
use crate::limiter::spec::{Decision, KeySpec, LimitKey, Mode};
use crate::stats::PolicyStats;

/// `RateLimit-Policy`.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// A policy as the request path applies it (compiled per config version).
#[derive(Debug)]
pub struct ActivePolicy {
    /// The buckets (shared across versions while name and key are unchanged).
    pub limiter: Arc<PolicyLimiter>,
    /// Enforce or shadow, as of this version.
    pub mode: Mode,
    /// Counters, kept across versions by policy name.
    pub stats: Arc<PolicyStats>,
    /// Pre-built `RateLimit-Policy` value.
    pub policy_header: HeaderValue,
}

/// The result of checking every policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed; carries the tightest policy (lowest remaining), if any policy applied.
    Allowed(Option<(usize, Decision)>),
    /// Rejected by the policy at this index.
    Rejected(usize, Decision),
}

fn key_for<'a>(spec: &KeySpec, ip: IpAddr, headers: &'a HeaderMap) -> LimitKey<'a> {
    match spec {
        KeySpec::ClientIp => LimitKey::Ip(ip),
        KeySpec::Header(name) => LimitKey::Header(headers.get(name).map(HeaderValue::as_bytes)),
    }
}

/// Checks `policies` in order for a request from `ip` with `headers`.
pub fn check(
    policies: &[Arc<ActivePolicy>],
    ip: IpAddr,
    headers: &HeaderMap,
    now: Instant,
) -> Verdict {
    let mut tightest: Option<(usize, Decision)> = None;
    // Which policies took a token, for refunds. Services rarely have more than a handful of
    // policies; past 64 the extra ones are tracked in a Vec.
    let mut took: u64 = 0;
    let mut took_more: Vec<usize> = Vec::new();
    for (i, p) in policies.iter().enumerate() {
        let key = key_for(p.limiter.key_spec(), ip, headers);
        let d = p.limiter.check(key, now);
        if d.allowed {
            if i < 64 {
                took |= 1 << i;
            } else {
                took_more.push(i);
            }
            if tightest.is_none_or(|(_, t)| d.remaining < t.remaining) {
                tightest = Some((i, d));
            }
            continue;
        }
        match p.mode {
            Mode::Shadow => {
                p.stats.shadow_rejected.fetch_add(1, Ordering::Relaxed);
                p.stats.top_keys.note(&key.text(), now);
            }
            Mode::Enforce => {
                for (j, q) in policies.iter().enumerate().take(i) {
                    if (j < 64 && took & (1 << j) != 0) || took_more.contains(&j) {
                        q.limiter
                            .refund(key_for(q.limiter.key_spec(), ip, headers), now);
                    }
                }
                p.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                p.stats.top_keys.note(&key.text(), now);
                return Verdict::Rejected(i, d);
            }
        }
    }
    Verdict::Allowed(tightest)
}

/// Adds `RateLimit-Policy` and `RateLimit` for `policy` and `d`, and `Retry-After` if rejected.
pub fn add_headers(headers: &mut HeaderMap, policy: &ActivePolicy, d: &Decision) {
    headers.insert(&RATELIMIT_POLICY, policy.policy_header.clone());
    headers.insert(&RATELIMIT, policy.limiter.rate_limit_header(d));
    if !d.allowed {
        headers.insert(RETRY_AFTER, HeaderValue::from(d.retry_after_secs.max(1)));
    }
}
