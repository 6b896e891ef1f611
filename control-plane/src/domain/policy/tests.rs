//! Table-driven tests of policy validation, defaults and conversion.

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
    assert_eq!(
        p.scope,
        Scope::Node,
        "existing clients get per-node policies"
    );
    assert_eq!(p.on_store_error, OnStoreError::LocalShare);
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
        scope: pb::PolicyScope::Global.into(),
        on_store_error: pb::StoreErrorAction::Allow.into(),
        ..base()
    };
    let p = Policy::try_from(msg).unwrap();
    assert_eq!(
        (p.scope, p.on_store_error),
        (Scope::Global, OnStoreError::Allow)
    );
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
                scope: 7,
                on_store_error: 8,
                ..base()
            },
            vec!["scope: unknown value 7", "on_store_error: unknown value 8"],
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
