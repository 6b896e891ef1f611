//! gw-ops: what the three programs (gw-control-plane, gw-data-plane, gwctl) do the same way
//! for operators, written once so they cannot drift apart:
//!
//! - [`duration`]: the one duration grammar (`500ms`, `5s`, `1m`, `1h`) of every flag and of
//!   the declarative config file.
//! - [`logging`]: process logs on stderr, as text (coloured only on a terminal) or JSON.
//! - [`metrics`]: Prometheus text both servers share: `gw_build_info`, process metrics from
//!   `/proc`, a latency histogram.
//! - [`time`]: calendar dates from Unix time, for log lines and certificate dates.
//!
//! It depends on no other gw crate, so any of them may use it.

pub mod duration;
pub mod logging;
pub mod metrics;
pub mod time;
