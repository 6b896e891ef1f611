//! The writer thread: formats records and writes them in batches, and reopens the file when
//! told (SIGHUP or SIGUSR1, for logrotate).
//!
//! A dedicated thread rather than a tokio task: writes to a file or a pipe block, and a
//! blocked write must stall only the log (whose queue then fills and drops lines), never a
//! runtime worker that serves requests.

use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::access_log::format::{self, Format};
use crate::access_log::queue::{Counters, Msg};

/// A batch is written once it reaches this size, or when the queue is empty.
const BATCH_BYTES: usize = 64 * 1024;
/// At most one warning about failed writes per this period (the rest are counted).
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Mode of a new log file: the owner writes, the group (say, `adm`, as for nginx's logs)
/// reads, others nothing: client addresses and paths are personal data.
const FILE_MODE: u32 = 0o640;

/// Where the writer writes.
#[derive(Debug)]
pub enum Sink {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// A file opened for appending.
    File {
        /// Its path, opened again on reopen.
        path: PathBuf,
        /// The open file.
        file: File,
    },
}

fn open_append(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)
}

impl Sink {
    /// Opens `path` for appending (created 0640 if missing).
    pub fn open(path: PathBuf) -> Result<Self, String> {
        let file = open_append(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self::File { path, file })
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(buf)?;
                out.flush()
            }
            Self::Stderr => std::io::stderr().lock().write_all(buf),
            Self::File { file, .. } => file.write_all(buf),
        }
    }

    /// Opens the file again by its path (after logrotate moved it away); on failure the old
    /// file stays in use, and the log says why.
    fn reopen(&mut self) {
        if let Self::File { path, file } = self {
            match open_append(path) {
                Ok(new) => {
                    *file = new;
                    tracing::info!(path = %path.display(), "access log reopened");
                }
                Err(e) => tracing::warn!(path = %path.display(), error = %e,
                    "cannot reopen the access log; still writing to the file open before"),
            }
        }
    }
}

/// The writer thread and a way to reach it.
#[derive(Debug)]
pub struct Writer {
    reopener: Reopener,
    thread: std::thread::JoinHandle<()>,
}

/// Asks the writer to reopen its file.
#[derive(Debug, Clone)]
pub struct Reopener {
    tx: mpsc::Sender<Msg>,
}

impl Reopener {
    /// Reopens the file once every line queued before has been written to the old one;
    /// returns when done (at once if the writer has stopped).
    pub async fn reopen(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Reopen(ack)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Reopens on every SIGHUP or SIGUSR1 until `stop` resolves. The handlers are installed
    /// before this returns (so a signal that comes before the future first runs cannot end
    /// the process); `None` if they cannot be, with a warning.
    pub fn on_signals(self, stop: impl Future<Output = ()>) -> Option<impl Future<Output = ()>> {
        use tokio::signal::unix::{SignalKind, signal};
        let (mut hup, mut usr1) = match (
            signal(SignalKind::hangup()),
            signal(SignalKind::user_defined1()),
        ) {
            (Ok(hup), Ok(usr1)) => (hup, usr1),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e,
                    "cannot listen for SIGHUP/SIGUSR1: the access log will not be reopened");
                return None;
            }
        };
        Some(async move {
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = hup.recv() => {}
                    _ = usr1.recv() => {}
                    () = &mut stop => return,
                }
                self.reopen().await;
            }
        })
    }
}

impl Writer {
    pub(super) fn spawn(
        sink: Sink,
        format: Format,
        rx: mpsc::Receiver<Msg>,
        tx: mpsc::Sender<Msg>,
        counters: Arc<Counters>,
    ) -> Result<Self, String> {
        let thread = std::thread::Builder::new()
            .name("gw-access-log".into())
            .spawn(move || run(sink, format, rx, &counters))
            .map_err(|e| format!("cannot start the access log's writer thread: {e}"))?;
        Ok(Self {
            reopener: Reopener { tx },
            thread,
        })
    }

    /// A handle that asks for reopening.
    pub fn reopener(&self) -> Reopener {
        self.reopener.clone()
    }

    /// Waits up to `within` for the thread to write what is queued and stop. It stops once
    /// every `AccessLog` handle is gone; a handle still held elsewhere
    /// (a connection that outlived the grace period) only costs the wait.
    pub async fn finish(self, within: Duration) {
        let Self { reopener, thread } = self;
        drop(reopener);
        let join = tokio::task::spawn_blocking(move || thread.join());
        if tokio::time::timeout(within, join).await.is_err() {
            tracing::warn!("the access log's writer did not finish in time; lines may be lost");
        }
    }
}

/// Warnings about failed writes, at most one per [`WARN_EVERY`].
struct Throttle {
    last: Option<Instant>,
    lost: u64,
}

fn run(mut sink: Sink, format: Format, mut rx: mpsc::Receiver<Msg>, counters: &Counters) {
    let mut buf = Vec::with_capacity(BATCH_BYTES + 4096);
    let mut lines = 0u64;
    let mut warn = Throttle {
        last: None,
        lost: 0,
    };
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Line(record) => {
                    format::write(format, &record, &mut buf);
                    lines += 1;
                    if buf.len() >= BATCH_BYTES {
                        flush(&mut sink, &mut buf, &mut lines, counters, &mut warn);
                    }
                }
                Msg::Reopen(ack) => {
                    flush(&mut sink, &mut buf, &mut lines, counters, &mut warn);
                    sink.reopen();
                    let _ = ack.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        flush(&mut sink, &mut buf, &mut lines, counters, &mut warn);
    }
}

fn flush(
    sink: &mut Sink,
    buf: &mut Vec<u8>,
    lines: &mut u64,
    counters: &Counters,
    warn: &mut Throttle,
) {
    if buf.is_empty() {
        return;
    }
    match sink.write_all(buf) {
        Ok(()) => {
            counters.written.fetch_add(*lines, Ordering::Relaxed);
        }
        Err(e) => {
            counters.write_errors.fetch_add(*lines, Ordering::Relaxed);
            warn.lost += *lines;
            let now = Instant::now();
            if warn
                .last
                .is_none_or(|t| now.duration_since(t) >= WARN_EVERY)
            {
                tracing::warn!(error = %e, lines_lost = warn.lost,
                    "cannot write the access log (counted in gw_access_log_write_errors_total)");
                warn.last = Some(now);
                warn.lost = 0;
            }
        }
    }
    buf.clear();
    *lines = 0;
}
