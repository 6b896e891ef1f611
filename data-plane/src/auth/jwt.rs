//! JWT verification: which consumer a bearer token authenticates, if its issuer vouches for
//! it with a key of that consumer.
//!
//! [`JwtVerifier`] is built once per config version from the consumers' credentials (static
//! keys are parsed then, so a bad key is a [`JwtConfigError`] naming the issuer, consumer and
//! key) and is immutable afterwards. It is organised issuer -> consumer claim -> consumer ->
//! that consumer's credentials. [`JwtVerifier::verify`] checks one compact JWS token:
//!
//! 1. The header is read unverified. `alg: none` is refused ([`JwtReject::AlgNone`]), and so is
//!    a `crit` header (no extension is understood, RFC 7515 section 4.1.11).
//! 2. The issuer is looked up from the unverified `iss` claim, and the consumer from the
//!    issuer's (unverified) consumer claim. Only to choose keys: nothing from the payload is
//!    believed before the signature is checked.
//! 3. **The signature is checked with the named consumer's keys only.** Consumer A's key must
//!    never authenticate a token naming B: A knows its own HS256 secret, or holds its own
//!    private key, and could otherwise sign `sub: B`.
//! 4. The key is chosen by `kid` (see [`KeySet::candidates`]). **The algorithm is the key's,
//!    never the token's**: each key verifies exactly one algorithm, and a token whose `alg`
//!    differs is refused ([`JwtReject::AlgMismatch`]) before any crypto. This is what stops
//!    the classic confusion attack, an HS256 token "signed" with an RSA public key as the
//!    HMAC secret.
//! 5. Then `exp` (required) and `nbf`, with [`LEEWAY`] for clock skew, and the audience of the
//!    credential whose key verified.
//!
//! Every rejection is a [`JwtReject`]; its [`JwtReject::reason`] is what clients and metrics
//! may see ("expired" or "invalid"), its `Display` is for the log. Neither contains token text.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use super::cache::TokenCache;
pub use super::jwks::JwksSource;
use super::jws::{Alg, KeySet, VerifyKey};
pub use super::jws::{HmacSecret, KeyMaterial};

/// Clock skew tolerated on `exp` and `nbf`. Thirty seconds covers NTP-synchronised hosts with
/// a wide margin and keeps a stolen token's extra life short; it is what Envoy's jwt_authn
/// and most libraries default to (jsonwebtoken: 60 s, Kong: 0 s).
pub const LEEWAY: Duration = Duration::from_secs(30);
/// Longest token accepted. Real JWTs are well under 2 KiB; a cap bounds the base64 and JSON
/// work an unauthenticated client can ask for (the request head is capped too, at 64 KiB).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Verified tokens remembered per verifier (see `auth::cache`): about 6 MB with ~500-byte
/// tokens and at most ~21 MB (tokens up to [`MAX_CACHED_TOKEN_BYTES`]), enough for every
/// active client of a busy node to hit.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;
/// Longest token the cache keeps. Real tokens are well under it; a longer (accepted) one is
/// verified in full on every request rather than letting a consumer that mints its own
/// tokens fill the cache with padded ones.
pub const MAX_CACHED_TOKEN_BYTES: usize = 2 * 1024;
/// Claims that cannot name the consumer: they are not strings, or not one caller.
const NOT_CONSUMER_CLAIMS: [&str; 4] = ["aud", "exp", "nbf", "iat"];

/// One consumer's credential for one issuer: tokens whose `iss` is `issuer` and whose
/// `consumer_claim` names `consumer` authenticate that consumer if one of these keys signed
/// them (proto `JwtCredential`, compiled).
#[derive(Debug, Clone)]
pub struct JwtCredential {
    /// The consumer it authenticates; the consumer claim must equal it exactly.
    pub consumer: String,
    /// The `iss` claim its tokens carry, compared exactly.
    pub issuer: String,
    /// Accepted `aud` values; a token must name one of them. Empty: no audience check.
    pub audiences: Vec<String>,
    /// The claim that names the consumer, e.g. `"sub"`. Every credential of one issuer must
    /// name the same claim.
    pub consumer_claim: String,
    /// Where its keys come from.
    pub keys: CredentialKeys,
}

/// A credential's keys.
#[derive(Debug, Clone)]
pub enum CredentialKeys {
    /// Keys configured with the credential.
    Static(Vec<JwtKey>),
    /// Keys fetched from the issuer's JWKS URL (a running [`JwksSource`], which the caller
    /// keeps across config versions so a new version does not refetch).
    Jwks(JwksSource),
}

/// One configured key.
#[derive(Debug, Clone)]
pub struct JwtKey {
    /// The `kid` tokens signed with it carry; `None` matches tokens with any or no `kid`.
    pub kid: Option<String>,
    /// The key; its type fixes the algorithm.
    pub material: KeyMaterial,
}

/// The consumer a token names, and who vouched for it. Both are the configured names
/// (shared, so a cache hit copies two pointers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The issuer, as configured.
    pub issuer: Arc<str>,
    /// The consumer, as configured (equal to the token's consumer claim).
    pub consumer: Arc<str>,
}

/// Why a token was refused. `Display` is for logs; it never contains token text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtReject {
    /// Not a compact JWS with a JSON header and payload; too long; a `crit` header; no `exp`;
    /// a claim of the wrong type.
    #[error("malformed token")]
    Malformed,
    /// `alg: none`: an unsigned token.
    #[error("unsigned token (alg none)")]
    AlgNone,
    /// The token's `alg` is not the algorithm of the key(s) it would be checked with, or not
    /// one gw supports.
    #[error("token algorithm does not match the key")]
    AlgMismatch,
    /// No configured issuer has the token's `iss`, or it has none.
    #[error("unknown issuer")]
    UnknownIssuer,
    /// The consumer the token names has no credential for its issuer.
    #[error("no credential of this issuer for the consumer named")]
    UnknownConsumer,
    /// The consumer's credentials have no key for the token's `kid` (for a JWKS credential, a
    /// refresh is asked for).
    #[error("unknown key id")]
    UnknownKey,
    /// The signature does not verify with any of the named consumer's keys.
    #[error("bad signature")]
    BadSignature,
    /// `exp` has passed (beyond [`LEEWAY`]).
    #[error("expired")]
    Expired,
    /// `nbf` is still ahead (beyond [`LEEWAY`]).
    #[error("not yet valid")]
    NotYetValid,
    /// The credential checks audiences and the token names none of them.
    #[error("wrong audience")]
    WrongAudience,
    /// The consumer claim is absent, empty or not a string.
    #[error("no consumer claim")]
    MissingConsumerClaim,
}

impl JwtReject {
    /// The reason as metrics and logs group it: `"expired"` for [`JwtReject::Expired`],
    /// `"invalid"` for every other case (the client is told no more than that).
    pub fn reason(&self) -> &'static str {
        match self {
            JwtReject::Expired => "expired",
            _ => "invalid",
        }
    }
}

/// Credentials or keys that cannot be used; every problem is listed, each naming its issuer
/// and consumer (and key, by `kid` or position). Never contains secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JWT configuration: {}", .problems.join("; "))]
pub struct JwtConfigError {
    /// One line per problem.
    pub problems: Vec<String>,
}

/// Checks tokens against a fixed set of credentials. Immutable; build a new one per config
/// version (its cache of verified tokens then belongs to that version alone).
#[derive(Debug)]
pub struct JwtVerifier {
    issuers: HashMap<Box<str>, Issuer>,
    cache: Option<TokenCache<Cached>>,
}

/// What a cache hit returns, and whether it still holds.
#[derive(Debug)]
struct Cached {
    verified: Verified,
    /// For a JWKS credential: the source and its key-set generation at verification. A new
    /// set (a key may have been removed) makes the entry stale.
    jwks: Option<(JwksSource, u64)>,
}

/// What a full verification found.
struct Checked {
    verified: Verified,
    exp: f64,
    nbf: Option<f64>,
    jwks: Option<(JwksSource, u64)>,
}

/// One issuer: its consumer claim, and for each consumer it may name, that consumer's
/// credentials. A token is only ever checked with the keys of the consumer it names.
#[derive(Debug)]
struct Issuer {
    name: Arc<str>,
    consumer_claim: Box<str>,
    consumers: HashMap<Arc<str>, Vec<Credential>>,
}

#[derive(Debug)]
struct Credential {
    audiences: Box<[Box<str>]>,
    keys: Keys,
}

#[derive(Debug)]
enum Keys {
    Static(KeySet),
    Jwks(JwksSource),
}

impl JwtVerifier {
    /// Checks and compiles `credentials`. Errors list every unusable credential and key.
    pub fn new(credentials: Vec<JwtCredential>) -> Result<Self, JwtConfigError> {
        let mut problems = Vec::new();
        let mut issuers: HashMap<Box<str>, Issuer> = HashMap::new();
        for credential in credentials {
            let JwtCredential {
                consumer,
                issuer: name,
                audiences,
                consumer_claim,
                keys,
            } = credential;
            let before = problems.len();
            let at = format!("issuer {name:?}, consumer {consumer:?}");
            if name.is_empty() {
                problems.push(format!("{at}: empty issuer"));
            }
            if consumer.is_empty() {
                problems.push(format!("{at}: empty consumer name"));
            }
            if consumer_claim.is_empty() || NOT_CONSUMER_CLAIMS.contains(&consumer_claim.as_str()) {
                problems.push(format!(
                    "{at}: consumer claim {consumer_claim:?} cannot name a consumer (use a string claim such as \"sub\")"
                ));
            }
            if audiences.iter().any(String::is_empty) {
                problems.push(format!("{at}: an audience is empty"));
            }
            let keys = match keys {
                CredentialKeys::Jwks(source) => Keys::Jwks(source),
                CredentialKeys::Static(keys) => {
                    if keys.is_empty() {
                        problems.push(format!("{at}: no keys (configure a key or a JWKS URL)"));
                    }
                    let mut set = Vec::with_capacity(keys.len());
                    for (i, key) in keys.into_iter().enumerate() {
                        let which = match &key.kid {
                            Some(kid) => format!("key {kid:?}"),
                            None => format!("key #{}", i + 1),
                        };
                        if key.kid.as_deref() == Some("") {
                            problems.push(format!("{at}, {which}: empty kid"));
                        }
                        match VerifyKey::from_material(&key.material) {
                            Ok(k) => set.push((key.kid.map(Into::into), k)),
                            Err(e) => problems.push(format!("{at}, {which}: {e}")),
                        }
                    }
                    Keys::Static(KeySet::new(set))
                }
            };
            if problems.len() > before {
                continue;
            }
            let issuer = issuers
                .entry(name.as_str().into())
                .or_insert_with(|| Issuer {
                    name: name.as_str().into(),
                    consumer_claim: consumer_claim.as_str().into(),
                    consumers: HashMap::new(),
                });
            if *issuer.consumer_claim != *consumer_claim {
                problems.push(format!(
                    "{at}: consumer claim {consumer_claim:?} differs from {:?} of another credential of this issuer (one issuer, one claim)",
                    issuer.consumer_claim
                ));
                continue;
            }
            issuer
                .consumers
                .entry(consumer.as_str().into())
                .or_default()
                .push(Credential {
                    audiences: audiences.into_iter().map(Into::into).collect(),
                    keys,
                });
        }
        if problems.is_empty() {
            Ok(Self {
                issuers,
                cache: Some(TokenCache::new(DEFAULT_CACHE_CAPACITY)),
            })
        } else {
            Err(JwtConfigError { problems })
        }
    }

    /// The same verifier with a cache of about `capacity` verified tokens; 0: no cache.
    pub fn with_cache_capacity(mut self, capacity: usize) -> Self {
        self.cache = (capacity > 0).then(|| TokenCache::new(capacity));
        self
    }

    /// Whether it knows no credential (every token would be refused).
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// Checks `token` (the compact serialization, without `Bearer `) at time `now`. A token
    /// accepted before is answered from the cache (its `exp` and `nbf` checked again).
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Verified, JwtReject> {
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let Some(cache) = self
            .cache
            .as_ref()
            .filter(|_| token.len() <= MAX_CACHED_TOKEN_BYTES)
        else {
            return self.check(token, now).map(|c| c.verified);
        };
        let hit = cache.get(token, now, |c| match &c.jwks {
            Some((source, generation)) if source.generation() != *generation => None,
            _ => Some(c.verified.clone()),
        });
        if let Some(verified) = hit {
            return Ok(verified);
        }
        let checked = self.check(token, now)?;
        let leeway = LEEWAY.as_secs_f64();
        cache.insert(
            token,
            Cached {
                verified: checked.verified.clone(),
                jwks: checked.jwks,
            },
            now,
            checked.nbf.map_or(f64::NEG_INFINITY, |nbf| nbf - leeway),
            checked.exp + leeway,
        );
        Ok(checked.verified)
    }

    /// The full verification, at `now` in seconds since the epoch.
    fn check(&self, token: &str, now: f64) -> Result<Checked, JwtReject> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtReject::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtReject::Malformed);
        };
        let header = decode(header_b64)?;
        let header: Header<'_> =
            serde_json::from_slice(&header).map_err(|_| JwtReject::Malformed)?;
        if header.alg.eq_ignore_ascii_case("none") {
            return Err(JwtReject::AlgNone);
        }
        if header.crit.is_some() {
            return Err(JwtReject::Malformed);
        }
        let payload = decode(payload_b64)?;
        let signature = decode(signature_b64)?;

        // Unverified: only to choose whose keys to check the signature with.
        let unverified: IssuerOnly<'_> =
            serde_json::from_slice(&payload).map_err(|_| JwtReject::Malformed)?;
        let issuer = unverified
            .iss
            .0
            .and_then(|iss| self.issuers.get(iss.as_ref()))
            .ok_or(JwtReject::UnknownIssuer)?;
        let claims = ClaimsSeed {
            consumer_claim: &issuer.consumer_claim,
        }
        .deserialize(&mut serde_json::Deserializer::from_slice(&payload))
        .map_err(|_| JwtReject::Malformed)?;
        let named = claims
            .consumer
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or(JwtReject::MissingConsumerClaim)?;
        // The consumer's own credentials and no one else's: another consumer's key (an HS256
        // secret it knows, a private key it holds) must never vouch for this one.
        let (consumer, credentials) = issuer
            .consumers
            .get_key_value(named)
            .ok_or(JwtReject::UnknownConsumer)?;

        let kid = header.kid.as_deref();
        let alg = Alg::from_name(&header.alg);
        let signed = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
        let (mut any_key, mut any_of_alg, mut key_verified) = (false, false, false);
        let mut accepted = None;
        'credentials: for credential in credentials {
            let (set, jwks) = match &credential.keys {
                Keys::Static(set) => (KeysRef::Static(set), None),
                Keys::Jwks(source) => {
                    // Read before the keys: an entry may then name an older generation than
                    // the set it was checked with (a needless re-check), never a newer one.
                    let generation = source.generation();
                    let set = source.keys();
                    if set.is_empty() || kid.is_some_and(|k| !set.has_kid(k)) {
                        source.request_refresh();
                    }
                    (KeysRef::Loaded(set), Some((source, generation)))
                }
            };
            for key in set.get().candidates(kid) {
                any_key = true;
                if Some(key.alg()) != alg {
                    continue;
                }
                any_of_alg = true;
                if !key.verify(signed, &signature) {
                    continue;
                }
                key_verified = true;
                if audience_ok(&credential.audiences, claims.aud.as_ref()) {
                    accepted = Some(jwks.map(|(s, g)| (s.clone(), g)));
                    break 'credentials;
                }
            }
        }
        if !key_verified {
            return Err(if !any_key {
                JwtReject::UnknownKey
            } else if !any_of_alg {
                JwtReject::AlgMismatch
            } else {
                JwtReject::BadSignature
            });
        }

        // The payload is now the issuer's word.
        let leeway = LEEWAY.as_secs_f64();
        let exp = claims.exp.ok_or(JwtReject::Malformed)?;
        if now >= exp + leeway {
            return Err(JwtReject::Expired);
        }
        if claims.nbf.is_some_and(|nbf| now + leeway < nbf) {
            return Err(JwtReject::NotYetValid);
        }
        let jwks = accepted.ok_or(JwtReject::WrongAudience)?;
        Ok(Checked {
            verified: Verified {
                issuer: issuer.name.clone(),
                consumer: consumer.clone(),
            },
            exp,
            nbf: claims.nbf,
            jwks,
        })
    }
}

/// A key set borrowed from the config or loaded from a JWKS source.
enum KeysRef<'a> {
    Static(&'a KeySet),
    Loaded(arc_swap::Guard<Arc<KeySet>>),
}

impl KeysRef<'_> {
    fn get(&self) -> &KeySet {
        match self {
            Self::Static(set) => set,
            Self::Loaded(set) => set,
        }
    }
}

/// Whether the token's `aud` names one of `audiences` (none configured: no check).
fn audience_ok(audiences: &[Box<str>], aud: Option<&Audience<'_>>) -> bool {
    if audiences.is_empty() {
        return true;
    }
    let named = |aud: &str| audiences.iter().any(|a| a.as_ref() == aud);
    match aud {
        Some(Audience::One(aud)) => named(aud),
        Some(Audience::Many(auds)) => auds.iter().any(|a| named(a)),
        None => false,
    }
}

fn decode(part: &str) -> Result<Vec<u8>, JwtReject> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtReject::Malformed)
}

/// The JOSE header fields gw reads; others are ignored. A repeated field is an error.
#[derive(serde::Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

/// The first pass over the payload: only `iss`, to find the issuer (and its consumer claim).
#[derive(serde::Deserialize)]
struct IssuerOnly<'a> {
    #[serde(borrow, default)]
    iss: MaybeStr<'a>,
}

/// The claims checked after the signature.
struct Claims<'a> {
    exp: Option<f64>,
    nbf: Option<f64>,
    aud: Option<Audience<'a>>,
    consumer: Option<Cow<'a, str>>,
}

/// `aud`: one string or an array of strings (RFC 7519 section 4.1.3).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Audience<'a> {
    One(#[serde(borrow)] Cow<'a, str>),
    Many(#[serde(borrow)] Vec<Cow<'a, str>>),
}

/// Reads the payload in one pass, keeping the issuer's consumer claim (whose name is only
/// known at run time) and refusing repeated claims, which parsers disagree on.
struct ClaimsSeed<'c> {
    consumer_claim: &'c str,
}

impl<'de> DeserializeSeed<'de> for ClaimsSeed<'_> {
    type Value = Claims<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ClaimsSeed<'_> {
    type Value = Claims<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of claims")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut claims = Claims {
            exp: None,
            nbf: None,
            aud: None,
            consumer: None,
        };
        let (mut seen_exp, mut seen_nbf, mut seen_aud, mut seen_consumer) =
            (false, false, false, false);
        let once = |seen: &mut bool| {
            if std::mem::replace(seen, true) {
                Err(de::Error::custom("repeated claim"))
            } else {
                Ok(())
            }
        };
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "exp" => {
                    once(&mut seen_exp)?;
                    claims.exp = Some(map.next_value()?);
                }
                "nbf" => {
                    once(&mut seen_nbf)?;
                    claims.nbf = Some(map.next_value()?);
                }
                "aud" => {
                    once(&mut seen_aud)?;
                    claims.aud = Some(map.next_value()?);
                }
                k if k == self.consumer_claim => {
                    once(&mut seen_consumer)?;
                    claims.consumer = map.next_value::<MaybeStr<'de>>()?.0;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(claims)
    }
}

/// A claim that counts only when it is a string; any other JSON value reads as absent.
#[derive(Default)]
struct MaybeStr<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for MaybeStr<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(MaybeStrVisitor(std::marker::PhantomData))
    }
}

struct MaybeStrVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for MaybeStrVisitor<'a> {
    type Value = MaybeStr<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(MaybeStr(Some(Cow::Borrowed(v))))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(MaybeStr(Some(Cow::Owned(v.to_owned()))))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(MaybeStr(Some(Cow::Owned(v))))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(MaybeStr(None))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(MaybeStr(None))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(MaybeStr(None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(MaybeStr(None))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(MaybeStr(None))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(MaybeStr(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(MaybeStr(None))
    }
}

#[cfg(test)]
mod tests;
