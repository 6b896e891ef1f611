//! Process logs: every gw program logs through `tracing` to **stderr** (stdout stays free for
//! output that scripts read, and supervisors collect stderr), filtered by `RUST_LOG`, in one of
//! two formats chosen with `--log-format` / `GW_LOG_FORMAT`:
//!
//! - `text` (the default): one human-readable line per event, coloured only when stderr is a
//!   terminal and `NO_COLOR` is unset, so redirected files never hold ANSI escape codes;
//! - `json`: one JSON object per line (tracing-subscriber's JSON layer, event fields flattened
//!   to the top level beside `timestamp`, `level`, `target`), for log shippers.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The format of process logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Whether log lines on stderr get ANSI colours: only on a terminal, and never with `NO_COLOR`
/// set (<https://no-color.org>) or `TERM=dumb`.
pub fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

/// Installs the process-wide subscriber: stderr, `format`, `RUST_LOG` or else
/// `default_filter`. A second call (tests running several servers in one process) keeps the
/// first subscriber.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(colour_on_stderr()).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
