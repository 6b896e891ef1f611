//! The data plane's side of the `StreamConfig` protocol (see proto/gateway/v1/gateway.proto).
//!
//! SEAM (agreed interface, do not change without telling the lead): `ConfigSink`, `SyncConfig`,
//! `SyncStatus`, `run`.

use std::path::PathBuf;
use std::sync::Arc;

use gw_proto::v1 as pb;

/// Implemented by the proxy: validates and installs one config version.
///
/// Called off the request path, from the sync task (and once at start-up with the cached
/// config). Must be atomic: on `Err` the previous config stays in force.
pub trait ConfigSink: Send + Sync + 'static {
    /// Compiles and swaps in `snapshot` as `version`. `Err` carries the NACK reason, in words
    /// for operators (e.g. "service 'a': endpoints[0]: 'x' is not an http:// URL").
    fn apply(&self, version: u64, snapshot: &pb::ConfigSnapshot) -> Result<(), String>;
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
}

/// Connection state shared with the admin listener and metrics.
#[derive(Debug, Default)]
pub struct SyncStatus {
    /// True while a stream to the control plane is open.
    pub connected: std::sync::atomic::AtomicBool,
    /// The config version in force (0: none).
    pub version: std::sync::atomic::AtomicU64,
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
    let _ = (config, sink, status, shutdown);
    todo!("config_sync::run: being written")
}
