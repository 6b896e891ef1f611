//! Prometheus text both servers expose the same way: `gw_build_info`, the usual process
//! metrics (read from `/proc`, as the Prometheus client libraries do), and a latency
//! histogram with fixed buckets.
//!
//! Hand-rolled rather than the `prometheus` crate: the data plane's counters are plain
//! atomics bumped without label lookups (see its `stats`), and these few series need only
//! `/proc` and string formatting.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// `# HELP` and `# TYPE` lines of a metric.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// `gw_build_info{program="…",version="…"} 1`.
pub fn render_build_info(out: &mut String, program: &str, version: &str) {
    header(
        out,
        "gw_build_info",
        "gauge",
        "Always 1; the labels say which program and version is running.",
    );
    let _ = writeln!(
        out,
        "gw_build_info{{program=\"{program}\",version=\"{version}\"}} 1"
    );
}

/// The process metrics [`render_process`] writes.
pub const PROCESS_METRICS: [&str; 6] = [
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
];

/// Kernel clock ticks per second in `/proc/<pid>/stat` (USER_HZ: 100 on every Linux
/// architecture that matters, fixed by the kernel's ABI).
const USER_HZ: f64 = 100.0;

/// The process metrics of the Prometheus client libraries (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`,
/// `process_max_fds`, `process_start_time_seconds`), read from `/proc/self`. A value that
/// cannot be read is left out rather than reported wrong.
pub fn render_process(out: &mut String) {
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .as_deref()
        .and_then(|s| s.rsplit_once(')'))
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // proc(5) numbers fields from 1 (pid); `fields[0]` is field 3 (state).
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        header(
            out,
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
        );
        let _ = writeln!(
            out,
            "process_cpu_seconds_total {}",
            (utime + stime) as f64 / USER_HZ
        );
    }
    if let Some(vsize) = field(23) {
        header(
            out,
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
        );
        let _ = writeln!(out, "process_virtual_memory_bytes {vsize}");
    }
    if let Some(rss_kib) = status_kib("VmRSS:") {
        header(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        let _ = writeln!(out, "process_resident_memory_bytes {}", rss_kib * 1024);
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        // The directory handle being read is one of them; it is gone once we return.
        let open = dir.count().saturating_sub(1);
        header(
            out,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
        );
        let _ = writeln!(out, "process_open_fds {open}");
    }
    if let Some(max) = max_open_files() {
        header(
            out,
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
        );
        let _ = writeln!(out, "process_max_fds {max}");
    }
    if let (Some(start_ticks), Some(boot)) = (field(22), boot_time()) {
        header(
            out,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
        );
        let _ = writeln!(
            out,
            "process_start_time_seconds {}",
            boot as f64 + start_ticks as f64 / USER_HZ
        );
    }
}

/// A `kB` line of `/proc/self/status`.
fn status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The soft limit on open files, from `/proc/self/limits`.
fn max_open_files() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The machine's boot time, seconds since the epoch (`btime` in `/proc/stat`).
fn boot_time() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// Upper bounds (seconds) of [`Histogram`]'s buckets; `+Inf` is implicit.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram over [`LATENCY_BUCKETS`], updated with relaxed atomics.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative count per bucket, then `+Inf`.
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    /// Counts one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Writes `name_bucket`, `name_sum` and `name_count`, with `labels` (`a="b",c="d"`, or
    /// empty) on every line. The `# HELP`/`# TYPE` lines are the caller's, once per metric.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            match LATENCY_BUCKETS.get(i) {
                Some(le) => {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
                    );
                }
            }
        }
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_metrics_are_read() {
        let mut out = String::new();
        render_process(&mut out);
        for name in PROCESS_METRICS {
            let value: f64 = out
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("{name} missing:\n{out}"));
            assert!(value >= 0.0, "{name} {value}");
        }
        let rss = |o: &str| -> f64 {
            o.lines()
                .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        assert!(
            rss(&out) > 1024.0 * 1024.0,
            "a test binary holds more than 1 MiB"
        );
    }

    #[test]
    fn histogram_lines() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(700));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "m=\"a\"");
        for line in [
            "x_seconds_bucket{m=\"a\",le=\"0.0005\"} 0",
            "x_seconds_bucket{m=\"a\",le=\"0.001\"} 1",
            "x_seconds_bucket{m=\"a\",le=\"10\"} 1",
            "x_seconds_bucket{m=\"a\",le=\"+Inf\"} 2",
            "x_seconds_sum{m=\"a\"} 60.0007",
            "x_seconds_count{m=\"a\"} 2",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line}\n{out}");
        }
        let mut bare = String::new();
        h.render(&mut bare, "y", "");
        assert!(
            bare.contains("y_bucket{le=\"+Inf\"} 2\ny_sum 60.0007\ny_count 2\n"),
            "{bare}"
        );
    }
}
