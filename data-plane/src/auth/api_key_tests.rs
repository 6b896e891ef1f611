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
