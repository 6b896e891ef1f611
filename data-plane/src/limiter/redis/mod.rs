//! The Redis store that counts GLOBAL rate-limit policies for the whole fleet: one connection
//! (multiplexed: every decision of this node shares it), one atomic Lua script per decision,
//! a short timeout on every call, and a circuit breaker.
//!
//! # Failure handling
//!
//! A decision never waits on Redis longer than `timeout` (default 5 ms: a round trip on a LAN
//! is a few hundred microseconds, so anything slower is a sick store, and a request must not
//! pay for it). [`FAILURES_TO_OPEN`] failures in a row open the breaker: the store is *down*
//! and decisions stop asking it at once, falling back to each policy's `on_store_error`
//! (see `limiter::global`). A background task ([`RedisStore::run`]) pings Redis every
//! [`PROBE_INTERVAL`] while down and closes the breaker on the first answer, so counting in
//! Redis resumes within a fraction of a second of Redis returning; while up, it pings every
//! [`HEALTH_INTERVAL`] so that a store that died while the node was idle is noticed too.
//!
//! Each change of state is logged once (warn going down, with the reason; info coming back),
//! counted (`gw_rate_limit_store_transitions_total`), exported as the gauge
//! `gw_rate_limit_store_up`, and reported to the control plane for `gwctl nodes`. A node
//! started with an unreachable or misconfigured Redis (wrong host, wrong password, not a
//! cluster) starts anyway, down, and says why in that one log line and in `gwctl nodes`.
//!
//! Errors that are not about reaching Redis (a key of the wrong type under the prefix) fail
//! that one decision (it falls back) without touching the breaker, and are logged at most
//! once per [`BAD_KEY_LOG_EVERY`].
//!
//! # Secrets
//!
//! The URL may carry a password. It is held as [`RedisUrl`], whose `Debug` prints `***`;
//! logs, errors and reports show [`RedisUrl::redacted`], and every error text from the client
//! library is scrubbed of the password before it is kept.

mod url;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use tokio::sync::watch;

pub use url::{RedisUrl, UrlError};

/// Default time a decision waits for Redis: see the module docs.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(5);
/// Default key prefix: several gateways (or other programs) can share one Redis by choosing
/// their own.
pub const DEFAULT_PREFIX: &str = "gw:rl:";
/// Consecutive failed calls that open the breaker. One lost packet is not an outage; three in
/// a row at a few milliseconds each is, and costs at most three requests a timeout.
pub const FAILURES_TO_OPEN: u32 = 3;
/// How often a down store is probed: recovery is noticed within this (plus a connect).
pub const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// How often an up store is pinged, so an idle node notices a dead store too.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// Time a probe may take (or a decision's timeout, if longer): longer than a decision's
/// timeout, since a probe waits on no request and a reconnect (TCP + TLS + AUTH) takes
/// several round trips.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Time allowed to establish a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A key of the wrong type is logged at most this often (per node), not per request.
const BAD_KEY_LOG_EVERY: Duration = Duration::from_secs(60);
/// Upper bounds (seconds) of the round-trip latency histogram.
pub const LATENCY_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];

/// What was asked of the store: where it is and how long a decision may wait.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// One URL for a standalone Redis; the seed nodes for a cluster.
    pub urls: Vec<RedisUrl>,
    /// Connect as a Redis Cluster client.
    pub cluster: bool,
    /// Longest wait for one decision.
    pub timeout: Duration,
    /// Prefix of every key.
    pub prefix: String,
}

impl StoreConfig {
    /// A standalone store at `url` with the defaults.
    pub fn new(url: RedisUrl) -> Self {
        Self {
            urls: vec![url],
            cluster: false,
            timeout: DEFAULT_TIMEOUT,
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }

    /// Checks the settings together, naming every problem.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.urls.is_empty() {
            problems.push("--redis-url: no URL given".to_owned());
        }
        if self.urls.len() > 1 && !self.cluster {
            problems.push(format!(
                "--redis-url: {} URLs given for a standalone Redis; add --redis-cluster for a \
                 Redis Cluster, or give one URL",
                self.urls.len()
            ));
        }
        if self.timeout.is_zero() {
            problems.push("--redis-timeout: must be positive".to_owned());
        }
        if self.prefix.is_empty() {
            problems.push("--redis-prefix: must not be empty".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// One decision's answer from the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Tokens taken (0: rejected).
    pub granted: u64,
    /// Whole tokens left in the fleet's bucket.
    pub remaining: u64,
    /// Microseconds until one token is available (0: now).
    pub until_one_us: u64,
    /// Microseconds until the tokens wanted are available.
    pub until_want_us: u64,
    /// Microseconds until the bucket is full.
    pub until_full_us: u64,
}

/// A policy's rate in the script's units (see `decide.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScriptRate {
    /// Units per microsecond (the limit).
    pub per_us: u64,
    /// Units per token (the period in microseconds).
    pub token: u64,
    /// Capacity in units.
    pub cap: u64,
}

/// Why a decision could not be made in Redis.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The breaker is open (or the store never connected): Redis was not asked.
    #[error("rate-limit store unavailable")]
    Unavailable,
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Could not reach Redis or lost the connection.
    #[error("connection: {0}")]
    Connection(String),
    /// Redis refused the credentials.
    #[error("authentication: {0}")]
    Auth(String),
    /// The key holds something gw did not write (wrong type or value).
    #[error("bad key: {0}")]
    BadKey(String),
    /// Anything else Redis or the client library reported.
    #[error("{0}")]
    Other(String),
}

impl StoreError {
    /// The metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Timeout(_) => "timeout",
            Self::Connection(_) => "connection",
            Self::Auth(_) => "auth",
            Self::BadKey(_) => "bad_key",
            Self::Other(_) => "other",
        }
    }

    /// Whether the error says something about reaching Redis (and so counts for the breaker).
    fn is_outage(&self) -> bool {
        !matches!(self, Self::BadKey(_) | Self::Unavailable)
    }
}

/// Error kinds, in the order of [`StoreCounters::errors`].
pub const ERROR_KINDS: [&str; 5] = ["timeout", "connection", "auth", "bad_key", "other"];

/// The connection: one multiplexed connection (reconnecting) or a cluster client's.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// What the store's counters say, for `/metrics`.
#[derive(Debug, Default)]
pub struct StoreCounters {
    /// Calls made (decisions and probes that reached the network).
    pub round_trips: AtomicU64,
    /// Failed calls by kind, in the order of [`ERROR_KINDS`].
    pub errors: [AtomicU64; 5],
    /// Round-trip latency histogram (non-cumulative counts; one more than the bounds).
    pub latency: [AtomicU64; 11],
    /// Sum of the latencies, microseconds.
    pub latency_sum_us: AtomicU64,
    /// Times the store went down.
    pub went_down: AtomicU64,
    /// Times the store came back.
    pub came_up: AtomicU64,
}

/// The state the breaker is in, for reports and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreState {
    /// Whether decisions go to Redis.
    pub up: bool,
    /// Why not (empty when up).
    pub error: String,
    /// Since when.
    pub since: Instant,
}

/// The Redis store. Shared as `Arc`; the request path calls [`RedisStore::decide`].
pub struct RedisStore {
    config: StoreConfig,
    /// `None` until connected (a cluster connects in the background).
    conn: ArcSwapOption<Conn>,
    script: redis::Script,
    up: AtomicBool,
    failures: AtomicU32,
    /// Why down, and since when; written only on state changes and probes.
    state: Mutex<(String, Instant)>,
    /// Wakes the probe task as soon as the breaker opens.
    opened: watch::Sender<()>,
    bad_key_logged: Mutex<Option<Instant>>,
    /// Counters for `/metrics`.
    pub counters: StoreCounters,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("at", &self.describe())
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store for `config`, down until [`RedisStore::run`] connects it. Never fails: a
    /// store that cannot be set up stays down with the reason (see the module docs).
    pub fn new(config: StoreConfig) -> Arc<Self> {
        ensure_crypto_provider();
        let store = Arc::new(Self {
            conn: ArcSwapOption::empty(),
            script: redis::Script::new(include_str!("decide.lua")),
            up: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            state: Mutex::new(("not connected yet".to_owned(), Instant::now())),
            opened: watch::Sender::new(()),
            bad_key_logged: Mutex::new(None),
            counters: StoreCounters::default(),
            config,
        });
        if !store.config.cluster {
            // The manager connects lazily on the first call (the first probe), and
            // reconnects by itself after a connection is lost.
            match store.single() {
                Ok(conn) => store.conn.store(Some(Arc::new(Conn::Single(conn)))),
                Err(e) => store.set_reason(store.scrub(&e)),
            }
        }
        store
    }

    fn single(&self) -> Result<ConnectionManager, String> {
        let url = self.config.urls.first().ok_or("no URL")?;
        let client = redis::Client::open(connection_info(url)?).map_err(|e| e.to_string())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(self.probe_timeout()))
            // Reconnects are driven by our probes; the manager's own retries are kept short
            // so that a probe's answer reflects the store now.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(PROBE_INTERVAL);
        ConnectionManager::new_lazy_with_config(client, config).map_err(|e| e.to_string())
    }

    async fn cluster(&self) -> Result<ClusterConnection, String> {
        let urls: Vec<&str> = self.config.urls.iter().map(RedisUrl::expose).collect();
        let client = redis::cluster::ClusterClientBuilder::new(urls)
            .tcp_settings(tcp_settings())
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(self.probe_timeout())
            .retries(1)
            .build()
            .map_err(|e| e.to_string())?;
        client
            .get_async_connection()
            .await
            .map_err(|e| e.to_string())
    }

    /// The longest a probe (or the client library, for any call) waits for an answer: at
    /// least a decision's timeout, so that a store configured to wait long for decisions is
    /// not declared down by a quicker PING.
    fn probe_timeout(&self) -> Duration {
        PROBE_TIMEOUT.max(self.config.timeout)
    }

    /// Where the store is, without credentials (for logs, reports and `/config`).
    pub fn describe(&self) -> String {
        let urls: Vec<String> = self.config.urls.iter().map(RedisUrl::redacted).collect();
        if self.config.cluster {
            format!("cluster {}", urls.join(","))
        } else {
            urls.join(",")
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.config.prefix
    }

    /// Whether decisions go to Redis now.
    #[inline]
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The breaker's state.
    pub fn state(&self) -> StoreState {
        let (error, since) = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let up = self.is_up();
        StoreState {
            up,
            error: if up { String::new() } else { error },
            since,
        }
    }

    /// The longest a decision waits for Redis.
    pub fn timeout(&self) -> Duration {
        self.config.timeout
    }

    /// Takes up to `want` tokens from the bucket `key`. Waits at most the configured timeout;
    /// fails at once while the breaker is open.
    pub async fn decide(
        &self,
        key: &[u8],
        rate: ScriptRate,
        want: u64,
    ) -> Result<Reply, StoreError> {
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        self.decide_until(key, rate, want, deadline).await
    }

    /// [`RedisStore::decide`], waiting at most until `deadline` (a request that already
    /// waited for another round trip has less than the whole timeout left).
    pub async fn decide_until(
        &self,
        key: &[u8],
        rate: ScriptRate,
        want: u64,
        deadline: tokio::time::Instant,
    ) -> Result<Reply, StoreError> {
        if !self.is_up() {
            return Err(StoreError::Unavailable);
        }
        let Some(conn) = self.conn.load_full() else {
            return Err(StoreError::Unavailable);
        };
        let mut invocation = self.script.key(key);
        invocation
            .arg(rate.per_us)
            .arg(rate.token)
            .arg(rate.cap)
            .arg(want.max(1));
        let started = Instant::now();
        // What this call was allowed: the whole timeout, or less when the request brought an
        // earlier deadline (it waited for another round trip for the same key first).
        let budget = deadline.saturating_duration_since(tokio::time::Instant::from_std(started));
        let call = async {
            match &*conn {
                Conn::Single(c) => invocation.invoke_async::<Vec<u64>>(&mut c.clone()).await,
                Conn::Cluster(c) => invocation.invoke_async::<Vec<u64>>(&mut c.clone()).await,
            }
        };
        let result = match tokio::time::timeout_at(deadline, call).await {
            Ok(Ok(v)) => parse_reply(&v),
            Ok(Err(e)) => Err(self.classify(&e)),
            Err(_) => Err(StoreError::Timeout(self.config.timeout)),
        };
        let took = started.elapsed();
        self.record(took, &result, cut_short(budget, self.config.timeout));
        result
    }

    /// Test support: the script with a fixed clock (`now_us`), bypassing the breaker.
    #[doc(hidden)]
    pub async fn decide_at(
        &self,
        key: &[u8],
        rate: ScriptRate,
        want: u64,
        now_us: u64,
    ) -> Result<Reply, StoreError> {
        let conn = self.conn.load_full().ok_or(StoreError::Unavailable)?;
        let mut invocation = self.script.key(key);
        invocation
            .arg(rate.per_us)
            .arg(rate.token)
            .arg(rate.cap)
            .arg(want.max(1))
            .arg(now_us);
        let v = match &*conn {
            Conn::Single(c) => invocation.invoke_async::<Vec<u64>>(&mut c.clone()).await,
            Conn::Cluster(c) => invocation.invoke_async::<Vec<u64>>(&mut c.clone()).await,
        };
        v.map_err(|e| self.classify(&e))
            .and_then(|v| parse_reply(&v))
    }

    fn record(&self, took: Duration, result: &Result<Reply, StoreError>, cut_short: bool) {
        let c = &self.counters;
        c.round_trips.fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(LATENCY_BUCKETS.len());
        if let Some(b) = c.latency.get(bucket) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        c.latency_sum_us.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        match result {
            Ok(_) => {
                if self.failures.load(Ordering::Relaxed) != 0 {
                    self.failures.store(0, Ordering::Relaxed);
                }
            }
            Err(e) => {
                if let Some(i) = ERROR_KINDS.iter().position(|k| *k == e.kind()) {
                    c.errors[i].fetch_add(1, Ordering::Relaxed);
                }
                if e.is_outage() && !(cut_short && matches!(e, StoreError::Timeout(_))) {
                    let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                    if n >= FAILURES_TO_OPEN {
                        self.go_down(&e.to_string());
                    }
                } else if let StoreError::BadKey(why) = e {
                    self.log_bad_key(why);
                }
            }
        }
    }

    fn log_bad_key(&self, why: &str) {
        let now = Instant::now();
        let mut last = self
            .bad_key_logged
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|t| now.duration_since(t) >= BAD_KEY_LOG_EVERY) {
            *last = Some(now);
            tracing::warn!(store = %self.describe(), error = %why,
                "a rate-limit key in Redis holds something gw did not write; those requests \
                 use the policy's on_store_error (delete the key to fix; logged at most once a minute)");
        }
    }

    /// Opens the breaker (once: the first caller logs).
    fn go_down(&self, why: &str) {
        if self
            .up
            .compare_exchange(true, false, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            *self.state.lock().unwrap_or_else(PoisonError::into_inner) =
                (why.to_owned(), Instant::now());
            self.counters.went_down.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(store = %self.describe(), error = %why,
                "rate-limit store unreachable: GLOBAL policies now use their on_store_error \
                 (local share by default) until it answers again");
            self.opened.send_replace(());
        }
    }

    /// Closes the breaker (once: the first caller logs).
    fn go_up(&self) {
        self.failures.store(0, Ordering::Relaxed);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if self
            .up
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            let down_for = state.1.elapsed();
            let first = self.counters.went_down.load(Ordering::Relaxed) == 0
                && self.counters.came_up.load(Ordering::Relaxed) == 0;
            *state = (String::new(), Instant::now());
            drop(state);
            self.counters.came_up.fetch_add(1, Ordering::Relaxed);
            if first {
                tracing::info!(store = %self.describe(), "rate-limit store connected: GLOBAL policies are counted fleet-wide");
            } else {
                tracing::info!(store = %self.describe(), down_for = ?down_for,
                    "rate-limit store reachable again: GLOBAL policies are counted fleet-wide");
            }
        }
    }

    /// Records why the store is down without changing state (a failed probe while down).
    fn set_reason(&self, why: String) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.0 != why {
            let first = state.0 == "not connected yet";
            state.0 = why.clone();
            drop(state);
            if first {
                // The one line a node started against a bad Redis prints.
                tracing::warn!(store = %self.describe(), error = %why,
                    "rate-limit store unreachable: GLOBAL policies use their on_store_error \
                     (local share by default) until it answers");
            } else {
                tracing::debug!(store = %self.describe(), error = %why, "rate-limit store still unreachable");
            }
        }
    }

    /// Connects, probes and recovers until `stop` turns true (see the module docs).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut opened = self.opened.subscribe();
        loop {
            self.probe().await;
            let wait = if self.is_up() {
                HEALTH_INTERVAL
            } else {
                PROBE_INTERVAL
            };
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = opened.changed() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One health check: connect if needed, PING, and move the breaker.
    async fn probe(&self) {
        let probe_timeout = self.probe_timeout();
        if self.conn.load().is_none() && self.config.cluster {
            match tokio::time::timeout(probe_timeout, self.cluster()).await {
                Ok(Ok(c)) => self.conn.store(Some(Arc::new(Conn::Cluster(c)))),
                Ok(Err(e)) => return self.probe_failed(self.scrub(&e)),
                Err(_) => {
                    return self.probe_failed(format!(
                        "connecting to {}: no answer within {probe_timeout:?}",
                        self.describe()
                    ));
                }
            }
        }
        let Some(conn) = self.conn.load_full() else {
            return;
        };
        let ping = async {
            let cmd = redis::cmd("PING");
            match &*conn {
                Conn::Single(c) => cmd.query_async::<String>(&mut c.clone()).await,
                Conn::Cluster(c) => cmd.query_async::<String>(&mut c.clone()).await,
            }
        };
        match tokio::time::timeout(probe_timeout, ping).await {
            Ok(Ok(_)) => self.go_up(),
            Ok(Err(e)) => {
                let why = self.classify(&e).to_string();
                self.probe_failed(why);
            }
            Err(_) => self.probe_failed(format!("no answer to PING within {probe_timeout:?}")),
        }
    }

    fn probe_failed(&self, why: String) {
        if self.is_up() {
            self.go_down(&why);
        } else {
            self.set_reason(why);
        }
    }

    fn classify(&self, e: &redis::RedisError) -> StoreError {
        let text = self.scrub(&e.to_string());
        if e.code() == Some("WRONGTYPE") || e.code() == Some("GWBADVALUE") {
            return StoreError::BadKey(text);
        }
        match e.kind() {
            redis::ErrorKind::AuthenticationFailed => StoreError::Auth(text),
            _ if text.contains("WRONGPASS") || text.contains("NOAUTH") => StoreError::Auth(text),
            _ if e.is_timeout() => StoreError::Timeout(self.config.timeout),
            _ if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() => {
                StoreError::Connection(text)
            }
            _ => StoreError::Other(text),
        }
    }

    /// `text` with every password of the configured URLs replaced by `***`.
    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for url in &self.config.urls {
            if let Some(secret) = url.password()
                && !secret.is_empty()
            {
                out = out.replace(secret, "***");
            }
        }
        out
    }
}

/// The client's TCP settings: `TCP_NODELAY` on (redis-rs leaves Nagle's algorithm on by
/// default). Decisions share one pipelined connection, so with Nagle on, a decision written
/// while an earlier one is unanswered waits in the kernel until Redis's reply acknowledges the
/// earlier one: a whole extra round trip on the request path.
fn tcp_settings() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

/// Where and how to connect for `url`, with [`tcp_settings`].
fn connection_info(url: &RedisUrl) -> Result<redis::ConnectionInfo, String> {
    use redis::IntoConnectionInfo as _;
    Ok(url
        .expose()
        .into_connection_info()
        .map_err(|e| e.to_string())?
        .set_tcp_settings(tcp_settings()))
}

/// Whether a call allowed only `budget` of the store's `timeout` was cut short by the
/// request's own deadline, so that its timeout says nothing about Redis and must not count
/// towards the breaker.
///
/// Judged from the budget the call was given, not from how long it took. The deadline runs
/// from the request's start, and a request spends some of its timeout before it reaches the
/// store (parsing, other policies, a scheduler delay on a loaded machine); a timer fires
/// less than a millisecond after its deadline. So "took less than the timeout" holds for
/// many real timeouts too, and a store that hangs (rather than refusing connections) might
/// never open the breaker: every request would wait the whole timeout. A call with
/// at least half the timeout had many times a healthy round trip (the timeout is set far
/// above one) and still got no answer: that is the store's fault. Less than half means the
/// request had already waited for another round trip for the same key, which either
/// answered (and this call's short wait is the request's business) or timed out itself (and
/// was counted then).
fn cut_short(budget: Duration, timeout: Duration) -> bool {
    budget < timeout / 2
}

fn parse_reply(v: &[u64]) -> Result<Reply, StoreError> {
    match *v {
        [
            granted,
            remaining,
            until_one_us,
            until_want_us,
            until_full_us,
        ] => Ok(Reply {
            granted,
            remaining,
            until_one_us,
            until_want_us,
            until_full_us,
        }),
        _ => Err(StoreError::Other(format!(
            "unexpected script reply of {} values",
            v.len()
        ))),
    }
}

/// rustls needs a process-wide crypto provider before a TLS (`rediss://`) connection; the
/// workspace's is ring. The binaries install it at start; this covers embedders and tests.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may win the race; either way one ring provider is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_problems_are_all_named() {
        let url = |s: &str| RedisUrl::parse(s).unwrap();
        let mut c = StoreConfig::new(url("redis://127.0.0.1:6379"));
        assert_eq!(c.check(), Ok(()));
        c.urls.push(url("redis://127.0.0.1:6380"));
        c.timeout = Duration::ZERO;
        c.prefix.clear();
        let problems = c.check().unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("--redis-cluster"), "{problems:?}");
        c.cluster = true;
        assert_eq!(c.check().unwrap_err().len(), 2);
    }

    #[test]
    fn connections_turn_nagle_off() {
        let url = RedisUrl::parse("rediss://:hunter2@127.0.0.1:6380/2").unwrap();
        let info = connection_info(&url).unwrap();
        assert!(info.tcp_settings().nodelay());
        // The rest of the URL is kept.
        assert_eq!(info.redis_settings().db(), 2);
        assert!(matches!(
            info.addr(),
            redis::ConnectionAddr::TcpTls { port: 6380, .. }
        ));
        assert!(tcp_settings().nodelay());
    }

    #[test]
    fn replies_are_checked() {
        assert_eq!(
            parse_reply(&[1, 2, 3, 4, 5]),
            Ok(Reply {
                granted: 1,
                remaining: 2,
                until_one_us: 3,
                until_want_us: 4,
                until_full_us: 5
            })
        );
        assert!(parse_reply(&[1, 2]).is_err());
    }

    /// Log lines written while `f` runs.
    fn logs_of(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[tokio::test]
    async fn a_change_of_mode_is_logged_and_counted_once_each_way_not_per_request() {
        let store = RedisStore::new(StoreConfig::new(
            RedisUrl::parse("redis://:hunter2@127.0.0.1:1").unwrap(),
        ));
        let failed: Result<Reply, StoreError> =
            Err(StoreError::Connection("Connection refused".into()));
        let ok = Ok(Reply {
            granted: 1,
            remaining: 0,
            until_one_us: 0,
            until_want_us: 0,
            until_full_us: 0,
        });
        let took = Duration::from_millis(1);
        let logs = logs_of(|| {
            store.go_up();
            store.go_up();
            // Two failures are not an outage; the third opens the breaker, the rest of the
            // failing requests say nothing more.
            store.record(took, &failed, false);
            store.record(took, &failed, false);
            assert!(store.is_up());
            for _ in 0..50 {
                store.record(took, &failed, false);
            }
            assert!(!store.is_up());
            store.go_up();
            store.go_up();
            for _ in 0..50 {
                store.record(took, &ok, false);
            }
            // Timeouts cut short by a waiter's own deadline (it had waited for another round
            // trip for the key first) never open it.
            let waiter = DEFAULT_TIMEOUT / 4;
            for _ in 0..10 {
                store.record(
                    waiter,
                    &Err(StoreError::Timeout(DEFAULT_TIMEOUT)),
                    cut_short(waiter, DEFAULT_TIMEOUT),
                );
            }
            assert!(store.is_up());
        });
        let count = |needle: &str| logs.lines().filter(|l| l.contains(needle)).count();
        assert_eq!(count("rate-limit store connected"), 1, "{logs}");
        assert_eq!(count("rate-limit store unreachable"), 1, "{logs}");
        assert_eq!(count("rate-limit store reachable again"), 1, "{logs}");
        assert_eq!(logs.lines().count(), 3, "{logs}");
        assert!(logs.contains("WARN") && !logs.contains("hunter2"), "{logs}");
        let c = &store.counters;
        assert_eq!(
            (
                c.went_down.load(Ordering::Relaxed),
                c.came_up.load(Ordering::Relaxed)
            ),
            (1, 2)
        );
        assert_eq!(c.errors[1].load(Ordering::Relaxed), 52);
        assert_eq!(c.errors[0].load(Ordering::Relaxed), 10);
    }

    #[test]
    fn a_timeout_is_cut_short_only_when_the_call_was_given_less_than_half_the_timeout() {
        let ms = Duration::from_millis;
        let us = Duration::from_micros;
        for (budget, timeout, cut) in [
            // The whole timeout, or most of it (the request spent some before the store).
            (ms(5), ms(5), false),
            (ms(4), ms(5), false),
            (us(2_500), ms(5), false),
            (ms(250), ms(500), false),
            // It waited for another round trip for the same key first.
            (us(2_499), ms(5), true),
            (ms(1), ms(5), true),
            (Duration::ZERO, ms(5), true),
            (ms(100), ms(500), true),
        ] {
            assert_eq!(
                cut_short(budget, timeout),
                cut,
                "{budget:?} of a {timeout:?} timeout"
            );
        }
    }

    #[tokio::test]
    async fn real_timeouts_open_the_breaker_even_when_the_call_had_less_than_the_whole_timeout() {
        let store = RedisStore::new(StoreConfig::new(
            RedisUrl::parse("redis://127.0.0.1:1").unwrap(),
        ));
        store.go_up();
        let timeout = Err(StoreError::Timeout(DEFAULT_TIMEOUT));
        // Each call got its request's remaining budget and used all of it: the request had
        // spent 1 ms, 2 ms and 2.5 ms before reaching the store, so each call took less than
        // the configured timeout, and still Redis did not answer in time.
        let budgets = [ms(4), ms(3), Duration::from_micros(2_500)];
        for (i, budget) in budgets.into_iter().enumerate() {
            assert!(store.is_up(), "opened after {i} timeouts");
            store.record(budget, &timeout, cut_short(budget, DEFAULT_TIMEOUT));
        }
        assert!(
            !store.is_up(),
            "{FAILURES_TO_OPEN} real timeouts open the breaker"
        );
        assert_eq!(store.counters.went_down.load(Ordering::Relaxed), 1);
        assert_eq!(store.counters.errors[0].load(Ordering::Relaxed), 3);

        fn ms(n: u64) -> Duration {
            Duration::from_millis(n)
        }
    }

    #[tokio::test]
    async fn a_store_that_never_connected_fails_at_once_and_hides_its_password() {
        let store = RedisStore::new(StoreConfig::new(
            RedisUrl::parse("redis://:hunter2@127.0.0.1:1").unwrap(),
        ));
        let rate = ScriptRate {
            per_us: 1,
            token: 1_000_000,
            cap: 1_000_000,
        };
        assert_eq!(
            store.decide(b"k", rate, 1).await,
            Err(StoreError::Unavailable)
        );
        store.probe().await;
        let state = store.state();
        assert!(!state.up);
        assert!(!state.error.is_empty());
        for text in [state.error, format!("{store:?}"), store.describe()] {
            assert!(!text.contains("hunter2"), "{text}");
        }
    }
}
