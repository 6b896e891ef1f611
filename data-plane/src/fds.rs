//! File descriptors: raising the soft `RLIMIT_NOFILE` to the hard limit at start, and
//! splitting what the process may open between client connections, upstream connections and
//! health checks, so that no flood of one kind can starve another.
//!
//! Why a split and not one pool: every kind of socket draws on the same per-process limit.
//! When silent client connections used it all up, accept failed with EMFILE, and so did
//! upstream connects and health checks, which then ejected healthy endpoints and kept
//! traffic at 503 after the flood ended. With the split, client connections stop at their cap
//! (the rest wait in the listen backlog), upstream connections at theirs, and health checks
//! keep a reserve nothing else can take.
//!
//! Bottom layer: imports nothing else of the crate.

/// Descriptors kept for everything that is not a proxied connection: listeners, the
/// control-plane stream, the cache file, the runtime's epoll and eventfds, stdio, logs, and
/// the admin listener's own connections (capped at [`ADMIN_MAX_CONNECTIONS`]).
pub const RESERVED_FDS: u64 = 64 + ADMIN_MAX_CONNECTIONS as u64;
/// Open connections the admin listener accepts (scrapes and probes; a handful in practice).
pub const ADMIN_MAX_CONNECTIONS: usize = 64;
/// At most this many health checks run at once: enough to check thousands of endpoints at
/// their intervals (a check takes milliseconds), small enough to be kept back always.
const MAX_HEALTH_PROBES: usize = 256;
/// And at least this many, so checks still make progress under a tiny limit.
const MIN_HEALTH_PROBES: usize = 4;

/// How many descriptors each kind of socket may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// The soft limit the split was made from.
    pub limit: u64,
    /// Open client connections on the proxy listener.
    pub client_connections: usize,
    /// Open upstream connections, all endpoints together.
    pub upstream_connections: usize,
    /// Health checks in flight at once.
    pub health_probes: usize,
}

impl FdBudget {
    /// Splits `limit`: [`RESERVED_FDS`] off the top, 1/16 of the rest (within 4..=256) for
    /// health checks, and the remainder in halves between client and upstream connections
    /// (a proxied HTTP/1.1 request holds one of each).
    pub fn split(limit: u64) -> Self {
        let usable = usize::try_from(limit.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
        let health_probes = (usable / 16).clamp(MIN_HEALTH_PROBES, MAX_HEALTH_PROBES);
        let rest = usable.saturating_sub(health_probes);
        Self {
            limit,
            client_connections: (rest / 2).max(1),
            upstream_connections: (rest / 2).max(1),
            health_probes,
        }
    }

    /// The split of this process's current soft limit.
    pub fn current() -> Self {
        Self::split(soft_limit())
    }
}

/// The soft `RLIMIT_NOFILE` now (unlimited reads as `u64::MAX`).
pub fn soft_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (what `ulimit -n` allows without
/// privileges); returns the soft limit in force afterwards. Most systems start processes at
/// a soft limit of 1,024 while allowing far more, and a proxy needs the room.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    if now.current != now.maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: now.maximum,
                maximum: now.maximum,
            },
        )?;
    }
    Ok(soft_limit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_table() {
        // (limit, client, upstream, health)
        let cases = [
            (1_024, 420, 420, 56),
            (512, 180, 180, 24),
            (65_536, 32_576, 32_576, 256),
            (0, 1, 1, 4),
        ];
        for (limit, client, upstream, health) in cases {
            let b = FdBudget::split(limit);
            assert_eq!(
                (
                    b.client_connections,
                    b.upstream_connections,
                    b.health_probes
                ),
                (client, upstream, health),
                "{limit}"
            );
            if limit > RESERVED_FDS + 16 {
                assert!(
                    (b.client_connections + b.upstream_connections + b.health_probes) as u64
                        + RESERVED_FDS
                        <= limit,
                    "{limit}: the split fits the limit"
                );
            }
        }
        assert_eq!(FdBudget::split(u64::MAX).health_probes, MAX_HEALTH_PROBES);
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let before = soft_limit();
        let after = raise_nofile_limit().unwrap();
        assert!(after >= before);
    }
}
