//! `--config-file`: a declarative file applied at start wins over the database, makes one
//! config version (none when nothing differs), prunes only when asked, and a bad file stops
//! the start with its line and field, changing nothing.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{ControlPlane, service};
use gw_control_plane::config_file::ConfigFile;
use gw_proto::v1 as pb;

const BIN: &str = env!("CARGO_BIN_EXE_gw-control-plane");

/// Two services and a policy; `web`'s endpoint differs from what the tests store first.
const FILE: &str = "\
services:
  - name: web
    route:
      path_prefix: /web
    endpoints: [http://127.0.0.1:8001]
  - name: api
    route:
      path_prefix: /api
policies:
  - name: web-per-ip
    service: web
    limit: 100
    period: 1m
";

fn write(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("gateway.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn names(services: &[pb::Service]) -> Vec<&str> {
    services.iter().map(|s| s.name.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_wins_over_the_database_in_one_version_and_prunes_only_when_asked() {
    let mut cp = ControlPlane::start().await;
    let mut admin = cp.admin().await;
    admin.add("web", "/web").await;
    let before = admin.add("manual", "/manual").await;

    // Restart with the file: `web` is rewritten, `api` and the policy added, `manual` kept.
    cp.config.config_file = Some(ConfigFile {
        path: write(cp.dir.path(), FILE),
        prune: false,
    });
    let cp = cp.restart().await;
    let mut admin = cp.admin().await;
    let listed = admin.list().await;
    assert_eq!(
        listed.config_version,
        before + 1,
        "one version for the file"
    );
    assert_eq!(names(&listed.services), ["api", "manual", "web"]);
    let web = admin.get("web").await.unwrap();
    assert_eq!(web.endpoints, ["http://127.0.0.1:8001"]);
    assert_eq!(web.updated_version, before + 1);

    // A data plane gets exactly that version.
    let mut node = cp.node("dp-1", 0).await;
    let first = node.next().await;
    assert_eq!(first.version, before + 1);

    // The same file again changes nothing: no new version.
    let mut cp = cp.restart().await;
    assert_eq!(cp.admin().await.list().await.config_version, before + 1);

    // With prune, what the file does not name goes.
    cp.config.config_file = Some(ConfigFile {
        path: write(cp.dir.path(), FILE),
        prune: true,
    });
    let cp = cp.restart().await;
    let listed = cp.admin().await.list().await;
    assert_eq!(listed.config_version, before + 2);
    assert_eq!(names(&listed.services), ["api", "web"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_stops_the_start_naming_the_line_and_changes_nothing() {
    let mut cp = ControlPlane::start().await;
    let mut admin = cp.admin().await;
    let version = admin.add("web", "/web").await;
    let dir = cp.dir.clone();
    let bad = FILE
        .replace("http://127.0.0.1:8001", "http://127.0.0.1:8002")
        .replace("path_prefix: /api", "path_prefix: api");
    cp.config.config_file = Some(ConfigFile {
        path: write(dir.path(), &bad),
        prune: false,
    });
    let config = cp.config.clone();
    cp.stop().await.unwrap();

    let failed = ControlPlane::start_in(dir.clone(), config.clone()).await;
    let err = failed.stop().await.unwrap_err().to_string();
    assert!(
        err.contains("gateway.yaml:8:20: services[1].route.path_prefix: must start with '/'"),
        "{err}"
    );

    // The database is as it was: a start without the file finds the version and `web` as
    // they were.
    let plain = ControlPlane::start_in(
        dir,
        gw_control_plane::Config {
            config_file: None,
            ..config
        },
    )
    .await;
    let mut admin = plain.admin().await;
    assert_eq!(admin.list().await.config_version, version);
    assert_eq!(
        admin.get("web").await.unwrap().endpoints,
        service("web", "/web").endpoints
    );
}

#[test]
fn the_binary_logs_each_change_and_refuses_a_bad_file_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gw.db").display().to_string();
    let file = write(dir.path(), FILE);

    // A good file: one log line per change, then it serves.
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--database",
            &db,
            "--log-format",
            "json",
        ])
        .env("GW_CONFIG_FILE", &file)
        .env_remove("GW_ADMIN_TOKEN")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut applied = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        if line.contains("control plane listening") {
            break;
        }
        if line.contains("applied: added") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["source"], file.display().to_string(), "{line}");
            applied.push(v["name"].as_str().unwrap().to_owned());
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(applied, ["api", "web", "web-per-ip"]);

    // A bad file: the start fails with one line naming the file, line and field.
    let bad = write(dir.path(), &FILE.replace("period: 1m", "period: soon"));
    let out = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--database",
            &db,
            "--config-file",
        ])
        .arg(&bad)
        .env_remove("GW_ADMIN_TOKEN")
        .env("RUST_LOG", "error")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].starts_with("gw-control-plane: --config-file: ")
            && lines[0].contains("gateway.yaml:13:13: policies[0].period: "),
        "{text}"
    );
}
