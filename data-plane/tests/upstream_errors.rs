//! Upstream failures end to end: 502, 504, and the one retry of idempotent bodyless requests.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use gw_proto::v1 as pb;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// A "backend" that accepts, reads a little, and closes without answering: a reset before any
/// response byte.
async fn closer() -> (String, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            drop(s);
        }
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_endpoint_is_retried_with_no_client_visible_error() {
    let mut env = Env::start().await;
    let live = Backend::start("live").await;
    let mut dead = Backend::start("dead").await;
    dead.stop().await;
    env.add(service("s", "/", &[&dead, &live])).await;
    for i in 0..10 {
        let r = env.get("/x").await;
        assert_eq!(r.status, 200, "GET {i}: {}", r.text());
        assert_eq!(r.header("x-backend"), Some("live"));
    }
    assert_eq!(live.hits(), 10);
    let connect_errors = env
        .dp
        .metric("gw_upstream_errors_total{service=\"s\",kind=\"connect\"}")
        .await
        .unwrap();
    assert!(connect_errors >= 1.0, "{connect_errors}");
    assert_eq!(
        env.dp
            .metric("gw_upstream_retries_total{service=\"s\"}")
            .await,
        Some(connect_errors)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_before_response_is_retried_for_get_but_not_for_post() {
    let mut env = Env::start().await;
    let live = Backend::start("live").await;
    let (closer_url, _task) = closer().await;
    let mut s = service("s", "/", &[&live]);
    s.endpoints.insert(0, closer_url);
    // Passive health checking would eject the closer after a few resets; this test is about
    // retries, so keep it in rotation.
    s.health_check = Some(pb::HealthCheck {
        unhealthy_threshold: 100,
        ..Default::default()
    });
    env.add(s).await;
    for _ in 0..6 {
        let r = env.get("/x").await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // A POST with a body is never retried: it may have had effects. Round robin sends every
    // other request to the closer, so of two POSTs exactly one fails.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let r = Call::get(env.dp.proxy, "/x")
            .method(http::Method::POST)
            .body("payload")
            .send()
            .await;
        statuses.push(r.status.as_u16());
        if r.status == 502 {
            assert_eq!(r.json()["error"], "upstream_failed");
        }
    }
    statuses.sort();
    assert_eq!(statuses, [200, 502]);
    assert!(
        env.dp
            .metric("gw_upstream_errors_total{service=\"s\",kind=\"reset\"}")
            .await
            .unwrap()
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_only_endpoint_is_502() {
    let mut env = Env::start().await;
    let mut dead = Backend::start("dead").await;
    dead.stop().await;
    env.add(service("s", "/", &[&dead])).await;
    let r = env.get("/x").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["error"], "upstream_failed");
    assert_eq!(
        env.dp
            .metric("gw_requests_total{service=\"s\",code=\"502\"}")
            .await,
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_is_504() {
    let mut env = Env::start().await;
    let slow = Backend::start("slow").await;
    let mut s = service("s", "/", &[&slow]);
    s.timeouts = Some(pb::Timeouts {
        connect: None,
        request: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
        ..Default::default()
    });
    env.add(s).await;
    // The backend waits far longer than the timeout (1 s, generous so that the quick request
    // after it passes even on a loaded machine).
    let r = Call::get(env.dp.proxy, "/x")
        .header("x-delay-ms", "30000")
        .send()
        .await;
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"], "upstream_timeout");
    assert_eq!(env.get("/x").await.status, 200);
    assert_eq!(
        env.dp
            .metric("gw_upstream_errors_total{service=\"s\",kind=\"timeout\"}")
            .await,
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_counts_from_the_end_of_an_upload() {
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;

    let mut env = Env::start().await;
    let b = Backend::start("b").await;
    let mut s = service("s", "/", &[&b]);
    s.timeouts = Some(pb::Timeouts {
        connect: None,
        request: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
        ..Default::default()
    });
    env.add(s).await;
    // An upload that takes longer to send than the request timeout (six chunks 300 ms apart).
    // The pause paces the sender, it waits for nothing: a slower machine only makes the upload
    // longer, which the assertion tolerates.
    let frames = futures::stream::unfold(0u32, |i| async move {
        if i == 6 {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        Some((
            Ok::<_, std::convert::Infallible>(Frame::data(bytes::Bytes::from_static(
                b"0123456789",
            ))),
            i + 1,
        ))
    });
    let stream = connect(env.dp.proxy, None).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("/_upload")
        .header("host", "t")
        .body(StreamBody::new(frames))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200, "a slow upload is not a slow upstream");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["bytes"], 60);

    // Once the body is sent, a backend slower than the timeout still gets 504.
    let r = Call::get(env.dp.proxy, "/_upload")
        .method(http::Method::POST)
        .header("x-delay-ms", "30000")
        .body("payload")
        .send()
        .await;
    assert_eq!(r.status, 504);
}

/// A "backend" whose listen queue is full: the kernel drops further SYNs, so a connect to it
/// neither succeeds nor fails, it hangs. Returns its URL and the connections that fill the
/// queue (kept open: closing them would free the queue).
async fn black_hole() -> (String, Vec<tokio::net::TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    // A backlog of 0 leaves room for one connection waiting to be accepted; nothing accepts.
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    // Connect until a connect hangs: from then on the queue is full and SYNs are dropped.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the listen queue never filled"
        );
        match tokio::time::timeout(
            std::time::Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => fillers.push(s),
            Ok(Err(e)) => panic!("connect to the black hole failed: {e}"),
            Err(_) => break,
        }
    }
    // The listener must stay open (a closed one answers with a reset); leak it with the test.
    std::mem::forget(listener);
    (format!("http://{addr}"), fillers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_that_hangs_ends_at_the_connect_timeout_with_502() {
    let mut env = Env::start().await;
    let (url, _fillers) = black_hole().await;
    let mut s = service("s", "/", &[]);
    s.endpoints = vec![url];
    s.timeouts = Some(pb::Timeouts {
        connect: Some(prost_types::Duration {
            seconds: 0,
            nanos: 300_000_000,
        }),
        // Far longer than the connect timeout: a 504 would mean the connect was never cut.
        request: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
        ..Default::default()
    });
    // No active checks (they would connect to the black hole too) and no ejection after one
    // failure: this test is about the connect timeout alone.
    s.health_check = Some(pb::HealthCheck {
        disabled: true,
        unhealthy_threshold: 100,
        ..Default::default()
    });
    env.add(s).await;
    let r = env.get("/x").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_failed");
    assert_eq!(
        env.dp
            .metric("gw_upstream_errors_total{service=\"s\",kind=\"connect\"}")
            .await,
        Some(1.0)
    );
}
