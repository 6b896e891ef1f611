//! Health checks that fit the backend (issue 13), end to end through a real control plane:
//! without a health path the active check is a TCP connect, so a backend with no `/health`
//! keeps serving; a health path the backend answers with 404 ejects it; with active checks
//! disabled, passive ejection still applies and the endpoint is let back after the interval.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Backend, Env, eventually, service};
use gw_proto::v1 as pb;

/// Check interval the tests configure; the check timeout equals it (the most allowed), which
/// keeps healthy backends from timing out on a loaded machine.
const INTERVAL: Duration = Duration::from_millis(200);

fn health(path: &str, disabled: bool) -> Option<pb::HealthCheck> {
    let d = prost_types::Duration::try_from(INTERVAL).unwrap();
    Some(pb::HealthCheck {
        path: path.into(),
        interval: Some(d),
        timeout: Some(d),
        unhealthy_threshold: 1,
        healthy_threshold: 1,
        disabled,
    })
}

async fn healthy(env: &Env, service: &str, url: &str) -> Option<f64> {
    env.dp
        .metric(&format!(
            "gw_endpoint_healthy{{service=\"{service}\",endpoint=\"{url}\"}}"
        ))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_without_a_health_route_keeps_serving_under_the_default_tcp_check() {
    let mut env = Env::start().await;
    let backend = Backend::start_without_health("mock").await;
    let mut svc = service("mock", "/", &[&backend]);
    // Every health setting but the path: the default check, made fast and strict (one
    // failure would eject).
    svc.health_check = health("", false);
    env.add(svc).await;
    // Several check rounds later (each TCP check is one accepted connection)...
    let before = backend.connections();
    eventually("five TCP health checks", || async {
        (backend.connections() >= before + 5).then_some(())
    })
    .await;
    // ...the endpoint is still in rotation and serves, and nothing asked it for /health.
    assert_eq!(healthy(&env, "mock", &backend.url()).await, Some(1.0));
    let r = env.get("/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "mock");
    assert_eq!(backend.health_hits(), 0, "a TCP check sends no request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_path_the_backend_answers_with_404_ejects_it() {
    let mut env = Env::start().await;
    let backend = Backend::start_without_health("mock").await;
    let mut svc = service("mock", "/", &[&backend]);
    svc.health_check = health("/health", false);
    env.add(svc).await;
    eventually("the endpoint ejected by its 404 health check", || async {
        (healthy(&env, "mock", &backend.url()).await == Some(0.0)).then_some(())
    })
    .await;
    assert!(backend.health_hits() >= 1);
    let r = env.get("/x").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "no_endpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_checks_disabled_passive_ejection_applies_and_the_endpoint_comes_back() {
    let mut env = Env::start().await;
    let mut backend = Backend::start("b").await;
    let mut svc = service("b", "/", &[&backend]);
    svc.health_check = health("", true);
    env.add(svc).await;
    // A TCP-checked backend beside it is the clock: each of its connections is one interval.
    let clock = Backend::start("clock").await;
    let mut svc = service("clock", "/clock", &[&clock]);
    svc.health_check = health("", false);
    env.add(svc).await;
    let url = backend.url();
    let r = env.get("/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Down: the first failed request (threshold 1) ejects it.
    backend.stop().await;
    eventually("the stopped endpoint ejected by real traffic", || async {
        let r = env.get("/x").await;
        (r.status == 503 && healthy(&env, "b", &url).await == Some(0.0)).then_some(())
    })
    .await;
    // Up again: one interval later it is let back in, without any active check.
    backend.restart().await.unwrap();
    eventually("the endpoint let back after its ejection time", || async {
        let r = env.get("/x").await;
        (r.status == 200).then_some(())
    })
    .await;
    assert_eq!(healthy(&env, "b", &url).await, Some(1.0));
    // Five intervals without traffic: no probe connects to the endpoint.
    let (mine, ticks) = (backend.connections(), clock.connections());
    eventually("five TCP checks of the clock backend", || async {
        (clock.connections() >= ticks + 5).then_some(())
    })
    .await;
    assert_eq!(backend.connections(), mine, "an active check ran");
    assert_eq!(backend.health_hits(), 0, "an active check ran");
}
