//! Connections to backends: one pooled keep-alive HTTP/1.1 client per distinct connect
//! timeout, shared by every service that uses that timeout and kept across config versions (so
//! a config update does not drop warm connections).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::fds::FdBudget;
use crate::upstream::body::RequestBody;
use crate::upstream::connect::{CappedConnector, Caps, DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT};
use crate::upstream::dns::Resolver;

/// The body sent upstream: the client's streamed body, watched, or nothing (which is also
/// what a retry sends, since only bodyless requests are retried).
pub type UpstreamBody = Either<RequestBody, Empty<Bytes>>;

/// A pooled client.
pub type UpstreamClient = Client<CappedConnector, UpstreamBody>;

/// How long an idle pooled connection is kept. Below the 60 s idle timeout common in backends
/// (nginx keepalive_timeout 75 s, Node 5 s aside), so we rarely reuse a connection the backend
/// is about to close.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// Idle connections kept per backend. Enough to absorb bursts without hoarding sockets.
const POOL_MAX_IDLE_PER_HOST: usize = 256;

/// Clients by connect timeout, all under one set of connection caps.
#[derive(Debug)]
pub struct Clients {
    caps: Arc<Caps>,
    resolver: Resolver,
    by_connect_timeout: Mutex<HashMap<Duration, UpstreamClient>>,
}

impl Default for Clients {
    /// The default per-endpoint cap, and this process's file-descriptor share for the total.
    fn default() -> Self {
        Self::new(
            Caps::new(
                DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT,
                FdBudget::current().upstream_connections,
            ),
            Resolver::default(),
        )
    }
}

impl Clients {
    /// Clients whose connections count against `caps`, resolving names with `resolver`.
    pub fn new(caps: Arc<Caps>, resolver: Resolver) -> Self {
        Self {
            caps,
            resolver,
            by_connect_timeout: Mutex::default(),
        }
    }

    /// The resolver every client (and health check) uses.
    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// The caps every client's connections count against.
    pub fn caps(&self) -> &Arc<Caps> {
        &self.caps
    }

    /// The client for `connect_timeout`, created on first use. Off the request path.
    pub fn get(&self, connect_timeout: Duration) -> UpstreamClient {
        let mut map = self
            .by_connect_timeout
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(connect_timeout)
            .or_insert_with(|| build(connect_timeout, self.caps.clone(), self.resolver.clone()))
            .clone()
    }
}

fn build(connect_timeout: Duration, caps: Arc<Caps>, resolver: Resolver) -> UpstreamClient {
    let mut http = HttpConnector::new_with_resolver(resolver);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let connector = CappedConnector::new(http, caps, connect_timeout);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}
