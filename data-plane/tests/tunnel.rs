//! CONNECT tunnels through a real data plane to a raw-socket backend: refused (405) unless
//! the host's `/` service allows CONNECT; when it does, the CONNECT reaches an endpoint with
//! the client's target, a 2xx turns the connection into a tunnel carrying bytes both ways,
//! and the tunnel is counted while open, closed with either side, and closed when idle.
//! `hostile.rs::connect_is_405` keeps the default (no service allows CONNECT).
//!
//! Nothing here sleeps to let time pass: where a test needs the idle timeout to have gone by,
//! it waits until the proxy's own idle timer has closed a connection ([`two_idle_timeouts`]).
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use gw_proto::v1 as pb;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;

/// What the raw backend reports.
#[derive(Debug)]
enum Seen {
    /// A request head, as received.
    Head(String),
    /// A tunnelled connection ended (the proxy closed it).
    Closed,
}

/// The idle timeout of the tests that wait for it. The tunnel's idle timer closes a tunnel
/// after two half periods without a byte, so traffic paced far more often than every second
/// keeps it open even on a loaded machine.
const IDLE: Duration = Duration::from_secs(2);
/// How often a ticking backend sends, and how traffic is paced: a small fraction of `IDLE`.
const PACE: Duration = Duration::from_millis(50);

/// A backend that reads a request head and answers `answer`; if `answer` is a 200, it then
/// greets with `hello from backend` and answers each chunk it reads with `echo:<chunk>`
/// until the proxy closes the connection. Connections that send no head (health checks) are
/// ignored.
async fn tunnel_backend(answer: &'static [u8]) -> (String, mpsc::UnboundedReceiver<Seen>) {
    backend_that(answer, false).await
}

/// [`tunnel_backend`] answering 200 that also sends `tick;` every [`PACE`] on its own, until
/// it reads `stop`.
async fn ticking_tunnel_backend() -> (String, mpsc::UnboundedReceiver<Seen>) {
    backend_that(b"HTTP/1.1 200 OK\r\n\r\n", true).await
}

async fn backend_that(
    answer: &'static [u8],
    tick: bool,
) -> (String, mpsc::UnboundedReceiver<Seen>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let Some(head) = read_head(&mut s).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = tx.send(Seen::Head(String::from_utf8_lossy(&head).into_owned()));
                if s.write_all(answer).await.is_err() || !answer.starts_with(b"HTTP/1.1 200") {
                    return;
                }
                if s.write_all(b"hello from backend").await.is_err() {
                    return;
                }
                let mut ticking = tick;
                let mut ticks = tokio::time::interval(PACE);
                loop {
                    tokio::select! {
                        read = s.read(&mut buf) => match read {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                ticking &= &buf[..n] != b"stop";
                                let mut reply = b"echo:".to_vec();
                                reply.extend_from_slice(&buf[..n]);
                                if s.write_all(&reply).await.is_err() {
                                    break;
                                }
                            }
                        },
                        _ = ticks.tick(), if ticking => {
                            if s.write_all(b"tick;").await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = tx.send(Seen::Closed);
            });
        }
    });
    (url, rx)
}

/// A `/` service for `host` over `url` that allows CONNECT.
fn tunnel_service(name: &str, host: &str, url: String) -> pb::Service {
    pb::Service {
        name: name.into(),
        route: Some(pb::Route {
            path_prefix: "/".into(),
            hosts: vec![host.into()],
            strip_prefix: false,
        }),
        endpoints: vec![url],
        allow_connect: true,
        ..Default::default()
    }
}

/// Reads from `s` until what was read contains `want`; returns everything read.
async fn read_until(s: &mut (impl AsyncRead + Unpin), want: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let found = tokio::time::timeout(gw_testkit::DEFAULT_DEADLINE, async {
        while !String::from_utf8_lossy(&out).contains(want) {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await;
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(
        matches!(found, Ok(true)),
        "never got {want:?}; read {text:?}"
    );
    text
}

/// The credentials clients send the proxy; they are for this hop only.
const PROXY_CREDENTIALS: &str = "Basic Y2xpZW50OnNlY3JldA==";

/// Sends `CONNECT target` (with the same `Host`, and `Proxy-Authorization`) to `proxy` on a
/// new connection.
async fn send_connect(proxy: SocketAddr, target: &str) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(
        format!(
            "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\
             Proxy-Authorization: {PROXY_CREDENTIALS}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    s
}

/// Asserts that a request head the endpoint received carries no proxy credentials.
fn assert_no_proxy_credentials(head: &str) {
    assert!(
        !head.to_ascii_lowercase().contains("proxy-authorization")
            && !head.contains(PROXY_CREDENTIALS),
        "Proxy-Authorization is for the proxy, not the endpoint: {head:?}"
    );
}

/// An HTTP/2 CONNECT to `target`, with `Proxy-Authorization`.
fn h2_connect(target: &str) -> http::Request<http_body_util::Empty<bytes::Bytes>> {
    http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(target)
        .header("proxy-authorization", PROXY_CREDENTIALS)
        .body(http_body_util::Empty::new())
        .unwrap()
}

/// Returns once the proxy's idle timer has closed two connections, opened one after the
/// other from now: at least twice the idle timeout has passed by the proxy's own clock,
/// more than the one and a half times its timers take to close what went quiet before now.
async fn two_idle_timeouts(proxy: SocketAddr) {
    for _ in 0..2 {
        let mut s = TcpStream::connect(proxy).await.unwrap();
        s.write_all(b"GET /clock HTTP/1.1\r\nHost: clock.invalid\r\n\r\n")
            .await
            .unwrap();
        let got = String::from_utf8_lossy(&read_to_close(&mut s).await).into_owned();
        // A 404 that keeps the connection open: what closed it is the idle timer.
        assert!(got.starts_with("HTTP/1.1 404"), "{got:?}");
        assert!(
            !got.to_ascii_lowercase().contains("connection: close"),
            "{got:?}"
        );
    }
}

/// Opens a CONNECT tunnel through `proxy` to `target`; returns the client's socket after the
/// proxy's 200 and the backend's greeting.
async fn open_tunnel(proxy: SocketAddr, target: &str) -> TcpStream {
    let mut s = send_connect(proxy, target).await;
    let got = read_until(&mut s, "hello from backend").await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got:?}");
    let head = &got[..got.find("\r\n\r\n").unwrap()].to_ascii_lowercase();
    assert!(
        !head.contains("content-length") && !head.contains("transfer-encoding"),
        "a 2xx to CONNECT has no content framing: {got:?}"
    );
    s
}

async fn next_head(rx: &mut mpsc::UnboundedReceiver<Seen>) -> String {
    loop {
        match tokio::time::timeout(gw_testkit::DEFAULT_DEADLINE, rx.recv()).await {
            Ok(Some(Seen::Head(h))) => return h,
            Ok(Some(Seen::Closed)) => continue,
            other => panic!("the backend saw no request: {other:?}"),
        }
    }
}

async fn next_close(rx: &mut mpsc::UnboundedReceiver<Seen>) {
    loop {
        match tokio::time::timeout(gw_testkit::DEFAULT_DEADLINE, rx.recv()).await {
            Ok(Some(Seen::Closed)) => return,
            Ok(Some(Seen::Head(_))) => continue,
            other => panic!("the backend's tunnel was never closed: {other:?}"),
        }
    }
}

async fn open_tunnels(dp: &DataPlane) -> Option<f64> {
    dp.metric("gw_tunnels_open").await
}

/// Waits for the backend to see its tunnel closed; checks that the proxy counted it as
/// closed for idleness and, once the tunnel has let go of everything, no longer as open.
async fn closed_as_idle(dp: &DataPlane, seen: &mut mpsc::UnboundedReceiver<Seen>) {
    next_close(seen).await;
    // Counted before the tunnel lets go of its sockets.
    assert_eq!(dp.metric("gw_tunnels_idle_closed_total").await, Some(1.0));
    // The gauge drops after them.
    eventually("the closed tunnel is no longer counted as open", || async {
        (open_tunnels(dp).await == Some(0.0)).then_some(())
    })
    .await;
}

/// A service that allows CONNECT gets the CONNECT with the client's target; its 200 opens a
/// tunnel that carries bytes both ways, counts while open, and closes on both sides when the
/// client goes. CONNECT to a host whose `/` service does not allow it still gets 405 and
/// reaches no backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_connect_tunnels_bytes_both_ways_and_is_counted_until_closed() {
    let mut env = Env::start().await;
    let (url, mut seen) = tunnel_backend(b"HTTP/1.1 200 Connection Established\r\n\r\n").await;
    env.add(tunnel_service("tunnel", "tunnel.example", url))
        .await;
    let plain = Backend::start("plain").await;
    env.add(service("plain", "/", &[&plain])).await;

    let mut s = open_tunnel(env.dp.proxy, "tunnel.example:443").await;
    let head = next_head(&mut seen).await;
    assert!(
        head.starts_with("CONNECT tunnel.example:443 HTTP/1.1\r\n"),
        "the endpoint gets the client's target: {head:?}"
    );
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("\r\nhost: tunnel.example:443\r\n"),
        "{head:?}"
    );
    assert!(lower.contains("\r\nx-forwarded-for: 127.0.0.1"), "{head:?}");
    assert_no_proxy_credentials(&head);

    for msg in ["ping", "second"] {
        s.write_all(msg.as_bytes()).await.unwrap();
        read_until(&mut s, &format!("echo:{msg}")).await;
    }
    assert_eq!(open_tunnels(&env.dp).await, Some(1.0));
    assert_eq!(env.dp.metric("gw_tunnels_total").await, Some(1.0));
    // The flag reached the data plane's config as sent.
    let config = env.dp.admin_get("/config").await.json();
    let flags: Vec<(String, bool)> = config["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let name = s["name"].as_str().unwrap().to_owned();
            (name, s["allow_connect"].as_bool().unwrap())
        })
        .collect();
    assert_eq!(
        flags,
        [("plain".to_owned(), false), ("tunnel".to_owned(), true)]
    );
    assert_eq!(
        env.dp
            .metric("gw_requests_total{service=\"tunnel\",code=\"200\"}")
            .await,
        Some(1.0)
    );

    drop(s);
    next_close(&mut seen).await;
    eventually("the tunnel is no longer counted", || async {
        (open_tunnels(&env.dp).await == Some(0.0)).then_some(())
    })
    .await;
    assert_eq!(
        env.dp.metric("gw_tunnels_idle_closed_total").await,
        Some(0.0)
    );

    // The any-host `/` service does not allow CONNECT.
    let mut s = send_connect(env.dp.proxy, "other.example:443").await;
    let out = read_until(&mut s, "method_not_allowed").await;
    assert!(out.starts_with("HTTP/1.1 405"), "{out:?}");
    assert_eq!(plain.hits(), 0);
}

/// A tunnel across which nothing moves is closed at the idle timeout, on both sides, and
/// counted as such; while bytes move it stays open, however long that lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tunnel_is_closed() {
    let mut env = Env::start_with(|c| c.idle_timeout = IDLE).await;
    let (url, mut seen) = tunnel_backend(b"HTTP/1.1 200 OK\r\n\r\n").await;
    env.add(tunnel_service("tunnel", "tunnel.example", url))
        .await;
    let mut s = open_tunnel(env.dp.proxy, "tunnel.example:8443").await;
    next_head(&mut seen).await;
    // Traffic for longer than the idle timeout keeps it open (the timeout bounds gaps, not
    // the tunnel's life): round trips, paced, until the proxy's own idle timer says that
    // twice the timeout has passed.
    let clock = tokio::spawn(two_idle_timeouts(env.dp.proxy));
    tokio::pin!(clock);
    for i in 0.. {
        let msg = format!("chunk{i}");
        s.write_all(msg.as_bytes()).await.unwrap();
        read_until(&mut s, &format!("echo:{msg}")).await;
        if let Ok(done) = tokio::time::timeout(PACE, &mut clock).await {
            done.unwrap();
            break;
        }
    }
    assert_eq!(
        env.dp.metric("gw_tunnels_idle_closed_total").await,
        Some(0.0)
    );
    // Then silence: the proxy closes it.
    let rest = read_to_close(&mut s).await;
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    closed_as_idle(&env.dp, &mut seen).await;
}

/// An HTTP/2 tunnel whose client is silent while its backend talks outlives the client
/// connection's idle timeout: the connection carries a tunnel in use, so it is not idle.
/// Once nothing moves either way, the tunnel's own idle timeout closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_tunnel_with_a_silent_client_lives_while_the_backend_talks() {
    let mut env = Env::start_with(|c| c.idle_timeout = IDLE).await;
    let (url, mut seen) = ticking_tunnel_backend().await;
    env.add(tunnel_service("tunnel", "tunnel.example", url))
        .await;
    let mut send = h2_client(env.dp.proxy).await;
    let resp = send
        .send_request(h2_connect("tunnel.example:443"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    next_head(&mut seen).await;
    let mut tunnel = hyper_util::rt::TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    read_until(&mut tunnel, "tick;").await;
    // The client says nothing while the proxy's idle timer closes two other connections.
    two_idle_timeouts(env.dp.proxy).await;
    tunnel.write_all(b"stop").await.unwrap();
    read_until(&mut tunnel, "echo:stop").await;
    assert_eq!(
        env.dp.metric("gw_tunnels_idle_closed_total").await,
        Some(0.0)
    );
    // Silent both ways now: the tunnel's idle timeout ends the stream and the backend's
    // connection.
    let mut buf = [0u8; 1024];
    let ended = tokio::time::timeout(gw_testkit::DEFAULT_DEADLINE, async {
        while matches!(tunnel.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
    assert!(ended.is_ok(), "the silent tunnel was never closed");
    closed_as_idle(&env.dp, &mut seen).await;
}

/// An endpoint that refuses the CONNECT (here 403) has its answer passed on, body included,
/// and no tunnel opens; a CONNECT target without a port is 400; a dead endpoint is 502 and
/// the endpoint's failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_or_failed_connect_is_answered_and_opens_no_tunnel() {
    let mut env = Env::start().await;
    let (url, mut seen) =
        tunnel_backend(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\n\r\ndenied").await;
    env.add(tunnel_service("refuses", "refuses.example", url))
        .await;
    let mut s = send_connect(env.dp.proxy, "refuses.example:443").await;
    let out = read_until(&mut s, "denied").await;
    assert!(out.starts_with("HTTP/1.1 403"), "{out:?}");
    next_head(&mut seen).await;
    assert_eq!(env.dp.metric("gw_tunnels_total").await, Some(0.0));

    // The target must carry a port.
    let mut s = send_connect(env.dp.proxy, "refuses.example").await;
    let out = String::from_utf8_lossy(&read_to_close(&mut s).await).into_owned();
    assert!(out.starts_with("HTTP/1.1 400"), "{out:?}");

    // Nothing listens at the endpoint: 502, charged to it. The port stays bound (without
    // listening) to the end of the test, so no other test can take it and every connect to
    // it is refused.
    let dead = TcpSocket::new_v4().unwrap();
    dead.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    let mut svc = tunnel_service("dead", "dead.example", dead_url);
    svc.health_check = Some(pb::HealthCheck {
        disabled: true,
        ..Default::default()
    });
    env.add(svc).await;
    let mut s = send_connect(env.dp.proxy, "dead.example:443").await;
    let out = read_until(&mut s, "upstream_failed").await;
    assert!(out.starts_with("HTTP/1.1 502"), "{out:?}");
    assert_eq!(
        env.dp
            .metric("gw_upstream_errors_total{service=\"dead\",kind=\"connect\"}")
            .await,
        Some(1.0)
    );
}

/// An HTTP/2 client's CONNECT (`:authority` only, no `:path`) is routed and forwarded the
/// same way: the endpoint gets an HTTP/1.1 CONNECT with the target in the request line and
/// in `Host`, and the stream becomes the tunnel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connect_is_tunnelled_too() {
    use hyper_util::rt::TokioIo;

    let mut env = Env::start().await;
    let (url, mut seen) = tunnel_backend(b"HTTP/1.1 200 OK\r\n\r\n").await;
    env.add(tunnel_service("tunnel", "tunnel.example", url))
        .await;
    let mut send = h2_client(env.dp.proxy).await;
    let resp = send
        .send_request(h2_connect("tunnel.example:443"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let head = next_head(&mut seen).await;
    assert!(
        head.starts_with("CONNECT tunnel.example:443 HTTP/1.1\r\n"),
        "{head:?}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\nhost: tunnel.example:443\r\n"),
        "{head:?}"
    );
    assert_no_proxy_credentials(&head);
    let mut tunnel = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    tunnel.write_all(b"over-h2").await.unwrap();
    let got = read_until(&mut tunnel, "echo:over-h2").await;
    assert!(got.starts_with("hello from backend"), "{got:?}");
    assert_eq!(open_tunnels(&env.dp).await, Some(1.0));
    drop(tunnel);
    drop(send);
    next_close(&mut seen).await;
    eventually("the HTTP/2 tunnel is no longer counted", || async {
        (open_tunnels(&env.dp).await == Some(0.0)).then_some(())
    })
    .await;
}
