//! Why a store operation failed, and the checked conversions between SQLite's signed integers
//! and the domain's values (a stored value that does not convert is `Corrupt`, never a panic).

use std::time::Duration;

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
    /// The change would make the config larger than one message a data plane accepts.
    #[error(
        "the config would be {size} bytes, above the limit of {limit} bytes that data planes \
         accept in one message; remove endpoints, services or policies instead"
    )]
    TooLarge {
        /// Encoded size of the config after the change.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A consumer already holds as many API keys as allowed.
    #[error(
        "consumer '{consumer}' already has {limit} API keys; revoke one first (gwctl key rm ID)"
    )]
    TooManyKeys {
        /// The consumer.
        consumer: String,
        /// The most keys a consumer may hold.
        limit: usize,
    },
    /// A consumer already holds as many JWT credentials as allowed.
    #[error(
        "consumer '{consumer}' already has {limit} JWT credentials; remove one first \
         (gwctl consumer jwt rm ID)"
    )]
    TooManyJwtCredentials {
        /// The consumer.
        consumer: String,
        /// The most credentials a consumer may hold.
        limit: usize,
    },
    /// Another credential of the same issuer reads the consumer from another claim.
    #[error(
        "credential.claim: issuer '{issuer}' names its consumers in claim '{claim}' \
         (credential {id} of consumer '{consumer}'); every credential of one issuer must name \
         the same claim (use --claim {claim})"
    )]
    ClaimConflict {
        /// The issuer.
        issuer: String,
        /// The claim its credentials name.
        claim: String,
        /// The consumer holding the other credential.
        consumer: String,
        /// The other credential's id.
        id: String,
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

/// Converts a stored integer that must be non-negative.
pub(super) fn to_u64(what: &str, v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} is negative ({v})")))
}

/// Converts a count or version for storage; SQLite integers are signed 64-bit.
pub(super) fn to_i64(what: &str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} is too large to store ({v})")))
}

/// Milliseconds of a validated duration (bounded far below i64::MAX).
pub(super) fn millis(what: &str, d: Duration) -> Result<i64, StoreError> {
    i64::try_from(d.as_millis()).map_err(|_| StoreError::Corrupt(format!("{what} is too long")))
}

/// A stored millisecond count as a duration.
pub(super) fn duration(what: &str, ms: i64) -> Result<Duration, StoreError> {
    Ok(Duration::from_millis(to_u64(what, ms)?))
}
