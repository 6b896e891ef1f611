//! Durable storage of services and policies in SQLite, and the single config version.
//!
//! One module per aggregate ([`services`], [`policies`], [`version`]) holds the SQL and the
//! private row types; [`Store`] sequences writes. Every write is one transaction that also
//! bumps the config version, and only after it committed does the store publish the new
//! [`ConfigState`] to subscribers.
//!
//! Writers are serialised in-process by a mutex held across the transaction. SQLite allows
//! one writer at a time, and a deferred transaction that upgrades to a write lock fails at
//! once with SQLITE_BUSY whatever the busy timeout, so concurrent RPCs must queue here, not in
//! SQLite. The busy timeout still covers other processes (backups, a stray second instance).
//! The mutex also guards the in-memory state, so versions are published in commit order and
//! reference checks see exactly what is committed. One control plane per database file.

mod policies;
mod services;
mod version;

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqliteConnection, SqlitePool};
use tokio::sync::{Mutex, watch};

use crate::domain::{Policy, Service};
use crate::state::ConfigState;

/// How long a connection waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections in the pool. Writes are serialised and reads are served from memory, so a
/// few suffice; more would only hold file descriptors.
const MAX_CONNECTIONS: u32 = 4;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No service or policy of that name.
    #[error("{kind} '{name}' does not exist")]
    NotFound {
        /// "service" or "policy".
        kind: &'static str,
        /// The name asked for.
        name: String,
    },
    /// A policy names a service that does not exist.
    #[error("policy.service: service '{0}' does not exist")]
    UnknownService(String),
    /// The name is taken.
    #[error("{kind} '{name}' already exists")]
    AlreadyExists {
        /// "service" or "policy".
        kind: &'static str,
        /// The name asked for.
        name: String,
    },
    /// Another service's route takes the same requests.
    #[error(
        "route: service '{other}' already routes path prefix '{prefix}' for {hosts}; \
         use a different prefix or distinct hosts"
    )]
    RouteConflict {
        /// The service that already has the route.
        other: String,
        /// The shared path prefix.
        prefix: String,
        /// "any host" or the shared hosts.
        hosts: String,
    },
    /// A service cannot be deleted while policies name it.
    #[error(
        "service '{service}' is used by policies {}; remove them first (gwctl policy rm ...)",
        quoted(.policies)
    )]
    InUse {
        /// The service.
        service: String,
        /// The policies that name it.
        policies: Vec<String>,
    },
    /// The database failed. Its text is for logs only.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row could not be turned back into a domain value.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The control plane's storage: SQLite for durability, the latest [`ConfigState`] in memory.
#[derive(Debug)]
pub struct Store {
    pool: SqlitePool,
    /// The committed state; holding the lock is the right to write.
    writer: Mutex<Arc<ConfigState>>,
    published: watch::Sender<Arc<ConfigState>>,
}

impl Store {
    /// Opens (creating if missing) the database at `url` (`sqlite://path`, `sqlite::memory:`
    /// or a bare path), applies the embedded migrations and loads the config.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = if url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url)?
        } else {
            SqliteConnectOptions::new().filename(Path::new(url))
        };
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an OK answer means the change survives a power cut, not just a crash.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations").run(&pool).await?;

        let mut conn = pool.acquire().await?;
        let state = Arc::new(load(&mut conn).await?);
        drop(conn);
        let (published, _) = watch::channel(state.clone());
        Ok(Self {
            pool,
            writer: Mutex::new(state),
            published,
        })
    }

    /// The latest committed state.
    pub fn current(&self) -> Arc<ConfigState> {
        self.published.borrow().clone()
    }

    /// A receiver that sees every state published from now on (intermediate ones may be
    /// skipped by a slow receiver, which is what config streams want).
    pub fn subscribe(&self) -> watch::Receiver<Arc<ConfigState>> {
        self.published.subscribe()
    }

    /// Closes the connection pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Registers a new service; returns it as stored and the version that includes it.
    pub async fn create_service(&self, mut service: Service) -> Result<(Service, u64), StoreError> {
        let mut state = self.writer.lock().await;
        if state.services.contains_key(&service.name) {
            return Err(StoreError::AlreadyExists {
                kind: "service",
                name: service.name,
            });
        }
        check_route(&state, &service)?;
        let mut tx = self.begin().await?;
        let version = version::bump(&mut tx).await?;
        service.created_version = version;
        service.updated_version = version;
        services::insert(&mut tx, &service).await?;
        tx.commit().await?;
        let next = state.with_service(service.clone(), version);
        self.publish(&mut state, next);
        Ok((service, version))
    }

    /// Replaces an existing service's definition (selected by name).
    pub async fn update_service(&self, mut service: Service) -> Result<(Service, u64), StoreError> {
        let mut state = self.writer.lock().await;
        let Some(old) = state.services.get(&service.name) else {
            return Err(StoreError::NotFound {
                kind: "service",
                name: service.name,
            });
        };
        service.created_version = old.created_version;
        check_route(&state, &service)?;
        let mut tx = self.begin().await?;
        let version = version::bump(&mut tx).await?;
        service.updated_version = version;
        services::update(&mut tx, &service).await?;
        tx.commit().await?;
        let next = state.with_service(service.clone(), version);
        self.publish(&mut state, next);
        Ok((service, version))
    }

    /// Removes a service no policy names; returns the version without it.
    pub async fn delete_service(&self, name: &str) -> Result<u64, StoreError> {
        let mut state = self.writer.lock().await;
        if !state.services.contains_key(name) {
            return Err(StoreError::NotFound {
                kind: "service",
                name: name.to_owned(),
            });
        }
        let users = state.policies_naming(name);
        if !users.is_empty() {
            return Err(StoreError::InUse {
                service: name.to_owned(),
                policies: users,
            });
        }
        let mut tx = self.begin().await?;
        let version = version::bump(&mut tx).await?;
        services::delete(&mut tx, name).await?;
        tx.commit().await?;
        let next = state.without_service(name, version);
        self.publish(&mut state, next);
        Ok(version)
    }

    /// Creates or replaces a policy; returns it as stored, whether it was created, and the
    /// version that includes it.
    pub async fn put_policy(&self, mut policy: Policy) -> Result<(Policy, bool, u64), StoreError> {
        let mut state = self.writer.lock().await;
        if let Some(service) = &policy.service
            && !state.services.contains_key(service)
        {
            return Err(StoreError::UnknownService(service.clone()));
        }
        let created = !state.policies.contains_key(&policy.name);
        let mut tx = self.begin().await?;
        let version = version::bump(&mut tx).await?;
        policy.updated_version = version;
        policies::upsert(&mut tx, &policy).await?;
        tx.commit().await?;
        let next = state.with_policy(policy.clone(), version);
        self.publish(&mut state, next);
        Ok((policy, created, version))
    }

    /// Removes a policy; returns the version without it.
    pub async fn delete_policy(&self, name: &str) -> Result<u64, StoreError> {
        let mut state = self.writer.lock().await;
        if !state.policies.contains_key(name) {
            return Err(StoreError::NotFound {
                kind: "policy",
                name: name.to_owned(),
            });
        }
        let mut tx = self.begin().await?;
        let version = version::bump(&mut tx).await?;
        policies::delete(&mut tx, name).await?;
        tx.commit().await?;
        let next = state.without_policy(name, version);
        self.publish(&mut state, next);
        Ok(version)
    }

    /// Starts a write transaction. IMMEDIATE takes the write lock up front, so contention with
    /// another process waits out the busy timeout instead of failing at the first write.
    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Installs `next` as the committed state and tells subscribers, still under the writer
    /// lock so that versions are published in order.
    fn publish(&self, state: &mut Arc<ConfigState>, next: ConfigState) {
        let next = Arc::new(next);
        *state = next.clone();
        self.published.send_replace(next);
    }
}

fn check_route(state: &ConfigState, service: &Service) -> Result<(), StoreError> {
    match state.route_conflict(service) {
        None => Ok(()),
        Some(other) => {
            let shared: Vec<&str> = other
                .route
                .hosts
                .iter()
                .filter(|h| service.route.hosts.contains(h))
                .map(String::as_str)
                .collect();
            let hosts = if shared.is_empty() {
                "any host".to_owned()
            } else {
                format!("host(s) {}", shared.join(", "))
            };
            Err(StoreError::RouteConflict {
                other: other.name.clone(),
                prefix: other.route.path_prefix.clone(),
                hosts,
            })
        }
    }
}

/// Reads the whole config in one read transaction, so version and contents agree.
async fn load(conn: &mut SqliteConnection) -> Result<ConfigState, StoreError> {
    let mut tx = sqlx::Connection::begin(conn).await?;
    let version = version::current(&mut tx).await?;
    let services: BTreeMap<String, Arc<Service>> = services::list(&mut tx)
        .await?
        .into_iter()
        .map(|s| (s.name.clone(), Arc::new(s)))
        .collect();
    let policies: BTreeMap<String, Arc<Policy>> = policies::list(&mut tx)
        .await?
        .into_iter()
        .map(|p| (p.name.clone(), Arc::new(p)))
        .collect();
    tx.commit().await?;
    Ok(ConfigState::new(version, services, policies))
}

/// Converts a stored integer that must be non-negative.
fn to_u64(what: &str, v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} is negative ({v})")))
}

/// Converts a count or version for storage; SQLite integers are signed 64-bit.
fn to_i64(what: &str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} is too large to store ({v})")))
}

/// Milliseconds of a validated duration (bounded far below i64::MAX).
fn millis(what: &str, d: Duration) -> Result<i64, StoreError> {
    i64::try_from(d.as_millis()).map_err(|_| StoreError::Corrupt(format!("{what} is too long")))
}

/// A stored millisecond count as a duration.
fn duration(what: &str, ms: i64) -> Result<Duration, StoreError> {
    Ok(Duration::from_millis(to_u64(what, ms)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{KeySource, Mode};

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
            ["_sqlx_migrations", "config_version", "policies", "services"]
        );
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
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
            state.snapshot.version, v2,
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
}
