//! The `gw-control-plane` binary: one clear line and a non-zero exit on start-up errors,
//! and a clean exit on SIGTERM.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_gw-control-plane");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("GW_CP_LISTEN")
        .env_remove("GW_DATABASE_URL")
        .env_remove("GW_ADMIN_TOKEN")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn stderr_line(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got: {text}");
    assert!(
        !text.contains("panicked") && !text.contains("backtrace"),
        "{text}"
    );
    lines[0].to_owned()
}

#[test]
fn a_port_in_use_is_one_clear_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gw.db").display().to_string();
    let out = run(&["--listen", &addr, "--database", &db]);
    assert!(!out.status.success());
    let line = stderr_line(&out);
    assert!(line.contains(&format!("cannot listen on {addr}")), "{line}");
}

#[test]
fn a_bad_database_path_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/missing/dir/gw.db", dir.path().display());
    let out = run(&["--listen", "127.0.0.1:0", "--database", &db]);
    assert!(!out.status.success());
    let line = stderr_line(&out);
    assert!(
        line.contains(&format!("cannot open database '{db}'")),
        "{line}"
    );
}

#[test]
fn help_does_not_print_the_admin_token() {
    let out = Command::new(BIN)
        .arg("--help")
        .env("GW_ADMIN_TOKEN", "hunter2")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--admin-token"), "{help}");
    assert!(
        help.contains("GW_CP_LISTEN") && help.contains("127.0.0.1:50051"),
        "{help}"
    );
    assert!(!help.contains("hunter2"), "{help}");
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gw.db").display().to_string();
    let mut child = KillOnDrop(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--database", &db])
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    // Logs go to stderr, one JSON object per line; the start-up line names the bound address
    // (the read blocks, no sleep).
    let stderr = child.stderr.take().unwrap();
    let (addr, mut lines) = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stderr).lines();
        let addr = lines
            .find_map(|l| {
                let l = l.unwrap();
                let v: serde_json::Value = serde_json::from_str(&l)
                    .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"));
                assert!(v["level"].is_string() && v["timestamp"].is_string(), "{l}");
                (v["message"] == "control plane listening")
                    .then(|| v["listen"].as_str().unwrap().to_owned())
            })
            .expect("no 'control plane listening' log line");
        (addr, lines)
    })
    .await
    .unwrap();

    // It answers gRPC before the signal...
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin = gw_proto::v1::admin_service_client::AdminServiceClient::new(channel);
    admin
        .list_services(gw_proto::v1::ListServicesRequest {})
        .await
        .unwrap();

    // ...and exits 0 after it.
    gw_testkit::send_signal(child.id(), gw_testkit::Signal::Term);
    let exit = gw_testkit::eventually("the control plane to exit after SIGTERM", || {
        let exited = child.try_wait().unwrap();
        async move { exited }
    })
    .await;
    assert!(exit.success(), "{exit:?}");
    // Nothing on stdout, and the rest of the log is JSON too.
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert_eq!(stdout, "", "the control plane wrote to stdout");
    let rest: Vec<String> = lines.by_ref().map(Result::unwrap).collect();
    assert!(
        rest.iter().any(|l| l.contains("control plane stopped")),
        "{rest:?}"
    );
    for l in &rest {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
    }
}

#[test]
fn text_logs_into_a_pipe_carry_no_colour_codes() {
    // stderr is a pipe here, not a terminal: no ANSI escapes, even without NO_COLOR.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gw.db").display().to_string();
    let mut child = KillOnDrop(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--database", &db])
            .env_remove("NO_COLOR")
            .env_remove("GW_LOG_FORMAT")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let line = BufReader::new(stderr)
        .lines()
        .map(Result::unwrap)
        .find(|l| l.contains("control plane listening"))
        .expect("no start-up line on stderr");
    assert!(line.contains(" INFO "), "{line}");
    assert!(!line.contains('\x1b'), "colour codes in a pipe: {line:?}");
}

/// Kills the child if the test fails before it exits, so no process outlives the test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `cmd` with JSON logs at `level`; returns it and its log lines, read on a thread so
/// the pipe never fills (the channel ends when the process does).
fn start_json(
    cmd: &mut Command,
    level: &str,
) -> (KillOnDrop, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let mut child = KillOnDrop(
        cmd.args(["--log-format", "json"])
            .env("RUST_LOG", level)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

#[test]
fn a_non_loopback_address_without_tls_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gw.db").display().to_string();
    let out = run(&["--listen", "0.0.0.0:0", "--database", &db]);
    assert!(!out.status.success());
    let line = stderr_line(&out);
    assert!(
        line.contains("refusing to serve on 0.0.0.0:0 without TLS and credentials")
            && line.contains("--tls-cert and --tls-key")
            && line.contains("--admin-token")
            && line.contains("--client-ca or --node-token")
            && line.contains("--insecure"),
        "{line}"
    );
    assert!(
        !dir.path().join("gw.db").exists(),
        "refused before touching anything"
    );
}

#[tokio::test]
async fn with_insecure_it_starts_and_says_so_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gw.db").display().to_string();
    let mut child = KillOnDrop(
        Command::new(BIN)
            .args(["--listen", "0.0.0.0:0", "--database", &db, "--insecure"])
            .env_remove("GW_ADMIN_TOKEN")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Logs go to stderr.
    let stderr = child.0.stderr.take().unwrap();
    let (warned, listening) = tokio::task::spawn_blocking(move || {
        let mut warned = false;
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            warned |= line.contains("INSECURE (--insecure)");
            if line.contains("control plane listening") {
                return (warned, true);
            }
        }
        (warned, false)
    })
    .await
    .unwrap();
    assert!(
        warned && listening,
        "warned {warned}, listening {listening}"
    );
}

#[tokio::test]
async fn private_keys_are_in_no_log_line_error_or_answer_and_the_database_is_0600() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gw.db");
    let db_url = db.display().to_string();
    let (child, mut rx) = start_json(
        Command::new(BIN).args(["--listen", "127.0.0.1:0", "--database", &db_url]),
        "debug",
    );
    let mut log = Vec::new();
    let mut admin = admin_client(&mut rx, &mut log).await;
    let ca = gw_testkit::tls::Ca::new("site CA");
    let site = ca.server(&["site.test"]);
    let other = ca.server(&["other.test"]);
    let put = |cert: &str, key: &str| gw_proto::v1::PutCertificateRequest {
        certificate: Some(gw_proto::v1::Certificate {
            name: "site".into(),
            cert_chain_pem: cert.into(),
            private_key_pem: key.into(),
            ..Default::default()
        }),
    };
    let mut seen = String::new();
    // Refused (the key is another certificate's), then accepted, listed and replaced.
    let refused = admin
        .put_certificate(put(&site.cert, &other.key))
        .await
        .unwrap_err();
    seen.push_str(refused.message());
    let ok = admin
        .put_certificate(put(&site.cert, &site.key))
        .await
        .unwrap();
    seen.push_str(&encoded(&ok.into_inner()));
    let listed = admin
        .list_certificates(gw_proto::v1::ListCertificatesRequest {})
        .await
        .unwrap();
    seen.push_str(&encoded(&listed.into_inner()));
    // Stop, so every log line is written.
    gw_testkit::send_signal(child.0.id(), gw_testkit::Signal::Term);
    while let Some(line) = rx.recv().await {
        log.push(line);
    }
    let log = log.join("\n");
    assert!(log.contains("certificate written"), "{log}");
    for key in [&site.key, &other.key] {
        let body = key.lines().nth(1).unwrap();
        assert!(!log.contains(body), "a key in the log");
        assert!(!seen.contains(body), "a key in an answer or error: {seen}");
    }
    assert!(!log.contains("PRIVATE KEY") && !seen.contains("PRIVATE KEY"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&db).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "database mode {mode:o}");
}

/// An answer as sent on the wire (lossy UTF-8), for checks that no secret is in it. Not its
/// `Debug`: that redacts secrets, so a leak would not show there.
fn encoded(answer: &impl prost::Message) -> String {
    String::from_utf8_lossy(&answer.encode_to_vec()).into_owned()
}

/// Reads log lines (kept in `log`) up to "control plane listening" and connects an admin
/// client to the address it names.
async fn admin_client(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    log: &mut Vec<String>,
) -> gw_proto::v1::admin_service_client::AdminServiceClient<tonic::transport::Channel> {
    let addr = loop {
        let line = rx
            .recv()
            .await
            .expect("no 'control plane listening' log line");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        log.push(line.clone());
        if v["message"] == "control plane listening" {
            break v["listen"].as_str().unwrap().to_owned();
        }
    };
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    gw_proto::v1::admin_service_client::AdminServiceClient::new(channel)
}

#[tokio::test]
async fn an_hs256_secret_is_in_no_log_line_error_or_answer() {
    use gw_proto::v1 as pb;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gw.db").display().to_string();
    let (child, mut rx) = start_json(
        Command::new(BIN).args(["--listen", "127.0.0.1:0", "--database", &db]),
        "trace",
    );
    let mut log = Vec::new();
    let mut admin = admin_client(&mut rx, &mut log).await;
    let secret = "hs256-secret-for-the-log-test-7f3a9c2e41d8b605";
    let credential = |consumer: &str, secret: &str, claim: &str| pb::CreateJwtCredentialRequest {
        credential: Some(pb::JwtCredential {
            consumer: consumer.into(),
            issuer: "https://idp.test".into(),
            key: Some(pb::jwt_credential::Key::Hs256Secret(
                secret.as_bytes().to_vec(),
            )),
            claim: claim.into(),
            ..Default::default()
        }),
    };
    let mut seen = String::new();
    for name in ["alice", "bob"] {
        admin
            .create_consumer(pb::CreateConsumerRequest {
                consumer: Some(pb::Consumer {
                    name: name.into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
    }
    let created = admin
        .create_jwt_credential(credential("alice", secret, ""))
        .await
        .unwrap()
        .into_inner();
    seen.push_str(&encoded(&created));
    // Refusals: too short (a prefix of the secret), another claim, an unknown consumer.
    for request in [
        credential("bob", &secret[..20], ""),
        credential("bob", secret, "email"),
        credential("carol", secret, ""),
    ] {
        let refused = admin.create_jwt_credential(request).await.unwrap_err();
        seen.push_str(refused.message());
        seen.push_str(&format!("{refused:?}"));
    }
    let listed = admin
        .list_jwt_credentials(pb::ListJwtCredentialsRequest::default())
        .await
        .unwrap();
    seen.push_str(&encoded(&listed.into_inner()));
    let got = admin
        .get_consumer(pb::GetConsumerRequest {
            name: "alice".into(),
        })
        .await
        .unwrap();
    seen.push_str(&encoded(&got.into_inner()));
    let id = created.credential.unwrap().id;
    admin
        .delete_jwt_credential(pb::DeleteJwtCredentialRequest { id: id.clone() })
        .await
        .unwrap();
    gw_testkit::send_signal(child.0.id(), gw_testkit::Signal::Term);
    while let Some(line) = rx.recv().await {
        log.push(line);
    }
    let log = log.join("\n");
    assert!(
        log.contains("JWT credential created") && log.contains(&id),
        "{log}"
    );
    assert!(log.contains("JWT credential removed"), "{log}");
    for text in [&log, &seen] {
        assert!(!text.contains(&secret[..20]), "the secret in: {text}");
    }
    assert!(
        seen.contains("credential.hs256_secret: 20 bytes is too short"),
        "{seen}"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_the_tls_certificate_and_the_process_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gw.db").display().to_string();
    let old_ca = gw_testkit::tls::Ca::new("old CA");
    let (cert, key) = old_ca.server(&["localhost"]).write(dir.path(), "cp");
    let (child, mut rx) = start_json(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--database", &db])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key),
        "info",
    );
    let mut next_with = async |message: &str| loop {
        let line = tokio::time::timeout(gw_testkit::DEFAULT_DEADLINE, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no '{message}' log line in time"))
            .unwrap_or_else(|| panic!("the log ended before '{message}'"));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["message"] == message {
            return v;
        }
    };
    let addr = next_with("control plane listening").await["listen"]
        .as_str()
        .unwrap()
        .to_owned();
    let serves = async |ca: &gw_testkit::tls::Ca| {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca.cert_pem()))
            .domain_name("localhost");
        let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
        else {
            return false;
        };
        tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .is_ok()
    };
    assert!(serves(&old_ca).await);

    let new_ca = gw_testkit::tls::Ca::new("new CA");
    let renewed = new_ca.server(&["localhost"]);
    std::fs::write(&key, &renewed.key).unwrap();
    std::fs::write(&cert, &renewed.cert).unwrap();
    gw_testkit::send_signal(child.0.id(), gw_testkit::Signal::Hup);
    // Reloaded because of the signal (the file poll may have seen the change first; the
    // signal still reloads and says so).
    loop {
        let v = next_with("TLS credentials reloaded").await;
        if v["trigger"] == "SIGHUP" {
            break;
        }
    }
    assert!(
        serves(&new_ca).await,
        "new handshakes get the new certificate"
    );
    assert!(!serves(&old_ca).await);
    let mut child = child;
    assert!(child.0.try_wait().unwrap().is_none(), "SIGHUP ended it");
}

#[test]
fn metrics_off_loopback_without_insecure_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gw.db").display().to_string();
    let out = run(&[
        "--listen",
        "127.0.0.1:0",
        "--database",
        &db,
        "--metrics-listen",
        "0.0.0.0:0",
    ]);
    assert!(!out.status.success());
    let line = stderr_line(&out);
    assert!(
        line.contains("refusing to serve metrics on 0.0.0.0:0 without authentication")
            && line.contains("--insecure"),
        "{line}"
    );
    assert!(
        !dir.path().join("gw.db").exists(),
        "refused before touching anything"
    );
}

#[tokio::test]
async fn metrics_listen_serves_the_metrics_page() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gw.db").display().to_string();
    let (_child, mut rx) = start_json(
        Command::new(BIN).args([
            "--listen",
            "127.0.0.1:0",
            "--database",
            &db,
            "--metrics-listen",
            "127.0.0.1:0",
        ]),
        "info",
    );
    let addr = loop {
        let line = rx.recv().await.expect("no 'metrics listening' log line");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["message"] == "metrics listening" {
            break v["metrics_addr"].as_str().unwrap().to_owned();
        }
    };
    let get = |path: &'static str| {
        let addr = addr.clone();
        async move {
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nhost: cp\r\nconnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            let mut raw = String::new();
            s.read_to_string(&mut raw).await.unwrap();
            raw
        }
    };
    let page = get("/metrics").await;
    let (head, body) = page.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        body.contains(&format!(
            "gw_build_info{{program=\"gw-control-plane\",version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{body}"
    );
    assert!(body.contains("gw_cp_config_version 0\n"), "{body}");
    gw_testkit::promtool::check_metrics(body);
    assert!(get("/other").await.starts_with("HTTP/1.1 404"));
}
