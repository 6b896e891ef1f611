//! Serving connections: the accept loop shared by the proxy and admin listeners, with a cap on
//! open connections, the first-byte and keep-alive idle timeouts (`idle`), and graceful
//! shutdown (stop accepting, let in-flight requests finish up to a deadline, then cut the rest).
//!
//! At the cap the loop stops accepting: new connections wait in the kernel's listen backlog
//! until one closes (nginx and HAProxy do the same). Accepting and closing at once would turn
//! every client away; spinning on EMFILE would burn a core and starve everything else.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot, watch};

use crate::proxy::idle::{self, Activity, Counted, Pressure, Tracked};
use crate::shutdown::signalled;
use crate::stats::Tally;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// At most one "accept failed" or "connection cap reached" warning per this period; the rest
/// are counted into the next one (a flood used to log one line per failed accept).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Time a client has to complete the TLS handshake; like the first-byte timeout, it keeps a
/// slow or silent client from holding a connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Stop senders kept before the accept loop drops those of finished connections; after each
/// reap the threshold becomes twice what is left, so reaping costs O(1) per connection.
const STOP_REAP_MIN: usize = 64;

/// Listen backlog of the proxy listener: connections beyond the cap wait here, so it is deep
/// (the kernel clamps it to `net.core.somaxconn`, 4,096 by default). tokio's `bind` uses
/// 1,024; a flood that overflows the backlog leaves clients with half-open connections the
/// kernel drops without a word. With several workers each socket has a backlog this deep.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` for client traffic, with a [`LISTEN_BACKLOG`]-deep backlog, `SO_REUSEADDR`
/// (as `tokio::net::TcpListener::bind`) and `SO_REUSEPORT`, so that each worker thread can
/// bind its own socket on the same address ([`sibling`]; the kernel spreads new connections
/// over them). Port 0 picks a port; the siblings take the same one.
///
/// `SO_REUSEPORT` would also let a second process (of the same user) bind the address and
/// silently take part of the traffic: to keep "address in use" for that, a plain socket is
/// bound first and closed. It fails if anything listens on the address, another gateway's
/// sockets included.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let probe = listen_on(addr, false)?;
    let addr = probe.local_addr()?;
    drop(probe);
    TcpListener::from_std(listen_on(addr, true)?)
}

/// Another socket on `listener`'s address for another worker. When `listener` has
/// `SO_REUSEPORT` (it came from [`bind`]), a new socket bound beside it: the kernel gives each
/// new connection to one socket of the group (by a hash of its addresses), so each worker
/// accepts from a queue of its own. Otherwise (a listener bound by the caller, e.g. a test on
/// `127.0.0.1:0`), a duplicate of the same socket: the workers then take turns on one queue.
pub fn sibling(listener: &std::net::TcpListener) -> io::Result<std::net::TcpListener> {
    if sockopt::socket_reuseport(listener)? {
        listen_on(listener.local_addr()?, true)
    } else {
        listener.try_clone()
    }
}

/// A non-blocking listening socket on `addr` with a [`LISTEN_BACKLOG`]-deep backlog.
fn listen_on(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    sockopt::set_socket_reuseaddr(&fd, true)?;
    if reuse_port {
        sockopt::set_socket_reuseport(&fd, true)?;
    }
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, i32::try_from(LISTEN_BACKLOG).unwrap_or(i32::MAX))?;
    Ok(std::net::TcpListener::from(fd))
}

/// A listening socket the runtime watches for queued connections, so the accept loop can wait
/// for one *before* it takes a slot under the cap (see [`run`]). tokio's `TcpListener` only
/// says a connection is there by accepting it, and `AsyncFd` needs `unsafe` (forbidden here)
/// since tokio 1.54; so the socket is registered as a `TcpStream`, the one type that offers
/// readiness without an operation. Nothing else of a stream is used: a listening socket turns
/// readable when its accept queue is not empty and never writable.
struct Queue(TcpStream);

impl Queue {
    /// Registers `socket` (non-blocking) with the current runtime.
    fn new(socket: std::net::TcpListener) -> io::Result<Self> {
        let fd = std::os::fd::OwnedFd::from(socket);
        Ok(Self(TcpStream::from_std(std::net::TcpStream::from(fd))?))
    }

    /// Resolves when a connection may be queued (perhaps taken by a worker sharing the socket).
    async fn ready(&self) -> io::Result<()> {
        self.0.readable().await
    }

    /// Accepts a queued connection, non-blocking, as a stream ready for tokio (one `accept4`:
    /// no separate call to make it non-blocking); `WouldBlock` when none is queued.
    fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (fd, peer) = self.0.try_io(Interest::READABLE, || {
            rustix::net::acceptfrom_with(&self.0, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC)
                .map_err(io::Error::from)
        })?;
        let peer = peer
            .and_then(|p| SocketAddr::try_from(p).ok())
            .ok_or_else(|| io::Error::other("accepted a connection without an IP peer address"))?;
        Ok((TcpStream::from_std(std::net::TcpStream::from(fd))?, peer))
    }
}

/// What the accept loops of one listener share across worker threads: the cap on its open
/// connections is one budget (file descriptors are the process's), and so is the pressure
/// flag that shortens the first-byte timeout once the cap is hit.
#[derive(Debug, Clone)]
pub struct Shared {
    slots: Arc<Semaphore>,
    pressure: Arc<Pressure>,
    max_connections: usize,
}

impl Shared {
    /// For a listener of at most `max_connections` open connections.
    pub fn new(max_connections: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_connections.max(1))),
            pressure: Arc::new(Pressure::default()),
            max_connections,
        }
    }
}

/// One accept loop's socket and what comes with it.
pub struct Listener {
    /// The socket to accept on: non-blocking; registered with the runtime that runs the loop.
    pub socket: std::net::TcpListener,
    /// With a TLS acceptor, each connection first completes a TLS handshake.
    pub tls: Option<TlsAcceptor>,
    /// The cap and pressure shared with the other loops on the same address.
    pub shared: Shared,
    /// Bumped once per accepted connection, if set (a worker's count).
    pub accepted: Option<Tally>,
}

impl Listener {
    /// A listener of its own (not shared with other workers), uncounted.
    pub fn alone(
        socket: TcpListener,
        tls: Option<TlsAcceptor>,
        max_connections: usize,
    ) -> io::Result<Self> {
        Ok(Self {
            socket: socket.into_std()?,
            tls,
            shared: Shared::new(max_connections),
            accepted: None,
        })
    }
}

/// Protocol limits for client connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time a client has to send a request's complete headers.
    pub header_read_timeout: Duration,
    /// Largest request head accepted (HTTP/1.1: read buffer; HTTP/2: header list); beyond it,
    /// HTTP/1.1 clients get 431.
    pub max_header_bytes: usize,
    /// Time a new connection has to send its first byte.
    pub first_byte_timeout: Duration,
    /// Time a connection may stay idle between requests.
    pub idle_timeout: Duration,
    /// Open connections at most; beyond, new ones wait in the listen backlog.
    pub max_connections: usize,
}

/// A warning that is logged at most once per [`WARN_EVERY`], with a count of the rest.
struct Throttled {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl Throttled {
    fn new() -> Self {
        Self {
            last: None,
            suppressed: 0,
        }
    }

    /// Whether to log now; if so, how many were suppressed since the last line.
    fn ready(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < WARN_EVERY)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Builds the connection builder: HTTP/1.1 and h2c (prior knowledge), upgrades enabled.
fn builder(limits: Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper's minimum buffer is 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8192));
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    b
}

/// Accepts connections on `listener` and serves `handler` on each until `stop` turns true;
/// then stops accepting, asks every connection to finish its in-flight requests, and waits up
/// to `grace` before dropping the stragglers. With `listener.tls`, each connection first
/// completes a TLS handshake (on its own task, within [`HANDSHAKE_TIMEOUT`]). Connection
/// tasks are spawned on the runtime that runs this loop.
pub async fn run<H, F, B>(
    listener: Listener,
    limits: Limits,
    handler: H,
    stop: watch::Receiver<bool>,
    grace: Duration,
) where
    H: Fn(SocketAddr, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Listener {
        socket,
        tls,
        shared:
            Shared {
                slots,
                pressure,
                max_connections,
            },
        accepted: tally,
    } = listener;
    let local = socket.local_addr().ok();
    let queue = match Queue::new(socket) {
        Ok(queue) => queue,
        Err(e) => {
            tracing::error!(listener = ?local, error = %e, "cannot watch the listening socket; not serving it");
            return;
        }
    };
    let builder = Arc::new(builder(limits));
    let mut conns = JoinSet::new();
    // One oneshot per connection says "shut down" by being dropped. A connection polls its
    // receiver on every wake-up, and a oneshot poll is an atomic load, where a `watch` wait
    // takes a mutex each time (measured: ~400 instructions per proxied request).
    let mut stops: Vec<oneshot::Sender<()>> = Vec::new();
    let mut reap_at = STOP_REAP_MIN;
    let mut accept_warn = Throttled::new();
    let mut cap_warn = Throttled::new();
    let stopped = signalled(stop);
    tokio::pin!(stopped);
    loop {
        // A connection is waiting before a slot is taken for it: with one socket per worker
        // (SO_REUSEPORT), a loop whose own queue is empty must not sit on a slot that another
        // worker's queued connection needs.
        tokio::select! {
            ready = queue.ready() => match ready {
                Ok(()) => {}
                Err(e) => {
                    tracing::error!(listener = ?local, error = %e, "listening socket failed; not serving it");
                    break;
                }
            },
            () = &mut stopped => break,
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                pressure.hit();
                if let Some(suppressed) = cap_warn.ready() {
                    tracing::warn!(
                        listener = ?local,
                        max_connections,
                        suppressed,
                        "connection cap reached: new connections wait in the listen backlog; \
                         silent connections get 1s to send their first byte"
                    );
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = &mut stopped => break,
                }
            }
        };
        let accepted = match queue.accept() {
            // Nothing queued after all (another worker on a shared socket took it): the slot
            // goes back, and the loop waits for the next connection.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            accepted => accepted,
        };
        // Reap finished connection tasks so the set does not grow without bound.
        while conns.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                if let Some(suppressed) = accept_warn.ready() {
                    tracing::warn!(error = %e, suppressed, "accept failed");
                }
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        if let Some(tally) = &tally {
            tally.add();
        }
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let handler = handler.clone();
        let pressure = pressure.clone();
        if stops.len() >= reap_at {
            stops.retain(|s| !s.is_closed());
            reap_at = (stops.len() * 2).max(STOP_REAP_MIN);
        }
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        stops.push(stop_tx);
        let tls = tls.clone();
        conns.spawn(async move {
            let activity = Arc::new(Activity::default());
            let in_flight = activity.clone();
            let service = service_fn(move |mut req: Request<Incoming>| {
                let guard = in_flight.begin();
                if req.method() == Method::CONNECT {
                    // On HTTP/2 the tunnel is one stream of a connection that lives on, and the
                    // client may stay silent while only the backend talks: the tunnel holds
                    // this guard so the connection's idle timer leaves it alone (the tunnel
                    // has its own). Only CONNECT pays for the extension.
                    req.extensions_mut().insert(guard.clone());
                }
                let fut = handler(peer, req);
                async move { Ok::<_, Infallible>(fut.await.map(|b| Tracked::new(b, guard))) }
            });
            // The stream holds the connection's slot under the cap, for its whole life.
            let io = Counted::new(stream, activity.clone(), slot);
            let Some(acceptor) = tls else {
                return serve_connection(
                    &builder, io, service, stop_rx, activity, pressure, limits, peer,
                )
                .await;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                Ok(Ok(io)) => {
                    serve_connection(
                        &builder, io, service, stop_rx, activity, pressure, limits, peer,
                    )
                    .await
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
    drop(queue);
    // Every connection starts its graceful shutdown.
    drop(stops);
    let drained =
        tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            remaining = conns.len(),
            ?grace,
            "shutdown grace period over; closing remaining connections"
        );
        conns.shutdown().await;
    }
}

/// Serves one connection (plain or TLS) until it ends, goes idle, or, once `stop` fires,
/// until its in-flight requests have finished.
#[allow(clippy::too_many_arguments)]
async fn serve_connection<I, S, B>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    stop: oneshot::Receiver<()>,
    activity: Arc<Activity>,
    pressure: Arc<Pressure>,
    limits: Limits,
    peer: SocketAddr,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        biased;
        result = conn.as_mut() => result,
        // Resolves (with an error) when the accept loop drops the sender on shutdown.
        _ = stop => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        () = idle::watch(activity, pressure, limits.first_byte_timeout, limits.idle_timeout) => {
            tracing::debug!(%peer, "idle connection closed");
            Ok(())
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reuse_port_sockets_share_a_port_that_a_plain_bind_cannot_take() {
        let first = bind("127.0.0.1:0".parse().unwrap())
            .unwrap()
            .into_std()
            .unwrap();
        let addr = first.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        let second = sibling(&first).unwrap();
        assert_eq!(second.local_addr().unwrap(), addr);
        assert!(sockopt::socket_reuseport(&second).unwrap());
        // Another gateway (or anything else) on the same address is refused.
        let e = bind(addr).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        assert!(std::net::TcpListener::bind(addr).is_err());
    }

    #[test]
    fn a_socket_without_reuse_port_is_shared_by_duplicating_it() {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let second = sibling(&first).unwrap();
        assert_eq!(second.local_addr().unwrap(), first.local_addr().unwrap());
        assert!(!sockopt::socket_reuseport(&second).unwrap());
        // One queue: a connection made to the address is accepted from the duplicate.
        let client = std::net::TcpStream::connect(first.local_addr().unwrap()).unwrap();
        let (_, peer) = second.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
    }

    /// Two accept loops on two SO_REUSEPORT sockets share a cap of one connection. A loop may
    /// take the one slot only for a connection queued on its own socket: one that held it
    /// while waiting on an empty queue would leave a connection on the other socket waiting
    /// forever (the connection lands on either socket, by a hash of its addresses).
    #[tokio::test]
    async fn two_loops_share_one_cap_and_neither_sits_on_the_slot() {
        let first = bind("127.0.0.1:0".parse().unwrap())
            .unwrap()
            .into_std()
            .unwrap();
        let addr = first.local_addr().unwrap();
        let second = sibling(&first).unwrap();
        let shared = Shared::new(1);
        let counts = crate::stats::WorkerConnections::new(2);
        let limits = Limits {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 8192,
            first_byte_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
            max_connections: 1,
        };
        let (stop_tx, stop) = watch::channel(false);
        let mut loops = JoinSet::new();
        for (worker, socket) in [first, second].into_iter().enumerate() {
            let listener = Listener {
                socket,
                tls: None,
                shared: shared.clone(),
                accepted: Some(counts.tally(worker)),
            };
            let ok = |_peer, _req| async { Response::new(Full::new(Bytes::from_static(b"ok"))) };
            loops.spawn(run(
                listener,
                limits,
                ok,
                stop.clone(),
                Duration::from_secs(5),
            ));
        }
        // One after the other, each on a new connection (a new source port, so either socket).
        const CONNECTIONS: usize = 32;
        for i in 0..CONNECTIONS {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            tokio::time::timeout(gw_testkit::DEFAULT_DEADLINE, s.read_to_end(&mut answer))
                .await
                .unwrap_or_else(|_| panic!("connection {i} never served: a loop holds the slot"))
                .unwrap();
            assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
            assert!(answer.ends_with(b"ok"), "{answer:?}");
        }
        // Both loops accepted (all 32 on one socket: 1 in 2^31), each connection counted once.
        let accepted = counts.counts();
        assert!(accepted.iter().all(|&n| n > 0), "{accepted:?}");
        assert_eq!(accepted.iter().sum::<u64>(), CONNECTIONS as u64);
        stop_tx.send(true).unwrap();
        while loops.join_next().await.is_some() {}
    }
}
