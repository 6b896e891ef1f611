//! `gw-data-plane`: flags, logging, runtime, signals; everything else is in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use gw_data_plane::access_log::{self, Target};
use gw_data_plane::config::state_dir;
use gw_data_plane::config::sync::{Credentials, check_control_plane_url};
use gw_data_plane::fds::{self, FdBudget};
use gw_data_plane::limiter::redis::{self, RedisUrl, StoreConfig};
use gw_data_plane::proxy::headers::TrustedProxies;
use gw_data_plane::proxy::server;
use gw_data_plane::proxy::workers::MAX_WORKER_THREADS;
use gw_data_plane::upstream::connect::DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT;
use gw_data_plane::{Config, DEFAULT_RATE_LIMIT_MAX_KEYS};
use gw_ops::logging::{self, LogFormat};
use gw_tls::Secret;

/// The control plane a data plane talks to unless told otherwise (its default gRPC address).
const DEFAULT_CONTROL_PLANE: &str = "http://127.0.0.1:50051";
/// Client traffic: every interface, the usual unprivileged HTTP port.
const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Admin endpoints: loopback only, since /config and /metrics describe the deployment.
const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";

/// Access log when not told otherwise: standard output, apart from the process logs on
/// stderr, where containers and systemd collect it; `off` or a file path are one flag away.
const DEFAULT_ACCESS_LOG: &str = "stdout";

/// The access log's line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AccessLogFormat {
    /// One JSON object per line, every field.
    Json,
    /// Apache/nginx combined log format.
    Combined,
}

/// The gateway's data plane: a reverse proxy fed live by the control plane.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Control-plane URL.
    #[arg(long, env = "GW_CONTROL_PLANE", default_value = DEFAULT_CONTROL_PLANE)]
    control_plane: String,
    /// Address for client traffic.
    #[arg(long, env = "GW_LISTEN", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Address for HTTPS client traffic, with the certificates managed by the control plane
    /// (`gwctl cert add`). Default: no HTTPS.
    #[arg(long, env = "GW_TLS_LISTEN", value_name = "ADDR")]
    tls_listen: Option<SocketAddr>,
    /// Address for /healthz, /readyz, /config and /metrics.
    #[arg(long, env = "GW_ADMIN_LISTEN", default_value = DEFAULT_ADMIN_LISTEN)]
    admin_listen: SocketAddr,
    /// Require `authorization: Bearer <token>` for /config and /metrics (the probes stay open).
    #[arg(long, env = "GW_DP_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<Secret>,
    /// Serve the admin listener over TLS with this certificate chain (PEM).
    #[arg(
        long,
        env = "GW_ADMIN_TLS_CERT",
        value_name = "PEM",
        requires = "admin_tls_key"
    )]
    admin_tls_cert: Option<PathBuf>,
    /// The private key of --admin-tls-cert (PEM).
    #[arg(
        long,
        env = "GW_ADMIN_TLS_KEY",
        value_name = "PEM",
        requires = "admin_tls_cert"
    )]
    admin_tls_key: Option<PathBuf>,
    /// Serve the admin listener on a non-loopback address without TLS and a token (logged
    /// loudly at every start).
    #[arg(long, env = "GW_DP_INSECURE")]
    insecure: bool,
    /// This node's id in the fleet. Default: `<hostname>-<listen port>`.
    #[arg(long, env = "GW_NODE_ID")]
    node_id: Option<String>,
    /// Where the last applied config is cached. Default: `gw-config-<node id>.cache` in the
    /// state directory: $STATE_DIRECTORY (systemd's StateDirectory=), else
    /// $XDG_STATE_HOME/gw, else ~/.local/state/gw, else /var/lib/gw (created 0700).
    #[arg(long, env = "GW_CACHE_FILE")]
    cache_file: Option<PathBuf>,
    /// Proxies whose X-Forwarded-For is believed, as CIDRs or addresses (comma-separated).
    #[arg(long, env = "GW_TRUSTED_PROXIES", default_value = "")]
    trusted_proxies: String,
    /// Worker threads serving client traffic, each with its own runtime and its own socket on
    /// --listen (and --tls-listen). Default: one per CPU this process may use.
    #[arg(long, env = "GW_WORKER_THREADS")]
    worker_threads: Option<usize>,
    /// Per-policy cap on tracked rate-limit keys; beyond it, new keys share one overflow bucket
    /// (counted in gw_rate_limit_overflow_total).
    #[arg(long, env = "GW_RATE_LIMIT_MAX_KEYS", default_value_t = DEFAULT_RATE_LIMIT_MAX_KEYS)]
    rate_limit_max_keys: usize,
    /// Failed authentications (unknown API keys) allowed per client address per
    /// --auth-failure-period; beyond, that address gets 429 on authenticated services, its
    /// credentials unchecked, until the bucket refills.
    #[arg(long, env = "GW_AUTH_FAILURE_LIMIT", value_name = "N",
        default_value_t = gw_data_plane::auth::DEFAULT_AUTH_FAILURE_LIMIT)]
    auth_failure_limit: u64,
    /// The period of --auth-failure-limit, whole seconds (e.g. 1m).
    #[arg(long, env = "GW_AUTH_FAILURE_PERIOD", default_value = "1m",
        value_parser = gw_ops::duration::parse_positive)]
    auth_failure_period: std::time::Duration,
    /// CA certificates (PEM) the control plane's certificate must chain to, for an https://
    /// --control-plane. Default: the system's trust store.
    #[arg(long, env = "GW_CA_CERT", value_name = "PEM")]
    ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS to the control plane; its DNS names are the node ids
    /// this node may use. Re-read when it changes (the node reconnects with the new one).
    #[arg(long, env = "GW_CLIENT_CERT", value_name = "PEM")]
    client_cert: Option<PathBuf>,
    /// The private key of --client-cert (PEM).
    #[arg(long, env = "GW_CLIENT_KEY", value_name = "PEM")]
    client_key: Option<PathBuf>,
    /// CA certificates (PEM) trusted for https:// JWKS URLs of JWT credentials, in addition
    /// to the system's trust store: for an identity provider whose certificate comes from a
    /// private CA. Read at start (restart to change). Default: the system's trust store only.
    #[arg(long, env = "GW_JWKS_CA_CERT", value_name = "PEM")]
    jwks_ca_cert: Option<PathBuf>,
    /// The control plane's node token, instead of a client certificate (sent over TLS only).
    #[arg(long, env = "GW_NODE_TOKEN", hide_env_values = true)]
    node_token: Option<Secret>,
    /// Time between stats reports to the control plane, e.g. `5s` or `500ms`.
    #[arg(long, env = "GW_STATS_INTERVAL", default_value = "5s",
        value_parser = gw_ops::duration::parse_positive)]
    stats_interval: std::time::Duration,
    /// Longest wait for the next bytes of a client's request body (then 408, or the
    /// connection is closed if the answer has begun).
    #[arg(long, env = "GW_REQUEST_BODY_TIMEOUT", default_value = "10s", value_parser = gw_ops::duration::parse_positive)]
    request_body_timeout: std::time::Duration,
    /// Longest wait for the next bytes of a backend's response body (then the client's
    /// connection is closed and the endpoint charged with a failure).
    #[arg(long, env = "GW_RESPONSE_BODY_TIMEOUT", default_value = "60s", value_parser = gw_ops::duration::parse_positive)]
    response_body_timeout: std::time::Duration,
    /// Time a new client connection has to send its first byte before it is closed.
    #[arg(long, env = "GW_FIRST_BYTE_TIMEOUT", default_value = "10s", value_parser = gw_ops::duration::parse_positive)]
    first_byte_timeout: std::time::Duration,
    /// Time a client connection may stay idle between requests before it is closed; also how
    /// long a tunnel (CONNECT, WebSocket) may carry nothing either way.
    #[arg(long, env = "GW_IDLE_TIMEOUT", default_value = "75s", value_parser = gw_ops::duration::parse_positive)]
    idle_timeout: std::time::Duration,
    /// Open client connections at most; beyond, new connections wait in the listen backlog.
    /// Default: half of the file-descriptor limit left after the reserves.
    #[arg(long, env = "GW_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Open upstream connections at most, all endpoints together. Default: the other half.
    #[arg(long, env = "GW_MAX_UPSTREAM_CONNECTIONS")]
    max_upstream_connections: Option<usize>,
    /// Open upstream connections at most to one endpoint.
    #[arg(long, env = "GW_MAX_CONNECTIONS_PER_ENDPOINT", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT)]
    max_connections_per_endpoint: usize,
    /// An idle keep-alive connection to a backend is closed after this long unused (keep it
    /// below the backends' own keep-alive timeout).
    #[arg(long, env = "GW_UPSTREAM_IDLE_TIMEOUT", default_value = "50s", value_parser = gw_ops::duration::parse_positive)]
    upstream_idle_timeout: std::time::Duration,
    /// Idle keep-alive connections kept per endpoint and worker thread (as nginx's
    /// `keepalive` is per worker); 0: a new connection for every request.
    #[arg(long, env = "GW_UPSTREAM_MAX_IDLE", default_value_t = gw_data_plane::upstream::pool::DEFAULT_MAX_IDLE)]
    upstream_max_idle: usize,
    /// Process log format on stderr: `text` (coloured only on a terminal) or `json`.
    #[arg(long, env = "GW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// The Redis that counts GLOBAL rate-limit policies: `redis://[:password@]host:port[/db]`
    /// or `rediss://…` (TLS). For a Redis Cluster, its seed nodes, comma-separated, with
    /// --redis-cluster. Default: none (GLOBAL policies are enforced with this node's share).
    #[arg(
        long,
        env = "GW_REDIS_URL",
        value_name = "URL[,URL...]",
        hide_env_values = true
    )]
    redis_url: Option<Secret>,
    /// --redis-url names the seed nodes of a Redis Cluster.
    #[arg(long, env = "GW_REDIS_CLUSTER")]
    redis_cluster: bool,
    /// Longest wait for Redis per decision (then the policy's on_store_error decides), e.g.
    /// `5ms`.
    #[arg(long, env = "GW_REDIS_TIMEOUT", default_value = "5ms", value_parser = gw_ops::duration::parse_positive)]
    redis_timeout: std::time::Duration,
    /// Access log, one line per request: `stdout`, `stderr`, a file path (appended to,
    /// created 0640, reopened on SIGHUP or SIGUSR1) or `off`.
    #[arg(long, env = "GW_ACCESS_LOG", default_value = DEFAULT_ACCESS_LOG,
        value_name = "stdout|stderr|PATH|off")]
    access_log: Target,
    /// Access-log line format.
    #[arg(long, env = "GW_ACCESS_LOG_FORMAT", value_enum, default_value_t = AccessLogFormat::Json)]
    access_log_format: AccessLogFormat,
    /// Access-log lines that may wait for the writer; beyond, lines are dropped (and counted
    /// in gw_access_log_dropped_total) rather than slow requests down.
    #[arg(long, env = "GW_ACCESS_LOG_BUFFER", default_value_t = access_log::DEFAULT_CAPACITY)]
    access_log_buffer: usize,
    /// Prefix of every rate-limit key in Redis.
    #[arg(long, env = "GW_REDIS_PREFIX", default_value = redis::DEFAULT_PREFIX)]
    redis_prefix: String,
}

/// Log filter when RUST_LOG is unset: start-up, config versions, health changes and problems.
const DEFAULT_LOG: &str = "info";

/// See the comment on the dependency in Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // The workspace's one rustls crypto provider; why ring, see gw_tls::install_provider.
    gw_tls::install_provider();
    let args = Args::parse();
    logging::init(args.log_format, DEFAULT_LOG);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The message alone, its causes on the same line: never a backtrace, even with
            // RUST_BACKTRACE set, so a refusal stays the one line that names the fix.
            eprintln!("gw-data-plane: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let trusted = TrustedProxies::parse(&args.trusted_proxies)
        .map_err(|e| problems.push(format!("--trusted-proxies: {e}")))
        .unwrap_or_default();
    if args.rate_limit_max_keys == 0 {
        problems.push("--rate-limit-max-keys: must be at least 1".to_owned());
    }
    if args.access_log_buffer == 0 {
        problems.push("--access-log-buffer: must be at least 1".to_owned());
    }
    if args.auth_failure_limit == 0 {
        problems.push("--auth-failure-limit: must be at least 1".to_owned());
    }
    if args.auth_failure_period < std::time::Duration::from_secs(1) {
        problems.push("--auth-failure-period: must be at least 1s".to_owned());
    }
    match args.worker_threads {
        Some(0) => problems.push("--worker-threads: must be at least 1".to_owned()),
        Some(n) if n > MAX_WORKER_THREADS => problems.push(format!(
            "--worker-threads: {n} is more than {MAX_WORKER_THREADS} (one per core is the aim)"
        )),
        _ => {}
    }
    for (flag, n) in [
        ("--max-connections", args.max_connections),
        ("--max-upstream-connections", args.max_upstream_connections),
        (
            "--max-connections-per-endpoint",
            Some(args.max_connections_per_endpoint),
        ),
    ] {
        if n == Some(0) {
            problems.push(format!("{flag}: must be at least 1"));
        }
    }
    let credentials = Credentials {
        ca_cert: args.ca_cert,
        client_cert: args.client_cert,
        client_key: args.client_key,
        node_token: args.node_token.filter(|t| !t.is_empty()),
    };
    match check_control_plane_url(&args.control_plane) {
        Ok(tls) => problems.extend(credentials.problems(tls)),
        Err(e) => problems.push(format!("--control-plane: {e}")),
    }
    let admin_token = args.admin_token.filter(|t| !t.is_empty());
    let admin_tls = args.admin_tls_cert.zip(args.admin_tls_key);
    // The admin listener describes the deployment (/config, /metrics): off loopback it needs
    // TLS and a token, like the control plane.
    if !args.admin_listen.ip().is_loopback() && (admin_token.is_none() || admin_tls.is_none()) {
        let line = format!(
            "refusing to serve the admin listener on {} without TLS and a token: add \
             --admin-tls-cert, --admin-tls-key and --admin-token (or --insecure to run it open)",
            args.admin_listen
        );
        if !args.insecure {
            anyhow::bail!(line);
        }
        tracing::error!(
            "INSECURE (--insecure): {line}; serving anyway: anyone who can reach it \
            can read the configuration and metrics"
        );
    }
    let store = match &args.redis_url {
        None => None,
        Some(urls) => match RedisUrl::parse_list(urls.expose()) {
            Err(e) => {
                problems.push(format!("--redis-url: {e}"));
                None
            }
            Ok(urls) => {
                let store = StoreConfig {
                    urls,
                    cluster: args.redis_cluster,
                    timeout: args.redis_timeout,
                    prefix: args.redis_prefix.clone(),
                };
                if let Err(mut p) = store.check() {
                    problems.append(&mut p);
                }
                Some(store)
            }
        },
    };
    if let Some(path) = &args.jwks_ca_cert
        && let Err(e) = gw_data_plane::upstream::tls::config_with_extra_roots(path)
    {
        problems.push(format!("--jwks-ca-cert: {e}"));
    }
    if args.redis_cluster && args.redis_url.is_none() {
        problems.push("--redis-cluster: needs --redis-url with the cluster's nodes".to_owned());
    }
    if !problems.is_empty() {
        anyhow::bail!("invalid settings:\n  {}", problems.join("\n  "));
    }
    let node_id = args
        .node_id
        .unwrap_or_else(|| format!("{}-{}", hostname(), args.listen.port()));
    let cache_file = match args.cache_file {
        Some(path) => path,
        None => {
            let dir = state_dir::default_dir(|name| std::env::var_os(name));
            state_dir::create(&dir).with_context(|| {
                format!(
                    "cannot create the state directory {} for the config cache (or give \
                     --cache-file)",
                    dir.display()
                )
            })?;
            state_dir::cache_file(&dir, &node_id)
        }
    };
    // Before the budget is split: the room to split is the raised limit.
    let limit = fds::raise_nofile_limit().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot raise the file-descriptor limit; keeping it");
        fds::soft_limit()
    });
    let budget = FdBudget::split(limit);
    let mut config = Config::new(args.control_plane, node_id);
    config.max_connections = args.max_connections.unwrap_or(budget.client_connections);
    config.max_upstream_connections = args
        .max_upstream_connections
        .unwrap_or(budget.upstream_connections);
    config.max_connections_per_endpoint = args.max_connections_per_endpoint;
    config.upstream_idle_timeout = args.upstream_idle_timeout;
    config.upstream_max_idle = args.upstream_max_idle;
    config.max_health_probes = budget.health_probes;
    config.first_byte_timeout = args.first_byte_timeout;
    config.idle_timeout = args.idle_timeout;
    if let Some(n) = args.worker_threads {
        config.worker_threads = n;
    }
    tracing::info!(
        fd_limit = limit,
        max_connections = config.max_connections,
        max_upstream_connections = config.max_upstream_connections,
        max_health_probes = config.max_health_probes,
        "connection limits"
    );
    config.cache_file = Some(cache_file);
    config.trusted_proxies = trusted;
    config.rate_limit_max_keys = args.rate_limit_max_keys;
    config.auth_failure_limit = args.auth_failure_limit;
    config.auth_failure_period = args.auth_failure_period;
    config.jwks_ca_cert = args.jwks_ca_cert;
    config.stats_interval = args.stats_interval;
    config.request_body_timeout = args.request_body_timeout;
    config.response_body_timeout = args.response_body_timeout;
    config.credentials = credentials;
    config.admin_token = admin_token;
    config.admin_tls = admin_tls;
    config.rate_limit_store = store;
    config.access_log = access_log::Settings {
        target: args.access_log,
        format: match args.access_log_format {
            AccessLogFormat::Json => access_log::Format::Json,
            AccessLogFormat::Combined => access_log::Format::Combined,
        },
        capacity: args.access_log_buffer,
    };

    // The background runtime, on this thread: config sync, health checks, reports, the admin
    // listener, JWKS fetches, Redis. Client traffic runs on the worker threads `serve_with`
    // starts, one current-thread runtime each. One thread is enough for the background (its
    // work waits on the network; compiling a config and DNS lookups go to the blocking pool),
    // and a current-thread runtime never spins looking for work to steal, so with
    // `taskset -c 0 ... --worker-threads 1` it takes the worker's core only when it has work.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let proxy = server::bind(args.listen)
            .with_context(|| format!("--listen {}: cannot bind", args.listen))?;
        let admin = tokio::net::TcpListener::bind(args.admin_listen)
            .await
            .with_context(|| format!("--admin-listen {}: cannot bind", args.admin_listen))?;
        let tls = match args.tls_listen {
            Some(addr) => Some(
                server::bind(addr).with_context(|| format!("--tls-listen {addr}: cannot bind"))?,
            ),
            None => None,
        };
        let listeners = gw_data_plane::Listeners { proxy, tls, admin };
        gw_data_plane::serve_with(config, listeners, stop_signal()).await?;
        Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C will stop");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    tracing::info!("stop requested: finishing in-flight requests");
}

/// The machine's host name, without libc.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "gw".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn duration_flags_take_the_shared_grammar_and_refuse_zero() {
        let parse = |v: &str| Args::try_parse_from(["gw-data-plane", "--stats-interval", v]);
        for (v, want) in [
            ("500ms", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
        ] {
            assert_eq!(parse(v).unwrap().stats_interval, want, "{v}");
        }
        for bad in ["", "5", "s", "0s", "-1s", "1.5s"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn access_log_flags() {
        let args = Args::try_parse_from(["gw-data-plane"]).unwrap();
        assert_eq!(args.access_log, Target::Stdout);
        assert_eq!(args.access_log_format, AccessLogFormat::Json);
        let args = Args::try_parse_from([
            "gw-data-plane",
            "--access-log",
            "/var/log/gw/access.log",
            "--access-log-format",
            "combined",
        ])
        .unwrap();
        assert_eq!(
            args.access_log,
            Target::File("/var/log/gw/access.log".into())
        );
        assert_eq!(args.access_log_format, AccessLogFormat::Combined);
        assert!(Args::try_parse_from(["gw-data-plane", "--access-log", ""]).is_err());
    }

    #[test]
    fn debug_output_hides_tokens_and_the_redis_password() {
        let args = Args::try_parse_from([
            "gw-data-plane",
            "--admin-token",
            "admin-s3cret",
            "--node-token",
            "node-s3cret",
            "--redis-url",
            "redis://:pw-s3cret@127.0.0.1:6379",
        ])
        .unwrap();
        let shown = format!("{args:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(
            args.redis_url.as_ref().map(Secret::expose),
            Some("redis://:pw-s3cret@127.0.0.1:6379")
        );
    }

    #[test]
    fn log_format_flag() {
        let args = Args::try_parse_from(["gw-data-plane", "--log-format", "json"]).unwrap();
        assert_eq!(args.log_format, LogFormat::Json);
        assert!(Args::try_parse_from(["gw-data-plane", "--log-format", "xml"]).is_err());
    }
}
