//! The data plane's side of the `StreamConfig` protocol (see proto/gateway/v1/gateway.proto).
//!
//! SEAM (agreed interface, do not change without telling the lead): `ConfigSink`, `SyncConfig`,
//! `SyncStatus`, `run`.
//!
//! One task owns the link. Each connection attempt is a *session*: connect, open the stream
//! with `hello` (carrying the version in force, so a node that already holds the current
//! config is sent nothing), then answer every response with ACK or NACK until the stream
//! fails. Between sessions the task sleeps with jittered exponential backoff
//! ([`backoff`]). The config in force is never touched by a lost link: the node keeps serving
//! it and resumes from its version.
//!
//! Responses come in two kinds. A *snapshot* is the whole config at a version. A *delta*
//! ([`delta`]) is only what changed since `base_version`; the node asks for deltas by listing
//! [`DELTA_CAPABILITY`] in its hello, so a change to one service of ten thousand puts a few
//! hundred bytes on the wire instead of the whole config (the node still compiles the merged
//! config whole, as it would a snapshot).
//! To apply a delta the task keeps the protobuf snapshot of the version in force (the last
//! one it received and installed), and echoes the control plane's epoch that came with it
//! in its next hello, so that a reconnect can resume with a delta; a node that started from
//! its cache file holds no epoch and is sent a snapshot first. The delta is merged
//! into it and the resulting full snapshot goes through exactly the path a received snapshot
//! takes (the sink validates the whole, the cache gets the whole). A delta whose base is not
//! the version this node holds is NACKed with no change; the control plane answers that with
//! a snapshot, which is also how a node that lost track resynchronises.
//!
//! Everything the node sends goes through one outbound `mpsc` per session. Besides the task's
//! own ACKs and NACKs, [`run_with_reports`] forwards messages from a caller-owned channel into
//! it, which is where health and stats reports (field numbers 4 and up of `DiscoveryRequest`)
//! plug in without touching the protocol loop.
//!
//! Invariants: `SyncStatus::version` changes only after the sink accepted that version (it
//! normally moves forward, and back only when the control plane itself went back); a delta
//! is merged only into a held snapshot whose version is both its base and the version in
//! force, so the node never builds a config the control plane did not have;
//! `SyncStatus::connected` is true only between "stream open" and "stream failed"; shutdown
//! wins over every await (connect, stream, backoff) because the whole loop is raced against it
//! and holds no state that a cancelled await could leave half-done.

mod backoff;
mod credentials;
mod delta;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gw_proto::v1 as pb;
use gw_proto::v1::config_discovery_service_client::ConfigDiscoveryServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use crate::config::cache;
use backoff::Backoff;
pub use credentials::Credentials;

/// Time allowed for the TCP connect to the control plane. Loopback or LAN answers in
/// milliseconds; anything slower is treated as down and retried with backoff.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed from starting to connect until the stream is open (TCP + HTTP/2 + response
/// headers). Covers a peer that accepts TCP but never speaks gRPC, which `CONNECT_TIMEOUT`
/// alone would not.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 PING interval on the stream. The stream is quiet while the config does not change,
/// so without pings a control plane that vanished (host down, cable cut, no RST) would go
/// unnoticed until TCP gives up, minutes later.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a PING may go unanswered before the connection is declared dead.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// A stream that stayed open this long counts as a working connection and resets the backoff,
/// even if no config arrived (a node already at the current version is sent nothing).
const STABLE_AFTER: Duration = Duration::from_secs(5);
/// Outbound queue per session: ACK/NACKs are one per response and reports are periodic, so a
/// few slots suffice; a full queue means HTTP/2 flow control is pushing back, and waiting is
/// the right answer.
const OUTBOUND_CAPACITY: usize = 16;
/// How often the credential files are compared with those the stream was opened with; a
/// rotated client certificate then takes effect within this, by reconnecting.
const CREDENTIALS_POLL: Duration = Duration::from_secs(5);
/// NACK reason for a response whose kind this build does not know.
const UNSUPPORTED_KIND: &str = "unsupported response kind";

/// The `NodeHello.capabilities` entry saying this node applies `ConfigDelta` responses.
pub const DELTA_CAPABILITY: &str = gw_proto::v1::CAPABILITY_DELTA;
/// The `NodeHello.capabilities` entry saying this node takes `FleetUpdate` responses (GLOBAL
/// rate-limit policies need the number of live data planes for their local share).
pub const FLEET_CAPABILITY: &str = gw_proto::v1::CAPABILITY_FLEET;

/// The loop's timeouts and delays: the constants above in production; tests shrink them to
/// see a partition detected, or stretch the backoff to catch shutdown in the middle of it.
#[derive(Debug, Clone)]
struct Tuning {
    open_timeout: Duration,
    keepalive_interval: Duration,
    keepalive_timeout: Duration,
    backoff: Backoff,
    credentials_poll: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            open_timeout: OPEN_TIMEOUT,
            keepalive_interval: KEEPALIVE_INTERVAL,
            keepalive_timeout: KEEPALIVE_TIMEOUT,
            backoff: Backoff::default(),
            credentials_poll: CREDENTIALS_POLL,
        }
    }
}

/// Implemented by the proxy: validates and installs one config version.
///
/// Called off the request path, from the sync task (and once at start-up with the cached
/// config). Must be atomic: on `Err` the previous config stays in force.
pub trait ConfigSink: Send + Sync + 'static {
    /// Compiles and swaps in `snapshot` as `version`. `Err` carries the NACK reason, in words
    /// for operators (e.g. "service 'a': endpoints[0]: 'x' is not an http:// URL").
    fn apply(&self, version: u64, snapshot: &pb::ConfigSnapshot) -> Result<(), String>;

    /// The control plane says `live_data_planes` data planes are connected (this one
    /// included). Default: ignored.
    fn fleet(&self, live_data_planes: u32) {
        let _ = live_data_planes;
    }
}

/// What the sync task needs to know.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Control-plane URL, e.g. `http://127.0.0.1:50051`.
    pub control_plane: String,
    /// This node's id, sent in `NodeHello`.
    pub node_id: String,
    /// Where the proxy listens (`host:port`), sent in `NodeHello`.
    pub listen_address: String,
    /// Where the admin listener is (`host:port`), sent in `NodeHello`.
    pub admin_address: String,
    /// Where each applied version is written. `None` disables the cache (tests only).
    pub cache_file: Option<PathBuf>,
    /// TLS trust, client certificate and node token towards the control plane.
    pub credentials: Credentials,
}

/// Connection state shared with the admin listener and metrics.
#[derive(Debug, Default)]
pub struct SyncStatus {
    /// True while a stream to the control plane is open.
    pub connected: std::sync::atomic::AtomicBool,
    /// The config version in force (0: none).
    pub version: std::sync::atomic::AtomicU64,
}

/// Why a session with the control plane ended (or could not start).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The control-plane URL cannot be used; retrying will not help.
    #[error("control-plane URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Could not reach the control plane (refused, unreachable, HTTP/2 handshake failed).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// Connecting and opening the stream took longer than allowed.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The stream failed with a gRPC status (including a lost connection).
    #[error("stream failed: {code:?}: {message}")]
    Rpc {
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// The control plane ended the stream cleanly (e.g. it is shutting down).
    #[error("the control plane closed the stream")]
    Closed,
    /// The TLS files could not be used (retried: they may be mid-rotation).
    #[error("credentials: {0}")]
    Credentials(String),
    /// The credential files changed; the stream is reopened with the new ones.
    #[error("credential files changed; reconnecting with the new ones")]
    CredentialsChanged,
}

impl From<tonic::Status> for SyncError {
    fn from(status: tonic::Status) -> Self {
        SyncError::Rpc {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// Checks that `url` can be used as the control-plane address (an `https://host:port` or
/// `http://host:port` URL), so `main` can reject a bad flag at start-up instead of the sync
/// task failing forever. Returns whether it is TLS.
pub fn check_control_plane_url(url: &str) -> Result<bool, SyncError> {
    endpoint(url, &Tuning::default()).map(|e| e.uri().scheme_str() == Some("https"))
}

/// Runs the sync loop until `shutdown` resolves: connect, hello (with the version in force),
/// apply + ACK/NACK each response, write the cache after each successful apply, reconnect with
/// exponential backoff and jitter on failure.
pub async fn run(
    config: SyncConfig,
    sink: Arc<dyn ConfigSink>,
    status: Arc<SyncStatus>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    // No reporter: a channel whose sender is already gone reads as closed at once.
    let (_, reports) = mpsc::channel(1);
    run_with_reports(config, sink, status, reports, shutdown).await;
}

/// [`run`], also forwarding every message received on `reports` to the control plane over the
/// same stream (for health and stats reports).
///
/// Messages are forwarded in order while a stream is open; while disconnected they wait in
/// `reports` (so a bounded channel with `try_send` on the producer side never blocks it, and
/// drops what does not fit). A report is not resent if the stream fails after taking it, so
/// reporters should send state (current health, cumulative counters) rather than deltas, and
/// may watch `SyncStatus::connected` to resend full state after a reconnect.
pub async fn run_with_reports(
    config: SyncConfig,
    sink: Arc<dyn ConfigSink>,
    status: Arc<SyncStatus>,
    reports: mpsc::Receiver<pb::DiscoveryRequest>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    run_inner(config, sink, status, reports, Tuning::default(), shutdown).await;
}

/// [`run_with_reports`] with chosen timeouts and delays.
async fn run_inner(
    config: SyncConfig,
    sink: Arc<dyn ConfigSink>,
    status: Arc<SyncStatus>,
    reports: mpsc::Receiver<pb::DiscoveryRequest>,
    tuning: Tuning,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let task = Task {
        config,
        sink,
        status: status.clone(),
        reports: Some(reports),
        held: None,
    };
    tokio::select! {
        () = shutdown => {}
        () = task.sync_loop(tuning) => {}
    }
    status.connected.store(false, Ordering::SeqCst);
    tracing::info!("config sync stopped");
}

/// The sync task's state, kept across sessions.
struct Task {
    config: SyncConfig,
    sink: Arc<dyn ConfigSink>,
    status: Arc<SyncStatus>,
    /// `None` once every reporter has gone away.
    reports: Option<mpsc::Receiver<pb::DiscoveryRequest>>,
    /// The protobuf snapshot of the last version received and installed, which deltas are
    /// merged into. `None` until one is.
    held: Option<Held>,
}

/// A full config kept to merge deltas into.
struct Held {
    version: u64,
    /// The control plane's epoch that came with it, echoed in the next hello.
    epoch: u64,
    /// Shared with the blocking task that merges a delta, without copying 10k services.
    snapshot: Arc<pb::ConfigSnapshot>,
}

/// How a session ended, for logging and for the backoff.
struct SessionEnd {
    error: SyncError,
    /// The stream was open (and `connected` was true) for part of the session.
    opened: bool,
    /// At least one response arrived.
    got_response: bool,
}

impl Task {
    /// Sessions forever, with backoff in between. Only returns by being dropped (shutdown).
    async fn sync_loop(mut self, tuning: Tuning) {
        let url = self.config.control_plane.clone();
        let mut backoff = tuning.backoff.clone();
        let endpoint = match endpoint(&url, &tuning) {
            Ok(endpoint) => endpoint,
            Err(e) => {
                // A typo in the flag does not fix itself; retrying would only spam the log.
                tracing::error!(error = %e, "config sync disabled; serving the cached config, if any");
                return std::future::pending().await;
            }
        };
        // Whether "down" has been logged since the link was last up: repeated failures while
        // down go to debug, so a long outage is one warning, not one per attempt.
        let mut down_logged = false;
        loop {
            let started = Instant::now();
            let end = self.session(&endpoint, &tuning).await;
            self.status.connected.store(false, Ordering::SeqCst);
            let version = self.status.version.load(Ordering::SeqCst);
            if matches!(end.error, SyncError::CredentialsChanged) {
                // A rotation, not an outage; if the new credentials are refused, the next
                // failure is a warning.
                tracing::info!(control_plane = %url, version,
                    "credential files changed; reconnecting with the new ones");
                down_logged = false;
                backoff.reset();
                continue;
            }
            if end.opened {
                tracing::warn!(control_plane = %url, error = %end.error, version,
                    "config stream lost; serving the config in force and reconnecting");
            } else if !down_logged {
                tracing::warn!(control_plane = %url, error = %end.error, version,
                    "control plane unreachable; serving the config in force and retrying with backoff");
            } else {
                tracing::debug!(control_plane = %url, error = %end.error, "reconnect failed");
            }
            down_logged = true;
            if end.got_response || (end.opened && started.elapsed() >= STABLE_AFTER) {
                backoff.reset();
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// One connection: open the stream, then serve it until it fails.
    async fn session(&mut self, endpoint: &Endpoint, tuning: &Tuning) -> SessionEnd {
        let open_timeout = tuning.open_timeout;
        let credentials = &self.config.credentials;
        // Read now, so a rotated certificate is used from this connection on.
        let mut files = credentials.files();
        let endpoint = if endpoint.uri().scheme_str() == Some("https") {
            let host = endpoint
                .uri()
                .host()
                .unwrap_or_default()
                .trim_matches(['[', ']']);
            match credentials.tls_config(host).and_then(|tls| {
                endpoint
                    .clone()
                    .tls_config(tls)
                    .map_err(|e| error_chain(&e))
            }) {
                Ok(endpoint) => endpoint,
                Err(e) => return SessionEnd::before_open(SyncError::Credentials(e)),
            }
        } else {
            endpoint.clone()
        };
        let authorization = credentials.authorization();
        let (outbound, outbound_rx) = mpsc::channel(OUTBOUND_CAPACITY);
        let hello = self.hello();
        let known_version = self.status.version.load(Ordering::SeqCst);
        // Queued before the call so that it is the first thing on the stream. The channel is
        // new and has room, so this cannot fail.
        let _ = outbound.try_send(hello);

        let open = async {
            let channel = endpoint
                .connect()
                .await
                .map_err(|e| SyncError::Connect(error_chain(&e)))?;
            let mut client = ConfigDiscoveryServiceClient::new(channel);
            let mut request = tonic::Request::new(ReceiverStream::new(outbound_rx));
            if let Some(authorization) = authorization {
                request
                    .metadata_mut()
                    .insert("authorization", authorization);
            }
            let response = client.stream_config(request).await?;
            Ok::<_, SyncError>(response.into_inner())
        };
        let mut inbound = match tokio::time::timeout(open_timeout, open).await {
            Ok(Ok(inbound)) => inbound,
            Ok(Err(error)) => return SessionEnd::before_open(error),
            Err(_) => return SessionEnd::before_open(SyncError::Timeout(open_timeout)),
        };
        self.status.connected.store(true, Ordering::SeqCst);
        tracing::info!(control_plane = %self.config.control_plane, node_id = %self.config.node_id,
            version = known_version, "config stream open");

        let mut got_response = false;
        let mut rotation = tokio::time::interval(tuning.credentials_poll);
        rotation.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        rotation.reset();
        let error = loop {
            tokio::select! {
                _ = rotation.tick() => {
                    if files.changed() {
                        break SyncError::CredentialsChanged;
                    }
                }
                message = inbound.message() => match message {
                    Ok(Some(response)) => {
                        got_response = true;
                        let Some(reply) = self.handle(response).await else {
                            continue;
                        };
                        if outbound.send(reply).await.is_err() {
                            // The request stream was dropped: the call is over.
                            break SyncError::Closed;
                        }
                    }
                    Ok(None) => break SyncError::Closed,
                    Err(status) => break SyncError::from(status),
                },
                report = recv_report(&mut self.reports) => match report {
                    Some(report) => {
                        if outbound.send(report).await.is_err() {
                            break SyncError::Closed;
                        }
                    }
                    None => self.reports = None,
                },
            }
        };
        SessionEnd {
            error,
            opened: true,
            got_response,
        }
    }

    /// The hello for a new stream: this node, the version in force, and the epoch that came
    /// with it.
    fn hello(&self) -> pb::DiscoveryRequest {
        let known_version = self.status.version.load(Ordering::SeqCst);
        // The epoch travels with the config it came with; a config this process did not
        // receive itself (the cache, after a restart) has none, and gets a snapshot first.
        let known_epoch = self
            .held
            .as_ref()
            .filter(|h| h.version == known_version)
            .map_or(0, |h| h.epoch);
        request(pb::discovery_request::Kind::Hello(pb::NodeHello {
            node_id: self.config.node_id.clone(),
            known_version,
            listen_address: self.config.listen_address.clone(),
            admin_address: self.config.admin_address.clone(),
            build_version: env!("CARGO_PKG_VERSION").to_owned(),
            capabilities: vec![DELTA_CAPABILITY.to_owned(), FLEET_CAPABILITY.to_owned()],
            known_epoch,
        }))
    }

    /// Applies one response and returns the ACK or NACK to send (`None`: no answer, for a
    /// fleet update).
    async fn handle(&mut self, response: pb::DiscoveryResponse) -> Option<pb::DiscoveryRequest> {
        use pb::discovery_response::Kind;
        let version = response.version;
        match response.kind {
            Some(Kind::Fleet(pb::FleetUpdate { live_data_planes })) => {
                tracing::debug!(live_data_planes, "fleet update");
                self.sink.fleet(live_data_planes);
                None
            }
            // An unknown oneof field decodes as `None`: a kind this build was not told about.
            None => {
                tracing::warn!(
                    version,
                    "control plane sent a response kind this node does not support"
                );
                Some(nack(version, UNSUPPORTED_KIND.to_owned()))
            }
            Some(kind) => Some(self.apply(version, response.epoch, kind).await),
        }
    }

    /// Applies a snapshot or delta and returns the ACK or NACK to send.
    async fn apply(
        &mut self,
        version: u64,
        epoch: u64,
        kind: pb::discovery_response::Kind,
    ) -> pb::DiscoveryRequest {
        use pb::discovery_response::Kind;
        let in_force = self.status.version.load(Ordering::SeqCst);
        if version == in_force {
            // Already serving it: re-applying would churn state (and the cache) for nothing.
            // A snapshot of it is still worth keeping if none is held, for the next delta.
            if let Kind::Snapshot(snapshot) = kind
                && self.held.as_ref().is_none_or(|h| h.version != version)
            {
                self.held = Some(Held {
                    version,
                    epoch,
                    snapshot: Arc::new(snapshot),
                });
            }
            tracing::debug!(version, "config version already in force; ACK only");
            return ack(version);
        }
        let update = match kind {
            Kind::Snapshot(snapshot) => {
                if version < in_force {
                    // The control plane only sends an older version when that is what it now
                    // holds (its database was restored or replaced). It is the source of
                    // truth, so follow it rather than ACK a version this node does not serve.
                    tracing::warn!(
                        version,
                        in_force,
                        "control plane sent an older version than the one in force; applying it"
                    );
                }
                Update::Snapshot(snapshot)
            }
            Kind::Delta(delta) => match self.delta_base(version, &delta, in_force) {
                Ok(base) => Update::Delta(base, delta),
                Err(reason) => {
                    tracing::warn!(version, %reason, "delta NACKed; expecting a full snapshot next");
                    return nack(version, reason);
                }
            },
            // Answered by `handle`, never applied.
            Kind::Fleet(_) => return ack(version),
        };
        let sink = self.sink.clone();
        let status = self.status.clone();
        let cache_file = self.config.cache_file.clone();
        // Merging copies the whole config, the sink compiles it and the cache write fsyncs:
        // all of it blocks, so it runs on the blocking pool rather than stall this runtime's
        // worker.
        let outcome = tokio::task::spawn_blocking(move || {
            let snapshot = match update {
                Update::Snapshot(snapshot) => snapshot,
                Update::Delta(base, delta) => delta::merge(&base, delta)?,
            };
            install(&*sink, &status, cache_file.as_deref(), version, &snapshot)?;
            Ok::<_, String>(snapshot)
        })
        .await;
        match outcome {
            Ok(Ok(snapshot)) => {
                self.held = Some(Held {
                    version,
                    epoch,
                    snapshot: Arc::new(snapshot),
                });
                ack(version)
            }
            Ok(Err(reason)) => {
                tracing::warn!(version, %reason, "config rejected (NACK); the previous one stays in force");
                nack(version, reason)
            }
            Err(join_error) => {
                tracing::error!(version, error = %join_error, "applying the config panicked");
                nack(version, "applying the config failed internally".to_owned())
            }
        }
    }

    /// The snapshot `delta` (to `version`) is to be merged into, or the NACK reason if this
    /// node does not hold exactly its base version or the delta does not move forward.
    fn delta_base(
        &self,
        version: u64,
        delta: &pb::ConfigDelta,
        in_force: u64,
    ) -> Result<Arc<pb::ConfigSnapshot>, String> {
        let base = delta.base_version;
        if version <= base {
            return Err(format!(
                "delta from version {base} to version {version} does not move forward"
            ));
        }
        if base != in_force {
            return Err(format!(
                "delta from version {base} does not apply: this node holds version {in_force}"
            ));
        }
        match &self.held {
            Some(held) if held.version == in_force => Ok(held.snapshot.clone()),
            _ => Err(format!(
                "delta from version {base} does not apply: this node serves version {in_force} \
                 but holds no copy of it to merge into"
            )),
        }
    }
}

/// What a response asks to install, moved to the blocking pool.
enum Update {
    /// A whole config.
    Snapshot(pb::ConfigSnapshot),
    /// Changes to merge into the held config of their base version.
    Delta(Arc<pb::ConfigSnapshot>, pb::ConfigDelta),
}

impl SessionEnd {
    fn before_open(error: SyncError) -> Self {
        SessionEnd {
            error,
            opened: false,
            got_response: false,
        }
    }
}

/// Applies `snapshot` through the sink and, if it took it, records the version and writes the
/// cache. A cache failure only costs a slower cold start later, so it is logged and the
/// version is still ACKed.
fn install(
    sink: &dyn ConfigSink,
    status: &SyncStatus,
    cache_file: Option<&std::path::Path>,
    version: u64,
    snapshot: &pb::ConfigSnapshot,
) -> Result<(), String> {
    sink.apply(version, snapshot)?;
    status.version.store(version, Ordering::SeqCst);
    if let Some(path) = cache_file {
        match cache::store(path, version, snapshot) {
            Ok(()) => tracing::debug!(version, path = %path.display(), "config cache written"),
            Err(e) => tracing::warn!(version, error = %e, "could not write the config cache"),
        }
    }
    Ok(())
}

/// The next report, or `None` once the reporters are gone; pends forever when there are none,
/// so the `select!` arm simply never fires.
async fn recv_report(
    reports: &mut Option<mpsc::Receiver<pb::DiscoveryRequest>>,
) -> Option<pb::DiscoveryRequest> {
    match reports {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Builds the endpoint for `url` with the timeouts and keep-alives above.
fn endpoint(url: &str, tuning: &Tuning) -> Result<Endpoint, SyncError> {
    let invalid = |reason: String| SyncError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| invalid(error_chain(&e)))?;
    match endpoint.uri().scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(invalid(format!(
                "scheme {other:?} is not supported; use https://host:port or http://host:port"
            )));
        }
        None => {
            return Err(invalid(
                "missing scheme; use https://host:port or http://host:port".to_owned(),
            ));
        }
    }
    if endpoint.uri().host().is_none_or(str::is_empty) {
        return Err(invalid("missing host; use https://host:port".to_owned()));
    }
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(tuning.keepalive_interval)
        .keep_alive_timeout(tuning.keepalive_timeout)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true))
}

/// `e` and its sources on one line; tonic's transport error alone says only "transport error".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn request(kind: pb::discovery_request::Kind) -> pb::DiscoveryRequest {
    pb::DiscoveryRequest { kind: Some(kind) }
}

fn ack(version: u64) -> pb::DiscoveryRequest {
    request(pb::discovery_request::Kind::Ack(pb::ConfigAck { version }))
}

fn nack(version: u64, error: String) -> pb::DiscoveryRequest {
    request(pb::discovery_request::Kind::Nack(pb::ConfigNack {
        version,
        error,
    }))
}

#[cfg(test)]
mod tests;
