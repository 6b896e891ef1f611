//! Unit tests of the response handling (no network) and of shutdown while the loop is stuck
//! connecting or backing off. The protocol against a real control plane is tested in
//! `data-plane/tests/config_sync.rs`.

use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::*;

impl Task {
    /// `handle` for a response that must be answered (every config response).
    async fn reply(&mut self, response: pb::DiscoveryResponse) -> pb::DiscoveryRequest {
        self.handle(response)
            .await
            .expect("a config response is answered")
    }
}

/// Records every apply and fleet update; rejects versions listed in `reject`.
#[derive(Default)]
struct Recorder {
    applied: Mutex<Vec<u64>>,
    fleet: Mutex<Vec<u32>>,
    reject: Vec<u64>,
}

impl ConfigSink for Recorder {
    fn apply(&self, version: u64, _snapshot: &pb::ConfigSnapshot) -> Result<(), String> {
        if self.reject.contains(&version) {
            return Err(format!("version {version} is bad"));
        }
        self.applied.lock().unwrap().push(version);
        Ok(())
    }

    fn fleet(&self, live_data_planes: u32) {
        self.fleet.lock().unwrap().push(live_data_planes);
    }
}

fn config(control_plane: String, cache_file: Option<PathBuf>) -> SyncConfig {
    SyncConfig {
        control_plane,
        node_id: "node-1".to_owned(),
        listen_address: "127.0.0.1:1".to_owned(),
        admin_address: "127.0.0.1:2".to_owned(),
        cache_file,
        credentials: Default::default(),
    }
}

fn task(sink: Arc<dyn ConfigSink>, cache_file: Option<PathBuf>, in_force: u64) -> Task {
    let status = Arc::new(SyncStatus::default());
    status.version.store(in_force, Ordering::SeqCst);
    Task {
        config: config("http://127.0.0.1:1".to_owned(), cache_file),
        sink,
        status,
        reports: None,
        held: None,
    }
}

fn snapshot(name: &str) -> pb::ConfigSnapshot {
    named(&[name])
}

fn response(version: u64, snapshot: pb::ConfigSnapshot) -> pb::DiscoveryResponse {
    pb::DiscoveryResponse {
        epoch: 0,
        version,
        kind: Some(pb::discovery_response::Kind::Snapshot(snapshot)),
    }
}

fn named(names: &[&str]) -> pb::ConfigSnapshot {
    pb::ConfigSnapshot {
        certificates: vec![],
        consumers: vec![],
        services: names
            .iter()
            .map(|name| pb::Service {
                name: (*name).to_owned(),
                ..Default::default()
            })
            .collect(),
        policies: Vec::new(),
    }
}

/// A delta from `base` to `version` adding the services `add` and removing `remove`.
fn delta(version: u64, base: u64, add: &[&str], remove: &[&str]) -> pb::DiscoveryResponse {
    pb::DiscoveryResponse {
        epoch: 0,
        version,
        kind: Some(pb::discovery_response::Kind::Delta(pb::ConfigDelta {
            base_version: base,
            upserted_services: named(add).services,
            removed_services: remove.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        })),
    }
}

/// A sink that keeps what it was given, to check the merged config itself.
#[derive(Default)]
struct Keeper {
    applied: Mutex<Vec<(u64, pb::ConfigSnapshot)>>,
}

impl ConfigSink for Keeper {
    fn apply(&self, version: u64, snapshot: &pb::ConfigSnapshot) -> Result<(), String> {
        if snapshot.services.iter().any(|s| s.name == "bad") {
            return Err("service 'bad' is refused".to_owned());
        }
        self.applied
            .lock()
            .unwrap()
            .push((version, snapshot.clone()));
        Ok(())
    }
}

#[tokio::test]
async fn delta_on_the_held_snapshot_is_merged_applied_cached_whole_and_acked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.cache");
    let sink = Arc::new(Keeper::default());
    let mut task = task(sink.clone(), Some(path.clone()), 0);
    assert_eq!(task.reply(response(1, named(&["a", "c"]))).await, ack(1));

    assert_eq!(task.reply(delta(2, 1, &["b"], &["c"])).await, ack(2));
    let merged = named(&["a", "b"]);
    assert_eq!(
        sink.applied.lock().unwrap().last().unwrap(),
        &(2, merged.clone())
    );
    assert_eq!(task.status.version.load(Ordering::SeqCst), 2);
    assert_eq!(cache::load(&path).unwrap(), Some((2, merged)));

    // The merged config is held in turn: a second delta builds on it.
    assert_eq!(task.reply(delta(3, 2, &["d"], &[])).await, ack(3));
    assert_eq!(
        sink.applied.lock().unwrap().last().unwrap(),
        &(3, named(&["a", "b", "d"]))
    );
}

#[tokio::test]
async fn delta_from_another_base_is_nacked_naming_both_versions_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.cache");
    let sink = Arc::new(Keeper::default());
    let mut task = task(sink.clone(), Some(path.clone()), 0);
    assert_eq!(task.reply(response(5, named(&["a"]))).await, ack(5));

    assert_eq!(
        task.reply(delta(8, 7, &["b"], &[])).await,
        nack(
            8,
            "delta from version 7 does not apply: this node holds version 5".to_owned()
        )
    );
    assert_eq!(sink.applied.lock().unwrap().len(), 1, "sink not called");
    assert_eq!(task.status.version.load(Ordering::SeqCst), 5);
    assert_eq!(cache::load(&path).unwrap(), Some((5, named(&["a"]))));

    // The snapshot the control plane answers a NACK with goes through.
    assert_eq!(task.reply(response(8, named(&["a", "b"]))).await, ack(8));
    assert_eq!(task.status.version.load(Ordering::SeqCst), 8);
}

#[tokio::test]
async fn delta_without_a_held_snapshot_is_nacked() {
    // Serving 5 (as after a start-up from the cache) but holding no copy of it.
    let sink = Arc::new(Keeper::default());
    let mut task = task(sink.clone(), None, 5);
    assert_eq!(
        task.reply(delta(6, 5, &["b"], &[])).await,
        nack(
            6,
            "delta from version 5 does not apply: this node serves version 5 but holds no \
             copy of it to merge into"
                .to_owned()
        )
    );
    assert!(sink.applied.lock().unwrap().is_empty());
    assert_eq!(task.status.version.load(Ordering::SeqCst), 5);

    // A snapshot of the version in force is ACKed without applying, and held for deltas.
    assert_eq!(task.reply(response(5, named(&["a"]))).await, ack(5));
    assert!(sink.applied.lock().unwrap().is_empty());
    assert_eq!(task.reply(delta(6, 5, &["b"], &[])).await, ack(6));
    assert_eq!(
        sink.applied.lock().unwrap().last().unwrap(),
        &(6, named(&["a", "b"]))
    );
}

#[tokio::test]
async fn delta_to_the_version_in_force_is_acked_without_applying() {
    let sink = Arc::new(Keeper::default());
    let mut task = task(sink.clone(), None, 0);
    assert_eq!(task.reply(response(4, named(&["a"]))).await, ack(4));
    assert_eq!(task.reply(delta(4, 3, &["x"], &[])).await, ack(4));
    assert_eq!(sink.applied.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn rejected_merge_is_nacked_and_the_held_snapshot_stays_the_base() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.cache");
    let sink = Arc::new(Keeper::default());
    let mut task = task(sink.clone(), Some(path.clone()), 0);
    assert_eq!(task.reply(response(1, named(&["a"]))).await, ack(1));

    assert_eq!(
        task.reply(delta(2, 1, &["bad"], &[])).await,
        nack(2, "service 'bad' is refused".to_owned())
    );
    assert_eq!(task.status.version.load(Ordering::SeqCst), 1);
    assert_eq!(cache::load(&path).unwrap(), Some((1, named(&["a"]))));

    // A self-contradicting delta is refused before the sink sees it.
    assert_eq!(
        task.reply(delta(2, 1, &["b"], &["b"])).await,
        nack(2, "delta both upserts and removes service 'b'".to_owned())
    );
    assert_eq!(sink.applied.lock().unwrap().len(), 1);

    // Version 1 is still what deltas build on.
    assert_eq!(task.reply(delta(3, 1, &["c"], &[])).await, ack(3));
    assert_eq!(
        sink.applied.lock().unwrap().last().unwrap(),
        &(3, named(&["a", "c"]))
    );
}

/// The (known_version, known_epoch) a new stream's hello would carry.
fn hello_holds(task: &Task) -> (u64, u64) {
    match task.hello().kind {
        Some(pb::discovery_request::Kind::Hello(h)) => {
            assert_eq!(h.capabilities, [DELTA_CAPABILITY, FLEET_CAPABILITY]);
            (h.known_version, h.known_epoch)
        }
        other => panic!("not a hello: {other:?}"),
    }
}

#[tokio::test]
async fn the_hello_echoes_the_epoch_of_the_config_received() {
    let sink = Arc::new(Keeper::default());
    let mut node = task(sink.clone(), None, 0);
    assert_eq!(hello_holds(&node), (0, 0));
    let mut first = response(3, named(&["a"]));
    first.epoch = 77;
    assert_eq!(node.reply(first).await, ack(3));
    assert_eq!(hello_holds(&node), (3, 77));
    let mut next = delta(4, 3, &["b"], &[]);
    next.epoch = 77;
    assert_eq!(node.reply(next).await, ack(4));
    assert_eq!(hello_holds(&node), (4, 77));

    // Serving a version this process did not receive (the cache, after a restart): no
    // epoch, so the control plane starts it with a snapshot.
    let from_cache = task(sink, None, 5);
    assert_eq!(hello_holds(&from_cache), (5, 0));
}

#[tokio::test]
async fn a_delta_that_does_not_move_forward_is_nacked() {
    let sink = Arc::new(Keeper::default());
    let mut task = task(sink.clone(), None, 0);
    assert_eq!(task.reply(response(3, named(&["a"]))).await, ack(3));
    assert_eq!(
        task.reply(delta(3, 3, &["b"], &[])).await,
        ack(3),
        "the version in force: nothing to do"
    );
    assert_eq!(
        task.reply(delta(2, 3, &["b"], &[])).await,
        nack(
            2,
            "delta from version 3 to version 2 does not move forward".to_owned()
        )
    );
    assert_eq!(sink.applied.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn newer_version_is_applied_cached_and_acked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.cache");
    let sink = Arc::new(Recorder::default());
    let mut task = task(sink.clone(), Some(path.clone()), 3);

    let reply = task.reply(response(4, snapshot("a"))).await;

    assert_eq!(reply, ack(4));
    assert_eq!(*sink.applied.lock().unwrap(), vec![4]);
    assert_eq!(task.status.version.load(Ordering::SeqCst), 4);
    assert_eq!(cache::load(&path).unwrap(), Some((4, snapshot("a"))));
}

#[tokio::test]
async fn version_in_force_is_acked_without_applying() {
    let sink = Arc::new(Recorder::default());
    let mut task = task(sink.clone(), None, 5);
    assert_eq!(task.reply(response(5, snapshot("a"))).await, ack(5));
    assert!(sink.applied.lock().unwrap().is_empty());
    assert_eq!(task.status.version.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn older_version_from_a_restored_control_plane_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.cache");
    let sink = Arc::new(Recorder::default());
    let mut task = task(sink.clone(), Some(path.clone()), 5);
    assert_eq!(task.reply(response(3, snapshot("old"))).await, ack(3));
    assert_eq!(*sink.applied.lock().unwrap(), vec![3]);
    assert_eq!(task.status.version.load(Ordering::SeqCst), 3);
    assert_eq!(cache::load(&path).unwrap(), Some((3, snapshot("old"))));
}

#[tokio::test]
async fn rejected_version_is_nacked_with_the_reason_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.cache");
    let sink = Arc::new(Recorder {
        reject: vec![2],
        ..Default::default()
    });
    let mut task = task(sink.clone(), Some(path.clone()), 1);

    let reply = task.reply(response(2, snapshot("bad"))).await;

    assert_eq!(reply, nack(2, "version 2 is bad".to_owned()));
    assert_eq!(task.status.version.load(Ordering::SeqCst), 1);
    assert_eq!(cache::load(&path).unwrap(), None);
}

#[tokio::test]
async fn response_without_a_known_kind_is_nacked() {
    let sink = Arc::new(Recorder::default());
    let mut task = task(sink.clone(), None, 0);
    let reply = task
        .reply(pb::DiscoveryResponse {
            epoch: 0,
            version: 9,
            kind: None,
        })
        .await;
    assert_eq!(reply, nack(9, UNSUPPORTED_KIND.to_owned()));
    assert!(sink.applied.lock().unwrap().is_empty());
    assert_eq!(task.status.version.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_fleet_update_reaches_the_sink_unanswered_and_changes_no_config() {
    let sink = Arc::new(Recorder::default());
    let mut task = task(sink.clone(), None, 0);
    assert_eq!(task.reply(response(1, snapshot("a"))).await, ack(1));
    let fleet = pb::DiscoveryResponse {
        epoch: 0,
        version: 1,
        kind: Some(pb::discovery_response::Kind::Fleet(pb::FleetUpdate {
            live_data_planes: 4,
        })),
    };
    assert_eq!(task.handle(fleet).await, None);
    assert_eq!(*sink.fleet.lock().unwrap(), [4]);
    assert_eq!(*sink.applied.lock().unwrap(), [1]);
    assert_eq!(task.status.version.load(Ordering::SeqCst), 1);
    let hello = task.hello();
    let Some(pb::discovery_request::Kind::Hello(hello)) = hello.kind else {
        panic!("not a hello")
    };
    assert!(hello.capabilities.iter().any(|c| c == FLEET_CAPABILITY));
}

#[tokio::test]
async fn cache_write_failure_still_acks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("node.cache");
    let sink = Arc::new(Recorder::default());
    let mut task = task(sink.clone(), Some(path), 0);

    assert_eq!(task.reply(response(1, snapshot("a"))).await, ack(1));
    assert_eq!(task.status.version.load(Ordering::SeqCst), 1);
}

#[test]
fn urls_are_checked() {
    assert!(check_control_plane_url("http://127.0.0.1:50051").is_ok());
    assert!(!check_control_plane_url("http://localhost:50051").unwrap());
    assert!(check_control_plane_url("https://cp.example:50051").unwrap());
    for bad in ["127.0.0.1:50051", "ftp://x", "http://", "not a url"] {
        let err = check_control_plane_url(bad).unwrap_err();
        assert!(
            matches!(err, SyncError::InvalidUrl { .. }),
            "{bad}: {err:?}"
        );
    }
}

/// A backoff long enough that, if shutdown did not interrupt it, the test would hang.
fn hour_backoff() -> Tuning {
    Tuning {
        backoff: Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600)),
        ..Tuning::default()
    }
}

/// Starts `run_inner` against `addr` and returns its handle, the shutdown trigger and status.
fn start(
    addr: std::net::SocketAddr,
    tuning: Tuning,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::oneshot::Sender<()>,
    Arc<SyncStatus>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let status = Arc::new(SyncStatus::default());
    let (_, reports) = mpsc::channel(1);
    let handle = tokio::spawn(run_inner(
        config(format!("http://{addr}"), None),
        Arc::new(Recorder::default()),
        status.clone(),
        reports,
        tuning,
        async {
            let _ = stopped.await;
        },
    ));
    (handle, stop, status)
}

/// A peer that accepts and hangs up at once, so every session fails; counts its accepts.
async fn hang_up_server() -> (
    std::net::SocketAddr,
    Arc<AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let server = tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (addr, accepted, server)
}

/// Generous against a loaded machine, tiny against the hour the loop would otherwise wait.
const PROMPT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn shutdown_interrupts_the_backoff() {
    // Every session fails, then the loop backs off.
    let (addr, accepted, server) = hang_up_server().await;
    let (handle, stop, status) = start(addr, hour_backoff());

    gw_testkit::eventually("the sync loop to try once", || async {
        (accepted.load(Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    stop.send(()).unwrap();
    tokio::time::timeout(PROMPT, handle)
        .await
        .expect("run ends promptly on shutdown while backing off")
        .unwrap();
    assert!(!status.connected.load(Ordering::SeqCst));
    server.abort();
}

#[tokio::test]
async fn shutdown_interrupts_a_hanging_connect() {
    // A peer that accepts and never speaks: the session hangs opening the stream.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (held_tx, mut held_rx) = mpsc::channel(4);
    let server = tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let _ = held_tx.send(socket).await;
        }
    });
    let (handle, stop, _status) = start(addr, hour_backoff());

    let socket = held_rx.recv().await.unwrap();
    stop.send(()).unwrap();
    tokio::time::timeout(PROMPT, handle)
        .await
        .expect("run ends promptly on shutdown while connecting")
        .unwrap();
    drop(socket);
    server.abort();
}

/// A TCP relay that can be partitioned: while `partitioned` is true it forwards nothing and
/// closes nothing (no FIN, no RST), like a cut cable, which only keep-alive can detect.
/// Connections opened during a partition wait for it to heal.
async fn start_relay(
    upstream: std::net::SocketAddr,
) -> (std::net::SocketAddr, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (partition, partitioned) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let mut partitioned = partitioned.clone();
            tokio::spawn(async move {
                let _ = partitioned.wait_for(|p| !*p).await;
                let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let cut = tokio::select! {
                    _ = partitioned.wait_for(|p| *p) => true,
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
                };
                if cut {
                    // Keep both sockets open and silent until the partition heals.
                    let _ = partitioned.wait_for(|p| !*p).await;
                }
            });
        }
    });
    (addr, partition)
}

#[tokio::test]
async fn keepalive_notices_a_silent_partition_and_the_node_reconnects_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let cp_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cp_addr = cp_listener.local_addr().unwrap();
    let (stop_cp, cp_stopped) = tokio::sync::oneshot::channel::<()>();
    let cp = tokio::spawn(gw_control_plane::serve(
        gw_control_plane::Config::new(format!("sqlite://{}", dir.path().join("gw.db").display())),
        cp_listener,
        async {
            let _ = cp_stopped.await;
        },
    ));
    let (relay, partition) = start_relay(cp_addr).await;

    // Production pings every 10 s; a test-sized interval shows the same mechanism.
    let tuning = Tuning {
        open_timeout: Duration::from_secs(2),
        keepalive_interval: Duration::from_millis(100),
        keepalive_timeout: Duration::from_millis(300),
        backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(200)),
        ..Tuning::default()
    };
    let (node, stop, status) = start(relay, tuning);
    let connected = |want: bool| {
        let status = status.clone();
        move || {
            let now = status.connected.load(Ordering::SeqCst);
            async move { (now == want).then_some(()) }
        }
    };

    gw_testkit::eventually("the node to connect through the relay", connected(true)).await;
    partition.send_replace(true);
    gw_testkit::eventually("keep-alive to notice the partition", connected(false)).await;
    partition.send_replace(false);
    gw_testkit::eventually("the node to reconnect after the partition", connected(true)).await;

    stop.send(()).unwrap();
    node.await.unwrap();
    stop_cp.send(()).unwrap();
    cp.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_long_outage_is_one_warning_not_one_per_attempt() {
    // The test runtime is single-threaded, so every task the loop spawns logs through this.
    let (log, _guard) = gw_testkit::log::CapturedLog::on_this_thread(tracing::Level::DEBUG);

    let (addr, _, server) = hang_up_server().await;
    let tuning = Tuning {
        backoff: Backoff::new(Duration::from_millis(1), Duration::from_millis(5)),
        ..Tuning::default()
    };
    let (node, stop, _status) = start(addr, tuning);
    gw_testkit::eventually("four failed attempts", || async {
        (log.lines_with("reconnect failed") >= 3).then_some(())
    })
    .await;
    stop.send(()).unwrap();
    node.await.unwrap();
    server.abort();

    // The first failure is the state change; the repeats go to debug.
    assert_eq!(log.lines_with("control plane unreachable"), 1);
    assert_eq!(log.lines_with(" WARN "), 1);
    assert_eq!(log.lines_with(" ERROR "), 0);
}
