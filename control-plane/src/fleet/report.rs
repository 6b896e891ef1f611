//! What a data plane reports about itself (endpoint health, traffic counters), checked and
//! kept as plain values: reports are untrusted input, so strings are bounded, malformed parts
//! are dropped with a debug log, and every collection per node has a cap. Nothing in a report
//! can end the stream.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use gw_proto::v1 as pb;

use crate::domain::validate;
use crate::fleet::histogram::Histogram;

/// Most endpoints kept per node. Well above any real config a node serves; a report beyond it
/// is truncated, not refused.
pub const MAX_ENDPOINTS_PER_NODE: usize = 4096;
/// Most services and most policies kept from one stats report.
pub const MAX_ENTRIES_PER_REPORT: usize = 4096;
/// Most top keys kept per policy per node (the response shows at most [`view::TOP_KEYS`]).
pub const MAX_TOP_KEYS: usize = 20;
/// Longest endpoint URL kept; a longer one cannot be in the config, so it is dropped.
const MAX_ENDPOINT_LEN: usize = 512;
/// Longest failure reason kept; longer ones are shortened.
const MAX_FAILURE_LEN: usize = 512;
/// Longest client key kept; longer ones are shortened (the proto allows that).
const MAX_KEY_LEN: usize = 128;

/// One node's view of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointState {
    /// Whether the node sends it traffic.
    pub healthy: bool,
    /// The node's latest failure for it ("" if none).
    pub last_failure: String,
    /// When that failure happened (never later than when the report arrived).
    pub last_failure_at: Option<SystemTime>,
}

/// One node's endpoint health, by service, then endpoint URL (nested, so a lookup by `&str`
/// allocates nothing: GetHealth does one per node per endpoint).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeHealth {
    services: BTreeMap<String, BTreeMap<String, EndpointState>>,
    len: usize,
}

/// A health report, checked and ready to apply.
#[derive(Debug, Clone)]
pub struct HealthUpdate {
    full: bool,
    entries: Vec<((String, String), EndpointState)>,
}

impl HealthUpdate {
    /// Checks `report` from `node`, received at `now`; malformed entries are dropped.
    pub fn new(node: &str, report: pb::HealthReport, now: SystemTime) -> Self {
        let pb::HealthReport { full, endpoints } = report;
        let mut entries = Vec::with_capacity(endpoints.len().min(MAX_ENDPOINTS_PER_NODE));
        for e in endpoints {
            let pb::EndpointHealth {
                service,
                endpoint,
                healthy,
                last_failure,
                last_failure_at,
            } = e;
            if validate::name(&service).is_err() || endpoint.len() > MAX_ENDPOINT_LEN {
                tracing::debug!(
                    node,
                    "health report entry with a malformed service or endpoint ignored"
                );
                continue;
            }
            // A clock ahead of ours must not make this node's failure "the latest" forever.
            let last_failure_at = last_failure_at
                .and_then(|t| SystemTime::try_from(t).ok())
                .map(|t| t.min(now));
            let state = EndpointState {
                healthy,
                last_failure: clip(last_failure, MAX_FAILURE_LEN),
                last_failure_at,
            };
            entries.push(((service, endpoint), state));
        }
        Self { full, entries }
    }
}

impl NodeHealth {
    /// Applies a report: a full one replaces everything, a partial one merges by
    /// (service, endpoint). New endpoints beyond [`MAX_ENDPOINTS_PER_NODE`] are ignored.
    pub fn apply(&mut self, node: &str, update: HealthUpdate) {
        if update.full {
            self.services.clear();
            self.len = 0;
        }
        let mut ignored = 0usize;
        for ((service, endpoint), state) in update.entries {
            let at_cap = self.len >= MAX_ENDPOINTS_PER_NODE;
            if at_cap && !self.services.contains_key(&service) {
                ignored += 1;
                continue;
            }
            let endpoints = self.services.entry(service).or_default();
            match endpoints.get_mut(&endpoint) {
                Some(known) => *known = state,
                None if at_cap => ignored += 1,
                None => {
                    endpoints.insert(endpoint, state);
                    self.len += 1;
                }
            }
        }
        if ignored > 0 {
            tracing::debug!(
                node,
                ignored,
                "health report beyond {MAX_ENDPOINTS_PER_NODE} endpoints; rest ignored"
            );
        }
    }

    /// The node's view of `endpoint` of `service`, if it reported one.
    pub fn get(&self, service: &str, endpoint: &str) -> Option<&EndpointState> {
        self.services.get(service)?.get(endpoint)
    }

    /// Endpoints known, for tests and bounds checks.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the node reported no endpoint.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Counters of one service on one node (or summed over nodes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Requests answered.
    pub requests: u64,
    /// Responses by status class, 1xx to 5xx.
    pub responses: [u64; 5],
    /// Requests rejected by an enforcing policy.
    pub rate_limited: u64,
    /// Upstream failures.
    pub upstream_errors: u64,
    /// The latency histogram, when the node sent a well-formed one.
    pub latency: Option<Histogram>,
}

impl Figures {
    fn from_pb(node: &str, f: pb::TrafficFigures) -> Self {
        let pb::TrafficFigures {
            requests,
            responses_1xx,
            responses_2xx,
            responses_3xx,
            responses_4xx,
            responses_5xx,
            rate_limited,
            upstream_errors,
            // Percentiles are the control plane's to compute, from the histogram.
            latency_p50: _,
            latency_p90: _,
            latency_p99: _,
            latency,
        } = f;
        let latency = latency.and_then(|h| match Histogram::try_from(h) {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::debug!(node, error = %e, "latency histogram ignored");
                None
            }
        });
        Self {
            requests,
            responses: [
                responses_1xx,
                responses_2xx,
                responses_3xx,
                responses_4xx,
                responses_5xx,
            ],
            rate_limited,
            upstream_errors,
            latency,
        }
    }

    /// Adds `other`'s counters (not its histogram: see [`histogram::merge`]).
    pub fn add_counters(&mut self, other: &Figures) {
        self.requests = self.requests.saturating_add(other.requests);
        for (mine, theirs) in self.responses.iter_mut().zip(other.responses) {
            *mine = mine.saturating_add(theirs);
        }
        self.rate_limited = self.rate_limited.saturating_add(other.rate_limited);
        self.upstream_errors = self.upstream_errors.saturating_add(other.upstream_errors);
    }
}

impl From<&Figures> for pb::TrafficFigures {
    fn from(f: &Figures) -> Self {
        let percentile = |p| {
            f.latency
                .as_ref()
                .and_then(|h| h.percentile(p))
                .and_then(|d| prost_types::Duration::try_from(d).ok())
        };
        let [r1, r2, r3, r4, r5] = f.responses;
        pb::TrafficFigures {
            requests: f.requests,
            responses_1xx: r1,
            responses_2xx: r2,
            responses_3xx: r3,
            responses_4xx: r4,
            responses_5xx: r5,
            rate_limited: f.rate_limited,
            upstream_errors: f.upstream_errors,
            latency_p50: percentile(50),
            latency_p90: percentile(90),
            latency_p99: percentile(99),
            latency: f.latency.as_ref().map(pb::LatencyHistogram::from),
        }
    }
}

/// Rejections of one policy on one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyFigures {
    /// Requests rejected (enforce mode).
    pub rate_limited: u64,
    /// Requests that would have been rejected (shadow mode).
    pub shadow_rejected: u64,
    /// `(key, rejections)` in the node's recent window, at most [`MAX_TOP_KEYS`].
    pub top_keys: Vec<(String, u64)>,
    /// Requests admitted.
    pub allowed: u64,
    /// Whether the node enforces the policy as GLOBAL.
    pub global: bool,
    /// Redis round trips made for it.
    pub store_round_trips: u64,
}

/// A node's latest stats report, whole: counters are cumulative, so the latest report
/// replaces the previous one and reports are never added together.
#[derive(Debug, Clone)]
pub struct NodeStats {
    /// How long the node had been up when the report arrived (unset if it sent no start
    /// time; zero if its clock puts the start after our receipt).
    pub uptime_at_report: Option<Duration>,
    /// When the report arrived, on the control plane's monotonic clock.
    pub received: Instant,
    /// Per service name.
    pub services: BTreeMap<String, Figures>,
    /// Per policy name.
    pub policies: BTreeMap<String, PolicyFigures>,
    /// The node's rate-limit store as it reported it (strings bounded), if it did.
    pub store: Option<pb::RateLimitStoreStatus>,
}

impl NodeStats {
    /// Checks `report` from `node`, received now; malformed or excess entries are dropped.
    pub fn new(node: &str, report: pb::StatsReport) -> Self {
        let received = Instant::now();
        let received_wall = SystemTime::now();
        let pb::StatsReport {
            started_at,
            services: service_counters,
            policies: policy_counters,
            rate_limit_store,
            // Taken out first and merged apart (`fleet::consumers`): a report carries only
            // some consumers, so it cannot replace what the node reported before.
            consumers: _,
            consumers_deferred: _,
        } = report;
        let store = rate_limit_store.map(|s| pb::RateLimitStoreStatus {
            error: clip(s.error, MAX_FAILURE_LEN),
            url: clip(s.url, MAX_ENDPOINT_LEN),
            ..s
        });
        let uptime_at_report = started_at
            .and_then(|t| SystemTime::try_from(t).ok())
            .map(|start| received_wall.duration_since(start).unwrap_or_default());
        let mut services = BTreeMap::new();
        for pb::ServiceCounters { service, figures } in service_counters {
            if services.len() >= MAX_ENTRIES_PER_REPORT || validate::name(&service).is_err() {
                tracing::debug!(node, "stats for a malformed or excess service ignored");
                continue;
            }
            let figures = figures
                .map(|f| Figures::from_pb(node, f))
                .unwrap_or_default();
            services.insert(service, figures);
        }
        let mut policies = BTreeMap::new();
        for p in policy_counters {
            let pb::PolicyCounters {
                policy,
                rate_limited,
                shadow_rejected,
                top_keys,
                allowed,
                global,
                store_round_trips,
            } = p;
            if policies.len() >= MAX_ENTRIES_PER_REPORT || validate::name(&policy).is_err() {
                tracing::debug!(node, "stats for a malformed or excess policy ignored");
                continue;
            }
            if top_keys.len() > MAX_TOP_KEYS {
                tracing::debug!(node, %policy, "top keys beyond {MAX_TOP_KEYS} ignored");
            }
            let top_keys = top_keys
                .into_iter()
                .take(MAX_TOP_KEYS)
                .map(|k| (clip(k.key, MAX_KEY_LEN), k.rejections))
                .collect();
            policies.insert(
                policy,
                PolicyFigures {
                    rate_limited,
                    shadow_rejected,
                    top_keys,
                    allowed,
                    global,
                    store_round_trips,
                },
            );
        }
        Self {
            uptime_at_report,
            received,
            services,
            policies,
            store,
        }
    }
}

/// `s` cut to at most `max` bytes, on a char boundary.
fn clip(s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    validate::truncate(&s, max).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(service: &str, endpoint: &str, healthy: bool, failure: &str) -> pb::EndpointHealth {
        pb::EndpointHealth {
            service: service.into(),
            endpoint: endpoint.into(),
            healthy,
            last_failure: failure.into(),
            last_failure_at: None,
        }
    }

    fn apply(h: &mut NodeHealth, full: bool, endpoints: Vec<pb::EndpointHealth>) {
        let update =
            HealthUpdate::new("n", pb::HealthReport { full, endpoints }, SystemTime::now());
        h.apply("n", update);
    }

    #[test]
    fn partial_merges_and_full_replaces() {
        let mut h = NodeHealth::default();
        apply(
            &mut h,
            true,
            vec![
                entry("a", "http://e1:1", true, ""),
                entry("a", "http://e2:1", true, ""),
            ],
        );
        apply(
            &mut h,
            false,
            vec![entry("a", "http://e2:1", false, "refused")],
        );
        assert_eq!(h.len(), 2);
        assert!(h.get("a", "http://e1:1").unwrap().healthy);
        assert_eq!(h.get("a", "http://e2:1").unwrap().last_failure, "refused");
        apply(&mut h, true, vec![entry("b", "http://e3:1", true, "")]);
        assert_eq!(h.len(), 1);
        assert!(h.get("a", "http://e1:1").is_none());
    }

    #[test]
    fn reports_are_bounded_and_checked() {
        let mut h = NodeHealth::default();
        let many = (0..MAX_ENDPOINTS_PER_NODE + 10)
            .map(|i| entry("a", &format!("http://e:{i}"), true, ""))
            .collect();
        apply(&mut h, false, many);
        assert_eq!(h.len(), MAX_ENDPOINTS_PER_NODE);
        // At the cap, known endpoints still update.
        apply(
            &mut h,
            false,
            vec![entry("a", "http://e:0", false, &"x".repeat(5000))],
        );
        let e = h.get("a", "http://e:0").unwrap();
        assert!(!e.healthy);
        assert_eq!(e.last_failure.len(), MAX_FAILURE_LEN);

        let mut h = NodeHealth::default();
        let bad = vec![
            entry("Not A Name", "http://e:1", true, ""),
            entry("a", &"x".repeat(MAX_ENDPOINT_LEN + 1), true, ""),
        ];
        apply(&mut h, true, bad);
        assert!(h.is_empty());

        // A failure stamped in the future is pulled back to the receipt time.
        let now = SystemTime::now();
        let mut future = entry("a", "http://e:1", false, "boom");
        future.last_failure_at = Some((now + Duration::from_secs(86_400 * 365)).into());
        let update = HealthUpdate::new(
            "n",
            pb::HealthReport {
                full: true,
                endpoints: vec![future],
            },
            now,
        );
        h.apply("n", update);
        assert_eq!(h.get("a", "http://e:1").unwrap().last_failure_at, Some(now));
    }

    #[test]
    fn stats_report_is_checked() {
        let keys = (0..MAX_TOP_KEYS as u64 + 5)
            .map(|i| pb::KeyRejections {
                key: "k".repeat(300),
                rejections: 100 - i,
            })
            .collect();
        let report = pb::StatsReport {
            started_at: Some((SystemTime::now() - Duration::from_secs(60)).into()),
            services: vec![
                pb::ServiceCounters {
                    service: "a".into(),
                    figures: Some(pb::TrafficFigures {
                        requests: 3,
                        responses_2xx: 3,
                        latency: Some(pb::LatencyHistogram {
                            upper_bounds_seconds: vec![0.2, 0.1],
                            counts: vec![1, 1, 1],
                        }),
                        ..Default::default()
                    }),
                },
                pb::ServiceCounters {
                    service: "../etc".into(),
                    figures: None,
                },
            ],
            policies: vec![pb::PolicyCounters {
                policy: "p".into(),
                rate_limited: 7,
                shadow_rejected: 1,
                top_keys: keys,
                allowed: 9,
                global: true,
                store_round_trips: 4,
            }],
            rate_limit_store: Some(pb::RateLimitStoreStatus {
                state: pb::RateLimitStoreState::Unreachable.into(),
                error: "e".repeat(5000),
                url: "redis://h:1".into(),
                state_age_seconds: 3,
            }),
            ..Default::default()
        };
        let s = NodeStats::new("n", report);
        let uptime = s.uptime_at_report.unwrap();
        assert!(uptime >= Duration::from_secs(60), "{uptime:?}");
        assert_eq!(s.services.len(), 1);
        let a = &s.services["a"];
        assert_eq!((a.requests, a.responses[1]), (3, 3));
        assert_eq!(
            a.latency, None,
            "descending bounds are dropped, counters kept"
        );
        let p = &s.policies["p"];
        assert_eq!((p.rate_limited, p.shadow_rejected), (7, 1));
        assert_eq!((p.allowed, p.global, p.store_round_trips), (9, true, 4));
        let store = s.store.as_ref().unwrap();
        assert_eq!(store.error.len(), MAX_FAILURE_LEN, "the error is bounded");
        assert_eq!(store.url, "redis://h:1");
        assert_eq!(p.top_keys.len(), MAX_TOP_KEYS);
        assert_eq!(p.top_keys[0].0.len(), MAX_KEY_LEN);
    }
}
