//! Rendering `gwctl stats` from hand-built responses.

use std::time::Duration;

use super::*;

fn micros(n: u64) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(Duration::from_micros(n)).ok()
}

fn figures(counts: [u64; 6], p: [u64; 3]) -> Option<pb::TrafficFigures> {
    let [
        requests,
        responses_2xx,
        responses_4xx,
        responses_5xx,
        rate_limited,
        upstream_errors,
    ] = counts;
    Some(pb::TrafficFigures {
        requests,
        responses_2xx,
        responses_4xx,
        responses_5xx,
        rate_limited,
        upstream_errors,
        latency_p50: micros(p[0]),
        latency_p90: micros(p[1]),
        latency_p99: micros(p[2]),
        ..Default::default()
    })
}

fn sample(highlight: Highlight) -> StatsView {
    let keys = (1..=7)
        .map(|i| pb::KeyRejections {
            key: format!("10.0.0.{i}"),
            rejections: 10 - i,
        })
        .collect();
    StatsView::new(
        pb::GetStatsResponse {
            services: vec![
                pb::ServiceTraffic {
                    service: "demo".into(),
                    total: figures([30, 25, 5, 0, 5, 1], [2_100, 4_000, 250_000]),
                    nodes: vec![
                        pb::NodeTraffic {
                            node_id: "dp-1".into(),
                            connected: true,
                            figures: figures([20, 17, 3, 0, 3, 1], [2_000, 3_900, 250_000]),
                        },
                        pb::NodeTraffic {
                            node_id: "dp-2".into(),
                            connected: false,
                            figures: figures([10, 8, 2, 0, 2, 0], [250, 1_250_000, 1_250_000]),
                        },
                    ],
                },
                pb::ServiceTraffic {
                    service: "idle".into(),
                    total: None,
                    nodes: vec![],
                },
            ],
            policies: vec![
                pb::PolicyTraffic {
                    policy: "demo-per-ip".into(),
                    rate_limited: 5,
                    shadow_rejected: 0,
                    top_keys: keys,
                    allowed: 25,
                    global: true,
                    degraded_nodes: 1,
                    store_round_trips: 30,
                },
                pb::PolicyTraffic {
                    policy: "trial".into(),
                    rate_limited: 0,
                    shadow_rejected: 3,
                    top_keys: vec![],
                    ..Default::default()
                },
            ],
            consumer: None,
        },
        highlight,
    )
}

#[test]
fn table_has_totals_node_rows_and_policies() {
    assert_eq!(
        sample(Highlight::Plain).human(),
        "\
SERVICE                  REQUESTS  2XX  4XX  5XX  LIMITED  ERRORS  P50     P90    P99
demo                     30        25   5    0    5        1       2.1ms   4.0ms  250ms
  dp-1                   20        17   3    0    3        1       2.0ms   3.9ms  250ms
  ! dp-2 (disconnected)  10        8    2    0    2        0       0.25ms  1.25s  1.25s
idle                     0         0    0    0    0        0       -       -      -

POLICY       SCOPE                  ALLOWED  LIMITED  SHADOW  TOP KEYS
demo-per-ip  ! global (1 degraded)  25       5        0       10.0.0.1 (9), 10.0.0.2 (8), \
10.0.0.3 (7), 10.0.0.4 (6), 10.0.0.5 (5), +2 more
trial        node                   0        0        3       -
"
    );
}

#[test]
fn on_a_terminal_only_the_disconnected_node_and_the_degraded_policy_are_red() {
    let text = sample(Highlight::Color).human();
    assert_eq!(text.matches("\x1b[31m").count(), 2, "{text}");
    assert!(
        text.contains("\n  \x1b[31m! dp-2 (disconnected)\x1b[0m  10  "),
        "{text}"
    );
    assert!(
        text.contains("\ndemo-per-ip  \x1b[31m! global (1 degraded)\x1b[0m  25  "),
        "{text}"
    );
}

#[test]
fn latency_precision_follows_size() {
    let cases = [
        (None, "-"),
        (Some(0.05), "0.05ms"),
        (Some(0.994), "0.99ms"),
        (Some(0.999), "1.0ms"),
        (Some(1.0), "1.0ms"),
        (Some(9.94), "9.9ms"),
        (Some(9.97), "10ms"),
        (Some(10.0), "10ms"),
        (Some(999.4), "999ms"),
        (Some(999.7), "1.00s"),
        (Some(1_000.0), "1.00s"),
        (Some(62_500.0), "62.50s"),
    ];
    for (ms, want) in cases {
        assert_eq!(latency(ms), want, "{ms:?}");
    }
}

#[test]
fn json_has_every_counter_and_latencies_in_ms() {
    let json = serde_json::to_value(sample(Highlight::Color)).unwrap();
    let demo = &json["services"][0];
    assert_eq!(demo["service"], "demo");
    assert_eq!(
        demo["nodes"][1],
        serde_json::json!({
            "node_id": "dp-2",
            "connected": false,
            "figures": {
                "requests": 10, "responses_1xx": 0, "responses_2xx": 8, "responses_3xx": 0,
                "responses_4xx": 2, "responses_5xx": 0, "rate_limited": 2, "upstream_errors": 0,
                "latency_p50_ms": 0.25, "latency_p90_ms": 1250.0, "latency_p99_ms": 1250.0
            }
        })
    );
    assert_eq!(demo["total"]["requests"], 30);
    assert_eq!(demo["total"]["latency_p50_ms"], 2.1);
    assert_eq!(demo["nodes"][0]["node_id"], "dp-1");
    let idle = &json["services"][1];
    assert_eq!(idle["total"]["requests"], 0);
    assert_eq!(idle["total"]["latency_p99_ms"], serde_json::Value::Null);
    assert_eq!(idle["nodes"], serde_json::json!([]));
    let policy = &json["policies"][0];
    assert_eq!(policy["rate_limited"], 5);
    assert_eq!(
        (
            &policy["allowed"],
            &policy["global"],
            &policy["degraded_nodes"]
        ),
        (
            &serde_json::json!(25),
            &serde_json::json!(true),
            &serde_json::json!(1)
        )
    );
    assert_eq!(policy["top_keys"].as_array().unwrap().len(), 7);
    assert_eq!(
        policy["top_keys"][0],
        serde_json::json!({"key": "10.0.0.1", "rejections": 9})
    );
    assert_eq!(json["policies"][1]["shadow_rejected"], 3);
    assert!(json.get("highlight").is_none());
}

#[test]
fn nothing_reported_is_two_headers() {
    let view = StatsView::new(pb::GetStatsResponse::default(), Highlight::Plain);
    assert_eq!(
        view.human(),
        "SERVICE  REQUESTS  2XX  4XX  5XX  LIMITED  ERRORS  P50  P90  P99\n\n\
         POLICY  SCOPE  ALLOWED  LIMITED  SHADOW  TOP KEYS\n"
    );
}
