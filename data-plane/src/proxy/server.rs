//! Serving connections: the accept loop shared by the proxy and admin listeners, with a cap on
//! open connections, the first-byte and keep-alive idle timeouts (`idle`), and graceful
//! shutdown (stop accepting, let in-flight requests finish up to a deadline, then cut the rest).
//!
//! At the cap the loop stops accepting: new connections wait in the kernel's listen backlog
//! until one closes (nginx and HAProxy do the same). Accepting and closing at once would turn
//! every client away; spinning on EMFILE would burn a core and starve everything else.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot, watch};

use crate::proxy::idle::{self, Activity, Counted, Pressure, Tracked};
use crate::shutdown::signalled;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// At most one "accept failed" or "connection cap reached" warning per this period; the rest
/// are counted into the next one (a flood used to log one line per failed accept).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Time a client has to complete the TLS handshake; like the first-byte timeout, it keeps a
/// slow or silent client from holding a connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Stop senders kept before the accept loop drops those of finished connections; after each
/// reap the threshold becomes twice what is left, so reaping costs O(1) per connection.
const STOP_REAP_MIN: usize = 64;

/// Listen backlog of the proxy listener: connections beyond the cap wait here, so it is deep
/// (the kernel clamps it to `net.core.somaxconn`, 4,096 by default). tokio's `bind` uses
/// 1,024; a flood that overflows the backlog leaves clients with half-open connections the
/// kernel drops without a word.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` as `tokio::net::TcpListener::bind` does (with `SO_REUSEADDR`), but with a
/// [`LISTEN_BACKLOG`]-deep backlog.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Protocol limits for client connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time a client has to send a request's complete headers.
    pub header_read_timeout: Duration,
    /// Largest request head accepted (HTTP/1.1: read buffer; HTTP/2: header list); beyond it,
    /// HTTP/1.1 clients get 431.
    pub max_header_bytes: usize,
    /// Time a new connection has to send its first byte.
    pub first_byte_timeout: Duration,
    /// Time a connection may stay idle between requests.
    pub idle_timeout: Duration,
    /// Open connections at most; beyond, new ones wait in the listen backlog.
    pub max_connections: usize,
}

/// A warning that is logged at most once per [`WARN_EVERY`], with a count of the rest.
struct Throttled {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl Throttled {
    fn new() -> Self {
        Self {
            last: None,
            suppressed: 0,
        }
    }

    /// Whether to log now; if so, how many were suppressed since the last line.
    fn ready(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < WARN_EVERY)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Builds the connection builder: HTTP/1.1 and h2c (prior knowledge), upgrades enabled.
fn builder(limits: Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper's minimum buffer is 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8192));
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    b
}

/// Accepts connections on `listener` and serves `handler` on each until `stop` turns true;
/// then stops accepting, asks every connection to finish its in-flight requests, and waits up
/// to `grace` before dropping the stragglers. With `tls`, each connection first completes a
/// TLS handshake (on its own task, within [`HANDSHAKE_TIMEOUT`]).
pub async fn run<H, F, B>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    handler: H,
    stop: watch::Receiver<bool>,
    grace: Duration,
) where
    H: Fn(SocketAddr, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = Arc::new(builder(limits));
    let mut conns = JoinSet::new();
    // One oneshot per connection says "shut down" by being dropped. A connection polls its
    // receiver on every wake-up, and a oneshot poll is an atomic load, where a `watch` wait
    // takes a mutex each time (measured: ~400 instructions per proxied request).
    let mut stops: Vec<oneshot::Sender<()>> = Vec::new();
    let mut reap_at = STOP_REAP_MIN;
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut accept_warn = Throttled::new();
    let mut cap_warn = Throttled::new();
    let local = listener.local_addr().ok();
    let pressure = Arc::new(Pressure::default());
    let stopped = signalled(stop);
    tokio::pin!(stopped);
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                pressure.hit();
                if let Some(suppressed) = cap_warn.ready() {
                    tracing::warn!(
                        listener = ?local,
                        max_connections = limits.max_connections,
                        suppressed,
                        "connection cap reached: new connections wait in the listen backlog; \
                         silent connections get 1s to send their first byte"
                    );
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = &mut stopped => break,
                }
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stopped => break,
        };
        // Reap finished connection tasks so the set does not grow without bound.
        while conns.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                if let Some(suppressed) = accept_warn.ready() {
                    tracing::warn!(error = %e, suppressed, "accept failed");
                }
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let handler = handler.clone();
        let pressure = pressure.clone();
        if stops.len() >= reap_at {
            stops.retain(|s| !s.is_closed());
            reap_at = (stops.len() * 2).max(STOP_REAP_MIN);
        }
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        stops.push(stop_tx);
        let tls = tls.clone();
        conns.spawn(async move {
            let activity = Arc::new(Activity::default());
            let in_flight = activity.clone();
            let service = service_fn(move |mut req: Request<Incoming>| {
                let guard = in_flight.begin();
                if req.method() == Method::CONNECT {
                    // On HTTP/2 the tunnel is one stream of a connection that lives on, and the
                    // client may stay silent while only the backend talks: the tunnel holds
                    // this guard so the connection's idle timer leaves it alone (the tunnel
                    // has its own). Only CONNECT pays for the extension.
                    req.extensions_mut().insert(guard.clone());
                }
                let fut = handler(peer, req);
                async move { Ok::<_, Infallible>(fut.await.map(|b| Tracked::new(b, guard))) }
            });
            // The stream holds the connection's slot under the cap, for its whole life.
            let io = Counted::new(stream, activity.clone(), slot);
            let Some(acceptor) = tls else {
                return serve_connection(
                    &builder, io, service, stop_rx, activity, pressure, limits, peer,
                )
                .await;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                Ok(Ok(io)) => {
                    serve_connection(
                        &builder, io, service, stop_rx, activity, pressure, limits, peer,
                    )
                    .await
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    // Every connection starts its graceful shutdown.
    drop(stops);
    let drained =
        tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            remaining = conns.len(),
            ?grace,
            "shutdown grace period over; closing remaining connections"
        );
        conns.shutdown().await;
    }
}

/// Serves one connection (plain or TLS) until it ends, goes idle, or, once `stop` fires,
/// until its in-flight requests have finished.
#[allow(clippy::too_many_arguments)]
async fn serve_connection<I, S, B>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    stop: oneshot::Receiver<()>,
    activity: Arc<Activity>,
    pressure: Arc<Pressure>,
    limits: Limits,
    peer: SocketAddr,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        biased;
        result = conn.as_mut() => result,
        // Resolves (with an error) when the accept loop drops the sender on shutdown.
        _ = stop => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        () = idle::watch(activity, pressure, limits.first_byte_timeout, limits.idle_timeout) => {
            tracing::debug!(%peer, "idle connection closed");
            Ok(())
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
