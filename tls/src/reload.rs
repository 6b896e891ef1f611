//! Credentials rotated without a restart, the same way for every listener that serves TLS from
//! files (the control plane's gRPC listener, the data plane's admin listener):
//!
//! - [`ServerCert`]: a certificate and key read from files, checked like `gwctl cert add`
//!   checks them, and swappable; it is also the rustls resolver, so a config built once with it
//!   hands every new handshake the certificate loaded last.
//! - [`Watcher`]: runs a reload on SIGHUP and whenever the files change (checked every
//!   [`RELOAD_POLL`]). A set that does not load (a certificate replaced before its key, say, or
//!   a file read while it was being written in place) is logged and the previous one stays,
//!   so a rotation in progress never takes a listener down; the rest of the rotation changes
//!   the files again, and that change is loaded.
//!
//! Connections already open keep the credentials they were made with.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

use crate::cert::{self, CertError};
use crate::files::FileSet;
use crate::pem::{self, PemError};

/// How often credential files are compared with what is loaded. Rotation is rare and a few
/// seconds' delay is harmless; reading a few small files costs nothing.
pub const RELOAD_POLL: Duration = Duration::from_secs(5);

/// A server certificate chain and its key, from two PEM files, re-readable.
#[derive(Debug)]
pub struct ServerCert {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
}

impl ServerCert {
    /// Reads and checks the files (refusing a certificate that is expired, not yet valid, or
    /// does not match its key).
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<Self, CertError> {
        let current = read(&cert, &key)?;
        Ok(Self {
            cert,
            key,
            current: ArcSwap::new(current),
        })
    }

    /// Reads the files again and swaps in the new certificate; on error nothing changes.
    pub fn reload(&self) -> Result<(), CertError> {
        self.current.store(read(&self.cert, &self.key)?);
        Ok(())
    }

    /// The certificate and key files.
    pub fn paths(&self) -> Vec<PathBuf> {
        vec![self.cert.clone(), self.key.clone()]
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn read(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, CertError> {
    let chain = std::fs::read(cert).map_err(|e| {
        CertError::Pem(PemError::Read {
            path: cert.display().to_string(),
            reason: e.to_string(),
        })
    })?;
    let key = pem::read_secret(key)?;
    Ok(cert::check(&cert.display().to_string(), &chain, &key, SystemTime::now())?.key)
}

/// Runs a reload on SIGHUP and whenever a set of files changes.
#[derive(Debug)]
pub struct Watcher {
    what: &'static str,
    files: FileSet,
    poll: Duration,
    hangup: Option<Signal>,
}

impl Watcher {
    /// Watches `paths` (what they hold now is the baseline) for the credentials named `what`
    /// in log lines. Listens for SIGHUP from this call on, so a SIGHUP sent once a server
    /// says it is listening reloads rather than ending the process (the default action).
    /// Must be called inside a tokio runtime.
    pub fn new(what: &'static str, paths: Vec<PathBuf>, poll: Duration) -> Self {
        let hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(what, error = %e,
                    "cannot listen for SIGHUP; TLS files are still re-read when they change");
                None
            }
        };
        Self {
            what,
            files: FileSet::new(paths),
            poll,
            hangup,
        }
    }

    /// Calls `reload` on each SIGHUP and each change of the files, logging the outcome, until
    /// `stop` turns true.
    pub async fn run<E: Display>(
        mut self,
        mut reload: impl FnMut() -> Result<(), E>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(self.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let what = self.what;
        loop {
            let trigger = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tick.tick() => {
                    if !self.files.changed() {
                        continue;
                    }
                    "files changed"
                }
                () = hangup(&mut self.hangup) => {
                    // The new contents are the baseline: no second reload at the next tick.
                    self.files.changed();
                    "SIGHUP"
                }
            };
            match reload() {
                Ok(()) => tracing::info!(what, trigger, "TLS credentials reloaded"),
                Err(e) => tracing::warn!(what, trigger, error = %e,
                    "TLS credentials not reloaded; the previous ones stay in use"),
            }
        }
    }
}

async fn hangup(signal: &mut Option<Signal>) {
    if let Some(s) = signal
        && s.recv().await.is_some()
    {
        return;
    }
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(names: &[&str]) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    /// Replaces `path` with `contents` as a careful rotation does: written beside it, then
    /// renamed over it, so a reader sees the old file or the new one, never half of one.
    fn replace(path: &Path, contents: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, contents).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    /// The outcome of the next reload (with a generous deadline, so a bug fails rather than
    /// hangs).
    async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<bool>) -> Option<bool> {
        tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("no reload in time")
    }

    #[tokio::test]
    async fn a_change_is_loaded_and_a_broken_set_keeps_the_previous_one() {
        crate::install_provider();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let (c1, k1) = pair(&["one.test"]);
        std::fs::write(&cert, &c1).unwrap();
        std::fs::write(&key, &k1).unwrap();
        let loaded = Arc::new(ServerCert::load(cert.clone(), key.clone()).unwrap());
        let names = |c: &ServerCert| {
            cert::inspect("served", &c.current.load().cert[0])
                .unwrap()
                .dns_names
        };
        assert_eq!(names(&loaded), ["one.test"]);

        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let watcher = Watcher::new("test", loaded.paths(), Duration::from_millis(10));
        let target = loaded.clone();
        let task = tokio::spawn(watcher.run(
            move || {
                let r = target.reload();
                let _ = done_tx.send(r.is_ok());
                r
            },
            stop_rx,
        ));

        // A certificate without its key: refused, the old one stays.
        let (c2, k2) = pair(&["two.test"]);
        replace(&cert, &c2);
        assert_eq!(next(&mut done_rx).await, Some(false));
        assert_eq!(names(&loaded), ["one.test"]);
        // Then the key: the pair is loaded.
        replace(&key, &k2);
        assert_eq!(next(&mut done_rx).await, Some(true));
        assert_eq!(names(&loaded), ["two.test"]);

        // A rotation that writes in place can be read half-written: refused, the old pair
        // stays; the rest of the write is a change, so it is loaded then.
        let (c3, k3) = pair(&["three.test"]);
        replace(&key, &k3);
        assert_eq!(next(&mut done_rx).await, Some(false));
        replace(&cert, &c3[..c3.len() / 2]);
        assert_eq!(next(&mut done_rx).await, Some(false));
        assert_eq!(names(&loaded), ["two.test"]);
        replace(&cert, &c3);
        assert_eq!(next(&mut done_rx).await, Some(true));
        assert_eq!(names(&loaded), ["three.test"]);

        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }
}
