//! The access log end to end: one JSON line per request with every field, for answers from a
//! backend and from the gateway itself; a writer that cannot keep up drops lines and counts
//! them while requests flow; the real binary reopens its file on SIGHUP and SIGUSR1.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use common::*;
use gw_data_plane::access_log::{self, Settings, Target};
use gw_proto::v1 as pb;
use serde_json::{Value, json};

/// The log's lines so far, as JSON.
fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Sends `path` with a request id and user agent the log must repeat.
async fn send(env: &Env, path: &str, id: &str) -> Reply {
    Call::get(env.dp.proxy, path)
        .header("x-request-id", id)
        .header("user-agent", "gw-test/1")
        .send()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_json_line_per_request_for_200_404_429_502_and_504() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("access.log");
    let target = log.clone();
    let mut env = Env::start_with(|c| {
        c.access_log = Settings {
            target: Target::File(target),
            ..Settings::default()
        };
    })
    .await;
    let b = Backend::start("b").await;
    let slow = Backend::start("slow").await;
    let mut dead = Backend::start("dead").await;
    dead.stop().await;
    env.add(service("api", "/api", &[&b])).await;
    env.add(service("dead", "/dead", &[&dead])).await;
    let mut s = service("slow", "/slow", &[&slow]);
    s.timeouts = Some(pb::Timeouts {
        request: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
        ..Default::default()
    });
    env.add(s).await;
    let v = put_policy(&mut env.admin, ip_policy("per-ip", "api", 1, 3600)).await;
    env.dp.wait_version(v).await;

    let before = access_log::format::rfc3339(SystemTime::now());
    let ok = Call::get(env.dp.proxy, "/api/x?q=1")
        .method(http::Method::POST)
        .header("x-request-id", "r200")
        .header("user-agent", "gw-test/1")
        .header("referer", "https://example.com/page")
        .body("hello")
        .send()
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(send(&env, "/api/x", "r429").await.status, 429);
    assert_eq!(send(&env, "/nothing", "r404").await.status, 404);
    assert_eq!(send(&env, "/dead/x", "r502").await.status, 502);
    let timed_out = Call::get(env.dp.proxy, "/slow/x")
        .header("x-request-id", "r504")
        .header("user-agent", "gw-test/1")
        .header("x-delay-ms", "30000")
        .send()
        .await;
    assert_eq!(timed_out.status, 504);

    let by_id: BTreeMap<String, Value> = eventually("five access-log lines", || async {
        let l = lines(&log);
        (l.len() == 5).then_some(l)
    })
    .await
    .into_iter()
    .map(|l| (l["request_id"].as_str().unwrap().to_owned(), l))
    .collect();
    let after = access_log::format::rfc3339(SystemTime::now());

    // (request id, the fields that differ; every other field is checked below for all)
    let expected = [
        (
            "r200",
            json!({"method": "POST", "path": "/api/x?q=1", "status": 200, "bytes_in": 5,
                "bytes_out": ok.body.len(), "service": "api", "upstream": b.url(),
                "upstream_status": 200, "rate_limit": "allowed", "rate_limit_policy": "per-ip",
                "referer": "https://example.com/page"}),
        ),
        (
            "r429",
            json!({"method": "GET", "path": "/api/x", "status": 429, "bytes_in": 0,
                "service": "api", "upstream": null, "upstream_status": null,
                "upstream_time_ms": null, "rate_limit": "rejected",
                "rate_limit_policy": "per-ip", "referer": null}),
        ),
        (
            "r404",
            json!({"method": "GET", "path": "/nothing", "status": 404, "bytes_in": 0,
                "service": null, "upstream": null, "upstream_status": null,
                "upstream_time_ms": null, "rate_limit": "none", "rate_limit_policy": null,
                "referer": null}),
        ),
        (
            "r502",
            json!({"method": "GET", "path": "/dead/x", "status": 502, "bytes_in": 0,
                "service": "dead", "upstream": dead.url(), "upstream_status": null,
                "rate_limit": "none", "rate_limit_policy": null, "referer": null}),
        ),
        (
            "r504",
            json!({"method": "GET", "path": "/slow/x", "status": 504, "bytes_in": 0,
                "service": "slow", "upstream": slow.url(), "upstream_status": null,
                "rate_limit": "none", "rate_limit_policy": null, "referer": null}),
        ),
    ];
    let fields = [
        "time",
        "client_ip",
        "method",
        "path",
        "protocol",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "service",
        "upstream",
        "upstream_status",
        "upstream_time_ms",
        "rate_limit",
        "rate_limit_policy",
        "consumer",
        "request_id",
        "user_agent",
        "referer",
    ];
    for (id, want) in expected {
        let line = &by_id[id];
        let keys: Vec<&str> = line.as_object().unwrap().keys().map(|k| &**k).collect();
        let mut sorted = fields.to_vec();
        sorted.sort_unstable();
        assert_eq!(keys, sorted, "{id}: {line}");
        for (k, v) in want.as_object().unwrap() {
            assert_eq!(&line[k], v, "{id}: field {k} in {line}");
        }
        assert_eq!(line["client_ip"], "127.0.0.1", "{id}");
        assert_eq!(line["protocol"], "HTTP/1.1", "{id}");
        assert_eq!(line["request_id"], id);
        assert_eq!(line["user_agent"], "gw-test/1", "{id}");
        assert_eq!(line["consumer"], Value::Null, "{id}: no consumers yet");
        let time = line["time"].as_str().unwrap();
        assert!(
            time.len() == 24 && before.as_str() <= time && time <= after.as_str(),
            "{id}: time {time} not within [{before}, {after}]"
        );
        let duration = line["duration_ms"].as_f64().unwrap();
        assert!(duration > 0.0, "{id}: {line}");
        if let Some(upstream) = line["upstream_time_ms"].as_f64() {
            assert!(upstream > 0.0 && upstream <= duration, "{id}: {line}");
        }
        if id != "r200" {
            // The gateway's own JSON answer.
            assert!(line["bytes_out"].as_u64().unwrap() > 10, "{id}: {line}");
        }
    }
    // The 502 and 504 say how long the attempt took; the 504 waited the service's timeout.
    assert!(by_id["r502"]["upstream_time_ms"].as_f64().is_some());
    assert!(by_id["r504"]["upstream_time_ms"].as_f64().unwrap() >= 1000.0);
    assert_eq!(env.dp.metric("gw_access_log_lines_total").await, Some(5.0));
    assert_eq!(
        env.dp.metric("gw_access_log_dropped_total").await,
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_cannot_keep_up_drops_lines_and_counts_them_while_requests_flow() {
    let logs = tempfile::tempdir().unwrap();
    let fifo = logs.path().join("access.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // The reading end is opened (the writer's open waits for it) but not read: once the
    // pipe's buffer is full, the writer blocks in write(2) like one behind a stalled disk.
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::File::open(fifo).unwrap())
    };
    let target = fifo.clone();
    let mut env = Env::start_with(|c| {
        c.access_log = Settings {
            target: Target::File(target),
            capacity: 4,
            ..Settings::default()
        };
    })
    .await;
    let mut reader = reader.join().unwrap();
    let b = Backend::start("b").await;
    env.add(service("api", "/", &[&b])).await;

    // 16 KiB user agents: four lines fill the pipe's 64 KiB, four more the queue.
    let agent = "a".repeat(16 * 1024);
    const REQUESTS: usize = 40;
    for i in 0..REQUESTS {
        let r = Call::get(env.dp.proxy, "/x")
            .header("user-agent", &agent)
            .send()
            .await;
        assert_eq!(r.status, 200, "request {i} answered while the log is stuck");
    }
    let dropped = eventually("lines dropped", || async {
        env.dp
            .metric("gw_access_log_dropped_total")
            .await
            .filter(|&d| d > 0.0)
    })
    .await;
    assert!(dropped < REQUESTS as f64, "{dropped}");

    // Now read: the queued lines arrive, and every request is a line or a drop.
    let read = Arc::new(AtomicUsize::new(0));
    let counter = read.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = reader.read(&mut buf) {
            let lines = buf[..n].iter().filter(|&&b| b == b'\n').count();
            counter.fetch_add(lines, Ordering::Relaxed);
        }
    });
    eventually("every request written or dropped", || async {
        let dropped = env.dp.metric("gw_access_log_dropped_total").await?;
        let written = env.dp.metric("gw_access_log_lines_total").await?;
        let read = read.load(Ordering::Relaxed) as f64;
        (read == written && read + dropped == REQUESTS as f64).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reopens_its_access_log_on_sighup_and_sigusr1() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path()).await;
    let mut admin = cp.admin().await;
    let b = Backend::start("b").await;
    create(&mut admin, service("s", "/", &[&b])).await;
    let log = dir.path().join("access.log");

    let mut cmd = data_plane_command(&cp, dir.path(), "log-test");
    cmd.arg("--access-log").arg(&log);
    let bin = Binary::spawn(cmd).await;
    let admin_addr = bin.admin;
    eventually("the binary has a config", || async {
        (Call::get(admin_addr, "/readyz").send().await.status == 200).then_some(())
    })
    .await;
    let pid = bin.child.id().unwrap();

    let mut rotated = Vec::new();
    let signals = [
        ("HUP", gw_testkit::Signal::Hup),
        ("USR1", gw_testkit::Signal::Usr1),
    ];
    for (n, (signal, raw)) in signals.into_iter().enumerate() {
        let id = format!("before-{signal}");
        let r = Call::get(bin.proxy, "/x")
            .header("x-request-id", &id)
            .send()
            .await;
        assert_eq!(r.status, 200);
        eventually("the line is written", || async {
            lines(&log)
                .iter()
                .any(|l| l["request_id"] == id.as_str())
                .then_some(())
        })
        .await;
        // What logrotate does: move the file away, then signal.
        let moved = dir.path().join(format!("access.log.{}", n + 1));
        std::fs::rename(&log, &moved).unwrap();
        gw_testkit::send_signal(pid, raw);
        // Lines may still reach the old file until the signal is handled; then a new file.
        eventually(&format!("a new access.log after SIG{signal}"), || async {
            let r = Call::get(bin.proxy, "/x")
                .header("x-request-id", "after")
                .send()
                .await;
            assert_eq!(r.status, 200);
            (!lines(&log).is_empty()).then_some(())
        })
        .await;
        rotated.push(moved);
    }
    for moved in &rotated {
        let old = lines(moved);
        assert!(
            old.iter()
                .any(|l| l["request_id"].as_str().unwrap().starts_with("before-")),
            "{}: {old:?}",
            moved.display()
        );
    }
    assert!(lines(&log).iter().all(|l| l["status"] == 200));
    eventually("both reopens logged", || async {
        (bin.log_lines("access log reopened").len() == 2).then_some(())
    })
    .await;
}
