//! Declarative configuration (`AdminService.ApplyConfig`, `gwctl apply`, `--config-file`):
//! a whole document of services, policies and certificates, checked, compared with the
//! configuration in force, and turned into the writes that make the two equal.
//!
//! Three steps, so that nothing is written unless everything is right:
//! 1. [`Document::try_from`] validates each object exactly as the single-object RPCs do,
//!    naming problems by the object's place in the document (`services[2].route.path_prefix`).
//! 2. [`plan`] checks the result as a whole against the state in force (unique names, routes
//!    that do not overlap, policies naming services that will exist) and computes the diff.
//! 3. The store writes [`Plan::writes`] in one transaction that makes one config version.
//!
//! Objects are compared without their output-only versions, so applying an exported config
//! changes nothing and moves no version.

use std::collections::{BTreeMap, BTreeSet};

use gw_proto::v1 as pb;

use crate::domain::{Audience, Certificate, Policy, Service, ValidationError};
use crate::state::{Changed, ConfigState};

/// A validated document: what the configuration should hold.
#[derive(Debug)]
pub struct Document {
    /// Services, in document order.
    pub services: Vec<Service>,
    /// Policies, in document order.
    pub policies: Vec<Policy>,
    /// Certificates, in document order; `None` when the document leaves them alone.
    pub certificates: Option<Vec<Certificate>>,
    /// Remove what the document does not name.
    pub prune: bool,
}

/// One problem with one field of a document: `field` is a path such as
/// `services[2].route.path_prefix` (an object's index in the request, then the field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// Where: `<kind>[<index>]` and, unless the problem is the whole object, `.<field>`.
    pub field: String,
    /// What is wrong, and the offending value where it helps.
    pub description: String,
}

/// Why a document cannot be applied: every problem found, each naming its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.0))]
pub struct DocumentError(pub Vec<FieldProblem>);

/// Most problems listed in one error, in its message and in its details alike (both travel
/// in HTTP/2 headers); the rest are counted.
pub(crate) const MAX_PROBLEMS: usize = 20;

fn render(problems: &[FieldProblem]) -> String {
    let mut parts: Vec<String> = problems
        .iter()
        .take(MAX_PROBLEMS)
        .map(|p| format!("{}: {}", p.field, p.description))
        .collect();
    if problems.len() > MAX_PROBLEMS {
        parts.push(format!(
            "and {} more problems",
            problems.len() - MAX_PROBLEMS
        ));
    }
    parts.join("; ")
}

/// Collects problems while a document is checked.
#[derive(Debug, Default)]
struct Problems(Vec<FieldProblem>);

impl Problems {
    fn add(&mut self, field: String, description: impl Into<String>) {
        self.0.push(FieldProblem {
            field,
            description: description.into(),
        });
    }

    /// Files the problems of one object's validation under `prefix` (`services[2]`).
    fn nest(&mut self, prefix: &str, e: ValidationError) {
        for problem in e.problems() {
            match problem.split_once(": ") {
                Some((field, what)) => self.add(format!("{prefix}.{field}"), what),
                // "and N more problems": about the object as a whole.
                None => self.add(prefix.to_owned(), problem.clone()),
            }
        }
    }

    fn finish<T>(self, value: T) -> Result<T, DocumentError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(DocumentError(self.0))
        }
    }
}

impl Document {
    /// Validates every object of `request`; returns the document and whether it is a dry run.
    pub fn try_from_request(
        request: pb::ApplyConfigRequest,
    ) -> Result<(Self, bool), DocumentError> {
        let pb::ApplyConfigRequest {
            services,
            policies,
            certificates,
            manage_certificates,
            dry_run,
            prune,
        } = request;
        let mut p = Problems::default();
        let services = convert(services, "services", &mut p, Service::try_from);
        let policies = convert(policies, "policies", &mut p, Policy::try_from);
        let certificates = if manage_certificates {
            Some(convert(
                certificates,
                "certificates",
                &mut p,
                Certificate::try_from,
            ))
        } else {
            if !certificates.is_empty() {
                p.add(
                    "certificates".to_owned(),
                    "given without manage_certificates; set it to apply certificates",
                );
            }
            None
        };
        unique(
            services.iter().map(|(i, s)| (*i, &s.name)),
            "services",
            &mut p,
        );
        unique(
            policies.iter().map(|(i, s)| (*i, &s.name)),
            "policies",
            &mut p,
        );
        if let Some(certificates) = &certificates {
            let names = certificates.iter().map(|(i, c)| (*i, &c.name));
            unique(names, "certificates", &mut p);
        }
        let document = Document {
            services: strip(services),
            policies: strip(policies),
            certificates: certificates.map(strip),
            prune,
        };
        p.finish((document, dry_run))
    }
}

/// Drops the indices [`convert`] kept.
fn strip<T>(indexed: Vec<(usize, T)>) -> Vec<T> {
    indexed.into_iter().map(|(_, x)| x).collect()
}

/// Validates each message, keeping its index in the request for later problems.
fn convert<M, T>(
    messages: Vec<M>,
    kind: &str,
    p: &mut Problems,
    validate: impl Fn(M) -> Result<T, ValidationError>,
) -> Vec<(usize, T)> {
    let mut out = Vec::with_capacity(messages.len());
    for (i, msg) in messages.into_iter().enumerate() {
        match validate(msg) {
            Ok(v) => out.push((i, v)),
            Err(e) => p.nest(&format!("{kind}[{i}]"), e),
        }
    }
    out
}

/// Flags the second and later uses of a name within one kind.
fn unique<'a>(names: impl Iterator<Item = (usize, &'a String)>, kind: &str, p: &mut Problems) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, name) in names {
        if let Some(first) = seen.insert(name, i) {
            seen.insert(name, first);
            p.add(
                format!("{kind}[{i}].name"),
                format!("'{name}' is already used by {kind}[{first}]"),
            );
        }
    }
}

/// The objects of one kind that differ.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KindDiff {
    /// Names of new objects, ordered.
    pub added: Vec<String>,
    /// Changed objects and their differing fields, ordered by name.
    pub changed: Vec<(String, Vec<&'static str>)>,
    /// Names of objects removed, ordered.
    pub removed: Vec<String>,
}

impl KindDiff {
    /// Nothing differs.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

impl From<&KindDiff> for pb::ObjectChanges {
    fn from(d: &KindDiff) -> Self {
        pb::ObjectChanges {
            added: d.added.clone(),
            changed: d
                .changed
                .iter()
                .map(|(name, fields)| pb::ChangedObject {
                    name: name.clone(),
                    fields: fields.iter().map(|f| (*f).to_owned()).collect(),
                })
                .collect(),
            removed: d.removed.clone(),
        }
    }
}

/// Everything that differs between the state in force and a document.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    /// Services.
    pub services: KindDiff,
    /// Policies.
    pub policies: KindDiff,
    /// Certificates.
    pub certificates: KindDiff,
}

impl Diff {
    /// Nothing differs: applying writes nothing and the version stays.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.policies.is_empty() && self.certificates.is_empty()
    }
}

impl From<&Diff> for pb::ConfigDiff {
    fn from(d: &Diff) -> Self {
        pb::ConfigDiff {
            services: Some((&d.services).into()),
            policies: Some((&d.policies).into()),
            certificates: Some((&d.certificates).into()),
        }
    }
}

/// What applying a document does.
#[derive(Debug)]
pub struct Plan {
    /// The differences, for the caller.
    pub diff: Diff,
    /// The writes, in an order that never breaks a reference on the way: policies removed,
    /// services written, policies written, services removed (a policy's foreign key must find
    /// its service at every step), then certificates.
    pub writes: Vec<Write>,
}

/// One store write of a plan. Versions are filled in by the store.
#[derive(Debug)]
pub enum Write {
    /// Insert or replace a service.
    Service {
        /// The service (boxed: it is by far the largest write).
        service: Box<Service>,
        /// Whether it is new (insert) rather than replaced (update).
        created: bool,
    },
    /// Remove a service.
    RemoveService(String),
    /// Insert or replace a policy.
    Policy(Policy),
    /// Remove a policy.
    RemovePolicy(String),
    /// Insert or replace a certificate.
    Certificate(Certificate),
    /// Remove a certificate.
    RemoveCertificate(String),
}

impl Write {
    /// The state change this write makes, once the store has set its versions.
    pub(crate) fn change(&self) -> Changed {
        match self {
            Write::Service { service, .. } => Changed::service((**service).clone()),
            Write::RemoveService(name) => Changed::Service(name.clone(), None),
            Write::Policy(policy) => Changed::policy(policy.clone()),
            Write::RemovePolicy(name) => Changed::Policy(name.clone(), None),
            Write::Certificate(c) => Changed::certificate(c.clone()),
            Write::RemoveCertificate(name) => Changed::Certificate(name.clone(), None),
        }
    }
}

/// Compares `document` with `state`: checks the resulting config as a whole and lists the
/// writes that produce it. Problems name the document's objects by index.
pub fn plan(state: &ConfigState, document: Document) -> Result<Plan, DocumentError> {
    let Document {
        services,
        policies,
        certificates,
        prune,
    } = document;
    let mut p = Problems::default();

    // The services of the result: the document's, plus those kept because it does not prune.
    let named: BTreeSet<String> = services.iter().map(|s| s.name.clone()).collect();
    let kept: Vec<&Service> = if prune {
        Vec::new()
    } else {
        state
            .services
            .values()
            .map(|s| &**s)
            .filter(|s| !named.contains(&s.name))
            .collect()
    };
    for (i, s) in services.iter().enumerate() {
        let earlier = services[..i].iter().find(|o| o.route.overlaps(&s.route));
        let kept_clash = kept.iter().find(|o| o.route.overlaps(&s.route));
        let clash = match (earlier, kept_clash) {
            (Some(o), _) => Some(format!(
                "services[{}] ('{}')",
                index_of(&services, o),
                o.name
            )),
            (None, Some(o)) => Some(format!(
                "service '{}', which exists and is not in the document (prune to remove it)",
                o.name
            )),
            (None, None) => None,
        };
        if let Some(other) = clash {
            p.add(
                format!("services[{i}].route"),
                format!(
                    "path prefix '{}' for {} is already routed by {other}",
                    s.route.path_prefix,
                    hosts(&s.route.hosts)
                ),
            );
        }
    }
    let result_services: BTreeSet<&str> = named
        .iter()
        .map(String::as_str)
        .chain(kept.iter().map(|s| s.name.as_str()))
        .collect();
    for (i, policy) in policies.iter().enumerate() {
        if let Some(service) = &policy.service
            && !result_services.contains(service.as_str())
        {
            let why = if state.services.contains_key(service) {
                "is removed by prune (it is not in the document)"
            } else {
                "does not exist (add it to the document)"
            };
            p.add(
                format!("policies[{i}].service"),
                format!("service '{service}' {why}"),
            );
        }
    }
    let mut diff = Diff::default();
    let mut writes = Vec::new();

    // Policies removed first: they may name services removed below.
    if prune {
        let policy_names: BTreeSet<&str> = policies.iter().map(|p| p.name.as_str()).collect();
        for name in state.policies.keys() {
            if !policy_names.contains(name.as_str()) {
                diff.policies.removed.push(name.clone());
                writes.push(Write::RemovePolicy(name.clone()));
            }
        }
    }
    for service in services {
        match state.services.get(&service.name) {
            None => {
                diff.services.added.push(service.name.clone());
                writes.push(Write::Service {
                    service: Box::new(service),
                    created: true,
                });
            }
            Some(old) => {
                let fields = service_changes(old, &service);
                if !fields.is_empty() {
                    diff.services.changed.push((service.name.clone(), fields));
                    writes.push(Write::Service {
                        service: Box::new(service),
                        created: false,
                    });
                }
            }
        }
    }
    for policy in policies {
        match state.policies.get(&policy.name) {
            None => {
                diff.policies.added.push(policy.name.clone());
                writes.push(Write::Policy(policy));
            }
            Some(old) => {
                let fields = policy_changes(old, &policy);
                if !fields.is_empty() {
                    diff.policies.changed.push((policy.name.clone(), fields));
                    writes.push(Write::Policy(policy));
                }
            }
        }
    }
    if prune {
        for name in state.services.keys() {
            if !named.contains(name) {
                diff.services.removed.push(name.clone());
                writes.push(Write::RemoveService(name.clone()));
            }
        }
    }
    if let Some(certificates) = certificates {
        let cert_names: BTreeSet<String> = certificates.iter().map(|c| c.name.clone()).collect();
        for certificate in certificates {
            match state.certificates.get(&certificate.name) {
                None => {
                    diff.certificates.added.push(certificate.name.clone());
                    writes.push(Write::Certificate(certificate));
                }
                Some(old) => {
                    let fields = certificate_changes(old, &certificate);
                    if !fields.is_empty() {
                        diff.certificates
                            .changed
                            .push((certificate.name.clone(), fields));
                        writes.push(Write::Certificate(certificate));
                    }
                }
            }
        }
        if prune {
            for name in state.certificates.keys() {
                if !cert_names.contains(name) {
                    diff.certificates.removed.push(name.clone());
                    writes.push(Write::RemoveCertificate(name.clone()));
                }
            }
        }
    }
    for kind in [
        &mut diff.services,
        &mut diff.policies,
        &mut diff.certificates,
    ] {
        kind.added.sort();
        kind.changed.sort();
    }
    p.finish(Plan { diff, writes })
}

/// One log line per object a committed apply changed (as the single-object RPCs log theirs);
/// `source` says where the document came from (`ApplyConfig`, the config file's path).
pub fn log_changes(diff: &Diff, version: u64, source: &str) {
    for (kind, d) in [
        ("service", &diff.services),
        ("policy", &diff.policies),
        ("certificate", &diff.certificates),
    ] {
        for name in &d.added {
            tracing::info!(source, kind, name = %name, version, "applied: added");
        }
        for (name, fields) in &d.changed {
            tracing::info!(source, kind, name = %name, ?fields, version, "applied: changed");
        }
        for name in &d.removed {
            tracing::info!(source, kind, name = %name, version, "applied: removed");
        }
    }
}

/// Index of `s` in `services` (it is one of them).
fn index_of(services: &[Service], s: &Service) -> usize {
    services
        .iter()
        .position(|o| std::ptr::eq(o, s))
        .unwrap_or_default()
}

fn hosts(hosts: &[String]) -> String {
    if hosts.is_empty() {
        "any host".to_owned()
    } else {
        format!("host(s) {}", hosts.join(", "))
    }
}

/// The top-level fields in which two services differ (versions aside), in proto order.
fn service_changes(old: &Service, new: &Service) -> Vec<&'static str> {
    // Destructured in full: a new field must be compared here, not silently ignored.
    let Service {
        name: _,
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
    } = new;
    let mut fields = Vec::new();
    let mut differs = |field, same: bool| {
        if !same {
            fields.push(field);
        }
    };
    differs("route", old.route == *route);
    differs("endpoints", old.endpoints == *endpoints);
    differs("health_check", old.health_check == *health_check);
    differs("timeouts", old.timeouts == *timeouts);
    differs("load_balancing", old.load_balancing == *load_balancing);
    differs("https_redirect", old.https_redirect == *https_redirect);
    differs("upstream_tls", old.upstream_tls == *upstream_tls);
    differs("allow_connect", old.allow_connect == *allow_connect);
    differs("auth", old.auth == *auth);
    fields
}

/// The top-level fields in which two policies differ (versions aside), in proto order.
fn policy_changes(old: &Policy, new: &Policy) -> Vec<&'static str> {
    let Policy {
        name: _,
        service,
        key,
        limit,
        period,
        burst,
        mode,
        updated_version: _,
        scope,
        on_store_error,
        audience,
    } = new;
    let mut fields = Vec::new();
    let mut differs = |field, same: bool| {
        if !same {
            fields.push(field);
        }
    };
    differs("service", old.service == *service);
    differs("key", old.key == *key);
    differs("limit", old.limit == *limit);
    differs("period", old.period == *period);
    differs("burst", old.burst == *burst);
    differs("mode", old.mode == *mode);
    differs("scope", old.scope == *scope);
    differs("on_store_error", old.on_store_error == *on_store_error);
    let (consumer, group) = match (&old.audience, audience) {
        (Some(Audience::Consumer(a)), Some(Audience::Consumer(b))) => (a == b, true),
        (Some(Audience::Group(a)), Some(Audience::Group(b))) => (a == b, true),
        (None, None) => (true, true),
        (a, b) => (
            !matches!(a, Some(Audience::Consumer(_))) && !matches!(b, Some(Audience::Consumer(_))),
            !matches!(a, Some(Audience::Group(_))) && !matches!(b, Some(Audience::Group(_))),
        ),
    };
    differs("consumer", consumer);
    differs("group", group);
    fields
}

/// Which of a certificate's chain and key differ (never the key itself).
fn certificate_changes(old: &Certificate, new: &Certificate) -> Vec<&'static str> {
    let mut fields = Vec::new();
    if old.cert_chain_pem != new.cert_chain_pem {
        fields.push("cert_chain_pem");
    }
    if old.private_key_pem != new.private_key_pem {
        fields.push("private_key_pem");
    }
    fields
}

#[cfg(test)]
mod tests;
