//! `gwctl nodes`: the data planes the control plane knows and the config each one holds.
//!
//! JSON shape (`-o json`), stable for scripts; times are RFC 3339 strings and `uptime` /
//! `stats_age` (from the node's latest stats report) are durations in gwctl's flag syntax
//! (`1500ms`, `12s`, `2h`), rounded down to the millisecond; all are null when unknown:
//! ```json
//! {"config_version": 7, "nodes": [
//!   {"node_id": "dp-1", "connected": true, "in_sync": true, "listen_address": "127.0.0.1:8080",
//!    "admin_address": "127.0.0.1:9901", "peer_address": "127.0.0.1:53122",
//!    "acked_version": 7, "sent_version": 7, "last_nack_version": 0, "last_nack_error": null,
//!    "connected_since": "2026-01-01T10:00:00Z", "last_seen": "2026-01-01T10:05:00Z",
//!    "build_version": "0.1.0", "uptime": "2h", "stats_age": "1500ms",
//!    "rate_limit_store": {"state": "connected", "url": "redis://10.0.0.5:6379",
//!      "error": null, "state_age_seconds": 3600}}]}
//! ```
//! `rate_limit_store` (the node's Redis, from its latest stats report) is null until the node
//! reports; `state` is `none` (no `--redis-url`), `connected` or `unreachable` (with `error`).
//!
//! In the table, disconnected nodes and nodes behind the current version are flagged (see
//! [`Highlight`]):
//! ```text
//! NODE  STATE           LISTEN          ACKED  LAST NACK  CONNECTED  LAST SEEN  UPTIME  STATS AGE  STORE
//! dp-1  in-sync         127.0.0.1:8080  7/7    -          2m ago     2s ago     2h5m    2s         redis
//! dp-2  ! disconnected  -               5/7    -          -          -          -       -          -
//! ```
//! A node whose Redis is unreachable shows `! redis: <why>` in STORE.

use std::io::Write;
use std::time::{Duration, SystemTime};

use gw_proto::v1 as pb;
use serde::Serialize;

use crate::client::AdminClient;
use crate::duration;
use crate::error::Error;
use crate::output::{Highlight, OutputFormat, Render, Table, emit, or_dash};

/// Runs `gwctl nodes`.
pub async fn run(
    client: &mut AdminClient,
    format: OutputFormat,
    highlight: Highlight,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let response = fetch(client).await?;
    let list = NodeList::new(response, SystemTime::now(), highlight);
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

/// A node's rate-limit store as gwctl shows it.
#[derive(Debug, Serialize)]
pub struct StoreView {
    state: &'static str,
    url: Option<String>,
    error: Option<String>,
    state_age_seconds: u64,
}

impl From<pb::RateLimitStoreStatus> for StoreView {
    fn from(s: pb::RateLimitStoreStatus) -> Self {
        let pb::RateLimitStoreStatus {
            state,
            error,
            url,
            state_age_seconds,
        } = s;
        let state = match pb::RateLimitStoreState::try_from(state) {
            Ok(pb::RateLimitStoreState::None) => "none",
            Ok(pb::RateLimitStoreState::Connected) => "connected",
            Ok(pb::RateLimitStoreState::Unreachable) => "unreachable",
            Ok(pb::RateLimitStoreState::Unspecified) | Err(_) => "unknown",
        };
        StoreView {
            state,
            url: (!url.is_empty()).then_some(url),
            error: (!error.is_empty()).then_some(error),
            state_age_seconds,
        }
    }
}

impl StoreView {
    /// The table cell and whether it is a problem.
    fn cell(&self) -> (String, bool) {
        match self.state {
            "connected" => ("redis".to_string(), false),
            "unreachable" => (
                format!("redis: {}", self.error.as_deref().unwrap_or("unreachable")),
                true,
            ),
            other => (other.to_string(), false),
        }
    }
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
    uptime: Option<String>,
    stats_age: Option<String>,
    rate_limit_store: Option<StoreView>,
    /// `uptime` and `stats_age` as received, for the table's rounder form.
    #[serde(skip)]
    report: (Option<Duration>, Option<Duration>),
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
            uptime,
            stats_age,
            rate_limit_store,
        } = node;
        let uptime = duration::from_proto(uptime);
        let stats_age = duration::from_proto(stats_age);
        // Milliseconds are plenty for a script and keep the strings short (`1500ms`, not ns).
        let json = |d: Option<Duration>| {
            d.map(|d| duration::format(Duration::from_millis(d.as_millis() as u64)))
        };
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
            uptime: json(uptime),
            stats_age: json(stats_age),
            rate_limit_store: rate_limit_store.map(StoreView::from),
            report: (uptime, stats_age),
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
    #[serde(skip)]
    highlight: Highlight,
}

impl NodeList {
    fn new(response: pb::ListNodesResponse, now: SystemTime, highlight: Highlight) -> Self {
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
            highlight,
        }
    }
}

/// "12s ago", rounded down to the second: finer is noise for a person reading a table.
fn ago(age: Option<Duration>) -> String {
    match age {
        None => "-".to_string(),
        Some(age) => format!("{} ago", duration::approx(age)),
    }
}

/// A duration rounded for a table cell; `-` when unknown.
fn approx(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_string(), duration::approx)
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
            "UPTIME",
            "STATS AGE",
            "STORE",
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
                self.highlight.flag(n.state(), !n.in_sync),
                or_dash(&n.listen_address),
                format!("{}/{}", n.acked_version, self.config_version),
                nack,
                ago(n.ages.0),
                ago(n.ages.1),
                approx(n.report.0),
                approx(n.report.1),
                match &n.rate_limit_store {
                    None => "-".to_string(),
                    Some(store) => {
                        let (text, bad) = store.cell();
                        self.highlight.flag(&text, bad)
                    }
                },
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

    fn pd(d: Duration) -> Option<prost_types::Duration> {
        prost_types::Duration::try_from(d).ok()
    }

    fn sample(highlight: Highlight) -> NodeList {
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
                        uptime: pd(Duration::from_secs(7_505)),
                        stats_age: pd(Duration::from_micros(1_500_900)),
                        rate_limit_store: Some(pb::RateLimitStoreStatus {
                            state: pb::RateLimitStoreState::Connected.into(),
                            url: "redis://127.0.0.1:6379".into(),
                            ..Default::default()
                        }),
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
                    pb::Node {
                        node_id: "dp-3".into(),
                        connected: true,
                        acked_version: 6,
                        sent_version: 7,
                        rate_limit_store: Some(pb::RateLimitStoreStatus {
                            state: pb::RateLimitStoreState::Unreachable.into(),
                            error: "connection refused".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ],
            },
            now,
            highlight,
        )
    }

    #[test]
    fn table_shows_state_versions_ages_and_flags_problems() {
        assert_eq!(
            sample(Highlight::Plain).human(),
            "NODE  STATE           LISTEN          ACKED  LAST NACK      CONNECTED  LAST SEEN  \
             UPTIME  STATS AGE  STORE\n\
             dp-1  in-sync         127.0.0.1:8080  7/7    -              2m ago     2s ago     \
             2h5m    1s         redis\n\
             dp-2  ! disconnected  -               5/7    v6: bad route  -          -          \
             -       -          -\n\
             dp-3  ! behind        -               6/7    -              -          -          \
             -       -          ! redis: connection refused\n"
        );
    }

    #[test]
    fn on_a_terminal_problems_are_red_and_columns_still_align() {
        let text = sample(Highlight::Color).human();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("dp-1  in-sync         127"), "{text}");
        assert!(
            lines[2].starts_with("dp-2  \x1b[31m! disconnected\x1b[0m  -    "),
            "{text}"
        );
        assert!(
            lines[3].starts_with("dp-3  \x1b[31m! behind\x1b[0m        -    "),
            "{text}"
        );
    }

    #[test]
    fn json_has_times_durations_and_nulls() {
        let json = serde_json::to_value(sample(Highlight::Color)).unwrap();
        assert_eq!(json["config_version"], 7);
        let n = &json["nodes"][0];
        assert_eq!(n["node_id"], "dp-1");
        assert_eq!(n["in_sync"], true);
        assert_eq!(n["connected_since"], "1970-01-12T13:44:40Z");
        assert_eq!(n["last_nack_error"], serde_json::Value::Null);
        assert_eq!(n["uptime"], "7505s");
        assert_eq!(n["stats_age"], "1500ms");
        assert!(n.get("ages").is_none());
        assert_eq!(n["rate_limit_store"]["state"], "connected");
        assert_eq!(
            json["nodes"][2]["rate_limit_store"]["error"],
            "connection refused"
        );
        assert_eq!(
            json["nodes"][1]["rate_limit_store"],
            serde_json::Value::Null
        );
        assert!(n.get("report").is_none());
        let n = &json["nodes"][1];
        assert_eq!(n["in_sync"], false);
        assert_eq!(n["last_nack_error"], "bad route");
        assert_eq!(n["last_seen"], serde_json::Value::Null);
        assert_eq!(n["uptime"], serde_json::Value::Null);
        assert_eq!(n["stats_age"], serde_json::Value::Null);
        assert!(json.get("highlight").is_none());
    }
}
