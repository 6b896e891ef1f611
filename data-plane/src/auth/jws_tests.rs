//! Tests of `jws` (keys and signatures). A sibling of `jws` rather than its child: they use
//! `testing`, which itself builds on `jws`, and imports flow one way.

use super::jws::{Alg, HmacSecret, Jwk, KeyMaterial, VerifyKey};
use super::testing::{Signer, rsa_keypair};

#[test]
fn each_key_type_verifies_its_own_signature_and_refuses_a_tampered_one() {
    for signer in Signer::one_of_each() {
        let key = VerifyKey::from_material(&signer.material()).unwrap();
        assert_eq!(key.alg(), signer.alg());
        let sig = signer.sign(b"header.payload");
        assert!(key.verify(b"header.payload", &sig), "{:?}", signer.alg());
        assert!(!key.verify(b"header.payloaD", &sig), "{:?}", signer.alg());
        let mut bad = sig.clone();
        bad[0] ^= 1;
        assert!(!key.verify(b"header.payload", &bad), "{:?}", signer.alg());
        assert!(!key.verify(b"header.payload", &[]), "{:?}", signer.alg());
    }
}

#[test]
fn a_key_of_another_type_than_configured_is_named() {
    let ec = Signer::es256();
    let ed = Signer::ed25519();
    let rsa_pem = rsa_keypair().1.clone();
    let cases = [
        (
            KeyMaterial::RsaPublicPem(ec.public_pem()),
            "expected an RSA public key, found a P-256 EC key",
        ),
        (
            KeyMaterial::EcP256PublicPem(rsa_pem.clone()),
            "expected a P-256 EC public key, found an RSA key",
        ),
        (
            KeyMaterial::Ed25519PublicPem(rsa_pem),
            "expected an Ed25519 public key, found an RSA key",
        ),
        (
            KeyMaterial::RsaPublicPem(ed.public_pem()),
            "expected an RSA public key, found an Ed25519 key",
        ),
    ];
    for (material, want) in cases {
        let err = VerifyKey::from_material(&material).unwrap_err().to_string();
        assert_eq!(err, want);
    }
}

#[test]
fn bad_key_material_is_an_error_not_a_panic() {
    let cases: [(KeyMaterial, &str); 4] = [
        (
            KeyMaterial::RsaPublicPem("hello".into()),
            "not a PEM public key",
        ),
        (
            KeyMaterial::Ed25519PublicPem(
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".into(),
            ),
            "malformed public key",
        ),
        (
            KeyMaterial::EcP256PublicPem(
                "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n".into(),
            ),
            "malformed public key",
        ),
        (
            KeyMaterial::Hs256Secret(HmacSecret::new(*b"short-secret")),
            "12 bytes is too short",
        ),
    ];
    for (material, want) in cases {
        let err = VerifyKey::from_material(&material).unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} should contain {want:?}");
    }
}

#[test]
fn secrets_are_redacted_and_never_in_errors() {
    let secret = HmacSecret::new(*b"sixteen-byte-key");
    let material = KeyMaterial::Hs256Secret(secret.clone());
    assert_eq!(format!("{secret:?}"), "***");
    assert_eq!(format!("{material:?}"), "Hs256Secret(***)");
    let err = VerifyKey::from_material(&material).unwrap_err();
    assert!(!format!("{err} {err:?}").contains("sixteen"));
    let long = KeyMaterial::Hs256Secret(HmacSecret::new(*b"a-long-enough-secret-of-32-bytes"));
    let key = VerifyKey::from_material(&long).unwrap();
    assert!(!format!("{key:?}").contains("a-long"));
}

#[test]
fn jwks_entries_become_keys_of_their_one_algorithm() {
    for signer in Signer::one_of_each() {
        let jwk_json = signer.jwk("k1");
        let jwk: Jwk<'_> = serde_json::from_str(&jwk_json).unwrap();
        match signer.alg() {
            // A shared secret never comes from a public key set.
            Alg::Hs256 => assert_eq!(
                jwk.to_key().unwrap_err(),
                "symmetric key in a public key set"
            ),
            alg => {
                let key = jwk.to_key().unwrap();
                assert_eq!(key.alg(), alg);
                assert!(key.verify(b"m", &signer.sign(b"m")), "{alg:?}");
            }
        }
    }
}

#[test]
fn unusable_jwks_entries_say_why() {
    let cases = [
        (
            r#"{"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"}"#,
            "not a signature key",
        ),
        (r#"{"kty":"RSA","e":"AQAB"}"#, "RSA key without 'n'"),
        (
            r#"{"kty":"RSA","n":"AQAB","e":"AQAB"}"#,
            "RSA key outside 2048 to 8192 bits",
        ),
        (
            r#"{"kty":"EC","crv":"P-384","x":"AA","y":"AA"}"#,
            "unsupported curve",
        ),
        (
            r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}"#,
            "P-256 coordinates must be 32 bytes each",
        ),
        (
            r#"{"kty":"OKP","crv":"Ed25519","x":"%%"}"#,
            "Ed25519 key 'x' is not base64url",
        ),
        (r#"{"kty":"XYZ"}"#, "unsupported key type"),
    ];
    for (json, want) in cases {
        let jwk: Jwk<'_> = serde_json::from_str(json).unwrap();
        let err = jwk.to_key().unwrap_err();
        assert!(
            err.contains(want),
            "{json}: {err:?} should contain {want:?}"
        );
    }
    let ed = Signer::ed25519();
    let mut jwk: serde_json::Value = serde_json::from_str(&ed.jwk("k")).unwrap();
    jwk["alg"] = "ES256".into();
    let text = jwk.to_string();
    let jwk: Jwk<'_> = serde_json::from_str(&text).unwrap();
    assert!(jwk.to_key().unwrap_err().contains("unsupported algorithm"));
}

#[test]
fn algorithm_names_are_exact() {
    for alg in [Alg::Hs256, Alg::Rs256, Alg::Es256, Alg::EdDsa] {
        assert_eq!(Alg::from_name(alg.name()), Some(alg));
    }
    for other in [
        "none", "None", "hs256", "RS384", "PS256", "ES384", "Ed25519", "",
    ] {
        assert_eq!(Alg::from_name(other), None, "{other}");
    }
}
