//! The request path: route, authenticate, rate-limit, pick an endpoint, forward, stream the
//! answer back.
//!
//! Everything here reads the immutable [`Snapshot`] loaded once per request, so a request sees
//! one config version from start to end, and a config update never waits for requests.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use http::header::{ALLOW, HOST, HeaderValue, REFERER, RETRY_AFTER, USER_AGENT, WWW_AUTHENTICATE};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;

use crate::access_log::body::{BytesIn, Logged, Pending, Sink};
use crate::access_log::{AccessLog, RateLimit, Record};
use crate::auth::{self, Refusal, credential};
use crate::config::gateway::Gateway;
use crate::config::router;
use crate::config::snapshot::Service;
use crate::limiter::policy::{self as ratelimit, Caller, Verdict};
use crate::proxy::headers::{
    RequestIds, TrustedProxies, X_REQUEST_ID, is_upgrade_request, set_forwarded, strip_hop_by_hop,
};
use crate::proxy::responses::{self, Canned, ProxyBody};
use crate::proxy::{host, path, tunnel};
use crate::stats::UpstreamError;
use crate::upstream::balancer::Endpoint;
use crate::upstream::blame::{self, Blame};
use crate::upstream::body::{BodyWatch, RequestBody, UpstreamBody};
use crate::upstream::client::Failed;
use crate::upstream::response::ResponseBody;

/// What the request path holds besides the config: the gateway's shared state, whose
/// `X-Forwarded-For` to believe, where request ids come from, and where HTTPS is served.
#[derive(Debug)]
pub struct Proxy {
    /// The config in force and the counters.
    pub gw: Arc<Gateway>,
    /// Whose `X-Forwarded-For` is believed.
    pub trusted: TrustedProxies,
    /// Request id source.
    pub ids: RequestIds,
    /// The TLS listener's port, where `https_redirect` services send plain-HTTP clients;
    /// `None`: this node serves no HTTPS, and nothing is redirected.
    pub https_port: Option<u16>,
    /// A tunnel (CONNECT, WebSocket) across which nothing moved for this long is closed.
    pub tunnel_idle_timeout: Duration,
    /// Where finished requests are logged (or not).
    pub log: AccessLog,
}

impl Sink for Proxy {
    fn access_log(&self) -> &AccessLog {
        &self.log
    }
}

/// What the access log wants to know that only routing and forwarding learn. Filled only
/// when `wanted`, so a gateway without an access log pays nothing for it.
#[derive(Default)]
struct Seen {
    wanted: bool,
    service: Option<Arc<str>>,
    limit: RateLimit,
    policy: Option<Arc<str>>,
    upstream: Option<Arc<str>>,
    upstream_status: Option<u16>,
    upstream_time: Option<Duration>,
    body: Option<Arc<BodyWatch>>,
}

impl Seen {
    fn endpoint(&mut self, endpoint: &Endpoint) {
        if self.wanted {
            self.upstream = Some(endpoint.url.clone());
        }
    }
}

/// Handles one client request that came over TLS (`tls`) or not. Never fails: every problem
/// becomes a response.
pub async fn handle(
    proxy: Arc<Proxy>,
    peer: SocketAddr,
    tls: bool,
    mut req: Request<Incoming>,
) -> Response<Logged<ProxyBody>> {
    let start = Instant::now();
    let request_id = match req.headers().get(&X_REQUEST_ID) {
        Some(id) => id.clone(),
        None => {
            let id = proxy.ids.next();
            req.headers_mut().insert(&X_REQUEST_ID, id.clone());
            id
        }
    };
    // IPv4 clients of a dual-stack listener appear as ::ffff:a.b.c.d; they are IPv4 clients.
    let peer_ip = peer.ip().to_canonical();
    let client_ip = proxy.trusted.client_ip(peer_ip, req.headers());
    // Raw values only; the writer thread formats them.
    let record = proxy.log.enabled().then(|| Record {
        time: SystemTime::now(),
        client_ip,
        method: req.method().clone(),
        // An API key in the query is not written down (whichever service it is for).
        path: req.uri().path_and_query().map(credential::redact_query_key),
        version: req.version(),
        request_id: Some(request_id.clone()),
        user_agent: req.headers().get(USER_AGENT).cloned(),
        referer: req.headers().get(REFERER).cloned(),
        ..Record::default()
    });
    let mut seen = Seen {
        wanted: record.is_some(),
        ..Seen::default()
    };
    let mut resp = route_and_forward(&proxy, peer_ip, client_ip, tls, req, start, &mut seen).await;
    resp.headers_mut().insert(&X_REQUEST_ID, request_id);
    let pending = record.map(|mut record| {
        record.status = resp.status().as_u16();
        record.service = seen.service;
        record.rate_limit = seen.limit;
        record.rate_limit_policy = seen.policy;
        record.upstream = seen.upstream;
        record.upstream_status = seen.upstream_status;
        record.upstream_time = seen.upstream_time;
        Box::new(Pending {
            record,
            start,
            bytes_in: seen.body.map(|b| b as Arc<dyn BytesIn>),
            sink: proxy as Arc<dyn Sink>,
        })
    });
    resp.map(|body| Logged::new(body, pending))
}

async fn route_and_forward(
    proxy: &Proxy,
    peer_ip: IpAddr,
    client_ip: IpAddr,
    tls: bool,
    mut req: Request<Incoming>,
    start: Instant,
    seen: &mut Seen,
) -> Response<ProxyBody> {
    let gw = &proxy.gw;
    let Some(snap) = gw.current.load_full() else {
        gw.global.no_config.fetch_add(1, Ordering::Relaxed);
        return responses::NO_CONFIG.response();
    };
    let connect = req.method() == Method::CONNECT;
    // HTTP/2 carries the host in :authority (the URI); HTTP/1.1 in Host.
    let host = match host::check(req.version(), req.uri(), req.headers()) {
        Ok(host) => host,
        Err(e) => {
            tracing::debug!(error = ?e, "bad host");
            return responses::BAD_HOST.response();
        }
    };
    // Routed, limited and forwarded as normalised. A CONNECT has no path: it can only be the
    // `/` route's (see `tunnel`).
    if !connect && path::normalize_uri(req.uri_mut()).is_err() {
        return responses::BAD_PATH.response();
    }
    let path = if connect { "/" } else { req.uri().path() };
    let route = snap
        .routes
        .lookup(host.as_ref().and_then(|h| h.to_str().ok()), path);
    let Some(m) = route.filter(|m| !connect || snap.services[m.service].allow_connect) else {
        if connect {
            let mut resp = responses::CONNECT_NOT_ALLOWED.response();
            resp.headers_mut()
                .insert(ALLOW, HeaderValue::from_static(responses::ALLOWED_METHODS));
            return resp;
        }
        gw.global.no_route.fetch_add(1, Ordering::Relaxed);
        return responses::NO_ROUTE.response();
    };
    let svc = &snap.services[m.service];
    if seen.wanted {
        seen.service = Some(svc.name.clone());
    }
    // A redirect means nothing to a CONNECT client: tunnels are the service's own choice.
    if !tls
        && !connect
        && svc.https_redirect
        && let Some(port) = proxy.https_port
    {
        let resp = responses::https_redirect(host.as_ref(), port, req.uri());
        svc.stats.record(resp.status().as_u16(), start.elapsed());
        return resp;
    }
    // Only the gateway says who the consumer is, on every service.
    credential::remove_identity(req.headers_mut());
    // Hop-by-hop headers go before anything reads or sets headers: a client's `Connection:
    // x-consumer-groups` must not remove what authentication sets below.
    let upgrade =
        !connect && req.version() == Version::HTTP_11 && is_upgrade_request(req.headers());
    if !connect {
        strip_hop_by_hop(req.headers_mut(), upgrade);
    }
    // The consumer's counters count the requests that authenticated, once answered.
    let mut consumer = None;
    let caller = match &svc.auth {
        None => Caller::default(),
        Some(service_auth) => {
            match auth::authenticate(
                service_auth,
                &snap.keys,
                &gw.auth_failures,
                client_ip,
                &mut req,
                start,
            ) {
                Ok(who) => {
                    svc.stats.auth_accepted();
                    consumer = Some(&who.stats);
                    Caller {
                        name: Some(&who.name),
                        groups: &who.groups,
                    }
                }
                Err(refusal) => {
                    let resp = refused(svc, refusal, client_ip);
                    svc.stats.record(resp.status().as_u16(), start.elapsed());
                    return resp;
                }
            }
        }
    };
    let limit = ratelimit::check(&svc.policies, client_ip, req.headers(), caller, start).await;
    let limit_headers = match limit {
        Verdict::Rejected(i, d) => {
            if seen.wanted {
                seen.limit = RateLimit::Rejected;
                seen.policy = Some(svc.policies[i].limiter.shared_name().clone());
            }
            let mut resp = responses::rate_limited(d.retry_after_secs);
            ratelimit::add_headers(resp.headers_mut(), &svc.policies[i], &d);
            svc.stats.rate_limited();
            svc.stats.record(resp.status().as_u16(), start.elapsed());
            if let Some(c) = consumer {
                c.rate_limited();
                c.record(resp.status().as_u16());
            }
            return resp;
        }
        Verdict::Allowed(tightest) => {
            if seen.wanted
                && let Some((i, _)) = tightest
            {
                seen.limit = RateLimit::Allowed;
                seen.policy = Some(svc.policies[i].limiter.shared_name().clone());
            }
            tightest
        }
    };

    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

    let mut resp = if connect {
        let idle = proxy.tunnel_idle_timeout;
        tunnel::connect(gw, svc, req, host, peer_ip, tls, idle).await
    } else {
        forward(
            svc,
            m.prefix_len,
            req,
            host,
            peer_ip,
            upgrade,
            tls,
            start,
            seen,
        )
        .await
    };
    if seen.upstream.is_some() && seen.upstream_time.is_none() {
        // The attempt failed: the upstream time is how long it took to fail.
        seen.upstream_time = Some(start.elapsed());
    }
    if let Some(client_upgrade) = client_upgrade {
        match resp.as_mut() {
            Ok(r) if r.status() == StatusCode::SWITCHING_PROTOCOLS => {
                let upstream_upgrade = hyper::upgrade::on(r);
                let idle = proxy.tunnel_idle_timeout;
                tokio::spawn(tunnel::run(
                    client_upgrade,
                    upstream_upgrade,
                    idle,
                    gw.clone(),
                    // An HTTP/1.1 upgrade takes the socket away from hyper, and the
                    // connection's idle timer ends with hyper's connection task.
                    None,
                ));
            }
            _ => {}
        }
    }
    let mut resp = match resp {
        Ok(r) => {
            let (mut parts, body) = r.into_parts();
            strip_hop_by_hop(
                &mut parts.headers,
                upgrade && parts.status == StatusCode::SWITCHING_PROTOCOLS,
            );
            Response::from_parts(parts, Either::Left(body))
        }
        Err(canned) => canned.response(),
    };
    if let Some((i, d)) = limit_headers {
        ratelimit::add_headers(resp.headers_mut(), &svc.policies[i], &d);
    }
    svc.stats.record(resp.status().as_u16(), start.elapsed());
    if let Some(c) = consumer {
        c.record(resp.status().as_u16());
    }
    resp
}

/// The answer to a request authentication refused; counted, and logged with the reason the
/// client is not told.
fn refused(svc: &Service, refusal: Refusal, client: IpAddr) -> Response<ProxyBody> {
    let reason = refusal.reason();
    svc.stats.auth_failed(reason);
    match refusal {
        Refusal::Throttled(retry_after) => {
            tracing::debug!(service = %svc.name, %client, "authentication throttled");
            let mut resp = responses::AUTH_THROTTLED.response();
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after));
            resp
        }
        Refusal::Failed(crate::stats::AuthFailure::Forbidden) => {
            tracing::info!(service = %svc.name, %client, reason = reason.label(), "authentication refused");
            responses::FORBIDDEN.response()
        }
        Refusal::Failed(_) | Refusal::Jwt(_) => {
            if let Refusal::Jwt(check) = refusal {
                // Which check failed, for the operator; never the token.
                tracing::info!(service = %svc.name, %client, reason = reason.label(), %check, "JWT refused");
            } else if reason == crate::stats::AuthFailure::Missing {
                tracing::debug!(service = %svc.name, %client, reason = reason.label(), "authentication refused");
            } else {
                tracing::info!(service = %svc.name, %client, reason = reason.label(), "authentication refused");
            }
            let mut resp = responses::UNAUTHORIZED.response();
            resp.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static(responses::WWW_AUTHENTICATE_VALUE),
            );
            resp
        }
    }
}

/// RFC 9110 §9.2.2 idempotent methods. Only these, and only without a body, are retried.
fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    svc: &Service,
    prefix_len: usize,
    req: Request<Incoming>,
    host: Option<HeaderValue>,
    peer_ip: std::net::IpAddr,
    upgrade: bool,
    tls: bool,
    start: Instant,
    seen: &mut Seen,
) -> Result<Response<ResponseBody>, Canned> {
    let Some((mut index, mut endpoint)) = svc.balancer.pick() else {
        return Err(responses::NO_ENDPOINT);
    };
    seen.endpoint(endpoint);
    let (mut parts, body) = req.into_parts();
    let path: PathAndQuery = if svc.strip_prefix && prefix_len > 0 {
        match parts.uri.path_and_query() {
            Some(pq) => router::strip_prefix(pq, prefix_len).ok_or(responses::BAD_REQUEST)?,
            None => PathAndQuery::from_static("/"),
        }
    } else {
        parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"))
    };
    // Hop-by-hop headers were stripped before authentication (`route_and_forward`).
    // X-Forwarded-For gets the address that connected to us (as nginx's
    // $proxy_add_x_forwarded_for does): behind a trusted proxy, the client is already listed.
    set_forwarded(&mut parts.headers, peer_ip, host.as_ref(), tls);
    if !parts.headers.contains_key(HOST)
        && let Some(host) = host
    {
        // An HTTP/2 client sent :authority; the backend speaks HTTP/1.1 and gets it as Host.
        parts.headers.insert(HOST, host);
    }
    // Upstream connections are HTTP/1.1 whatever the client spoke, and the URI goes in
    // origin form (the connection is the endpoint's; `Host` says which site).
    parts.version = Version::HTTP_11;
    parts.uri = Uri::from(path);

    let bodyless = body.is_end_stream();
    let (body, watch): (UpstreamBody, _) = if bodyless {
        (Either::Right(Empty::new()), None)
    } else {
        let (body, watch) = RequestBody::new(body, svc.request_body_timeout);
        if seen.wanted {
            seen.body = Some(watch.clone());
        }
        (Either::Left(body), Some(watch))
    };
    // Keeping a copy to retry costs a header-map clone, so only retryable requests pay it.
    let retry = (bodyless && !upgrade && is_idempotent(&parts.method)).then(|| {
        (
            parts.method.clone(),
            parts.uri.clone(),
            parts.headers.clone(),
        )
    });
    // The request timeout runs from when the request is fully sent: from the start for a
    // bodyless request (retries included), from the body's last byte for an upload.
    let timeout = svc.request_timeout;
    let body_ended = watch.clone();
    let timer = async move {
        match body_ended {
            None => tokio::time::sleep_until(tokio::time::Instant::from_std(start) + timeout).await,
            Some(watch) => {
                // Also ends when the body failed or was dropped unsent: the request future
                // then ends on its own, so starting the clock is harmless.
                watch.ended().await;
                tokio::time::sleep(timeout).await;
            }
        }
    };
    tokio::pin!(timer);

    let mut req = Request::from_parts(parts, body);
    let mut retried = false;
    // Set for the one attempt on a new connection after a pooled one turned out stale.
    let mut fresh = false;
    // A request gets one such attempt in all, whichever endpoint it goes to: a GET is never
    // sent more than three times (stale, fresh, then the one retry on the next endpoint).
    let mut stale_retried = false;
    loop {
        let failed = tokio::select! {
            result = svc.client.send(endpoint, req, fresh) => match result {
                Ok((resp, lease)) => {
                    if let Err(why) = blame::check_response(resp.status(), resp.headers(), upgrade) {
                        svc.stats.upstream_error(UpstreamError::Other);
                        endpoint.record_failure();
                        tracing::debug!(service = %svc.name, endpoint = %endpoint.url, why, "malformed upstream response");
                        return Err(responses::BAD_GATEWAY);
                    }
                    if seen.wanted {
                        seen.upstream_status = Some(resp.status().as_u16());
                        seen.upstream_time = Some(start.elapsed());
                    }
                    if resp.status().is_server_error() {
                        endpoint.record_failure();
                    } else {
                        endpoint.record_success();
                    }
                    let idle = svc.response_body_timeout;
                    return Ok(resp.map(|b| {
                        ResponseBody::pooled(b, idle, endpoint.clone(), svc.stats.clone(), lease)
                    }));
                }
                Err(failed) => failed,
            },
            () = &mut timer => {
                svc.stats.upstream_error(UpstreamError::Timeout);
                tracing::debug!(service = %svc.name, endpoint = %endpoint.url, "upstream timed out");
                return Err(responses::GATEWAY_TIMEOUT);
            }
        };
        let Failed {
            error: err,
            reused,
            unsent,
        } = failed;
        let client_fault = watch.as_ref().and_then(|w| w.fault());
        // A pooled connection the backend closed while it sat idle (keep-alive timeouts race
        // with reuse) is not the endpoint failing: the request goes once more, on a new
        // connection to the same endpoint, uncounted, if it never left or may be repeated.
        if reused && !stale_retried && client_fault.is_none() && blame::is_stale(err.cause()) {
            let again = match unsent {
                Some(req) => Some(req),
                None => retry.as_ref().map(replay),
            };
            if let Some(again) = again {
                tracing::debug!(service = %svc.name, endpoint = %endpoint.url, error = %err, "stale pooled connection; sending again on a new one");
                fresh = true;
                stale_retried = true;
                req = again;
                continue;
            }
        }
        let kind = match blame::blame(err.cause(), err.is_connect(), client_fault) {
            Blame::Backend(kind) => kind,
            Blame::Client(fault) => {
                tracing::debug!(service = %svc.name, ?fault, error = %err, "request failed on the client's side");
                return Err(responses::client_fault(fault));
            }
            Blame::Local => {
                svc.stats.local_error();
                tracing::warn!(service = %svc.name, endpoint = %endpoint.url, error = %err, "upstream attempt failed for lack of local resources");
                return Err(responses::OVERLOADED);
            }
        };
        svc.stats.upstream_error(kind);
        endpoint.record_failure();
        if endpoint.tls
            && let Some(why) = tls_failure(err.cause())
        {
            // A certificate the service does not trust is a configuration problem worth
            // seeing without debug logs; it costs a log line only on this failure.
            tracing::warn!(service = %svc.name, endpoint = %endpoint.url, error = %why,
                "upstream TLS handshake failed; answering 502");
        } else {
            tracing::debug!(service = %svc.name, endpoint = %endpoint.url, error = %err, kind = kind.label(), "upstream failed");
        }
        let Some(copy) = retry.as_ref().filter(|_| !retried) else {
            return Err(responses::BAD_GATEWAY);
        };
        let Some((next, ep)) = svc.balancer.after(index) else {
            return Err(responses::BAD_GATEWAY);
        };
        retried = true;
        fresh = false;
        svc.stats.retried();
        index = next;
        endpoint = ep;
        seen.endpoint(endpoint);
        req = replay(copy);
    }
}

/// A bodyless request again, from its kept method, URI and headers.
fn replay((method, uri, headers): &(Method, Uri, http::HeaderMap)) -> Request<UpstreamBody> {
    let mut again = Request::new(Either::Right(Empty::new()));
    *again.method_mut() = method.clone();
    *again.uri_mut() = uri.clone();
    *again.headers_mut() = headers.clone();
    *again.version_mut() = Version::HTTP_11;
    again
}

/// The TLS error inside a failed attempt's cause, if the failure was the TLS handshake (a
/// certificate not trusted, a name mismatch).
fn tls_failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(tls.to_string());
        }
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_methods() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::TRACE,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(is_idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&m), "{m}");
        }
    }
}
