//! `gwctl cert add|list|rm`: refusals with a clear message each (expired, key not matching,
//! not PEM), listing with expiry flags, and the private key never in any output.

use gw_testkit::tls::Ca;

use crate::support::{ControlPlane, gwctl};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_add_checks_lists_flags_and_never_shows_the_key() {
    let cp = ControlPlane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("site CA");
    let (cert, key) = ca
        .server(&["example.test", "*.example.test"])
        .write(dir.path(), "site");
    let (_, other_key) = ca.server(&["other.test"]).write(dir.path(), "other");
    let (old_cert, old_key) = ca
        .server_valid(&["old.test"], (2001, 1, 1), (2002, 1, 1))
        .write(dir.path(), "old");
    let (soon_cert, soon_key) = {
        let now = std::time::SystemTime::now();
        let in_a_week = gw_tls::cert::format_utc(gw_tls::cert::unix_seconds(
            now + std::time::Duration::from_secs(7 * 86_400),
        ));
        let (y, rest) = in_a_week.split_once('-').unwrap();
        let (m, rest) = rest.split_once('-').unwrap();
        let d = &rest[..2];
        ca.server_valid(
            &["soon.test"],
            (2020, 1, 1),
            (y.parse().unwrap(), m.parse().unwrap(), d.parse().unwrap()),
        )
        .write(dir.path(), "soon")
    };
    let path = |p: &std::path::Path| p.display().to_string();
    let key_text = std::fs::read_to_string(&key).unwrap();
    let key_body = key_text.lines().nth(1).unwrap().to_owned();

    let refusals = [
        (
            path(&old_cert),
            path(&old_key),
            "the certificate expired on 2002-01-01",
        ),
        (
            path(&cert),
            path(&other_key),
            "the private key does not match the certificate",
        ),
        (
            path(&key),
            path(&key),
            "not PEM: expected a '-----BEGIN CERTIFICATE-----' block",
        ),
        (
            path(&cert),
            path(&cert),
            "not PEM: expected a '-----BEGIN PRIVATE KEY-----' block",
        ),
    ];
    for (c, k, want) in refusals {
        let out = gwctl(&cp, &["cert", "add", "site", "--cert", &c, "--key", &k]).await;
        let line = out.error_line();
        assert!(line.contains(want), "{c} {k}: {line}");
        assert!(!line.contains(&key_body), "{line}");
    }

    let out = gwctl(
        &cp,
        &[
            "cert",
            "add",
            "site",
            "--cert",
            &path(&cert),
            "--key",
            &path(&key),
        ],
    )
    .await;
    let added = out.ok();
    assert!(
        added.contains("certificate 'site' created for example.test, *.example.test"),
        "{added}"
    );
    let out = gwctl(
        &cp,
        &[
            "cert",
            "add",
            "soon",
            "--cert",
            &path(&soon_cert),
            "--key",
            &path(&soon_key),
        ],
    )
    .await;
    out.ok();

    let out = gwctl(&cp, &["cert", "list"]).await;
    let table = out.ok();
    let soon_row = table.lines().find(|l| l.starts_with("soon")).unwrap();
    assert!(
        soon_row.contains("! "),
        "expiring within 14 days is flagged: {table}"
    );
    let site_row = table.lines().find(|l| l.starts_with("site")).unwrap();
    assert!(
        site_row.contains("example.test,*.example.test") && !site_row.contains('!'),
        "{table}"
    );

    let json = gwctl(&cp, &["-o", "json", "cert", "list"]).await;
    let doc = json.json();
    assert_eq!(doc["certificates"][0]["name"], "site");
    assert_eq!(doc["certificates"][1]["expires_soon"], true);
    for text in [table, json.stdout.as_str(), added] {
        assert!(
            !text.contains(&key_body) && !text.contains("PRIVATE KEY"),
            "{text}"
        );
    }

    let out = gwctl(&cp, &["cert", "rm", "soon"]).await;
    assert!(out.ok().contains("certificate 'soon' deleted"));
    let out = gwctl(&cp, &["cert", "rm", "soon"]).await;
    assert!(
        out.error_line()
            .contains("certificate 'soon' does not exist")
    );
}
