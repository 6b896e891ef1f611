//! The gateway's shared state: the config in force, what compilation reuses across versions,
//! and the counters. Implements [`ConfigSink`], the seam through which config sync (and the
//! start-up cache load) installs new versions.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwapOption;
use gw_proto::v1 as pb;

use crate::config::snapshot::{self, Reuse, Snapshot};
use crate::config::sync::{ConfigSink, SyncStatus};
use crate::limiter::LimiterRegistry;
use crate::stats::GlobalStats;

/// State shared by the request path, the admin listener and config sync.
#[derive(Debug)]
pub struct Gateway {
    /// The config in force; `None` until the first one arrives.
    pub current: ArcSwapOption<Snapshot>,
    /// Long-lived pieces compilation reuses (endpoints, clients, stats, limiters).
    pub reuse: Reuse,
    /// Counters not tied to a service.
    pub global: GlobalStats,
    /// Control-plane connection state.
    pub sync: Arc<SyncStatus>,
    /// The HTTPS listener's certificate resolver; each applied version installs its table.
    pub certificates: Arc<crate::tls::Resolver>,
    /// Serializes applies, so two versions never compile against the same reuse state at once.
    apply_lock: Mutex<()>,
}

impl Gateway {
    /// Empty state: no config yet.
    pub fn new(rate_limit_max_keys: usize, sync: Arc<SyncStatus>) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            reuse: Reuse {
                defaults: Default::default(),
                endpoints: Default::default(),
                clients: Default::default(),
                tls_configs: Default::default(),
                service_stats: Default::default(),
                policy_stats: Default::default(),
                limiters: LimiterRegistry::new(rate_limit_max_keys),
            },
            global: GlobalStats::default(),
            sync,
            certificates: Arc::default(),
            apply_lock: Mutex::new(()),
        }
    }

    /// Whether a config (live or cached) is loaded.
    pub fn is_ready(&self) -> bool {
        self.current.load().is_some()
    }
}

impl ConfigSink for Gateway {
    fn apply(&self, version: u64, snapshot: &pb::ConfigSnapshot) -> Result<(), String> {
        let _serial = self
            .apply_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match snapshot::compile(version, snapshot, &self.reuse) {
            Ok(compiled) => {
                self.certificates.install(compiled.certificates.clone());
                self.current.store(Some(Arc::new(compiled)));
                self.sync.version.store(version, Ordering::Relaxed);
                tracing::info!(
                    version,
                    services = snapshot.services.len(),
                    policies = snapshot.policies.len(),
                    "config applied"
                );
                Ok(())
            }
            Err(reason) => {
                self.global.config_rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(version, %reason, "config rejected; the previous one stays in force");
                Err(reason)
            }
        }
    }
}
