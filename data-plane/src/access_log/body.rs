//! [`Logged`]: a response body that finishes its access-log record when it ends, counting
//! the bytes sent on the way. The record is sent from `Drop`, so it is written exactly once
//! whether the body ended, failed, or the client went away.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};

use crate::access_log::queue::AccessLog;
use crate::access_log::record::Record;

/// What owns the access log (the request path's shared state). Keeping the request's own
/// `Arc` to it in the body costs no extra reference count.
pub trait Sink: Send + Sync {
    /// The log records go to.
    fn access_log(&self) -> &AccessLog;
}

/// The request body's byte count, read when the record is finished.
pub trait BytesIn: Send + Sync {
    /// Bytes of the request body read so far.
    fn bytes_in(&self) -> u64;
}

/// A record waiting for its response body to end.
pub struct Pending {
    /// The record, all but its byte counts and duration filled in.
    pub record: Record,
    /// When the request arrived.
    pub start: Instant,
    /// The request body's counter, if it had one.
    pub bytes_in: Option<Arc<dyn BytesIn>>,
    /// Where the record goes.
    pub sink: Arc<dyn Sink>,
}

/// A response body, passed through untouched, that logs its request when dropped.
pub struct Logged<B> {
    inner: B,
    pending: Option<Box<Pending>>,
}

impl<B> Logged<B> {
    /// `inner`, logging `pending` at its end; `None`: no logging.
    pub fn new(inner: B, pending: Option<Box<Pending>>) -> Self {
        Self { inner, pending }
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for Logged<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logged")
            .field("inner", &self.inner)
            .field("logging", &self.pending.is_some())
            .finish()
    }
}

impl<B: Body + Unpin> Body for Logged<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(p)) = (&polled, &mut this.pending)
            && let Some(data) = frame.data_ref()
        {
            p.record.bytes_out += data.remaining() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Logged<B> {
    fn drop(&mut self) {
        if let Some(p) = self.pending.take() {
            let Pending {
                mut record,
                start,
                bytes_in,
                sink,
            } = *p;
            record.duration = start.elapsed();
            record.bytes_in = bytes_in.map_or(0, |b| b.bytes_in());
            sink.access_log().log(record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    struct Log(AccessLog);
    impl Sink for Log {
        fn access_log(&self) -> &AccessLog {
            &self.0
        }
    }
    struct Uploaded;
    impl BytesIn for Uploaded {
        fn bytes_in(&self) -> u64 {
            5
        }
    }

    #[tokio::test]
    async fn counts_the_bytes_sent_and_logs_once_at_the_end() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let log = AccessLog {
            tx: Some(tx),
            counters: Arc::default(),
        };
        let pending = Pending {
            record: Record {
                status: 200,
                ..Record::default()
            },
            start: Instant::now(),
            bytes_in: Some(Arc::new(Uploaded)),
            sink: Arc::new(Log(log)),
        };
        let body = Logged::new(
            Full::new(Bytes::from_static(b"hello world")),
            Some(Box::new(pending)),
        );
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), 11);
        let Some(crate::access_log::queue::Msg::Line(r)) = rx.recv().await else {
            panic!("no record")
        };
        assert_eq!((r.status, r.bytes_out, r.bytes_in), (200, 11, 5));
        assert!(rx.try_recv().is_err(), "logged once");
    }
}
