//! The compiled, immutable configuration the request path reads, and its compilation from the
//! protobuf `ConfigSnapshot`.
//!
//! Compilation validates everything once (URLs into `Authority`s, header names into
//! `HeaderName`s, routes into a [`RouteTable`]) and reports the first problem naming the service
//! or policy and the field. Only once the whole config is known to be good does it touch shared
//! state (endpoint reuse, limiter reconcile), so a rejected version changes nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use gw_proto::v1 as pb;
use http::uri::{Authority, Uri};

use crate::auth::jwks::{JwksRegistry, JwksSettings};
use crate::auth::{KeySources, KeyTable, ServiceAuth};
use crate::config::router::{RouteSpec, RouteTable};
use crate::limiter::global::{self, GlobalDef, GlobalRegistry, OnStoreError};
use crate::limiter::policy::{ActivePolicy, Audience, Counter};
use crate::limiter::{KeySpec, LimiterRegistry, Mode, PolicyDef, PolicyLimiter, RateSpec};
use crate::stats::{ConsumerStats, PolicyStats, Registry, ServiceStats};
use crate::tls::SniTable;
use crate::tls::sni::Entry as CertEntry;
use crate::upstream::balancer::{Endpoint, RoundRobin};
use crate::upstream::client::{Clients, Connector, UpstreamClient};
use crate::upstream::tls::{TlsConfigs, TlsSpec, UpstreamTls};

/// Default connect timeout (proto: `Timeouts.connect`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default request timeout (proto: `Timeouts.request`).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default request-body idle timeout: the longest the proxy waits for the next bytes of an
/// upload it is ready to forward (nginx's `client_body_timeout` is 60 s; 10 s, like the
/// header timeout, is long for a live client and short for one that holds connections).
pub const DEFAULT_REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default response-body idle timeout: the longest the proxy waits for the next bytes of a
/// response body from a backend (nginx's `proxy_read_timeout` is 60 s too). Streaming
/// backends that pause longer (server-sent events) send heartbeats or raise it per service.
pub const DEFAULT_RESPONSE_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Default health-check interval.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// Default health-check timeout.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Default failures before an endpoint is marked unhealthy.
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
/// Default successes before an endpoint is marked healthy again.
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
/// Longest policy period the proto allows.
const MAX_PERIOD: Duration = Duration::from_secs(24 * 3600);

/// One config version, ready for the request path.
#[derive(Debug)]
pub struct Snapshot {
    /// The config version.
    pub version: u64,
    /// Host + prefix -> index into `services`.
    pub routes: RouteTable,
    /// Services, in config order (by name).
    pub services: Box<[Service]>,
    /// Policies, in config order (by name), for `/config`.
    pub policies: Box<[PolicyInfo]>,
    /// The HTTPS listener's certificates, by server name.
    pub certificates: Arc<SniTable>,
    /// Consumers' API keys, by hash, and their JWT verifier.
    pub keys: KeyTable,
}

/// A compiled service.
#[derive(Debug)]
pub struct Service {
    /// Service name.
    pub name: Arc<str>,
    /// Route prefix as configured.
    pub path_prefix: Arc<str>,
    /// Lowercase hosts; empty: any.
    pub hosts: Box<[Arc<str>]>,
    /// Whether the matched prefix is removed before forwarding.
    pub strip_prefix: bool,
    /// Endpoint selection.
    pub balancer: RoundRobin,
    /// TCP connect timeout (applied by `client`).
    pub connect_timeout: Duration,
    /// Time allowed from sending the request to the response headers.
    pub request_timeout: Duration,
    /// Longest wait for the next bytes of the client's request body.
    pub request_body_timeout: Duration,
    /// Longest wait for the next bytes of the backend's response body.
    pub response_body_timeout: Duration,
    /// Pooled client for this service's connect timeout.
    pub client: UpstreamClient,
    /// Forward CONNECT and tunnel it (off: CONNECT gets 405).
    pub allow_connect: bool,
    /// Opens the unpooled connections CONNECT tunnels take (same caps, timeout and TLS as
    /// `client`).
    pub connector: Connector,
    /// Every policy that applies: the service's own, then the all-services ones.
    pub policies: Box<[Arc<ActivePolicy>]>,
    /// Counters, kept across versions by service name.
    pub stats: Arc<ServiceStats>,
    /// Active health-check settings (used by health checking).
    pub health: HealthSpec,
    /// Answer plain-HTTP requests with a 308 to HTTPS.
    pub https_redirect: bool,
    /// How its https:// endpoints are verified.
    pub upstream_tls: Arc<UpstreamTls>,
    /// Who may call it; `None`: anyone.
    pub auth: Option<ServiceAuth>,
}

/// What an active health check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `GET` this path; a 2xx answer is a success.
    Http(Arc<str>),
    /// Connect; an accepted connection is a success (the default: a backend without a health
    /// route keeps serving).
    Tcp,
    /// No active checks: only passive ejection, and an ejected endpoint is tried again after
    /// the interval.
    Disabled,
}

/// Health-check settings with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSpec {
    /// What a check does.
    pub probe: Probe,
    /// Between checks.
    pub interval: Duration,
    /// Per check.
    pub timeout: Duration,
    /// Failures to mark unhealthy.
    pub unhealthy_threshold: u32,
    /// Successes to mark healthy.
    pub healthy_threshold: u32,
    /// TLS for https:// endpoints (the service's); `None` before compilation sets it.
    pub tls: Option<Arc<UpstreamTls>>,
}

/// A policy as shown by `/config`.
#[derive(Debug, Clone)]
pub struct PolicyInfo {
    /// Name.
    pub name: Arc<str>,
    /// The service it applies to; `None`: all.
    pub service: Option<Arc<str>>,
    /// The compiled definition (for a GLOBAL policy, the fleet's rate).
    pub def: PolicyDef,
    /// `Some` for a GLOBAL policy: what it does while Redis is away.
    pub global: Option<OnStoreError>,
    /// Only requests of this consumer or group; `None`: every request.
    pub audience: Option<Audience>,
}

/// Endpoints by (service name, URL).
pub type EndpointsByKey = HashMap<(Arc<str>, Arc<str>), Arc<Endpoint>>;

/// The node's own settings for what a service's config leaves unset (from the data plane's
/// flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeDefaults {
    /// Request-body idle timeout.
    pub request_body_timeout: Duration,
    /// Response-body idle timeout.
    pub response_body_timeout: Duration,
}

impl Default for NodeDefaults {
    fn default() -> Self {
        Self {
            request_body_timeout: DEFAULT_REQUEST_BODY_TIMEOUT,
            response_body_timeout: DEFAULT_RESPONSE_BODY_TIMEOUT,
        }
    }
}

/// Long-lived state that compilation reuses across versions.
#[derive(Debug)]
pub struct Reuse {
    /// The node's defaults for unset service settings.
    pub defaults: NodeDefaults,
    /// Endpoints by (service, URL), so health state survives updates.
    pub endpoints: std::sync::Mutex<EndpointsByKey>,
    /// Upstream clients by connect timeout and TLS settings.
    pub clients: Clients,
    /// Upstream TLS configs by settings.
    pub tls_configs: TlsConfigs,
    /// Service counters.
    pub service_stats: Registry<ServiceStats>,
    /// Policy counters.
    pub policy_stats: Registry<PolicyStats>,
    /// Consumer counters (issue 12; reported to the control plane, not to Prometheus).
    pub consumer_stats: Registry<ConsumerStats>,
    /// Token buckets.
    pub limiters: LimiterRegistry,
    /// GLOBAL policies and their Redis store.
    pub globals: GlobalRegistry,
    /// Live data planes as the control plane last said (at least 1): a GLOBAL policy's
    /// local share is its rate divided by this.
    pub live_data_planes: std::sync::atomic::AtomicU32,
    /// JWKS sources by URL, so a new version neither refetches nor restarts them.
    pub jwks: JwksRegistry,
    /// The client TLS config for `https://` JWKS URLs when `--jwks-ca-cert` is given (the
    /// system's trust store plus that file); `None`: the system's trust store, as for
    /// upstreams without a CA bundle.
    pub jwks_tls: Option<Arc<rustls::ClientConfig>>,
}

impl Reuse {
    /// The definitions the in-process buckets are reconciled with: a NODE policy's own, and
    /// for a GLOBAL policy this node's share of it (its fallback while Redis is away).
    pub fn limiter_defs(&self, infos: &[PolicyInfo]) -> Vec<PolicyDef> {
        let live = self
            .live_data_planes
            .load(std::sync::atomic::Ordering::Relaxed);
        infos
            .iter()
            .map(|i| {
                let mut def = i.def.clone();
                if i.global.is_some() {
                    def.rate = global::share(&def.rate, live);
                }
                def
            })
            .collect()
    }
}

/// A service after validation, before shared state is touched.
struct Checked {
    name: Arc<str>,
    path_prefix: Arc<str>,
    hosts: Box<[Arc<str>]>,
    strip_prefix: bool,
    endpoints: Vec<(Arc<str>, Authority)>,
    connect_timeout: Duration,
    request_timeout: Duration,
    request_body_timeout: Option<Duration>,
    response_body_timeout: Option<Duration>,
    health: HealthSpec,
    https_redirect: bool,
    allow_connect: bool,
    tls: TlsSpec,
    auth: Option<ServiceAuth>,
}

/// Validates and compiles `snapshot` as `version`. On error nothing shared has changed.
pub fn compile(
    version: u64,
    snapshot: &pb::ConfigSnapshot,
    reuse: &Reuse,
) -> Result<Snapshot, String> {
    let pb::ConfigSnapshot {
        services,
        policies,
        certificates,
        consumers,
    } = snapshot;

    let certificates = Arc::new(compile_certificates(certificates)?);
    // A consumer's counters are created here even if a later check refuses the version: an
    // unused zero counter is never reported, so that changes nothing anyone can see. A JWKS
    // URL seen for the first time starts fetching now too; `retain` below drops it with the
    // next version that does not use it.
    let keys = KeyTable::compile(consumers, &reuse.consumer_stats, &|url| {
        reuse.jwks.source(url, || {
            let mut settings = JwksSettings::default();
            if url.starts_with("https:") {
                settings.tls = Some(match &reuse.jwks_tls {
                    Some(config) => config.clone(),
                    None => reuse.tls_configs.get(&TlsSpec::default())?.config().clone(),
                });
            }
            Ok(settings)
        })
    })?;
    let mut checked = Vec::with_capacity(services.len());
    let mut names = HashSet::new();
    for s in services {
        let c = check_service(s)?;
        if !names.insert(c.name.clone()) {
            return Err(format!("service '{}': name: appears twice", c.name));
        }
        checked.push(c);
    }
    let route_specs: Vec<RouteSpec> = checked
        .iter()
        .enumerate()
        .map(|(i, c)| RouteSpec {
            path_prefix: c.path_prefix.to_string(),
            hosts: c.hosts.iter().map(|h| h.to_string()).collect(),
            service: i,
        })
        .collect();
    let routes = RouteTable::build(&route_specs).map_err(|e| format!("route: {e}"))?;

    let mut infos = Vec::with_capacity(policies.len());
    let mut policy_names = HashSet::new();
    for p in policies {
        let info = check_policy(p)?;
        if !policy_names.insert(info.name.clone()) {
            return Err(format!("policy '{}': name: appears twice", info.name));
        }
        if let Some(svc) = &info.service
            && !names.contains(svc)
        {
            return Err(format!(
                "policy '{}': service: no service named '{svc}'",
                info.name
            ));
        }
        infos.push(info);
    }

    // Upstream TLS configs are cached by settings; building one only parses its CA bundle.
    let mut upstream_tls = Vec::with_capacity(checked.len());
    for c in &checked {
        let tls = reuse
            .tls_configs
            .get(&c.tls)
            .map_err(|e| format!("service '{}': {e}", c.name))?;
        upstream_tls.push(tls);
    }

    // Everything is valid: from here on, shared state changes.
    reuse.jwks.retain(keys.jwks_urls());
    let limiters = reuse.limiters.reconcile(&reuse.limiter_defs(&infos));
    let global_defs: Vec<GlobalDef> = infos
        .iter()
        .filter_map(|i| {
            i.global.map(|on_error| GlobalDef {
                name: i.name.clone(),
                rate: i.def.rate,
                on_error,
                stats: reuse.policy_stats.get(&i.name),
            })
        })
        .collect();
    if !global_defs.is_empty() && reuse.globals.store().is_none() {
        tracing::warn!(
            policies = global_defs.len(),
            "GLOBAL rate-limit policies in the config, but this data plane has no --redis-url: \
             each is enforced through its on_store_error (by default this node's share)"
        );
    }
    let mut globals = reuse.globals.reconcile(&global_defs).into_iter();
    let mut active: Vec<(Option<Arc<str>>, Arc<ActivePolicy>)> = Vec::with_capacity(infos.len());
    for (info, limiter) in infos.iter().zip(limiters) {
        let counter = match info.global {
            // `globals` has one entry per GLOBAL policy, in the same order.
            Some(_) => globals.next().map_or(Counter::Local, Counter::Global),
            None => Counter::Local,
        };
        active.push((
            info.service.clone(),
            Arc::new(active_policy(info, limiter, counter, reuse)),
        ));
    }

    let mut old_endpoints = reuse
        .endpoints
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut kept = HashMap::new();
    let mut compiled = Vec::with_capacity(checked.len());
    for (mut c, tls) in checked.into_iter().zip(upstream_tls) {
        c.health.tls = Some(tls.clone());
        let endpoints: Arc<[Arc<Endpoint>]> = c
            .endpoints
            .into_iter()
            .map(|(url, authority)| {
                let key = (c.name.clone(), url.clone());
                let ep = old_endpoints
                    .remove(&key)
                    .or_else(|| kept.get(&key).cloned())
                    .unwrap_or_else(|| Arc::new(Endpoint::new(url, authority)));
                kept.insert(key, ep.clone());
                ep
            })
            .collect();
        // The service's own policies first, then the global ones: both in name order.
        let policies = active
            .iter()
            .filter(|(svc, _)| svc.as_deref() == Some(&*c.name))
            .chain(active.iter().filter(|(svc, _)| svc.is_none()))
            .map(|(_, p)| p.clone())
            .collect();
        compiled.push(Service {
            stats: reuse.service_stats.get(&c.name),
            client: reuse.clients.get(c.connect_timeout, &tls),
            connector: reuse.clients.connector(c.connect_timeout, &tls),
            allow_connect: c.allow_connect,
            name: c.name,
            path_prefix: c.path_prefix,
            hosts: c.hosts,
            strip_prefix: c.strip_prefix,
            balancer: RoundRobin::new(endpoints),
            connect_timeout: c.connect_timeout,
            request_timeout: c.request_timeout,
            request_body_timeout: c
                .request_body_timeout
                .unwrap_or(reuse.defaults.request_body_timeout),
            response_body_timeout: c
                .response_body_timeout
                .unwrap_or(reuse.defaults.response_body_timeout),
            policies,
            health: c.health,
            https_redirect: c.https_redirect,
            upstream_tls: tls,
            auth: c.auth,
        });
    }
    *old_endpoints = kept;

    Ok(Snapshot {
        version,
        routes,
        services: compiled.into_boxed_slice(),
        policies: infos.into_boxed_slice(),
        certificates,
        keys,
    })
}

/// Checks every certificate (parses, key matches) into the SNI table. An expired one still
/// loads, with a warning: refusing the whole config would take the gateway's other sites
/// down with it, and clients say clearly that it expired.
fn compile_certificates(certificates: &[pb::Certificate]) -> Result<SniTable, String> {
    let mut entries = Vec::with_capacity(certificates.len());
    let mut names = HashSet::new();
    for c in certificates {
        let pb::Certificate {
            name,
            cert_chain_pem,
            private_key_pem,
            sans: _,
            not_after: _,
            updated_version: _,
        } = c;
        if !check_name(name) {
            return Err(format!(
                "certificate '{name}': name: must be a DNS label (a-z, 0-9, '-', 1-63 chars)"
            ));
        }
        if !names.insert(name.as_str()) {
            return Err(format!("certificate '{name}': name: appears twice"));
        }
        let key = gw_tls::Secret::new(private_key_pem.clone());
        let checked = gw_tls::cert::load(name, cert_chain_pem.as_bytes(), &key)
            .map_err(|e| format!("certificate '{name}': {e}"))?;
        let now = gw_tls::cert::unix_seconds(std::time::SystemTime::now());
        if checked.info.not_after < now {
            tracing::warn!(certificate = %name, not_after = %gw_tls::cert::format_utc(checked.info.not_after),
                "certificate has expired; still serving it until it is replaced");
        }
        entries.push(CertEntry {
            name: name.as_str().into(),
            dns_names: checked.info.dns_names,
            ip_addresses: checked.info.ip_addresses,
            not_after: checked.info.not_after,
            key: checked.key,
        });
    }
    Ok(SniTable::build(entries))
}

fn active_policy(
    info: &PolicyInfo,
    limiter: Arc<PolicyLimiter>,
    counter: Counter,
    reuse: &Reuse,
) -> ActivePolicy {
    let stats = reuse.policy_stats.get(&info.name);
    stats.global.store(
        matches!(counter, Counter::Global(_)),
        std::sync::atomic::Ordering::Relaxed,
    );
    ActivePolicy {
        policy_header: match counter {
            // The fleet's rate, not the local share the limiter holds.
            Counter::Global(_) => global::policy_header(&info.name, &info.def.rate),
            // Built (and quoted) by the limiter when its rate was set.
            Counter::Local => limiter.policy_header_value(),
        },
        limiter,
        counter,
        mode: info.def.mode,
        stats,
        audience: info.audience.clone(),
    }
}

fn duration(
    d: &Option<prost_types::Duration>,
    default: Duration,
    what: &str,
) -> Result<Duration, String> {
    match d {
        None => Ok(default),
        Some(d) => Duration::try_from(*d).map_err(|_| format!("{what}: must not be negative")),
    }
}

/// A service, policy, certificate or consumer name: a lowercase DNS label.
fn check_name(name: &str) -> bool {
    crate::auth::is_name(name)
}

fn check_service(s: &pb::Service) -> Result<Checked, String> {
    let pb::Service {
        name,
        route,
        endpoints,
        health_check,
        timeouts,
        load_balancing,
        created_version: _,
        updated_version: _,
        https_redirect,
        upstream_tls,
        allow_connect,
        auth,
    } = s;
    if !check_name(name) {
        return Err(format!(
            "service '{name}': name: must be a DNS label (a-z, 0-9, '-', 1-63 chars)"
        ));
    }
    let err = |field: &str, why: &str| format!("service '{name}': {field}: {why}");
    let Some(pb::Route {
        path_prefix,
        hosts,
        strip_prefix,
    }) = route
    else {
        return Err(err("route", "missing"));
    };
    if !path_prefix.starts_with('/') {
        return Err(err("route.path_prefix", "must start with '/'"));
    }
    if path_prefix.contains(['?', '#']) || path_prefix.parse::<http::uri::PathAndQuery>().is_err() {
        return Err(err("route.path_prefix", "is not a valid URL path"));
    }
    if *allow_connect && path_prefix != "/" {
        // CONNECT has no path: it is routed to a "/" route only, so this would never apply.
        return Err(err("allow_connect", "needs route.path_prefix \"/\""));
    }
    let mut checked_hosts = Vec::with_capacity(hosts.len());
    for (i, h) in hosts.iter().enumerate() {
        if h.is_empty() || h.contains([':', '/', ' ']) || h.parse::<Authority>().is_err() {
            return Err(err(
                &format!("route.hosts[{i}]"),
                &format!("'{h}' is not a host name"),
            ));
        }
        checked_hosts.push(Arc::<str>::from(h.to_ascii_lowercase()));
    }
    let mut eps = Vec::with_capacity(endpoints.len());
    for (i, url) in endpoints.iter().enumerate() {
        eps.push((
            url.as_str().into(),
            parse_endpoint(url).map_err(|why| err(&format!("endpoints[{i}]"), &why))?,
        ));
    }
    let (connect, request, request_body, response_body) = match timeouts {
        None => (DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, None, None),
        Some(pb::Timeouts {
            connect,
            request,
            request_body,
            response_body,
        }) => {
            // Unset body timeouts stay unset: the node's own defaults fill them in.
            let body = |d: &Option<prost_types::Duration>, field: &str| {
                d.as_ref()
                    .map(|d| duration(&Some(*d), Duration::ZERO, &err(field, "invalid")))
                    .transpose()
            };
            (
                duration(
                    connect,
                    DEFAULT_CONNECT_TIMEOUT,
                    &err("timeouts.connect", "invalid"),
                )?,
                duration(
                    request,
                    DEFAULT_REQUEST_TIMEOUT,
                    &err("timeouts.request", "invalid"),
                )?,
                body(request_body, "timeouts.request_body")?,
                body(response_body, "timeouts.response_body")?,
            )
        }
    };
    if connect.is_zero()
        || request.is_zero()
        || request_body.is_some_and(|d| d.is_zero())
        || response_body.is_some_and(|d| d.is_zero())
    {
        return Err(err("timeouts", "must be positive"));
    }
    let health = check_health(health_check.as_ref()).map_err(|(field, why)| err(field, &why))?;
    match pb::LoadBalancingPolicy::try_from(*load_balancing) {
        Ok(pb::LoadBalancingPolicy::Unspecified | pb::LoadBalancingPolicy::RoundRobin) => {}
        Err(_) => {
            return Err(err(
                "load_balancing",
                &format!("unknown policy {load_balancing}"),
            ));
        }
    }
    let tls = match upstream_tls {
        None => TlsSpec::default(),
        Some(pb::UpstreamTls {
            ca_bundle_pem,
            insecure_skip_verify,
        }) => TlsSpec {
            ca_bundle_pem: (!ca_bundle_pem.is_empty()).then(|| ca_bundle_pem.as_str().into()),
            insecure_skip_verify: *insecure_skip_verify,
        },
    };
    let auth = match auth {
        None => None,
        Some(a) => check_auth(a).map_err(|(field, why)| err(field, &why))?,
    };
    Ok(Checked {
        auth,
        https_redirect: *https_redirect,
        allow_connect: *allow_connect,
        tls,
        name: name.as_str().into(),
        path_prefix: path_prefix.as_str().into(),
        hosts: checked_hosts.into_boxed_slice(),
        strip_prefix: *strip_prefix,
        endpoints: eps,
        connect_timeout: connect,
        request_timeout: request,
        request_body_timeout: request_body,
        response_body_timeout: response_body,
        health,
    })
}

/// Compiles a service's auth; `None` when it admits anyone.
fn check_auth(a: &pb::ServiceAuth) -> Result<Option<ServiceAuth>, (&'static str, String)> {
    let pb::ServiceAuth {
        methods,
        allowed_groups,
        key_sources,
    } = a;
    let (mut keys, mut jwt) = (false, false);
    for m in methods {
        match pb::AuthMethod::try_from(*m) {
            Ok(pb::AuthMethod::ApiKey) => keys = true,
            Ok(pb::AuthMethod::Jwt) => jwt = true,
            Ok(pb::AuthMethod::Unspecified) | Err(_) => {
                return Err(("auth.methods", format!("unknown method {m}")));
            }
        }
    }
    if !keys && !jwt {
        return if allowed_groups.is_empty() && key_sources.is_empty() {
            Ok(None)
        } else {
            Err((
                "auth",
                "allowed_groups or key_sources without methods".into(),
            ))
        };
    }
    let mut sources = KeySources::default();
    for s in key_sources {
        match pb::ApiKeySource::try_from(*s) {
            Ok(pb::ApiKeySource::Bearer) => sources.bearer = true,
            Ok(pb::ApiKeySource::Header) => sources.header = true,
            Ok(pb::ApiKeySource::Query) => sources.query = true,
            Ok(pb::ApiKeySource::Unspecified) | Err(_) => {
                return Err(("auth.key_sources", format!("unknown source {s}")));
            }
        }
    }
    if keys && key_sources.is_empty() {
        // The control plane fills the default in; an older or hand-made snapshot may not.
        sources.bearer = true;
        sources.header = true;
    }
    if !keys {
        // Where to look for a key means nothing when keys are not accepted.
        sources = KeySources::default();
    }
    if let Some(g) = allowed_groups.iter().find(|g| !check_name(g)) {
        return Err(("auth.allowed_groups", format!("'{g}' must be a DNS label")));
    }
    Ok(Some(ServiceAuth {
        jwt,
        key_sources: sources,
        allowed_groups: allowed_groups
            .iter()
            .map(|g| Arc::from(g.as_str()))
            .collect(),
    }))
}

fn check_health(h: Option<&pb::HealthCheck>) -> Result<HealthSpec, (&'static str, String)> {
    let Some(pb::HealthCheck {
        path,
        interval,
        timeout,
        unhealthy_threshold,
        healthy_threshold,
        disabled,
    }) = h
    else {
        return Ok(HealthSpec {
            probe: Probe::Tcp,
            interval: DEFAULT_HEALTH_INTERVAL,
            timeout: DEFAULT_HEALTH_TIMEOUT,
            unhealthy_threshold: DEFAULT_UNHEALTHY_THRESHOLD,
            healthy_threshold: DEFAULT_HEALTHY_THRESHOLD,
            tls: None,
        });
    };
    let probe = match (path.is_empty(), *disabled) {
        (true, false) => Probe::Tcp,
        (true, true) => Probe::Disabled,
        (false, true) => {
            return Err((
                "health_check.path",
                "must be empty when health_check.disabled is set".into(),
            ));
        }
        (false, false) => {
            if !path.starts_with('/') || path.parse::<http::uri::PathAndQuery>().is_err() {
                return Err((
                    "health_check.path",
                    "must be a URL path starting with '/'".into(),
                ));
            }
            Probe::Http(path.as_str().into())
        }
    };
    let interval = duration(interval, DEFAULT_HEALTH_INTERVAL, "health_check.interval")
        .map_err(|e| ("health_check.interval", e))?;
    let timeout = duration(timeout, DEFAULT_HEALTH_TIMEOUT, "health_check.timeout")
        .map_err(|e| ("health_check.timeout", e))?;
    if interval.is_zero() || timeout.is_zero() {
        return Err((
            "health_check",
            "interval and timeout must be positive".into(),
        ));
    }
    let or = |v: u32, d: u32| if v == 0 { d } else { v };
    Ok(HealthSpec {
        probe,
        interval,
        timeout,
        unhealthy_threshold: or(*unhealthy_threshold, DEFAULT_UNHEALTHY_THRESHOLD),
        healthy_threshold: or(*healthy_threshold, DEFAULT_HEALTHY_THRESHOLD),
        tls: None,
    })
}

/// `http://host:port` or `https://host:port` -> `host:port`. Rejects other schemes, paths,
/// queries and credentials.
pub fn parse_endpoint(url: &str) -> Result<Authority, String> {
    let uri: Uri = url.parse().map_err(|_| format!("'{url}' is not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!("'{url}' is not an http:// or https:// URL"));
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("'{url}' has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(format!("'{url}' must not carry credentials"));
    }
    if authority.port_u16().is_none() {
        return Err(format!("'{url}' has no port"));
    }
    if uri
        .path_and_query()
        .is_some_and(|pq| pq.as_str() != "/" && !pq.as_str().is_empty())
        || url.ends_with('/')
    {
        return Err(format!("'{url}' must not have a path or query"));
    }
    Ok(authority.clone())
}

fn check_policy(p: &pb::Policy) -> Result<PolicyInfo, String> {
    let pb::Policy {
        name,
        service,
        key,
        limit,
        period,
        burst,
        mode,
        updated_version: _,
        scope,
        on_store_error,
        consumer,
        group,
    } = p;
    if !check_name(name) {
        return Err(format!(
            "policy '{name}': name: must be a DNS label (a-z, 0-9, '-', 1-63 chars)"
        ));
    }
    let err = |field: &str, why: &str| format!("policy '{name}': {field}: {why}");
    let key = match key.as_ref().and_then(|k| k.source.as_ref()) {
        None => return Err(err("key", "missing")),
        Some(pb::rate_limit_key::Source::ClientIp(pb::ClientIpKey {})) => KeySpec::ClientIp,
        Some(pb::rate_limit_key::Source::Header(h)) => KeySpec::Header(
            http::HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| err("key.header", &format!("'{h}' is not a header name")))?,
        ),
        Some(pb::rate_limit_key::Source::Consumer(pb::ConsumerKey {})) => KeySpec::Consumer,
    };
    let audience = match (consumer.is_empty(), group.is_empty()) {
        (true, true) => None,
        (false, true) if check_name(consumer) => Some(Audience::Consumer(consumer.as_str().into())),
        (true, false) if check_name(group) => Some(Audience::Group(group.as_str().into())),
        (false, false) => return Err(err("consumer", "consumer and group both set")),
        _ => return Err(err("consumer", "consumer or group is not a DNS label")),
    };
    if *limit < 1 {
        return Err(err("limit", "must be at least 1"));
    }
    let Some(period) = period else {
        return Err(err("period", "missing"));
    };
    let period = Duration::try_from(*period).map_err(|_| err("period", "must not be negative"))?;
    if period < Duration::from_secs(1) || period > MAX_PERIOD || period.subsec_nanos() != 0 {
        return Err(err("period", "must be whole seconds between 1s and 24h"));
    }
    let mode = match pb::PolicyMode::try_from(*mode) {
        Ok(pb::PolicyMode::Unspecified | pb::PolicyMode::Enforce) => Mode::Enforce,
        Ok(pb::PolicyMode::Shadow) => Mode::Shadow,
        Err(_) => return Err(err("mode", &format!("unknown mode {mode}"))),
    };
    let global = match pb::PolicyScope::try_from(*scope) {
        Ok(pb::PolicyScope::Unspecified | pb::PolicyScope::Node) => None,
        Ok(pb::PolicyScope::Global) => {
            Some(match pb::StoreErrorAction::try_from(*on_store_error) {
                Ok(pb::StoreErrorAction::Unspecified | pb::StoreErrorAction::LocalShare) => {
                    OnStoreError::LocalShare
                }
                Ok(pb::StoreErrorAction::Allow) => OnStoreError::Allow,
                Ok(pb::StoreErrorAction::Deny) => OnStoreError::Deny,
                Err(_) => {
                    return Err(err(
                        "on_store_error",
                        &format!("unknown action {on_store_error}"),
                    ));
                }
            })
        }
        Err(_) => return Err(err("scope", &format!("unknown scope {scope}"))),
    };
    let name: Arc<str> = name.as_str().into();
    Ok(PolicyInfo {
        service: if service.is_empty() {
            None
        } else {
            Some(service.as_str().into())
        },
        def: PolicyDef {
            name: name.clone(),
            key,
            rate: RateSpec {
                limit: *limit,
                period,
                burst: if *burst == 0 { *limit } else { *burst },
            },
            mode,
        },
        global,
        audience,
        name,
    })
}

#[cfg(test)]
mod tests;
