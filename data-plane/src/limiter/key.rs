//! Turning a request's [`LimitKey`] into the 64-bit fingerprint its bucket is stored under.
//!
//! Storing a fingerprint instead of the key keeps a tracked key at 8 bytes and means a request
//! whose key already has a bucket allocates nothing: the header bytes are hashed in place.
//!
//! - An IPv4 address (including an IPv4-mapped IPv6 one, which is the same client on a
//!   dual-stack listener) is stored exactly: the address with the top bit set. Two IPv4 clients
//!   never share a bucket.
//! - An IPv6 address or a header value (or its absence, which is one key of its own) is hashed
//!   with SipHash-1-3 under a random per-limiter key (std's `RandomState`), top bit cleared.
//!   SipHash is a keyed pseudo-random function, so a client cannot pick a value that lands on
//!   another client's fingerprint without knowing the key. By chance, with `n` keys tracked a
//!   new key collides with one of them with probability `n / 2^63` (about 1e-13 at a million
//!   keys); the colliding clients would then share one bucket, which makes the limit stricter
//!   for them, never looser.
//!
//! Either value is then passed through a keyed bijection of the 64-bit space (xor with a
//! per-limiter random seed, multiplication by an odd constant, xor-shift), which keeps distinct
//! keys distinct (IPv4 clients still never share a bucket) and spreads even sequential
//! addresses over all 64 bits. The bucket tables can then use the fingerprint as its own hash
//! ([`FingerprintHasher`]) and the shard can be taken from bits the tables do not use, instead
//! of hashing an already mixed number again on every decision.

use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::net::IpAddr;

use crate::limiter::spec::LimitKey;

/// Set on IPv4 fingerprints, clear on hashed ones, so the two kinds never meet.
const V4_TAG: u64 = 1 << 63;

/// First byte hashed for each kind of key: without it the hashed byte streams of `::1` and
/// of an empty header value are identical.
const DOMAIN_V6: u8 = 6;
const DOMAIN_HEADER: u8 = b'h';
const DOMAIN_NO_HEADER: u8 = b'n';
const DOMAIN_CONSUMER: u8 = b'c';
const DOMAIN_NO_CONSUMER: u8 = b'a';

/// Odd, so multiplying by it is a bijection of the 64-bit integers (2^64 / golden ratio).
const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// Computes fingerprints for one limiter.
#[derive(Debug, Clone)]
pub(crate) struct Fingerprinter {
    sip: RandomState,
    /// Keys the final bijection, so that which addresses share a table slot or a shard is
    /// not the same, and not predictable, from one limiter or process to the next.
    seed: u64,
}

impl Fingerprinter {
    pub(crate) fn new() -> Self {
        Fingerprinter {
            sip: RandomState::new(),
            seed: rand::random(),
        }
    }

    #[inline]
    pub(crate) fn fingerprint(&self, key: LimitKey<'_>) -> u64 {
        self.scramble(Self::raw(&self.sip, key))
    }

    /// The exact (IPv4) or hashed value, before scrambling.
    #[inline]
    fn raw(sip: &RandomState, key: LimitKey<'_>) -> u64 {
        match key {
            LimitKey::Ip(ip) => match ip.to_canonical() {
                IpAddr::V4(v4) => V4_TAG | u64::from(u32::from(v4)),
                IpAddr::V6(v6) => sip.hash_one((DOMAIN_V6, u128::from(v6))) & !V4_TAG,
            },
            // Its own domain byte keeps "missing" apart from "present but empty". A present
            // value is the only variable-length field and comes last, so it needs no length
            // prefix (SipHash mixes the total length in anyway): two writes, not four.
            LimitKey::Header(None) => sip.hash_one(DOMAIN_NO_HEADER) & !V4_TAG,
            LimitKey::Header(Some(value)) => {
                let mut h = sip.build_hasher();
                h.write_u8(DOMAIN_HEADER);
                h.write(value);
                h.finish() & !V4_TAG
            }
            LimitKey::Consumer(None) => sip.hash_one(DOMAIN_NO_CONSUMER) & !V4_TAG,
            LimitKey::Consumer(Some(name)) => {
                let mut h = sip.build_hasher();
                h.write_u8(DOMAIN_CONSUMER);
                h.write(name.as_bytes());
                h.finish() & !V4_TAG
            }
        }
    }

    /// A bijection: every step (xor with a constant, multiplication by an odd number, xor of
    /// the high half into the low half) can be undone, so distinct inputs stay distinct.
    #[inline]
    fn scramble(&self, raw: u64) -> u64 {
        let x = (raw ^ self.seed).wrapping_mul(MIX);
        x ^ (x >> 32)
    }
}

/// A `Hasher` for fingerprints, which are already scrambled: hashing one returns it as is.
/// (Anything else is folded in byte by byte; the tables only ever hash `u64` keys.)
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(MIX);
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Builds [`FingerprintHasher`]s for the bucket tables.
pub(crate) type BuildFingerprintHasher = BuildHasherDefault<FingerprintHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Undoes `scramble`, showing it is a bijection (no two keys can share a fingerprint).
    fn unscramble(f: &Fingerprinter, fp: u64) -> u64 {
        let x = fp ^ (fp >> 32);
        // The inverse of an odd number modulo 2^64, by Newton's iteration.
        let mut inv = MIX;
        for _ in 0..6 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(MIX.wrapping_mul(inv)));
        }
        x.wrapping_mul(inv) ^ f.seed
    }

    #[test]
    fn scrambling_is_reversible_and_keyed() {
        let f = Fingerprinter::new();
        for raw in [
            0,
            1,
            2,
            V4_TAG,
            V4_TAG | 0x0a00_0001,
            u64::MAX,
            0x1234_5678_9abc_def0,
        ] {
            assert_eq!(unscramble(&f, f.scramble(raw)), raw, "{raw:x}");
        }
        let g = Fingerprinter::new();
        let key = LimitKey::Ip("10.0.0.1".parse().unwrap());
        assert_ne!(f.fingerprint(key), g.fingerprint(key), "seeded per limiter");
    }

    /// Fingerprints of `n` IPv4 addresses `first + i * step`, and how many distinct table
    /// slots (the low bits, in a table of `n` slots) they land in.
    fn spread(f: &Fingerprinter, n: u32, first: u32, step: u32) -> (Vec<u64>, usize) {
        let fps: Vec<u64> = (0..n)
            .map(|i| f.fingerprint(LimitKey::Ip(IpAddr::from((first + i * step).to_be_bytes()))))
            .collect();
        let slots: HashSet<u64> = fps.iter().map(|fp| fp & u64::from(n - 1)).collect();
        (fps, slots.len())
    }

    #[test]
    fn sequential_ipv4_spread_over_table_slots_and_tags() {
        // What the tables use of the hash: low bits for the slot, top 7 bits for the tag.
        let f = Fingerprinter::new();
        let n = 1u32 << 12;
        let (fps, slots) = spread(&f, n, 0x0a00_0000, 1);
        assert!(slots > (n as usize) / 2, "{slots} low-bit slots");
        let tags: HashSet<u64> = fps.iter().map(|fp| fp >> 57).collect();
        assert_eq!(tags.len(), 128);
        // Addresses that differ only in their high bytes (one per /16) must spread too.
        let (_, slots) = spread(&f, n, 0, 1 << 16);
        assert!(slots > (n as usize) / 2, "{slots} low-bit slots");
    }

    #[test]
    fn fingerprint_hasher_is_the_identity_on_u64() {
        let b = BuildFingerprintHasher::default();
        for n in [0, 1, u64::MAX, 0xdead_beef] {
            assert_eq!(b.hash_one(n), n);
        }
    }

    fn fp(f: &Fingerprinter, key: LimitKey<'_>) -> u64 {
        f.fingerprint(key)
    }

    #[test]
    fn distinct_keys_get_distinct_fingerprints() {
        let f = Fingerprinter::new();
        let ip = |s: &str| LimitKey::Ip(s.parse().unwrap());
        let keys = [
            ip("127.0.0.1"),
            ip("127.0.0.2"),
            ip("0.0.0.0"),
            ip("::1"),
            ip("::"),
            ip("2001:db8::1"),
            ip("::7f00:1"), // IPv4-compatible (deprecated), not mapped: an IPv6 client
            LimitKey::Header(None),
            LimitKey::Header(Some(b"")),
            LimitKey::Header(Some(b"key-a")),
            LimitKey::Header(Some(b"key-b")),
        ];
        let fps: Vec<u64> = keys.iter().map(|k| fp(&f, *k)).collect();
        let mut sorted = fps.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), keys.len(), "{keys:?} -> {fps:x?}");
    }

    #[test]
    fn same_key_same_fingerprint_and_mapped_v4_is_v4() {
        let f = Fingerprinter::new();
        let v4 = LimitKey::Ip("10.1.2.3".parse().unwrap());
        let mapped = LimitKey::Ip("::ffff:10.1.2.3".parse().unwrap());
        assert_eq!(fp(&f, v4), fp(&f, mapped));
        assert_eq!(Fingerprinter::raw(&f.sip, v4), V4_TAG | 0x0a01_0203);
        let owned = b"abc".to_vec();
        assert_eq!(
            fp(&f, LimitKey::Header(Some(b"abc"))),
            fp(&f, LimitKey::Header(Some(&owned)))
        );
        assert_eq!(
            fp(&f, LimitKey::Header(None)),
            fp(&f, LimitKey::Header(None))
        );
    }
}
