//! Resolving endpoint host names: off the async workers, at most [`DNS_CONCURRENCY`] lookups
//! at once, each within [`DNS_TIMEOUT`].
//!
//! The system resolver (`getaddrinfo`) blocks, so lookups run on tokio's blocking pool. Left
//! unbounded (as tokio's and hyper's default resolvers are), thousands of endpoints with a slow
//! or dead DNS server filled the whole pool (515 threads), and config application, which also
//! runs there, waited minutes behind them. Here a lookup first takes one of a few permits and
//! keeps it until `getaddrinfo` really returns (a thread cannot be cancelled), so DNS never
//! holds more than [`DNS_CONCURRENCY`] blocking threads. IP literals skip all of it.
//!
//! [`Resolver`] is the one seam: the upstream connector and the health checks both resolve
//! through it, and tests give it a lookup function of their own (a DNS server that never
//! answers, without touching the machine's resolver).

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::connect::dns::Name;
use tokio::sync::Semaphore;

/// Lookups in flight at most: a handful of threads, since a healthy resolver answers in
/// milliseconds and a dead one should cost few threads.
pub const DNS_CONCURRENCY: usize = 8;
/// Longest a lookup (with its wait for a permit) may take; beyond it the connect fails as
/// the endpoint's (its name does not resolve in time).
pub const DNS_TIMEOUT: Duration = Duration::from_secs(2);

/// A blocking lookup of `host` (port 0 in the results).
pub type LookupFn = dyn Fn(&str) -> io::Result<Vec<SocketAddr>> + Send + Sync;

/// The system resolver.
fn system_lookup(host: &str) -> io::Result<Vec<SocketAddr>> {
    (host, 0u16).to_socket_addrs().map(Iterator::collect)
}

/// Resolves host names under a concurrency bound and a timeout. Cheap to clone.
#[derive(Clone)]
pub struct Resolver {
    lookup: Arc<LookupFn>,
    permits: Arc<Semaphore>,
    timeout: Duration,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field(
                "in_flight",
                &(DNS_CONCURRENCY - self.permits.available_permits()),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Default for Resolver {
    fn default() -> Self {
        Self::with_lookup(Arc::new(system_lookup))
    }
}

impl Resolver {
    /// A resolver that looks names up with `lookup` (run on the blocking pool).
    pub fn with_lookup(lookup: Arc<LookupFn>) -> Self {
        Self {
            lookup,
            permits: Arc::new(Semaphore::new(DNS_CONCURRENCY)),
            timeout: DNS_TIMEOUT,
        }
    }

    /// The addresses of `host` (port 0), or an error saying why not.
    pub async fn resolve(&self, host: &str) -> io::Result<Vec<SocketAddr>> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, 0)]);
        }
        let lookup = self.lookup.clone();
        let permits = self.permits.clone();
        let host = host.to_owned();
        let attempt = async move {
            let permit = permits
                .acquire_owned()
                .await
                .map_err(|_| io::Error::other("resolver closed"))?;
            tokio::task::spawn_blocking(move || {
                // Held until the lookup returns, even if the caller gave up.
                let _permit = permit;
                lookup(&host)
            })
            .await
            .map_err(io::Error::other)?
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("DNS lookup timed out after {:?}", self.timeout),
            )),
        }
    }
}

impl tower::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.resolve(name.as_str()).await?.into_iter()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lookups_are_bounded_and_time_out() {
        let started = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(std::sync::Barrier::new(DNS_CONCURRENCY + 1));
        let (s, r) = (started.clone(), release.clone());
        let mut resolver = Resolver::with_lookup(Arc::new(move |_host: &str| {
            s.fetch_add(1, Ordering::SeqCst);
            r.wait();
            Ok(vec![])
        }));
        resolver.timeout = Duration::from_millis(200);
        let tasks: Vec<_> = (0..DNS_CONCURRENCY * 3)
            .map(|i| {
                let r = resolver.clone();
                tokio::spawn(async move { r.resolve(&format!("h{i}.example")).await })
            })
            .collect();
        for t in tasks {
            let err = t.await.unwrap().unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        }
        assert_eq!(
            started.load(Ordering::SeqCst),
            DNS_CONCURRENCY,
            "no more lookups than permits ran"
        );
        // IP literals never wait.
        let ip = resolver.resolve("127.0.0.1").await.unwrap();
        assert_eq!(ip, ["127.0.0.1:0".parse().unwrap()]);
        let v6 = resolver.resolve("[::1]").await.unwrap();
        assert_eq!(v6, ["[::1]:0".parse().unwrap()]);
        // Let the blocked lookups return, so the runtime can shut down.
        tokio::task::spawn_blocking(move || release.wait())
            .await
            .unwrap();
    }
}
