//! The request path's handle on the access log: a bounded queue to the writer thread, and
//! the counters of what happened to the lines.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::access_log::record::Record;

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
pub(in crate::access_log) enum Msg {
    Line(Record),
    /// Reopen the file (logrotate moved it); the sender learns when it is done.
    Reopen(tokio::sync::oneshot::Sender<()>),
}

/// The request path's handle: where finished records go.
#[derive(Debug, Clone)]
pub struct AccessLog {
    pub(in crate::access_log) tx: Option<mpsc::Sender<Msg>>,
    pub(in crate::access_log) counters: Arc<Counters>,
}

impl AccessLog {
    /// A log whose records go to `tx`.
    pub(in crate::access_log) fn new(tx: mpsc::Sender<Msg>, counters: Arc<Counters>) -> Self {
        Self {
            tx: Some(tx),
            counters,
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
