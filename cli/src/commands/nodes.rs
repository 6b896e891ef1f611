//! `gwctl nodes`: the data planes the control plane knows and the config each one holds.
//!
//! JSON shape (`-o json`), stable for scripts; times are RFC 3339 strings, null when unknown:
//! ```json
//! {"config_version": 7, "nodes": [
//!   {"node_id": "dp-1", "connected": true, "in_sync": true, "listen_address": "127.0.0.1:8080",
//!    "admin_address": "127.0.0.1:9901", "peer_address": "127.0.0.1:53122",
//!    "acked_version": 7, "sent_version": 7, "last_nack_version": 0, "last_nack_error": null,
//!    "connected_since": "2026-01-01T10:00:00Z", "last_seen": "2026-01-01T10:05:00Z",
//!    "build_version": "0.1.0"}]}
//! ```

use std::io::Write;
use std::time::{Duration, SystemTime};

use gw_proto::v1 as pb;
use serde::Serialize;

use crate::client::AdminClient;
use crate::duration;
use crate::error::Error;
use crate::output::{OutputFormat, Render, Table, emit, or_dash};

/// Runs `gwctl nodes`.
pub async fn run(
    client: &mut AdminClient,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let response = fetch(client).await?;
    let list = NodeList::new(response, SystemTime::now());
    emit(format, &list, out)?;
    Ok(())
}

/// Calls `ListNodes`.
pub async fn fetch(client: &mut AdminClient) -> Result<pb::ListNodesResponse, Error> {
    Ok(client
        .api
        .list_nodes(pb::ListNodesRequest {})
        .await
        .map_err(|s| client.error(s))?
        .into_inner())
}

/// A node as gwctl shows it (the JSON shape in the module docs).
#[derive(Debug, Serialize)]
pub struct NodeView {
    node_id: String,
    connected: bool,
    /// Connected and has acknowledged the control plane's current version.
    in_sync: bool,
    listen_address: String,
    admin_address: String,
    peer_address: String,
    acked_version: u64,
    sent_version: u64,
    last_nack_version: u64,
    last_nack_error: Option<String>,
    connected_since: Option<String>,
    last_seen: Option<String>,
    build_version: String,
    /// Ages relative to when gwctl asked, for the table only: JSON readers have the times.
    #[serde(skip)]
    ages: (Option<Duration>, Option<Duration>),
}

impl NodeView {
    fn new(node: pb::Node, config_version: u64, now: SystemTime) -> Self {
        let pb::Node {
            node_id,
            connected,
            listen_address,
            admin_address,
            peer_address,
            acked_version,
            sent_version,
            last_nack_version,
            last_nack_error,
            connected_since,
            last_seen,
            build_version,
            // Shown once the control plane aggregates stats reports (issue 4).
            uptime: _,
            stats_age: _,
        } = node;
        let age = |t: &Option<prost_types::Timestamp>| {
            t.and_then(|t| SystemTime::try_from(t).ok())
                .map(|t| now.duration_since(t).unwrap_or_default())
        };
        NodeView {
            in_sync: connected && acked_version >= config_version,
            node_id,
            connected,
            listen_address,
            admin_address,
            peer_address,
            acked_version,
            sent_version,
            last_nack_version,
            last_nack_error: (!last_nack_error.is_empty()).then_some(last_nack_error),
            ages: (age(&connected_since), age(&last_seen)),
            connected_since: connected_since.map(|t| t.to_string()),
            last_seen: last_seen.map(|t| t.to_string()),
            build_version,
        }
    }

    fn state(&self) -> &'static str {
        match (self.connected, self.in_sync) {
            (false, _) => "disconnected",
            (true, true) => "in-sync",
            (true, false) => "behind",
        }
    }
}

/// `gwctl nodes`.
#[derive(Debug, Serialize)]
pub struct NodeList {
    config_version: u64,
    nodes: Vec<NodeView>,
}

impl NodeList {
    fn new(response: pb::ListNodesResponse, now: SystemTime) -> Self {
        let pb::ListNodesResponse {
            nodes,
            config_version,
        } = response;
        Self {
            config_version,
            nodes: nodes
                .into_iter()
                .map(|n| NodeView::new(n, config_version, now))
                .collect(),
        }
    }
}

/// "12s ago", rounded down to the second: finer is noise for a person reading a table.
fn ago(age: Option<Duration>) -> String {
    match age {
        None => "-".to_string(),
        Some(age) => format!(
            "{} ago",
            duration::format(Duration::from_secs(age.as_secs()))
        ),
    }
}

impl Render for NodeList {
    fn human(&self) -> String {
        let mut table = Table::new(&[
            "NODE",
            "STATE",
            "LISTEN",
            "ACKED",
            "LAST NACK",
            "CONNECTED",
            "LAST SEEN",
        ]);
        for n in &self.nodes {
            let nack = match &n.last_nack_error {
                Some(error) if n.last_nack_version > 0 => {
                    format!("v{}: {error}", n.last_nack_version)
                }
                _ => "-".to_string(),
            };
            table.row(vec![
                n.node_id.clone(),
                n.state().to_string(),
                or_dash(&n.listen_address),
                format!("{}/{}", n.acked_version, self.config_version),
                nack,
                ago(n.ages.0),
                ago(n.ages.1),
            ]);
        }
        table.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp {
            seconds: secs,
            nanos: 0,
        })
    }

    fn sample() -> NodeList {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        NodeList::new(
            pb::ListNodesResponse {
                config_version: 7,
                nodes: vec![
                    pb::Node {
                        node_id: "dp-1".into(),
                        connected: true,
                        listen_address: "127.0.0.1:8080".into(),
                        acked_version: 7,
                        sent_version: 7,
                        connected_since: ts(1_000_000 - 120),
                        last_seen: ts(1_000_000 - 2),
                        ..Default::default()
                    },
                    pb::Node {
                        node_id: "dp-2".into(),
                        connected: false,
                        acked_version: 5,
                        sent_version: 6,
                        last_nack_version: 6,
                        last_nack_error: "bad route".into(),
                        ..Default::default()
                    },
                ],
            },
            now,
        )
    }

    #[test]
    fn table_shows_state_versions_and_ages() {
        assert_eq!(
            sample().human(),
            "NODE  STATE         LISTEN          ACKED  LAST NACK      CONNECTED  LAST SEEN\n\
             dp-1  in-sync       127.0.0.1:8080  7/7    -              2m ago     2s ago\n\
             dp-2  disconnected  -               5/7    v6: bad route  -          -\n"
        );
    }

    #[test]
    fn json_has_times_and_nulls() {
        let json = serde_json::to_value(sample()).unwrap();
        assert_eq!(json["config_version"], 7);
        let n = &json["nodes"][0];
        assert_eq!(n["node_id"], "dp-1");
        assert_eq!(n["in_sync"], true);
        assert_eq!(n["connected_since"], "1970-01-12T13:44:40Z");
        assert_eq!(n["last_nack_error"], serde_json::Value::Null);
        assert!(n.get("ages").is_none());
        let n = &json["nodes"][1];
        assert_eq!(n["in_sync"], false);
        assert_eq!(n["last_nack_error"], "bad route");
        assert_eq!(n["last_seen"], serde_json::Value::Null);
    }
}
