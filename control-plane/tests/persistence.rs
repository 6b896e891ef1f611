//! Durability and concurrency: restarts keep everything, versions never go backwards, and
//! concurrent writers never see "database is locked".

#![allow(clippy::unwrap_used)]

mod common;

use common::{ControlPlane, policy, service};

#[tokio::test]
async fn services_policies_and_version_survive_a_restart() {
    let cp = ControlPlane::start().await;
    let mut admin = cp.admin().await;
    let mut api = service("api", "/api");
    api.endpoints = vec!["http://127.0.0.1:8001".into(), "http://[::1]:8002".into()];
    api.route.as_mut().unwrap().hosts = vec!["api.example".into()];
    api.route.as_mut().unwrap().strip_prefix = true;
    admin.create(api).await.unwrap();
    admin.create(service("web", "/web")).await.unwrap();
    admin.put_policy(policy("per-ip", "api")).await.unwrap();
    admin.delete("web").await.unwrap();
    let before_services = admin.list().await;
    let before_policies = admin.policies().await;
    assert_eq!(before_services.config_version, 4);

    let cp = cp.restart().await;
    let mut admin = cp.admin().await;
    let after_services = admin.list().await;
    assert_eq!(
        after_services, before_services,
        "services and version survive"
    );
    assert_eq!(admin.policies().await, before_policies);

    // The version continues from where it was, never backwards.
    let v = admin.add("new", "/new").await;
    assert_eq!(v, 5);
    let cp = cp.restart().await;
    assert_eq!(cp.admin().await.list().await.config_version, 5);
    // A node that reconnects with the version it had gets nothing stale.
    let mut node = cp.node("dp", 0).await;
    assert_eq!(node.next().await.version, 5);
}

#[tokio::test]
async fn fifty_concurrent_creates_all_succeed() {
    let cp = ControlPlane::start().await;
    let admin = cp.admin().await;
    let before = admin
        .client
        .clone()
        .list_services(gw_proto::v1::ListServicesRequest {})
        .await
        .unwrap()
        .into_inner()
        .config_version;
    let calls = (0..50).map(|i| {
        let mut client = admin.client.clone();
        async move {
            let req = gw_proto::v1::CreateServiceRequest {
                service: Some(service(&format!("svc-{i}"), &format!("/svc-{i}"))),
            };
            client.create_service(req).await
        }
    });
    let started = std::time::Instant::now();
    let results = futures::future::join_all(calls).await;
    // Informational: 50 durable (synchronous = FULL) commits, serialised by the writer lock.
    println!("50 concurrent creates committed in {:?}", started.elapsed());
    let mut versions: Vec<u64> = results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|s| panic!("concurrent create failed: {s:?}"))
                .into_inner()
                .config_version
        })
        .collect();
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(versions.len(), 50, "every write got its own version");
    let mut admin = admin;
    let listed = admin.list().await;
    assert_eq!(listed.services.len(), 50);
    assert_eq!(
        listed.config_version,
        before + 50,
        "the version advanced by exactly 50"
    );
    assert_eq!(versions.last(), Some(&listed.config_version));
}

#[tokio::test]
async fn a_bare_path_database_is_created_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested-name.db");
    for round in 0..2u64 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = gw_control_plane::Config::new(path.display().to_string());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(gw_control_plane::serve(config, listener, async move {
            let _ = stopped.await;
        }));
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = gw_proto::v1::admin_service_client::AdminServiceClient::new(channel);
        let req = gw_proto::v1::CreateServiceRequest {
            service: Some(service(&format!("s{round}"), &format!("/s{round}"))),
        };
        assert_eq!(
            client
                .create_service(req)
                .await
                .unwrap()
                .into_inner()
                .config_version,
            round + 1
        );
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }
    assert!(path.exists());
}

#[tokio::test]
async fn an_unopenable_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/no/such/dir/gw.db", dir.path().display());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = gw_control_plane::Config::new(url.clone());
    let err = gw_control_plane::serve(config, listener, std::future::pending())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("cannot open database '{url}'")),
        "{msg}"
    );
}
