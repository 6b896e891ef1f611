//! `gwctl nodes` with a data plane's config stream opened by the test itself.

use gw_proto::v1 as pb;
use gw_testkit::eventually;

use crate::support::{ControlPlane, FakeNode, gwctl};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_shows_a_connected_node_and_its_ack() {
    let cp = ControlPlane::start().await;
    // Something to send: a node at version 0 gets nothing until there is a version.
    gwctl(&cp, &["service", "add", "demo", "--prefix", "/api"])
        .await
        .ok();

    let mut dp = FakeNode::connect(&cp, "dp-test").await;
    let version = dp.version;

    let node = eventually("gwctl nodes shows the ack", || async {
        let json = gwctl(&cp, &["-o", "json", "nodes"]).await.json();
        let node = json["nodes"][0].clone();
        (node["acked_version"].as_u64() == Some(version)).then_some(node)
    })
    .await;
    assert_eq!(node["node_id"], "dp-test");
    assert_eq!(node["connected"], true);
    assert_eq!(node["in_sync"], true);
    assert_eq!(node["listen_address"], "127.0.0.1:8080");
    assert_eq!(node["admin_address"], "127.0.0.1:9901");
    assert_eq!(node["build_version"], "test");
    assert_eq!(node["sent_version"].as_u64(), Some(version));
    assert_eq!(node["last_nack_error"], serde_json::Value::Null);
    assert!(node["connected_since"].as_str().unwrap().ends_with('Z'));

    let out = gwctl(&cp, &["nodes"]).await;
    let table = out.ok();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("NODE     STATE    LISTEN"), "{table}");
    assert!(
        lines[1].starts_with(&format!(
            "dp-test  in-sync  127.0.0.1:8080  {version}/{version}"
        )),
        "{table}"
    );

    // A NACK shows with its reason once the node rejects a newer version.
    gwctl(&cp, &["service", "add", "other", "--prefix", "/other"])
        .await
        .ok();
    let next = dp.responses.message().await.unwrap().unwrap();
    dp.send(pb::discovery_request::Kind::Nack(pb::ConfigNack {
        version: next.version,
        error: "cannot bind".into(),
    }))
    .await;
    let node = eventually("gwctl nodes shows the nack", || async {
        let json = gwctl(&cp, &["-o", "json", "nodes"]).await.json();
        let node = json["nodes"][0].clone();
        (node["last_nack_version"].as_u64() == Some(next.version)).then_some(node)
    })
    .await;
    assert_eq!(node["last_nack_error"], "cannot bind");
    assert_eq!(node["in_sync"], false);
    let out = gwctl(&cp, &["nodes"]).await;
    assert!(
        out.ok()
            .contains(&format!("v{}: cannot bind", next.version)),
        "{}",
        out.stdout
    );

    // Closing the stream: the node stays listed, as disconnected.
    drop(dp);
    eventually("gwctl nodes shows the node disconnected", || async {
        let json = gwctl(&cp, &["-o", "json", "nodes"]).await.json();
        (json["nodes"][0]["connected"] == false).then_some(())
    })
    .await;
    let out = gwctl(&cp, &["nodes"]).await;
    // Piped, the problem carries the plain marker and no colour.
    let table = out.ok();
    assert!(table.contains("dp-test  ! disconnected"), "{table}");
    assert!(!table.contains('\x1b'), "{table}");
}
