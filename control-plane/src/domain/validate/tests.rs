//! Table-driven tests of the field checks: good and bad inputs for each.

use super::*;

#[test]
fn names() {
    for good in ["a", "api", "service-a", "a1", "0", &"x".repeat(63)] {
        assert_eq!(name(good), Ok(()), "{good}");
    }
    for bad in ["", "Foo", "-a", "a-", "a_b", "a.b", "ä", &"x".repeat(64)] {
        let err = name(bad).unwrap_err();
        assert!(err.contains("lowercase DNS label"), "{bad}: {err}");
    }
}

#[test]
fn hostnames() {
    let cases: &[(&str, Option<&str>)] = &[
        ("example.com", Some("example.com")),
        ("Example.COM", Some("example.com")),
        ("localhost", Some("localhost")),
        ("10.0.0.1", Some("10.0.0.1")),
        ("a-b.c1", Some("a-b.c1")),
        ("", None),
        ("example.com:80", None),
        ("-a.com", None),
        ("a..b", None),
        ("a_b.com", None),
        ("999.1.1.1", None),
        ("*.example.com", None),
    ];
    for (input, want) in cases {
        assert_eq!(hostname(input).ok().as_deref(), *want, "{input}");
    }
    assert!(hostname("h:80").unwrap_err().contains("without a port"));
}

#[test]
fn path_prefixes() {
    for good in [
        "/",
        "/api",
        "/api/v1",
        "/a-b_c.d~e",
        "/%20x",
        "/a:b@c",
        "/...",
        "/a..b",
        "/.well-known",
    ] {
        assert_eq!(path_prefix(good), Ok(()), "{good}");
    }
    let bad: &[(&str, &str)] = &[
        ("", "must start with '/'"),
        ("api", "must start with '/'"),
        ("/api/", "must not end with '/' (write '/api'"),
        ("/a?b", "must not contain '?'"),
        ("/a#b", "must not contain '?', '#'"),
        ("/a b", "whitespace"),
        ("/ä", "non-ASCII"),
        ("/a//b", "empty segment"),
        ("/a/../b", "dot segment"),
        ("/a/./b", "dot segment"),
        ("/..", "dot segment"),
        ("/a/%2E%2e", "dot segment"),
        ("/a%00", "encoded NUL"),
        ("/a%2fb", "encoded slash"),
        ("/a%2Fb", "encoded slash"),
    ];
    for (input, want) in bad {
        let err = path_prefix(input).unwrap_err();
        assert!(err.contains(want), "{input}: {err}");
    }
    assert!(path_prefix(&format!("/{}", "a".repeat(2000))).is_err());
}

#[test]
fn request_paths() {
    assert_eq!(request_path("/health"), Ok(()));
    assert_eq!(request_path("/health?full=1"), Ok(()));
    assert!(request_path("health").is_err());
    assert!(request_path("/he alth").is_err());
}

#[test]
fn header_names() {
    assert_eq!(header_name("X-Api-Key").as_deref(), Ok("x-api-key"));
    assert!(header_name("").is_err());
    assert!(header_name("x api").is_err());
    assert!(header_name("x:y").is_err());
}

#[test]
fn endpoints() {
    let good: &[(&str, &str, u16)] = &[
        ("http://127.0.0.1:8080", "127.0.0.1", 8080),
        ("http://backend:80/", "backend", 80),
        ("http://Backend.Local:1", "backend.local", 1),
        ("http://[::1]:9000", "[::1]", 9000),
        ("https://api.example.com:443", "api.example.com", 443),
    ];
    for (input, host, port) in good {
        assert_eq!(endpoint(input), Ok(((*host).to_owned(), *port)), "{input}");
    }
    let bad: &[(&str, &str)] = &[
        ("htp://x", "'htp://x' is not an http:// or https:// URL"),
        ("x:80", "is not an http:// or https:// URL"),
        ("https://x", "needs an explicit port"),
        ("http://x", "needs an explicit port"),
        ("http://x:0", "port '0'"),
        ("http://x:65536", "port '65536'"),
        ("http://x:80/api", "must not have a path"),
        ("http://x:80?q", "must not have a path, query"),
        ("http://u:p@x:80", "credentials"),
        ("http://[::1]", "explicit port"),
        ("http://[zz]:80", "not an IPv6 address"),
        ("http://a_b:80", "not a valid host"),
        ("http://:80", "not a valid host"),
    ];
    for (input, want) in bad {
        let err = endpoint(input).unwrap_err();
        assert!(err.contains(want), "{input}: {err}");
    }
}

#[test]
fn durations() {
    let s = Duration::from_secs;
    let pb = |seconds, nanos| Some(prost_types::Duration { seconds, nanos });
    assert_eq!(duration(None, s(5), s(1), s(10)), Ok(s(5)));
    assert_eq!(
        duration(pb(2, 500_000_000), s(5), s(1), s(10)),
        Ok(Duration::from_millis(2500))
    );
    assert_eq!(
        duration(pb(0, 0), s(5), s(1), s(86400)),
        Err("must be between 1s and 24h".to_owned())
    );
    assert!(duration(pb(11, 0), s(5), s(1), s(10)).is_err());
    assert!(
        duration(pb(-1, 0), s(5), s(0), s(10))
            .unwrap_err()
            .contains("negative")
    );
    assert!(duration(pb(1, 1_000_000_000), s(5), s(0), s(10)).is_err());
}

#[test]
fn human_durations() {
    let cases = [
        (100, "100ms"),
        (1000, "1s"),
        (1500, "1500ms"),
        (60_000, "1m"),
        (86_400_000, "24h"),
    ];
    for (ms, want) in cases {
        assert_eq!(human(Duration::from_millis(ms)), want);
    }
    assert_eq!(
        to_pb_duration(Duration::from_millis(1500)),
        prost_types::Duration {
            seconds: 1,
            nanos: 500_000_000
        }
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    const HOST: &str =
        "[a-zA-Z]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?(\\.[a-z]([a-z0-9-]{0,10}[a-z0-9])?){0,3}";

    proptest! {
        #[test]
        fn every_dns_label_is_a_valid_name(s in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?") {
            prop_assert_eq!(name(&s), Ok(()));
        }

        #[test]
        fn accepted_names_are_dns_labels(s in "\\PC{0,70}") {
            if name(&s).is_ok() {
                prop_assert!(s.len() <= 63 && !s.starts_with('-') && !s.ends_with('-'));
                prop_assert!(s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'));
            }
        }

        #[test]
        fn accepted_prefixes_are_unambiguous(s in "/?[a-z/?# %.~-]{0,12}") {
            if path_prefix(&s).is_ok() {
                prop_assert!(s.starts_with('/'));
                prop_assert!(!s.contains(['?', '#', ' ']) && !s.contains("//"));
                prop_assert!(s == "/" || !s.ends_with('/'));
            }
        }

        #[test]
        fn endpoints_round_trip(host in HOST, port in 1u16..) {
            let raw = format!("http://{host}:{port}");
            let (h, p) = endpoint(&raw).map_err(TestCaseError::fail)?;
            prop_assert_eq!(&h, &host.to_ascii_lowercase());
            prop_assert_eq!(p, port);
            prop_assert_eq!(endpoint(&format!("http://{h}:{p}")), Ok((h, p)));
        }

        #[test]
        fn checks_never_panic_on_arbitrary_input(s in "\\PC{0,40}") {
            let _ = (name(&s), hostname(&s), path_prefix(&s), request_path(&s), header_name(&s), endpoint(&s));
            let _ = endpoint(&format!("http://{s}"));
        }

        #[test]
        fn durations_round_trip_through_protobuf(ms in 1u64..86_400_000) {
            let d = Duration::from_millis(ms);
            let max = Duration::from_secs(86_400);
            prop_assert_eq!(duration(Some(to_pb_duration(d)), max, Duration::ZERO, max), Ok(d));
        }
    }
}

#[test]
fn truncation_respects_char_boundaries() {
    assert_eq!(truncate("héllo", 2), "h");
    assert_eq!(truncate("abc", 10), "abc");
}
