//! The admin listener: `/healthz`, `/readyz`, `/config` and `/metrics`.
//!
//! Everything here runs off the request path; `/metrics` reads atomics the proxy bumps.
//! With an admin token, `/config` and `/metrics` (which describe the deployment) need
//! `authorization: Bearer <token>`; the probes stay open. `/config` lists certificates by
//! name, SANs and expiry, never their keys.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;

use crate::access_log;
use crate::config::gateway::Gateway;
use crate::config::snapshot::Snapshot;
use crate::limiter::global::OnStoreError;
use crate::limiter::policy::Audience;
use crate::limiter::{KeySpec, Mode};
use crate::telemetry::metrics::{self, JwksGauge, LimiterGauge, MetricsView};
use crate::telemetry::store_metrics;

/// The admin token check for `/config` and `/metrics`.
#[derive(Debug, Clone)]
pub struct AdminAuth {
    /// `Bearer <token>`, when a token is set.
    expected: Option<Arc<[u8]>>,
}

impl AdminAuth {
    /// Requires `token` when it is set and not empty.
    pub fn new(token: Option<&gw_tls::Secret>) -> Self {
        Self {
            expected: token
                .filter(|t| !t.is_empty())
                .map(|t| Arc::from(format!("Bearer {}", t.expose()).into_bytes())),
        }
    }

    fn allows(&self, req: &Request<Incoming>) -> bool {
        let Some(expected) = &self.expected else {
            return true;
        };
        let presented = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .map_or(&[][..], |v| v.as_bytes());
        // Constant-time in the token's length: no early exit on the first differing byte.
        presented.len() == expected.len()
            && presented
                .iter()
                .zip(expected.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// Answers one admin request.
pub async fn handle(
    gw: Arc<Gateway>,
    auth: AdminAuth,
    access_log: Arc<access_log::Counters>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    }
    let path = req.uri().path();
    if matches!(path, "/config" | "/metrics") && !auth.allows(&req) {
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            "send 'authorization: Bearer <admin token>'\n",
        );
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if gw.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "no config loaded yet\n")
            }
        }
        "/config" => {
            let body = match gw.current.load_full() {
                Some(snap) => config_json(&snap),
                None => json!({ "version": 0, "services": [], "policies": [] }),
            };
            let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        "/metrics" => {
            let limiters = gw
                .reuse
                .limiters
                .all()
                .iter()
                .map(|l| LimiterGauge {
                    name: l.name().into(),
                    tracked_keys: l.tracked_keys(),
                    overflowed: l.overflowed(),
                    overflow_networks: l.overflow_networks(),
                })
                .collect();
            let mut body = metrics::render(&MetricsView {
                services: &gw.reuse.service_stats,
                policies: &gw.reuse.policy_stats,
                limiters,
                global: &gw.global,
                config_version: gw.current.load().as_ref().map_or(0, |s| s.version),
                connected: gw.sync.connected.load(Ordering::Relaxed),
            });
            crate::health::render_gauges(gw.current.load().as_deref(), &mut body);
            store_metrics::render(&gw, &mut body);
            let jwks: Vec<JwksGauge> = gw
                .reuse
                .jwks
                .sources()
                .iter()
                .map(|s| {
                    let stats = s.stats();
                    JwksGauge {
                        url: s.url().to_owned(),
                        fetches_ok: stats.fetches_ok,
                        fetches_failed: stats.fetches_failed,
                        keys: s.keys().len(),
                        failing: stats.failing,
                    }
                })
                .collect();
            metrics::render_jwks(&jwks, &mut body);
            metrics::render_access_log(&access_log, &mut body);
            gw_ops::metrics::render_build_info(
                &mut body,
                "gw-data-plane",
                env!("CARGO_PKG_VERSION"),
            );
            gw_ops::metrics::render_process(&mut body);
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /healthz, /readyz, /config, /metrics\n",
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn key_sources(s: crate::auth::KeySources) -> Vec<&'static str> {
    [
        s.bearer.then_some("bearer"),
        s.header.then_some("header"),
        s.query.then_some("query"),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The config in force, for operators.
fn config_json(snap: &Snapshot) -> serde_json::Value {
    let services: Vec<_> = snap
        .services
        .iter()
        .map(|s| {
            json!({
                "name": &*s.name,
                "path_prefix": &*s.path_prefix,
                "hosts": s.hosts.iter().map(|h| &**h).collect::<Vec<_>>(),
                "strip_prefix": s.strip_prefix,
                "endpoints": s.balancer.endpoints().iter().map(|e| json!({
                    "url": &*e.url,
                    "healthy": e.is_healthy(),
                })).collect::<Vec<_>>(),
                "https_redirect": s.https_redirect,
                "allow_connect": s.allow_connect,
                "upstream_tls_insecure": s.upstream_tls.is_insecure(),
                "connect_timeout_ms": s.connect_timeout.as_millis() as u64,
                "request_timeout_ms": s.request_timeout.as_millis() as u64,
                "policies": s.policies.iter().map(|p| p.limiter.name().to_owned()).collect::<Vec<_>>(),
                "auth": s.auth.as_ref().map(|a| json!({
                    "methods": ["key"],
                    "key_sources": key_sources(a.key_sources),
                    "allowed_groups": a.allowed_groups.iter().map(|g| &**g).collect::<Vec<_>>(),
                })),
            })
        })
        .collect();
    let policies: Vec<_> = snap
        .policies
        .iter()
        .map(|p| {
            json!({
                "name": &*p.name,
                "service": p.service.as_deref(),
                "key": match &p.def.key {
                    KeySpec::ClientIp => "client_ip".to_owned(),
                    KeySpec::Header(h) => format!("header:{h}"),
                    KeySpec::Consumer => "consumer".to_owned(),
                },
                "consumer": match &p.audience {
                    Some(Audience::Consumer(c)) => Some(&**c),
                    _ => None,
                },
                "group": match &p.audience {
                    Some(Audience::Group(g)) => Some(&**g),
                    _ => None,
                },
                "limit": p.def.rate.limit,
                "period_secs": p.def.rate.period.as_secs(),
                "burst": p.def.rate.burst,
                "mode": match p.def.mode {
                    Mode::Enforce => "enforce",
                    Mode::Shadow => "shadow",
                },
                "scope": if p.global.is_some() { "global" } else { "node" },
                "on_store_error": p.global.map(|a| match a {
                    OnStoreError::LocalShare => "local-share",
                    OnStoreError::Allow => "allow",
                    OnStoreError::Deny => "deny",
                }),
            })
        })
        .collect();
    let certificates: Vec<_> = snap
        .certificates
        .entries()
        .iter()
        .map(|c| {
            json!({
                "name": &*c.name,
                "dns_names": &c.dns_names,
                "ip_addresses": &c.ip_addresses,
                "not_after": gw_tls::cert::format_utc(c.not_after),
            })
        })
        .collect();
    // Names, groups, how many keys, JWT issuers and key kinds: never a key, its hash, nor an
    // HS256 secret.
    let consumers: Vec<_> = snap
        .keys
        .consumers()
        .iter()
        .map(|c| {
            json!({
                "name": &*c.identity.name,
                "groups": c.identity.groups.iter().map(|g| &**g).collect::<Vec<_>>(),
                "api_keys": c.api_keys,
                "jwt_credentials": c.jwt.iter().map(|j| json!({
                    "id": j.id,
                    "issuer": j.issuer,
                    "key": j.key,
                    "jwks_url": j.jwks_url,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "version": snap.version,
        "services": services,
        "policies": policies,
        "certificates": certificates,
        "consumers": consumers,
    })
}
