//! The load generator's result record, printed by `loadgen` as one JSON line and read back by
//! the `proxy` driver, so the two agree on field names by construction.

use serde::{Deserialize, Serialize};

/// What one `loadgen` run measured. Latencies are in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadReport {
    /// `closed` (as fast as responses come back) or `fixed` (open loop at `target_rate`).
    pub mode: String,
    /// Requests per second asked for in fixed-rate mode; 0 in closed-loop mode.
    pub target_rate: f64,
    /// Requests completed with a 2xx status inside the measured window.
    pub ok: u64,
    /// Requests that failed (transport error or non-2xx status) inside the measured window.
    pub errors: u64,
    /// Every request answered over the whole run, warm-up included (CPU per request divides the
    /// proxy's CPU time over the whole run by this).
    pub total: u64,
    /// Length of the measured window in seconds (warm-up excluded).
    pub seconds: f64,
    /// Completed requests per second over the window (`ok / seconds`).
    pub rps: f64,
    /// Median latency.
    pub p50_us: f64,
    /// 99th percentile latency.
    pub p99_us: f64,
    /// 99.9th percentile latency.
    pub p999_us: f64,
    /// Largest latency seen.
    pub max_us: f64,
}
