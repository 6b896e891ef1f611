//! Surviving the control plane: no config (503 everywhere), NACK of a bad version with the old
//! one serving, control-plane restart with routing uninterrupted, and a data-plane restart
//! served from its cache while the control plane is down.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use gw_proto::v1 as pb;
use gw_proto::v1::config_discovery_service_server::{
    ConfigDiscoveryService, ConfigDiscoveryServiceServer,
};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc};
use tokio_stream::wrappers::ReceiverStream;

/// A closed port: a control plane that is down.
async fn nowhere() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_any_config_every_route_is_503_and_not_ready() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("none.cache");
    let dp = DataPlane::start(&nowhere().await, |c| c.cache_file = Some(cache)).await;
    for path in ["/", "/api/x", "/anything?q=1"] {
        let r = Call::get(dp.proxy, path).send().await;
        assert_eq!(r.status, 503, "{path}");
        assert_eq!(r.json()["error"], "no_config");
    }
    assert_eq!(dp.admin_get("/readyz").await.status, 503);
    assert_eq!(dp.admin_get("/healthz").await.status, 200);
    assert_eq!(dp.metric("gw_no_config_total").await, Some(3.0));
    assert_eq!(dp.metric("gw_control_plane_connected").await, Some(0.0));
}

/// A config-discovery server that sends what the test pushes and reports what the node says.
struct Fake {
    stream: Mutex<Option<(Responses, mpsc::UnboundedSender<pb::DiscoveryRequest>)>>,
}

type Responses = mpsc::Receiver<Result<pb::DiscoveryResponse, tonic::Status>>;

#[tonic::async_trait]
impl ConfigDiscoveryService for Fake {
    type StreamConfigStream = ReceiverStream<Result<pb::DiscoveryResponse, tonic::Status>>;

    async fn stream_config(
        &self,
        request: tonic::Request<tonic::Streaming<pb::DiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::StreamConfigStream>, tonic::Status> {
        let Some((responses, seen)) = self.stream.lock().await.take() else {
            return Err(tonic::Status::unavailable("one stream only"));
        };
        let mut inbound = request.into_inner();
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                let _ = seen.send(m);
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(responses)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_version_is_nacked_and_the_previous_one_keeps_serving() {
    logs();
    let b = Backend::start("b").await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (to_node, responses) = mpsc::channel(4);
    let (seen, mut from_node) = mpsc::unbounded_channel();
    let fake = Fake {
        stream: Mutex::new(Some((responses, seen))),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ConfigDiscoveryServiceServer::new(fake))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let dp = DataPlane::start(&url, |_| {}).await;
    let mut next = async || {
        loop {
            let kind = tokio::time::timeout(gw_testkit::DEFAULT_DEADLINE, from_node.recv())
                .await
                .unwrap()
                .unwrap()
                .kind
                .unwrap();
            // Health and stats reports interleave with the protocol; this test is about the
            // protocol, so it skips them.
            if !matches!(
                kind,
                pb::discovery_request::Kind::Health(_) | pb::discovery_request::Kind::Stats(_)
            ) {
                break kind;
            }
        }
    };
    assert!(matches!(
        next().await,
        pb::discovery_request::Kind::Hello(_)
    ));

    let good = pb::ConfigSnapshot {
        certificates: vec![],
        consumers: vec![],
        services: vec![service("s", "/", &[&b])],
        policies: vec![],
    };
    let send = |version, snapshot| {
        to_node.send(Ok(pb::DiscoveryResponse {
            epoch: 0,
            version,
            kind: Some(pb::discovery_response::Kind::Snapshot(snapshot)),
        }))
    };
    send(1, good.clone()).await.unwrap();
    assert_eq!(
        next().await,
        pb::discovery_request::Kind::Ack(pb::ConfigAck { version: 1 })
    );
    assert_eq!(Call::get(dp.proxy, "/x").send().await.status, 200);

    // Invalid in ways a control plane should never send, each caught by the data plane.
    let bad_endpoint = {
        let mut s = good.clone();
        s.services[0].endpoints.push("ftp://127.0.0.1:21".into());
        s.services.push(service("t", "/t", &[&b]));
        s
    };
    let bad_policy = {
        let mut s = good.clone();
        s.policies.push(pb::Policy {
            key: Some(pb::RateLimitKey {
                source: Some(pb::rate_limit_key::Source::Header("bad header".into())),
            }),
            ..ip_policy("p", "s", 5, 60)
        });
        s
    };
    let duplicate_route = {
        let mut s = good.clone();
        s.services.push(service("u", "/", &[&b]));
        s
    };
    for (version, snapshot, reason_mentions) in [
        (2, bad_endpoint, "service 's': endpoints[1]"),
        (3, bad_policy, "policy 'p': key.header"),
        (4, duplicate_route, "path_prefix '/'"),
    ] {
        send(version, snapshot).await.unwrap();
        match next().await {
            pb::discovery_request::Kind::Nack(n) => {
                assert_eq!(n.version, version);
                assert!(n.error.contains(reason_mentions), "{}", n.error);
            }
            other => panic!("expected a NACK of {version}, got {other:?}"),
        }
        // The previous config is untouched and serving.
        let r = Call::get(dp.proxy, "/t").send().await;
        assert_eq!((r.status.as_u16(), r.header("x-backend")), (200, Some("b")));
        assert_eq!(dp.version().await, 1);
    }
    assert_eq!(dp.metric("gw_config_rejected_total").await, Some(3.0));
    assert_eq!(dp.admin_get("/readyz").await.status, 200);
    assert!(
        dp.admin_get("/config").await.json()["policies"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_restart_leaves_routing_uninterrupted_and_later_changes_arrive() {
    let mut env = Env::start().await;
    let b = Backend::start("b").await;
    env.add(service("s", "/", &[&b])).await;

    // Traffic runs throughout the outage; every request must succeed.
    let proxy = env.dp.proxy;
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let r = Call::get(proxy, "/x").send().await;
                assert_eq!(r.status, 200, "request {n} during the outage: {}", r.text());
                n += 1;
            }
            n
        })
    };
    env.cp.stop().await;
    eventually("data plane sees the control plane gone", || async {
        (env.dp.metric("gw_control_plane_connected").await == Some(0.0)).then_some(())
    })
    .await;
    let during = b.hits();
    eventually("traffic served while the control plane is down", || async {
        (b.hits() > during + 10).then_some(())
    })
    .await;
    env.cp.restart().await;
    eventually("data plane reconnected", || async {
        (env.dp.metric("gw_control_plane_connected").await == Some(1.0)).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    assert!(traffic.await.unwrap() > 10);

    // A change made after the restart reaches the data plane.
    let mut admin = env.cp.admin().await;
    let fresh = Backend::start("fresh").await;
    let v = create(&mut admin, service("fresh", "/fresh", &[&fresh])).await;
    env.dp.wait_version(v).await;
    let r = env.get("/fresh/x").await;
    assert_eq!(r.header("x-backend"), Some("fresh"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_plane_restarted_while_the_control_plane_is_down_serves_from_its_cache() {
    let mut env = Env::start().await;
    let b = Backend::start("b").await;
    let mut s = service("s", "/api", &[&b]);
    s.route.as_mut().unwrap().strip_prefix = true;
    let v = env.add(s).await;
    let v = v.max(put_policy(&mut env.admin, ip_policy("p", "s", 2, 60)).await);
    env.dp.wait_version(v).await;
    let cache = env.dir.path().join("dp.cache");
    eventually("cache written", || async { cache.exists().then_some(()) }).await;

    env.dp.stop().await;
    env.cp.stop().await;
    let cp_url = env.cp.url();
    let dp = DataPlane::start(&cp_url, |c| c.cache_file = Some(cache.clone())).await;
    assert_eq!(dp.admin_get("/readyz").await.status, 200);
    assert_eq!(dp.version().await, v);
    assert_eq!(dp.metric("gw_control_plane_connected").await, Some(0.0));
    let r = Call::get(dp.proxy, "/api/y?z=1").send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-path"), Some("/y?z=1"));
    // The cached policy is in force too.
    assert_eq!(Call::get(dp.proxy, "/api").send().await.status, 200);
    assert_eq!(Call::get(dp.proxy, "/api").send().await.status, 429);
}
