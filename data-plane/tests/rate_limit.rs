//! Rate limiting end to end: 429 with the IETF RateLimit headers, per-IP and per-header keys,
//! refunds across policies, shadow mode.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;

use common::*;
use gw_proto::v1 as pb;

const OTHER_CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

fn header_policy(name: &str, service: &str, header: &str, limit: u64) -> pb::Policy {
    pb::Policy {
        key: Some(pb::RateLimitKey {
            source: Some(pb::rate_limit_key::Source::Header(header.into())),
        }),
        ..ip_policy(name, service, limit, 60)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixth_request_in_a_minute_gets_429_with_headers_and_another_ip_passes() {
    let mut env = Env::start().await;
    let b = Backend::start("b").await;
    env.add(service("api", "/", &[&b])).await;
    let v = put_policy(&mut env.admin, ip_policy("per-ip", "api", 5, 60)).await;
    env.dp.wait_version(v).await;

    for i in 1..=5u64 {
        let r = env.get("/x").await;
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.header("ratelimit-policy"), Some(r#""per-ip";q=5;w=60"#));
        let rl = r.header("ratelimit").unwrap();
        assert!(
            rl.starts_with(&format!(r#""per-ip";r={};t="#, 5 - i)),
            "request {i}: {rl}"
        );
        assert!(r.header("retry-after").is_none());
    }
    let r = env.get("/x").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"], "rate_limited");
    let retry_after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=12).contains(&retry_after),
        "one token per 12 s: {retry_after}"
    );
    // The body says the same wait in words a person reads.
    assert_eq!(r.json()["retry_after"], retry_after);
    let unit = if retry_after == 1 {
        "second"
    } else {
        "seconds"
    };
    assert_eq!(
        r.json()["message"],
        format!("too many requests; retry in {retry_after} {unit}")
    );
    assert_eq!(r.header("ratelimit-policy"), Some(r#""per-ip";q=5;w=60"#));
    let rl = r.header("ratelimit").unwrap();
    assert!(rl.starts_with(r#""per-ip";r=0;t="#), "{rl}");
    let t: u64 = rl.rsplit("t=").next().unwrap().parse().unwrap();
    assert!((1..=60).contains(&t), "{rl}");
    assert_eq!(
        b.hits(),
        5,
        "the rejected request never reached the backend"
    );

    // Another client IP has its own bucket.
    let r = Call::get(env.dp.proxy, "/x")
        .from(OTHER_CLIENT)
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("ratelimit")
            .unwrap()
            .starts_with(r#""per-ip";r=4;"#)
    );
    // And the first is still limited.
    assert_eq!(env.get("/x").await.status, 429);
    assert_eq!(
        env.dp
            .metric("gw_rate_limited_total{policy=\"per-ip\"}")
            .await,
        Some(2.0)
    );
    assert_eq!(
        env.dp
            .metric("gw_rate_limit_tracked_keys{policy=\"per-ip\"}")
            .await,
        Some(2.0)
    );
    assert_eq!(
        env.dp
            .metric("gw_requests_total{service=\"api\",code=\"429\"}")
            .await,
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_keyed_limits_and_missing_header_shares_one_key() {
    let mut env = Env::start().await;
    let b = Backend::start("b").await;
    env.add(service("api", "/", &[&b])).await;
    let v = put_policy(
        &mut env.admin,
        header_policy("by-key", "api", "x-api-key", 2),
    )
    .await;
    env.dp.wait_version(v).await;

    let with_key = |k: &str| Call::get(env.dp.proxy, "/x").header("x-api-key", k);
    assert_eq!(with_key("alice").send().await.status, 200);
    assert_eq!(with_key("alice").send().await.status, 200);
    assert_eq!(with_key("alice").send().await.status, 429);
    // Same IP, other key: its own bucket.
    assert_eq!(with_key("bob").send().await.status, 200);
    // No header: all such requests share one bucket, whatever their IP.
    assert_eq!(env.get("/x").await.status, 200);
    assert_eq!(
        Call::get(env.dp.proxy, "/x")
            .from(OTHER_CLIENT)
            .send()
            .await
            .status,
        200
    );
    assert_eq!(env.get("/x").await.status, 429);
    assert_eq!(
        Call::get(env.dp.proxy, "/x")
            .from(OTHER_CLIENT)
            .send()
            .await
            .status,
        429
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_rejected_by_a_later_policy_consumes_no_token_of_earlier_ones() {
    let mut env = Env::start().await;
    let b = Backend::start("b").await;
    env.add(service("api", "/", &[&b])).await;
    // Checked in order: the service's own (per IP, 5), then the global one (per key, 1).
    put_policy(&mut env.admin, ip_policy("svc-ip", "api", 5, 60)).await;
    let v = put_policy(&mut env.admin, header_policy("global-key", "", "x-k", 1)).await;
    env.dp.wait_version(v).await;

    let with_key = |k: &str| Call::get(env.dp.proxy, "/x").header("x-k", k);
    let r = with_key("k0").send().await;
    assert_eq!(r.status, 200);
    // Tightest policy on an allowed response: global-key has 0 left, svc-ip 4.
    assert!(
        r.header("ratelimit")
            .unwrap()
            .starts_with(r#""global-key";r=0;"#),
        "{:?}",
        r.header("ratelimit")
    );
    for _ in 0..5 {
        let r = with_key("k0").send().await;
        assert_eq!(r.status, 429);
        assert!(
            r.header("ratelimit")
                .unwrap()
                .starts_with(r#""global-key";"#)
        );
    }
    // Had the five rejections taken svc-ip tokens, its bucket would be empty now. It still has
    // four, one per fresh key.
    for i in 1..=4 {
        let r = with_key(&format!("k{i}")).send().await;
        assert_eq!(r.status, 200, "fresh key {i}");
    }
    let r = with_key("k5").send().await;
    assert_eq!(r.status, 429);
    assert!(
        r.header("ratelimit")
            .unwrap()
            .starts_with(r#""svc-ip";r=0;"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_policies_reject_nothing_and_count() {
    let mut env = Env::start().await;
    let b = Backend::start("b").await;
    env.add(service("api", "/", &[&b])).await;
    let mut p = ip_policy("watch", "", 1, 60);
    p.mode = pb::PolicyMode::Shadow as i32;
    let v = put_policy(&mut env.admin, p).await;
    env.dp.wait_version(v).await;
    for _ in 0..4 {
        assert_eq!(env.get("/x").await.status, 200);
    }
    assert_eq!(b.hits(), 4);
    assert_eq!(
        env.dp
            .metric("gw_shadow_rejected_total{policy=\"watch\"}")
            .await,
        Some(3.0)
    );
    assert_eq!(
        env.dp
            .metric("gw_rate_limited_total{policy=\"watch\"}")
            .await,
        Some(0.0)
    );
}

/// At the key cap (`--rate-limit-max-keys`), a client sending a new API key on every request
/// drains only its own /24's overflow bucket: a new client from another network still gets
/// in (with one shared overflow bucket it was locked out too), and the flood stays limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_key_cap_a_flood_of_new_keys_does_not_lock_out_another_network() {
    let mut env = Env::start_with(|c| c.rate_limit_max_keys = 2).await;
    let b = Backend::start("b").await;
    env.add(service("api", "/", &[&b])).await;
    let v = put_policy(
        &mut env.admin,
        header_policy("by-key", "api", "x-api-key", 3),
    )
    .await;
    env.dp.wait_version(v).await;

    let flooder = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    let mut allowed = 0;
    for n in 0..20 {
        let r = Call::get(env.dp.proxy, "/x")
            .from(flooder)
            .header("x-api-key", &format!("flood-{n}"))
            .send()
            .await;
        allowed += u32::from(r.status == 200);
    }
    assert_eq!(
        allowed,
        2 + 3,
        "two keys tracked, then one burst for 127.0.0.0/24"
    );
    let elsewhere = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 1, 1));
    let r = Call::get(env.dp.proxy, "/x")
        .from(elsewhere)
        .header("x-api-key", "a-new-customer")
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        env.dp
            .metric("gw_rate_limit_overflow_total{policy=\"by-key\"}")
            .await,
        Some(19.0)
    );
    assert_eq!(
        env.dp
            .metric("gw_rate_limit_overflow_networks{policy=\"by-key\"}")
            .await,
        Some(2.0)
    );
}
