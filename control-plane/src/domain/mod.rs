//! The control plane's domain: services and rate-limit policies as plain Rust types.
//!
//! Protobuf messages stop at the gRPC edge. `TryFrom<pb::X>` validates a request once, fills
//! every default and reports all problems of one request together; from then on the store, the
//! config state and the stream only ever see valid values.

mod policy;
mod service;
pub(crate) mod validate;

pub use policy::{KeySource, Mode, Policy};
pub use service::{Endpoint, HealthCheck, LoadBalancing, Route, Service, Timeouts};

/// Why a request's message is invalid: one entry per problem, each `field: what is wrong`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("; "))]
pub struct ValidationError {
    problems: Vec<String>,
}

impl ValidationError {
    pub(crate) fn new(problems: Vec<String>) -> Self {
        Self { problems }
    }

    /// A single problem with one field.
    pub fn field(field: &str, problem: impl std::fmt::Display) -> Self {
        Self::new(vec![format!("{field}: {problem}")])
    }

    /// Every problem found, in field order.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }
}
