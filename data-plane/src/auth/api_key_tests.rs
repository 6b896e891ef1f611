use super::*;
use gw_proto::v1 as pb;
use http::HeaderMap;
use sha2::{Digest, Sha256};

fn table() -> KeyTable {
    let key = |k: &str, expires: Option<i64>| pb::ApiKey {
        hash: Sha256::digest(k.as_bytes()).to_vec(),
        expires: expires.map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
        ..Default::default()
    };
    KeyTable::compile(
        &[
            pb::Consumer {
                name: "alice".into(),
                groups: vec!["gold".into()],
                api_keys: vec![key("gwk_alice", None), key("gwk_stale", Some(1))],
                updated_version: 1,
                ..Default::default()
            },
            pb::Consumer {
                name: "bob".into(),
                groups: vec![],
                api_keys: vec![key("gwk_bob", None)],
                updated_version: 1,
                ..Default::default()
            },
        ],
        &crate::stats::Registry::default(),
        &|_| Err("no JWKS in this test".into()),
    )
    .unwrap()
}

fn service(groups: &[&str]) -> ServiceAuth {
    ServiceAuth {
        key_sources: KeySources {
            bearer: true,
            header: true,
            query: false,
        },
        allowed_groups: groups.iter().map(|g| Arc::from(*g)).collect(),
        jwt: false,
    }
}

fn attempt(
    auth: &ServiceAuth,
    keys: &KeyTable,
    failures: &FailureLimiter,
    ip: &str,
    key: Option<&str>,
) -> (Result<String, Refusal>, HeaderMap) {
    let mut req = Request::new(());
    req.headers_mut()
        .insert("x-consumer-name", "spoofed".parse().unwrap());
    if let Some(k) = key {
        req.headers_mut().insert("x-api-key", k.parse().unwrap());
    }
    let out = authenticate(
        auth,
        keys,
        failures,
        ip.parse().unwrap(),
        &mut req,
        Instant::now(),
    )
    .map(|who| who.name.to_string());
    (out, req.headers().clone())
}

#[test]
fn outcomes_by_reason_and_what_the_upstream_sees() {
    let (keys, failures) = (
        table(),
        FailureLimiter::new(10, Duration::from_secs(60), 100),
    );
    let open = service(&[]);
    let (ok, headers) = attempt(&open, &keys, &failures, "10.0.0.1", Some("gwk_alice"));
    assert_eq!(ok.unwrap(), "alice");
    assert!(headers.get("x-api-key").is_none());
    assert_eq!(headers.get("x-consumer-name").unwrap(), "alice");
    assert_eq!(headers.get("x-consumer-groups").unwrap(), "gold");
    let failed = |r: AuthFailure| Err(Refusal::Failed(r));
    let ip = "10.0.0.2";
    assert_eq!(
        attempt(&open, &keys, &failures, ip, None).0,
        failed(AuthFailure::Missing)
    );
    assert_eq!(
        attempt(&open, &keys, &failures, ip, Some("gwk_nope")).0,
        failed(AuthFailure::Invalid)
    );
    assert_eq!(
        attempt(&open, &keys, &failures, ip, Some("gwk_stale")).0,
        failed(AuthFailure::Expired)
    );
    let gold = service(&["gold", "platinum"]);
    assert_eq!(
        attempt(&gold, &keys, &failures, ip, Some("gwk_alice"))
            .0
            .unwrap(),
        "alice"
    );
    let (refused, headers) = attempt(&gold, &keys, &failures, ip, Some("gwk_bob"));
    assert_eq!(refused, failed(AuthFailure::Forbidden));
    // A refused request is left as it came (it is not forwarded anyway).
    assert_eq!(headers.get("x-consumer-name").unwrap(), "spoofed");
}

#[test]
fn guessing_from_one_address_is_throttled_and_others_are_not() {
    let (keys, failures) = (
        table(),
        FailureLimiter::new(3, Duration::from_secs(60), 100),
    );
    let open = service(&[]);
    let guesser = "192.0.2.7";
    for i in 0..3 {
        let (r, _) = attempt(&open, &keys, &failures, guesser, Some(&format!("gwk_{i}")));
        assert_eq!(r, Err(Refusal::Failed(AuthFailure::Invalid)), "guess {i}");
    }
    // Now even a right key from that address is not looked at.
    for key in ["gwk_guess", "gwk_alice"] {
        let (r, _) = attempt(&open, &keys, &failures, guesser, Some(key));
        assert!(
            matches!(r, Err(Refusal::Throttled(s)) if s >= 1),
            "{key}: {r:?}"
        );
    }
    // Missing credentials are not guesses and not throttled.
    let (r, _) = attempt(&open, &keys, &failures, guesser, None);
    assert_eq!(r, Err(Refusal::Failed(AuthFailure::Missing)));
    let (r, _) = attempt(&open, &keys, &failures, "192.0.2.8", Some("gwk_bob"));
    assert_eq!(r.unwrap(), "bob");
    assert_eq!(failures.tracked(), 1);
}

/// JWTs through `authenticate`: a `key,jwt` service takes a JWT-shaped bearer value to the
/// verifier and anything else to the key table; a JWT-only service ignores keys.
#[test]
fn jwts_beside_keys_and_what_the_upstream_sees() {
    use crate::auth::testing::Signer;
    let signer = Signer::hs256();
    let crate::auth::jws::KeyMaterial::Hs256Secret(secret) = signer.material() else {
        unreachable!()
    };
    let key = |k: &str| pb::ApiKey {
        hash: Sha256::digest(k.as_bytes()).to_vec(),
        ..Default::default()
    };
    let keys = KeyTable::compile(
        &[pb::Consumer {
            name: "carol".into(),
            groups: vec!["gold".into()],
            api_keys: vec![key("gwk_carol")],
            jwt_credentials: vec![pb::JwtCredential {
                issuer: "idp".into(),
                key: Some(pb::jwt_credential::Key::Hs256Secret(
                    secret.expose().to_vec(),
                )),
                ..Default::default()
            }],
            ..Default::default()
        }],
        &crate::stats::Registry::default(),
        &|_| Err("no JWKS in this test".into()),
    )
    .unwrap();
    let failures = FailureLimiter::new(10, Duration::from_secs(60), 100);
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = |sub: &str, exp: u64| {
        signer.token(
            None,
            &serde_json::json!({"iss": "idp", "sub": sub, "exp": exp}),
        )
    };
    let run = |auth: &ServiceAuth, bearer: &str, ip: &str| {
        let mut req = Request::new(());
        req.headers_mut()
            .insert("authorization", format!("Bearer {bearer}").parse().unwrap());
        req.headers_mut()
            .insert("x-consumer-groups", "admin".parse().unwrap());
        let out = authenticate(
            auth,
            &keys,
            &failures,
            ip.parse().unwrap(),
            &mut req,
            Instant::now(),
        )
        .map(|who| who.name.to_string());
        (out, req.headers().clone())
    };
    let both = ServiceAuth {
        jwt: true,
        ..service(&[])
    };
    let jwt_only = ServiceAuth {
        jwt: true,
        key_sources: KeySources::default(),
        ..service(&[])
    };
    for auth in [&both, &jwt_only] {
        let (ok, headers) = run(auth, &token("carol", exp), "10.1.0.1");
        assert_eq!(ok.unwrap(), "carol");
        assert!(headers.get("authorization").is_none());
        assert_eq!(headers.get("x-consumer-name").unwrap(), "carol");
        assert_eq!(headers.get("x-consumer-groups").unwrap(), "gold");
    }
    assert_eq!(run(&both, "gwk_carol", "10.1.0.1").0.unwrap(), "carol");
    // A key is not a JWT: refused (and charged) where only JWTs are accepted.
    assert_eq!(
        run(&jwt_only, "gwk_carol", "10.1.0.2").0,
        Err(Refusal::Jwt(JwtReject::Malformed))
    );
    assert_eq!(
        run(&both, &token("carol", exp - 7200), "10.1.0.1").0,
        Err(Refusal::Jwt(JwtReject::Expired))
    );
    assert_eq!(
        Refusal::Jwt(JwtReject::Expired).reason(),
        AuthFailure::Expired
    );
    let (refused, headers) = run(&both, &token("dave", exp), "10.1.0.3");
    assert_eq!(refused, Err(Refusal::Jwt(JwtReject::UnknownConsumer)));
    assert_eq!(refused.unwrap_err().reason(), AuthFailure::Invalid);
    assert!(headers.get("authorization").is_some(), "left as it came");
    // Groups apply as for keys.
    let silver = ServiceAuth {
        jwt: true,
        ..service(&["silver"])
    };
    assert_eq!(
        run(&silver, &token("carol", exp), "10.1.0.1").0,
        Err(Refusal::Failed(AuthFailure::Forbidden))
    );
    // Invalid tokens count as guesses: only the charged addresses are tracked.
    assert_eq!(failures.tracked(), 2);
}
