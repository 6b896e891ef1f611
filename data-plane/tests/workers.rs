//! `--worker-threads 2` on the real binary (with `--listen 127.0.0.1:0`): each worker listens
//! on a socket of its own on the one port, both accept and serve
//! (`gw_worker_connections_total`), and on SIGTERM every worker stops accepting while requests
//! in flight on either finish; then the process exits 0.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Sockets listening on 127.0.0.1:`port` (/proc/net/tcp, state 0A).
fn listening_sockets(port: u16) -> usize {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.get(1) == Some(&want.as_str()) && fields.get(3) == Some(&"0A")
        })
        .count()
}

/// Connections each of the two workers has accepted, from `/metrics`.
async fn accepted(admin: SocketAddr) -> [f64; 2] {
    let mut counts = [0.0; 2];
    for (worker, count) in counts.iter_mut().enumerate() {
        let series = format!("gw_worker_connections_total{{worker=\"{worker}\"}}");
        *count = metric_at(admin, &series).await.unwrap();
    }
    counts
}

/// The binary with two workers, proxying `/` to `backend` (a URL), once it has the config.
async fn start(dir: &std::path::Path, backend: String) -> (ControlPlane, Binary) {
    let cp = ControlPlane::start(dir).await;
    let mut admin = cp.admin().await;
    let mut svc = service("s", "/", &[]);
    svc.endpoints = vec![backend];
    create(&mut admin, svc).await;
    // data_plane_command: --listen 127.0.0.1:0 --worker-threads 2.
    let bin = Binary::spawn(data_plane_command(&cp, dir, "workers-test")).await;
    let admin_addr = bin.admin;
    eventually("the binary has a config", || async {
        (Call::get(admin_addr, "/readyz").send().await.status == 200).then_some(())
    })
    .await;
    (cp, bin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_each_accept_on_a_socket_of_their_own_and_serve() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::start("b").await;
    let (_cp, bin) = start(dir.path(), b.url()).await;
    // Port 0 was resolved once; the second worker's socket is on the same port.
    assert_eq!(
        listening_sockets(bin.proxy.port()),
        2,
        "one socket per worker"
    );
    assert_eq!(accepted(bin.admin).await, [0.0, 0.0]);

    // New connections until each worker has accepted one: the kernel picks the socket by a
    // hash of the connection's addresses, so the source port decides.
    let sent = AtomicUsize::new(0);
    let counts = eventually("both workers accepted a connection", || async {
        let r = Call::get(bin.proxy, "/").send().await;
        assert_eq!((r.status.as_u16(), r.text()), (200, "b".to_owned()));
        sent.fetch_add(1, Ordering::Relaxed);
        let counts = accepted(bin.admin).await;
        counts.iter().all(|&c| c > 0.0).then_some(counts)
    })
    .await;
    // Each connection counted once, by the worker that accepted it.
    assert_eq!(counts[0] + counts[1], sent.into_inner() as f64);
    assert_eq!(
        metric_at(bin.admin, "gw_worker_connections_total{worker=\"2\"}").await,
        None
    );
}

/// A backend that reads each request and answers it (`200 held`) only once released.
struct HeldBackend {
    url: String,
    received: Arc<AtomicUsize>,
    release: watch::Sender<bool>,
}

impl HeldBackend {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(AtomicUsize::new(0));
        let (release, released) = watch::channel(false);
        let counter = received.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (received, mut released) = (counter.clone(), released.clone());
                tokio::spawn(async move {
                    // None: a health check's bare connect, or the gateway closed it.
                    while read_head(&mut s).await.is_some() {
                        received.fetch_add(1, Ordering::Relaxed);
                        let _ = released.wait_for(|r| *r).await;
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nheld";
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            url,
            received,
            release,
        }
    }

    fn received(&self) -> usize {
        self.received.load(Ordering::Relaxed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_every_worker_accepting_and_in_flight_requests_on_both_finish() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let held = HeldBackend::start().await;
    let (_cp, bin) = start(dir.path(), held.url.clone()).await;
    let (proxy, admin) = (bin.proxy, bin.admin);

    // Requests on new connections, each held by the backend, until both workers have one in
    // flight (every connection so far carries a held request).
    let in_flight = std::sync::Mutex::new(Vec::new());
    eventually("both workers hold a request in flight", || async {
        let n = {
            let mut in_flight = in_flight.lock().unwrap();
            in_flight.push(tokio::spawn(Call::get(proxy, "/held").send()));
            in_flight.len()
        };
        eventually("the backend received the request", || async {
            (held.received() == n).then_some(())
        })
        .await;
        accepted(admin).await.iter().all(|&c| c > 0.0).then_some(())
    })
    .await;
    let in_flight = in_flight.into_inner().unwrap();

    let mut child = bin.child;
    gw_testkit::send_signal(child.id().unwrap(), gw_testkit::Signal::Term);
    // Both sockets close while the requests are still held.
    eventually("every worker stopped accepting", || async {
        (listening_sockets(proxy.port()) == 0).then_some(())
    })
    .await;
    assert!(
        in_flight.iter().all(|r| !r.is_finished()),
        "a held request ended before its release"
    );
    held.release.send(true).unwrap();
    for r in in_flight {
        let r = r.await.unwrap();
        assert_eq!((r.status.as_u16(), r.text()), (200, "held".to_owned()));
    }
    let status = tokio::time::timeout(gw_testkit::DEFAULT_DEADLINE, child.wait())
        .await
        .unwrap()
        .unwrap();
    let log = bin.log.lock().unwrap().clone();
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        log.join("\n")
    );
}
