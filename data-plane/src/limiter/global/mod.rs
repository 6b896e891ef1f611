//! GLOBAL rate-limit policies: one budget for the whole fleet, counted in Redis
//! ([`crate::limiter::redis`]), with the local state of [`lease`] in front so that rejected
//! and hot keys stay off the network.
//!
//! # The fallback
//!
//! While the store is down (or the node has no `--redis-url`), a GLOBAL policy does what its
//! `on_store_error` says, in one place ([`GlobalPolicy::check`]):
//! - `local-share` (default): this node enforces its share of the limit with the in-process
//!   buckets: limit and burst divided by the number of live data planes, rounded up (the
//!   control plane tells every node that number; see `config::gateway`). The share's buckets
//!   are the policy's `PolicyLimiter`, so they are the same ones a NODE policy would use and
//!   keep their levels across config updates; they start full when the store goes away.
//! - `allow`: every request passes (fail open).
//! - `deny`: every request gets 429 with `Retry-After: 1`.
//!
//! # Keys
//!
//! `<prefix><policy>:<limit>-<period s>-<burst>:<key>`, e.g. `gw:rl:api:5-60-5:ip:10.0.0.7`.
//! The rate is part of the name, so a new rate starts every client with a full bucket in
//! fresh keys while the old ones expire (a bucket's key expires once it would be full).
//! Header values longer than [`MAX_RAW_KEY`] bytes are replaced by their SHA-1.

pub mod lease;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::HeaderValue;
use spin::mutex::SpinMutex;
use tokio::sync::Notify;

use crate::limiter::global::lease::{KeyState, Local, Sizing};
use crate::limiter::headers;
use crate::limiter::key::{BuildFingerprintHasher, Fingerprinter};
use crate::limiter::local::PolicyLimiter;
use crate::limiter::redis::{RedisStore, ScriptRate};
use crate::limiter::spec::{Decision, LimitKey, RateSpec};
use crate::stats::PolicyStats;

/// Header values up to this many bytes are used in the Redis key as they are.
pub const MAX_RAW_KEY: usize = 128;
/// Shards of the local key state (a power of two).
const SHARDS: usize = 64;
/// How far before its creation a policy's clock starts (see `local::EPOCH_SLACK`).
const EPOCH_SLACK: Duration = Duration::from_secs(60);

/// What a GLOBAL policy does while its data plane cannot reach Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    /// Enforce this node's share of the limit.
    LocalShare,
    /// Let everything through.
    Allow,
    /// Reject everything.
    Deny,
}

/// One GLOBAL policy as the request path applies it.
pub struct GlobalPolicy {
    name: Arc<str>,
    spec: RateSpec,
    rate: ScriptRate,
    sizing: Sizing,
    /// Live data planes as the control plane last said (shared by the registry's policies).
    live: Arc<AtomicU32>,
    on_error: OnStoreError,
    store: Option<Arc<RedisStore>>,
    stats: Arc<PolicyStats>,
    /// `<prefix><policy>:<rate>:`.
    key_prefix: Box<[u8]>,
    epoch: Instant,
    fingerprinter: Fingerprinter,
    shards: Box<[SpinMutex<HashMap<u64, KeyState, BuildFingerprintHasher>>]>,
    /// Per shard: woken when a round trip for one of its keys ends (see `lease`).
    answered: Box<[Notify]>,
    tracked: AtomicUsize,
    max_keys: usize,
}

impl fmt::Debug for GlobalPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlobalPolicy")
            .field("name", &self.name)
            .field("rate", &self.spec)
            .field("on_store_error", &self.on_error)
            .field("tracked_keys", &self.tracked.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl GlobalPolicy {
    /// A policy `name` at `spec`, counted in `store` (`None`: always the fallback), keeping
    /// local state for at most `max_keys` keys; `live` is the fleet's size.
    pub fn new(
        name: Arc<str>,
        spec: RateSpec,
        on_error: OnStoreError,
        store: Option<Arc<RedisStore>>,
        stats: Arc<PolicyStats>,
        max_keys: usize,
        live: Arc<AtomicU32>,
    ) -> Self {
        let period_us = u64::try_from(spec.period.as_micros()).unwrap_or(u64::MAX);
        let token = period_us.max(1);
        let burst = spec.burst.clamp(1, u64::MAX / token);
        let prefix = store.as_ref().map_or("", |s| s.prefix());
        let key_prefix = format!(
            "{prefix}{name}:{}-{}-{}:",
            spec.limit,
            spec.period.as_secs(),
            spec.burst
        );
        let now = Instant::now();
        Self {
            rate: ScriptRate {
                per_us: spec.limit.max(1),
                token,
                cap: burst * token,
            },
            sizing: Sizing::new(&spec),
            live,
            key_prefix: key_prefix.into_bytes().into_boxed_slice(),
            name,
            spec,
            on_error,
            store,
            stats,
            epoch: now.checked_sub(EPOCH_SLACK).unwrap_or(now),
            fingerprinter: Fingerprinter::new(),
            shards: (0..SHARDS)
                .map(|_| SpinMutex::new(HashMap::default()))
                .collect(),
            answered: (0..SHARDS).map(|_| Notify::new()).collect(),
            tracked: AtomicUsize::new(0),
            max_keys,
        }
    }

    /// Whether this policy is in the same state as one built from these arguments (the
    /// registry then keeps it, with its local state).
    pub fn same(&self, spec: &RateSpec, on_error: OnStoreError) -> bool {
        self.spec == *spec && self.on_error == on_error
    }

    /// The policy name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Whether requests are decided by the fallback now (no store, or the store is down).
    pub fn degraded(&self) -> bool {
        self.store.as_ref().is_none_or(|s| !s.is_up())
    }

    /// Takes one token for `key` (a request from `client`) from the fleet's budget, or from
    /// the fallback while the store is away (`share` holds this node's share of the limit).
    /// Waits at most the store's timeout from `now`, the request's start, whether for its
    /// own round trip or for one in flight for the same key.
    pub async fn check(
        &self,
        share: &PolicyLimiter,
        key: LimitKey<'_>,
        client: IpAddr,
        now: Instant,
    ) -> Decision {
        let Some(store) = self.store.as_deref().filter(|s| s.is_up()) else {
            return self.fallback(share, key, client, now);
        };
        let fp = self.fingerprinter.fingerprint(key);
        let deadline = tokio::time::Instant::from_std(now + store.timeout());
        let mut first = true;
        let want = loop {
            let answered = &self.answered[Self::shard_index(fp)];
            let mut waiting = pin!(answered.notified());
            {
                let mut shard = self.shard(fp).lock();
                let now_us = self.micros(if first { now } else { Instant::now() });
                let state = match shard.get_mut(&fp) {
                    Some(state) => Some(state),
                    None if self.reserve_key() => {
                        Some(shard.entry(fp).or_insert(KeyState::new(now_us)))
                    }
                    // At the cap: every request of a new key goes to Redis (correct, costlier).
                    None => None,
                };
                let Some(state) = state else { break None };
                if first {
                    state.arrive(now_us);
                    first = false;
                }
                match state.local(now_us, self.sizing.max_lease) {
                    Local::Decided(d) => {
                        self.stats.local_decisions.fetch_add(1, Ordering::Relaxed);
                        return d;
                    }
                    Local::Ask(want) => break Some(want),
                    // Registered under the shard's lock, so the answer, which is written
                    // under it too, cannot be missed.
                    Local::Wait => waiting.as_mut().enable(),
                };
            }
            if tokio::time::timeout_at(deadline, waiting).await.is_err() {
                // The round trip in flight took the whole timeout: it is failing.
                return self.fallback(share, key, client, now);
            }
        };
        let redis_key = self.redis_key(key);
        self.stats.store_round_trips.fetch_add(1, Ordering::Relaxed);
        // Clears the key's round trip in flight however this ends (even if the request is
        // dropped mid-way), so that its waiters move on.
        let mut asking = want.map(|_| Asking {
            policy: self,
            fp,
            pending: true,
        });
        let result = store
            .decide_until(&redis_key, self.rate, want.unwrap_or(1), deadline)
            .await;
        match result {
            Ok(reply) => {
                let now_us = self.micros(Instant::now());
                let mut shard = self.shard(fp).lock();
                let d = match (want, shard.get_mut(&fp)) {
                    (Some(want), Some(state)) => {
                        let live = self.live.load(Ordering::Relaxed);
                        let hold = lease::hold_us(&self.sizing, &reply, want, live);
                        state.answer(now_us, &reply, want, hold)
                    }
                    _ => lease::decision(&reply),
                };
                drop(shard);
                if let Some(a) = &mut asking {
                    a.pending = false;
                }
                drop(asking);
                d
            }
            // Counted and logged by the store; this request is decided as if it were down.
            Err(_) => {
                drop(asking);
                self.fallback(share, key, client, now)
            }
        }
    }

    /// Gives back a token a later policy made useless (see `limiter::policy`).
    pub fn refund(&self, share: &PolicyLimiter, key: LimitKey<'_>, client: IpAddr, now: Instant) {
        if self.degraded() {
            if self.on_error == OnStoreError::LocalShare {
                share.refund_from(key, Some(client), now);
            }
            return;
        }
        let fp = self.fingerprinter.fingerprint(key);
        let now_us = self.micros(now);
        if let Some(state) = self.shard(fp).lock().get_mut(&fp) {
            state.refund(now_us);
        }
    }

    fn fallback(
        &self,
        share: &PolicyLimiter,
        key: LimitKey<'_>,
        client: IpAddr,
        now: Instant,
    ) -> Decision {
        match self.on_error {
            OnStoreError::LocalShare => share.check_from(key, Some(client), now),
            OnStoreError::Allow => Decision {
                allowed: true,
                remaining: self.spec.burst,
                reset_secs: 0,
                retry_after_secs: 0,
            },
            OnStoreError::Deny => Decision {
                allowed: false,
                remaining: 0,
                reset_secs: 1,
                retry_after_secs: 1,
            },
        }
    }

    /// Forgets keys with nothing pending; returns how many. Off the request path.
    pub fn sweep(&self, now: Instant) -> usize {
        let now_us = self.micros(now);
        let mut evicted = 0;
        for shard in &self.shards {
            let mut map = shard.lock();
            let before = map.len();
            map.retain(|_, state| !state.idle(now_us));
            let gone = before - map.len();
            drop(map);
            self.tracked.fetch_sub(gone, Ordering::Relaxed);
            evicted += gone;
        }
        evicted
    }

    /// The Redis key of `key` (see the module docs).
    pub fn redis_key(&self, key: LimitKey<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.key_prefix.len() + 48);
        out.extend_from_slice(&self.key_prefix);
        match key {
            LimitKey::Ip(ip) => {
                out.extend_from_slice(b"ip:");
                out.extend_from_slice(ip.to_string().as_bytes());
            }
            LimitKey::Header(None) => out.extend_from_slice(b"none"),
            LimitKey::Header(Some(v)) if v.len() <= MAX_RAW_KEY => {
                out.extend_from_slice(b"h:");
                out.extend_from_slice(v);
            }
            LimitKey::Header(Some(v)) => {
                out.extend_from_slice(b"sha1:");
                out.extend_from_slice(sha1_smol::Sha1::from(v).digest().to_string().as_bytes());
            }
            LimitKey::Consumer(None) => out.extend_from_slice(b"anon"),
            // Consumer names are DNS labels: short, no separators.
            LimitKey::Consumer(Some(name)) => {
                out.extend_from_slice(b"c:");
                out.extend_from_slice(name.as_bytes());
            }
        }
        out
    }

    fn shard(&self, fp: u64) -> &SpinMutex<HashMap<u64, KeyState, BuildFingerprintHasher>> {
        &self.shards[Self::shard_index(fp)]
    }

    fn shard_index(fp: u64) -> usize {
        // The top bits: the maps use the low ones.
        (fp >> 58) as usize & (SHARDS - 1)
    }

    fn micros(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }

    fn reserve_key(&self) -> bool {
        self.tracked
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max_keys).then_some(n + 1)
            })
            .is_ok()
    }
}

/// A key's round trip in flight; dropped without an answer (an error, or the request
/// dropped), it lets the key's next request ask and wakes the waiters.
struct Asking<'a> {
    policy: &'a GlobalPolicy,
    fp: u64,
    /// No answer was written (cleared once one is).
    pending: bool,
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        let p = self.policy;
        if self.pending
            && let Some(state) = p.shard(self.fp).lock().get_mut(&self.fp)
        {
            state.failed();
        }
        p.answered[GlobalPolicy::shard_index(self.fp)].notify_waiters();
    }
}

/// What a GLOBAL policy is built from, per config version.
#[derive(Debug, Clone)]
pub struct GlobalDef {
    /// Policy name.
    pub name: Arc<str>,
    /// The fleet's rate.
    pub rate: RateSpec,
    /// The fallback.
    pub on_error: OnStoreError,
    /// The policy's counters (kept across versions by name).
    pub stats: Arc<PolicyStats>,
}

/// The GLOBAL policies in force and the store they count in, kept across config versions.
#[derive(Debug)]
pub struct GlobalRegistry {
    store: Option<Arc<RedisStore>>,
    max_keys: usize,
    live: Arc<AtomicU32>,
    policies: Mutex<HashMap<Arc<str>, Arc<GlobalPolicy>>>,
}

impl GlobalRegistry {
    /// No policies yet; decisions go to `store` (`None`: this node has no Redis).
    pub fn new(store: Option<Arc<RedisStore>>, max_keys: usize) -> Self {
        Self {
            store,
            max_keys,
            live: Arc::new(AtomicU32::new(1)),
            policies: Mutex::default(),
        }
    }

    /// Records how many data planes are live (the over-limit cache spreads the fleet's
    /// retries over them; see `lease`).
    pub fn set_live(&self, live: u32) {
        self.live.store(live.max(1), Ordering::Relaxed);
    }

    /// The store, if this node has one.
    pub fn store(&self) -> Option<&Arc<RedisStore>> {
        self.store.as_ref()
    }

    /// One policy per definition, in order: the existing one (with its local state) when its
    /// rate and fallback are unchanged, a new one otherwise. Others are dropped. Off the
    /// request path.
    pub fn reconcile(&self, defs: &[GlobalDef]) -> Vec<Arc<GlobalPolicy>> {
        let mut policies = self.policies.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = HashMap::with_capacity(defs.len());
        let out = defs
            .iter()
            .map(|d| {
                let policy = policies
                    .get(&d.name)
                    .filter(|p| p.same(&d.rate, d.on_error))
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(GlobalPolicy::new(
                            d.name.clone(),
                            d.rate,
                            d.on_error,
                            self.store.clone(),
                            d.stats.clone(),
                            self.max_keys,
                            self.live.clone(),
                        ))
                    });
                next.insert(d.name.clone(), policy.clone());
                policy
            })
            .collect();
        *policies = next;
        out
    }

    /// Every GLOBAL policy in force, ordered by name.
    pub fn all(&self) -> Vec<Arc<GlobalPolicy>> {
        let mut all: Vec<_> = self
            .policies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}

/// The `RateLimit-Policy` value of a GLOBAL policy: the fleet's limit, not this node's share.
pub fn policy_header(name: &str, rate: &RateSpec) -> HeaderValue {
    HeaderValue::from_str(&headers::policy_item(&headers::quote(name), rate))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// This node's share of a GLOBAL policy's rate when `live` data planes split it: limit and
/// burst divided by `live`, rounded up (so that no share is 0 and the fleet's sum is at
/// least the limit).
pub fn share(rate: &RateSpec, live: u32) -> RateSpec {
    let live = u64::from(live.max(1));
    RateSpec {
        limit: rate.limit.div_ceil(live),
        period: rate.period,
        burst: rate.burst.div_ceil(live),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn shares_round_up() {
        let r = RateSpec {
            limit: 5,
            period: Duration::from_secs(60),
            burst: 10,
        };
        for (live, limit, burst) in [(0, 5, 10), (1, 5, 10), (2, 3, 5), (4, 2, 3), (50, 1, 1)] {
            let s = share(&r, live);
            assert_eq!(
                (s.limit, s.burst, s.period),
                (limit, burst, r.period),
                "{live}"
            );
        }
    }

    #[test]
    fn keys_are_namespaced_by_prefix_policy_and_rate() {
        let p = GlobalPolicy::new(
            "api".into(),
            RateSpec {
                limit: 5,
                period: Duration::from_secs(60),
                burst: 5,
            },
            OnStoreError::LocalShare,
            None,
            Arc::default(),
            10,
            Arc::default(),
        );
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        assert_eq!(p.redis_key(LimitKey::Ip(ip)), b"api:5-60-5:ip:10.0.0.7");
        assert_eq!(
            p.redis_key(LimitKey::Header(Some(b"k1"))),
            b"api:5-60-5:h:k1"
        );
        assert_eq!(p.redis_key(LimitKey::Header(None)), b"api:5-60-5:none");
        let long = p.redis_key(LimitKey::Header(Some(&[b'x'; 200])));
        assert!(long.starts_with(b"api:5-60-5:sha1:") && long.len() == 16 + 40);
    }
}
