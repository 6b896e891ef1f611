//! The upstream connection pool end to end: reuse, idle expiry, the idle cap, stale
//! connections (retried unseen when that is safe, never for a POST that went out), and
//! connections to a removed endpoint closed.
//!
//! The backends here are raw TCP, so the tests can count accepted and still-open connections
//! (a connection the gateway closes is seen as EOF). Active health checks are off, so no
//! probe adds connections. The gateway runs one worker thread (`one_worker`), hence one pool
//! slot per endpoint, which makes connection counts exact.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use gw_proto::v1 as pb;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Barrier;

/// How a raw backend treats each connection.
#[derive(Clone)]
enum Mode {
    /// Answers every request, keeps the connection open until the gateway closes it.
    KeepAlive,
    /// Answers the first request (with keep-alive), then closes: a backend whose idle
    /// timeout is shorter than the gateway's.
    CloseAfterAnswer,
    /// Answers the first request; reads the second in full and closes without a byte of
    /// answer: the race of a keep-alive timeout with a reused connection, made certain.
    DropSecond,
    /// Holds each answer until this many requests are waiting, then answers them all.
    Together(Arc<Barrier>),
}

#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    open: AtomicUsize,
    /// Requests read in full, by method.
    gets: AtomicUsize,
    posts: AtomicUsize,
    /// Requests read and then dropped unanswered.
    dropped: AtomicUsize,
}

struct Raw {
    url: String,
    counts: Arc<Counts>,
    _task: tokio::task::JoinHandle<()>,
}

impl Raw {
    async fn start(mode: Mode) -> Raw {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let task = tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                c.accepted.fetch_add(1, Ordering::SeqCst);
                c.open.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(s, mode.clone(), c.clone()));
            }
        });
        Raw {
            url,
            counts,
            _task: task,
        }
    }

    fn accepted(&self) -> usize {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    fn open(&self) -> usize {
        self.counts.open.load(Ordering::SeqCst)
    }

    fn count(&self, which: fn(&Counts) -> &AtomicUsize) -> usize {
        which(&self.counts).load(Ordering::SeqCst)
    }
}

async fn serve(s: TcpStream, mode: Mode, c: Arc<Counts>) {
    let mut s = BufReader::new(s);
    let mut served = 0;
    while let Some(method) = read_request(&mut s).await {
        match method.as_str() {
            "GET" => c.gets.fetch_add(1, Ordering::SeqCst),
            "POST" => c.posts.fetch_add(1, Ordering::SeqCst),
            _ => 0,
        };
        if matches!(mode, Mode::DropSecond) && served == 1 {
            c.dropped.fetch_add(1, Ordering::SeqCst);
            break;
        }
        if let Mode::Together(barrier) = &mode {
            barrier.wait().await;
        }
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        if s.get_mut().write_all(answer).await.is_err() {
            break;
        }
        served += 1;
        if matches!(mode, Mode::CloseAfterAnswer) {
            break;
        }
    }
    drop(s);
    c.open.fetch_sub(1, Ordering::SeqCst);
}

/// Reads one request (head, and a body of `content-length` bytes); its method, or `None` at
/// EOF or on anything unexpected.
async fn read_request(s: &mut BufReader<TcpStream>) -> Option<String> {
    let mut line = String::new();
    if s.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let method = line.split(' ').next()?.to_owned();
    let mut length = 0;
    loop {
        line.clear();
        if s.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    s.read_exact(&mut body).await.ok()?;
    Some(method)
}

/// A service `s` on `/` over `urls`, without active health checks; two failures in a row
/// eject an endpoint (so a stale connection charged to it would show).
fn svc(urls: &[&str]) -> pb::Service {
    pb::Service {
        name: "s".into(),
        route: Some(pb::Route {
            path_prefix: "/".into(),
            hosts: vec![],
            strip_prefix: false,
        }),
        endpoints: urls.iter().map(|u| u.to_string()).collect(),
        health_check: Some(pb::HealthCheck {
            disabled: true,
            unhealthy_threshold: 2,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One worker thread: the pool keeps idle connections per worker thread, and with two a
/// second client connection may land on the other worker and open its own.
fn one_worker(c: &mut gw_data_plane::Config) {
    c.worker_threads = 1;
}

async fn metric(env: &Env, series: &str) -> f64 {
    env.dp
        .metric(series)
        .await
        .unwrap_or_else(|| panic!("no series {series}"))
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let mut env = Env::start_with(one_worker).await;
    let b = Raw::start(Mode::KeepAlive).await;
    env.add(svc(&[&b.url])).await;
    for i in 0..20 {
        let r = env.get("/x").await;
        assert_eq!(r.status, 200, "GET {i}: {}", r.text());
    }
    assert_eq!(b.count(|c| &c.gets), 20);
    assert_eq!(
        b.accepted(),
        1,
        "every request after the first reused the connection"
    );
}

#[tokio::test]
async fn a_connection_cap_of_one_still_reuses_its_connection() {
    let mut env = Env::start_with(|c| {
        one_worker(c);
        c.max_connections_per_endpoint = 1;
    })
    .await;
    let b = Raw::start(Mode::KeepAlive).await;
    env.add(svc(&[&b.url])).await;
    for i in 0..10 {
        let r = env.get("/x").await;
        assert_eq!(r.status, 200, "GET {i}: {}", r.text());
    }
    assert_eq!(
        b.accepted(),
        1,
        "at the cap with nobody waiting, the connection stays for the next request"
    );
}

#[tokio::test]
async fn a_connection_cap_of_one_serves_every_worker_without_error() {
    // Two workers, one connection allowed: the one connection sits idle in one worker's
    // slot while the other worker's requests need it; they take it, or close it to connect.
    let mut env = Env::start_with(|c| {
        c.worker_threads = 2;
        c.max_connections_per_endpoint = 1;
    })
    .await;
    let b = Raw::start(Mode::KeepAlive).await;
    env.add(svc(&[&b.url])).await;
    // Each call is a new client connection, so they land on both workers.
    for i in 0..20 {
        let r = env.get("/x").await;
        assert_eq!(r.status, 200, "GET {i}: {}", r.text());
    }
    assert_eq!(b.count(|c| &c.gets), 20);
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let mut env = Env::start_with(|c| {
        one_worker(c);
        c.upstream_idle_timeout = Duration::from_millis(300);
    })
    .await;
    let b = Raw::start(Mode::KeepAlive).await;
    env.add(svc(&[&b.url])).await;
    assert_eq!(env.get("/x").await.status, 200);
    assert_eq!(b.accepted(), 1);
    // No traffic from here on: only the sweep can close it.
    eventually("the idle connection closed by the gateway", || async {
        (b.open() == 0).then_some(())
    })
    .await;
    assert_eq!(env.get("/x").await.status, 200);
    assert_eq!(b.accepted(), 2, "the expired connection was not reused");
}

#[tokio::test]
async fn at_most_the_idle_cap_stays_open() {
    const CONCURRENT: usize = 6;
    const CAP: usize = 2;
    let mut env = Env::start_with(|c| {
        one_worker(c);
        c.upstream_max_idle = CAP;
    })
    .await;
    let b = Raw::start(Mode::Together(Arc::new(Barrier::new(CONCURRENT)))).await;
    env.add(svc(&[&b.url])).await;
    let proxy = env.dp.proxy;
    let calls: Vec<_> = (0..CONCURRENT)
        .map(|_| tokio::spawn(async move { Call::get(proxy, "/x").send().await }))
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().status, 200);
    }
    assert_eq!(
        b.accepted(),
        CONCURRENT,
        "each waiting request had its own connection"
    );
    eventually("connections beyond the idle cap closed", || async {
        (b.open() == CAP).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_stale_pooled_connection_is_retried_with_no_client_visible_error() {
    let mut env = Env::start_with(one_worker).await;
    let b = Raw::start(Mode::DropSecond).await;
    env.add(svc(&[&b.url])).await;
    for i in 0..10 {
        let r = env.get("/x").await;
        assert_eq!(r.status, 200, "GET {i}: {}", r.text());
    }
    // Every GET after the first met the stale connection the one before left, and went
    // again on a new one.
    assert_eq!(b.count(|c| &c.dropped), 9);
    assert_eq!(b.accepted(), 10);
    assert_eq!(
        metric(
            &env,
            "gw_upstream_errors_total{service=\"s\",kind=\"reset\"}"
        )
        .await,
        0.0,
        "a stale connection is not the endpoint's failure"
    );
    assert_eq!(
        metric(&env, "gw_upstream_retries_total{service=\"s\"}").await,
        0.0
    );
    assert_eq!(
        metric(&env, "gw_requests_total{service=\"s\",code=\"200\"}").await,
        10.0
    );
}

#[tokio::test]
async fn a_backend_closing_right_after_each_answer_costs_no_error() {
    let mut env = Env::start_with(one_worker).await;
    let b = Raw::start(Mode::CloseAfterAnswer).await;
    env.add(svc(&[&b.url])).await;
    for i in 0..10 {
        let r = env.get("/x").await;
        assert_eq!(r.status, 200, "GET {i}: {}", r.text());
    }
    assert_eq!(b.count(|c| &c.gets), 10);
    assert_eq!(
        metric(
            &env,
            "gw_upstream_errors_total{service=\"s\",kind=\"reset\"}"
        )
        .await,
        0.0
    );
}

#[tokio::test]
async fn a_post_on_a_stale_connection_is_not_sent_again() {
    let mut env = Env::start_with(one_worker).await;
    let b = Raw::start(Mode::DropSecond).await;
    env.add(svc(&[&b.url])).await;
    assert_eq!(env.get("/x").await.status, 200);
    let r = Call::get(env.dp.proxy, "/x")
        .method(http::Method::POST)
        .body("payload")
        .send()
        .await;
    // It went out on the pooled connection, which the backend closed unanswered: it may
    // have had effects, so it is not repeated, and the client is told.
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(b.count(|c| &c.posts), 1, "the POST was sent again");
    assert_eq!(b.count(|c| &c.dropped), 1);
    assert_eq!(b.accepted(), 1);
    assert_eq!(
        metric(
            &env,
            "gw_upstream_errors_total{service=\"s\",kind=\"reset\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn a_removed_endpoints_idle_connections_are_closed() {
    let mut env = Env::start_with(one_worker).await;
    let a = Raw::start(Mode::KeepAlive).await;
    let b = Raw::start(Mode::KeepAlive).await;
    env.add(svc(&[&a.url, &b.url])).await;
    for _ in 0..4 {
        assert_eq!(env.get("/x").await.status, 200);
    }
    assert_eq!((a.accepted(), a.open()), (1, 1));
    // A new version that keeps both endpoints keeps the warm connections.
    let mut s = svc(&[&a.url, &b.url]);
    s.timeouts = Some(pb::Timeouts {
        request: Some(prost_types::Duration {
            seconds: 20,
            nanos: 0,
        }),
        ..Default::default()
    });
    let v = update(&mut env.admin, s).await;
    env.dp.wait_version(v).await;
    for _ in 0..4 {
        assert_eq!(env.get("/x").await.status, 200);
    }
    assert_eq!((a.accepted(), a.open()), (1, 1), "kept across the update");
    // Without `a`: its idle connection goes, long before its idle timeout (50 s).
    let v = update(&mut env.admin, svc(&[&b.url])).await;
    env.dp.wait_version(v).await;
    eventually("the removed endpoint's connection closed", || async {
        (a.open() == 0).then_some(())
    })
    .await;
    assert_eq!(b.open(), 1, "the remaining endpoint's connection stays");
}
