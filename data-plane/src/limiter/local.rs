//! The in-process limiter: one set of token buckets per policy, sharded, with the key cap and
//! its overflow bucket, and the registry that keeps each policy's limiter across config
//! versions. The design (arithmetic, memory bound, concurrency) is in the [`crate::limiter`]
//! module docs.

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use spin::mutex::{SpinMutex, SpinMutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::HeaderValue;

use crate::limiter::bucket::{Bucket, Rate};
use crate::limiter::headers::{self, PolicyItems};
use crate::limiter::key::{BuildFingerprintHasher, Fingerprinter};
use crate::limiter::overflow::Overflow;
use crate::limiter::spec::{Decision, KeySpec, LimitKey, Mode, PolicyDef, RateSpec};

/// Shards per core: enough that two threads rarely want the same lock, few enough that a
/// small policy does not waste memory on empty tables.
const SHARDS_PER_CORE: usize = 4;

/// At least this many shards, whatever the core count, so that one sweep pass holds any one
/// lock for at most 1/16 of the policy's keys.
const MIN_SHARDS: usize = 16;

/// A fingerprint's shard is taken from its bits from this one up. The tables use the low bits
/// (slot) and the top 7 (tag) of the same number; starting at bit 48 leaves the shard bits
/// apart from both for any table under 2^48 slots and up to `MAX_SHARDS` shards.
const SHARD_BITS_AT: u32 = 48;

/// At most this many shards: 2^(57 - SHARD_BITS_AT), so the shard bits stop below the tag.
const MAX_SHARDS: usize = 512;

/// How far before its creation a limiter's clock starts, so that an `Instant` read by a
/// request shortly before a config update created the limiter still maps to its own time.
const EPOCH_SLACK: Duration = Duration::from_secs(60);

/// Keeps a shard (and the overflow bucket) on its own cache line so that threads locking
/// neighbouring shards do not slow each other down.
#[repr(align(128))]
struct Padded<T>(T);

/// One shard of a policy's buckets, with the rate they are refilled at.
struct Shard {
    /// Keyed by fingerprint, which is already scrambled: it is its own hash.
    buckets: HashMap<u64, Bucket, BuildFingerprintHasher>,
    rate: Rate,
}

/// Locks `m`, ignoring poisoning: the data behind these locks is a few integers that are
/// valid after any partial update, and the request path must not panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Spins on a held shard lock this many times before yielding the CPU between attempts.
const SPINS_BEFORE_YIELD: u32 = 64;

/// Locks a shard (or the overflow bucket): one compare-exchange when it is free, which is the
/// usual case (see the module docs on concurrency).
#[inline]
fn lock_shard<T>(m: &SpinMutex<T>) -> SpinMutexGuard<'_, T> {
    loop {
        if let Some(guard) = m.try_lock() {
            return guard;
        }
        wait_for_unlock(m);
    }
}

/// Waits until `m` looks free, reading it without writing (so waiters do not steal the cache
/// line from the holder): a short spin, then yielding so that a holder that was preempted on
/// a busy machine can run and finish.
#[cold]
fn wait_for_unlock<T>(m: &SpinMutex<T>) {
    for _ in 0..SPINS_BEFORE_YIELD {
        if !m.is_locked() {
            return;
        }
        std::hint::spin_loop();
    }
    while m.is_locked() {
        std::thread::yield_now();
    }
}

fn shard_count() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores * SHARDS_PER_CORE)
        .next_power_of_two()
        .clamp(MIN_SHARDS, MAX_SHARDS)
}

/// The buckets of one policy. `Send + Sync`; shared as `Arc` across config versions.
pub struct PolicyLimiter {
    name: Arc<str>,
    key: KeySpec,
    max_keys: usize,
    /// Instants are turned into microseconds since this one.
    epoch: Instant,
    fingerprinter: Fingerprinter,
    shards: Box<[Padded<SpinMutex<Shard>>]>,
    /// `shards.len() - 1`: masks the fingerprint's bits from `SHARD_BITS_AT` up.
    shard_mask: usize,
    overflow: Padded<SpinMutex<Overflow>>,
    /// Buckets in all shards; only ever raised through `reserve_key`, so it never exceeds
    /// `max_keys` and neither do the shards together.
    tracked: AtomicUsize,
    overflowed: AtomicU64,
    mode: AtomicU8,
    spec: ArcSwap<RateSpec>,
    /// Serialises rate updates (the registry already does; this keeps `update` sound alone).
    updating: Mutex<()>,
    quoted_name: Box<str>,
    /// `"name";r=`, the fixed start of every `RateLimit` item.
    rate_limit_prefix: Box<[u8]>,
    policy_items: PolicyItems,
    policy_item: AtomicUsize,
}

impl fmt::Debug for PolicyLimiter {
    // Deliberately not the buckets: there may be a million of them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyLimiter")
            .field("name", &self.name)
            .field("key", &self.key)
            .field("rate", &self.rate())
            .field("mode", &self.mode())
            .field("max_keys", &self.max_keys)
            .field("tracked_keys", &self.tracked_keys())
            .field("overflowed", &self.overflowed())
            .finish_non_exhaustive()
    }
}

impl PolicyLimiter {
    /// A limiter for `def` with no buckets, tracking at most `max_keys` keys.
    pub fn new(def: &PolicyDef, max_keys: usize) -> Self {
        Self::with_shards(def, max_keys, shard_count())
    }

    fn with_shards(def: &PolicyDef, max_keys: usize, shards: usize) -> Self {
        let shards = shards.next_power_of_two().clamp(2, MAX_SHARDS);
        let rate = Rate::new(&def.rate);
        let now = Instant::now();
        let quoted_name = headers::quote(&def.name);
        let mut rate_limit_prefix = quoted_name.clone().into_bytes();
        rate_limit_prefix.extend_from_slice(b";r=");
        PolicyLimiter {
            name: def.name.clone(),
            key: def.key.clone(),
            max_keys,
            epoch: now.checked_sub(EPOCH_SLACK).unwrap_or(now),
            fingerprinter: Fingerprinter::new(),
            shards: (0..shards)
                .map(|_| {
                    Padded(SpinMutex::new(Shard {
                        buckets: HashMap::default(),
                        rate,
                    }))
                })
                .collect(),
            shard_mask: shards - 1,
            overflow: Padded(SpinMutex::new(Overflow::new(rate, 0))),
            tracked: AtomicUsize::new(0),
            overflowed: AtomicU64::new(0),
            mode: AtomicU8::new(def.mode as u8),
            spec: ArcSwap::from_pointee(def.rate),
            updating: Mutex::new(()),
            policy_items: PolicyItems::new(headers::policy_item(&quoted_name, &def.rate)),
            policy_item: AtomicUsize::new(0),
            rate_limit_prefix: rate_limit_prefix.into_boxed_slice(),
            quoted_name: quoted_name.into_boxed_str(),
        }
    }

    /// The policy name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The policy name, shared (for an access-log record).
    pub fn shared_name(&self) -> &Arc<str> {
        &self.name
    }

    /// The key source.
    pub fn key_spec(&self) -> &KeySpec {
        &self.key
    }

    /// Current mode (may change on reconcile).
    pub fn mode(&self) -> Mode {
        Mode::from_u8(self.mode.load(Ordering::Relaxed))
    }

    /// Current rate (may change on reconcile).
    pub fn rate(&self) -> RateSpec {
        **self.spec.load()
    }

    /// The per-policy cap on tracked keys.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Takes one token for `key` if available. A rejected check takes nothing. At the key
    /// cap an IP key is charged to its network's overflow bucket, a header key to the shared
    /// one: [`Self::check_from`] tells where a header key came from.
    pub fn check(&self, key: LimitKey<'_>, now: Instant) -> Decision {
        self.check_from(key, ip_of(key), now)
    }

    /// [`Self::check`] for a request from `client`: at the key cap, a key without a bucket is
    /// charged to `client`'s network's overflow bucket (see `limiter::overflow`).
    pub fn check_from(&self, key: LimitKey<'_>, client: Option<IpAddr>, now: Instant) -> Decision {
        let fp = self.fingerprinter.fingerprint(key);
        let now_us = self.micros(now);
        {
            let mut guard = lock_shard(self.shard(fp));
            let shard = &mut *guard;
            if let Some(bucket) = shard.buckets.get_mut(&fp) {
                return bucket.take(&shard.rate, now_us);
            }
            // A lookup that misses does not reserve room (unlike `entry`), so a flood at the
            // cap cannot make the tables grow either.
            if self.reserve_key() {
                let mut bucket = Bucket::full(&shard.rate, now_us);
                let decision = bucket.take(&shard.rate, now_us);
                shard.buckets.insert(fp, bucket);
                return decision;
            }
        }
        self.overflowed.fetch_add(1, Ordering::Relaxed);
        lock_shard(&self.overflow.0).take(client, now_us)
    }

    /// What a check of `key` would decide now, without taking a token or tracking the key;
    /// `None` for a key without a bucket (never seen, or swept as full), which a check would
    /// allow. Used where a check must come before the work it limits (authentication
    /// failures: a throttled client's next guess is not even looked at) while only failures
    /// take tokens.
    pub fn peek(&self, key: LimitKey<'_>, now: Instant) -> Option<Decision> {
        let fp = self.fingerprinter.fingerprint(key);
        let now_us = self.micros(now);
        let guard = lock_shard(self.shard(fp));
        let mut copy = *guard.buckets.get(&fp)?;
        Some(copy.take(&guard.rate, now_us))
    }

    /// Gives back a token taken by `check` (a later policy rejected the same request).
    pub fn refund(&self, key: LimitKey<'_>, now: Instant) {
        self.refund_from(key, ip_of(key), now)
    }

    /// Gives back a token taken by [`Self::check_from`] for the same key and client.
    ///
    /// A key without a bucket of its own is refunded to its overflow bucket while the policy
    /// is at its cap (that is where its token came from); otherwise its bucket was evicted as
    /// full since the check and there is nothing to give back.
    pub fn refund_from(&self, key: LimitKey<'_>, client: Option<IpAddr>, now: Instant) {
        let fp = self.fingerprinter.fingerprint(key);
        let now_us = self.micros(now);
        {
            let mut guard = lock_shard(self.shard(fp));
            let shard = &mut *guard;
            if let Some(bucket) = shard.buckets.get_mut(&fp) {
                bucket.give_back(&shard.rate, now_us);
                return;
            }
        }
        if self.tracked.load(Ordering::Relaxed) >= self.max_keys {
            lock_shard(&self.overflow.0).give_back(client, now_us);
        }
    }

    /// Evicts buckets that are full and idle; returns how many (tracked keys; full network
    /// overflow buckets are forgotten too). Called periodically off the request path. Holds one shard's lock at a time; a shard left mostly empty after a flood
    /// gives its memory back.
    pub fn sweep(&self, now: Instant) -> usize {
        let now_us = self.micros(now);
        let mut evicted = 0;
        for shard in &self.shards {
            let mut guard = lock_shard(&shard.0);
            let Shard { buckets, rate } = &mut *guard;
            let before = buckets.len();
            buckets.retain(|_, bucket| !bucket.is_full_at(rate, now_us));
            let gone = before - buckets.len();
            if buckets.capacity() > 64 && buckets.len() < buckets.capacity() / 4 {
                buckets.shrink_to(buckets.len() * 2);
            }
            drop(guard);
            self.tracked.fetch_sub(gone, Ordering::Relaxed);
            evicted += gone;
        }
        lock_shard(&self.overflow.0).sweep(now_us);
        evicted
    }

    /// Buckets tracked now.
    pub fn tracked_keys(&self) -> usize {
        self.tracked.load(Ordering::Relaxed)
    }

    /// Checks that could not get a bucket of their own because the policy already tracks
    /// `max_keys` keys (and a sweep freed none); such keys share their network's overflow
    /// bucket.
    pub fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// Overflow buckets held for client networks now (at most
    /// [`crate::limiter::overflow::MAX_PREFIXES`]).
    pub fn overflow_networks(&self) -> usize {
        lock_shard(&self.overflow.0).prefixes()
    }

    /// Value for the `RateLimit-Policy` header item of this policy, e.g. `"api";q=5;w=60`.
    pub fn policy_header_item(&self) -> &str {
        self.policy_items
            .text(self.policy_item.load(Ordering::Acquire))
    }

    /// [`Self::policy_header_item`] as a header value, built once per rate (cloning it is a
    /// reference-count increment).
    pub fn policy_header_value(&self) -> HeaderValue {
        self.policy_items
            .value(self.policy_item.load(Ordering::Acquire))
            .clone()
    }

    /// Appends the `RateLimit` header item for `decision`, e.g. `"api";r=4;t=12`, to `out`
    /// (for a caller that reuses one buffer or lists several policies).
    pub fn write_rate_limit_item(&self, decision: &Decision, out: &mut Vec<u8>) {
        headers::write_rate_limit_item(&self.rate_limit_prefix, decision, out);
    }

    /// The `RateLimit` header value for `decision`, e.g. `"api";r=4;t=12`: one allocation of
    /// the exact size, integer formatting without `format!`.
    pub fn rate_limit_header(&self, decision: &Decision) -> HeaderValue {
        // Prefix, two u64s of at most 20 digits, and ";t=".
        let mut buf = Vec::with_capacity(self.rate_limit_prefix.len() + 43);
        self.write_rate_limit_item(decision, &mut buf);
        // The prefix is an sf-string (printable ASCII) and the rest digits: always valid.
        HeaderValue::from_maybe_shared(Bytes::from(buf))
            .unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// Applies a new rate and mode in place, keeping every bucket's level (see the module
    /// docs). Off the request path: locks each shard once.
    fn update(&self, spec: &RateSpec, mode: Mode) {
        let _serial = lock(&self.updating);
        self.mode.store(mode as u8, Ordering::Relaxed);
        if **self.spec.load() == *spec {
            return;
        }
        let new = Rate::new(spec);
        for shard in &self.shards {
            let mut guard = lock_shard(&shard.0);
            let shard = &mut *guard;
            let old = shard.rate;
            if old != new {
                for bucket in shard.buckets.values_mut() {
                    bucket.rescale(&old, &new);
                }
                shard.rate = new;
            }
        }
        lock_shard(&self.overflow.0).rescale(new);
        self.spec.store(Arc::new(*spec));
        let item = self
            .policy_items
            .intern(headers::policy_item(&self.quoted_name, spec));
        self.policy_item.store(item, Ordering::Release);
    }

    fn shard(&self, fp: u64) -> &SpinMutex<Shard> {
        // Fingerprints are already scrambled (see `key`); these bits are not the ones the
        // shard's table uses, so keys of one shard still spread over its slots and tags.
        let index = (fp >> SHARD_BITS_AT) as usize & self.shard_mask;
        // `index < shards.len()` since the length is `shard_mask + 1`.
        &self.shards[index].0
    }

    fn micros(&self, now: Instant) -> u64 {
        // Seconds and microseconds apart: cheaper than `as_micros`, which goes through u128.
        let since = now.saturating_duration_since(self.epoch);
        since
            .as_secs()
            .saturating_mul(1_000_000)
            .saturating_add(u64::from(since.subsec_micros()))
    }

    /// Counts one more tracked key unless the cap is reached.
    fn reserve_key(&self) -> bool {
        self.tracked
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max_keys).then_some(n + 1)
            })
            .is_ok()
    }
}

/// The client address an IP key is; a header key says nothing about its client.
fn ip_of(key: LimitKey<'_>) -> Option<IpAddr> {
    match key {
        LimitKey::Ip(ip) => Some(ip),
        LimitKey::Header(_) | LimitKey::Consumer(_) => None,
    }
}

/// Owns every policy's limiter across config versions.
#[derive(Debug)]
pub struct LimiterRegistry {
    max_keys: usize,
    shards: usize,
    limiters: Mutex<HashMap<Arc<str>, Arc<PolicyLimiter>>>,
}

impl LimiterRegistry {
    /// `max_keys`: per-policy cap on tracked keys.
    pub fn new(max_keys: usize) -> Self {
        LimiterRegistry {
            max_keys,
            shards: shard_count(),
            limiters: Mutex::new(HashMap::new()),
        }
    }

    /// Returns one limiter per definition, in order: the existing one (buckets kept) when name
    /// and key are unchanged, with rate/mode updated in place; a new one otherwise. Policies
    /// absent from `defs` are dropped. Called off the request path on each config apply.
    pub fn reconcile(&self, defs: &[PolicyDef]) -> Vec<Arc<PolicyLimiter>> {
        let mut limiters = lock(&self.limiters);
        let mut next: HashMap<Arc<str>, Arc<PolicyLimiter>> = HashMap::with_capacity(defs.len());
        let mut out = Vec::with_capacity(defs.len());
        for def in defs {
            let kept = next
                .get(&def.name)
                .or_else(|| limiters.get(&def.name))
                .filter(|limiter| limiter.key == def.key)
                .cloned();
            let limiter = match kept {
                Some(limiter) => {
                    limiter.update(&def.rate, def.mode);
                    limiter
                }
                None => Arc::new(PolicyLimiter::with_shards(def, self.max_keys, self.shards)),
            };
            next.insert(def.name.clone(), limiter.clone());
            out.push(limiter);
        }
        *limiters = next;
        out
    }

    /// Every live limiter (for metrics and the sweeper), ordered by name.
    pub fn all(&self) -> Vec<Arc<PolicyLimiter>> {
        let mut all: Vec<_> = lock(&self.limiters).values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}
