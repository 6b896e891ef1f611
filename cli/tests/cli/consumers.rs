//! `gwctl consumer …`, `gwctl key …`, and the auth and consumer flags of `service` and
//! `policy`: the key printed once and in no other output (`-o json` included), names checked
//! like service names, revocation, and clear errors.

use crate::support::{ControlPlane, gwctl};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_and_keys_from_add_to_rm_and_the_key_only_printed_once() {
    let cp = ControlPlane::start().await;
    let added = gwctl(
        &cp,
        &[
            "consumer", "add", "alice", "--group", "gold", "--group", "beta",
        ],
    )
    .await;
    assert!(
        added.ok().starts_with("consumer 'alice' created"),
        "{}",
        added.stdout
    );
    gwctl(&cp, &["consumer", "add", "bob"]).await.ok();
    let dup = gwctl(&cp, &["consumer", "add", "bob"]).await;
    assert!(
        dup.error_line().contains("consumer 'bob' already exists"),
        "{}",
        dup.stderr
    );
    let bad = gwctl(&cp, &["consumer", "add", "Bob", "--group", "x y"]).await;
    let line = bad.error_line();
    assert!(
        line.contains("name: 'Bob' must be a lowercase DNS label"),
        "{line}"
    );
    assert!(line.contains("groups[0]: 'x y'"), "{line}");

    // Human form: the key on a line of its own, said to be shown once.
    let created = gwctl(&cp, &["consumer", "key", "add", "alice"]).await;
    let text = created.ok();
    let key = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("gwk_"))
        .unwrap_or_else(|| panic!("no key in: {text}"))
        .to_owned();
    assert_eq!(key.len(), 52, "gwk_ and 192 bits in hex");
    assert!(text.contains("cannot be shown again"), "{text}");
    // JSON form: the key once, with its record.
    let json = gwctl(
        &cp,
        &[
            "-o",
            "json",
            "consumer",
            "key",
            "add",
            "alice",
            "--expires",
            "720h",
        ],
    )
    .await
    .json();
    let second = json["key"].as_str().unwrap().to_owned();
    assert_ne!(second, key);
    let id = json["api_key"]["id"].as_str().unwrap().to_owned();
    assert_eq!(json["api_key"]["last4"], second[second.len() - 4..]);
    assert!(
        json["api_key"]["expires"].as_str().unwrap().ends_with('Z'),
        "{json}"
    );
    let missing = gwctl(&cp, &["consumer", "key", "add", "nobody"]).await;
    assert!(
        missing
            .error_line()
            .contains("consumer 'nobody' does not exist")
    );

    // Every other output, in both formats: ids and last 4 characters, never a key.
    let mut outputs = Vec::new();
    for args in [
        &["consumer", "list"][..],
        &["consumer", "get", "alice"],
        &["key", "list"],
        &["key", "list", "--consumer", "alice"],
    ] {
        for format in ["table", "json"] {
            let mut all = vec!["-o", format];
            all.extend_from_slice(args);
            let out = gwctl(&cp, &all).await.ok().to_owned();
            for k in [&key, &second] {
                assert!(
                    !out.contains(&k[4..]),
                    "{args:?} -o {format} shows a key: {out}"
                );
            }
            outputs.push(out);
        }
    }
    let listed = gwctl(&cp, &["-o", "json", "consumer", "get", "alice"])
        .await
        .json();
    assert_eq!(listed["groups"], serde_json::json!(["beta", "gold"]));
    assert_eq!(listed["api_keys"].as_array().unwrap().len(), 2);
    assert!(listed["api_keys"][0].get("hash").is_none(), "{listed}");
    let table = gwctl(&cp, &["key", "list"]).await.ok().to_owned();
    assert!(table.starts_with("ID "), "{table}");
    assert!(
        table.contains(&id) && table.contains(&second[second.len() - 4..]),
        "{table}"
    );

    // Groups replaced; keys stay.
    let updated = gwctl(
        &cp,
        &[
            "-o", "json", "consumer", "update", "alice", "--group", "silver",
        ],
    )
    .await
    .json();
    assert_eq!(updated["consumer"]["groups"], serde_json::json!(["silver"]));
    assert_eq!(updated["consumer"]["api_keys"].as_array().unwrap().len(), 2);

    // Revocation.
    let rm = gwctl(&cp, &["key", "rm", &id]).await;
    assert!(
        rm.ok().starts_with(&format!("api key '{id}' deleted")),
        "{}",
        rm.stdout
    );
    let again = gwctl(&cp, &["key", "rm", &id]).await;
    assert!(
        again
            .error_line()
            .contains(&format!("api key '{id}' does not exist"))
    );
    let bad_id = gwctl(&cp, &["key", "rm", "gwk_notanid"]).await;
    assert!(
        bad_id.error_line().contains("is not an API key id"),
        "{}",
        bad_id.stderr
    );
    let keys = gwctl(&cp, &["-o", "json", "key", "list"]).await.json();
    assert_eq!(keys["api_keys"].as_array().unwrap().len(), 1);

    gwctl(&cp, &["consumer", "rm", "alice"]).await.ok();
    let keys = gwctl(&cp, &["-o", "json", "key", "list"]).await.json();
    assert_eq!(
        keys["api_keys"],
        serde_json::json!([]),
        "its keys went with it"
    );
    let gone = gwctl(&cp, &["consumer", "get", "alice"]).await;
    assert!(
        gone.error_line()
            .contains("consumer 'alice' does not exist")
    );
}

/// The AUTH cell of `service`'s row in `gwctl service list`.
async fn auth_cell(cp: &ControlPlane, service: &str) -> String {
    let out = gwctl(cp, &["service", "list"]).await;
    let table = out.ok();
    let at = table.find("AUTH").expect("an AUTH column");
    let row = table
        .lines()
        .find(|l| l.starts_with(&format!("{service} ")))
        .unwrap_or_else(|| panic!("no row {service} in\n{table}"));
    row[at..].split_whitespace().next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_auth_and_consumer_policy_flags() {
    let cp = ControlPlane::start().await;
    let add = gwctl(
        &cp,
        &[
            "-o",
            "json",
            "service",
            "add",
            "api",
            "--prefix",
            "/api",
            "--auth",
            "key",
            "--allow-group",
            "gold",
            "--key-source",
            "header,query",
        ],
    )
    .await
    .json();
    assert_eq!(
        add["service"]["auth"],
        serde_json::json!({"methods": ["key"], "allowed_groups": ["gold"],
            "key_sources": ["header", "query"]})
    );
    let get = gwctl(&cp, &["service", "get", "api"]).await.ok().to_owned();
    assert!(
        get.contains("key (keys from header, query); only groups gold"),
        "{get}"
    );
    assert_eq!(auth_cell(&cp, "api").await, "key+groups");
    // Defaults: bearer and header, any group.
    let upd = gwctl(
        &cp,
        &["-o", "json", "service", "update", "api", "--any-group"],
    )
    .await
    .json();
    assert_eq!(
        upd["service"]["auth"]["allowed_groups"],
        serde_json::json!([])
    );
    gwctl(
        &cp,
        &["service", "add", "plain", "--prefix", "/p", "--auth", "key"],
    )
    .await
    .ok();
    let plain = gwctl(&cp, &["-o", "json", "service", "get", "plain"])
        .await
        .json();
    assert_eq!(
        plain["auth"]["key_sources"],
        serde_json::json!(["bearer", "header"])
    );
    let off = gwctl(
        &cp,
        &["-o", "json", "service", "update", "plain", "--auth", "none"],
    )
    .await
    .json();
    assert_eq!(off["service"]["auth"], serde_json::Value::Null);
    assert_eq!(auth_cell(&cp, "api").await, "key");
    assert_eq!(auth_cell(&cp, "plain").await, "-");

    let jwt = gwctl(
        &cp,
        &[
            "-o", "json", "service", "add", "j", "--prefix", "/j", "--auth", "jwt",
        ],
    )
    .await
    .json();
    assert_eq!(
        jwt["service"]["auth"]["methods"],
        serde_json::json!(["jwt"])
    );
    assert_eq!(jwt["service"]["auth"]["key_sources"], serde_json::json!([]));
    // From key to jwt: the key sources go with the keys.
    let switched = gwctl(
        &cp,
        &["-o", "json", "service", "update", "api", "--auth", "jwt"],
    )
    .await
    .json();
    assert_eq!(
        switched["service"]["auth"]["methods"],
        serde_json::json!(["jwt"])
    );
    assert_eq!(
        switched["service"]["auth"]["key_sources"],
        serde_json::json!([])
    );
    let usage = gwctl(
        &cp,
        &[
            "service",
            "add",
            "g",
            "--prefix",
            "/g",
            "--allow-group",
            "gold",
        ],
    )
    .await;
    assert!(
        usage
            .error_line()
            .contains("--allow-group and --key-source need --auth key"),
        "{}",
        usage.stderr
    );
    let source = gwctl(
        &cp,
        &[
            "service",
            "add",
            "s",
            "--prefix",
            "/s",
            "--auth",
            "key",
            "--key-source",
            "cookie",
        ],
    )
    .await;
    assert_eq!(source.code, Some(2));
    assert!(
        source.stderr.contains("'cookie' is not a key source"),
        "{}",
        source.stderr
    );

    let gold = gwctl(
        &cp,
        &[
            "-o",
            "json",
            "policy",
            "set",
            "gold",
            "--limit",
            "1000",
            "--per",
            "1m",
            "--key",
            "consumer",
            "--group",
            "gold",
            "--service",
            "api",
        ],
    )
    .await
    .json();
    assert_eq!(gold["policy"]["key"], "consumer");
    assert_eq!(gold["policy"]["group"], "gold");
    gwctl(
        &cp,
        &[
            "policy",
            "set",
            "vip",
            "--limit",
            "5000",
            "--per",
            "1m",
            "--key",
            "consumer",
            "--consumer",
            "alice",
        ],
    )
    .await
    .ok();
    let list = gwctl(&cp, &["policy", "list"]).await.ok().to_owned();
    assert!(list.contains("consumer (group gold)"), "{list}");
    assert!(list.contains("consumer (consumer alice)"), "{list}");
    let both = gwctl(
        &cp,
        &[
            "policy",
            "set",
            "x",
            "--limit",
            "1",
            "--per",
            "1m",
            "--consumer",
            "a",
            "--group",
            "b",
        ],
    )
    .await;
    assert_eq!(both.code, Some(2), "{}", both.stderr);
}
