//! `gw-control-plane`: parses flags, binds the listener and runs [`gw_control_plane::serve`]
//! until SIGINT or SIGTERM.

use std::net::SocketAddr;
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
    admin_token: Option<String>,
    /// Process log format on stderr: `text` (coloured only on a terminal) or `json`.
    #[arg(long, env = "GW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> ExitCode {
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
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("gw-control-plane: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let config = gw_control_plane::Config {
        database_url: args.database,
        admin_token: args.admin_token.filter(|t| !t.is_empty()),
    };
    match gw_control_plane::serve(config, listener, shutdown).await {
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
