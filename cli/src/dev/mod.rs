//! `gwctl dev`: a whole gateway in one process, for trying gw on a laptop.
//!
//! It binds every listener first (a taken port fails the launch before anything starts), then
//! runs a control plane (SQLite in a temporary directory unless `--database` says otherwise),
//! one data plane and three demo backends, registers the demo service and policy over gRPC
//! like any operator ([`setup`]), waits until the data plane has acknowledged them, and prints
//! the addresses and commands to try ([`banner`]). SIGINT or SIGTERM stops the data plane
//! first (so it does not log a lost control plane), then the rest, and exits 0.
//!
//! This is the one place gwctl links the servers' crates: everything else in gwctl reaches
//! the control plane only over gRPC.

pub mod backend;
pub mod banner;
pub mod listeners;
pub mod setup;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{self, JoinSet};

use crate::args::DevArgs;
use crate::client::AdminClient;
use crate::dev::backend::BACKEND_NAMES;
use crate::error::{DevError, Error};
use banner::Banner;
use gw_data_plane::limiter::redis::{RedisUrl, StoreConfig};
use listeners::{Listeners, dial_address};

/// The data plane's node id, as `gwctl nodes` shows it.
pub const NODE_ID: &str = "dev";

/// How long the data plane may take to acknowledge the demo config. Normally milliseconds;
/// generous because a first `cargo run` may share the machine with a build.
const SERVE_DEADLINE: Duration = Duration::from_secs(30);
/// Time in-flight requests get on Ctrl-C: short, since a local demo should stop promptly.
const DATA_PLANE_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Time between the data plane's stats reports: short, so that `gwctl stats` run just after
/// the banner's curl loop already counts it. One node reporting to a control plane in the same
/// process: the cost is nothing.
const DEV_STATS_INTERVAL: Duration = Duration::from_secs(1);

/// Runs `gwctl dev` until SIGINT or SIGTERM; writes the banner to `out`. `timeout` bounds
/// each set-up call to the control plane. Needs a multi-threaded runtime.
pub async fn run(args: DevArgs, timeout: Duration, out: &mut dyn Write) -> Result<(), Error> {
    // Checked before anything starts: a typo should not cost a launch.
    let store = match &args.redis_url {
        Some(url) => {
            let mut store = StoreConfig::new(RedisUrl::parse(url).map_err(DevError::RedisUrl)?);
            if let Some(timeout) = args.redis_timeout {
                store.timeout = timeout;
            }
            Some(store)
        }
        None => None,
    };
    // Installed before anything starts, so a signal at any moment stops things cleanly.
    let mut signals = Signals::install()?;
    let listeners = Listeners::bind(&args).await?;
    let addresses = listeners.addresses()?;
    // Holds the data plane's config cache and, by default, the database; removed when it
    // drops, after every server has stopped.
    let dir = tempfile::Builder::new()
        .prefix("gwctl-dev-")
        .tempdir()
        .map_err(DevError::TempDir)?;
    let temporary_database = args.database.is_none();
    let database = args
        .database
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("gw.db").display()));

    let control_plane = format!("http://{}", dial_address(addresses.control_plane));
    let redis = store
        .as_ref()
        .and_then(|s| s.urls.first())
        .map(RedisUrl::redacted);
    let mut running = Running::start(
        listeners,
        control_plane.clone(),
        &database,
        dir.path(),
        store,
    );
    let endpoints = addresses
        .backends
        .iter()
        .map(|a| format!("http://{a}"))
        .collect();
    let started = tokio::select! {
        result = configure(&control_plane, timeout, endpoints, redis) => result.map(Some),
        failure = running.failure() => Err(failure.into()),
        () = signals.recv() => Ok(None),
    };
    let result = match started {
        Ok(Some(registered)) => {
            let text = Banner {
                addresses: &addresses,
                database: &database,
                temporary_database,
                registered: &registered,
            }
            .render();
            let printed = out.write_all(text.as_bytes()).and_then(|()| out.flush());
            match printed {
                Ok(()) => tokio::select! {
                    failure = running.failure() => Err(failure.into()),
                    () = signals.recv() => Ok(()),
                },
                Err(e) => Err(Error::Output(e)),
            }
        }
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    let stopped = tokio::select! {
        stopped = running.stop() => stopped,
        () = signals.recv() => Err(DevError::Forced),
    };
    drop(dir);
    match (result, stopped) {
        (Ok(()), stopped) => stopped.map_err(Error::from),
        // A component failure or a launch problem is the root cause; report it.
        (Err(e @ Error::Dev(_)), _) => Err(e),
        // A set-up call failed (e.g. "connection reset"); if a component failed too, its own
        // error says why (e.g. the control plane cannot open its database).
        (Err(e), stopped) => Err(stopped.err().map_or(e, Error::from)),
    }
}

/// Registers the demo and waits until the data plane serves it; returns gwctl's confirmations.
async fn configure(
    control_plane: &str,
    timeout: Duration,
    endpoints: Vec<String>,
    redis: Option<String>,
) -> Result<String, Error> {
    let mut client =
        AdminClient::connect(control_plane, None, timeout, &Default::default()).await?;
    let mut registered = setup::register(&mut client, endpoints, redis.is_some()).await?;
    if let Some(redis) = redis {
        registered.push_str(&format!(
            "policy '{}' is GLOBAL: counted in {redis} (gwctl nodes shows the store)\n",
            setup::POLICY
        ));
    }
    setup::wait_until_served(&mut client, NODE_ID, SERVE_DEADLINE).await?;
    Ok(registered)
}

/// SIGINT (Ctrl-C) and SIGTERM, registered once.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self, DevError> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).map_err(DevError::Signals)?,
            terminate: signal(SignalKind::terminate()).map_err(DevError::Signals)?,
        })
    }

    /// Resolves at the next SIGINT or SIGTERM.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => tracing::info!("SIGINT received, stopping"),
            _ = self.terminate.recv() => tracing::info!("SIGTERM received, stopping"),
        }
    }
}

/// Which component a task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    ControlPlane,
    DataPlane,
    Backend(&'static str),
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::ControlPlane => "the control plane",
            Part::DataPlane => "the data plane",
            Part::Backend(name) => name,
        }
    }
}

/// The running components and the switches that stop them, in two stages.
struct Running {
    tasks: JoinSet<Result<(), DevError>>,
    /// Which component each task runs, to name it in errors and to know when the data plane
    /// is down even if its task panicked.
    parts: HashMap<task::Id, Part>,
    /// Stops the data plane, first: it would otherwise log the control plane going away.
    stop_data_plane: watch::Sender<bool>,
    /// Stops the control plane and backends once the data plane is down.
    stop_rest: watch::Sender<bool>,
    data_plane_done: bool,
}

impl Running {
    /// Spawns every component on its listener.
    fn start(
        listeners: Listeners,
        control_plane_url: String,
        database: &str,
        dir: &Path,
        store: Option<StoreConfig>,
    ) -> Self {
        let Listeners {
            proxy,
            admin,
            control_plane,
            backends,
        } = listeners;
        let (stop_data_plane, data_plane_rx) = watch::channel(false);
        let (stop_rest, rest_rx) = watch::channel(false);
        let mut running = Self {
            tasks: JoinSet::new(),
            parts: HashMap::new(),
            stop_data_plane,
            stop_rest,
            data_plane_done: false,
        };

        // Plaintext, no credentials: every listener of `gwctl dev` is loopback by default,
        // and the banner warns when one is not.
        let config = gw_control_plane::Config::new(database);
        let stop = stopped(rest_rx.clone());
        running.spawn(Part::ControlPlane, async move {
            gw_control_plane::serve(config, control_plane, stop)
                .await
                .map_err(DevError::ControlPlane)
        });

        let mut config = gw_data_plane::Config::new(control_plane_url, NODE_ID);
        config.cache_file = Some(dir.join("data-plane.cache"));
        config.shutdown_grace = DATA_PLANE_SHUTDOWN_GRACE;
        config.stats_interval = DEV_STATS_INTERVAL;
        config.rate_limit_store = store;
        let stop = stopped(data_plane_rx);
        running.spawn(Part::DataPlane, async move {
            gw_data_plane::serve(config, proxy, admin, stop)
                .await
                .map_err(DevError::DataPlane)
        });

        for (name, listener) in BACKEND_NAMES.into_iter().zip(backends) {
            let stop = rest_rx.clone();
            running.spawn(Part::Backend(name), async move {
                backend::serve(name, listener, stop).await;
                Ok(())
            });
        }
        running
    }

    fn spawn(
        &mut self,
        part: Part,
        task: impl Future<Output = Result<(), DevError>> + Send + 'static,
    ) {
        let id = self.tasks.spawn(task).id();
        self.parts.insert(id, part);
    }

    /// Waits for the next task to end: which component it was and how it ended.
    async fn next(&mut self) -> Option<(Part, Result<(), DevError>)> {
        let (id, result) = match self.tasks.join_next_with_id().await? {
            Ok((id, result)) => (id, result),
            Err(e) => (e.id(), Err(DevError::Crashed(e.to_string()))),
        };
        let part = self.parts.remove(&id).unwrap_or(Part::Backend("unknown"));
        if part == Part::DataPlane {
            self.data_plane_done = true;
        }
        Some((part, result))
    }

    /// Resolves when a component ends before being asked to, with why.
    async fn failure(&mut self) -> DevError {
        match self.next().await {
            Some((part, result)) => result.err().unwrap_or(DevError::Stopped(part.name())),
            // Nothing is running: nothing can fail any more.
            None => std::future::pending().await,
        }
    }

    /// Stops the data plane, then everything else; the first error any of them returned.
    async fn stop(mut self) -> Result<(), DevError> {
        let mut first_error = None;
        self.stop_data_plane.send_replace(true);
        while !self.data_plane_done {
            let Some((_, result)) = self.next().await else {
                break;
            };
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        self.stop_rest.send_replace(true);
        while let Some((_, result)) = self.next().await {
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// A future that resolves when `rx` turns true (or its sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}
