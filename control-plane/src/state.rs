//! The configuration in force: an immutable snapshot per config version.
//!
//! The store publishes a new [`ConfigState`] through a `tokio::sync::watch` channel after each
//! commit. Admin reads and every config stream share it; the protobuf snapshot sent to data
//! planes is built once per version here, not once per stream.

use std::collections::BTreeMap;
use std::sync::Arc;

use gw_proto::v1 as pb;

use crate::domain::{Policy, Service};

/// Everything the control plane serves, at one config version.
#[derive(Debug)]
pub struct ConfigState {
    /// The config version this state reflects.
    pub version: u64,
    /// Services by name.
    pub services: BTreeMap<String, Arc<Service>>,
    /// Policies by name.
    pub policies: BTreeMap<String, Arc<Policy>>,
    /// The full config as sent to data planes (and reused by the admin listings).
    pub snapshot: Arc<pb::DiscoveryResponse>,
}

impl ConfigState {
    /// Builds the state, and its protobuf snapshot, for `version`.
    pub fn new(
        version: u64,
        services: BTreeMap<String, Arc<Service>>,
        policies: BTreeMap<String, Arc<Policy>>,
    ) -> Self {
        let snapshot = pb::ConfigSnapshot {
            services: services.values().map(|s| pb::Service::from(&**s)).collect(),
            policies: policies.values().map(|p| pb::Policy::from(&**p)).collect(),
        };
        let snapshot = Arc::new(pb::DiscoveryResponse {
            version,
            kind: Some(pb::discovery_response::Kind::Snapshot(snapshot)),
        });
        Self {
            version,
            services,
            policies,
            snapshot,
        }
    }

    /// The protobuf services, ordered by name.
    pub fn pb_services(&self) -> &[pb::Service] {
        match &self.snapshot.kind {
            Some(pb::discovery_response::Kind::Snapshot(s)) => &s.services,
            _ => &[],
        }
    }

    /// The protobuf policies, ordered by name.
    pub fn pb_policies(&self) -> &[pb::Policy] {
        match &self.snapshot.kind {
            Some(pb::discovery_response::Kind::Snapshot(s)) => &s.policies,
            _ => &[],
        }
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
        let mut services = self.services.clone();
        services.insert(service.name.clone(), Arc::new(service));
        Self::new(version, services, self.policies.clone())
    }

    /// This state without service `name`, at `version`.
    pub fn without_service(&self, name: &str, version: u64) -> Self {
        let mut services = self.services.clone();
        services.remove(name);
        Self::new(version, services, self.policies.clone())
    }

    /// This state with `policy` inserted or replaced, at `version`.
    pub fn with_policy(&self, policy: Policy, version: u64) -> Self {
        let mut policies = self.policies.clone();
        policies.insert(policy.name.clone(), Arc::new(policy));
        Self::new(version, self.services.clone(), policies)
    }

    /// This state without policy `name`, at `version`.
    pub fn without_policy(&self, name: &str, version: u64) -> Self {
        let mut policies = self.policies.clone();
        policies.remove(name);
        Self::new(version, self.services.clone(), policies)
    }
}
