//! `gwctl health`, `gwctl stats` and the report columns of `gwctl nodes`, against a control
//! plane fed by fake data planes: config streams opened by the test, sending exactly the
//! health and stats reports a data plane would, so every figure shown is known in advance.

use std::time::{Duration, SystemTime};

use gw_proto::v1 as pb;
use gw_testkit::eventually;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;

use crate::support::{ControlPlane, FakeNode, gwctl};

fn endpoint_health(service: &str, endpoint: &str, failure: Option<&str>) -> pb::EndpointHealth {
    pb::EndpointHealth {
        service: service.into(),
        endpoint: endpoint.into(),
        healthy: failure.is_none(),
        last_failure: failure.unwrap_or_default().into(),
        last_failure_at: failure.map(|_| (SystemTime::now() - Duration::from_secs(5)).into()),
    }
}

/// The row of `table` that contains `needle` (exactly one).
#[track_caller]
fn row<'a>(table: &'a str, needle: &str) -> &'a str {
    let rows: Vec<&str> = table.lines().filter(|l| l.contains(needle)).collect();
    assert_eq!(rows.len(), 1, "rows with {needle:?} in\n{table}");
    rows[0]
}

/// The cells of a table row (columns are separated by at least two spaces).
fn cells(row: &str) -> Vec<&str> {
    row.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_counts_nodes_and_shows_the_latest_failure() {
    let cp = ControlPlane::start().await;
    gwctl(
        &cp,
        &[
            "service",
            "add",
            "demo",
            "--prefix",
            "/api",
            "--endpoint",
            "http://127.0.0.1:1",
            "--endpoint",
            "http://127.0.0.1:2",
        ],
    )
    .await
    .ok();
    let dp1 = FakeNode::connect(&cp, "dp-1").await;
    let dp2 = FakeNode::connect(&cp, "dp-2").await;
    let [up, down] = <[String; 2]>::try_from(dp1.endpoints("demo")).unwrap();
    let refused = "GET /health: connection refused";

    let full = |entries| {
        pb::discovery_request::Kind::Health(pb::HealthReport {
            full: true,
            endpoints: entries,
        })
    };
    dp1.send(full(vec![
        endpoint_health("demo", &up, None),
        endpoint_health("demo", &down, None),
    ]))
    .await;
    dp2.send(full(vec![
        endpoint_health("demo", &up, None),
        endpoint_health("demo", &down, Some(refused)),
    ]))
    .await;

    let json = eventually("gwctl health shows both nodes' reports", || async {
        let json = gwctl(&cp, &["-o", "json", "health"]).await.json();
        let e = &json["services"][0]["endpoints"];
        (e[0]["healthy_nodes"] == 2 && e[1]["unhealthy_nodes"] == 1).then_some(json)
    })
    .await;
    assert_eq!(json["services"].as_array().unwrap().len(), 1, "{json}");
    assert_eq!(json["services"][0]["service"], "demo");
    let e = &json["services"][0]["endpoints"];
    assert_eq!(e[0]["endpoint"], up.as_str());
    assert_eq!(e[0]["healthy"], true);
    assert_eq!(e[0]["unhealthy_nodes"], 0);
    assert_eq!(e[0]["last_failure"], Value::Null);
    assert_eq!(e[1]["endpoint"], down.as_str());
    assert_eq!(e[1]["healthy"], false);
    assert_eq!(e[1]["healthy_nodes"], 1);
    assert_eq!(e[1]["last_failure"]["node_id"], "dp-2");
    assert_eq!(e[1]["last_failure"]["reason"], refused);
    assert!(
        e[1]["last_failure"]["at"].as_str().unwrap().ends_with('Z'),
        "{json}"
    );
    assert_eq!(
        e[1]["nodes"],
        json!([
            {"node_id": "dp-1", "healthy": true, "last_failure": null},
            {"node_id": "dp-2", "healthy": false, "last_failure": refused},
        ])
    );

    // The table, piped: the unhealthy endpoint carries the plain marker, without colour.
    let out = gwctl(&cp, &["health"]).await;
    let table = out.ok();
    assert!(
        table.starts_with("SERVICE  ENDPOINT  ")
            && table.contains("HEALTHY  ")
            && table.contains("LAST FAILURE\n"),
        "{table}"
    );
    assert!(!table.contains('\x1b'), "{table}");
    assert_eq!(
        cells(row(table, &format!("{up} "))),
        ["demo", up.as_str(), "2/2 nodes", "-"],
        "{table}"
    );
    let bad = cells(row(table, &format!("{down} ")));
    assert_eq!(bad[..3], ["demo", down.as_str(), "! 1/2 nodes"], "{table}");
    assert!(bad[3].starts_with("dp-2, "), "{table}");
    assert!(bad[3].ends_with(&format!(" ago: {refused}")), "{table}");

    // One service by name; an unknown one is a one-line error naming it.
    let one = gwctl(&cp, &["-o", "json", "health", "demo"]).await.json();
    assert_eq!(one["services"][0]["service"], "demo");
    let missing = gwctl(&cp, &["health", "nope"]).await;
    assert!(
        missing.error_line().contains("'nope'"),
        "{}",
        missing.stderr
    );

    // The endpoint recovers on dp-2: a change report, not a full one.
    dp2.send(pb::discovery_request::Kind::Health(pb::HealthReport {
        full: false,
        endpoints: vec![pb::EndpointHealth {
            healthy: true,
            ..endpoint_health("demo", &down, Some(refused))
        }],
    }))
    .await;
    eventually("gwctl health shows the recovery", || async {
        let out = gwctl(&cp, &["health"]).await;
        let line = row(out.ok(), &format!("{down} ")).to_string();
        line.contains("  2/2 nodes  ").then_some(())
    })
    .await;
}

/// Histogram bounds shared by the fake nodes, in seconds: 1ms, 5ms, 25ms, 100ms, then +Inf.
const BOUNDS: [f64; 4] = [0.001, 0.005, 0.025, 0.1];

/// A node's figures for one service: `[requests, 2xx, 4xx, 5xx, rate_limited, upstream_errors]`
/// and the histogram counts (one per bucket of [`BOUNDS`], plus the unbounded one).
fn figures(c: [u64; 6], latency: [u64; 5]) -> pb::TrafficFigures {
    pb::TrafficFigures {
        requests: c[0],
        responses_2xx: c[1],
        responses_4xx: c[2],
        responses_5xx: c[3],
        rate_limited: c[4],
        upstream_errors: c[5],
        latency: Some(pb::LatencyHistogram {
            upper_bounds_seconds: BOUNDS.to_vec(),
            counts: latency.to_vec(),
        }),
        ..Default::default()
    }
}

/// The JSON gwctl shows for figures `c` (counters only; latencies are checked apart).
fn counters_json(c: [u64; 6]) -> Value {
    json!({
        "requests": c[0], "responses_1xx": 0, "responses_2xx": c[1], "responses_3xx": 0,
        "responses_4xx": c[2], "responses_5xx": c[3], "rate_limited": c[4],
        "upstream_errors": c[5],
    })
}

/// `figures` without the latency fields, to compare with [`counters_json`].
fn counters(figures: &Value) -> Value {
    let mut v = figures.clone();
    for p in ["latency_p50_ms", "latency_p90_ms", "latency_p99_ms"] {
        v.as_object_mut().unwrap().remove(p);
    }
    v
}

fn key(key: &str, rejections: u64) -> pb::KeyRejections {
    pb::KeyRejections {
        key: key.into(),
        rejections,
    }
}

fn stats_report(
    started: Duration,
    figures: pb::TrafficFigures,
    policy: pb::PolicyCounters,
) -> pb::discovery_request::Kind {
    pb::discovery_request::Kind::Stats(pb::StatsReport {
        started_at: Some((SystemTime::now() - started).into()),
        services: vec![pb::ServiceCounters {
            service: "demo".into(),
            figures: Some(figures),
        }],
        policies: vec![policy],
        rate_limit_store: Some(pb::RateLimitStoreStatus {
            state: pb::RateLimitStoreState::Connected.into(),
            url: "redis://127.0.0.1:6390".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_totals_and_node_figures_are_what_the_nodes_reported() {
    let cp = ControlPlane::start().await;
    gwctl(&cp, &["service", "add", "demo", "--prefix", "/api"])
        .await
        .ok();
    gwctl(
        &cp,
        &["policy", "set", "per-ip", "--limit", "5", "--per", "1m"],
    )
    .await
    .ok();
    let dp1 = FakeNode::connect(&cp, "dp-1").await;
    let dp2 = FakeNode::connect(&cp, "dp-2").await;

    let c1 = [10, 6, 3, 1, 3, 2];
    let c2 = [5, 5, 0, 0, 0, 0];
    dp1.send(stats_report(
        Duration::from_secs(100),
        figures(c1, [4, 4, 2, 0, 0]),
        pb::PolicyCounters {
            policy: "per-ip".into(),
            rate_limited: 3,
            shadow_rejected: 0,
            top_keys: vec![key("10.0.0.7", 2), key("10.0.0.8", 1)],
            allowed: 7,
            global: true,
            store_round_trips: 9,
        },
    ))
    .await;
    dp2.send(stats_report(
        Duration::from_secs(3_700),
        figures(c2, [0, 0, 5, 0, 0]),
        pb::PolicyCounters {
            policy: "per-ip".into(),
            rate_limited: 0,
            shadow_rejected: 1,
            top_keys: vec![key("10.0.0.7", 1)],
            allowed: 5,
            global: true,
            store_round_trips: 6,
        },
    ))
    .await;

    let json = eventually("gwctl stats shows both nodes' reports", || async {
        let json = gwctl(&cp, &["-o", "json", "stats"]).await.json();
        (json["services"][0]["total"]["requests"] == 15).then_some(json)
    })
    .await;
    let demo = &json["services"][0];
    assert_eq!(demo["service"], "demo");
    assert_eq!(
        counters(&demo["total"]),
        counters_json([15, 11, 3, 1, 3, 2])
    );
    let nodes = demo["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{json}");
    assert_eq!(nodes[0]["node_id"], "dp-1");
    assert_eq!(nodes[0]["connected"], true);
    assert_eq!(counters(&nodes[0]["figures"]), counters_json(c1));
    assert_eq!(nodes[1]["node_id"], "dp-2");
    assert_eq!(counters(&nodes[1]["figures"]), counters_json(c2));
    // Percentiles come from the merged histogram: 15 requests, 8 of them within 5ms, all
    // within 25ms. So the median lies in (1ms, 5ms] and p90/p99 in (5ms, 25ms].
    let ms = |v: &Value, p: &str| v[p].as_f64().unwrap_or_else(|| panic!("{p}: {v}"));
    let total = &demo["total"];
    assert!(
        (1.0..=5.0).contains(&ms(total, "latency_p50_ms")),
        "{total}"
    );
    for p in ["latency_p90_ms", "latency_p99_ms"] {
        assert!(ms(total, p) > 5.0 && ms(total, p) <= 25.0, "{p}: {total}");
    }
    // dp-2 alone: every request in (5ms, 25ms].
    let f2 = &nodes[1]["figures"];
    assert!(
        ms(f2, "latency_p50_ms") > 5.0 && ms(f2, "latency_p50_ms") <= 25.0,
        "{f2}"
    );
    assert_eq!(
        json["policies"],
        json!([{
            "policy": "per-ip", "rate_limited": 3, "shadow_rejected": 1,
            "allowed": 12, "global": true, "degraded_nodes": 0, "store_round_trips": 15,
            "top_keys": [{"key": "10.0.0.7", "rejections": 3},
                         {"key": "10.0.0.8", "rejections": 1}],
        }])
    );

    // One node's figures only.
    let only = gwctl(&cp, &["-o", "json", "stats", "--node", "dp-2"])
        .await
        .json();
    let demo = &only["services"][0];
    assert_eq!(counters(&demo["total"]), counters_json(c2));
    assert_eq!(demo["nodes"].as_array().unwrap().len(), 1, "{only}");
    assert_eq!(demo["nodes"][0]["node_id"], "dp-2");

    // The table: totals, a row per node, the policy with its keys.
    let out = gwctl(&cp, &["stats", "demo"]).await;
    let table = out.ok();
    assert!(table.starts_with("SERVICE  "), "{table}");
    assert_eq!(
        cells(row(table, "demo "))[..7],
        ["demo", "15", "11", "3", "1", "3", "2"]
    );
    assert_eq!(
        cells(row(table, "  dp-1 "))[..7],
        ["dp-1", "10", "6", "3", "1", "3", "2"]
    );
    assert_eq!(
        cells(row(table, "  dp-2 "))[..7],
        ["dp-2", "5", "5", "0", "0", "0", "0"]
    );
    assert_eq!(
        cells(row(table, "per-ip ")),
        [
            "per-ip",
            "global",
            "12",
            "3",
            "1",
            "10.0.0.7 (3), 10.0.0.8 (1)"
        ]
    );
    assert!(!table.contains('!'), "{table}");

    // Nodes show how long each has been up and how old its figures are.
    let listed = gwctl(&cp, &["-o", "json", "nodes"]).await.json();
    let uptime = |i: usize| {
        let text = listed["nodes"][i]["uptime"]
            .as_str()
            .unwrap_or_else(|| panic!("{listed}"));
        gwctl::duration::parse(text).unwrap()
    };
    assert_eq!(listed["nodes"][0]["node_id"], "dp-1");
    assert!(uptime(0) >= Duration::from_secs(100), "{listed}");
    assert_eq!(
        listed["nodes"][0]["rate_limit_store"]["state"], "connected",
        "{listed}"
    );
    assert!(uptime(1) >= Duration::from_secs(3_700), "{listed}");
    for i in 0..2 {
        let age = listed["nodes"][i]["stats_age"].as_str().unwrap();
        gwctl::duration::parse(age).unwrap();
    }
    let out = gwctl(&cp, &["nodes"]).await;
    let table = out.ok();
    assert!(
        table
            .lines()
            .next()
            .unwrap()
            .ends_with("  UPTIME  STATS AGE  STORE"),
        "{table}"
    );
    // dp-2 has been up more than an hour: the table shows hours.
    assert!(cells(row(table, "dp-2 "))[7].starts_with("1h"), "{table}");

    // A node that goes away keeps its figures, flagged as disconnected.
    drop(dp2);
    let json = eventually("gwctl stats shows dp-2 disconnected", || async {
        let json = gwctl(&cp, &["-o", "json", "stats"]).await.json();
        (json["services"][0]["nodes"][1]["connected"] == false).then_some(json)
    })
    .await;
    assert_eq!(
        counters(&json["services"][0]["total"]),
        counters_json([15, 11, 3, 1, 3, 2])
    );
    assert_eq!(
        counters(&json["services"][0]["nodes"][1]["figures"]),
        counters_json(c2)
    );
    let out = gwctl(&cp, &["stats"]).await;
    let table = out.ok();
    assert!(!table.contains('\x1b'), "{table}");
    assert_eq!(
        cells(row(table, "! dp-2 (disconnected)"))[..3],
        ["! dp-2 (disconnected)", "5", "5"],
        "{table}"
    );
    let out = gwctl(&cp, &["nodes"]).await;
    assert!(
        row(out.ok(), "dp-2 ").starts_with("dp-2  ! disconnected  "),
        "{}",
        out.stdout
    );
    drop(dp1);
}

/// Serves only the gRPC health service: a control plane that predates GetHealth/GetStats
/// answers them the same way, UNIMPLEMENTED.
async fn older_control_plane() -> (String, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (url, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_control_plane_is_told_to_upgrade() {
    let (url, _stop) = older_control_plane().await;
    for (command, rpc) in [("stats", "GetStats"), ("health", "GetHealth")] {
        let out = crate::support::gwctl_env(&["--control-plane", &url, command], &[]).await;
        assert_eq!(
            out.error_line(),
            format!(
                "error: not supported: the control plane at {url} does not support {rpc}; \
                 upgrade it"
            )
        );
    }
}
