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
    total: Arc<Semaphore>,
    per_endpoint: usize,
    by_endpoint: Mutex<HashMap<Authority, Arc<Semaphore>>>,
}

impl Caps {
    /// At most `per_endpoint` connections to one endpoint and `total` to all.
    pub fn new(per_endpoint: usize, total: usize) -> Arc<Self> {
        Arc::new(Self {
            total: Arc::new(Semaphore::new(total.max(1))),
            per_endpoint: per_endpoint.max(1),
            by_endpoint: Mutex::default(),
        })
    }

    fn endpoint(&self, authority: &Authority) -> Arc<Semaphore> {
        let mut map = self
            .by_endpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(authority.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_endpoint)))
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
            .map_or(0, |s| self.per_endpoint - s.available_permits())
    }
}

/// The two semaphores a connection to one endpoint takes its permits from.
#[derive(Debug, Clone)]
pub struct Room {
    endpoint: Arc<Semaphore>,
    total: Arc<Semaphore>,
}

impl Room {
    /// A room over these two semaphores (for tests).
    #[cfg(test)]
    pub(crate) fn new(endpoint: Arc<Semaphore>, total: Arc<Semaphore>) -> Self {
        Self { endpoint, total }
    }

    /// Whether either cap is reached now: a connection opened next would have to wait.
    pub fn is_full(&self) -> bool {
        self.endpoint.available_permits() == 0 || self.total.available_permits() == 0
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
                    Some(sem) => sem.acquire_owned().await.ok(),
                    None => None,
                };
                let all = caps.total.clone().acquire_owned().await.ok();
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
