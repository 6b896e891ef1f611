//! GLOBAL rate-limit policies against a real Redis that each test starts itself
//! (`gw_testkit::redis`): one budget across data planes, the over-limit cache and leases,
//! Redis killed mid-test, a Redis Cluster with a master stopped, and bad input.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use gw_data_plane::limiter::redis::{RedisStore, RedisUrl, ScriptRate, StoreConfig, StoreError};
use gw_proto::v1 as pb;
use gw_testkit::redis::{RedisCluster, RedisServer};

/// A decision's wait for Redis in these tests: far above a loopback round trip, so that a
/// loaded CI machine does not trip the breaker, and still short enough to keep tests quick.
const TEST_TIMEOUT: Duration = Duration::from_millis(500);

/// The wait for tests whose Redis stays up and that count exact outcomes: a decision that
/// timed out would fall back (a 429 under `deny`, the local share otherwise) and change the
/// count, so the wait is one that no loopback round trip reaches however loaded the machine.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(30);

fn store(urls: &str, cluster: bool) -> StoreConfig {
    StoreConfig {
        urls: RedisUrl::parse_list(urls).unwrap(),
        cluster,
        timeout: TEST_TIMEOUT,
        prefix: "gw:rl:".into(),
    }
}

/// [`store`] with [`HEALTHY_TIMEOUT`].
fn healthy_store(url: &str) -> StoreConfig {
    StoreConfig {
        timeout: HEALTHY_TIMEOUT,
        ..store(url, false)
    }
}

fn global(mut p: pb::Policy, on_error: pb::StoreErrorAction) -> pb::Policy {
    p.scope = pb::PolicyScope::Global.into();
    p.on_store_error = on_error.into();
    p
}

fn header_policy(name: &str, limit: u64, period_secs: i64) -> pb::Policy {
    pb::Policy {
        key: Some(pb::RateLimitKey {
            source: Some(pb::rate_limit_key::Source::Header("x-key".into())),
        }),
        ..ip_policy(name, "", limit, period_secs)
    }
}

/// A control plane, a backend, service `api` at `/api`, and `n` data planes counting GLOBAL
/// policies in `store` (none: no `--redis-url`).
struct Fleet {
    _dir: tempfile::TempDir,
    _cp: ControlPlane,
    _backend: Backend,
    dps: Vec<DataPlane>,
    admin: gw_proto::v1::admin_service_client::AdminServiceClient<tonic::transport::Channel>,
    version: u64,
}

impl Fleet {
    async fn start(n: usize, store: Option<StoreConfig>) -> Self {
        logs();
        let dir = tempfile::tempdir().unwrap();
        let cp = ControlPlane::start(dir.path()).await;
        let mut admin = cp.admin().await;
        let backend = Backend::start("b").await;
        let version = create(&mut admin, service("api", "/api", &[&backend])).await;
        let mut dps = Vec::new();
        for _ in 0..n {
            let store = store.clone();
            dps.push(
                DataPlane::start(&cp.url(), |c| {
                    c.rate_limit_store = store;
                    c.stats_interval = Duration::from_millis(200);
                })
                .await,
            );
        }
        let fleet = Self {
            _dir: dir,
            _cp: cp,
            _backend: backend,
            dps,
            admin,
            version,
        };
        fleet.wait_version().await;
        fleet
    }

    async fn put(&mut self, policy: pb::Policy) {
        self.version = put_policy(&mut self.admin, policy).await;
        self.wait_version().await;
    }

    async fn wait_version(&self) {
        for dp in &self.dps {
            dp.wait_version(self.version).await;
        }
    }

    /// Waits until every data plane's store is `up` (per `/metrics`).
    async fn wait_store(&self, up: bool) {
        let want = if up { 1.0 } else { 0.0 };
        for dp in &self.dps {
            eventually(&format!("store up = {up} on {}", dp.proxy), || async {
                (dp.metric("gw_rate_limit_store_up").await == Some(want)).then_some(())
            })
            .await;
        }
    }

    /// Waits until every data plane has heard from the control plane that `n` data planes
    /// are live (their local shares follow).
    async fn wait_live(&self, n: usize) {
        for dp in &self.dps {
            eventually(&format!("{n} live data planes on {}", dp.proxy), || async {
                (dp.metric("gw_live_data_planes").await == Some(n as f64)).then_some(())
            })
            .await;
        }
    }

    async fn nodes(&self) -> Vec<pb::Node> {
        let mut admin = self.admin.clone();
        admin
            .list_nodes(pb::ListNodesRequest {})
            .await
            .unwrap()
            .into_inner()
            .nodes
    }

    /// ListNodes, polled until `check` holds.
    async fn nodes_when(&self, what: &str, check: impl Fn(&[pb::Node]) -> bool) -> Vec<pb::Node> {
        eventually(what, || async {
            let nodes = self.nodes().await;
            check(&nodes).then_some(nodes)
        })
        .await
    }
}

/// Sends `count` GETs spread round robin over `dps`, from `from`; returns the replies.
async fn spread(dps: &[&DataPlane], from: IpAddr, count: usize, key: Option<&str>) -> Vec<Reply> {
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let mut call = Call::get(dps[i % dps.len()].proxy, "/api/x").from(from);
        if let Some(key) = key {
            call = call.header("x-key", key);
        }
        out.push(call.send().await);
    }
    out
}

fn admitted(replies: &[Reply]) -> usize {
    replies.iter().filter(|r| r.status == 200).count()
}

fn assert_no_5xx(replies: &[Reply]) {
    let bad: Vec<_> = replies
        .iter()
        .filter(|r| r.status.is_server_error())
        .map(|r| r.status)
        .collect();
    assert!(bad.is_empty(), "5xx answers: {bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_per_minute_per_ip_admits_exactly_five_across_one_two_and_four_data_planes() {
    let redis = RedisServer::start().await;
    let mut fleet = Fleet::start(4, Some(healthy_store(&redis.url()))).await;
    fleet
        .put(global(
            ip_policy("per-ip", "", 5, 60),
            pb::StoreErrorAction::LocalShare,
        ))
        .await;
    fleet.wait_store(true).await;
    // One client IP per scenario, so each starts with a full bucket.
    for (n, client) in [(1, "127.0.0.2"), (2, "127.0.0.3"), (4, "127.0.0.4")] {
        let dps: Vec<&DataPlane> = fleet.dps.iter().take(n).collect();
        let replies = spread(&dps, client.parse().unwrap(), 40, None).await;
        assert_no_5xx(&replies);
        let statuses: Vec<u16> = replies.iter().map(|r| r.status.as_u16()).collect();
        assert_eq!(admitted(&replies), 5, "{n} data planes: {statuses:?}");
        assert!(statuses[..5].iter().all(|s| *s == 200), "{statuses:?}");
        // The 6th, on whichever node, is rejected with a correct Retry-After: the next token
        // comes 12 s after the first of five (5 per 60 s), so 12 s or a little less.
        let sixth = &replies[5];
        assert_eq!(sixth.status, 429);
        let retry: u64 = sixth.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=12).contains(&retry), "Retry-After {retry}");
        assert_eq!(
            sixth.header("ratelimit-policy"),
            Some("\"per-ip\";q=5;w=60")
        );
        assert!(
            sixth
                .header("ratelimit")
                .unwrap()
                .starts_with("\"per-ip\";r=0;t="),
            "{:?}",
            sixth.header("ratelimit")
        );
        // Allowed answers count down the fleet's bucket, not a node's.
        assert_eq!(
            replies[4].header("ratelimit").unwrap().split(";t=").next(),
            Some("\"per-ip\";r=0")
        );
    }
    // The fleet-wide usage reaches gwctl stats.
    let stats = eventually("fleet-wide usage in GetStats", || {
        let mut admin = fleet.admin.clone();
        async move {
            let s = admin
                .get_stats(pb::GetStatsRequest::default())
                .await
                .unwrap()
                .into_inner();
            s.policies
                .into_iter()
                .find(|p| p.policy == "per-ip" && p.allowed == 15 && p.rate_limited == 105)
        }
    })
    .await;
    assert!(stats.global);
    assert_eq!(stats.degraded_nodes, 0);
    let nodes = fleet.nodes().await;
    assert!(nodes.iter().all(|n| {
        n.rate_limit_store.as_ref().is_some_and(|s| {
            s.state == pb::RateLimitStoreState::Connected as i32 && s.url == redis.url()
        })
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_limit_key_is_answered_locally_and_a_hot_key_leases_tokens() {
    let redis = RedisServer::start().await;
    // Exact counts under `deny` and zero store errors of every kind, timeouts included: with
    // this wait, a timeout would mean a stalled machine, not a slow one.
    let mut fleet = Fleet::start(1, Some(healthy_store(&redis.url()))).await;
    fleet
        .put(global(
            ip_policy("slow", "", 2, 60),
            pb::StoreErrorAction::Deny,
        ))
        .await;
    fleet.wait_store(true).await;
    let dp = &fleet.dps[0];
    let trips = |dp: &DataPlane| {
        let admin = dp.admin;
        async move {
            Call::get(admin, "/metrics")
                .send()
                .await
                .text()
                .lines()
                .find_map(|l| {
                    l.strip_prefix("gw_rate_limit_store_round_trips_total ")?
                        .parse::<f64>()
                        .ok()
                })
                .unwrap()
        }
    };
    let before = trips(dp).await;
    let replies = spread(&[dp], "127.0.0.5".parse().unwrap(), 12, None).await;
    assert_eq!(admitted(&replies), 2);
    // Two allowed, one rejected by Redis; the other nine answered from the over-limit cache.
    assert_eq!(trips(dp).await - before, 3.0);
    assert_eq!(
        dp.metric("gw_rate_limit_local_decisions_total{policy=\"slow\"}")
            .await,
        Some(9.0)
    );
    // The round trips by policy, and the latency histogram: one observation per decision's
    // round trip, cumulative buckets, a positive sum.
    assert_eq!(
        dp.metric("gw_rate_limit_store_round_trips_by_policy_total{policy=\"slow\"}")
            .await,
        Some(3.0)
    );
    let total = trips(dp).await;
    assert_eq!(
        dp.metric("gw_rate_limit_store_round_trip_seconds_count")
            .await,
        Some(total)
    );
    assert_eq!(
        dp.metric("gw_rate_limit_store_round_trip_seconds_bucket{le=\"+Inf\"}")
            .await,
        Some(total)
    );
    let metrics = Call::get(dp.admin, "/metrics").send().await.text();
    let buckets: Vec<f64> = metrics
        .lines()
        .filter_map(|l| {
            l.strip_prefix("gw_rate_limit_store_round_trip_seconds_bucket{")?
                .split_once("} ")?
                .1
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(buckets.len(), 11, "{metrics}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert!(
        dp.metric("gw_rate_limit_store_round_trip_seconds_sum")
            .await
            .is_some_and(|s| s > 0.0)
    );
    for kind in ["timeout", "connection", "auth", "bad_key", "other"] {
        assert_eq!(
            dp.metric(&format!(
                "gw_rate_limit_store_errors_total{{kind=\"{kind}\"}}"
            ))
            .await,
            Some(0.0),
            "{kind}"
        );
    }
    assert_eq!(
        redis
            .cli(&["exists", "gw:rl:slow:2-60-2:ip:127.0.0.5"])
            .trim(),
        "1",
        "the bucket lives under the documented key"
    );
    let ttl: i64 = redis
        .cli(&["pttl", "gw:rl:slow:2-60-2:ip:127.0.0.5"])
        .trim()
        .parse()
        .unwrap();
    assert!(ttl > 0 && ttl <= 60_001, "the key expires once full: {ttl}");

    // A hot key (100,000 per second: leases of up to 1,000) under concurrent load takes
    // several tokens per round trip.
    fleet
        .admin
        .delete_policy(pb::DeletePolicyRequest {
            name: "slow".into(),
        })
        .await
        .unwrap();
    fleet
        .put(global(
            header_policy("hot", 100_000, 1),
            pb::StoreErrorAction::Deny,
        ))
        .await;
    let dp = &fleet.dps[0];
    let before = trips(dp).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let proxy = dp.proxy;
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..60 {
                let r = Call::get(proxy, "/api/x")
                    .header("x-key", "hot")
                    .send()
                    .await;
                ok += usize::from(r.status == 200);
            }
            ok
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    assert_eq!(ok, 480, "nothing over the limit is rejected");
    let round_trips = trips(dp).await - before;
    assert!(
        round_trips < 480.0,
        "leases: {round_trips} round trips for 480 requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_test_no_5xx_local_share_then_recovery() {
    let mut redis = RedisServer::start().await;
    let mut fleet = Fleet::start(2, Some(store(&redis.url(), false))).await;
    fleet
        .put(global(
            ip_policy("shared", "", 10, 60),
            pb::StoreErrorAction::LocalShare,
        ))
        .await;
    fleet.wait_store(true).await;
    fleet.wait_live(2).await;
    let dps: Vec<&DataPlane> = fleet.dps.iter().collect();
    let replies = spread(&dps, "127.0.0.6".parse().unwrap(), 14, None).await;
    assert_eq!(
        admitted(&replies),
        10,
        "counted fleet-wide while Redis is up"
    );

    redis.kill();
    // Traffic while the breaker notices: never a 5xx.
    let during = spread(&dps, "127.0.0.7".parse().unwrap(), 6, None).await;
    assert_no_5xx(&during);
    fleet.wait_store(false).await;
    // Each node enforces its share: 10 / 2 live data planes = 5 per node.
    let dp0 = spread(&dps[..1], "127.0.0.8".parse().unwrap(), 9, None).await;
    let dp1 = spread(&dps[1..], "127.0.0.8".parse().unwrap(), 9, None).await;
    assert_no_5xx(&dp0);
    assert_no_5xx(&dp1);
    assert_eq!((admitted(&dp0), admitted(&dp1)), (5, 5));
    for dp in &fleet.dps {
        assert_eq!(
            dp.metric("gw_rate_limit_degraded{policy=\"shared\"}").await,
            Some(1.0)
        );
    }
    // Operators see it: gwctl stats and gwctl nodes (store unreachable, with why). Both show
    // each node's latest report, which can predate the kill: a report sent before the store
    // first connected says "unreachable" too (not connected yet), without the policy's
    // traffic. Reports that count every admitted request above were made after this node's
    // store went down, so wait for those (and for both nodes to be connected).
    let sent = admitted(&replies) + admitted(&during) + admitted(&dp0) + admitted(&dp1);
    eventually(
        "GetStats counts every admitted request and both nodes degraded",
        || {
            let mut admin = fleet.admin.clone();
            async move {
                let stats = admin
                    .get_stats(pb::GetStatsRequest::default())
                    .await
                    .unwrap()
                    .into_inner();
                stats
                    .policies
                    .iter()
                    .any(|p| {
                        p.policy == "shared"
                            && p.global
                            && p.allowed == sent as u64
                            && p.degraded_nodes == 2
                    })
                    .then_some(())
            }
        },
    )
    .await;
    let down = fleet
        .nodes_when("nodes report the store unreachable", |nodes| {
            nodes.iter().all(|n| {
                n.connected
                    && n.rate_limit_store
                        .as_ref()
                        .is_some_and(|s| s.state == pb::RateLimitStoreState::Unreachable as i32)
            })
        })
        .await;
    let why = &down[0].rate_limit_store.as_ref().unwrap().error;
    assert!(
        !why.is_empty() && !why.contains("not connected yet"),
        "{why}"
    );

    // Redis returns (empty): counting is fleet-wide again, on its own.
    redis.restart().await;
    fleet.wait_store(true).await;
    let after = spread(&dps, "127.0.0.9".parse().unwrap(), 14, None).await;
    assert_no_5xx(&after);
    assert_eq!(admitted(&after), 10);
    for dp in &fleet.dps {
        assert_eq!(
            dp.metric("gw_rate_limit_store_transitions_total{to=\"down\"}")
                .await,
            Some(1.0),
            "one state change each way, however many requests failed"
        );
    }
}

/// A Redis that hangs (stopped: its connections open, no answers) is what the timeout is for.
/// Its timeouts open the breaker, also when each call had a little less than the whole timeout
/// because its request spent some before reaching the store; calls cut short by a waiter's
/// own deadline (less than half the timeout left) never do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_opens_the_breaker_and_calls_cut_short_never_do() {
    const TIMEOUT: Duration = Duration::from_millis(200);
    let redis = RedisServer::start().await;
    let store = RedisStore::new(StoreConfig {
        timeout: TIMEOUT,
        ..store(&redis.url(), false)
    });
    // Connected by its probe task, which is then stopped so that only decisions move the
    // breaker (its PING would notice the hang too).
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let probing = tokio::spawn(store.clone().run(stopped));
    eventually("the store connected", || async {
        store.is_up().then_some(())
    })
    .await;
    stop.send_replace(true);
    probing.await.unwrap();
    let rate = ScriptRate {
        per_us: 1,
        token: 1_000_000,
        cap: 1_000_000,
    };

    redis.pause();
    let timeouts = || store.counters.errors[0].load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..10 {
        let deadline = tokio::time::Instant::now() + TIMEOUT / 4;
        let r = store.decide_until(b"k", rate, 1, deadline).await;
        assert!(matches!(r, Err(StoreError::Timeout(_))), "{r:?}");
    }
    assert_eq!(timeouts(), 10);
    assert!(
        store.is_up(),
        "timeouts cut short by a waiter's deadline opened the breaker"
    );

    // Requests that spent a quarter of the timeout before reaching the store.
    let mut calls = 0;
    while store.is_up() && calls < 10 {
        let deadline = tokio::time::Instant::now() + TIMEOUT * 3 / 4;
        let r = store.decide_until(b"k", rate, 1, deadline).await;
        assert!(matches!(r, Err(StoreError::Timeout(_))), "{r:?}");
        calls += 1;
    }
    assert!(
        !store.is_up(),
        "{calls} real timeouts left the breaker closed"
    );
    assert_eq!(timeouts(), 10 + calls);
    assert_eq!(
        store.decide(b"k", rate, 1).await,
        Err(StoreError::Unavailable),
        "an open breaker answers at once"
    );
    let state = store.state();
    assert!(state.error.contains("no answer"), "{}", state.error);
    redis.resume();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_redis_input_is_named_and_traffic_keeps_flowing() {
    // Nothing listens here: the port of a server that is gone.
    let gone = RedisServer::start().await;
    let unreachable = gone.url();
    drop(gone);
    let secret = "s3cret-pw-71";
    let protected = RedisServer::with_password(secret).await;
    let wrong_password = format!("redis://:{secret}-wrong@127.0.0.1:{}", protected.port());

    // A standalone Redis given as a cluster.
    let standalone = RedisServer::start().await;
    let not_a_cluster = standalone.url();
    for (url, cluster, why) in [
        (unreachable.as_str(), false, "refused"),
        (wrong_password.as_str(), false, "authentication"),
        (not_a_cluster.as_str(), true, "cluster"),
    ] {
        let mut fleet = Fleet::start(1, Some(store(url, cluster))).await;
        fleet
            .put(global(
                ip_policy("p", "", 3, 60),
                pb::StoreErrorAction::LocalShare,
            ))
            .await;
        // It serves, with the fallback: its share (the whole limit, alone).
        let replies = spread(&[&fleet.dps[0]], "127.0.0.10".parse().unwrap(), 5, None).await;
        assert_no_5xx(&replies);
        assert_eq!(admitted(&replies), 3);
        let nodes = fleet
            .nodes_when("the node reports why its store is unusable", |nodes| {
                nodes[0]
                    .rate_limit_store
                    .as_ref()
                    .is_some_and(|s| s.error.contains(why))
            })
            .await;
        let status = nodes[0].rate_limit_store.clone().unwrap();
        assert_eq!(status.state, pb::RateLimitStoreState::Unreachable as i32);
        // The password appears nowhere an operator or a scraper looks.
        let config = fleet.dps[0].admin_get("/config").await.text();
        let metrics = fleet.dps[0].admin_get("/metrics").await.text();
        for text in [format!("{status:?}"), config, metrics] {
            assert!(!text.contains(secret), "{text}");
        }
        assert_eq!(
            fleet.dps[0].metric("gw_rate_limit_store_up").await,
            Some(0.0)
        );
    }

    // A key of the wrong type under the gateway's prefix: that key's requests fall back,
    // the store stays up for everyone else, and the error is counted.
    let redis = RedisServer::start().await;
    let mut fleet = Fleet::start(1, Some(store(&redis.url(), false))).await;
    fleet
        .put(global(
            header_policy("typed", 2, 60),
            pb::StoreErrorAction::LocalShare,
        ))
        .await;
    fleet.wait_store(true).await;
    redis.cli(&["hset", "gw:rl:typed:2-60-2:h:victim", "x", "1"]);
    redis.cli(&["set", "gw:rl:typed:2-60-2:h:garbled", "not a bucket"]);
    let dp = &fleet.dps[0];
    for key in ["victim", "garbled"] {
        let replies = spread(&[dp], "127.0.0.11".parse().unwrap(), 4, Some(key)).await;
        assert_no_5xx(&replies);
        assert_eq!(admitted(&replies), 2, "{key}: the local share still limits");
    }
    let bad = dp
        .metric("gw_rate_limit_store_errors_total{kind=\"bad_key\"}")
        .await
        .unwrap();
    assert!(bad >= 8.0, "{bad}");
    assert_eq!(dp.metric("gw_rate_limit_store_up").await, Some(1.0));
    let fine = spread(&[dp], "127.0.0.11".parse().unwrap(), 4, Some("fine")).await;
    assert_eq!(admitted(&fine), 2);
    assert_eq!(
        redis.cli(&["type", "gw:rl:typed:2-60-2:h:victim"]).trim(),
        "hash",
        "the gateway does not overwrite what it did not write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_spreads_keys_over_its_masters_and_survives_one_stopping() {
    let mut cluster = RedisCluster::start().await;
    let mut fleet = Fleet::start(2, Some(store(&cluster.urls(), true))).await;
    fleet
        .put(global(
            header_policy("spread", 2, 60),
            pb::StoreErrorAction::LocalShare,
        ))
        .await;
    fleet.wait_store(true).await;
    let dps: Vec<&DataPlane> = fleet.dps.iter().collect();
    let ip: IpAddr = "127.0.0.12".parse().unwrap();
    for k in 0..30 {
        let key = format!("k{k}");
        let replies = spread(&dps, ip, 4, Some(&key)).await;
        assert_no_5xx(&replies);
        assert_eq!(admitted(&replies), 2, "key {key}");
    }
    for node in &cluster.nodes {
        let keys: u64 = node.cli(&["dbsize"]).trim().parse().unwrap();
        assert!(keys > 0, "master {} holds none of the 30 keys", node.port());
    }

    // One master stops: no 5xx; keys on the others are still counted fleet-wide, keys on
    // its slots fall back to each node's share (2 / 2 nodes = 1 each).
    cluster.nodes[0].kill();
    for k in 30..45 {
        let key = format!("k{k}");
        let replies = spread(&dps, ip, 4, Some(&key)).await;
        assert_no_5xx(&replies);
        let n = admitted(&replies);
        assert!((1..=2).contains(&n), "key {key}: {n} admitted");
    }
    cluster.nodes[0].restart().await;
    eventually("the restarted master serves its slots again", || async {
        cluster.nodes[0]
            .cli(&["cluster", "info"])
            .contains("cluster_state:ok")
            .then_some(())
    })
    .await;
    fleet.wait_store(true).await;
    // Every key is counted fleet-wide again (retrying: the client reconnects to the master).
    eventually("decisions on every master again", || async {
        let key = format!("late-{}", rand_suffix());
        let replies = spread(&dps, ip, 4, Some(&key)).await;
        (admitted(&replies) == 2).then_some(())
    })
    .await;
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// The script's arithmetic against real Redis with a fake clock: exact refill, leases,
/// rejection timing and expiry.
#[tokio::test]
async fn the_decision_script_is_exact_on_a_fake_clock() {
    let redis = RedisServer::start().await;
    let store = RedisStore::new(store(&redis.url(), false));
    const SEC: u64 = 1_000_000;
    // 7 per 60 s, burst 7: one token is 60e6 units, a microsecond adds 7.
    let rate = ScriptRate {
        per_us: 7,
        token: 60 * SEC,
        cap: 7 * 60 * SEC,
    };
    let t0 = 1_000 * SEC;
    let r = store.decide_at(b"t:a", rate, 1, t0).await.unwrap();
    assert_eq!((r.granted, r.remaining, r.until_one_us), (1, 6, 0));
    // A lease of 10 gets the 6 left.
    let r = store.decide_at(b"t:a", rate, 10, t0).await.unwrap();
    assert_eq!((r.granted, r.remaining), (6, 0));
    let r = store.decide_at(b"t:a", rate, 1, t0).await.unwrap();
    assert_eq!(r.granted, 0);
    // 60 s / 7 per token = 8,571,428.57 us: rounded up.
    assert_eq!(r.until_one_us, 8_571_429);
    assert_eq!(r.until_full_us, 60 * SEC);
    // After exactly one period: exactly 7 tokens, not 6 or 8.
    let r = store
        .decide_at(b"t:a", rate, 100, t0 + 60 * SEC)
        .await
        .unwrap();
    assert_eq!(r.granted, 7);
    // One microsecond short of a period: 6.
    let _ = store.decide_at(b"t:b", rate, 7, t0).await.unwrap();
    let r = store
        .decide_at(b"t:b", rate, 100, t0 + 60 * SEC - 1)
        .await
        .unwrap();
    assert_eq!(r.granted, 6);
    // A clock that goes back adds nothing.
    let r = store.decide_at(b"t:b", rate, 1, t0).await.unwrap();
    assert_eq!(r.granted, 0);
    // The key expires when the bucket would be full (about a period from now, in real time).
    let ttl: i64 = redis.cli(&["pttl", "t:b"]).trim().parse().unwrap();
    assert!(ttl > 0 && ttl <= 60_001, "{ttl}");
}
