//! What reads the counters and the config in force, off the request path: Prometheus text
//! rendering (`metrics`, and `store_metrics` for the Redis store of GLOBAL policies), the health and stats reports sent to the control plane (`report`,
//! and `consumers`, which picks the consumers a report carries: a bounded number),
//! and the admin listener (`admin`: `/healthz`, `/readyz`, `/config`, `/metrics`).
//!
//! Layering: the top of the crate beside `proxy`; it reads `config`, `health`, `limiter` and
//! `stats`, and nothing imports it but `serve`.

pub mod admin;
pub mod consumers;
pub mod metrics;
pub mod report;
pub mod store_metrics;
