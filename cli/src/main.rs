//! gwctl's entry point: parse flags, run one command, turn any failure into one stderr line.

use std::process::ExitCode;

use clap::Parser;
use gwctl::args::Cli;

fn main() -> ExitCode {
    // Usage errors print clap's message and exit 2 from here.
    let cli = Cli::parse();
    // One command, one connection: a single-threaded runtime is all it needs.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    match runtime.block_on(gwctl::run(cli, &mut stdout)) {
        Ok(()) => ExitCode::SUCCESS,
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
