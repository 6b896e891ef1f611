//! The backends' side: endpoints with their health state and round-robin selection over the
//! healthy ones (`balancer`), and the pooled connections to them (`client`).
//!
//! Layering: `upstream` imports nothing else of the crate. Compilation (`config`) builds its
//! values, the request path (`proxy`) and health checks use them.

pub mod balancer;
pub mod client;
