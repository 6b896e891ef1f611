//! Issue 9, item 6: a config the control plane accepts must not wedge a data plane. Large
//! configs keep the node connected, in sync and reporting; a slow DNS resolver never delays
//! the next config. (The raw-socket cases are in `hostile.rs`.)
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::*;
use gw_data_plane::upstream::dns::{DNS_CONCURRENCY, Resolver};
use gw_proto::v1 as pb;

/// A service of `n` endpoints with long host names (`http://<~165 chars>.test:80`, in labels
/// of 50), checked once an hour with one failure enough to mark an endpoint down.
fn big_service(name: &str, prefix: &str, n: usize) -> pb::Service {
    let label = "h".repeat(50);
    let long = format!("{label}.{label}.{label}");
    pb::Service {
        name: name.into(),
        route: Some(pb::Route {
            path_prefix: prefix.into(),
            hosts: vec![],
            strip_prefix: false,
        }),
        endpoints: (0..n)
            .map(|i| format!("http://{long}-{name}-{i}.test:80"))
            .collect(),
        health_check: Some(pb::HealthCheck {
            interval: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
            timeout: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            unhealthy_threshold: 1,
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn node(env: &mut Env) -> pb::Node {
    let nodes = env
        .admin
        .list_nodes(pb::ListNodesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(nodes.nodes.len(), 1);
    nodes.nodes.into_iter().next().unwrap()
}

/// 21 services of 1,000 endpoints (what the control plane accepts): the node's full health
/// view (21,000 entries with failure reasons, ~6 MB whole) used to exceed the control
/// plane's 4 MiB limit in one message, so the stream dropped and the node reconnected
/// forever. Now it stays connected, in sync, and its reports arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_21_by_1000_endpoint_config_keeps_the_node_connected_and_reporting() {
    let mut env = Env::start_with(|c| {
        c.stats_interval = Duration::from_millis(300);
        // Every name fails at once, with a reason of realistic length.
        c.resolver = Resolver::with_lookup(Arc::new(|host: &str| {
            Err(std::io::Error::other(format!(
                "failed to look up '{}': no such host (test resolver)",
                &host[..40]
            )))
        }));
    })
    .await;
    let first = eventually("the node connected", || {
        let mut admin = env.admin.clone();
        async move {
            let n = admin
                .list_nodes(pb::ListNodesRequest {})
                .await
                .ok()?
                .into_inner()
                .nodes
                .pop()?;
            n.connected.then_some(n)
        }
    })
    .await;
    let mut version = 0;
    for i in 0..21 {
        version = create(
            &mut env.admin,
            big_service(&format!("svc-{i:02}"), &format!("/s{i}"), 1000),
        )
        .await;
    }
    env.dp.wait_version(version).await;
    // The reports arrive: the first service's 1,000 endpoints are all seen down, each with
    // its reason (the control plane keeps 4,096 endpoints per node, in service order).
    eventually(
        "the health of 1,000 endpoints reached the control plane",
        || {
            let mut admin = env.admin.clone();
            async move {
                let h = admin
                    .get_health(pb::GetHealthRequest {
                        service: "svc-00".into(),
                    })
                    .await
                    .ok()?
                    .into_inner();
                let eps = &h.services.first()?.endpoints;
                (eps.len() == 1000
                    && eps
                        .iter()
                        .all(|e| e.unhealthy_nodes == 1 && e.last_failure.contains("no such host")))
                .then_some(())
            }
        },
    )
    .await;
    // Several more report rounds, on the same stream.
    let seen = node(&mut env).await.last_seen.unwrap();
    eventually("three more report rounds", || {
        let mut admin = env.admin.clone();
        async move {
            let n = admin
                .list_nodes(pb::ListNodesRequest {})
                .await
                .ok()?
                .into_inner()
                .nodes
                .pop()?;
            let last = n.last_seen?;
            (last.seconds > seen.seconds + 1).then_some(())
        }
    })
    .await;
    let now = node(&mut env).await;
    assert!(now.connected);
    assert_eq!(
        now.connected_since, first.connected_since,
        "the stream was never dropped"
    );
    assert_eq!(now.acked_version, version, "in sync");
}

/// Blocks every lookup until released (a DNS server that never answers), counting them.
struct DeadDns {
    started: AtomicUsize,
    released: Mutex<bool>,
    wake: Condvar,
}

impl DeadDns {
    fn lookup(&self) -> std::io::Result<Vec<std::net::SocketAddr>> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let mut released = self.released.lock().unwrap();
        while !*released {
            released = self.wake.wait(released).unwrap();
        }
        Err(std::io::Error::other("dns server did not answer"))
    }

    fn release(&self) {
        *self.released.lock().unwrap() = true;
        self.wake.notify_all();
    }
}

/// 600 endpoints whose names never resolve (their health checks all look them up at once)
/// do not delay the next config: lookups hold at most a few blocking threads, so config
/// application (which runs on the blocking pool too) is never queued behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolvable_endpoint_name_does_not_delay_the_next_config() {
    let dns = Arc::new(DeadDns {
        started: AtomicUsize::new(0),
        released: Mutex::new(false),
        wake: Condvar::new(),
    });
    let lookups = dns.clone();
    let mut env = Env::start_with(move |c| {
        c.resolver = Resolver::with_lookup(Arc::new(move |_host: &str| lookups.lookup()));
    })
    .await;
    env.add(big_service("dead", "/dead", 600)).await;
    eventually("the health checks are stuck in DNS", || async {
        (dns.started.load(Ordering::SeqCst) >= DNS_CONCURRENCY).then_some(())
    })
    .await;
    let b = Backend::start("b").await;
    env.add(service("live", "/live", &[&b])).await;
    assert_eq!(env.get("/live/x").await.status, 200);
    assert_eq!(
        dns.started.load(Ordering::SeqCst),
        DNS_CONCURRENCY,
        "no more lookups than the bound are in flight"
    );
    dns.release();
}
