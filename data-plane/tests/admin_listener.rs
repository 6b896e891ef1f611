//! The admin listener's guard (README, gw-data-plane, "Admin listener"): off loopback the
//! binary refuses to start without admin TLS and the admin token, in one line naming the
//! flags, unless `--insecure` (then it says loudly that it is open); with them, `/config` and
//! `/metrics` answer 401 without the token and the probes stay open; the admin certificate is
//! read again on SIGHUP and when its files change, and open connections keep theirs.
//! Certificates come from CAs made in the test.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::tls::{get_authorized, http1, served_names, try_tls};
use common::{Binary, Call, ControlPlane, DataPlane, eventually, logs};
use gw_testkit::tls::Ca;
use http::StatusCode;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_gw-data-plane");
const TOKEN: &str = "dp-admin-s3cret";

/// The binary with the admin settings of the environment removed, so only the test's count.
fn data_plane() -> Command {
    let mut cmd = Command::new(BIN);
    for var in [
        "GW_DP_ADMIN_TOKEN",
        "GW_ADMIN_TLS_CERT",
        "GW_ADMIN_TLS_KEY",
        "GW_DP_INSECURE",
        "GW_ADMIN_LISTEN",
    ] {
        cmd.env_remove(var);
    }
    // As an operator debugging might run it: the refusal must stay one line regardless.
    cmd.env("NO_COLOR", "1").env("RUST_BACKTRACE", "1");
    cmd
}

/// The admin listener of a binary bound to 0.0.0.0, reached over loopback.
fn loopback(admin: SocketAddr) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], admin.port()))
}

/// A GET over a new TLS connection to `addr` trusting `ca`, with `authorization` if given.
async fn get_tls(
    addr: SocketAddr,
    ca: &Ca,
    path: &str,
    authorization: Option<&str>,
) -> (StatusCode, String) {
    let mut sender = http1(try_tls(addr, ca, "localhost", &[]).await.unwrap()).await;
    get_authorized(&mut sender, "localhost", path, authorization).await
}

/// Whether a handshake trusting `ca` succeeds and the server names `name`.
async fn serves(addr: SocketAddr, ca: &Ca, name: &str) -> bool {
    match try_tls(addr, ca, "localhost", &[]).await {
        Ok(stream) => served_names(&stream).iter().any(|n| n == name),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_without_tls_and_token_the_binary_refuses_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = Ca::new("admin CA")
        .server(&["localhost"])
        .write(dir.path(), "admin");
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let tls = ["--admin-tls-cert", &cert, "--admin-tls-key", &key];
    let cases: [(&str, &[&str]); 3] = [
        ("neither", &[]),
        ("the token only", &["--admin-token", TOKEN]),
        ("TLS only", &tls),
    ];
    for (case, extra) in cases {
        let out = data_plane()
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"])
            .args(["--cache-file", &dir.path().join("c").display().to_string()])
            .args(extra)
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{case}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{case}: one line, got: {stderr}");
        let line = lines[0];
        assert!(
            line.contains(
                "refusing to serve the admin listener on 0.0.0.0:0 without TLS and a token"
            ) && line.contains("--admin-tls-cert")
                && line.contains("--admin-tls-key")
                && line.contains("--admin-token")
                && line.contains("--insecure"),
            "{case}: {line}"
        );
        assert!(!line.contains(TOKEN), "{case}: the token in the refusal");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_insecure_the_binary_starts_open_and_says_so_loudly() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path()).await;
    let mut cmd = data_plane();
    cmd.args(["--control-plane", &cp.url(), "--listen", "127.0.0.1:0"])
        .args(["--admin-listen", "0.0.0.0:0", "--insecure"])
        .args(["--cache-file", &dir.path().join("c").display().to_string()]);
    let bin = Binary::spawn(cmd).await;
    let warned = bin.log_lines("INSECURE (--insecure)");
    assert_eq!(warned.len(), 1, "{:?}", bin.log.lock().unwrap());
    assert!(warned[0].contains("ERROR"), "{}", warned[0]);
    assert!(warned[0].contains("--admin-tls-cert"), "{}", warned[0]);
    // Open, as it said: /config answers without a token.
    let reply = Call::get(loopback(bin.admin), "/config").send().await;
    assert_eq!(reply.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_with_tls_and_token_it_guards_config_and_metrics_and_reloads_on_sighup() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path()).await;
    let ca = Ca::new("admin CA");
    let (cert, key) = ca
        .server(&["localhost", "127.0.0.1"])
        .write(dir.path(), "admin");
    let mut cmd = data_plane();
    cmd.args(["--control-plane", &cp.url(), "--listen", "127.0.0.1:0"])
        .args(["--admin-listen", "0.0.0.0:0"])
        .arg("--admin-tls-cert")
        .arg(&cert)
        .arg("--admin-tls-key")
        .arg(&key)
        .env("GW_DP_ADMIN_TOKEN", TOKEN)
        .args(["--cache-file", &dir.path().join("c").display().to_string()]);
    let bin = Binary::spawn(cmd).await;
    let admin = loopback(bin.admin);

    // Plain HTTP gets no answer from the TLS listener.
    assert!(Call::get(admin, "/healthz").try_send().await.is_err());
    // The probes stay open; /config and /metrics need the token.
    assert_eq!(get_tls(admin, &ca, "/healthz", None).await.0, 200);
    let bearer = format!("Bearer {TOKEN}");
    for path in ["/config", "/metrics"] {
        for wrong in [None, Some("Bearer nope"), Some(TOKEN)] {
            let (status, body) = get_tls(admin, &ca, path, wrong).await;
            assert_eq!(status, 401, "{path} with {wrong:?}");
            assert!(!body.contains(TOKEN), "{body}");
        }
        let (status, body) = get_tls(admin, &ca, path, Some(&bearer)).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(!body.contains(TOKEN), "{path} shows the token");
    }

    // A connection opened before the rotation.
    let mut before = http1(try_tls(admin, &ca, "localhost", &[]).await.unwrap()).await;
    // Rotation: a certificate from another CA (key first: in between the pair does not
    // match and the old one stays), then SIGHUP.
    let new_ca = Ca::new("new admin CA");
    let renewed = new_ca.server(&["localhost", "renewed.test"]);
    std::fs::write(&key, &renewed.key).unwrap();
    std::fs::write(&cert, &renewed.cert).unwrap();
    gw_testkit::send_signal(bin.child.id().unwrap(), gw_testkit::Signal::Hup);
    eventually("the SIGHUP to reload the admin certificate", || async {
        bin.log_lines("TLS credentials reloaded")
            .iter()
            .any(|l| l.contains("SIGHUP") && l.contains("admin listener"))
            .then_some(())
    })
    .await;
    assert!(serves(admin, &new_ca, "renewed.test").await);
    assert!(
        !serves(admin, &ca, "localhost").await,
        "the old certificate"
    );
    assert_eq!(get_tls(admin, &new_ca, "/healthz", None).await.0, 200);
    // The old connection keeps working, and the process survived the signal.
    let (status, _) = get_authorized(&mut before, "localhost", "/config", Some(&bearer)).await;
    assert_eq!(status, 200);
    let mut bin = bin;
    assert!(bin.child.try_wait().unwrap().is_none(), "SIGHUP ended it");
    // The token is in no log line.
    assert!(bin.log_lines(TOKEN).is_empty());
}

/// Writes `pair` to `cert` and `key`.
fn write_pair(pair: &gw_testkit::tls::Pair, cert: &Path, key: &Path) {
    std::fs::write(key, &pair.key).unwrap();
    std::fs::write(cert, &pair.cert).unwrap();
}

#[tokio::test]
async fn admin_tls_files_changed_on_disk_apply_to_new_handshakes_without_a_signal() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("admin CA");
    let (cert, key) = ca.server(&["localhost"]).write(dir.path(), "admin");
    let cp = ControlPlane::start(dir.path()).await;
    let dp = DataPlane::start(&cp.url(), |c| {
        c.admin_token = Some(gw_tls::Secret::new(TOKEN));
        c.admin_tls = Some((cert.clone(), key.clone()));
        c.admin_tls_reload_interval = Duration::from_millis(50);
    })
    .await;
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(get_tls(dp.admin, &ca, "/config", None).await.0, 401);
    assert_eq!(
        get_tls(dp.admin, &ca, "/config", Some(&bearer)).await.0,
        200
    );
    let mut before = http1(try_tls(dp.admin, &ca, "localhost", &[]).await.unwrap()).await;

    let new_ca = Ca::new("new admin CA");
    write_pair(&new_ca.server(&["localhost", "renewed.test"]), &cert, &key);
    eventually(
        "new handshakes to present the renewed certificate",
        || async {
            serves(dp.admin, &new_ca, "renewed.test")
                .await
                .then_some(())
        },
    )
    .await;
    assert!(!serves(dp.admin, &ca, "localhost").await);
    let (status, _) = get_authorized(&mut before, "localhost", "/metrics", Some(&bearer)).await;
    assert_eq!(status, 200, "the connection made before keeps working");
}
