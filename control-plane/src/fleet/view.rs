//! Fleet-wide views for GetHealth and GetStats, built from the current config and a snapshot of
//! every node's latest reports. Pure functions: no locks, no I/O.

use std::collections::{BTreeMap, BTreeSet};

use gw_proto::v1 as pb;

use crate::domain::validate::echo;
use crate::fleet::consumers::ConsumerFigures;
use crate::fleet::histogram;
use crate::fleet::nodes::NodeView;
use crate::fleet::report::{Figures, NodeStats, PolicyFigures};
use crate::state::ConfigState;

/// Most keys shown per policy, after merging the nodes' lists.
pub const TOP_KEYS: usize = 10;

/// Why a view cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    /// The service filter names no service in the config (or, for stats, in any report).
    #[error("service '{0}' does not exist")]
    UnknownService(String),
    /// The node filter names no node seen since start-up.
    #[error("node '{0}' is not known; gwctl nodes lists them")]
    UnknownNode(String),
    /// The consumer is neither in the config nor in any report.
    #[error("consumer '{0}' does not exist; gwctl consumer list lists them")]
    UnknownConsumer(String),
}

/// GetHealth: every endpoint of every service in `state` (or only `service`, if not empty),
/// in config order, as the connected nodes see it: counts, per-node entries and the latest
/// failure (by its time) all come from connected nodes only. Disconnected nodes are left out:
/// what they last saw may no longer be true, and they no longer send traffic anyway.
pub fn health(
    state: &ConfigState,
    nodes: &[NodeView],
    service: &str,
) -> Result<pb::GetHealthResponse, ViewError> {
    if !service.is_empty() && !state.services.contains_key(service) {
        return Err(ViewError::UnknownService(echo(service).into_owned()));
    }
    let connected: Vec<&NodeView> = nodes.iter().filter(|n| n.connected).collect();
    let services = state
        .services
        .values()
        .filter(|s| service.is_empty() || s.name == service)
        .map(|s| pb::ServiceHealth {
            service: s.name.clone(),
            endpoints: s
                .endpoints
                .iter()
                .map(|e| endpoint_health(&s.name, &e.to_string(), &connected))
                .collect(),
        })
        .collect();
    Ok(pb::GetHealthResponse { services })
}

fn endpoint_health(
    service: &str,
    endpoint: &str,
    nodes: &[&NodeView],
) -> pb::EndpointHealthSummary {
    let mut summary = pb::EndpointHealthSummary {
        endpoint: endpoint.to_owned(),
        ..Default::default()
    };
    let mut latest = None;
    for node in nodes {
        let Some(state) = node.health.get(service, endpoint) else {
            continue;
        };
        if state.healthy {
            summary.healthy_nodes += 1;
        } else {
            summary.unhealthy_nodes += 1;
        }
        // A failure without a time still counts, but any timed one is later than it.
        if !state.last_failure.is_empty() && latest.is_none_or(|(at, _)| state.last_failure_at > at)
        {
            latest = Some((state.last_failure_at, (*node, state)));
        }
        summary.nodes.push(pb::NodeEndpointHealth {
            node_id: node.node_id.clone(),
            healthy: state.healthy,
            last_failure: state.last_failure.clone(),
        });
    }
    if let Some((at, (node, state))) = latest {
        summary.last_failure = state.last_failure.clone();
        summary.last_failure_node = node.node_id.clone();
        summary.last_failure_at = at.map(Into::into);
    }
    summary
}

/// GetStats: per service, the sum of the selected nodes' latest figures (connected or not)
/// and each node's share; per policy, rejections and the merged top keys.
///
/// Services are those of the config plus any a selected node still reports (a deleted service
/// keeps its history). With a service filter, only policies of that service (or of every
/// service) are shown.
pub fn stats(
    state: &ConfigState,
    nodes: &[NodeView],
    service: &str,
    node: &str,
) -> Result<pb::GetStatsResponse, ViewError> {
    if !node.is_empty() && !nodes.iter().any(|n| n.node_id == node) {
        return Err(ViewError::UnknownNode(echo(node).into_owned()));
    }
    let reported = |name: &str| {
        nodes
            .iter()
            .filter_map(|n| n.stats.as_deref())
            .any(|s| s.services.contains_key(name))
    };
    if !service.is_empty() && !state.services.contains_key(service) && !reported(service) {
        return Err(ViewError::UnknownService(echo(service).into_owned()));
    }
    let selected: Vec<(&NodeView, &NodeStats)> = nodes
        .iter()
        .filter(|n| node.is_empty() || n.node_id == node)
        .filter_map(|n| n.stats.as_deref().map(|s| (n, s)))
        .collect();

    let mut names: BTreeSet<&str> = state.services.keys().map(String::as_str).collect();
    for (_, s) in &selected {
        names.extend(s.services.keys().map(String::as_str));
    }
    let services = names
        .into_iter()
        .filter(|name| service.is_empty() || *name == service)
        .map(|name| service_traffic(name, &selected))
        .collect();

    let mut policy_names: BTreeSet<&str> = BTreeSet::new();
    for p in state.policies.values() {
        let applies = match &p.service {
            None => true,
            Some(s) => service.is_empty() || s == service,
        };
        if applies {
            policy_names.insert(&p.name);
        }
    }
    // A policy no longer in the config has no known service, so only the unfiltered view
    // shows its remaining figures.
    if service.is_empty() {
        for (_, s) in &selected {
            policy_names.extend(s.policies.keys().map(String::as_str));
        }
    }
    let policies = policy_names
        .into_iter()
        .map(|name| {
            let figures = selected
                .iter()
                .filter_map(|(n, s)| s.policies.get(name).map(|f| (store_down(n, s), f)));
            policy_traffic(name, figures)
        })
        .collect();
    Ok(pb::GetStatsResponse {
        services,
        policies,
        consumer: None,
    })
}

/// GetStats for one consumer: the sum of the selected nodes' latest figures for it (connected
/// or not) and each reporting node's share. A consumer of the config that no node reported
/// yet gets zeros; one removed from the config keeps the figures nodes reported before its
/// removal, until they restart (reports after it are ignored: see `fleet::consumers`).
/// `nodes` must come from [`crate::fleet::NodeRegistry::fleet_for_consumer`] for `consumer`.
pub fn consumer_stats(
    state: &ConfigState,
    nodes: &[NodeView],
    consumer: &str,
    node: &str,
) -> Result<pb::GetStatsResponse, ViewError> {
    if !node.is_empty() && !nodes.iter().any(|n| n.node_id == node) {
        return Err(ViewError::UnknownNode(echo(node).into_owned()));
    }
    if !state.consumers.contains_key(consumer) && !nodes.iter().any(|n| n.consumer.is_some()) {
        return Err(ViewError::UnknownConsumer(echo(consumer).into_owned()));
    }
    let selected = nodes
        .iter()
        .filter(|n| node.is_empty() || n.node_id == node);
    let mut total = ConsumerFigures::default();
    let mut out = pb::ConsumerTraffic {
        consumer: consumer.to_owned(),
        ..Default::default()
    };
    for n in selected {
        if n.connected && n.consumers_deferred > 0 {
            out.lagging_nodes += 1;
        }
        if let Some(f) = &n.consumer {
            total.add(f);
            out.nodes.push(pb::NodeConsumerTraffic {
                node_id: n.node_id.clone(),
                connected: n.connected,
                figures: Some(f.into()),
            });
        }
    }
    out.total = Some((&total).into());
    Ok(pb::GetStatsResponse {
        consumer: Some(out),
        ..Default::default()
    })
}

fn service_traffic(name: &str, selected: &[(&NodeView, &NodeStats)]) -> pb::ServiceTraffic {
    let per_node: Vec<(&NodeView, &Figures)> = selected
        .iter()
        .filter_map(|(n, s)| s.services.get(name).map(|f| (*n, f)))
        .collect();
    let mut total = Figures::default();
    for (_, f) in &per_node {
        total.add_counters(f);
    }
    total.latency = histogram::merge(
        per_node
            .iter()
            .filter_map(|(n, f)| f.latency.as_ref().map(|h| (n.node_id.as_str(), h))),
    );
    pb::ServiceTraffic {
        service: name.to_owned(),
        total: Some(pb::TrafficFigures::from(&total)),
        nodes: per_node
            .iter()
            .map(|(n, f)| pb::NodeTraffic {
                node_id: n.node_id.clone(),
                connected: n.connected,
                figures: Some(pb::TrafficFigures::from(*f)),
            })
            .collect(),
    }
}

/// Whether `node` is connected and reported its rate-limit store unreachable.
fn store_down(node: &NodeView, stats: &NodeStats) -> bool {
    node.connected
        && stats
            .store
            .as_ref()
            .is_some_and(|s| s.state == pb::RateLimitStoreState::Unreachable as i32)
}

/// One policy's figures summed over nodes, each with whether its store is down.
fn policy_traffic<'a>(
    name: &str,
    figures: impl Iterator<Item = (bool, &'a PolicyFigures)>,
) -> pb::PolicyTraffic {
    let mut out = pb::PolicyTraffic {
        policy: name.to_owned(),
        ..Default::default()
    };
    let mut lists = Vec::new();
    for (store_down, f) in figures {
        out.allowed = out.allowed.saturating_add(f.allowed);
        out.store_round_trips = out.store_round_trips.saturating_add(f.store_round_trips);
        out.global |= f.global;
        if f.global && store_down {
            out.degraded_nodes += 1;
        }
        out.rate_limited = out.rate_limited.saturating_add(f.rate_limited);
        out.shadow_rejected = out.shadow_rejected.saturating_add(f.shadow_rejected);
        lists.push(f.top_keys.as_slice());
    }
    out.top_keys = merge_top_keys(lists, TOP_KEYS)
        .into_iter()
        .map(|(key, rejections)| pb::KeyRejections { key, rejections })
        .collect();
    out
}

/// Sums each key's rejections across the nodes' lists and keeps the `limit` largest, most
/// first (ties by key, so the answer is stable). A key near the bottom of several nodes' lists
/// may be missing from some of them, so the sums are lower bounds for such keys.
pub fn merge_top_keys<'a>(
    lists: impl IntoIterator<Item = &'a [(String, u64)]>,
    limit: usize,
) -> Vec<(String, u64)> {
    let mut sums: BTreeMap<&str, u64> = BTreeMap::new();
    for list in lists {
        for (key, n) in list {
            let sum = sums.entry(key).or_default();
            *sum = sum.saturating_add(*n);
        }
    }
    let mut merged: Vec<(String, u64)> = sums.into_iter().map(|(k, n)| (k.to_owned(), n)).collect();
    // Stable sort of a key-ordered list: equal counts stay in key order.
    merged.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    merged.truncate(limit);
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[(&str, u64)]) -> Vec<(String, u64)> {
        list.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect()
    }

    #[test]
    fn top_keys_are_summed_sorted_and_bounded() {
        let a = keys(&[("10.0.0.1", 9), ("10.0.0.2", 5), ("10.0.0.3", 1)]);
        let b = keys(&[("10.0.0.2", 7), ("10.0.0.4", 3), ("10.0.0.3", 1)]);
        let cases: [(usize, &[(&str, u64)]); 3] = [
            (
                10,
                &[
                    ("10.0.0.2", 12),
                    ("10.0.0.1", 9),
                    ("10.0.0.4", 3),
                    ("10.0.0.3", 2),
                ],
            ),
            (2, &[("10.0.0.2", 12), ("10.0.0.1", 9)]),
            (0, &[]),
        ];
        for (limit, want) in cases {
            let got = merge_top_keys([a.as_slice(), b.as_slice()], limit);
            assert_eq!(got, keys(want), "limit {limit}");
        }
        // Ties are ordered by key; an empty input gives nothing.
        let tie = keys(&[("b", 1), ("a", 1)]);
        assert_eq!(
            merge_top_keys([tie.as_slice()], 10),
            keys(&[("a", 1), ("b", 1)])
        );
        assert!(merge_top_keys(std::iter::empty(), 10).is_empty());
        let huge = keys(&[("k", u64::MAX)]);
        assert_eq!(
            merge_top_keys([huge.as_slice(), huge.as_slice()], 1),
            keys(&[("k", u64::MAX)])
        );
    }
}
