//! The control plane's domain: services and rate-limit policies as plain Rust types.
//!
//! Protobuf messages stop at the gRPC edge. `TryFrom<pb::X>` validates a request once, fills
//! every default and reports all problems of one request together; from then on the store, the
//! config state and the stream only ever see valid values.

mod certificate;
pub mod consumer;
mod policy;
mod service;
pub(crate) mod validate;

pub use certificate::Certificate;
pub use consumer::{ApiKey, Auth, AuthMethod, Consumer, JwtCredential, KeyHash};
pub use policy::{Audience, KeySource, Mode, OnStoreError, Policy, Scope};
pub use service::{
    Endpoint, HealthCheck, LoadBalancing, Probe, Route, Service, Timeouts, UpstreamTls,
};
pub use validate::ValidationError;
