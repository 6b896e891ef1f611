//! Opening upstream connections under caps: at most `per_endpoint` open connections to one
//! endpoint (host:port) and at most `total` to all of them, so one slow backend cannot hold
//! every descriptor, and upstream connections never eat into the health checks' reserve
//! (see `crate::fds`).
//!
//! A connection takes its two permits before it connects and returns them when it closes.
//! At a cap the connect waits, for at most `wait` (the service's connect timeout), for a
//! connection to close; the pool helps by keeping no connection idle while a cap is reached
//! (see `pool`), so a connection that finishes its exchange then closes and makes room. If
//! none frees up, the attempt fails with [`CapReached`]: the gateway's own limit, which
//! `blame` never charges to the endpoint.
//!
//! The per-endpoint semaphores live in a map locked only when a new connection is opened
//! (never for a pooled request), beside a TCP handshake that costs far more.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use http::uri::Authority;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::upstream::blame::CapReached;
use crate::upstream::dns::Resolver;

/// Default cap on open connections to one endpoint: Envoy's default circuit-breaker
/// `max_connections` per cluster. Far above what a healthy backend needs with keep-alive,
/// low enough that one backend that stops answering cannot take every descriptor.
pub const DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT: usize = 1024;

/// The caps shared by every upstream client of a data plane.
#[derive(Debug)]
pub struct Caps {
    total: Arc<Gate>,
    per_endpoint: usize,
    by_endpoint: Mutex<HashMap<Authority, Arc<Gate>>>,
}

/// One cap: its permits, and how many connects wait for one. The pool reads `waiting`: a
/// connection that finishes its exchange while someone waits is closed rather than kept
/// idle, so the waiter gets its permit; with nobody waiting, a connection at the cap is
/// kept (a cap of 1 still reuses its one connection).
#[derive(Debug)]
struct Gate {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
}

impl Gate {
    fn new(permits: usize) -> Arc<Self> {
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(permits)),
            waiting: AtomicUsize::new(0),
        })
    }

    /// A permit, at once if one is free; otherwise counted among the waiters until one is.
    async fn take(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Some(permit);
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
        // Uncounted however the wait ends, the connect timeout dropping it included.
        let _counted = Waiter(&self.waiting);
        self.permits.clone().acquire_owned().await.ok()
    }
}

/// Takes one off a [`Gate`]'s `waiting` when dropped.
struct Waiter<'a>(&'a AtomicUsize);

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Caps {
    /// At most `per_endpoint` connections to one endpoint and `total` to all.
    pub fn new(per_endpoint: usize, total: usize) -> Arc<Self> {
        Arc::new(Self {
            total: Gate::new(total.max(1)),
            per_endpoint: per_endpoint.max(1),
            by_endpoint: Mutex::default(),
        })
    }

    fn endpoint(&self, authority: &Authority) -> Arc<Gate> {
        let mut map = self
            .by_endpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(authority.clone())
            .or_insert_with(|| Gate::new(self.per_endpoint))
            .clone()
    }

    /// The permits a connection to `authority` takes: that endpoint's, and the total's.
    pub fn room(&self, authority: &Authority) -> Room {
        Room {
            endpoint: self.endpoint(authority),
            total: self.total.clone(),
        }
    }

    /// Connections open to `authority` now (for tests and `/metrics`).
    pub fn open_to(&self, authority: &Authority) -> usize {
        let map = self
            .by_endpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(authority)
            .map_or(0, |g| self.per_endpoint - g.permits.available_permits())
    }
}

/// The two caps a connection to one endpoint counts against.
#[derive(Debug, Clone)]
pub struct Room {
    endpoint: Arc<Gate>,
    total: Arc<Gate>,
}

impl Room {
    /// Whether a connect waits for a permit of either cap now: a connection that finishes
    /// its exchange should then close, not go idle (see `pool`).
    pub fn is_wanted(&self) -> bool {
        self.endpoint.waiting.load(Ordering::Acquire) > 0
            || self.total.waiting.load(Ordering::Acquire) > 0
    }

    /// Whether the endpoint's or the total cap is reached: a connect would have to wait.
    pub fn is_full(&self) -> bool {
        self.endpoint.permits.available_permits() == 0
            || self.total.permits.available_permits() == 0
    }

    /// One of the endpoint's permits, waiting (and counted as waiting) if none is free.
    #[cfg(test)]
    pub(crate) async fn endpoint_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.endpoint.take().await
    }
}

/// An [`HttpConnector`] that takes its permits first.
#[derive(Debug, Clone)]
pub struct CappedConnector {
    http: HttpConnector<Resolver>,
    caps: Arc<Caps>,
    wait: Duration,
}

impl CappedConnector {
    /// Connects with `http` under `caps`, waiting at most `wait` for a permit.
    pub fn new(http: HttpConnector<Resolver>, caps: Arc<Caps>, wait: Duration) -> Self {
        Self { http, caps, wait }
    }

    /// The caps it connects under.
    pub fn caps(&self) -> &Arc<Caps> {
        &self.caps
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<Uri> for CappedConnector {
    type Response = CappedStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<CappedStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let caps = self.caps.clone();
        let wait = self.wait;
        let mut http = self.http.clone();
        Box::pin(async move {
            let endpoint = uri.authority().map(|a| caps.endpoint(a));
            let permits = tokio::time::timeout(wait, async {
                let one = match endpoint {
                    Some(gate) => gate.take().await,
                    None => None,
                };
                let all = caps.total.take().await;
                (one, all)
            })
            .await
            .map_err(|_| CapReached)?;
            let io = http.call(uri).await?;
            Ok(CappedStream {
                io,
                _permits: permits,
            })
        })
    }
}

/// An upstream connection holding its permits until it closes.
#[derive(Debug)]
pub struct CappedStream {
    io: TokioIo<TcpStream>,
    _permits: (Option<OwnedSemaphorePermit>, Option<OwnedSemaphorePermit>),
}

impl Connection for CappedStream {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl Read for CappedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for CappedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
