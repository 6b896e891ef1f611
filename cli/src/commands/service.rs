//! `gwctl service add|list|get|update|rm`: building requests from flags and showing services.
//!
//! JSON shape of a service (`-o json`), stable for scripts; durations use the flag syntax:
//! ```json
//! {"name": "demo", "path_prefix": "/api", "hosts": [], "strip_prefix": true,
//!  "endpoints": ["http://127.0.0.1:8001"],
//!  "health_check": {"kind": "http", "path": "/health", "interval": "5s", "timeout": "1s",
//!                   "unhealthy_threshold": 3, "healthy_threshold": 2},
//!  "timeouts": {"connect": "1s", "request": "30s"},
//!  "load_balancing": "round_robin", "created_version": 3, "updated_version": 7,
//!  "https_redirect": false, "upstream_verify": "system", "allow_connect": false,
//!  "auth": null}
//! ```
//! `auth` is null for a service anyone may call, else
//! `{"methods": ["key"], "allowed_groups": ["gold"], "key_sources": ["bearer", "header"]}`.
//! `health_check.kind` is `http` (GET `path`), `tcp` (connect; `path` is "") or `off`.
//! `list` prints `{"config_version": N, "services": [...]}`, `get` the service itself,
//! `add`/`update` `{"action": "created"|"updated", "config_version": N, "service": {...}}`,
//! `rm` `{"action": "deleted", "config_version": N, "name": "demo"}`.

use std::io::Write;

use gw_proto::v1 as pb;
use serde::Serialize;

use crate::args::{
    AuthArgs, HttpsArgs, ServiceAddArgs, ServiceCommand, ServiceUpdateArgs, TuningArgs,
};
use crate::client::AdminClient;
use crate::commands::deleted::Deleted;
use crate::duration;
use crate::error::Error;
use crate::output::{OutputFormat, Render, Table, details, emit, or_dash};

/// Runs one `service` subcommand against the control plane.
pub async fn run(
    command: ServiceCommand,
    client: &mut AdminClient,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), Error> {
    match command {
        ServiceCommand::Add(args) => {
            let request = pb::CreateServiceRequest {
                service: Some(new_service(args)?),
            };
            let response = client
                .api
                .create_service(request)
                .await
                .map_err(|s| client.error(s))?
                .into_inner();
            let changed = ServiceChanged::new("created", response.service, response.config_version);
            emit(format, &changed, out)?;
        }
        ServiceCommand::List => {
            let response = client
                .api
                .list_services(pb::ListServicesRequest {})
                .await
                .map_err(|s| client.error(s))?
                .into_inner();
            let list = ServiceList {
                config_version: response.config_version,
                services: response
                    .services
                    .into_iter()
                    .map(ServiceView::from)
                    .collect(),
            };
            emit(format, &list, out)?;
        }
        ServiceCommand::Get { name } => {
            let service = fetch(client, name).await?;
            emit(format, &ServiceView::from(service), out)?;
        }
        ServiceCommand::Update(args) => {
            let current = fetch(client, args.name.clone()).await?;
            let request = pb::UpdateServiceRequest {
                service: Some(apply_update(current, args)?),
            };
            let response = client
                .api
                .update_service(request)
                .await
                .map_err(|s| client.error(s))?
                .into_inner();
            let changed = ServiceChanged::new("updated", response.service, response.config_version);
            emit(format, &changed, out)?;
        }
        ServiceCommand::Rm { name } => {
            let response = client
                .api
                .delete_service(pb::DeleteServiceRequest { name: name.clone() })
                .await
                .map_err(|s| client.error(s))?
                .into_inner();
            emit(
                format,
                &Deleted::new("service", name, response.config_version),
                out,
            )?;
        }
    }
    Ok(())
}

async fn fetch(client: &mut AdminClient, name: String) -> Result<pb::Service, Error> {
    let response = client
        .api
        .get_service(pb::GetServiceRequest { name })
        .await
        .map_err(|s| client.error(s))?
        .into_inner();
    Ok(response.service.unwrap_or_default())
}

/// The service `add` sends: unset tuning flags stay unset so the control plane's defaults apply.
fn new_service(args: ServiceAddArgs) -> Result<pb::Service, Error> {
    let ServiceAddArgs {
        name,
        prefix,
        endpoints,
        hosts,
        strip_prefix,
        allow_connect,
        tuning,
        https,
        auth,
    } = args;
    let upstream_tls = https.upstream_tls(None)?;
    let auth = auth.apply(None)?;
    Ok(pb::Service {
        name,
        route: Some(pb::Route {
            path_prefix: prefix,
            hosts,
            strip_prefix,
        }),
        endpoints,
        health_check: tuning.apply_health(None),
        timeouts: tuning.apply_timeouts(None),
        load_balancing: pb::LoadBalancingPolicy::Unspecified as i32,
        created_version: 0,
        updated_version: 0,
        https_redirect: https.https_redirect,
        upstream_tls,
        allow_connect,
        auth,
    })
}

impl AuthArgs {
    fn any(&self) -> bool {
        self.auth.is_some()
            || !self.allow_groups.is_empty()
            || self.any_group
            || !self.key_sources.is_empty()
    }

    /// `base` with the given auth flags applied; `None` when the service admits anyone.
    fn apply(&self, base: Option<pb::ServiceAuth>) -> Result<Option<pb::ServiceAuth>, Error> {
        let mut auth = base.unwrap_or_default();
        if let Some(methods) = &self.auth {
            auth.methods = methods.0.iter().map(|m| *m as i32).collect();
            if methods.0.is_empty() {
                // `--auth none`: nothing else about auth means anything any more.
                auth = pb::ServiceAuth::default();
            }
        }
        if !self.allow_groups.is_empty() || self.any_group {
            auth.allowed_groups = self.allow_groups.clone();
        }
        if !self.key_sources.is_empty() {
            auth.key_sources = self.key_sources.iter().map(|s| s.0 as i32).collect();
        }
        if auth.methods.is_empty() {
            if !auth.allowed_groups.is_empty() || !auth.key_sources.is_empty() {
                return Err(Error::Usage(
                    "--allow-group and --key-source need --auth key".to_string(),
                ));
            }
            return Ok(None);
        }
        Ok(Some(auth))
    }
}

impl HttpsArgs {
    fn any(&self) -> bool {
        self.https_redirect || self.upstream_ca.is_some() || self.upstream_insecure
    }

    /// `base` with the given upstream TLS flags applied (the CA file read now).
    fn upstream_tls(
        &self,
        base: Option<pb::UpstreamTls>,
    ) -> Result<Option<pb::UpstreamTls>, Error> {
        if self.upstream_ca.is_none() && !self.upstream_insecure {
            return Ok(base);
        }
        let mut tls = base.unwrap_or_default();
        if let Some(path) = &self.upstream_ca {
            tls.ca_bundle_pem = std::fs::read_to_string(path).map_err(|e| {
                Error::Usage(format!(
                    "--upstream-ca {}: {}",
                    path.display(),
                    crate::client::strip_os_error(&e.to_string())
                ))
            })?;
        }
        if self.upstream_insecure {
            tls.insecure_skip_verify = true;
        }
        Ok(Some(tls))
    }
}

impl ServiceUpdateArgs {
    /// Refuses an update that would change nothing: almost certainly a forgotten flag.
    pub fn check(&self) -> Result<(), Error> {
        if self.changes_anything() {
            Ok(())
        } else {
            Err(Error::Usage(
                "nothing to change: give at least one flag (see gwctl service update --help)"
                    .to_string(),
            ))
        }
    }

    fn changes_anything(&self) -> bool {
        self.prefix.is_some()
            || !self.endpoints.is_empty()
            || self.clear_endpoints
            || !self.hosts.is_empty()
            || self.clear_hosts
            || self.strip_prefix
            || self.no_strip_prefix
            || self.allow_connect
            || self.no_allow_connect
            || self.tuning.any()
            || self.https.any()
            || self.no_https_redirect
            || self.upstream_verify_system
            || self.auth.any()
    }
}

/// The full definition `update` sends: the current one with only the flagged fields replaced.
fn apply_update(current: pb::Service, args: ServiceUpdateArgs) -> Result<pb::Service, Error> {
    let ServiceUpdateArgs {
        name: _,
        prefix,
        endpoints,
        clear_endpoints,
        hosts,
        clear_hosts,
        strip_prefix,
        no_strip_prefix,
        allow_connect,
        no_allow_connect,
        tuning,
        https,
        no_https_redirect,
        upstream_verify_system,
        auth,
    } = args;
    let mut service = current;
    let route = service.route.get_or_insert_with(Default::default);
    if let Some(prefix) = prefix {
        route.path_prefix = prefix;
    }
    if clear_hosts || !hosts.is_empty() {
        route.hosts = hosts;
    }
    if strip_prefix || no_strip_prefix {
        route.strip_prefix = strip_prefix;
    }
    if clear_endpoints || !endpoints.is_empty() {
        service.endpoints = endpoints;
    }
    if allow_connect || no_allow_connect {
        service.allow_connect = allow_connect;
    }
    service.health_check = tuning.apply_health(service.health_check.take());
    service.timeouts = tuning.apply_timeouts(service.timeouts.take());
    if https.https_redirect || no_https_redirect {
        service.https_redirect = https.https_redirect;
    }
    if upstream_verify_system {
        service.upstream_tls = None;
    }
    service.upstream_tls = https.upstream_tls(service.upstream_tls.take())?;
    service.auth = auth.apply(service.auth.take())?;
    // Output-only: the server sets them.
    service.created_version = 0;
    service.updated_version = 0;
    Ok(service)
}

impl TuningArgs {
    fn any(&self) -> bool {
        self.any_health() || self.any_timeout()
    }

    fn any_health(&self) -> bool {
        self.health_path.is_some()
            || self.no_health_check
            || self.tcp_health_check
            || self.health_interval.is_some()
            || self.health_timeout.is_some()
            || self.healthy_threshold.is_some()
            || self.unhealthy_threshold.is_some()
    }

    /// `base` with the given health flags applied; untouched (even if unset) without any.
    fn apply_health(&self, base: Option<pb::HealthCheck>) -> Option<pb::HealthCheck> {
        if !self.any_health() {
            return base;
        }
        let mut check = base.unwrap_or_default();
        if let Some(path) = &self.health_path {
            check.path = path.clone();
            check.disabled = false;
        }
        if self.tcp_health_check {
            check.path.clear();
            check.disabled = false;
        }
        if self.no_health_check {
            check.path.clear();
            check.disabled = true;
        }
        if let Some(d) = self.health_interval {
            check.interval = Some(duration::to_proto(d));
        }
        if let Some(d) = self.health_timeout {
            check.timeout = Some(duration::to_proto(d));
        }
        if let Some(n) = self.healthy_threshold {
            check.healthy_threshold = n;
        }
        if let Some(n) = self.unhealthy_threshold {
            check.unhealthy_threshold = n;
        }
        Some(check)
    }

    fn any_timeout(&self) -> bool {
        self.connect_timeout.is_some()
            || self.request_timeout.is_some()
            || self.request_body_timeout.is_some()
            || self.response_body_timeout.is_some()
    }

    /// `base` with the given timeout flags applied; untouched (even if unset) without any.
    fn apply_timeouts(&self, base: Option<pb::Timeouts>) -> Option<pb::Timeouts> {
        if !self.any_timeout() {
            return base;
        }
        let mut timeouts = base.unwrap_or_default();
        if let Some(d) = self.connect_timeout {
            timeouts.connect = Some(duration::to_proto(d));
        }
        if let Some(d) = self.request_timeout {
            timeouts.request = Some(duration::to_proto(d));
        }
        if let Some(d) = self.request_body_timeout {
            timeouts.request_body = Some(duration::to_proto(d));
        }
        if let Some(d) = self.response_body_timeout {
            timeouts.response_body = Some(duration::to_proto(d));
        }
        Some(timeouts)
    }
}

/// A service as gwctl shows it (the JSON shape in the module docs).
#[derive(Debug, Serialize)]
pub struct ServiceView {
    name: String,
    path_prefix: String,
    hosts: Vec<String>,
    strip_prefix: bool,
    endpoints: Vec<String>,
    health_check: HealthCheckView,
    timeouts: TimeoutsView,
    load_balancing: String,
    created_version: u64,
    updated_version: u64,
    https_redirect: bool,
    /// How https:// endpoints are verified: "system", "ca" (the service's CA bundle) or
    /// "none" (insecure).
    upstream_verify: &'static str,
    /// CONNECT is forwarded and tunnelled (false: answered 405).
    allow_connect: bool,
    /// Who may call; `None`: anyone.
    auth: Option<AuthView>,
}

/// A service's auth as gwctl shows it.
#[derive(Debug, Serialize)]
struct AuthView {
    methods: Vec<String>,
    allowed_groups: Vec<String>,
    key_sources: Vec<String>,
}

impl AuthView {
    /// The `service list` cell: the methods (`key`, `jwt`, `key,jwt`), then `+groups` when
    /// only some groups are admitted; `-` for a service anyone may call.
    fn short(auth: Option<&AuthView>) -> String {
        let Some(a) = auth else {
            return "-".to_string();
        };
        let mut text = a.methods.join(",");
        if !a.allowed_groups.is_empty() {
            text.push_str("+groups");
        }
        text
    }

    fn describe(&self) -> String {
        let mut text = format!(
            "{} (keys from {})",
            self.methods.join(", "),
            self.key_sources.join(", ")
        );
        if !self.allowed_groups.is_empty() {
            text.push_str(&format!("; only groups {}", self.allowed_groups.join(", ")));
        }
        text
    }
}

#[derive(Debug, Serialize)]
struct HealthCheckView {
    kind: &'static str,
    path: String,
    interval: Option<String>,
    timeout: Option<String>,
    unhealthy_threshold: u32,
    healthy_threshold: u32,
}

#[derive(Debug, Serialize)]
struct TimeoutsView {
    connect: Option<String>,
    request: Option<String>,
    /// Unset: the data plane's own default.
    #[serde(skip_serializing_if = "Option::is_none")]
    request_body: Option<String>,
    /// Unset: the data plane's own default.
    #[serde(skip_serializing_if = "Option::is_none")]
    response_body: Option<String>,
}

fn optional_duration(d: Option<prost_types::Duration>) -> Option<String> {
    d.as_ref().map(|d| duration::format_proto(Some(d)))
}

impl From<pb::Service> for ServiceView {
    fn from(service: pb::Service) -> Self {
        // Destructured in full so that a new field in the API breaks the build here, where
        // someone must decide how gwctl shows it.
        let pb::Service {
            name,
            route,
            endpoints,
            health_check,
            timeouts,
            load_balancing,
            created_version,
            updated_version,
            https_redirect,
            upstream_tls,
            allow_connect,
            auth,
        } = service;
        let auth = auth.map(|a| AuthView {
            methods: a
                .methods
                .iter()
                .map(|m| match pb::AuthMethod::try_from(*m) {
                    Ok(pb::AuthMethod::ApiKey) => "key".to_string(),
                    Ok(pb::AuthMethod::Jwt) => "jwt".to_string(),
                    _ => format!("unknown({m})"),
                })
                .collect(),
            allowed_groups: a.allowed_groups,
            key_sources: a
                .key_sources
                .iter()
                .map(|s| match pb::ApiKeySource::try_from(*s) {
                    Ok(pb::ApiKeySource::Bearer) => "bearer".to_string(),
                    Ok(pb::ApiKeySource::Header) => "header".to_string(),
                    Ok(pb::ApiKeySource::Query) => "query".to_string(),
                    _ => format!("unknown({s})"),
                })
                .collect(),
        });
        let upstream_verify = match upstream_tls {
            Some(t) if t.insecure_skip_verify => "none",
            Some(t) if !t.ca_bundle_pem.is_empty() => "ca",
            _ => "system",
        };
        let pb::Route {
            path_prefix,
            hosts,
            strip_prefix,
        } = route.unwrap_or_default();
        let pb::HealthCheck {
            path,
            interval,
            timeout,
            unhealthy_threshold,
            healthy_threshold,
            disabled,
        } = health_check.unwrap_or_default();
        let kind = match (disabled, path.is_empty()) {
            (true, _) => "off",
            (false, true) => "tcp",
            (false, false) => "http",
        };
        let pb::Timeouts {
            connect,
            request,
            request_body,
            response_body,
        } = timeouts.unwrap_or_default();
        let load_balancing = match pb::LoadBalancingPolicy::try_from(load_balancing) {
            Ok(pb::LoadBalancingPolicy::Unspecified | pb::LoadBalancingPolicy::RoundRobin) => {
                "round_robin".to_string()
            }
            Err(_) => format!("unknown({load_balancing})"),
        };
        ServiceView {
            name,
            path_prefix,
            hosts,
            strip_prefix,
            endpoints,
            health_check: HealthCheckView {
                kind,
                path,
                interval: optional_duration(interval),
                timeout: optional_duration(timeout),
                unhealthy_threshold,
                healthy_threshold,
            },
            timeouts: TimeoutsView {
                connect: optional_duration(connect),
                request: optional_duration(request),
                request_body: optional_duration(request_body),
                response_body: optional_duration(response_body),
            },
            load_balancing,
            created_version,
            updated_version,
            https_redirect,
            upstream_verify,
            allow_connect,
            auth,
        }
    }
}

impl HealthCheckView {
    /// What `service get` shows.
    fn describe(&self) -> String {
        let thresholds = format!(
            "unhealthy after {} failures, healthy after {} successes",
            self.unhealthy_threshold, self.healthy_threshold
        );
        match self.kind {
            "off" => format!(
                "off (passive only: ejected after {} failed requests, tried again after {})",
                self.unhealthy_threshold,
                dash(&self.interval)
            ),
            kind => format!(
                "{} every {}, timeout {}; {thresholds}",
                if kind == "tcp" {
                    "TCP connect".to_string()
                } else {
                    format!("GET {}", self.path)
                },
                dash(&self.interval),
                dash(&self.timeout),
            ),
        }
    }

    /// The `HEALTH CHECK` column of `service list`.
    fn short(&self) -> String {
        match self.kind {
            "off" => "off".to_string(),
            "tcp" => format!("tcp {}", dash(&self.interval)),
            _ => format!("{} {}", self.path, dash(&self.interval)),
        }
    }
}

/// How a service's upstream verification reads in tables: turned off stands out.
fn verify_label(v: &str) -> String {
    match v {
        "none" => "! NOT VERIFIED".to_string(),
        "ca" => "ca bundle".to_string(),
        other => other.to_string(),
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

fn dash(d: &Option<String>) -> &str {
    d.as_deref().unwrap_or("-")
}

impl Render for ServiceView {
    fn human(&self) -> String {
        let hc = &self.health_check;
        let hosts = if self.hosts.is_empty() {
            "any".to_string()
        } else {
            self.hosts.join(", ")
        };
        let endpoints = if self.endpoints.is_empty() {
            "none (matching requests get 503)".to_string()
        } else {
            self.endpoints.join("\n")
        };
        details(&[
            ("name", self.name.clone()),
            ("path prefix", self.path_prefix.clone()),
            ("hosts", hosts),
            ("strip prefix", yes_no(self.strip_prefix)),
            ("endpoints", endpoints),
            ("health check", hc.describe()),
            ("timeouts", {
                let t = &self.timeouts;
                let mut text =
                    format!("connect {}, request {}", dash(&t.connect), dash(&t.request));
                // Shown only when the service sets them; otherwise each data plane's own.
                if let Some(d) = &t.request_body {
                    text.push_str(&format!(", request body idle {d}"));
                }
                if let Some(d) = &t.response_body {
                    text.push_str(&format!(", response body idle {d}"));
                }
                text
            }),
            ("load balancing", self.load_balancing.replace('_', " ")),
            ("https redirect", yes_no(self.https_redirect)),
            ("upstream tls", verify_label(self.upstream_verify)),
            (
                "connect",
                if self.allow_connect {
                    "tunnelled to an endpoint"
                } else {
                    "refused (405)"
                }
                .to_string(),
            ),
            (
                "auth",
                self.auth
                    .as_ref()
                    .map_or_else(|| "none (anyone may call)".to_string(), AuthView::describe),
            ),
            (
                "config version",
                format!(
                    "created at {}, updated at {}",
                    self.created_version, self.updated_version
                ),
            ),
        ])
    }
}

/// `service list`.
#[derive(Debug, Serialize)]
pub struct ServiceList {
    config_version: u64,
    services: Vec<ServiceView>,
}

impl Render for ServiceList {
    fn human(&self) -> String {
        let mut table = Table::new(&[
            "NAME",
            "PREFIX",
            "HOSTS",
            "STRIP",
            "CONNECT",
            "AUTH",
            "ENDPOINTS",
            "HEALTH CHECK",
            "UPSTREAM TLS",
            "VERSION",
        ]);
        for s in &self.services {
            table.row(vec![
                s.name.clone(),
                s.path_prefix.clone(),
                if s.hosts.is_empty() {
                    "*".to_string()
                } else {
                    s.hosts.join(",")
                },
                yes_no(s.strip_prefix),
                yes_no(s.allow_connect),
                AuthView::short(s.auth.as_ref()),
                or_dash(&s.endpoints.join(",")),
                s.health_check.short(),
                verify_label(s.upstream_verify),
                s.updated_version.to_string(),
            ]);
        }
        table.render()
    }
}

/// `service add` and `service update`.
#[derive(Debug, Serialize)]
pub struct ServiceChanged {
    action: &'static str,
    config_version: u64,
    service: ServiceView,
}

impl ServiceChanged {
    fn new(action: &'static str, service: Option<pb::Service>, config_version: u64) -> Self {
        Self {
            action,
            config_version,
            service: ServiceView::from(service.unwrap_or_default()),
        }
    }
}

impl Render for ServiceChanged {
    fn human(&self) -> String {
        format!(
            "service '{}' {} (config version {})\n",
            self.service.name, self.action, self.config_version
        )
    }
}

#[cfg(test)]
mod tests;
