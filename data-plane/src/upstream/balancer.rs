//! Endpoints and round-robin selection over the healthy ones.
//!
//! An [`Endpoint`] is shared as `Arc` and reused across config versions while its URL stays in
//! its service, so health state (written by health checking, read here) and its idle
//! keep-alive connections (`pool`) survive config updates; once no version has it, its
//! idle connections are closed with it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use http::uri::{Authority, PathAndQuery, Scheme, Uri};

use crate::upstream::pool::Idle;

/// One backend address of a service.
#[derive(Debug)]
pub struct Endpoint {
    /// The URL as configured, e.g. `http://10.0.0.1:8080` (for logs, metrics and `/config`).
    pub url: Arc<str>,
    /// Where to connect (`host:port`).
    pub authority: Authority,
    /// Whether it is an `https://` endpoint.
    pub tls: bool,
    /// Its idle keep-alive connections, per worker thread.
    pub idle: Arc<Idle>,
    /// Whether the endpoint takes traffic. Starts true: a new endpoint takes traffic until a
    /// health check says otherwise.
    healthy: AtomicBool,
    /// Consecutive failed attempts seen by the request path (connect failures, resets, 5xx);
    /// passive health checking reads it to eject an endpoint.
    consecutive_failures: AtomicU32,
    /// Failures in a row that eject the endpoint (passive health checking); 0: never. Set by
    /// the health checker from the service's `unhealthy_threshold`.
    passive_threshold: AtomicU32,
    /// Woken when the request path ejects the endpoint, so its health-check loop records and
    /// reports the change at once.
    ejected: tokio::sync::Notify,
}

impl Endpoint {
    /// The absolute URI of `path` on this endpoint (what a connector is given).
    pub fn uri(&self, path: PathAndQuery) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(if self.tls {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            })
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
    }

    /// A new endpoint, healthy until told otherwise.
    pub fn new(url: Arc<str>, authority: Authority) -> Self {
        Self {
            tls: url.starts_with("https://"),
            url,
            authority,
            idle: Arc::default(),
            healthy: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            passive_threshold: AtomicU32::new(0),
            ejected: tokio::sync::Notify::new(),
        }
    }

    /// Whether the endpoint takes traffic.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Marks the endpoint (un)healthy; for health checking.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Records a failed attempt (connect failure, reset, or a 5xx answer); returns how many
    /// in a row. At the passive threshold a healthy endpoint is ejected (marked unhealthy)
    /// until active checks find it healthy again. Only failures pay for the check.
    pub fn record_failure(&self) -> u32 {
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let threshold = self.passive_threshold.load(Ordering::Relaxed);
        // `swap` so that of several concurrent failures only one ejects and notifies.
        if threshold != 0 && n >= threshold && self.healthy.swap(false, Ordering::Relaxed) {
            self.ejected.notify_one();
        }
        n
    }

    /// Sets how many failures in a row eject the endpoint (0: never); for health checking.
    pub fn set_passive_threshold(&self, threshold: u32) {
        self.passive_threshold.store(threshold, Ordering::Relaxed);
    }

    /// Resolves when the request path has ejected the endpoint (at most one pending wake-up
    /// is kept, so an ejection before the call is not missed).
    pub async fn ejected(&self) {
        self.ejected.notified().await;
    }

    /// Records a successful attempt. Writes only when there was a failure streak, so the
    /// common case does not bounce the cache line between cores.
    pub fn record_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Failed attempts in a row so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }
}

/// Round robin over a fixed list of endpoints, skipping unhealthy ones.
#[derive(Debug)]
pub struct RoundRobin {
    endpoints: Arc<[Arc<Endpoint>]>,
    next: AtomicUsize,
}

impl RoundRobin {
    /// A balancer over `endpoints`, starting with the first.
    pub fn new(endpoints: Arc<[Arc<Endpoint>]>) -> Self {
        Self {
            endpoints,
            next: AtomicUsize::new(0),
        }
    }

    /// Every endpoint, healthy or not.
    pub fn endpoints(&self) -> &Arc<[Arc<Endpoint>]> {
        &self.endpoints
    }

    /// The next healthy endpoint in turn, with its index; `None` if there is none.
    pub fn pick(&self) -> Option<(usize, &Arc<Endpoint>)> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        self.first_healthy_from(start, n)
    }

    /// The first healthy endpoint after `index` (for a retry), other than `index` itself.
    pub fn after(&self, index: usize) -> Option<(usize, &Arc<Endpoint>)> {
        let n = self.endpoints.len();
        if n < 2 {
            return None;
        }
        // Advance the shared cursor too, so the retry does not make the next request pick the
        // same endpoint the retry just used.
        self.next.fetch_add(1, Ordering::Relaxed);
        self.first_healthy_from(index + 1, n - 1)
    }

    fn first_healthy_from(&self, start: usize, tries: usize) -> Option<(usize, &Arc<Endpoint>)> {
        let n = self.endpoints.len();
        (0..tries)
            .map(|i| (start + i) % n)
            .map(|i| (i, &self.endpoints[i]))
            .find(|(_, e)| e.is_healthy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(n: usize) -> Arc<[Arc<Endpoint>]> {
        (0..n)
            .map(|i| {
                let url = format!("http://127.0.0.1:{}", 8000 + i);
                let authority = url.trim_start_matches("http://").parse().unwrap();
                Arc::new(Endpoint::new(url.into(), authority))
            })
            .collect()
    }

    #[test]
    fn spreads_exactly_evenly() {
        let rr = RoundRobin::new(endpoints(3));
        let mut hits = [0; 3];
        for _ in 0..300 {
            hits[rr.pick().unwrap().0] += 1;
        }
        assert_eq!(hits, [100, 100, 100]);
    }

    #[test]
    fn skips_unhealthy_and_reports_none_when_all_down() {
        let eps = endpoints(3);
        let rr = RoundRobin::new(eps.clone());
        eps[1].set_healthy(false);
        let picks: Vec<usize> = (0..6).map(|_| rr.pick().unwrap().0).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        for e in eps.iter() {
            e.set_healthy(false);
        }
        assert!(rr.pick().is_none());
        assert!(RoundRobin::new(endpoints(0)).pick().is_none());
    }

    #[test]
    fn failure_streaks_count_and_reset() {
        let eps = endpoints(1);
        assert_eq!(eps[0].record_failure(), 1);
        assert_eq!(eps[0].record_failure(), 2);
        eps[0].record_success();
        assert_eq!(eps[0].consecutive_failures(), 0);
    }

    #[test]
    fn passive_threshold_ejects_once() {
        let eps = endpoints(1);
        eps[0].record_failure();
        eps[0].record_failure();
        assert!(eps[0].is_healthy(), "no threshold set: never ejected");
        eps[0].record_success();
        eps[0].set_passive_threshold(2);
        eps[0].record_failure();
        assert!(eps[0].is_healthy());
        eps[0].record_failure();
        assert!(!eps[0].is_healthy());
    }

    #[test]
    fn retry_goes_to_another_endpoint() {
        let eps = endpoints(3);
        let rr = RoundRobin::new(eps.clone());
        assert_eq!(rr.after(0).unwrap().0, 1);
        assert_eq!(rr.after(2).unwrap().0, 0);
        eps[1].set_healthy(false);
        assert_eq!(rr.after(0).unwrap().0, 2);
        assert!(RoundRobin::new(endpoints(1)).after(0).is_none());
    }
}
