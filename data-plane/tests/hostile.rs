//! Hostile clients and broken backends, over raw sockets: the regression suite of issue 9's
//! audit. Every case here once took the gateway or its backends down, or leaked something
//! through; each test fails without the fix it guards.
//!
//! Timeouts are configured short for the test (hundreds of milliseconds) so that nothing waits
//! for a default; assertions never depend on how long something took, only on what happened.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads until the peer closes, with a deadline (panics if the connection stays open).
async fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(gw_testkit::DEFAULT_DEADLINE, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "connection neither finished nor closed; got {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
}

/// Sends `raw` on a fresh connection and returns everything read until the proxy closes.
async fn exchange(proxy: std::net::SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(raw).await.unwrap();
    String::from_utf8_lossy(&read_to_close(&mut s).await).into_owned()
}

/// A backend that reads a request head and answers `response` verbatim, then holds the
/// connection open without another byte until the proxy closes it.
async fn raw_backend(response: &'static [u8]) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if s.write_all(response).await.is_err() {
                    return;
                }
                // Stall: read (and drop) until the proxy gives up on us.
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// Every endpoint's `gw_endpoint_healthy` for service `svc`.
async fn endpoint_health(dp: &DataPlane, svc: &str) -> Vec<f64> {
    let r = dp.admin_get("/metrics").await;
    let prefix = format!("gw_endpoint_healthy{{service=\"{svc}\"");
    r.text()
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect()
}

/// Item 1: requests the *client* broke (malformed chunked framing, an upload aborted midway)
/// are answered 400 / counted 499 and never charged to the endpoints: nine of each used to
/// eject all three endpoints of a service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_body_errors_never_eject_endpoints() {
    let mut env = Env::start().await;
    let backends = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    env.add(service(
        "s",
        "/",
        &[&backends[0], &backends[1], &backends[2]],
    ))
    .await;

    for i in 0..9 {
        let out = exchange(
            env.dp.proxy,
            b"POST /_upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\nzz\r\nnot a chunk\r\n\r\n",
        )
        .await;
        assert!(
            out.starts_with("HTTP/1.1 400"),
            "malformed chunk {i}: {out:?}"
        );
        assert!(out.contains("bad_request_body"), "{out:?}");
    }

    for i in 0..9u64 {
        let hits_before: u64 = backends.iter().map(Backend::hits).sum();
        let mut s = TcpStream::connect(env.dp.proxy).await.unwrap();
        s.write_all(
            b"POST /_upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\npartial body",
        )
        .await
        .unwrap();
        // Abort only once the upload is under way to a backend.
        eventually(&format!("upload {i} reached a backend"), || async {
            (backends.iter().map(Backend::hits).sum::<u64>() > hits_before).then_some(())
        })
        .await;
        drop(s);
    }
    eventually("nine aborted uploads counted as 499", || async {
        (env.dp
            .metric("gw_requests_total{service=\"s\",code=\"499\"}")
            .await
            == Some(9.0))
        .then_some(())
    })
    .await;

    assert_eq!(endpoint_health(&env.dp, "s").await, [1.0, 1.0, 1.0]);
    for i in 0..30 {
        let r = env.get("/x").await;
        assert_eq!(r.status, 200, "normal request {i}: {}", r.text());
    }
    for kind in ["connect", "reset", "other", "timeout", "body_timeout"] {
        assert_eq!(
            env.dp
                .metric(&format!(
                    "gw_upstream_errors_total{{service=\"s\",kind=\"{kind}\"}}"
                ))
                .await,
            Some(0.0),
            "{kind}: the clients' errors were charged to the backends"
        );
    }
}

/// Item 3: a backend that sends its headers and then stalls no longer pins the client: the
/// response-body idle timeout cuts the connection and charges the endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_response_body_is_cut_at_its_idle_timeout() {
    let mut env = Env::start_with(|c| c.response_body_timeout = Duration::from_millis(300)).await;
    let url = raw_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst bytes").await;
    let mut s = service("s", "/", &[]);
    s.endpoints = vec![url];
    env.add(s).await;

    let out = exchange(env.dp.proxy, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out:?}");
    assert!(
        out.ends_with("first bytes"),
        "the body is cut short: {out:?}"
    );
    assert_eq!(
        env.dp
            .metric("gw_upstream_errors_total{service=\"s\",kind=\"body_timeout\"}")
            .await,
        Some(1.0)
    );
}

/// Item 3: an upload that trickles one byte a second is cut at the request-body idle
/// timeout with 408, and the endpoint is not charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_upload_is_cut_at_its_idle_timeout() {
    let mut env = Env::start_with(|c| c.request_body_timeout = Duration::from_millis(300)).await;
    let b = Backend::start("b").await;
    env.add(service("s", "/", &[&b])).await;

    let mut s = TcpStream::connect(env.dp.proxy).await.unwrap();
    s.write_all(b"POST /_upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // One byte a second, for at most 30 s, until the proxy answers and closes.
    let mut closed = false;
    for _ in 0..30 {
        if s.write_all(b"x").await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    if !closed {
        out.extend(read_to_close(&mut s).await);
    }
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out:?}");
    assert!(out.contains("request_body_timeout"), "{out:?}");
    assert_eq!(
        env.dp
            .metric("gw_upstream_errors_total{service=\"s\",kind=\"reset\"}")
            .await,
        Some(0.0)
    );
    assert_eq!(endpoint_health(&env.dp, "s").await, [1.0]);
    assert_eq!(env.get("/x").await.status, 200);
}

/// Item 7: a backend's response that is framed two ways, switches protocols unasked, or has
/// a status outside 100-599 is a 502 and the endpoint's failure, never passed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_backend_responses_are_502() {
    let mut env = Env::start().await;
    let cases: [(&str, &'static [u8]); 3] = [
        (
            "cl-te",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "unsolicited-101",
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: raw\r\n\r\n",
        ),
        ("status-600", b"HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n"),
    ];
    for (name, response) in cases {
        let url = raw_backend(response).await;
        let mut s = service(name, &format!("/{name}"), &[]);
        s.endpoints = vec![url];
        env.add(s).await;
    }
    for (name, _) in cases {
        let r = env.get(&format!("/{name}")).await;
        assert_eq!(r.status, 502, "{name}: {}", r.text());
        assert_eq!(r.json()["error"], "upstream_failed", "{name}");
        assert_eq!(
            env.dp
                .metric(&format!(
                    "gw_upstream_errors_total{{service=\"{name}\",kind=\"other\"}}"
                ))
                .await,
            Some(1.0),
            "{name}"
        );
    }
}
