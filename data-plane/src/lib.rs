//! gw-data-plane: the reverse proxy that takes client traffic, fed live by the control plane.
//!
//! Module map (owners in parentheses while the crate is being built):
//! - `config_sync`: the `StreamConfig` client: hello, apply, ACK/NACK, reconnect with backoff.
//! - `cache`: the on-disk copy of the last applied config (atomic temp file + rename).
//! - `limiter`: in-memory token buckets per (policy, key).
//! - everything else: the request path (router, balancer, proxy, headers), the admin listener,
//!   metrics, and `serve`.

pub mod cache;
pub mod config_sync;
pub mod limiter;
