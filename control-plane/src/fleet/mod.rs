//! The fleet of data planes: what each reports about itself (endpoint health, traffic
//! counters), kept per node as plain values ([`report`]); the registry of nodes that holds them
//! ([`nodes`]); and the fleet-wide views built from the registry for GetHealth and GetStats
//! ([`view`]). Consumers' traffic ([`consumers`]) is kept beside the rest of a stats report,
//! merged rather than replaced, since a report carries only some consumers. Imports flow one
//! way inside: `view` → `nodes` → `report` and `consumers`; `report` → `histogram`.
//!
//! Reports arrive on unauthenticated config streams, so they are untrusted input: strings are
//! bounded, malformed parts are dropped with a debug log, and every collection per node has a
//! cap. Nothing in a report can end the stream.

pub mod consumers;
pub mod histogram;
pub mod nodes;
pub mod report;
pub mod view;

pub use histogram::Histogram;
pub use report::{HealthUpdate, NodeHealth, NodeStats};
