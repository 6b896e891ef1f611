//! Counters the request path bumps, and their Prometheus text rendering.
//!
//! Why hand-rolled atomics rather than the `prometheus`/`metrics` crates: the request path
//! already holds its service's [`ServiceStats`] (pre-allocated per service in the compiled
//! snapshot, kept by name across versions), so counting is one relaxed `fetch_add` with no label
//! lookup, hashing or allocation. Rendering walks the registries off the request path, when
//! `/metrics` is scraped. The fixed histogram buckets also merge exactly across nodes, which
//! the fleet stats (issue 4) need for percentiles.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets; `+Inf` is implicit.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Same bounds in microseconds, for the hot path's integer comparison.
const LATENCY_BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// Kinds of upstream failure, as counted and labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// TCP connect failed or timed out.
    Connect,
    /// No response headers within the service's request timeout.
    Timeout,
    /// The connection closed or reset before a response.
    Reset,
    /// Anything else (protocol errors).
    Other,
}

impl UpstreamError {
    const ALL: [UpstreamError; 4] = [Self::Connect, Self::Timeout, Self::Reset, Self::Other];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Reset => "reset",
            Self::Other => "other",
        }
    }
}

/// Per-service counters. Shared by every config version that has the service.
#[derive(Debug)]
pub struct ServiceStats {
    /// Responses by status code (index: code - 100).
    status: Box<[AtomicU64]>,
    /// Latency histogram (time to response headers): one counter per bucket plus `+Inf`.
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_us: AtomicU64,
    upstream_errors: [AtomicU64; UpstreamError::ALL.len()],
    retries: AtomicU64,
    /// Requests this gateway rejected with 429 (a backend's own 429s are not counted here).
    rate_limited: AtomicU64,
}

impl Default for ServiceStats {
    fn default() -> Self {
        Self {
            status: (100..600).map(|_| AtomicU64::new(0)).collect(),
            latency: Default::default(),
            latency_sum_us: AtomicU64::new(0),
            upstream_errors: Default::default(),
            retries: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
        }
    }
}

impl ServiceStats {
    /// Counts one response and its latency.
    pub fn record(&self, status: u16, elapsed: Duration) {
        if let Some(c) = self.status.get(usize::from(status).wrapping_sub(100)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Counts one upstream failure.
    pub fn upstream_error(&self, kind: UpstreamError) {
        self.upstream_errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one request rejected by an enforcing policy (its 429 is recorded by `record`).
    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one retry on another endpoint.
    pub fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// A point-in-time copy of the counters (for stats reports to the control plane).
    pub fn figures(&self) -> ServiceFigures {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ServiceFigures {
            by_status: (100u16..)
                .zip(self.status.iter())
                .map(|(code, c)| (code, load(c)))
                .filter(|&(_, n)| n > 0)
                .collect(),
            latency_buckets: std::array::from_fn(|i| load(&self.latency[i])),
            latency_sum: Duration::from_micros(load(&self.latency_sum_us)),
            upstream_errors: UpstreamError::ALL
                .map(|k| (k, load(&self.upstream_errors[k as usize]))),
            retries: load(&self.retries),
            rate_limited: load(&self.rate_limited),
        }
    }

    /// Responses with `status` so far.
    pub fn responses(&self, status: u16) -> u64 {
        self.status
            .get(usize::from(status).wrapping_sub(100))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

/// A copy of one service's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFigures {
    /// `(status code, responses)` for every code seen, in code order.
    pub by_status: Vec<(u16, u64)>,
    /// Non-cumulative counts per [`LATENCY_BUCKETS`] bucket, then `+Inf`.
    pub latency_buckets: [u64; LATENCY_BUCKETS.len() + 1],
    /// Sum of all latencies.
    pub latency_sum: Duration,
    /// Upstream failures by kind.
    pub upstream_errors: [(UpstreamError, u64); 4],
    /// Retries on another endpoint.
    pub retries: u64,
    /// Requests rejected by this gateway's rate limits.
    pub rate_limited: u64,
}

/// Per-policy counters kept by the request path (the limiter keeps its own key counts).
#[derive(Debug, Default)]
pub struct PolicyStats {
    /// Requests rejected with 429.
    pub rate_limited: AtomicU64,
    /// Requests a shadow-mode policy would have rejected.
    pub shadow_rejected: AtomicU64,
    /// Keys rejected most in the recent window (enforce and shadow), for stats reports.
    pub top_keys: crate::report::TopKeys,
}

/// Counters not tied to a service.
#[derive(Debug, Default)]
pub struct GlobalStats {
    /// Requests that matched no route (404).
    pub no_route: AtomicU64,
    /// Requests answered 503 because no config is loaded.
    pub no_config: AtomicU64,
    /// Config versions rejected.
    pub config_rejected: AtomicU64,
}

/// Stats objects by name, kept across config versions so counters never reset on an update.
#[derive(Debug, Default)]
pub struct Registry<T> {
    by_name: Mutex<BTreeMap<Arc<str>, Arc<T>>>,
}

impl<T: Default> Registry<T> {
    /// The stats for `name`, created on first use. Off the request path (config apply).
    pub fn get(&self, name: &str) -> Arc<T> {
        let mut map = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = map.get(name) {
            return s.clone();
        }
        let s = Arc::new(T::default());
        map.insert(name.into(), s.clone());
        s
    }

    /// Every `(name, stats)`, ordered by name.
    pub fn snapshot(&self) -> Vec<(Arc<str>, Arc<T>)> {
        let map = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// What a limiter reports about one policy at render time.
#[derive(Debug, Clone)]
pub struct LimiterGauge {
    /// Policy name.
    pub name: Arc<str>,
    /// Buckets tracked now.
    pub tracked_keys: usize,
    /// Checks that hit the key cap.
    pub overflowed: u64,
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
    let services = view.services.snapshot();
    let policies = view.policies.snapshot();

    header(
        &mut out,
        "gw_requests_total",
        "counter",
        "Responses sent, by service and status code.",
    );
    for (name, s) in &services {
        for (i, c) in s.status.iter().enumerate() {
            let v = c.load(Ordering::Relaxed);
            if v > 0 {
                let _ = writeln!(
                    out,
                    "gw_requests_total{{service=\"{name}\",code=\"{}\"}} {v}",
                    i + 100
                );
            }
        }
    }

    header(
        &mut out,
        "gw_request_duration_seconds",
        "histogram",
        "Time from request to upstream response headers, by service.",
    );
    for (name, s) in &services {
        let mut cumulative = 0;
        for (i, c) in s.latency.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
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
        let sum = s.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
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
    for (name, s) in &services {
        for kind in UpstreamError::ALL {
            let v = s.upstream_errors[kind as usize].load(Ordering::Relaxed);
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
    for (name, s) in &services {
        let _ = writeln!(
            out,
            "gw_upstream_retries_total{{service=\"{name}\"}} {}",
            s.retries.load(Ordering::Relaxed)
        );
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

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_renders() {
        let services = Registry::<ServiceStats>::default();
        let policies = Registry::<PolicyStats>::default();
        let global = GlobalStats::default();
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
            "gw_config_version 9",
            "gw_control_plane_connected 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        assert!(!text.contains("code=\"404\""));
        let f = s.figures();
        assert_eq!(f.by_status, [(200, 2), (429, 1)]);
        assert_eq!(f.latency_buckets.iter().sum::<u64>(), 3);
        assert_eq!(
            f.latency_buckets[LATENCY_BUCKETS.len()],
            1,
            "60 s lands in +Inf"
        );
        assert_eq!(f.upstream_errors[0], (UpstreamError::Connect, 1));
    }
}
