//! Connecting and sending to backends: one [`UpstreamClient`] per distinct connect timeout
//! and TLS settings, shared by every service that has them and kept across config versions.
//! A request goes on an idle keep-alive connection of its endpoint (`pool`) or on a new one,
//! opened through [`Connector`] (capped TCP, see `connect`, and for `https://` endpoints TLS
//! through [`crate::upstream::tls`]) and driven by hyper's HTTP/1.1 client connection
//! (`hyper::client::conn::http1`, as hyper's maintainers advise for proxies), in a task of its
//! own. Backends are spoken to in HTTP/1.1 only.
//!
//! What the legacy pooled client did for us and is done here instead: a `Host` header when
//! the request has none (the endpoint's authority), and, in [`reusable`], the rule that a
//! connection whose answer was `Connection: close`, an upgrade, or HTTP/1.0 without
//! keep-alive is not pooled. The retry of a request that failed on a stale pooled
//! connection is the request path's (`proxy::forward`), told by [`Failed::reused`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{CONNECTION, HOST, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio_rustls::client::TlsStream;

use crate::fds::FdBudget;
use crate::upstream::balancer::Endpoint;
use crate::upstream::body::UpstreamBody;
use crate::upstream::connect::{
    CappedConnector, CappedStream, Caps, DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT,
};
use crate::upstream::dns::Resolver;
use crate::upstream::pool::{self, Pool, Sender};
use crate::upstream::response::Lease;
use crate::upstream::tls::{TlsSpec, UpstreamTls};

/// Clients by connect timeout and TLS settings, all under one set of connection caps and one
/// idle-connection pool.
#[derive(Debug)]
pub struct Clients {
    caps: Arc<Caps>,
    resolver: Resolver,
    pool: Arc<Pool>,
    by_settings: Mutex<HashMap<(Duration, TlsSpec), UpstreamClient>>,
}

impl Default for Clients {
    /// The default per-endpoint cap, this process's file-descriptor share for the total, and
    /// the default idle-connection settings.
    fn default() -> Self {
        Self::new(
            Caps::new(
                DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT,
                FdBudget::current().upstream_connections,
            ),
            Resolver::default(),
            pool::Settings::default(),
        )
    }
}

impl Clients {
    /// Clients whose connections count against `caps`, resolving names with `resolver`,
    /// keeping idle connections as `idle` says.
    pub fn new(caps: Arc<Caps>, resolver: Resolver, idle: pool::Settings) -> Self {
        Self {
            caps,
            resolver,
            pool: Pool::new(idle),
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

    /// The idle-connection pool's settings.
    pub fn pool_settings(&self) -> pool::Settings {
        self.pool.settings()
    }

    /// The client for `connect_timeout` and `tls`, created on first use. Off the request path.
    pub fn get(&self, connect_timeout: Duration, tls: &Arc<UpstreamTls>) -> UpstreamClient {
        let mut map = self
            .by_settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Tags tell apart connections opened under different settings (see `pool`).
        let tag = u32::try_from(map.len()).unwrap_or(u32::MAX);
        map.entry((connect_timeout, tls.spec().clone()))
            .or_insert_with(|| UpstreamClient {
                connector: Connector::new(
                    connect_timeout,
                    self.caps.clone(),
                    self.resolver.clone(),
                    tls.clone(),
                ),
                pool: self.pool.clone(),
                tag,
            })
            .clone()
    }

    /// The connector under that client: for connections that leave the pool at once (CONNECT
    /// tunnels), under the same caps.
    pub fn connector(&self, connect_timeout: Duration, tls: &Arc<UpstreamTls>) -> Connector {
        self.get(connect_timeout, tls).connector
    }
}

/// Sends requests to endpoints over their pooled connections, or new ones.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    connector: Connector,
    pool: Arc<Pool>,
    /// Marks the connections it opens (see `pool`).
    tag: u32,
}

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening the connection failed (a cap, DNS, TCP or the TLS handshake).
    #[error("connect: {0}")]
    Connect(#[source] BoxError),
    /// The exchange on the connection failed.
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl Error {
    /// Whether it failed while opening the connection.
    pub fn is_connect(&self) -> bool {
        matches!(self, Error::Connect(_))
    }

    /// The failure itself, for `blame` and TLS diagnosis to look through.
    pub fn cause(&self) -> &(dyn std::error::Error + 'static) {
        match self {
            Error::Connect(e) => &**e,
            Error::Http(e) => e,
        }
    }
}

/// A failed attempt.
#[derive(Debug)]
pub struct Failed {
    /// What went wrong.
    pub error: Error,
    /// It failed on a pooled connection, not a new one: the backend may have closed the
    /// connection while it was idle (a stale connection), not failed the request.
    pub reused: bool,
    /// The request, when it never left: safe to send again, whatever its method and body.
    pub unsent: Option<Request<UpstreamBody>>,
}

impl UpstreamClient {
    /// Sends `req` (origin-form URI) to `endpoint`, on its most recently used idle
    /// connection, or a new one if there is none or `fresh` asks for one. The answer comes
    /// with the connection's [`Lease`] if it may serve another request once the body is read.
    pub async fn send(
        &self,
        endpoint: &Arc<Endpoint>,
        mut req: Request<UpstreamBody>,
        fresh: bool,
    ) -> Result<(Response<Incoming>, Option<Lease>), Failed> {
        if !req.headers().contains_key(HOST)
            && let Ok(host) = HeaderValue::from_str(endpoint.authority.as_str())
        {
            // HTTP/1.1 requires Host; a client without one (HTTP/1.0) gets the endpoint's.
            req.headers_mut().insert(HOST, host);
        }
        let pooled = if fresh {
            None
        } else {
            // At a connection cap, a connection idle in another thread's slot serves rather
            // than the request waiting for a permit that connection holds.
            (endpoint.idle.checkout(self.tag)).or_else(|| endpoint.idle.checkout_at_cap(self.tag))
        };
        let reused = pooled.is_some();
        let mut sender = match pooled {
            Some(sender) => sender,
            None => match self.connect(endpoint).await {
                Ok(sender) => sender,
                Err(error) => {
                    return Err(Failed {
                        error,
                        reused,
                        unsent: Some(req),
                    });
                }
            },
        };
        match sender.try_send_request(req).await {
            Ok(resp) => {
                let lease = reusable(&resp).then(|| Lease::new(sender, self.tag));
                Ok((resp, lease))
            }
            Err(mut e) => {
                let unsent = e.take_message();
                Err(Failed {
                    error: Error::Http(e.into_error()),
                    reused,
                    unsent,
                })
            }
        }
    }

    /// Opens a connection to `endpoint` and starts its connection task.
    async fn connect(&self, endpoint: &Arc<Endpoint>) -> Result<Sender, Error> {
        self.pool.register(&endpoint.idle, || {
            self.connector.capped.caps().room(&endpoint.authority)
        });
        let address = endpoint
            .uri(PathAndQuery::from_static("/"))
            .map_err(|e| Error::Connect(e.into()))?;
        let io = self
            .connector
            .connect(address)
            .await
            .map_err(Error::Connect)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(async move {
            // With upgrades: a 101 answer hands the socket to the WebSocket tunnel.
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// Whether the connection a response came on may carry another exchange once its body is
/// read: not after an upgrade (the socket is the tunnel's) or a `Connection: close`, and for
/// an HTTP/1.0 answer only with `Connection: keep-alive` (RFC 9112 §9.3).
pub fn reusable<B>(resp: &Response<B>) -> bool {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        return false;
    }
    let has = |token: &str| {
        resp.headers().get_all(CONNECTION).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    // `close` wins over `keep-alive` when an answer carries both (RFC 9112 §9.3).
    !has("close") && (resp.version() != Version::HTTP_10 || has("keep-alive"))
}

/// Connects to `http://` endpoints over (capped) TCP and to `https://` ones over TCP + TLS
/// (through [`UpstreamTls::connect`], SNI = the URI's host).
#[derive(Debug, Clone)]
pub struct Connector {
    capped: CappedConnector,
    tls: Arc<UpstreamTls>,
}

impl Connector {
    fn new(
        connect_timeout: Duration,
        caps: Arc<Caps>,
        resolver: Resolver,
        tls: Arc<UpstreamTls>,
    ) -> Self {
        let mut http = HttpConnector::new_with_resolver(resolver);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        // https:// URIs too: the TLS layer is ours.
        http.enforce_http(false);
        Self {
            capped: CappedConnector::new(http, caps, connect_timeout),
            tls,
        }
    }

    /// Opens a connection to `uri`'s scheme and authority.
    pub fn connect(&self, uri: Uri) -> impl Future<Output = Result<Conn, BoxError>> + use<> {
        tower::Service::call(&mut self.clone(), uri)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_clean_keep_alive_answer_leaves_its_connection_reusable() {
        let cases: [(Version, StatusCode, &[&str], bool); 9] = [
            (Version::HTTP_11, StatusCode::OK, &[], true),
            (Version::HTTP_11, StatusCode::OK, &["close"], false),
            (
                Version::HTTP_11,
                StatusCode::OK,
                &["Keep-Alive, CLOSE"],
                false,
            ),
            (
                Version::HTTP_11,
                StatusCode::OK,
                &["keep-alive", "close"],
                false,
            ),
            (Version::HTTP_11, StatusCode::OK, &["keep-alive"], true),
            (
                Version::HTTP_11,
                StatusCode::SWITCHING_PROTOCOLS,
                &["upgrade"],
                false,
            ),
            (Version::HTTP_10, StatusCode::OK, &[], false),
            (Version::HTTP_10, StatusCode::OK, &["keep-alive"], true),
            (
                Version::HTTP_10,
                StatusCode::OK,
                &["keep-alive, close"],
                false,
            ),
        ];
        for (version, status, connection, want) in cases {
            let mut resp = Response::new(());
            *resp.version_mut() = version;
            *resp.status_mut() = status;
            for v in connection {
                resp.headers_mut()
                    .append(CONNECTION, HeaderValue::from_static(v));
            }
            assert_eq!(reusable(&resp), want, "{version:?} {status} {connection:?}");
        }
    }
}
