//! Fleet health and stats (issue 4): fake data planes send health and stats reports on their
//! config streams; GetHealth, GetStats and ListNodes show the aggregate.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, SystemTime};

use common::{Admin, ControlPlane, Node, policy};
use gw_proto::v1 as pb;
use gw_proto::v1::discovery_request::Kind;
use tonic::Code;

const E1: &str = "http://127.0.0.1:9001";
const E2: &str = "http://127.0.0.1:9002";
const E3: &str = "http://127.0.0.1:9003";
/// The data plane's bucket bounds, in seconds (any ascending list works).
const BOUNDS: [f64; 5] = [0.005, 0.01, 0.05, 0.1, 0.5];

fn web() -> pb::Service {
    let mut s = common::service("web", "/web");
    s.endpoints = vec![E1.into(), E2.into(), E3.into()];
    s
}

async fn send(node: &Node, kind: Kind) {
    node.tx
        .send(pb::DiscoveryRequest { kind: Some(kind) })
        .await
        .unwrap();
}

async fn report_health(node: &Node, full: bool, endpoints: Vec<pb::EndpointHealth>) {
    send(node, Kind::Health(pb::HealthReport { full, endpoints })).await;
}

fn up(endpoint: &str) -> pb::EndpointHealth {
    pb::EndpointHealth {
        service: "web".into(),
        endpoint: endpoint.into(),
        healthy: true,
        ..Default::default()
    }
}

fn down(endpoint: &str, why: &str, at: SystemTime) -> pb::EndpointHealth {
    pb::EndpointHealth {
        service: "web".into(),
        endpoint: endpoint.into(),
        healthy: false,
        last_failure: why.into(),
        last_failure_at: Some(at.into()),
    }
}

/// Figures for `requests` requests: all 2xx except `limited` 429s, latencies per bucket.
fn figures(requests: u64, limited: u64, buckets: [u64; 6]) -> pb::TrafficFigures {
    pb::TrafficFigures {
        requests,
        responses_2xx: requests - limited,
        responses_4xx: limited,
        rate_limited: limited,
        upstream_errors: 1,
        latency: Some(pb::LatencyHistogram {
            upper_bounds_seconds: BOUNDS.to_vec(),
            counts: buckets.to_vec(),
        }),
        ..Default::default()
    }
}

fn counters(service: &str, figures: pb::TrafficFigures) -> pb::ServiceCounters {
    pb::ServiceCounters {
        service: service.into(),
        figures: Some(figures),
    }
}

async fn report_stats(
    node: &Node,
    services: Vec<pb::ServiceCounters>,
    policies: Vec<pb::PolicyCounters>,
) {
    let started_at = Some((SystemTime::now() - Duration::from_secs(3600)).into());
    let report = pb::StatsReport {
        started_at,
        services,
        policies,
        rate_limit_store: None,
        ..Default::default()
    };
    send(node, Kind::Stats(report)).await;
}

async fn health(admin: &Admin, service: &str) -> Result<pb::GetHealthResponse, tonic::Status> {
    let req = admin.req(pb::GetHealthRequest {
        service: service.into(),
    });
    admin
        .client
        .clone()
        .get_health(req)
        .await
        .map(|r| r.into_inner())
}

async fn stats(
    admin: &Admin,
    service: &str,
    node_id: &str,
) -> Result<pb::GetStatsResponse, tonic::Status> {
    let req = admin.req(pb::GetStatsRequest {
        service: service.into(),
        node_id: node_id.into(),
        ..Default::default()
    });
    admin
        .client
        .clone()
        .get_stats(req)
        .await
        .map(|r| r.into_inner())
}

/// Polls GetHealth("web") until `check` holds for the endpoint summaries.
async fn wait_health(
    admin: &Admin,
    what: &str,
    check: impl Fn(&[pb::EndpointHealthSummary]) -> bool,
) -> Vec<pb::EndpointHealthSummary> {
    let check = &check;
    gw_testkit::eventually(what, || async move {
        let h = health(admin, "web").await.ok()?;
        let eps = h.services.into_iter().next()?.endpoints;
        check(&eps).then_some(eps)
    })
    .await
}

/// Polls GetStats until `check` holds.
async fn wait_stats(
    admin: &Admin,
    service: &str,
    node_id: &str,
    what: &str,
    check: impl Fn(&pb::GetStatsResponse) -> bool,
) -> pb::GetStatsResponse {
    let check = &check;
    gw_testkit::eventually(what, || async move {
        let s = stats(admin, service, node_id).await.ok()?;
        check(&s).then_some(s)
    })
    .await
}

fn counts(e: &pb::EndpointHealthSummary) -> (&str, u32, u32) {
    (e.endpoint.as_str(), e.healthy_nodes, e.unhealthy_nodes)
}

fn total(s: &pb::GetStatsResponse, service: &str) -> pb::TrafficFigures {
    s.services
        .iter()
        .find(|t| t.service == service)
        .and_then(|t| t.total.clone())
        .unwrap_or_default()
}

fn ms(ms: u64) -> Option<prost_types::Duration> {
    Some(Duration::from_millis(ms).try_into().unwrap())
}

#[tokio::test]
async fn health_counts_across_nodes_partial_merges_full_replaces_disconnect_drops_out() {
    let cp = ControlPlane::start().await;
    let mut admin = cp.admin().await;
    admin.create(web()).await.unwrap();
    let a = cp.node("dp-a", 0).await;
    let b = cp.node("dp-b", 0).await;
    let t0 = SystemTime::now() - Duration::from_secs(60);

    // Before any report every endpoint is listed, in config order, with zeros.
    let eps = wait_health(&admin, "the config's endpoints", |e| e.len() == 3).await;
    let zero: Vec<_> = eps.iter().map(counts).collect();
    assert_eq!(zero, [(E1, 0, 0), (E2, 0, 0), (E3, 0, 0)]);
    assert!(
        eps.iter()
            .all(|e| e.nodes.is_empty() && e.last_failure.is_empty())
    );

    report_health(&a, true, vec![up(E1), up(E2)]).await;
    report_health(
        &b,
        true,
        vec![up(E1), down(E2, "GET /health: connection refused", t0)],
    )
    .await;
    let eps = wait_health(&admin, "both nodes' full reports", |e| {
        counts(&e[0]) == (E1, 2, 0) && counts(&e[1]) == (E2, 1, 1)
    })
    .await;
    assert_eq!(counts(&eps[2]), (E3, 0, 0), "no node reports it");
    let e2 = &eps[1];
    assert_eq!(
        (e2.last_failure.as_str(), e2.last_failure_node.as_str()),
        ("GET /health: connection refused", "dp-b")
    );
    assert_eq!(e2.last_failure_at, Some(t0.into()));
    let views: Vec<_> = e2
        .nodes
        .iter()
        .map(|n| (n.node_id.as_str(), n.healthy, n.last_failure.as_str()))
        .collect();
    assert_eq!(
        views,
        [
            ("dp-a", true, ""),
            ("dp-b", false, "GET /health: connection refused")
        ]
    );

    // A partial report changes only what it names, and a later failure becomes the latest.
    report_health(
        &a,
        false,
        vec![down(
            E2,
            "GET /health: timed out",
            t0 + Duration::from_secs(5),
        )],
    )
    .await;
    let eps = wait_health(&admin, "A's partial report merged", |e| {
        counts(&e[1]) == (E2, 0, 2)
    })
    .await;
    assert_eq!(counts(&eps[0]), (E1, 2, 0), "A's other endpoint is kept");
    assert_eq!(
        (
            eps[1].last_failure.as_str(),
            eps[1].last_failure_node.as_str()
        ),
        ("GET /health: timed out", "dp-a")
    );

    // Junk in a report is ignored without ending the stream; the valid rest is applied.
    let junk = pb::EndpointHealth {
        service: "NOT a name".into(),
        ..up(E3)
    };
    report_health(&b, false, vec![junk, up(E3)]).await;
    wait_health(&admin, "B's report with junk", |e| {
        counts(&e[2]) == (E3, 1, 0)
    })
    .await;

    // A full report replaces: B no longer reports E2 (nor E3).
    report_health(&b, true, vec![up(E1)]).await;
    let eps = wait_health(&admin, "B's full report replaced its view", |e| {
        counts(&e[1]) == (E2, 0, 1) && counts(&e[2]) == (E3, 0, 0)
    })
    .await;
    assert_eq!(counts(&eps[0]), (E1, 2, 0));

    // A disconnected node drops out of the counts.
    drop(b);
    admin
        .wait_node("dp-b", "dp-b disconnected", |n| !n.connected)
        .await;
    let eps = wait_health(&admin, "dp-b out of the counts", |e| {
        counts(&e[0]) == (E1, 1, 0)
    })
    .await;
    assert_eq!(eps[0].nodes.len(), 1);
    assert_eq!(eps[0].nodes[0].node_id, "dp-a");
    assert!(admin.node("dp-a").await.unwrap().connected);

    // Filter and errors.
    admin.add("other", "/other").await;
    let all = health(&admin, "").await.unwrap();
    let names: Vec<_> = all.services.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(names, ["other", "web"]);
    let one = health(&admin, "other").await.unwrap();
    assert_eq!(one.services.len(), 1);
    assert_eq!(one.services[0].service, "other");
    let missing = health(&admin, "nope").await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    let bad = health(&admin, "Not A Name").await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    drop(a);
}

#[tokio::test]
async fn stats_totals_are_sums_of_the_latest_reports_and_disconnected_nodes_keep_theirs() {
    let cp = ControlPlane::start().await;
    let mut admin = cp.admin().await;
    admin.create(web()).await.unwrap();
    admin.add("api", "/api").await;
    let a = cp.node("dp-a", 0).await;
    let b = cp.node("dp-b", 0).await;

    report_stats(
        &a,
        vec![counters("web", figures(10, 2, [10, 0, 0, 0, 0, 0]))],
        vec![],
    )
    .await;
    report_stats(
        &b,
        vec![
            counters("web", figures(5, 0, [0, 5, 0, 0, 0, 0])),
            counters("api", figures(3, 1, [3, 0, 0, 0, 0, 0])),
        ],
        vec![],
    )
    .await;
    let s = wait_stats(&admin, "", "", "both nodes' reports", |s| {
        total(s, "web").requests == 15 && total(s, "api").requests == 3
    })
    .await;
    let web = total(&s, "web");
    assert_eq!(
        (
            web.responses_2xx,
            web.responses_4xx,
            web.rate_limited,
            web.upstream_errors
        ),
        (13, 2, 2, 2)
    );
    assert_eq!(web.latency.unwrap().counts, [10, 5, 0, 0, 0, 0]);

    // A later report replaces the earlier one: cumulative counters are not added up again.
    report_stats(
        &a,
        vec![counters("web", figures(12, 3, [12, 0, 0, 0, 0, 0]))],
        vec![],
    )
    .await;
    let s = wait_stats(&admin, "", "", "A's second report", |s| {
        total(s, "web").requests == 17
    })
    .await;
    let web = total(&s, "web");
    assert_eq!((web.rate_limited, web.responses_2xx), (3, 14));
    let per_node: Vec<_> = s
        .services
        .iter()
        .find(|t| t.service == "web")
        .unwrap()
        .nodes
        .iter()
        .map(|n| {
            (
                n.node_id.as_str(),
                n.connected,
                n.figures.as_ref().unwrap().requests,
            )
        })
        .collect();
    assert_eq!(per_node, [("dp-a", true, 12), ("dp-b", true, 5)]);

    // Node filter: only dp-a's figures; dp-b's api traffic shows no node.
    let only_a = stats(&admin, "", "dp-a").await.unwrap();
    assert_eq!(total(&only_a, "web").requests, 12);
    let api = only_a.services.iter().find(|t| t.service == "api").unwrap();
    assert!(api.nodes.is_empty());
    assert_eq!(total(&only_a, "api").requests, 0);

    // Service filter.
    let only_api = stats(&admin, "api", "").await.unwrap();
    let names: Vec<_> = only_api
        .services
        .iter()
        .map(|t| t.service.as_str())
        .collect();
    assert_eq!(names, ["api"]);
    assert_eq!(total(&only_api, "api").requests, 3);

    // A disconnected node stays, marked, with its last figures.
    drop(b);
    admin
        .wait_node("dp-b", "dp-b disconnected", |n| !n.connected)
        .await;
    let s = stats(&admin, "web", "").await.unwrap();
    let nodes: Vec<_> = s.services[0]
        .nodes
        .iter()
        .map(|n| {
            (
                n.node_id.as_str(),
                n.connected,
                n.figures.as_ref().unwrap().requests,
            )
        })
        .collect();
    assert_eq!(nodes, [("dp-a", true, 12), ("dp-b", false, 5)]);
    assert_eq!(total(&s, "web").requests, 17);
    let only_b = stats(&admin, "", "dp-b").await.unwrap();
    assert_eq!(total(&only_b, "api").requests, 3);

    // Unknown names.
    for (service, node) in [("nope", ""), ("", "dp-nope"), ("web", "dp-nope")] {
        let err = stats(&admin, service, node).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{service}/{node}: {err:?}");
    }
    drop(a);
}

#[tokio::test]
async fn percentiles_come_from_the_merged_histogram() {
    let cp = ControlPlane::start().await;
    let mut admin = cp.admin().await;
    admin.create(web()).await.unwrap();
    let a = cp.node("dp-a", 0).await;
    let b = cp.node("dp-b", 0).await;
    let c = cp.node("dp-c", 0).await;
    // A: 60 requests in the first bucket (<= 5 ms); B: 40 in the fifth (<= 500 ms).
    report_stats(
        &a,
        vec![counters("web", figures(60, 0, [60, 0, 0, 0, 0, 0]))],
        vec![],
    )
    .await;
    report_stats(
        &b,
        vec![counters("web", figures(40, 0, [0, 0, 0, 0, 40, 0]))],
        vec![],
    )
    .await;
    // C runs another build with other bounds: its counters count, its histogram cannot merge.
    let mut other = figures(7, 0, [0; 6]);
    other.latency = Some(pb::LatencyHistogram {
        upper_bounds_seconds: vec![2.0],
        counts: vec![0, 7],
    });
    report_stats(&c, vec![counters("web", other)], vec![]).await;
    let s = wait_stats(&admin, "web", "", "three reports", |s| {
        total(s, "web").requests == 107
    })
    .await;
    let t = total(&s, "web");
    assert_eq!(t.latency.as_ref().unwrap().counts, [60, 0, 0, 0, 40, 0]);
    // Rank 50 of 100 is in A's bucket; ranks 90 and 99 are in B's. The mean of the nodes'
    // medians (252.5 ms) would be wrong for any of them.
    assert_eq!(
        (t.latency_p50, t.latency_p90, t.latency_p99),
        (ms(5), ms(500), ms(500))
    );
    let node = |id: &str| {
        s.services[0]
            .nodes
            .iter()
            .find(|n| n.node_id == id)
            .and_then(|n| n.figures.clone())
            .unwrap()
    };
    let fa = node("dp-a");
    assert_eq!((fa.latency_p50, fa.latency_p99), (ms(5), ms(5)));
    let fc = node("dp-c");
    assert_eq!(fc.latency_p50, ms(2000), "per node, its own bounds");

    // No requests: no percentiles.
    report_stats(&a, vec![counters("web", figures(0, 0, [0; 6]))], vec![]).await;
    let only_a = wait_stats(&admin, "web", "dp-a", "A's empty report", |s| {
        total(s, "web").requests == 0
    })
    .await;
    let t = total(&only_a, "web");
    assert_eq!((t.latency_p50, t.latency_p99), (None, None));
    drop((a, b, c));
}

fn policy_counters(name: &str, limited: u64, keys: &[(&str, u64)]) -> pb::PolicyCounters {
    pb::PolicyCounters {
        policy: name.into(),
        rate_limited: limited,
        shadow_rejected: 1,
        top_keys: keys
            .iter()
            .map(|(k, n)| pb::KeyRejections {
                key: (*k).into(),
                rejections: *n,
            })
            .collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn policy_rejections_and_top_keys_are_merged_bounded_and_filtered() {
    let cp = ControlPlane::start().await;
    let mut admin = cp.admin().await;
    admin.create(web()).await.unwrap();
    admin.add("api", "/api").await;
    admin.put_policy(policy("p-web", "web")).await.unwrap();
    admin.put_policy(policy("p-api", "api")).await.unwrap();
    admin.put_policy(policy("p-all", "")).await.unwrap();
    let a = cp.node("dp-a", 0).await;
    let b = cp.node("dp-b", 0).await;

    // A's 15 keys: 10.0.0.{i} with 100 - i rejections; B's overlap on the first three and
    // adds one large key of its own.
    let a_keys: Vec<(String, u64)> = (0..15).map(|i| (format!("10.0.0.{i}"), 100 - i)).collect();
    let a_keys: Vec<(&str, u64)> = a_keys.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    report_stats(
        &a,
        vec![],
        vec![
            policy_counters("p-web", 500, &a_keys),
            policy_counters("p-api", 4, &[("k", 4)]),
        ],
    )
    .await;
    report_stats(
        &b,
        vec![],
        vec![
            policy_counters(
                "p-web",
                50,
                &[
                    ("10.0.0.2", 50),
                    ("10.0.0.1", 1),
                    ("10.0.0.0", 1),
                    ("10.9.9.9", 120),
                ],
            ),
            policy_counters("p-all", 2, &[]),
        ],
    )
    .await;
    let s = wait_stats(&admin, "", "", "both policy reports", |s| {
        s.policies
            .iter()
            .any(|p| p.policy == "p-web" && p.rate_limited == 550)
    })
    .await;
    let names: Vec<_> = s.policies.iter().map(|p| p.policy.as_str()).collect();
    assert_eq!(names, ["p-all", "p-api", "p-web"]);
    let p_web = s.policies.iter().find(|p| p.policy == "p-web").unwrap();
    assert_eq!(p_web.shadow_rejected, 2);
    let top: Vec<_> = p_web
        .top_keys
        .iter()
        .map(|k| (k.key.as_str(), k.rejections))
        .collect();
    assert_eq!(
        top,
        [
            ("10.0.0.2", 148),
            ("10.9.9.9", 120),
            ("10.0.0.0", 101),
            ("10.0.0.1", 100),
            ("10.0.0.3", 97),
            ("10.0.0.4", 96),
            ("10.0.0.5", 95),
            ("10.0.0.6", 94),
            ("10.0.0.7", 93),
            ("10.0.0.8", 92),
        ]
    );

    // For one service: its own policies and those of every service; not the other's.
    let web = stats(&admin, "web", "").await.unwrap();
    let names: Vec<_> = web
        .policies
        .iter()
        .map(|p| (p.policy.as_str(), p.rate_limited))
        .collect();
    assert_eq!(names, [("p-all", 2), ("p-web", 550)]);
    // For one node: only its rejections.
    let only_b = stats(&admin, "web", "dp-b").await.unwrap();
    let p_web = only_b
        .policies
        .iter()
        .find(|p| p.policy == "p-web")
        .unwrap();
    assert_eq!((p_web.rate_limited, p_web.top_keys.len()), (50, 4));
    drop((a, b));
}

#[tokio::test]
async fn list_nodes_shows_uptime_and_stats_age_once_a_report_arrived() {
    let cp = ControlPlane::start().await;
    let mut admin = cp.admin().await;
    let v = admin.add("web", "/web").await;
    let mut a = cp.node("dp-a", 0).await;
    assert_eq!(a.next().await.version, v);
    a.ack(v).await;
    let n = admin
        .wait_node("dp-a", "dp-a acked", |n| n.acked_version == v)
        .await;
    assert_eq!((n.uptime, n.stats_age), (None, None), "no report yet");

    report_stats(
        &a,
        vec![counters("web", figures(1, 0, [1, 0, 0, 0, 0, 0]))],
        vec![],
    )
    .await;
    let n = admin
        .wait_node("dp-a", "uptime after a report", |n| n.uptime.is_some())
        .await;
    // The report says the node started an hour ago.
    let uptime = Duration::try_from(n.uptime.unwrap()).unwrap();
    assert!(uptime >= Duration::from_secs(3600), "{uptime:?}");
    assert!(uptime < Duration::from_secs(2 * 3600), "{uptime:?}");
    let age = Duration::try_from(n.stats_age.unwrap()).unwrap();
    assert!(age < Duration::from_secs(3600), "{age:?}");

    // Disconnected: uptime as of the last report (it no longer grows), figures' age still.
    drop(a);
    let gone = admin
        .wait_node("dp-a", "dp-a disconnected", |n| !n.connected)
        .await;
    let again = admin.node("dp-a").await.unwrap();
    assert_eq!(gone.uptime, again.uptime);
    assert!(again.stats_age.is_some());
}

/// Many nodes sending many cumulative reports at once: the total is exactly the sum of each
/// node's last report, however the streams interleave. Bounded: 40 nodes x 25 reports.
#[tokio::test]
async fn concurrent_reports_from_many_nodes_sum_to_the_latest_of_each() {
    const NODES: u64 = 40;
    const REPORTS: u64 = 25;
    let cp = ControlPlane::start().await;
    let mut admin = cp.admin().await;
    admin.create(web()).await.unwrap();
    let mut tasks = Vec::new();
    for i in 1..=NODES {
        let node = cp.node(&format!("dp-{i:02}"), 0).await;
        tasks.push(tokio::spawn(async move {
            for r in 1..=REPORTS {
                let n = r * i;
                report_stats(
                    &node,
                    vec![counters("web", figures(n, 0, [n, 0, 0, 0, 0, 0]))],
                    vec![],
                )
                .await;
                let e = if r % 2 == REPORTS % 2 {
                    up(E1)
                } else {
                    down(E1, "flapping", SystemTime::now())
                };
                report_health(&node, false, vec![e]).await;
            }
            node
        }));
    }
    let mut nodes = Vec::new();
    for t in tasks {
        nodes.push(t.await.unwrap());
    }
    let want = REPORTS * NODES * (NODES + 1) / 2;
    let s = wait_stats(&admin, "web", "", "every node's last report", |s| {
        total(s, "web").requests == want
    })
    .await;
    assert_eq!(s.services[0].nodes.len(), NODES as usize);
    let t = total(&s, "web");
    assert_eq!(t.latency.unwrap().counts[0], want);
    // Every node's last health report says healthy (they alternate, ending healthy).
    wait_health(&admin, "every node's last health report", |e| {
        counts(&e[0]) == (E1, NODES as u32, 0)
    })
    .await;
    drop(nodes);
}
