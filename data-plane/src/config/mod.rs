//! What turns the control plane's stream into what the request path reads.
//!
//! - `sync`: the `StreamConfig` client (hello, apply, ACK/NACK, reconnect with backoff;
//!   `sync::delta` merges a delta into the config held; `sync::credentials`: TLS and node
//!   credentials towards the control plane).
//! - `cache`: the on-disk copy of the last applied config; `state_dir`: where it goes when
//!   no path is given.
//! - `snapshot`: validation and compilation of one config version into an immutable
//!   [`snapshot::Snapshot`]; `router`: the compiled route table inside it.
//! - `gateway`: the shared state that holds the snapshot in force and applies new versions
//!   (it implements [`sync::ConfigSink`]).
//!
//! Layering: `config` uses `upstream`, `limiter` and `stats` (what a snapshot is made of) and
//! nothing above it; the request path, health checks and telemetry read it.

pub mod cache;
pub mod gateway;
pub mod router;
pub mod snapshot;
pub mod state_dir;
pub mod sync;
