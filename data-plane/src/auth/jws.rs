//! JSON Web Signature keys: the four algorithms gw verifies (RS256, ES256, EdDSA, HS256), the
//! key material an operator configures (a PEM public key or an HS256 secret), the keys a JWKS
//! document lists, and checking one signature with one key.
//!
//! The crypto is ring's, the workspace's one crypto provider (rustls runs on it; see
//! `gw_tls::install_provider`). `jsonwebtoken` 10 and later offer only aws-lc-rs or RustCrypto
//! back ends, either a second crypto stack; 9.x is superseded. What a JWT library would add
//! over ring is the JOSE rules, and those are the security-relevant part that `jwt` states and
//! tests itself: the algorithm comes from the key, never from the token.
//!
//! Every key knows its one algorithm ([`VerifyKey::alg`]). A key is parsed once, when a config
//! version or a JWKS document arrives, so a bad key is an error naming it, not a 401 per
//! request.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, UnparsedPublicKey};
use rustls_pki_types::SubjectPublicKeyInfoDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519, Oid,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::RSAPublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

/// Shortest HS256 secret accepted: RFC 7518 section 3.2 requires a key at least as long as the
/// hash output (256 bits); a shorter one can be brute-forced from a single token offline.
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// RSA modulus sizes ring verifies with `RSA_PKCS1_2048_8192_SHA256`; smaller keys are
/// breakable, larger ones only cost CPU per request.
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

/// A JWS algorithm gw verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// HMAC with SHA-256 and a shared secret.
    Hs256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// ECDSA on P-256 with SHA-256 (signature as fixed-width `r || s`).
    Es256,
    /// Ed25519.
    EdDsa,
}

impl Alg {
    /// The `alg` header value, e.g. `"RS256"`.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }

    /// The algorithm a token's `alg` header names, if gw supports it (names are
    /// case-sensitive, RFC 7515 section 4.1.1).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "HS256" => Some(Alg::Hs256),
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            "EdDSA" => Some(Alg::EdDsa),
            _ => None,
        }
    }
}

/// An HS256 shared secret. `Debug` prints `***`, there is no `Display`, and the bytes are
/// overwritten when it is dropped (best effort: copies made before, e.g. by the protobuf
/// decoder, are not ours to wipe).
#[derive(Clone, PartialEq, Eq)]
pub struct HmacSecret(Vec<u8>);

impl HmacSecret {
    /// Wraps `bytes`.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The secret, for the one place that keys the HMAC.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for HmacSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Drop for HmacSecret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// A key as an operator configures it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    /// An HS256 shared secret, at least [`MIN_HS256_SECRET_BYTES`] long.
    Hs256Secret(HmacSecret),
    /// An RSA public key for RS256, PEM `-----BEGIN PUBLIC KEY-----` (SubjectPublicKeyInfo).
    RsaPublicPem(String),
    /// A P-256 public key for ES256, PEM `-----BEGIN PUBLIC KEY-----`.
    EcP256PublicPem(String),
    /// An Ed25519 public key for EdDSA, PEM `-----BEGIN PUBLIC KEY-----`.
    Ed25519PublicPem(String),
}

/// Why a key cannot be used. Never carries key bytes (secrets are not even looked at beyond
/// their length).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The HS256 secret is too short.
    #[error(
        "HS256 secret of {len} bytes is too short: at least {MIN_HS256_SECRET_BYTES} bytes (256 bits) are required"
    )]
    ShortSecret {
        /// Its length in bytes.
        len: usize,
    },
    /// The text is not a PEM public key.
    #[error(
        "not a PEM public key: expected one '-----BEGIN PUBLIC KEY-----' block (SubjectPublicKeyInfo; for a PKCS#1 'RSA PUBLIC KEY' convert with `openssl rsa -RSAPublicKey_in -pubout`)"
    )]
    NotPem,
    /// The PEM block or JWK holds something undecodable.
    #[error("malformed public key: {0}")]
    Malformed(&'static str),
    /// The key is of another type than configured, e.g. an EC key given as RSA.
    #[error("expected {expected} public key, found {found} key")]
    WrongType {
        /// What the configuration said.
        expected: &'static str,
        /// What the key is.
        found: &'static str,
    },
    /// An RSA key of an unsupported size.
    #[error("RSA key of {bits} bits: 2048 to 8192 bits are supported")]
    RsaSize {
        /// Its modulus size.
        bits: usize,
    },
}

/// A parsed key, ready to check signatures of its one algorithm.
pub struct VerifyKey {
    alg: Alg,
    inner: Inner,
}

enum Inner {
    Hmac(ring::hmac::Key),
    /// Modulus and exponent, big-endian without leading zeros (as ring wants them).
    Rsa {
        n: Box<[u8]>,
        e: Box<[u8]>,
    },
    /// An uncompressed P-256 point (`04 || x || y`).
    Ec(Box<[u8]>),
    /// The 32-byte Ed25519 public key.
    Ed(Box<[u8]>),
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Public keys are not secret, but one line per key is all a log needs; an HMAC key
        // prints nothing of itself.
        f.debug_struct("VerifyKey")
            .field("alg", &self.alg.name())
            .finish_non_exhaustive()
    }
}

impl VerifyKey {
    /// Parses configured key material.
    pub fn from_material(material: &KeyMaterial) -> Result<Self, KeyError> {
        match material {
            KeyMaterial::Hs256Secret(secret) => {
                let len = secret.expose().len();
                if len < MIN_HS256_SECRET_BYTES {
                    return Err(KeyError::ShortSecret { len });
                }
                Ok(Self {
                    alg: Alg::Hs256,
                    inner: Inner::Hmac(ring::hmac::Key::new(
                        ring::hmac::HMAC_SHA256,
                        secret.expose(),
                    )),
                })
            }
            KeyMaterial::RsaPublicPem(pem) => from_spki_pem(pem, Alg::Rs256),
            KeyMaterial::EcP256PublicPem(pem) => from_spki_pem(pem, Alg::Es256),
            KeyMaterial::Ed25519PublicPem(pem) => from_spki_pem(pem, Alg::EdDsa),
        }
    }

    /// An RS256 key from a JWK's base64url `n` and `e`.
    pub fn from_rsa_components(n: &str, e: &str) -> Result<Self, KeyError> {
        let n = b64(n, "RSA modulus 'n' is not base64url")?;
        let e = b64(e, "RSA exponent 'e' is not base64url")?;
        rsa(&n, &e)
    }

    /// An ES256 key from a JWK's base64url `x` and `y` (32 bytes each).
    pub fn from_p256_coordinates(x: &str, y: &str) -> Result<Self, KeyError> {
        let x = b64(x, "EC coordinate 'x' is not base64url")?;
        let y = b64(y, "EC coordinate 'y' is not base64url")?;
        if x.len() != 32 || y.len() != 32 {
            return Err(KeyError::Malformed(
                "P-256 coordinates must be 32 bytes each",
            ));
        }
        let mut point = Vec::with_capacity(65);
        point.push(4);
        point.extend_from_slice(&x);
        point.extend_from_slice(&y);
        ec_point(&point)
    }

    /// An EdDSA key from a JWK's base64url `x` (32 bytes).
    pub fn from_ed25519(x: &str) -> Result<Self, KeyError> {
        ed25519(&b64(x, "Ed25519 key 'x' is not base64url")?)
    }

    /// The one algorithm this key verifies.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// Whether `signature` is this key's signature over `message`. HMAC tags are compared in
    /// constant time (ring's `hmac::verify`).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.inner {
            Inner::Hmac(key) => ring::hmac::verify(key, message, signature).is_ok(),
            Inner::Rsa { n, e } => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
            Inner::Ec(point) => UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(message, signature)
                .is_ok(),
            Inner::Ed(key) => UnparsedPublicKey::new(&signature::ED25519, key)
                .verify(message, signature)
                .is_ok(),
        }
    }
}

/// The keys of one issuer, each with its `kid` if it has one.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Box<[(Option<Box<str>>, VerifyKey)]>,
}

impl KeySet {
    /// A set of `(kid, key)` pairs.
    pub fn new(keys: Vec<(Option<Box<str>>, VerifyKey)>) -> Self {
        Self { keys: keys.into() }
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether some key has exactly this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|(k, _)| k.as_deref() == Some(kid))
    }

    /// The keys a token naming `kid` may be checked with: the keys with that `kid` if any,
    /// else the keys configured without a `kid` (which match any token). A token without a
    /// `kid` may be checked with every key.
    pub fn candidates<'a>(&'a self, kid: Option<&'a str>) -> impl Iterator<Item = &'a VerifyKey> {
        let exact = kid.is_some_and(|kid| self.has_kid(kid));
        self.keys.iter().filter_map(move |(k, key)| {
            let fits = match kid {
                None => true,
                Some(_) if exact => k.as_deref() == kid,
                Some(_) => k.is_none(),
            };
            fits.then_some(key)
        })
    }
}

fn b64(text: &str, what: &'static str) -> Result<Vec<u8>, KeyError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| KeyError::Malformed(what))
}

fn from_spki_pem(pem: &str, alg: Alg) -> Result<VerifyKey, KeyError> {
    let der = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => KeyError::NotPem,
        _ => KeyError::Malformed("bad PEM encoding"),
    })?;
    let (rest, spki) = SubjectPublicKeyInfo::from_der(der.as_ref())
        .map_err(|_| KeyError::Malformed("not a DER SubjectPublicKeyInfo"))?;
    if !rest.is_empty() {
        return Err(KeyError::Malformed("trailing bytes after the public key"));
    }
    let found = key_type(&spki);
    let expected = match alg {
        Alg::Hs256 => "an HMAC",
        Alg::Rs256 => "an RSA",
        Alg::Es256 => "a P-256 EC",
        Alg::EdDsa => "an Ed25519",
    };
    if found != expected {
        return Err(KeyError::WrongType { expected, found });
    }
    let key = spki.subject_public_key.data.as_ref();
    match alg {
        Alg::Rs256 => {
            let (_, rsa_key) = RSAPublicKey::from_der(key)
                .map_err(|_| KeyError::Malformed("bad RSA public key"))?;
            rsa(rsa_key.modulus, rsa_key.exponent)
        }
        Alg::Es256 => ec_point(key),
        Alg::EdDsa | Alg::Hs256 => ed25519(key),
    }
}

/// What kind of key a SubjectPublicKeyInfo holds, phrased for [`KeyError::WrongType`].
fn key_type(spki: &SubjectPublicKeyInfo<'_>) -> &'static str {
    let oid = &spki.algorithm.algorithm;
    if *oid == OID_PKCS1_RSAENCRYPTION {
        "an RSA"
    } else if *oid == OID_SIG_ED25519 {
        "an Ed25519"
    } else if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| Oid::try_from(p).ok());
        match curve {
            Some(c) if c == OID_EC_P256 => "a P-256 EC",
            _ => "an EC (not P-256)",
        }
    } else {
        "an unsupported"
    }
}

fn rsa(n: &[u8], e: &[u8]) -> Result<VerifyKey, KeyError> {
    let n = strip_leading_zeros(n);
    let e = strip_leading_zeros(e);
    let bits = bit_length(n);
    if !RSA_BITS.contains(&bits) {
        return Err(KeyError::RsaSize { bits });
    }
    // ring accepts odd exponents from 3 to 2^33 - 1; anything else fails every verification.
    let exponent_ok = !e.is_empty()
        && e.len() <= 5
        && e.last().is_some_and(|b| b & 1 == 1)
        && bit_length(e) <= 33
        && e != [1];
    if !exponent_ok {
        return Err(KeyError::Malformed(
            "RSA exponent must be odd, at least 3 and at most 33 bits",
        ));
    }
    Ok(VerifyKey {
        alg: Alg::Rs256,
        inner: Inner::Rsa {
            n: n.into(),
            e: e.into(),
        },
    })
}

fn ec_point(point: &[u8]) -> Result<VerifyKey, KeyError> {
    if point.len() != 65 || point[0] != 4 {
        return Err(KeyError::Malformed(
            "P-256 key must be an uncompressed point (65 bytes starting with 0x04)",
        ));
    }
    Ok(VerifyKey {
        alg: Alg::Es256,
        inner: Inner::Ec(point.into()),
    })
}

fn ed25519(key: &[u8]) -> Result<VerifyKey, KeyError> {
    if key.len() != 32 {
        return Err(KeyError::Malformed("Ed25519 key must be 32 bytes"));
    }
    Ok(VerifyKey {
        alg: Alg::EdDsa,
        inner: Inner::Ed(key.into()),
    })
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// Bits in a big-endian unsigned integer without leading zero bytes.
fn bit_length(bytes: &[u8]) -> usize {
    match bytes.first() {
        Some(&first) => bytes.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

/// A JWK's fields that gw reads (RFC 7517/7518/8037); everything else is ignored.
#[derive(Debug, serde::Deserialize)]
pub struct Jwk<'a> {
    /// Key type: `RSA`, `EC`, `OKP` (or `oct`, which is never used from a JWKS).
    #[serde(borrow)]
    pub kty: Cow<'a, str>,
    /// Key id.
    #[serde(borrow, default)]
    pub kid: Option<Cow<'a, str>>,
    /// The algorithm the key is for, when the publisher says.
    #[serde(borrow, default)]
    pub alg: Option<Cow<'a, str>>,
    /// `sig` or `enc`.
    #[serde(borrow, default, rename = "use")]
    pub use_: Option<Cow<'a, str>>,
    /// Curve of an EC or OKP key.
    #[serde(borrow, default)]
    pub crv: Option<Cow<'a, str>>,
    /// RSA modulus.
    #[serde(borrow, default)]
    pub n: Option<Cow<'a, str>>,
    /// RSA exponent.
    #[serde(borrow, default)]
    pub e: Option<Cow<'a, str>>,
    /// EC x coordinate, or the OKP public key.
    #[serde(borrow, default)]
    pub x: Option<Cow<'a, str>>,
    /// EC y coordinate.
    #[serde(borrow, default)]
    pub y: Option<Cow<'a, str>>,
}

impl Jwk<'_> {
    /// The verification key this JWK describes. `Err` explains why it is not usable: an
    /// encryption key, a symmetric key (a published `oct` key would let anyone mint HS256
    /// tokens), an algorithm or curve gw does not verify, or bad fields.
    pub fn to_key(&self) -> Result<VerifyKey, &'static str> {
        if self.use_.as_deref().is_some_and(|u| u != "sig") {
            return Err("not a signature key (use is not \"sig\")");
        }
        let field = |f: &Option<Cow<'_, str>>, what: &'static str| {
            f.as_deref().ok_or(what).map(str::to_owned)
        };
        let (key, alg) = match (self.kty.as_ref(), self.crv.as_deref()) {
            ("RSA", _) => (
                VerifyKey::from_rsa_components(
                    &field(&self.n, "RSA key without 'n'")?,
                    &field(&self.e, "RSA key without 'e'")?,
                ),
                Alg::Rs256,
            ),
            ("EC", Some("P-256")) => (
                VerifyKey::from_p256_coordinates(
                    &field(&self.x, "EC key without 'x'")?,
                    &field(&self.y, "EC key without 'y'")?,
                ),
                Alg::Es256,
            ),
            ("OKP", Some("Ed25519")) => (
                VerifyKey::from_ed25519(&field(&self.x, "OKP key without 'x'")?),
                Alg::EdDsa,
            ),
            ("EC" | "OKP", _) => return Err("unsupported curve (P-256 and Ed25519 are)"),
            ("oct", _) => return Err("symmetric key in a public key set"),
            _ => return Err("unsupported key type"),
        };
        if let Some(declared) = self.alg.as_deref()
            && declared != alg.name()
        {
            return Err("unsupported algorithm (RS256, ES256 and EdDSA are)");
        }
        key.map_err(|e| match e {
            KeyError::Malformed(why) => why,
            KeyError::RsaSize { .. } => "RSA key outside 2048 to 8192 bits",
            _ => "unusable key",
        })
    }
}
