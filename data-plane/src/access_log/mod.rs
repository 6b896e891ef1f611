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
pub mod queue;
pub mod record;
pub mod writer;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

pub use format::Format;
pub use queue::{AccessLog, Counters};
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
    Ok((AccessLog::new(tx, counters), Some(writer)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

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
    fn off_makes_nothing() {
        let (log, writer) = start(&Settings::default()).unwrap();
        assert!(!log.enabled() && writer.is_none());
        log.log(Record::default());
        assert_eq!(log.counters().dropped.load(Ordering::Relaxed), 0);
    }

    fn record(status: u16) -> Record {
        Record {
            status,
            ..Record::default()
        }
    }

    fn statuses(path: &Path) -> Vec<u64> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["status"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }

    #[tokio::test]
    async fn writes_a_file_created_0640_and_reopens_it_after_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let (log, writer) = start(&Settings {
            target: Target::File(path.clone()),
            ..Settings::default()
        })
        .unwrap();
        let writer = writer.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o640, 0, "mode {mode:o}");

        log.log(record(200));
        let rotated = dir.path().join("access.log.1");
        // Everything queued before the reopen lands in the old file, renamed or not.
        writer.reopener().reopen().await;
        std::fs::rename(&path, &rotated).unwrap();
        log.log(record(201));
        writer.reopener().reopen().await;
        log.log(record(202));
        drop(log);
        writer.finish(Duration::from_secs(30)).await;
        assert_eq!(statuses(&rotated), [200, 201]);
        assert_eq!(statuses(&path), [202]);
    }

    #[test]
    fn a_path_that_cannot_be_opened_is_named() {
        let err = start(&Settings {
            target: Target::File("/nonexistent-dir/access.log".into()),
            ..Settings::default()
        })
        .unwrap_err();
        assert!(err.contains("/nonexistent-dir/access.log"), "{err}");
    }
}
