//! `gwctl stats [SERVICE] [--node ID]`: traffic figures the data planes reported.
//! (`gwctl stats --consumer NAME`, one consumer's traffic, is rendered by [`consumer`].)
//!
//! Figures are cumulative since each node started; a disconnected node keeps its last figures
//! and is flagged (see [`Highlight`]). The table shows each service's totals with one row per
//! node under it, then one row per policy with its busiest rejected keys:
//! ```text
//! SERVICE                  REQUESTS  2XX  4XX  5XX  LIMITED  ERRORS  P50    P90    P99
//! demo                     30        25   5    0    5        0       2.1ms  4.0ms  9.8ms
//!   dp-1                   20        17   3    0    3        0       2.0ms  3.9ms  9.8ms
//!   ! dp-2 (disconnected)  10        8    2    0    2        0       2.2ms  4.1ms  5.0ms
//!
//! POLICY       SCOPE   ALLOWED  LIMITED  SHADOW  TOP KEYS
//! demo-per-ip  global  25       5        0       10.0.0.7 (4), 10.0.0.8 (1)
//! ```
//! ALLOWED and LIMITED of a `global` policy are its fleet-wide usage (summed over the nodes);
//! SCOPE shows `! global (N degraded)` while N connected nodes cannot reach Redis and enforce
//! the policy through its `on_store_error` instead.
//!
//! JSON shape (`-o json`), stable for scripts. Latencies are milliseconds as numbers (null when
//! there were no requests); every counter is an integer:
//! ```json
//! {"services": [{"service": "demo",
//!    "total": {"requests": 30, "responses_1xx": 0, "responses_2xx": 25, "responses_3xx": 0,
//!              "responses_4xx": 5, "responses_5xx": 0, "rate_limited": 5, "upstream_errors": 0,
//!              "latency_p50_ms": 2.1, "latency_p90_ms": 4.0, "latency_p99_ms": 9.8},
//!    "nodes": [{"node_id": "dp-1", "connected": true, "figures": {…same fields…}}]}],
//!  "policies": [{"policy": "demo-per-ip", "rate_limited": 5, "shadow_rejected": 0,
//!    "allowed": 25, "global": true, "degraded_nodes": 0, "store_round_trips": 30,
//!    "top_keys": [{"key": "10.0.0.7", "rejections": 4}]}]}
//! ```

use std::io::Write;

use gw_proto::v1 as pb;
use serde::Serialize;

use crate::args::StatsArgs;
use crate::client::AdminClient;
use crate::duration;
use crate::error::Error;
use crate::output::{Highlight, OutputFormat, Render, Table, emit};

mod consumer;
use consumer::ConsumerStatsView;

/// How many of a policy's top keys the table shows; JSON has all the server sent.
const TABLE_TOP_KEYS: usize = 5;

/// Runs `gwctl stats`.
pub async fn run(
    args: StatsArgs,
    client: &mut AdminClient,
    format: OutputFormat,
    highlight: Highlight,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let StatsArgs {
        service,
        node,
        consumer,
    } = args;
    let by_consumer = consumer.is_some();
    let request = pb::GetStatsRequest {
        service: service.unwrap_or_default(),
        node_id: node.unwrap_or_default(),
        consumer: consumer.unwrap_or_default(),
    };
    let mut response = client
        .api
        .get_stats(request)
        .await
        .map_err(|s| client.call_error("GetStats", s))?
        .into_inner();
    if by_consumer {
        // A control plane that predates consumer stats ignores the field and answers with
        // every service instead: say so rather than show the wrong figures.
        let traffic = response.consumer.take().ok_or_else(|| Error::Rejected {
            kind: "not supported",
            message: "the control plane does not report per-consumer traffic; is it older \
                      than gwctl?"
                .into(),
        })?;
        emit(format, &ConsumerStatsView::new(traffic, highlight), out)?;
    } else {
        emit(format, &StatsView::new(response, highlight), out)?;
    }
    Ok(())
}

/// `gwctl stats` (the JSON shape in the module docs).
#[derive(Debug, Serialize)]
pub struct StatsView {
    services: Vec<ServiceView>,
    policies: Vec<PolicyView>,
    #[serde(skip)]
    highlight: Highlight,
}

#[derive(Debug, Serialize)]
struct ServiceView {
    service: String,
    total: Figures,
    nodes: Vec<NodeView>,
}

#[derive(Debug, Serialize)]
struct NodeView {
    node_id: String,
    connected: bool,
    figures: Figures,
}

#[derive(Debug, Default, Serialize)]
struct Figures {
    requests: u64,
    responses_1xx: u64,
    responses_2xx: u64,
    responses_3xx: u64,
    responses_4xx: u64,
    responses_5xx: u64,
    rate_limited: u64,
    upstream_errors: u64,
    latency_p50_ms: Option<f64>,
    latency_p90_ms: Option<f64>,
    latency_p99_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
struct PolicyView {
    policy: String,
    rate_limited: u64,
    shadow_rejected: u64,
    allowed: u64,
    global: bool,
    degraded_nodes: u32,
    store_round_trips: u64,
    top_keys: Vec<KeyView>,
}

#[derive(Debug, Serialize)]
struct KeyView {
    key: String,
    rejections: u64,
}

impl StatsView {
    fn new(response: pb::GetStatsResponse, highlight: Highlight) -> Self {
        let pb::GetStatsResponse {
            services,
            policies,
            // Asked for with `--consumer`, and then rendered by `consumer` instead.
            consumer: _,
        } = response;
        let services = services
            .into_iter()
            .map(|s| {
                let pb::ServiceTraffic {
                    service,
                    total,
                    nodes,
                } = s;
                ServiceView {
                    service,
                    total: Figures::from(total),
                    nodes: nodes
                        .into_iter()
                        .map(|n| {
                            let pb::NodeTraffic {
                                node_id,
                                connected,
                                figures,
                            } = n;
                            NodeView {
                                node_id,
                                connected,
                                figures: Figures::from(figures),
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        let policies = policies
            .into_iter()
            .map(|p| {
                let pb::PolicyTraffic {
                    policy,
                    rate_limited,
                    shadow_rejected,
                    top_keys,
                    allowed,
                    global,
                    degraded_nodes,
                    store_round_trips,
                } = p;
                PolicyView {
                    policy,
                    rate_limited,
                    shadow_rejected,
                    allowed,
                    global,
                    degraded_nodes,
                    store_round_trips,
                    top_keys: top_keys
                        .into_iter()
                        .map(|k| {
                            let pb::KeyRejections { key, rejections } = k;
                            KeyView { key, rejections }
                        })
                        .collect(),
                }
            })
            .collect();
        Self {
            services,
            policies,
            highlight,
        }
    }
}

impl From<Option<pb::TrafficFigures>> for Figures {
    fn from(figures: Option<pb::TrafficFigures>) -> Self {
        let Some(pb::TrafficFigures {
            requests,
            responses_1xx,
            responses_2xx,
            responses_3xx,
            responses_4xx,
            responses_5xx,
            rate_limited,
            upstream_errors,
            latency_p50,
            latency_p90,
            latency_p99,
            // The percentiles above are computed from it by the control plane, which merges
            // histograms across nodes; gwctl has nothing to add.
            latency: _,
        }) = figures
        else {
            return Figures::default();
        };
        let ms = |d: Option<prost_types::Duration>| {
            duration::from_proto(d).map(|d| d.as_secs_f64() * 1e3)
        };
        Figures {
            requests,
            responses_1xx,
            responses_2xx,
            responses_3xx,
            responses_4xx,
            responses_5xx,
            rate_limited,
            upstream_errors,
            latency_p50_ms: ms(latency_p50),
            latency_p90_ms: ms(latency_p90),
            latency_p99_ms: ms(latency_p99),
        }
    }
}

/// A latency for a table cell, with the precision that matters at its size: `0.25ms`,
/// `2.1ms`, `250ms`, `1.25s`; `-` when unknown.
fn latency(ms: Option<f64>) -> String {
    match ms {
        None => "-".to_string(),
        // Each limit sits where rounding would carry into the next form (9.97 is `10ms`).
        Some(ms) if ms < 0.995 => format!("{ms:.2}ms"),
        Some(ms) if ms < 9.95 => format!("{ms:.1}ms"),
        Some(ms) if ms < 999.5 => format!("{ms:.0}ms"),
        Some(ms) => format!("{:.2}s", ms / 1e3),
    }
}

impl Figures {
    /// The table's cells after the first column.
    fn cells(&self) -> impl Iterator<Item = String> {
        [
            self.requests.to_string(),
            self.responses_2xx.to_string(),
            self.responses_4xx.to_string(),
            self.responses_5xx.to_string(),
            self.rate_limited.to_string(),
            self.upstream_errors.to_string(),
            latency(self.latency_p50_ms),
            latency(self.latency_p90_ms),
            latency(self.latency_p99_ms),
        ]
        .into_iter()
    }
}

/// "10.0.0.7 (4), 10.0.0.8 (1)", the first [`TABLE_TOP_KEYS`] and how many more; `-` if none.
fn top_keys(keys: &[KeyView]) -> String {
    if keys.is_empty() {
        return "-".to_string();
    }
    let mut shown: Vec<String> = keys
        .iter()
        .take(TABLE_TOP_KEYS)
        .map(|k| format!("{} ({})", k.key, k.rejections))
        .collect();
    if keys.len() > TABLE_TOP_KEYS {
        shown.push(format!("+{} more", keys.len() - TABLE_TOP_KEYS));
    }
    shown.join(", ")
}

impl Render for StatsView {
    fn human(&self) -> String {
        let mut traffic = Table::new(&[
            "SERVICE", "REQUESTS", "2XX", "4XX", "5XX", "LIMITED", "ERRORS", "P50", "P90", "P99",
        ]);
        for s in &self.services {
            traffic.row(
                std::iter::once(s.service.clone())
                    .chain(s.total.cells())
                    .collect(),
            );
            for n in &s.nodes {
                let name = if n.connected {
                    n.node_id.clone()
                } else {
                    format!("{} (disconnected)", n.node_id)
                };
                let first = format!("  {}", self.highlight.flag(&name, !n.connected));
                traffic.row(std::iter::once(first).chain(n.figures.cells()).collect());
            }
        }
        let mut policies = Table::new(&[
            "POLICY", "SCOPE", "ALLOWED", "LIMITED", "SHADOW", "TOP KEYS",
        ]);
        for p in &self.policies {
            let scope = match (p.global, p.degraded_nodes) {
                (false, _) => "node".to_string(),
                (true, 0) => "global".to_string(),
                (true, n) => self.highlight.flag(&format!("global ({n} degraded)"), true),
            };
            policies.row(vec![
                p.policy.clone(),
                scope,
                p.allowed.to_string(),
                p.rate_limited.to_string(),
                p.shadow_rejected.to_string(),
                top_keys(&p.top_keys),
            ]);
        }
        format!("{}\n{}", traffic.render(), policies.render())
    }
}

#[cfg(test)]
mod tests;
