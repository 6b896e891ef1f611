use std::time::Duration;

use super::*;

fn pd(secs: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: secs,
        nanos: 0,
    })
}

/// A service as the control plane returns it, defaults filled in.
fn stored() -> pb::Service {
    pb::Service {
        name: "demo".into(),
        route: Some(pb::Route {
            path_prefix: "/api".into(),
            hosts: vec!["a.example".into()],
            strip_prefix: true,
        }),
        endpoints: vec![
            "http://127.0.0.1:8001".into(),
            "http://127.0.0.1:8002".into(),
        ],
        health_check: Some(pb::HealthCheck {
            path: "/health".into(),
            interval: pd(5),
            timeout: pd(1),
            unhealthy_threshold: 3,
            healthy_threshold: 2,
            disabled: false,
        }),
        timeouts: Some(pb::Timeouts {
            connect: pd(1),
            request: pd(30),
            request_body: None,
            response_body: None,
        }),
        load_balancing: pb::LoadBalancingPolicy::RoundRobin as i32,
        created_version: 3,
        updated_version: 7,
        https_redirect: false,
        upstream_tls: None,
        allow_connect: false,
        auth: None,
    }
}

fn update_args(name: &str) -> ServiceUpdateArgs {
    ServiceUpdateArgs {
        name: name.into(),
        prefix: None,
        endpoints: vec![],
        clear_endpoints: false,
        hosts: vec![],
        clear_hosts: false,
        strip_prefix: false,
        no_strip_prefix: false,
        allow_connect: false,
        no_allow_connect: false,
        tuning: TuningArgs::default(),
        https: Default::default(),
        no_https_redirect: false,
        upstream_verify_system: false,
        auth: Default::default(),
    }
}

#[test]
fn add_leaves_unset_tuning_to_the_server() {
    let s = new_service(ServiceAddArgs {
        name: "demo".into(),
        prefix: "/api".into(),
        endpoints: vec!["http://a:1".into()],
        hosts: vec![],
        strip_prefix: true,
        allow_connect: false,
        tuning: TuningArgs::default(),
        https: Default::default(),
        auth: Default::default(),
    })
    .unwrap();
    assert_eq!(s.route.as_ref().unwrap().path_prefix, "/api");
    assert!(s.route.as_ref().unwrap().strip_prefix);
    assert_eq!(s.endpoints, vec!["http://a:1"]);
    assert_eq!(s.health_check, None);
    assert_eq!(s.timeouts, None);
}

#[test]
fn add_sends_only_the_given_tuning() {
    let s = new_service(ServiceAddArgs {
        name: "demo".into(),
        prefix: "/api".into(),
        endpoints: vec![],
        hosts: vec![],
        strip_prefix: false,
        allow_connect: false,
        tuning: TuningArgs {
            health_interval: Some(Duration::from_millis(500)),
            request_timeout: Some(Duration::from_secs(10)),
            ..Default::default()
        },
        https: Default::default(),
        auth: Default::default(),
    })
    .unwrap();
    let hc = s.health_check.unwrap();
    assert_eq!(
        hc.interval,
        Some(prost_types::Duration {
            seconds: 0,
            nanos: 500_000_000
        })
    );
    assert_eq!(
        (hc.path.as_str(), hc.timeout, hc.healthy_threshold),
        ("", None, 0)
    );
    let t = s.timeouts.unwrap();
    assert_eq!((t.connect, t.request), (None, pd(10)));
}

#[test]
fn update_replaces_only_flagged_fields() {
    // No flags except one tuning value: everything else is kept as stored.
    let mut args = update_args("demo");
    args.tuning.unhealthy_threshold = Some(5);
    assert!(args.changes_anything());
    let s = apply_update(stored(), args).unwrap();
    let mut want = stored();
    want.health_check.as_mut().unwrap().unhealthy_threshold = 5;
    want.created_version = 0;
    want.updated_version = 0;
    assert_eq!(s, want);

    // Lists given are replaced wholesale; strip-prefix toggles off.
    let mut args = update_args("demo");
    args.endpoints = vec!["http://c:3".into()];
    args.hosts = vec!["b.example".into()];
    args.no_strip_prefix = true;
    args.prefix = Some("/v2".into());
    let s = apply_update(stored(), args).unwrap();
    let route = s.route.unwrap();
    assert_eq!(s.endpoints, vec!["http://c:3"]);
    assert_eq!(route.hosts, vec!["b.example"]);
    assert_eq!(route.path_prefix, "/v2");
    assert!(!route.strip_prefix);
    assert_eq!(s.health_check, stored().health_check);
    assert_eq!(s.timeouts, stored().timeouts);
}

#[test]
fn update_switches_between_the_kinds_of_health_check() {
    let kind = |s: &pb::Service| {
        let hc = s.health_check.as_ref().unwrap();
        (hc.path.clone(), hc.disabled)
    };
    let mut args = update_args("demo");
    args.tuning.no_health_check = true;
    assert!(args.changes_anything());
    let off = apply_update(stored(), args).unwrap();
    assert_eq!(kind(&off), (String::new(), true));
    // The other settings are kept: they matter for passive ejection and re-admission.
    assert_eq!(
        off.health_check.as_ref().unwrap().interval,
        stored().health_check.unwrap().interval
    );
    let mut args = update_args("demo");
    args.tuning.tcp_health_check = true;
    assert_eq!(
        kind(&apply_update(off.clone(), args).unwrap()),
        (String::new(), false)
    );
    let mut args = update_args("demo");
    args.tuning.health_path = Some("/ready".into());
    assert_eq!(
        kind(&apply_update(off, args).unwrap()),
        ("/ready".into(), false)
    );
    // The flags exclude each other.
    for flags in [
        &["--health-path", "/x", "--no-health-check"][..],
        &["--health-path", "/x", "--tcp-health-check"],
        &["--no-health-check", "--tcp-health-check"],
    ] {
        let mut argv = vec!["gwctl", "service", "update", "demo"];
        argv.extend_from_slice(flags);
        let err = <crate::args::Cli as clap::Parser>::try_parse_from(argv).unwrap_err();
        assert_eq!(
            err.kind(),
            clap::error::ErrorKind::ArgumentConflict,
            "{flags:?}"
        );
    }
}

#[test]
fn update_can_clear_lists() {
    let mut args = update_args("demo");
    args.clear_endpoints = true;
    args.clear_hosts = true;
    let s = apply_update(stored(), args).unwrap();
    assert!(s.endpoints.is_empty());
    assert!(s.route.unwrap().hosts.is_empty());
}

#[test]
fn update_without_flags_changes_nothing() {
    assert!(!update_args("demo").changes_anything());
}

#[test]
fn json_shape_is_stable() {
    let json = serde_json::to_value(ServiceView::from(stored())).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "name": "demo",
            "path_prefix": "/api",
            "hosts": ["a.example"],
            "strip_prefix": true,
            "endpoints": ["http://127.0.0.1:8001", "http://127.0.0.1:8002"],
            "health_check": {
                "kind": "http", "path": "/health", "interval": "5s", "timeout": "1s",
                "unhealthy_threshold": 3, "healthy_threshold": 2
            },
            "timeouts": {"connect": "1s", "request": "30s"},
            "load_balancing": "round_robin",
            "created_version": 3,
            "updated_version": 7,
            "https_redirect": false,
            "upstream_verify": "system",
            "allow_connect": false,
            "auth": null
        })
    );
}

#[test]
fn list_table_is_aligned() {
    let mut other = stored();
    other.name = "b-service-long".into();
    other.route = Some(pb::Route {
        path_prefix: "/".into(),
        hosts: vec![],
        strip_prefix: false,
    });
    other.endpoints = vec![];
    other.allow_connect = true;
    other.auth = Some(pb::ServiceAuth {
        methods: vec![pb::AuthMethod::ApiKey.into(), pb::AuthMethod::Jwt.into()],
        allowed_groups: vec!["gold".into()],
        key_sources: vec![],
    });
    let list = ServiceList {
        config_version: 9,
        services: vec![ServiceView::from(stored()), ServiceView::from(other)],
    };
    assert_eq!(
        list.human(),
        "NAME            PREFIX  HOSTS      STRIP  CONNECT  AUTH            ENDPOINTS                                    HEALTH CHECK  UPSTREAM TLS  VERSION\n\
         demo            /api    a.example  yes    no       -               http://127.0.0.1:8001,http://127.0.0.1:8002  /health 5s    system        7\n\
         b-service-long  /       *          no     yes      key,jwt+groups  -                                            /health 5s    system        7\n"
    );
}

#[test]
fn list_auth_cell_table() {
    let cases: [(&[pb::AuthMethod], &[&str], &str); 4] = [
        (&[pb::AuthMethod::ApiKey], &[], "key"),
        (&[pb::AuthMethod::Jwt], &[], "jwt"),
        (&[pb::AuthMethod::ApiKey], &["gold", "beta"], "key+groups"),
        (
            &[pb::AuthMethod::ApiKey, pb::AuthMethod::Jwt],
            &[],
            "key,jwt",
        ),
    ];
    for (methods, groups, want) in cases {
        let mut s = stored();
        s.auth = Some(pb::ServiceAuth {
            methods: methods.iter().map(|m| i32::from(*m)).collect(),
            allowed_groups: groups.iter().map(|g| g.to_string()).collect(),
            key_sources: vec![],
        });
        let view = ServiceView::from(s);
        assert_eq!(
            AuthView::short(view.auth.as_ref()),
            want,
            "{methods:?} {groups:?}"
        );
    }
    assert_eq!(AuthView::short(None), "-");
}

#[test]
fn get_shows_every_field() {
    let text = ServiceView::from(stored()).human();
    for want in [
        "name:            demo\n",
        "path prefix:     /api\n",
        "hosts:           a.example\n",
        "strip prefix:    yes\n",
        "endpoints:       http://127.0.0.1:8001\n                 http://127.0.0.1:8002\n",
        "health check:    GET /health every 5s, timeout 1s; unhealthy after 3 failures, healthy after 2 successes\n",
        "timeouts:        connect 1s, request 30s\n",
        "load balancing:  round robin\n",
        "config version:  created at 3, updated at 7\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}

#[test]
fn confirmations_name_the_object_and_version() {
    let c = ServiceChanged::new("created", Some(stored()), 7);
    assert_eq!(c.human(), "service 'demo' created (config version 7)\n");
    let d = Deleted::new("service", "demo".into(), 8);
    assert_eq!(d.human(), "service 'demo' deleted (config version 8)\n");
    assert_eq!(
        serde_json::to_value(&d).unwrap(),
        serde_json::json!({"action": "deleted", "config_version": 8, "name": "demo"})
    );
}

#[test]
fn allow_connect_is_sent_on_add_and_toggled_by_update() {
    let cli = <crate::args::Cli as clap::Parser>::try_parse_from([
        "gwctl",
        "service",
        "add",
        "tunnel",
        "--prefix",
        "/",
        "--allow-connect",
    ])
    .unwrap();
    let crate::args::Command::Service(ServiceCommand::Add(args)) = cli.command else {
        panic!("parsed as another command");
    };
    assert!(new_service(args).unwrap().allow_connect);

    let mut on = stored();
    on.allow_connect = true;
    let mut args = update_args("demo");
    args.no_allow_connect = true;
    assert!(args.changes_anything());
    assert!(!apply_update(on.clone(), args).unwrap().allow_connect);
    // Another flag alone keeps it.
    let mut args = update_args("demo");
    args.strip_prefix = true;
    assert!(apply_update(on, args).unwrap().allow_connect);
    let mut args = update_args("demo");
    args.allow_connect = true;
    assert!(apply_update(stored(), args).unwrap().allow_connect);

    let err = <crate::args::Cli as clap::Parser>::try_parse_from([
        "gwctl",
        "service",
        "update",
        "demo",
        "--allow-connect",
        "--no-allow-connect",
    ])
    .unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
}

#[test]
fn a_service_whose_upstream_is_not_verified_stands_out_in_list_and_get() {
    let mut off = stored();
    off.name = "unverified".into();
    off.upstream_tls = Some(pb::UpstreamTls {
        ca_bundle_pem: String::new(),
        insecure_skip_verify: true,
    });
    let mut bundle = stored();
    bundle.name = "with-ca".into();
    bundle.upstream_tls = Some(pb::UpstreamTls {
        ca_bundle_pem: "-----BEGIN CERTIFICATE-----\n".into(),
        insecure_skip_verify: false,
    });
    let list = ServiceList {
        config_version: 9,
        services: [stored(), off.clone(), bundle]
            .into_iter()
            .map(ServiceView::from)
            .collect(),
    };
    let table = list.human();
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row {name} in\n{table}"))
            .to_owned()
    };
    assert!(row("unverified").contains("! NOT VERIFIED"), "{table}");
    assert!(row("with-ca").contains("ca bundle"), "{table}");
    assert!(!row("demo").contains("NOT VERIFIED"), "{table}");
    let get = ServiceView::from(off.clone()).human();
    assert!(get.contains("! NOT VERIFIED"), "{get}");
    let json = serde_json::to_value(ServiceView::from(off)).unwrap();
    assert_eq!(json["upstream_verify"], "none");
}
