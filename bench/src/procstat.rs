//! CPU time and peak memory of a process (and its children) read from Linux's `/proc`, for the
//! "CPU per request" and "peak RSS" columns.
//!
//! nginx and HAProxy fork workers, so a proxy's cost is the sum over the process and its
//! descendants, found by scanning `/proc/*/stat` for parent ids.

use std::fs;

/// Kernel clock ticks per second for `utime`/`stime`. Linux reports these fields in USER_HZ,
/// which is 100 on every architecture the kernel supports (it is an ABI constant, unlike HZ).
pub const USER_HZ: u64 = 100;

/// `utime + stime` of `pid` in clock ticks, or `None` if it has gone.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields = after_comm(&stat)?;
    // After the comm field: state(0) ppid(1) ... utime(11) stime(12).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Parent pid of `pid`.
pub fn parent(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    after_comm(&stat)?.get(1)?.parse().ok()
}

/// `pid` and all its descendants alive now.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let Ok(entries) = fs::read_dir("/proc") else {
        return all;
    };
    let pairs: Vec<(u32, u32)> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, parent(p)?)))
        .collect();
    let mut i = 0;
    while i < all.len() {
        let cur = all[i];
        all.extend(pairs.iter().filter(|(_, pp)| *pp == cur).map(|(p, _)| *p));
        i += 1;
    }
    all
}

/// CPU ticks summed over `pid` and its descendants.
pub fn tree_cpu_ticks(pid: u32) -> u64 {
    tree(pid).into_iter().filter_map(cpu_ticks).sum()
}

/// Peak resident set size (`VmHWM`) in KiB summed over `pid` and its descendants.
pub fn tree_peak_rss_kib(pid: u32) -> u64 {
    tree(pid).into_iter().filter_map(peak_rss_kib).sum()
}

/// `VmHWM` of one process in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field_kib(&status, "VmHWM:")
}

fn status_field_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// The fields after `(comm)`, which may itself contain spaces and parentheses.
fn after_comm(stat: &str) -> Option<Vec<&str>> {
    let close = stat.rfind(')')?;
    Some(stat[close + 1..].split_whitespace().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_comm() {
        let stat = "42 (a) b (c)) S 7 42 42 0 -1 4194560 100 0 0 0 13 5 0 0 20 0 1 0 1 1 1";
        let f = after_comm(stat).unwrap();
        assert_eq!(f[1], "7");
        assert_eq!(f[11], "13");
        assert_eq!(f[12], "5");
    }

    #[test]
    fn parses_vmhwm() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t    1234 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(status_field_kib(status, "VmHWM:"), Some(1234));
        assert_eq!(status_field_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn own_process_is_measurable() {
        let me = std::process::id();
        assert!(peak_rss_kib(me).unwrap() > 0);
        assert!(cpu_ticks(me).is_some());
        assert!(tree(me).contains(&me));
    }
}
