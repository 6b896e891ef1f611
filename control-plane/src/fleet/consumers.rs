//! Consumers' traffic as one node reports it (issue 12: `gwctl stats --consumer`).
//!
//! Unlike services, a report carries only some consumers (those that changed, a bounded
//! number: see the data plane's `telemetry::consumers`), so each report is merged into what
//! the node reported before instead of replacing it. The figures are cumulative since the
//! node started; a report with another start time (the node restarted) starts afresh.
//!
//! Only consumers in the config as the report arrives are kept: a data plane cannot add
//! names that are not consumers (a bug or a hostile node would otherwise fill its cap with
//! them), so what is kept is bounded by the consumers configured while the node ran, and at
//! most [`MAX_CONSUMERS_PER_NODE`] per node. A consumer removed from the config keeps the
//! figures its nodes reported before the removal (later reports of it are ignored) until
//! those nodes restart.

use std::collections::BTreeMap;
use std::time::SystemTime;

use gw_proto::v1 as pb;

use crate::domain::validate;

/// Most consumers kept per node: new ones beyond it are ignored (known ones still update).
/// An entry is ~150 bytes, so a node costs at most ~1.5 MB here; a fleet with more active
/// consumers per node than this is not what the figures are for.
pub const MAX_CONSUMERS_PER_NODE: usize = 10_000;

/// One consumer's counters on one node (or summed over nodes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerFigures {
    /// Requests answered.
    pub requests: u64,
    /// Responses by status class, 1xx to 5xx.
    pub responses: [u64; 5],
    /// Requests rejected by an enforcing policy.
    pub rate_limited: u64,
}

impl ConsumerFigures {
    /// Adds `other`'s counters.
    pub fn add(&mut self, other: &ConsumerFigures) {
        self.requests = self.requests.saturating_add(other.requests);
        for (mine, theirs) in self.responses.iter_mut().zip(other.responses) {
            *mine = mine.saturating_add(theirs);
        }
        self.rate_limited = self.rate_limited.saturating_add(other.rate_limited);
    }
}

impl From<pb::ConsumerFigures> for ConsumerFigures {
    fn from(f: pb::ConsumerFigures) -> Self {
        let pb::ConsumerFigures {
            requests,
            responses_1xx,
            responses_2xx,
            responses_3xx,
            responses_4xx,
            responses_5xx,
            rate_limited,
        } = f;
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
        }
    }
}

impl From<&ConsumerFigures> for pb::ConsumerFigures {
    fn from(f: &ConsumerFigures) -> Self {
        let [r1, r2, r3, r4, r5] = f.responses;
        pb::ConsumerFigures {
            requests: f.requests,
            responses_1xx: r1,
            responses_2xx: r2,
            responses_3xx: r3,
            responses_4xx: r4,
            responses_5xx: r5,
            rate_limited: f.rate_limited,
        }
    }
}

/// The consumer part of a stats report, checked and ready to merge.
#[derive(Debug, Clone)]
pub struct ConsumerUpdate {
    started_at: Option<SystemTime>,
    entries: Vec<(String, ConsumerFigures)>,
    deferred: u32,
}

impl ConsumerUpdate {
    /// Takes the consumers out of `report` from `node` (leaving the rest for
    /// [`crate::fleet::NodeStats::new`]); malformed entries, and names that
    /// `is_configured` says are not consumers of the config, are dropped.
    pub fn take(
        node: &str,
        report: &mut pb::StatsReport,
        is_configured: impl Fn(&str) -> bool,
    ) -> Self {
        let started_at = report.started_at.and_then(|t| SystemTime::try_from(t).ok());
        let consumers = std::mem::take(&mut report.consumers);
        let deferred = std::mem::take(&mut report.consumers_deferred);
        let mut entries = Vec::with_capacity(consumers.len().min(MAX_CONSUMERS_PER_NODE));
        for pb::ConsumerCounters { consumer, figures } in consumers {
            if entries.len() >= MAX_CONSUMERS_PER_NODE
                || validate::name(&consumer).is_err()
                || !is_configured(&consumer)
            {
                tracing::debug!(
                    node,
                    "stats for a malformed, excess or unconfigured consumer ignored"
                );
                continue;
            }
            entries.push((consumer, figures.map(Into::into).unwrap_or_default()));
        }
        Self {
            started_at,
            entries,
            deferred,
        }
    }
}

/// Every consumer one node reported since it started, with its latest figures. Not `Clone`:
/// it is merged in place under the registry's lock, and views copy only the consumer they
/// show ([`crate::fleet::NodeRegistry::fleet_for_consumer`]), so a report never copies the map.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NodeConsumers {
    started_at: Option<SystemTime>,
    by_name: BTreeMap<String, ConsumerFigures>,
    /// Consumers the node's latest report held back for lack of room.
    pub deferred: u32,
}

impl NodeConsumers {
    /// Merges `update`: each consumer in it replaces the node's earlier figures for it; a new
    /// start time drops everything from the node's earlier run first.
    pub fn apply(&mut self, node: &str, update: ConsumerUpdate) {
        if update.started_at != self.started_at {
            self.by_name.clear();
            self.started_at = update.started_at;
        }
        self.deferred = update.deferred;
        let mut ignored = 0usize;
        for (name, figures) in update.entries {
            if let Some(known) = self.by_name.get_mut(&name) {
                *known = figures;
            } else if self.by_name.len() < MAX_CONSUMERS_PER_NODE {
                self.by_name.insert(name, figures);
            } else {
                ignored += 1;
            }
        }
        if ignored > 0 {
            tracing::debug!(
                node,
                ignored,
                "consumers beyond {MAX_CONSUMERS_PER_NODE} per node ignored"
            );
        }
    }

    /// The node's figures for `consumer`, if it reported any.
    pub fn get(&self, consumer: &str) -> Option<&ConsumerFigures> {
        self.by_name.get(consumer)
    }

    /// Consumers known, for tests and bounds checks.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether the node reported no consumer.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn report(started: SystemTime, entries: &[(&str, u64)], deferred: u32) -> pb::StatsReport {
        pb::StatsReport {
            started_at: Some(started.into()),
            consumers: entries
                .iter()
                .map(|(name, requests)| pb::ConsumerCounters {
                    consumer: (*name).into(),
                    figures: Some(pb::ConsumerFigures {
                        requests: *requests,
                        responses_2xx: *requests,
                        ..Default::default()
                    }),
                })
                .collect(),
            consumers_deferred: deferred,
            ..Default::default()
        }
    }

    fn apply(c: &mut NodeConsumers, mut r: pb::StatsReport) {
        let update = ConsumerUpdate::take("n", &mut r, |name| name != "unconfigured");
        assert!(r.consumers.is_empty() && r.consumers_deferred == 0, "taken");
        c.apply("n", update);
    }

    fn requests(c: &NodeConsumers, name: &str) -> Option<u64> {
        c.get(name).map(|f| f.requests)
    }

    #[test]
    fn reports_merge_until_the_node_restarts() {
        let start = SystemTime::now() - Duration::from_secs(60);
        let mut c = NodeConsumers::default();
        apply(&mut c, report(start, &[("alice", 3), ("bob", 1)], 0));
        apply(&mut c, report(start, &[("alice", 5)], 2));
        assert_eq!(requests(&c, "alice"), Some(5), "replaced");
        assert_eq!(requests(&c, "bob"), Some(1), "kept: not in the report");
        assert_eq!(c.deferred, 2);
        assert_eq!(c.get("alice").unwrap().responses[1], 5);
        // Restarted: the old run's figures are gone.
        apply(
            &mut c,
            report(start + Duration::from_secs(30), &[("bob", 2)], 0),
        );
        assert_eq!(
            (requests(&c, "alice"), requests(&c, "bob")),
            (None, Some(2))
        );
    }

    #[test]
    fn entries_are_checked_and_bounded() {
        let start = SystemTime::now();
        let mut c = NodeConsumers::default();
        apply(
            &mut c,
            report(start, &[("Not A Name", 1), ("", 1), ("unconfigured", 1)], 0),
        );
        assert!(c.is_empty(), "{c:?}");
        let names: Vec<String> = (0..MAX_CONSUMERS_PER_NODE + 5)
            .map(|i| format!("c{i}"))
            .collect();
        let many: Vec<(&str, u64)> = names.iter().map(|n| (n.as_str(), 1)).collect();
        apply(&mut c, report(start, &many, 0));
        assert_eq!(c.len(), MAX_CONSUMERS_PER_NODE);
        // At the cap, known consumers still update; new ones are ignored.
        apply(&mut c, report(start, &[("c0", 9), ("new", 1)], 0));
        assert_eq!((requests(&c, "c0"), requests(&c, "new")), (Some(9), None));
    }

    #[test]
    fn figures_add_and_convert() {
        let f = ConsumerFigures {
            requests: 3,
            responses: [0, 2, 0, 1, 0],
            rate_limited: 1,
        };
        let mut sum = ConsumerFigures::default();
        sum.add(&f);
        sum.add(&ConsumerFigures {
            requests: u64::MAX,
            ..f
        });
        assert_eq!(sum.requests, u64::MAX, "saturates");
        assert_eq!((sum.responses, sum.rate_limited), ([0, 4, 0, 2, 0], 2));
        assert_eq!(ConsumerFigures::from(pb::ConsumerFigures::from(&f)), f);
    }
}
