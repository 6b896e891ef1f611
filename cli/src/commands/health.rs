//! `gwctl health [SERVICE]`: every endpoint's health as the connected data planes see it.
//!
//! The table has one row per endpoint. HEALTHY counts the connected nodes that report the
//! endpoint healthy out of those that report it at all; an endpoint that any node reports
//! unhealthy is flagged (see [`Highlight`]). LAST FAILURE is the latest failure any node
//! reported: which node, how long ago, and why.
//! ```text
//! SERVICE  ENDPOINT              HEALTHY      LAST FAILURE
//! demo     http://10.0.0.1:8001  2/2 nodes    -
//! demo     http://10.0.0.2:8001  ! 1/2 nodes  dp-2, 12s ago: GET /health: connection refused
//! ```
//!
//! JSON shape (`-o json`), stable for scripts; `healthy` is true when no connected node
//! reports the endpoint unhealthy; `at` is an RFC 3339 time; nulls mean "none":
//! ```json
//! {"services": [{"service": "demo", "endpoints": [
//!   {"endpoint": "http://10.0.0.2:8001", "healthy": false,
//!    "healthy_nodes": 1, "unhealthy_nodes": 1,
//!    "last_failure": {"node_id": "dp-2", "reason": "GET /health: connection refused",
//!                     "at": "2026-01-01T10:00:00Z"},
//!    "nodes": [{"node_id": "dp-1", "healthy": true, "last_failure": null},
//!              {"node_id": "dp-2", "healthy": false,
//!               "last_failure": "GET /health: connection refused"}]}]}]}
//! ```

use std::io::Write;
use std::time::{Duration, SystemTime};

use gw_proto::v1 as pb;
use serde::Serialize;

use crate::client::AdminClient;
use crate::duration;
use crate::error::Error;
use crate::output::{Highlight, OutputFormat, Render, Table, emit};

/// Runs `gwctl health [SERVICE]`.
pub async fn run(
    service: Option<String>,
    client: &mut AdminClient,
    format: OutputFormat,
    highlight: Highlight,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let request = pb::GetHealthRequest {
        service: service.unwrap_or_default(),
    };
    let response = client
        .api
        .get_health(request)
        .await
        .map_err(|s| client.call_error("GetHealth", s))?
        .into_inner();
    let view = HealthView::new(response, SystemTime::now(), highlight);
    emit(format, &view, out)?;
    Ok(())
}

/// `gwctl health` (the JSON shape in the module docs).
#[derive(Debug, Serialize)]
pub struct HealthView {
    services: Vec<ServiceView>,
    #[serde(skip)]
    highlight: Highlight,
}

#[derive(Debug, Serialize)]
struct ServiceView {
    service: String,
    endpoints: Vec<EndpointView>,
}

#[derive(Debug, Serialize)]
struct EndpointView {
    endpoint: String,
    healthy: bool,
    healthy_nodes: u32,
    unhealthy_nodes: u32,
    last_failure: Option<FailureView>,
    nodes: Vec<NodeView>,
}

#[derive(Debug, Serialize)]
struct FailureView {
    node_id: String,
    reason: String,
    at: Option<String>,
    /// Relative to when gwctl asked, for the table only: JSON readers have `at`.
    #[serde(skip)]
    age: Option<Duration>,
}

#[derive(Debug, Serialize)]
struct NodeView {
    node_id: String,
    healthy: bool,
    last_failure: Option<String>,
}

/// An empty string from the server means "none".
fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

impl HealthView {
    fn new(response: pb::GetHealthResponse, now: SystemTime, highlight: Highlight) -> Self {
        let pb::GetHealthResponse { services } = response;
        let services = services
            .into_iter()
            .map(|s| {
                let pb::ServiceHealth { service, endpoints } = s;
                ServiceView {
                    service,
                    endpoints: endpoints
                        .into_iter()
                        .map(|e| EndpointView::new(e, now))
                        .collect(),
                }
            })
            .collect();
        Self {
            services,
            highlight,
        }
    }
}

impl EndpointView {
    fn new(endpoint: pb::EndpointHealthSummary, now: SystemTime) -> Self {
        let pb::EndpointHealthSummary {
            endpoint,
            healthy_nodes,
            unhealthy_nodes,
            last_failure,
            last_failure_node,
            last_failure_at,
            nodes,
        } = endpoint;
        let last_failure = non_empty(last_failure).map(|reason| FailureView {
            node_id: last_failure_node,
            reason,
            age: last_failure_at
                .and_then(|t| SystemTime::try_from(t).ok())
                .map(|t| now.duration_since(t).unwrap_or_default()),
            at: last_failure_at.map(|t| t.to_string()),
        });
        let nodes = nodes
            .into_iter()
            .map(|n| {
                let pb::NodeEndpointHealth {
                    node_id,
                    healthy,
                    last_failure,
                } = n;
                NodeView {
                    node_id,
                    healthy,
                    last_failure: non_empty(last_failure),
                }
            })
            .collect();
        Self {
            endpoint,
            healthy: unhealthy_nodes == 0,
            healthy_nodes,
            unhealthy_nodes,
            last_failure,
            nodes,
        }
    }

    /// "2/2 nodes"; "no reports" while no connected node has reported on it.
    fn healthy_cell(&self, highlight: Highlight) -> String {
        let reporting = self.healthy_nodes.saturating_add(self.unhealthy_nodes);
        if reporting == 0 {
            return "no reports".to_string();
        }
        highlight.flag(
            &format!("{}/{reporting} nodes", self.healthy_nodes),
            !self.healthy,
        )
    }

    /// "dp-2, 12s ago: reason"; "-" when there was none.
    fn failure_cell(&self) -> String {
        match &self.last_failure {
            None => "-".to_string(),
            Some(f) => match f.age {
                Some(age) => format!("{}, {} ago: {}", f.node_id, duration::approx(age), f.reason),
                None => format!("{}: {}", f.node_id, f.reason),
            },
        }
    }
}

impl Render for HealthView {
    fn human(&self) -> String {
        let mut table = Table::new(&["SERVICE", "ENDPOINT", "HEALTHY", "LAST FAILURE"]);
        for s in &self.services {
            if s.endpoints.is_empty() {
                table.row(vec![
                    s.service.clone(),
                    "-".into(),
                    "no endpoints".into(),
                    "-".into(),
                ]);
            }
            for e in &s.endpoints {
                table.row(vec![
                    s.service.clone(),
                    e.endpoint.clone(),
                    e.healthy_cell(self.highlight),
                    e.failure_cell(),
                ]);
            }
        }
        table.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    fn endpoint(url: &str, healthy: u32, unhealthy: u32) -> pb::EndpointHealthSummary {
        pb::EndpointHealthSummary {
            endpoint: url.into(),
            healthy_nodes: healthy,
            unhealthy_nodes: unhealthy,
            ..Default::default()
        }
    }

    fn sample(highlight: Highlight) -> HealthView {
        let down = pb::EndpointHealthSummary {
            last_failure: "GET /health: connection refused".into(),
            last_failure_node: "dp-2".into(),
            last_failure_at: Some(prost_types::Timestamp {
                seconds: NOW as i64 - 12,
                nanos: 0,
            }),
            nodes: vec![
                pb::NodeEndpointHealth {
                    node_id: "dp-1".into(),
                    healthy: true,
                    last_failure: String::new(),
                },
                pb::NodeEndpointHealth {
                    node_id: "dp-2".into(),
                    healthy: false,
                    last_failure: "GET /health: connection refused".into(),
                },
            ],
            ..endpoint("http://127.0.0.1:8002", 1, 1)
        };
        // Healthy again, but a failure was seen (no time known).
        let recovered = pb::EndpointHealthSummary {
            last_failure: "503 Service Unavailable".into(),
            last_failure_node: "dp-1".into(),
            ..endpoint("http://127.0.0.1:8003", 2, 0)
        };
        HealthView::new(
            pb::GetHealthResponse {
                services: vec![
                    pb::ServiceHealth {
                        service: "demo".into(),
                        endpoints: vec![endpoint("http://127.0.0.1:8001", 2, 0), down, recovered],
                    },
                    pb::ServiceHealth {
                        service: "empty".into(),
                        endpoints: vec![],
                    },
                    pb::ServiceHealth {
                        service: "new".into(),
                        endpoints: vec![endpoint("http://127.0.0.1:9000", 0, 0)],
                    },
                ],
            },
            SystemTime::UNIX_EPOCH + Duration::from_secs(NOW),
            highlight,
        )
    }

    #[test]
    fn table_counts_nodes_and_flags_unhealthy_endpoints() {
        assert_eq!(
            sample(Highlight::Plain).human(),
            "SERVICE  ENDPOINT               HEALTHY       LAST FAILURE\n\
             demo     http://127.0.0.1:8001  2/2 nodes     -\n\
             demo     http://127.0.0.1:8002  ! 1/2 nodes   dp-2, 12s ago: GET /health: \
             connection refused\n\
             demo     http://127.0.0.1:8003  2/2 nodes     dp-1: 503 Service Unavailable\n\
             empty    -                      no endpoints  -\n\
             new      http://127.0.0.1:9000  no reports    -\n"
        );
    }

    #[test]
    fn on_a_terminal_the_unhealthy_endpoint_is_red() {
        let text = sample(Highlight::Color).human();
        assert_eq!(text.matches("\x1b[31m").count(), 1, "{text}");
        assert!(
            text.contains("8002  \x1b[31m! 1/2 nodes\x1b[0m   dp-2, 12s ago"),
            "{text}"
        );
    }

    #[test]
    fn empty_fleet_is_a_header() {
        let view = HealthView::new(
            pb::GetHealthResponse::default(),
            SystemTime::now(),
            Highlight::Plain,
        );
        assert_eq!(view.human(), "SERVICE  ENDPOINT  HEALTHY  LAST FAILURE\n");
        assert_eq!(
            serde_json::to_value(view).unwrap(),
            serde_json::json!({"services": []})
        );
    }

    #[test]
    fn json_has_counts_failure_and_per_node_views() {
        let json = serde_json::to_value(sample(Highlight::Color)).unwrap();
        let down = &json["services"][0]["endpoints"][1];
        assert_eq!(
            *down,
            serde_json::json!({
                "endpoint": "http://127.0.0.1:8002",
                "healthy": false,
                "healthy_nodes": 1,
                "unhealthy_nodes": 1,
                "last_failure": {
                    "node_id": "dp-2",
                    "reason": "GET /health: connection refused",
                    "at": "1970-01-12T13:46:28Z"
                },
                "nodes": [
                    {"node_id": "dp-1", "healthy": true, "last_failure": null},
                    {"node_id": "dp-2", "healthy": false,
                     "last_failure": "GET /health: connection refused"}
                ]
            })
        );
        let up = &json["services"][0]["endpoints"][0];
        assert_eq!(up["healthy"], true);
        assert_eq!(up["last_failure"], serde_json::Value::Null);
        assert_eq!(json["services"][1]["endpoints"], serde_json::json!([]));
        assert!(json.get("highlight").is_none());
    }
}
