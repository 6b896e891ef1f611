//! A backend service: its route, endpoints, health check, timeouts and balancing.

use std::fmt;
use std::time::Duration;

use gw_proto::v1 as pb;

use crate::domain::consumer::Auth;
use crate::domain::validate::{self, Problems, ValidationError};

/// Default time between two checks of one endpoint.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// Default time allowed for one check.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Default consecutive failures that make an endpoint unhealthy.
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
/// Default consecutive successes that make an endpoint healthy again.
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
/// Default TCP connect timeout to an endpoint.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default time from sending a request until the response headers arrive.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Shortest health-check interval: faster checking would load backends more than it helps.
const MIN_HEALTH_INTERVAL: Duration = Duration::from_millis(100);
/// Longest health-check interval: beyond this a dead endpoint goes unnoticed too long.
const MAX_HEALTH_INTERVAL: Duration = Duration::from_secs(3600);
/// Shortest timeout of any kind; zero would mean "always fail".
const MIN_TIMEOUT: Duration = Duration::from_millis(1);
/// Longest connect timeout: a TCP handshake that takes longer is not coming.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest request timeout (until response headers): a day covers any batch job.
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(86_400);
/// Longest body idle timeout: an hour of silence inside one body is a connection held, not a
/// transfer.
const MAX_BODY_TIMEOUT: Duration = Duration::from_secs(3600);
/// Highest health threshold: more would make state changes take absurdly long.
const MAX_THRESHOLD: u32 = 100;
/// Most endpoints or hosts one service may list; keeps one config message reasonable.
const MAX_LIST: usize = 1000;
/// Largest upstream CA bundle: a few hundred CA certificates, more than any private PKI has.
const MAX_CA_BUNDLE: usize = 512 * 1024;

/// A backend service that the gateway routes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Unique name, a lowercase DNS label.
    pub name: String,
    /// Which requests this service takes.
    pub route: Route,
    /// Backend base URLs; may be empty (matching requests then get 503).
    pub endpoints: Vec<Endpoint>,
    /// Active health checking of the endpoints.
    pub health_check: HealthCheck,
    /// Proxying timeouts.
    pub timeouts: Timeouts,
    /// How requests are spread over healthy endpoints.
    pub load_balancing: LoadBalancing,
    /// Config version that created the service; set by the store.
    pub created_version: u64,
    /// Config version that last changed the service; set by the store.
    pub updated_version: u64,
    /// Redirect plain-HTTP requests to HTTPS (308).
    pub https_redirect: bool,
    /// Forward CONNECT requests and tunnel them (off: CONNECT gets 405). Only with the `/`
    /// prefix, the one route a CONNECT (which has no path) can match.
    pub allow_connect: bool,
    /// How https:// endpoints are verified.
    pub upstream_tls: UpstreamTls,
    /// Who may call it (by default, anyone).
    pub auth: Auth,
}

/// Verification of a service's https:// endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamTls {
    /// CA certificates (PEM) instead of the system's trust store; empty: the system's.
    pub ca_bundle_pem: String,
    /// Accept any certificate (flagged in `gwctl service list`).
    pub insecure_skip_verify: bool,
}

/// Matches requests to a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Starts with '/', no trailing '/' (except "/" itself).
    pub path_prefix: String,
    /// Lowercase host names without port; empty means any host.
    pub hosts: Vec<String>,
    /// Remove the matched prefix before forwarding.
    pub strip_prefix: bool,
}

impl Route {
    /// Whether two routes would take the same requests: same prefix and either both match
    /// any host or they share a host.
    pub fn overlaps(&self, other: &Route) -> bool {
        self.path_prefix == other.path_prefix
            && ((self.hosts.is_empty() && other.hosts.is_empty())
                || self.hosts.iter().any(|h| other.hosts.contains(h)))
    }
}

/// A backend base URL `http://host:port` or `https://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Whether it is reached over TLS (`https://`).
    pub tls: bool,
    /// Host name, IPv4 address or bracketed IPv6 address.
    pub host: String,
    /// TCP port, never 0.
    pub port: u16,
}

impl Endpoint {
    /// Parses and validates `http://host:port` or `https://host:port`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        validate::endpoint(raw).map(|(host, port)| Self {
            tls: raw.starts_with("https://"),
            host,
            port,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

/// How endpoints are checked actively.
///
/// The default is a TCP connect: a backend that accepts connections is healthy, whether or
/// not it has a health route, so registering a service never takes a working backend out of
/// rotation by itself. An HTTP check is what operators opt into with a path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Probe {
    /// GET this path; a 2xx answer is a success.
    Http(String),
    /// Connect; an accepted connection is a success.
    #[default]
    Tcp,
    /// No active checks; passive ejection only (an ejected endpoint is retried after the
    /// interval).
    Disabled,
}

impl Probe {
    /// The HTTP path, or "" for TCP and disabled checks (as stored and sent).
    pub fn path(&self) -> &str {
        match self {
            Probe::Http(path) => path,
            Probe::Tcp | Probe::Disabled => "",
        }
    }
}

/// Active health check of a service's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// What a check does.
    pub probe: Probe,
    /// Time between checks of one endpoint.
    pub interval: Duration,
    /// Time allowed for one check; at most `interval`.
    pub timeout: Duration,
    /// Consecutive failures that mark an endpoint unhealthy.
    pub unhealthy_threshold: u32,
    /// Consecutive successes that mark an endpoint healthy.
    pub healthy_threshold: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            probe: Probe::default(),
            interval: DEFAULT_HEALTH_INTERVAL,
            timeout: DEFAULT_HEALTH_TIMEOUT,
            unhealthy_threshold: DEFAULT_UNHEALTHY_THRESHOLD,
            healthy_threshold: DEFAULT_HEALTHY_THRESHOLD,
        }
    }
}

/// Timeouts the data plane applies when proxying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect timeout.
    pub connect: Duration,
    /// Time until the response headers arrive.
    pub request: Duration,
    /// Longest wait for the next bytes of a request body; `None`: the data plane's default.
    pub request_body: Option<Duration>,
    /// Longest wait for the next bytes of a response body; `None`: the data plane's default.
    pub response_body: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: DEFAULT_CONNECT_TIMEOUT,
            request: DEFAULT_REQUEST_TIMEOUT,
            request_body: None,
            response_body: None,
        }
    }
}

/// Load-balancing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadBalancing {
    /// Each request goes to the next healthy endpoint in turn.
    #[default]
    RoundRobin,
}

impl LoadBalancing {
    /// Stable name used in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
        }
    }

    /// Inverse of [`LoadBalancing::as_str`].
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "round_robin" => Some(Self::RoundRobin),
            _ => None,
        }
    }
}

impl TryFrom<pb::Service> for Service {
    type Error = ValidationError;

    fn try_from(msg: pb::Service) -> Result<Self, ValidationError> {
        // Destructured in full: a new proto field must be handled here, not silently dropped.
        let pb::Service {
            name,
            route,
            endpoints,
            health_check,
            timeouts,
            load_balancing,
            created_version: _, // output only
            updated_version: _, // output only
            https_redirect,
            upstream_tls,
            allow_connect,
            auth,
        } = msg;
        let mut p = Problems::default();
        p.check("name", validate::name(&name));
        let route = match route {
            Some(r) => convert_route(r, &mut p),
            None => {
                p.add("route", "required (at least route.path_prefix)");
                None
            }
        };
        if allow_connect
            && let Some(r) = &route
            && r.path_prefix != "/"
        {
            p.add(
                "allow_connect",
                format!(
                    "needs route.path_prefix \"/\", not '{}': a CONNECT request has no path, \
                     so only a / route can take it",
                    validate::echo(&r.path_prefix)
                ),
            );
        }
        if endpoints.len() > MAX_LIST {
            p.add("endpoints", format!("at most {MAX_LIST} endpoints"));
        }
        let mut parsed = Vec::with_capacity(endpoints.len());
        for (i, raw) in endpoints.iter().enumerate() {
            if let Some(ep) = p.check(format_args!("endpoints[{i}]"), Endpoint::parse(raw)) {
                if parsed.contains(&ep) {
                    p.add(
                        format_args!("endpoints[{i}]"),
                        format!("'{}' is listed twice", validate::echo(raw)),
                    );
                } else {
                    parsed.push(ep);
                }
            }
        }
        let upstream_tls = convert_upstream_tls(upstream_tls.unwrap_or_default(), &mut p);
        let auth = Auth::convert(auth.unwrap_or_default(), &mut p);
        let health_check = convert_health_check(health_check.unwrap_or_default(), &mut p);
        let timeouts = convert_timeouts(timeouts.unwrap_or_default(), &mut p);
        let load_balancing = match pb::LoadBalancingPolicy::try_from(load_balancing) {
            Ok(pb::LoadBalancingPolicy::Unspecified | pb::LoadBalancingPolicy::RoundRobin) => {
                Some(LoadBalancing::RoundRobin)
            }
            Err(_) => {
                p.add("load_balancing", format!("unknown value {load_balancing}"));
                None
            }
        };
        let value = match (route, health_check, timeouts, load_balancing) {
            (Some(route), Some(health_check), Some(timeouts), Some(load_balancing)) => {
                Some(Service {
                    name,
                    route,
                    endpoints: parsed,
                    health_check,
                    timeouts,
                    load_balancing,
                    created_version: 0,
                    updated_version: 0,
                    https_redirect,
                    allow_connect,
                    upstream_tls,
                    auth,
                })
            }
            _ => None,
        };
        p.finish(value)
    }
}

fn convert_upstream_tls(msg: pb::UpstreamTls, p: &mut Problems) -> UpstreamTls {
    let pb::UpstreamTls {
        ca_bundle_pem,
        insecure_skip_verify,
    } = msg;
    if ca_bundle_pem.len() > MAX_CA_BUNDLE {
        p.add(
            "upstream_tls.ca_bundle_pem",
            format!("at most {MAX_CA_BUNDLE} bytes"),
        );
    } else if !ca_bundle_pem.is_empty()
        && let Err(e) = gw_tls::pem::certs("CA bundle", ca_bundle_pem.as_bytes())
    {
        p.add("upstream_tls.ca_bundle_pem", e.to_string());
    }
    UpstreamTls {
        ca_bundle_pem,
        insecure_skip_verify,
    }
}

fn convert_route(msg: pb::Route, p: &mut Problems) -> Option<Route> {
    let pb::Route {
        path_prefix,
        hosts,
        strip_prefix,
    } = msg;
    let prefix_ok = p
        .check("route.path_prefix", validate::path_prefix(&path_prefix))
        .is_some();
    if hosts.len() > MAX_LIST {
        p.add("route.hosts", format!("at most {MAX_LIST} hosts"));
    }
    let mut clean: Vec<String> = Vec::with_capacity(hosts.len());
    for (i, h) in hosts.iter().enumerate() {
        if let Some(h) = p.check(format_args!("route.hosts[{i}]"), validate::hostname(h)) {
            if clean.contains(&h) {
                p.add(
                    format_args!("route.hosts[{i}]"),
                    format!("'{}' is listed twice", validate::echo(&h)),
                );
            } else {
                clean.push(h);
            }
        }
    }
    prefix_ok.then_some(Route {
        path_prefix,
        hosts: clean,
        strip_prefix,
    })
}

fn convert_health_check(msg: pb::HealthCheck, p: &mut Problems) -> Option<HealthCheck> {
    let pb::HealthCheck {
        path,
        interval,
        timeout,
        unhealthy_threshold,
        healthy_threshold,
        disabled,
    } = msg;
    let probe = match (path.is_empty(), disabled) {
        (true, false) => Some(Probe::Tcp),
        (true, true) => Some(Probe::Disabled),
        (false, false) => p
            .check("health_check.path", validate::request_path(&path))
            .map(|()| Probe::Http(path)),
        (false, true) => {
            p.add(
                "health_check.path",
                "must be empty when health_check.disabled is set (a disabled check GETs nothing)",
            );
            None
        }
    };
    let interval = p.check(
        "health_check.interval",
        validate::duration(
            interval,
            DEFAULT_HEALTH_INTERVAL,
            MIN_HEALTH_INTERVAL,
            MAX_HEALTH_INTERVAL,
        ),
    );
    let timeout = p.check(
        "health_check.timeout",
        validate::duration(
            timeout,
            DEFAULT_HEALTH_TIMEOUT,
            MIN_TIMEOUT,
            MAX_HEALTH_INTERVAL,
        ),
    );
    if let (Some(i), Some(t)) = (interval, timeout)
        && t > i
    {
        p.add(
            "health_check.timeout",
            format!(
                "{} must not exceed the interval ({})",
                validate::human(t),
                validate::human(i)
            ),
        );
    }
    let unhealthy = threshold(
        "health_check.unhealthy_threshold",
        unhealthy_threshold,
        DEFAULT_UNHEALTHY_THRESHOLD,
        p,
    );
    let healthy = threshold(
        "health_check.healthy_threshold",
        healthy_threshold,
        DEFAULT_HEALTHY_THRESHOLD,
        p,
    );
    match (probe, interval, timeout, unhealthy, healthy) {
        (
            Some(probe),
            Some(interval),
            Some(timeout),
            Some(unhealthy_threshold),
            Some(healthy_threshold),
        ) if timeout <= interval => Some(HealthCheck {
            probe,
            interval,
            timeout,
            unhealthy_threshold,
            healthy_threshold,
        }),
        _ => None,
    }
}

fn threshold(field: &str, value: u32, default: u32, p: &mut Problems) -> Option<u32> {
    match value {
        0 => Some(default),
        v if v <= MAX_THRESHOLD => Some(v),
        v => {
            p.add(
                field,
                format!("{v} is above the maximum of {MAX_THRESHOLD}"),
            );
            None
        }
    }
}

fn convert_timeouts(msg: pb::Timeouts, p: &mut Problems) -> Option<Timeouts> {
    let pb::Timeouts {
        connect,
        request,
        request_body,
        response_body,
    } = msg;
    // Unset stays unset (the data plane's own default); set must be in range.
    let mut body = |field: &str, d: Option<prost_types::Duration>| match d {
        None => Some(None),
        Some(d) => p
            .check(
                field,
                validate::duration(Some(d), MAX_BODY_TIMEOUT, MIN_TIMEOUT, MAX_BODY_TIMEOUT),
            )
            .map(Some),
    };
    let request_body = body("timeouts.request_body", request_body);
    let response_body = body("timeouts.response_body", response_body);
    let connect = p.check(
        "timeouts.connect",
        validate::duration(
            connect,
            DEFAULT_CONNECT_TIMEOUT,
            MIN_TIMEOUT,
            MAX_CONNECT_TIMEOUT,
        ),
    );
    let request = p.check(
        "timeouts.request",
        validate::duration(
            request,
            DEFAULT_REQUEST_TIMEOUT,
            MIN_TIMEOUT,
            MAX_REQUEST_TIMEOUT,
        ),
    );
    Some(Timeouts {
        connect: connect?,
        request: request?,
        request_body: request_body?,
        response_body: response_body?,
    })
}

impl From<&Service> for pb::Service {
    fn from(s: &Service) -> Self {
        pb::Service {
            name: s.name.clone(),
            route: Some(pb::Route {
                path_prefix: s.route.path_prefix.clone(),
                hosts: s.route.hosts.clone(),
                strip_prefix: s.route.strip_prefix,
            }),
            endpoints: s.endpoints.iter().map(ToString::to_string).collect(),
            health_check: Some(pb::HealthCheck {
                path: s.health_check.probe.path().to_owned(),
                disabled: s.health_check.probe == Probe::Disabled,
                interval: Some(validate::to_pb_duration(s.health_check.interval)),
                timeout: Some(validate::to_pb_duration(s.health_check.timeout)),
                unhealthy_threshold: s.health_check.unhealthy_threshold,
                healthy_threshold: s.health_check.healthy_threshold,
            }),
            timeouts: Some(pb::Timeouts {
                connect: Some(validate::to_pb_duration(s.timeouts.connect)),
                request: Some(validate::to_pb_duration(s.timeouts.request)),
                request_body: s.timeouts.request_body.map(validate::to_pb_duration),
                response_body: s.timeouts.response_body.map(validate::to_pb_duration),
            }),
            load_balancing: match s.load_balancing {
                LoadBalancing::RoundRobin => pb::LoadBalancingPolicy::RoundRobin.into(),
            },
            created_version: s.created_version,
            updated_version: s.updated_version,
            https_redirect: s.https_redirect,
            allow_connect: s.allow_connect,
            // Unset when it says nothing, so a listing stays as short as before.
            upstream_tls: (s.upstream_tls != UpstreamTls::default()).then(|| pb::UpstreamTls {
                ca_bundle_pem: s.upstream_tls.ca_bundle_pem.clone(),
                insecure_skip_verify: s.upstream_tls.insecure_skip_verify,
            }),
            auth: s.auth.to_pb(),
        }
    }
}

#[cfg(test)]
mod tests;
