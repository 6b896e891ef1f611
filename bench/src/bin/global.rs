//! `global`: the targets of GLOBAL rate-limit policies counted in Redis (issue 11), side by
//! side in one table:
//!
//! - **exact**: 1, 2 and 4 data planes, 5 per minute per IP as GLOBAL, one client spreading
//!   40 requests over the nodes: how many are admitted, and the 6th's status and Retry-After.
//! - **accuracy**: 4 data planes, traffic spread 70/10/10/10 at twice the limit for
//!   `--accuracy-secs`: one hot key limited to 1,000 req/s, and 100 keys of 10 req/s each.
//!   Admitted against the ideal bucket (burst + limit x seconds).
//! - **cheap**: one data plane, closed loop, the same per-IP policy (1,000 client IPs, never
//!   rejecting) as NODE and as GLOBAL: throughput ratio, Redis round trips per allowed
//!   request, round trips per request of one key above 1,000 req/s, and p99 at half of the
//!   NODE maximum.
//! - **faults**: 2 data planes at a fixed rate while Redis is killed and restarted (and a Redis
//!   Cluster master stopped and restarted): 5xx answers, the slowest request, time until the
//!   nodes fall back and until they count in Redis again.
//!
//! Redis runs on the load generator's core, the data planes on the other (see `harness`).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Parser;
use gw_bench::harness::{self, ControlPlane, DataPlane, Env, LOAD_CPU, Load, OutputFlags, Started};
use gw_bench::procs::{self, Proc};
use http::Request;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;

/// GLOBAL rate limits: exactness, accuracy at rate, cost and faults.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    #[command(flatten)]
    output: OutputFlags,
    /// Parts to run, comma-separated: exact, accuracy, cheap, faults.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "exact,accuracy,cheap,faults"
    )]
    parts: Vec<String>,
    /// Seconds of each accuracy run (the target is stated over 30 s).
    #[arg(long, default_value_t = 30.0)]
    accuracy_secs: f64,
    /// Measured seconds of each closed-loop / fixed-rate run.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Warm-up seconds of each closed-loop / fixed-rate run.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Keep-alive connections of the load generator.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Requests per second during the fault runs.
    #[arg(long, default_value_t = 1000.0)]
    fault_rate: f64,
    /// Seconds of each fault run (Redis is killed at 1/3, back at 2/3).
    #[arg(long, default_value_t = 9.0)]
    fault_secs: f64,
    /// `--redis-timeout` of the data planes.
    #[arg(long, default_value = "5ms")]
    redis_timeout: String,
    /// Fault runs to make, comma-separated: single (Redis killed), cluster (a master stopped),
    /// control (the same run with Redis left alone: the latencies the machine gives anyway).
    #[arg(long, value_delimiter = ',', default_value = "single,cluster")]
    faults: Vec<String>,
    /// How often the driver reads each node's `/metrics` during a fault run, to time the
    /// fallback and the recovery; 0 reads nothing until the run ends (those two times are then
    /// not measured; the nodes' logs, kept by `--timeline-dir`, still say when they changed).
    #[arg(long, default_value_t = 10)]
    fault_poll_ms: u64,
    /// Core(s) the Redis servers are pinned to (taskset list), or `none`.
    #[arg(long, default_value = LOAD_CPU)]
    redis_cpu: String,
    /// Keep each fault run's per-request timelines (`loadgen --timeline`), the driver's event
    /// times and the data planes' logs in this directory.
    #[arg(long)]
    timeline_dir: Option<std::path::PathBuf>,
}

/// A `redis-server` (or several, as a cluster) for the run.
struct Redis {
    nodes: Vec<(u16, Option<Proc>)>,
    dir: std::path::PathBuf,
    cluster: bool,
    /// taskset core list, `None`: unpinned.
    cpu: Option<String>,
}

impl Redis {
    fn start(env: &Env, cluster: bool, cpu: &str) -> anyhow::Result<Self> {
        let n = if cluster { 3 } else { 1 };
        let mut redis = Redis {
            nodes: Vec::new(),
            dir: env.dir.clone(),
            cluster,
            cpu: (cpu != "none").then(|| cpu.to_owned()),
        };
        for _ in 0..n {
            let port = loop {
                let p = procs::free_port()?;
                if p < 55_000 {
                    break p;
                }
            };
            redis.nodes.push((port, None));
        }
        for i in 0..n {
            redis.spawn(i)?;
        }
        if cluster {
            let mut args = vec!["--cluster".to_owned(), "create".to_owned()];
            args.extend(redis.nodes.iter().map(|(p, _)| format!("127.0.0.1:{p}")));
            args.extend(["--cluster-replicas", "0", "--cluster-yes"].map(str::to_owned));
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            procs::run_output(Path::new("redis-cli"), &refs)?;
            for (port, _) in &redis.nodes {
                let port = *port;
                procs::wait_for("cluster_state:ok", Duration::from_secs(30), || {
                    cli(port, &["cluster", "info"])
                        .ok()
                        .filter(|s| s.contains("cluster_state:ok"))
                })?;
            }
        }
        Ok(redis)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let port = self.nodes[i].0;
        let p = port.to_string();
        let dir = self.dir.display().to_string();
        let conf = format!("nodes-{port}.conf");
        let mut args = vec![
            "--port",
            &p,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir,
        ];
        if self.cluster {
            args.extend([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &conf,
                "--cluster-node-timeout",
                "1000",
                "--cluster-require-full-coverage",
                "no",
            ]);
        }
        let proc = Proc::start(
            &format!("redis-{port}"),
            self.cpu.as_deref(),
            Path::new("redis-server"),
            &args,
            &self.dir.join(format!("redis-{port}.log")),
        )
        .context("redis-server (apt-get install redis-server)")?;
        procs::wait_for("redis-server to answer", Duration::from_secs(10), || {
            cli(port, &["ping"]).ok().filter(|s| s.contains("PONG"))
        })?;
        self.nodes[i].1 = Some(proc);
        Ok(())
    }

    fn kill(&mut self, i: usize) {
        // Dropping a Proc stops it (SIGTERM, then SIGKILL).
        self.nodes[i].1 = None;
    }

    fn flags(&self) -> Vec<String> {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|(p, _)| format!("redis://127.0.0.1:{p}"))
            .collect();
        let mut flags = vec!["--redis-url".to_owned(), urls.join(",")];
        if self.cluster {
            flags.push("--redis-cluster".to_owned());
        }
        flags
    }
}

fn cli(port: u16, args: &[&str]) -> anyhow::Result<String> {
    let p = port.to_string();
    let mut all = vec!["-p", &p];
    all.extend_from_slice(args);
    procs::run_output(Path::new("redis-cli"), &all)
}

/// Starts `n` data planes counting in `redis`, waits until each routes `probe` and has its
/// store up.
fn start_fleet(
    env: &Env,
    cp: &ControlPlane,
    redis: &Redis,
    n: usize,
    tag: &str,
    timeout: &str,
    probe: &str,
) -> anyhow::Result<Vec<DataPlane>> {
    let mut flags = redis.flags();
    flags.extend(["--redis-timeout".to_owned(), timeout.to_owned()]);
    let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut dps = Vec::new();
    for i in 0..n {
        let dp = harness::start_data_plane_with(env, cp, &format!("{tag}-{i}"), probe, &refs)?;
        dps.push(dp);
    }
    for dp in &dps {
        wait_store(dp, true)?;
    }
    Ok(dps)
}

fn store_up(dp: &DataPlane) -> Option<bool> {
    let (_, body) = procs::http_get(dp.admin, "/metrics")?;
    procs::metric(&body, "gw_rate_limit_store_up ").map(|v| v == 1.0)
}

fn wait_store(dp: &DataPlane, up: bool) -> anyhow::Result<()> {
    procs::wait_for(
        "the data plane's store state",
        Duration::from_secs(30),
        || (store_up(dp) == Some(up)).then_some(()),
    )
}

fn metric(dp: &DataPlane, series: &str) -> f64 {
    procs::http_get(dp.admin, "/metrics")
        .and_then(|(_, body)| procs::metric(&body, series))
        .unwrap_or(0.0)
}

/// A GET with `headers` on a fresh connection: status and Retry-After.
fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let retry = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("retry-after: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    Ok((status, retry.trim().to_owned()))
}

/// The store's round-trip histogram: (upper bound, cumulative count), `+Inf` last.
fn histogram(dp: &DataPlane) -> Vec<(String, f64)> {
    let Some((_, body)) = procs::http_get(dp.admin, "/metrics") else {
        return Vec::new();
    };
    body.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("gw_rate_limit_store_round_trip_seconds_bucket{le=\"")?;
            let (le, count) = rest.split_once("\"} ")?;
            Some((le.to_owned(), count.trim().parse().ok()?))
        })
        .collect()
}

fn policy(env: &Env, cp: &ControlPlane, args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec!["policy", "set"];
    all.extend_from_slice(args);
    harness::gwctl(env, &cp.url, &all).map(drop)
}

/// Waits until every data plane applied the control plane's latest version.
fn settle(env: &Env, cp: &ControlPlane) -> anyhow::Result<()> {
    procs::wait_for("every node in sync", Duration::from_secs(30), || {
        let out = harness::gwctl(env, &cp.url, &["-o", "json", "nodes"]).ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        let version = v["config_version"].as_u64()?;
        v["nodes"]
            .as_array()?
            .iter()
            .filter(|n| n["connected"] == true)
            .all(|n| n["acked_version"].as_u64() == Some(version))
            .then_some(())
    })
}

fn exact(env: &Env, cp: &ControlPlane, dps: &[DataPlane], out: &mut String) -> anyhow::Result<()> {
    policy(
        env,
        cp,
        &[
            "exact",
            "--limit",
            "5",
            "--per",
            "1m",
            "--service",
            "exact",
            "--scope",
            "global",
        ],
    )?;
    settle(env, cp)?;
    out.push_str(
        "\n## Exact for small limits (5 per minute per IP, GLOBAL; 40 requests spread over the nodes)\n\n\
         | data planes | admitted | 6th request | its Retry-After | target |\n|---|---|---|---|---|\n",
    );
    for (n, ip) in [(1, "192.0.2.1"), (2, "192.0.2.2"), (4, "192.0.2.4")] {
        let mut admitted = 0;
        let mut sixth = (0, String::new());
        for i in 0..40 {
            let dp = &dps[i % n];
            let r = get(dp.listen, "/exact/x", &[("x-forwarded-for", ip)])?;
            admitted += usize::from(r.0 == 200);
            if i == 5 {
                sixth = r;
            }
        }
        out.push_str(&format!(
            "| {n} | {admitted} | {} | {}s | 5, then 429 with Retry-After <= 12s |\n",
            sixth.0, sixth.1
        ));
    }
    Ok(())
}

/// Counts of one accuracy run.
#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    limited: AtomicU64,
    server_errors: AtomicU64,
    other: AtomicU64,
}

/// Sends `rate` req/s for `secs` over `dps` weighted 70/10/10/10, the key of request `k`
/// being `key(k)` in header `header`; counts the answers.
async fn paced(
    dps: &[SocketAddr],
    path: &str,
    header: &'static str,
    key: impl Fn(u64) -> String,
    rate: f64,
    secs: f64,
) -> anyhow::Result<Arc<Counts>> {
    let counts = Arc::new(Counts::default());
    // Connections per node, in proportion to its share of the traffic.
    let per_node = [14usize, 2, 2, 2];
    let mut senders = Vec::new();
    for (node, &addr) in dps.iter().enumerate() {
        let mut conns = Vec::new();
        for _ in 0..per_node[node] {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(4096);
            let counts = counts.clone();
            let path = path.to_owned();
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            tokio::spawn(async move {
                while let Some(k) = rx.recv().await {
                    let req = Request::get(path.as_str())
                        .header("host", "bench")
                        .header(header, k)
                        .body(Empty::<Bytes>::new());
                    let Ok(req) = req else { continue };
                    let Ok(resp) = send.send_request(req).await else {
                        counts.other.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    let status = resp.status().as_u16();
                    let _ = resp.into_body().collect().await;
                    let c = match status {
                        200 => &counts.ok,
                        429 => &counts.limited,
                        500..=599 => &counts.server_errors,
                        _ => &counts.other,
                    };
                    c.fetch_add(1, Ordering::Relaxed);
                }
            });
            conns.push(tx);
        }
        senders.push(conns);
    }
    let total = (rate * secs) as u64;
    let start = tokio::time::Instant::now();
    for k in 0..total {
        let at = start + Duration::from_secs_f64(k as f64 / rate);
        tokio::time::sleep_until(at).await;
        let node = match k % 10 {
            0..=6 => 0,
            7 => 1,
            8 => 2,
            _ => 3,
        };
        let conns = &senders[node];
        let conn = &conns[(k / 10) as usize % conns.len()];
        if conn.try_send(key(k)).is_err() {
            counts.other.fetch_add(1, Ordering::Relaxed);
        }
    }
    drop(senders);
    // Let the last answers arrive.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let done = counts.ok.load(Ordering::Relaxed)
            + counts.limited.load(Ordering::Relaxed)
            + counts.server_errors.load(Ordering::Relaxed)
            + counts.other.load(Ordering::Relaxed);
        if done >= total || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(counts)
}

fn accuracy(
    env: &Env,
    cp: &ControlPlane,
    dps: &[DataPlane],
    secs: f64,
    out: &mut String,
) -> anyhow::Result<()> {
    let run = std::process::id();
    policy(
        env,
        cp,
        &[
            "hot",
            "--limit",
            "1000",
            "--per",
            "1s",
            "--key",
            "header:x-hot",
            "--service",
            "hot",
            "--scope",
            "global",
        ],
    )?;
    policy(
        env,
        cp,
        &[
            "tenants",
            "--limit",
            "10",
            "--per",
            "1s",
            "--key",
            "header:x-tenant",
            "--service",
            "tenants",
            "--scope",
            "global",
        ],
    )?;
    settle(env, cp)?;
    let addrs: Vec<SocketAddr> = dps.iter().map(|d| d.listen).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    out.push_str(&format!(
        "\n## Accurate at rate (4 data planes, traffic 70/10/10/10 at twice the limit, {secs} s)\n\n\
         | case | offered | admitted | ideal (burst + limit x s) | error | 429 | 5xx | other | target |\n\
         |---|---|---|---|---|---|---|---|---|\n"
    ));
    // Fleet-wide counters around each case: what it cost in Redis, and whether the store
    // failed meanwhile (a timeout or an open breaker moves decisions to the local share).
    let fleet = |series: &str| -> f64 { dps.iter().map(|d| metric(d, series)).sum() };
    let watched = |policy: &str| {
        [
            format!("gw_rate_limit_store_round_trips_by_policy_total{{policy=\"{policy}\"}}"),
            format!("gw_rate_limit_local_decisions_total{{policy=\"{policy}\"}}"),
            "gw_rate_limit_store_errors_total{kind=\"timeout\"}".to_owned(),
            "gw_rate_limit_store_transitions_total{to=\"down\"}".to_owned(),
        ]
    };
    let snapshot = |policy: &str| watched(policy).map(|m| fleet(&m));
    let before = snapshot("hot");
    let hot = rt.block_on(paced(
        &addrs,
        "/hot/x",
        "x-hot",
        move |_| format!("hot-{run}"),
        2000.0,
        secs,
    ))?;
    let after = snapshot("hot");
    let hot_cost: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let before = snapshot("tenants");
    let tenants = rt.block_on(paced(
        &addrs,
        "/tenants/x",
        "x-tenant",
        move |k| format!("t{}-{run}", k % 100),
        2000.0,
        secs,
    ))?;
    let after = snapshot("tenants");
    let tenants_cost: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    for (case, counts, ideal) in [
        ("1 hot key, 1,000/s", &hot, 1000.0 + 1000.0 * secs),
        ("100 keys x 10/s", &tenants, 100.0 * (10.0 + 10.0 * secs)),
    ] {
        let ok = counts.ok.load(Ordering::Relaxed) as f64;
        out.push_str(&format!(
            "| {case} | {:.0} | {ok:.0} | {ideal:.0} | {:+.2} % | {} | {} | {} | within +-2 % |\n",
            2000.0 * secs,
            (ok - ideal) / ideal * 100.0,
            counts.limited.load(Ordering::Relaxed),
            counts.server_errors.load(Ordering::Relaxed),
            counts.other.load(Ordering::Relaxed),
        ));
    }
    out.push_str(
        "\n| case | Redis round trips | per request | per allowed request | answered locally | \
         store timeouts | breaker openings |\n|---|---|---|---|---|---|---|\n",
    );
    for (case, counts, cost) in [
        ("1 hot key, 1,000/s", &hot, &hot_cost),
        ("100 keys x 10/s", &tenants, &tenants_cost),
    ] {
        let ok = counts.ok.load(Ordering::Relaxed) as f64;
        out.push_str(&format!(
            "| {case} | {:.0} | {:.3} | {:.3} | {:.0} | {:.0} | {:.0} |\n",
            cost[0],
            cost[0] / (2000.0 * secs),
            cost[0] / ok.max(1.0),
            cost[1],
            cost[2],
            cost[3],
        ));
    }
    Ok(())
}

fn cheap(
    env: &Env,
    cp: &ControlPlane,
    redis: &Redis,
    args: &Args,
    upstream: [SocketAddr; 2],
    out: &mut String,
) -> anyhow::Result<()> {
    for (svc, prefix) in [
        ("c-node", "/c-node"),
        ("c-global", "/c-global"),
        ("c-hot", "/c-hot"),
    ] {
        harness::add_service(env, &cp.url, svc, prefix, upstream)?;
    }
    // Limits far above any run: nothing is rejected, every request is decided.
    for (name, svc, scope) in [
        ("c-node", "c-node", "node"),
        ("c-global", "c-global", "global"),
        ("c-hot", "c-hot", "global"),
    ] {
        policy(
            env,
            cp,
            &[
                name,
                "--limit",
                "1000000000",
                "--per",
                "1h",
                "--service",
                svc,
                "--scope",
                scope,
            ],
        )?;
    }
    let dp = start_fleet(env, cp, redis, 1, "cheap", &args.redis_timeout, "/c-node/")?
        .pop()
        .context("no data plane")?;
    settle(env, cp)?;
    let load = |path: &str, rate: Option<f64>, xff: u32| Load {
        url: format!("http://{}{path}", dp.listen),
        connections: args.connections,
        rate,
        duration: args.duration,
        warmup: args.warmup,
        xff_pool: xff,
        requests: None,
        timeline: None,
        headers: Vec::new(),
    };
    let trips = |policy: &str| {
        metric(
            &dp,
            &format!("gw_rate_limit_store_round_trips_by_policy_total{{policy=\"{policy}\"}}"),
        )
    };
    let node_max = harness::run_load(env, &load("/c-node/", None, 1000))?;
    let before = trips("c-global");
    let global_max = harness::run_load(env, &load("/c-global/", None, 1000))?;
    let global_trips = trips("c-global") - before;
    let before = trips("c-hot");
    let hot_max = harness::run_load(env, &load("/c-hot/", None, 1))?;
    let hot_trips = trips("c-hot") - before;
    let half = node_max.rps / 2.0;
    let node_fixed = harness::run_load(env, &load("/c-node/", Some(half), 1000))?;
    let hist_before = histogram(&dp);
    let global_fixed = harness::run_load(env, &load("/c-global/", Some(half), 1000))?;
    // What GLOBAL adds to a request is at most its Redis round trip: the store's own
    // histogram over the same run, apart from the machine's scheduling of the whole request.
    let hist: Vec<(String, f64)> = histogram(&dp)
        .into_iter()
        .zip(hist_before)
        .map(|((le, after), (_, before))| (le, after - before))
        .collect();
    let observed = hist.last().map_or(0.0, |(_, n)| *n);
    // The bucket a quantile falls in, as its upper bound in microseconds.
    let quantile = |q: f64| {
        let bucket = hist
            .iter()
            .find(|(_, n)| observed > 0.0 && *n >= q * observed);
        match bucket {
            Some((le, _)) => match le.parse::<f64>() {
                Ok(secs) if secs.is_finite() => format!("<= {:.0} us", secs * 1e6),
                _ => "> 100 ms".to_owned(),
            },
            None => "?".to_owned(),
        }
    };
    let per_request = |trips: f64, total: u64| trips / (total.max(1) as f64);
    out.push_str(&format!(
        "\n## Cheap (1 data plane on 1 core, Redis on loopback, closed loop, {} connections)\n\n\
         | figure | NODE | GLOBAL | result | target |\n|---|---|---|---|---|\n\
         | max req/s (1,000 client IPs) | {:.0} | {:.0} | {:.2} of NODE | >= 0.85 |\n\
         | Redis round trips per allowed request (1,000 IPs) | 0 | {:.3} | | <= 1 |\n\
         | round trips per request, one key at {:.0} req/s | | {:.4} | | <= 0.1 above 1,000 req/s |\n\
         | p99 at {half:.0} req/s (half of NODE max) | {:.0} us | {:.0} us | {:+.0} us | <= +1,000 us |\n\
         | Redis round trips in that GLOBAL run (store histogram): count, p50, p99 | | {observed:.0}, {}, {} | | |\n",
        args.connections,
        node_max.rps,
        global_max.rps,
        global_max.rps / node_max.rps.max(1.0),
        per_request(global_trips, global_max.total),
        hot_max.rps,
        per_request(hot_trips, hot_max.total),
        node_fixed.p99_us,
        global_fixed.p99_us,
        global_fixed.p99_us - node_fixed.p99_us,
        quantile(0.5),
        quantile(0.99),
    ));
    Ok(())
}

fn fault(
    env: &Env,
    cp: &ControlPlane,
    args: &Args,
    cluster: bool,
    kill: bool,
    run: usize,
    out: &mut String,
) -> anyhow::Result<()> {
    let mut redis = Redis::start(env, cluster, &args.redis_cpu)?;
    let tag = match (cluster, kill) {
        (true, _) => "fault-cluster",
        (false, true) => "fault",
        (false, false) => "control",
    };
    let dps = start_fleet(
        env,
        cp,
        &redis,
        2,
        &format!("{tag}{run}"),
        &args.redis_timeout,
        "/faults/",
    )?;
    settle(env, cp)?;
    let secs = args.fault_secs;
    let rate = args.fault_rate;
    // The load generators' timelines go to the scratch directory unless asked to be kept.
    let events = Events::new(
        args.timeline_dir.as_deref().unwrap_or(&env.dir),
        &format!("{run}-{tag}"),
        args.timeline_dir.is_some(),
    )?;
    // Two load generators, one per node, each at half the rate; never-rejecting limits, so
    // any non-2xx is a failure.
    let loads: Vec<_> = dps
        .iter()
        .enumerate()
        .map(|(i, dp)| Load {
            url: format!("http://{}/faults/", dp.listen),
            connections: 16,
            rate: Some(rate / 2.0),
            duration: secs,
            warmup: 0.0,
            xff_pool: 100,
            requests: None,
            timeline: Some(events.file(&format!("node{i}.csv"))),
            headers: Vec::new(),
        })
        .collect();
    let runs: Vec<_> = loads
        .into_iter()
        .map(|load| {
            let env = env.clone();
            std::thread::spawn(move || harness::run_load(&env, &load))
        })
        .collect();
    let poll = Duration::from_millis(args.fault_poll_ms);
    let started = Instant::now();
    events.note("load started");
    std::thread::sleep(Duration::from_secs_f64(secs / 3.0));
    let killed = Instant::now();
    events.note("kill");
    if kill {
        redis.kill(0);
    }
    events.note("killed (process gone)");
    let mut down_after = None;
    while killed.elapsed() < Duration::from_secs_f64(secs / 3.0) {
        if poll.is_zero() {
            std::thread::sleep(
                Duration::from_secs_f64(secs / 3.0).saturating_sub(killed.elapsed()),
            );
            break;
        }
        if kill && down_after.is_none() && dps.iter().all(|d| store_up(d) == Some(false)) {
            down_after = Some(killed.elapsed());
            events.note("every node down");
        }
        std::thread::sleep(poll);
    }
    let restarted = Instant::now();
    events.note("restart");
    if kill {
        redis.spawn(0)?;
    }
    events.note("restarted (answers PING)");
    let mut up_after = None;
    if poll.is_zero() {
        std::thread::sleep(Duration::from_secs_f64(secs).saturating_sub(started.elapsed()));
    }
    while restarted.elapsed() < Duration::from_secs(10) {
        if dps.iter().all(|d| store_up(d) == Some(true)) {
            up_after = Some(restarted.elapsed());
            events.note("every node up");
            break;
        }
        std::thread::sleep(poll.max(Duration::from_millis(10)));
    }
    let mut errors = 0;
    let mut ok = 0;
    let mut p999: f64 = 0.0;
    for run in runs {
        let report = run
            .join()
            .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
        errors += report.errors;
        ok += report.ok;
        p999 = p999.max(report.p999_us);
    }
    events.note("load ended");
    events.finish(env, &dps)?;
    // The slowest request sent in the second after the kill and in the two after the restart
    // (the fallback's and the recovery's targets), apart from the slowest of the rest of the
    // run: the machine's own stalls (other processes on the cores) land anywhere in a run, and
    // the control run shows how large they are with Redis left alone.
    let windows = [
        (events.at("kill"), FAULT_WINDOW),
        (events.at("restart"), RECOVERY_WINDOW),
    ];
    let mut slowest_fault = 0u64;
    let mut slowest_rest = 0u64;
    for i in 0..dps.len() {
        for (sent, latency) in read_timeline(&events.file(&format!("node{i}.csv")))? {
            let in_window = windows
                .iter()
                .any(|(from, len)| sent >= *from && sent < from + len.as_micros());
            let slot = if in_window {
                &mut slowest_fault
            } else {
                &mut slowest_rest
            };
            *slot = (*slot).max(latency);
        }
    }
    if poll.is_zero() {
        // Not timed: the driver did not look during the window.
        down_after = None;
        up_after = None;
    }
    let fmt =
        |d: Option<Duration>| d.map_or("not seen".to_owned(), |d| format!("{} ms", d.as_millis()));
    out.push_str(&format!(
        "| {} | {ok} | {errors} | {:.1} ms | {:.1} ms | {:.1} ms | {} | {} |\n",
        match (cluster, kill) {
            (true, _) => "Redis Cluster: 1 of 3 masters stopped, restarted",
            (false, true) => "Redis killed (SIGTERM), restarted empty",
            (false, false) => "control: the same run, Redis left alone",
        },
        p999 / 1000.0,
        slowest_fault as f64 / 1000.0,
        slowest_rest as f64 / 1000.0,
        fmt(down_after),
        fmt(up_after),
    ));
    Ok(())
}

/// A fault run's record: event times (Unix microseconds, the clock of the load generator's
/// timelines and of the data planes' logs) and where the timelines go; with `--timeline-dir`
/// all of it is kept.
struct Events {
    dir: std::path::PathBuf,
    tag: String,
    /// Keep the events and the data planes' logs too (`--timeline-dir`).
    keep: bool,
    lines: std::sync::Mutex<Vec<(String, u128)>>,
}

impl Events {
    fn new(dir: &Path, tag: &str, keep: bool) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            tag: tag.to_owned(),
            keep,
            lines: std::sync::Mutex::default(),
        })
    }

    /// `<dir>/<tag>-<name>`.
    fn file(&self, name: &str) -> std::path::PathBuf {
        self.dir.join(format!("{}-{name}", self.tag))
    }

    /// When `what` was first noted (Unix microseconds; 0 if never).
    fn at(&self, what: &str) -> u128 {
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|(w, _)| w == what)
            .map_or(0, |(_, at)| *at)
    }

    fn note(&self, what: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((what.to_owned(), now));
    }

    /// Writes the events and copies the data planes' logs (the scratch directory goes away).
    fn finish(&self, env: &Env, dps: &[DataPlane]) -> anyhow::Result<()> {
        if !self.keep {
            return Ok(());
        }
        let events = self.file("events.csv");
        let lines = self
            .lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut text = String::from("event,unix_us\n");
        for (what, at) in lines.iter() {
            text.push_str(&format!("{what},{at}\n"));
        }
        std::fs::write(&events, text)?;
        for (i, dp) in dps.iter().enumerate() {
            std::fs::copy(env.log(&dp.proc.name), self.file(&format!("node{i}.log")))?;
        }
        Ok(())
    }
}

/// After the kill: the fallback's target (1 s).
const FAULT_WINDOW: Duration = Duration::from_secs(1);
/// After the restart: the recovery's target (2 s).
const RECOVERY_WINDOW: Duration = Duration::from_secs(2);

/// A `loadgen --timeline` file as (intended send time in Unix microseconds, latency in
/// microseconds) per request.
fn read_timeline(path: &Path) -> anyhow::Result<Vec<(u128, u64)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    text.lines()
        .skip(1)
        .map(|line| {
            let mut fields = line.split(',');
            let sent = fields.next().unwrap_or_default().parse()?;
            let latency = fields.nth(1).unwrap_or_default().parse()?;
            Ok((sent, latency))
        })
        .collect::<Result<_, std::num::ParseIntError>>()
        .with_context(|| format!("timeline {}", path.display()))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Started::now();
    let (_scratch, env) = harness::env(&args.output)?;
    let result = run(&args, &env, &started);
    if result.is_err() {
        env.dump_logs();
    }
    let text = result?;
    harness::write_results(&args.output, "global", &started, &text)
}

fn run(args: &Args, env: &Env, started: &Started) -> anyhow::Result<String> {
    if procs::run_output(Path::new("redis-server"), &["--version"]).is_err() {
        bail!("redis-server not found: apt-get install redis-server");
    }
    let (_upstream, upstream) = harness::start_upstream(env)?;
    let cp = harness::start_control_plane(env, Some(LOAD_CPU))?;
    for (svc, prefix) in [
        ("exact", "/exact"),
        ("hot", "/hot"),
        ("tenants", "/tenants"),
        ("faults", "/faults"),
    ] {
        harness::add_service(env, &cp.url, svc, prefix, upstream)?;
    }
    policy(
        env,
        &cp,
        &[
            "faults",
            "--limit",
            "1000000000",
            "--per",
            "1h",
            "--service",
            "faults",
            "--scope",
            "global",
        ],
    )?;
    let mut out = started.heading("GLOBAL rate limits (Redis)", &args.output.label);
    out.push_str(&format!(
        "- Redis: {} on loopback, pinned with the load generator; data planes `--worker-threads 1 --redis-timeout {}` on the other core\n",
        procs::run_output(Path::new("redis-server"), &["--version"])?
            .split_whitespace()
            .nth(2)
            .unwrap_or("?"),
        args.redis_timeout
    ));
    let want = |p: &str| args.parts.iter().any(|x| x == p);
    if let Some(other) = args
        .faults
        .iter()
        .find(|k| !["single", "cluster", "control"].contains(&k.as_str()))
    {
        bail!("--faults: unknown kind {other:?} (single, cluster, control)");
    }
    let redis = Redis::start(env, false, &args.redis_cpu)?;
    if want("exact") || want("accuracy") {
        let dps = start_fleet(env, &cp, &redis, 4, "fleet", &args.redis_timeout, "/exact/")?;
        if want("exact") {
            exact(env, &cp, &dps, &mut out)?;
        }
        if want("accuracy") {
            accuracy(env, &cp, &dps, args.accuracy_secs, &mut out)?;
        }
    }
    if want("cheap") {
        cheap(env, &cp, &redis, args, upstream, &mut out)?;
    }
    if want("faults") {
        out.push_str(&format!(
            "\n## Faults (2 data planes, {} req/s, {} s; the store fails at 1/3 and returns at 2/3)\n\n\
             | fault | 2xx | failed (5xx, transport) | p99.9 | slowest sent <= 1 s after the kill or <= 2 s after the restart | slowest sent at any other time | fallback after | counting in Redis again after |\n\
             |---|---|---|---|---|---|---|---|\n",
            args.fault_rate, args.fault_secs
        ));
        for (run, kind) in args.faults.iter().enumerate() {
            match kind.as_str() {
                "single" => fault(env, &cp, args, false, true, run, &mut out)?,
                "cluster" => fault(env, &cp, args, true, true, run, &mut out)?,
                "control" => fault(env, &cp, args, false, false, run, &mut out)?,
                other => bail!("--faults: unknown kind {other:?}"),
            }
        }
        out.push_str(
            "\nTargets: zero 5xx, no request delayed by more than the store timeout (plus the \
             proxying itself), fallback within 1 s, counting in Redis again within 2 s. A \
             request's latency runs from its intended send time (open loop). The fault's own \
             cost is the slowest request sent in the windows after the kill and the restart; \
             the rest of the run (and a `control` run, `--faults control`) shows what the \
             machine adds with Redis steady.\n",
        );
    }
    Ok(out)
}
