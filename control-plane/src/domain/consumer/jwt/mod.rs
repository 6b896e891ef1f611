//! JWT credentials of consumers: tokens whose `iss` is an issuer, signed with one key (an
//! HS256 secret, a PEM public key or the keys of a JWKS URL), whose consumer claim names the
//! consumer.
//!
//! Validation happens here, once, when a credential is created: a key the data planes could
//! not use is refused with an error naming the field, never stored. Public keys are parsed
//! from their SubjectPublicKeyInfo DER (x509-parser) and must be what the data planes verify
//! with ring: RSA of 2048 to 8192 bits with an exponent ring accepts, a P-256 point that is on
//! the curve (checked by ring's ECDH, which refuses any other point), or a 32-byte Ed25519 key
//! (any 32 bytes are accepted here: ring exposes no point check for Ed25519 outside a
//! signature check). The PEM is stored re-encoded from the DER, so text around the block (a
//! private key pasted into the same file, say) is never kept or shown.
//!
//! Errors never contain a secret's bytes or the PEM text, only what is wrong with them.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::time::SystemTime;

use base64::Engine as _;
use gw_proto::v1 as pb;
use rustls_pki_types::SubjectPublicKeyInfoDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519, Oid,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::RSAPublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::{hex, timestamp, unix_secs};
use crate::domain::validate::{self, Problems, ValidationError};

/// Shortest HS256 secret: RFC 7518 section 3.2 asks for a key at least as long as the hash
/// (256 bits); a shorter one can be brute-forced offline from one token.
pub const MIN_HS256_SECRET_BYTES: usize = 32;
/// Longest HS256 secret: HMAC takes any length, but nobody needs more than this and every
/// data plane holds a copy.
const MAX_HS256_SECRET_BYTES: usize = 1024;
/// RSA modulus sizes ring verifies RS256 with (`RSA_PKCS1_2048_8192_SHA256`).
const RSA_BITS: RangeInclusive<usize> = 2048..=8192;
/// Longest PEM accepted: an 8192-bit RSA public key is about 1.5 KB of PEM.
const MAX_PEM: usize = 16 * 1024;
/// Longest issuer (the proto's limit).
const MAX_ISSUER: usize = 1024;
/// Longest audience, JWKS URL, claim name and kid.
const MAX_AUDIENCE: usize = 1024;
const MAX_URL: usize = 2048;
const MAX_CLAIM: usize = 256;
const MAX_KID: usize = 256;
/// Most audiences one credential accepts.
const MAX_AUDIENCES: usize = 16;
/// Most JWT credentials one consumer may hold (key rotation needs two per issuer).
pub const MAX_JWT_CREDENTIALS: usize = 16;
/// The claim that names the consumer when none is given.
pub const DEFAULT_CLAIM: &str = "sub";
/// Claims that cannot name a consumer: their values are not strings, or not one caller. The
/// data planes refuse the same ones.
const NOT_CONSUMER_CLAIMS: [&str; 4] = ["aud", "exp", "nbf", "iat"];
/// Random bytes in a credential id (not secret; only needs to be unique).
const ID_BYTES: usize = 6;

/// A JWS algorithm gw verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    /// HMAC SHA-256 with a shared secret.
    Hs256,
    /// RSASSA-PKCS1-v1_5 SHA-256.
    Rs256,
    /// ECDSA P-256 SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
}

impl JwtAlgorithm {
    /// The JOSE name, e.g. `RS256`, as stored and shown.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    /// The algorithm of a JOSE name as [`Self::name`] writes it.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Hs256, Self::Rs256, Self::Es256, Self::EdDsa]
            .into_iter()
            .find(|a| a.name() == name)
    }

    fn to_pb(self) -> pb::JwtAlgorithm {
        match self {
            Self::Hs256 => pb::JwtAlgorithm::Hs256,
            Self::Rs256 => pb::JwtAlgorithm::Rs256,
            Self::Es256 => pb::JwtAlgorithm::Es256,
            Self::EdDsa => pb::JwtAlgorithm::Eddsa,
        }
    }

    /// The requested algorithm: `None` for unset, `Err` for a value the proto does not know.
    fn from_pb(value: i32) -> Result<Option<Self>, String> {
        match pb::JwtAlgorithm::try_from(value) {
            Ok(pb::JwtAlgorithm::Unspecified) => Ok(None),
            Ok(pb::JwtAlgorithm::Hs256) => Ok(Some(Self::Hs256)),
            Ok(pb::JwtAlgorithm::Rs256) => Ok(Some(Self::Rs256)),
            Ok(pb::JwtAlgorithm::Es256) => Ok(Some(Self::Es256)),
            Ok(pb::JwtAlgorithm::Eddsa) => Ok(Some(Self::EdDsa)),
            Err(_) => Err(format!("unknown value {value}")),
        }
    }

    /// The key type this algorithm verifies with, for errors.
    fn key_type(self) -> &'static str {
        match self {
            Self::Hs256 => "an HS256 secret",
            Self::Rs256 => "an RSA public key (RS256)",
            Self::Es256 => "a P-256 public key (ES256)",
            Self::EdDsa => "an Ed25519 public key (EdDSA)",
        }
    }
}

/// An HS256 shared secret. `Debug` prints `***` and there is no `Display`; the one way to the
/// bytes is [`HmacSecret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct HmacSecret(Vec<u8>);

impl HmacSecret {
    /// Wraps `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The secret, for the store and the data planes' config.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for HmacSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Where a credential's key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtKey {
    /// An HS256 shared secret.
    Hs256Secret(HmacSecret),
    /// A public key: one `PUBLIC KEY` PEM block, re-encoded from its DER, and the algorithm
    /// its type fixes.
    PublicKeyPem {
        /// The PEM text.
        pem: String,
        /// RS256, ES256 or EdDSA.
        algorithm: JwtAlgorithm,
    },
    /// An `https://` (or loopback `http://`) JWKS URL.
    JwksUrl(String),
}

impl JwtKey {
    /// The algorithm the key verifies; `None` for a JWKS URL (its keys carry their own).
    pub fn algorithm(&self) -> Option<JwtAlgorithm> {
        match self {
            Self::Hs256Secret(_) => Some(JwtAlgorithm::Hs256),
            Self::PublicKeyPem { algorithm, .. } => Some(*algorithm),
            Self::JwksUrl(_) => None,
        }
    }
}

/// A JWT credential of a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtCredential {
    /// Identifies the credential for `jwt rm`: `j-` and 12 hex digits.
    pub id: String,
    /// The `iss` its tokens carry.
    pub issuer: String,
    /// The key.
    pub key: JwtKey,
    /// Accepted `aud` values, in the order given, without duplicates; empty: any.
    pub audiences: Vec<String>,
    /// The claim whose value must be the consumer's name.
    pub claim: String,
    /// The `kid` tokens must carry to use the key (secret or PEM only).
    pub kid: Option<String>,
    /// Creation time, whole seconds since the Unix epoch.
    pub created: u64,
}

impl JwtCredential {
    /// Validates a CreateJwtCredential request into the consumer's name and a new credential
    /// (with a fresh id) created at `now`. Every problem is reported, each naming its field.
    pub fn create(
        msg: pb::JwtCredential,
        now: SystemTime,
    ) -> Result<(String, JwtCredential), ValidationError> {
        let pb::JwtCredential {
            id: _, // output only
            consumer,
            issuer,
            algorithm,
            key,
            audiences,
            claim,
            kid,
            created: _, // output only
        } = msg;
        let mut p = Problems::default();
        p.check(
            "credential.consumer",
            if consumer.is_empty() {
                Err("required".to_owned())
            } else {
                validate::name(&consumer)
            },
        );
        p.check("credential.issuer", text(&issuer, MAX_ISSUER, true));
        let requested = p.check("credential.algorithm", JwtAlgorithm::from_pb(algorithm));
        let key = check_key(key, &mut p);
        if let (Some(key), Some(Some(requested))) = (&key, requested) {
            match key.algorithm() {
                Some(inferred) if inferred != requested => p.add(
                    "credential.algorithm",
                    format!(
                        "{} does not match the key, {}; leave it unset to use {}",
                        requested.name(),
                        inferred.key_type(),
                        inferred.name()
                    ),
                ),
                Some(_) => {}
                None => p.add(
                    "credential.algorithm",
                    "a JWKS URL's keys carry their own algorithm; leave it unset",
                ),
            }
        }
        let audiences = check_audiences(audiences, &mut p);
        let claim = if claim.is_empty() {
            DEFAULT_CLAIM.to_owned()
        } else {
            claim
        };
        p.check("credential.claim", check_claim(&claim));
        let kid = if kid.is_empty() {
            None
        } else {
            p.check("credential.kid", text(&kid, MAX_KID, false));
            if matches!(key, Some(JwtKey::JwksUrl(_))) {
                p.add(
                    "credential.kid",
                    "only for an HS256 secret or a public key; a JWKS document names its own keys' kids",
                );
            }
            Some(kid)
        };
        let credential = key.map(|key| JwtCredential {
            id: format!("j-{}", hex(&rand::random::<[u8; ID_BYTES]>())),
            issuer,
            key,
            audiences,
            claim,
            kid,
            created: unix_secs(now),
        });
        p.finish(credential).map(|c| (consumer, c))
    }

    /// The credential as AdminService shows it: an HS256 secret is left out (the field is
    /// present but empty, so the kind of key still shows).
    pub fn to_public(&self, consumer: &str) -> pb::JwtCredential {
        let mut msg = self.to_pb_with_secret(consumer);
        if let Some(pb::jwt_credential::Key::Hs256Secret(secret)) = &mut msg.key {
            *secret = Vec::new();
        }
        msg
    }

    /// The credential as data planes receive it: with the HS256 secret.
    pub fn to_pb_with_secret(&self, consumer: &str) -> pb::JwtCredential {
        use pb::jwt_credential::Key;
        pb::JwtCredential {
            id: self.id.clone(),
            consumer: consumer.to_owned(),
            issuer: self.issuer.clone(),
            algorithm: self
                .key
                .algorithm()
                .map_or(pb::JwtAlgorithm::Unspecified, JwtAlgorithm::to_pb)
                .into(),
            key: Some(match &self.key {
                JwtKey::Hs256Secret(secret) => Key::Hs256Secret(secret.expose().to_vec()),
                JwtKey::PublicKeyPem { pem, .. } => Key::PublicKeyPem(pem.clone()),
                JwtKey::JwksUrl(url) => Key::JwksUrl(url.clone()),
            }),
            audiences: self.audiences.clone(),
            claim: self.claim.clone(),
            kid: self.kid.clone().unwrap_or_default(),
            created: Some(timestamp(self.created)),
        }
    }
}

/// Validates whichever key the request carries.
fn check_key(key: Option<pb::jwt_credential::Key>, p: &mut Problems) -> Option<JwtKey> {
    use pb::jwt_credential::Key;
    match key {
        None => {
            p.add(
                "credential.key",
                "required: one of hs256_secret, public_key_pem or jwks_url",
            );
            None
        }
        Some(Key::Hs256Secret(secret)) => p
            .check("credential.hs256_secret", check_secret(&secret))
            .map(|()| JwtKey::Hs256Secret(HmacSecret::new(secret))),
        Some(Key::PublicKeyPem(pem)) => p
            .check("credential.public_key_pem", public_key(&pem))
            .map(|(pem, algorithm)| JwtKey::PublicKeyPem { pem, algorithm }),
        Some(Key::JwksUrl(url)) => p
            .check("credential.jwks_url", jwks_url(&url))
            .map(|()| JwtKey::JwksUrl(url)),
    }
}

/// Only the length of a secret is ever looked at or reported.
fn check_secret(secret: &[u8]) -> Result<(), String> {
    let len = secret.len();
    if len < MIN_HS256_SECRET_BYTES {
        Err(format!(
            "{len} bytes is too short: at least {MIN_HS256_SECRET_BYTES} bytes (256 bits) are \
             required, e.g. `openssl rand -out secret 32`"
        ))
    } else if len > MAX_HS256_SECRET_BYTES {
        Err(format!(
            "{len} bytes is too long: at most {MAX_HS256_SECRET_BYTES} bytes"
        ))
    } else {
        Ok(())
    }
}

/// A public key from PEM text: the PEM re-encoded from the key's DER, and its algorithm.
fn public_key(pem: &str) -> Result<(String, JwtAlgorithm), String> {
    if pem.len() > MAX_PEM {
        return Err(format!("must be at most {MAX_PEM} bytes"));
    }
    if pem.contains("PRIVATE KEY") {
        // Not echoed, of course; and refused rather than skipped, so the operator learns
        // that the private key went somewhere it should not.
        return Err(
            "holds a private key; give only the public key (`openssl pkey -in KEY -pubout`)"
                .to_owned(),
        );
    }
    let blocks: Vec<_> = SubjectPublicKeyInfoDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| "not a PEM public key: the PEM encoding is damaged".to_owned())?;
    let der = match blocks.as_slice() {
        [one] => one,
        [] => {
            return Err("not a PEM public key: expected a '-----BEGIN PUBLIC KEY-----' block \
                 (for a PKCS#1 'RSA PUBLIC KEY' convert with `openssl rsa -RSAPublicKey_in -pubout`)"
                .to_owned());
        }
        many => {
            return Err(format!(
                "holds {} public keys; give one per credential",
                many.len()
            ));
        }
    };
    let (rest, spki) = SubjectPublicKeyInfo::from_der(der.as_ref())
        .map_err(|_| "not a public key: the PEM block is not a SubjectPublicKeyInfo".to_owned())?;
    if !rest.is_empty() {
        return Err("not a public key: bytes after the SubjectPublicKeyInfo".to_owned());
    }
    let algorithm = key_algorithm(&spki)?;
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}-----END PUBLIC KEY-----\n",
        wrap(&base64::engine::general_purpose::STANDARD.encode(der.as_ref()))
    );
    Ok((pem, algorithm))
}

/// The algorithm a SubjectPublicKeyInfo's key verifies, after checking the key itself.
fn key_algorithm(spki: &SubjectPublicKeyInfo<'_>) -> Result<JwtAlgorithm, String> {
    let oid = &spki.algorithm.algorithm;
    let key = spki.subject_public_key.data.as_ref();
    if *oid == OID_PKCS1_RSAENCRYPTION {
        let (_, rsa) =
            RSAPublicKey::from_der(key).map_err(|_| "damaged RSA public key".to_owned())?;
        check_rsa(rsa.modulus, rsa.exponent)?;
        Ok(JwtAlgorithm::Rs256)
    } else if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| Oid::try_from(p).ok());
        match curve {
            Some(c) if c == OID_EC_P256 => {
                check_p256_point(key)?;
                Ok(JwtAlgorithm::Es256)
            }
            other => Err(format!(
                "an EC key on {}; ES256 needs P-256 (prime256v1)",
                curve_name(other.as_ref())
            )),
        }
    } else if *oid == OID_SIG_ED25519 {
        if key.len() == 32 {
            Ok(JwtAlgorithm::EdDsa)
        } else {
            Err("damaged Ed25519 public key: it must be 32 bytes".to_owned())
        }
    } else {
        Err(format!(
            "unsupported key type (algorithm {}): RSA, P-256 or Ed25519 keys are",
            oid.to_id_string()
        ))
    }
}

fn curve_name(oid: Option<&Oid<'_>>) -> String {
    match oid.map(Oid::to_id_string).as_deref() {
        Some("1.3.132.0.34") => "P-384".to_owned(),
        Some("1.3.132.0.35") => "P-521".to_owned(),
        Some("1.3.132.0.10") => "secp256k1".to_owned(),
        Some(other) => format!("curve {other}"),
        None => "an unnamed curve".to_owned(),
    }
}

/// What ring needs of an RS256 key: a modulus of 2048 to 8192 bits (odd, as every RSA modulus
/// is) and an odd exponent from 3 to 2^33 - 1. Anything else would fail every verification.
fn check_rsa(n: &[u8], e: &[u8]) -> Result<(), String> {
    let n = strip_leading_zeros(n);
    let e = strip_leading_zeros(e);
    let bits = bit_length(n);
    if !RSA_BITS.contains(&bits) {
        return Err(format!(
            "an RSA key of {bits} bits; RS256 needs {} to {} bits",
            RSA_BITS.start(),
            RSA_BITS.end()
        ));
    }
    if n.last().is_some_and(|b| b & 1 == 0) {
        return Err("damaged RSA public key: the modulus is even".to_owned());
    }
    let odd = e.last().is_some_and(|b| b & 1 == 1);
    if !odd || bit_length(e) > 33 || e == [1] {
        return Err(
            "unusable RSA public key: the exponent must be odd, at least 3 and at most 33 bits"
                .to_owned(),
        );
    }
    Ok(())
}

/// An uncompressed point on P-256. ring checks the point lies on the curve when it is used
/// for ECDH, so one throw-away agreement tells a real key from 65 arbitrary bytes.
fn check_p256_point(point: &[u8]) -> Result<(), String> {
    use ring::agreement;
    if point.len() != 65 || point[0] != 4 {
        return Err(
            "a P-256 key must be an uncompressed point (65 bytes starting with 0x04)".to_owned(),
        );
    }
    let rng = ring::rand::SystemRandom::new();
    let ours = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng)
        .map_err(|_| "cannot check the P-256 point: no randomness".to_owned())?;
    let theirs = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, point);
    agreement::agree_ephemeral(ours, &theirs, |_| ())
        .map_err(|_| "damaged P-256 public key: the point is not on the curve".to_owned())
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// Bits in a big-endian unsigned integer without leading zero bytes.
fn bit_length(bytes: &[u8]) -> usize {
    bytes
        .first()
        .map_or(0, |&first| bytes.len() * 8 - first.leading_zeros() as usize)
}

/// Base64 in 64-character lines, each ending in a newline (RFC 7468).
fn wrap(b64: &str) -> String {
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 1);
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out
}

/// A JWKS URL: `https://`, or `http://` to a loopback address (a local identity provider or a
/// test); no user or password in it. It is public configuration (every issuer's discovery
/// document names it): list output, data-plane logs and metrics labels show it, so it must not
/// carry a token (README, "JWT credentials").
fn jwks_url(url: &str) -> Result<(), String> {
    text(url, MAX_URL, true)?;
    if url.chars().any(char::is_whitespace) {
        return Err("must not contain whitespace".to_owned());
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|_| "not a URL; expected https://HOST/PATH".to_owned())?;
    let authority = uri
        .authority()
        .ok_or_else(|| "no host; expected https://HOST/PATH".to_owned())?;
    if authority.as_str().contains('@') {
        return Err("must not contain credentials (user:password@)".to_owned());
    }
    let host = authority.host().trim_matches(['[', ']']);
    if host.is_empty() {
        return Err("no host; expected https://HOST/PATH".to_owned());
    }
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if is_loopback(host) => Ok(()),
        Some("http") => Err(
            "http:// is only allowed to a loopback address (127.0.0.1, [::1], localhost); \
             use https://"
                .to_owned(),
        ),
        _ => Err("must start with https:// (or http:// to a loopback address)".to_owned()),
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Audiences checked, in the order given, without duplicates.
fn check_audiences(audiences: Vec<String>, p: &mut Problems) -> Vec<String> {
    if audiences.len() > MAX_AUDIENCES {
        p.add(
            "credential.audiences",
            format!("at most {MAX_AUDIENCES} audiences"),
        );
    }
    let mut kept: Vec<String> = Vec::with_capacity(audiences.len());
    for (i, a) in audiences.into_iter().enumerate() {
        p.check(
            format_args!("credential.audiences[{i}]"),
            text(&a, MAX_AUDIENCE, true),
        );
        if !kept.contains(&a) {
            kept.push(a);
        }
    }
    kept
}

/// A claim name that can carry a consumer's name.
fn check_claim(claim: &str) -> Result<(), String> {
    text(claim, MAX_CLAIM, false)?;
    if NOT_CONSUMER_CLAIMS.contains(&claim) {
        return Err(format!(
            "'{claim}' cannot name a consumer (its value is not one caller's name); use a \
             string claim such as 'sub'"
        ));
    }
    Ok(())
}

/// Non-empty text of at most `max` bytes without control or invisible format characters
/// (bidi overrides and the like), without leading or trailing whitespace (and, unless
/// `spaces`, without any): it is compared exactly with a token's claims, so a stray space
/// would never match, and shown in tables and logs.
fn text(s: &str, max: usize, spaces: bool) -> Result<(), String> {
    if s.is_empty() {
        return Err("required".to_owned());
    }
    if s.len() > max {
        return Err(format!("must be at most {max} bytes"));
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters".to_owned());
    }
    if s.chars().any(is_format) {
        return Err(
            "must not contain invisible format characters (such as U+202E or U+200B)".to_owned(),
        );
    }
    if s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        return Err(format!(
            "'{}' must not start or end with whitespace",
            validate::echo(s)
        ));
    }
    if !spaces && s.chars().any(char::is_whitespace) {
        return Err(format!(
            "'{}' must not contain whitespace",
            validate::echo(s)
        ));
    }
    Ok(())
}

/// Whether `c` is in Unicode's general category Cf (format: bidi controls, zero-width
/// characters, soft hyphen, tags), as of Unicode 15.1.
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{600}'..='\u{605}'
            | '\u{61c}'
            | '\u{6dd}'
            | '\u{70f}'
            | '\u{890}'..='\u{891}'
            | '\u{8e2}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{110bd}'
            | '\u{110cd}'
            | '\u{13430}'..='\u{1343f}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0001}'
            | '\u{e0020}'..='\u{e007f}'
    )
}

#[cfg(test)]
mod tests;
