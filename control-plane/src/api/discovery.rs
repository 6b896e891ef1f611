//! `gateway.v1.ConfigDiscoveryService`: the stream each data plane lives on.
//!
//! One task per stream reads the node's messages and pushes config versions. It never queues
//! a backlog: the outgoing channel holds one message, and only once it has room does the task
//! take the *latest* published state, so a slow node skips versions instead of growing a
//! queue. What it sends is a full snapshot to a new node, and otherwise, to a node that
//! announced the "delta" capability, one `ConfigDelta` from the version the node holds to the
//! latest (built from the state's recent changes, see `state`). The version a node announces
//! in its hello is a delta's base only if it came with this run's epoch (a restored database
//! reuses version numbers); a NACKed delta, or a node further behind than the recent changes
//! reach, gets the snapshot.
//!
//! Every stream ends when the control plane shuts down, so graceful shutdown is not held up
//! by data planes that keep their streams open forever.

use std::sync::Arc;
use std::time::Duration;

use gw_proto::v1 as pb;
use gw_proto::v1::config_discovery_service_server::ConfigDiscoveryService;
use gw_proto::v1::discovery_request::Kind;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::api::auth::{NodeAuth, NodeCredential};
use crate::domain::validate;
use crate::fleet::nodes::{Announcement, Connection, NodeRegistry};
use crate::store::Store;

/// How long a new stream may take to send its hello; a stream that says nothing is dropped
/// rather than holding a task and a socket forever.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// The `NodeHello.capabilities` entry of a node that applies `ConfigDelta` responses.
pub const CAPABILITY_DELTA: &str = gw_proto::v1::CAPABILITY_DELTA;
/// The `NodeHello.capabilities` entry of a node that takes `FleetUpdate` responses.
pub const CAPABILITY_FLEET: &str = gw_proto::v1::CAPABILITY_FLEET;
/// Longest node id, in characters.
const MAX_NODE_ID: usize = 128;
/// Longest address or build string kept from a hello; these are for display only.
const MAX_LABEL_LEN: usize = 256;

type Outbound = mpsc::Sender<Result<pb::DiscoveryResponse, Status>>;

/// The ConfigDiscoveryService implementation.
#[derive(Debug, Clone)]
pub struct DiscoveryApi {
    store: Arc<Store>,
    nodes: Arc<NodeRegistry>,
    shutdown: watch::Receiver<bool>,
    /// Who may open a stream, checked before anything is read or registered.
    auth: NodeAuth,
    /// Sent in every response (`DiscoveryResponse.epoch`): a version number names the same
    /// config only within one run of the control plane, since a restored database counts
    /// the same numbers again with other contents.
    epoch: u64,
}

impl DiscoveryApi {
    /// Streams `store`'s config, records nodes in `nodes`, and ends every stream once
    /// `shutdown` turns true. Streams must pass `auth`.
    pub fn new(
        store: Arc<Store>,
        nodes: Arc<NodeRegistry>,
        shutdown: watch::Receiver<bool>,
        auth: NodeAuth,
    ) -> Self {
        Self {
            store,
            nodes,
            shutdown,
            auth,
            epoch: new_epoch(),
        }
    }
}

/// A random, non-zero epoch. std's `RandomState` is seeded from the OS's random source, so
/// hashing nothing with a new one gives a fresh random number without another dependency.
fn new_epoch() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let epoch = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    epoch.max(1)
}

#[tonic::async_trait]
impl ConfigDiscoveryService for DiscoveryApi {
    type StreamConfigStream = ReceiverStream<Result<pb::DiscoveryResponse, Status>>;

    async fn stream_config(
        &self,
        request: Request<Streaming<pb::DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamConfigStream>, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        // Before anything else: a peer without credentials gets no task, no registry slot and
        // no config, only UNAUTHENTICATED.
        let credential = match self.auth.authenticate(&request) {
            Ok(credential) => credential,
            Err(status) => {
                tracing::debug!(%peer, %status, "config stream refused");
                return Err(status);
            }
        };
        let inbound = request.into_inner();
        // Capacity 1: at most one version waits for the node; see the module comment.
        let (tx, rx) = mpsc::channel(1);
        // The hello is read by the task, not here, so a client may wait for the response
        // headers before sending it.
        tokio::spawn(self.clone().session(inbound, tx, peer, credential));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// What a node said in its hello about the config it holds.
#[derive(Debug, Clone, Copy)]
struct Holds {
    /// The version it holds (0: none).
    version: u64,
    /// Whether that version may serve as a delta's base: the node announced it with this
    /// run's epoch. If not, the first response is a snapshot.
    is_base: bool,
    /// It listed the "delta" capability.
    takes_deltas: bool,
    /// It listed the "fleet" capability.
    takes_fleet: bool,
}

/// Why a stream ended.
#[derive(Debug)]
enum End {
    Shutdown,
    NodeClosed,
    NodeError(Status),
    StoreClosed,
    /// A newer stream of the same node took over.
    Replaced,
}

impl DiscoveryApi {
    async fn session(
        self,
        mut inbound: Streaming<pb::DiscoveryRequest>,
        tx: Outbound,
        peer: String,
        credential: NodeCredential,
    ) {
        let mut shutdown = self.shutdown.clone();
        let Some(hello) = read_hello(&mut inbound, &mut shutdown, &tx, &peer).await else {
            return;
        };
        let pb::NodeHello {
            node_id,
            known_version,
            listen_address,
            admin_address,
            build_version,
            capabilities,
            known_epoch,
        } = hello;
        let takes_deltas = capabilities.iter().any(|c| c == CAPABILITY_DELTA);
        let takes_fleet = capabilities.iter().any(|c| c == CAPABILITY_FLEET);
        // A version the node announces means our config only if it came from this run.
        let known_is_ours = known_epoch == self.epoch;
        if let Err(problem) = check_node_id(&node_id) {
            return reject(
                &tx,
                Status::invalid_argument(format!("hello.node_id: {problem}")),
            )
            .await;
        }
        if let Err(status) = credential.permits(&node_id) {
            tracing::warn!(%peer, %status, "config stream refused: node id not in its certificate");
            return reject(&tx, status).await;
        }
        let announcement = Announcement {
            node_id,
            listen_address: clip(listen_address),
            admin_address: clip(admin_address),
            build_version: clip(build_version),
            peer_address: peer,
        };
        let conn = match self.nodes.connect(announcement.clone(), known_version) {
            Ok(conn) => conn,
            Err(full) => return reject(&tx, Status::resource_exhausted(full.to_string())).await,
        };
        tracing::info!(
            node = %conn.node_id,
            peer = %announcement.peer_address,
            listen = %announcement.listen_address,
            known_version,
            "data plane connected"
        );
        let end = self
            .push_loop(
                &conn,
                Holds {
                    version: known_version,
                    is_base: known_is_ours,
                    takes_deltas,
                    takes_fleet,
                },
                &mut inbound,
                &tx,
                &mut shutdown,
            )
            .await;
        self.nodes.disconnect(&conn);
        match end {
            End::Shutdown => {
                // Tell the node why, if there is room; it reconnects either way.
                let _ = tx.try_send(Err(Status::unavailable("control plane is shutting down")));
                tracing::info!(node = %conn.node_id, "config stream closed for shutdown");
            }
            End::NodeError(status) if status.code() == tonic::Code::OutOfRange => {
                // tonic's decoder refused a message above MAX_INBOUND_MESSAGE_BYTES.
                tracing::warn!(
                    node = %conn.node_id,
                    error = status.message(),
                    "data plane sent a message above the inbound limit; stream dropped"
                );
            }
            End::NodeError(status) => {
                tracing::info!(node = %conn.node_id, %status, "data plane disconnected");
            }
            End::NodeClosed | End::StoreClosed => {
                tracing::info!(node = %conn.node_id, "data plane disconnected");
            }
            End::Replaced => {
                let _ = tx.try_send(Err(Status::aborted(
                    "a newer stream of this node took over",
                )));
                tracing::info!(node = %conn.node_id, "earlier stream of a reconnected data plane closed");
            }
        }
    }

    /// Pushes versions and handles the node's answers until one side goes away.
    ///
    /// A node that takes deltas is sent only what changed since the version it holds (or was
    /// last sent), while the recent changes reach back that far; otherwise, and when it
    /// NACKs a delta, it gets the full snapshot.
    async fn push_loop(
        &self,
        conn: &Connection,
        holds: Holds,
        inbound: &mut Streaming<pb::DiscoveryRequest>,
        tx: &Outbound,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        let mut updates = self.store.subscribe();
        // The version the node holds or was last sent. Anything different is worth sending:
        // normally newer, but after a database restore it may be older, and the node must
        // still converge on what this control plane serves.
        let Holds {
            version: known_version,
            is_base,
            takes_deltas,
            takes_fleet,
        } = holds;
        // The number of live nodes last told to this node (0: not yet); only nodes that
        // asked for it are told.
        let mut live = self.nodes.live();
        let mut told_live = 0u32;
        let mut node_version = known_version;
        let current = updates.borrow_and_update().version;
        if known_version > current {
            tracing::warn!(
                node = %conn.node_id, known_version, current,
                "node holds a newer version than this control plane; sending ours"
            );
        }
        // The newest version sent as a delta since the last snapshot, and whether the node
        // must be sent a snapshot next (it NACKed a delta: it may not hold what we think).
        let mut last_delta: Option<u64> = None;
        let mut resync = false;
        // Whether `node_version` may be a delta's base: what the node announced with our
        // epoch, or what this stream sent it (the node NACKs if it did not apply that).
        let mut base_is_known = is_base;
        loop {
            let pending = resync || updates.borrow().version != node_version;
            let fleet_pending = takes_fleet && *live.borrow() != told_live;
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => return End::Shutdown,
                () = conn.replaced() => return End::Replaced,
                msg = inbound.message() => match msg {
                    Ok(Some(req)) => {
                        if let Some(Kind::Nack(nack)) = &req.kind
                            && last_delta.is_some_and(|v| nack.version <= v)
                        {
                            resync = true;
                        }
                        self.handle(conn, req);
                    }
                    Ok(None) => return End::NodeClosed,
                    Err(status) => return End::NodeError(status),
                },
                permit = tx.reserve(), if pending || fleet_pending => {
                    let Ok(permit) = permit else { return End::NodeClosed };
                    if !pending {
                        // Config first: a node learns the fleet size once it has a config.
                        told_live = *live.borrow_and_update();
                        permit.send(Ok(pb::DiscoveryResponse {
                            version: node_version,
                            kind: Some(pb::discovery_response::Kind::Fleet(pb::FleetUpdate {
                                live_data_planes: told_live.max(1),
                            })),
                            epoch: self.epoch,
                        }));
                        tracing::debug!(node = %conn.node_id, live = told_live, "fleet size sent");
                        continue;
                    }
                    // Taken only now that there is room, so it is the latest version.
                    let state = updates.borrow_and_update().clone();
                    let delta = if takes_deltas && base_is_known && !resync {
                        state.delta_since(node_version)
                    } else {
                        None
                    };
                    let kind = if let Some(mut delta) = delta {
                        delta.epoch = self.epoch;
                        permit.send(Ok(delta));
                        last_delta = Some(state.version);
                        "delta"
                    } else {
                        let mut snapshot = (**state.snapshot()).clone();
                        snapshot.epoch = self.epoch;
                        permit.send(Ok(snapshot));
                        last_delta = None;
                        "snapshot"
                    };
                    resync = false;
                    base_is_known = true;
                    node_version = state.version;
                    self.nodes.sent(conn, node_version);
                    tracing::debug!(node = %conn.node_id, version = node_version, kind, "config sent");
                }
                changed = updates.changed(), if !pending => {
                    if changed.is_err() {
                        return End::StoreClosed;
                    }
                }
                // The registry outlives every stream, so this never fails.
                _ = live.changed(), if takes_fleet && !fleet_pending => {}
                () = tx.closed(), if !pending && !fleet_pending => return End::NodeClosed,
            }
        }
    }

    fn handle(&self, conn: &Connection, req: pb::DiscoveryRequest) {
        match req.kind {
            Some(Kind::Ack(pb::ConfigAck { version })) => {
                self.nodes.acked(conn, version);
                tracing::debug!(node = %conn.node_id, version, "config acked");
            }
            Some(Kind::Nack(pb::ConfigNack { version, error })) => {
                self.nodes.nacked(conn, version, &error);
                // The text comes from the node; bound what it can put in our log.
                let error = validate::truncate(&error, 4096);
                tracing::warn!(node = %conn.node_id, version, %error, "config rejected by data plane");
            }
            Some(Kind::Hello(_)) => {
                self.nodes.seen(conn);
                tracing::debug!(node = %conn.node_id, "ignoring a second hello on one stream");
            }
            // Reports are untrusted: they are checked and bounded, never a reason to end
            // the stream.
            Some(Kind::Health(report)) => {
                tracing::debug!(
                    node = %conn.node_id,
                    full = report.full,
                    endpoints = report.endpoints.len(),
                    "health report"
                );
                self.nodes.health_report(conn, report);
            }
            Some(Kind::Stats(report)) => {
                tracing::debug!(node = %conn.node_id, "stats report");
                // Only consumers of the config as it is now are kept (`fleet::consumers`).
                let state = self.store.current();
                self.nodes
                    .stats_report(conn, report, |name| state.consumers.contains_key(name));
            }
            // Newer data planes may send report kinds this control plane does not know yet.
            None => self.nodes.seen(conn),
        }
    }
}

/// Waits for the stream's first message, which must be a hello. Anything else, or nothing
/// within [`HELLO_TIMEOUT`], ends the stream (with a status saying why, where useful).
async fn read_hello(
    inbound: &mut Streaming<pb::DiscoveryRequest>,
    shutdown: &mut watch::Receiver<bool>,
    tx: &Outbound,
    peer: &str,
) -> Option<pb::NodeHello> {
    let first = tokio::select! {
        _ = shutdown.wait_for(|stop| *stop) => return None,
        first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message()) => first,
    };
    match first {
        Ok(Ok(Some(pb::DiscoveryRequest {
            kind: Some(Kind::Hello(hello)),
        }))) => Some(hello),
        Ok(Ok(Some(_))) => {
            reject(
                tx,
                Status::invalid_argument("the first message must be hello"),
            )
            .await;
            None
        }
        Ok(Ok(None)) => None,
        Ok(Err(status)) => {
            tracing::debug!(%peer, %status, "config stream failed before hello");
            None
        }
        Err(_) => {
            let msg = format!("no hello within {}s", HELLO_TIMEOUT.as_secs());
            reject(tx, Status::deadline_exceeded(msg)).await;
            None
        }
    }
}

/// Ends a stream with `status` (the client sees it as the call's error).
async fn reject(tx: &Outbound, status: Status) {
    tracing::info!(%status, "config stream rejected");
    let _ = tx.send(Err(status)).await;
}

/// A node id: 1 to 128 characters, no control characters, no surrounding whitespace.
fn check_node_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("required".to_owned());
    }
    if id.chars().count() > MAX_NODE_ID {
        return Err(format!("must be at most {MAX_NODE_ID} characters"));
    }
    if id.chars().any(char::is_control) || id.trim() != id {
        return Err("must be printable, without surrounding whitespace".to_owned());
    }
    Ok(())
}

/// Bounds a display-only string from a node.
fn clip(mut s: String) -> String {
    let len = validate::truncate(&s, MAX_LABEL_LEN).len();
    s.truncate(len);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids() {
        for good in ["dp-1", "host.example:8080", "ノード", &"x".repeat(128)] {
            assert_eq!(check_node_id(good), Ok(()), "{good}");
        }
        for bad in ["", " dp", "dp ", "a\nb", "a\u{7f}", &"x".repeat(129)] {
            assert!(check_node_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn clipping() {
        assert_eq!(clip("abc".into()), "abc");
        assert_eq!(clip("é".repeat(200)).len(), 256);
    }
}
