//! The consumers a config version knows, compiled for the request path: an immutable map
//! from the SHA-256 of an API key to the consumer it belongs to.
//!
//! A presented key is checked with one SHA-256 and one lookup, allocating nothing. The map
//! is keyed by the digest itself and hashed by [`DigestHasher`], which takes the digest's
//! first 8 bytes as the hash: SHA-256 output is already uniform, and a client cannot steer it
//! (that would take a preimage), so there is nothing to gain from hashing it again and no way
//! to flood one bucket. The lookup compares digests, not keys, so its timing tells a client
//! nothing about a stored key either.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use gw_proto::v1 as pb;
use http::HeaderValue;
use sha2::{Digest, Sha256};

use crate::stats::{ConsumerStats, Registry};

/// An authenticated consumer, with the headers upstreams receive already built.
#[derive(Debug)]
pub struct Identity {
    /// The consumer's name.
    pub name: Arc<str>,
    /// Its groups, ordered.
    pub groups: Box<[Arc<str>]>,
    /// `X-Consumer-Name`.
    pub name_header: HeaderValue,
    /// `X-Consumer-Groups` (comma-separated); `None` for a consumer in no group.
    pub groups_header: Option<HeaderValue>,
    /// Its traffic counters, kept across config versions by name.
    pub stats: Arc<ConsumerStats>,
}

/// One stored key.
#[derive(Debug)]
pub struct KeyEntry {
    /// Whose key it is.
    pub consumer: Arc<Identity>,
    /// When it stops working (seconds since the Unix epoch); `None`: never.
    pub expires: Option<u64>,
}

/// What a presented key turned out to be.
#[derive(Debug)]
pub enum KeyCheck<'a> {
    /// A key of this consumer, in force.
    Valid(&'a Arc<Identity>),
    /// A key that expired.
    Expired(&'a Arc<Identity>),
    /// No such key.
    Unknown,
}

/// Every API key of a config version, by the SHA-256 of the key.
#[derive(Debug, Default)]
pub struct KeyTable {
    keys: HashMap<[u8; 32], KeyEntry, BuildHasherDefault<DigestHasher>>,
    /// Consumers by name (for `/config`), ordered.
    consumers: Vec<(Arc<Identity>, usize)>,
}

impl KeyTable {
    /// Checks `key` as of `now_secs` (seconds since the Unix epoch).
    pub fn check(&self, key: &[u8], now_secs: u64) -> KeyCheck<'_> {
        let digest: [u8; 32] = Sha256::digest(key).into();
        match self.keys.get(&digest) {
            None => KeyCheck::Unknown,
            Some(entry) if entry.expires.is_some_and(|e| e <= now_secs) => {
                KeyCheck::Expired(&entry.consumer)
            }
            Some(entry) => KeyCheck::Valid(&entry.consumer),
        }
    }

    /// Consumers and how many keys each has, ordered by name.
    pub fn consumers(&self) -> &[(Arc<Identity>, usize)] {
        &self.consumers
    }

    /// Validates and compiles the consumers of a snapshot, each with its counters from
    /// `counters`. The error names the consumer and the field, never a hash.
    pub fn compile(
        consumers: &[pb::Consumer],
        counters: &Registry<ConsumerStats>,
    ) -> Result<KeyTable, String> {
        let mut table = KeyTable::default();
        let mut names = HashSet::new();
        for c in consumers {
            let pb::Consumer {
                name,
                groups,
                api_keys,
                updated_version: _,
                jwt_credentials: _, // compiled by the JWT verifier, not here
            } = c;
            if !super::is_name(name) {
                return Err(format!(
                    "consumer '{name}': name: must be a DNS label (a-z, 0-9, '-', 1-63 chars)"
                ));
            }
            if !names.insert(name.as_str()) {
                return Err(format!("consumer '{name}': name: appears twice"));
            }
            if let Some(g) = groups.iter().find(|g| !super::is_name(g)) {
                return Err(format!(
                    "consumer '{name}': groups: '{g}' must be a DNS label"
                ));
            }
            let identity =
                Arc::new(Identity {
                    name: name.as_str().into(),
                    groups: groups.iter().map(|g| Arc::from(g.as_str())).collect(),
                    // DNS labels are always valid header values.
                    name_header: HeaderValue::from_str(name)
                        .map_err(|_| format!("consumer '{name}': name: not a header value"))?,
                    groups_header: if groups.is_empty() {
                        None
                    } else {
                        Some(HeaderValue::from_str(&groups.join(",")).map_err(|_| {
                            format!("consumer '{name}': groups: not a header value")
                        })?)
                    },
                    stats: counters.get(name),
                });
            for (i, k) in api_keys.iter().enumerate() {
                let pb::ApiKey {
                    id: _,
                    consumer: _,
                    hash,
                    last4: _,
                    created: _,
                    expires,
                } = k;
                let digest: [u8; 32] = hash.as_slice().try_into().map_err(|_| {
                    format!("consumer '{name}': api_keys[{i}].hash: must be 32 bytes (SHA-256)")
                })?;
                let expires = match expires {
                    None => None,
                    Some(t) => Some(u64::try_from(t.seconds).map_err(|_| {
                        format!("consumer '{name}': api_keys[{i}].expires: before 1970")
                    })?),
                };
                let entry = KeyEntry {
                    consumer: identity.clone(),
                    expires,
                };
                if table.keys.insert(digest, entry).is_some() {
                    return Err(format!(
                        "consumer '{name}': api_keys[{i}]: the same key appears twice"
                    ));
                }
            }
            table.consumers.push((identity, api_keys.len()));
        }
        Ok(table)
    }
}

/// Hashes a SHA-256 digest by taking its first 8 bytes (see the module docs). Anything else
/// written (the slice length prefix) is ignored.
#[derive(Debug, Default, Clone, Copy)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        if let Some(first) = bytes.first_chunk::<8>() {
            self.0 = u64::from_le_bytes(*first);
        }
    }

    fn write_usize(&mut self, _: usize) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_pb(key: &str, expires: Option<i64>) -> pb::ApiKey {
        pb::ApiKey {
            id: "k-1".into(),
            consumer: String::new(),
            hash: Sha256::digest(key.as_bytes()).to_vec(),
            last4: String::new(),
            created: None,
            expires: expires.map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
        }
    }

    #[test]
    fn keys_are_found_by_hash_and_expire() {
        let counters = Registry::default();
        let table = KeyTable::compile(
            &[pb::Consumer {
                name: "alice".into(),
                groups: vec!["beta".into(), "gold".into()],
                api_keys: vec![key_pb("gwk_live", None), key_pb("gwk_old", Some(100))],
                updated_version: 3,
                ..Default::default()
            }],
            &counters,
        )
        .unwrap();
        let KeyCheck::Valid(who) = table.check(b"gwk_live", 1_000) else {
            panic!("live key refused");
        };
        assert_eq!(&*who.name, "alice");
        assert_eq!(who.groups_header.as_ref().unwrap(), "beta,gold");
        assert!(matches!(table.check(b"gwk_old", 99), KeyCheck::Valid(_)));
        assert!(matches!(table.check(b"gwk_old", 100), KeyCheck::Expired(_)));
        assert!(matches!(table.check(b"gwk_other", 0), KeyCheck::Unknown));
        assert!(matches!(table.check(b"", 0), KeyCheck::Unknown));
        assert_eq!(table.consumers()[0].1, 2);
        assert!(
            Arc::ptr_eq(&who.stats, &counters.get("alice")),
            "counters are kept by name across versions"
        );
    }

    #[test]
    fn bad_consumers_are_refused_naming_the_field() {
        let bad = |c: pb::Consumer| KeyTable::compile(&[c], &Registry::default()).unwrap_err();
        let ok = pb::Consumer {
            name: "bob".into(),
            ..Default::default()
        };
        assert!(
            bad(pb::Consumer {
                name: "Bob".into(),
                ..ok.clone()
            })
            .contains("name: must be a DNS label")
        );
        let mut short = key_pb("k", None);
        short.hash.truncate(5);
        let err = bad(pb::Consumer {
            api_keys: vec![short],
            ..ok.clone()
        });
        assert!(err.contains("api_keys[0].hash: must be 32 bytes"), "{err}");
        let err = KeyTable::compile(&[ok.clone(), ok], &Registry::default()).unwrap_err();
        assert!(err.contains("appears twice"), "{err}");
    }
}
