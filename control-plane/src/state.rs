//! The configuration in force: an immutable state per config version.
//!
//! The store publishes a new [`ConfigState`] through a `tokio::sync::watch` channel after each
//! commit. Admin reads and every config stream share it.
//!
//! A state also carries what data planes need to be brought up to date cheaply:
//! - the **recent changes** ([`MAX_CHANGES`] of them, one per version), from which
//!   [`ConfigState::delta_since`] builds a `ConfigDelta` holding only what changed since a
//!   node's version. A write costs one entry here, whatever the size of the config, and a push
//!   to a node one behind carries one service or policy.
//! - the **encoded size** of the full snapshot, kept up to date from the changes, so the store
//!   can refuse a write that would grow the config past what a data plane accepts without
//!   encoding the whole config on every write.
//! - the **full snapshot**, built on first use and then shared: only new nodes, nodes too far
//!   behind for a delta, and the admin listings need it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, OnceLock};

use gw_proto::v1 as pb;

use crate::domain::{Certificate, Consumer, Policy, Service};

/// How many versions back a delta can reach. A node further behind (or one that connects
/// after a control-plane restart, which starts with no history) gets a full snapshot.
pub const MAX_CHANGES: usize = 256;

/// Field number of `services` and `policies` in `ConfigSnapshot`, and of `snapshot` in
/// `DiscoveryResponse`, all below 16, so each key takes one byte.
const KEY_LEN: usize = 1;
/// `certificates` (30) and `consumers` (50) in `ConfigSnapshot` are fields 16 to 2047: a
/// two-byte key.
const CERTIFICATE_KEY_LEN: usize = 2;

/// Everything the control plane serves, at one config version.
#[derive(Debug)]
pub struct ConfigState {
    /// The config version this state reflects.
    pub version: u64,
    /// Services by name.
    pub services: BTreeMap<String, Arc<Service>>,
    /// Policies by name.
    pub policies: BTreeMap<String, Arc<Policy>>,
    /// HTTPS certificates by name.
    pub certificates: BTreeMap<String, Arc<Certificate>>,
    /// Consumers (with their API key hashes and JWT credentials) by name.
    pub consumers: BTreeMap<String, Arc<Consumer>>,
    /// Encoded length of the `ConfigSnapshot` of this state.
    config_len: usize,
    /// The changes that led to this version, oldest first, one per version and ending at
    /// `version`; empty after a restart.
    changes: VecDeque<Arc<Change>>,
    /// The full snapshot, built on first use.
    snapshot: OnceLock<Arc<pb::DiscoveryResponse>>,
}

/// What one version changed: services, policies and certificates created, replaced or
/// removed (one object for a single-object RPC, any number for `ApplyConfig`).
#[derive(Debug)]
struct Change {
    /// The version this change produced.
    version: u64,
    what: Vec<Changed>,
}

/// One object written or removed.
#[derive(Debug)]
pub(crate) enum Changed {
    /// The service of this name is now the given one, or gone (`None`).
    Service(String, Option<Arc<Service>>),
    /// The policy of this name is now the given one, or gone (`None`).
    Policy(String, Option<Arc<Policy>>),
    /// The certificate of this name is now the given one, or gone (`None`).
    Certificate(String, Option<Arc<Certificate>>),
    /// The consumer of this name (with its keys) is now the given one, or gone (`None`).
    Consumer(String, Option<Arc<Consumer>>),
}

impl ConfigState {
    /// Builds the state for `version`, with no history of changes (as loaded at start-up).
    pub fn new(
        version: u64,
        services: BTreeMap<String, Arc<Service>>,
        policies: BTreeMap<String, Arc<Policy>>,
    ) -> Self {
        let config_len = services.values().map(|s| service_len(s)).sum::<usize>()
            + policies.values().map(|p| policy_len(p)).sum::<usize>();
        Self {
            version,
            services,
            policies,
            certificates: BTreeMap::new(),
            consumers: BTreeMap::new(),
            config_len,
            changes: VecDeque::new(),
            snapshot: OnceLock::new(),
        }
    }

    /// This state with `certificates` (as loaded at start-up).
    pub fn with_certificates(mut self, certificates: BTreeMap<String, Arc<Certificate>>) -> Self {
        self.config_len += certificates
            .values()
            .map(|c| certificate_len(c))
            .sum::<usize>();
        self.certificates = certificates;
        self.snapshot = OnceLock::new();
        self
    }

    /// This state with `consumers` (as loaded at start-up).
    pub fn with_consumers(mut self, consumers: BTreeMap<String, Arc<Consumer>>) -> Self {
        self.config_len += consumers.values().map(|c| consumer_len(c)).sum::<usize>();
        self.consumers = consumers;
        self.snapshot = OnceLock::new();
        self
    }

    /// The full config at this version, as sent to new data planes.
    pub fn snapshot(&self) -> &Arc<pb::DiscoveryResponse> {
        self.snapshot.get_or_init(|| {
            let snapshot = pb::ConfigSnapshot {
                services: self
                    .services
                    .values()
                    .map(|s| pb::Service::from(&**s))
                    .collect(),
                policies: self
                    .policies
                    .values()
                    .map(|p| pb::Policy::from(&**p))
                    .collect(),
                certificates: self
                    .certificates
                    .values()
                    .map(|c| c.to_pb_with_key())
                    .collect(),
                consumers: self
                    .consumers
                    .values()
                    .map(|c| c.to_pb_with_secrets())
                    .collect(),
            };
            Arc::new(pb::DiscoveryResponse {
                version: self.version,
                kind: Some(pb::discovery_response::Kind::Snapshot(snapshot)),
                // Set per stream by the sender, which knows its epoch.
                epoch: 0,
            })
        })
    }

    /// Encoded length of [`ConfigState::snapshot`], computed without building it.
    pub fn snapshot_len(&self) -> usize {
        let version_len = if self.version == 0 {
            0
        } else {
            KEY_LEN + prost::encoding::encoded_len_varint(self.version)
        };
        version_len + KEY_LEN + prost::length_delimiter_len(self.config_len) + self.config_len
    }

    /// The protobuf services, ordered by name.
    pub fn pb_services(&self) -> &[pb::Service] {
        match &self.snapshot().kind {
            Some(pb::discovery_response::Kind::Snapshot(s)) => &s.services,
            _ => &[],
        }
    }

    /// The protobuf policies, ordered by name.
    pub fn pb_policies(&self) -> &[pb::Policy] {
        match &self.snapshot().kind {
            Some(pb::discovery_response::Kind::Snapshot(s)) => &s.policies,
            _ => &[],
        }
    }

    /// A `ConfigDelta` response taking a node from `base` to this version, or `None` when
    /// this state cannot build one: `base` is 0 (a new node), not older than this version,
    /// or further back than the recent changes reach. The caller then sends the snapshot.
    pub fn delta_since(&self, base: u64) -> Option<pb::DiscoveryResponse> {
        if base == 0 || base >= self.version {
            return None;
        }
        let oldest = self.changes.front()?.version;
        if oldest > base.checked_add(1)? {
            return None;
        }
        // Last change per name wins; the maps keep the delta ordered by name.
        let mut services: BTreeMap<&str, Option<&Arc<Service>>> = BTreeMap::new();
        let mut policies: BTreeMap<&str, Option<&Arc<Policy>>> = BTreeMap::new();
        let mut certificates: BTreeMap<&str, Option<&Arc<Certificate>>> = BTreeMap::new();
        let mut consumers: BTreeMap<&str, Option<&Arc<Consumer>>> = BTreeMap::new();
        let changed = self.changes.iter().filter(|c| c.version > base);
        for what in changed.flat_map(|c| &c.what) {
            match what {
                Changed::Certificate(name, now) => {
                    certificates.insert(name, now.as_ref());
                }
                Changed::Service(name, now) => {
                    services.insert(name, now.as_ref());
                }
                Changed::Policy(name, now) => {
                    policies.insert(name, now.as_ref());
                }
                Changed::Consumer(name, now) => {
                    consumers.insert(name, now.as_ref());
                }
            }
        }
        let mut delta = pb::ConfigDelta {
            base_version: base,
            ..Default::default()
        };
        for (name, now) in services {
            match now {
                Some(s) => delta.upserted_services.push(pb::Service::from(&**s)),
                None => delta.removed_services.push(name.to_owned()),
            }
        }
        for (name, now) in policies {
            match now {
                Some(p) => delta.upserted_policies.push(pb::Policy::from(&**p)),
                None => delta.removed_policies.push(name.to_owned()),
            }
        }
        for (name, now) in certificates {
            match now {
                Some(c) => delta.upserted_certificates.push(c.to_pb_with_key()),
                None => delta.removed_certificates.push(name.to_owned()),
            }
        }
        for (name, now) in consumers {
            match now {
                Some(c) => delta.upserted_consumers.push(c.to_pb_with_secrets()),
                None => delta.removed_consumers.push(name.to_owned()),
            }
        }
        Some(pb::DiscoveryResponse {
            version: self.version,
            kind: Some(pb::discovery_response::Kind::Delta(delta)),
            epoch: 0,
        })
    }

    /// Another service (not `candidate` itself) whose route takes the same requests.
    pub fn route_conflict(&self, candidate: &Service) -> Option<&Service> {
        self.services
            .values()
            .map(|s| &**s)
            .find(|s| s.name != candidate.name && s.route.overlaps(&candidate.route))
    }

    /// Names of the policies that apply to service `name`, ordered.
    pub fn policies_naming(&self, name: &str) -> Vec<String> {
        self.policies
            .values()
            .filter(|p| p.service.as_deref() == Some(name))
            .map(|p| p.name.clone())
            .collect()
    }

    /// This state with `service` inserted or replaced, at `version`.
    pub fn with_service(&self, service: Service, version: u64) -> Self {
        self.with_changes(version, vec![Changed::service(service)])
    }

    /// This state without service `name`, at `version`.
    pub fn without_service(&self, name: &str, version: u64) -> Self {
        self.with_changes(version, vec![Changed::Service(name.to_owned(), None)])
    }

    /// This state with `policy` inserted or replaced, at `version`.
    pub fn with_policy(&self, policy: Policy, version: u64) -> Self {
        self.with_changes(version, vec![Changed::policy(policy)])
    }

    /// This state without policy `name`, at `version`.
    pub fn without_policy(&self, name: &str, version: u64) -> Self {
        self.with_changes(version, vec![Changed::Policy(name.to_owned(), None)])
    }

    /// This state with `certificate` inserted or replaced, at `version`.
    pub fn with_certificate(&self, certificate: Certificate, version: u64) -> Self {
        self.with_changes(version, vec![Changed::certificate(certificate)])
    }

    /// This state without certificate `name`, at `version`.
    pub fn without_certificate(&self, name: &str, version: u64) -> Self {
        self.with_changes(version, vec![Changed::Certificate(name.to_owned(), None)])
    }

    /// This state with `consumer` inserted or replaced, at `version`.
    pub fn with_consumer(&self, consumer: Consumer, version: u64) -> Self {
        self.with_changes(
            version,
            vec![Changed::Consumer(
                consumer.name.clone(),
                Some(Arc::new(consumer)),
            )],
        )
    }

    /// This state without consumer `name`, at `version`.
    pub fn without_consumer(&self, name: &str, version: u64) -> Self {
        self.with_changes(version, vec![Changed::Consumer(name.to_owned(), None)])
    }

    /// The certificates as AdminService shows them (no private keys), ordered by name.
    pub fn pb_certificates(&self) -> Vec<pb::Certificate> {
        self.certificates.values().map(|c| c.to_public()).collect()
    }

    /// The state after `what`, all of which produced the one `version` (a single-object RPC
    /// changes one thing; `ApplyConfig` many, still as one version). The history stays
    /// contiguous: a version that does not follow this one (which the store never produces)
    /// starts it afresh, so no delta can skip a change.
    pub(crate) fn with_changes(&self, version: u64, what: Vec<Changed>) -> Self {
        let mut services = self.services.clone();
        let mut policies = self.policies.clone();
        let mut certificates = self.certificates.clone();
        let mut consumers = self.consumers.clone();
        let mut config_len = self.config_len;
        for change in &what {
            match change {
                Changed::Service(name, now) => {
                    replace(&mut services, name, now, service_len, &mut config_len);
                }
                Changed::Policy(name, now) => {
                    replace(&mut policies, name, now, policy_len, &mut config_len);
                }
                Changed::Certificate(name, now) => {
                    replace(
                        &mut certificates,
                        name,
                        now,
                        certificate_len,
                        &mut config_len,
                    );
                }
                Changed::Consumer(name, now) => {
                    replace(&mut consumers, name, now, consumer_len, &mut config_len);
                }
            }
        }
        let mut changes = if Some(version) == self.version.checked_add(1) {
            self.changes.clone()
        } else {
            VecDeque::new()
        };
        if changes.len() == MAX_CHANGES {
            changes.pop_front();
        }
        changes.push_back(Arc::new(Change { version, what }));
        Self {
            version,
            services,
            policies,
            certificates,
            consumers,
            config_len,
            changes,
            snapshot: OnceLock::new(),
        }
    }
}

impl Changed {
    /// `service` written.
    pub(crate) fn service(service: Service) -> Self {
        Self::Service(service.name.clone(), Some(Arc::new(service)))
    }

    /// `policy` written.
    pub(crate) fn policy(policy: Policy) -> Self {
        Self::Policy(policy.name.clone(), Some(Arc::new(policy)))
    }

    /// `certificate` written.
    pub(crate) fn certificate(certificate: Certificate) -> Self {
        Self::Certificate(certificate.name.clone(), Some(Arc::new(certificate)))
    }
}

/// Puts `now` (or nothing) under `name` in `map`, keeping `config_len` (the encoded size)
/// in step; `len` is what one object adds to it.
fn replace<T>(
    map: &mut BTreeMap<String, Arc<T>>,
    name: &str,
    now: &Option<Arc<T>>,
    len: fn(&T) -> usize,
    config_len: &mut usize,
) {
    // Add the new object's bytes before taking the old one's away: no underflow.
    *config_len += now.as_deref().map_or(0, len);
    let old = match now {
        Some(object) => map.insert(name.to_owned(), object.clone()),
        None => map.remove(name),
    };
    *config_len -= old.as_deref().map_or(0, len);
}

/// Bytes one service adds to an encoded `ConfigSnapshot` (key, length, message).
fn service_len(service: &Service) -> usize {
    field_len(prost::Message::encoded_len(&pb::Service::from(service)))
}

/// Bytes one policy adds to an encoded `ConfigSnapshot`.
fn policy_len(policy: &Policy) -> usize {
    field_len(prost::Message::encoded_len(&pb::Policy::from(policy)))
}

/// Bytes one certificate adds to an encoded `ConfigSnapshot`, its key included.
fn certificate_len(certificate: &Certificate) -> usize {
    let len = prost::Message::encoded_len(&certificate.to_pb_with_key());
    CERTIFICATE_KEY_LEN + prost::length_delimiter_len(len) + len
}

/// Bytes one consumer adds to an encoded `ConfigSnapshot`, its key hashes and JWT secrets included.
fn consumer_len(consumer: &Consumer) -> usize {
    let len = prost::Message::encoded_len(&consumer.to_pb_with_secrets());
    CERTIFICATE_KEY_LEN + prost::length_delimiter_len(len) + len
}

/// Bytes a length-delimited field with a one-byte key and `len` bytes of payload takes.
fn field_len(len: usize) -> usize {
    KEY_LEN + prost::length_delimiter_len(len) + len
}

#[cfg(test)]
mod tests;
