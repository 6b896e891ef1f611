//! `gwctl apply` and `gwctl export`: the built binary against a live control plane, files in a
//! temporary directory.

use std::path::{Path, PathBuf};

use gw_proto::v1 as pb;
use gw_proto::v1::admin_service_client::AdminServiceClient;

use crate::support::{ControlPlane, FakeNode, Run, gwctl};

/// Two services (one with every kind of field), two policies naming them.
const GATEWAY: &str = "\
# gw declarative configuration
services:
  - name: web
    route:
      path_prefix: /web
      strip_prefix: true
    endpoints:
      - http://127.0.0.1:8001
      - http://127.0.0.1:8002
  - name: api
    route:
      path_prefix: /api
      hosts: [api.example.com]
    endpoints: [http://127.0.0.1:9001]
    health_check:
      path: /healthz
      interval: 10s
      timeout: 2s
    timeouts:
      connect: 500ms
      request: 1m
policies:
  - name: web-per-ip
    service: web
    limit: 100
    period: 1m
  - name: api-keys
    service: api
    key: header:x-api-key
    limit: 10
    period: 1s
    burst: 20
    mode: shadow
    on_store_error: local-share
";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

async fn apply(cp: &ControlPlane, file: &Path, flags: &[&str]) -> Run {
    let mut args = vec!["apply", "-f", file.to_str().unwrap()];
    args.extend_from_slice(flags);
    gwctl(cp, &args).await
}

/// Services and policies as stored, with the config version.
async fn config(cp: &ControlPlane) -> (u64, Vec<pb::Service>, Vec<pb::Policy>) {
    let mut client = AdminServiceClient::connect(cp.url.clone()).await.unwrap();
    let services = client
        .list_services(pb::ListServicesRequest {})
        .await
        .unwrap()
        .into_inner();
    let policies = client
        .list_policies(pb::ListPoliciesRequest {})
        .await
        .unwrap()
        .into_inner();
    (
        services.config_version,
        services.services,
        policies.policies,
    )
}

fn names<T>(items: &[T], name: impl Fn(&T) -> &str) -> Vec<&str> {
    items.iter().map(name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_on_an_empty_control_plane_then_export_then_dry_run_reports_no_changes() {
    let cp = ControlPlane::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Plus a service with the rarer fields: a CA bundle by file (exported as PEM text),
    // checks off, body timeouts, CONNECT.
    gw_testkit::tls::Ca::new("upstream CA").write(dir.path(), "ca");
    let rare = "  - name: tunnel\n    route: {path_prefix: /, hosts: [t.example.com]}\n    \
                endpoints: [https://127.0.0.1:9443]\n    upstream_tls: {ca_bundle_file: ca.pem}\n    \
                health_check: {disabled: true}\n    \
                timeouts: {request_body: 5s, response_body: 2m}\n    allow_connect: true\n";
    let text = GATEWAY.replace("policies:\n", &format!("{rare}policies:\n"));
    let file = write(dir.path(), "gateway.yaml", &text);

    // A dry run on the empty control plane: every object would be added; exit 2, no write.
    let dry = apply(&cp, &file, &["--dry-run"]).await;
    assert_eq!(dry.code, Some(2), "stderr: {}", dry.stderr);
    assert!(dry.stdout.contains("+ service web\n"), "{}", dry.stdout);
    assert!(dry.stdout.contains("+ policy api-keys\n"), "{}", dry.stdout);
    assert_eq!(config(&cp).await.0, 0, "a dry run wrote something");

    // The apply: one version holding everything.
    let out = apply(&cp, &file, &["-o", "json"]).await.json();
    assert_eq!(out["applied"], true);
    assert_eq!(out["config_version"], 1);
    assert_eq!(out["changes"], 5);
    assert_eq!(
        out["services"]["added"],
        serde_json::json!(["api", "tunnel", "web"])
    );
    let (version, services, policies) = config(&cp).await;
    assert_eq!(version, 1);
    assert_eq!(names(&services, |s| &s.name), ["api", "tunnel", "web"]);
    let tunnel = &services[1];
    assert!(tunnel.allow_connect && tunnel.health_check.as_ref().unwrap().disabled);
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    assert_eq!(tunnel.upstream_tls.as_ref().unwrap().ca_bundle_pem, ca);
    assert_eq!(names(&policies, |p| &p.name), ["api-keys", "web-per-ip"]);
    let api = &services[0];
    assert_eq!(api.endpoints, ["http://127.0.0.1:9001"]);
    let health = api.health_check.as_ref().unwrap();
    assert_eq!(
        (health.path.as_str(), health.interval.unwrap().seconds),
        ("/healthz", 10)
    );
    assert_eq!(api.timeouts.unwrap().connect.unwrap().nanos, 500_000_000);
    assert_eq!(policies[0].burst, 20);
    assert_eq!(policies[0].mode(), pb::PolicyMode::Shadow);

    // Applying the same file again changes nothing and moves no version.
    let again = apply(&cp, &file, &[]).await;
    assert_eq!(again.ok(), "no changes (config version 1)\n");

    // export | apply --dry-run: no changes, exit 0, in YAML and in JSON.
    for (format, name) in [("yaml", "exported.yaml"), ("json", "exported.json")] {
        let exported = gwctl(&cp, &["export", "-o", format]).await;
        let path = write(dir.path(), name, exported.ok());
        let dry = apply(&cp, &path, &["--dry-run"]).await;
        assert_eq!(
            dry.ok(),
            "no changes (config version 1)\n",
            "{format}:\n{}",
            exported.stdout
        );
    }
    assert_eq!(config(&cp).await.0, 1);

    // A changed file: the dry run names the object and the fields (burst follows an unset
    // burst's limit), exits 2, writes nothing.
    let changed = write(
        dir.path(),
        "changed.yaml",
        &text.replace("limit: 100", "limit: 50"),
    );
    let dry = apply(&cp, &changed, &["--dry-run"]).await;
    assert_eq!(dry.code, Some(2), "stderr: {}", dry.stderr);
    assert_eq!(
        dry.stdout,
        "~ policy web-per-ip (limit, burst)\ndry run: 1 change(s), nothing applied (config version 1)\n"
    );
    assert_eq!(config(&cp).await.0, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_an_error_changes_nothing_and_the_error_names_the_line_and_field() {
    let cp = ControlPlane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "gateway.yaml", GATEWAY);
    apply(&cp, &good, &[]).await.ok();
    let before = config(&cp).await;

    // Each file changes `web` (line 9) and breaks one thing elsewhere; none of it applies.
    let cases = [
        // Found by the control plane: the path prefix of `api`, on line 13.
        (
            GATEWAY
                .replace("http://127.0.0.1:8002", "http://127.0.0.1:8003")
                .replace("path_prefix: /api", "path_prefix: api"),
            "bad.yaml:12:20: services[1].route.path_prefix: must start with '/'",
        ),
        // Found by the control plane, across objects: a policy naming a service not there.
        (
            GATEWAY
                .replace("http://127.0.0.1:8002", "http://127.0.0.1:8003")
                .replace("service: api", "service: nope"),
            "bad.yaml:28:14: policies[1].service: service 'nope' does not exist",
        ),
        // Found by gwctl: a duration it cannot read.
        (
            GATEWAY
                .replace("http://127.0.0.1:8002", "http://127.0.0.1:8003")
                .replace("period: 1s", "period: 1x"),
            "bad.yaml:31:13: policies[1].period: unknown unit 'x'",
        ),
        // Found by the parser: a misspelt field.
        (
            GATEWAY.replace("strip_prefix: true", "strip_prefx: true"),
            "bad.yaml:6:7: unknown field `strip_prefx`",
        ),
    ];
    for (text, expected) in cases {
        let bad = write(dir.path(), "bad.yaml", &text);
        let run = apply(&cp, &bad, &[]).await;
        let line = run.error_line();
        assert!(line.contains(expected), "expected {expected:?} in {line}");
        assert_eq!(
            config(&cp).await,
            before,
            "a failed apply changed something"
        );
    }

    // A dry run reports the same error (exit 1, not 0 or 2).
    let bad = write(
        dir.path(),
        "bad.json",
        "{\n  \"services\": [\n    {\"name\": \"x\", \"route\": {\"path_prefix\": \"/x\"},\n     \"endpoints\": [\"ftp://h:1\"]}\n  ]\n}\n",
    );
    let run = apply(&cp, &bad, &["--dry-run"]).await;
    let line = run.error_line();
    assert!(
        line.contains("bad.json:4:20: services[0].endpoints[0]: "),
        "{line}"
    );
    assert_eq!(config(&cp).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_removes_exactly_what_the_file_does_not_name() {
    let cp = ControlPlane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let three = format!(
        "{GATEWAY}  - name: everyone\n    limit: 1000\n    period: 1s\n"
    )
    .replace(
        "policies:\n",
        "  - name: old\n    route: {path_prefix: /old}\npolicies:\n  - name: old-limit\n    service: old\n    limit: 1\n    period: 1s\n",
    );
    apply(&cp, &write(dir.path(), "all.yaml", &three), &[])
        .await
        .ok();
    let (v1, services, policies) = config(&cp).await;
    assert_eq!(names(&services, |s| &s.name), ["api", "old", "web"]);
    assert_eq!(
        names(&policies, |p| &p.name),
        ["api-keys", "everyone", "old-limit", "web-per-ip"]
    );

    // The original file lacks `old`, its policy and `everyone`. Without --prune: nothing.
    let file = write(dir.path(), "gateway.yaml", GATEWAY);
    assert_eq!(
        apply(&cp, &file, &[]).await.ok(),
        format!("no changes (config version {v1})\n")
    );

    // With --prune: exactly those three go, in one version (the policy before its service).
    let out = apply(&cp, &file, &["--prune", "-o", "json"]).await.json();
    assert_eq!(out["services"]["removed"], serde_json::json!(["old"]));
    assert_eq!(
        out["policies"]["removed"],
        serde_json::json!(["everyone", "old-limit"])
    );
    assert_eq!(out["changes"], 3);
    let (v2, after_services, after_policies) = config(&cp).await;
    assert_eq!(v2, v1 + 1);
    assert_eq!(names(&after_services, |s| &s.name), ["api", "web"]);
    assert_eq!(
        names(&after_policies, |p| &p.name),
        ["api-keys", "web-per-ip"]
    );
    // What stayed was not rewritten.
    for s in &after_services {
        assert_eq!(s.updated_version, v1, "{} was rewritten", s.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_apply_is_one_config_version_and_a_data_plane_sees_exactly_one_new_version() {
    let cp = ControlPlane::start().await;
    let dir = tempfile::tempdir().unwrap();
    gwctl(&cp, &["service", "add", "seed", "--prefix", "/seed"])
        .await
        .ok();
    let mut node = FakeNode::connect(&cp, "dp-1").await;
    assert_eq!(node.version, 1);

    // Four objects, and `seed` removed by --prune: one version.
    let file = write(dir.path(), "gateway.yaml", GATEWAY);
    let out = apply(&cp, &file, &["--prune", "-o", "json"]).await.json();
    assert_eq!(out["config_version"], 2);
    assert_eq!(out["changes"], 5);

    // The node's next message is version 2 with all of it, not a version per object.
    let next = node.responses.message().await.unwrap().unwrap();
    assert_eq!(next.version, 2);
    let Some(pb::discovery_response::Kind::Snapshot(snapshot)) = next.kind else {
        panic!("expected a snapshot: {next:?}");
    };
    assert_eq!(names(&snapshot.services, |s| &s.name), ["api", "web"]);
    assert_eq!(
        names(&snapshot.policies, |p| &p.name),
        ["api-keys", "web-per-ip"]
    );
    // And the message after that is the next single change, version 3: none came between.
    gwctl(&cp, &["policy", "rm", "api-keys"]).await.ok();
    let after = node.responses.message().await.unwrap().unwrap();
    assert_eq!(after.version, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_needs_the_admin_token() {
    let cp = ControlPlane::start_with(Some("s3cret")).await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "gateway.yaml", GATEWAY);
    let line = apply(&cp, &file, &[]).await.error_line().to_owned();
    assert!(line.starts_with("error: unauthenticated"), "{line}");
    let ok = apply(&cp, &file, &["--token", "s3cret"]).await;
    assert!(ok.ok().starts_with("+ service api\n"), "{}", ok.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_apply_by_file_reference_and_are_left_alone_by_files_without_them() {
    let cp = ControlPlane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = gw_testkit::tls::Ca::new("site CA");
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    let (_, key) = ca
        .server(&["example.test"])
        .write(&dir.path().join("certs"), "site");
    let key_text = std::fs::read_to_string(&key).unwrap();
    let key_body = key_text.lines().nth(1).unwrap().to_owned();
    // Paths relative to the file.
    let with_certs = format!(
        "{GATEWAY}certificates:\n  - name: site\n    cert_chain_file: certs/site.pem\n    \
         private_key_file: certs/site-key.pem\n"
    );
    let file = write(dir.path(), "gateway.yaml", &with_certs);
    let out = apply(&cp, &file, &["-o", "json"]).await.json();
    assert_eq!(out["certificates"]["added"], serde_json::json!(["site"]));
    assert_eq!(out["config_version"], 1);
    let again = apply(&cp, &file, &["--dry-run"]).await;
    assert_eq!(again.ok(), "no changes (config version 1)\n");

    // export names the certificate in a comment and never carries the key.
    let exported = gwctl(&cp, &["export"]).await;
    let text = exported.ok();
    assert!(
        text.contains("# Not included: certificates (site)"),
        "{text}"
    );
    assert!(!text.contains(&key_body));

    // A file without `certificates:` leaves them alone, even with --prune.
    let plain = write(dir.path(), "plain.yaml", GATEWAY);
    let pruned = apply(&cp, &plain, &["--prune", "--dry-run"]).await;
    assert_eq!(pruned.ok(), "no changes (config version 1)\n");
    // An empty list manages them: --prune removes the certificate.
    let none = write(
        dir.path(),
        "none.yaml",
        &format!("{GATEWAY}certificates: []\n"),
    );
    let run = apply(&cp, &none, &["--prune"]).await;
    assert_eq!(
        run.ok(),
        "- certificate site\napplied 1 change(s) as config version 2\n"
    );

    // A missing key file is named at its line, and nothing is sent.
    let missing = write(
        dir.path(),
        "missing.yaml",
        &with_certs.replace("site-key.pem", "gone.pem"),
    );
    let line = apply(&cp, &missing, &[]).await.error_line().to_owned();
    assert!(
        line.contains("missing.yaml:38:23: certificates[0].private_key_file: "),
        "{line}"
    );
    assert!(
        line.contains("gone.pem: No such file or directory"),
        "{line}"
    );
    assert_eq!(config(&cp).await.0, 2);
}
