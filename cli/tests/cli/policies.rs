//! `gwctl policy …` against a live control plane, and how policies and services interlock.

use serde_json::json;

use crate::support::{ControlPlane, gwctl};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_set_list_rm_in_json() {
    let cp = ControlPlane::start().await;
    gwctl(&cp, &["service", "add", "demo", "--prefix", "/api"])
        .await
        .ok();

    // set creates: every flag lands in the stored policy.
    let created = gwctl(
        &cp,
        &[
            "-o",
            "json",
            "policy",
            "set",
            "per-key",
            "--limit",
            "100",
            "--per",
            "1m",
            "--burst",
            "20",
            "--key",
            "header:x-api-key",
            "--service",
            "demo",
            "--shadow",
        ],
    )
    .await
    .json();
    assert_eq!(created["action"], "created");
    let v1 = created["config_version"].as_u64().unwrap();
    assert_eq!(
        created["policy"],
        json!({
            "name": "per-key", "service": "demo", "key": "header:x-api-key", "limit": 100,
            "period": "1m", "burst": 20, "mode": "shadow", "scope": "node",
            "on_store_error": "local-share", "updated_version": v1
        })
    );

    // set again replaces: flags not given go back to their defaults (burst = limit, ip key,
    // all services, enforce); the scope is given.
    let replaced = gwctl(
        &cp,
        &[
            "policy",
            "set",
            "per-key",
            "--limit",
            "5",
            "--per",
            "1s",
            "--scope",
            "global",
            "--on-store-error",
            "deny",
            "-o",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(replaced["action"], "updated");
    let v2 = replaced["config_version"].as_u64().unwrap();
    assert!(v2 > v1);
    assert_eq!(
        replaced["policy"],
        json!({
            "name": "per-key", "service": null, "key": "ip", "limit": 5,
            "period": "1s", "burst": 5, "mode": "enforce", "scope": "global",
            "on_store_error": "deny", "updated_version": v2
        })
    );
    let bad = gwctl(
        &cp,
        &[
            "policy", "set", "x", "--limit", "1", "--per", "1s", "--scope", "fleet",
        ],
    )
    .await;
    assert_eq!(bad.code, Some(2), "a usage error");

    gwctl(
        &cp,
        &[
            "policy",
            "set",
            "another",
            "--limit",
            "1",
            "--per",
            "1h",
            "--service",
            "demo",
        ],
    )
    .await
    .ok();

    let list = gwctl(&cp, &["-o", "json", "policy", "list"]).await.json();
    let policies = list["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 2);
    assert_eq!(policies[0]["name"], "another");
    assert_eq!(policies[0]["period"], "1h");
    assert_eq!(policies[0]["service"], "demo");
    assert_eq!(policies[1], replaced["policy"]);

    let removed = gwctl(&cp, &["-o", "json", "policy", "rm", "per-key"])
        .await
        .json();
    assert_eq!(removed["action"], "deleted");
    assert_eq!(removed["name"], "per-key");
    let list = gwctl(&cp, &["-o", "json", "policy", "list"]).await.json();
    assert_eq!(list["policies"].as_array().unwrap().len(), 1);
    assert_eq!(list["config_version"], removed["config_version"]);

    let out = gwctl(&cp, &["policy", "rm", "per-key"]).await;
    let line = out.error_line();
    assert!(line.starts_with("error: not found: "), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_table_and_references() {
    let cp = ControlPlane::start().await;
    gwctl(&cp, &["service", "add", "demo", "--prefix", "/api"])
        .await
        .ok();

    let out = gwctl(
        &cp,
        &[
            "policy",
            "set",
            "per-ip",
            "--limit",
            "5",
            "--per",
            "1m",
            "--service",
            "demo",
        ],
    )
    .await;
    assert!(
        out.ok()
            .starts_with("policy 'per-ip' created (config version "),
        "{}",
        out.stdout
    );
    let out = gwctl(
        &cp,
        &["policy", "set", "per-ip", "--limit", "6", "--per", "1m"],
    )
    .await;
    assert!(
        out.ok()
            .starts_with("policy 'per-ip' updated (config version "),
        "{}",
        out.stdout
    );
    gwctl(
        &cp,
        &[
            "policy",
            "set",
            "keyed",
            "--limit",
            "10",
            "--per",
            "1s",
            "--key",
            "header:x-api-key",
            "--service",
            "demo",
        ],
    )
    .await
    .ok();

    let out = gwctl(&cp, &["policy", "list"]).await;
    let table = out.ok();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("NAME    SERVICE  KEY   "), "{table}");
    assert!(
        lines[1].starts_with("keyed   demo     header:x-api-key  10/1s"),
        "{table}"
    );
    assert!(
        lines[2].starts_with("per-ip  *        ip                6/1m"),
        "{table}"
    );

    // A policy naming a missing service is refused, with the server's reason.
    let out = gwctl(
        &cp,
        &[
            "policy",
            "set",
            "p",
            "--limit",
            "1",
            "--per",
            "1s",
            "--service",
            "ghost",
        ],
    )
    .await;
    let line = out.error_line();
    assert!(line.contains("ghost"), "{line}");

    // A service still named by a policy cannot go; the message names the policy.
    let out = gwctl(&cp, &["service", "rm", "demo"]).await;
    let line = out.error_line();
    assert!(line.starts_with("error: failed precondition: "), "{line}");
    assert!(line.contains("keyed"), "{line}");
    gwctl(&cp, &["policy", "rm", "keyed"]).await.ok();
    gwctl(&cp, &["service", "rm", "demo"]).await.ok();

    // A zero limit is the server's to refuse; its message comes through.
    let out = gwctl(&cp, &["policy", "set", "p", "--limit", "0", "--per", "1s"]).await;
    let line = out.error_line();
    assert!(line.starts_with("error: invalid argument: "), "{line}");
    assert!(line.contains("limit"), "{line}");
}
