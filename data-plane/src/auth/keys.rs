//! The consumers a config version knows, compiled for the request path: an immutable map
//! from the SHA-256 of an API key to the consumer it belongs to, and the JWT verifier built
//! from their JWT credentials.
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
use std::time::SystemTime;

use gw_proto::v1 as pb;
use http::HeaderValue;
use sha2::{Digest, Sha256};

use super::jwks::JwksSource;
use super::jws::{HmacSecret, KeyMaterial};
use super::jwt::{CredentialKeys, JwtCredential, JwtKey, JwtReject, JwtVerifier};
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

/// A consumer as `/config` shows it: never a key, a hash or a secret.
#[derive(Debug)]
pub struct ConsumerInfo {
    /// Who.
    pub identity: Arc<Identity>,
    /// How many API keys it has.
    pub api_keys: usize,
    /// Its JWT credentials.
    pub jwt: Vec<JwtInfo>,
}

/// A JWT credential as `/config` shows it.
#[derive(Debug)]
pub struct JwtInfo {
    /// Its id.
    pub id: String,
    /// The issuer.
    pub issuer: String,
    /// `"HS256"`, `"RS256"`, `"ES256"`, `"EdDSA"` or `"jwks"`.
    pub key: &'static str,
    /// The JWKS URL, for a JWKS credential (not secret).
    pub jwks_url: Option<String>,
}

/// Every API key of a config version, by the SHA-256 of the key, and its JWT verifier.
#[derive(Debug, Default)]
pub struct KeyTable {
    keys: HashMap<[u8; 32], KeyEntry, BuildHasherDefault<DigestHasher>>,
    /// Consumers (for `/config`), in config order.
    consumers: Vec<ConsumerInfo>,
    /// Consumers by name (who a verified JWT names).
    by_name: HashMap<Arc<str>, Arc<Identity>>,
    /// The JWT credentials of every consumer; `None` when there are none.
    jwt: Option<JwtVerifier>,
    /// The JWKS URLs the credentials use (so the caller can drop the sources of others).
    jwks_urls: HashSet<String>,
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

    /// Checks a JWT at `now`: the consumer it authenticates (see `jwt` for every check).
    /// Without JWT credentials in the config every token is an [`JwtReject::UnknownIssuer`].
    pub fn check_jwt(&self, token: &str, now: SystemTime) -> Result<&Arc<Identity>, JwtReject> {
        let verifier = self.jwt.as_ref().ok_or(JwtReject::UnknownIssuer)?;
        let verified = verifier.verify(token, now)?;
        // The verifier was built from these consumers, so the name is always found.
        self.by_name
            .get(&verified.consumer)
            .ok_or(JwtReject::UnknownConsumer)
    }

    /// Consumers, their key counts and JWT credentials, in config order.
    pub fn consumers(&self) -> &[ConsumerInfo] {
        &self.consumers
    }

    /// The JWKS URLs this config's credentials fetch keys from.
    pub fn jwks_urls(&self) -> &HashSet<String> {
        &self.jwks_urls
    }

    /// Validates and compiles the consumers of a snapshot, each with its counters from
    /// `counters`; `jwks` gives the running source of a JWKS URL (kept across versions by the
    /// caller). The error names the consumer and the field, never a hash or a secret.
    pub fn compile(
        consumers: &[pb::Consumer],
        counters: &Registry<ConsumerStats>,
        jwks: &dyn Fn(&str) -> Result<JwksSource, String>,
    ) -> Result<KeyTable, String> {
        let mut table = KeyTable::default();
        let mut names = HashSet::new();
        let mut jwt = Vec::new();
        for c in consumers {
            let pb::Consumer {
                name,
                groups,
                api_keys,
                updated_version: _,
                jwt_credentials,
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
            let mut infos = Vec::with_capacity(jwt_credentials.len());
            for (i, cred) in jwt_credentials.iter().enumerate() {
                let (compiled, info) = jwt_credential(name, i, cred, jwks)?;
                if let Some(url) = &info.jwks_url {
                    table.jwks_urls.insert(url.clone());
                }
                jwt.push(compiled);
                infos.push(info);
            }
            table
                .by_name
                .insert(identity.name.clone(), identity.clone());
            table.consumers.push(ConsumerInfo {
                identity,
                api_keys: api_keys.len(),
                jwt: infos,
            });
        }
        if !jwt.is_empty() {
            table.jwt = Some(JwtVerifier::new(jwt).map_err(|e| e.to_string())?);
        }
        Ok(table)
    }
}

/// The claim that names the consumer when a credential does not say (proto: default `sub`).
pub const DEFAULT_CONSUMER_CLAIM: &str = "sub";

/// Compiles consumer `name`'s `i`th JWT credential. Errors name the field, never the secret.
fn jwt_credential(
    name: &str,
    i: usize,
    cred: &pb::JwtCredential,
    jwks: &dyn Fn(&str) -> Result<JwksSource, String>,
) -> Result<(JwtCredential, JwtInfo), String> {
    use pb::JwtAlgorithm as A;
    use pb::jwt_credential::Key;
    let pb::JwtCredential {
        id,
        consumer: _,
        issuer,
        algorithm,
        key,
        audiences,
        claim,
        kid,
        created: _,
    } = cred;
    let at =
        |field: &str, why: &str| format!("consumer '{name}': jwt_credentials[{i}].{field}: {why}");
    let algorithm = A::try_from(*algorithm).map_err(|_| at("algorithm", "unknown value"))?;
    let kid = (!kid.is_empty()).then(|| kid.clone());
    let static_key = |material: KeyMaterial| {
        CredentialKeys::Static(vec![JwtKey {
            kid: kid.clone(),
            material,
        }])
    };
    let (keys, label, jwks_url) = match key {
        None => return Err(at("key", "required (a secret, a public key or a JWKS URL)")),
        Some(Key::Hs256Secret(secret)) => {
            if !matches!(algorithm, A::Hs256 | A::Unspecified) {
                return Err(at("algorithm", "an HS256 secret verifies HS256 only"));
            }
            (
                static_key(KeyMaterial::Hs256Secret(HmacSecret::new(secret.clone()))),
                "HS256",
                None,
            )
        }
        Some(Key::PublicKeyPem(pem)) => {
            let (material, label) = match algorithm {
                A::Rs256 => (KeyMaterial::RsaPublicPem(pem.clone()), "RS256"),
                A::Es256 => (KeyMaterial::EcP256PublicPem(pem.clone()), "ES256"),
                A::Eddsa => (KeyMaterial::Ed25519PublicPem(pem.clone()), "EdDSA"),
                A::Hs256 => return Err(at("algorithm", "HS256 needs a secret, not a public key")),
                A::Unspecified => {
                    return Err(at(
                        "algorithm",
                        "required for a public key (RS256, ES256 or EdDSA)",
                    ));
                }
            };
            (static_key(material), label, None)
        }
        Some(Key::JwksUrl(url)) => {
            let source = jwks(url).map_err(|e| at("jwks_url", &e))?;
            (CredentialKeys::Jwks(source), "jwks", Some(url.clone()))
        }
    };
    let compiled = JwtCredential {
        consumer: name.to_owned(),
        issuer: issuer.clone(),
        audiences: audiences.clone(),
        consumer_claim: if claim.is_empty() {
            DEFAULT_CONSUMER_CLAIM.to_owned()
        } else {
            claim.clone()
        },
        keys,
    };
    let info = JwtInfo {
        id: id.clone(),
        issuer: issuer.clone(),
        key: label,
        jwks_url,
    };
    Ok((compiled, info))
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

    fn no_jwks(url: &str) -> Result<JwksSource, String> {
        Err(format!("no JWKS in this test ({url})"))
    }

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
            &no_jwks,
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
        assert_eq!(table.consumers()[0].api_keys, 2);
        assert!(
            Arc::ptr_eq(&who.stats, &counters.get("alice")),
            "counters are kept by name across versions"
        );
    }

    #[test]
    fn bad_consumers_are_refused_naming_the_field() {
        let bad =
            |c: pb::Consumer| KeyTable::compile(&[c], &Registry::default(), &no_jwks).unwrap_err();
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
        let err = KeyTable::compile(&[ok.clone(), ok], &Registry::default(), &no_jwks).unwrap_err();
        assert!(err.contains("appears twice"), "{err}");
    }
}
