//! The gateway's shared state: the config in force, what compilation reuses across versions,
//! and the counters. Implements [`ConfigSink`], the seam through which config sync (and the
//! start-up cache load) installs new versions.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwapOption;
use gw_proto::v1 as pb;

use crate::auth::FailureLimiter;
use crate::config::snapshot::{self, Reuse, Snapshot};
use crate::config::sync::{ConfigSink, SyncStatus};
use crate::limiter::LimiterRegistry;
use crate::limiter::global::GlobalRegistry;
use crate::limiter::redis::RedisStore;
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
    /// Failed authentications per client address (see `auth`); `serve` sets its rate.
    pub auth_failures: FailureLimiter,
    /// Serializes applies, so two versions never compile against the same reuse state at once.
    apply_lock: Mutex<()>,
}

impl Gateway {
    /// Empty state: no config yet, no Redis (GLOBAL policies use their fallback).
    pub fn new(rate_limit_max_keys: usize, sync: Arc<SyncStatus>) -> Self {
        Self::with_store(rate_limit_max_keys, sync, None)
    }

    /// Empty state, counting GLOBAL policies in `store`.
    pub fn with_store(
        rate_limit_max_keys: usize,
        sync: Arc<SyncStatus>,
        store: Option<Arc<RedisStore>>,
    ) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            reuse: Reuse {
                defaults: Default::default(),
                endpoints: Default::default(),
                clients: Default::default(),
                tls_configs: Default::default(),
                service_stats: Default::default(),
                policy_stats: Default::default(),
                consumer_stats: Default::default(),
                limiters: LimiterRegistry::new(rate_limit_max_keys),
                globals: GlobalRegistry::new(store, rate_limit_max_keys),
                live_data_planes: std::sync::atomic::AtomicU32::new(1),
                jwks: Default::default(),
                jwks_tls: None,
            },
            global: GlobalStats::default(),
            sync,
            certificates: Arc::default(),
            auth_failures: FailureLimiter::new(
                crate::auth::DEFAULT_AUTH_FAILURE_LIMIT,
                crate::auth::DEFAULT_AUTH_FAILURE_PERIOD,
                rate_limit_max_keys,
            ),
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

    fn fleet(&self, live_data_planes: u32) {
        let _serial = self
            .apply_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let live = live_data_planes.max(1);
        let old = self.reuse.live_data_planes.swap(live, Ordering::Relaxed);
        self.reuse.globals.set_live(live);
        if old == live {
            return;
        }
        tracing::info!(
            live_data_planes = live,
            "fleet size changed; GLOBAL policies' local shares follow"
        );
        // The config in force keeps its limiters; only the shares' rates change (in place,
        // keeping every bucket's level).
        if let Some(snap) = self.current.load_full() {
            self.reuse
                .limiters
                .reconcile(&self.reuse.limiter_defs(&snap.policies));
        }
    }
}
