//! `gwctl stats --consumer NAME` end to end: a real control plane and a real data plane (both
//! in-process), key-authenticated requests by two consumers, and the figures the data plane
//! reported, as gwctl shows them. Prometheus gets no series per consumer.

use std::time::Duration;

use bytes::Bytes;
use gw_testkit::backend::Backend;
use gw_testkit::eventually;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::support::{ControlPlane, Run, gwctl};

/// A data plane in this process, reporting often so the test waits little.
struct DataPlane {
    proxy: String,
    admin: String,
    node_id: String,
    stop: Option<oneshot::Sender<()>>,
}

impl DataPlane {
    async fn start(cp: &ControlPlane) -> Self {
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (proxy_addr, admin_addr) = (proxy.local_addr().unwrap(), admin.local_addr().unwrap());
        let node_id = format!("dp-{}", proxy_addr.port());
        let mut config = gw_data_plane::Config::new(&cp.url, node_id.clone());
        config.stats_interval = Duration::from_millis(100);
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = gw_data_plane::Listeners {
            proxy,
            tls: None,
            admin,
        };
        tokio::spawn(async move {
            gw_data_plane::serve_with(config, listeners, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self {
            proxy: format!("http://{proxy_addr}"),
            admin: format!("http://{admin_addr}"),
            node_id,
            stop: Some(stop),
        }
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// GET `url` with `x-api-key: key` (if any): the status and body.
async fn get(
    client: &Client<HttpConnector, Empty<Bytes>>,
    url: &str,
    key: Option<&str>,
) -> (u16, String) {
    let mut req = http::Request::get(url);
    if let Some(key) = key {
        req = req.header("x-api-key", key);
    }
    let resp = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The key `gwctl consumer key add NAME` printed.
fn key_of(run: &Run) -> String {
    let text = run.ok();
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("gwk_"))
        .unwrap_or_else(|| panic!("no key in: {text}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_by_consumer_show_each_consumers_requests_from_the_reports() {
    let cp = ControlPlane::start().await;
    let backend = Backend::start("b").await;
    let url = backend.url();
    let add = [
        "service",
        "add",
        "api",
        "--prefix",
        "/api",
        "--endpoint",
        &url,
        "--auth",
        "key",
    ];
    gwctl(&cp, &add).await.ok();
    for name in ["alice", "bob", "carol"] {
        gwctl(&cp, &["consumer", "add", name]).await.ok();
    }
    let alice = key_of(&gwctl(&cp, &["consumer", "key", "add", "alice"]).await);
    let bob = key_of(&gwctl(&cp, &["consumer", "key", "add", "bob"]).await);

    let dp = DataPlane::start(&cp).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let api = format!("{}/api/x", dp.proxy);
    // Until the config arrives the proxy answers 503; a 401 without a key means it is in
    // force (the consumers and keys came in the same version as the service).
    eventually("the data plane serves the keyed service", || async {
        (get(&client, &api, None).await.0 == 401).then_some(())
    })
    .await;
    for (key, times) in [(&alice, 3), (&bob, 2)] {
        for _ in 0..times {
            let (status, body) = get(&client, &api, Some(key)).await;
            assert_eq!(status, 200, "{body}");
        }
    }
    // A wrong key is nobody's traffic.
    let wrong = get(
        &client,
        &api,
        Some("gwk_0000000000000000000000000000000000000000000000"),
    )
    .await;
    assert_eq!(wrong.0, 401);

    let json = eventually(
        "gwctl stats --consumer alice shows her 3 requests",
        || async {
            let json = gwctl(&cp, &["-o", "json", "stats", "--consumer", "alice"])
                .await
                .json();
            (json["total"]["requests"] == 3).then_some(json)
        },
    )
    .await;
    assert_eq!(json["consumer"], "alice");
    assert_eq!(json["total"]["responses_2xx"], 3, "{json}");
    assert_eq!(json["total"]["rate_limited"], 0, "{json}");
    assert_eq!(json["lagging_nodes"], 0, "{json}");
    let nodes = json["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{json}");
    assert_eq!(nodes[0]["node_id"], dp.node_id.as_str());
    assert_eq!(nodes[0]["connected"], true);
    assert_eq!(nodes[0]["figures"]["requests"], 3);

    // Bob's own figures (his requests came after alice's: maybe in a later report).
    let bob_json = eventually(
        "gwctl stats --consumer bob shows his 2 requests",
        || async {
            let json = gwctl(&cp, &["-o", "json", "stats", "--consumer", "bob"])
                .await
                .json();
            (json["total"]["requests"] == 2).then_some(json)
        },
    )
    .await;
    assert_eq!(bob_json["total"]["responses_2xx"], 2, "{bob_json}");

    // The table: the total, then the node.
    let table = gwctl(&cp, &["stats", "--consumer", "alice"]).await;
    let lines: Vec<Vec<&str>> = table
        .ok()
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["CONSUMER", "REQUESTS", "2XX", "4XX", "5XX", "LIMITED"]
    );
    assert_eq!(lines[1], ["alice", "3", "3", "0", "0", "0"]);
    assert_eq!(lines[2], [dp.node_id.as_str(), "3", "3", "0", "0", "0"]);
    assert_eq!(lines.len(), 3, "{}", table.stdout);

    // A consumer without traffic: zeros, no node rows.
    let carol = gwctl(&cp, &["-o", "json", "stats", "--consumer", "carol"])
        .await
        .json();
    assert_eq!(carol["total"]["requests"], 0, "{carol}");
    assert_eq!(carol["nodes"], serde_json::json!([]), "{carol}");

    // An unknown consumer is a one-line error naming it; so is a malformed name.
    let unknown = gwctl(&cp, &["stats", "--consumer", "dave"]).await;
    let line = unknown.error_line();
    assert!(line.contains("consumer 'dave' does not exist"), "{line}");
    let bad = gwctl(&cp, &["stats", "--consumer", "Dave"]).await;
    assert!(bad.error_line().contains("consumer:"), "{}", bad.stderr);
    // A service and a consumer together make no sense: clap says so (exit 2).
    let both = gwctl(&cp, &["stats", "api", "--consumer", "alice"]).await;
    assert_eq!(both.code, Some(2), "{}", both.stderr);

    // Prometheus has no series per consumer.
    let (status, metrics) = get(&client, &format!("{}/metrics", dp.admin), None).await;
    assert_eq!(status, 200);
    assert!(metrics.contains("gw_auth"), "auth metrics exist: {metrics}");
    for name in ["alice", "bob"] {
        assert!(!metrics.contains(name), "{name} in /metrics:\n{metrics}");
    }
    // The rest of `gwctl stats` is unchanged by consumers: the service counts every request
    // (the 401 that said the config was in force, 5 keyed ones, the wrong key).
    let all = eventually("gwctl stats shows the service's 7 requests", || async {
        let json = gwctl(&cp, &["-o", "json", "stats"]).await.json();
        (json["services"][0]["total"]["requests"] == 7).then_some(json)
    })
    .await;
    assert!(all.get("consumer").is_none(), "{all}");
}
