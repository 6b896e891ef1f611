//! Store tests against real SQLite files: migrations, publishing, reloading.

use super::*;
use crate::domain::{Audience, KeySource, Mode, OnStoreError, Scope};

fn service(name: &str, prefix: &str) -> Service {
    let msg = gw_proto::v1::Service {
        name: name.into(),
        route: Some(gw_proto::v1::Route {
            path_prefix: prefix.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    Service::try_from(msg).unwrap()
}

#[tokio::test]
async fn migrations_apply_to_an_empty_database() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("empty.db").display());
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.current().version, 0);
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         ORDER BY name",
    )
    .fetch_all(&store.pool)
    .await
    .unwrap();
    assert_eq!(
        tables,
        [
            "_sqlx_migrations",
            "api_keys",
            "certificates",
            "config_version",
            "consumers",
            "jwt_credentials",
            "policies",
            "services"
        ]
    );
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(
        applied,
        i64::try_from(sqlx::migrate!("../migrations").iter().count()).unwrap()
    );
    let pragmas: (String, i64, i64) = sqlx::query_as(
        "SELECT (SELECT journal_mode FROM pragma_journal_mode), \
                (SELECT foreign_keys FROM pragma_foreign_keys), \
                (SELECT synchronous FROM pragma_synchronous)",
    )
    .fetch_one(&store.pool)
    .await
    .unwrap();
    assert_eq!(
        pragmas,
        ("wal".to_owned(), 1, 2),
        "WAL, foreign keys on, synchronous FULL"
    );
    store.close().await;
    // Opening again finds the migrations applied and changes nothing.
    let again = Store::open(&url).await.unwrap();
    assert_eq!(again.current().version, 0);
}

#[tokio::test]
async fn every_write_publishes_a_new_version_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("w.db").display().to_string())
        .await
        .unwrap();
    let mut rx = store.subscribe();
    let (_, v1) = store.create_service(service("a", "/a")).await.unwrap();
    assert!(rx.has_changed().unwrap());
    assert_eq!(rx.borrow_and_update().version, v1);
    let policy = Policy {
        name: "p".into(),
        service: Some("a".into()),
        key: KeySource::Header("x-api-key".into()),
        limit: 3,
        period: Duration::from_secs(1),
        burst: 3,
        mode: Mode::Shadow,
        // Not the defaults, so the new columns are seen to round-trip.
        scope: Scope::Global,
        on_store_error: OnStoreError::Deny,
        audience: Some(Audience::Group("gold".into())),
        updated_version: 0,
    };
    let (stored, created, v2) = store.put_policy(policy.clone()).await.unwrap();
    assert!(created);
    assert_eq!(
        stored,
        Policy {
            updated_version: v2,
            ..policy
        }
    );
    assert_eq!(v2, v1 + 1);
    let state = rx.borrow_and_update().clone();
    assert_eq!(state.version, v2);
    assert_eq!(state.pb_policies().len(), 1);
    assert_eq!(
        state.snapshot().version,
        v2,
        "the snapshot is built for the same version"
    );

    // A refused write changes neither the database nor the published state.
    assert!(matches!(
        store.delete_service("a").await,
        Err(StoreError::InUse { .. })
    ));
    assert!(!rx.has_changed().unwrap());
    store.close().await;
    let reopened = Store::open(&dir.path().join("w.db").display().to_string())
        .await
        .unwrap();
    let state = reopened.current();
    assert_eq!(state.version, v2);
    assert_eq!(state.policies.get("p").map(|p| p.mode), Some(Mode::Shadow));
    assert_eq!(state.services.get("a").map(|s| s.created_version), Some(v1));
}

#[tokio::test]
async fn an_in_memory_store_keeps_its_one_database() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    for i in 0..3 {
        let name = format!("s{i}");
        store
            .create_service(service(&name, &format!("/{name}")))
            .await
            .unwrap();
    }
    assert_eq!(store.current().services.len(), 3);
    // A second connection, or one recycled after idling, would be an empty database: the
    // pool must hold exactly one connection and never retire it.
    let options = store.pool.options();
    assert_eq!(options.get_max_connections(), 1);
    assert_eq!(options.get_min_connections(), 1);
    assert_eq!(
        (options.get_idle_timeout(), options.get_max_lifetime()),
        (None, None)
    );
}

#[tokio::test]
async fn a_write_that_would_exceed_the_snapshot_limit_is_refused_and_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("big.db").display().to_string();
    let store = Store::open(&url).await.unwrap().with_snapshot_limit(2_000);
    let mut big = service("big", "/big");
    big.endpoints = (1..=100)
        .map(|p| crate::domain::Endpoint::parse(&format!("http://backend.example:{p}")).unwrap())
        .collect();
    let (_, v1) = store
        .create_service(service("small", "/small"))
        .await
        .unwrap();
    let err = store.create_service(big.clone()).await.unwrap_err();
    assert!(
        matches!(err, StoreError::TooLarge { limit: 2_000, .. }),
        "{err}"
    );
    assert_eq!(store.current().version, v1, "nothing published");
    // Shrinking stays possible even above the limit.
    let store = store.with_snapshot_limit(10);
    store.delete_service("small").await.unwrap();
    store.close().await;
    let reopened = Store::open(&url).await.unwrap();
    assert!(
        reopened.current().services.is_empty(),
        "the refused write was rolled back"
    );
    assert_eq!(
        reopened.current().version,
        v1 + 1,
        "and did not use up a version"
    );
}

/// A database written before migration 0004 (when an empty path meant `GET /health`) keeps
/// every service's HTTP check, and a service saved afterwards can have each kind.
#[tokio::test]
async fn migration_0004_keeps_existing_services_on_their_http_check() {
    use crate::domain::Probe;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    // The schema as it was: only the first migration, from a copy of the real file.
    let only_first = dir.path().join("migrations");
    std::fs::create_dir(&only_first).unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../migrations/0001_initial.sql"
        ),
        only_first.join("0001_initial.sql"),
    )
    .unwrap();
    {
        let options = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .connect_with(options)
            .await
            .unwrap();
        sqlx::migrate::Migrator::new(only_first.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        for (name, prefix, path) in [
            ("a", "/a", "/health"),
            ("b", "/b", "/ready"),
            ("c", "/c", ""),
        ] {
            sqlx::query(
                "INSERT INTO services VALUES (?, ?, '[]', 0, '[]', ?, 5000, 1000, 3, 2, 1000, \
                 30000, 'round_robin', 1, 1)",
            )
            .bind(name)
            .bind(prefix)
            .bind(path)
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;
    }
    let store = Store::open(&url).await.unwrap();
    let probes: Vec<(String, Probe)> = store
        .current()
        .services
        .values()
        .map(|s| (s.name.clone(), s.health_check.probe.clone()))
        .collect();
    assert_eq!(
        probes,
        [
            ("a".to_owned(), Probe::Http("/health".into())),
            ("b".to_owned(), Probe::Http("/ready".into())),
            // Written when "" meant /health: it keeps meaning that.
            ("c".to_owned(), Probe::Http("/health".into())),
        ]
    );
    // New services store every kind, and read back the same after a restart.
    for (name, prefix, probe) in [("tcp", "/t", Probe::Tcp), ("off", "/o", Probe::Disabled)] {
        let mut s = service(name, prefix);
        s.health_check.probe = probe;
        store.create_service(s).await.unwrap();
    }
    store.close().await;
    let reopened = Store::open(&url).await.unwrap();
    let state = reopened.current();
    assert_eq!(state.services["tcp"].health_check.probe, Probe::Tcp);
    assert_eq!(state.services["off"].health_check.probe, Probe::Disabled);
}

#[tokio::test]
async fn body_timeouts_persist_and_unset_stays_unset() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("t.db").display().to_string();
    let store = Store::open(&url).await.unwrap();
    let mut set = service("a", "/a");
    set.timeouts.request_body = Some(Duration::from_millis(1500));
    store.create_service(set).await.unwrap();
    store.create_service(service("b", "/b")).await.unwrap();
    store.close().await;
    let reopened = Store::open(&url).await.unwrap();
    let state = reopened.current();
    let t = |name: &str| {
        let s = state.services.get(name).unwrap();
        (s.timeouts.request_body, s.timeouts.response_body)
    };
    assert_eq!(t("a"), (Some(Duration::from_millis(1500)), None));
    assert_eq!(t("b"), (None, None));
}

/// `allow_connect` persists across a restart, is off for a service that does not set it, and
/// an update can turn it off again.
#[tokio::test]
async fn allow_connect_persists_and_defaults_off() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("c.db").display().to_string();
    let store = Store::open(&url).await.unwrap();
    let mut on = service("tunnel", "/");
    on.allow_connect = true;
    on.route.hosts = vec!["tunnel.example".into()];
    store.create_service(on).await.unwrap();
    store.create_service(service("plain", "/p")).await.unwrap();
    store.close().await;
    let reopened = Store::open(&url).await.unwrap();
    let state = reopened.current();
    assert!(state.services["tunnel"].allow_connect);
    assert!(!state.services["plain"].allow_connect);
    let mut off = (*state.services["tunnel"]).clone();
    off.allow_connect = false;
    reopened.update_service(off).await.unwrap();
    assert!(!reopened.current().services["tunnel"].allow_connect);
}

/// Keys and JWT credentials made in the same second are ordered by id, in memory as after a
/// restart (the database orders them so), not by when they were added: ids are random, so
/// with four of each, insertion order is id order only by a 1-in-24 chance.
#[tokio::test]
async fn credentials_keep_one_order_across_a_restart() {
    use crate::domain::consumer::JwtCredential;
    use gw_proto::v1 as pb;
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("o.db").display().to_string();
    let store = Store::open(&url).await.unwrap();
    let alice = Consumer::new("alice".into(), Vec::new()).unwrap();
    store.create_consumer(alice).await.unwrap();
    let now = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    for _ in 0..4 {
        let (_, key) = ApiKey::generate(now, None);
        store.add_api_key("alice", key).await.unwrap();
        let msg = pb::JwtCredential {
            consumer: "alice".into(),
            issuer: "https://idp".into(),
            key: Some(pb::jwt_credential::Key::JwksUrl("https://idp/jwks".into())),
            ..Default::default()
        };
        let (_, credential) = JwtCredential::create(msg, now).unwrap();
        store.add_jwt_credential("alice", credential).await.unwrap();
    }
    let ids = |state: &ConfigState| {
        let c = &state.consumers["alice"];
        let keys: Vec<String> = c.api_keys.iter().map(|k| k.id.clone()).collect();
        let jwts: Vec<String> = c.jwt_credentials.iter().map(|j| j.id.clone()).collect();
        (keys, jwts)
    };
    let before = ids(&store.current());
    let mut sorted = before.clone();
    sorted.0.sort();
    sorted.1.sort();
    assert_eq!(before, sorted);
    store.close().await;
    let reopened = Store::open(&url).await.unwrap();
    assert_eq!(ids(&reopened.current()), before);
}

/// The file's mode, permission bits only.
#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A new database file is created 0600 before SQLite opens it, whatever the umask (which can
/// only take bits away), and an existing file is left alone.
#[cfg(unix)]
#[test]
fn a_missing_database_file_is_created_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.db");
    create_private(&path);
    assert_eq!(mode(&path), 0o600);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        0,
        "an empty database"
    );
    let existing = dir.path().join("old.db");
    std::fs::write(&existing, b"x").unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o640)).unwrap();
    create_private(&existing);
    assert_eq!(mode(&existing), 0o640, "not ours to change here");
    assert_eq!(std::fs::read(&existing).unwrap(), b"x");
}

/// sqlx percent-decodes the URL's path; the file made private is the one it opens, and no
/// stray file is made under the undecoded name.
#[cfg(unix)]
#[tokio::test]
async fn a_percent_encoded_path_is_made_private_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("my dir")).unwrap();
    std::fs::create_dir(dir.path().join("my%20dir")).unwrap();
    let url = format!("sqlite://{}/my%20dir/gw.db", dir.path().display());
    let store = Store::open(&url).await.unwrap();
    let real = dir.path().join("my dir/gw.db");
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", real.display()));
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    assert!(
        !dir.path().join("my%20dir/gw.db").exists(),
        "a stray file under the undecoded name"
    );
    store.close().await;
}
