//! gw-data-plane: the reverse proxy that takes client traffic, fed live by the control plane.
//!
//! The crate is layered by concern; imports flow one way, downwards:
//!
//! ```text
//!   proxy/ (request path)    telemetry/ (metrics, reports, admin)
//!        |        \             |          |
//!        |         \          health        |
//!        |          \          |            |
//!        |           config/ (sync, cache, snapshot, router, gateway)
//!        |          /     |      \
//!     limiter/ (buckets, policies)  upstream/ (endpoints, balancer, pool)
//!          \              |
//!           stats (counters)        shutdown (the stop signal)
//! ```
//!
//! - `stats`: the counters the request path bumps; imports nothing else of the crate.
//! - `access_log`: one line per request, queued raw by the request path and formatted and
//!   written by its own thread; imports nothing else of the crate.
//! - `auth`: JWT verification and JWKS fetching; imports nothing else of the crate.
//! - `fds`: the file-descriptor limit and its split between client connections, upstream
//!   connections and health checks; imports nothing else of the crate.
//! - `limiter`: token buckets per (policy, key), GLOBAL policies counted in Redis
//!   (`limiter::global`, `limiter::redis`), and applying a service's policies to one request
//!   (`limiter::policy`).
//! - `auth`: API keys of consumers (an immutable map of their hashes), the credential taken
//!   out of the request and the `X-Consumer-*` headers put in, the per-address limit on
//!   failed attempts. Beside `limiter`, above `stats`.
//! - `upstream`: endpoints with their health state, round robin, pooled backend connections.
//! - `config`: the `StreamConfig` client, the on-disk cache, compilation of a version into an
//!   immutable `Snapshot`, and `Gateway`, the shared state that holds it.
//! - `health`: active checks per endpoint (passive ejection is `upstream::balancer`'s).
//! - `proxy`: the worker threads (a current-thread runtime and a socket each), the accept
//!   loop, routing, rate limiting and forwarding of one request.
//! - `telemetry`: Prometheus rendering, reports to the control plane, the admin listener.
//!
//! `serve` (here) wires them together; it is the only place that knows them all. The client
//! listeners are served by `proxy::workers`' threads; everything else (config sync, health
//! checks, reports, the admin listener) runs on the runtime that calls `serve`.
//!
//! **Invariant:** the request path never takes a lock on shared state (the limiter's own
//! per-key synchronization aside) and never waits for config application: it loads one
//! immutable `Snapshot` per request.

pub mod access_log;
pub mod auth;
pub mod config;
pub mod fds;
pub mod health;
pub mod limiter;
pub mod proxy;
pub mod shutdown;
pub mod stats;
pub mod telemetry;
pub mod tls;
pub mod upstream;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::cache;
use crate::config::gateway::Gateway;
use crate::config::snapshot::{self, NodeDefaults};
use crate::config::sync::{self as config_sync, ConfigSink, Credentials, SyncConfig, SyncStatus};
use crate::proxy::Proxy;
use crate::proxy::headers::{RequestIds, TrustedProxies};
use crate::proxy::server::{self, Limits};
use crate::proxy::workers;
use crate::shutdown::signalled;
use crate::telemetry::{admin, report};
use crate::upstream::client::Clients;
use crate::upstream::connect::{Caps, DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT};
use crate::upstream::dns::Resolver;

/// Default per-policy cap on tracked rate-limit keys: about 70 MB per policy at the limiter's
/// target of 70 bytes per key, enough for a large flood of distinct client IPs.
pub const DEFAULT_RATE_LIMIT_MAX_KEYS: usize = 1_000_000;
/// Default time a client has to send its request headers. Long enough for slow mobile links,
/// short enough that a slowloris client cannot hold connections for long.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default largest request head. 64 KiB is what nginx's `large_client_header_buffers` allows
/// by default (4 x 8k) with margin; anything bigger is almost always abuse.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Default time a new client connection has to send its first byte: the header timeout's
/// length, so a connection that sends nothing is held no longer than one that dribbles.
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a client connection may stay idle between requests. Above the 60 s idle
/// timeout of common load balancers in front (as nginx's 75 s), so they close first and never
/// send a request onto a connection we are closing.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// Default time in-flight requests get to finish on shutdown (below the 30 s a container
/// orchestrator usually waits before SIGKILL).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// Reports queued while the control plane is unreachable; beyond this they are dropped, which
/// loses nothing (full health is resent on connect; counters are cumulative).
const REPORTS_CAPACITY: usize = 64;
/// Longest wait at shutdown for the access log to write what is queued.
const ACCESS_LOG_FINISH: Duration = Duration::from_secs(5);
/// How often idle, full token buckets are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Everything `serve` needs besides its listeners.
#[derive(Debug, Clone)]
pub struct Config {
    /// Control-plane URL, e.g. `http://127.0.0.1:50051`.
    pub control_plane: String,
    /// This node's id.
    pub node_id: String,
    /// Where applied configs are cached; `None`: no cache.
    pub cache_file: Option<PathBuf>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
    /// Per-policy cap on tracked rate-limit keys.
    pub rate_limit_max_keys: usize,
    /// Time a client has to send its request headers.
    pub header_read_timeout: Duration,
    /// Largest request head accepted.
    pub max_header_bytes: usize,
    /// Time in-flight requests get to finish on shutdown.
    pub shutdown_grace: Duration,
    /// Time between stats reports to the control plane.
    pub stats_interval: Duration,
    /// Longest wait for the next bytes of a client's request body.
    pub request_body_timeout: Duration,
    /// Longest wait for the next bytes of a backend's response body.
    pub response_body_timeout: Duration,
    /// Time a new client connection has to send its first byte.
    pub first_byte_timeout: Duration,
    /// Time a client connection may stay idle between requests.
    pub idle_timeout: Duration,
    /// Open client connections at most (beyond, new ones wait in the listen backlog).
    pub max_connections: usize,
    /// Open upstream connections at most, all endpoints together.
    pub max_upstream_connections: usize,
    /// Open upstream connections at most to one endpoint.
    pub max_connections_per_endpoint: usize,
    /// An idle keep-alive connection to a backend is closed after this long unused.
    pub upstream_idle_timeout: Duration,
    /// Idle keep-alive connections kept per endpoint and worker thread; 0: none.
    pub upstream_max_idle: usize,
    /// Health checks in flight at once at most.
    pub max_health_probes: usize,
    /// How endpoint host names are resolved (bounded and timed out; tests swap the lookup).
    pub resolver: Resolver,
    /// TLS trust, client certificate and node token towards the control plane.
    pub credentials: Credentials,
    /// When set, `/config` and `/metrics` on the admin listener need
    /// `authorization: Bearer <token>` (`/healthz` and `/readyz` stay open for probes).
    pub admin_token: Option<gw_tls::Secret>,
    /// Serve the admin listener over TLS with this certificate and key (PEM files), read
    /// again on SIGHUP and when they change.
    pub admin_tls: Option<(PathBuf, PathBuf)>,
    /// How often the admin TLS files are compared with what is loaded.
    pub admin_tls_reload_interval: Duration,
    /// The Redis that counts GLOBAL rate-limit policies; `None`: each node enforces its share.
    pub rate_limit_store: Option<limiter::redis::StoreConfig>,
    /// The access log: where, in which format, how many lines may wait for the writer.
    pub access_log: access_log::Settings,
    /// Failed authentications allowed per client address and `auth_failure_period`; then
    /// 429 until the bucket refills (see `auth`).
    pub auth_failure_limit: u64,
    /// The period of `auth_failure_limit`.
    pub auth_failure_period: Duration,
    /// CA certificates (a PEM file) trusted for `https://` JWKS URLs in addition to the
    /// system's trust store, read at start; `None`: the system's trust store only.
    pub jwks_ca_cert: Option<PathBuf>,
    /// Worker threads serving the client listeners, each with its own runtime and socket
    /// (see `proxy::workers`); 1 to `proxy::workers::MAX_WORKER_THREADS`.
    pub worker_threads: usize,
}

impl Config {
    /// A config with every default, for `control_plane` and `node_id`. Connection caps are
    /// split from the process's file-descriptor limit as it is now (see [`fds::FdBudget`]).
    pub fn new(control_plane: impl Into<String>, node_id: impl Into<String>) -> Self {
        let budget = fds::FdBudget::current();
        Self {
            control_plane: control_plane.into(),
            node_id: node_id.into(),
            cache_file: None,
            trusted_proxies: TrustedProxies::default(),
            rate_limit_max_keys: DEFAULT_RATE_LIMIT_MAX_KEYS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            stats_interval: report::DEFAULT_STATS_INTERVAL,
            request_body_timeout: snapshot::DEFAULT_REQUEST_BODY_TIMEOUT,
            response_body_timeout: snapshot::DEFAULT_RESPONSE_BODY_TIMEOUT,
            first_byte_timeout: DEFAULT_FIRST_BYTE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: budget.client_connections,
            max_upstream_connections: budget.upstream_connections,
            max_connections_per_endpoint: DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT,
            upstream_idle_timeout: upstream::pool::DEFAULT_IDLE_TIMEOUT,
            upstream_max_idle: upstream::pool::DEFAULT_MAX_IDLE,
            max_health_probes: budget.health_probes,
            resolver: Resolver::default(),
            credentials: Credentials::default(),
            admin_token: None,
            admin_tls: None,
            admin_tls_reload_interval: gw_tls::reload::RELOAD_POLL,
            rate_limit_store: None,
            access_log: access_log::Settings::default(),
            auth_failure_limit: auth::DEFAULT_AUTH_FAILURE_LIMIT,
            auth_failure_period: auth::DEFAULT_AUTH_FAILURE_PERIOD,
            jwks_ca_cert: None,
            worker_threads: proxy::workers::default_threads(),
        }
    }
}

/// Why `serve` could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener's address could not be read.
    #[error("listener: {0}")]
    Listener(#[source] std::io::Error),
    /// The TLS listener's or the admin listener's TLS could not be set up.
    #[error("TLS: {0}")]
    Tls(String),
    /// The worker threads could not start (their sockets, runtimes or threads).
    #[error("worker threads: {0}")]
    Workers(#[source] std::io::Error),
    /// A setting is unusable.
    #[error("invalid setting {setting}: {reason}")]
    InvalidConfig {
        /// The setting.
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// The data plane's listeners, already bound.
#[derive(Debug)]
pub struct Listeners {
    /// Client traffic, plain HTTP.
    pub proxy: TcpListener,
    /// Client traffic over TLS (HTTPS), with the certificates from the control plane.
    pub tls: Option<TcpListener>,
    /// `/healthz`, `/readyz`, `/config`, `/metrics`.
    pub admin: TcpListener,
}

/// Runs the data plane: the proxy on `proxy`, the admin endpoints on `admin`, config from the
/// control plane (after the cached config, if any), until `shutdown` resolves. Then it stops
/// accepting, lets in-flight requests finish for up to `config.shutdown_grace`, and returns.
pub async fn serve(
    config: Config,
    proxy: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let listeners = Listeners {
        proxy,
        tls: None,
        admin,
    };
    serve_with(config, listeners, shutdown).await
}

/// [`serve`], with an HTTPS listener too when `listeners.tls` is set.
pub async fn serve_with(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let Listeners {
        proxy,
        tls: tls_listener,
        admin,
    } = listeners;
    for (setting, n) in [
        ("rate_limit_max_keys", config.rate_limit_max_keys),
        ("max_connections", config.max_connections),
        ("max_upstream_connections", config.max_upstream_connections),
        (
            "max_connections_per_endpoint",
            config.max_connections_per_endpoint,
        ),
        ("max_health_probes", config.max_health_probes),
        ("worker_threads", config.worker_threads),
        (
            "auth_failure_limit",
            usize::try_from(config.auth_failure_limit).unwrap_or(usize::MAX),
        ),
    ] {
        if n == 0 {
            return Err(ServeError::InvalidConfig {
                setting,
                reason: "must be at least 1".into(),
            });
        }
    }
    if config.worker_threads > proxy::workers::MAX_WORKER_THREADS {
        return Err(ServeError::InvalidConfig {
            setting: "worker_threads",
            reason: format!(
                "{} is more than {}",
                config.worker_threads,
                proxy::workers::MAX_WORKER_THREADS
            ),
        });
    }
    gw_tls::install_provider();
    for (setting, d) in [
        ("stats_interval", config.stats_interval),
        ("request_body_timeout", config.request_body_timeout),
        ("response_body_timeout", config.response_body_timeout),
        ("first_byte_timeout", config.first_byte_timeout),
        ("idle_timeout", config.idle_timeout),
        ("upstream_idle_timeout", config.upstream_idle_timeout),
        ("auth_failure_period", config.auth_failure_period),
    ] {
        if d.is_zero() {
            return Err(ServeError::InvalidConfig {
                setting,
                reason: "must be positive".into(),
            });
        }
    }
    let (log, log_writer) =
        access_log::start(&config.access_log).map_err(|reason| ServeError::InvalidConfig {
            setting: "access_log",
            reason,
        })?;
    let admin_cert = match &config.admin_tls {
        Some((cert, key)) => Some(Arc::new(
            gw_tls::reload::ServerCert::load(cert.clone(), key.clone())
                .map_err(|e| ServeError::Tls(format!("--admin-tls-cert/--admin-tls-key: {e}")))?,
        )),
        None => None,
    };
    let admin_tls = match &admin_cert {
        Some(cert) => Some(
            tls::server_config(cert.clone())
                .map(tokio_rustls::TlsAcceptor::from)
                .map_err(|e| ServeError::Tls(format!("admin listener: {e}")))?,
        ),
        None => None,
    };
    let started_at = std::time::SystemTime::now();
    let proxy_addr = proxy.local_addr().map_err(ServeError::Listener)?;
    let admin_addr = admin.local_addr().map_err(ServeError::Listener)?;
    if let Some(store) = &config.rate_limit_store
        && let Err(problems) = store.check()
    {
        return Err(ServeError::InvalidConfig {
            setting: "rate_limit_store",
            reason: problems.join("; "),
        });
    }
    let jwks_tls = match &config.jwks_ca_cert {
        Some(path) => Some(
            upstream::tls::config_with_extra_roots(path).map_err(|reason| {
                ServeError::InvalidConfig {
                    setting: "jwks_ca_cert",
                    reason,
                }
            })?,
        ),
        None => None,
    };
    let status = Arc::new(SyncStatus::default());
    let store = config
        .rate_limit_store
        .clone()
        .map(limiter::redis::RedisStore::new);
    let mut gw = Gateway::with_store(config.rate_limit_max_keys, status.clone(), store.clone());
    gw.reuse.defaults = NodeDefaults {
        request_body_timeout: config.request_body_timeout,
        response_body_timeout: config.response_body_timeout,
    };
    gw.reuse.clients = Clients::new(
        Caps::new(
            config.max_connections_per_endpoint,
            config.max_upstream_connections,
        ),
        config.resolver.clone(),
        upstream::pool::Settings {
            idle_timeout: config.upstream_idle_timeout,
            max_idle: config.upstream_max_idle,
        },
    );
    gw.auth_failures = auth::FailureLimiter::new(
        config.auth_failure_limit,
        config.auth_failure_period,
        config.rate_limit_max_keys,
    );
    // Before the cached config is compiled: its JWKS sources start with this trust.
    gw.reuse.jwks_tls = jwks_tls;
    gw.global.worker_connections = stats::WorkerConnections::new(config.worker_threads);
    let gw = Arc::new(gw);

    load_cache(&gw, &config);
    if !gw.is_ready() {
        tracing::warn!(
            control_plane = %config.control_plane,
            "no config yet (no usable cache): answering 503 on every route until the control plane sends one"
        );
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    // Health checking and reporting: changes flow checker -> reporter -> config sync.
    let board = Arc::new(health::Board::default());
    let (changes_tx, changes_rx) = tokio::sync::mpsc::unbounded_channel();
    let (reports_tx, reports_rx) = tokio::sync::mpsc::channel(REPORTS_CAPACITY);
    tasks.spawn(health::run(
        gw.clone(),
        board.clone(),
        changes_tx,
        config.max_health_probes,
        stop_rx.clone(),
    ));
    tasks.spawn(
        report::Reporter {
            gw: gw.clone(),
            board,
            changes: changes_rx,
            status: status.clone(),
            out: reports_tx,
            interval: config.stats_interval,
            started_at,
            summarised: false,
            consumers: Default::default(),
        }
        .run(stop_rx.clone()),
    );
    tasks.spawn(config_sync::run_with_reports(
        SyncConfig {
            control_plane: config.control_plane.clone(),
            node_id: config.node_id.clone(),
            listen_address: proxy_addr.to_string(),
            admin_address: admin_addr.to_string(),
            cache_file: config.cache_file.clone(),
            credentials: config.credentials.clone(),
        },
        gw.clone() as Arc<dyn ConfigSink>,
        status,
        reports_rx,
        signalled(stop_rx.clone()),
    ));
    tasks.spawn(sweep(gw.clone(), stop_rx.clone()));
    if let Some(store) = store {
        // Connects, probes and recovers the store off the request path.
        tasks.spawn(store.run(stop_rx.clone()));
    }

    let limits = Limits {
        header_read_timeout: config.header_read_timeout,
        max_header_bytes: config.max_header_bytes,
        first_byte_timeout: config.first_byte_timeout,
        idle_timeout: config.idle_timeout,
        max_connections: config.max_connections,
    };
    let admin_limits = Limits {
        max_connections: fds::ADMIN_MAX_CONNECTIONS,
        ..limits
    };
    let admin = server::Listener::alone(admin, admin_tls, admin_limits.max_connections)
        .map_err(ServeError::Listener)?;
    if let Some(cert) = admin_cert {
        // Before the start-up line: from then on a SIGHUP reloads rather than ends the process.
        let watcher = gw_tls::reload::Watcher::new(
            "admin listener TLS certificate",
            cert.paths(),
            config.admin_tls_reload_interval,
        );
        tasks.spawn(watcher.run(move || cert.reload(), stop_rx.clone()));
    }
    if let Some(writer) = &log_writer
        && matches!(config.access_log.target, access_log::Target::File(_))
        && let Some(reopen) = writer.reopener().on_signals(signalled(stop_rx.clone()))
    {
        tasks.spawn(reopen);
    }
    let admin_gw = gw.clone();
    let admin_auth = admin::AdminAuth::new(config.admin_token.as_ref());
    let log_counters = log.counters().clone();
    tasks.spawn(server::run(
        admin,
        admin_limits,
        move |_peer, req| {
            admin::handle(
                admin_gw.clone(),
                admin_auth.clone(),
                log_counters.clone(),
                req,
            )
        },
        stop_rx.clone(),
        config.shutdown_grace,
    ));
    let tls_addr = match &tls_listener {
        Some(l) => Some(l.local_addr().map_err(ServeError::Listener)?),
        None => None,
    };
    let proxy_state = Arc::new(Proxy {
        gw: gw.clone(),
        trusted: config.trusted_proxies.clone(),
        ids: RequestIds::default(),
        https_port: tls_addr.map(|a| a.port()),
        tunnel_idle_timeout: config.idle_timeout,
        log,
    });
    let tls = match tls_listener {
        Some(listener) => {
            let acceptor = tls::server_config(gw.certificates.clone())
                .map(tokio_rustls::TlsAcceptor::from)
                .map_err(|e| ServeError::Tls(e.to_string()))?;
            Some((listener, acceptor))
        }
        None => None,
    };
    let running = workers::start(
        workers::Spec {
            threads: config.worker_threads,
            limits,
            grace: config.shutdown_grace,
        },
        workers::Sockets { plain: proxy, tls },
        &gw.global.worker_connections,
        move |peer, https, req| proxy::forward::handle(proxy_state.clone(), peer, https, req),
        stop_rx,
    )
    .map_err(ServeError::Workers)?;
    tracing::info!(%proxy_addr, https = ?tls_addr, %admin_addr, node_id = %config.node_id,
        workers = config.worker_threads, "data plane listening");
    running.finished().await;
    while tasks.join_next().await.is_some() {}
    if let Some(writer) = log_writer {
        // Every request has ended; write what they logged.
        writer.finish(ACCESS_LOG_FINISH).await;
    }
    tracing::info!("data plane stopped");
    Ok(())
}

fn load_cache(gw: &Gateway, config: &Config) {
    let Some(path) = &config.cache_file else {
        return;
    };
    match cache::load(path) {
        Ok(Some((version, snapshot))) => match gw.apply(version, &snapshot) {
            Ok(()) => tracing::info!(
                "serving cached config version {version} from {}",
                path.display()
            ),
            Err(reason) => tracing::warn!(
                "cached config version {version} in {} is unusable: {reason}",
                path.display()
            ),
        },
        Ok(None) => tracing::info!("no cached config at {}", path.display()),
        Err(e) => tracing::warn!("{e}; starting without a cached config"),
    }
}

/// Evicts full, idle token buckets every [`SWEEP_INTERVAL`].
async fn sweep(gw: Arc<Gateway>, stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stopped = signalled(stop);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut stopped => return,
        }
        // On the blocking pool: a sweep over a million buckets takes tens of milliseconds,
        // and this runtime (one thread) also drives the Redis connection, whose replies would
        // wait that long unread and time out the GLOBAL limiter's decisions.
        let gw = gw.clone();
        let swept = tokio::task::spawn_blocking(move || {
            let now = Instant::now();
            for limiter in gw.reuse.limiters.all() {
                limiter.sweep(now);
            }
            for global in gw.reuse.globals.all() {
                global.sweep(now);
            }
            gw.auth_failures.sweep(now);
        })
        .await;
        if let Err(e) = swept {
            tracing::error!(error = %e, "rate-limit bucket sweep failed");
        }
    }
}
