//! `gw-control-plane`: parses flags, binds the listener and runs [`gw_control_plane::serve`]
//! until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

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
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG)),
        )
        .init();

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
    match gw_control_plane::serve(config, listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gw-control-plane: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (what service managers and containers send).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = term => tracing::info!("SIGTERM received, shutting down"),
    }
}
