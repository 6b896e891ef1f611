//! Reports to the control plane over the config stream: endpoint health as it changes, and
//! every `stats_interval` (and at once after a connect) the full health view and cumulative
//! traffic counters.
//!
//! **Size:** no report may exceed what the control plane decodes in one message
//! (`MAX_INBOUND_MESSAGE_BYTES` there, 4 MiB). A full health view is split into messages of at
//! most [`HEALTH_ENTRIES_PER_MESSAGE`] endpoints (the first `full`, the rest partial updates,
//! which the control plane merges), failure reasons are cut to [`MAX_FAILURE_BYTES`], and a
//! stats report above [`MAX_STATS_BYTES`] is summarised (top keys dropped first, then the
//! entries past the budget). A 21-service, 21,000-endpoint config once produced a 5.4 MB
//! health report that the control plane refused, dropping the stream every few seconds.
//!
//! The reporter hands finished `DiscoveryRequest`s to config sync with `try_send`, so it never
//! waits on the link: while the node is disconnected messages queue up to the channel's size
//! and the rest are dropped, which loses nothing, because health is resent in full after each
//! connect and the counters are cumulative.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use gw_proto::v1 as pb;
use tokio::sync::{mpsc, watch};

use crate::config::gateway::Gateway;
use crate::config::sync::SyncStatus;
use crate::health::Board;
use crate::shutdown::signalled;
use crate::stats::{LATENCY_BUCKETS, ServiceStats, TOP_KEYS_REPORTED};
use crate::telemetry::consumers::{ConsumerReports, MAX_CONSUMERS_PER_REPORT};

/// Default time between stats reports: fresh enough for a dashboard, and at a few hundred
/// bytes per service a negligible load on the control plane even for a large fleet.
pub const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(5);
/// How often the reporter looks for a new connection, to send full state after it. Config sync
/// exposes the link state as a flag only; a 50 ms poll of one atomic is free.
const CONNECT_POLL: Duration = Duration::from_millis(50);

/// Most endpoints in one health message: an entry is under ~900 bytes (a 63-byte service
/// name, a URL the control plane caps at 512 bytes, a reason cut to [`MAX_FAILURE_BYTES`]), so
/// a message stays under 2 MB, half the control plane's inbound limit.
pub const HEALTH_ENTRIES_PER_MESSAGE: usize = 2000;
/// Longest failure reason reported; enough for any reason this node writes.
pub const MAX_FAILURE_BYTES: usize = 256;
/// Largest stats report sent, half the control plane's 4 MiB inbound limit.
pub const MAX_STATS_BYTES: usize = 2 * 1024 * 1024;

/// A full health view as messages that each fit the control plane's limit: the first
/// replaces what it held (`full`), the rest add to it.
pub fn health_messages(mut endpoints: Vec<pb::EndpointHealth>) -> Vec<pb::DiscoveryRequest> {
    for e in &mut endpoints {
        cut(&mut e.last_failure, MAX_FAILURE_BYTES);
    }
    if endpoints.is_empty() {
        return vec![health(true, endpoints)];
    }
    let mut out = Vec::with_capacity(endpoints.len().div_ceil(HEALTH_ENTRIES_PER_MESSAGE));
    let mut rest = endpoints.into_iter().peekable();
    let mut first = true;
    while rest.peek().is_some() {
        let part: Vec<_> = rest.by_ref().take(HEALTH_ENTRIES_PER_MESSAGE).collect();
        out.push(health(first, part));
        first = false;
    }
    out
}

/// Cuts `s` to at most `max` bytes, on a char boundary.
fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// `report` within [`MAX_STATS_BYTES`] (or `max`): top keys go first, then entries from the
/// end. Returns whether anything was dropped.
pub fn bound_stats(report: &mut pb::StatsReport, max: usize) -> bool {
    use prost::Message as _;
    if report.encoded_len() <= max {
        return false;
    }
    for p in &mut report.policies {
        p.top_keys.clear();
    }
    while report.encoded_len() > max {
        if report.policies.len() >= report.services.len() {
            if report.policies.pop().is_none() {
                break;
            }
        } else {
            report.services.pop();
        }
    }
    true
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
            allowed: stats.allowed.load(Ordering::Relaxed),
            global: stats.global.load(Ordering::Relaxed),
            store_round_trips: stats.store_round_trips.load(Ordering::Relaxed),
        })
        .collect();
    pb::StatsReport {
        started_at: Some(started_at.into()),
        services,
        policies,
        rate_limit_store: Some(store_status(gw)),
        // Filled by the reporter, which knows what it sent before (`consumers`).
        consumers: Vec::new(),
        consumers_deferred: 0,
    }
}

/// The node's rate-limit store as `gwctl nodes` shows it.
pub fn store_status(gw: &Gateway) -> pb::RateLimitStoreStatus {
    let Some(store) = gw.reuse.globals.store() else {
        return pb::RateLimitStoreStatus {
            state: pb::RateLimitStoreState::None.into(),
            ..Default::default()
        };
    };
    let state = store.state();
    pb::RateLimitStoreStatus {
        state: if state.up {
            pb::RateLimitStoreState::Connected
        } else {
            pb::RateLimitStoreState::Unreachable
        }
        .into(),
        error: state.error,
        url: store.describe(),
        state_age_seconds: state.since.elapsed().as_secs(),
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
    /// Whether a summarised stats report was already logged (once is enough).
    pub summarised: bool,
    /// Which consumers' counters were sent, and when.
    pub consumers: ConsumerReports,
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
                    self.send_full();
                }
                _ = link_tick.tick() => {
                    let connected = self.status.connected.load(Ordering::SeqCst);
                    if connected && !was_connected {
                        // A new stream: whatever was sent on the old one may be lost.
                        self.consumers.reset();
                        self.send_full();
                    }
                    was_connected = connected;
                }
            }
        }
    }

    /// The full health view and the counters, each within the control plane's limit.
    fn send_full(&mut self) {
        for message in health_messages(self.board.full()) {
            self.send(message);
        }
        let mut report = stats_report(&self.gw, self.started_at, Instant::now());
        (report.consumers, report.consumers_deferred) = self.consumers.next(
            &self.gw.reuse.consumer_stats.snapshot(),
            MAX_CONSUMERS_PER_REPORT,
        );
        // Consumers are bounded above, so this drops only services and policies.
        if bound_stats(&mut report, MAX_STATS_BYTES) && !self.summarised {
            self.summarised = true;
            tracing::warn!(
                max_bytes = MAX_STATS_BYTES,
                "stats report too large: sent without top keys (and without entries past the limit)"
            );
        }
        if !self.send(stats(report)) {
            // The consumers in it were not sent after all.
            self.consumers.reset();
        }
        // The snapshot above is gone, so the registry alone holds removed consumers.
        self.consumers.forget_removed(&self.gw.reuse.consumer_stats);
    }

    /// Queues `message` for config sync; false if it was dropped.
    fn send(&self, message: pb::DiscoveryRequest) -> bool {
        let queued = self.out.try_send(message).is_ok();
        if !queued {
            tracing::debug!("report dropped: the link is down or pushing back");
        }
        queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn entry(i: usize, failure: &str) -> pb::EndpointHealth {
        pb::EndpointHealth {
            service: format!("s{}", i / 1000),
            endpoint: format!("http://{}.example:80", "h".repeat(180)),
            healthy: false,
            last_failure: failure.to_owned(),
            last_failure_at: None,
        }
    }

    #[test]
    fn a_large_health_view_is_split_under_the_limit() {
        let long = "x".repeat(10_000);
        let all: Vec<_> = (0..21_000).map(|i| entry(i, &long)).collect();
        let messages = health_messages(all);
        assert_eq!(
            messages.len(),
            21_000usize.div_ceil(HEALTH_ENTRIES_PER_MESSAGE)
        );
        let mut total = 0;
        for (i, m) in messages.iter().enumerate() {
            assert!(
                m.encoded_len() < 4 * 1024 * 1024 / 2,
                "message {i}: {}",
                m.encoded_len()
            );
            let Some(pb::discovery_request::Kind::Health(h)) = &m.kind else {
                panic!("not health");
            };
            assert_eq!(h.full, i == 0, "only the first replaces");
            assert!(
                h.endpoints
                    .iter()
                    .all(|e| e.last_failure.len() <= MAX_FAILURE_BYTES)
            );
            total += h.endpoints.len();
        }
        assert_eq!(total, 21_000);
        let empty = health_messages(Vec::new());
        assert_eq!(
            empty.len(),
            1,
            "an empty view is still sent, to clear the old one"
        );
    }

    #[test]
    fn a_large_stats_report_is_summarised_under_the_limit() {
        let key = |k: usize| pb::KeyRejections {
            key: format!("{k:064}"),
            rejections: 1,
        };
        let mut report = pb::StatsReport {
            started_at: None,
            services: (0..5000)
                .map(|i| pb::ServiceCounters {
                    service: format!("service-{i}"),
                    figures: Some(figures(&ServiceStats::default())),
                })
                .collect(),
            policies: (0..5000)
                .map(|i| pb::PolicyCounters {
                    policy: format!("policy-{i}"),
                    rate_limited: 1,
                    shadow_rejected: 0,
                    top_keys: (0..10).map(key).collect(),
                    ..Default::default()
                })
                .collect(),
            rate_limit_store: None,
            consumers: Vec::new(),
            consumers_deferred: 0,
        };
        assert!(report.encoded_len() > MAX_STATS_BYTES);
        assert!(bound_stats(&mut report, MAX_STATS_BYTES));
        assert!(report.encoded_len() <= MAX_STATS_BYTES);
        assert!(report.policies.iter().all(|p| p.top_keys.is_empty()));
        let mut small = pb::StatsReport::default();
        assert!(!bound_stats(&mut small, MAX_STATS_BYTES));
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
