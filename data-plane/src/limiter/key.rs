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

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;

use super::LimitKey;

/// Set on IPv4 fingerprints, clear on hashed ones, so the two kinds never meet.
const V4_TAG: u64 = 1 << 63;

/// First byte hashed for each kind of key: without it the hashed byte streams of `::1` and
/// of an empty header value are identical.
const DOMAIN_V6: u8 = 6;
const DOMAIN_HEADER: u8 = b'h';

/// Computes fingerprints for one limiter.
#[derive(Debug, Clone)]
pub(crate) struct Fingerprinter {
    sip: RandomState,
}

impl Fingerprinter {
    pub(crate) fn new() -> Self {
        Fingerprinter {
            sip: RandomState::new(),
        }
    }

    pub(crate) fn fingerprint(&self, key: LimitKey<'_>) -> u64 {
        match key {
            LimitKey::Ip(ip) => match ip.to_canonical() {
                IpAddr::V4(v4) => V4_TAG | u64::from(u32::from(v4)),
                IpAddr::V6(v6) => self.sip.hash_one((DOMAIN_V6, u128::from(v6))) & !V4_TAG,
            },
            // Hashing the Option keeps "missing" apart from "present but empty".
            LimitKey::Header(value) => self.sip.hash_one((DOMAIN_HEADER, value)) & !V4_TAG,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(fp(&f, v4), V4_TAG | 0x0a01_0203);
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
