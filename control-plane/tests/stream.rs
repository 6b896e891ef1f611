//! The config stream: snapshot on connect, prompt pushes, ACK/NACK in ListNodes, shutdown
//! with open streams.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{ControlPlane, service, snapshot};
use tonic::Code;

/// The bound for a pushed update.
const PUSH_BOUND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn node_gets_full_config_then_pushed_update_and_acks_show_in_list_nodes() {
    let cp = ControlPlane::start().await;
    let mut admin = cp.admin().await;
    admin.create(service("one", "/one")).await.unwrap();
    let v1 = admin
        .create(service("two", "/two"))
        .await
        .unwrap()
        .config_version;

    let mut node = cp.node("dp-1", 0).await;
    let first = node.next().await;
    assert_eq!(first.version, v1);
    let names: Vec<_> = snapshot(&first)
        .services
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["one", "two"]);
    node.ack(v1).await;
    admin
        .wait_node("dp-1", "ack of the snapshot in ListNodes", |n| {
            n.acked_version == v1
        })
        .await;

    let v2 = admin
        .create(service("three", "/three"))
        .await
        .unwrap()
        .config_version;
    let pushed = node.next_within(PUSH_BOUND).await;
    assert_eq!(pushed.version, v2);
    assert_eq!(snapshot(&pushed).services.len(), 3);
    node.ack(v2).await;
    let n = admin
        .wait_node("dp-1", "ack of the pushed update", |n| {
            n.acked_version == v2
        })
        .await;
    assert!(n.connected);
    assert_eq!(n.sent_version, v2);
    assert_eq!(n.listen_address, "127.0.0.1:8080");
    assert_eq!(n.admin_address, "127.0.0.1:9901");
    assert_eq!(n.build_version, "test");
    assert!(
        n.peer_address.starts_with("127.0.0.1:"),
        "{}",
        n.peer_address
    );
    assert!(n.connected_since.is_some() && n.last_seen.is_some());
}

#[tokio::test]
async fn nack_is_recorded_with_its_error() {
    let cp = ControlPlane::start().await;
    let mut admin = cp.admin().await;
    let v = admin
        .create(service("one", "/one"))
        .await
        .unwrap()
        .config_version;
    let mut node = cp.node("dp-nack", 0).await;
    assert_eq!(node.next().await.version, v);
    node.nack(v, "endpoint http://127.0.0.1:9 refused by policy")
        .await;
    let n = admin
        .wait_node("dp-nack", "NACK in ListNodes", |n| n.last_nack_version == v)
        .await;
    assert_eq!(
        n.last_nack_error,
        "endpoint http://127.0.0.1:9 refused by policy"
    );
    assert_eq!(n.acked_version, 0);
}

#[tokio::test]
async fn node_at_current_version_gets_nothing_until_the_next_change() {
    let cp = ControlPlane::start().await;
    let mut admin = cp.admin().await;
    let v = admin
        .create(service("one", "/one"))
        .await
        .unwrap()
        .config_version;
    let mut node = cp.node("dp-current", v).await;
    // Prove the stream is registered before the next write, so "nothing was sent" is real.
    admin
        .wait_node("dp-current", "node registered", |n| n.connected)
        .await;
    let v2 = admin
        .create(service("two", "/two"))
        .await
        .unwrap()
        .config_version;
    let first = node.next_within(PUSH_BOUND).await;
    assert_eq!(
        first.version, v2,
        "the first message is the new version, not the one it had"
    );
}

#[tokio::test]
async fn disconnect_shows_connected_false() {
    let cp = ControlPlane::start().await;
    let mut admin = cp.admin().await;
    let node = cp.node("dp-gone", 0).await;
    admin
        .wait_node("dp-gone", "node connected", |n| n.connected)
        .await;
    drop(node);
    admin
        .wait_node("dp-gone", "node shown disconnected", |n| !n.connected)
        .await;
    assert_eq!(
        admin.nodes().await.nodes.len(),
        1,
        "a disconnected node is kept, not dropped"
    );
}

#[tokio::test]
async fn shutdown_completes_with_an_open_stream_and_restart_on_the_same_port_works() {
    let cp = ControlPlane::start().await;
    let mut admin = cp.admin().await;
    let v = admin
        .create(service("one", "/one"))
        .await
        .unwrap()
        .config_version;
    let mut node = cp.node("dp-forever", 0).await;
    assert_eq!(node.next().await.version, v);
    let addr = cp.addr;

    // The node keeps its stream open; stop must still return, and the stream must end.
    let cp = tokio::time::timeout(gw_testkit::DEFAULT_DEADLINE, cp.restart())
        .await
        .expect("shutdown hung on an open config stream");
    assert_eq!(cp.addr, addr);
    let ended = tokio::time::timeout(gw_testkit::DEFAULT_DEADLINE, node.inbound.message())
        .await
        .expect("stream not ended by shutdown");
    match ended {
        Ok(None) => {}
        Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        Ok(Some(m)) => panic!("unexpected message after shutdown: {m:?}"),
    }

    // The restarted control plane serves the same config on the same port.
    let mut node = cp.node("dp-forever", 0).await;
    assert_eq!(node.next().await.version, v);
    let mut admin = cp.admin().await;
    assert_eq!(admin.list().await.services.len(), 1);
}

#[tokio::test]
async fn first_message_must_be_a_valid_hello() {
    use gw_proto::v1 as pb;
    use gw_proto::v1::config_discovery_service_client::ConfigDiscoveryServiceClient;

    let cp = ControlPlane::start().await;
    let mut client = ConfigDiscoveryServiceClient::new(cp.channel().await);
    let ack = pb::DiscoveryRequest {
        kind: Some(pb::discovery_request::Kind::Ack(pb::ConfigAck {
            version: 1,
        })),
    };
    let mut s = client
        .stream_config(tokio_stream::iter(vec![ack]))
        .await
        .unwrap()
        .into_inner();
    let err = s.message().await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("hello"), "{}", err.message());

    let bad = common::hello("bad\nid", 0);
    let mut s = client
        .stream_config(tokio_stream::iter(vec![bad]))
        .await
        .unwrap()
        .into_inner();
    let err = s.message().await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("hello.node_id:"),
        "{}",
        err.message()
    );
}
