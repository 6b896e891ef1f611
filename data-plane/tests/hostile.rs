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
use gw_proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
                if read_head(&mut s).await.is_none() || s.write_all(response).await.is_err() {
                    return;
                }
                // Stall: read (and drop) until the proxy gives up on us.
                let mut buf = [0u8; 4096];
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
    // Set per service (the node's default stays 10 s).
    let mut env = Env::start().await;
    let b = Backend::start("b").await;
    let mut s = service("s", "/", &[&b]);
    s.timeouts = Some(pb::Timeouts {
        request_body: Some(prost_types::Duration {
            seconds: 0,
            nanos: 300_000_000,
        }),
        ..Default::default()
    });
    env.add(s).await;

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

/// Item 2: a connection that never sends a byte is closed at the first-byte timeout (hyper's
/// header timeout only starts at the first byte, so it used to be held forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_at_the_first_byte_timeout() {
    let env = Env::start_with(|c| c.first_byte_timeout = Duration::from_millis(300)).await;
    let mut s = TcpStream::connect(env.dp.proxy).await.unwrap();
    assert!(read_to_close(&mut s).await.is_empty());
}

/// Item 2: a keep-alive connection that goes quiet after a request is closed at the idle
/// timeout (it used to be held forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let mut env = Env::start_with(|c| c.idle_timeout = Duration::from_millis(300)).await;
    let b = Backend::start("b").await;
    env.add(service("s", "/", &[&b])).await;
    let mut s = TcpStream::connect(env.dp.proxy).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&read_to_close(&mut s).await).into_owned();
    assert!(out.starts_with("HTTP/1.1 200"), "{out:?}");
    assert!(
        out.ends_with("\r\n\r\nb"),
        "one answer, then closed: {out:?}"
    );
}

/// Item 2: at its connection cap an upstream endpoint gets no more connections; the request
/// that finds no free connection in time gets 503 and the endpoint is not charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_endpoint_cap_holds_and_is_not_charged_to_the_endpoint() {
    let mut env = Env::start_with(|c| c.max_connections_per_endpoint = 2).await;
    let b = Backend::start("b").await;
    let mut s = service("s", "/", &[&b]);
    s.timeouts = Some(pb::Timeouts {
        connect: Some(prost_types::Duration {
            seconds: 0,
            nanos: 200_000_000,
        }),
        request: None,
        ..Default::default()
    });
    env.add(s).await;
    // Two slow requests hold the endpoint's two connections.
    let proxy = env.dp.proxy;
    let _slow: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(async move {
                Call::get(proxy, "/slow")
                    .header("x-delay-ms", "30000")
                    .try_send()
                    .await
            })
        })
        .collect();
    eventually("both slow requests reached the backend", || async {
        (b.hits() == 2).then_some(())
    })
    .await;
    let r = env.get("/x").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "gateway_overloaded");
    assert_eq!(b.hits(), 2, "no third connection was opened");
    assert_eq!(
        env.dp.metric("gw_local_errors_total{service=\"s\"}").await,
        Some(1.0)
    );
    assert_eq!(
        env.dp
            .metric("gw_upstream_errors_total{service=\"s\",kind=\"connect\"}")
            .await,
        Some(0.0)
    );
    assert_eq!(endpoint_health(&env.dp, "s").await, [1.0]);
}

/// Item 2: 2,000 connections that never send a byte, against the real binary with its
/// file-descriptor limit lowered (`prlimit`) so they exceed its connection cap: at the cap,
/// silent connections get one second instead of the (here 60 s) first-byte timeout, so
/// every one is closed, a normal client is served throughout, the accept loop never meets
/// EMFILE, and the endpoint stays healthy after the flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_a_normal_client_is_served_throughout() {
    const SILENT: usize = 2_000;
    logs();
    let own = gw_data_plane::fds::raise_nofile_limit().unwrap();
    assert!(
        own >= SILENT as u64 + 1_000,
        "this test holds {SILENT} sockets; raise the hard limit (ulimit -Hn) above {own}"
    );
    let prlimit = which("prlimit")
        .unwrap_or_else(|| panic!("prlimit is missing: install the Debian package util-linux"));
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path()).await;
    let mut admin = cp.admin().await;
    let b = Backend::start("b").await;
    create(&mut admin, service("s", "/", &[&b])).await;

    let mut cmd = tokio::process::Command::new(prlimit);
    // 1,024 descriptors: a connection cap of ~420, far below the flood.
    cmd.args(["--nofile=1024:1024", "--"])
        .arg(env!("CARGO_BIN_EXE_gw-data-plane"))
        .args(["--control-plane", &cp.url()])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        // Long: the flood must be cleared by the shortened timeout under pressure, not this.
        .args(["--first-byte-timeout", "60s", "--worker-threads", "2"])
        .arg("--cache-file")
        .arg(dir.path().join("flood.cache"));
    let bin = Binary::spawn(cmd).await;
    let cap = bin.log_lines("connection limits");
    assert!(cap.iter().any(|l| l.contains("fd_limit=1024")), "{cap:?}");
    eventually("the binary has a config", || async {
        (Call::get(bin.admin, "/readyz")
            .try_send()
            .await
            .ok()?
            .status
            == 200)
            .then_some(())
    })
    .await;

    let proxy = bin.proxy;
    let silent: Vec<_> = (0..SILENT)
        .map(|_| {
            tokio::spawn(async move {
                let mut s =
                    tokio::time::timeout(Duration::from_secs(60), TcpStream::connect(proxy))
                        .await
                        .expect("connect timed out")
                        .expect("connect failed");
                let mut buf = [0u8; 64];
                // Closed by the proxy: EOF (or a reset). Still open after 60 s: not closed.
                match tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => true,
                    Ok(Ok(_)) | Err(_) => false,
                }
            })
        })
        .collect();

    // A normal client, during the flood: every request is answered 200.
    for i in 0..10 {
        let r = tokio::time::timeout(gw_testkit::DEFAULT_DEADLINE, Call::get(proxy, "/x").send())
            .await
            .unwrap_or_else(|_| panic!("normal request {i} was not served during the flood"));
        assert_eq!(r.status, 200, "normal request {i}: {}", r.text());
    }

    let mut closed = 0;
    for t in silent {
        if t.await.unwrap() {
            closed += 1;
        }
    }
    assert_eq!(
        closed, SILENT,
        "silent connections closed by the first-byte timeout"
    );
    assert!(
        bin.log_lines("accept failed").is_empty(),
        "{:?}",
        bin.log_lines("accept failed")
    );
    assert!(
        !bin.log_lines("connection cap reached").is_empty(),
        "the flood reached the cap"
    );
    let metrics = Call::get(bin.admin, "/metrics").send().await.text();
    let health: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("gw_endpoint_healthy{"))
        .collect();
    assert!(
        health.len() == 1 && health[0].ends_with(" 1"),
        "the endpoint stayed healthy: {health:?}"
    );
    assert_eq!(Call::get(proxy, "/x").send().await.status, 200);
}

/// `name` on `PATH`.
fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The status line and the JSON body of a raw exchange.
fn status_and_body(out: &str) -> (u16, serde_json::Value) {
    let status = out
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {out:?}"));
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("");
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// Item 4: paths are routed, limited and forwarded after dot-segment removal; what cannot be
/// normalised is 400; the backend sees the normalised path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_normalised_before_routing_and_forwarding() {
    let mut env = Env::start().await;
    let root = Backend::start("root").await;
    let api = Backend::start("api").await;
    env.add(service("root", "/", &[&root])).await;
    env.add(service("api", "/api", &[&api])).await;
    // (request target, expected status, backend, path the backend saw)
    let cases: &[(&str, u16, Option<&str>, Option<&str>)] = &[
        (
            "/other/../api/_headers",
            200,
            Some("api"),
            Some("/api/_headers"),
        ),
        (
            "/other/%2e%2e/api/_headers",
            200,
            Some("api"),
            Some("/api/_headers"),
        ),
        (
            "/api/./x/../_headers?q=/../z",
            200,
            Some("api"),
            Some("/api/_headers?q=/../z"),
        ),
        ("/api/../_headers", 200, Some("root"), Some("/_headers")),
        (
            "/api/../secret/_headers",
            200,
            Some("root"),
            Some("/secret/_headers"),
        ),
        (
            "/api%2F../_headers",
            200,
            Some("root"),
            Some("/api%2F../_headers"),
        ),
        ("/..", 400, None, None),
        ("/api/../../secret", 400, None, None),
        ("/%2e%2e/secret", 400, None, None),
        ("/a%00b", 400, None, None),
    ];
    for (target, status, backend, seen) in cases {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let out = exchange(env.dp.proxy, raw.as_bytes()).await;
        let (got, body) = status_and_body(&out);
        assert_eq!(got, *status, "{target}: {out:?}");
        if let Some(backend) = backend {
            assert!(
                out.contains(&format!("x-backend: {backend}\r\n")),
                "{target}: {out:?}"
            );
            assert_eq!(body["path"], *seen.unwrap(), "{target}");
        } else {
            assert_eq!(body["error"], "bad_path", "{target}");
        }
    }
    assert_eq!(root.hits() + api.hits(), 6);
}

/// Item 5: one unambiguous Host, or 400; the backend receives exactly one `Host`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_ambiguity_is_refused_and_one_host_reaches_the_backend() {
    let mut env = Env::start().await;
    let b = Backend::start("b").await;
    env.add(service("s", "/", &[&b])).await;
    let bad: &[&[u8]] = &[
        b"GET /_headers HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
        b"GET /_headers HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n\r\n",
        b"GET /_headers HTTP/1.1\r\n\r\n",
        b"GET /_headers HTTP/1.1\r\nHost: a b/c@d\r\n\r\n",
        b"GET /_headers HTTP/1.1\r\nHost: user@a.example\r\n\r\n",
        b"GET http://a.example/_headers HTTP/1.1\r\nHost: b.example\r\n\r\n",
    ];
    for raw in bad {
        let out = exchange(env.dp.proxy, raw).await;
        let (status, body) = status_and_body(&out);
        assert_eq!(
            (status, &body["error"]),
            (400, &serde_json::json!("bad_host")),
            "{out:?}"
        );
    }
    assert_eq!(b.hits(), 0, "no ambiguous request reached the backend");

    let good: &[(&[u8], &str)] = &[
        (
            b"GET /_headers HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
            "a.example",
        ),
        (
            b"GET http://A.example/_headers HTTP/1.1\r\nHost: a.example:80\r\nConnection: close\r\n\r\n",
            "a.example:80",
        ),
        (b"GET /_headers HTTP/1.0\r\n\r\n", ""),
    ];
    for (raw, host) in good {
        let out = exchange(env.dp.proxy, raw).await;
        let (status, body) = status_and_body(&out);
        assert_eq!(status, 200, "{out:?}");
        let hosts: Vec<&str> = body["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h[0] == "host")
            .map(|h| h[1].as_str().unwrap())
            .collect();
        if host.is_empty() {
            assert!(hosts.len() <= 1, "{hosts:?}");
        } else {
            assert_eq!(hosts, [*host], "exactly one Host upstream");
        }
    }
}

/// Item 7: CONNECT is refused with 405 (and `Allow`), never forwarded to a backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_405() {
    let mut env = Env::start().await;
    let b = Backend::start("b").await;
    env.add(service("s", "/", &[&b])).await;
    let out = exchange(
        env.dp.proxy,
        b"CONNECT internal.example:443 HTTP/1.1\r\nHost: internal.example:443\r\n\r\n",
    )
    .await;
    let (status, body) = status_and_body(&out);
    assert_eq!(status, 405, "{out:?}");
    assert_eq!(body["error"], "method_not_allowed");
    assert!(
        out.to_ascii_lowercase().contains("\r\nallow: get"),
        "{out:?}"
    );
    assert_eq!(b.hits(), 0);
}
