//! Test support: keys generated in the test and tokens signed with them. ECDSA and Ed25519
//! keys come from rcgen (ring); ring cannot generate RSA keys, so one 2048-bit key per test
//! binary comes from `openssl genpkey` (Debian package `openssl`).

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper_util::rt::TokioIo;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};

use super::jws::{Alg, HmacSecret, KeyMaterial};

/// The RSA key of this test binary: (PKCS#8 DER private key, SPKI PEM public key).
pub fn rsa_keypair() -> &'static (Vec<u8>, String) {
    static KEY: OnceLock<(Vec<u8>, String)> = OnceLock::new();
    KEY.get_or_init(|| {
        let out = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .output()
            .expect("running `openssl genpkey` (install the Debian package `openssl`)");
        assert!(
            out.status.success(),
            "openssl genpkey: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pem = String::from_utf8(out.stdout).unwrap();
        let kp = rcgen::KeyPair::from_pem(&pem).unwrap();
        (kp.serialized_der().to_vec(), kp.public_key_pem())
    })
}

/// A private key of one algorithm, with what a verifier needs to know about it.
pub struct Signer {
    alg: Alg,
    private: Private,
    /// The public key: SPKI PEM (RSA, EC, Ed25519).
    public_pem: String,
    /// The raw public key: PKCS#1 RSAPublicKey DER, an uncompressed point, or 32 bytes.
    public_raw: Vec<u8>,
}

enum Private {
    Hmac(Vec<u8>),
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

impl Signer {
    /// A fresh HS256 secret of 32 random bytes.
    pub fn hs256() -> Self {
        let mut secret = vec![0; 32];
        SystemRandom::new().fill(&mut secret).unwrap();
        Self::hs256_with(&secret)
    }

    /// An HS256 signer with a given secret.
    pub fn hs256_with(secret: &[u8]) -> Self {
        Self {
            alg: Alg::Hs256,
            private: Private::Hmac(secret.to_vec()),
            public_pem: String::new(),
            public_raw: Vec::new(),
        }
    }

    /// The binary's RSA key.
    pub fn rs256() -> Self {
        let (der, pem) = rsa_keypair();
        let kp = rcgen::KeyPair::try_from(der.as_slice()).unwrap();
        Self {
            alg: Alg::Rs256,
            private: Private::Rsa(RsaKeyPair::from_pkcs8(der).unwrap()),
            public_pem: pem.clone(),
            public_raw: kp.public_key_raw().to_vec(),
        }
    }

    /// A fresh P-256 key.
    pub fn es256() -> Self {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let private = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            kp.serialized_der(),
            &SystemRandom::new(),
        )
        .unwrap();
        Self {
            alg: Alg::Es256,
            private: Private::Ec(private),
            public_pem: kp.public_key_pem(),
            public_raw: kp.public_key_raw().to_vec(),
        }
    }

    /// A fresh Ed25519 key.
    pub fn ed25519() -> Self {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let private = Ed25519KeyPair::from_pkcs8_maybe_unchecked(kp.serialized_der()).unwrap();
        Self {
            alg: Alg::EdDsa,
            private: Private::Ed(private),
            public_pem: kp.public_key_pem(),
            public_raw: kp.public_key_raw().to_vec(),
        }
    }

    /// One signer per supported algorithm.
    pub fn one_of_each() -> [Signer; 4] {
        [Self::rs256(), Self::es256(), Self::ed25519(), Self::hs256()]
    }

    /// The algorithm it signs with.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The public key PEM (empty for HS256).
    pub fn public_pem(&self) -> String {
        self.public_pem.clone()
    }

    /// The key as a verifier is configured with it.
    pub fn material(&self) -> KeyMaterial {
        match (&self.private, self.alg) {
            (Private::Hmac(secret), _) => KeyMaterial::Hs256Secret(HmacSecret::new(secret.clone())),
            (_, Alg::Rs256) => KeyMaterial::RsaPublicPem(self.public_pem()),
            (_, Alg::Es256) => KeyMaterial::EcP256PublicPem(self.public_pem()),
            (_, _) => KeyMaterial::Ed25519PublicPem(self.public_pem()),
        }
    }

    /// The signature over `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.private {
            Private::Hmac(secret) => {
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
                ring::hmac::sign(&key, message).as_ref().to_vec()
            }
            Private::Rsa(kp) => {
                let mut sig = vec![0; kp.public().modulus_len()];
                kp.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .unwrap();
                sig
            }
            Private::Ec(kp) => kp.sign(&rng, message).unwrap().as_ref().to_vec(),
            Private::Ed(kp) => kp.sign(message).as_ref().to_vec(),
        }
    }

    /// A compact JWS: the header `{"alg":…,"kid":…}` (kid when given) and `claims`, signed.
    pub fn token(&self, kid: Option<&str>, claims: &serde_json::Value) -> String {
        let mut header = serde_json::json!({ "alg": self.alg.name(), "typ": "JWT" });
        if let Some(kid) = kid {
            header["kid"] = kid.into();
        }
        sign_parts(&header, claims, |m| self.sign(m))
    }

    /// This key as a JWK with `kid` (a symmetric `oct` key for HS256).
    pub fn jwk(&self, kid: &str) -> String {
        let b = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let jwk = match (&self.private, self.alg) {
            (Private::Hmac(secret), _) => serde_json::json!({"kty": "oct", "k": b(secret)}),
            (_, Alg::Rs256) => {
                use x509_parser::prelude::FromDer;
                let (_, k) =
                    x509_parser::public_key::RSAPublicKey::from_der(&self.public_raw).unwrap();
                serde_json::json!({"kty": "RSA", "alg": "RS256", "n": b(k.modulus), "e": b(k.exponent)})
            }
            (_, Alg::Es256) => serde_json::json!({
                "kty": "EC", "crv": "P-256", "x": b(&self.public_raw[1..33]), "y": b(&self.public_raw[33..])
            }),
            (_, _) => serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": b(&self.public_raw)}),
        };
        let mut jwk = jwk;
        jwk["kid"] = kid.into();
        jwk["use"] = "sig".into();
        jwk.to_string()
    }
}

/// `b64(header).b64(claims).b64(sign(…))`.
pub fn sign_parts(
    header: &serde_json::Value,
    claims: &serde_json::Value,
    sign: impl FnOnce(&[u8]) -> Vec<u8>,
) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// A JWKS document of `keys` (JWK JSON texts).
pub fn jwks(keys: &[String]) -> String {
    format!("{{\"keys\":[{}]}}", keys.join(","))
}

/// Serves one connection of a test identity provider, answering each request with
/// `respond`, over TLS when `tls` is given. A client that refuses the certificate ends the
/// connection in the handshake, so `respond` never sees it.
pub async fn serve_connection<F>(
    tcp: tokio::net::TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    respond: F,
) where
    F: Fn(
            hyper::Request<hyper::body::Incoming>,
        ) -> hyper::Response<http_body_util::Full<bytes::Bytes>>
        + Send
        + Sync
        + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let resp = respond(req);
        async move { Ok::<_, std::convert::Infallible>(resp) }
    });
    let http = hyper::server::conn::http1::Builder::new();
    match tls {
        None => {
            let _ = http.serve_connection(TokioIo::new(tcp), service).await;
        }
        Some(tls) => {
            if let Ok(stream) = tls.accept(tcp).await {
                let _ = http.serve_connection(TokioIo::new(stream), service).await;
            }
        }
    }
}
