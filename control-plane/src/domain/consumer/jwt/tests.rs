//! Validation of JWT credentials: every bad input gets an error naming its field, and no
//! error or `Debug` output carries a secret or a PEM.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::*;

const SECRET: &[u8] = b"an-hs256-secret-of-40-bytes-Xq7Zr2Lm9Kp4";

/// An RSA public key (SPKI PEM) of `bits` bits, from `openssl` (ring cannot generate RSA).
fn openssl_rsa_public(bits: u32) -> String {
    let private = Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt"])
        .arg(format!("rsa_keygen_bits:{bits}"))
        .output()
        .expect("running `openssl genpkey` (install the Debian package `openssl`)");
    assert!(private.status.success(), "openssl genpkey failed");
    let mut child = Command::new("openssl")
        .args(["pkey", "-pubout"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&private.stdout)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl pkey -pubout failed");
    String::from_utf8(out.stdout).unwrap()
}

fn rsa_2048() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| openssl_rsa_public(2048))
}

fn public_pem(alg: &'static rcgen::SignatureAlgorithm) -> String {
    rcgen::KeyPair::generate_for(alg).unwrap().public_key_pem()
}

fn request(key: pb::jwt_credential::Key) -> pb::JwtCredential {
    pb::JwtCredential {
        consumer: "alice".into(),
        issuer: "https://idp.example".into(),
        key: Some(key),
        ..Default::default()
    }
}

fn secret() -> pb::jwt_credential::Key {
    pb::jwt_credential::Key::Hs256Secret(SECRET.to_vec())
}

fn pem(text: &str) -> pb::jwt_credential::Key {
    pb::jwt_credential::Key::PublicKeyPem(text.to_owned())
}

fn jwks(url: &str) -> pb::jwt_credential::Key {
    pb::jwt_credential::Key::JwksUrl(url.to_owned())
}

fn create(msg: pb::JwtCredential) -> Result<(String, JwtCredential), String> {
    JwtCredential::create(
        msg,
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(7),
    )
    .map_err(|e| e.to_string())
}

/// The error of `msg`, checked to carry neither the secret nor any of the PEM's lines.
fn error(msg: pb::JwtCredential) -> String {
    let pem_lines: Vec<String> = match &msg.key {
        Some(pb::jwt_credential::Key::PublicKeyPem(text)) => text
            .lines()
            .filter(|l| l.len() >= 8 && !l.starts_with("-----"))
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    let err = create(msg).expect_err("accepted");
    assert!(!err.contains("hs256-secret"), "the secret in: {err}");
    assert!(!err.contains("-----END"), "a PEM in: {err}");
    for line in pem_lines {
        assert!(!err.contains(&line), "a PEM line in: {err}");
    }
    err
}

#[test]
fn an_hs256_secret_is_kept_but_never_shown() {
    let (consumer, c) = create(request(secret())).unwrap();
    assert_eq!(consumer, "alice");
    assert!(c.id.starts_with("j-") && c.id.len() == 14, "{}", c.id);
    assert!(c.id[2..].bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(c.key.algorithm(), Some(JwtAlgorithm::Hs256));
    assert_eq!((c.claim.as_str(), c.kid.as_deref()), ("sub", None));
    assert_eq!(c.created, 7);
    let public = c.to_public("alice");
    assert_eq!(public.algorithm(), pb::JwtAlgorithm::Hs256);
    assert_eq!(
        public.key,
        Some(pb::jwt_credential::Key::Hs256Secret(Vec::new()))
    );
    let streamed = c.to_pb_with_secret("alice");
    assert_eq!(streamed.key, Some(secret()));
    assert_eq!(streamed.consumer, "alice");
    let debug = format!("{c:?} {public:?} {streamed:?}");
    assert!(!debug.contains("hs256-secret"), "{debug}");
    // Explicitly asking for HS256 is the same.
    let (_, again) = create(pb::JwtCredential {
        algorithm: pb::JwtAlgorithm::Hs256.into(),
        ..request(secret())
    })
    .unwrap();
    assert_eq!(again.key.algorithm(), Some(JwtAlgorithm::Hs256));
    assert_ne!(again.id, c.id);
}

#[test]
fn the_algorithm_comes_from_the_public_key() {
    let cases = [
        (rsa_2048().to_owned(), JwtAlgorithm::Rs256),
        (
            public_pem(&rcgen::PKCS_ECDSA_P256_SHA256),
            JwtAlgorithm::Es256,
        ),
        (public_pem(&rcgen::PKCS_ED25519), JwtAlgorithm::EdDsa),
    ];
    for (text, alg) in cases {
        let (_, c) = create(request(pem(&text))).unwrap();
        assert_eq!(c.key.algorithm(), Some(alg));
        // Stored re-encoded from the DER: the same key, in canonical form.
        let JwtKey::PublicKeyPem { pem: stored, .. } = &c.key else {
            panic!("{c:?}")
        };
        let squash = |s: &str| s.split_whitespace().collect::<String>();
        assert_eq!(squash(stored), squash(&text));
        assert_eq!(c.to_public("alice").algorithm(), alg.to_pb());
        assert_eq!(c.to_public("alice").key, Some(pem(stored)));
        // The explicit algorithm may say the same thing.
        let same = pb::JwtCredential {
            algorithm: alg.to_pb().into(),
            ..request(pem(&text))
        };
        assert!(create(same).is_ok());
    }
    // Text around the block (comments, a blank line) is not kept.
    let noisy = format!("key for the test IdP\n\n{}\n", rsa_2048());
    let (_, c) = create(request(pem(&noisy))).unwrap();
    let JwtKey::PublicKeyPem { pem: stored, .. } = &c.key else {
        panic!("{c:?}")
    };
    assert!(
        stored.starts_with("-----BEGIN PUBLIC KEY-----\n"),
        "{stored}"
    );
    assert!(stored.lines().all(|l| l.len() <= 64), "{stored}");
}

#[test]
fn a_jwks_url_is_https_or_loopback_http() {
    for url in [
        "https://idp.example/.well-known/jwks.json",
        "https://idp.example:8443/keys?tenant=1",
        "http://127.0.0.1:9000/jwks",
        "http://[::1]/jwks",
        "http://localhost:8080/jwks",
    ] {
        let (_, c) = create(request(jwks(url))).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(c.key.algorithm(), None, "{url}");
        let public = c.to_public("alice");
        assert_eq!(public.algorithm(), pb::JwtAlgorithm::Unspecified);
        assert_eq!(public.key, Some(jwks(url)));
    }
}

#[test]
fn bad_keys_are_refused_naming_the_field() {
    let cases: Vec<(pb::JwtCredential, &str)> = vec![
        (
            request(pb::jwt_credential::Key::Hs256Secret(b"short".to_vec())),
            "credential.hs256_secret: 5 bytes is too short: at least 32 bytes",
        ),
        (
            request(pb::jwt_credential::Key::Hs256Secret(vec![7; 31])),
            "credential.hs256_secret: 31 bytes is too short",
        ),
        (
            request(pb::jwt_credential::Key::Hs256Secret(vec![7; 5000])),
            "credential.hs256_secret: 5000 bytes is too long",
        ),
        (
            request(pem("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ user@host")),
            "credential.public_key_pem: not a PEM public key: expected a '-----BEGIN PUBLIC KEY-----' block",
        ),
        (
            request(pem(
                "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n",
            )),
            "credential.public_key_pem: not a PEM public key: the PEM encoding is damaged",
        ),
        (
            request(pem(
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            )),
            "credential.public_key_pem: not a public key: the PEM block is not a SubjectPublicKeyInfo",
        ),
        (
            request(pem(&openssl_rsa_public(1024))),
            "credential.public_key_pem: an RSA key of 1024 bits; RS256 needs 2048 to 8192 bits",
        ),
        (
            request(pem(&public_pem(&rcgen::PKCS_ECDSA_P384_SHA384))),
            "credential.public_key_pem: an EC key on P-384; ES256 needs P-256",
        ),
        (
            request(pem(&format!("{}{}", rsa_2048(), rsa_2048()))),
            "credential.public_key_pem: holds 2 public keys; give one per credential",
        ),
        (
            request(jwks("ftp://idp.example/jwks")),
            "credential.jwks_url: must start with https:// (or http:// to a loopback address)",
        ),
        (
            request(jwks("http://idp.example/jwks")),
            "credential.jwks_url: http:// is only allowed to a loopback address",
        ),
        (
            request(jwks("http://10.0.0.1/jwks")),
            "credential.jwks_url: http:// is only allowed to a loopback address",
        ),
        (
            request(jwks("https://user:pw@idp.example/jwks")),
            "credential.jwks_url: must not contain credentials",
        ),
        (
            request(jwks("idp.example/jwks")),
            "credential.jwks_url: not a URL; expected https://HOST/PATH",
        ),
        // Forms that look local, or look like https, and are not.
        (
            request(jwks("http://127.0.0.1@evil.example/jwks")),
            "credential.jwks_url: must not contain credentials",
        ),
        (
            request(jwks("http://localhost.evil.com/jwks")),
            "credential.jwks_url: http:// is only allowed to a loopback address",
        ),
        (
            request(jwks("http://127.0.0.1.evil.com/jwks")),
            "credential.jwks_url: http:// is only allowed to a loopback address",
        ),
        (
            request(jwks("http://127.1/jwks")),
            "credential.jwks_url: http:// is only allowed to a loopback address",
        ),
        (
            request(jwks("http://[::ffff:127.0.0.1]/jwks")),
            "credential.jwks_url: http:// is only allowed to a loopback address",
        ),
        (
            request(jwks("HTTP://evil.example/jwks")),
            "credential.jwks_url: http:// is only allowed to a loopback address",
        ),
        (request(jwks("")), "credential.jwks_url: required"),
        (
            pb::JwtCredential {
                key: None,
                ..request(secret())
            },
            "credential.key: required: one of hs256_secret, public_key_pem or jwks_url",
        ),
    ];
    for (msg, expected) in cases {
        let err = error(msg);
        assert!(err.contains(expected), "expected {expected:?} in: {err}");
    }
}

#[test]
fn a_private_key_is_refused_without_being_echoed() {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let private = pair.serialize_pem();
    let both = format!("{private}{}", pair.public_key_pem());
    for text in [private.clone(), both] {
        let err = error(request(pem(&text)));
        assert!(
            err.starts_with("credential.public_key_pem: holds a private key"),
            "{err}"
        );
        let body = private.lines().nth(1).unwrap();
        assert!(!err.contains(body), "{err}");
    }
}

#[test]
fn a_p256_point_off_the_curve_is_refused() {
    let good = public_pem(&rcgen::PKCS_ECDSA_P256_SHA256);
    let der = rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_slice(good.as_bytes()).unwrap();
    let mut der = der.as_ref().to_vec();
    // The point is the last 65 bytes; change y so that (x, y) is not on the curve.
    let last = der.len() - 1;
    der[last] ^= 1;
    let bad = format!(
        "-----BEGIN PUBLIC KEY-----\n{}-----END PUBLIC KEY-----\n",
        wrap(&base64::engine::general_purpose::STANDARD.encode(&der))
    );
    let err = error(request(pem(&bad)));
    assert!(
        err.contains(
            "credential.public_key_pem: damaged P-256 public key: the point is not on the curve"
        ),
        "{err}"
    );
}

#[test]
fn an_algorithm_that_contradicts_the_key_is_refused() {
    let ed = public_pem(&rcgen::PKCS_ED25519);
    let cases = [
        (
            pb::JwtCredential {
                algorithm: pb::JwtAlgorithm::Rs256.into(),
                ..request(secret())
            },
            "credential.algorithm: RS256 does not match the key, an HS256 secret",
        ),
        (
            pb::JwtCredential {
                algorithm: pb::JwtAlgorithm::Hs256.into(),
                ..request(pem(rsa_2048()))
            },
            "credential.algorithm: HS256 does not match the key, an RSA public key (RS256)",
        ),
        (
            pb::JwtCredential {
                algorithm: pb::JwtAlgorithm::Es256.into(),
                ..request(pem(&ed))
            },
            "credential.algorithm: ES256 does not match the key, an Ed25519 public key (EdDSA)",
        ),
        (
            pb::JwtCredential {
                algorithm: pb::JwtAlgorithm::Rs256.into(),
                ..request(jwks("https://idp.example/jwks"))
            },
            "credential.algorithm: a JWKS URL's keys carry their own algorithm",
        ),
        (
            pb::JwtCredential {
                algorithm: 42,
                ..request(secret())
            },
            "credential.algorithm: unknown value 42",
        ),
    ];
    for (msg, expected) in cases {
        let err = error(msg);
        assert!(err.contains(expected), "expected {expected:?} in: {err}");
    }
}

#[test]
fn issuer_claim_kid_audiences_and_consumer_are_checked() {
    let cases = [
        (
            pb::JwtCredential {
                issuer: String::new(),
                ..request(secret())
            },
            "credential.issuer: required",
        ),
        (
            pb::JwtCredential {
                issuer: "x".repeat(1025),
                ..request(secret())
            },
            "credential.issuer: must be at most 1024 bytes",
        ),
        (
            pb::JwtCredential {
                issuer: "https://idp\n.example".into(),
                ..request(secret())
            },
            "credential.issuer: must not contain control characters",
        ),
        (
            pb::JwtCredential {
                issuer: "https://idp.example ".into(),
                ..request(secret())
            },
            "credential.issuer: 'https://idp.example ' must not start or end with whitespace",
        ),
        (
            pb::JwtCredential {
                issuer: "https://idp\u{202e}elpmaxe".into(),
                ..request(secret())
            },
            "credential.issuer: must not contain invisible format characters",
        ),
        (
            pb::JwtCredential {
                audiences: vec![" api".into()],
                ..request(secret())
            },
            "credential.audiences[0]: ' api' must not start or end with whitespace",
        ),
        (
            pb::JwtCredential {
                kid: "k1\u{200b}".into(),
                ..request(secret())
            },
            "credential.kid: must not contain invisible format characters",
        ),
        (
            pb::JwtCredential {
                claim: "exp".into(),
                ..request(secret())
            },
            "credential.claim: 'exp' cannot name a consumer",
        ),
        (
            pb::JwtCredential {
                claim: "user name".into(),
                ..request(secret())
            },
            "credential.claim: 'user name' must not contain whitespace",
        ),
        (
            pb::JwtCredential {
                kid: "k1".into(),
                ..request(jwks("https://idp.example/jwks"))
            },
            "credential.kid: only for an HS256 secret or a public key",
        ),
        (
            pb::JwtCredential {
                audiences: vec!["api".into(), String::new()],
                ..request(secret())
            },
            "credential.audiences[1]: required",
        ),
        (
            pb::JwtCredential {
                audiences: (0..17).map(|i| format!("a{i}")).collect(),
                ..request(secret())
            },
            "credential.audiences: at most 16 audiences",
        ),
        (
            pb::JwtCredential {
                consumer: String::new(),
                ..request(secret())
            },
            "credential.consumer: required",
        ),
        (
            pb::JwtCredential {
                consumer: "Alice".into(),
                ..request(secret())
            },
            "credential.consumer: 'Alice' must be a lowercase DNS label",
        ),
    ];
    for (msg, expected) in cases {
        let err = error(msg);
        assert!(err.contains(expected), "expected {expected:?} in: {err}");
    }
    // All problems of one request at once.
    let err = error(pb::JwtCredential {
        issuer: String::new(),
        claim: "aud".into(),
        ..request(pb::jwt_credential::Key::Hs256Secret(b"short".to_vec()))
    });
    for field in [
        "credential.issuer",
        "credential.hs256_secret",
        "credential.claim",
    ] {
        assert!(err.contains(field), "{field} in {err}");
    }
    // Good values are kept; duplicate audiences are dropped.
    let (_, c) = create(pb::JwtCredential {
        claim: "preferred_username".into(),
        kid: "2024-key".into(),
        audiences: vec!["api".into(), "web".into(), "api".into()],
        ..request(secret())
    })
    .unwrap();
    assert_eq!(c.claim, "preferred_username");
    assert_eq!(c.kid.as_deref(), Some("2024-key"));
    assert_eq!(c.audiences, ["api", "web"]);
    let public = c.to_public("alice");
    assert_eq!(
        (public.kid.as_str(), public.claim.as_str()),
        ("2024-key", "preferred_username")
    );
}

#[test]
fn algorithm_names_round_trip() {
    for alg in [
        JwtAlgorithm::Hs256,
        JwtAlgorithm::Rs256,
        JwtAlgorithm::Es256,
        JwtAlgorithm::EdDsa,
    ] {
        assert_eq!(JwtAlgorithm::from_name(alg.name()), Some(alg));
        assert_eq!(JwtAlgorithm::from_pb(alg.to_pb().into()), Ok(Some(alg)));
    }
    assert_eq!(JwtAlgorithm::from_name("none"), None);
    assert_eq!(JwtAlgorithm::from_pb(0), Ok(None));
}
