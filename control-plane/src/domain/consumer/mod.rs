//! Consumers (who calls services), their API keys, their JWT credentials (`jwt`), and who a
//! service admits (`auth`).
//!
//! An API key is 192 random bits, shown once when it is created; only its SHA-256 is kept.
//! A fast, unsalted hash is enough here (unlike for passwords) because the key is not chosen
//! by a person: with 2^192 equally likely keys there is no dictionary to try, so a stolen
//! database or data-plane cache gives nothing that opens a service. The data planes check a
//! key with one hash and one map lookup.

mod auth;
mod jwt;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gw_proto::v1 as pb;
use gw_tls::Secret;
use sha2::{Digest, Sha256};

use crate::domain::validate::{self, Problems, ValidationError};

pub use auth::{Auth, AuthMethod, KeySource};
pub use jwt::{
    DEFAULT_CLAIM, HmacSecret, JwtAlgorithm, JwtCredential, JwtKey, MAX_JWT_CREDENTIALS,
    MIN_HS256_SECRET_BYTES,
};

/// Random bytes in a key: 192 bits, well above the 128 the issue asks for.
const KEY_BYTES: usize = 24;
/// What every key starts with, so a leaked key is recognisable (secret scanners, logs).
pub const KEY_PREFIX: &str = "gwk_";
/// Random bytes in a key id (not secret; only needs to be unique).
const ID_BYTES: usize = 6;
/// Most groups one consumer may be in; keeps `X-Consumer-Groups` a reasonable header.
const MAX_GROUPS: usize = 32;
/// Most API keys one consumer may hold at once (rotation needs two; leaks need bounding).
pub const MAX_KEYS: usize = 16;
/// Longest key lifetime accepted: ten years, beyond which "expires" means nothing.
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 86_400);

/// A consumer: a name, its groups, its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    /// Unique name, a lowercase DNS label.
    pub name: String,
    /// Group names, sorted, without duplicates.
    pub groups: Vec<String>,
    /// API keys, ordered by creation then id.
    pub api_keys: Vec<ApiKey>,
    /// JWT credentials, ordered by creation then id.
    pub jwt_credentials: Vec<JwtCredential>,
    /// Config version that last wrote the consumer or one of its keys; set by the store.
    pub updated_version: u64,
}

/// The SHA-256 of an API key. Not a secret (it opens nothing), but not shown either: only
/// data planes need it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyHash(pub [u8; 32]);

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHash(..)")
    }
}

impl KeyHash {
    /// The hash of `key`.
    pub fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }
}

/// One API key of a consumer, without the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Identifies the key for `key rm`.
    pub id: String,
    /// SHA-256 of the key.
    pub hash: KeyHash,
    /// The key's last 4 characters.
    pub last4: String,
    /// Creation time, whole seconds since the Unix epoch.
    pub created: u64,
    /// Expiry, whole seconds since the Unix epoch; `None`: never.
    pub expires: Option<u64>,
}

impl ApiKey {
    /// A new random key created at `now`, valid for `ttl` (or until revoked): the key, shown
    /// once, and the record kept.
    pub fn generate(now: SystemTime, ttl: Option<Duration>) -> (Secret, ApiKey) {
        let key = format!("{KEY_PREFIX}{}", hex(&rand::random::<[u8; KEY_BYTES]>()));
        let created = unix_secs(now);
        let record = ApiKey {
            id: format!("k-{}", hex(&rand::random::<[u8; ID_BYTES]>())),
            hash: KeyHash::of(&key),
            last4: key[key.len() - 4..].to_owned(),
            created,
            expires: ttl.map(|t| created.saturating_add(t.as_secs().max(1))),
        };
        (Secret::new(key), record)
    }

    /// The key as AdminService shows it: no hash.
    pub fn to_public(&self, consumer: &str) -> pb::ApiKey {
        pb::ApiKey {
            hash: Vec::new(),
            ..self.to_pb_with_hash(consumer)
        }
    }

    /// The key as data planes receive it.
    pub fn to_pb_with_hash(&self, consumer: &str) -> pb::ApiKey {
        pb::ApiKey {
            id: self.id.clone(),
            consumer: consumer.to_owned(),
            hash: self.hash.0.to_vec(),
            last4: self.last4.clone(),
            created: Some(timestamp(self.created)),
            expires: self.expires.map(timestamp),
        }
    }
}

/// Checks a requested key lifetime (`CreateApiKeyRequest.ttl`).
pub fn check_ttl(ttl: Option<prost_types::Duration>) -> Result<Option<Duration>, ValidationError> {
    match ttl {
        None => Ok(None),
        some => validate::duration(some, Duration::ZERO, Duration::from_secs(1), MAX_TTL)
            .map(Some)
            .map_err(|e| ValidationError::field("ttl", e)),
    }
}

impl Consumer {
    /// Checks a name and groups into a consumer without keys.
    pub fn new(name: String, groups: Vec<String>) -> Result<Self, ValidationError> {
        let mut p = Problems::default();
        p.check("name", validate::name(&name));
        let groups = check_groups("groups", groups, &mut p);
        p.finish(Some(Consumer {
            name,
            groups,
            api_keys: Vec::new(),
            jwt_credentials: Vec::new(),
            updated_version: 0,
        }))
    }

    /// The consumer as AdminService shows it: keys without hashes, JWT credentials without
    /// HS256 secrets.
    pub fn to_public(&self) -> pb::Consumer {
        pb::Consumer {
            name: self.name.clone(),
            groups: self.groups.clone(),
            api_keys: self
                .api_keys
                .iter()
                .map(|k| k.to_public(&self.name))
                .collect(),
            updated_version: self.updated_version,
            jwt_credentials: self
                .jwt_credentials
                .iter()
                .map(|j| j.to_public(&self.name))
                .collect(),
        }
    }

    /// The consumer as data planes receive it: key hashes and HS256 secrets included.
    pub fn to_pb_with_secrets(&self) -> pb::Consumer {
        pb::Consumer {
            name: self.name.clone(),
            groups: self.groups.clone(),
            api_keys: self
                .api_keys
                .iter()
                .map(|k| k.to_pb_with_hash(&self.name))
                .collect(),
            updated_version: self.updated_version,
            jwt_credentials: self
                .jwt_credentials
                .iter()
                .map(|j| j.to_pb_with_secret(&self.name))
                .collect(),
        }
    }
}

impl TryFrom<pb::Consumer> for Consumer {
    type Error = ValidationError;

    /// A consumer as CreateConsumer/UpdateConsumer give it: name and groups.
    fn try_from(msg: pb::Consumer) -> Result<Self, ValidationError> {
        let pb::Consumer {
            name,
            groups,
            api_keys: _,        // output only (CreateApiKey adds keys)
            updated_version: _, // output only
            jwt_credentials: _, // output only (CreateJwtCredential adds them)
        } = msg;
        Consumer::new(name, groups)
    }
}

/// Group names checked (each a name), sorted and deduplicated.
pub(crate) fn check_groups(field: &str, groups: Vec<String>, p: &mut Problems) -> Vec<String> {
    if groups.len() > MAX_GROUPS {
        p.add(field, format!("at most {MAX_GROUPS} groups"));
    }
    for (i, g) in groups.iter().enumerate() {
        p.check(format_args!("{field}[{i}]"), validate::name(g));
    }
    let mut groups = groups;
    groups.sort();
    groups.dedup();
    groups
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Whole seconds since the Unix epoch (0 before it).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn timestamp(secs: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: i64::try_from(secs).unwrap_or(i64::MAX),
        nanos: 0,
    }
}

#[cfg(test)]
mod tests;
