//! Connections to backends: one pooled keep-alive HTTP/1.1 client per distinct connect
//! timeout and TLS settings, shared by every service that has them and kept across config
//! versions (so a config update does not drop warm connections). `https://` endpoints go
//! through [`crate::upstream::tls`] on top of the capped TCP connection ([`Connector`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::{Either, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio_rustls::client::TlsStream;

use crate::fds::FdBudget;
use crate::upstream::body::RequestBody;
use crate::upstream::connect::{
    CappedConnector, CappedStream, Caps, DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT,
};
use crate::upstream::dns::Resolver;
use crate::upstream::tls::{TlsSpec, UpstreamTls};

/// The body sent upstream: the client's streamed body, watched, or nothing (which is also
/// what a retry sends, since only bodyless requests are retried).
pub type UpstreamBody = Either<RequestBody, Empty<Bytes>>;

/// A pooled client.
pub type UpstreamClient = Client<Connector, UpstreamBody>;

/// How long an idle pooled connection is kept. Below the 60 s idle timeout common in backends
/// (nginx keepalive_timeout 75 s, Node 5 s aside), so we rarely reuse a connection the backend
/// is about to close.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// Idle connections kept per backend. Enough to absorb bursts without hoarding sockets.
const POOL_MAX_IDLE_PER_HOST: usize = 256;

/// Clients by connect timeout and TLS settings, all under one set of connection caps.
#[derive(Debug)]
pub struct Clients {
    caps: Arc<Caps>,
    resolver: Resolver,
    by_settings: Mutex<HashMap<(Duration, TlsSpec), (UpstreamClient, Connector)>>,
}

impl Default for Clients {
    /// The default per-endpoint cap, and this process's file-descriptor share for the total.
    fn default() -> Self {
        Self::new(
            Caps::new(
                DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT,
                FdBudget::current().upstream_connections,
            ),
            Resolver::default(),
        )
    }
}

impl Clients {
    /// Clients whose connections count against `caps`, resolving names with `resolver`.
    pub fn new(caps: Arc<Caps>, resolver: Resolver) -> Self {
        Self {
            caps,
            resolver,
            by_settings: Mutex::default(),
        }
    }

    /// The resolver every client (and health check) uses.
    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// The caps every client's connections count against.
    pub fn caps(&self) -> &Arc<Caps> {
        &self.caps
    }

    /// The client for `connect_timeout` and `tls`, created on first use. Off the request path.
    pub fn get(&self, connect_timeout: Duration, tls: &Arc<UpstreamTls>) -> UpstreamClient {
        self.entry(connect_timeout, tls).0
    }

    /// The connector under that client: for connections that leave the pool at once (CONNECT
    /// tunnels), under the same caps.
    pub fn connector(&self, connect_timeout: Duration, tls: &Arc<UpstreamTls>) -> Connector {
        self.entry(connect_timeout, tls).1
    }

    fn entry(
        &self,
        connect_timeout: Duration,
        tls: &Arc<UpstreamTls>,
    ) -> (UpstreamClient, Connector) {
        let mut map = self
            .by_settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry((connect_timeout, tls.spec().clone()))
            .or_insert_with(|| {
                build(
                    connect_timeout,
                    self.caps.clone(),
                    self.resolver.clone(),
                    tls.clone(),
                )
            })
            .clone()
    }
}

fn build(
    connect_timeout: Duration,
    caps: Arc<Caps>,
    resolver: Resolver,
    tls: Arc<UpstreamTls>,
) -> (UpstreamClient, Connector) {
    let mut http = HttpConnector::new_with_resolver(resolver);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    // https:// URIs too: the TLS layer is ours (`Connector`).
    http.enforce_http(false);
    let connector = Connector {
        capped: CappedConnector::new(http, caps, connect_timeout),
        tls,
    };
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector.clone());
    (client, connector)
}

/// Connects to `http://` endpoints over (capped) TCP and to `https://` ones over TCP + TLS
/// (through [`UpstreamTls::connect`], SNI = the URI's host). The pool keys connections by
/// scheme and authority, so the two never mix.
#[derive(Debug, Clone)]
pub struct Connector {
    capped: CappedConnector,
    tls: Arc<UpstreamTls>,
}

/// A backend connection, plain or TLS, holding its connection-cap permits.
#[derive(Debug)]
pub enum Conn {
    /// `http://`.
    Plain(CappedStream),
    /// `https://` (boxed: a TLS session is a kilobyte, and this is made once per connection).
    Tls(Box<TokioIo<TlsStream<TokioIo<CappedStream>>>>),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower::Service::<Uri>::poll_ready(&mut self.capped, cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().unwrap_or_default().to_owned();
        let connecting = tower::Service::<Uri>::call(&mut self.capped, uri);
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = connecting.await?;
            if !https {
                return Ok(Conn::Plain(tcp));
            }
            let tls = tls.connect(TokioIo::new(tcp), &host).await?;
            Ok(Conn::Tls(Box::new(TokioIo::new(tls))))
        })
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        match self {
            Conn::Plain(io) => io.connected(),
            Conn::Tls(io) => io.inner().get_ref().0.inner().connected(),
        }
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Conn::Tls(io) => Pin::new(&mut **io).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Conn::Tls(io) => Pin::new(&mut **io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_flush(cx),
            Conn::Tls(io) => Pin::new(&mut **io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Conn::Tls(io) => Pin::new(&mut **io).poll_shutdown(cx),
        }
    }
}
