//! gwctl: the operator's command line for the gw API gateway.
//!
//! gwctl reaches the control plane only over gRPC (`gateway.v1.AdminService`). The binary's
//! `main` parses [`args::Cli`] and calls [`run`]; everything else lives in modules so it can
//! be tested without a process:
//!
//! - [`args`]: the clap definition and flag-value grammars; [`defaults`]: the default
//!   addresses and settings it shares with `client` and `dev`.
//! - [`client`]: connecting, the bearer-token interceptor, fast failure on a bad address.
//! - [`error`]: the operator-facing error, one line each, and the status-code mapping.
//! - [`output`]: aligned tables, JSON documents, and flagging problems (marker, colour).
//! - [`duration`]: `500ms`/`5s`/`1m`/`1h`, parsed and printed the same way.
//! - [`commands`]: one module per command group.
//! - [`dev`]: `gwctl dev`, a whole local gateway in one process (the one place gwctl links
//!   the servers' crates rather than speaking gRPC only).
//!
//! **Output contract:** each invocation writes one table (or one-line confirmation) or, with
//! `-o json`, one JSON document to stdout; the JSON shapes are documented on the command
//! modules and only gain fields. Failures write one `error: …` line to stderr and exit 1
//! (usage errors exit 2, from clap). `gwctl dev` is the exception: it runs until stopped and
//! prints the banner described in [`dev::banner`].

pub mod args;
pub mod client;
pub mod commands;
pub mod defaults;
pub mod dev;
pub mod duration;
pub mod error;
pub mod output;

use std::io::Write;

use args::{Cli, Command};
use client::AdminClient;
pub use error::Error;
pub use output::Outcome;

/// Runs one parsed gwctl invocation, writing its result to `out`.
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<Outcome, Error> {
    let Cli {
        control_plane,
        token,
        ca_cert,
        client_cert,
        client_key,
        timeout,
        output,
        log_format: _, // applied by `main` before the runtime starts
        command,
    } = cli;
    let tls = client::TlsFiles {
        ca_cert,
        client_cert,
        client_key,
    };
    // Flag combinations clap cannot express are refused before any network traffic.
    command.check()?;
    // Output goes to stdout (see `main`), so stdout decides whether flags are coloured.
    let highlight = output::Highlight::for_stdout();
    let connect = || {
        AdminClient::connect(
            &control_plane,
            token.as_ref().map(gw_tls::Secret::expose),
            timeout,
            &tls,
        )
    };
    match command {
        Command::Completions { shell } => commands::completions::run(shell, out)?,
        Command::Service(cmd) => {
            commands::service::run(cmd, &mut connect().await?, output, out).await?
        }
        Command::Policy(cmd) => {
            commands::policy::run(cmd, &mut connect().await?, output, out).await?
        }
        Command::Nodes => {
            commands::nodes::run(&mut connect().await?, output, highlight, out).await?
        }
        Command::Health { service } => {
            commands::health::run(service, &mut connect().await?, output, highlight, out).await?
        }
        Command::Cert(cmd) => {
            commands::cert::run(cmd, &mut connect().await?, output, highlight, out).await?
        }
        Command::Consumer(cmd) => {
            commands::consumer::run(cmd, &mut connect().await?, output, out).await?
        }
        Command::Key(cmd) => {
            commands::consumer::run_key(cmd, &mut connect().await?, output, out).await?
        }
        Command::Apply(args) => {
            return commands::apply::apply(args, &mut connect().await?, output, out).await;
        }
        Command::Export => commands::apply::export(&mut connect().await?, output, out).await?,
        Command::Stats(args) => {
            commands::stats::run(args, &mut connect().await?, output, highlight, out).await?
        }
        // Runs its own control plane; --control-plane and --token do not apply.
        Command::Dev(args) => dev::run(args, timeout, out).await?,
    }
    Ok(Outcome::Done)
}
