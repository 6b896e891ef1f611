//! A backend's response body on its way to the client ([`ResponseBody`]), and the pooled
//! connection it came on ([`Lease`]), which goes back to its endpoint's idle connections
//! (`pool`) the moment the body has been read to its end, and only then: a body that fails,
//! stalls or is dropped half-read takes its connection with it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::stats::{ServiceStats, UpstreamError};
use crate::upstream::balancer::Endpoint;
use crate::upstream::body::{BodyError, IdleTimer};
use crate::upstream::pool::Sender;

/// A keep-alive connection lent to one exchange, and the tag of the client that opened it.
#[derive(Debug)]
pub struct Lease {
    sender: Sender,
    tag: u32,
}

impl Lease {
    /// `sender`, opened by the client tagged `tag`.
    pub fn new(sender: Sender, tag: u32) -> Self {
        Self { sender, tag }
    }
}

/// A backend's response body on its way to the client: passed through untouched, with an
/// idle timeout. A stall or a broken body is the endpoint's failure: it is counted in
/// `upstream_errors` and toward the endpoint's passive ejection, and the client's connection
/// is cut (the response is already under way, so no status can say so).
#[derive(Debug)]
pub struct ResponseBody {
    inner: Incoming,
    timer: IdleTimer,
    endpoint: Arc<Endpoint>,
    stats: Arc<ServiceStats>,
    /// The connection to return to the endpoint's pool once the body has ended.
    lease: Option<Lease>,
}

impl ResponseBody {
    /// Wraps `inner` from `endpoint`, failing it after `idle` without a byte from the backend.
    pub fn new(
        inner: Incoming,
        idle: Duration,
        endpoint: Arc<Endpoint>,
        stats: Arc<ServiceStats>,
    ) -> Self {
        Self::pooled(inner, idle, endpoint, stats, None)
    }

    /// [`ResponseBody::new`], returning `lease` to `endpoint`'s idle connections when the
    /// body ends (at once if it is empty: hyper may then never poll it).
    pub fn pooled(
        inner: Incoming,
        idle: Duration,
        endpoint: Arc<Endpoint>,
        stats: Arc<ServiceStats>,
        lease: Option<Lease>,
    ) -> Self {
        let mut body = Self {
            inner,
            timer: IdleTimer::new(idle),
            endpoint,
            stats,
            lease,
        };
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    /// The body has ended: its connection may serve another request.
    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.endpoint.idle.checkin(lease.sender, lease.tag);
        }
    }
}

impl Body for ResponseBody {
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
                // hyper stops polling once a sized body reports its end, so check after each
                // frame.
                if this.inner.is_end_stream() {
                    this.release();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.lease = None;
                this.stats.upstream_error(UpstreamError::Reset);
                this.endpoint.record_failure();
                tracing::debug!(endpoint = %this.endpoint.url, error = %e, "response body failed");
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.release();
                Poll::Ready(None)
            }
            Poll::Pending => {
                std::task::ready!(this.timer.poll_waiting(cx));
                this.lease = None;
                this.stats.upstream_error(UpstreamError::BodyTimeout);
                this.endpoint.record_failure();
                tracing::debug!(endpoint = %this.endpoint.url, idle = ?this.timer.idle, "response body stalled");
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
