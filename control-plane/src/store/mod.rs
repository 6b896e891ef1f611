//! Durable storage of services and policies in SQLite, and the single config version.
//!
//! One module per aggregate (`services`, `policies`, `version`) holds the SQL and the
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

mod certificates;
mod consumers;
mod error;
mod jwt_credentials;
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

use crate::apply::{self, Diff, Document, DocumentError, Write};
use crate::domain::consumer::{MAX_JWT_CREDENTIALS, MAX_KEYS};
use crate::domain::{ApiKey, Certificate, Consumer, JwtCredential, Policy, Service};
use crate::state::ConfigState;

pub use error::StoreError;

/// Largest encoded config snapshot a write may produce: gRPC's default 4 MiB receive limit,
/// which data planes keep. Tens of thousands of services fit; a config beyond it would be
/// rejected by every node, so the write is refused here instead.
pub const MAX_SNAPSHOT_BYTES: usize = 4 * 1024 * 1024;
/// How long a connection waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections in the pool. Writes are serialised and reads are served from memory, so a
/// few suffice; more would only hold file descriptors.
const MAX_CONNECTIONS: u32 = 4;

/// The control plane's storage: SQLite for durability, the latest [`ConfigState`] in memory.
#[derive(Debug)]
pub struct Store {
    pool: SqlitePool,
    /// The committed state; holding the lock is the right to write.
    writer: Mutex<Arc<ConfigState>>,
    published: watch::Sender<Arc<ConfigState>>,
    max_snapshot_bytes: usize,
    /// Time each change's commit took (for `/metrics`).
    commit_latency: gw_ops::metrics::Histogram,
}

impl Store {
    /// Opens (creating if missing) the database at `url` (`sqlite://path`, a bare path, or
    /// `sqlite::memory:` for a throw-away store), applies the embedded migrations and loads
    /// the config.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = if url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url)?
        } else {
            SqliteConnectOptions::new().filename(Path::new(url))
        };
        // The file as sqlx names it (percent-decoded), not as the URL spells it: the
        // permissions below must apply to the file that holds the secrets.
        let db_file = options.get_filename().to_path_buf();
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an OK answer means the change survives a power cut, not just a crash.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        // Every connection to `:memory:` is a database of its own, so an in-memory store must
        // keep exactly one connection, forever.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool = if in_memory {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(MAX_CONNECTIONS)
        };
        if !in_memory {
            create_private(&db_file);
        }
        let pool = pool.connect_with(options).await?;
        sqlx::migrate!("../migrations").run(&pool).await?;
        if !in_memory {
            restrict_permissions(&db_file);
        }

        let mut conn = pool.acquire().await?;
        let state = Arc::new(load(&mut conn).await?);
        drop(conn);
        let (published, _) = watch::channel(state.clone());
        Ok(Self {
            pool,
            writer: Mutex::new(state),
            published,
            max_snapshot_bytes: MAX_SNAPSHOT_BYTES,
            commit_latency: gw_ops::metrics::Histogram::default(),
        })
    }

    /// Lowers the snapshot size limit, so tests can reach it cheaply.
    #[cfg(test)]
    pub(crate) fn with_snapshot_limit(mut self, bytes: usize) -> Self {
        self.max_snapshot_bytes = bytes;
        self
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

    /// How long commits took so far.
    pub fn commit_latency(&self) -> &gw_ops::metrics::Histogram {
        &self.commit_latency
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
        let next = state.with_service(service.clone(), version);
        self.commit(tx, &mut state, next).await?;
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
        let next = state.with_service(service.clone(), version);
        self.commit(tx, &mut state, next).await?;
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
        let next = state.without_service(name, version);
        self.commit(tx, &mut state, next).await?;
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
        let next = state.with_policy(policy.clone(), version);
        self.commit(tx, &mut state, next).await?;
        Ok((policy, created, version))
    }

    /// Creates or replaces a certificate; returns it as stored, whether it was created, and
    /// the version that includes it.
    pub async fn put_certificate(
        &self,
        mut certificate: Certificate,
    ) -> Result<(Certificate, bool, u64), StoreError> {
        let mut state = self.writer.lock().await;
        let created = !state.certificates.contains_key(&certificate.name);
        let mut tx = self.begin().await?;
        let version = version::bump(&mut tx).await?;
        certificate.updated_version = version;
        certificates::upsert(&mut tx, &certificate).await?;
        let next = state.with_certificate(certificate.clone(), version);
        self.commit(tx, &mut state, next).await?;
        Ok((certificate, created, version))
    }

    /// Removes a certificate; returns the version without it.
    pub async fn delete_certificate(&self, name: &str) -> Result<u64, StoreError> {
        let mut state = self.writer.lock().await;
        if !state.certificates.contains_key(name) {
            return Err(StoreError::NotFound {
                kind: "certificate",
                name: name.to_owned(),
            });
        }
        let mut tx = self.begin().await?;
        let version = version::bump(&mut tx).await?;
        certificates::delete(&mut tx, name).await?;
        let next = state.without_certificate(name, version);
        self.commit(tx, &mut state, next).await?;
        Ok(version)
    }

    /// Registers a new consumer (without keys); returns it as stored and the version.
    pub async fn create_consumer(
        &self,
        mut consumer: Consumer,
    ) -> Result<(Consumer, u64), StoreError> {
        let mut state = self.writer.lock().await;
        if state.consumers.contains_key(&consumer.name) {
            return Err(StoreError::AlreadyExists {
                kind: "consumer",
                name: consumer.name,
            });
        }
        let mut tx = self.begin().await?;
        let version = version::bump(&mut tx).await?;
        consumer.api_keys.clear();
        consumer.jwt_credentials.clear();
        consumer.updated_version = version;
        consumers::insert(&mut tx, &consumer).await?;
        let next = state.with_consumer(consumer.clone(), version);
        self.commit(tx, &mut state, next).await?;
        Ok((consumer, version))
    }

    /// Replaces an existing consumer's groups, keeping its keys.
    pub async fn update_consumer(
        &self,
        name: &str,
        groups: Vec<String>,
    ) -> Result<(Consumer, u64), StoreError> {
        let mut state = self.writer.lock().await;
        let mut consumer = existing_consumer(&state, name)?;
        consumer.groups = groups;
        let mut tx = self.begin().await?;
        let version = version::bump(&mut tx).await?;
        consumer.updated_version = version;
        consumers::update(&mut tx, &consumer).await?;
        let next = state.with_consumer(consumer.clone(), version);
        self.commit(tx, &mut state, next).await?;
        Ok((consumer, version))
    }

    /// Removes a consumer and its keys and JWT credentials; returns the version without them.
    pub async fn delete_consumer(&self, name: &str) -> Result<u64, StoreError> {
        let mut state = self.writer.lock().await;
        existing_consumer(&state, name)?;
        let mut tx = self.begin().await?;
        let version = version::bump(&mut tx).await?;
        consumers::delete(&mut tx, name).await?;
        let next = state.without_consumer(name, version);
        self.commit(tx, &mut state, next).await?;
        Ok(version)
    }

    /// Stores `key` (its hash) for consumer `name`; returns the version that includes it.
    pub async fn add_api_key(&self, name: &str, key: ApiKey) -> Result<u64, StoreError> {
        let mut state = self.writer.lock().await;
        let mut consumer = existing_consumer(&state, name)?;
        if consumer.api_keys.len() >= MAX_KEYS {
            return Err(StoreError::TooManyKeys {
                consumer: name.to_owned(),
                limit: MAX_KEYS,
            });
        }
        let mut tx = self.begin().await?;
        let version = version::bump(&mut tx).await?;
        consumers::insert_key(&mut tx, name, &key).await?;
        consumer.api_keys.push(key);
        // The order the database returns them in after a restart (see add_jwt_credential).
        consumer
            .api_keys
            .sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        consumer.updated_version = version;
        consumers::update(&mut tx, &consumer).await?;
        let next = state.with_consumer(consumer, version);
        self.commit(tx, &mut state, next).await?;
        Ok(version)
    }

    /// Revokes the key `id`; returns its consumer's name and the version without the key.
    pub async fn delete_api_key(&self, id: &str) -> Result<(String, u64), StoreError> {
        self.delete_credential(Credential::ApiKey, id).await
    }

    /// Stores a JWT credential for consumer `name`; returns the version that includes it.
    /// Every credential of one issuer must name the same claim: a token's issuer alone says
    /// which claim to read the consumer from.
    pub async fn add_jwt_credential(
        &self,
        name: &str,
        credential: JwtCredential,
    ) -> Result<u64, StoreError> {
        let mut state = self.writer.lock().await;
        let mut consumer = existing_consumer(&state, name)?;
        if consumer.jwt_credentials.len() >= MAX_JWT_CREDENTIALS {
            return Err(StoreError::TooManyJwtCredentials {
                consumer: name.to_owned(),
                limit: MAX_JWT_CREDENTIALS,
            });
        }
        let conflict = state.consumers.values().find_map(|other| {
            other
                .jwt_credentials
                .iter()
                .find(|c| c.issuer == credential.issuer && c.claim != credential.claim)
                .map(|c| (other.name.clone(), c))
        });
        if let Some((other, c)) = conflict {
            return Err(StoreError::ClaimConflict {
                issuer: crate::domain::validate::echo(&c.issuer).into_owned(),
                claim: c.claim.clone(),
                consumer: other,
                id: c.id.clone(),
            });
        }
        let mut tx = self.begin().await?;
        let version = version::bump(&mut tx).await?;
        jwt_credentials::insert(&mut tx, name, &credential).await?;
        consumer.jwt_credentials.push(credential);
        // The order the database returns them in after a restart (creation is in whole
        // seconds, so two made in one second are ordered by id, not by insertion).
        consumer
            .jwt_credentials
            .sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        consumer.updated_version = version;
        consumers::update(&mut tx, &consumer).await?;
        let next = state.with_consumer(consumer, version);
        self.commit(tx, &mut state, next).await?;
        Ok(version)
    }

    /// Removes the JWT credential `id`; returns its consumer's name and the version without
    /// it.
    pub async fn delete_jwt_credential(&self, id: &str) -> Result<(String, u64), StoreError> {
        self.delete_credential(Credential::Jwt, id).await
    }

    /// Removes the credential `id` of kind `kind` from whichever consumer holds it.
    async fn delete_credential(
        &self,
        kind: Credential,
        id: &str,
    ) -> Result<(String, u64), StoreError> {
        let holds = |c: &Consumer| match kind {
            Credential::ApiKey => c.api_keys.iter().any(|k| k.id == id),
            Credential::Jwt => c.jwt_credentials.iter().any(|j| j.id == id),
        };
        let mut state = self.writer.lock().await;
        let Some(mut consumer) = state
            .consumers
            .values()
            .find(|c| holds(c))
            .map(|c| (**c).clone())
        else {
            return Err(StoreError::NotFound {
                kind: match kind {
                    Credential::ApiKey => "api key",
                    Credential::Jwt => "JWT credential",
                },
                name: id.to_owned(),
            });
        };
        let mut tx = self.begin().await?;
        let version = version::bump(&mut tx).await?;
        match kind {
            Credential::ApiKey => {
                consumers::delete_key(&mut tx, id).await?;
                consumer.api_keys.retain(|k| k.id != id);
            }
            Credential::Jwt => {
                jwt_credentials::delete(&mut tx, id).await?;
                consumer.jwt_credentials.retain(|j| j.id != id);
            }
        }
        consumer.updated_version = version;
        consumers::update(&mut tx, &consumer).await?;
        let name = consumer.name.clone();
        let next = state.with_consumer(consumer, version);
        self.commit(tx, &mut state, next).await?;
        Ok((name, version))
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
        let next = state.without_policy(name, version);
        self.commit(tx, &mut state, next).await?;
        Ok(version)
    }

    /// Makes the configuration match `document` (see [`crate::apply`]): validates it against
    /// the committed state and, unless `dry_run` or nothing differs, writes every change in one
    /// transaction that advances the version once. Returns the diff, the version in force
    /// afterwards, and whether anything was written.
    pub async fn apply(&self, document: Document, dry_run: bool) -> Result<Applied, ApplyError> {
        let mut state = self.writer.lock().await;
        let plan = apply::plan(&state, document)?;
        if dry_run || plan.diff.is_empty() {
            return Ok(Applied {
                diff: plan.diff,
                version: state.version,
                applied: false,
            });
        }
        let mut tx = self.begin().await?;
        let version = version::bump(&mut tx).await?;
        let mut changes = Vec::with_capacity(plan.writes.len());
        for mut write in plan.writes {
            match &mut write {
                Write::Service { service, created } => {
                    service.updated_version = version;
                    if *created {
                        service.created_version = version;
                        services::insert(&mut tx, service).await?;
                    } else {
                        service.created_version = state
                            .services
                            .get(&service.name)
                            .map_or(version, |old| old.created_version);
                        services::update(&mut tx, service).await?;
                    }
                }
                Write::RemoveService(name) => services::delete(&mut tx, name).await?,
                Write::Policy(policy) => {
                    policy.updated_version = version;
                    policies::upsert(&mut tx, policy).await?;
                }
                Write::RemovePolicy(name) => policies::delete(&mut tx, name).await?,
                Write::Certificate(certificate) => {
                    certificate.updated_version = version;
                    certificates::upsert(&mut tx, certificate).await?;
                }
                Write::RemoveCertificate(name) => certificates::delete(&mut tx, name).await?,
            }
            changes.push(write.change());
        }
        let next = state.with_changes(version, changes);
        self.commit(tx, &mut state, next).await?;
        Ok(Applied {
            diff: plan.diff,
            version,
            applied: true,
        })
    }

    /// Starts a write transaction. IMMEDIATE takes the write lock up front, so contention with
    /// another process waits out the busy timeout instead of failing at the first write.
    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Commits `tx` unless `next` would grow the config past what a data plane accepts, then
    /// installs `next` as the committed state and tells subscribers, still under the writer
    /// lock so that versions are published in order.
    async fn commit(
        &self,
        tx: sqlx::Transaction<'static, sqlx::Sqlite>,
        state: &mut Arc<ConfigState>,
        next: ConfigState,
    ) -> Result<(), StoreError> {
        let size = next.snapshot_len();
        // Shrinking is always allowed, so an oversized config can be repaired.
        if size > self.max_snapshot_bytes && size > state.snapshot_len() {
            // Dropping `tx` rolls it back.
            return Err(StoreError::TooLarge {
                size,
                limit: self.max_snapshot_bytes,
            });
        }
        let started = std::time::Instant::now();
        tx.commit().await?;
        self.commit_latency.observe(started.elapsed());
        let next = Arc::new(next);
        *state = next.clone();
        self.published.send_replace(next);
        Ok(())
    }
}

/// The kinds of credential a consumer holds.
#[derive(Debug, Clone, Copy)]
enum Credential {
    ApiKey,
    Jwt,
}

/// What [`Store::apply`] did.
#[derive(Debug)]
pub struct Applied {
    /// What differed (and, if `applied`, now is as the document says).
    pub diff: Diff,
    /// The config version in force afterwards.
    pub version: u64,
    /// Whether anything was written (false for a dry run or a document that changes nothing).
    pub applied: bool,
}

/// Why [`Store::apply`] wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The document is invalid, or would make an invalid config.
    #[error(transparent)]
    Invalid(#[from] DocumentError),
    /// The store failed (or the result is too large); nothing was written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ApplyError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// A copy of the consumer `name`, to change and write back.
fn existing_consumer(state: &ConfigState, name: &str) -> Result<Consumer, StoreError> {
    state
        .consumers
        .get(name)
        .map(|c| (**c).clone())
        .ok_or_else(|| StoreError::NotFound {
            kind: "consumer",
            name: name.to_owned(),
        })
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
    let certificates: BTreeMap<String, Arc<Certificate>> = certificates::list(&mut tx)
        .await?
        .into_iter()
        .map(|c| (c.name.clone(), Arc::new(c)))
        .collect();
    let consumers: BTreeMap<String, Arc<Consumer>> = consumers::list(&mut tx)
        .await?
        .into_iter()
        .map(|c| (c.name.clone(), Arc::new(c)))
        .collect();
    tx.commit().await?;
    Ok(ConfigState::new(version, services, policies)
        .with_certificates(certificates)
        .with_consumers(consumers))
}

/// Creates a missing database file readable by its owner only, so it is never world-readable,
/// not even between its creation and [`restrict_permissions`]; SQLite gives the WAL and
/// shared-memory files it creates later the database file's permissions. An empty file is an
/// empty database to SQLite. Best effort, like [`restrict_permissions`].
fn create_private(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        // A missing directory is SQLite's to report, in the one start-up error line.
        if let Err(e) = created
            && !matches!(
                e.kind(),
                std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::NotFound
            )
        {
            tracing::warn!(file = %path.display(), error = %e, "cannot create the database file readable by its owner only");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Makes the database file (and SQLite's WAL and shared-memory files beside it) readable by
/// its owner only: it holds the HTTPS certificates' private keys and the HS256 secrets of JWT
/// credentials. Best effort: a failure is
/// logged, since refusing to start would not protect a file that already exists.
fn restrict_permissions(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            if let Err(e) = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(file = %Path::new(&file).display(), error = %e, "cannot make the database readable by its owner only");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests;
