//! One request as the access log remembers it: raw values, cheap to collect on the request
//! path (copies of `Copy` values, reference-counted clones of strings the request already
//! holds). Nothing is formatted until the writer thread gets it (see `format`).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::HeaderValue;
use http::uri::PathAndQuery;
use http::{Method, Version};

/// What the rate limits did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RateLimit {
    /// No policy was checked (no route, no policy on the service, answered before the check).
    #[default]
    None,
    /// Every enforcing policy allowed it; the record names the tightest.
    Allowed,
    /// The named policy rejected it (429).
    Rejected,
}

impl RateLimit {
    /// The value logged.
    pub fn label(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Allowed => "allowed",
            Self::Rejected => "rejected",
        }
    }
}

/// One access-log line before formatting.
#[derive(Debug, Clone)]
pub struct Record {
    /// When the request arrived (wall clock).
    pub time: SystemTime,
    /// The client's address: the peer, or the `X-Forwarded-For` address a trusted proxy gave.
    pub client_ip: IpAddr,
    /// Request method.
    pub method: Method,
    /// Path and query as the client sent them (before dot segments are removed).
    pub path: Option<PathAndQuery>,
    /// HTTP version the client spoke.
    pub version: Version,
    /// Status sent to the client.
    pub status: u16,
    /// Request body bytes read from the client (and forwarded).
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// From the request's arrival to the last byte of the response body (or to the moment the
    /// client went away).
    pub duration: Duration,
    /// The service the request was routed to.
    pub service: Option<Arc<str>>,
    /// The endpoint tried last, as configured (e.g. `http://10.0.0.1:8080`).
    pub upstream: Option<Arc<str>>,
    /// The backend's status code, if it answered.
    pub upstream_status: Option<u16>,
    /// From the request's arrival to the backend's response head (or to the failure).
    pub upstream_time: Option<Duration>,
    /// What the rate limits did.
    pub rate_limit: RateLimit,
    /// The rejecting policy, or the tightest one when allowed.
    pub rate_limit_policy: Option<Arc<str>>,
    /// The consumer the request was authenticated as. Always empty until consumers exist
    /// (issue 13 keeps the field so log pipelines need no change then).
    pub consumer: Option<Arc<str>>,
    /// `X-Request-Id` (the client's, or the one the gateway added).
    pub request_id: Option<HeaderValue>,
    /// `User-Agent`.
    pub user_agent: Option<HeaderValue>,
    /// `Referer` (the combined format has it).
    pub referer: Option<HeaderValue>,
}

impl Default for Record {
    fn default() -> Self {
        Self {
            time: SystemTime::UNIX_EPOCH,
            client_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            method: Method::GET,
            path: None,
            version: Version::HTTP_11,
            status: 0,
            bytes_in: 0,
            bytes_out: 0,
            duration: Duration::ZERO,
            service: None,
            upstream: None,
            upstream_status: None,
            upstream_time: None,
            rate_limit: RateLimit::None,
            rate_limit_policy: None,
            consumer: None,
            request_id: None,
            user_agent: None,
            referer: None,
        }
    }
}
