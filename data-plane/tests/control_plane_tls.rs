//! A data plane talking to a control plane over TLS: mTLS with a client certificate whose DNS
//! name is the node id, or the node token; and a client certificate rotated on disk, which
//! the node picks up by reconnecting. Certificates come from a CA made in the test.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::{Backend, DataPlane, eventually, logs, service};
use gw_control_plane::Secret;
use gw_control_plane::tls::TlsFiles;
use gw_data_plane::config::sync::Credentials;
use gw_proto::v1 as pb;
use gw_proto::v1::admin_service_client::AdminServiceClient;
use gw_testkit::tls::{Ca, Pair};
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const ADMIN: &str = "admin-s3cret";
const NODE_TOKEN: &str = "node-s3cret";

/// Starts a control plane with TLS, client certificates from `ca` (the bundle
/// `dir/client-ca.pem`, re-read every 50 ms) and the node token; returns its address.
async fn control_plane(ca: &Ca, dir: &Path) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (cert, key) = ca.server(&["localhost"]).write(dir, "cp");
    let mut config =
        gw_control_plane::Config::new(format!("sqlite://{}", dir.join("gw.db").display()));
    config.admin_token = Some(Secret::new(ADMIN));
    config.node_token = Some(Secret::new(NODE_TOKEN));
    config.tls = Some(TlsFiles {
        cert,
        key,
        client_ca: vec![ca.write(dir, "client-ca")],
    });
    config.tls_reload_interval = std::time::Duration::from_millis(50);
    tokio::spawn(gw_control_plane::serve(
        config,
        listener,
        std::future::pending(),
    ));
    addr
}

async fn admin(ca: &Ca, addr: SocketAddr) -> AdminServiceClient<Channel> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.cert_pem()))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://127.0.0.1:{}", addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    AdminServiceClient::new(channel)
}

/// Whether the control plane lets in a client presenting `pair` (one call: with TLS 1.3 the
/// verdict on a client certificate arrives after the handshake).
async fn lets_in(ca: &Ca, addr: SocketAddr, pair: &Pair) -> bool {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.cert_pem()))
        .identity(Identity::from_pem(&pair.cert, &pair.key))
        .domain_name("localhost");
    let Ok(channel) = Endpoint::from_shared(format!("https://127.0.0.1:{}", addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
    else {
        return false;
    };
    AdminServiceClient::new(channel)
        .list_nodes(authorized(pb::ListNodesRequest {}))
        .await
        .is_ok()
}

fn authorized<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {ADMIN}").parse().unwrap());
    r
}

async fn add(admin: &mut AdminServiceClient<Channel>, svc: pb::Service) -> u64 {
    admin
        .create_service(authorized(pb::CreateServiceRequest { service: Some(svc) }))
        .await
        .unwrap()
        .into_inner()
        .config_version
}

async fn node(admin: &AdminServiceClient<Channel>, id: &str) -> Option<pb::Node> {
    let mut admin = admin.clone();
    let nodes = admin
        .list_nodes(authorized(pb::ListNodesRequest {}))
        .await
        .ok()?
        .into_inner()
        .nodes;
    nodes.into_iter().find(|n| n.node_id == id && n.connected)
}

#[tokio::test]
async fn a_node_with_a_client_certificate_gets_its_config_over_mtls() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("fleet CA");
    let addr = control_plane(&ca, dir.path()).await;
    let mut admin = admin(&ca, addr).await;
    let backend = Backend::start("b1").await;
    let version = add(&mut admin, service("web", "/web", &[&backend])).await;

    let (cert, key) = ca.client("dp-1").write(dir.path(), "dp-1");
    let dp = DataPlane::start(&format!("https://localhost:{}", addr.port()), |c| {
        c.node_id = "dp-1".into();
        c.credentials = Credentials {
            ca_cert: Some(ca.write(dir.path(), "ca")),
            client_cert: Some(cert.clone()),
            client_key: Some(key.clone()),
            node_token: None,
        };
    })
    .await;
    dp.wait_version(version).await;
    let reply = common::Call::get(dp.proxy, "/web/x").send().await;
    assert_eq!(reply.status, 200);
    let first = node(&admin, "dp-1").await.unwrap();

    // A new client certificate on disk: the node reconnects with it.
    let renewed = ca.client("dp-1");
    std::fs::write(&key, &renewed.key).unwrap();
    std::fs::write(&cert, &renewed.cert).unwrap();
    eventually(
        "the node to reconnect with its renewed certificate",
        || async {
            let now = node(&admin, "dp-1").await?;
            (now.connected_since != first.connected_since).then_some(())
        },
    )
    .await;
    let version = add(&mut admin, service("api", "/api", &[&backend])).await;
    dp.wait_version(version).await;
}

#[tokio::test]
async fn a_node_with_the_node_token_gets_its_config_over_tls() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("fleet CA");
    let addr = control_plane(&ca, dir.path()).await;
    let mut admin = admin(&ca, addr).await;
    let backend = Backend::start("b1").await;
    let version = add(&mut admin, service("web", "/web", &[&backend])).await;
    let dp = DataPlane::start(&format!("https://localhost:{}", addr.port()), |c| {
        c.node_id = "dp-token".into();
        c.credentials = Credentials {
            ca_cert: Some(ca.write(dir.path(), "ca")),
            node_token: Some(Secret::new(NODE_TOKEN)),
            ..Default::default()
        };
    })
    .await;
    dp.wait_version(version).await;
    assert!(node(&admin, "dp-token").await.is_some());
    // Without a credential, a node is never let in (and serves nothing).
    let stranger = DataPlane::start(&format!("https://localhost:{}", addr.port()), |c| {
        c.node_id = "dp-none".into();
        c.credentials = Credentials {
            ca_cert: Some(ca.write(dir.path(), "ca")),
            ..Default::default()
        };
    })
    .await;
    // The connected node sees a new version; by then the stranger has tried and failed.
    let version = add(&mut admin, service("api", "/api", &[&backend])).await;
    dp.wait_version(version).await;
    assert_eq!(stranger.version().await, 0);
    assert!(node(&admin, "dp-none").await.is_none());
}

#[tokio::test]
async fn a_client_ca_rotation_never_cuts_the_node_off_and_it_moves_to_its_new_certificate() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let old_ca = Ca::new("old fleet CA");
    let new_ca = Ca::new("new fleet CA");
    // The control plane's own certificate stays from the old CA throughout.
    let addr = control_plane(&old_ca, dir.path()).await;
    let mut admin = admin(&old_ca, addr).await;
    let backend = Backend::start("b1").await;
    let version = add(&mut admin, service("web", "/web", &[&backend])).await;

    let old_cert = old_ca.client("dp-r");
    let (cert, key) = old_cert.write(dir.path(), "dp-r");
    let trust = old_ca.write(dir.path(), "trust");
    let dp = DataPlane::start(&format!("https://localhost:{}", addr.port()), |c| {
        c.node_id = "dp-r".into();
        c.credentials = Credentials {
            ca_cert: Some(trust.clone()),
            client_cert: Some(cert.clone()),
            client_key: Some(key.clone()),
            node_token: None,
        };
    })
    .await;
    dp.wait_version(version).await;
    let first = node(&admin, "dp-r").await.unwrap();

    // 1. Both CAs trusted: the node moves to a certificate from the new CA and is let in.
    let bundle = format!("{}{}", old_ca.cert_pem(), new_ca.cert_pem());
    std::fs::write(dir.path().join("client-ca.pem"), bundle).unwrap();
    let new_cert = new_ca.client("dp-r");
    eventually("the control plane to trust the new CA", || async {
        lets_in(&old_ca, addr, &new_cert).await.then_some(())
    })
    .await;
    // The old CA still works (nothing was removed yet).
    assert!(lets_in(&old_ca, addr, &old_cert).await);
    std::fs::write(&key, &new_cert.key).unwrap();
    std::fs::write(&cert, &new_cert.cert).unwrap();
    let second = eventually("the node to reconnect with its new certificate", || async {
        let now = node(&admin, "dp-r").await?;
        (now.connected_since != first.connected_since).then_some(now)
    })
    .await;

    // 2. The old CA removed: its certificates are refused from now on...
    std::fs::write(dir.path().join("client-ca.pem"), new_ca.cert_pem()).unwrap();
    eventually("the control plane to refuse the old CA", || async {
        (!lets_in(&old_ca, addr, &old_cert).await).then_some(())
    })
    .await;
    // ...and the node, made to reconnect (its trust file rewritten), gets back in: it
    // presents the new certificate, not the old one.
    std::fs::write(&trust, format!("{}\n", old_ca.cert_pem())).unwrap();
    eventually(
        "the node to reconnect after the old CA was removed",
        || async {
            let now = node(&admin, "dp-r").await?;
            (now.connected_since != second.connected_since).then_some(())
        },
    )
    .await;
    // It never stopped serving, and still takes new config versions.
    let reply = common::Call::get(dp.proxy, "/web/x").send().await;
    assert_eq!(reply.status, 200);
    let version = add(&mut admin, service("api", "/api", &[&backend])).await;
    dp.wait_version(version).await;
}
