//! Prometheus metrics on the optional `--metrics-listen` address: gRPC calls by method and
//! status code with their latency (a tower layer in front of every service), connected data
//! planes, the config version, the store's commit latency, `gw_build_info` and the process
//! metrics.
//!
//! Layering: the top of the crate beside `api`; it reads `store` and `fleet`, and nothing
//! imports it but `lib.rs`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures::future::BoxFuture;
use gw_ops::metrics::{Histogram, header};
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::fleet::nodes::NodeRegistry;
use crate::store::Store;

/// The gRPC status names, by code (grpc/doc/statuscodes.md).
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
const UNIMPLEMENTED: usize = 12;

/// Calls by (method, code), each with its latency.
#[derive(Debug, Default)]
pub struct RpcMetrics {
    calls: Mutex<BTreeMap<(String, &'static str), Arc<Histogram>>>,
}

impl RpcMetrics {
    fn record(&self, path: &str, grpc_status: Option<&HeaderValue>, started: Instant) {
        // A unary call's error travels in the response head (trailers-only); without one the
        // status is in the trailers, which is OK for every unary call that got this far.
        let code = grpc_status
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .filter(|&c| c < CODES.len())
            .unwrap_or(0);
        // Paths nobody serves are one series, so a client cannot grow the map at will.
        let method = if code == UNIMPLEMENTED {
            "unknown"
        } else {
            path
        };
        let h = {
            let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
            calls
                .entry((method.to_owned(), CODES[code]))
                .or_default()
                .clone()
        };
        h.observe(started.elapsed());
    }

    fn render(&self, out: &mut String) {
        header(
            out,
            "gw_cp_rpc_duration_seconds",
            "histogram",
            "gRPC calls by method and status code: time to the response head (for StreamConfig, \
             the stream's opening).",
        );
        let calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        for ((method, code), h) in calls.iter() {
            let labels = format!("method=\"{}\",code=\"{code}\"", escape(method));
            h.render(out, "gw_cp_rpc_duration_seconds", &labels);
        }
    }
}

/// A label value as the text format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The layer that counts every call into [`RpcMetrics`].
#[derive(Debug, Clone)]
pub struct RpcMetricsLayer(pub Arc<RpcMetrics>);

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// A service whose calls are counted.
#[derive(Debug, Clone)]
pub struct Counted<S> {
    inner: S,
    metrics: Arc<RpcMetrics>,
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for Counted<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<ResBody>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        let path = req.uri().path().to_owned();
        let metrics = self.metrics.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            if let Ok(resp) = &result {
                metrics.record(&path, resp.headers().get("grpc-status"), started);
            }
            result
        })
    }
}

/// What `/metrics` reads.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Calls so far.
    pub rpcs: Arc<RpcMetrics>,
    /// The store (config version, commit latency).
    pub store: Arc<Store>,
    /// The data planes connected.
    pub nodes: Arc<NodeRegistry>,
}

/// The whole `/metrics` page.
pub fn render(s: &Sources) -> String {
    let mut out = String::with_capacity(4096);
    s.rpcs.render(&mut out);
    header(
        &mut out,
        "gw_cp_connected_nodes",
        "gauge",
        "Data planes with an open config stream.",
    );
    out.push_str(&format!(
        "gw_cp_connected_nodes {}\n",
        *s.nodes.live().borrow()
    ));
    header(
        &mut out,
        "gw_cp_config_version",
        "gauge",
        "The latest committed config version.",
    );
    out.push_str(&format!(
        "gw_cp_config_version {}\n",
        s.store.current().version
    ));
    header(
        &mut out,
        "gw_cp_store_commit_duration_seconds",
        "histogram",
        "Time to commit one change to SQLite (one transaction, synchronous FULL: fsync \
         included).",
    );
    s.store
        .commit_latency()
        .render(&mut out, "gw_cp_store_commit_duration_seconds", "");
    gw_ops::metrics::render_build_info(&mut out, "gw-control-plane", env!("CARGO_PKG_VERSION"));
    gw_ops::metrics::render_process(&mut out);
    out
}

/// Serves `GET /metrics` (HTTP/1.1) on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, sources: Sources, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, _) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let sources = sources.clone();
                async move { Ok::<_, Infallible>(answer(&sources, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
}

fn answer(sources: &Sources, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match req.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            Bytes::from(render(sources)),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"not found; try /metrics\n"),
        ),
    };
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_by_method_and_code() {
        let m = RpcMetrics::default();
        let now = Instant::now();
        let path = "/gateway.v1.AdminService/GetService";
        m.record(path, None, now);
        m.record(path, Some(&HeaderValue::from_static("5")), now);
        m.record("/x.Y/Z", Some(&HeaderValue::from_static("12")), now);
        m.record("/x.Y/W", Some(&HeaderValue::from_static("12")), now);
        let mut out = String::new();
        m.render(&mut out);
        for line in [
            "gw_cp_rpc_duration_seconds_count{method=\"/gateway.v1.AdminService/GetService\",code=\"OK\"} 1",
            "gw_cp_rpc_duration_seconds_count{method=\"/gateway.v1.AdminService/GetService\",code=\"NOT_FOUND\"} 1",
            "gw_cp_rpc_duration_seconds_count{method=\"unknown\",code=\"UNIMPLEMENTED\"} 2",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line}\n{out}");
        }
    }
}
