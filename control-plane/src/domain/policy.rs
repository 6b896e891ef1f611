//! A token-bucket rate-limit policy.

use std::time::Duration;

use gw_proto::v1 as pb;

use super::ValidationError;
use super::validate::{self, Problems};

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
        let value = match (service, key, period, mode) {
            (Some(service), Some(key), Some(period), Some(mode)) => Some(Policy {
                name,
                service,
                key,
                limit,
                period,
                burst,
                mode,
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: i64) -> Option<prost_types::Duration> {
        Some(prost_types::Duration {
            seconds: s,
            nanos: 0,
        })
    }

    fn base() -> pb::Policy {
        pb::Policy {
            name: "per-ip".into(),
            limit: 5,
            period: secs(60),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_filled() {
        let p = Policy::try_from(base()).unwrap();
        assert_eq!(p.service, None);
        assert_eq!(p.key, KeySource::ClientIp);
        assert_eq!(p.burst, 5, "burst defaults to limit");
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.period, Duration::from_secs(60));
    }

    #[test]
    fn full_policy_round_trips() {
        let msg = pb::Policy {
            service: "api".into(),
            key: Some(pb::RateLimitKey {
                source: Some(pb::rate_limit_key::Source::Header("X-Api-Key".into())),
            }),
            burst: 10,
            mode: pb::PolicyMode::Shadow.into(),
            ..base()
        };
        let p = Policy::try_from(msg).unwrap();
        assert_eq!(p.key, KeySource::Header("x-api-key".into()));
        assert_eq!(p.service.as_deref(), Some("api"));
        assert_eq!(p.mode, Mode::Shadow);
        assert_eq!(Policy::try_from(pb::Policy::from(&p)).unwrap(), p);
    }

    #[test]
    fn invalid_policies_name_the_field() {
        let header = |h: &str| {
            Some(pb::RateLimitKey {
                source: Some(pb::rate_limit_key::Source::Header(h.into())),
            })
        };
        let cases: Vec<(pb::Policy, Vec<&str>)> = vec![
            (
                pb::Policy {
                    name: "P".into(),
                    ..base()
                },
                vec!["name: 'P' must be a lowercase DNS label"],
            ),
            (
                pb::Policy {
                    service: "No Such".into(),
                    ..base()
                },
                vec!["service: 'No Such'"],
            ),
            (
                pb::Policy { limit: 0, ..base() },
                vec!["limit: must be between 1 and"],
            ),
            (
                pb::Policy {
                    period: None,
                    ..base()
                },
                vec!["period: required"],
            ),
            (
                pb::Policy {
                    period: secs(0),
                    ..base()
                },
                vec!["period: must be between 1s and 24h"],
            ),
            (
                pb::Policy {
                    period: secs(86_401),
                    ..base()
                },
                vec!["period: must be between 1s and 24h"],
            ),
            (
                pb::Policy {
                    period: Some(prost_types::Duration {
                        seconds: 1,
                        nanos: 500_000_000,
                    }),
                    ..base()
                },
                vec!["period: 1500ms must be a whole number of seconds"],
            ),
            (
                pb::Policy {
                    key: header(""),
                    ..base()
                },
                vec!["key.header: must not be empty"],
            ),
            (
                pb::Policy {
                    key: header("a b"),
                    ..base()
                },
                vec!["key.header: 'a b' is not a valid HTTP header name"],
            ),
            (
                pb::Policy {
                    burst: MAX_RATE + 1,
                    ..base()
                },
                vec!["burst: must be at most"],
            ),
            (
                pb::Policy { mode: 9, ..base() },
                vec!["mode: unknown value 9"],
            ),
            (
                pb::Policy {
                    name: String::new(),
                    limit: 0,
                    period: None,
                    ..base()
                },
                vec!["name:", "limit:", "period:"],
            ),
        ];
        for (msg, wants) in cases {
            let err = Policy::try_from(msg.clone()).unwrap_err();
            assert_eq!(err.problems().len(), wants.len(), "{msg:?}: {err}");
            for (problem, want) in err.problems().iter().zip(&wants) {
                assert!(
                    problem.starts_with(want),
                    "{problem:?} should start with {want:?}"
                );
            }
        }
        let joined = Policy::try_from(pb::Policy {
            limit: 0,
            period: None,
            ..base()
        })
        .unwrap_err()
        .to_string();
        assert!(joined.contains("; "), "problems are joined: {joined}");
    }
}
