use super::*;

#[test]
fn generated_keys_are_long_random_and_only_their_hash_is_kept() {
    let now = SystemTime::now();
    let (key, record) = ApiKey::generate(now, None);
    let (other, _) = ApiKey::generate(now, None);
    let text = key.expose();
    assert!(text.starts_with(KEY_PREFIX), "{}", record.id);
    assert_eq!(text.len(), KEY_PREFIX.len() + 2 * KEY_BYTES);
    assert_ne!(text, other.expose());
    assert_eq!(record.hash, KeyHash::of(text));
    assert_eq!(record.last4, text[text.len() - 4..]);
    assert!(record.id.starts_with("k-") && record.id.len() == 2 + 2 * ID_BYTES);
    assert_eq!(record.expires, None);
    // Neither the record nor its forms shown to people carry the key or the hash.
    let shown = format!("{record:?} {:?}", record.to_public("alice"));
    assert!(!shown.contains(text), "{shown}");
    assert!(record.to_public("alice").hash.is_empty());
    assert_eq!(record.to_pb_with_hash("alice").hash, record.hash.0.to_vec());
    assert!(!format!("{key:?}").contains(text));
}

#[test]
fn key_lifetimes() {
    let now = UNIX_EPOCH + Duration::from_secs(1_000);
    let (_, record) = ApiKey::generate(now, Some(Duration::from_secs(3600)));
    assert_eq!(record.created, 1_000);
    assert_eq!(record.expires, Some(4_600));
    let ttl = |s: i64| {
        check_ttl(Some(prost_types::Duration {
            seconds: s,
            nanos: 0,
        }))
    };
    assert_eq!(ttl(60).unwrap(), Some(Duration::from_secs(60)));
    assert!(ttl(0).unwrap_err().to_string().starts_with("ttl: "));
    assert!(ttl(-5).is_err());
    assert!(ttl(20 * 365 * 86_400).is_err());
    assert_eq!(check_ttl(None).unwrap(), None);
}

#[test]
fn consumer_names_and_groups_follow_the_service_name_rules() {
    let c = Consumer::new(
        "alice".into(),
        vec!["gold".into(), "beta".into(), "gold".into()],
    )
    .unwrap();
    assert_eq!(c.groups, ["beta", "gold"]);
    let err = Consumer::new("Alice".into(), vec!["ok".into(), "Not Ok".into()])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("name: 'Alice' must be a lowercase DNS label"),
        "{err}"
    );
    assert!(err.contains("groups[1]: 'Not Ok'"), "{err}");
    let many: Vec<String> = (0..40).map(|i| format!("g{i}")).collect();
    let err = Consumer::new("bob".into(), many).unwrap_err().to_string();
    assert!(err.contains("groups: at most 32 groups"), "{err}");
}

#[test]
fn service_auth_validation() {
    let check = |msg: pb::ServiceAuth| {
        let mut p = Problems::default();
        let auth = Auth::convert(msg, &mut p);
        p.finish(Some(auth))
    };
    let open = check(pb::ServiceAuth::default()).unwrap();
    assert!(open.is_open() && open.to_pb().is_none());
    let keys = check(pb::ServiceAuth {
        methods: vec![pb::AuthMethod::ApiKey.into()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(keys.key_sources, auth::DEFAULT_KEY_SOURCES);
    // JWT alone: no key sources (any given are dropped), round-trips through the proto.
    let jwt = check(pb::ServiceAuth {
        methods: vec![pb::AuthMethod::Jwt.into()],
        key_sources: vec![pb::ApiKeySource::Query.into()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(jwt.methods, [auth::AuthMethod::Jwt]);
    assert!(jwt.key_sources.is_empty());
    assert_eq!(check(jwt.to_pb().unwrap()).unwrap(), jwt);
    let both = check(pb::ServiceAuth {
        methods: vec![pb::AuthMethod::Jwt.into(), pb::AuthMethod::ApiKey.into()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        both.methods,
        [auth::AuthMethod::ApiKey, auth::AuthMethod::Jwt]
    );
    assert_eq!(both.key_sources, auth::DEFAULT_KEY_SOURCES);
    let err = check(pb::ServiceAuth {
        methods: vec![pb::AuthMethod::Jwt.into(), 9],
        allowed_groups: vec!["Gold".into()],
        key_sources: vec![0],
    })
    .unwrap_err()
    .to_string();
    assert!(!err.contains("auth.methods[0]"), "{err}");
    assert!(err.contains("auth.methods[1]: unknown value 9"), "{err}");
    assert!(err.contains("auth.allowed_groups[0]: 'Gold'"), "{err}");
    assert!(
        err.contains("auth.key_sources[0]: unknown value 0"),
        "{err}"
    );
    let err = check(pb::ServiceAuth {
        allowed_groups: vec!["gold".into()],
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("auth: allowed_groups and key_sources need auth.methods"),
        "{err}"
    );
}
