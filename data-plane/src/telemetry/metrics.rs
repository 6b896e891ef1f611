//! Prometheus text rendering of the counters in [`crate::stats`] and the limiter gauges, for
//! the admin listener's `/metrics`. Runs when scraped, off the request path.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::access_log;
use crate::stats::{GlobalStats, LATENCY_BUCKETS, PolicyStats, Registry, ServiceStats};

/// What a limiter reports about one policy at render time.
#[derive(Debug, Clone)]
pub struct LimiterGauge {
    /// Policy name.
    pub name: Arc<str>,
    /// Buckets tracked now.
    pub tracked_keys: usize,
    /// Checks that hit the key cap.
    pub overflowed: u64,
    /// Overflow buckets held for client networks (at the key cap).
    pub overflow_networks: usize,
}

/// Everything `/metrics` shows, gathered off the request path.
pub struct MetricsView<'a> {
    /// Per-service stats.
    pub services: &'a Registry<ServiceStats>,
    /// Per-policy stats.
    pub policies: &'a Registry<PolicyStats>,
    /// Live limiters.
    pub limiters: Vec<LimiterGauge>,
    /// Global counters.
    pub global: &'a GlobalStats,
    /// Config version in force (0: none).
    pub config_version: u64,
    /// Whether the control-plane stream is open.
    pub connected: bool,
}

/// Renders Prometheus text exposition format (version 0.0.4).
pub fn render(view: &MetricsView<'_>) -> String {
    let mut out = String::with_capacity(4096);
    let services: Vec<_> = view
        .services
        .snapshot()
        .into_iter()
        .map(|(name, s)| (name, s.figures()))
        .collect();
    let policies = view.policies.snapshot();

    header(
        &mut out,
        "gw_requests_total",
        "counter",
        "Responses sent, by service and status code.",
    );
    for (name, f) in &services {
        for (code, v) in &f.by_status {
            let _ = writeln!(
                out,
                "gw_requests_total{{service=\"{name}\",code=\"{code}\"}} {v}"
            );
        }
    }

    header(
        &mut out,
        "gw_request_duration_seconds",
        "histogram",
        "Time from a request's arrival to its response head, by service. It holds the \
         gateway's own answers too (429 rate-limited, 503 no healthy endpoint or overloaded, \
         502/504 failed attempts, redirects), which take far less than a backend's: \
         gw_requests_total by code says how many there are. Requests with no route (404) are \
         not in it.",
    );
    for (name, f) in &services {
        let mut cumulative = 0;
        for (i, c) in f.latency_buckets.iter().enumerate() {
            cumulative += c;
            match LATENCY_BUCKETS.get(i) {
                Some(le) => {
                    let _ = writeln!(
                        out,
                        "gw_request_duration_seconds_bucket{{service=\"{name}\",le=\"{le}\"}} {cumulative}"
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "gw_request_duration_seconds_bucket{{service=\"{name}\",le=\"+Inf\"}} {cumulative}"
                    );
                }
            }
        }
        let sum = f.latency_sum.as_secs_f64();
        let _ = writeln!(
            out,
            "gw_request_duration_seconds_sum{{service=\"{name}\"}} {sum}"
        );
        let _ = writeln!(
            out,
            "gw_request_duration_seconds_count{{service=\"{name}\"}} {cumulative}"
        );
    }

    header(
        &mut out,
        "gw_upstream_errors_total",
        "counter",
        "Failed upstream attempts, by service and kind.",
    );
    for (name, f) in &services {
        for (kind, v) in f.upstream_errors {
            let _ = writeln!(
                out,
                "gw_upstream_errors_total{{service=\"{name}\",kind=\"{}\"}} {v}",
                kind.label()
            );
        }
    }

    header(
        &mut out,
        "gw_upstream_retries_total",
        "counter",
        "Requests retried on another endpoint, by service.",
    );
    for (name, f) in &services {
        let _ = writeln!(
            out,
            "gw_upstream_retries_total{{service=\"{name}\"}} {}",
            f.retries
        );
    }

    header(
        &mut out,
        "gw_local_errors_total",
        "counter",
        "Upstream attempts that failed for the gateway's own shortage (file descriptors, \
         buffers, an endpoint's connection cap), by service; never charged to an endpoint.",
    );
    for (name, f) in &services {
        let _ = writeln!(
            out,
            "gw_local_errors_total{{service=\"{name}\"}} {}",
            f.local_errors
        );
    }

    header(
        &mut out,
        "gw_auth_accepted_total",
        "counter",
        "Requests that presented a valid credential, by service.",
    );
    for (name, f) in &services {
        let _ = writeln!(
            out,
            "gw_auth_accepted_total{{service=\"{name}\"}} {}",
            f.auth_accepted
        );
    }
    header(
        &mut out,
        "gw_auth_failures_total",
        "counter",
        "Requests refused by authentication, by service and reason (missing, invalid, \
         expired: 401; forbidden: 403; throttled: 429 after too many failures from the \
         client's address).",
    );
    for (name, f) in &services {
        for (reason, v) in f.auth_failures {
            let _ = writeln!(
                out,
                "gw_auth_failures_total{{service=\"{name}\",reason=\"{}\"}} {v}",
                reason.label()
            );
        }
    }

    header(
        &mut out,
        "gw_rate_limited_total",
        "counter",
        "Requests rejected with 429, by policy.",
    );
    for (name, p) in &policies {
        let _ = writeln!(
            out,
            "gw_rate_limited_total{{policy=\"{name}\"}} {}",
            p.rate_limited.load(Ordering::Relaxed)
        );
    }
    header(
        &mut out,
        "gw_shadow_rejected_total",
        "counter",
        "Requests a shadow-mode policy would have rejected, by policy.",
    );
    for (name, p) in &policies {
        let _ = writeln!(
            out,
            "gw_shadow_rejected_total{{policy=\"{name}\"}} {}",
            p.shadow_rejected.load(Ordering::Relaxed)
        );
    }

    header(
        &mut out,
        "gw_rate_limit_tracked_keys",
        "gauge",
        "Token buckets tracked, by policy.",
    );
    for l in &view.limiters {
        let _ = writeln!(
            out,
            "gw_rate_limit_tracked_keys{{policy=\"{}\"}} {}",
            l.name, l.tracked_keys
        );
    }
    header(
        &mut out,
        "gw_rate_limit_overflow_total",
        "counter",
        "Checks that found the policy's key cap reached and shared the overflow bucket, by policy.",
    );
    for l in &view.limiters {
        let _ = writeln!(
            out,
            "gw_rate_limit_overflow_total{{policy=\"{}\"}} {}",
            l.name, l.overflowed
        );
    }
    header(
        &mut out,
        "gw_rate_limit_overflow_networks",
        "gauge",
        "Overflow buckets held for client networks (IPv4 /24, IPv6 /64) at the key cap, by policy.",
    );
    for l in &view.limiters {
        let _ = writeln!(
            out,
            "gw_rate_limit_overflow_networks{{policy=\"{}\"}} {}",
            l.name, l.overflow_networks
        );
    }

    header(
        &mut out,
        "gw_no_route_total",
        "counter",
        "Requests that matched no route (404).",
    );
    let _ = writeln!(
        out,
        "gw_no_route_total {}",
        view.global.no_route.load(Ordering::Relaxed)
    );
    header(
        &mut out,
        "gw_no_config_total",
        "counter",
        "Requests answered 503 because no config is loaded.",
    );
    let _ = writeln!(
        out,
        "gw_no_config_total {}",
        view.global.no_config.load(Ordering::Relaxed)
    );
    header(
        &mut out,
        "gw_config_rejected_total",
        "counter",
        "Config versions rejected (NACKed).",
    );
    let _ = writeln!(
        out,
        "gw_config_rejected_total {}",
        view.global.config_rejected.load(Ordering::Relaxed)
    );
    for (name, help, kind, value) in [
        (
            "gw_tunnels_open",
            "Tunnels (CONNECT, and upgraded connections such as WebSocket) open now.",
            "gauge",
            &view.global.tunnels_open,
        ),
        (
            "gw_tunnels_total",
            "Tunnels opened.",
            "counter",
            &view.global.tunnels_total,
        ),
        (
            "gw_tunnels_idle_closed_total",
            "Tunnels closed because nothing crossed them, either way, for the idle timeout.",
            "counter",
            &view.global.tunnels_idle_closed,
        ),
    ] {
        header(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
    }
    header(
        &mut out,
        "gw_worker_connections_total",
        "counter",
        "Client connections accepted (HTTP and HTTPS), by worker thread: how new connections \
         spread over the workers (each accepts on its own socket and serves what it accepted).",
    );
    for (worker, n) in view.global.worker_connections.counts().iter().enumerate() {
        let _ = writeln!(
            out,
            "gw_worker_connections_total{{worker=\"{worker}\"}} {n}"
        );
    }
    header(
        &mut out,
        "gw_config_version",
        "gauge",
        "Config version in force (0: none).",
    );
    let _ = writeln!(out, "gw_config_version {}", view.config_version);
    header(
        &mut out,
        "gw_control_plane_connected",
        "gauge",
        "1 while the config stream to the control plane is open.",
    );
    let _ = writeln!(
        out,
        "gw_control_plane_connected {}",
        u8::from(view.connected)
    );
    out
}

/// The access log's counters.
pub fn render_access_log(c: &access_log::Counters, out: &mut String) {
    for (name, help, v) in [
        (
            "gw_access_log_lines_total",
            "Access-log lines written.",
            &c.written,
        ),
        (
            "gw_access_log_dropped_total",
            "Access-log lines dropped because the writer could not keep up (requests never \
             wait for the log).",
            &c.dropped,
        ),
        (
            "gw_access_log_write_errors_total",
            "Access-log lines lost because writing them failed.",
            &c.write_errors,
        ),
    ] {
        header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
    }
}

/// One JWKS URL's counters at render time.
#[derive(Debug, Clone)]
pub struct JwksGauge {
    /// The URL, as configured.
    pub url: String,
    /// Fetches that replaced the key set.
    pub fetches_ok: u64,
    /// Fetches that failed (the previous set stayed).
    pub fetches_failed: u64,
    /// Keys in the current set.
    pub keys: usize,
    /// Whether the last fetch failed.
    pub failing: bool,
}

/// The JWKS sources' series, labelled by URL: operators configure a handful of URLs (one per
/// identity provider), so the label is bounded; aggregating would hide which provider fails.
pub fn render_jwks(sources: &[JwksGauge], out: &mut String) {
    header(
        out,
        "gw_jwks_fetches_total",
        "counter",
        "JWKS fetches, by URL and outcome (ok: the key set was replaced; failed: the last \
         good set stayed).",
    );
    for s in sources {
        let url = label_value(&s.url);
        let _ = writeln!(
            out,
            "gw_jwks_fetches_total{{url=\"{url}\",outcome=\"ok\"}} {}",
            s.fetches_ok
        );
        let _ = writeln!(
            out,
            "gw_jwks_fetches_total{{url=\"{url}\",outcome=\"failed\"}} {}",
            s.fetches_failed
        );
    }
    header(
        out,
        "gw_jwks_keys",
        "gauge",
        "Keys in the current JWKS set, by URL.",
    );
    for s in sources {
        let _ = writeln!(
            out,
            "gw_jwks_keys{{url=\"{}\"}} {}",
            label_value(&s.url),
            s.keys
        );
    }
    header(
        out,
        "gw_jwks_failing",
        "gauge",
        "1 while the last JWKS fetch from the URL failed.",
    );
    for s in sources {
        let _ = writeln!(
            out,
            "gw_jwks_failing{{url=\"{}\"}} {}",
            label_value(&s.url),
            u8::from(s.failing)
        );
    }
}

/// `text` escaped as a Prometheus label value.
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A metric's `# HELP` and `# TYPE` lines.
pub(crate) use gw_ops::metrics::header;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::stats::UpstreamError;

    #[test]
    fn records_and_renders() {
        let services = Registry::<ServiceStats>::default();
        let policies = Registry::<PolicyStats>::default();
        let global = GlobalStats {
            worker_connections: crate::stats::WorkerConnections::new(2),
            ..Default::default()
        };
        global.worker_connections.tally(1).add();
        let s = services.get("api");
        assert!(Arc::ptr_eq(&s, &services.get("api")), "kept by name");
        s.record(200, Duration::from_micros(700));
        s.record(200, Duration::from_millis(20));
        s.record(429, Duration::from_secs(60));
        s.upstream_error(UpstreamError::Connect);
        policies
            .get("p")
            .rate_limited
            .fetch_add(3, Ordering::Relaxed);
        let text = render(&MetricsView {
            services: &services,
            policies: &policies,
            limiters: vec![LimiterGauge {
                name: "p".into(),
                tracked_keys: 7,
                overflowed: 2,
                overflow_networks: 1,
            }],
            global: &global,
            config_version: 9,
            connected: true,
        });
        for line in [
            "gw_requests_total{service=\"api\",code=\"200\"} 2",
            "gw_requests_total{service=\"api\",code=\"429\"} 1",
            "gw_request_duration_seconds_bucket{service=\"api\",le=\"0.0005\"} 0",
            "gw_request_duration_seconds_bucket{service=\"api\",le=\"0.001\"} 1",
            "gw_request_duration_seconds_bucket{service=\"api\",le=\"0.025\"} 2",
            "gw_request_duration_seconds_bucket{service=\"api\",le=\"10\"} 2",
            "gw_request_duration_seconds_bucket{service=\"api\",le=\"+Inf\"} 3",
            "gw_request_duration_seconds_count{service=\"api\"} 3",
            "gw_upstream_errors_total{service=\"api\",kind=\"connect\"} 1",
            "gw_rate_limited_total{policy=\"p\"} 3",
            "gw_rate_limit_tracked_keys{policy=\"p\"} 7",
            "gw_rate_limit_overflow_total{policy=\"p\"} 2",
            "gw_rate_limit_overflow_networks{policy=\"p\"} 1",
            "gw_config_version 9",
            "gw_control_plane_connected 1",
            "gw_worker_connections_total{worker=\"0\"} 0",
            "gw_worker_connections_total{worker=\"1\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        assert!(!text.contains("code=\"404\""));
    }
}
