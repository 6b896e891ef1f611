//! Idle client connections: the first-byte timeout (a new connection must start its first
//! request within it) and the keep-alive idle timeout (between requests). hyper's own header
//! timeout only starts at a request's first byte, so a connection that never sends one was
//! held forever; this closes it.
//!
//! A connection is *idle* when no request is in flight (from its head being parsed to its
//! response body being done or dropped) and no byte arrives. Reads are counted by the
//! [`Counted`] stream, requests by the [`Activity`] guard the server wraps around each
//! response body; [`watch`] sleeps and compares counts, so the request path pays one relaxed
//! atomic add per read and two per request, and no clock read.
//!
//! Precision: a silent new connection is closed at the first-byte timeout; a keep-alive
//! connection between one and one and a half times the idle timeout after it went quiet
//! (checked every half period).
//!
//! **Under pressure** (the listener hit its connection cap within the last
//! [`PRESSURE_WINDOW`]), a connection that has not sent its first byte gets only
//! [`FIRST_BYTE_UNDER_PRESSURE`]: at the cap, new clients wait in the listen backlog until a
//! slot frees, so holding silent connections for the full timeout would make every real
//! client wait behind a flood of them. This is Envoy's overload manager's "reduce timeouts"
//! action, applied where it matters most.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;

/// What a connection's watchdog looks at.
#[derive(Debug, Default)]
pub struct Activity {
    /// Bumped by every read that returned bytes and every finished request.
    events: AtomicU64,
    /// Requests whose response is not finished.
    in_flight: AtomicUsize,
}

impl Activity {
    /// A request begins; the guard ends it when dropped (with its response body).
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// One request in flight on its connection.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

/// A clone is one more request in flight: the server puts a clone in a CONNECT request's
/// extensions so that the tunnel it may open can hold its connection busy (see
/// `tunnel::run`). (`http::Extensions` only takes `Clone` values.)
impl Clone for InFlight {
    fn clone(&self) -> Self {
        self.0.begin()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.events.fetch_add(1, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long a silent new connection is kept while the listener is at its cap. One second
/// covers a real client's round trip from connect to first byte on any network.
pub const FIRST_BYTE_UNDER_PRESSURE: Duration = Duration::from_secs(1);
/// How long after last meeting its cap a listener counts as under pressure.
pub const PRESSURE_WINDOW: Duration = Duration::from_secs(2);

/// Whether a listener recently hit its connection cap. Shared by its accept loop (which sets
/// it) and its connections' watchdogs (which read it).
#[derive(Debug)]
pub struct Pressure {
    start: Instant,
    /// Milliseconds after `start` the cap was last hit, plus one (0: never).
    last_hit_ms: AtomicU64,
}

impl Default for Pressure {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            last_hit_ms: AtomicU64::new(0),
        }
    }
}

impl Pressure {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// The cap was hit now.
    pub fn hit(&self) {
        self.last_hit_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Whether the cap was hit within [`PRESSURE_WINDOW`].
    pub fn on(&self) -> bool {
        let last = self.last_hit_ms.load(Ordering::Relaxed);
        last != 0
            && u128::from(self.now_ms() - last.min(self.now_ms())) < PRESSURE_WINDOW.as_millis()
    }
}

/// Resolves when the connection has been idle too long: after `first_byte` if it never saw a
/// byte (sooner under `pressure`), otherwise after `idle` (see the module docs).
pub async fn watch(
    activity: Arc<Activity>,
    pressure: Arc<Pressure>,
    first_byte: Duration,
    idle: Duration,
) {
    let quiet = |seen: u64| {
        activity.in_flight.load(Ordering::Relaxed) == 0
            && activity.events.load(Ordering::Relaxed) == seen
    };
    // Silent so far: look every FIRST_BYTE_UNDER_PRESSURE whether pressure says to give up.
    let mut waited = Duration::ZERO;
    loop {
        let step = FIRST_BYTE_UNDER_PRESSURE.min(first_byte - waited);
        tokio::time::sleep(step).await;
        waited += step;
        if !quiet(0) {
            break;
        }
        if waited >= first_byte || pressure.on() {
            return;
        }
    }
    let half = idle / 2;
    let mut seen = activity.events.load(Ordering::Relaxed);
    let mut quiet_ticks = 0;
    loop {
        tokio::time::sleep(half).await;
        if quiet(seen) {
            quiet_ticks += 1;
            if quiet_ticks >= 2 {
                return;
            }
        } else {
            quiet_ticks = 0;
            seen = activity.events.load(Ordering::Relaxed);
        }
    }
}

/// A client stream that counts reads that returned bytes, and holds the connection's slot
/// under the listener's cap for as long as the stream lives: an upgraded connection (a
/// WebSocket, a CONNECT tunnel) outlives hyper's connection task, and keeps counting.
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
    _slot: OwnedSemaphorePermit,
}

impl<S> Counted<S> {
    /// Wraps `inner`, counting into `activity`, holding `slot` until dropped.
    pub fn new(inner: S, activity: Arc<Activity>, slot: OwnedSemaphorePermit) -> Self {
        Self {
            inner,
            activity,
            _slot: slot,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.events.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A response body that keeps its request in flight until it is done or dropped.
#[derive(Debug)]
pub struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    /// Holds `in_flight` as long as `inner` lives.
    pub fn new(inner: B, in_flight: InFlight) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn silent_connection_closes_at_the_first_byte_timeout() {
        let a = Arc::new(Activity::default());
        let start = tokio::time::Instant::now();
        let calm = Arc::new(Pressure::default());
        watch(
            a.clone(),
            calm,
            Duration::from_secs(3),
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn under_pressure_a_silent_connection_gets_one_second() {
        let a = Arc::new(Activity::default());
        let pressure = Arc::new(Pressure::default());
        pressure.hit();
        let start = tokio::time::Instant::now();
        watch(
            a,
            pressure,
            Duration::from_secs(60),
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(start.elapsed(), FIRST_BYTE_UNDER_PRESSURE);
    }

    #[test]
    fn a_cloned_guard_is_one_more_request_in_flight() {
        let a = Arc::new(Activity::default());
        let first = a.begin();
        let second = first.clone();
        assert_eq!(a.in_flight.load(Ordering::Relaxed), 2);
        drop(first);
        assert_eq!(a.in_flight.load(Ordering::Relaxed), 1);
        drop(second);
        assert_eq!(a.in_flight.load(Ordering::Relaxed), 0);
        assert_eq!(a.events.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_requests_keep_a_connection_open_and_idle_closes_it() {
        let a = Arc::new(Activity::default());
        let guard = a.begin();
        let start = tokio::time::Instant::now();
        let calm = Arc::new(Pressure::default());
        let w = tokio::spawn(watch(
            a.clone(),
            calm,
            Duration::from_secs(1),
            Duration::from_secs(10),
        ));
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert!(!w.is_finished(), "a request in flight is not idleness");
        drop(guard);
        w.await.unwrap();
        let closed_after = start.elapsed() - Duration::from_secs(100);
        assert!(
            closed_after >= Duration::from_secs(10) && closed_after <= Duration::from_secs(16),
            "{closed_after:?}"
        );
    }
}
