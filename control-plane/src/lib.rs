//! The gateway's control plane: owns services and rate-limit policies in SQLite, serves the
//! `gateway.v1` admin API, and streams every committed config version to the data planes.
//!
//! Code map: [`domain`] (plain types, validation at the gRPC boundary), [`store`] (SQLite and
//! the config version), [`state`] (the immutable snapshot per version), [`fleet`] (the data
//! plane registry, node reports and the health/stats views), [`api`] (the gRPC services and
//! who may call them), [`tls`] (the listener's TLS, its rotation and handshakes), [`apply`]
//! (a whole declarative document: validated, compared, planned as one write), [`config_file`]
//! (`--config-file`: such a document read from a file and applied at start), [`telemetry`]
//! (Prometheus metrics on `--metrics-listen`).
//! [`serve`] wires them onto one port. Imports flow one way: `api` → `fleet`, `config_file` → `store` →
//! `apply` → `state` → `domain`; `tls` stands alone; `telemetry` reads `store` and `fleet`.

#![warn(missing_docs)]

pub mod api;
pub mod apply;
pub mod config_file;
pub mod domain;
pub mod fleet;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use gw_tls::Secret;

use gw_proto::v1 as pb;
use gw_proto::v1::admin_service_server::AdminServiceServer;
use gw_proto::v1::config_discovery_service_server::ConfigDiscoveryServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::api::admin::AdminApi;
use crate::api::auth::{AdminAuth, NodeAuth};
use crate::api::decode::DecodeErrorsLayer;
use crate::api::discovery::DiscoveryApi;
use crate::fleet::nodes::NodeRegistry;
use crate::store::{Store, StoreError};
use crate::tls::{ServerTls, TlsError, TlsFiles};

/// How often an idle HTTP/2 connection is pinged, so a data plane that vanished without a
/// FIN (host crash, network partition) is seen as disconnected within about a minute.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a keepalive ping may go unanswered before the connection is closed.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest message a data plane may send on its config stream (health and stats reports,
/// ACKs). Set deliberately rather than left to tonic's default (the same 4 MiB): data planes
/// split and summarise their reports to stay at half of it, so a message above it is a bug or
/// an attack, and is logged naming the node before the stream is dropped.
pub const MAX_INBOUND_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Everything grpc.health reports on: the server as a whole ("") and each service.
const HEALTH_NAMES: [&str; 3] = [
    "",
    <AdminServiceServer<AdminApi> as NamedService>::NAME,
    <ConfigDiscoveryServiceServer<DiscoveryApi> as NamedService>::NAME,
];
/// How long shutdown waits for connections to finish once every config stream and health
/// watch has ended. Only a call stuck elsewhere can use it up; then the server stops without
/// it rather than hang.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the control plane needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// `sqlite://path/to/gw.db` or a bare path; the file is created if missing.
    pub database_url: String,
    /// When set (and not empty), AdminService calls must carry `authorization: Bearer <token>`.
    pub admin_token: Option<Secret>,
    /// When set, a data plane may open `StreamConfig` with `authorization: Bearer <token>`
    /// (over TLS only) instead of a client certificate.
    pub node_token: Option<Secret>,
    /// TLS on the listener, and the client CAs of data planes' certificates.
    pub tls: Option<TlsFiles>,
    /// How often the TLS files are checked for changes (SIGHUP reloads at once too).
    pub tls_reload_interval: Duration,
    /// A declarative configuration file applied at start, before anything is served: what
    /// it says wins over the database (see [`config_file`]).
    pub config_file: Option<config_file::ConfigFile>,
}

impl Config {
    /// A plaintext control plane on `database_url` with no credentials (loopback use).
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            admin_token: None,
            node_token: None,
            tls: None,
            tls_reload_interval: tls::RELOAD_POLL,
            config_file: None,
        }
    }

    /// Why serving on `listen` with this config would expose the control plane, if it would:
    /// an address other than loopback needs TLS, the admin token and a node credential (a
    /// client CA or the node token). One line naming the flags to add.
    pub fn exposure(&self, listen: SocketAddr) -> Option<String> {
        if listen.ip().is_loopback() {
            return None;
        }
        let mut missing = Vec::new();
        if self.tls.is_none() {
            missing.push("--tls-cert and --tls-key");
        }
        if self.admin_token.as_ref().is_none_or(Secret::is_empty) {
            missing.push("--admin-token");
        }
        let certificates = self.tls.as_ref().is_some_and(|t| !t.client_ca.is_empty());
        if !certificates && self.node_token.as_ref().is_none_or(Secret::is_empty) {
            missing.push("--client-ca or --node-token");
        }
        if missing.is_empty() {
            return None;
        }
        Some(format!(
            "refusing to serve on {listen} without TLS and credentials: add {}; or --insecure to run open",
            missing.join("; ")
        ))
    }
}

/// Why [`serve`] could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The database could not be opened, migrated or loaded.
    #[error("cannot open database '{url}': {source}")]
    Database {
        /// The configured database URL.
        url: String,
        /// What went wrong.
        source: StoreError,
    },
    /// The TLS credentials could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A setting is unusable.
    #[error("{0}")]
    InvalidConfig(String),
    /// The configuration file (`--config-file`) is unreadable or invalid, or could not be
    /// written: each problem with its file, line and field.
    #[error("--config-file: {0}")]
    ConfigFile(String),
    /// The reflection service could not be built from the descriptors.
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Runs the gRPC server on an already-bound listener until `shutdown` resolves.
///
/// On shutdown the listener is closed at once, every config stream is ended, in-flight calls
/// finish, and the database is closed before this returns.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_with_metrics(config, listener, None, shutdown).await
}

/// [`serve`], with Prometheus metrics (`GET /metrics`) on `metrics` when given.
pub async fn serve_with_metrics(
    config: Config,
    listener: TcpListener,
    metrics: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    gw_tls::install_provider();
    if let (Some(admin), Some(node)) = (&config.admin_token, &config.node_token)
        && !admin.is_empty()
        && admin == node
    {
        return Err(ServeError::InvalidConfig(
            "--node-token must differ from --admin-token: a node would otherwise hold the admin credential"
                .to_owned(),
        ));
    }
    let tls = match config.tls.clone() {
        Some(files) => Some(Arc::new(ServerTls::load(files)?)),
        None => None,
    };
    let node_auth = NodeAuth::new(
        config.node_token.as_ref(),
        tls.as_ref().is_some_and(|t| t.verifies_clients()),
        tls.is_some(),
    );
    let store = Store::open(&config.database_url)
        .await
        .map_err(|source| ServeError::Database {
            url: config.database_url.clone(),
            source,
        })?;
    if let Some(file) = &config.config_file {
        file.apply(&store)
            .await
            .map_err(|e| ServeError::ConfigFile(e.to_string()))?;
    }
    let store = Arc::new(store);
    let nodes = Arc::new(NodeRegistry::default());
    let (stop_tx, stop_rx) = watch::channel(false);

    let admin = AdminApi::new(store.clone(), nodes.clone());
    let discovery = DiscoveryApi::new(store.clone(), nodes.clone(), stop_rx.clone(), node_auth);
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in HEALTH_NAMES {
        health
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    let reflection_v1 = reflection().build_v1()?;
    // v1alpha too: grpcurl before 1.9 and many other tools only speak the older protocol.
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let signal = {
        let stop_tx = stop_tx.clone();
        let mut health = health.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: closing the listener and every config stream");
            // Health watchers see NOT_SERVING, then their streams end (clearing a status drops
            // its sender), so they do not hold up the graceful shutdown either.
            for name in HEALTH_NAMES {
                health
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
            for name in HEALTH_NAMES {
                health.clear_service_status(name).await;
            }
            stop_tx.send_replace(true);
        }
    };
    if let Some(tls) = &tls {
        // Before the start-up line: from then on a SIGHUP reloads rather than ends the process.
        tokio::spawn(
            tls.clone()
                .watch(config.tls_reload_interval, stop_rx.clone()),
        );
    }
    tracing::info!(
        listen = %addr,
        database = %config.database_url,
        version = store.current().version,
        tls = tls.is_some(),
        client_certificates = tls.as_ref().is_some_and(|t| t.verifies_clients()),
        node_token = config.node_token.as_ref().is_some_and(|t| !t.is_empty()),
        "control plane listening"
    );

    let rpcs = Arc::new(telemetry::RpcMetrics::default());
    if let Some(metrics) = metrics {
        let metrics_addr = metrics
            .local_addr()
            .map_err(|e| ServeError::InvalidConfig(format!("metrics listener: {e}")))?;
        tracing::info!(%metrics_addr, "metrics listening");
        tokio::spawn(telemetry::serve(
            metrics,
            telemetry::Sources {
                rpcs: rpcs.clone(),
                store: store.clone(),
                nodes: nodes.clone(),
            },
            stop_rx.clone(),
        ));
    }
    let router = Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        // Outside the decode layer, so calls are counted with the status clients see.
        .layer(telemetry::RpcMetricsLayer(rpcs))
        .layer(DecodeErrorsLayer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(AdminServiceServer::with_interceptor(
            admin,
            AdminAuth::new(config.admin_token.as_ref()),
        ))
        .add_service(
            ConfigDiscoveryServiceServer::new(discovery)
                .max_decoding_message_size(MAX_INBOUND_MESSAGE_BYTES),
        );
    let server = async {
        match &tls {
            Some(tls) => {
                let incoming = tls.incoming(listener, stop_rx.clone());
                router.serve_with_incoming_shutdown(incoming, signal).await
            }
            None => {
                // No Nagle delay: config pushes are small and must reach data planes promptly.
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                router.serve_with_incoming_shutdown(incoming, signal).await
            }
        }
    };
    let mut stopping = stop_rx.clone();
    let result = tokio::select! {
        result = server => result,
        () = async {
            // Only reached if the server is still draining SHUTDOWN_GRACE after the signal.
            let _ = stopping.wait_for(|stop| *stop).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("calls still open {SHUTDOWN_GRACE:?} after shutdown; stopping without them");
            Ok(())
        }
    };
    drop(stop_tx);
    store.close().await;
    tracing::info!("control plane stopped");
    Ok(result?)
}

/// Reflection over everything served: gateway.v1 (with its imports) and grpc.health.v1, so
/// grpcurl can list and describe without any .proto file.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_loopback_every_missing_credential_is_named_in_one_line() {
        let tls = |client_ca: bool| TlsFiles {
            cert: "cp.pem".into(),
            key: "cp-key.pem".into(),
            client_ca: if client_ca {
                vec!["ca.pem".into()]
            } else {
                vec![]
            },
        };
        let secret = |s: &str| Some(Secret::new(s));
        // TLS (with a client CA?), admin token, node token, what must be named (none: allowed).
        type Case = (
            Option<bool>,
            Option<Secret>,
            Option<Secret>,
            &'static [&'static str],
        );
        let cases: [Case; 7] = [
            (
                None,
                None,
                None,
                &[
                    "--tls-cert and --tls-key",
                    "--admin-token",
                    "--client-ca or --node-token",
                ],
            ),
            (Some(true), None, None, &["--admin-token"]),
            (
                Some(false),
                secret("a"),
                None,
                &["--client-ca or --node-token"],
            ),
            (
                Some(false),
                secret("a"),
                secret(""),
                &["--client-ca or --node-token"],
            ),
            (Some(true), secret(""), None, &["--admin-token"]),
            (Some(true), secret("a"), None, &[]),
            (Some(false), secret("a"), secret("n"), &[]),
        ];
        let listen: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        for (tls_files, admin, node, missing) in cases {
            let mut config = Config::new("gw.db");
            config.tls = tls_files.map(tls);
            config.admin_token = admin;
            config.node_token = node;
            let case = format!("{tls_files:?} {missing:?}");
            // Loopback is always allowed.
            assert_eq!(config.exposure("127.0.0.1:50051".parse().unwrap()), None);
            match config.exposure(listen) {
                None => assert!(missing.is_empty(), "{case}: allowed"),
                Some(line) => {
                    assert!(!missing.is_empty(), "{case}: refused: {line}");
                    assert!(!line.contains('\n'), "{line}");
                    assert!(line.contains("--insecure"), "{line}");
                    for flag in missing {
                        assert!(line.contains(flag), "{case}: {line}");
                    }
                    let named = ["--tls-cert", "--admin-token", "--client-ca"]
                        .iter()
                        .filter(|f| line.contains(*f))
                        .count();
                    assert_eq!(named, missing.len(), "{case}: only the missing: {line}");
                }
            }
        }
    }
}
