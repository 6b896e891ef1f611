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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_control_plane_with_a_ca_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = gw_testkit::tls::Ca::new("test CA");
    let (cert, key) = ca.server(&["localhost"]).write(dir.path(), "cp");
    let ca_path = ca.write(dir.path(), "ca");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut config =
        gw_control_plane::Config::new(format!("sqlite://{}", dir.path().join("gw.db").display()));
    config.admin_token = Some(gw_control_plane::Secret::new("s3cret"));
    config.tls = Some(gw_control_plane::tls::TlsFiles {
        cert,
        key,
        client_ca: vec![],
    });
    tokio::spawn(gw_control_plane::serve(
        config,
        listener,
        std::future::pending(),
    ));
    let url = format!("https://localhost:{port}");
    let ca_arg = ca_path.display().to_string();

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
