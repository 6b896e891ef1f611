//! Plain HTTP/1.1 backends for tests: they answer with their name and count hits.
//!
//! Every response carries `x-backend: <name>` and `x-path: <path and query received>`.
//! By the last path segment:
//! - `/health`: `200 ok` (counted apart, in [`Backend::health_hits`]); `404` from a backend
//!   started with [`Backend::start_without_health`], like a service that has no health route.
//! - `.../_headers`: the request as JSON: `{"method", "path", "headers": [[name, value], ...]}`.
//! - `.../_upload`: streams the body and answers `{"bytes": N, "sha256": "<hex>"}`; the body is
//!   never held whole.
//! - `.../_ws`: a WebSocket echo (HTTP/1.1 Upgrade).
//! - anything else: the backend's name as the body.
//!
//! A request header `x-delay-ms: N` delays the response headers by N ms (for timeouts and
//! in-flight-at-shutdown tests). A backend can be stopped (listener and every open connection
//! closed) and restarted on the same port.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

#[derive(Debug)]
struct Shared {
    name: Arc<str>,
    hits: AtomicU64,
    health_hits: AtomicU64,
    connections: AtomicU64,
    health_route: bool,
}

/// A running (or stopped) test backend. Dropping it stops it.
#[derive(Debug)]
pub struct Backend {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Backend {
    /// Starts a backend named `name` on `127.0.0.1:0`.
    pub async fn start(name: &str) -> Backend {
        Self::start_with(name, true).await
    }

    /// Starts a backend named `name` on `127.0.0.1:0` that answers `/health` with 404, like a
    /// service that has no health route.
    pub async fn start_without_health(name: &str) -> Backend {
        Self::start_with(name, false).await
    }

    async fn start_with(name: &str, health_route: bool) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("backend {name}: bind 127.0.0.1:0: {e}"));
        Self::listen(name, listener, health_route)
    }

    /// Starts a backend named `name` on an already-bound listener.
    pub fn with_listener(name: &str, listener: TcpListener) -> Backend {
        Self::listen(name, listener, true)
    }

    fn listen(name: &str, listener: TcpListener, health_route: bool) -> Backend {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("backend {name}: local_addr: {e}"));
        let shared = Arc::new(Shared {
            name: name.into(),
            hits: AtomicU64::new(0),
            health_hits: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            health_route,
        });
        let task = Some(tokio::spawn(accept_loop(listener, shared.clone())));
        Backend { shared, addr, task }
    }

    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, as a service endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests answered, `/health` aside (kept across restarts).
    pub fn hits(&self) -> u64 {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// `/health` requests answered.
    pub fn health_hits(&self) -> u64 {
        self.shared.health_hits.load(Ordering::SeqCst)
    }

    /// TCP connections accepted (kept across restarts); a TCP health check is one each.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Whether it is running.
    pub fn is_running(&self) -> bool {
        self.task.is_some()
    }

    /// Stops accepting and closes every open connection (so pooled keep-alive connections to
    /// it fail too). Returns once the port is closed.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // Wait for the abort so the listener and connections are really dropped.
            let _ = task.await;
        }
    }

    /// Starts again on the same port (after [`Backend::stop`]).
    pub async fn restart(&mut self) -> io::Result<()> {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await?;
        self.task = Some(tokio::spawn(accept_loop(listener, self.shared.clone())));
        Ok(())
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Connection tasks live in the set, so aborting this task (dropping the set) closes them.
    let mut conns = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        while conns.try_join_next().is_some() {}
        let shared = shared.clone();
        conns.spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(answer(&shared, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

async fn answer(shared: &Shared, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let last = path.rsplit('/').next().unwrap_or("");
    if path == "/health" {
        shared.health_hits.fetch_add(1, Ordering::SeqCst);
    } else {
        shared.hits.fetch_add(1, Ordering::SeqCst);
    }
    let delay = req
        .headers()
        .get("x-delay-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let pq = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned());
    let mut resp = match last {
        _ if path == "/health" && shared.health_route => {
            Response::new(Full::new(Bytes::from_static(b"ok")))
        }
        _ if path == "/health" => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"not found")));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
        "_headers" => {
            let headers: Vec<(String, String)> = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let body = serde_json::json!({
                "method": req.method().as_str(),
                "path": pq,
                "headers": headers,
            });
            Response::new(Full::new(Bytes::from(body.to_string())))
        }
        "_upload" => {
            let mut hasher = Sha256::new();
            let mut bytes = 0u64;
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Some(data) = frame.data_ref() {
                            bytes += data.len() as u64;
                            hasher.update(data);
                        }
                    }
                    Err(_) => {
                        let mut r = Response::new(Full::new(Bytes::from_static(b"body error")));
                        *r.status_mut() = StatusCode::BAD_REQUEST;
                        return r;
                    }
                }
            }
            let body = serde_json::json!({ "bytes": bytes, "sha256": hex(&hasher.finalize()) });
            Response::new(Full::new(Bytes::from(body.to_string())))
        }
        "_ws" => websocket(&mut req),
        _ => Response::new(Full::new(Bytes::from(shared.name.to_string()))),
    };
    if let Ok(v) = HeaderValue::from_str(&shared.name) {
        resp.headers_mut().insert("x-backend", v);
    }
    if let Ok(v) = HeaderValue::from_str(&pq) {
        resp.headers_mut().insert("x-path", v);
    }
    resp
}

/// Accepts a WebSocket handshake and echoes every text and binary message.
fn websocket(req: &mut Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(key) = req.headers().get("sec-websocket-key") else {
        let mut r = Response::new(Full::new(Bytes::from_static(b"not a websocket handshake")));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                return;
            }
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert("upgrade", HeaderValue::from_static("websocket"));
    h.insert("connection", HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    r
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}
