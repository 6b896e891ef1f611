//! Applying a service's rate-limit policies to one request, and the headers that report it
//! (draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy` and `RateLimit`, with the policy
//! name as the list key).
//!
//! A request passes only if every enforce-mode policy allows it. If a later policy rejects,
//! tokens taken by earlier ones are refunded, so a rejected request consumes nothing.
//! Shadow-mode rejections are counted and otherwise ignored.
//!
//! A policy may be scoped to one consumer or one group ([`Audience`]): it then applies only to
//! their requests, and where one applies, the unscoped `consumer`-keyed policies do not (they
//! are the default tier: `gold` gets its 1,000 per minute instead of, not on top of, the 60
//! everyone else gets).
//!
//! A policy is counted by this node alone or by the fleet in Redis; [`Counter`] says which,
//! and [`check`] is the one place that branches on it. Checking NODE policies never awaits.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use crate::limiter::global::GlobalPolicy;
use crate::limiter::local::PolicyLimiter;
use crate::limiter::spec::{Decision, KeySpec, LimitKey, Mode};
use crate::stats::PolicyStats;

/// `RateLimit-Policy`.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Who counts a policy's requests.
#[derive(Debug, Clone)]
pub enum Counter {
    /// This node alone, in `ActivePolicy::limiter`.
    Local,
    /// The fleet, in Redis; `ActivePolicy::limiter` holds this node's share for when Redis
    /// is away.
    Global(Arc<GlobalPolicy>),
}

/// A policy as the request path applies it (compiled per config version).
#[derive(Debug)]
pub struct ActivePolicy {
    /// The buckets (shared across versions while name and key are unchanged).
    pub limiter: Arc<PolicyLimiter>,
    /// Who counts.
    pub counter: Counter,
    /// Enforce or shadow, as of this version.
    pub mode: Mode,
    /// Counters, kept across versions by policy name.
    pub stats: Arc<PolicyStats>,
    /// Pre-built `RateLimit-Policy` value.
    pub policy_header: HeaderValue,
    /// Only requests of these consumers; `None`: every request.
    pub audience: Option<Audience>,
}

/// The consumers a scoped policy applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// This consumer.
    Consumer(Arc<str>),
    /// Consumers in this group.
    Group(Arc<str>),
}

/// Who sent a request, as far as policies care: the authenticated consumer's name and groups.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller<'a> {
    /// The consumer's name; `None` when the service does not authenticate.
    pub name: Option<&'a str>,
    /// Its groups.
    pub groups: &'a [Arc<str>],
}

impl Audience {
    fn includes(&self, caller: Caller<'_>) -> bool {
        match self {
            Self::Consumer(name) => caller.name == Some(&**name),
            Self::Group(group) => caller.groups.iter().any(|g| g == group),
        }
    }
}

impl ActivePolicy {
    /// Whether this policy counts a request of `caller`, given whether a scoped policy of the
    /// same list includes the caller (`scoped_match`).
    fn applies(&self, caller: Caller<'_>, scoped_match: bool) -> bool {
        match &self.audience {
            Some(audience) => audience.includes(caller),
            None => !(scoped_match && *self.limiter.key_spec() == KeySpec::Consumer),
        }
    }
}

/// The result of checking every policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed; carries the tightest policy (lowest remaining), if any policy applied.
    Allowed(Option<(usize, Decision)>),
    /// Rejected by the policy at this index.
    Rejected(usize, Decision),
}

fn key_for<'a>(
    spec: &KeySpec,
    ip: IpAddr,
    headers: &'a HeaderMap,
    caller: Caller<'a>,
) -> LimitKey<'a> {
    match spec {
        KeySpec::ClientIp => LimitKey::Ip(ip),
        KeySpec::Header(name) => LimitKey::Header(headers.get(name).map(HeaderValue::as_bytes)),
        KeySpec::Consumer => LimitKey::Consumer(caller.name),
    }
}

impl ActivePolicy {
    async fn take(&self, key: LimitKey<'_>, client: IpAddr, now: Instant) -> Decision {
        match &self.counter {
            Counter::Local => self.limiter.check_from(key, Some(client), now),
            Counter::Global(global) => {
                let d = global.check(&self.limiter, key, client, now).await;
                if d.allowed {
                    self.stats.allowed.fetch_add(1, Ordering::Relaxed);
                }
                d
            }
        }
    }

    fn give_back(&self, key: LimitKey<'_>, client: IpAddr, now: Instant) {
        match &self.counter {
            Counter::Local => self.limiter.refund_from(key, Some(client), now),
            Counter::Global(global) => {
                self.stats.allowed.fetch_sub(1, Ordering::Relaxed);
                global.refund(&self.limiter, key, client, now);
            }
        }
    }
}

/// Checks `policies` in order for a request from `ip` with `headers`, sent by `caller`.
/// Awaits only for GLOBAL policies that ask Redis, and then at most the store's timeout each.
pub async fn check(
    policies: &[Arc<ActivePolicy>],
    ip: IpAddr,
    headers: &HeaderMap,
    caller: Caller<'_>,
    now: Instant,
) -> Verdict {
    let scoped_match = policies
        .iter()
        .any(|p| p.audience.as_ref().is_some_and(|a| a.includes(caller)));
    let mut tightest: Option<(usize, Decision)> = None;
    // Which policies took a token, for refunds. Services rarely have more than a handful of
    // policies; past 64 the extra ones are tracked in a Vec.
    let mut took: u64 = 0;
    let mut took_more: Vec<usize> = Vec::new();
    for (i, p) in policies.iter().enumerate() {
        if !p.applies(caller, scoped_match) {
            continue;
        }
        let key = key_for(p.limiter.key_spec(), ip, headers, caller);
        let d = p.take(key, ip, now).await;
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
                        q.give_back(key_for(q.limiter.key_spec(), ip, headers, caller), ip, now);
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
