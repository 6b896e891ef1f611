//! The access log: one line per request, written off the request path.
//!
//! The request path fills a [`Record`] with raw values (no formatting) and hands it to
//! [`AccessLog::log`], which puts it on a bounded channel with `try_send`: when the channel
//! is full (the disk or the pipe behind stdout cannot keep up) the line is dropped and
//! counted in `gw_access_log_dropped_total`, so traffic never waits for the log. A writer
//! thread formats the records (`format`: JSON or combined) and writes them in batches
//! (`writer`); a file is reopened on SIGHUP or SIGUSR1 for logrotate.
//!
//! The record is finished when the response body ends (or the client goes away), so it can
//! carry the bytes sent and the full duration: [`body::Logged`] wraps the response body.
//!
//! Layering: at the bottom of the crate beside `stats`; it imports nothing else of the crate.
//! `proxy` fills records, `upstream` reports request-body bytes through [`body::BytesIn`],
//! `telemetry` renders the counters.

pub mod body;
pub mod format;
pub mod record;
pub mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

pub use format::Format;
pub use record::{RateLimit, Record};

/// Records waiting for the writer at most; beyond, lines are dropped and counted. At about
/// 300 bytes a record that is a few MB, and seconds of traffic at tens of thousands of
/// requests per second: enough to ride out a slow disk without holding much memory.
pub const DEFAULT_CAPACITY: usize = 8192;

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Nowhere: no records are made.
    Off,
    /// Standard output (the default: process logs are on stderr, so the two never mix, and
    /// a container runtime or systemd collects both).
    Stdout,
    /// Standard error, beside the process logs.
    Stderr,
    /// A file, appended to, created 0640, reopened on SIGHUP or SIGUSR1.
    File(PathBuf),
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "" => Err("give stdout, stderr, off or a file path".to_owned()),
            "off" => Ok(Self::Off),
            "stdout" => Ok(Self::Stdout),
            "stderr" => Ok(Self::Stderr),
            path => Ok(Self::File(PathBuf::from(path))),
        }
    }
}

/// What to log, where, and how much to buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where the lines go.
    pub target: Target,
    /// Line format.
    pub format: Format,
    /// Records waiting for the writer at most.
    pub capacity: usize,
}

impl Default for Settings {
    /// Off: the library's default, so embedding the data plane (tests, `gwctl dev`) prints
    /// nothing unasked. The binary's `--access-log` defaults to stdout.
    fn default() -> Self {
        Self {
            target: Target::Off,
            format: Format::Json,
            capacity: DEFAULT_CAPACITY,
        }
    }
}

/// The access log's counters, rendered in `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Lines written.
    pub written: AtomicU64,
    /// Lines dropped because the channel to the writer was full.
    pub dropped: AtomicU64,
    /// Lines lost because writing them failed (disk full, a closed pipe).
    pub write_errors: AtomicU64,
}

/// What the writer thread receives.
// Nearly every message is a line; boxing it would cost an allocation per request to save
// queue space on the rare reopen.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Msg {
    Line(Record),
    /// Reopen the file (logrotate moved it); the sender learns when it is done.
    Reopen(tokio::sync::oneshot::Sender<()>),
}

/// The request path's handle: where finished records go.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: Option<mpsc::Sender<Msg>>,
    counters: Arc<Counters>,
}

impl AccessLog {
    /// A log that records nothing.
    pub fn off() -> Self {
        Self {
            tx: None,
            counters: Arc::default(),
        }
    }

    /// Whether records are wanted (the request path skips filling them otherwise).
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues `record` for the writer, or drops and counts it if the queue is full. Never
    /// waits.
    pub fn log(&self, record: Record) {
        if let Some(tx) = &self.tx
            && tx.try_send(Msg::Line(record)).is_err()
        {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counters.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }
}

/// Opens the target (so a bad path fails at start, naming it) and starts the writer thread.
/// `Target::Off` starts nothing.
pub fn start(settings: &Settings) -> Result<(AccessLog, Option<writer::Writer>), String> {
    if settings.capacity == 0 {
        return Err("the access log's buffer must hold at least 1 line".to_owned());
    }
    let sink = match &settings.target {
        Target::Off => return Ok((AccessLog::off(), None)),
        Target::Stdout => writer::Sink::Stdout,
        Target::Stderr => writer::Sink::Stderr,
        Target::File(path) => writer::Sink::open(path.clone())?,
    };
    let (tx, rx) = mpsc::channel(settings.capacity);
    let counters = Arc::new(Counters::default());
    let writer = writer::Writer::spawn(sink, settings.format, rx, tx.clone(), counters.clone())?;
    Ok((
        AccessLog {
            tx: Some(tx),
            counters,
        },
        Some(writer),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        for (s, want) in [
            ("off", Target::Off),
            ("stdout", Target::Stdout),
            ("stderr", Target::Stderr),
            (
                "/var/log/gw/access.log",
                Target::File("/var/log/gw/access.log".into()),
            ),
            ("access.log", Target::File("access.log".into())),
        ] {
            assert_eq!(s.parse::<Target>().unwrap(), want, "{s}");
        }
        assert!("".parse::<Target>().is_err());
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        // No writer thread: nothing drains the queue of 2.
        let (tx, _rx) = mpsc::channel(2);
        let log = AccessLog {
            tx: Some(tx),
            counters: Arc::default(),
        };
        for _ in 0..5 {
            log.log(Record::default());
        }
        assert_eq!(log.counters().dropped.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn off_makes_nothing() {
        let (log, writer) = start(&Settings::default()).unwrap();
        assert!(!log.enabled() && writer.is_none());
        log.log(Record::default());
        assert_eq!(log.counters().dropped.load(Ordering::Relaxed), 0);
    }
}
