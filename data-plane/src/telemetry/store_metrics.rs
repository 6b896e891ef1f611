//! Prometheus text for the rate-limit store (Redis) and the GLOBAL policies counted in it:
//! round trips and their latency, errors by kind, state changes, decisions answered locally,
//! and a degraded-mode gauge per policy. Rendered when scraped, off the request path.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::config::gateway::Gateway;
use crate::limiter::redis::{ERROR_KINDS, LATENCY_BUCKETS};
use crate::telemetry::metrics::header;

/// Appends the store's and the GLOBAL policies' series to `out`.
pub fn render(gw: &Gateway, out: &mut String) {
    let globals = gw.reuse.globals.all();
    header(
        out,
        "gw_live_data_planes",
        "gauge",
        "Data planes connected to the control plane, as it last said (GLOBAL policies' local share is limit / this).",
    );
    let _ = writeln!(
        out,
        "gw_live_data_planes {}",
        gw.reuse.live_data_planes.load(Ordering::Relaxed)
    );
    header(
        out,
        "gw_rate_limit_degraded",
        "gauge",
        "1 while a GLOBAL policy is enforced through its on_store_error (Redis away or not configured), by policy.",
    );
    for g in &globals {
        let _ = writeln!(
            out,
            "gw_rate_limit_degraded{{policy=\"{}\"}} {}",
            g.name(),
            u8::from(g.degraded())
        );
    }
    header(
        out,
        "gw_rate_limit_local_decisions_total",
        "counter",
        "Decisions of a GLOBAL policy answered without Redis (over-limit cache, leased tokens), by policy.",
    );
    header(
        out,
        "gw_rate_limit_store_round_trips_by_policy_total",
        "counter",
        "Redis round trips for a GLOBAL policy's decisions, by policy.",
    );
    for (name, stats) in gw.reuse.policy_stats.snapshot() {
        if !stats.global.load(Ordering::Relaxed) {
            continue;
        }
        let _ = writeln!(
            out,
            "gw_rate_limit_local_decisions_total{{policy=\"{name}\"}} {}",
            stats.local_decisions.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "gw_rate_limit_store_round_trips_by_policy_total{{policy=\"{name}\"}} {}",
            stats.store_round_trips.load(Ordering::Relaxed)
        );
    }
    let Some(store) = gw.reuse.globals.store() else {
        return;
    };
    let c = &store.counters;
    header(
        out,
        "gw_rate_limit_store_up",
        "gauge",
        "1 while GLOBAL policies are counted in Redis; 0 while the breaker is open.",
    );
    let _ = writeln!(out, "gw_rate_limit_store_up {}", u8::from(store.is_up()));
    header(
        out,
        "gw_rate_limit_store_transitions_total",
        "counter",
        "Changes of the store's state, by the state entered.",
    );
    let _ = writeln!(
        out,
        "gw_rate_limit_store_transitions_total{{to=\"down\"}} {}",
        c.went_down.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "gw_rate_limit_store_transitions_total{{to=\"up\"}} {}",
        c.came_up.load(Ordering::Relaxed)
    );
    header(
        out,
        "gw_rate_limit_store_errors_total",
        "counter",
        "Failed Redis calls of decisions, by kind.",
    );
    for (i, kind) in ERROR_KINDS.iter().enumerate() {
        let _ = writeln!(
            out,
            "gw_rate_limit_store_errors_total{{kind=\"{kind}\"}} {}",
            c.errors[i].load(Ordering::Relaxed)
        );
    }
    header(
        out,
        "gw_rate_limit_store_round_trip_seconds",
        "histogram",
        "Time of each decision's Redis round trip (timeouts included).",
    );
    let mut cumulative = 0;
    for (i, count) in c.latency.iter().enumerate() {
        cumulative += count.load(Ordering::Relaxed);
        match LATENCY_BUCKETS.get(i) {
            Some(le) => {
                let _ = writeln!(
                    out,
                    "gw_rate_limit_store_round_trip_seconds_bucket{{le=\"{le}\"}} {cumulative}"
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "gw_rate_limit_store_round_trip_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "gw_rate_limit_store_round_trip_seconds_sum {}",
        c.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
    );
    let _ = writeln!(
        out,
        "gw_rate_limit_store_round_trip_seconds_count {cumulative}"
    );
    header(
        out,
        "gw_rate_limit_store_round_trips_total",
        "counter",
        "Redis round trips of decisions (the histogram's count).",
    );
    let _ = writeln!(
        out,
        "gw_rate_limit_store_round_trips_total {}",
        c.round_trips.load(Ordering::Relaxed)
    );
}
