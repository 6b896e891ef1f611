//! The counters the request path bumps: per service, per policy, global, the keys each policy
//! rejected most, and the registry that keeps them by name across config versions.
//!
//! This is the bottom of the crate: it imports nothing else of it, and everything that counts
//! (the request path, the limiter) or reads the counts (Prometheus rendering, reports to the
//! control plane) imports it.
//!
//! Why hand-rolled atomics rather than the `prometheus`/`metrics` crates: the request path
//! already holds its service's [`ServiceStats`] (pre-allocated per service in the compiled
//! snapshot, kept by name across versions), so counting is one relaxed `fetch_add` with no label
//! lookup, hashing or allocation. Rendering walks the registries off the request path, when
//! `/metrics` is scraped. The fixed histogram buckets also merge exactly across nodes, which
//! the fleet stats need for percentiles.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

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
    /// Anything else (protocol errors, a malformed response).
    Other,
    /// The response body stalled longer than the service's response-body idle timeout.
    BodyTimeout,
}

impl UpstreamError {
    /// Every kind, in label order.
    pub const ALL: [UpstreamError; 5] = [
        Self::Connect,
        Self::Timeout,
        Self::Reset,
        Self::Other,
        Self::BodyTimeout,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Reset => "reset",
            Self::Other => "other",
            Self::BodyTimeout => "body_timeout",
        }
    }
}

/// Why a request failed authentication, as counted and labelled. Per service, never per
/// consumer: consumers are unbounded, series must not be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credential in any accepted place (401).
    Missing,
    /// A credential that matches nothing (401).
    Invalid,
    /// A known credential past its expiry (401).
    Expired,
    /// A valid consumer outside the service's allowed groups (403).
    Forbidden,
    /// Not looked at: the client's address failed too often lately (429).
    Throttled,
}

impl AuthFailure {
    /// Every reason, in label order.
    pub const ALL: [AuthFailure; 5] = [
        Self::Missing,
        Self::Invalid,
        Self::Expired,
        Self::Forbidden,
        Self::Throttled,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Invalid => "invalid",
            Self::Expired => "expired",
            Self::Forbidden => "forbidden",
            Self::Throttled => "throttled",
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
    /// Attempts that failed for the gateway's own shortage (file descriptors, buffers, the
    /// endpoint's connection cap): never charged to the endpoint.
    local_errors: AtomicU64,
    /// Requests this gateway rejected with 429 (a backend's own 429s are not counted here).
    rate_limited: AtomicU64,
    /// Requests that authenticated.
    auth_accepted: AtomicU64,
    /// Requests refused by authentication, by reason.
    auth_failures: [AtomicU64; AuthFailure::ALL.len()],
}

impl Default for ServiceStats {
    fn default() -> Self {
        Self {
            status: (100..600).map(|_| AtomicU64::new(0)).collect(),
            latency: Default::default(),
            latency_sum_us: AtomicU64::new(0),
            upstream_errors: Default::default(),
            retries: AtomicU64::new(0),
            local_errors: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            auth_accepted: AtomicU64::new(0),
            auth_failures: Default::default(),
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

    /// Counts one request that authenticated.
    pub fn auth_accepted(&self) {
        self.auth_accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one request refused by authentication.
    pub fn auth_failed(&self, reason: AuthFailure) {
        self.auth_failures[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one attempt that failed for the gateway's own shortage.
    pub fn local_error(&self) {
        self.local_errors.fetch_add(1, Ordering::Relaxed);
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
            local_errors: load(&self.local_errors),
            rate_limited: load(&self.rate_limited),
            auth_accepted: load(&self.auth_accepted),
            auth_failures: AuthFailure::ALL.map(|r| (r, load(&self.auth_failures[r as usize]))),
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
    pub upstream_errors: [(UpstreamError, u64); UpstreamError::ALL.len()],
    /// Retries on another endpoint.
    pub retries: u64,
    /// Attempts that failed for the gateway's own shortage.
    pub local_errors: u64,
    /// Requests rejected by this gateway's rate limits.
    pub rate_limited: u64,
    /// Requests that authenticated.
    pub auth_accepted: u64,
    /// Requests refused by authentication, by reason.
    pub auth_failures: [(AuthFailure, u64); AuthFailure::ALL.len()],
}

/// Per-consumer counters: requests that authenticated as the consumer, by status class. Sent
/// to the control plane in stats reports (for `gwctl stats --consumer`), never rendered for
/// Prometheus: consumers are unbounded, series must not be. Kept across config versions by
/// consumer name, like [`ServiceStats`], and reached from the consumer's compiled identity, so
/// counting is a relaxed `fetch_add` with no lookup.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    /// Responses by status class, 1xx to 5xx.
    by_class: [AtomicU64; 5],
    /// Requests this gateway rejected with 429.
    rate_limited: AtomicU64,
}

impl ConsumerStats {
    /// Counts one response (a status outside 100-599 is not counted, as for services).
    pub fn record(&self, status: u16) {
        if let Some(c) = self.by_class.get(usize::from(status / 100).wrapping_sub(1)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one request rejected by an enforcing policy (its 429 is counted by `record`).
    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// A point-in-time copy of the counters.
    pub fn figures(&self) -> ConsumerFigures {
        let responses = std::array::from_fn(|i| self.by_class[i].load(Ordering::Relaxed));
        ConsumerFigures {
            requests: responses.iter().sum(),
            responses,
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
        }
    }
}

/// A copy of one consumer's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerFigures {
    /// Responses, every class.
    pub requests: u64,
    /// Responses by status class, 1xx to 5xx.
    pub responses: [u64; 5],
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
    pub top_keys: TopKeys,
    /// Requests a GLOBAL policy admitted (counted for GLOBAL policies only, for the
    /// fleet-wide usage in `gwctl stats`).
    pub allowed: AtomicU64,
    /// Whether the policy is GLOBAL in the config in force.
    pub global: std::sync::atomic::AtomicBool,
    /// Redis round trips made for the policy.
    pub store_round_trips: AtomicU64,
    /// Decisions of a GLOBAL policy answered from local state (over-limit cache, leases).
    pub local_decisions: AtomicU64,
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
    /// Tunnels (CONNECT, and upgraded connections such as WebSocket) open now.
    pub tunnels_open: AtomicU64,
    /// Tunnels opened since start.
    pub tunnels_total: AtomicU64,
    /// Tunnels closed because no byte crossed them, either way, for the idle timeout.
    pub tunnels_idle_closed: AtomicU64,
    /// Client connections accepted, per worker thread.
    pub worker_connections: WorkerConnections,
}

/// Client connections accepted by each worker thread (`gw_worker_connections_total`): how
/// the kernel spreads new connections over the workers' sockets. Counted per connection, not
/// per request.
#[derive(Debug, Clone, Default)]
pub struct WorkerConnections(Arc<[AtomicU64]>);

impl WorkerConnections {
    /// Counters for `workers` workers, at zero.
    pub fn new(workers: usize) -> Self {
        Self((0..workers).map(|_| AtomicU64::new(0)).collect())
    }

    /// Worker `worker`'s counter.
    pub fn tally(&self, worker: usize) -> Tally {
        Tally {
            counts: self.0.clone(),
            worker,
        }
    }

    /// Every worker's count, by worker index.
    pub fn counts(&self) -> Vec<u64> {
        self.0.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }
}

/// One worker's counter in [`WorkerConnections`].
#[derive(Debug, Clone)]
pub struct Tally {
    counts: Arc<[AtomicU64]>,
    worker: usize,
}

impl Tally {
    /// One more connection.
    pub fn add(&self) {
        if let Some(c) = self.counts.get(self.worker) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
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

    /// Forgets the entries that nothing but the registry holds (no config in force, and no
    /// request under an older one, can count into them any more) and that `done` says may go.
    /// Decided under the registry's lock, so [`Registry::get`] cannot hand one out meanwhile;
    /// a name used again later starts from zero.
    pub fn forget_unused(&self, mut done: impl FnMut(&str, &T) -> bool) {
        let mut map = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|name, s| Arc::strong_count(s) > 1 || !done(name, s));
    }

    /// Entries kept, for tests and bounds checks.
    pub fn len(&self) -> usize {
        self.by_name
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The "recent" in top keys: a key's rejections count for between half of this and all of it.
pub const TOP_KEYS_WINDOW: Duration = Duration::from_secs(60);
/// Keys reported per policy.
pub const TOP_KEYS_REPORTED: usize = 10;
/// Keys tracked per policy per half-window. A flood of distinct keys past this evicts the
/// least-rejected one (space-saving), so memory stays bounded and heavy hitters survive.
const TOP_KEYS_TRACKED: usize = 1000;
/// Longest key kept (header values can be long); longer ones are cut at a char boundary.
const MAX_KEY_LEN: usize = 64;
/// Which keys a policy rejected most recently, bounded in size.
///
/// Two half-window maps rotate: a rejection counts in `current`; every half window `current`
/// becomes `previous` and the older one is dropped. The reported window is the sum of both.
#[derive(Debug)]
pub struct TopKeys {
    inner: Mutex<Halves>,
}

#[derive(Debug)]
struct Halves {
    current: HashMap<Box<str>, u64>,
    previous: HashMap<Box<str>, u64>,
    started: Instant,
}

impl Default for TopKeys {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Halves {
                current: HashMap::new(),
                previous: HashMap::new(),
                started: Instant::now(),
            }),
        }
    }
}

impl Halves {
    fn rotate(&mut self, now: Instant) {
        let age = now.saturating_duration_since(self.started);
        let half = TOP_KEYS_WINDOW / 2;
        if age < half {
            return;
        }
        self.previous = if age < TOP_KEYS_WINDOW {
            std::mem::take(&mut self.current)
        } else {
            self.current.clear();
            HashMap::new()
        };
        self.started = now;
    }
}

impl TopKeys {
    /// Counts one rejection of `key` (its text, as reported) at `now`. Called only for
    /// rejected requests. Keys longer than 64 bytes are cut at a char boundary.
    pub fn note(&self, key: &str, now: Instant) {
        let key = truncated(key);
        let mut h = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        h.rotate(now);
        if let Some(n) = h.current.get_mut(key) {
            *n += 1;
            return;
        }
        let mut count = 1;
        if h.current.len() >= TOP_KEYS_TRACKED {
            // Space-saving: the newcomer replaces the smallest and inherits its count, so a
            // key that keeps being rejected climbs back even through a flood of one-offs.
            if let Some((min_key, min)) = h
                .current
                .iter()
                .min_by_key(|(_, n)| **n)
                .map(|(k, n)| (k.clone(), *n))
            {
                h.current.remove(&min_key);
                count += min;
            }
        }
        h.current.insert(key.into(), count);
    }

    /// The `limit` keys with most rejections in the window ending at `now`, most first (ties
    /// by key, so the order is stable).
    pub fn top(&self, limit: usize, now: Instant) -> Vec<(String, u64)> {
        let mut h = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        h.rotate(now);
        let mut merged: HashMap<&str, u64> = HashMap::new();
        for (k, n) in h.previous.iter().chain(h.current.iter()) {
            *merged.entry(k).or_default() += n;
        }
        let mut all: Vec<(String, u64)> =
            merged.into_iter().map(|(k, n)| (k.to_owned(), n)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(limit);
        all
    }
}

/// `key` cut to at most [`MAX_KEY_LEN`] bytes, at a char boundary (header values can be long).
fn truncated(key: &str) -> &str {
    let mut end = key.len().min(MAX_KEY_LEN);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    &key[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_keeps_by_name() {
        let services = Registry::<ServiceStats>::default();
        let s = services.get("api");
        assert!(Arc::ptr_eq(&s, &services.get("api")), "kept by name");
        s.record(200, Duration::from_micros(700));
        s.record(200, Duration::from_millis(20));
        s.record(429, Duration::from_secs(60));
        s.upstream_error(UpstreamError::Connect);
        let f = s.figures();
        assert_eq!(f.by_status, [(200, 2), (429, 1)]);
        assert_eq!(f.latency_buckets.iter().sum::<u64>(), 3);
        assert_eq!(
            f.latency_buckets[LATENCY_BUCKETS.len()],
            1,
            "60 s lands in +Inf"
        );
        assert_eq!(f.upstream_errors[0], (UpstreamError::Connect, 1));
        assert_eq!(s.responses(200), 2);
    }

    #[test]
    fn consumer_counts_by_class() {
        let c = ConsumerStats::default();
        for code in [101, 200, 204, 302, 401, 429, 503, 600, 99] {
            c.record(code);
        }
        c.rate_limited();
        assert_eq!(
            c.figures(),
            ConsumerFigures {
                requests: 7,
                responses: [1, 2, 1, 2, 1],
                rate_limited: 1,
            }
        );
    }

    #[test]
    fn top_keys_orders_and_bounds() {
        let t = TopKeys::default();
        let now = Instant::now();
        for (n, times) in [(1u8, 3), (2, 5), (3, 1), (4, 5)] {
            for _ in 0..times {
                t.note(&format!("10.0.0.{n}"), now);
            }
        }
        let top = t.top(3, now);
        assert_eq!(
            top,
            vec![
                ("10.0.0.2".to_owned(), 5),
                ("10.0.0.4".to_owned(), 5),
                ("10.0.0.1".to_owned(), 3)
            ]
        );
    }

    #[test]
    fn top_keys_window_table() {
        let half = TOP_KEYS_WINDOW / 2;
        let ms = Duration::from_millis;
        // (offsets of rejections of one key, query offset, expected count)
        let cases: &[(&[Duration], Duration, u64)] = &[
            (&[Duration::ZERO], Duration::ZERO, 1),
            // Still counted in the half window after it (it became `previous`).
            (&[Duration::ZERO], half + ms(1), 1),
            (&[Duration::ZERO, half + ms(1)], half + ms(2), 2),
            // Gone once a whole window has passed without rotation in between.
            (&[Duration::ZERO], TOP_KEYS_WINDOW + ms(1), 0),
            // Rotated twice: the first rejection is gone, the second stays.
            (&[Duration::ZERO, half], TOP_KEYS_WINDOW + ms(1), 1),
        ];
        for (at, query, want) in cases {
            let t = TopKeys::default();
            let base = Instant::now();
            for d in *at {
                t.note("10.0.0.1", base + *d);
            }
            let got = t.top(10, base + *query).first().map_or(0, |(_, n)| *n);
            assert_eq!(got, *want, "rejections at {at:?}, asked at {query:?}");
        }
    }

    #[test]
    fn top_keys_memory_is_bounded_and_heavy_hitters_survive() {
        let t = TopKeys::default();
        let now = Instant::now();
        for _ in 0..50 {
            t.note("heavy", now);
        }
        for i in 0..(TOP_KEYS_TRACKED as u32 * 3) {
            t.note(&i.to_string(), now);
        }
        let inner = t.inner.lock().unwrap();
        assert!(inner.current.len() <= TOP_KEYS_TRACKED);
        drop(inner);
        assert_eq!(t.top(1, now)[0].0, "heavy");
    }

    #[test]
    fn long_keys_are_cut_on_a_char_boundary() {
        let long = "é".repeat(100);
        let t = TopKeys::default();
        let now = Instant::now();
        t.note(&long, now);
        let (key, _) = &t.top(1, now)[0];
        assert!(key.len() <= MAX_KEY_LEN && key.chars().all(|c| c == 'é'));
    }
}
