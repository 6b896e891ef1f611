//! The declarative configuration file of `gwctl apply`, `gwctl export` and the control plane's
//! `--config-file`: services, policies and certificates in YAML or JSON, as the
//! `AdminService.ApplyConfig` request they become.
//!
//! The file follows the protobuf messages field for field (`route.path_prefix`,
//! `health_check.interval`, …), so a field path in the control plane's answer is a path in
//! the file, with friendlier values: durations as `5s`, enums as lowercase words, a policy key
//! as `ip` or `header:NAME`, and certificates and CA bundles as file names (relative to the
//! file) instead of PEM text. JSON is read by the same YAML 1.2 parser (JSON is YAML's flow
//! style), so both report lines.
//!
//! Every problem is reported as `FILE:LINE:COLUMN: FIELD: what`, found either here (syntax,
//! unknown fields, bad durations, unreadable files) or by the control plane (whose
//! field violations are mapped back through [`spans::Node::locate`]).

pub mod spans;

use std::path::{Path, PathBuf};
use std::time::Duration;

use gw_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use gw_ops::duration;

/// A whole configuration file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Services, each complete.
    #[serde(default)]
    pub services: Vec<ServiceDoc>,
    /// Rate-limit policies.
    #[serde(default)]
    pub policies: Vec<PolicyDoc>,
    /// Certificates; absent: certificates are left alone (even with `--prune`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<Vec<CertificateDoc>>,
}

/// A service (`gateway.v1.Service`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDoc {
    /// Unique name.
    pub name: String,
    /// Which requests it takes.
    pub route: RouteDoc,
    /// Backend base URLs.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Active health checking; absent: the defaults (a TCP connect every 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckDoc>,
    /// Timeouts; absent: the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<TimeoutsDoc>,
    /// `round_robin` (the only one, and the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancing: Option<LoadBalancingDoc>,
    /// Redirect plain-HTTP requests to HTTPS.
    #[serde(default)]
    pub https_redirect: bool,
    /// Verification of https:// endpoints; absent: the system's trust store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_tls: Option<UpstreamTlsDoc>,
    /// Accept CONNECT requests (tunnels) for this service.
    #[serde(default)]
    pub allow_connect: bool,
    /// Who may call it; absent: anyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthDoc>,
}

/// `gateway.v1.ServiceAuth`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthDoc {
    /// Credentials accepted: `key`.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Groups admitted; empty: every consumer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_groups: Vec<String>,
    /// Where keys are read: `bearer`, `header` (X-API-Key), `query` (apikey); empty: bearer
    /// and header.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_sources: Vec<String>,
}

/// Parses an auth method as operators write it: `key` (also `api_key`, `api-key`) or `jwt`.
pub fn parse_auth_method(text: &str) -> Result<pb::AuthMethod, String> {
    match text.trim() {
        "key" | "api_key" | "api-key" => Ok(pb::AuthMethod::ApiKey),
        "jwt" => Ok(pb::AuthMethod::Jwt),
        other => Err(format!("'{other}' is not an auth method; use key or jwt")),
    }
}

/// Parses a key source as operators write it: `bearer`, `header` or `query`.
pub fn parse_key_source(text: &str) -> Result<pb::ApiKeySource, String> {
    match text.trim() {
        "bearer" => Ok(pb::ApiKeySource::Bearer),
        "header" | "x-api-key" => Ok(pb::ApiKeySource::Header),
        "query" | "apikey" => Ok(pb::ApiKeySource::Query),
        other => Err(format!(
            "'{other}' is not a key source; use bearer, header or query"
        )),
    }
}

fn auth_method_name(m: i32) -> String {
    match pb::AuthMethod::try_from(m) {
        Ok(pb::AuthMethod::ApiKey) => "key".to_owned(),
        Ok(pb::AuthMethod::Jwt) => "jwt".to_owned(),
        _ => m.to_string(),
    }
}

fn key_source_name(s: i32) -> String {
    match pb::ApiKeySource::try_from(s) {
        Ok(pb::ApiKeySource::Bearer) => "bearer".to_owned(),
        Ok(pb::ApiKeySource::Header) => "header".to_owned(),
        Ok(pb::ApiKeySource::Query) => "query".to_owned(),
        _ => s.to_string(),
    }
}

/// `gateway.v1.Route`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteDoc {
    /// Path prefix, starting with '/'.
    pub path_prefix: String,
    /// Host names; empty: any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Remove the prefix before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
}

/// `gateway.v1.HealthCheck`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckDoc {
    /// Path to GET; absent: a TCP connect check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// No active checks at all.
    #[serde(default)]
    pub disabled: bool,
    /// Time between checks (`5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Time allowed for one check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Consecutive failures that mark an endpoint unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<u32>,
    /// Consecutive successes that mark it healthy again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<u32>,
}

/// `gateway.v1.Timeouts`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsDoc {
    /// TCP connect timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<String>,
    /// Until the response headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// Idle time within a request body; absent: the data plane's flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<String>,
    /// Idle time within a response body; absent: the data plane's flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
}

/// `gateway.v1.LoadBalancingPolicy`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancingDoc {
    /// Each request to the next healthy endpoint (also written `round-robin`).
    #[serde(alias = "round-robin")]
    RoundRobin,
}

/// `gateway.v1.UpstreamTls`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsDoc {
    /// CA certificates (PEM text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_pem: Option<String>,
    /// CA certificates read from this PEM file (relative to the configuration file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_file: Option<PathBuf>,
    /// Accept any certificate.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// A rate-limit policy (`gateway.v1.Policy`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDoc {
    /// Unique name.
    pub name: String,
    /// The service it applies to; absent: every service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// `ip` (the default), `header:NAME` or `consumer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Only requests of this consumer; absent: no restriction by consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// Only requests of consumers in this group; absent: no restriction by group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Requests per period.
    pub limit: u64,
    /// The period (`1m`).
    pub period: String,
    /// Bucket capacity; absent: `limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    /// `enforce` (default) or `shadow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ModeDoc>,
    /// `node` (default) or `global`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<ScopeDoc>,
    /// `local_share` (default), `allow` or `deny`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_store_error: Option<OnStoreErrorDoc>,
}

/// `gateway.v1.PolicyMode`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeDoc {
    /// Reject with 429.
    Enforce,
    /// Only count.
    Shadow,
}

/// `gateway.v1.PolicyScope`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeDoc {
    /// Each data plane alone.
    Node,
    /// The fleet together, in Redis.
    Global,
}

/// `gateway.v1.StoreErrorAction`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreErrorDoc {
    /// This node's share (also written `local-share`, as gwctl's flag and listing spell it).
    #[serde(alias = "local-share")]
    LocalShare,
    /// Fail open.
    Allow,
    /// Fail closed.
    Deny,
}

/// A certificate (`gateway.v1.Certificate`), by file reference: private keys do not belong in
/// a configuration file under version control.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateDoc {
    /// Unique name.
    pub name: String,
    /// The chain (PEM, leaf first), relative to the configuration file.
    pub cert_chain_file: PathBuf,
    /// The private key (PEM), relative to the configuration file.
    pub private_key_file: PathBuf,
}

/// A configuration file read and turned into a request, with the positions of its nodes.
/// Its `Debug` leaves out the certificates' private keys.
pub struct Loaded {
    /// The file as named on the command line.
    pub path: PathBuf,
    /// Where each node is, to report problems at their line.
    pub root: spans::Node,
    /// The services, policies and certificates of the request.
    pub request: pb::ApplyConfigRequest,
}

/// By hand: the request holds the certificates' private keys, read from their files, and a
/// derived `Debug` would print them.
impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured, so that a field added to the request is a decision here.
        let pb::ApplyConfigRequest {
            services,
            policies,
            certificates,
            manage_certificates,
            dry_run,
            prune,
        } = &self.request;
        let certificates: Vec<RedactedCertificate<'_>> =
            certificates.iter().map(RedactedCertificate).collect();
        f.debug_struct("Loaded")
            .field("path", &self.path)
            .field("services", services)
            .field("policies", policies)
            .field("certificates", &certificates)
            .field("manage_certificates", manage_certificates)
            .field("dry_run", dry_run)
            .field("prune", prune)
            .finish_non_exhaustive()
    }
}

/// A certificate whose `Debug` shows `***` for the private key.
struct RedactedCertificate<'a>(&'a pb::Certificate);

impl std::fmt::Debug for RedactedCertificate<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pb::Certificate {
            name,
            cert_chain_pem,
            private_key_pem: _,
            sans,
            not_after,
            updated_version,
        } = self.0;
        f.debug_struct("Certificate")
            .field("name", name)
            .field("cert_chain_pem", cert_chain_pem)
            .field("private_key_pem", &"***")
            .field("sans", sans)
            .field("not_after", not_after)
            .field("updated_version", updated_version)
            .finish()
    }
}

/// Problems with a file, each at a line; displayed on one line.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct FileError(pub Vec<String>);

impl Loaded {
    /// Reads and converts the file at `path`. Nothing is sent anywhere.
    pub fn read(path: &Path) -> Result<Self, FileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| FileError(vec![format!("{}: {}", path.display(), io_reason(&e))]))?;
        Self::parse(path, &text)
    }

    /// Converts `text`, read from `path` (which names it in errors and anchors relative
    /// file references).
    pub fn parse(path: &Path, text: &str) -> Result<Self, FileError> {
        let syntax = |e: serde_saphyr::Error| {
            let at = match e.location() {
                Some(l) => format!("{}:{}:{}", path.display(), l.line(), l.column()),
                None => path.display().to_string(),
            };
            let message = e.without_snippet().to_string();
            // One line, without the parser's own " at line L, column C" (said in front).
            let mut message = message.lines().next().unwrap_or_default().to_owned();
            if let Some(i) = message.rfind(" at line ") {
                message.truncate(i);
            }
            FileError(vec![format!("{at}: {message}")])
        };
        let options = serde_saphyr::options! { with_snippet: false };
        let file: File = serde_saphyr::from_str_with_options(text, options).map_err(syntax)?;
        let options = serde_saphyr::options! { with_snippet: false };
        let root: spans::Node =
            serde_saphyr::from_str_with_options(text, options).map_err(syntax)?;
        let mut problems = Problems::default();
        let base = path.parent().unwrap_or(Path::new("."));
        let request = file.into_request(base, &mut problems);
        let loaded = Loaded {
            path: path.to_owned(),
            root,
            request,
        };
        if problems.0.is_empty() {
            Ok(loaded)
        } else {
            Err(loaded.at_lines(problems.0))
        }
    }

    /// Each `(field path, what)` as `FILE:LINE:COLUMN: field path: what` (`FILE:LINE:COLUMN:
    /// what` when the field path is empty: a problem of the whole file).
    pub fn at_lines(&self, problems: Vec<(String, String)>) -> FileError {
        FileError(
            problems
                .into_iter()
                .map(|(field, what)| {
                    let node = self.root.locate(&field);
                    let at = format!("{}:{}:{}", self.path.display(), node.line, node.column);
                    // A problem without a field (e.g. "and 12 more problems") is the file's.
                    if field.is_empty() {
                        format!("{at}: {what}")
                    } else {
                        format!("{at}: {field}: {what}")
                    }
                })
                .collect(),
        )
    }
}

/// Problems found while converting, by field path.
#[derive(Debug, Default)]
struct Problems(Vec<(String, String)>);

impl Problems {
    fn add(&mut self, field: String, what: impl Into<String>) {
        self.0.push((field, what.into()));
    }

    /// A duration field: unset stays unset; a bad one is recorded.
    fn duration(&mut self, field: String, text: Option<&str>) -> Option<prost_types::Duration> {
        let text = text?;
        match duration::parse(text) {
            Ok(d) => Some(to_proto(d)),
            Err(e) => {
                self.add(field, e);
                None
            }
        }
    }

    /// Reads a PEM file named relative to the configuration file.
    fn read(&mut self, field: String, base: &Path, name: &Path) -> String {
        let path = base.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                self.add(field, format!("{}: {}", path.display(), io_reason(&e)));
                String::new()
            }
        }
    }
}

/// Parses a rate-limit key as operators write it (a file's `key:`, gwctl's `--key`): `ip`
/// (or `client_ip`), `header:NAME` or `consumer`.
pub fn parse_key(text: &str) -> Result<pb::rate_limit_key::Source, String> {
    match text.trim() {
        "consumer" => Ok(pb::rate_limit_key::Source::Consumer(pb::ConsumerKey {})),
        "ip" | "client_ip" | "client-ip" => {
            Ok(pb::rate_limit_key::Source::ClientIp(pb::ClientIpKey {}))
        }
        other => match other.split_once(':') {
            Some(("header", name)) if !name.trim().is_empty() => {
                Ok(pb::rate_limit_key::Source::Header(name.trim().to_string()))
            }
            Some(("header", _)) => Err("header name missing; use e.g. header:x-api-key".into()),
            _ => Err("use ip, consumer or header:NAME, e.g. header:x-api-key".into()),
        },
    }
}

/// A duration in the protobuf form; saturates (the grammar caps input far below that).
fn to_proto(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap_or(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 0,
    })
}

/// A protobuf duration as a std one; unset or negative: `None`.
fn from_proto(d: Option<prost_types::Duration>) -> Option<Duration> {
    d.and_then(|d| Duration::try_from(d).ok())
}

/// An I/O error without the OS's "(os error 2)" suffix.
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

impl File {
    fn into_request(self, base: &Path, p: &mut Problems) -> pb::ApplyConfigRequest {
        let File {
            services,
            policies,
            certificates,
        } = self;
        let services = services
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.into_pb(&format!("services[{i}]"), base, p))
            .collect();
        let policies = policies
            .into_iter()
            .enumerate()
            .map(|(i, x)| x.into_pb(&format!("policies[{i}]"), p))
            .collect();
        let manage_certificates = certificates.is_some();
        let certificates = certificates
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let at = format!("certificates[{i}]");
                pb::Certificate {
                    cert_chain_pem: p.read(
                        format!("{at}.cert_chain_file"),
                        base,
                        &c.cert_chain_file,
                    ),
                    private_key_pem: p.read(
                        format!("{at}.private_key_file"),
                        base,
                        &c.private_key_file,
                    ),
                    name: c.name,
                    ..Default::default()
                }
            })
            .collect();
        pb::ApplyConfigRequest {
            services,
            policies,
            certificates,
            manage_certificates,
            dry_run: false,
            prune: false,
        }
    }
}

impl ServiceDoc {
    fn into_pb(self, at: &str, base: &Path, p: &mut Problems) -> pb::Service {
        let ServiceDoc {
            name,
            route,
            endpoints,
            health_check,
            timeouts,
            load_balancing,
            https_redirect,
            upstream_tls,
            allow_connect,
            auth,
        } = self;
        let health_check = health_check.map(|h| pb::HealthCheck {
            path: h.path.unwrap_or_default(),
            disabled: h.disabled,
            interval: p.duration(format!("{at}.health_check.interval"), h.interval.as_deref()),
            timeout: p.duration(format!("{at}.health_check.timeout"), h.timeout.as_deref()),
            unhealthy_threshold: h.unhealthy_threshold.unwrap_or_default(),
            healthy_threshold: h.healthy_threshold.unwrap_or_default(),
        });
        let timeouts = timeouts.map(|t| pb::Timeouts {
            connect: p.duration(format!("{at}.timeouts.connect"), t.connect.as_deref()),
            request: p.duration(format!("{at}.timeouts.request"), t.request.as_deref()),
            request_body: p.duration(
                format!("{at}.timeouts.request_body"),
                t.request_body.as_deref(),
            ),
            response_body: p.duration(
                format!("{at}.timeouts.response_body"),
                t.response_body.as_deref(),
            ),
        });
        let upstream_tls = upstream_tls.map(|u| {
            let ca_bundle_pem = match (u.ca_bundle_pem, u.ca_bundle_file) {
                (Some(pem), None) => pem,
                (None, Some(file)) => {
                    p.read(format!("{at}.upstream_tls.ca_bundle_file"), base, &file)
                }
                (None, None) => String::new(),
                (Some(_), Some(_)) => {
                    p.add(
                        format!("{at}.upstream_tls.ca_bundle_file"),
                        "give ca_bundle_pem or ca_bundle_file, not both",
                    );
                    String::new()
                }
            };
            pb::UpstreamTls {
                ca_bundle_pem,
                insecure_skip_verify: u.insecure_skip_verify,
            }
        });
        pb::Service {
            name,
            route: Some(pb::Route {
                path_prefix: route.path_prefix,
                hosts: route.hosts,
                strip_prefix: route.strip_prefix,
            }),
            endpoints,
            health_check,
            timeouts,
            load_balancing: match load_balancing {
                None => pb::LoadBalancingPolicy::Unspecified,
                Some(LoadBalancingDoc::RoundRobin) => pb::LoadBalancingPolicy::RoundRobin,
            }
            .into(),
            created_version: 0,
            updated_version: 0,
            https_redirect,
            upstream_tls,
            allow_connect,
            auth: auth.map(|a| {
                let AuthDoc {
                    methods,
                    allowed_groups,
                    key_sources,
                } = a;
                let mut parsed_methods = Vec::new();
                for (i, m) in methods.iter().enumerate() {
                    match parse_auth_method(m) {
                        Ok(m) => parsed_methods.push(m.into()),
                        Err(e) => p.add(format!("{at}.auth.methods[{i}]"), e),
                    }
                }
                let mut sources = Vec::new();
                for (i, s) in key_sources.iter().enumerate() {
                    match parse_key_source(s) {
                        Ok(s) => sources.push(s.into()),
                        Err(e) => p.add(format!("{at}.auth.key_sources[{i}]"), e),
                    }
                }
                pb::ServiceAuth {
                    methods: parsed_methods,
                    allowed_groups,
                    key_sources: sources,
                }
            }),
        }
    }

    /// The file form of a service as the control plane lists it, every value explicit.
    pub fn from_pb(s: pb::Service) -> Self {
        // Destructured in full: a new field must be exported, not silently dropped.
        let pb::Service {
            name,
            route,
            endpoints,
            health_check,
            timeouts,
            load_balancing: _, // round robin is the only one
            created_version: _,
            updated_version: _,
            https_redirect,
            upstream_tls,
            allow_connect,
            auth,
        } = s;
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
        let pb::Timeouts {
            connect,
            request,
            request_body,
            response_body,
        } = timeouts.unwrap_or_default();
        let text = |d: Option<prost_types::Duration>| from_proto(d).map(duration::format);
        ServiceDoc {
            name,
            route: RouteDoc {
                path_prefix,
                hosts,
                strip_prefix,
            },
            endpoints,
            health_check: Some(HealthCheckDoc {
                path: (!path.is_empty()).then_some(path),
                disabled,
                interval: text(interval),
                timeout: text(timeout),
                unhealthy_threshold: Some(unhealthy_threshold),
                healthy_threshold: Some(healthy_threshold),
            }),
            timeouts: Some(TimeoutsDoc {
                connect: text(connect),
                request: text(request),
                request_body: text(request_body),
                response_body: text(response_body),
            }),
            load_balancing: Some(LoadBalancingDoc::RoundRobin),
            https_redirect,
            upstream_tls: upstream_tls.map(|u| UpstreamTlsDoc {
                ca_bundle_pem: (!u.ca_bundle_pem.is_empty()).then_some(u.ca_bundle_pem),
                ca_bundle_file: None,
                insecure_skip_verify: u.insecure_skip_verify,
            }),
            allow_connect,
            auth: auth.map(|a| AuthDoc {
                methods: a.methods.into_iter().map(auth_method_name).collect(),
                allowed_groups: a.allowed_groups,
                key_sources: a.key_sources.into_iter().map(key_source_name).collect(),
            }),
        }
    }
}

impl PolicyDoc {
    fn into_pb(self, at: &str, p: &mut Problems) -> pb::Policy {
        let PolicyDoc {
            name,
            service,
            key,
            limit,
            period,
            burst,
            mode,
            scope,
            on_store_error,
            consumer,
            group,
        } = self;
        let key = match key.as_deref().map(parse_key) {
            None => pb::rate_limit_key::Source::ClientIp(pb::ClientIpKey {}),
            Some(Ok(source)) => source,
            Some(Err(e)) => {
                p.add(format!("{at}.key"), e);
                pb::rate_limit_key::Source::ClientIp(pb::ClientIpKey {})
            }
        };
        pb::Policy {
            name,
            service: service.unwrap_or_default(),
            key: Some(pb::RateLimitKey { source: Some(key) }),
            limit,
            period: p.duration(format!("{at}.period"), Some(&period)),
            burst: burst.unwrap_or_default(),
            mode: match mode {
                None => pb::PolicyMode::Unspecified,
                Some(ModeDoc::Enforce) => pb::PolicyMode::Enforce,
                Some(ModeDoc::Shadow) => pb::PolicyMode::Shadow,
            }
            .into(),
            updated_version: 0,
            scope: match scope {
                None => pb::PolicyScope::Unspecified,
                Some(ScopeDoc::Node) => pb::PolicyScope::Node,
                Some(ScopeDoc::Global) => pb::PolicyScope::Global,
            }
            .into(),
            on_store_error: match on_store_error {
                None => pb::StoreErrorAction::Unspecified,
                Some(OnStoreErrorDoc::LocalShare) => pb::StoreErrorAction::LocalShare,
                Some(OnStoreErrorDoc::Allow) => pb::StoreErrorAction::Allow,
                Some(OnStoreErrorDoc::Deny) => pb::StoreErrorAction::Deny,
            }
            .into(),
            consumer: consumer.unwrap_or_default(),
            group: group.unwrap_or_default(),
        }
    }

    /// The file form of a policy as the control plane lists it, every value explicit.
    pub fn from_pb(x: pb::Policy) -> Self {
        let (mode, scope, on_store_error) = (x.mode(), x.scope(), x.on_store_error());
        let key = match x.key.and_then(|k| k.source) {
            Some(pb::rate_limit_key::Source::Header(h)) => format!("header:{h}"),
            Some(pb::rate_limit_key::Source::Consumer(_)) => "consumer".to_owned(),
            Some(pb::rate_limit_key::Source::ClientIp(_)) | None => "ip".to_owned(),
        };
        PolicyDoc {
            service: (!x.service.is_empty()).then_some(x.service),
            consumer: (!x.consumer.is_empty()).then_some(x.consumer),
            group: (!x.group.is_empty()).then_some(x.group),
            key: Some(key),
            limit: x.limit,
            period: from_proto(x.period)
                .map(duration::format)
                .unwrap_or_else(|| duration::format(Duration::ZERO)),
            burst: Some(x.burst),
            mode: Some(match mode {
                pb::PolicyMode::Shadow => ModeDoc::Shadow,
                pb::PolicyMode::Enforce | pb::PolicyMode::Unspecified => ModeDoc::Enforce,
            }),
            scope: Some(match scope {
                pb::PolicyScope::Global => ScopeDoc::Global,
                pb::PolicyScope::Node | pb::PolicyScope::Unspecified => ScopeDoc::Node,
            }),
            on_store_error: Some(match on_store_error {
                pb::StoreErrorAction::Allow => OnStoreErrorDoc::Allow,
                pb::StoreErrorAction::Deny => OnStoreErrorDoc::Deny,
                pb::StoreErrorAction::LocalShare | pb::StoreErrorAction::Unspecified => {
                    OnStoreErrorDoc::LocalShare
                }
            }),
            name: x.name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0IGtleSBtYXRlcmlhbA==\n-----END PRIVATE KEY-----\n";

    /// `text` parsed as `gw.yaml` in a fresh directory named for `test`, beside a certificate
    /// and its key.
    fn loaded(test: &str, text: &str) -> Loaded {
        let dir =
            std::env::temp_dir().join(format!("gw-config-file-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("site.pem"), "CHAIN").unwrap();
        std::fs::write(dir.join("site-key.pem"), KEY).unwrap();
        let l = Loaded::parse(&dir.join("gw.yaml"), text).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        l
    }

    #[test]
    fn debug_output_never_holds_a_private_key() {
        let l = loaded(
            "debug",
            "certificates:\n- name: site\n  cert_chain_file: site.pem\n  private_key_file: site-key.pem\n",
        );
        assert_eq!(l.request.certificates[0].private_key_pem, KEY);
        for shown in [format!("{l:?}"), format!("{l:#?}")] {
            assert!(!shown.contains("c2VjcmV0"), "{shown}");
            assert!(!shown.contains("PRIVATE KEY"), "{shown}");
            assert!(
                shown.contains("\"site\"") && shown.contains("CHAIN"),
                "{shown}"
            );
            assert!(shown.contains("***"), "{shown}");
        }
    }

    #[test]
    fn a_problem_without_a_field_is_the_file_s() {
        let l = loaded("no-field", "services: []\n");
        let e = l.at_lines(vec![
            ("services".into(), "bad".into()),
            (String::new(), "and 3 more problems".into()),
        ]);
        let gw = l.path.display();
        assert_eq!(
            e.0,
            [
                format!("{gw}:1:11: services: bad"),
                format!("{gw}:1:1: and 3 more problems")
            ]
        );
    }
}
