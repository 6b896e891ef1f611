//! Health checking: active checks per endpoint, and the passive ejections the request path
//! makes (see [`Endpoint::record_failure`]).
//!
//! One task ([`run`]) runs off the request path. Whenever a new config is in force it
//! reconciles one check loop per (service, endpoint URL): new endpoints get a loop that checks
//! at once, removed ones have theirs stopped, and a changed health-check spec restarts the loop.
//! Each loop probes on a fresh connection (so a dead listener is seen even when pooled proxy
//! connections linger) every `interval` less up to 20 % (so nodes drift apart instead of
//! checking in lock-step), with the spec's timeout. The probe is the service's choice
//! ([`Probe`]): a TCP connect by default (a backend without a health route keeps serving), an
//! HTTP GET of a path the operator named, or none. A [`Tracker`] turns results into
//! transitions: `unhealthy_threshold` failures in a row mark the endpoint unhealthy,
//! `healthy_threshold` successes in a row mark it healthy again.
//!
//! Passive: the request path counts failures in a row on the [`Endpoint`]; at the service's
//! `unhealthy_threshold` it ejects the endpoint and wakes its loop, which records the reason and
//! treats it as unhealthy, so only active successes bring it back. With active checks disabled
//! nothing could vouch for it, so it is let back after one interval (as Envoy's outlier
//! detection does after its ejection time) and ejected again if it still fails.
//!
//! Every transition is written to the [`Board`] (what full health reports are built from) and
//! sent, as it happens, on the changes channel the reporter forwards to the control plane.
//!
//! **Invariant:** an endpoint that was never checked takes traffic (endpoints start healthy).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use gw_proto::v1 as pb;
use http::{Request, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::gateway::Gateway;
use crate::config::snapshot::{HealthSpec, Probe, Snapshot};
use crate::shutdown::signalled;
use crate::upstream::balancer::Endpoint;
use crate::upstream::dns::Resolver;

/// How often the checker looks for a newly applied config. The gateway has no apply
/// notification, and loading one `ArcSwap` pointer every 50 ms costs nothing measurable while
/// keeping config application free of health concerns; a new endpoint is checked within this.
const RECONCILE_POLL: Duration = Duration::from_millis(50);
/// Jitter applied to each check interval: up to 20 % shorter, never longer, so nodes drift
/// apart while a dead endpoint is still found within `interval x unhealthy_threshold`.
const JITTER: f64 = 0.2;

/// Consecutive-result state machine for one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracker {
    healthy: bool,
    successes: u32,
    failures: u32,
}

impl Tracker {
    /// Starts in `healthy` with no streak.
    pub fn new(healthy: bool) -> Self {
        Self {
            healthy,
            successes: 0,
            failures: 0,
        }
    }

    /// Whether the endpoint is considered healthy.
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Feeds one check result; returns the new state if this result changed it.
    pub fn observe(&mut self, ok: bool, unhealthy_after: u32, healthy_after: u32) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if !self.healthy && self.successes >= healthy_after.max(1) {
                self.healthy = true;
                return Some(true);
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.healthy && self.failures >= unhealthy_after.max(1) {
                self.healthy = false;
                return Some(false);
            }
        }
        None
    }

    /// The request path ejected the endpoint: unhealthy, and successes start from zero.
    pub fn eject(&mut self) {
        self.healthy = false;
        self.successes = 0;
    }
}

/// One endpoint's health as last seen on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    healthy: bool,
    last_failure: Option<(String, SystemTime)>,
}

/// (service name, endpoint URL).
type Key = (Arc<str>, Arc<str>);

/// Endpoint health by (service, URL), for full health reports.
#[derive(Debug, Default)]
pub struct Board {
    entries: Mutex<BTreeMap<Key, Entry>>,
}

impl Board {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `healthy` (and a failure, if any) for an endpoint; returns the endpoint's
    /// report entry.
    fn set(
        &self,
        service: &Arc<str>,
        url: &Arc<str>,
        healthy: bool,
        failure: Option<String>,
    ) -> pb::EndpointHealth {
        let mut entries = self.lock();
        let entry = entries
            .entry((service.clone(), url.clone()))
            .or_insert(Entry {
                healthy,
                last_failure: None,
            });
        entry.healthy = healthy;
        if let Some(reason) = failure {
            entry.last_failure = Some((reason, SystemTime::now()));
        }
        to_pb(service, url, entry)
    }

    fn remove(&self, service: &Arc<str>, url: &Arc<str>) {
        self.lock().remove(&(service.clone(), url.clone()));
    }

    /// Every endpoint's health, ordered by service and URL.
    pub fn full(&self) -> Vec<pb::EndpointHealth> {
        self.lock()
            .iter()
            .map(|((service, url), entry)| to_pb(service, url, entry))
            .collect()
    }
}

fn to_pb(service: &str, url: &str, entry: &Entry) -> pb::EndpointHealth {
    let (last_failure, last_failure_at) = match &entry.last_failure {
        Some((reason, at)) => (reason.clone(), Some(prost_types::Timestamp::from(*at))),
        None => (String::new(), None),
    };
    pb::EndpointHealth {
        service: service.to_owned(),
        endpoint: url.to_owned(),
        healthy: entry.healthy,
        last_failure,
        last_failure_at,
    }
}

/// Appends `gw_endpoint_healthy` (1: takes traffic, 0: ejected or failing checks) for every
/// endpoint of `snapshot` to a Prometheus text body.
pub fn render_gauges(snapshot: Option<&Snapshot>, out: &mut String) {
    use std::fmt::Write as _;
    out.push_str(
        "# HELP gw_endpoint_healthy Whether this node sends the endpoint traffic (1) or not (0).\n\
         # TYPE gw_endpoint_healthy gauge\n",
    );
    for svc in snapshot.iter().flat_map(|s| s.services.iter()) {
        for ep in svc.balancer.endpoints().iter() {
            let _ = writeln!(
                out,
                "gw_endpoint_healthy{{service=\"{}\",endpoint=\"{}\"}} {}",
                svc.name,
                ep.url,
                u8::from(ep.is_healthy())
            );
        }
    }
}

/// A running check loop and what it was started with.
struct Loop {
    endpoint: Arc<Endpoint>,
    spec: HealthSpec,
    task: JoinHandle<()>,
}

/// Runs health checking for `gw` until `stop` is set: reconciles check loops with each config
/// in force, records health on `board` and sends every change on `changes`. At most
/// `max_probes` checks are in flight at once: the descriptors kept back for them (see
/// `crate::fds`), so a flood of client or upstream connections cannot make checks fail.
pub async fn run(
    gw: Arc<Gateway>,
    board: Arc<Board>,
    changes: mpsc::UnboundedSender<pb::EndpointHealth>,
    max_probes: usize,
    stop: watch::Receiver<bool>,
) {
    let probes = Arc::new(Semaphore::new(max_probes.max(1)));
    let mut loops: HashMap<Key, Loop> = HashMap::new();
    let mut seen: Option<Arc<Snapshot>> = None;
    let mut tick = tokio::time::interval(RECONCILE_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stopped = signalled(stop);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut stopped => break,
        }
        let current = gw.current.load_full();
        let unchanged = match (&current, &seen) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if unchanged {
            continue;
        }
        if let Some(snapshot) = &current {
            reconcile(
                snapshot,
                &mut loops,
                &board,
                &changes,
                &probes,
                gw.reuse.clients.resolver(),
            );
        }
        seen = current;
    }
    for (_, l) in loops {
        l.task.abort();
    }
}

/// Starts, restarts and stops loops so there is exactly one per endpoint of `snapshot`.
fn reconcile(
    snapshot: &Snapshot,
    loops: &mut HashMap<Key, Loop>,
    board: &Arc<Board>,
    changes: &mpsc::UnboundedSender<pb::EndpointHealth>,
    probes: &Arc<Semaphore>,
    resolver: &Resolver,
) {
    let mut wanted = HashMap::new();
    for svc in snapshot.services.iter() {
        for ep in svc.balancer.endpoints().iter() {
            wanted.insert(
                (svc.name.clone(), ep.url.clone()),
                (ep.clone(), &svc.health),
            );
        }
    }
    loops.retain(|key, l| {
        let keep = wanted
            .get(key)
            .is_some_and(|(ep, spec)| Arc::ptr_eq(ep, &l.endpoint) && **spec == l.spec);
        if !keep {
            l.task.abort();
            if !wanted.contains_key(key) {
                board.remove(&key.0, &key.1);
            }
        }
        keep
    });
    for (key, (ep, spec)) in wanted {
        if loops.contains_key(&key) {
            continue;
        }
        ep.set_passive_threshold(spec.unhealthy_threshold);
        // Reported at once, so the control plane counts a new endpoint before its first check.
        let _ = changes.send(board.set(&key.0, &key.1, ep.is_healthy(), None));
        let task = tokio::spawn(check_loop(
            key.0.clone(),
            ep.clone(),
            spec.clone(),
            board.clone(),
            changes.clone(),
            probes.clone(),
            resolver.clone(),
        ));
        loops.insert(
            key,
            Loop {
                endpoint: ep,
                spec: spec.clone(),
                task,
            },
        );
    }
}

/// Checks one endpoint forever (until aborted): at once, then every jittered interval.
async fn check_loop(
    service: Arc<str>,
    ep: Arc<Endpoint>,
    spec: HealthSpec,
    board: Arc<Board>,
    changes: mpsc::UnboundedSender<pb::EndpointHealth>,
    probes: Arc<Semaphore>,
    resolver: Resolver,
) {
    if spec.probe == Probe::Disabled {
        return passive_only(service, ep, spec, board, changes).await;
    }
    let mut tracker = Tracker::new(ep.is_healthy());
    let mut delay = Duration::ZERO;
    loop {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = ep.ejected() => {
                if tracker.healthy() {
                    tracker.eject();
                    let reason = format!(
                        "{} requests in a row failed (connect error or 5xx)",
                        ep.consecutive_failures()
                    );
                    tracing::warn!(service = %service, endpoint = %ep.url, %reason, "endpoint ejected");
                    let _ = changes.send(board.set(&service, &ep.url, false, Some(reason)));
                }
                continue;
            }
        }
        // Waiting for a slot is not the endpoint's failure, so it is outside the check's
        // timeout. The semaphore is never closed.
        let Ok(_slot) = probes.acquire().await else {
            return;
        };
        let result = probe(&ep, &spec, &resolver).await;
        let transition = tracker.observe(
            result.is_ok(),
            spec.unhealthy_threshold,
            spec.healthy_threshold,
        );
        let failure = result.err();
        match transition {
            Some(healthy) => {
                if healthy {
                    ep.record_success();
                }
                ep.set_healthy(healthy);
                tracing::info!(service = %service, endpoint = %ep.url, healthy,
                    reason = failure.as_deref().unwrap_or(""), "endpoint health changed");
                let _ = changes.send(board.set(&service, &ep.url, healthy, failure));
            }
            None => {
                if let Some(reason) = failure {
                    board.set(&service, &ep.url, tracker.healthy(), Some(reason));
                }
            }
        }
        delay = jittered(spec.interval);
    }
}

/// The loop of an endpoint whose service disabled active checks: waits for the request path
/// to eject it, then lets it back after one interval.
async fn passive_only(
    service: Arc<str>,
    ep: Arc<Endpoint>,
    spec: HealthSpec,
    board: Arc<Board>,
    changes: mpsc::UnboundedSender<pb::EndpointHealth>,
) {
    loop {
        if ep.is_healthy() {
            ep.ejected().await;
            let reason = format!(
                "{} requests in a row failed (connect error or 5xx)",
                ep.consecutive_failures()
            );
            tracing::warn!(service = %service, endpoint = %ep.url, %reason,
                retry_in = ?spec.interval, "endpoint ejected");
            let _ = changes.send(board.set(&service, &ep.url, false, Some(reason)));
        }
        tokio::time::sleep(spec.interval).await;
        ep.record_success();
        ep.set_healthy(true);
        tracing::info!(service = %service, endpoint = %ep.url, "endpoint let back after its ejection time");
        let _ = changes.send(board.set(&service, &ep.url, true, None));
    }
}

fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(1.0 - rand::random_range(0.0..=JITTER))
}

/// One active check on a fresh connection, within the spec's timeout: a TCP connect, or
/// `GET <path>`. `Err` carries the reason in words, e.g. "GET /health: status 503" or
/// "TCP connect: connection refused".
async fn probe(ep: &Endpoint, spec: &HealthSpec, resolver: &Resolver) -> Result<(), String> {
    let path = match &spec.probe {
        Probe::Http(path) => path.clone(),
        Probe::Tcp => {
            return match tokio::time::timeout(spec.timeout, connect(ep, resolver)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(why)) => Err(format!("TCP connect: {why}")),
                Err(_) => Err(format!("TCP connect: timed out after {:?}", spec.timeout)),
            };
        }
        // Never probed: `check_loop` runs `passive_only` instead.
        Probe::Disabled => return Ok(()),
    };
    let attempt = async {
        let stream = connect(ep, resolver).await?;
        if !ep.tls {
            return get(stream, ep, &path).await;
        }
        // An https:// endpoint is checked through the service's TLS settings, like traffic.
        let tls = spec
            .tls
            .as_ref()
            .ok_or_else(|| "no TLS settings for an https:// endpoint".to_owned())?;
        let stream = tls
            .connect(stream, ep.authority.host())
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        get(stream, ep, &path).await
    };
    match tokio::time::timeout(spec.timeout, attempt).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(why)) => Err(format!("GET {path}: {why}")),
        Err(_) => Err(format!("GET {path}: timed out after {:?}", spec.timeout)),
    }
}

async fn connect(ep: &Endpoint, resolver: &Resolver) -> Result<tokio::net::TcpStream, String> {
    // Through the bounded resolver, never tokio's unbounded one (see `upstream::dns`).
    let port = ep.authority.port_u16().unwrap_or(80);
    let addrs: Vec<std::net::SocketAddr> = resolver
        .resolve(ep.authority.host())
        .await
        .map_err(|e| format!("resolve: {e}"))?
        .into_iter()
        .map(|mut a| {
            a.set_port(port);
            a
        })
        .collect();
    tokio::net::TcpStream::connect(&addrs[..])
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
            _ => format!("connect: {e}"),
        })
}

/// `GET <path>` on an open connection (plain or TLS); `Err` says why it failed.
async fn get<I>(io: I, ep: &Endpoint, path: &str) -> Result<(), String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let req = Request::get(path)
        .header(header::HOST, ep.authority.as_str())
        .header(header::USER_AGENT, "gw-health-check")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let result = send.send_request(req).await;
    conn.abort();
    let status = result.map_err(|e| e.to_string())?.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("status {}", status.as_u16()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starting state, results ('o' ok, 'x' failed), thresholds (unhealthy, healthy),
    /// expected transitions (result index, new state), end state.
    type Case = (
        bool,
        &'static str,
        (u32, u32),
        &'static [(usize, bool)],
        bool,
    );

    #[test]
    fn tracker_table() {
        let cases: &[Case] = &[
            // Two failures with threshold 2: unhealthy on the second.
            (true, "xx", (2, 2), &[(1, false)], false),
            // A success in between resets the failure streak.
            (true, "xoxo", (2, 2), &[], true),
            (true, "xxx", (3, 1), &[(2, false)], false),
            // Coming back needs `healthy` successes in a row; a failure restarts the count.
            (false, "oxoo", (2, 2), &[(3, true)], true),
            (false, "o", (2, 1), &[(0, true)], true),
            // Threshold 0 behaves as 1.
            (true, "x", (0, 0), &[(0, false)], false),
            // Full round trip.
            (true, "xxoo", (2, 2), &[(1, false), (3, true)], true),
            // Already healthy: successes change nothing.
            (true, "oooo", (2, 2), &[], true),
        ];
        for (start, results, (down, up), want, end) in cases {
            let mut t = Tracker::new(*start);
            let got: Vec<(usize, bool)> = results
                .chars()
                .enumerate()
                .filter_map(|(i, c)| t.observe(c == 'o', *down, *up).map(|h| (i, h)))
                .collect();
            assert_eq!(&got, want, "start {start}, results {results}");
            assert_eq!(t.healthy(), *end, "start {start}, results {results}");
        }
    }

    #[test]
    fn eject_needs_fresh_successes() {
        let mut t = Tracker::new(true);
        assert_eq!(t.observe(true, 2, 2), None);
        t.eject();
        assert!(!t.healthy());
        assert_eq!(
            t.observe(true, 2, 2),
            None,
            "the success before ejection must not count"
        );
        assert_eq!(t.observe(true, 2, 2), Some(true));
    }

    #[test]
    fn jitter_shortens_by_at_most_a_fifth_and_never_lengthens() {
        let base = Duration::from_millis(1000);
        let ds: Vec<Duration> = (0..200).map(|_| jittered(base)).collect();
        for d in &ds {
            assert!(*d >= Duration::from_millis(799) && *d <= base, "{d:?}");
        }
        assert!(ds.iter().any(|d| *d != ds[0]), "no jitter at all");
    }

    #[tokio::test]
    async fn probe_reasons() {
        let spec = HealthSpec {
            probe: Probe::Http("/health".into()),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            unhealthy_threshold: 2,
            healthy_threshold: 2,
            tls: None,
        };
        let mut backend = gw_testkit::backend::Backend::start("b").await;
        let url: Arc<str> = backend.url().into();
        let ep = Endpoint::new(
            url.clone(),
            crate::config::snapshot::parse_endpoint(&url).unwrap(),
        );
        assert_eq!(probe(&ep, &spec, &Resolver::default()).await, Ok(()));
        backend.stop().await;
        assert_eq!(
            probe(&ep, &spec, &Resolver::default()).await,
            Err("GET /health: connection refused".to_owned())
        );
        // A server that answers 503.
        let failing = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: Arc<str> = format!("http://{}", failing.local_addr().unwrap()).into();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut conn, _) = failing.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).await;
            let _ = conn
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                .await;
        });
        let ep503 = Endpoint::new(
            url.clone(),
            crate::config::snapshot::parse_endpoint(&url).unwrap(),
        );
        assert_eq!(
            probe(&ep503, &spec, &Resolver::default()).await,
            Err("GET /health: status 503".to_owned())
        );
        // A listener that accepts and never answers: the timeout.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: Arc<str> = format!("http://{}", silent.local_addr().unwrap()).into();
        let ep = Endpoint::new(
            url.clone(),
            crate::config::snapshot::parse_endpoint(&url).unwrap(),
        );
        let short = HealthSpec {
            timeout: Duration::from_millis(200),
            ..spec
        };
        assert_eq!(
            probe(&ep, &short, &Resolver::default()).await,
            Err("GET /health: timed out after 200ms".to_owned())
        );
        // A TCP check only needs the connection accepted: the silent listener passes it,
        // a stopped backend's port refuses it.
        let tcp = HealthSpec {
            probe: Probe::Tcp,
            ..short
        };
        assert_eq!(probe(&ep, &tcp, &Resolver::default()).await, Ok(()));
        let stopped: Arc<str> = backend.url().into();
        let closed = Endpoint::new(
            stopped.clone(),
            crate::config::snapshot::parse_endpoint(&stopped).unwrap(),
        );
        assert_eq!(
            probe(&closed, &tcp, &Resolver::default()).await,
            Err("TCP connect: connection refused".to_owned())
        );
    }
}
