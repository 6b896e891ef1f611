//! Serving connections: the accept loop shared by the proxy and admin listeners, with graceful
//! shutdown (stop accepting, let in-flight requests finish up to a deadline, then cut the rest).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use crate::shutdown::signalled;
use tokio::task::JoinSet;

/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Stop senders kept before the accept loop drops those of finished connections; after each
/// reap the threshold becomes twice what is left, so reaping costs O(1) per connection.
const STOP_REAP_MIN: usize = 64;

/// Protocol limits for client connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time a client has to send a request's complete headers.
    pub header_read_timeout: Duration,
    /// Largest request head accepted (HTTP/1.1: read buffer; HTTP/2: header list); beyond it,
    /// HTTP/1.1 clients get 431.
    pub max_header_bytes: usize,
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
/// to `grace` before dropping the stragglers.
pub async fn run<H, F, B>(
    listener: TcpListener,
    limits: Limits,
    handler: H,
    stop: watch::Receiver<bool>,
    grace: Duration,
) where
    H: Fn(SocketAddr, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
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
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = signalled(stop.clone()) => break,
        };
        // Reap finished connection tasks so the set does not grow without bound.
        while conns.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let handler = handler.clone();
        if stops.len() >= reap_at {
            stops.retain(|s| !s.is_closed());
            reap_at = (stops.len() * 2).max(STOP_REAP_MIN);
        }
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        stops.push(stop_tx);
        conns.spawn(async move {
            let service = service_fn(move |req| {
                let fut = handler(peer, req);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                biased;
                result = conn.as_mut() => result,
                // Resolves (with an error) when the accept loop drops the sender on shutdown.
                _ = stop_rx => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
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
