//! Reports to the control plane over the config stream: endpoint health as it changes, and
//! every `stats_interval` (and at once after a connect) the full health view and cumulative
//! traffic counters.
//!
//! The reporter hands finished `DiscoveryRequest`s to config sync with `try_send`, so it never
//! waits on the link: while the node is disconnected messages queue up to the channel's size
//! and the rest are dropped, which loses nothing, because health is resent in full after each
//! connect and the counters are cumulative.
//!
//! Also here: [`TopKeys`], the per-policy record of which client keys were rejected most in
//! the recent window. Only rejected requests touch it, so the allowed path pays nothing.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use gw_proto::v1 as pb;
use tokio::sync::{mpsc, watch};

use crate::config_sync::SyncStatus;
use crate::gateway::Gateway;
use crate::health::Board;
use crate::limiter::LimitKey;
use crate::metrics::{LATENCY_BUCKETS, ServiceStats};
use crate::server::signalled;

/// Default time between stats reports: fresh enough for a dashboard, and at a few hundred
/// bytes per service a negligible load on the control plane even for a large fleet.
pub const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(5);
/// How often the reporter looks for a new connection, to send full state after it. Config sync
/// exposes the link state as a flag only; a 50 ms poll of one atomic is free.
const CONNECT_POLL: Duration = Duration::from_millis(50);
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
    /// Counts one rejection of `key` at `now`. Called only for rejected requests.
    pub fn note(&self, key: LimitKey<'_>, now: Instant) {
        let key = key_text(key);
        let mut h = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        h.rotate(now);
        if let Some(n) = h.current.get_mut(key.as_str()) {
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
        h.current.insert(key.into_boxed_str(), count);
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

fn key_text(key: LimitKey<'_>) -> String {
    match key {
        LimitKey::Ip(ip) => ip.to_string(),
        LimitKey::Header(None) => "(header missing)".to_owned(),
        LimitKey::Header(Some(bytes)) => {
            let text = String::from_utf8_lossy(bytes);
            let mut end = text.len().min(MAX_KEY_LEN);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text[..end].to_owned()
        }
    }
}

/// The node's counters as a `StatsReport`.
pub fn stats_report(gw: &Gateway, started_at: SystemTime, now: Instant) -> pb::StatsReport {
    let services = gw
        .reuse
        .service_stats
        .snapshot()
        .into_iter()
        .map(|(name, stats)| pb::ServiceCounters {
            service: name.to_string(),
            figures: Some(figures(&stats)),
        })
        .collect();
    let policies = gw
        .reuse
        .policy_stats
        .snapshot()
        .into_iter()
        .map(|(name, stats)| pb::PolicyCounters {
            policy: name.to_string(),
            rate_limited: stats.rate_limited.load(Ordering::Relaxed),
            shadow_rejected: stats.shadow_rejected.load(Ordering::Relaxed),
            top_keys: stats
                .top_keys
                .top(TOP_KEYS_REPORTED, now)
                .into_iter()
                .map(|(key, rejections)| pb::KeyRejections { key, rejections })
                .collect(),
        })
        .collect();
    pb::StatsReport {
        started_at: Some(started_at.into()),
        services,
        policies,
    }
}

/// One service's counters; percentiles are left to the control plane, which merges the
/// histograms of every node first.
fn figures(stats: &ServiceStats) -> pb::TrafficFigures {
    let f = stats.figures();
    let mut by_class = [0u64; 5];
    let mut requests = 0;
    for &(code, n) in &f.by_status {
        requests += n;
        if let Some(c) = by_class.get_mut(usize::from(code / 100).wrapping_sub(1)) {
            *c += n;
        }
    }
    pb::TrafficFigures {
        requests,
        responses_1xx: by_class[0],
        responses_2xx: by_class[1],
        responses_3xx: by_class[2],
        responses_4xx: by_class[3],
        responses_5xx: by_class[4],
        rate_limited: f.rate_limited,
        upstream_errors: f.upstream_errors.iter().map(|(_, n)| n).sum(),
        latency_p50: None,
        latency_p90: None,
        latency_p99: None,
        latency: Some(pb::LatencyHistogram {
            upper_bounds_seconds: LATENCY_BUCKETS.to_vec(),
            counts: f.latency_buckets.to_vec(),
        }),
    }
}

fn health(full: bool, endpoints: Vec<pb::EndpointHealth>) -> pb::DiscoveryRequest {
    pb::DiscoveryRequest {
        kind: Some(pb::discovery_request::Kind::Health(pb::HealthReport {
            full,
            endpoints,
        })),
    }
}

fn stats(report: pb::StatsReport) -> pb::DiscoveryRequest {
    pb::DiscoveryRequest {
        kind: Some(pb::discovery_request::Kind::Stats(report)),
    }
}

/// What the reporter reads and where it sends.
pub struct Reporter {
    /// Counters.
    pub gw: Arc<Gateway>,
    /// Health as the checker sees it.
    pub board: Arc<Board>,
    /// Health changes from the checker.
    pub changes: mpsc::UnboundedReceiver<pb::EndpointHealth>,
    /// Link state (a rising `connected` triggers full reports).
    pub status: Arc<SyncStatus>,
    /// To config sync.
    pub out: mpsc::Sender<pb::DiscoveryRequest>,
    /// Time between stats reports.
    pub interval: Duration,
    /// When the process started.
    pub started_at: SystemTime,
}

impl Reporter {
    /// Reports until `stop` is set.
    pub async fn run(mut self, stop: watch::Receiver<bool>) {
        let mut stats_tick = tokio::time::interval(self.interval);
        stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut link_tick = tokio::time::interval(CONNECT_POLL);
        link_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_connected = false;
        let stopped = signalled(stop);
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                () = &mut stopped => return,
                change = self.changes.recv() => {
                    let Some(first) = change else { return };
                    let mut batch = vec![first];
                    while let Ok(more) = self.changes.try_recv() {
                        batch.push(more);
                    }
                    self.send(health(false, batch));
                }
                _ = stats_tick.tick() => {
                    // Full health rides along: config sync shows the link only as a flag, so a
                    // reconnect quicker than `CONNECT_POLL` goes unseen below, and this bounds
                    // how long the control plane can hold a stale view to one interval.
                    self.send(health(true, self.board.full()));
                    self.send(stats(stats_report(&self.gw, self.started_at, Instant::now())));
                }
                _ = link_tick.tick() => {
                    let connected = self.status.connected.load(Ordering::SeqCst);
                    if connected && !was_connected {
                        // A new stream: whatever was sent on the old one may be lost.
                        self.send(health(true, self.board.full()));
                        self.send(stats(stats_report(&self.gw, self.started_at, Instant::now())));
                    }
                    was_connected = connected;
                }
            }
        }
    }

    fn send(&self, message: pb::DiscoveryRequest) {
        if self.out.try_send(message).is_err() {
            tracing::debug!("report dropped: the link is down or pushing back");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn ip(n: u8) -> LimitKey<'static> {
        LimitKey::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)))
    }

    #[test]
    fn top_keys_orders_and_bounds() {
        let t = TopKeys::default();
        let now = Instant::now();
        for (n, times) in [(1u8, 3), (2, 5), (3, 1), (4, 5)] {
            for _ in 0..times {
                t.note(ip(n), now);
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
                t.note(ip(1), base + *d);
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
            t.note(LimitKey::Header(Some(b"heavy")), now);
        }
        for i in 0..(TOP_KEYS_TRACKED as u32 * 3) {
            let k = i.to_string();
            t.note(LimitKey::Header(Some(k.as_bytes())), now);
        }
        let inner = t.inner.lock().unwrap();
        assert!(inner.current.len() <= TOP_KEYS_TRACKED);
        drop(inner);
        assert_eq!(t.top(1, now)[0].0, "heavy");
    }

    #[test]
    fn key_text_cuts_long_headers_on_char_boundary() {
        let long = "é".repeat(100);
        let text = key_text(LimitKey::Header(Some(long.as_bytes())));
        assert!(text.len() <= MAX_KEY_LEN && text.chars().all(|c| c == 'é'));
        assert_eq!(key_text(LimitKey::Header(None)), "(header missing)");
    }

    #[test]
    fn figures_by_class() {
        let s = ServiceStats::default();
        // Two 429s: one from our own limiter, one passed through from a backend. Only the
        // first is a rate-limited request.
        for code in [200, 204, 301, 404, 429, 429, 502] {
            s.record(code, Duration::from_millis(1));
        }
        s.rate_limited();
        let f = figures(&s);
        assert_eq!(f.requests, 7);
        assert_eq!(
            [
                f.responses_1xx,
                f.responses_2xx,
                f.responses_3xx,
                f.responses_4xx,
                f.responses_5xx
            ],
            [0, 2, 1, 3, 1]
        );
        assert_eq!(f.rate_limited, 1);
        let h = f.latency.unwrap();
        assert_eq!(h.counts.len(), h.upper_bounds_seconds.len() + 1);
        assert_eq!(h.counts.iter().sum::<u64>(), 7);
    }
}
