//! Worker threads: a runtime per core. The client listeners (HTTP, and HTTPS when set) are
//! served by N threads, each running its own tokio current-thread runtime and accepting on its
//! own socket (`SO_REUSEPORT`, see [`server::sibling`]). A connection is accepted, served and
//! proxied on one thread, and so are the tasks it spawns (HTTP/2 streams, tunnels, the
//! upstream connections it opens): no work stealing, no wake-up that crosses threads on the
//! request path, and a request's state stays in one core's caches. This is nginx's worker
//! model; Pingora's no-steal runtime and linkerd2-proxy's current-thread runtime report the
//! gain (issue 14).
//!
//! Background work (config sync, health checks, reports, the admin listener, JWKS fetches,
//! Redis) does not run here but on the runtime `serve` is called on, so a burst of it never
//! queues behind requests or the other way round.
//!
//! Open connections are capped per listener across all workers ([`server::Shared`]): the cap
//! is a file-descriptor budget, which is the process's, not a thread's.
//!
//! Shutdown: when `stop` turns true every worker stops accepting and drains its connections
//! (up to the grace period). A worker keeps its runtime until every worker has drained: the
//! upstream pool is shared, so a connection driven by one worker's runtime may be carrying
//! another worker's in-flight request.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsAcceptor;

use crate::proxy::server::{self, Limits, Listener, Shared};
use crate::stats::WorkerConnections;

/// Most worker threads accepted: far above any core count a gateway runs on, low enough that a
/// typo (an extra zero or two) fails at start-up rather than starting thousands of threads,
/// each with its sockets and its runtime.
pub const MAX_WORKER_THREADS: usize = 1024;

/// One worker per CPU this process may run on (its affinity mask and cgroup quota, as
/// `std::thread::available_parallelism` reads them; 1 if unknown): `taskset -c 0` gives one.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// How the workers run.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Worker threads, 1 to [`MAX_WORKER_THREADS`].
    pub threads: usize,
    /// Protocol limits and the connection cap of each listener.
    pub limits: Limits,
    /// Time in-flight requests get to finish once `stop` turns true.
    pub grace: Duration,
}

/// The client listeners, already bound (`server::bind` for one socket per worker).
pub struct Sockets {
    /// Plain HTTP.
    pub plain: TcpListener,
    /// HTTPS, with its acceptor.
    pub tls: Option<(TcpListener, TlsAcceptor)>,
}

/// The running workers. Dropping this without [`Workers::finished`] stops them at once
/// (connections cut, no grace): what happens when `serve`'s future is dropped.
#[derive(Debug)]
pub struct Workers {
    /// One per worker: resolves (or fails, if the worker died) once it has drained.
    drained: Vec<oneshot::Receiver<()>>,
    /// One per worker: dropping it lets the worker end its runtime.
    release: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Waits until every worker has stopped accepting and drained its connections (after
    /// `stop` turned true), then lets them end their runtimes.
    pub async fn finished(mut self) {
        for drained in self.drained.drain(..) {
            let _ = drained.await;
        }
    }
}

/// Starts `spec.threads` workers serving `handler` (given the peer, whether the connection is
/// HTTPS, and the request) on `sockets`, counting each worker's connections in `counts`,
/// until `stop` turns true. Sockets and runtimes are made before any thread starts, so an
/// error (no socket left, say) stops nothing half-way.
pub fn start<H, F, B>(
    spec: Spec,
    sockets: Sockets,
    counts: &WorkerConnections,
    handler: H,
    stop: watch::Receiver<bool>,
) -> io::Result<Workers>
where
    H: Fn(SocketAddr, bool, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let threads = spec.threads.clamp(1, MAX_WORKER_THREADS);
    let plain = spread(sockets.plain, threads)?;
    let plain_shared = Shared::new(spec.limits.max_connections);
    let mut tls: Vec<Option<Listener>> = match sockets.tls {
        Some((listener, acceptor)) => {
            let shared = Shared::new(spec.limits.max_connections);
            spread(listener, threads)?
                .into_iter()
                .map(|socket| {
                    Some(Listener {
                        socket,
                        tls: Some(acceptor.clone()),
                        shared: shared.clone(),
                        accepted: None,
                    })
                })
                .collect()
        }
        None => (0..threads).map(|_| None).collect(),
    };
    let mut jobs = Vec::with_capacity(threads);
    for (worker, socket) in plain.into_iter().enumerate() {
        let runtime = WorkerRuntime(Some(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        ));
        let tally = counts.tally(worker);
        let plain = Listener {
            socket,
            tls: None,
            shared: plain_shared.clone(),
            accepted: Some(tally.clone()),
        };
        let tls = tls
            .get_mut(worker)
            .and_then(Option::take)
            .map(|l| Listener {
                accepted: Some(tally),
                ..l
            });
        jobs.push((runtime, plain, tls));
    }
    let mut workers = Workers {
        drained: Vec::with_capacity(threads),
        release: Vec::with_capacity(threads),
    };
    for (worker, (runtime, plain, tls)) in jobs.into_iter().enumerate() {
        let (drained_tx, drained_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        let (handler, stop) = (handler.clone(), stop.clone());
        let serve = async move {
            let https = handler.clone();
            let plain = server::run(
                plain,
                spec.limits,
                move |peer, req| handler(peer, false, req),
                stop.clone(),
                spec.grace,
            );
            let tls = async move {
                if let Some(tls) = tls {
                    let serve = move |peer, req| https(peer, true, req);
                    server::run(tls, spec.limits, serve, stop, spec.grace).await;
                }
            };
            tokio::join!(plain, tls);
        };
        // The workers log where `serve`'s caller logs, even to a subscriber scoped to its thread.
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        // On a failure here the workers already started are stopped by `workers`' drop.
        std::thread::Builder::new()
            .name(format!("gw-worker-{worker}"))
            .spawn(move || {
                let _logs = tracing::dispatcher::set_default(&dispatch);
                let Some(rt) = runtime.0.as_ref() else { return };
                rt.block_on(async move {
                    let mut release = release_rx;
                    let drained = tokio::select! {
                        () = serve => true,
                        // Dropped early: stop at once.
                        _ = &mut release => false,
                    };
                    if drained {
                        let _ = drained_tx.send(());
                        let _ = release.await;
                    }
                });
                // `runtime` is shut down here, without waiting for blocking tasks.
                drop(runtime);
            })?;
        workers.drained.push(drained_rx);
        workers.release.push(release_tx);
    }
    Ok(workers)
}

/// A worker's runtime, shut down without waiting for its blocking tasks when dropped (a DNS
/// lookup cannot be cancelled). A runtime dropped the usual way waits for them, which tokio
/// refuses with a panic inside an async context: where `start` runs, so a failure half-way
/// (no thread or descriptor left for the next worker) would panic instead of returning its
/// error.
struct WorkerRuntime(Option<tokio::runtime::Runtime>);

impl Drop for WorkerRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// `threads` sockets on `listener`'s address: `listener` itself for the first worker, a
/// [`server::sibling`] for each other.
fn spread(listener: TcpListener, threads: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let first = listener.into_std()?;
    let mut sockets = Vec::with_capacity(threads);
    for _ in 1..threads {
        sockets.push(server::sibling(&first)?);
    }
    sockets.insert(0, first);
    Ok(sockets)
}
