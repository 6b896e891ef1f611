//! Rate limiting: in-memory token buckets, one set per rate-limit policy, and for GLOBAL
//! policies a budget shared by the fleet in Redis (`global`, `redis`; their docs say how,
//! and what happens when Redis is away). The request path reaches both through
//! `policy::check`, where a policy's `Counter` picks one.
//!
//! SEAM (agreed interface between the limiter and the request path; do not change without
//! telling the lead): `RateSpec`, `KeySpec`, `LimitKey`, `Decision`, `PolicyLimiter`,
//! `LimiterRegistry`, `PolicyDef`, `Mode`.
//!
//! # How a policy limits
//!
//! Each (policy, client key) pair has a token bucket holding up to `burst` tokens and refilled
//! at `limit` tokens per `period`. There is no timer per bucket: a bucket is a level and a
//! timestamp, and it is refilled from the elapsed time whenever it is touched. A request takes
//! one token if at least one is there; otherwise it is rejected and takes nothing. The
//! arithmetic is exact integers (see `bucket`): after exactly one period an empty bucket holds
//! exactly `limit` tokens (capped at `burst`). A client never seen before starts full.
//!
//! Clients are keyed by IP address or by the value of a request header; all requests without
//! the header share one bucket. Keys are stored as 64-bit fingerprints (see `key`): IPv4
//! addresses exactly, IPv6 addresses and header values through a keyed SipHash.
//!
//! # Rate changes
//!
//! A config update that keeps a policy's name and key source keeps its limiter and every
//! bucket in it; a new limit, period, burst or mode takes effect at once. A bucket keeps its
//! level (in whole and fractional tokens) and is clamped to the new burst, so a tighter limit
//! does not hand every client a fresh full bucket, and a looser one does not reset anyone.
//! Time that passed since a bucket was last touched is credited at the new rate. Only the rate
//! is shared per policy; buckets hold no copy of it, so a new limit or burst costs one lock of
//! each shard, and a new period one pass over the buckets to re-express their levels (off the
//! request path, during config apply). A new name or a changed key source starts a new, empty
//! limiter; a policy no longer configured is dropped.
//!
//! # Memory bound
//!
//! A full bucket carries no information (a new client starts full anyway), so the periodic
//! sweep (`PolicyLimiter::sweep`) evicts every bucket that would be full if refilled now.
//!
//! Each policy also tracks at most `max_keys` keys (`--rate-limit-max-keys`, default
//! 1,000,000; a tracked key costs about 40 to 55 bytes, measured by `benches/limiter.rs`).
//! When a request arrives with a key the policy does not track and the policy is at its cap,
//! no bucket is created and no other client's bucket is evicted: the request is charged
//! against an **overflow bucket**, with the policy's own limit and burst: the one of its
//! client's network (IPv4 /24, IPv6 /64; at most 1,024 of them, then one shared by the rest;
//! see `overflow` for the trade-off and its numbers). A flood of distinct keys from one
//! network is thus limited together as if it came from one client, a newcomer from another
//! network is not locked out by it, and the clients already tracked keep their own buckets
//! and are not affected. Each such check is counted (`PolicyLimiter::overflowed`, exported as
//! the metric `gw_rate_limit_overflow_total`); once a sweep has evicted full buckets, new keys
//! get buckets of their own again (and full network buckets are forgotten). A refund for a key
//! without a bucket goes to its overflow bucket while the policy is at its cap.
//!
//! # Concurrency
//!
//! The buckets of a policy are split over a power-of-two number of shards (at least four per
//! core, at most 512), each a locked `HashMap` on its own cache line, chosen by the key's
//! fingerprint; a check locks one shard for a few arithmetic operations. The compiled rate is
//! copied into every shard so that a check reads it under the lock it already holds. The key
//! cap is one atomic counter that is only touched when a key is added or evicted.
//!
//! The shard locks are spin locks (`spin::mutex::SpinMutex`) with a backoff that yields the
//! CPU (`lock_shard`): taking one is one atomic compare-exchange and releasing it a plain
//! store, where `std::sync::Mutex` also needs an atomic swap on release (to find sleepers to
//! wake) and poisoning checks, together about a third of an uncontended decision. A shard is
//! held for a lookup and a few integer operations, so a waiter almost always finds it free
//! within a few spins. The long holds (a shard's table growing, a sweep or a rate change
//! walking one shard) are rare and off the hot path; a waiter then yields its core at each
//! attempt rather than sleeping in the kernel until woken.

mod bucket;
pub mod global;
mod headers;
mod key;
mod local;
mod overflow;
pub mod policy;
pub mod redis;
mod spec;

pub use local::{LimiterRegistry, PolicyLimiter};
pub use spec::{Decision, KeySpec, LimitKey, Mode, PolicyDef, RateSpec};
