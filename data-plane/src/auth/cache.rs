//! A bounded cache of verified tokens, so a client that sends the same JWT on every request
//! pays for the signature once. bench/RESULTS.md (JWT section) has the numbers that decided
//! it: a hit costs a fraction of a microsecond, a signature check tens of microseconds (ES256,
//! EdDSA, RS256), more than the whole proxied request.
//!
//! Safety: an entry is found by a keyed hash of the token but only used when the whole token
//! matches byte for byte, so a hash collision can cost a verification, never admit a forged
//! token. Only accepted tokens are stored, with their `exp` and `nbf`, which every hit checks
//! again against the caller's clock; the caller also checks the entry is still current (a
//! JWKS key set that changed since). Entries live no longer than the config version: the
//! verifier owning the cache is rebuilt with each.
//!
//! Bounded: [`SHARDS`] maps of at most `capacity / SHARDS` entries each. A full shard first
//! drops its expired entries, then an arbitrary one; no per-hit bookkeeping (an LRU list
//! would take a write on every hit).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};

/// Shards, so that concurrent hits on two cores rarely meet on one lock.
pub const SHARDS: usize = 16;

/// Verified tokens and what verification concluded (`V`), bounded.
#[derive(Debug)]
pub struct TokenCache<V> {
    shards: Box<[Shard<V>]>,
    per_shard: usize,
    hasher: RandomState,
}

/// Entries by the token's hash.
type Shard<V> = Mutex<HashMap<u64, Entry<V>>>;

#[derive(Debug)]
struct Entry<V> {
    token: Box<str>,
    value: V,
    /// Seconds since the epoch: the entry is used while `now < expires` and `now >= valid_from`.
    expires: f64,
    valid_from: f64,
}

impl<V> TokenCache<V> {
    /// A cache of about `capacity` tokens (rounded up to a multiple of [`SHARDS`]).
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, token: &str) -> (u64, &Shard<V>) {
        let hash = self.hasher.hash_one(token);
        (hash, &self.shards[(hash as usize) % SHARDS])
    }

    /// `use_entry`'s answer for `token` if it is cached and within its validity at `now`
    /// (seconds since the epoch). `use_entry` returning `None` (stale) drops the entry.
    pub fn get<R>(
        &self,
        token: &str,
        now: f64,
        use_entry: impl FnOnce(&V) -> Option<R>,
    ) -> Option<R> {
        let (hash, shard) = self.shard(token);
        let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = map.get(&hash)?;
        if *entry.token != *token || now < entry.valid_from {
            return None;
        }
        let answer = if now < entry.expires {
            use_entry(&entry.value)
        } else {
            None
        };
        if answer.is_none() {
            map.remove(&hash);
        }
        answer
    }

    /// Remembers `token`, valid from `valid_from` until `expires`; `now` tells which entries
    /// have expired when room is needed (all seconds since the epoch).
    pub fn insert(&self, token: &str, value: V, now: f64, valid_from: f64, expires: f64) {
        let (hash, shard) = self.shard(token);
        let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= self.per_shard && !map.contains_key(&hash) {
            map.retain(|_, e| e.expires > now);
            if map.len() >= self.per_shard
                && let Some(&victim) = map.keys().next()
            {
                map.remove(&victim);
            }
        }
        map.insert(
            hash,
            Entry {
                token: token.into(),
                value,
                expires,
                valid_from,
            },
        );
    }

    /// Entries held, all shards together.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hit_needs_the_same_token_and_a_time_within_its_validity() {
        let cache = TokenCache::new(100);
        cache.insert("tok-a", 1, 150.0, 100.0, 200.0);
        let get = |t: &str, now: f64| cache.get(t, now, |v| Some(*v));
        assert_eq!(get("tok-a", 150.0), Some(1));
        assert_eq!(get("tok-b", 150.0), None);
        assert_eq!(get("tok-a", 99.0), None);
        assert_eq!(
            get("tok-a", 150.0),
            Some(1),
            "an early check does not drop it"
        );
        assert_eq!(get("tok-a", 200.0), None);
        assert_eq!(get("tok-a", 150.0), None, "an expired entry is dropped");
        cache.insert("tok-c", 3, 150.0, 100.0, 200.0);
        assert_eq!(cache.get("tok-c", 150.0, |_| None::<u8>), None);
        assert!(cache.is_empty(), "a stale entry is dropped");
    }

    #[test]
    fn it_stays_bounded_dropping_expired_entries_first() {
        let cache = TokenCache::new(SHARDS * 4);
        for i in 0..10_000 {
            cache.insert(&format!("token-{i}"), i, 0.0, 0.0, 1e9);
            assert!(cache.len() <= SHARDS * 4);
        }
        // Short-lived entries make room for new ones once expired, keeping the long-lived.
        let cache = TokenCache::new(SHARDS);
        let (mut long, mut short) = (Vec::new(), Vec::new());
        for i in 0..200 {
            let t = format!("t{i}");
            let (hash, _) = cache.shard(&t);
            let shard = hash as usize % SHARDS;
            if shard == 0 && long.is_empty() {
                long.push(t);
            } else if shard == 0 && short.is_empty() {
                short.push(t);
            }
        }
        // One slot per shard: the second token of shard 0 must evict; the expired one goes.
        let (long, short) = (&long[0], &short[0]);
        cache.insert(short, 1, 5.0, 0.0, 10.0);
        cache.insert(long, 2, 20.0, 20.0, 1e9);
        assert_eq!(cache.get(long, 30.0, |v| Some(*v)), Some(2));
        assert_eq!(cache.get(short, 5.0, |v| Some(*v)), None);
    }
}
