//! `gwctl stats --consumer NAME [--node ID]`: one consumer's traffic (requests that
//! authenticated as it, over every service), summed over the nodes, then one row per node that
//! reported it:
//! ```text
//! CONSUMER                 REQUESTS  2XX  4XX  5XX  LIMITED
//! alice                    30        25   5    0    5
//!   dp-1                   20        17   3    0    3
//!   ! dp-2 (disconnected)  10        8    2    0    2
//! ```
//! A consumer no node has reported yet shows zeros and no node rows. Data planes report a
//! bounded number of consumers per interval; when a connected node had to hold some back, a
//! last line says so (its figures may lag by a few intervals).
//!
//! JSON shape (`-o json`), stable for scripts; every counter is an integer:
//! ```json
//! {"consumer": "alice",
//!  "total": {"requests": 30, "responses_1xx": 0, "responses_2xx": 25, "responses_3xx": 0,
//!            "responses_4xx": 5, "responses_5xx": 0, "rate_limited": 5},
//!  "nodes": [{"node_id": "dp-1", "connected": true, "figures": {…same fields…}}],
//!  "lagging_nodes": 0}
//! ```

use gw_proto::v1 as pb;
use serde::Serialize;

use crate::output::{Highlight, Render, Table};

/// `gwctl stats --consumer` (the JSON shape in the module docs).
#[derive(Debug, Serialize)]
pub struct ConsumerStatsView {
    consumer: String,
    total: Figures,
    nodes: Vec<NodeView>,
    lagging_nodes: u32,
    #[serde(skip)]
    highlight: Highlight,
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
}

impl From<Option<pb::ConsumerFigures>> for Figures {
    fn from(f: Option<pb::ConsumerFigures>) -> Self {
        let Some(pb::ConsumerFigures {
            requests,
            responses_1xx,
            responses_2xx,
            responses_3xx,
            responses_4xx,
            responses_5xx,
            rate_limited,
        }) = f
        else {
            return Figures::default();
        };
        Figures {
            requests,
            responses_1xx,
            responses_2xx,
            responses_3xx,
            responses_4xx,
            responses_5xx,
            rate_limited,
        }
    }
}

impl Figures {
    fn cells(&self) -> impl Iterator<Item = String> {
        [
            self.requests,
            self.responses_2xx,
            self.responses_4xx,
            self.responses_5xx,
            self.rate_limited,
        ]
        .into_iter()
        .map(|n| n.to_string())
    }
}

impl ConsumerStatsView {
    /// The view of `traffic`, the `consumer` of a GetStats response.
    pub fn new(traffic: pb::ConsumerTraffic, highlight: Highlight) -> Self {
        let pb::ConsumerTraffic {
            consumer,
            total,
            nodes,
            lagging_nodes,
        } = traffic;
        Self {
            consumer,
            total: total.into(),
            nodes: nodes
                .into_iter()
                .map(|n| {
                    let pb::NodeConsumerTraffic {
                        node_id,
                        connected,
                        figures,
                    } = n;
                    NodeView {
                        node_id,
                        connected,
                        figures: figures.into(),
                    }
                })
                .collect(),
            lagging_nodes,
            highlight,
        }
    }
}

impl Render for ConsumerStatsView {
    fn human(&self) -> String {
        let mut table = Table::new(&["CONSUMER", "REQUESTS", "2XX", "4XX", "5XX", "LIMITED"]);
        table.row(
            std::iter::once(self.consumer.clone())
                .chain(self.total.cells())
                .collect(),
        );
        for n in &self.nodes {
            let name = if n.connected {
                n.node_id.clone()
            } else {
                format!("{} (disconnected)", n.node_id)
            };
            let first = format!("  {}", self.highlight.flag(&name, !n.connected));
            table.row(std::iter::once(first).chain(n.figures.cells()).collect());
        }
        let mut out = table.render();
        if self.lagging_nodes > 0 {
            let note = format!(
                "{} node(s) reported more active consumers than fit in one report; their figures may lag",
                self.lagging_nodes
            );
            out.push_str(&self.highlight.flag(&note, true));
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(requests: u64, ok: u64, limited: u64) -> Option<pb::ConsumerFigures> {
        Some(pb::ConsumerFigures {
            requests,
            responses_2xx: ok,
            responses_4xx: requests - ok,
            rate_limited: limited,
            ..Default::default()
        })
    }

    #[test]
    fn table_and_json() {
        let view = ConsumerStatsView::new(
            pb::ConsumerTraffic {
                consumer: "alice".into(),
                total: figures(30, 25, 5),
                nodes: vec![
                    pb::NodeConsumerTraffic {
                        node_id: "dp-1".into(),
                        connected: true,
                        figures: figures(20, 17, 3),
                    },
                    pb::NodeConsumerTraffic {
                        node_id: "dp-2".into(),
                        connected: false,
                        figures: figures(10, 8, 2),
                    },
                ],
                lagging_nodes: 1,
            },
            Highlight::Plain,
        );
        let table = view.human();
        let lines: Vec<&str> = table.lines().collect();
        let cells = |l: &str| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            cells(lines[0]),
            ["CONSUMER", "REQUESTS", "2XX", "4XX", "5XX", "LIMITED"]
        );
        assert_eq!(cells(lines[1]), ["alice", "30", "25", "5", "0", "5"]);
        assert_eq!(cells(lines[2]), ["dp-1", "20", "17", "3", "0", "3"]);
        assert_eq!(
            cells(lines[3]),
            ["! dp-2 (disconnected)", "10", "8", "2", "0", "2"]
        );
        assert!(lines[4].starts_with("! 1 node(s) reported more"), "{table}");

        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "consumer": "alice",
                "total": {"requests": 30, "responses_1xx": 0, "responses_2xx": 25,
                          "responses_3xx": 0, "responses_4xx": 5, "responses_5xx": 0,
                          "rate_limited": 5},
                "nodes": [
                    {"node_id": "dp-1", "connected": true, "figures": {"requests": 20,
                     "responses_1xx": 0, "responses_2xx": 17, "responses_3xx": 0,
                     "responses_4xx": 3, "responses_5xx": 0, "rate_limited": 3}},
                    {"node_id": "dp-2", "connected": false, "figures": {"requests": 10,
                     "responses_1xx": 0, "responses_2xx": 8, "responses_3xx": 0,
                     "responses_4xx": 2, "responses_5xx": 0, "rate_limited": 2}},
                ],
                "lagging_nodes": 1,
            })
        );
    }

    #[test]
    fn no_traffic_is_zeros() {
        let view = ConsumerStatsView::new(
            pb::ConsumerTraffic {
                consumer: "bob".into(),
                total: None,
                nodes: vec![],
                lagging_nodes: 0,
            },
            Highlight::Plain,
        );
        let table = view.human();
        assert_eq!(table.lines().count(), 2, "{table}");
        assert!(
            table
                .lines()
                .nth(1)
                .unwrap()
                .split_whitespace()
                .eq(["bob", "0", "0", "0", "0", "0"])
        );
    }
}
