//! Tunnels: CONNECT requests to a service that opted in (`allow_connect`), and the byte copy
//! both ways that they share with upgraded connections (WebSocket).
//!
//! **CONNECT** (RFC 9110 §9.3.6) names no path, only `host:port`. `forward` routes it by that
//! host to the route with prefix `/` (a host's own `/` route first, then the any-host one),
//! since no other prefix can match an empty path; a request that finds no such route, or one
//! whose service does not allow CONNECT, gets 405 with `Allow`. Rate limits apply as to any
//! request. The CONNECT is then forwarded as it came, as Envoy's CONNECT upgrade does: the
//! client's target in the request line, its headers without the hop-by-hop ones and with the
//! `X-Forwarded-*` ones, to one endpoint on a fresh connection that never returns to the pool.
//! The endpoint (a forward proxy, a tunnel terminator) decides what the target means. A 2xx
//! answer turns both connections into a tunnel; any other answer is passed on as is. Failures
//! are sorted by `blame` like any request's: a refused connect or a 5xx is the endpoint's.
//!
//! **A tunnel** lives until either side closes it or until no byte has crossed it, either
//! way, for the idle timeout (`--idle-timeout`, checked every half period, so it closes
//! between one and one and a half times that after going quiet). Until then it holds its
//! client connection's slot under `--max-connections` (the client stream carries it) and its
//! upstream connection's permits under the upstream caps (the upstream stream carries them),
//! and it counts in `gw_tunnels_open`. An HTTP/2 client connection also counts it as a request
//! in flight, so the connection's own idle timeout never cuts a tunnel that is in use.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, HeaderValue, TRANSFER_ENCODING};
use http::uri::{Authority, PathAndQuery, Uri};
use http::{Request, Response, Version};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower::ServiceExt;

use crate::config::gateway::Gateway;
use crate::config::snapshot::Service;
use crate::proxy::headers::{set_forwarded, strip_hop_by_hop};
use crate::proxy::idle::InFlight;
use crate::proxy::responses::{self, Canned};
use crate::stats::{GlobalStats, UpstreamError};
use crate::upstream::blame::{self, Blame};
use crate::upstream::response::ResponseBody;

/// Forwards the CONNECT `req` (already routed to `svc`, which allows it, and rate-limited) to
/// one of `svc`'s endpoints. On a 2xx answer the tunnel is spawned, to run once the client
/// has the answer; the answer is returned either way.
pub async fn connect(
    gw: &Arc<Gateway>,
    svc: &Service,
    mut req: Request<Incoming>,
    host: Option<HeaderValue>,
    peer_ip: IpAddr,
    tls: bool,
    idle: Duration,
) -> Result<Response<ResponseBody>, Canned> {
    // The target must be `host:port` (authority-form; HTTP/2's :authority).
    let Some(target) = req
        .uri()
        .authority()
        .filter(|a| a.port_u16().is_some())
        .cloned()
    else {
        return Err(responses::BAD_CONNECT_TARGET);
    };
    let Some((_, endpoint)) = svc.balancer.pick() else {
        return Err(responses::NO_ENDPOINT);
    };
    let endpoint = endpoint.clone();
    let client_side = hyper::upgrade::on(&mut req);
    let busy = req.extensions_mut().remove::<InFlight>();
    let (mut parts, _empty) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    set_forwarded(&mut parts.headers, peer_ip, host.as_ref(), tls);
    if !parts.headers.contains_key(HOST) {
        // HTTP/2 carries the target in :authority only; HTTP/1.1 wants it in Host too.
        if let Ok(v) = HeaderValue::from_str(target.as_str()) {
            parts.headers.insert(HOST, v);
        }
    }
    parts.version = Version::HTTP_11;
    parts.uri = authority_form(target);
    let upstream_req = Request::from_parts(parts, Empty::<Bytes>::new());

    // Bounded like a bodyless request: connect, handshake and answer within the request
    // timeout (the connect itself within the connect timeout, in the connector).
    let attempt = async {
        let address = endpoint
            .uri(PathAndQuery::from_static("/"))
            .map_err(|_| Blame::Backend(UpstreamError::Other))?;
        let conn = svc
            .connector
            .clone()
            .oneshot(address)
            .await
            .map_err(|e| blame::blame_unpooled(&*e, true))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(conn)
            .await
            .map_err(|e| blame::blame_unpooled(&e, false))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "CONNECT upstream connection ended with an error");
            }
        });
        sender
            .send_request(upstream_req)
            .await
            .map_err(|e| blame::blame_unpooled(&e, false))
    };
    let mut resp = match tokio::time::timeout(svc.request_timeout, attempt).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(Blame::Backend(kind))) => {
            svc.stats.upstream_error(kind);
            endpoint.record_failure();
            tracing::debug!(service = %svc.name, endpoint = %endpoint.url, kind = kind.label(), "CONNECT upstream failed");
            return Err(responses::BAD_GATEWAY);
        }
        Ok(Err(Blame::Local)) => {
            svc.stats.local_error();
            tracing::warn!(service = %svc.name, endpoint = %endpoint.url, "CONNECT upstream attempt failed for lack of local resources");
            return Err(responses::OVERLOADED);
        }
        Ok(Err(Blame::Client(fault))) => {
            return Err(responses::client_fault(fault));
        }
        Err(_) => {
            svc.stats.upstream_error(UpstreamError::Timeout);
            endpoint.record_failure();
            return Err(responses::GATEWAY_TIMEOUT);
        }
    };
    if let Err(why) = blame::check_response(resp.status(), resp.headers(), false) {
        svc.stats.upstream_error(UpstreamError::Other);
        endpoint.record_failure();
        tracing::debug!(service = %svc.name, endpoint = %endpoint.url, why, "malformed CONNECT response");
        return Err(responses::BAD_GATEWAY);
    }
    if resp.status().is_server_error() {
        endpoint.record_failure();
    } else {
        endpoint.record_success();
    }
    if resp.status().is_success() {
        // RFC 9110 §9.3.6: a 2xx to CONNECT has no content, whatever its headers say.
        resp.headers_mut().remove(CONTENT_LENGTH);
        resp.headers_mut().remove(TRANSFER_ENCODING);
        let upstream_side = hyper::upgrade::on(&mut resp);
        tokio::spawn(run(client_side, upstream_side, idle, gw.clone(), busy));
    }
    let body_idle = svc.response_body_timeout;
    Ok(resp.map(|b| ResponseBody::new(b, body_idle, endpoint, svc.stats.clone())))
}

/// `host:port` as a request target.
fn authority_form(target: Authority) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.authority = Some(target);
    // An authority alone is a valid URI (authority-form); the fallback is never taken.
    Uri::from_parts(parts).unwrap_or_default()
}

/// Joins the client's and the backend's upgraded connections once both are ready and copies
/// bytes both ways until either side closes or nothing crosses for `idle`.
///
/// `busy`, when given, is held until the tunnel ends: it keeps the client connection's idle
/// timer from closing a connection that still carries a tunnel. That matters on HTTP/2, where
/// the connection outlives the CONNECT stream's response and sees no read while only the
/// backend sends (an HTTP/1.1 connection hands its socket over to the tunnel instead).
pub async fn run(
    client: OnUpgrade,
    upstream: OnUpgrade,
    idle: Duration,
    gw: Arc<Gateway>,
    busy: Option<InFlight>,
) {
    let _busy = busy;
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let _open = Open::new(&gw.global);
    let moved = AtomicU64::new(0);
    let mut client = Watched {
        io: TokioIo::new(client),
        moved: &moved,
    };
    let mut upstream = Watched {
        io: TokioIo::new(upstream),
        moved: &moved,
    };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copy);
    let half = idle / 2;
    let mut seen = 0;
    let mut quiet_ticks = 0;
    loop {
        tokio::select! {
            result = &mut copy => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "tunnel closed with an error");
                }
                return;
            }
            () = tokio::time::sleep(half) => {
                let now = moved.load(Ordering::Relaxed);
                if now == seen {
                    quiet_ticks += 1;
                    if quiet_ticks >= 2 {
                        gw.global.tunnels_idle_closed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(?idle, "idle tunnel closed");
                        return;
                    }
                } else {
                    quiet_ticks = 0;
                    seen = now;
                }
            }
        }
    }
}

/// One open tunnel in `gw_tunnels_open` while it lives.
struct Open<'a>(&'a GlobalStats);

impl<'a> Open<'a> {
    fn new(global: &'a GlobalStats) -> Self {
        global.tunnels_open.fetch_add(1, Ordering::Relaxed);
        global.tunnels_total.fetch_add(1, Ordering::Relaxed);
        Self(global)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.tunnels_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One side of a tunnel, counting reads that returned bytes into the tunnel's shared count
/// (both sides are polled by one task, so one relaxed add per read is all it costs).
struct Watched<'a, S> {
    io: S,
    moved: &'a AtomicU64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.moved.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<'_, S> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_is_sent_in_authority_form() {
        let uri = authority_form("tunnel.example:443".parse().unwrap());
        assert_eq!(uri.to_string(), "tunnel.example:443");
        assert!(uri.scheme().is_none() && uri.path_and_query().is_none());
    }
}
