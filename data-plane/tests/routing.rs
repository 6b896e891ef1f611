//! Routing and balancing end to end: real control plane, data plane and backends.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_sequential_requests_exactly() {
    let mut env = Env::start().await;
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    env.add(service("rr", "/", &[&a, &b, &c])).await;
    let mut seen = Vec::new();
    for _ in 0..30 {
        let r = env.get("/x").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), r.header("x-backend").unwrap());
        seen.push(r.text());
    }
    assert_eq!((a.hits(), b.hits(), c.hits()), (10, 10, 10));
    // Strict rotation, not merely even totals.
    for w in seen.windows(3) {
        assert!(w[0] != w[1] && w[1] != w[2] && w[0] != w[2], "{seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longest_prefix_on_segment_boundary_strip_prefix_and_query() {
    let mut env = Env::start().await;
    let root = Backend::start("root").await;
    let api = Backend::start("api").await;
    let v2 = Backend::start("v2").await;
    env.add(service("root", "/", &[&root])).await;
    let mut s = service("api", "/api", &[&api]);
    s.route.as_mut().unwrap().strip_prefix = true;
    env.add(s).await;
    env.add(service("v2", "/api/v2", &[&v2])).await;

    // (request path, backend, path the backend saw)
    let cases = [
        ("/api/x?q=1", "api", "/x?q=1"),
        ("/api", "api", "/"),
        ("/api?q=2", "api", "/?q=2"),
        ("/api/", "api", "/"),
        ("/apix", "root", "/apix"),
        ("/api/v2/users?id=7&x=%20", "v2", "/api/v2/users?id=7&x=%20"),
        ("/api/v20", "api", "/v20"),
        ("/", "root", "/"),
    ];
    for (path, backend, seen) in cases {
        let r = env.get(path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("x-backend"), Some(backend), "{path}");
        assert_eq!(r.header("x-path"), Some(seen), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_routes_win_over_any_host_routes() {
    let mut env = Env::start().await;
    let any = Backend::start("any").await;
    let hosted = Backend::start("hosted").await;
    env.add(service("any", "/", &[&any])).await;
    let mut s = service("hosted", "/", &[&hosted]);
    s.route.as_mut().unwrap().hosts = vec!["api.example.com".into()];
    env.add(s).await;
    let r = Call::get(env.dp.proxy, "/")
        .header("host", "API.example.com:8080")
        .send()
        .await;
    assert_eq!(r.header("x-backend"), Some("hosted"));
    let r = env.get("/").await;
    assert_eq!(r.header("x-backend"), Some("any"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_is_404_and_no_endpoint_is_503_with_json() {
    let mut env = Env::start().await;
    env.add(service("empty", "/empty", &[])).await;
    let r = env.get("/nothing-here").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["error"], "no_route");
    assert!(r.header("x-request-id").is_some());

    let r = env.get("/empty/x").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "no_endpoint");
    assert_eq!(
        env.dp
            .metric("gw_requests_total{service=\"empty\",code=\"503\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(env.dp.metric("gw_no_route_total").await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_added_through_the_admin_api_answers_within_a_second() {
    let env = Env::start().await;
    let mut admin = env.admin.clone();
    let b = Backend::start("fresh").await;
    // Let the data plane connect first, so the figure is propagation, not start-up.
    eventually("data plane connected", || async {
        (env.dp.metric("gw_control_plane_connected").await == Some(1.0)).then_some(())
    })
    .await;
    let started = Instant::now();
    create(&mut admin, service("fresh", "/fresh", &[&b])).await;
    let rpc_done = started.elapsed();
    eventually_within(
        Duration::from_secs(1),
        "new service answering through the proxy",
        || async { (env.get("/fresh").await.status == 200).then_some(()) },
    )
    .await;
    let total = started.elapsed();
    eprintln!(
        "MEASURED add-service: RPC {rpc_done:?}, first 200 through the proxy after {total:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_config_and_metrics() {
    let mut env = Env::start().await;
    assert_eq!(env.dp.admin_get("/healthz").await.status, 200);
    let b = Backend::start("m").await;
    let v = env.add(service("m", "/m", &[&b])).await;
    assert_eq!(env.dp.admin_get("/readyz").await.status, 200);
    let cfg = env.dp.admin_get("/config").await.json();
    assert_eq!(cfg["version"], v);
    assert_eq!(cfg["services"][0]["name"], "m");
    assert_eq!(cfg["services"][0]["endpoints"][0]["url"], b.url());
    for _ in 0..3 {
        assert_eq!(env.get("/m").await.status, 200);
    }
    assert_eq!(
        env.dp
            .metric("gw_requests_total{service=\"m\",code=\"200\"}")
            .await,
        Some(3.0)
    );
    assert_eq!(
        env.dp
            .metric("gw_request_duration_seconds_count{service=\"m\"}")
            .await,
        Some(3.0)
    );
    assert_eq!(env.dp.metric("gw_config_version").await, Some(v as f64));
    assert_eq!(env.dp.metric("gw_control_plane_connected").await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changes_while_requests_are_in_flight_fail_none() {
    let mut env = Env::start().await;
    let backends = [
        Backend::start("c0").await,
        Backend::start("c1").await,
        Backend::start("c2").await,
    ];
    env.add(service("live", "/live", &[&backends[0]])).await;
    let proxy = env.dp.proxy;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut n = 0u32;
            // Some requests are slow, so they are in flight across an update.
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let delay = if n.is_multiple_of(5) { "30" } else { "0" };
                let r = Call::get(proxy, "/live/x")
                    .header("x-delay-ms", delay)
                    .send()
                    .await;
                assert_eq!(
                    r.status,
                    200,
                    "request {n} failed during config changes: {}",
                    r.text()
                );
                n += 1;
            }
            n
        }));
    }
    let mut admin = env.admin.clone();
    let mut last = 0;
    for i in 0..12 {
        // Alternate endpoint sets and unrelated services, so every kind of change happens.
        let eps: Vec<&Backend> = backends.iter().take(1 + i % 3).collect();
        last = update(&mut admin, service("live", "/live", &eps)).await;
        last = last.max(
            create(
                &mut admin,
                service(&format!("other-{i}"), &format!("/o{i}"), &eps),
            )
            .await,
        );
    }
    env.dp.wait_version(last).await;
    // Keep traffic going briefly on the final version too, then stop.
    let before = backends.iter().map(Backend::hits).sum::<u64>();
    eventually("traffic on the final config", || async {
        (backends.iter().map(Backend::hits).sum::<u64>() > before + 20).then_some(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut total = 0;
    for c in clients {
        total += c.await.unwrap();
    }
    assert!(total > 20, "only {total} requests were sent");
    assert!(
        backends[2].hits() > 0,
        "the last config (three endpoints) was used"
    );
}
