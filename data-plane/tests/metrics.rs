//! The data plane's `/metrics` page passes Prometheus's own check (`promtool check metrics`)
//! with every kind of series present, and carries `gw_build_info` and the process metrics.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_carry_build_info_and_process_metrics() {
    let mut env = Env::start().await;
    let b = Backend::start("b").await;
    env.add(service("api", "/api", &[&b])).await;
    let v = put_policy(&mut env.admin, ip_policy("per-ip", "api", 1, 3600)).await;
    env.dp.wait_version(v).await;
    assert_eq!(env.get("/api/x").await.status, 200);
    assert_eq!(env.get("/api/x").await.status, 429);
    assert_eq!(env.get("/nothing").await.status, 404);

    let page = env.dp.admin_get("/metrics").await.text();
    gw_testkit::promtool::check_metrics(&page);
    let build = format!(
        "gw_build_info{{program=\"gw-data-plane\",version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(env.dp.metric(&build).await, Some(1.0), "{page}");
    for name in gw_ops::metrics::PROCESS_METRICS {
        let v = env.dp.metric(name).await;
        assert!(v.is_some_and(|v| v > 0.0), "{name}: {v:?}");
    }
    assert_eq!(
        env.dp
            .metric("gw_request_duration_seconds_count{service=\"api\"}")
            .await,
        Some(2.0)
    );
}
