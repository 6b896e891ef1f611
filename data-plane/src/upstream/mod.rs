//! The backends' side: endpoints with their health state and round-robin selection over the
//! healthy ones (`balancer`), the pooled connections to them (`client`), the bodies passing
//! to and from them with their idle timeouts (`body`), and whose fault a failed attempt is
//! (`blame`), and the caps on open connections (`connect`).
//!
//! Layering: `upstream` imports only the bottom of the crate (`stats`, `fds`). Compilation (`config`) builds its
//! values, the request path (`proxy`) and health checks use them.

pub mod balancer;
pub mod blame;
pub mod body;
pub mod client;
pub mod connect;
