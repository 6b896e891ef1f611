//! Compilation: every invalid input is rejected naming its field, shared state survives a
//! rejected version, and endpoints and stats are reused across versions.

use super::*;

fn reuse() -> Reuse {
    Reuse {
        defaults: Default::default(),
        endpoints: Default::default(),
        clients: Default::default(),
        tls_configs: Default::default(),
        service_stats: Default::default(),
        policy_stats: Default::default(),
        consumer_stats: Default::default(),
        limiters: LimiterRegistry::new(100),
        globals: GlobalRegistry::new(None, 100),
        live_data_planes: 1.into(),
        jwks: Default::default(),
        jwks_tls: None,
    }
}

fn svc(name: &str, prefix: &str, endpoints: &[&str]) -> pb::Service {
    pb::Service {
        name: name.into(),
        route: Some(pb::Route {
            path_prefix: prefix.into(),
            hosts: vec![],
            strip_prefix: false,
        }),
        endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
        ..Default::default()
    }
}

fn policy(name: &str, service: &str) -> pb::Policy {
    pb::Policy {
        name: name.into(),
        service: service.into(),
        key: Some(pb::RateLimitKey {
            source: Some(pb::rate_limit_key::Source::ClientIp(pb::ClientIpKey {})),
        }),
        limit: 5,
        period: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
        ..Default::default()
    }
}

fn snap(services: Vec<pb::Service>, policies: Vec<pb::Policy>) -> pb::ConfigSnapshot {
    pb::ConfigSnapshot {
        services,
        policies,
        certificates: vec![],
        consumers: vec![],
    }
}

#[test]
fn invalid_inputs_are_rejected_naming_the_field() {
    let ok = || svc("a", "/a", &["http://127.0.0.1:1"]);
    let mut cases: Vec<(pb::ConfigSnapshot, &str)> = Vec::new();
    let mut s = ok();
    s.name = "Bad_Name".into();
    cases.push((snap(vec![s], vec![]), "service 'Bad_Name': name"));
    let mut s = ok();
    s.route = None;
    cases.push((snap(vec![s], vec![]), "service 'a': route: missing"));
    cases.push((
        snap(vec![svc("a", "a", &[])], vec![]),
        "service 'a': route.path_prefix",
    ));
    cases.push((
        snap(vec![svc("a", "/a?x", &[])], vec![]),
        "service 'a': route.path_prefix",
    ));
    let mut s = ok();
    s.allow_connect = true;
    cases.push((snap(vec![s], vec![]), "service 'a': allow_connect"));
    let mut s = ok();
    s.route.as_mut().unwrap().hosts = vec!["bad host".into()];
    cases.push((snap(vec![s], vec![]), "service 'a': route.hosts[0]"));
    for bad in [
        "ftp://h:1",
        "http://h",
        "http://h:1/path",
        "http://u:p@h:1",
        "not a url",
        "http://h:1?q",
    ] {
        cases.push((
            snap(vec![svc("a", "/a", &[bad])], vec![]),
            "service 'a': endpoints[0]",
        ));
    }
    let mut s = ok();
    s.timeouts = Some(pb::Timeouts {
        connect: Some(prost_types::Duration {
            seconds: -1,
            nanos: 0,
        }),
        request: None,
        ..Default::default()
    });
    cases.push((snap(vec![s], vec![]), "service 'a': timeouts.connect"));
    let mut s = ok();
    s.load_balancing = 99;
    cases.push((snap(vec![s], vec![]), "service 'a': load_balancing"));
    cases.push((
        snap(vec![ok(), ok()], vec![]),
        "service 'a': name: appears twice",
    ));
    cases.push((
        snap(vec![ok(), svc("b", "/a/", &[])], vec![]),
        "path_prefix '/a'",
    ));

    let mut p = policy("p", "a");
    p.key = None;
    cases.push((snap(vec![ok()], vec![p]), "policy 'p': key"));
    let mut p = policy("p", "a");
    p.key = Some(pb::RateLimitKey {
        source: Some(pb::rate_limit_key::Source::Header("x y".into())),
    });
    cases.push((snap(vec![ok()], vec![p]), "policy 'p': key.header"));
    let mut p = policy("p", "a");
    p.limit = 0;
    cases.push((snap(vec![ok()], vec![p]), "policy 'p': limit"));
    for period in [None, Some((0, 0)), Some((1, 5)), Some((86_401, 0))] {
        let mut p = policy("p", "a");
        p.period = period.map(|(seconds, nanos)| prost_types::Duration { seconds, nanos });
        cases.push((snap(vec![ok()], vec![p]), "policy 'p': period"));
    }
    let mut p = policy("p", "a");
    p.mode = 7;
    cases.push((snap(vec![ok()], vec![p]), "policy 'p': mode"));
    cases.push((
        snap(vec![ok()], vec![policy("p", "nope")]),
        "policy 'p': service",
    ));
    cases.push((
        snap(vec![ok()], vec![policy("p", ""), policy("p", "")]),
        "policy 'p': name: appears twice",
    ));

    let r = reuse();
    for (i, (s, want)) in cases.iter().enumerate() {
        let err = compile(1, s, &r).expect_err(&format!("case {i} should fail: {want}"));
        assert!(
            err.contains(want),
            "case {i}: {err:?} does not mention {want:?}"
        );
    }
    assert!(
        r.limiters.all().is_empty(),
        "no rejected version touched the limiters"
    );
}

#[test]
fn defaults_are_applied_and_policies_ordered_service_first() {
    let r = reuse();
    let s = snap(
        vec![svc("a", "/a", &["http://127.0.0.1:1"]), svc("b", "/b", &[])],
        vec![policy("all", ""), policy("mine", "a")],
    );
    let c = compile(3, &s, &r).unwrap();
    assert_eq!(c.version, 3);
    let a = &c.services[0];
    assert_eq!(a.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(a.request_timeout, DEFAULT_REQUEST_TIMEOUT);
    assert_eq!(a.health.probe, Probe::Tcp, "no path: a TCP connect check");
    assert!(
        !a.allow_connect,
        "CONNECT is refused unless a service opts in"
    );
    let mut root = svc("root", "/", &[]);
    root.allow_connect = true;
    let c2 = compile(4, &snap(vec![root], vec![]), &r).unwrap();
    assert!(c2.services[0].allow_connect);
    let names: Vec<&str> = a.policies.iter().map(|p| p.limiter.name()).collect();
    assert_eq!(names, ["mine", "all"]);
    let names: Vec<&str> = c.services[1]
        .policies
        .iter()
        .map(|p| p.limiter.name())
        .collect();
    assert_eq!(names, ["all"]);
    assert_eq!(a.policies[0].policy_header, r#""mine";q=5;w=60"#);
    let d = crate::limiter::Decision {
        allowed: true,
        remaining: 4,
        reset_secs: 12,
        retry_after_secs: 0,
    };
    assert_eq!(
        a.policies[0].limiter.rate_limit_header(&d),
        r#""mine";r=4;t=12"#
    );
}

#[test]
fn endpoints_stats_and_buckets_survive_new_versions() {
    let r = reuse();
    let v1 = compile(
        1,
        &snap(
            vec![svc(
                "a",
                "/a",
                &["http://127.0.0.1:1", "http://127.0.0.1:2"],
            )],
            vec![policy("p", "a")],
        ),
        &r,
    )
    .unwrap();
    let e1 = v1.services[0].balancer.endpoints()[0].clone();
    e1.set_healthy(false);
    // A rejected version in between changes nothing.
    compile(2, &snap(vec![svc("a", "/a", &["ftp://x:1"])], vec![]), &r).unwrap_err();
    let v3 = compile(
        3,
        &snap(
            vec![svc(
                "a",
                "/z",
                &["http://127.0.0.1:1", "http://127.0.0.1:3"],
            )],
            vec![policy("p", "a")],
        ),
        &r,
    )
    .unwrap();
    let eps = v3.services[0].balancer.endpoints();
    assert!(
        Arc::ptr_eq(&eps[0], &e1),
        "same URL, same endpoint (health kept)"
    );
    assert!(!eps[0].is_healthy());
    assert!(eps[1].is_healthy(), "a new endpoint starts healthy");
    assert!(Arc::ptr_eq(&v1.services[0].stats, &v3.services[0].stats));
    assert!(Arc::ptr_eq(
        &v1.services[0].policies[0].limiter,
        &v3.services[0].policies[0].limiter
    ));
    // A removed endpoint is forgotten: re-adding it starts fresh.
    compile(4, &snap(vec![svc("a", "/a", &[])], vec![]), &r).unwrap();
    let v5 = compile(
        5,
        &snap(vec![svc("a", "/a", &["http://127.0.0.1:1"])], vec![]),
        &r,
    )
    .unwrap();
    assert!(v5.services[0].balancer.endpoints()[0].is_healthy());
}

#[test]
fn a_global_policy_counts_in_the_fleet_and_its_limiter_holds_this_nodes_share() {
    let reuse = reuse();
    let mut global = policy("fleet", "a");
    global.scope = pb::PolicyScope::Global.into();
    global.on_store_error = pb::StoreErrorAction::Deny.into();
    let config = snap(
        vec![svc("a", "/a", &[])],
        vec![global.clone(), policy("node", "a")],
    );
    let compiled = compile(1, &config, &reuse).unwrap();
    let policies = &compiled.services[0].policies;
    let (fleet, node) = (&policies[0], &policies[1]);
    assert!(matches!(fleet.counter, Counter::Global(_)));
    assert!(matches!(node.counter, Counter::Local));
    assert_eq!(compiled.policies[0].global, Some(OnStoreError::Deny));
    assert_eq!(compiled.policies[1].global, None);
    // Alone, the share is the whole limit; the header always shows the fleet's.
    assert_eq!(fleet.limiter.rate().limit, 5);
    assert_eq!(fleet.policy_header, "\"fleet\";q=5;w=60");
    assert!(
        fleet
            .stats
            .global
            .load(std::sync::atomic::Ordering::Relaxed)
    );

    // Four live data planes: 5 / 4, rounded up; the NODE policy keeps its limit.
    reuse
        .live_data_planes
        .store(4, std::sync::atomic::Ordering::Relaxed);
    let compiled = compile(2, &config, &reuse).unwrap();
    let policies = &compiled.services[0].policies;
    assert_eq!(policies[0].limiter.rate().limit, 2);
    assert_eq!(policies[1].limiter.rate().limit, 5);
    assert_eq!(policies[0].policy_header, "\"fleet\";q=5;w=60");

    // Unknown scopes and actions are refused, naming the field.
    global.scope = 9;
    let err = compile(
        3,
        &snap(vec![svc("a", "/a", &[])], vec![global.clone()]),
        &reuse,
    );
    assert!(err.unwrap_err().contains("scope"));
    global.scope = pb::PolicyScope::Global.into();
    global.on_store_error = 9;
    let err = compile(3, &snap(vec![svc("a", "/a", &[])], vec![global]), &reuse);
    assert!(err.unwrap_err().contains("on_store_error"));
}

#[test]
fn jwt_auth_compiles_and_key_sources_need_keys() {
    let r = reuse();
    let with_auth = |name: &str, methods: &[pb::AuthMethod], sources: &[pb::ApiKeySource]| {
        let mut s = svc(name, &format!("/{name}"), &[]);
        s.auth = Some(pb::ServiceAuth {
            methods: methods.iter().map(|m| i32::from(*m)).collect(),
            allowed_groups: vec![],
            key_sources: sources.iter().map(|s| i32::from(*s)).collect(),
        });
        s
    };
    use pb::ApiKeySource::Query;
    use pb::AuthMethod::{ApiKey, Jwt};
    let c = compile(
        1,
        &snap(
            vec![
                with_auth("j", &[Jwt], &[Query]),
                with_auth("k", &[ApiKey], &[]),
                with_auth("both", &[ApiKey, Jwt], &[Query]),
            ],
            vec![],
        ),
        &r,
    )
    .unwrap();
    let auth = |i: usize| c.services[i].auth.clone().unwrap();
    let (j, k, both) = (auth(0), auth(1), auth(2));
    assert!(j.jwt && j.key_sources == KeySources::default(), "{j:?}");
    assert!(
        !k.jwt && k.key_sources.bearer && k.key_sources.header,
        "{k:?}"
    );
    assert!(both.jwt && both.key_sources.query && !both.key_sources.bearer);
}

/// A JWKS URL's source survives new versions (no refetch, no new task) and is forgotten by the
/// first version that no longer uses it.
#[tokio::test]
async fn jwks_sources_are_kept_by_url_across_versions() {
    let r = reuse();
    let with_jwks = |urls: &[&str]| pb::ConfigSnapshot {
        consumers: vec![pb::Consumer {
            name: "alice".into(),
            jwt_credentials: urls
                .iter()
                .map(|u| pb::JwtCredential {
                    issuer: format!("iss-{u}"),
                    key: Some(pb::jwt_credential::Key::JwksUrl(u.to_string())),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    };
    // Port 9 (discard): nothing answers, which is fine, nothing here needs a key.
    let (a, b) = ("http://127.0.0.1:9/a", "http://127.0.0.1:9/b");
    let urls = |r: &Reuse| -> Vec<String> {
        r.jwks
            .sources()
            .iter()
            .map(|s| s.url().to_owned())
            .collect()
    };
    let v1 = compile(1, &with_jwks(&[a]), &r).unwrap();
    let first = r.jwks.sources();
    let v2 = compile(2, &with_jwks(&[a, b]), &r).unwrap();
    assert_eq!(urls(&r), [a, b]);
    assert!(first[0].same_as(&r.jwks.sources()[0]), "the same source");
    // A rejected version changes nothing in force.
    let mut bad = with_jwks(&[a]);
    bad.consumers[0].jwt_credentials[0].key =
        Some(pb::jwt_credential::Key::JwksUrl("ftp://idp/keys".into()));
    let err = compile(3, &bad, &r).unwrap_err();
    assert!(
        err.contains("jwt_credentials[0].jwks_url") && err.contains("scheme must be http or https"),
        "{err}"
    );
    assert_eq!(urls(&r), [a, b]);
    let v4 = compile(4, &with_jwks(&[b]), &r).unwrap();
    assert_eq!(urls(&r), [b]);
    drop((v1, v2, v4));
}
