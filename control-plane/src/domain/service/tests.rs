//! Table-driven tests of service validation, defaults and conversion.

use super::*;

fn minimal(name: &str, prefix: &str) -> pb::Service {
    pb::Service {
        name: name.to_owned(),
        route: Some(pb::Route {
            path_prefix: prefix.to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn dur(ms: u64) -> Option<prost_types::Duration> {
    Some(validate::to_pb_duration(Duration::from_millis(ms)))
}

#[test]
fn minimal_service_gets_every_default() {
    let s = Service::try_from(minimal("api", "/api")).unwrap();
    assert_eq!(s.health_check, HealthCheck::default());
    assert_eq!(
        s.health_check.probe,
        Probe::Tcp,
        "without a path the check is a TCP connect"
    );
    assert_eq!(s.health_check.interval, Duration::from_secs(5));
    assert_eq!(s.health_check.timeout, Duration::from_secs(1));
    assert_eq!(
        (
            s.health_check.unhealthy_threshold,
            s.health_check.healthy_threshold
        ),
        (3, 2)
    );
    assert_eq!(
        s.timeouts,
        Timeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(30),
            request_body: None,
            response_body: None,
        }
    );
    assert_eq!(s.load_balancing, LoadBalancing::RoundRobin);
    assert!(s.endpoints.is_empty());
}

#[test]
fn full_service_round_trips_through_protobuf() {
    let msg = pb::Service {
        https_redirect: false,
        upstream_tls: None,
        allow_connect: false,
        auth: Some(pb::ServiceAuth {
            methods: vec![pb::AuthMethod::ApiKey.into()],
            allowed_groups: vec!["gold".into()],
            key_sources: vec![
                pb::ApiKeySource::Query.into(),
                pb::ApiKeySource::Bearer.into(),
            ],
        }),
        name: "api".into(),
        route: Some(pb::Route {
            path_prefix: "/api".into(),
            hosts: vec!["a.example".into(), "B.example".into()],
            strip_prefix: true,
        }),
        endpoints: vec!["http://127.0.0.1:8001".into(), "http://[::1]:8002/".into()],
        health_check: Some(pb::HealthCheck {
            path: "/ready".into(),
            interval: dur(500),
            timeout: dur(200),
            unhealthy_threshold: 5,
            healthy_threshold: 1,
            disabled: false,
        }),
        timeouts: Some(pb::Timeouts {
            connect: dur(250),
            request: dur(10_000),
            request_body: dur(3_000),
            response_body: None,
        }),
        load_balancing: pb::LoadBalancingPolicy::RoundRobin.into(),
        created_version: 99,
        updated_version: 99,
    };
    let s = Service::try_from(msg).unwrap();
    assert_eq!(s.route.hosts, ["a.example", "b.example"]);
    assert_eq!(
        (s.timeouts.request_body, s.timeouts.response_body),
        (Some(std::time::Duration::from_secs(3)), None),
        "an unset body timeout stays unset: the data plane's default applies"
    );
    assert_eq!(s.created_version, 0, "output-only fields are ignored");
    // Sources come back sorted (bearer, header, query order) and round-trip.
    assert_eq!(
        pb::Service::from(&s).auth.unwrap().key_sources,
        [
            i32::from(pb::ApiKeySource::Bearer),
            i32::from(pb::ApiKeySource::Query)
        ]
    );
    let back = pb::Service::from(&s);
    assert_eq!(
        back.endpoints,
        ["http://127.0.0.1:8001", "http://[::1]:8002"]
    );
    assert_eq!(Service::try_from(back).unwrap(), s);
}

#[test]
fn every_problem_is_reported_with_its_field() {
    let cases: Vec<(pb::Service, Vec<&str>)> = vec![
        (
            minimal("Foo", "/a"),
            vec!["name: 'Foo' must be a lowercase DNS label"],
        ),
        (
            minimal("a", "api"),
            vec!["route.path_prefix: must start with '/'"],
        ),
        (
            pb::Service {
                route: None,
                ..minimal("a", "/")
            },
            vec!["route: required"],
        ),
        (
            pb::Service {
                endpoints: vec!["http://ok:1".into(), "htp://x".into()],
                ..minimal("a", "/a")
            },
            vec!["endpoints[1]: 'htp://x' is not an http:// or https:// URL"],
        ),
        (
            pb::Service {
                endpoints: vec!["http://a:1".into(), "http://a:1/".into()],
                ..minimal("a", "/a")
            },
            vec!["endpoints[1]: 'http://a:1/' is listed twice"],
        ),
        (
            pb::Service {
                route: Some(pb::Route {
                    path_prefix: "/a".into(),
                    hosts: vec!["x:80".into()],
                    strip_prefix: false,
                }),
                ..minimal("a", "/a")
            },
            vec!["route.hosts[0]: 'x:80' must be a host name without a port"],
        ),
        (
            pb::Service {
                health_check: Some(pb::HealthCheck {
                    interval: dur(50),
                    ..Default::default()
                }),
                ..minimal("a", "/a")
            },
            vec!["health_check.interval: must be between 100ms and 1h"],
        ),
        (
            pb::Service {
                health_check: Some(pb::HealthCheck {
                    interval: dur(1000),
                    timeout: dur(2000),
                    ..Default::default()
                }),
                ..minimal("a", "/a")
            },
            vec!["health_check.timeout: 2s must not exceed the interval (1s)"],
        ),
        (
            pb::Service {
                health_check: Some(pb::HealthCheck {
                    path: "x".into(),
                    unhealthy_threshold: 1000,
                    ..Default::default()
                }),
                ..minimal("a", "/a")
            },
            vec![
                "health_check.path: must start with '/'",
                "health_check.unhealthy_threshold: 1000 is above",
            ],
        ),
        (
            pb::Service {
                timeouts: Some(pb::Timeouts {
                    connect: dur(0),
                    request: dur(100_000_000),
                    request_body: dur(0),
                    response_body: dur(7_200_000),
                }),
                ..minimal("a", "/a")
            },
            vec![
                "timeouts.request_body: must be between 1ms and 1h",
                "timeouts.response_body: must be between 1ms and 1h",
                "timeouts.connect: must be between 1ms and 5m",
                "timeouts.request: must be between 1ms and 24h",
            ],
        ),
        (
            pb::Service {
                load_balancing: 42,
                ..minimal("a", "/a")
            },
            vec!["load_balancing: unknown value 42"],
        ),
        (
            pb::Service {
                allow_connect: true,
                ..minimal("a", "/a")
            },
            vec!["allow_connect: needs route.path_prefix \"/\", not '/a'"],
        ),
        (
            pb::Service {
                endpoints: vec!["http://x".into()],
                ..minimal("BAD", "nope")
            },
            vec![
                "name: 'BAD'",
                "route.path_prefix: must start",
                "endpoints[0]: 'http://x' needs an explicit port",
            ],
        ),
    ];
    for (msg, wants) in cases {
        let err = Service::try_from(msg.clone()).unwrap_err();
        assert_eq!(err.problems().len(), wants.len(), "{msg:?}: {err}");
        for (problem, want) in err.problems().iter().zip(&wants) {
            assert!(
                problem.starts_with(want),
                "{problem:?} should start with {want:?}"
            );
        }
    }
}

#[test]
fn route_overlap() {
    let r = |p: &str, hosts: &[&str]| Route {
        path_prefix: p.into(),
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        strip_prefix: false,
    };
    assert!(r("/a", &[]).overlaps(&r("/a", &[])));
    assert!(r("/a", &["x", "y"]).overlaps(&r("/a", &["y"])));
    assert!(!r("/a", &["x"]).overlaps(&r("/a", &["y"])));
    assert!(
        !r("/a", &[]).overlaps(&r("/a", &["y"])),
        "a host-specific route refines a catch-all"
    );
    assert!(!r("/a", &[]).overlaps(&r("/b", &[])));
}

#[test]
fn health_check_kinds_from_path_and_disabled() {
    let with = |path: &str, disabled: bool| {
        let mut msg = minimal("api", "/api");
        msg.health_check = Some(pb::HealthCheck {
            path: path.into(),
            disabled,
            ..Default::default()
        });
        Service::try_from(msg)
    };
    assert_eq!(
        with("/ready", false).unwrap().health_check.probe,
        Probe::Http("/ready".into())
    );
    assert_eq!(with("", false).unwrap().health_check.probe, Probe::Tcp);
    assert_eq!(with("", true).unwrap().health_check.probe, Probe::Disabled);
    let err = with("/ready", true).unwrap_err();
    assert_eq!(
        err.problems(),
        [
            "health_check.path: must be empty when health_check.disabled is set \
          (a disabled check GETs nothing)"
        ]
    );
    // Each kind survives the trip to protobuf and back.
    for (path, disabled) in [("/ready", false), ("", false), ("", true)] {
        let s = with(path, disabled).unwrap();
        let back = pb::Service::from(&s);
        let hc = back.health_check.clone().unwrap();
        assert_eq!((hc.path.as_str(), hc.disabled), (path, disabled));
        assert_eq!(Service::try_from(back).unwrap(), s);
    }
}

#[test]
fn allow_connect_is_off_by_default_and_round_trips_on_a_root_route() {
    assert!(!Service::try_from(minimal("a", "/")).unwrap().allow_connect);
    let on = Service::try_from(pb::Service {
        allow_connect: true,
        ..minimal("tunnel", "/")
    })
    .unwrap();
    assert!(on.allow_connect);
    let back = pb::Service::from(&on);
    assert!(back.allow_connect);
    assert_eq!(Service::try_from(back).unwrap(), on);
}
