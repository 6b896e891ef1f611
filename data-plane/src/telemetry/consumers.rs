//! Which consumers' counters go into a stats report (issue 12: `gwctl stats --consumer`).
//!
//! Services and policies are few and all reported every time; consumers can number in the
//! hundreds of thousands, so a report carries at most [`MAX_CONSUMERS_PER_REPORT`] of them:
//!
//! 1. consumers whose request count changed since they were last reported, the largest change
//!    first (ties by name). A consumer left out keeps its unreported change, which only grows,
//!    so it climbs the order and is never starved by steadier ones;
//! 2. with room left, consumers unchanged but last reported [`REFRESH_REPORTS`] reports ago or
//!    more, oldest first, so the control plane's copy heals if a report was lost on a link
//!    that dropped and came back faster than the reporter noticed.
//!
//! The figures sent are cumulative (like every counter in a report), so the control plane
//! keeps each consumer's latest copy per node and a consumer sent late is late, never wrong.
//! After a new connection, or a report that could not be queued, everything is sent again
//! ([`ConsumerReports::reset`]).
//!
//! A consumer removed from the config is forgotten ([`ConsumerReports::forget_removed`]) once
//! its last figures have gone out, so consumer churn does not grow the node's memory or the
//! work of each report. If it is added again it starts from zero on this node.

use std::collections::HashMap;
use std::sync::Arc;

use gw_proto::v1 as pb;

use crate::stats::{ConsumerFigures, ConsumerStats, Registry};

/// Most consumers in one report. An entry is at most ~110 bytes (a 63-byte name and seven
/// counters), so 256 add under 30 KB to a report, and at the default 5 s interval a node
/// drains ~3,000 changed consumers a minute; more active consumers than that on one node
/// show up in `consumers_deferred` and their figures lag.
pub const MAX_CONSUMERS_PER_REPORT: usize = 256;
/// An unchanged consumer is sent again after this many reports (a minute at the default
/// interval), room permitting.
pub const REFRESH_REPORTS: u64 = 12;

/// What was last sent for each consumer; lives in the reporter.
#[derive(Debug, Default)]
pub struct ConsumerReports {
    /// Per consumer: the request count last sent and the report it went in.
    sent: HashMap<Arc<str>, (u64, u64)>,
    /// Reports made so far.
    seq: u64,
}

impl ConsumerReports {
    /// The consumers for the next report out of `all` (every consumer's counters), at most
    /// `max`, and how many changed ones were left for later. Counts them as sent.
    pub fn next(
        &mut self,
        all: &[(Arc<str>, Arc<ConsumerStats>)],
        max: usize,
    ) -> (Vec<pb::ConsumerCounters>, u32) {
        self.seq += 1;
        let mut changed = Vec::new();
        let mut stale = Vec::new();
        for (name, stats) in all {
            let f = stats.figures();
            match self.sent.get(name) {
                Some(&(requests, at)) if requests == f.requests => {
                    if self.seq.saturating_sub(at) >= REFRESH_REPORTS {
                        stale.push((at, name, f));
                    }
                }
                Some(&(requests, _)) => {
                    changed.push((f.requests.saturating_sub(requests), name, f));
                }
                None if f.requests == 0 => {}
                None => changed.push((f.requests, name, f)),
            }
        }
        changed.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        stale.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        let deferred = u32::try_from(changed.len().saturating_sub(max)).unwrap_or(u32::MAX);
        let chosen = changed
            .into_iter()
            .map(|(_, name, f)| (name, f))
            .chain(stale.into_iter().map(|(_, name, f)| (name, f)))
            .take(max);
        let mut out = Vec::with_capacity(max.min(all.len()));
        for (name, f) in chosen {
            self.sent.insert(name.clone(), (f.requests, self.seq));
            out.push(counters(name, f));
        }
        (out, deferred)
    }

    /// Forgets what was sent: the next reports send every consumer with traffic again.
    pub fn reset(&mut self) {
        self.sent.clear();
    }

    /// Drops from `registry` (and from what was sent) every consumer no config in force holds
    /// any more whose latest figures were sent, or which never had traffic. Call it with no
    /// [`Registry::snapshot`] of `registry` alive: a snapshot holds every entry.
    pub fn forget_removed(&mut self, registry: &Registry<ConsumerStats>) {
        let sent = &mut self.sent;
        registry.forget_unused(|name, stats| {
            let requests = stats.figures().requests;
            let done = requests == 0 || sent.get(name).is_some_and(|&(r, _)| r == requests);
            if done {
                sent.remove(name);
            }
            done
        });
    }

    /// Consumers whose last report is remembered, for tests and bounds checks.
    pub fn remembered(&self) -> usize {
        self.sent.len()
    }
}

fn counters(name: &str, f: ConsumerFigures) -> pb::ConsumerCounters {
    let [r1, r2, r3, r4, r5] = f.responses;
    pb::ConsumerCounters {
        consumer: name.to_owned(),
        figures: Some(pb::ConsumerFigures {
            requests: f.requests,
            responses_1xx: r1,
            responses_2xx: r2,
            responses_3xx: r3,
            responses_4xx: r4,
            responses_5xx: r5,
            rate_limited: f.rate_limited,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Registry;

    /// Names in a report, in order.
    fn names(report: &[pb::ConsumerCounters]) -> Vec<&str> {
        report.iter().map(|c| c.consumer.as_str()).collect()
    }

    fn hit(reg: &Registry<ConsumerStats>, name: &str, n: u64) {
        let s = reg.get(name);
        for _ in 0..n {
            s.record(200);
        }
    }

    #[test]
    fn only_changes_are_sent_the_largest_first_and_no_more_than_the_cap() {
        let reg = Registry::<ConsumerStats>::default();
        let mut r = ConsumerReports::default();
        // A consumer without traffic is never sent.
        reg.get("idle");
        hit(&reg, "a", 1);
        hit(&reg, "b", 5);
        hit(&reg, "c", 3);
        let (sent, deferred) = r.next(&reg.snapshot(), 2);
        assert_eq!((names(&sent), deferred), (vec!["b", "c"], 1));
        let b = sent[0].figures.unwrap();
        assert_eq!((b.requests, b.responses_2xx), (5, 5));

        // `a` waited with 1; `b` changed by 2: `b` first, then `a`. `c` is unchanged.
        hit(&reg, "b", 2);
        let (sent, deferred) = r.next(&reg.snapshot(), 2);
        assert_eq!((names(&sent), deferred), (vec!["b", "a"], 0));
        assert_eq!(sent[0].figures.unwrap().requests, 7, "cumulative");

        // Nothing changed: nothing to send (nothing is stale yet).
        let (sent, deferred) = r.next(&reg.snapshot(), 2);
        assert_eq!((sent.len(), deferred), (0, 0));
    }

    #[test]
    fn a_consumer_left_out_is_not_starved() {
        let reg = Registry::<ConsumerStats>::default();
        let mut r = ConsumerReports::default();
        // Three consumers equally busy, room for two: each waits at most one report.
        let mut last_sent = HashMap::new();
        for round in 1..=12u64 {
            for n in ["x", "y", "z"] {
                hit(&reg, n, 10);
            }
            let (sent, _) = r.next(&reg.snapshot(), 2);
            for c in &sent {
                last_sent.insert(c.consumer.clone(), round);
            }
            if round >= 2 {
                for n in ["x", "y", "z"] {
                    assert!(round - last_sent[n] <= 1, "{n} starved at round {round}");
                }
            }
        }
    }

    #[test]
    fn unchanged_consumers_are_refreshed_and_reset_sends_everything() {
        let reg = Registry::<ConsumerStats>::default();
        let mut r = ConsumerReports::default();
        hit(&reg, "a", 1);
        hit(&reg, "b", 1);
        assert_eq!(r.next(&reg.snapshot(), 10).0.len(), 2);
        for _ in 1..REFRESH_REPORTS {
            assert!(r.next(&reg.snapshot(), 10).0.is_empty());
        }
        // Room for one: the refresh takes the oldest (by name on a tie), the next gets `b`.
        assert_eq!(names(&r.next(&reg.snapshot(), 1).0), ["a"]);
        assert_eq!(names(&r.next(&reg.snapshot(), 1).0), ["b"]);
        // A changed consumer goes before a stale one.
        hit(&reg, "b", 1);
        for _ in 0..REFRESH_REPORTS {
            r.next(&reg.snapshot(), 0);
        }
        assert_eq!(names(&r.next(&reg.snapshot(), 1).0), ["b"]);

        // After a reset every consumer with traffic is a change again (the busiest first).
        r.reset();
        let (sent, _) = r.next(&reg.snapshot(), 10);
        assert_eq!(names(&sent), ["b", "a"]);
    }

    #[test]
    fn a_removed_consumer_is_forgotten_once_its_last_figures_are_sent() {
        let reg = Registry::<ConsumerStats>::default();
        let mut r = ConsumerReports::default();
        // `kept` is held by the config in force (here: the test); the others by nothing.
        let kept = reg.get("kept");
        kept.record(200);
        hit(&reg, "gone", 2);
        hit(&reg, "late", 1);
        reg.get("idle");
        let (sent, _) = r.next(&reg.snapshot(), 2);
        assert_eq!(names(&sent), ["gone", "kept"]);
        // `late` changed but did not fit: kept until it is sent; `idle` never had traffic.
        r.forget_removed(&reg);
        let left: Vec<_> = reg.snapshot().iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(left, ["kept", "late"]);
        assert_eq!(r.remembered(), 1, "only kept's last report");
        // `late` goes out, then goes; `kept` stays however long it is idle.
        assert_eq!(names(&r.next(&reg.snapshot(), 2).0), ["late"]);
        r.forget_removed(&reg);
        assert_eq!((reg.len(), r.remembered()), (1, 1));
        assert!(Arc::ptr_eq(&reg.get("kept"), &kept), "counters kept");
        // Churn: many temporary consumers leave nothing behind once reported.
        for i in 0..1000 {
            hit(&reg, &format!("tmp{i}"), 1);
        }
        while !r
            .next(&reg.snapshot(), MAX_CONSUMERS_PER_REPORT)
            .0
            .is_empty()
        {
            r.forget_removed(&reg);
        }
        r.forget_removed(&reg);
        assert_eq!((reg.len(), r.remembered()), (1, 1));
    }

    #[test]
    fn a_full_report_stays_small() {
        use prost::Message as _;
        let reg = Registry::<ConsumerStats>::default();
        for i in 0..MAX_CONSUMERS_PER_REPORT * 4 {
            let s = reg.get(&format!("{i:0>63}"));
            for _ in 0..1000 {
                s.record(200);
            }
            s.rate_limited();
        }
        let mut r = ConsumerReports::default();
        let (consumers, deferred) = r.next(&reg.snapshot(), MAX_CONSUMERS_PER_REPORT);
        assert_eq!(consumers.len(), MAX_CONSUMERS_PER_REPORT);
        assert_eq!(deferred as usize, MAX_CONSUMERS_PER_REPORT * 3);
        let report = pb::StatsReport {
            consumers,
            ..Default::default()
        };
        assert!(report.encoded_len() < 30 * 1024, "{}", report.encoded_len());
    }
}
