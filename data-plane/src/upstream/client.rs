//! Connections to backends: one pooled keep-alive HTTP/1.1 client per distinct connect
//! timeout, shared by every service that uses that timeout and kept across config versions (so
//! a config update does not drop warm connections).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::upstream::body::RequestBody;

/// The body sent upstream: the client's streamed body, watched, or nothing (which is also
/// what a retry sends, since only bodyless requests are retried).
pub type UpstreamBody = Either<RequestBody, Empty<Bytes>>;

/// A pooled client.
pub type UpstreamClient = Client<HttpConnector, UpstreamBody>;

/// How long an idle pooled connection is kept. Below the 60 s idle timeout common in backends
/// (nginx keepalive_timeout 75 s, Node 5 s aside), so we rarely reuse a connection the backend
/// is about to close.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// Idle connections kept per backend. Enough to absorb bursts without hoarding sockets.
const POOL_MAX_IDLE_PER_HOST: usize = 256;

/// Clients by connect timeout.
#[derive(Debug, Default)]
pub struct Clients {
    by_connect_timeout: Mutex<HashMap<Duration, UpstreamClient>>,
}

impl Clients {
    /// The client for `connect_timeout`, created on first use. Off the request path.
    pub fn get(&self, connect_timeout: Duration) -> UpstreamClient {
        let mut map = self
            .by_connect_timeout
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(connect_timeout)
            .or_insert_with(|| build(connect_timeout))
            .clone()
    }
}

fn build(connect_timeout: Duration) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}
