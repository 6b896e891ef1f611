use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::*;
use crate::auth::testing::{Signer, sign_parts};

const ISS: &str = "https://idp.example";
/// The tests' clock: a fixed instant, passed to `verify`, never the machine's clock.
const NOW: u64 = 1_800_000_000;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
}

fn claims() -> Value {
    json!({ "iss": ISS, "sub": "alice", "aud": "api", "iat": NOW, "exp": NOW + 600 })
}

/// Alice's credential for [`ISS`] with `signer`'s key.
fn issuer(signer: &Signer, kid: Option<&str>, audiences: &[&str]) -> JwtCredential {
    JwtCredential {
        consumer: "alice".into(),
        issuer: ISS.into(),
        audiences: audiences.iter().map(|a| a.to_string()).collect(),
        consumer_claim: "sub".into(),
        keys: CredentialKeys::Static(vec![JwtKey {
            kid: kid.map(Into::into),
            material: signer.material(),
        }]),
    }
}

fn verifier(signer: &Signer) -> JwtVerifier {
    JwtVerifier::new(vec![issuer(signer, Some("k1"), &["api"])]).unwrap()
}

fn alice() -> Verified {
    Verified {
        issuer: ISS.into(),
        consumer: "alice".into(),
    }
}

#[test]
fn a_valid_token_of_each_algorithm_names_its_consumer() {
    for signer in Signer::one_of_each() {
        let v = verifier(&signer);
        let token = signer.token(Some("k1"), &claims());
        assert_eq!(v.verify(&token, now()), Ok(alice()), "{:?}", signer.alg());
        // A token without kid is checked with every key of its algorithm.
        let token = signer.token(None, &claims());
        assert_eq!(v.verify(&token, now()), Ok(alice()), "{:?}", signer.alg());
    }
}

#[test]
fn a_tampered_token_has_a_bad_signature() {
    for signer in Signer::one_of_each() {
        let v = verifier(&signer);
        let token = signer.token(Some("k1"), &claims());
        let (head, sig) = token.rsplit_once('.').unwrap();
        let (header, _) = head.split_once('.').unwrap();
        // Another payload under the original signature: a longer life.
        let mut forged = claims();
        forged["exp"] = (NOW + 86_400).into();
        let forged_payload = URL_SAFE_NO_PAD.encode(forged.to_string());
        let swapped = format!("{header}.{forged_payload}.{sig}");
        assert_eq!(
            v.verify(&swapped, now()),
            Err(JwtReject::BadSignature),
            "{:?}",
            signer.alg()
        );
        // One bit of the signature flipped.
        let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
        raw[5] ^= 0x01;
        let flipped = format!("{head}.{}", URL_SAFE_NO_PAD.encode(&raw));
        assert_eq!(
            v.verify(&flipped, now()),
            Err(JwtReject::BadSignature),
            "{:?}",
            signer.alg()
        );
        // Signed by another key of the same algorithm.
        let other = match signer.alg() {
            Alg::Hs256 => Signer::hs256(),
            Alg::Es256 => Signer::es256(),
            Alg::EdDsa => Signer::ed25519(),
            // One RSA key per test binary: sign with an HS256 key under RS256's header.
            Alg::Rs256 => {
                let hs = Signer::hs256();
                let t = sign_parts(&json!({"alg": "RS256", "kid": "k1"}), &claims(), |m| {
                    hs.sign(m)
                });
                assert_eq!(v.verify(&t, now()), Err(JwtReject::BadSignature));
                continue;
            }
        };
        let t = other.token(Some("k1"), &claims());
        assert_eq!(
            v.verify(&t, now()),
            Err(JwtReject::BadSignature),
            "{:?}",
            signer.alg()
        );
    }
}

#[test]
fn expiry_and_not_before_allow_the_leeway_and_no_more() {
    let signer = Signer::ed25519();
    let v = verifier(&signer);
    let leeway = LEEWAY.as_secs();
    let at = |exp: u64, nbf: Option<u64>| {
        let mut c = claims();
        c["exp"] = exp.into();
        if let Some(nbf) = nbf {
            c["nbf"] = nbf.into();
        }
        v.verify(&signer.token(Some("k1"), &c), now())
    };
    // (exp, nbf, expected)
    let cases: [(u64, Option<u64>, Result<Verified, JwtReject>); 8] = [
        (NOW + 1, None, Ok(alice())),
        (NOW, None, Ok(alice())),
        (NOW - leeway + 1, None, Ok(alice())),
        (NOW - leeway, None, Err(JwtReject::Expired)),
        (NOW - 3600, None, Err(JwtReject::Expired)),
        (NOW + 600, Some(NOW + leeway), Ok(alice())),
        (
            NOW + 600,
            Some(NOW + leeway + 1),
            Err(JwtReject::NotYetValid),
        ),
        (NOW + 7200, Some(NOW + 3600), Err(JwtReject::NotYetValid)),
    ];
    for (exp, nbf, want) in cases {
        assert_eq!(at(exp, nbf), want, "exp {exp} nbf {nbf:?} (now {NOW})");
    }
    // Fractional NumericDates are allowed.
    let mut c = claims();
    c["exp"] = json!(NOW as f64 + 0.5);
    assert_eq!(v.verify(&signer.token(Some("k1"), &c), now()), Ok(alice()));
    // A token that never expires is refused.
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        v.verify(&signer.token(Some("k1"), &c), now()),
        Err(JwtReject::Malformed)
    );
}

#[test]
fn an_unknown_or_missing_issuer_is_refused() {
    let signer = Signer::es256();
    let v = verifier(&signer);
    for iss in [
        json!("https://evil.example"),
        json!(""),
        json!(ISS.to_uppercase()),
        json!(7),
    ] {
        let mut c = claims();
        c["iss"] = iss.clone();
        let t = signer.token(Some("k1"), &c);
        assert_eq!(v.verify(&t, now()), Err(JwtReject::UnknownIssuer), "{iss}");
    }
    let mut c = claims();
    c.as_object_mut().unwrap().remove("iss");
    assert_eq!(
        v.verify(&signer.token(Some("k1"), &c), now()),
        Err(JwtReject::UnknownIssuer)
    );
}

#[test]
fn audience_is_checked_when_configured() {
    let signer = Signer::hs256();
    let checked = JwtVerifier::new(vec![issuer(&signer, None, &["api", "admin"])]).unwrap();
    let unchecked = JwtVerifier::new(vec![issuer(&signer, None, &[])]).unwrap();
    let cases = [
        (Some(json!("api")), true),
        (Some(json!("admin")), true),
        (Some(json!(["other", "admin"])), true),
        (Some(json!("other")), false),
        (Some(json!(["other", "x"])), false),
        (Some(json!([])), false),
        (Some(json!("API")), false),
        (None, false),
    ];
    for (aud, accepted) in cases {
        let mut c = claims();
        match &aud {
            Some(a) => c["aud"] = a.clone(),
            None => {
                c.as_object_mut().unwrap().remove("aud");
            }
        }
        let t = signer.token(None, &c);
        let want = if accepted {
            Ok(alice())
        } else {
            Err(JwtReject::WrongAudience)
        };
        assert_eq!(checked.verify(&t, now()), want, "aud {aud:?}");
        assert_eq!(unchecked.verify(&t, now()), Ok(alice()), "aud {aud:?}");
    }
}

#[test]
fn alg_none_is_refused_in_every_spelling() {
    let signer = Signer::hs256();
    let v = verifier(&signer);
    for alg in ["none", "None", "NONE", "nOnE"] {
        for sig in ["", "AAAA"] {
            let t = sign_parts(&json!({"alg": alg, "kid": "k1"}), &claims(), |_| Vec::new());
            let t = format!("{t}{sig}");
            assert_eq!(
                v.verify(&t, now()),
                Err(JwtReject::AlgNone),
                "{alg} sig {sig:?}"
            );
        }
    }
}

/// The classic confusion attack: an HS256 token whose HMAC key is the issuer's RSA (or EC,
/// Ed25519) *public* key, which anyone has. A verifier that trusted the header's `alg` would
/// key an HMAC with the PEM and accept it.
#[test]
fn an_hs256_token_is_never_checked_against_a_public_key() {
    for signer in [Signer::rs256(), Signer::es256(), Signer::ed25519()] {
        let v = verifier(&signer);
        let public = signer.public_pem();
        let attacker = Signer::hs256_with(public.as_bytes());
        for kid in [Some("k1"), None] {
            let t = attacker.token(kid, &claims());
            assert_eq!(
                v.verify(&t, now()),
                Err(JwtReject::AlgMismatch),
                "{:?} kid {kid:?}",
                signer.alg()
            );
        }
    }
    // With an HS256 key configured beside the RSA key, the forged token selects the RSA key
    // by kid (mismatch) or, without kid, is checked with the real secret only (bad signature).
    let rsa = Signer::rs256();
    let hs = Signer::hs256();
    let both = JwtCredential {
        keys: CredentialKeys::Static(vec![
            JwtKey {
                kid: Some("rsa".into()),
                material: rsa.material(),
            },
            JwtKey {
                kid: Some("hs".into()),
                material: hs.material(),
            },
        ]),
        ..issuer(&rsa, None, &[])
    };
    let v = JwtVerifier::new(vec![both]).unwrap();
    let attacker = Signer::hs256_with(rsa.public_pem().as_bytes());
    assert_eq!(
        v.verify(&attacker.token(Some("rsa"), &claims()), now()),
        Err(JwtReject::AlgMismatch)
    );
    assert_eq!(
        v.verify(&attacker.token(None, &claims()), now()),
        Err(JwtReject::BadSignature)
    );
    assert_eq!(
        v.verify(&hs.token(Some("hs"), &claims()), now()),
        Ok(alice())
    );
    assert_eq!(
        v.verify(&rsa.token(Some("rsa"), &claims()), now()),
        Ok(alice())
    );
    // An RS256 header on a key of another type is a mismatch too, as is an unsupported alg.
    let ed = Signer::ed25519();
    let v = verifier(&ed);
    for alg in ["RS256", "ES256", "HS256", "PS256", "EdDSA384"] {
        let t = sign_parts(&json!({"alg": alg, "kid": "k1"}), &claims(), |m| ed.sign(m));
        assert_eq!(v.verify(&t, now()), Err(JwtReject::AlgMismatch), "{alg}");
    }
}

#[test]
fn key_ids_select_the_key() {
    let (a, b) = (Signer::ed25519(), Signer::es256());
    let two = JwtCredential {
        keys: CredentialKeys::Static(vec![
            JwtKey {
                kid: Some("a".into()),
                material: a.material(),
            },
            JwtKey {
                kid: Some("b".into()),
                material: b.material(),
            },
        ]),
        ..issuer(&a, None, &[])
    };
    let v = JwtVerifier::new(vec![two]).unwrap();
    assert_eq!(v.verify(&a.token(Some("a"), &claims()), now()), Ok(alice()));
    assert_eq!(v.verify(&b.token(Some("b"), &claims()), now()), Ok(alice()));
    assert_eq!(v.verify(&a.token(None, &claims()), now()), Ok(alice()));
    assert_eq!(
        v.verify(&a.token(Some("c"), &claims()), now()),
        Err(JwtReject::UnknownKey)
    );
    // a's token under b's kid: b is ES256, the token EdDSA.
    assert_eq!(
        v.verify(&a.token(Some("b"), &claims()), now()),
        Err(JwtReject::AlgMismatch)
    );
}

#[test]
fn the_consumer_comes_from_the_configured_claim() {
    let signer = Signer::ed25519();
    let mut cred = issuer(&signer, None, &[]);
    cred.consumer = "svc-7".into();
    cred.consumer_claim = "client_id".into();
    let v = JwtVerifier::new(vec![cred]).unwrap();
    let with = |value: Option<Value>| {
        let mut c = claims();
        if let Some(value) = value {
            c["client_id"] = value;
        }
        v.verify(&signer.token(None, &c), now())
    };
    let svc7 = Verified {
        issuer: ISS.into(),
        consumer: "svc-7".into(),
    };
    assert_eq!(with(Some(json!("svc-7"))), Ok(svc7));
    // `sub` is alice, but this issuer names consumers by client_id.
    for other in ["alice", "svc-8", "SVC-7", "svc-7 "] {
        assert_eq!(
            with(Some(json!(other))),
            Err(JwtReject::UnknownConsumer),
            "{other}"
        );
    }
    for missing in [
        None,
        Some(json!("")),
        Some(json!(7)),
        Some(json!(null)),
        Some(json!(["a"])),
        Some(json!({"a": 1})),
    ] {
        assert_eq!(
            with(missing.clone()),
            Err(JwtReject::MissingConsumerClaim),
            "{missing:?}"
        );
    }
}

/// The property the verifier is organised around: a token naming bob is checked with bob's
/// keys only. Alice knows her HS256 secret and holds her private key; with either she can
/// sign `sub: bob`, and neither may authenticate bob, even though both credentials have the
/// same issuer.
#[test]
fn one_consumers_key_never_authenticates_another() {
    for alice_key in Signer::one_of_each() {
        let bob_key = Signer::ed25519();
        let alices = issuer(&alice_key, None, &[]);
        let bobs = JwtCredential {
            consumer: "bob".into(),
            ..issuer(&bob_key, None, &[])
        };
        let v = JwtVerifier::new(vec![alices, bobs]).unwrap();
        let as_bob = |c: &mut Value| c["sub"] = "bob".into();
        let mut c = claims();
        as_bob(&mut c);
        let bob_ok = Verified {
            issuer: ISS.into(),
            consumer: "bob".into(),
        };
        assert_eq!(v.verify(&bob_key.token(None, &c), now()), Ok(bob_ok));
        assert_eq!(
            v.verify(&alice_key.token(None, &claims()), now()),
            Ok(alice())
        );
        // Alice's key, bob's name: checked with bob's (Ed25519) key alone.
        let forged = alice_key.token(None, &c);
        let want = if alice_key.alg() == Alg::EdDsa {
            JwtReject::BadSignature
        } else {
            JwtReject::AlgMismatch
        };
        assert_eq!(v.verify(&forged, now()), Err(want), "{:?}", alice_key.alg());
        // And the cache, warm with alice's token, changes nothing.
        assert_eq!(v.verify(&forged, now()), Err(want));
    }
}

#[test]
fn malformed_tokens_are_refused_without_panicking() {
    let signer = Signer::hs256();
    let v = verifier(&signer);
    let good = signer.token(Some("k1"), &claims());
    let (h, rest) = good.split_once('.').unwrap();
    let b = |s: &str| URL_SAFE_NO_PAD.encode(s);
    let cases: Vec<String> = vec![
        String::new(),
        ".".into(),
        "..".into(),
        "a.b".into(),
        format!("{good}.x"),
        format!("{good}="),
        format!("{h}=.{rest}"),
        format!("{}.{rest}", b("not json")),
        format!("{}.{rest}", b("[]")),
        format!("{}.{rest}", b(r#"{"kid":"k1"}"#)),
        format!("{}.{rest}", b(r#"{"alg":"HS256","alg":"none"}"#)),
        format!("{}.{rest}", b(r#"{"alg":"HS256","crit":["exp"]}"#)),
        format!("{h}.{}.AAAA", b("not json")),
        "x".repeat(MAX_TOKEN_BYTES + 1),
    ];
    for t in &cases {
        assert_eq!(v.verify(t, now()), Err(JwtReject::Malformed), "{t:.80}");
    }
    // Repeated claims are ambiguous (parsers disagree on which wins): refused once signed.
    for payload in [
        format!(
            r#"{{"iss":"{ISS}","iss":"x","sub":"a","exp":{}}}"#,
            NOW + 60
        ),
        format!(
            r#"{{"iss":"{ISS}","sub":"a","sub":"b","exp":{}}}"#,
            NOW + 60
        ),
        format!(r#"{{"iss":"{ISS}","sub":"a","exp":{},"exp":1}}"#, NOW + 60),
        format!(r#"{{"iss":"{ISS}","sub":"a","exp":"soon"}}"#),
    ] {
        let input = format!("{}.{}", b(r#"{"alg":"HS256"}"#), b(&payload));
        let t = format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(signer.sign(input.as_bytes()))
        );
        assert_eq!(v.verify(&t, now()), Err(JwtReject::Malformed), "{payload}");
    }
}

#[test]
fn only_expired_has_its_own_reason() {
    let all = [
        JwtReject::Malformed,
        JwtReject::AlgNone,
        JwtReject::AlgMismatch,
        JwtReject::UnknownIssuer,
        JwtReject::UnknownConsumer,
        JwtReject::UnknownKey,
        JwtReject::BadSignature,
        JwtReject::Expired,
        JwtReject::NotYetValid,
        JwtReject::WrongAudience,
        JwtReject::MissingConsumerClaim,
    ];
    for r in all {
        let want = if r == JwtReject::Expired {
            "expired"
        } else {
            "invalid"
        };
        assert_eq!(r.reason(), want, "{r:?}");
        assert!(!r.to_string().is_empty());
    }
}

#[test]
fn config_errors_name_every_bad_credential_and_key_and_no_secret() {
    let ed = Signer::ed25519();
    let short = "tiny-secret-xyz";
    let credentials = vec![
        JwtCredential {
            keys: CredentialKeys::Static(vec![
                JwtKey {
                    kid: Some("good".into()),
                    material: ed.material(),
                },
                JwtKey {
                    kid: None,
                    material: KeyMaterial::RsaPublicPem(ed.public_pem()),
                },
                JwtKey {
                    kid: Some("hs".into()),
                    material: KeyMaterial::Hs256Secret(HmacSecret::new(short.as_bytes())),
                },
            ]),
            ..issuer(&ed, None, &[])
        },
        JwtCredential {
            issuer: "b".into(),
            keys: CredentialKeys::Static(vec![]),
            ..issuer(&ed, None, &[])
        },
        JwtCredential {
            issuer: "c".into(),
            consumer_claim: "exp".into(),
            ..issuer(&ed, None, &[])
        },
        JwtCredential {
            issuer: "d".into(),
            ..issuer(&ed, None, &[])
        },
        // Two credentials of one consumer and issuer are fine (a key rotation) ...
        JwtCredential {
            issuer: "d".into(),
            ..issuer(&ed, None, &["api"])
        },
        // ... two claims for one issuer are not.
        JwtCredential {
            issuer: "d".into(),
            consumer: "bob".into(),
            consumer_claim: "email".into(),
            ..issuer(&ed, None, &[])
        },
        JwtCredential {
            consumer: String::new(),
            ..issuer(&ed, None, &[])
        },
    ];
    let err = JwtVerifier::new(credentials).unwrap_err();
    assert_eq!(
        err.problems,
        [
            format!(
                "issuer {ISS:?}, consumer \"alice\", key #2: expected an RSA public key, found an Ed25519 key"
            ),
            format!(
                "issuer {ISS:?}, consumer \"alice\", key \"hs\": HS256 secret of 15 bytes is too short: at least 32 bytes (256 bits) are required"
            ),
            "issuer \"b\", consumer \"alice\": no keys (configure a key or a JWKS URL)".to_owned(),
            "issuer \"c\", consumer \"alice\": consumer claim \"exp\" cannot name a consumer (use a string claim such as \"sub\")".to_owned(),
            "issuer \"d\", consumer \"bob\": consumer claim \"email\" differs from \"sub\" of another credential of this issuer (one issuer, one claim)".to_owned(),
            format!("issuer {ISS:?}, consumer \"\": empty consumer name"),
        ]
    );
    let text = format!("{err} {err:?}");
    assert!(!text.contains(short), "{text}");
}

#[test]
fn verification_reads_no_clock_but_the_one_given() {
    // The same token is valid or expired depending only on `now`.
    let signer = Signer::ed25519();
    let v = verifier(&signer);
    let t = signer.token(Some("k1"), &claims());
    assert_eq!(v.verify(&t, now()), Ok(alice()));
    assert_eq!(
        v.verify(&t, now() + Duration::from_secs(3600)),
        Err(JwtReject::Expired)
    );
    assert_eq!(v.verify(&t, SystemTime::UNIX_EPOCH), Ok(alice()));
}

#[test]
fn a_cached_token_is_answered_as_a_fresh_check_would() {
    let signer = Signer::es256();
    let cached = verifier(&signer);
    let uncached = verifier(&signer).with_cache_capacity(0);
    let mut c = claims();
    c["nbf"] = (NOW - 10).into();
    let t = signer.token(Some("k1"), &c);
    assert_eq!(cached.verify(&t, now()), Ok(alice()));
    assert_eq!(cached.cache.as_ref().unwrap().len(), 1);
    let leeway = LEEWAY.as_secs();
    for at in [
        NOW,
        NOW + 599 + leeway,
        NOW + 600 + leeway,
        NOW - 10 - leeway,
        NOW - 11 - leeway,
        NOW + 9999,
    ] {
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(at);
        assert_eq!(
            cached.verify(&t, when),
            uncached.verify(&t, when),
            "at {at}"
        );
    }
    // The expired check dropped the entry; a check in its lifetime brings it back.
    assert_eq!(cached.cache.as_ref().unwrap().len(), 0);
    assert_eq!(cached.verify(&t, now()), Ok(alice()));
    // Rejections are never cached, and a near-copy of a cached token is checked in full.
    let (head, sig) = t.rsplit_once('.').unwrap();
    let near = format!("{head}.{}", &sig[..sig.len() - 1]);
    for _ in 0..2 {
        assert_ne!(cached.verify(&near, now()), Ok(alice()));
    }
    assert_eq!(cached.cache.as_ref().unwrap().len(), 1);
}

#[test]
fn a_long_token_is_verified_but_not_cached() {
    let signer = Signer::es256();
    let v = verifier(&signer);
    let mut c = claims();
    c["pad"] = "x".repeat(MAX_CACHED_TOKEN_BYTES).into();
    let long = signer.token(Some("k1"), &c);
    assert!(long.len() > MAX_CACHED_TOKEN_BYTES && long.len() <= MAX_TOKEN_BYTES);
    for _ in 0..2 {
        assert_eq!(v.verify(&long, now()), Ok(alice()));
    }
    assert_eq!(
        v.cache.as_ref().unwrap().len(),
        0,
        "a padded token fills no entry"
    );
    let short = signer.token(Some("k1"), &claims());
    assert_eq!(v.verify(&short, now()), Ok(alice()));
    assert_eq!(v.cache.as_ref().unwrap().len(), 1);
}
