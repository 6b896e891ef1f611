//! The limiter's vocabulary: a policy's rate, key source and mode as compiled from config, one
//! request's key, and the decision a check returns. Plain values, shared by every part of the
//! limiter and by the request path.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

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
    /// The authenticated consumer's name (see `auth`).
    Consumer,
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
    /// Consumer name; `None` for a request without an authenticated consumer (all such
    /// requests share one key).
    Consumer(Option<&'a str>),
}

impl LimitKey<'_> {
    /// The key as people read it (stats reports, top keys): the IP address, the header value
    /// (lossy UTF-8), or `(header missing)`. Off the hot path: only rejections are reported.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Self::Ip(ip) => ip.to_string().into(),
            Self::Header(None) => "(header missing)".into(),
            Self::Header(Some(bytes)) => String::from_utf8_lossy(bytes),
            Self::Consumer(None) => "(no consumer)".into(),
            Self::Consumer(Some(name)) => (*name).into(),
        }
    }
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

impl Mode {
    pub(crate) fn from_u8(v: u8) -> Self {
        if v == Mode::Shadow as u8 {
            Mode::Shadow
        } else {
            Mode::Enforce
        }
    }
}
