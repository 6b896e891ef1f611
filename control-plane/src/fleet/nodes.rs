//! The registry of data planes: what each node announced and how far its config got.
//!
//! Kept in memory only: it describes live connections, which do not survive a restart.
//! Only authenticated nodes get here (`api::auth`), so the cap below bounds real nodes, and a
//! node's records belong to the identity it proved.
//! Each stream gets a generation number; a node that reconnects takes over its record and its
//! earlier stream is told to end ([`Connection::replaced`]); events from that older stream
//! (which may end after the new one started) are ignored, so they can never mark the newer
//! connection disconnected.
//!
//! Each record also holds the node's latest health and stats reports ([`crate::fleet`]). They
//! outlive the stream: a disconnected node keeps its last figures, and a reconnecting node
//! keeps them until it reports again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use gw_proto::v1 as pb;
use tokio::sync::watch;

use crate::domain::validate::truncate;
use crate::fleet::consumers::{ConsumerFigures, ConsumerUpdate, NodeConsumers};
use crate::fleet::report::{HealthUpdate, NodeHealth, NodeStats};

/// Most node records kept; at the cap the longest-disconnected node is forgotten. Streams are
/// authenticated before they get here, but a bound still keeps a misbehaving (or very large)
/// fleet from growing the control plane without limit.
pub const MAX_NODES: usize = 10_000;
/// Longest NACK error text kept per node.
const MAX_ERROR_LEN: usize = 4096;

/// What a node announced when its stream opened.
#[derive(Debug, Clone, Default)]
pub struct Announcement {
    /// The node's id.
    pub node_id: String,
    /// Where it takes client traffic.
    pub listen_address: String,
    /// Its admin listener.
    pub admin_address: String,
    /// Its build version.
    pub build_version: String,
    /// The peer address of its gRPC connection.
    pub peer_address: String,
}

/// One stream of one node; events carry it so stale streams can be told apart.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The node's id.
    pub node_id: String,
    generation: u64,
    /// Notified when a newer stream of the same node registers.
    replaced: Arc<tokio::sync::Notify>,
}

impl PartialEq for Connection {
    fn eq(&self, other: &Self) -> bool {
        self.node_id == other.node_id && self.generation == other.generation
    }
}

impl Eq for Connection {}

impl Connection {
    /// Resolves once a newer stream of this node has registered (at once if one already
    /// has): this stream should then end.
    pub async fn replaced(&self) {
        self.replaced.notified().await;
    }
}

#[derive(Debug)]
struct Record {
    generation: u64,
    replaced: Arc<tokio::sync::Notify>,
    connected: bool,
    announcement: Announcement,
    acked_version: u64,
    sent_version: u64,
    last_nack_version: u64,
    last_nack_error: String,
    connected_since: SystemTime,
    last_seen: SystemTime,
    // Behind `Arc`s so a fleet snapshot copies pointers, not every node's endpoints.
    health: Arc<NodeHealth>,
    stats: Option<Arc<NodeStats>>,
    // Not shared with views (they copy one consumer's figures), so a report merges into it
    // in place: up to 10,000 entries are never copied under the lock.
    consumers: NodeConsumers,
}

/// One node's reports as of one moment, for building fleet views.
#[derive(Debug, Clone)]
pub struct NodeView {
    /// The node's id.
    pub node_id: String,
    /// Whether its stream is open now.
    pub connected: bool,
    /// Its endpoint health (empty until it reports).
    pub health: Arc<NodeHealth>,
    /// Its latest stats report, if any.
    pub stats: Option<Arc<NodeStats>>,
    /// Its figures for the consumer the view was taken for
    /// ([`NodeRegistry::fleet_for_consumer`]), if it reported that consumer; else `None`.
    pub consumer: Option<ConsumerFigures>,
    /// Consumers its latest report held back for lack of room.
    pub consumers_deferred: u32,
}

/// Why a node could not be registered.
#[derive(Debug, thiserror::Error)]
#[error("too many data planes are connected (at most {MAX_NODES})")]
pub struct RegistryFull;

/// Every node seen since start-up.
#[derive(Debug)]
pub struct NodeRegistry {
    nodes: Mutex<BTreeMap<String, Record>>,
    generations: AtomicU64,
    /// How many nodes are connected now, for streams that tell their node (the "fleet"
    /// capability): a GLOBAL rate-limit policy falls back to its share of the limit.
    live: watch::Sender<u32>,
}

impl Default for NodeRegistry {
    fn default() -> Self {
        Self {
            nodes: Mutex::default(),
            generations: AtomicU64::default(),
            live: watch::Sender::new(0),
        }
    }
}

impl NodeRegistry {
    /// Registers a new stream of a node, replacing any earlier record of the same id.
    /// `known_version` is what the node already holds and so counts as acknowledged.
    pub fn connect(&self, a: Announcement, known_version: u64) -> Result<Connection, RegistryFull> {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let now = SystemTime::now();
        let mut nodes = self.lock();
        if !nodes.contains_key(&a.node_id) && nodes.len() >= MAX_NODES {
            let oldest = nodes
                .iter()
                .filter(|(_, r)| !r.connected)
                .min_by_key(|(_, r)| r.last_seen)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => {
                    nodes.remove(&id);
                }
                None => return Err(RegistryFull),
            }
        }
        let node_id = a.node_id.clone();
        // A reconnecting node keeps its figures until it reports again; its earlier stream,
        // if still open, is told to end (`notify_one` keeps the wake-up if it is not waiting).
        let (health, stats, consumers) = nodes
            .remove(&node_id)
            .map(|old| {
                old.replaced.notify_one();
                (old.health, old.stats, old.consumers)
            })
            .unwrap_or_default();
        let replaced = Arc::new(tokio::sync::Notify::new());
        nodes.insert(
            node_id.clone(),
            Record {
                generation,
                replaced: replaced.clone(),
                connected: true,
                announcement: a,
                acked_version: known_version,
                sent_version: 0,
                last_nack_version: 0,
                last_nack_error: String::new(),
                connected_since: now,
                last_seen: now,
                health,
                stats,
                consumers,
            },
        );
        self.count_live(&nodes);
        Ok(Connection {
            node_id,
            generation,
            replaced,
        })
    }

    /// Records that `version` was sent on `conn`.
    pub fn sent(&self, conn: &Connection, version: u64) {
        self.update(conn, false, |r| r.sent_version = version);
    }

    /// Records an ACK received on `conn`.
    pub fn acked(&self, conn: &Connection, version: u64) {
        self.update(conn, true, |r| r.acked_version = version);
    }

    /// Records a NACK received on `conn`.
    pub fn nacked(&self, conn: &Connection, version: u64, error: &str) {
        let error = truncate(error, MAX_ERROR_LEN);
        self.update(conn, true, |r| {
            r.last_nack_version = version;
            r.last_nack_error = error.to_owned();
        });
    }

    /// Records that something (of any kind) arrived on `conn`.
    pub fn seen(&self, conn: &Connection) {
        self.update(conn, true, |_| {});
    }

    /// Applies a health report received on `conn`.
    pub fn health_report(&self, conn: &Connection, report: pb::HealthReport) {
        // Checked outside the lock; only the merge happens under it.
        let update = HealthUpdate::new(&conn.node_id, report, SystemTime::now());
        self.update(conn, true, |r| {
            Arc::make_mut(&mut r.health).apply(&conn.node_id, update);
        });
    }

    /// Stores a stats report received on `conn`, replacing the previous one (its consumers
    /// are merged into those reported before; names `is_configured` refuses are dropped).
    pub fn stats_report(
        &self,
        conn: &Connection,
        mut report: pb::StatsReport,
        is_configured: impl Fn(&str) -> bool,
    ) {
        // Checked outside the lock; only the swap and the merge happen under it.
        let consumers = ConsumerUpdate::take(&conn.node_id, &mut report, is_configured);
        let stats = Arc::new(NodeStats::new(&conn.node_id, report));
        self.update(conn, true, |r| {
            r.stats = Some(stats);
            r.consumers.apply(&conn.node_id, consumers);
        });
    }

    /// Every node's reports, ordered by id (without consumer figures).
    pub fn fleet(&self) -> Vec<NodeView> {
        self.views(None)
    }

    /// Every node's reports, ordered by id, with each node's figures for `consumer`.
    pub fn fleet_for_consumer(&self, consumer: &str) -> Vec<NodeView> {
        self.views(Some(consumer))
    }

    fn views(&self, consumer: Option<&str>) -> Vec<NodeView> {
        self.lock()
            .iter()
            .map(|(id, r)| NodeView {
                node_id: id.clone(),
                connected: r.connected,
                health: r.health.clone(),
                stats: r.stats.clone(),
                consumer: consumer.and_then(|c| r.consumers.get(c).copied()),
                consumers_deferred: r.consumers.deferred,
            })
            .collect()
    }

    /// Marks the node disconnected, unless a newer stream of it has taken over.
    pub fn disconnect(&self, conn: &Connection) {
        self.update(conn, false, |r| r.connected = false);
        self.count_live(&self.lock());
    }

    /// The number of connected nodes, changing as they come and go.
    pub fn live(&self) -> watch::Receiver<u32> {
        self.live.subscribe()
    }

    /// Publishes the number of connected nodes if it changed (called with the map locked,
    /// so two updates cannot publish out of order).
    fn count_live(&self, nodes: &BTreeMap<String, Record>) {
        let live =
            u32::try_from(nodes.values().filter(|r| r.connected).count()).unwrap_or(u32::MAX);
        self.live
            .send_if_modified(|n| std::mem::replace(n, live) != live);
    }

    /// Every node, ordered by id.
    pub fn list(&self) -> Vec<pb::Node> {
        self.lock()
            .iter()
            .map(|(id, r)| pb::Node {
                node_id: id.clone(),
                connected: r.connected,
                listen_address: r.announcement.listen_address.clone(),
                admin_address: r.announcement.admin_address.clone(),
                peer_address: r.announcement.peer_address.clone(),
                acked_version: r.acked_version,
                sent_version: r.sent_version,
                last_nack_version: r.last_nack_version,
                last_nack_error: r.last_nack_error.clone(),
                connected_since: Some(r.connected_since.into()),
                last_seen: Some(r.last_seen.into()),
                build_version: r.announcement.build_version.clone(),
                uptime: r.stats.as_deref().and_then(|s| uptime(s, r.connected)),
                stats_age: r
                    .stats
                    .as_deref()
                    .and_then(|s| pb_duration(s.received.elapsed())),
                rate_limit_store: r.stats.as_deref().and_then(|s| s.store.clone()),
            })
            .collect()
    }

    fn update(&self, conn: &Connection, seen: bool, f: impl FnOnce(&mut Record)) {
        let mut nodes = self.lock();
        if let Some(r) = nodes.get_mut(&conn.node_id)
            && r.generation == conn.generation
        {
            if seen {
                r.last_seen = SystemTime::now();
            }
            f(r);
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Record>> {
        // The map stays consistent even if a holder panicked: every update is one assignment.
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The node's uptime from its latest report: as of now while connected (the time since the
/// report is added), as of the report once disconnected.
fn uptime(stats: &NodeStats, connected: bool) -> Option<prost_types::Duration> {
    let at_report = stats.uptime_at_report?;
    let since = if connected {
        stats.received.elapsed()
    } else {
        Duration::ZERO
    };
    pb_duration(at_report.saturating_add(since))
}

fn pb_duration(d: Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(d).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(id: &str) -> Announcement {
        Announcement {
            node_id: id.into(),
            listen_address: "127.0.0.1:8080".into(),
            ..Default::default()
        }
    }

    #[test]
    fn reconnect_takes_over_and_stale_stream_is_ignored() {
        let reg = NodeRegistry::default();
        let old = reg.connect(hello("n1"), 0).unwrap();
        reg.sent(&old, 3);
        let new = reg.connect(hello("n1"), 3).unwrap();
        // The earlier stream is told to end; the new one is not.
        assert!(futures::FutureExt::now_or_never(old.replaced()).is_some());
        assert!(futures::FutureExt::now_or_never(new.replaced()).is_none());
        // The old stream ends after the new one started: it must not touch the record.
        reg.acked(&old, 1);
        reg.disconnect(&old);
        let nodes = reg.list();
        assert_eq!(nodes.len(), 1);
        assert!(nodes[0].connected);
        assert_eq!(
            *reg.live().borrow(),
            1,
            "a stale stream's end leaves the node live"
        );
        assert_eq!(nodes[0].acked_version, 3, "known version counts as acked");
        reg.nacked(&new, 4, "bad config");
        reg.disconnect(&new);
        assert_eq!(*reg.live().borrow(), 0);
        let n = &reg.list()[0];
        assert!(!n.connected);
        assert_eq!(
            (n.last_nack_version, n.last_nack_error.as_str()),
            (4, "bad config")
        );
    }

    #[test]
    fn reports_survive_disconnect_and_reconnect_but_not_from_a_stale_stream() {
        let reg = NodeRegistry::default();
        let old = reg.connect(hello("n1"), 0).unwrap();
        let started = SystemTime::now();
        let configured = |name: &str| name == "alice" || name == "bob";
        let consumer = |name: &str, requests| pb::ConsumerCounters {
            consumer: name.into(),
            figures: Some(pb::ConsumerFigures {
                requests,
                ..Default::default()
            }),
        };
        let stats = |requests| pb::StatsReport {
            started_at: Some(started.into()),
            services: vec![pb::ServiceCounters {
                service: "web".into(),
                figures: Some(pb::TrafficFigures {
                    requests,
                    ..Default::default()
                }),
            }],
            policies: vec![],
            rate_limit_store: None,
            consumers: vec![consumer("alice", requests)],
            consumers_deferred: 0,
        };
        let health = pb::HealthReport {
            full: true,
            endpoints: vec![pb::EndpointHealth {
                service: "web".into(),
                endpoint: "http://127.0.0.1:1".into(),
                healthy: true,
                ..Default::default()
            }],
        };
        let requests = |reg: &NodeRegistry| {
            let view = &reg.fleet_for_consumer("alice")[0];
            let alice = view.consumer.map(|f| f.requests);
            let web = view.stats.as_ref().unwrap().services["web"].requests;
            assert_eq!(alice, Some(web), "consumers follow the same stream");
            (view.connected, web)
        };
        assert!(reg.fleet()[0].stats.is_none());
        assert!(reg.list()[0].uptime.is_none() && reg.list()[0].stats_age.is_none());
        reg.stats_report(&old, stats(5), configured);
        reg.health_report(&old, health);
        reg.disconnect(&old);
        assert_eq!(requests(&reg), (false, 5), "kept after disconnect");
        let node = &reg.list()[0];
        assert!(node.uptime.is_some() && node.stats_age.is_some());

        let new = reg.connect(hello("n1"), 0).unwrap();
        assert_eq!(requests(&reg), (true, 5), "kept across a reconnect");
        assert_eq!(reg.fleet()[0].health.len(), 1);
        reg.stats_report(&old, stats(99), configured);
        assert_eq!(
            requests(&reg),
            (true, 5),
            "a stale stream's report is ignored"
        );
        reg.stats_report(&new, stats(7), configured);
        assert_eq!(requests(&reg), (true, 7), "the latest report replaces");
        // Consumers merge: one not in the latest report keeps its figures.
        let mut only_bob = stats(7);
        only_bob.consumers = vec![consumer("bob", 1)];
        reg.stats_report(&new, only_bob, configured);
        assert_eq!(requests(&reg), (true, 7));
        let bob = reg.fleet_for_consumer("bob")[0].consumer;
        assert_eq!(bob.map(|f| f.requests), Some(1));
        // A name that is not a consumer of the config is not kept.
        let mut stranger = stats(7);
        stranger.consumers = vec![consumer("mallory", 1)];
        reg.stats_report(&new, stranger, configured);
        assert_eq!(reg.fleet_for_consumer("mallory")[0].consumer, None);
        assert_eq!(reg.fleet()[0].consumer, None, "no consumer asked for");
    }

    #[test]
    fn registry_is_bounded() {
        let reg = NodeRegistry::default();
        for i in 0..MAX_NODES {
            let c = reg.connect(hello(&format!("n{i}")), 0).unwrap();
            if i == 7 {
                reg.disconnect(&c);
            }
        }
        // The disconnected one makes room; after that everything is connected.
        reg.connect(hello("extra"), 0).unwrap();
        assert!(!reg.list().iter().any(|n| n.node_id == "n7"));
        assert!(reg.connect(hello("one-too-many"), 0).is_err());
        assert_eq!(reg.list().len(), MAX_NODES);
    }
}
