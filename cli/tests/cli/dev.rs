//! `gwctl dev` as a real process: everything on port 0, found through the printed addresses.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use bytes::Bytes;
use gw_testkit::eventually;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdout, Command};

use crate::support::gwctl_env;

/// The banner's last line (`gwctl::dev::banner::READY_LINE`).
const READY_LINE: &str = "Ready. Press Ctrl-C to stop everything.";
/// How long start-up and shutdown may take: generous for a loaded 2-core machine, where the
/// process also opens and migrates a fresh SQLite database.
const DEADLINE: Duration = Duration::from_secs(60);
const BACKENDS: [&str; 3] = ["service-a", "service-b", "service-c"];
/// `gwctl dev` with every listener on a free loopback port.
const ALL_ON_PORT_ZERO: [&str; 9] = [
    "dev",
    "--listen",
    "127.0.0.1:0",
    "--admin-listen",
    "127.0.0.1:0",
    "--control-plane-listen",
    "127.0.0.1:0",
    "--backend-ports",
    "0,0,0",
];

/// A running `gwctl dev` and what its banner said.
struct Dev {
    child: Child,
    stdout: BufReader<ChildStdout>,
    /// Component name (`proxy`, `control plane`, `service-a`, …) to its `http://` URL.
    urls: HashMap<String, String>,
    banner: String,
    /// TMPDIR of the process, so the test can see what it leaves behind.
    tmp: tempfile::TempDir,
}

impl Dev {
    /// Starts `gwctl dev` with every address on loopback port 0 and reads its banner.
    async fn start() -> Dev {
        Self::start_with(&[]).await
    }

    /// Like [`Dev::start`], with `extra` flags.
    async fn start_with(extra: &[&str]) -> Dev {
        let tmp = tempfile::tempdir().unwrap();
        let mut args = ALL_ON_PORT_ZERO.to_vec();
        args.extend_from_slice(extra);
        let mut child = command(&args, tmp.path()).spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut banner = String::new();
        let read_banner = async {
            loop {
                let mut line = String::new();
                let n = stdout.read_line(&mut line).await.unwrap();
                banner.push_str(&line);
                if n == 0 || line.trim_end() == READY_LINE {
                    break;
                }
            }
        };
        if tokio::time::timeout(DEADLINE, read_banner).await.is_err() {
            panic!("no ready line within {DEADLINE:?}; stdout so far:\n{banner}");
        }
        assert!(
            banner.ends_with(&format!("{READY_LINE}\n")),
            "gwctl dev ended before it was ready; stdout:\n{banner}\nstderr:\n{}",
            stderr_of(&mut child).await
        );
        let urls = banner
            .lines()
            .filter_map(|line| {
                let line = line.strip_prefix("  ")?;
                let (name, url) = line.split_once("http://")?;
                Some((name.trim().to_string(), format!("http://{}", url.trim())))
            })
            .collect();
        Dev {
            child,
            stdout,
            urls,
            banner,
            tmp,
        }
    }

    fn url(&self, component: &str) -> &str {
        self.urls
            .get(component)
            .unwrap_or_else(|| panic!("no {component:?} line in the banner:\n{}", self.banner))
    }

    /// Sends `signal` (`Int`, `Term`) to the process, as Ctrl-C or a service manager would.
    fn signal(&self, signal: gw_testkit::Signal) {
        gw_testkit::send_signal(self.child.id().unwrap(), signal);
    }

    /// Waits for the process to exit; returns its status, the rest of stdout, and stderr.
    async fn exit(mut self) -> (ExitStatus, String, String, tempfile::TempDir) {
        let status = match tokio::time::timeout(DEADLINE, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("gwctl dev still running {DEADLINE:?} after the signal"),
        };
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).await.unwrap();
        let stderr = stderr_of(&mut self.child).await;
        (status, rest, stderr, self.tmp)
    }
}

fn command(args: &[&str], tmp: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gwctl"));
    command
        .args(args)
        .env_remove("GW_CONTROL_PLANE")
        .env_remove("GW_ADMIN_TOKEN")
        .env_remove("RUST_LOG")
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        stderr.read_to_string(&mut text).await.unwrap();
    }
    text
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_balances_across_the_demo_backends_then_limits_and_stops_on_sigint() {
    let dev = Dev::start().await;
    let proxy = dev.url("proxy").to_string();
    // The default database lives in the process's temporary directory.
    let tmp_entries = entries(dev.tmp.path());
    assert_eq!(tmp_entries.len(), 1, "{tmp_entries:?}");
    assert!(
        dev.banner.contains(&format!(
            "{}/gw.db (temporary: removed on exit)",
            tmp_entries[0].display()
        )),
        "{}",
        dev.banner
    );

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut answered_by = Vec::new();
    for i in 1..=6 {
        let response = client
            .get(format!("{proxy}/api/data").parse().unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body).to_string();
        if i <= 5 {
            assert_eq!(status, 200, "request {i}: {text}");
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let name = json["backend"].as_str().unwrap().to_string();
            assert_eq!(headers["x-backend"], name.as_str(), "request {i}");
            // strip_prefix is on: the backend saw /data, not /api/data.
            assert_eq!(json["path"], "/data", "request {i}: {text}");
            assert_eq!(json["method"], "GET", "request {i}: {text}");
            assert!(
                headers.contains_key("ratelimit"),
                "request {i}: {headers:?}"
            );
            answered_by.push(name);
        } else {
            assert_eq!(status, 429, "request {i}: {text}");
            let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=60).contains(&retry), "retry-after {retry}");
            let policy = headers["ratelimit-policy"].to_str().unwrap();
            assert!(policy.contains("\"demo-per-ip\";q=5;w=60"), "{policy}");
            let remaining = headers["ratelimit"].to_str().unwrap();
            assert!(remaining.contains("r=0"), "{remaining}");
        }
    }
    // Round robin: consecutive backends in a, b, c order, wherever the rotation started.
    let start = BACKENDS
        .iter()
        .position(|b| *b == answered_by[0])
        .unwrap_or_else(|| panic!("unknown backend {:?}", answered_by[0]));
    let expected: Vec<&str> = (0..5).map(|i| BACKENDS[(start + i) % 3]).collect();
    assert_eq!(answered_by, expected);

    // The printed gwctl commands work against the printed control plane.
    let cp = dev.url("control plane").to_string();
    let nodes = gwctl_env(&["--control-plane", &cp, "nodes", "-o", "json"], &[]).await;
    let nodes = nodes.json();
    assert_eq!(nodes["nodes"][0]["node_id"], "dev", "{nodes}");
    assert_eq!(nodes["nodes"][0]["in_sync"], true, "{nodes}");
    let services = gwctl_env(
        &["--control-plane", &cp, "service", "list", "-o", "json"],
        &[],
    )
    .await;
    let services = services.json();
    let demo = &services["services"][0];
    assert_eq!(demo["name"], "demo");
    assert_eq!(demo["path_prefix"], "/api");
    assert_eq!(demo["strip_prefix"], true);
    let endpoints: Vec<&str> = BACKENDS.iter().map(|b| dev.url(b)).collect();
    assert_eq!(demo["endpoints"], serde_json::json!(endpoints));

    // The data plane's reports reach gwctl: the six requests, one of them limited, and every
    // demo backend healthy on the one node.
    let stats = eventually("gwctl stats counts the six requests", || async {
        let run = gwctl_env(&["--control-plane", &cp, "stats", "-o", "json"], &[]).await;
        let json = run.json();
        (json["services"][0]["total"]["requests"] == 6).then_some(json)
    })
    .await;
    let total = &stats["services"][0]["total"];
    assert_eq!(total["responses_2xx"], 5, "{stats}");
    assert_eq!(total["rate_limited"], 1, "{stats}");
    assert_eq!(
        stats["services"][0]["nodes"][0]["node_id"], "dev",
        "{stats}"
    );
    assert_eq!(stats["policies"][0]["policy"], "demo-per-ip", "{stats}");
    assert_eq!(stats["policies"][0]["rate_limited"], 1, "{stats}");
    let all_up: Vec<(String, u64)> = endpoints.iter().map(|e| (e.to_string(), 1)).collect();
    eventually(
        "gwctl health shows the three backends up on the node",
        || async {
            let run = gwctl_env(&["--control-plane", &cp, "health", "-o", "json"], &[]).await;
            let json = run.json();
            let reported: Vec<(String, u64)> = json["services"][0]["endpoints"]
                .as_array()?
                .iter()
                .map(|e| {
                    (
                        e["endpoint"].as_str().unwrap_or("").to_string(),
                        e["healthy_nodes"].as_u64().unwrap_or(0),
                    )
                })
                .collect();
            (reported == all_up).then_some(())
        },
    )
    .await;

    drop(client);
    dev.signal(gw_testkit::Signal::Int);
    let (status, rest, stderr, tmp) = dev.exit().await;
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert_eq!(rest, "", "stdout after the banner");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The temporary directory (database, config cache) is gone.
    assert_eq!(entries(tmp.path()), Vec::<PathBuf>::new());
    // And the servers with it.
    assert!(tokio::net::TcpStream::connect(&proxy[7..]).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_stops_cleanly_on_sigterm() {
    let dev = Dev::start().await;
    let proxy = dev.url("proxy").to_string();
    dev.signal(gw_testkit::Signal::Term);
    let (status, rest, stderr, tmp) = dev.exit().await;
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert_eq!(rest, "");
    assert_eq!(entries(tmp.path()), Vec::<PathBuf>::new());
    assert!(tokio::net::TcpStream::connect(&proxy[7..]).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_relaunched_on_the_same_database_points_the_demo_at_the_new_backends() {
    let db_dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", db_dir.path().join("dev.db").display());
    let mut seen_endpoints = Vec::new();
    // Holds the first run's service-a port through the second run, so that the second run's
    // port 0 cannot be given the same port again (the kernel may reuse a freed one).
    let mut old_port_holder = None;
    for (run, action) in [(1, "created"), (2, "updated")] {
        let dev = Dev::start_with(&["--database", &db]).await;
        assert!(
            dev.banner.contains(&format!("  database       {db}\n")),
            "run {run}: {}",
            dev.banner
        );
        assert!(
            dev.banner.contains(&format!("service 'demo' {action}")),
            "run {run}: {}",
            dev.banner
        );
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let response = client
            .get(format!("{}/api/data", dev.url("proxy")).parse().unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "run {run}");
        let name = response.headers()["x-backend"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(BACKENDS.contains(&name.as_str()), "run {run}: {name}");
        seen_endpoints.push(dev.url("service-a").to_string());
        drop(client);
        dev.signal(gw_testkit::Signal::Int);
        let (status, _, stderr, _tmp) = dev.exit().await;
        assert_eq!(status.code(), Some(0), "run {run}: {stderr}");
        // A database the operator named is theirs: it stays.
        assert!(db_dir.path().join("dev.db").exists(), "run {run}");
        if old_port_holder.is_none() {
            // Whatever connects there is cut off at once. If another process took the port
            // in between, it is just as unavailable to the second run.
            let addr = &seen_endpoints[0]["http://".len()..];
            old_port_holder = TcpListener::bind(addr).await.ok().map(|listener| {
                tokio::spawn(async move {
                    while let Ok((conn, _)) = listener.accept().await {
                        drop(conn);
                    }
                })
            });
        }
    }
    // The second run's backends are elsewhere, and the answer above came from them, so the
    // stored service was repointed.
    assert_ne!(seen_endpoints[0], seen_endpoints[1]);
    if let Some(holder) = old_port_holder {
        holder.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_one_line_naming_the_flag_and_nothing_starts() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let taken_addr = addr.to_string();
    let taken_last_backend = format!("0,0,{}", addr.port());
    let cases = [
        (
            vec!["--listen", taken_addr.as_str()],
            format!("error: --listen {addr}: address already in use"),
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--control-plane-listen",
                taken_addr.as_str(),
            ],
            format!("error: --control-plane-listen {addr}: address already in use"),
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--backend-ports",
                taken_last_backend.as_str(),
            ],
            format!("error: --backend-ports {addr}: address already in use"),
        ),
    ];
    for (flags, want) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let mut args = vec!["dev"];
        // Everything not under test on port 0, so only the taken port can collide.
        for (flag, value) in [
            ("--admin-listen", "127.0.0.1:0"),
            ("--control-plane-listen", "127.0.0.1:0"),
            ("--backend-ports", "0,0,0"),
        ] {
            if !flags.contains(&flag) {
                args.extend([flag, value]);
            }
        }
        args.extend(flags.iter().copied());
        let child = command(&args, tmp.path()).spawn().unwrap();
        let output = match tokio::time::timeout(DEADLINE, child.wait_with_output()).await {
            Ok(output) => output.unwrap(),
            Err(_) => panic!("gwctl {args:?} did not exit"),
        };
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr, format!("{want}\n"), "{args:?}");
        assert_eq!(String::from_utf8(output.stdout).unwrap(), "", "{args:?}");
        // Nothing was started: not even the temporary directory was made.
        assert_eq!(entries(tmp.path()), Vec::<PathBuf>::new(), "{args:?}");
    }
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_that_cannot_start_is_reported_as_such() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("no-such-dir").join("gw.db");
    let db = db.to_str().unwrap();
    let mut args = ALL_ON_PORT_ZERO.to_vec();
    args.extend(["--database", db]);
    let child = command(&args, tmp.path()).spawn().unwrap();
    let output = match tokio::time::timeout(DEADLINE, child.wait_with_output()).await {
        Ok(output) => output.unwrap(),
        Err(_) => panic!("gwctl dev with an unusable database did not exit"),
    };
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(String::from_utf8(output.stdout).unwrap(), "");
    // The data plane may warn that it lost the control plane; the error is the last line,
    // and names the real cause rather than a failed call.
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "error: control plane: cannot open database '{db}'"
        )),
        "{stderr}"
    );
    // Its temporary directory (for the data plane's cache) is gone too.
    assert_eq!(entries(tmp.path()), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn dev_help_documents_every_flag() {
    let run = gwctl_env(&["dev", "--help"], &[]).await;
    let help = run.ok();
    for flag in [
        "--database <URL>",
        "--listen <ADDR>",
        "--admin-listen <ADDR>",
        "--control-plane-listen <ADDR>",
        "--backend-ports <A,B,C>",
        "--redis-url <URL>",
        "--redis-timeout <DURATION>",
        "[default: 127.0.0.1:8080]",
        "[default: 127.0.0.1:9901]",
        "[default: 127.0.0.1:50051]",
        "[default: 8001,8002,8003]",
        "Ctrl-C",
    ] {
        assert!(help.contains(flag), "missing {flag:?} in\n{help}");
    }
}

#[tokio::test]
async fn a_redis_timeout_without_a_redis_url_is_refused() {
    let run = gwctl_env(&["dev", "--redis-timeout", "1s"], &[]).await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("--redis-url <URL>"), "{}", run.stderr);
    assert_eq!(run.stdout, "");
}

/// The data plane's wait for Redis in the GLOBAL test. A decision that timed out would be
/// decided by the node's share (alone, the whole limit, in a bucket of its own) and could
/// admit a sixth request; the default 5ms is reached on a loaded 2-core machine, where a
/// request can spend that long before it even reaches Redis. No loopback round trip takes
/// this long, however loaded the machine.
const REDIS_TIMEOUT: &str = "30s";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_with_a_redis_url_runs_the_demo_policy_as_global() {
    let redis = gw_testkit::redis::RedisServer::start().await;
    let dev = Dev::start_with(&[
        "--redis-url",
        &redis.url(),
        "--redis-timeout",
        REDIS_TIMEOUT,
    ])
    .await;
    assert!(
        dev.banner
            .contains("policy 'demo-per-ip' is GLOBAL: counted in redis://127.0.0.1:"),
        "{}",
        dev.banner
    );
    let control_plane = dev.url("control plane").to_string();
    let listed = gwctl_env(
        &[
            "--control-plane",
            &control_plane,
            "-o",
            "json",
            "policy",
            "list",
        ],
        &[],
    )
    .await
    .json();
    assert_eq!(listed["policies"][0]["scope"], "global", "{listed}");
    // The store connects in the background; then the demo limit is counted in Redis.
    eventually("gwctl nodes shows the store connected", || async {
        let nodes = gwctl_env(&["--control-plane", &control_plane, "nodes"], &[])
            .await
            .ok()
            .to_string();
        nodes.contains(" redis\n").then_some(())
    })
    .await;
    let proxy = dev.url("proxy").to_string();
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let response = client
            .get(format!("{proxy}/api/data").parse().unwrap())
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    // Every decision was Redis's: none failed and fell back to the node's share. Five
    // admitted and one rejected by Redis; the seventh answered by the over-limit cache.
    let metrics = Client::builder(TokioExecutor::new())
        .build_http::<Empty<Bytes>>()
        .get(format!("{}/metrics", dev.url("admin")).parse().unwrap())
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    let store_lines: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("gw_rate_limit_"))
        .collect();
    let metric = |series: &str| {
        metrics.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .parse::<f64>()
                .ok()
        })
    };
    for series in [
        "gw_rate_limit_store_transitions_total{to=\"down\"}",
        "gw_rate_limit_store_errors_total{kind=\"timeout\"}",
        "gw_rate_limit_store_errors_total{kind=\"connection\"}",
        "gw_rate_limit_store_errors_total{kind=\"auth\"}",
        "gw_rate_limit_store_errors_total{kind=\"bad_key\"}",
        "gw_rate_limit_store_errors_total{kind=\"other\"}",
    ] {
        assert_eq!(
            metric(series),
            Some(0.0),
            "{series}: a decision fell back to the node's share ({statuses:?}):\n{}",
            store_lines.join("\n")
        );
    }
    for (series, n) in [
        (
            "gw_rate_limit_store_round_trips_by_policy_total{policy=\"demo-per-ip\"}",
            6.0,
        ),
        (
            "gw_rate_limit_local_decisions_total{policy=\"demo-per-ip\"}",
            1.0,
        ),
    ] {
        assert_eq!(
            metric(series),
            Some(n),
            "{series}:\n{}",
            store_lines.join("\n")
        );
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429]);
    assert_eq!(
        redis
            .cli(&["exists", "gw:rl:demo-per-ip:5-60-5:ip:127.0.0.1"])
            .trim(),
        "1"
    );
    dev.signal(gw_testkit::Signal::Int);
    let (status, _, stderr, _) = dev.exit().await;
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
}
