//! The real `gw-data-plane` binary: flags, start-up, SIGTERM (in-flight request finishes,
//! exit status 0), and where it caches its config when not told.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_in_flight_request_finish_and_exits_zero() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path()).await;
    let mut admin = cp.admin().await;
    let b = Backend::start("b").await;
    create(&mut admin, service("s", "/", &[&b])).await;

    let cmd = data_plane_command(&cp, dir.path(), "proc-test");
    let bin = Binary::spawn(cmd).await;
    let (proxy, admin_addr) = (bin.proxy, bin.admin);
    let mut child = bin.child;
    let log = bin.log;
    eventually("the binary has a config", || async {
        (Call::get(admin_addr, "/readyz").send().await.status == 200).then_some(())
    })
    .await;

    let in_flight = tokio::spawn(async move {
        Call::get(proxy, "/slow")
            .header("x-delay-ms", "700")
            .send()
            .await
    });
    eventually("slow request reached the backend", || async {
        (b.hits() == 1).then_some(())
    })
    .await;
    gw_testkit::send_signal(child.id().unwrap(), gw_testkit::Signal::Term);
    let r = in_flight.await.unwrap();
    assert_eq!((r.status.as_u16(), r.text()), (200, "b".to_owned()));
    let status = tokio::time::timeout(gw_testkit::DEFAULT_DEADLINE, child.wait())
        .await
        .unwrap()
        .unwrap();
    // The log pipe closes with the process; wait for the drain to see its last lines.
    let log = eventually("the log drained", || async {
        let log = log.lock().unwrap().clone();
        log.iter()
            .any(|l| l.contains("data plane stopped"))
            .then_some(log)
    })
    .await;
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        log.join("\n")
    );
    assert!(log.iter().any(|l| l.contains("stop requested")), "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_are_all_reported_at_once() {
    let out = Command::new(env!("CARGO_BIN_EXE_gw-data-plane"))
        .args([
            "--trusted-proxies",
            "10.0.0.0/99",
            "--rate-limit-max-keys",
            "0",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--trusted-proxies") && err.contains("10.0.0.0/99"),
        "{err}"
    );
    assert!(err.contains("--rate-limit-max-keys"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_key_received_from_the_control_plane_is_in_no_log_line() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path()).await;
    let mut admin = cp.admin().await;
    let b = Backend::start("b").await;
    create(&mut admin, service("s", "/", &[&b])).await;
    let ca = gw_testkit::tls::Ca::new("site CA");
    let site = ca.server(&["site.test"]);
    put_cert(&mut admin, "site", &site).await;

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gw-data-plane"));
    cmd.args(["--control-plane", &cp.url(), "--listen", "127.0.0.1:0"])
        .args([
            "--tls-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--cache-file")
        .arg(dir.path().join("proc.cache"))
        .args(["--node-id", "key-test"])
        // Everything gw logs, and rustls's own debug lines.
        .env("RUST_LOG", "trace,h2=info,hyper=info,tower=info,tonic=info");
    let bin = Binary::spawn(cmd).await;
    let line = bin.log_lines("data plane listening").remove(0);
    let https = log_addr(&line, "https").unwrap();
    eventually("the binary serves the certificate", || async {
        (Call::get(bin.admin, "/config").send().await.text())
            .contains("site.test")
            .then_some(())
    })
    .await;
    // A handshake, a request, and a replaced certificate: the paths that touch the key.
    let mut sender = common::tls::http1(common::tls::tls(https, &ca, "site.test", &[]).await).await;
    let (status, _) = common::tls::get(&mut sender, "site.test", "/").await;
    assert_eq!(status, 200);
    let renewed = ca.server(&["site.test"]);
    let version = put_cert(&mut admin, "site", &renewed).await;
    eventually("the binary applies the renewed certificate", || async {
        (Call::get(bin.admin, "/readyz").send().await.status == 200
            && bin
                .log_lines("config applied")
                .iter()
                .any(|l| l.contains(&format!("version={version}"))))
        .then_some(())
    })
    .await;
    let log = bin.log.lock().unwrap().join("\n");
    assert!(log.contains("config applied"), "the log was captured");
    for pair in [&site, &renewed] {
        for key_line in pair.key.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!log.contains(key_line), "a private key line is in the log");
        }
    }
    assert!(!log.contains("PRIVATE KEY"));
}

/// Without `--cache-file`, the binary caches its config in the state directory: never in the
/// working directory, `$STATE_DIRECTORY` first (systemd), else `$XDG_STATE_HOME/gw`, created
/// owner-only with the file 0600.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_cache_file_goes_to_the_state_directory_not_the_working_directory() {
    use std::os::unix::fs::PermissionsExt;
    logs();
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path()).await;
    let mut admin = cp.admin().await;
    let b = Backend::start("b").await;
    create(&mut admin, service("s", "/", &[&b])).await;

    let cwd = dir.path().join("checkout");
    let xdg = dir.path().join("xdg-state");
    let systemd = dir.path().join("var-lib-gw");
    std::fs::create_dir(&cwd).unwrap();
    for (node, state_directory, want_dir) in [
        ("state-xdg", None, xdg.join("gw")),
        ("state-systemd", Some(&systemd), systemd.clone()),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gw-data-plane"));
        cmd.args(["--control-plane", &cp.url()])
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--node-id", node, "--worker-threads", "2"])
            .current_dir(&cwd)
            .env_remove("GW_CACHE_FILE")
            .env("XDG_STATE_HOME", &xdg)
            .env("HOME", dir.path().join("home"));
        match state_directory {
            Some(d) => cmd.env("STATE_DIRECTORY", d),
            None => cmd.env_remove("STATE_DIRECTORY"),
        };
        let bin = Binary::spawn(cmd).await;
        let cache = want_dir.join(format!("gw-config-{node}.cache"));
        eventually("the config cached in the state directory", || async {
            let cached = std::fs::metadata(&cache).is_ok_and(|m| m.len() > 0);
            let ready = Call::get(bin.admin, "/readyz").send().await.status == 200;
            (cached && ready).then_some(())
        })
        .await;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&cache), 0o600, "{}", cache.display());
        assert_eq!(mode(&want_dir), 0o700, "{}", want_dir.display());
        let in_cwd: Vec<_> = std::fs::read_dir(&cwd).unwrap().collect();
        assert!(in_cwd.is_empty(), "the working directory got {in_cwd:?}");
        drop(bin);
    }
    assert!(
        !dir.path().join("home").exists(),
        "HOME is not used when XDG_STATE_HOME is set"
    );
}
