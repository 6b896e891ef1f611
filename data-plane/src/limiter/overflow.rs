//! Where a policy at its key cap charges keys it does not track: one overflow bucket per
//! client network (IPv4 /24, IPv6 /64), at most [`MAX_PREFIXES`] of them, then one bucket
//! shared by everything else.
//!
//! With a single shared overflow bucket, one client sending a new header value (or, over
//! IPv6, from a new address of its /64) on every request drained it, and every new client of
//! the policy was rejected until a sweep freed room: a flood from one network locked out the
//! legitimate newcomers of all the others. Keyed by the client's network, the flood drains only
//! its own network's bucket. The networks are the ones a single party usually holds (a
//! home or office IPv4 /24 behind NAT, the /64 an IPv6 site is given), so a bucket stands for
//! roughly one source; the same key cap logic then holds per source instead of for everyone.
//!
//! The trade-off, with the numbers that decided it:
//! - **Memory** stays bounded: at most 1,024 network buckets per policy (about 40 KiB,
//!   allocated only once the policy is at its cap), and full ones are swept like any bucket.
//! - **Leniency** under a distributed flood: each new network starts with a full bucket, so
//!   while the map fills, up to 1,024 × burst requests more than the single shared bucket
//!   allowed get through; once it is full, every further network shares the last bucket, as
//!   before. The cap exists to bound memory, not to be the limit; 1,024 networks keeps the
//!   extra admission to what a policy grants 1,024 tracked clients anyway.
//! - **Neighbours**: a legitimate new client in the flooding /24 (or /64) shares its bucket
//!   and is limited with it; clients already tracked are never affected.
//! - Requests whose client address is not known to the caller use the shared bucket.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::limiter::bucket::{Bucket, Rate};
use crate::limiter::spec::Decision;

/// Most network buckets per policy (see the module docs for why this number).
pub const MAX_PREFIXES: usize = 1024;

/// A client's network: an IPv4 /24 or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Prefix {
    V4([u8; 3]),
    V6(u64),
}

impl Prefix {
    fn of(ip: IpAddr) -> Self {
        // An IPv4 client of a dual-stack listener (::ffff:a.b.c.d) is an IPv4 client.
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                Prefix::V4([a, b, c])
            }
            IpAddr::V6(v6) => Prefix::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

/// A policy's overflow buckets, behind the policy's overflow lock.
pub struct Overflow {
    rate: Rate,
    shared: Bucket,
    /// Keyed with std's randomly seeded SipHash: the networks are chosen by clients.
    by_prefix: HashMap<Prefix, Bucket>,
}

impl Overflow {
    /// Empty, refilled at `rate`.
    pub fn new(rate: Rate, now_us: u64) -> Self {
        Self {
            rate,
            shared: Bucket::full(&rate, now_us),
            by_prefix: HashMap::new(),
        }
    }

    /// Takes a token from `client`'s network bucket (created full while there is room), or
    /// from the shared one.
    pub fn take(&mut self, client: Option<IpAddr>, now_us: u64) -> Decision {
        let rate = self.rate;
        if let Some(prefix) = client.map(Prefix::of) {
            // `entry` would reserve room even when the map is full; a miss must not grow it.
            if self.by_prefix.len() < MAX_PREFIXES && !self.by_prefix.contains_key(&prefix) {
                self.by_prefix.insert(prefix, Bucket::full(&rate, now_us));
            }
            if let Some(bucket) = self.by_prefix.get_mut(&prefix) {
                return bucket.take(&rate, now_us);
            }
        }
        self.shared.take(&rate, now_us)
    }

    /// Gives a token back to the bucket [`Self::take`] would use now.
    pub fn give_back(&mut self, client: Option<IpAddr>, now_us: u64) {
        let rate = self.rate;
        let bucket = client
            .map(Prefix::of)
            .and_then(|p| self.by_prefix.get_mut(&p))
            .unwrap_or(&mut self.shared);
        bucket.give_back(&rate, now_us);
    }

    /// Forgets network buckets that are full again; returns how many.
    pub fn sweep(&mut self, now_us: u64) -> usize {
        let rate = self.rate;
        let before = self.by_prefix.len();
        self.by_prefix.retain(|_, b| !b.is_full_at(&rate, now_us));
        if self.by_prefix.is_empty() {
            // The flood is over: give the table's memory back.
            self.by_prefix = HashMap::new();
        }
        before - self.by_prefix.len()
    }

    /// Applies a new rate, keeping every bucket's level (see the limiter's docs).
    pub fn rescale(&mut self, new: Rate) {
        let old = self.rate;
        self.shared.rescale(&old, &new);
        for bucket in self.by_prefix.values_mut() {
            bucket.rescale(&old, &new);
        }
        self.rate = new;
    }

    /// Network buckets held now.
    pub fn prefixes(&self) -> usize {
        self.by_prefix.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::spec::RateSpec;
    use std::time::Duration;

    fn rate(burst: u64) -> Rate {
        Rate::new(&RateSpec {
            limit: burst,
            period: Duration::from_secs(60),
            burst,
        })
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn networks_are_ipv4_slash_24_and_ipv6_slash_64() {
        let same = [
            ("10.1.2.3", "10.1.2.250"),
            ("2001:db8:0:1::1", "2001:db8:0:1:ffff::9"),
            ("::ffff:10.1.2.3", "10.1.2.4"),
        ];
        for (a, b) in same {
            assert_eq!(
                Prefix::of(ip(a).unwrap()),
                Prefix::of(ip(b).unwrap()),
                "{a} {b}"
            );
        }
        let apart = [
            ("10.1.2.3", "10.1.3.3"),
            ("2001:db8:0:1::1", "2001:db8:0:2::1"),
            ("0.0.0.1", "::1"),
        ];
        for (a, b) in apart {
            assert_ne!(
                Prefix::of(ip(a).unwrap()),
                Prefix::of(ip(b).unwrap()),
                "{a} {b}"
            );
        }
    }

    #[test]
    fn a_drained_network_leaves_the_others_their_own_bucket() {
        let mut o = Overflow::new(rate(3), 0);
        let taken = (0..10)
            .filter(|_| o.take(ip("10.0.0.7"), 0).allowed)
            .count();
        assert_eq!(taken, 3, "the flooding /24 gets one burst");
        assert!(
            o.take(ip("10.0.1.7"), 0).allowed,
            "another /24 is not locked out"
        );
        assert!(o.take(ip("2001:db8::1"), 0).allowed);
        assert!(
            o.take(None, 0).allowed,
            "unknown clients share the last bucket"
        );
        assert_eq!(o.prefixes(), 3);
        // A refund goes back where the token came from.
        o.give_back(ip("10.0.0.8"), 0);
        assert!(o.take(ip("10.0.0.9"), 0).allowed);
        assert!(!o.take(ip("10.0.0.9"), 0).allowed);
    }

    #[test]
    fn the_network_buckets_are_bounded_then_one_bucket_is_shared() {
        let mut o = Overflow::new(rate(2), 0);
        for n in 0..MAX_PREFIXES as u32 + 500 {
            let v4 = std::net::Ipv4Addr::from(n << 8);
            o.take(Some(IpAddr::V4(v4)), 0);
        }
        assert_eq!(o.prefixes(), MAX_PREFIXES);
        let capacity = o.by_prefix.capacity();
        // Past the bound, new networks share one bucket: 2 tokens for all of them.
        let past = (0..10u32)
            .filter(|n| {
                let v4 = std::net::Ipv4Addr::from((200_000 + n) << 8);
                o.take(Some(IpAddr::V4(v4)), 0).allowed
            })
            .count();
        assert_eq!(
            past, 0,
            "the 500 networks past the bound drained the shared bucket"
        );
        assert_eq!(o.prefixes(), MAX_PREFIXES);
        assert_eq!(
            o.by_prefix.capacity(),
            capacity,
            "misses at the bound never grow it"
        );
    }

    #[test]
    fn sweep_forgets_refilled_networks_and_rescale_keeps_levels() {
        let mut o = Overflow::new(rate(2), 0);
        o.take(ip("10.0.0.1"), 0);
        o.take(ip("10.0.1.1"), 0);
        o.take(ip("10.0.1.1"), 0);
        assert_eq!(o.sweep(0), 0, "drained buckets carry information");
        // One token per 30 s: after 30 s the first is full again, the second is not.
        assert_eq!(o.sweep(30_000_000), 1);
        assert_eq!(o.prefixes(), 1);
        // At 4 a minute, the 30 s since its last refill are worth 2 tokens (it held none).
        o.rescale(rate(4));
        let taken = (0..5)
            .filter(|_| o.take(ip("10.0.1.1"), 30_000_000).allowed)
            .count();
        assert_eq!(taken, 2);
        assert_eq!(o.sweep(u64::MAX / 4), 1);
        assert_eq!(o.prefixes(), 0);
    }
}
