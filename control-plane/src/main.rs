//! `gw-control-plane`: parses flags, binds the listener and runs [`gw_control_plane::serve`]
//! until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use gw_ops::logging::{self, LogFormat};

/// Loopback by default: nothing is exposed to the network by accident; operators opt in.
const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// A file in the working directory, so a first run just works and the config persists.
const DEFAULT_DATABASE: &str = "sqlite://gateway.db";
/// Log level when RUST_LOG is unset: connections, changes and errors, no per-message noise.
const DEFAULT_LOG: &str = "info";

/// The gw control plane: stores services and rate-limit policies and streams them to data planes.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to serve gRPC on (admin API, config stream, health, reflection).
    #[arg(long, env = "GW_CP_LISTEN", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// SQLite database: `sqlite://path` or a path. Created if missing.
    #[arg(long, env = "GW_DATABASE_URL", default_value = DEFAULT_DATABASE)]
    database: String,
    /// Require `authorization: Bearer <token>` on every admin call.
    #[arg(long, env = "GW_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<gw_control_plane::Secret>,
    /// Process log format on stderr: `text` (coloured only on a terminal) or `json`.
    #[arg(long, env = "GW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Serve gRPC over TLS with this certificate chain (PEM, leaf first). Re-read on SIGHUP
    /// and when it changes.
    #[arg(long, env = "GW_CP_TLS_CERT", value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "GW_CP_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA certificates (PEM bundle; repeat or comma-separate for several) whose client
    /// certificates identify data planes: a node may use the DNS names of its certificate as
    /// node id. Needs --tls-cert. Re-read like it, so a new CA can be added beside the old one.
    #[arg(
        long,
        env = "GW_CP_CLIENT_CA",
        value_name = "PEM",
        value_delimiter = ',',
        requires = "tls_cert"
    )]
    client_ca: Vec<PathBuf>,
    /// A shared token data planes may send instead of a client certificate (only over TLS;
    /// it lets a node use any node id). Must differ from --admin-token.
    #[arg(long, env = "GW_NODE_TOKEN", hide_env_values = true)]
    node_token: Option<gw_control_plane::Secret>,
    /// Serve on a non-loopback address without TLS or credentials. Anyone who can reach the
    /// port can then read and change the configuration; logged loudly at every start.
    #[arg(long, env = "GW_CP_INSECURE")]
    insecure: bool,
    /// A declarative configuration file (YAML or JSON, the format of `gwctl apply -f`)
    /// applied at start, before serving: what it says wins over the database, one log line
    /// per change. An invalid file stops the start, naming its line and field.
    #[arg(long, env = "GW_CONFIG_FILE", value_name = "PATH")]
    config_file: Option<PathBuf>,
    /// With --config-file: also remove the services and policies it does not name, so the
    /// file is the whole configuration.
    #[arg(long, env = "GW_CONFIG_FILE_PRUNE", requires = "config_file")]
    config_file_prune: bool,
    /// Serve Prometheus metrics (`GET /metrics`, no authentication) on this address. Default:
    /// none. Off loopback it needs --insecure, like the gRPC listener without credentials.
    #[arg(long, env = "GW_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> ExitCode {
    // The workspace's one rustls crypto provider; why ring, see gw_tls::install_provider.
    gw_tls::install_provider();
    let args = Args::parse();
    // To stderr, like every gw program: stdout stays free and supervisors collect stderr.
    logging::init(args.log_format, DEFAULT_LOG);

    let shutdown = match shutdown_signal() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gw-control-plane: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = gw_control_plane::Config {
        database_url: args.database,
        admin_token: args.admin_token.filter(|t| !t.is_empty()),
        node_token: args.node_token.filter(|t| !t.is_empty()),
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(gw_control_plane::tls::TlsFiles {
                cert,
                key,
                client_ca: args.client_ca,
            }),
            _ => None,
        },
        tls_reload_interval: gw_control_plane::tls::RELOAD_POLL,
        config_file: args
            .config_file
            .map(|path| gw_control_plane::config_file::ConfigFile {
                path,
                prune: args.config_file_prune,
            }),
    };
    if let Some(problem) = config.exposure(args.listen) {
        if !args.insecure {
            eprintln!("gw-control-plane: {problem}");
            return ExitCode::FAILURE;
        }
        tracing::error!(
            listen = %args.listen,
            "INSECURE (--insecure): {problem}; serving anyway. Anyone who can reach this \
             address can read the configuration, change it and pose as a data plane"
        );
    }
    let metrics = match args.metrics_listen {
        None => None,
        Some(addr) => {
            if !addr.ip().is_loopback() && !args.insecure {
                eprintln!(
                    "gw-control-plane: refusing to serve metrics on {addr} without \
                     authentication: use a loopback address (e.g. 127.0.0.1:9902), or add \
                     --insecure to expose them"
                );
                return ExitCode::FAILURE;
            }
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => Some(l),
                Err(e) => {
                    eprintln!("gw-control-plane: --metrics-listen {addr}: cannot listen: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("gw-control-plane: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    match gw_control_plane::serve_with_metrics(config, listener, metrics, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gw-control-plane: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Installs the SIGINT and SIGTERM handlers now (so a signal that arrives during start-up is
/// not fatal) and returns a future that resolves when either arrives.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        }
    })
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("Ctrl-C received, shutting down");
        } else {
            std::future::pending::<()>().await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_tokens() {
        let args = Args::try_parse_from([
            "gw-control-plane",
            "--admin-token",
            "admin-s3cret",
            "--node-token",
            "node-s3cret",
        ])
        .unwrap();
        let shown = format!("{args:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(
            args.admin_token.as_ref().map(|t| t.expose()),
            Some("admin-s3cret")
        );
    }
}
