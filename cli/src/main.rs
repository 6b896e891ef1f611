//! gwctl's entry point: parse flags, run one command, turn any failure into one stderr line.

use std::process::ExitCode;

use clap::Parser;
use gwctl::args::{Cli, Command};

/// `gwctl dev`'s log filter when RUST_LOG is unset: problems only, so the printed addresses and
/// commands stay readable. Two start-up warnings are expected in dev and quieted: the data
/// plane's "no config yet" (it starts with an empty cache a moment before the demo config
/// arrives; only its crate-root target is quieted, its modules still warn), and the control
/// plane's "no admin token" (dev runs without one on purpose; the banner says so when an
/// address is not loopback).
const DEV_LOG: &str =
    "warn,gw_data_plane=error,gw_data_plane::=warn,gw_control_plane::api::auth=error";

/// Exit status of `apply --dry-run` when something would change (terraform's
/// `-detailed-exitcode`); nothing to change is 0, an error 1.
const CHANGES: u8 = 2;

fn main() -> ExitCode {
    // The workspace's one rustls crypto provider; why ring, see gw_tls::install_provider.
    gw_tls::install_provider();
    // Usage errors print clap's message and exit 2 from here.
    let cli = Cli::parse();
    let dev = matches!(cli.command, Command::Dev(_));
    let runtime = if dev {
        // Servers log through tracing; to stderr, so stdout carries only the banner.
        gw_ops::logging::init(cli.log_format, DEV_LOG);
        // A whole gateway: proxy, control plane and backends share the cores.
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        // One command, one connection: a single-threaded runtime is all it needs.
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    match runtime.block_on(gwctl::run(cli, &mut stdout)) {
        Ok(gwctl::Outcome::Done) => ExitCode::SUCCESS,
        Ok(gwctl::Outcome::Changes) => ExitCode::from(CHANGES),
        // A closed pipe (`gwctl service list | head -1`) is the reader's choice, not a failure
        // worth a message.
        Err(gwctl::Error::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
