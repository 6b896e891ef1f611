//! The request path: the worker threads, a runtime and a socket each (`workers`), the accept
//! loop with its connection limits (`server`, with the idle timeouts in `idle`), the
//! request's host and path checked and normalised (`host`, `path`), routing, rate-limiting and
//! forwarding one request (`forward`), CONNECT tunnels and the byte copy of every tunnel
//! (`tunnel`), the headers set and removed on the way (`headers`), and the gateway's own
//! answers (`responses`).
//!
//! Layering: the top of the crate beside `telemetry`; it reads `config` (one immutable
//! snapshot per request), applies `limiter`, uses `upstream` and bumps `stats`. Nothing below
//! imports it.

pub mod forward;
pub mod headers;
pub mod host;
pub mod idle;
pub mod path;
pub mod responses;
pub mod server;
pub mod tunnel;
pub mod workers;

pub use forward::Proxy;
