//! Consumers end to end (issue 12): API keys from each accepted place, 401/403, what reaches
//! the backend, revocation on two data planes, limits per consumer and group, guessing, and
//! that a key is never stored, streamed, cached, shown or logged in clear.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::*;
use gw_proto::v1 as pb;
use gw_proto::v1::admin_service_client::AdminServiceClient;
use tonic::transport::Channel;

const GUESSER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const OTHER_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

/// A service at `prefix` that needs an API key from `sources` (empty: the default), admitting
/// only `groups` (empty: everyone).
fn keyed(
    name: &str,
    prefix: &str,
    b: &Backend,
    sources: &[pb::ApiKeySource],
    groups: &[&str],
) -> pb::Service {
    pb::Service {
        auth: Some(pb::ServiceAuth {
            methods: vec![pb::AuthMethod::ApiKey.into()],
            allowed_groups: groups.iter().map(|g| g.to_string()).collect(),
            key_sources: sources.iter().map(|s| i32::from(*s)).collect(),
        }),
        ..service(name, prefix, &[b])
    }
}

/// A new key for `name`: (key, id, version).
async fn key(admin: &mut AdminServiceClient<Channel>, name: &str) -> (String, String, u64) {
    let r = admin
        .create_api_key(pb::CreateApiKeyRequest {
            consumer: name.into(),
            ttl: None,
        })
        .await
        .unwrap()
        .into_inner();
    (r.key, r.api_key.unwrap().id, r.config_version)
}

/// The headers the backend received (its `_headers` echo), as (name, value) pairs, and the
/// path with query it saw.
fn seen(r: &Reply) -> (Vec<(String, String)>, String) {
    let v = r.json();
    let headers = v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_owned(),
                p[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (headers, v["path"].as_str().unwrap().to_owned())
}

fn values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[tokio::test]
async fn key_auth_401_200_from_each_source_403_and_nothing_of_it_reaches_the_backend() {
    let mut env = Env::start().await;
    let b = Backend::start("b").await;
    use pb::ApiKeySource::{Bearer, Header, Query};
    env.add(keyed("api", "/api", &b, &[Bearer, Header, Query], &[]))
        .await;
    env.add(keyed("gold", "/gold", &b, &[], &["gold"])).await;
    env.add(service("open", "/open", &[&b])).await;
    consumer(&mut env.admin, "alice", &["gold", "beta"]).await;
    consumer(&mut env.admin, "bob", &[]).await;
    let (alice, _, _) = key(&mut env.admin, "alice").await;
    let (bob, _, v) = key(&mut env.admin, "bob").await;
    env.dp.wait_version(v).await;
    let hits = b.hits();

    // No key: 401 with a challenge and a body that says nothing about why.
    let r = env.get("/api/_headers").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("www-authenticate"), Some(r#"Bearer realm="gw""#));
    assert_eq!(r.json()["error"], "unauthorized");
    let unknown = Call::get(env.dp.proxy, "/api/_headers")
        .header(
            "x-api-key",
            "gwk_000000000000000000000000000000000000000000000000",
        )
        .send()
        .await;
    assert_eq!(unknown.status, 401);
    assert_eq!(
        unknown.body, r.body,
        "missing and unknown keys look the same"
    );
    assert_eq!(b.hits(), hits, "refused requests never reach the backend");

    // The key from each place, with spoofed identity headers (also spelled with underscores,
    // which CGI-style backends read alike) and a `Connection` header naming the identity
    // headers (which would strip the gateway's own if hop-by-hop headers went after
    // authentication): 200, the key gone, the gateway's identity in their place.
    let spoof = |c: Call| {
        c.header("x-consumer-name", "admin")
            .header("x-consumer-groups", "root")
            .header("x_consumer_name", "admin")
            .header("x-consumer_groups", "root")
            .header("connection", "x-consumer-name, x-consumer-groups")
    };
    let calls = [
        (
            "bearer",
            spoof(Call::get(env.dp.proxy, "/api/_headers?x=1"))
                .header("authorization", &format!("Bearer {alice}")),
        ),
        (
            "header",
            spoof(Call::get(env.dp.proxy, "/api/_headers?x=1")).header("x-api-key", &alice),
        ),
        (
            "query",
            spoof(Call::get(
                env.dp.proxy,
                &format!("/api/_headers?x=1&apikey={alice}"),
            )),
        ),
    ];
    for (source, call) in calls {
        let r = call.send().await;
        assert_eq!(r.status, 200, "{source}: {}", r.text());
        assert!(
            !r.text().contains(&alice),
            "{source}: the key reached the backend: {}",
            r.text()
        );
        let (headers, path) = seen(&r);
        assert_eq!(path, "/api/_headers?x=1", "{source}");
        assert_eq!(values(&headers, "x-consumer-name"), ["alice"], "{source}");
        assert_eq!(
            values(&headers, "x-consumer-groups"),
            ["beta,gold"],
            "{source}"
        );
        assert!(values(&headers, "authorization").is_empty(), "{source}");
        assert!(values(&headers, "x-api-key").is_empty(), "{source}");
        for underscored in ["x_consumer_name", "x-consumer_groups"] {
            assert!(
                values(&headers, underscored).is_empty(),
                "{source}: {underscored} reached the backend"
            );
        }
    }

    // Groups: bob is in none, so the gold-only service says 403; alice passes. The default
    // sources (bearer, header) do not include the query.
    let gold = |k: &str| Call::get(env.dp.proxy, "/gold/x").header("x-api-key", k);
    let r = gold(&bob).send().await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "forbidden");
    assert_eq!(gold(&alice).send().await.status, 200);
    let r = Call::get(env.dp.proxy, &format!("/gold/x?apikey={alice}"))
        .send()
        .await;
    assert_eq!(r.status, 401, "the query is not a source of this service");

    // A service without auth still never passes client-sent identity headers on.
    let r = spoof(Call::get(env.dp.proxy, "/open/_headers"))
        .send()
        .await;
    let (headers, _) = seen(&r);
    for name in [
        "x-consumer-name",
        "x-consumer-groups",
        "x_consumer_name",
        "x-consumer_groups",
    ] {
        assert!(
            values(&headers, name).is_empty(),
            "{name} reached the backend"
        );
    }

    let m = |s: &str| format!("gw_auth_failures_total{{service=\"{s}\",reason=");
    assert_eq!(
        env.dp.metric(&format!("{}\"missing\"}}", m("api"))).await,
        Some(1.0)
    );
    assert_eq!(
        env.dp.metric(&format!("{}\"invalid\"}}", m("api"))).await,
        Some(1.0)
    );
    assert_eq!(
        env.dp
            .metric(&format!("{}\"forbidden\"}}", m("gold")))
            .await,
        Some(1.0)
    );
    assert_eq!(
        env.dp.metric(&format!("{}\"missing\"}}", m("gold"))).await,
        Some(1.0)
    );
    assert_eq!(
        env.dp
            .metric("gw_auth_accepted_total{service=\"api\"}")
            .await,
        Some(3.0)
    );
}

#[tokio::test]
async fn an_expired_key_is_refused() {
    let mut env = Env::start().await;
    let b = Backend::start("b").await;
    env.add(keyed("api", "/", &b, &[], &[])).await;
    consumer(&mut env.admin, "alice", &[]).await;
    let r = env
        .admin
        .create_api_key(pb::CreateApiKeyRequest {
            consumer: "alice".into(),
            ttl: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    env.dp.wait_version(r.config_version).await;
    // Polled, not slept for: the key works until the data plane's clock passes its expiry.
    eventually("the key to expire", || async {
        let r = Call::get(env.dp.proxy, "/x")
            .header("x-api-key", &r.key)
            .send()
            .await;
        (r.status == 401).then_some(())
    })
    .await;
    assert_eq!(
        env.dp
            .metric("gw_auth_failures_total{service=\"api\",reason=\"expired\"}")
            .await,
        Some(1.0)
    );
}

/// Waits until the control plane lists both nodes as having acked `version`.
async fn acked_by_all(admin: &mut AdminServiceClient<Channel>, nodes: usize, version: u64) {
    eventually(&format!("{nodes} nodes acked {version}"), || {
        let mut admin = admin.clone();
        async move {
            let list = admin
                .list_nodes(pb::ListNodesRequest {})
                .await
                .ok()?
                .into_inner()
                .nodes;
            (list
                .iter()
                .filter(|n| n.connected && n.acked_version >= version)
                .count()
                == nodes)
                .then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_revoked_key_and_a_removed_consumer_fail_on_both_data_planes_once_they_acked() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path()).await;
    let mut admin = cp.admin().await;
    let dp1 = DataPlane::start(&cp.url(), |_| {}).await;
    let dp2 = DataPlane::start(&cp.url(), |_| {}).await;
    let b = Backend::start("b").await;
    create(&mut admin, keyed("api", "/", &b, &[], &[])).await;
    consumer(&mut admin, "alice", &[]).await;
    consumer(&mut admin, "bob", &[]).await;
    let (first, first_id, _) = key(&mut admin, "alice").await;
    let (second, _, _) = key(&mut admin, "alice").await;
    let (bobs, _, v) = key(&mut admin, "bob").await;
    acked_by_all(&mut admin, 2, v).await;
    let status = |dp: &DataPlane, k: &str| {
        let call = Call::get(dp.proxy, "/x").header("x-api-key", k);
        async move { call.send().await.status }
    };
    for dp in [&dp1, &dp2] {
        for k in [&first, &second, &bobs] {
            assert_eq!(status(dp, k).await, 200);
        }
    }

    let v = admin
        .delete_api_key(pb::DeleteApiKeyRequest { id: first_id })
        .await
        .unwrap()
        .into_inner()
        .config_version;
    acked_by_all(&mut admin, 2, v).await;
    for dp in [&dp1, &dp2] {
        assert_eq!(status(dp, &first).await, 401, "revoked key");
        assert_eq!(status(dp, &second).await, 200, "the consumer's other key");
    }

    let v = admin
        .delete_consumer(pb::DeleteConsumerRequest {
            name: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .config_version;
    acked_by_all(&mut admin, 2, v).await;
    for dp in [&dp1, &dp2] {
        assert_eq!(status(dp, &second).await, 401, "key of a removed consumer");
        assert_eq!(status(dp, &bobs).await, 200);
    }
}

/// A day: at 1,000 a day a bucket gains one token in 86 s, so however slowly a loaded machine
/// sends the test's 1,001 requests, the counts below are exact (per minute they would not be).
const DAY: i64 = 86_400;

fn consumer_policy(name: &str, limit: u64, group: &str, scope: pb::PolicyScope) -> pb::Policy {
    pb::Policy {
        key: Some(pb::RateLimitKey {
            source: Some(pb::rate_limit_key::Source::Consumer(pb::ConsumerKey {})),
        }),
        group: group.into(),
        scope: scope.into(),
        ..ip_policy(name, "api", limit, DAY)
    }
}

/// `gold` 1,000 a day, everyone else 60, with policies of `scope`; checks both tiers and
/// that the RateLimit headers name the policy that applied.
async fn gold_gets_1000_and_others_60(scope: pb::PolicyScope, redis: Option<String>) {
    let global = redis.is_some();
    let mut env = Env::start_with(|c| {
        c.rate_limit_store = redis.map(|url| gw_data_plane::limiter::redis::StoreConfig {
            urls: gw_data_plane::limiter::redis::RedisUrl::parse_list(&url).unwrap(),
            cluster: false,
            // The counts below are exact, and a decision that timed out would be made by the
            // node's share instead (a bucket of its own, full) and admit one request too many:
            // so a wait no loopback round trip reaches, however loaded the machine.
            timeout: std::time::Duration::from_secs(30),
            prefix: "gw:rl:".into(),
        });
    })
    .await;
    if global {
        eventually("the rate-limit store is up", || async {
            (env.dp.metric("gw_rate_limit_store_up").await == Some(1.0)).then_some(())
        })
        .await;
    }
    let b = Backend::start("b").await;
    env.add(keyed("api", "/", &b, &[], &[])).await;
    put_policy(&mut env.admin, consumer_policy("others", 60, "", scope)).await;
    put_policy(&mut env.admin, consumer_policy("gold", 1000, "gold", scope)).await;
    consumer(&mut env.admin, "alice", &["gold"]).await;
    consumer(&mut env.admin, "bob", &[]).await;
    consumer(&mut env.admin, "carol", &[]).await;
    let (alice, _, _) = key(&mut env.admin, "alice").await;
    let (bob, _, _) = key(&mut env.admin, "bob").await;
    let (carol, _, v) = key(&mut env.admin, "carol").await;
    env.dp.wait_version(v).await;
    let get = |k: &str| Call::get(env.dp.proxy, "/x").header("x-api-key", k).send();

    for i in 1..=60 {
        let r = get(&bob).await;
        assert_eq!(r.status, 200, "bob's request {i}");
        assert_eq!(
            r.header("ratelimit-policy"),
            Some(r#""others";q=60;w=86400"#)
        );
    }
    let r = get(&bob).await;
    assert_eq!(r.status, 429, "bob's 61st");
    assert_eq!(
        r.header("ratelimit-policy"),
        Some(r#""others";q=60;w=86400"#)
    );
    // Per consumer, not shared: carol still has her 60.
    assert_eq!(get(&carol).await.status, 200);

    for i in 1..=1000 {
        let r = get(&alice).await;
        assert_eq!(r.status, 200, "alice's request {i}");
        if i == 1 || i == 1000 {
            assert_eq!(
                r.header("ratelimit-policy"),
                Some(r#""gold";q=1000;w=86400"#)
            );
        }
    }
    let r = get(&alice).await;
    assert_eq!(r.status, 429, "alice's 1001st");
    assert_eq!(
        r.header("ratelimit-policy"),
        Some(r#""gold";q=1000;w=86400"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_keyed_and_group_scoped_node_policies_gold_1000_others_60() {
    gold_gets_1000_and_others_60(pb::PolicyScope::Node, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_keyed_and_group_scoped_global_policies_gold_1000_others_60() {
    let redis = gw_testkit::redis::RedisServer::start().await;
    gold_gets_1000_and_others_60(pb::PolicyScope::Global, Some(redis.url())).await;
}

#[tokio::test]
async fn guessing_from_one_ip_ends_in_429_while_a_good_key_from_another_ip_passes() {
    let mut env = Env::start_with(|c| c.auth_failure_limit = 5).await;
    let b = Backend::start("b").await;
    env.add(keyed("api", "/", &b, &[], &[])).await;
    consumer(&mut env.admin, "alice", &[]).await;
    let (alice, _, v) = key(&mut env.admin, "alice").await;
    env.dp.wait_version(v).await;
    let try_key = |from: IpAddr, k: String| {
        Call::get(env.dp.proxy, "/x")
            .header("x-api-key", &k)
            .from(from)
            .send()
    };
    for i in 0..5 {
        let r = try_key(GUESSER, format!("gwk_guess{i}")).await;
        assert_eq!(r.status, 401, "guess {i}");
    }
    for i in 5..20 {
        let r = try_key(GUESSER, format!("gwk_guess{i}")).await;
        assert_eq!(r.status, 429, "guess {i}");
        assert_eq!(r.json()["error"], "too_many_auth_failures");
        assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    }
    // The guesser learns nothing from a right key either, until its bucket refills...
    assert_eq!(try_key(GUESSER, alice.clone()).await.status, 429);
    // ...while a good key from another address passes.
    assert_eq!(try_key(OTHER_CLIENT, alice.clone()).await.status, 200);
    assert_eq!(
        env.dp
            .metric("gw_auth_failures_total{service=\"api\",reason=\"invalid\"}")
            .await,
        Some(5.0)
    );
    assert_eq!(
        env.dp
            .metric("gw_auth_failures_total{service=\"api\",reason=\"throttled\"}")
            .await,
        Some(16.0)
    );
}

#[tokio::test]
async fn a_key_is_in_no_database_cache_config_or_log() {
    let (log, _guard) = gw_testkit::log::CapturedLog::on_this_thread(tracing::Level::TRACE);
    let logs_dir = tempfile::tempdir().unwrap();
    let access_log = logs_dir.path().join("access.log");
    let target = access_log.clone();
    let mut env = Env::start_with(move |c| {
        c.access_log.target = gw_data_plane::access_log::Target::File(target);
    })
    .await;
    let b = Backend::start("b").await;
    env.add(keyed("api", "/", &b, &[pb::ApiKeySource::Query], &[]))
        .await;
    consumer(&mut env.admin, "alice", &["gold"]).await;
    let (alice, id, v) = key(&mut env.admin, "alice").await;
    env.dp.wait_version(v).await;
    // Used from every place it may appear in a request, and wrongly too.
    for path in [format!("/x?apikey={alice}"), format!("/x?apikey={alice}x")] {
        Call::get(env.dp.proxy, &path).send().await;
    }
    // The access log has both requests, the key written as ***.
    let logged = eventually("both requests in the access log", || async {
        let text = std::fs::read_to_string(&access_log).ok()?;
        (text.matches("apikey=***").count() == 2).then_some(text)
    })
    .await;
    let config = env.dp.admin_get("/config").await.text();
    assert!(config.contains("\"alice\""), "{config}");
    let listed = format!(
        "{:?} {:?}",
        env.admin
            .list_consumers(pb::ListConsumersRequest {})
            .await
            .unwrap()
            .into_inner(),
        env.admin
            .list_api_keys(pb::ListApiKeysRequest::default())
            .await
            .unwrap()
            .into_inner()
    );
    assert!(
        listed.contains(&id) && listed.contains(&alice[alice.len() - 4..]),
        "{listed}"
    );
    // The hash of the key is stored and streamed; the key, or any long part of it, nowhere.
    let hash = gw_testkit::backend::hex(&sha2::Sha256::digest(alice.as_bytes()));
    let secret_part = &alice[4..40];
    // The cache is written after the version is applied: wait for it to hold the key's hash,
    // so the test knows it reads a cache that would show a key if one were there.
    let cache = env.dir.path().join("dp.cache");
    eventually("the cache holds the key's hash", || async {
        let bytes = std::fs::read(&cache).ok()?;
        bytes.windows(32).any(|w| hex_of(w) == hash).then_some(())
    })
    .await;
    let mut places = vec![
        ("/config".to_owned(), config.into_bytes()),
        ("AdminService listings".to_owned(), listed.into_bytes()),
        ("log".to_owned(), log.text().into_bytes()),
        ("access log".to_owned(), logged.into_bytes()),
    ];
    for entry in std::fs::read_dir(env.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        places.push((path.display().to_string(), std::fs::read(&path).unwrap()));
    }
    assert!(
        places.len() >= 5,
        "the database (and its WAL) and the cache were read"
    );
    for (place, bytes) in &places {
        assert!(
            !bytes
                .windows(secret_part.len())
                .any(|w| w == secret_part.as_bytes()),
            "the key is in {place}"
        );
    }
    assert!(
        log.text().contains("API key created"),
        "the log was captured"
    );
}

fn hex_of(bytes: &[u8]) -> String {
    gw_testkit::backend::hex(bytes)
}

use sha2::Digest;
