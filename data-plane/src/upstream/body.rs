//! Bodies on their way through, watched: the client's request body going to a backend
//! ([`RequestBody`]) and, in `response`, the backend's response body going to the client.
//!
//! Both have an **idle timeout**: the time the proxy may wait for the next bytes of a body it
//! is ready to forward. The clock runs only while the proxy is waiting on the sender (it is
//! armed when the body has nothing to give and disarmed by each frame), so a slow *reader*
//! (the backend reading an upload, the client reading a download, both under flow control)
//! never trips it; only a sender that stalls does.
//!
//! They also keep score for fair blame (see `blame`): a request body that fails records
//! whether the client sent bad framing, went away or stalled, so the upstream error that
//! follows is charged to the client and not to the endpoint; a response body that stalls or
//! breaks is the endpoint's failure and counts toward its passive ejection.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use http_body_util::{Either, Empty};

use crate::access_log::body::BytesIn;

/// The body sent upstream: the client's streamed body, watched, or nothing (which is also
/// what a retry sends, since only bodyless requests are retried).
pub type UpstreamBody = Either<RequestBody, Empty<Bytes>>;

/// What went wrong on the client's side of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// The body's framing is malformed (e.g. `zz` as a chunk size): 400.
    Framing,
    /// The client closed or reset the connection mid-body: nginx's 499.
    Gone,
    /// Nothing arrived for the request-body idle timeout: 408.
    IdleTimeout,
}

const STREAMING: u8 = 0;
const DONE: u8 = 1;
const FRAMING: u8 = 2;
const GONE: u8 = 3;
const IDLE: u8 = 4;

/// Shared between a [`RequestBody`] and the request path: how the body ended, and a wake-up
/// when it did (the service's request timeout counts from the body's end).
#[derive(Debug, Default)]
pub struct BodyWatch {
    state: AtomicU8,
    ended: Notify,
    /// Body bytes read from the client so far (for the access log).
    received: AtomicU64,
}

impl BytesIn for BodyWatch {
    fn bytes_in(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl BodyWatch {
    /// The client's fault, if the body failed because of the client.
    pub fn fault(&self) -> Option<ClientFault> {
        match self.state.load(Ordering::Acquire) {
            FRAMING => Some(ClientFault::Framing),
            GONE => Some(ClientFault::Gone),
            IDLE => Some(ClientFault::IdleTimeout),
            _ => None,
        }
    }

    /// Resolves once the body has been read in full, has failed, or was dropped.
    pub async fn ended(&self) {
        if self.state.load(Ordering::Acquire) != STREAMING {
            return;
        }
        self.ended.notified().await;
    }

    fn end(&self, state: u8) {
        // Only the first end counts: a failure after the end (or the drop after a failure)
        // does not overwrite what happened.
        if self
            .state
            .compare_exchange(STREAMING, state, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // `notify_one` keeps a permit if nobody waits yet, so `ended` cannot miss it.
            self.ended.notify_one();
        }
    }
}

/// Why a body stopped: the sender's own error, or our idle timeout.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The underlying connection failed (framing, reset, close).
    #[error(transparent)]
    Transport(#[from] hyper::Error),
    /// Nothing arrived within the idle timeout.
    #[error("body idle for longer than {0:?}")]
    Idle(Duration),
}

/// An idle timer armed only while the body waits on its sender. The `Sleep` is boxed (it is
/// `!Unpin`) the first time the body has to wait, so a body that is already buffered, the
/// common case for small requests and responses, never allocates it.
#[derive(Debug)]
pub(crate) struct IdleTimer {
    pub(crate) idle: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl IdleTimer {
    pub(crate) fn new(idle: Duration) -> Self {
        Self {
            idle,
            sleep: None,
            armed: false,
        }
    }

    /// The sender has nothing for us: start the clock if it is not running; `Ready` once it
    /// ran out.
    pub(crate) fn poll_waiting(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.armed {
            let deadline = Instant::now() + self.idle;
            match &mut self.sleep {
                Some(s) => s.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        match &mut self.sleep {
            Some(s) => s.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }

    /// A frame arrived: the sender is alive.
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }
}

/// The client's request body on its way upstream: passed through untouched, with an idle
/// timeout, and recording on its [`BodyWatch`] how it ended.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    timer: IdleTimer,
    watch: Arc<BodyWatch>,
}

impl RequestBody {
    /// Wraps `inner`, failing it after `idle` without a byte from the client.
    pub fn new(inner: Incoming, idle: Duration) -> (Self, Arc<BodyWatch>) {
        let watch = Arc::new(BodyWatch::default());
        (
            Self {
                inner,
                timer: IdleTimer::new(idle),
                watch: watch.clone(),
            },
            watch,
        )
    }
}

/// Sorts the client connection's body error: bad framing is the client's mistake (400);
/// anything else (EOF mid-body, reset, an HTTP/2 stream reset) means the client went away.
fn client_fault(err: &hyper::Error) -> ClientFault {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
            )
        {
            return ClientFault::Framing;
        }
        source = e.source();
    }
    if err.is_parse() {
        ClientFault::Framing
    } else {
        ClientFault::Gone
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.timer.disarm();
                if let Some(data) = frame.data_ref() {
                    this.watch
                        .received
                        .fetch_add(data.remaining() as u64, Ordering::Relaxed);
                }
                // hyper stops polling once a sized body reports its end, so check after each
                // frame.
                if this.inner.is_end_stream() {
                    this.watch.end(DONE);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.watch.end(match client_fault(&e) {
                    ClientFault::Framing => FRAMING,
                    _ => GONE,
                });
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.watch.end(DONE);
                Poll::Ready(None)
            }
            Poll::Pending => {
                ready!(this.timer.poll_waiting(cx));
                this.watch.end(IDLE);
                Poll::Ready(Some(Err(BodyError::Idle(this.timer.idle))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        // Dropped unsent (the attempt failed before the body went out): still "ended", so a
        // waiter on `ended` does not wait forever. `end` keeps an earlier outcome.
        self.watch.end(DONE);
    }
}
