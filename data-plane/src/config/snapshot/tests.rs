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
