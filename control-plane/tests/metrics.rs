//! The control plane's `/metrics` (`--metrics-listen`): calls by method and status code with
//! latency, connected nodes, the config version, commit latency, `gw_build_info` and process
//! metrics; the page passes Prometheus's own `promtool check metrics`.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use gw_proto::v1 as pb;

/// The value of the series `series` (its exact name and labels) on `page`.
fn value(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_nodes_version_and_commits_are_counted_and_promtool_agrees() {
    let cp = ControlPlane::start().await;
    let mut admin = cp.admin().await;
    admin.create(service("web", "/web")).await.unwrap();
    let missing = admin
        .client
        .get_service(pb::GetServiceRequest {
            name: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let mut node = cp.node("n1", 0).await;
    node.next().await;

    let page = gw_testkit::eventually("the node counted as connected", || async {
        let page = cp.metrics_page().await;
        (value(&page, "gw_cp_connected_nodes") == Some(1.0)).then_some(page)
    })
    .await;
    gw_testkit::promtool::check_metrics(&page);
    let calls = |method: &str, code: &str| {
        value(
            &page,
            &format!(
                "gw_cp_rpc_duration_seconds_count{{method=\"/gateway.v1.AdminService/{method}\",code=\"{code}\"}}"
            ),
        )
    };
    assert_eq!(calls("CreateService", "OK"), Some(1.0), "{page}");
    assert_eq!(calls("GetService", "NOT_FOUND"), Some(1.0), "{page}");
    assert_eq!(value(&page, "gw_cp_config_version"), Some(1.0), "{page}");
    assert_eq!(
        value(&page, "gw_cp_store_commit_duration_seconds_count"),
        Some(1.0),
        "{page}"
    );
    let build = format!(
        "gw_build_info{{program=\"gw-control-plane\",version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&page, &build), Some(1.0), "{page}");
    for name in gw_ops::metrics::PROCESS_METRICS {
        assert!(
            value(&page, name).is_some_and(|v| v > 0.0),
            "{name}\n{page}"
        );
    }

    // The next change moves the version and the commit count; a node that hangs up is no
    // longer counted.
    admin.delete("web").await.unwrap();
    drop(node);
    let page = gw_testkit::eventually("the node counted as gone", || async {
        let page = cp.metrics_page().await;
        (value(&page, "gw_cp_connected_nodes") == Some(0.0)).then_some(page)
    })
    .await;
    assert_eq!(value(&page, "gw_cp_config_version"), Some(2.0), "{page}");
    assert_eq!(
        value(&page, "gw_cp_store_commit_duration_seconds_count"),
        Some(2.0),
        "{page}"
    );
    assert_eq!(
        value(
            &page,
            "gw_cp_rpc_duration_seconds_count{method=\"/gateway.v1.AdminService/DeleteService\",code=\"OK\"}"
        ),
        Some(1.0),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_one_series() {
    let cp = ControlPlane::start().await;
    // Raw HTTP/2 gRPC calls to methods nobody serves: each path must not become a series.
    let channel = cp.channel().await;
    for path in ["/x.Y/A", "/x.Y/B", "/z.Q/C"] {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let status = grpc
            .unary::<_, (), _>(
                tonic::Request::new(()),
                http::uri::PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::<(), ()>::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented, "{path}");
    }
    let page = cp.metrics_page().await;
    assert_eq!(
        value(
            &page,
            "gw_cp_rpc_duration_seconds_count{method=\"unknown\",code=\"UNIMPLEMENTED\"}"
        ),
        Some(3.0),
        "{page}"
    );
    assert!(!page.contains("x.Y") && !page.contains("z.Q"), "{page}");
}
