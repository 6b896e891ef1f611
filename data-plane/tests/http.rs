//! HTTP correctness end to end: h2c, hop-by-hop headers, X-Forwarded-*, X-Request-Id, client IP
//! behind trusted proxies, 431, 400, the header-read timeout, WebSocket pass-through and
//! graceful shutdown.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// Headers the backend received, as (name, value) pairs.
fn seen_headers(r: &Reply) -> Vec<(String, String)> {
    serde_json::from_value(r.json()["headers"].clone()).unwrap()
}

fn get<'a>(h: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    h.iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_clients_are_served() {
    let mut env = Env::start().await;
    let b = Backend::start("b").await;
    env.add(service("s", "/", &[&b])).await;
    let mut send = h2_client(env.dp.proxy).await;
    for _ in 0..3 {
        let req = http::Request::builder()
            .uri("http://h2.example:1234/_headers")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.headers()["x-backend"], "b");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let h: Vec<(String, String)> = serde_json::from_value(v["headers"].clone()).unwrap();
        // The backend speaks HTTP/1.1 and gets the client's :authority as Host.
        assert_eq!(get(&h, "host"), ["h2.example:1234"]);
    }
    assert_eq!(b.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_removed_and_forwarding_headers_set() {
    let mut env = Env::start().await;
    let b = Backend::start("b").await;
    env.add(service("s", "/", &[&b])).await;
    let r = Call::get(env.dp.proxy, "/_headers")
        .header("host", "shop.example:8443")
        .header("connection", "keep-alive, x-secret")
        .header("x-secret", "dropped because Connection names it")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("te", "trailers")
        .header("upgrade", "h2c")
        .header("x-keep", "kept")
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await;
    assert_eq!(r.status, 200);
    let h = seen_headers(&r);
    for gone in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-authorization",
        "te",
        "upgrade",
        "transfer-encoding",
    ] {
        assert!(get(&h, gone).is_empty(), "{gone} was forwarded: {h:?}");
    }
    assert_eq!(get(&h, "x-keep"), ["kept"]);
    assert_eq!(
        get(&h, "host"),
        ["shop.example:8443"],
        "the client's Host is kept"
    );
    assert_eq!(get(&h, "x-forwarded-for"), ["203.0.113.9, 127.0.0.1"]);
    assert_eq!(get(&h, "x-forwarded-proto"), ["http"]);
    assert_eq!(get(&h, "x-forwarded-host"), ["shop.example:8443"]);
    // A request id was added, sent upstream, and returned.
    let id = get(&h, "x-request-id");
    assert_eq!(id.len(), 1);
    assert_eq!(r.header("x-request-id"), Some(id[0]));
    // A client's own request id is kept.
    let r = Call::get(env.dp.proxy, "/_headers")
        .header("x-request-id", "abc-123")
        .send()
        .await;
    assert_eq!(get(&seen_headers(&r), "x-request-id"), ["abc-123"]);
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_removed_from_responses() {
    // A raw backend whose response carries hop-by-hop headers.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: x-internal\r\n\
                          X-Internal: secret\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\n\
                          X-Public: yes\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    let mut env = Env::start().await;
    let mut s = service("s", "/", &[]);
    s.endpoints = vec![url];
    env.add(s).await;
    let r = env.get("/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok");
    assert_eq!(r.header("x-public"), Some("yes"));
    for gone in ["x-internal", "keep-alive", "proxy-authenticate"] {
        assert!(r.header(gone).is_none(), "{gone} reached the client");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_comes_from_x_forwarded_for_only_behind_trusted_proxies() {
    let mut env = Env::start_with(|c| {
        c.trusted_proxies =
            gw_data_plane::proxy::headers::TrustedProxies::parse("127.0.0.1/32").unwrap();
    })
    .await;
    let b = Backend::start("b").await;
    env.add(service("s", "/", &[&b])).await;
    let v = put_policy(&mut env.admin, ip_policy("one", "s", 1, 60)).await;
    env.dp.wait_version(v).await;
    let from = |xff: &str| Call::get(env.dp.proxy, "/").header("x-forwarded-for", xff);
    assert_eq!(from("198.51.100.1").send().await.status, 200);
    assert_eq!(from("198.51.100.1").send().await.status, 429);
    // The rightmost untrusted address counts; the trusted hop after it is skipped.
    assert_eq!(from("198.51.100.2, 127.0.0.1").send().await.status, 200);
    assert_eq!(from("10.9.9.9, 198.51.100.2").send().await.status, 429);
    // Upstream, X-Forwarded-For lists the client and then the trusted proxy that connected.
    let r = Call::get(env.dp.proxy, "/_headers")
        .header("x-forwarded-for", "198.51.100.9")
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        get(&seen_headers(&r), "x-forwarded-for"),
        ["198.51.100.9, 127.0.0.1"]
    );
    // 127.0.0.2 is not trusted: its XFF is ignored and it is limited as itself.
    let untrusted = "127.0.0.2".parse().unwrap();
    assert_eq!(
        from("198.51.100.3").from(untrusted).send().await.status,
        200
    );
    assert_eq!(
        from("198.51.100.4").from(untrusted).send().await.status,
        429
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431_and_garbage_gets_400() {
    let mut env = Env::start().await;
    let b = Backend::start("b").await;
    env.add(service("s", "/", &[&b])).await;
    let big = "x".repeat(gw_data_plane::DEFAULT_MAX_HEADER_BYTES + 1024);
    let r = Call::get(env.dp.proxy, "/")
        .header("x-big", &big)
        .send()
        .await;
    assert_eq!(r.status, 431);

    for garbage in [
        &b"NOT HTTP AT ALL\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        let mut s = TcpStream::connect(env.dp.proxy).await.unwrap();
        s.write_all(garbage).await.unwrap();
        let out = read_to_close(&mut s).await;
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 400"), "{garbage:?} -> {text:?}");
    }
    assert_eq!(b.hits(), 0);
    // Still serving.
    assert_eq!(env.get("/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_dribbling_its_headers_is_cut_off() {
    let mut env = Env::start_with(|c| c.header_read_timeout = Duration::from_millis(300)).await;
    let b = Backend::start("b").await;
    env.add(service("s", "/", &[&b])).await;
    let mut s = TcpStream::connect(env.dp.proxy).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // Never finishes the head. The proxy must close the connection by itself (a 408 before
    // closing is fine too); read_all panics if it is still open at the deadline.
    let out = read_to_close(&mut s).await;
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text:?}"
    );
    assert_eq!(b.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_through() {
    let mut env = Env::start().await;
    let b = Backend::start("b").await;
    let mut s = service("ws", "/chat", &[&b]);
    s.route.as_mut().unwrap().strip_prefix = true;
    env.add(s).await;
    let stream = TcpStream::connect(env.dp.proxy).await.unwrap();
    let (mut ws, resp) =
        tokio_tungstenite::client_async(format!("ws://{}/chat/_ws", env.dp.proxy), stream)
            .await
            .unwrap();
    assert_eq!(resp.status(), 101);
    assert!(resp.headers().get("x-request-id").is_some());
    for i in 0..5 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed, Message::text(format!("hello {i}")));
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    ws.close(None).await.unwrap();
    assert_eq!(b.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_an_in_flight_request_finish_then_stops_accepting() {
    let mut env = Env::start().await;
    let b = Backend::start("b").await;
    env.add(service("s", "/", &[&b])).await;
    let proxy = env.dp.proxy;
    let in_flight = tokio::spawn(async move {
        Call::get(proxy, "/slow")
            .header("x-delay-ms", "700")
            .send()
            .await
    });
    eventually("slow request reached the backend", || async {
        (b.hits() == 1).then_some(())
    })
    .await;
    let stopped = env.dp.begin_stop();
    let r = in_flight.await.unwrap();
    assert_eq!(
        r.status,
        200,
        "the in-flight request finished: {}",
        r.text()
    );
    assert_eq!(r.text(), "b");
    tokio::time::timeout(gw_testkit::DEFAULT_DEADLINE, stopped)
        .await
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(proxy).await.is_err(),
        "the listener is closed"
    );
}
