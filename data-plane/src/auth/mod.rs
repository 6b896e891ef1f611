//! Authentication: who is calling a service, checked before rate limiting.
//!
//! - `keys`: the consumers of a config version and their API key hashes, compiled into an
//!   immutable map; checking a key is one SHA-256 and one lookup, with no allocation.
//! - `credential`: where a request carries its key, removing it before forwarding, and the
//!   `X-Consumer-*` headers upstreams receive.
//! - here: [`authenticate`], the one call the request path makes, and [`FailureLimiter`], the
//!   built-in per-client-address limit on failed attempts.
//! - JWTs: `jwt` (the verifier, built per config version into the `keys` table), its keys
//!   (`jws`), JWKS fetching (`jwks`, sources kept across versions by URL) and the cache of
//!   verified tokens (`cache`). A service accepting JWTs takes an `Authorization: Bearer`
//!   value shaped like one (two dots) to the verifier; anything else is looked up as an API
//!   key if the service accepts keys.
//!
//! Layering: beside `limiter` (whose token buckets count failures) and above `stats`; `config`
//! compiles what the control plane sent into these types, `proxy` calls [`authenticate`].
//!
//! What a client learns is deliberately little: a missing, unknown or expired credential all
//! get the same 401; which one it was is in the log (at debug level for missing, info for the
//! others; for a JWT also which check failed, never token text) and in
//! `gw_auth_failures_total{service,reason}`.
//!
//! # Guessing
//!
//! Unknown keys and invalid JWTs are charged per client address to a token bucket (default 10 per minute,
//! `--auth-failure-limit`/`--auth-failure-period`). While an address's bucket is empty its
//! requests to authenticated services get 429 *before* their credential is looked at, so a
//! correct guess is indistinguishable from a wrong one until the bucket refills: at 10 guesses
//! a minute, finding one of 2^192 keys is out of reach. Successful requests take nothing, so
//! a good client behind the same address is only held up while someone there keeps failing.

pub mod cache;
pub mod credential;
pub mod jwks;
pub mod jws;
pub mod jwt;
pub mod keys;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::header::AUTHORIZATION;

use http::Request;

use crate::limiter::{KeySpec, LimitKey, Mode, PolicyDef, PolicyLimiter, RateSpec};
use crate::stats::AuthFailure;
use jwt::JwtReject;

pub use credential::KeySources;
pub use keys::{Identity, KeyCheck, KeyTable};

/// Default failed attempts allowed per client address and period: enough for a person who
/// mistyped a few times, far too few to guess anything.
pub const DEFAULT_AUTH_FAILURE_LIMIT: u64 = 10;
/// Default period of [`DEFAULT_AUTH_FAILURE_LIMIT`].
pub const DEFAULT_AUTH_FAILURE_PERIOD: Duration = Duration::from_secs(60);

/// What a service requires of its callers (compiled from `Service.auth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAuth {
    /// Where API keys are accepted (none: keys are not accepted).
    pub key_sources: KeySources,
    /// Groups admitted; empty: every authenticated consumer.
    pub allowed_groups: Box<[Arc<str>]>,
    /// JWTs in `Authorization: Bearer` are accepted.
    pub jwt: bool,
}

/// Why a request was refused, with what the answer needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 401 (missing, invalid, expired) or 403 (forbidden), by reason.
    Failed(AuthFailure),
    /// 429: the client's address failed too often; retry after this many seconds.
    Throttled(u64),
    /// 401: a JWT failed this check (for the log; the client learns only the reason).
    Jwt(JwtReject),
}

impl Refusal {
    /// The reason as counted.
    pub fn reason(self) -> AuthFailure {
        match self {
            Self::Failed(r) => r,
            Self::Throttled(_) => AuthFailure::Throttled,
            Self::Jwt(JwtReject::Expired) => AuthFailure::Expired,
            Self::Jwt(_) => AuthFailure::Invalid,
        }
    }
}

/// Limits failed authentications per client address (see the module docs).
#[derive(Debug)]
pub struct FailureLimiter {
    limiter: PolicyLimiter,
}

impl FailureLimiter {
    /// `limit` failures per `period` per address, tracking at most `max_keys` addresses.
    pub fn new(limit: u64, period: Duration, max_keys: usize) -> Self {
        let def = PolicyDef {
            name: "auth-failures".into(),
            key: KeySpec::ClientIp,
            rate: RateSpec {
                limit,
                period,
                burst: limit,
            },
            mode: Mode::Enforce,
        };
        Self {
            limiter: PolicyLimiter::new(&def, max_keys),
        }
    }

    /// `Some(retry after seconds)` while `client` may not try again.
    pub fn throttled(&self, client: IpAddr, now: Instant) -> Option<u64> {
        self.limiter
            .peek(LimitKey::Ip(client), now)
            .filter(|d| !d.allowed)
            .map(|d| d.retry_after_secs.max(1))
    }

    /// Counts one failure of `client`.
    pub fn charge(&self, client: IpAddr, now: Instant) {
        self.limiter
            .check_from(LimitKey::Ip(client), Some(client), now);
    }

    /// Forgets addresses whose bucket is full again (periodically, off the request path).
    pub fn sweep(&self, now: Instant) -> usize {
        self.limiter.sweep(now)
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.limiter.tracked_keys()
    }
}

/// Authenticates a request to a service that requires it: finds the credential, checks it,
/// checks the consumer's groups, and on success removes the credential and any client-sent
/// `X-Consumer-*` headers and sets them for `who`. On failure the request is left as it was.
pub fn authenticate<'k, B>(
    auth: &ServiceAuth,
    keys: &'k KeyTable,
    failures: &FailureLimiter,
    client: IpAddr,
    req: &mut Request<B>,
    now: Instant,
) -> Result<&'k Identity, Refusal> {
    let who = match jwt_token(auth, req) {
        Some(token) => {
            if let Some(retry) = failures.throttled(client, now) {
                return Err(Refusal::Throttled(retry));
            }
            let checked = std::str::from_utf8(token)
                .map_err(|_| JwtReject::Malformed)
                .and_then(|token| keys.check_jwt(token, SystemTime::now()));
            match checked {
                Ok(who) => who,
                Err(JwtReject::Expired) => return Err(Refusal::Jwt(JwtReject::Expired)),
                Err(reject) => {
                    failures.charge(client, now);
                    return Err(Refusal::Jwt(reject));
                }
            }
        }
        None => {
            let Some(key) = credential::find_key(auth.key_sources, req.headers(), req.uri()) else {
                return Err(Refusal::Failed(AuthFailure::Missing));
            };
            if let Some(retry) = failures.throttled(client, now) {
                return Err(Refusal::Throttled(retry));
            }
            let now_secs = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            match keys.check(key, now_secs) {
                KeyCheck::Valid(who) => who,
                KeyCheck::Expired(_) => return Err(Refusal::Failed(AuthFailure::Expired)),
                KeyCheck::Unknown => {
                    failures.charge(client, now);
                    return Err(Refusal::Failed(AuthFailure::Invalid));
                }
            }
        }
    };
    if !auth.allowed_groups.is_empty()
        && !who.groups.iter().any(|g| auth.allowed_groups.contains(g))
    {
        return Err(Refusal::Failed(AuthFailure::Forbidden));
    }
    if auth.jwt && credential::bearer(req.headers()).is_some() {
        req.headers_mut().remove(AUTHORIZATION);
    }
    credential::strip_headers(auth.key_sources, req.headers_mut());
    credential::strip_query(auth.key_sources, req.uri_mut());
    credential::set_identity(req.headers_mut(), who);
    Ok(who)
}

/// The bearer token to check as a JWT, if the service accepts JWTs: one shaped like a JWT
/// (two dots; API keys have none), or any bearer value when bearer API keys are not accepted.
fn jwt_token<'r, B>(auth: &ServiceAuth, req: &'r Request<B>) -> Option<&'r [u8]> {
    if !auth.jwt {
        return None;
    }
    let token = credential::bearer(req.headers())?;
    let dots = token.iter().filter(|b| **b == b'.').count();
    (dots == 2 || !auth.key_sources.bearer).then_some(token)
}

/// A consumer, group or service name: a lowercase DNS label (one rule for every name in a
/// config; `config::snapshot` checks with it too).
pub(crate) fn is_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

#[cfg(test)]
mod api_key_tests;
#[cfg(test)]
mod jws_tests;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
