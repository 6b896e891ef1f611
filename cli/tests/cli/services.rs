//! `gwctl service …` against a live control plane.

use serde_json::json;

use crate::support::{ControlPlane, gwctl};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_lifecycle_in_json() {
    let cp = ControlPlane::start().await;

    // add: the envelope carries the action, the new config version and the stored service
    // with the control plane's defaults filled in.
    let added = gwctl(
        &cp,
        &[
            "-o",
            "json",
            "service",
            "add",
            "demo",
            "--prefix",
            "/api",
            "--endpoint",
            "http://127.0.0.1:8001",
            "--endpoint",
            "http://127.0.0.1:8002",
            "--host",
            "api.example.com",
            "--strip-prefix",
            "--health-path",
            "/healthz",
            "--health-interval",
            "1500ms",
        ],
    )
    .await
    .json();
    assert_eq!(added["action"], "created");
    let v1 = added["config_version"].as_u64().unwrap();
    assert!(v1 > 0);
    let s = &added["service"];
    assert_eq!(s["name"], "demo");
    assert_eq!(s["path_prefix"], "/api");
    assert_eq!(s["hosts"], json!(["api.example.com"]));
    assert_eq!(s["strip_prefix"], true);
    assert_eq!(
        s["endpoints"],
        json!(["http://127.0.0.1:8001", "http://127.0.0.1:8002"])
    );
    assert_eq!(s["health_check"]["path"], "/healthz");
    assert_eq!(s["health_check"]["interval"], "1500ms");
    // Defaults from the issue: timeout 1s; thresholds filled in (non-zero).
    assert_eq!(s["health_check"]["timeout"], "1s");
    assert!(s["health_check"]["unhealthy_threshold"].as_u64().unwrap() > 0);
    assert!(s["health_check"]["healthy_threshold"].as_u64().unwrap() > 0);
    assert_eq!(s["load_balancing"], "round_robin");
    assert_eq!(s["created_version"].as_u64(), Some(v1));
    assert_eq!(s["updated_version"].as_u64(), Some(v1));

    // A second service, so list has an order to check.
    gwctl(&cp, &["service", "add", "billing", "--prefix", "/billing"])
        .await
        .ok();

    // list: ordered by name, at the current version. `-o json` after the subcommand works.
    let list = gwctl(&cp, &["service", "list", "-o", "json"]).await.json();
    let names: Vec<_> = list["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["billing", "demo"]);
    assert!(list["config_version"].as_u64().unwrap() > v1);
    assert_eq!(list["services"][1], added["service"]);

    // get: the service itself, equal to what add returned.
    let got = gwctl(&cp, &["service", "get", "demo", "-o", "json"])
        .await
        .json();
    assert_eq!(got, added["service"]);

    // update: only the flagged fields change; --endpoint replaces the list.
    let updated = gwctl(
        &cp,
        &[
            "-o",
            "json",
            "service",
            "update",
            "demo",
            "--endpoint",
            "http://127.0.0.1:9000",
            "--no-strip-prefix",
            "--request-timeout",
            "10s",
        ],
    )
    .await
    .json();
    assert_eq!(updated["action"], "updated");
    let v_update = updated["config_version"].as_u64().unwrap();
    let u = &updated["service"];
    assert_eq!(u["endpoints"], json!(["http://127.0.0.1:9000"]));
    assert_eq!(u["strip_prefix"], false);
    assert_eq!(u["timeouts"]["request"], "10s");
    // Untouched fields are kept, including earlier non-default ones.
    assert_eq!(u["path_prefix"], "/api");
    assert_eq!(u["hosts"], json!(["api.example.com"]));
    assert_eq!(u["health_check"], s["health_check"]);
    assert_eq!(u["timeouts"]["connect"], s["timeouts"]["connect"]);
    assert_eq!(u["created_version"].as_u64(), Some(v1));
    assert_eq!(u["updated_version"].as_u64(), Some(v_update));
    let got = gwctl(&cp, &["service", "get", "demo", "-o", "json"])
        .await
        .json();
    assert_eq!(&got, u);

    // update can clear hosts.
    let cleared = gwctl(
        &cp,
        &["-o", "json", "service", "update", "demo", "--clear-hosts"],
    )
    .await
    .json();
    assert_eq!(cleared["service"]["hosts"], json!([]));
    assert_eq!(
        cleared["service"]["endpoints"],
        json!(["http://127.0.0.1:9000"])
    );

    // rm: reports the version, and the service is gone.
    let removed = gwctl(&cp, &["-o", "json", "service", "rm", "demo"])
        .await
        .json();
    assert_eq!(removed["action"], "deleted");
    assert_eq!(removed["name"], "demo");
    assert!(removed["config_version"].as_u64().unwrap() > v_update);
    let list = gwctl(&cp, &["-o", "json", "service", "list"]).await.json();
    assert_eq!(list["services"].as_array().unwrap().len(), 1);
    assert_eq!(list["services"][0]["name"], "billing");
    assert_eq!(list["config_version"], removed["config_version"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_output_for_people() {
    let cp = ControlPlane::start().await;

    let out = gwctl(
        &cp,
        &[
            "service",
            "add",
            "demo",
            "--prefix",
            "/api",
            "--endpoint",
            "http://127.0.0.1:8001",
        ],
    )
    .await;
    let line = out.ok();
    assert!(
        line.starts_with("service 'demo' created (config version "),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1);

    gwctl(
        &cp,
        &[
            "service",
            "add",
            "a-much-longer-name",
            "--prefix",
            "/other",
            "--host",
            "h.example",
        ],
    )
    .await
    .ok();

    let out = gwctl(&cp, &["service", "list"]).await;
    let table = out.ok();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("NAME  "), "{table}");
    for column in ["PREFIX", "HOSTS", "ENDPOINTS", "VERSION"] {
        assert!(lines[0].contains(column), "{table}");
    }
    assert!(
        lines[1].starts_with("a-much-longer-name  /other"),
        "{table}"
    );
    assert!(lines[2].starts_with("demo  "), "{table}");
    assert!(lines[2].contains("http://127.0.0.1:8001"), "{table}");
    // Aligned: every column starts at the same offset on every line.
    for column in ["PREFIX", "HOSTS", "ENDPOINTS"] {
        let at = lines[0].find(column).unwrap();
        for row in &lines[1..] {
            let before = &row[..at];
            assert!(
                before.ends_with("  "),
                "column {column} misaligned:\n{table}"
            );
            assert_ne!(
                &row[at..at + 1],
                " ",
                "column {column} misaligned:\n{table}"
            );
        }
    }

    let out = gwctl(&cp, &["service", "get", "demo"]).await;
    let details = out.ok();
    assert!(details.contains("name:            demo\n"), "{details}");
    assert!(details.contains("path prefix:     /api\n"), "{details}");
    assert!(
        details.contains("endpoints:       http://127.0.0.1:8001\n"),
        "{details}"
    );

    let out = gwctl(&cp, &["service", "rm", "demo"]).await;
    assert!(
        out.ok()
            .starts_with("service 'demo' deleted (config version "),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_one_readable_line() {
    let cp = ControlPlane::start().await;

    // Validation: the server's message, naming the field, on one line, exit 1.
    let out = gwctl(
        &cp,
        &[
            "service",
            "add",
            "demo",
            "--prefix",
            "/api",
            "--endpoint",
            "http://127.0.0.1:8001",
            "--endpoint",
            "htp://x",
        ],
    )
    .await;
    let line = out.error_line();
    assert!(line.starts_with("error: invalid argument: "), "{line}");
    assert!(
        line.contains("endpoints[1]: 'htp://x' is not an http:// or https:// URL"),
        "{line}"
    );

    // Nothing was stored by the failed call.
    let list = gwctl(&cp, &["-o", "json", "service", "list"]).await.json();
    assert_eq!(list["services"], serde_json::json!([]));

    gwctl(&cp, &["service", "add", "demo", "--prefix", "/api"])
        .await
        .ok();
    let line = gwctl(&cp, &["service", "add", "demo", "--prefix", "/b"]).await;
    let line = line.error_line();
    assert!(line.starts_with("error: already exists: "), "{line}");
    assert!(line.contains("demo"), "{line}");

    for args in [
        &["service", "get", "nope"][..],
        &["service", "rm", "nope"][..],
        &["service", "update", "nope", "--prefix", "/x"][..],
    ] {
        let out = gwctl(&cp, args).await;
        let line = out.error_line();
        assert!(line.starts_with("error: not found: "), "{args:?}: {line}");
        assert!(line.contains("nope"), "{args:?}: {line}");
    }

    // Update with no flags is refused before any call (and says how to fix it).
    let out = gwctl(&cp, &["service", "update", "demo"]).await;
    assert!(
        out.error_line().contains("nothing to change"),
        "{}",
        out.stderr
    );

    // A malformed duration is a usage error from gwctl itself: exit 2, flag and value named.
    let out = gwctl(
        &cp,
        &[
            "service",
            "add",
            "x",
            "--prefix",
            "/x",
            "--health-interval",
            "5 sec",
        ],
    )
    .await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("--health-interval"), "{}", out.stderr);
    assert!(out.stderr.contains("'5 sec'"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_are_tcp_by_default_and_can_be_http_or_off() {
    let cp = ControlPlane::start().await;
    let kind = |v: &serde_json::Value| {
        let hc = &v["service"]["health_check"];
        (hc["kind"].clone(), hc["path"].clone())
    };
    let added = gwctl(
        &cp,
        &["-o", "json", "service", "add", "m", "--prefix", "/m"],
    )
    .await
    .json();
    assert_eq!(kind(&added), (json!("tcp"), json!("")));
    let off = gwctl(
        &cp,
        &["-o", "json", "service", "update", "m", "--no-health-check"],
    )
    .await
    .json();
    assert_eq!(kind(&off), (json!("off"), json!("")));
    let http = gwctl(
        &cp,
        &[
            "-o",
            "json",
            "service",
            "update",
            "m",
            "--health-path",
            "/up",
        ],
    )
    .await
    .json();
    assert_eq!(kind(&http), (json!("http"), json!("/up")));
    let shown = gwctl(&cp, &["service", "get", "m"]).await;
    assert!(
        shown.stdout.contains("GET /up every 5s"),
        "{}",
        shown.stdout
    );
}

/// `--allow-connect` is stored and shown (`-o json`, the CONNECT column), needs the `/`
/// prefix (the server says so, naming the field), and `--no-allow-connect` turns it off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_connect_is_stored_shown_and_turned_off() {
    let cp = ControlPlane::start().await;
    let added = gwctl(
        &cp,
        &[
            "-o",
            "json",
            "service",
            "add",
            "tunnel",
            "--prefix",
            "/",
            "--host",
            "tunnel.example",
            "--allow-connect",
        ],
    )
    .await
    .json();
    assert_eq!(added["service"]["allow_connect"], true);
    gwctl(&cp, &["service", "add", "web", "--prefix", "/web"])
        .await
        .ok();
    let list = gwctl(&cp, &["-o", "json", "service", "list"]).await.json();
    let flags: Vec<_> = list["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].clone(), s["allow_connect"].clone()))
        .collect();
    assert_eq!(
        flags,
        [(json!("tunnel"), json!(true)), (json!("web"), json!(false))]
    );
    let table = gwctl(&cp, &["service", "list"]).await;
    let table = table.ok();
    let header = table.lines().next().unwrap();
    assert!(header.contains("CONNECT"), "{table}");
    let row = table.lines().find(|l| l.starts_with("tunnel")).unwrap();
    assert!(row.contains(" yes "), "{table}");

    let out = gwctl(&cp, &["service", "update", "web", "--allow-connect"]).await;
    let line = out.error_line();
    assert!(
        line.contains("allow_connect: needs route.path_prefix \"/\""),
        "{line}"
    );

    let off = gwctl(
        &cp,
        &[
            "-o",
            "json",
            "service",
            "update",
            "tunnel",
            "--no-allow-connect",
        ],
    )
    .await
    .json();
    assert_eq!(off["service"]["allow_connect"], false);
}
