//! The gateway's control plane: owns services and rate-limit policies in SQLite, serves the
//! `gateway.v1` admin API, and streams every committed config version to the data planes.
//!
//! Code map: [`domain`] (plain types, validation at the gRPC boundary), [`store`] (SQLite and
//! the config version), [`state`] (the immutable snapshot per version), [`fleet`] (the data
//! plane registry, node reports and the health/stats views), [`api`] (the gRPC services).
//! [`serve`] wires them onto one port. Imports flow one way: `api` → `fleet`, `store` →
//! `state` → `domain`.

#![warn(missing_docs)]

pub mod api;
pub mod domain;
pub mod fleet;
pub mod state;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

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
use crate::api::auth::AdminAuth;
use crate::api::discovery::DiscoveryApi;
use crate::fleet::nodes::NodeRegistry;
use crate::store::{Store, StoreError};

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
    pub admin_token: Option<String>,
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
    let store = Store::open(&config.database_url)
        .await
        .map_err(|source| ServeError::Database {
            url: config.database_url.clone(),
            source,
        })?;
    let store = Arc::new(store);
    let nodes = Arc::new(NodeRegistry::default());
    let (stop_tx, stop_rx) = watch::channel(false);

    let admin = AdminApi::new(store.clone(), nodes.clone());
    let discovery = DiscoveryApi::new(store.clone(), nodes.clone(), stop_rx.clone());
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
    // No Nagle delay: config pushes are small and must reach data planes promptly.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
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
    tracing::info!(
        listen = %addr,
        database = %config.database_url,
        version = store.current().version,
        "control plane listening"
    );

    let server = Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(AdminServiceServer::with_interceptor(
            admin,
            AdminAuth::new(config.admin_token.as_deref()),
        ))
        .add_service(
            ConfigDiscoveryServiceServer::new(discovery)
                .max_decoding_message_size(MAX_INBOUND_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(incoming, signal);
    let mut stopping = stop_rx;
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
