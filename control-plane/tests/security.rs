//! Who may call what (README, "Running it across machines"): TLS on the listener, node
//! credentials on the config stream (client certificates whose DNS names are the node ids, or
//! the node token over TLS), the admin token on AdminService, and rotation without a restart.
//! Certificates come from a CA made in the test.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{ControlPlane, hello, snapshot};
use gw_control_plane::Secret;
use gw_control_plane::tls::TlsFiles;
use gw_proto::v1 as pb;
use gw_proto::v1::admin_service_client::AdminServiceClient;
use gw_proto::v1::config_discovery_service_client::ConfigDiscoveryServiceClient;
use gw_testkit::eventually;
use gw_testkit::tls::{Ca, Pair};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status, Streaming};

const ADMIN: &str = "admin-s3cret";
const NODE_TOKEN: &str = "node-s3cret";

/// A control plane with TLS (certificate from `ca`), client certificates from `ca`, the node
/// token and the admin token; credential files are re-read every 50 ms. It holds one service,
/// so a new node is sent a snapshot at once.
async fn secure(ca: &Ca) -> ControlPlane {
    let cp = ControlPlane::start_with(Some(ADMIN), |config, dir| {
        config.tls = Some(tls_files(ca, dir));
        config.node_token = Some(Secret::new(NODE_TOKEN));
        config.tls_reload_interval = Duration::from_millis(50);
    })
    .await;
    AdminServiceClient::new(channel(&cp, ca, None).await.unwrap())
        .create_service(with_token(
            pb::CreateServiceRequest {
                service: Some(common::service("secret-svc", "/s")),
            },
            ADMIN,
        ))
        .await
        .unwrap();
    cp
}

/// Whether a TLS connection trusting `trust` and presenting `identity` is accepted: with TLS
/// 1.3 the server's verdict on a client certificate arrives after the client's handshake
/// ends, so this makes one call (the open health check) to find out.
async fn accepted(cp: &ControlPlane, trust: &Ca, identity: Option<&Pair>) -> Option<Channel> {
    let channel = channel(cp, trust, identity).await.ok()?;
    tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .ok()?;
    Some(channel)
}

fn tls_files(ca: &Ca, dir: &Path) -> TlsFiles {
    let (cert, key) = ca.server(&["localhost", "127.0.0.1"]).write(dir, "cp");
    TlsFiles {
        cert,
        key,
        client_ca: vec![ca.write(dir, "client-ca")],
    }
}

/// A TLS channel trusting `trust`, presenting `identity` if given.
async fn channel(
    cp: &ControlPlane,
    trust: &Ca,
    identity: Option<&Pair>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(trust.cert_pem()))
        .domain_name("localhost");
    if let Some(pair) = identity {
        tls = tls.identity(Identity::from_pem(&pair.cert, &pair.key));
    }
    Endpoint::from_shared(format!("https://127.0.0.1:{}", cp.addr.port()))?
        .tls_config(tls)?
        .connect()
        .await
}

type Stream = (
    mpsc::Sender<pb::DiscoveryRequest>,
    Streaming<pb::DiscoveryResponse>,
);

/// Opens StreamConfig as `node_id`, with a bearer token if given; the first message is the
/// hello, so a stream refused after it fails on its first read.
async fn open(channel: Channel, node_id: &str, token: Option<&str>) -> Result<Stream, Status> {
    let (tx, rx) = mpsc::channel(16);
    tx.send(hello(node_id, 0)).await.unwrap();
    let mut request = Request::new(ReceiverStream::new(rx));
    if let Some(t) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let inbound = ConfigDiscoveryServiceClient::new(channel)
        .stream_config(request)
        .await?
        .into_inner();
    Ok((tx, inbound))
}

/// The first response of a stream that was let in.
async fn first(stream: &mut Stream) -> Result<pb::DiscoveryResponse, Status> {
    tokio::time::timeout(gw_testkit::DEFAULT_DEADLINE, stream.1.message())
        .await
        .expect("no answer in time")
        .map(|m| m.expect("stream ended without a message"))
}

fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut request = Request::new(msg);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

async fn nodes(channel: &Channel) -> Vec<pb::Node> {
    AdminServiceClient::new(channel.clone())
        .list_nodes(with_token(pb::ListNodesRequest {}, ADMIN))
        .await
        .unwrap()
        .into_inner()
        .nodes
}

#[tokio::test]
async fn peers_without_credentials_get_unauthenticated_and_learn_nothing() {
    let ca = Ca::new("fleet CA");
    let cp = secure(&ca).await;
    let anonymous = channel(&cp, &ca, None).await.unwrap();
    let mut admin = AdminServiceClient::new(anonymous.clone());

    // StreamConfig: no credential, a wrong token, the admin token: none opens it.
    for token in [None, Some("wrong"), Some(ADMIN)] {
        let status = open(anonymous.clone(), "dp-x", token).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{token:?}: {status:?}"
        );
        assert!(!status.message().contains("secret-svc"), "{status:?}");
    }
    // Reports sent on a refused stream are never recorded: 10^12 requests, and every
    // endpoint down.
    let (tx, rx) = mpsc::channel(4);
    tx.send(hello("dp-forged", 0)).await.unwrap();
    tx.send(pb::DiscoveryRequest {
        kind: Some(pb::discovery_request::Kind::Health(pb::HealthReport {
            full: true,
            endpoints: vec![pb::EndpointHealth {
                service: "secret-svc".into(),
                endpoint: "http://127.0.0.1:9".into(),
                healthy: false,
                last_failure: "forged".into(),
                ..Default::default()
            }],
        })),
    })
    .await
    .unwrap();
    tx.send(pb::DiscoveryRequest {
        kind: Some(pb::discovery_request::Kind::Stats(pb::StatsReport {
            services: vec![pb::ServiceCounters {
                service: "secret-svc".into(),
                figures: Some(pb::TrafficFigures {
                    requests: 1_000_000_000_000,
                    ..Default::default()
                }),
            }],
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let refused = ConfigDiscoveryServiceClient::new(anonymous.clone())
        .stream_config(ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    // AdminService without the admin token: no services, no node list; the node token does
    // not open it either.
    for token in [None, Some(NODE_TOKEN)] {
        let mut request = Request::new(pb::ListNodesRequest {});
        if let Some(t) = token {
            request = with_token(pb::ListNodesRequest {}, t);
        }
        let status = admin.list_nodes(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{token:?}");
        let status = admin
            .list_services(pb::ListServicesRequest {})
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    // With the admin token: nothing was recorded from the refused peers.
    assert!(nodes(&anonymous).await.is_empty());
    let stats = admin
        .get_stats(with_token(pb::GetStatsRequest::default(), ADMIN))
        .await
        .unwrap()
        .into_inner();
    let svc = &stats.services[0];
    assert_eq!(svc.service, "secret-svc");
    assert!(svc.nodes.is_empty(), "{svc:?}");
    assert_eq!(svc.total.as_ref().map_or(0, |t| t.requests), 0);
    let health = admin
        .get_health(with_token(pb::GetHealthRequest::default(), ADMIN))
        .await
        .unwrap()
        .into_inner();
    let endpoints = &health.services[0].endpoints;
    assert_eq!(endpoints.len(), 1, "{health:?}");
    assert_eq!(
        (endpoints[0].healthy_nodes, endpoints[0].unhealthy_nodes),
        (0, 0),
        "{health:?}"
    );

    // The health service stays open for probes.
    let mut health = tonic_health::pb::health_client::HealthClient::new(anonymous.clone());
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(serving.status, 1, "SERVING");

    // A client certificate from another CA does not even complete the handshake.
    let stranger = Ca::new("someone else").client("dp-x");
    assert!(accepted(&cp, &ca, Some(&stranger)).await.is_none());
    // Neither does a client that does not trust the control plane's CA.
    assert!(accepted(&cp, &Ca::new("other trust"), None).await.is_none());
}

#[tokio::test]
async fn a_node_is_only_the_node_its_certificate_names() {
    let ca = Ca::new("fleet CA");
    let cp = secure(&ca).await;
    let cert_a = ca.client("dp-a");
    let as_a = channel(&cp, &ca, Some(&cert_a)).await.unwrap();

    let mut claims_b = open(as_a.clone(), "dp-b", None).await.unwrap();
    let status = first(&mut claims_b).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("dp-a"), "{status:?}");
    assert!(nodes(&as_a).await.is_empty(), "dp-b was not registered");

    let mut a = open(as_a.clone(), "dp-a", None).await.unwrap();
    let config = first(&mut a).await.unwrap();
    snapshot(&config);
    let listed = nodes(&as_a).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].node_id.as_str(), listed[0].connected),
        ("dp-a", true)
    );

    // The node token lets a node in under any id, over TLS.
    let anonymous = channel(&cp, &ca, None).await.unwrap();
    let mut t = open(anonymous, "dp-token", Some(NODE_TOKEN)).await.unwrap();
    snapshot(&first(&mut t).await.unwrap());
}

#[tokio::test]
async fn a_reconnecting_node_replaces_its_earlier_stream() {
    let ca = Ca::new("fleet CA");
    let cp = secure(&ca).await;
    let cert = ca.client("dp-a");
    let mut old = open(channel(&cp, &ca, Some(&cert)).await.unwrap(), "dp-a", None)
        .await
        .unwrap();
    first(&mut old).await.unwrap();
    let as_a = channel(&cp, &ca, Some(&cert)).await.unwrap();
    let mut new = open(as_a.clone(), "dp-a", None).await.unwrap();
    first(&mut new).await.unwrap();

    let ended = tokio::time::timeout(gw_testkit::DEFAULT_DEADLINE, old.1.message())
        .await
        .expect("the earlier stream was not ended");
    assert_eq!(ended.unwrap_err().code(), Code::Aborted);
    let listed = nodes(&as_a).await;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].connected, "the new stream is the node's");
}

#[tokio::test]
async fn a_node_token_is_refused_over_plaintext() {
    // Loopback without TLS: allowed to start, but a token sent in the clear is refused.
    let cp = ControlPlane::start_with(None, |config, _| {
        config.node_token = Some(Secret::new(NODE_TOKEN));
    })
    .await;
    let status = open(cp.channel().await, "dp-a", Some(NODE_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("only over TLS"), "{status:?}");
    // And with a node credential configured, no credential is no entry either.
    let status = open(cp.channel().await, "dp-a", None).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn ten_thousand_unauthenticated_stream_attempts_leave_room_for_a_real_node() {
    let ca = Ca::new("fleet CA");
    let cp = secure(&ca).await;
    let anonymous = channel(&cp, &ca, None).await.unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let mut attempts = tokio::task::JoinSet::new();
    for i in 0..10_000 {
        let permit = gate.clone().acquire_owned().await.unwrap();
        let channel = anonymous.clone();
        attempts.spawn(async move {
            let _permit = permit;
            open(channel, &format!("fake-{i}"), None)
                .await
                .err()
                .map(|s| s.code())
        });
    }
    let mut refused = 0;
    while let Some(code) = attempts.join_next().await {
        assert_eq!(code.unwrap(), Some(Code::Unauthenticated));
        refused += 1;
    }
    assert_eq!(refused, 10_000);

    let cert = ca.client("dp-real");
    let real = channel(&cp, &ca, Some(&cert)).await.unwrap();
    let mut node = open(real.clone(), "dp-real", None).await.unwrap();
    snapshot(&first(&mut node).await.unwrap());
    let listed = nodes(&real).await;
    assert_eq!(listed.len(), 1, "only the real node is registered");
}

#[tokio::test]
async fn rotation_swaps_credentials_for_new_handshakes_and_the_old_ca_works_until_removed() {
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let cp = secure(&old_ca).await;
    let dir = cp.dir.path().to_owned();
    let old_node = old_ca.client("dp-old");
    let new_node = new_ca.client("dp-new");
    // A connection made before the rotation.
    let before = accepted(&cp, &old_ca, Some(&old_node)).await.unwrap();
    assert!(accepted(&cp, &old_ca, Some(&new_node)).await.is_none());

    // Both CAs in the bundle: nodes of either get in.
    let bundle = format!("{}{}", old_ca.cert_pem(), new_ca.cert_pem());
    std::fs::write(dir.join("client-ca.pem"), bundle).unwrap();
    let as_new = eventually("a node of the new CA to be let in", || async {
        accepted(&cp, &old_ca, Some(&new_node)).await
    })
    .await;
    snapshot(
        &first(&mut open(as_new, "dp-new", None).await.unwrap())
            .await
            .unwrap(),
    );
    let as_old = accepted(&cp, &old_ca, Some(&old_node)).await.unwrap();
    snapshot(
        &first(&mut open(as_old, "dp-old", None).await.unwrap())
            .await
            .unwrap(),
    );

    // The server certificate is replaced by one from the new CA: new handshakes see it...
    let (cert, key) = (dir.join("cp.pem"), dir.join("cp-key.pem"));
    let server = new_ca.server(&["localhost"]);
    // Key first, then certificate: in between the pair does not match and is not loaded.
    std::fs::write(&key, &server.key).unwrap();
    std::fs::write(&cert, &server.cert).unwrap();
    eventually(
        "new handshakes to present the new server certificate",
        || async { accepted(&cp, &new_ca, None).await },
    )
    .await;
    assert!(accepted(&cp, &old_ca, None).await.is_none());
    // ...and the connection made before keeps working.
    assert!(!nodes(&before).await.is_empty());

    // The old CA removed: its nodes no longer get in.
    std::fs::write(dir.join("client-ca.pem"), new_ca.cert_pem()).unwrap();
    eventually("nodes of the removed CA to be refused", || async {
        accepted(&cp, &new_ca, Some(&old_node))
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert!(accepted(&cp, &new_ca, Some(&new_node)).await.is_some());
}
