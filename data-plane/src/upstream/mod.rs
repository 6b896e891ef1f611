//! The backends' side: endpoints with their health state and round-robin selection over the
//! healthy ones (`balancer`), connecting and sending to them (`client`), their idle keep-alive
//! connections (`pool`), the bodies passing to them with their idle timeouts (`body`) and
//! back from them (`response`), and whose fault a failed attempt is
//! (`blame`), the caps on open connections (`connect`), bounded name resolution (`dns`), and
//! TLS to https:// endpoints (`tls`, the connector seam).
//!
//! Layering: `upstream` imports only the bottom of the crate (`stats`, `fds`). Compilation (`config`) builds its
//! values, the request path (`proxy`) and health checks use them.

pub mod balancer;
pub mod blame;
pub mod body;
pub mod client;
pub mod connect;
pub mod dns;
pub mod pool;
pub mod response;
pub mod tls;
