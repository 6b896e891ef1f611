//! The config sync client against the real control plane (started in-process on a temp SQLite
//! file and `127.0.0.1:0`) and, for what the real one never sends, a scripted fake.
//!
//! The data plane side is `config_sync::run` with a recording `ConfigSink`, so these tests see
//! exactly which versions were applied, ACKed and NACKed; one delta test runs the whole data
//! plane against the fake to see the merged config served.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gw_data_plane::config::cache;
use gw_data_plane::config::sync::{self as config_sync, ConfigSink, SyncConfig, SyncStatus};
use gw_proto::v1 as pb;
use gw_proto::v1::admin_service_client::AdminServiceClient;
use gw_proto::v1::config_discovery_service_server::{
    ConfigDiscoveryService, ConfigDiscoveryServiceServer,
};
use gw_testkit::eventually;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// Services whose name starts with this make the recording sink reject the whole version.
const REJECT_PREFIX: &str = "reject-";

/// Records every applied version; rejects a snapshot naming a `reject-*` service.
#[derive(Default)]
struct RecordingSink {
    applied: Mutex<Vec<(u64, pb::ConfigSnapshot)>>,
}

impl RecordingSink {
    fn versions(&self) -> Vec<u64> {
        self.applied
            .lock()
            .unwrap()
            .iter()
            .map(|(v, _)| *v)
            .collect()
    }

    fn last(&self) -> Option<(u64, pb::ConfigSnapshot)> {
        self.applied.lock().unwrap().last().cloned()
    }
}

impl ConfigSink for RecordingSink {
    fn apply(&self, version: u64, snapshot: &pb::ConfigSnapshot) -> Result<(), String> {
        if let Some(bad) = snapshot
            .services
            .iter()
            .find(|s| s.name.starts_with(REJECT_PREFIX))
        {
            return Err(format!("service '{}': refused by the test sink", bad.name));
        }
        self.applied
            .lock()
            .unwrap()
            .push((version, snapshot.clone()));
        Ok(())
    }
}

fn service_names(snapshot: &pb::ConfigSnapshot) -> Vec<&str> {
    snapshot.services.iter().map(|s| s.name.as_str()).collect()
}

/// The real control plane on a temp SQLite file; can be stopped and restarted on the same
/// port and database.
struct ControlPlane {
    addr: SocketAddr,
    db: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ControlPlane {
    async fn start(db: &Path) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, db.to_path_buf())
    }

    fn start_on(listener: TcpListener, db: PathBuf) -> Self {
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let config = gw_control_plane::Config::new(format!("sqlite://{}", db.display()));
        let task = tokio::spawn(async move {
            gw_control_plane::serve(config, listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self {
            addr,
            db,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    /// Starts again on the same port and database (after [`ControlPlane::stop`]).
    async fn restart(&mut self) {
        let addr = self.addr;
        let listener = eventually("the control plane's port to be free again", || async move {
            TcpListener::bind(addr).await.ok()
        })
        .await;
        *self = Self::start_on(listener, self.db.clone());
    }

    async fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::connect(self.url()).await.unwrap()
    }

    /// Registers a minimal service and returns the config version that includes it.
    async fn add_service(&self, name: &str) -> u64 {
        let service = pb::Service {
            name: name.to_owned(),
            route: Some(pb::Route {
                path_prefix: format!("/{name}"),
                ..Default::default()
            }),
            endpoints: vec!["http://127.0.0.1:9".to_owned()],
            ..Default::default()
        };
        self.admin()
            .await
            .create_service(pb::CreateServiceRequest {
                service: Some(service),
            })
            .await
            .unwrap()
            .into_inner()
            .config_version
    }

    async fn delete_service(&self, name: &str) -> u64 {
        self.admin()
            .await
            .delete_service(pb::DeleteServiceRequest {
                name: name.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .config_version
    }

    /// The node as the control plane sees it, if it has connected.
    async fn node(&self, node_id: &str) -> Option<pb::Node> {
        let mut admin = AdminServiceClient::connect(self.url()).await.ok()?;
        let nodes = admin
            .list_nodes(pb::ListNodesRequest {})
            .await
            .ok()?
            .into_inner()
            .nodes;
        nodes.into_iter().find(|n| n.node_id == node_id)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A running `config_sync::run` with its sink, status and cache file.
struct Node {
    id: String,
    sink: Arc<RecordingSink>,
    status: Arc<SyncStatus>,
    cache_file: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Node {
    fn start(control_plane: String, dir: &Path, id: &str) -> Self {
        Self::start_with(control_plane, dir, id, None, None)
    }

    /// `cached` is installed before sync starts, as the data plane does with its cache file.
    fn start_with(
        control_plane: String,
        dir: &Path,
        id: &str,
        cached: Option<(u64, pb::ConfigSnapshot)>,
        reports: Option<mpsc::Receiver<pb::DiscoveryRequest>>,
    ) -> Self {
        let sink = Arc::new(RecordingSink::default());
        let status = Arc::new(SyncStatus::default());
        if let Some((version, snapshot)) = cached {
            sink.apply(version, &snapshot).unwrap();
            status.version.store(version, Ordering::SeqCst);
        }
        let cache_file = dir.join(format!("{id}.cache"));
        let config = SyncConfig {
            control_plane,
            node_id: id.to_owned(),
            listen_address: "127.0.0.1:8080".to_owned(),
            admin_address: "127.0.0.1:9901".to_owned(),
            cache_file: Some(cache_file.clone()),
            credentials: Default::default(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        let sink_dyn: Arc<dyn ConfigSink> = sink.clone();
        let task = match reports {
            None => tokio::spawn(config_sync::run(config, sink_dyn, status.clone(), shutdown)),
            Some(reports) => tokio::spawn(config_sync::run_with_reports(
                config,
                sink_dyn,
                status.clone(),
                reports,
                shutdown,
            )),
        };
        Self {
            id: id.to_owned(),
            sink,
            status,
            cache_file,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn version(&self) -> u64 {
        self.status.version.load(Ordering::SeqCst)
    }

    fn connected(&self) -> bool {
        self.status.connected.load(Ordering::SeqCst)
    }

    /// Signals shutdown and waits for `run` to return (panics if it does not, promptly).
    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).unwrap();
        }
        let task = self.task.take().unwrap();
        eventually("config_sync::run to return after shutdown", || {
            let finished = task.is_finished();
            async move { finished.then_some(()) }
        })
        .await;
        task.await.unwrap();
        assert!(!self.connected(), "connected must be false after shutdown");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Waits until the control plane lists `node` with `acked_version == version`.
async fn wait_acked(cp: &ControlPlane, node: &Node, version: u64) -> pb::Node {
    eventually(&format!("{} to ACK version {version}", node.id), || async {
        cp.node(&node.id)
            .await
            .filter(|n| n.connected && n.acked_version == version)
    })
    .await
}

/// A control plane holding service `alpha` and a node that has applied and ACKed it; returns
/// them with that version (and the temp dir that holds the database and the cache).
async fn synced() -> (tempfile::TempDir, ControlPlane, Node, u64) {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("gw.db")).await;
    let v1 = cp.add_service("alpha").await;
    let node = Node::start(cp.url(), dir.path(), "dp-1");
    wait_acked(&cp, &node, v1).await;
    (dir, cp, node, v1)
}

/// Waits until the node reports its stream closed.
async fn wait_disconnected(node: &Node) {
    eventually("the node to notice the control plane is gone", || async {
        (!node.connected()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn full_config_is_applied_acked_cached_and_changes_follow() {
    let (_dir, cp, mut node, v1) = synced().await;

    let seen = cp.node(&node.id).await.unwrap();
    assert_eq!(seen.listen_address, "127.0.0.1:8080");
    assert_eq!(seen.admin_address, "127.0.0.1:9901");
    assert_eq!(seen.build_version, env!("CARGO_PKG_VERSION"));
    assert!(node.connected());
    assert_eq!(node.version(), v1);
    let (applied_version, applied) = node.sink.last().unwrap();
    assert_eq!(applied_version, v1);
    assert_eq!(service_names(&applied), ["alpha"]);
    // Written before the ACK, so it is already there, and it is exactly what was applied.
    assert_eq!(
        cache::load(&node.cache_file).unwrap(),
        Some((v1, applied.clone()))
    );

    let v2 = cp.add_service("beta").await;
    assert!(v2 > v1);
    wait_acked(&cp, &node, v2).await;
    let (applied_version, applied) = node.sink.last().unwrap();
    assert_eq!(applied_version, v2);
    assert_eq!(service_names(&applied), ["alpha", "beta"]);
    assert_eq!(node.version(), v2);
    assert_eq!(cache::load(&node.cache_file).unwrap(), Some((v2, applied)));
    // Every version applied once, in order.
    assert_eq!(node.sink.versions(), [v1, v2]);

    node.shutdown().await;
}

#[tokio::test]
async fn rejected_version_is_nacked_and_the_old_one_stays() {
    let (_dir, cp, mut node, v1) = synced().await;

    let bad = format!("{REJECT_PREFIX}me");
    let v2 = cp.add_service(&bad).await;
    let seen = eventually("the control plane to record the NACK", || async {
        cp.node(&node.id)
            .await
            .filter(|n| n.last_nack_version == v2)
    })
    .await;
    assert_eq!(
        seen.last_nack_error,
        format!("service '{bad}': refused by the test sink")
    );
    assert_eq!(seen.acked_version, v1);
    assert_eq!(node.version(), v1);
    assert_eq!(node.sink.versions(), [v1]);
    let (cached_version, _) = cache::load(&node.cache_file).unwrap().unwrap();
    assert_eq!(cached_version, v1);
    assert!(node.connected(), "a NACK does not end the stream");

    // The next good version goes through on the same stream.
    let v3 = cp.delete_service(&bad).await;
    wait_acked(&cp, &node, v3).await;
    assert_eq!(node.sink.versions(), [v1, v3]);
    assert_eq!(node.version(), v3);

    node.shutdown().await;
}

#[tokio::test]
async fn control_plane_restart_reconnects_resumes_and_gets_later_changes() {
    let (_dir, mut cp, mut node, v1) = synced().await;

    cp.stop().await;
    wait_disconnected(&node).await;
    assert_eq!(
        node.version(),
        v1,
        "the config in force survives the outage"
    );

    cp.restart().await;
    // The restarted control plane knows nothing of the node until its hello, which carries
    // the version in force; being current, it is sent nothing and keeps its version.
    let seen = wait_acked(&cp, &node, v1).await;
    assert_eq!(
        seen.sent_version, 0,
        "nothing resent to a node that is current"
    );
    assert!(node.connected());
    assert_eq!(
        node.sink.versions(),
        [v1],
        "no re-apply of the version in force"
    );

    let v2 = cp.add_service("beta").await;
    wait_acked(&cp, &node, v2).await;
    assert_eq!(node.sink.versions(), [v1, v2]);
    assert_eq!(node.version(), v2);

    node.shutdown().await;
}

#[tokio::test]
async fn a_node_restarted_from_its_cache_while_the_control_plane_is_down_resumes_from_it() {
    let (dir, mut cp, mut first, v1) = synced().await;
    first.shutdown().await;
    cp.stop().await;

    let cached = cache::load(&first.cache_file).unwrap().unwrap();
    assert_eq!(cached.0, v1);
    let mut node = Node::start_with(cp.url(), dir.path(), "dp-1", Some(cached), None);
    assert_eq!(node.version(), v1);
    assert!(!node.connected());

    cp.restart().await;
    let seen = wait_acked(&cp, &node, v1).await;
    assert_eq!(
        seen.sent_version, 0,
        "a node holding the current version is sent nothing"
    );
    assert_eq!(node.sink.versions(), [v1], "only the start-up apply");

    let v2 = cp.add_service("beta").await;
    wait_acked(&cp, &node, v2).await;
    assert_eq!(node.sink.versions(), [v1, v2]);
    let (cached_version, _) = cache::load(&node.cache_file).unwrap().unwrap();
    assert_eq!(cached_version, v2);

    node.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_run_while_disconnected() {
    let (_dir, mut cp, mut node, _) = synced().await;
    cp.stop().await;
    wait_disconnected(&node).await;
    // Now retrying with backoff against a closed port.
    node.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_run_while_connected() {
    let (_dir, cp, mut node, _) = synced().await;
    node.shutdown().await;
    eventually("the control plane to see the node leave", || async {
        cp.node("dp-1").await.filter(|n| !n.connected)
    })
    .await;
}

/// A TCP relay to `upstream` that counts the bytes flowing from it to the client (control
/// plane to node: responses and HTTP/2 framing). Returns its address and the counter.
async fn counting_relay(upstream: SocketAddr) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    tokio::spawn(async move {
        loop {
            let (client, _) = listener.accept().await.unwrap();
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                let up = tokio::io::copy(&mut from_client, &mut to_server);
                let down = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = from_server.read(&mut buf).await?;
                        if n == 0 {
                            return Ok::<_, std::io::Error>(());
                        }
                        counter.fetch_add(n as u64, Ordering::SeqCst);
                        to_client.write_all(&buf[..n]).await?;
                    }
                };
                let _ = tokio::join!(up, down);
            });
        }
    });
    (addr, received)
}

#[tokio::test]
async fn the_real_control_plane_sends_a_change_as_a_delta_far_smaller_than_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("gw.db")).await;
    let mut v1 = 0;
    for i in 0..40 {
        v1 = cp.add_service(&format!("service-number-{i:02}")).await;
    }
    let (relay, received) = counting_relay(cp.addr).await;
    let mut node = Node::start(format!("http://{relay}"), dir.path(), "dp-size");
    wait_acked(&cp, &node, v1).await;
    let (_, full) = node.sink.last().unwrap();
    let full_len = prost::Message::encoded_len(&full) as u64;
    let before = received.load(Ordering::SeqCst);
    assert!(
        before >= full_len,
        "the relay saw the first snapshot go by ({before} < {full_len} bytes)"
    );

    let v2 = cp.add_service("one-more").await;
    wait_acked(&cp, &node, v2).await;
    let change = received.load(Ordering::SeqCst) - before;
    let (_, applied) = node.sink.last().unwrap();
    assert_eq!(applied.services.len(), 41);
    assert_eq!(applied.services[0].name, "one-more", "merged in name order");
    // A snapshot would be the whole config again; a delta is one service plus framing.
    assert!(
        change * 4 < full_len,
        "the change took {change} bytes on the wire; the whole config is {full_len}"
    );
    assert_eq!(node.sink.versions(), [v1, v2]);
    assert_eq!(cache::load(&node.cache_file).unwrap(), Some((v2, applied)));

    node.shutdown().await;
}

/// A scripted ConfigDiscoveryService: the test reads what the node sends and decides what to
/// send back, one message at a time.
struct FakeControlPlane {
    /// Taken by the first (and only expected) stream.
    script: Mutex<Option<(ResponseRx, mpsc::UnboundedSender<pb::DiscoveryRequest>)>>,
}

type ResponseRx = mpsc::Receiver<Result<pb::DiscoveryResponse, tonic::Status>>;

#[tonic::async_trait]
impl ConfigDiscoveryService for FakeControlPlane {
    type StreamConfigStream = ReceiverStream<Result<pb::DiscoveryResponse, tonic::Status>>;

    async fn stream_config(
        &self,
        request: tonic::Request<tonic::Streaming<pb::DiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::StreamConfigStream>, tonic::Status> {
        let Some((responses, seen)) = self.script.lock().unwrap().take() else {
            return Err(tonic::Status::unavailable("the fake takes one stream"));
        };
        let mut inbound = request.into_inner();
        tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                if seen.send(message).is_err() {
                    break;
                }
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(responses)))
    }
}

/// The test's end of a [`FakeControlPlane`].
struct Script {
    url: String,
    to_node: mpsc::Sender<Result<pb::DiscoveryResponse, tonic::Status>>,
    from_node: mpsc::UnboundedReceiver<pb::DiscoveryRequest>,
    _stop: oneshot::Sender<()>,
}

impl Script {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (to_node, responses) = mpsc::channel(8);
        let (seen, from_node) = mpsc::unbounded_channel();
        let fake = FakeControlPlane {
            script: Mutex::new(Some((responses, seen))),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ConfigDiscoveryServiceServer::new(fake))
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );
        Self {
            url,
            to_node,
            from_node,
            _stop: stop,
        }
    }

    async fn send(&self, version: u64, kind: Option<pb::discovery_response::Kind>) {
        self.to_node
            .send(Ok(pb::DiscoveryResponse {
                version,
                kind,
                epoch: 0,
            }))
            .await
            .unwrap();
    }

    async fn send_snapshot(&self, version: u64, names: &[&str]) {
        self.send(
            version,
            Some(pb::discovery_response::Kind::Snapshot(named(names))),
        )
        .await;
    }

    /// A delta from `base` to `version` upserting `upserted` and removing `removed`.
    async fn send_delta(
        &self,
        version: u64,
        base: u64,
        upserted: Vec<pb::Service>,
        removed: &[&str],
    ) {
        let delta = pb::ConfigDelta {
            base_version: base,
            upserted_services: upserted,
            removed_services: removed.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        };
        self.send(version, Some(pb::discovery_response::Kind::Delta(delta)))
            .await;
    }

    /// The next message from the node (panics if none comes within the default deadline).
    async fn next(&mut self) -> pb::discovery_request::Kind {
        let message = tokio::time::timeout(gw_testkit::DEFAULT_DEADLINE, self.from_node.recv())
            .await
            .expect("a message from the node")
            .expect("the node's stream is open");
        message.kind.expect("a message with a kind")
    }

    /// The next message that is not a health or stats report (a whole data plane sends those
    /// on the same stream whenever it likes).
    async fn next_reply(&mut self) -> pb::discovery_request::Kind {
        loop {
            match self.next().await {
                pb::discovery_request::Kind::Health(_) | pb::discovery_request::Kind::Stats(_) => {}
                other => return other,
            }
        }
    }
}

/// A config of bare services named `names`.
fn named(names: &[&str]) -> pb::ConfigSnapshot {
    pb::ConfigSnapshot {
        certificates: vec![],
        consumers: vec![],
        services: names.iter().map(|name| bare(name)).collect(),
        policies: Vec::new(),
    }
}

/// A service with only its name set (enough for the recording sink).
fn bare(name: &str) -> pb::Service {
    pb::Service {
        name: name.to_owned(),
        ..Default::default()
    }
}

fn ack(version: u64) -> pb::discovery_request::Kind {
    pb::discovery_request::Kind::Ack(pb::ConfigAck { version })
}

fn nack(version: u64, error: &str) -> pb::discovery_request::Kind {
    pb::discovery_request::Kind::Nack(pb::ConfigNack {
        version,
        error: error.to_owned(),
    })
}

#[tokio::test]
async fn hello_first_then_nack_of_an_unknown_kind_and_ack_of_the_version_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let mut script = Script::start().await;
    // As if version 5 had been loaded from the cache at start-up.
    let cached = (5, pb::ConfigSnapshot::default());
    let mut node = Node::start_with(script.url.clone(), dir.path(), "dp-7", Some(cached), None);

    let pb::discovery_request::Kind::Hello(hello) = script.next().await else {
        panic!("the first message must be hello");
    };
    assert_eq!(
        hello,
        pb::NodeHello {
            known_epoch: 0,
            node_id: "dp-7".to_owned(),
            known_version: 5,
            listen_address: "127.0.0.1:8080".to_owned(),
            admin_address: "127.0.0.1:9901".to_owned(),
            build_version: env!("CARGO_PKG_VERSION").to_owned(),
            capabilities: vec![
                config_sync::DELTA_CAPABILITY.to_owned(),
                config_sync::FLEET_CAPABILITY.to_owned()
            ],
        }
    );
    assert_eq!(
        config_sync::DELTA_CAPABILITY,
        "delta",
        "the name the proto defines"
    );
    eventually("connected once the stream is open", || async {
        node.connected().then_some(())
    })
    .await;

    // A response with no kind this build knows (what a kind added later looks like to it).
    script.send(6, None).await;
    assert_eq!(script.next().await, nack(6, "unsupported response kind"));
    assert_eq!(node.version(), 5);

    // The version in force again: ACK, no apply.
    script.send_snapshot(5, &["cached"]).await;
    assert_eq!(script.next().await, ack(5));
    assert_eq!(node.sink.versions(), [5], "only the start-up apply");

    script.send_snapshot(7, &["alpha"]).await;
    assert_eq!(script.next().await, ack(7));
    assert_eq!(node.sink.versions(), [5, 7]);
    assert_eq!(node.version(), 7);
    assert!(node.connected(), "protocol errors do not end the stream");

    node.shutdown().await;
}

#[tokio::test]
async fn reports_are_forwarded_on_the_stream_after_hello() {
    let dir = tempfile::tempdir().unwrap();
    let mut script = Script::start().await;
    let (reports, reports_rx) = mpsc::channel(8);
    // No report kinds exist yet (issue 4 adds them); any DiscoveryRequest shows the plumbing,
    // and an ACK of a version never sent is easy to tell apart.
    // Queued while not yet connected: delivered once the stream is open, after hello.
    let early = pb::DiscoveryRequest {
        kind: Some(ack(100)),
    };
    reports.send(early).await.unwrap();
    let mut node = Node::start_with(
        script.url.clone(),
        dir.path(),
        "dp-r",
        None,
        Some(reports_rx),
    );

    assert!(matches!(
        script.next().await,
        pb::discovery_request::Kind::Hello(_)
    ));
    assert_eq!(script.next().await, ack(100));
    script.send_snapshot(1, &["alpha"]).await;
    assert_eq!(script.next().await, ack(1));
    reports
        .send(pb::DiscoveryRequest {
            kind: Some(ack(101)),
        })
        .await
        .unwrap();
    assert_eq!(script.next().await, ack(101));

    // Reporters going away does not disturb the stream.
    drop(reports);
    script.send_snapshot(2, &["alpha", "beta"]).await;
    assert_eq!(script.next().await, ack(2));

    node.shutdown().await;
}

#[tokio::test]
async fn delta_on_a_snapshot_is_merged_applied_cached_and_acked() {
    let dir = tempfile::tempdir().unwrap();
    let mut script = Script::start().await;
    let mut node = Node::start(script.url.clone(), dir.path(), "dp-d");
    assert!(matches!(
        script.next().await,
        pb::discovery_request::Kind::Hello(_)
    ));

    script.send_snapshot(1, &["alpha", "gamma"]).await;
    assert_eq!(script.next().await, ack(1));
    script
        .send_delta(2, 1, vec![bare("beta")], &["gamma", "never-held"])
        .await;
    assert_eq!(script.next().await, ack(2));

    assert_eq!(node.sink.versions(), [1, 2]);
    let (_, applied) = node.sink.last().unwrap();
    assert_eq!(service_names(&applied), ["alpha", "beta"]);
    assert_eq!(node.version(), 2);
    // The cache holds the whole merged config, not the delta.
    assert_eq!(
        cache::load(&node.cache_file).unwrap(),
        Some((2, applied.clone()))
    );

    node.shutdown().await;
}

#[tokio::test]
async fn delta_from_another_base_is_nacked_the_old_config_stays_and_a_snapshot_follows() {
    let dir = tempfile::tempdir().unwrap();
    let mut script = Script::start().await;
    let mut node = Node::start(script.url.clone(), dir.path(), "dp-w");
    assert!(matches!(
        script.next().await,
        pb::discovery_request::Kind::Hello(_)
    ));
    script.send_snapshot(3, &["alpha"]).await;
    assert_eq!(script.next().await, ack(3));

    script.send_delta(5, 4, vec![bare("beta")], &[]).await;
    assert_eq!(
        script.next().await,
        nack(
            5,
            "delta from version 4 does not apply: this node holds version 3"
        )
    );
    assert_eq!(node.sink.versions(), [3], "the sink never saw the delta");
    assert_eq!(node.version(), 3);
    let (cached_version, _) = cache::load(&node.cache_file).unwrap().unwrap();
    assert_eq!(cached_version, 3);

    // What the control plane answers a NACKed delta with.
    script.send_snapshot(5, &["alpha", "beta"]).await;
    assert_eq!(script.next().await, ack(5));
    assert_eq!(node.sink.versions(), [3, 5]);
    assert_eq!(node.version(), 5);
    // And deltas work again on top of it.
    script
        .send_delta(6, 5, vec![bare("delta")], &["alpha"])
        .await;
    assert_eq!(script.next().await, ack(6));
    let (_, applied) = node.sink.last().unwrap();
    assert_eq!(service_names(&applied), ["beta", "delta"]);

    node.shutdown().await;
}

#[tokio::test]
async fn a_node_started_from_its_cache_announces_no_epoch_and_takes_a_snapshot_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut script = Script::start().await;
    // What a previous run left: the cache file, which the data plane installs at start-up.
    let cached = named(&["alpha", "beta"]);
    cache::store(&dir.path().join("dp-c.cache"), 5, &cached).unwrap();
    let mut node = Node::start_with(
        script.url.clone(),
        dir.path(),
        "dp-c",
        Some((5, cached)),
        None,
    );

    let pb::discovery_request::Kind::Hello(hello) = script.next().await else {
        panic!("the first message must be hello");
    };
    assert_eq!(hello.known_version, 5);
    // The cache does not say which control-plane run the version came from, so version 5 is
    // no base for a delta: one sent anyway is refused, and the snapshot is applied.
    assert_eq!(hello.known_epoch, 0);
    script
        .send_delta(6, 5, vec![bare("gamma")], &["alpha"])
        .await;
    assert_eq!(
        script.next().await,
        nack(
            6,
            "delta from version 5 does not apply: this node serves version 5 but holds no copy \
             of it to merge into"
        )
    );
    assert_eq!(node.sink.versions(), [5]);
    let snapshot = named(&["beta", "gamma"]);
    script
        .send(
            6,
            Some(pb::discovery_response::Kind::Snapshot(snapshot.clone())),
        )
        .await;
    assert_eq!(script.next().await, ack(6));
    assert_eq!(node.sink.versions(), [5, 6]);
    assert_eq!(cache::load(&node.cache_file).unwrap(), Some((6, snapshot)));

    node.shutdown().await;
}

#[tokio::test]
async fn the_data_plane_serves_the_config_a_delta_builds() {
    common::logs();
    let mut script = Script::start().await;
    let a = common::Backend::start("backend-a").await;
    let b = common::Backend::start("backend-b").await;
    let mut dp = common::DataPlane::start(&script.url, |_| {}).await;

    let pb::discovery_request::Kind::Hello(hello) = script.next_reply().await else {
        panic!("the first message must be hello");
    };
    assert_eq!(
        hello.capabilities,
        [config_sync::DELTA_CAPABILITY, config_sync::FLEET_CAPABILITY]
    );
    let snapshot = pb::ConfigSnapshot {
        certificates: vec![],
        consumers: vec![],
        services: vec![
            common::service("alpha", "/a", &[&a]),
            common::service("gone", "/gone", &[&a]),
        ],
        policies: Vec::new(),
    };
    script
        .send(1, Some(pb::discovery_response::Kind::Snapshot(snapshot)))
        .await;
    assert_eq!(script.next_reply().await, ack(1));
    script
        .send_delta(2, 1, vec![common::service("beta", "/b", &[&b])], &["gone"])
        .await;
    assert_eq!(script.next_reply().await, ack(2));

    assert_eq!(dp.version().await, 2);
    let get = |path: &'static str| common::Call::get(dp.proxy, path).send();
    let beta = get("/b/x").await;
    assert_eq!(
        (beta.status, beta.text()),
        (http::StatusCode::OK, "backend-b".to_owned())
    );
    let alpha = get("/a/x").await;
    assert_eq!(
        (alpha.status, alpha.text()),
        (http::StatusCode::OK, "backend-a".to_owned())
    );
    assert_eq!(get("/gone/x").await.status, http::StatusCode::NOT_FOUND);

    dp.stop().await;
}
