//! A token-bucket rate-limit policy.

use std::time::Duration;

use gw_proto::v1 as pb;

use crate::domain::validate::{self, Problems, ValidationError};

/// Shortest period: finer-grained limits belong in the backend, not a gateway policy.
const MIN_PERIOD: Duration = Duration::from_secs(1);
/// Longest period: buckets refilled less than daily are quotas, not rate limits.
const MAX_PERIOD: Duration = Duration::from_secs(86_400);
/// Highest limit or burst; keeps the data plane's token arithmetic far from overflow.
const MAX_RATE: u64 = 1_000_000_000;

/// A token-bucket rate limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Unique name, a lowercase DNS label.
    pub name: String,
    /// The service it applies to; `None` means every service.
    pub service: Option<String>,
    /// What identifies a client.
    pub key: KeySource,
    /// Requests allowed per `period` (the refill rate), at least 1.
    pub limit: u64,
    /// Whole seconds between 1s and 24h.
    pub period: Duration,
    /// Bucket capacity, at least 1 (defaults to `limit`).
    pub burst: u64,
    /// Enforce or only count.
    pub mode: Mode,
    /// Who counts: each data plane alone, or the fleet together in Redis.
    pub scope: Scope,
    /// What a global policy does while its data plane cannot reach Redis.
    pub on_store_error: OnStoreError,
    /// Only requests of this consumer or group; `None`: every request.
    pub audience: Option<Audience>,
    /// Config version that last wrote the policy; set by the store.
    pub updated_version: u64,
}

/// What a policy counts requests by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The client IP address.
    ClientIp,
    /// The value of this request header (lower-case name).
    Header(String),
    /// The authenticated consumer's name.
    Consumer,
}

/// The consumers a scoped policy applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// This consumer only.
    Consumer(String),
    /// Consumers in this group.
    Group(String),
}

/// Whether a policy rejects requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Over-limit requests get 429.
    #[default]
    Enforce,
    /// Over-limit requests are only counted.
    Shadow,
}

impl Mode {
    /// Stable name used in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Shadow => "shadow",
        }
    }

    /// Inverse of [`Mode::as_str`].
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "enforce" => Some(Self::Enforce),
            "shadow" => Some(Self::Shadow),
            _ => None,
        }
    }
}

/// Who counts a policy's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// Each data plane counts alone.
    #[default]
    Node,
    /// One budget for the fleet, counted in Redis.
    Global,
}

impl Scope {
    /// Stable name used in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::Global => "global",
        }
    }

    /// Inverse of [`Scope::as_str`].
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "node" => Some(Self::Node),
            "global" => Some(Self::Global),
            _ => None,
        }
    }
}

/// What a global policy does while its data plane cannot reach Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnStoreError {
    /// Enforce this node's share (limit / live data planes).
    #[default]
    LocalShare,
    /// Fail open.
    Allow,
    /// Fail closed.
    Deny,
}

impl OnStoreError {
    /// Stable name used in the database (and by gwctl's flag).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LocalShare => "local-share",
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }

    /// Inverse of [`OnStoreError::as_str`].
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "local-share" => Some(Self::LocalShare),
            "allow" => Some(Self::Allow),
            "deny" => Some(Self::Deny),
            _ => None,
        }
    }
}

impl TryFrom<pb::Policy> for Policy {
    type Error = ValidationError;

    fn try_from(msg: pb::Policy) -> Result<Self, ValidationError> {
        // Destructured in full: a new proto field must be handled here, not silently dropped.
        let pb::Policy {
            name,
            service,
            key,
            limit,
            period,
            burst,
            mode,
            updated_version: _,
            scope,
            on_store_error,
            consumer,
            group,
        } = msg;
        let mut p = Problems::default();
        p.check("name", validate::name(&name));
        let service = if service.is_empty() {
            Some(None)
        } else {
            p.check("service", validate::name(&service))
                .map(|()| Some(service))
        };
        // No key means the common case, per-client-IP limiting.
        let key = match key.and_then(|k| k.source) {
            None | Some(pb::rate_limit_key::Source::ClientIp(pb::ClientIpKey {})) => {
                Some(KeySource::ClientIp)
            }
            Some(pb::rate_limit_key::Source::Header(h)) => p
                .check("key.header", validate::header_name(&h))
                .map(KeySource::Header),
            Some(pb::rate_limit_key::Source::Consumer(pb::ConsumerKey {})) => {
                Some(KeySource::Consumer)
            }
        };
        let audience = match (consumer.is_empty(), group.is_empty()) {
            (true, true) => None,
            (false, false) => {
                p.add("consumer", "give consumer or group, not both");
                None
            }
            (false, true) => p
                .check("consumer", validate::name(&consumer))
                .map(|()| Audience::Consumer(consumer)),
            (true, false) => p
                .check("group", validate::name(&group))
                .map(|()| Audience::Group(group)),
        };
        if limit == 0 || limit > MAX_RATE {
            p.add("limit", format!("must be between 1 and {MAX_RATE}"));
        }
        let period = match period {
            None => {
                p.add("period", "required (between 1s and 24h)");
                None
            }
            some => p.check(
                "period",
                validate::duration(some, MIN_PERIOD, MIN_PERIOD, MAX_PERIOD),
            ),
        };
        let period = period.and_then(|d| {
            if d.subsec_nanos() == 0 {
                Some(d)
            } else {
                p.add(
                    "period",
                    format!("{} must be a whole number of seconds", validate::human(d)),
                );
                None
            }
        });
        let burst = if burst == 0 { limit } else { burst };
        if burst > MAX_RATE {
            p.add("burst", format!("must be at most {MAX_RATE}"));
        }
        let mode = match pb::PolicyMode::try_from(mode) {
            Ok(pb::PolicyMode::Unspecified | pb::PolicyMode::Enforce) => Some(Mode::Enforce),
            Ok(pb::PolicyMode::Shadow) => Some(Mode::Shadow),
            Err(_) => {
                p.add("mode", format!("unknown value {mode}"));
                None
            }
        };
        let scope = match pb::PolicyScope::try_from(scope) {
            Ok(pb::PolicyScope::Unspecified | pb::PolicyScope::Node) => Some(Scope::Node),
            Ok(pb::PolicyScope::Global) => Some(Scope::Global),
            Err(_) => {
                p.add("scope", format!("unknown value {scope}"));
                None
            }
        };
        let on_store_error = match pb::StoreErrorAction::try_from(on_store_error) {
            Ok(pb::StoreErrorAction::Unspecified | pb::StoreErrorAction::LocalShare) => {
                Some(OnStoreError::LocalShare)
            }
            Ok(pb::StoreErrorAction::Allow) => Some(OnStoreError::Allow),
            Ok(pb::StoreErrorAction::Deny) => Some(OnStoreError::Deny),
            Err(_) => {
                p.add("on_store_error", format!("unknown value {on_store_error}"));
                None
            }
        };
        let value = match (service, key, period, mode, scope, on_store_error) {
            (
                Some(service),
                Some(key),
                Some(period),
                Some(mode),
                Some(scope),
                Some(on_store_error),
            ) => Some(Policy {
                name,
                service,
                key,
                limit,
                period,
                burst,
                mode,
                scope,
                on_store_error,
                audience,
                updated_version: 0,
            }),
            _ => None,
        };
        p.finish(value)
    }
}

impl From<&Policy> for pb::Policy {
    fn from(p: &Policy) -> Self {
        let source = match &p.key {
            KeySource::ClientIp => pb::rate_limit_key::Source::ClientIp(pb::ClientIpKey {}),
            KeySource::Header(h) => pb::rate_limit_key::Source::Header(h.clone()),
            KeySource::Consumer => pb::rate_limit_key::Source::Consumer(pb::ConsumerKey {}),
        };
        let (consumer, group) = match &p.audience {
            None => (String::new(), String::new()),
            Some(Audience::Consumer(c)) => (c.clone(), String::new()),
            Some(Audience::Group(g)) => (String::new(), g.clone()),
        };
        pb::Policy {
            name: p.name.clone(),
            service: p.service.clone().unwrap_or_default(),
            key: Some(pb::RateLimitKey {
                source: Some(source),
            }),
            limit: p.limit,
            period: Some(validate::to_pb_duration(p.period)),
            burst: p.burst,
            mode: match p.mode {
                Mode::Enforce => pb::PolicyMode::Enforce.into(),
                Mode::Shadow => pb::PolicyMode::Shadow.into(),
            },
            updated_version: p.updated_version,
            scope: match p.scope {
                Scope::Node => pb::PolicyScope::Node.into(),
                Scope::Global => pb::PolicyScope::Global.into(),
            },
            on_store_error: match p.on_store_error {
                OnStoreError::LocalShare => pb::StoreErrorAction::LocalShare.into(),
                OnStoreError::Allow => pb::StoreErrorAction::Allow.into(),
                OnStoreError::Deny => pb::StoreErrorAction::Deny.into(),
            },
            consumer,
            group,
        }
    }
}

#[cfg(test)]
mod tests;
