//! Reaching the control plane: the address, the token, and what needs no control plane.

use tokio::net::TcpListener;

use crate::support::{ControlPlane, gwctl, gwctl_env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_control_plane_names_the_address() {
    // A port that was just free: bind, note it, release it.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        vec!["--control-plane", url.as_str(), "service", "list"],
        vec![
            "policy",
            "list",
            "--control-plane",
            url.as_str(),
            "-o",
            "json",
        ],
        vec!["--control-plane", url.as_str(), "nodes"],
    ] {
        let out = gwctl_env(&args, &[]).await;
        let line = out.error_line();
        assert_eq!(
            line,
            format!("error: cannot reach the control plane at {url} (connection refused)"),
            "{args:?}"
        );
    }

    // GW_CONTROL_PLANE is where gwctl looks without the flag.
    let out = gwctl_env(&["service", "list"], &[("GW_CONTROL_PLANE", &url)]).await;
    assert!(out.error_line().contains(&url), "{}", out.stderr);

    // A bad address is refused before dialing.
    let out = gwctl_env(&["--control-plane", "grpc://cp:1", "service", "list"], &[]).await;
    let line = out.error_line();
    assert!(
        line.starts_with("error: invalid --control-plane 'grpc://cp:1'"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_control_plane_times_out_with_the_address() {
    // Takes TCP connections and never says a word, like a wedged process.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let out = gwctl_env(
        &[
            "--control-plane",
            &url,
            "--timeout",
            "300ms",
            "service",
            "list",
        ],
        &[],
    )
    .await;
    let line = out.error_line();
    assert_eq!(
        line,
        format!(
            "error: cannot reach the control plane at {url} (no answer within 300ms; \
             raise --timeout if it is just slow)"
        )
    );
    holder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_address_from_the_environment() {
    let cp = ControlPlane::start().await;
    let out = gwctl_env(
        &["-o", "json", "service", "list"],
        &[("GW_CONTROL_PLANE", &cp.url)],
    )
    .await;
    assert_eq!(out.json()["services"], serde_json::json!([]));
    // Without scheme it is taken as http://.
    let bare = cp.url.trim_start_matches("http://");
    let out = gwctl_env(
        &["--control-plane", bare, "-o", "json", "service", "list"],
        &[],
    )
    .await;
    assert_eq!(out.json()["services"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_is_required_and_sent() {
    let cp = ControlPlane::start_with(Some("s3cret")).await;

    let out = gwctl(&cp, &["service", "list"]).await;
    let line = out.error_line();
    assert!(line.starts_with("error: unauthenticated: "), "{line}");
    assert!(line.contains("--token"), "{line}");

    let out = gwctl(&cp, &["--token", "wrong", "service", "list"]).await;
    assert!(
        out.error_line().starts_with("error: unauthenticated: "),
        "{}",
        out.stderr
    );

    // The flag, after the subcommand too.
    let out = gwctl(
        &cp,
        &[
            "service", "add", "demo", "--prefix", "/api", "--token", "s3cret",
        ],
    )
    .await;
    out.ok();

    // The environment variable in the child's env.
    let out = gwctl_env(
        &["--control-plane", &cp.url, "-o", "json", "service", "list"],
        &[("GW_ADMIN_TOKEN", "s3cret")],
    )
    .await;
    assert_eq!(out.json()["services"][0]["name"], "demo");

    // The token never shows up in help, even when set in the environment.
    let out = gwctl_env(&["--help"], &[("GW_ADMIN_TOKEN", "s3cret")]).await;
    assert!(out.ok().contains("GW_ADMIN_TOKEN"));
    assert!(!out.stdout.contains("s3cret"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_lists_an_empty_fleet() {
    let cp = ControlPlane::start().await;
    let json = gwctl(&cp, &["-o", "json", "nodes"]).await.json();
    assert_eq!(json["nodes"], serde_json::json!([]));
    assert!(json["config_version"].is_u64());
    let out = gwctl(&cp, &["nodes"]).await;
    assert!(
        out.ok().starts_with("NODE  STATE  LISTEN"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_need_no_control_plane() {
    // Pointed at nothing: completions must not try to connect.
    let out = gwctl_env(
        &[
            "--control-plane",
            "http://127.0.0.1:1",
            "completions",
            "bash",
        ],
        &[],
    )
    .await;
    let script = out.ok();
    assert!(script.contains("complete -F"), "{script}");
    assert!(script.contains("gwctl"), "{script}");
    for word in ["service", "policy", "nodes", "--control-plane", "--prefix"] {
        assert!(script.contains(word), "missing {word}");
    }

    let out = gwctl_env(&["completions", "zsh"], &[]).await;
    assert!(out.ok().starts_with("#compdef gwctl"), "{}", out.stdout);

    let out = gwctl_env(&["completions", "tcsh"], &[]).await;
    assert_eq!(out.code, Some(2), "unknown shell is a usage error");
}

/// A control plane over TLS with a certificate from `ca` and the admin token `s3cret`;
/// client certificates from `ca` are verified when `client_ca`. Returns its URL.
async fn tls_control_plane(
    dir: &std::path::Path,
    ca: &gw_testkit::tls::Ca,
    client_ca: bool,
) -> String {
    let (cert, key) = ca.server(&["localhost"]).write(dir, "cp");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut config =
        gw_control_plane::Config::new(format!("sqlite://{}", dir.join("gw.db").display()));
    config.admin_token = Some(gw_control_plane::Secret::new("s3cret"));
    config.tls = Some(gw_control_plane::tls::TlsFiles {
        cert,
        key,
        client_ca: if client_ca {
            vec![ca.write(dir, "client-ca")]
        } else {
            vec![]
        },
    });
    tokio::spawn(gw_control_plane::serve(
        config,
        listener,
        std::future::pending(),
    ));
    format!("https://localhost:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_control_plane_with_a_ca_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = gw_testkit::tls::Ca::new("test CA");
    let url = tls_control_plane(dir.path(), &ca, false).await;
    let ca_arg = ca.write(dir.path(), "ca").display().to_string();

    let out = gwctl_env(
        &[
            "--control-plane",
            &url,
            "--ca-cert",
            &ca_arg,
            "--token",
            "s3cret",
            "-o",
            "json",
            "service",
            "list",
        ],
        &[],
    )
    .await;
    assert_eq!(out.json()["services"], serde_json::json!([]));

    // Not trusting its CA: one line that says why.
    let out = gwctl_env(
        &[
            "--control-plane",
            &url,
            "--token",
            "s3cret",
            "service",
            "list",
        ],
        &[],
    )
    .await;
    let line = out.error_line();
    assert!(line.contains("cannot reach the control plane"), "{line}");
    assert!(line.contains("certificate"), "{line}");

    // A CA file that is not PEM.
    let out = gwctl_env(
        &[
            "--control-plane",
            &url,
            "--ca-cert",
            "/dev/null",
            "service",
            "list",
        ],
        &[],
    )
    .await;
    assert_eq!(
        out.error_line(),
        "error: invalid --ca-cert: /dev/null: not PEM: expected a '-----BEGIN CERTIFICATE-----' block"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_presented_for_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = gw_testkit::tls::Ca::new("fleet CA");
    let url = tls_control_plane(dir.path(), &ca, true).await;
    let ca_path = ca.write(dir.path(), "ca").display().to_string();
    let (cert, key) = ca.client("ops").write(dir.path(), "ops");
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let (stranger_cert, stranger_key) = gw_testkit::tls::Ca::new("someone else")
        .client("ops")
        .write(dir.path(), "stranger");
    let (stranger_cert, stranger_key) = (
        stranger_cert.display().to_string(),
        stranger_key.display().to_string(),
    );
    let list = ["--token", "s3cret", "-o", "json", "service", "list"];
    let env = |cert: &str, key: &str| {
        [
            ("GW_CONTROL_PLANE", url.clone()),
            ("GW_CA_CERT", ca_path.clone()),
            ("GW_CLIENT_CERT", cert.to_owned()),
            ("GW_CLIENT_KEY", key.to_owned()),
        ]
    };

    // A certificate from the control plane's client CA (through the environment): let in.
    let vars = env(&cert, &key);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = gwctl_env(&list, &vars).await;
    assert_eq!(out.json()["services"], serde_json::json!([]));

    // Another CA's certificate: the handshake is refused, so gwctl really presented it.
    let vars = env(&stranger_cert, &stranger_key);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let line = gwctl_env(&list, &vars).await.error_line().to_owned();
    assert!(line.contains("cannot reach the control plane"), "{line}");
    // The connection broke under the call (TLS 1.3 delivers the refusal after the
    // handshake): said as such, not as a timeout.
    assert!(!line.contains("no answer within"), "{line}");

    // Half a pair, or a key that is not the certificate's: named before connecting.
    let half: &[&str] = &["--client-cert", &cert];
    let mismatched: &[&str] = &["--client-cert", &cert, "--client-key", &stranger_key];
    for (flags, want) in [
        (half, "--client-cert and --client-key go together"),
        (mismatched, "the private key does not match"),
    ] {
        let args: Vec<&str> = ["--control-plane", &url, "--ca-cert", &ca_path]
            .into_iter()
            .chain(flags.iter().copied())
            .chain(list)
            .collect();
        let out = gwctl_env(&args, &[]).await;
        let line = out.error_line();
        assert!(line.contains(want), "{line}");
        assert!(!line.contains("PRIVATE KEY"), "{line}");
    }
}
