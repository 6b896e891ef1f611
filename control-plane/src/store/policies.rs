//! SQL for the `policies` table.

use sqlx::SqliteConnection;

use crate::domain::{Audience, KeySource, Mode, OnStoreError, Policy, Scope};
use crate::store::error::{StoreError, duration, millis, to_i64, to_u64};

/// `key_kind` of a policy keyed by client IP.
const KEY_CLIENT_IP: &str = "client_ip";
/// `key_kind` of a policy keyed by a request header.
const KEY_HEADER: &str = "header";
/// `key_kind` of a policy keyed by the authenticated consumer.
const KEY_CONSUMER: &str = "consumer";

/// A `policies` row as stored.
#[derive(sqlx::FromRow)]
struct PolicyRow {
    name: String,
    service: Option<String>,
    key_kind: String,
    key_header: Option<String>,
    rate_limit: i64,
    period_ms: i64,
    burst: i64,
    mode: String,
    updated_version: i64,
    scope: String,
    on_store_error: String,
    consumer: Option<String>,
    consumer_group: Option<String>,
}

impl TryFrom<PolicyRow> for Policy {
    type Error = StoreError;

    fn try_from(row: PolicyRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("policy '{}': {what}", row.name));
        let key = match (row.key_kind.as_str(), row.key_header) {
            (KEY_CLIENT_IP, _) => KeySource::ClientIp,
            (KEY_HEADER, Some(h)) => KeySource::Header(h),
            (KEY_CONSUMER, _) => KeySource::Consumer,
            _ => return Err(corrupt("key")),
        };
        let audience = match (row.consumer, row.consumer_group) {
            (None, None) => None,
            (Some(c), None) => Some(Audience::Consumer(c)),
            (None, Some(g)) => Some(Audience::Group(g)),
            (Some(_), Some(_)) => return Err(corrupt("both consumer and group")),
        };
        Ok(Policy {
            service: row.service,
            key,
            limit: to_u64("limit", row.rate_limit)?,
            period: duration("period", row.period_ms)?,
            burst: to_u64("burst", row.burst)?,
            mode: Mode::from_name(&row.mode).ok_or_else(|| corrupt("mode"))?,
            scope: Scope::from_name(&row.scope).ok_or_else(|| corrupt("scope"))?,
            on_store_error: OnStoreError::from_name(&row.on_store_error)
                .ok_or_else(|| corrupt("on_store_error"))?,
            updated_version: to_u64("updated_version", row.updated_version)?,
            audience,
            name: row.name,
        })
    }
}

/// Every policy, ordered by name.
pub(super) async fn list(conn: &mut SqliteConnection) -> Result<Vec<Policy>, StoreError> {
    let rows: Vec<PolicyRow> = sqlx::query_as("SELECT * FROM policies ORDER BY name")
        .fetch_all(conn)
        .await?;
    rows.into_iter().map(Policy::try_from).collect()
}

/// Inserts or replaces a policy row.
pub(super) async fn upsert(conn: &mut SqliteConnection, p: &Policy) -> Result<(), StoreError> {
    let (kind, header) = match &p.key {
        KeySource::ClientIp => (KEY_CLIENT_IP, None),
        KeySource::Header(h) => (KEY_HEADER, Some(h.as_str())),
        KeySource::Consumer => (KEY_CONSUMER, None),
    };
    let (consumer, group) = match &p.audience {
        None => (None, None),
        Some(Audience::Consumer(c)) => (Some(c.as_str()), None),
        Some(Audience::Group(g)) => (None, Some(g.as_str())),
    };
    sqlx::query(
        "INSERT INTO policies (name, service, key_kind, key_header, rate_limit, period_ms, \
         burst, mode, updated_version, scope, on_store_error, consumer, consumer_group) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (name) DO UPDATE SET service = excluded.service, \
         key_kind = excluded.key_kind, key_header = excluded.key_header, \
         rate_limit = excluded.rate_limit, period_ms = excluded.period_ms, \
         burst = excluded.burst, mode = excluded.mode, \
         updated_version = excluded.updated_version, scope = excluded.scope, \
         on_store_error = excluded.on_store_error, consumer = excluded.consumer, \
         consumer_group = excluded.consumer_group",
    )
    .bind(&p.name)
    .bind(p.service.as_deref())
    .bind(kind)
    .bind(header)
    .bind(to_i64("limit", p.limit)?)
    .bind(millis("period", p.period)?)
    .bind(to_i64("burst", p.burst)?)
    .bind(p.mode.as_str())
    .bind(to_i64("updated_version", p.updated_version)?)
    .bind(p.scope.as_str())
    .bind(p.on_store_error.as_str())
    .bind(consumer)
    .bind(group)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes a policy row.
pub(super) async fn delete(conn: &mut SqliteConnection, name: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM policies WHERE name = ?")
        .bind(name)
        .execute(conn)
        .await?;
    Ok(())
}
