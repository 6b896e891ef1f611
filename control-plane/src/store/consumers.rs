//! SQL for the `consumers` and `api_keys` tables. Keys are stored as hashes only (see
//! `domain::consumer`); a damaged row is `Corrupt`, never a panic. JWT credentials have their
//! own module (`jwt_credentials`); [`list`] reads them too.

use std::collections::BTreeMap;

use sqlx::SqliteConnection;

use crate::domain::{ApiKey, Consumer, KeyHash};
use crate::store::error::{StoreError, to_i64, to_u64};

/// A `consumers` row as stored.
#[derive(sqlx::FromRow)]
struct ConsumerRow {
    name: String,
    groups: String,
    updated_version: i64,
}

/// An `api_keys` row as stored.
#[derive(sqlx::FromRow)]
struct ApiKeyRow {
    id: String,
    consumer: String,
    hash: Vec<u8>,
    last4: String,
    created_at: i64,
    expires_at: Option<i64>,
}

/// Every consumer with its keys and JWT credentials, ordered by name (keys and credentials by
/// creation, then id).
pub(super) async fn list(conn: &mut SqliteConnection) -> Result<Vec<Consumer>, StoreError> {
    let rows: Vec<ConsumerRow> = sqlx::query_as("SELECT * FROM consumers ORDER BY name")
        .fetch_all(&mut *conn)
        .await?;
    let keys: Vec<ApiKeyRow> =
        sqlx::query_as("SELECT * FROM api_keys ORDER BY consumer, created_at, id")
            .fetch_all(&mut *conn)
            .await?;
    let mut consumers = BTreeMap::new();
    for row in rows {
        let groups: Vec<String> = serde_json::from_str(&row.groups)
            .map_err(|_| StoreError::Corrupt(format!("consumer '{}': groups", row.name)))?;
        consumers.insert(
            row.name.clone(),
            Consumer {
                updated_version: to_u64("updated_version", row.updated_version)?,
                name: row.name,
                groups,
                api_keys: Vec::new(),
                jwt_credentials: Vec::new(),
            },
        );
    }
    for key in keys {
        let corrupt = || StoreError::Corrupt(format!("api key '{}'", key.id));
        let hash: [u8; 32] = key.hash.as_slice().try_into().map_err(|_| corrupt())?;
        let consumer = consumers.get_mut(&key.consumer).ok_or_else(corrupt)?;
        consumer.api_keys.push(ApiKey {
            hash: KeyHash(hash),
            created: to_u64("created_at", key.created_at)?,
            expires: key
                .expires_at
                .map(|e| to_u64("expires_at", e))
                .transpose()?,
            last4: key.last4,
            id: key.id,
        });
    }
    super::jwt_credentials::load_into(conn, &mut consumers).await?;
    Ok(consumers.into_values().collect())
}

/// Inserts a consumer row (without keys).
pub(super) async fn insert(conn: &mut SqliteConnection, c: &Consumer) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO consumers (name, groups, updated_version) VALUES (?, ?, ?)")
        .bind(&c.name)
        .bind(groups_json(&c.groups)?)
        .bind(to_i64("updated_version", c.updated_version)?)
        .execute(conn)
        .await?;
    Ok(())
}

/// Updates a consumer row's groups and version.
pub(super) async fn update(conn: &mut SqliteConnection, c: &Consumer) -> Result<(), StoreError> {
    sqlx::query("UPDATE consumers SET groups = ?, updated_version = ? WHERE name = ?")
        .bind(groups_json(&c.groups)?)
        .bind(to_i64("updated_version", c.updated_version)?)
        .bind(&c.name)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes a consumer row; its keys go with it (ON DELETE CASCADE).
pub(super) async fn delete(conn: &mut SqliteConnection, name: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM consumers WHERE name = ?")
        .bind(name)
        .execute(conn)
        .await?;
    Ok(())
}

/// Inserts a key row for `consumer`.
pub(super) async fn insert_key(
    conn: &mut SqliteConnection,
    consumer: &str,
    key: &ApiKey,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO api_keys (id, consumer, hash, last4, created_at, expires_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&key.id)
    .bind(consumer)
    .bind(key.hash.0.as_slice())
    .bind(&key.last4)
    .bind(to_i64("created_at", key.created)?)
    .bind(key.expires.map(|e| to_i64("expires_at", e)).transpose()?)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes a key row.
pub(super) async fn delete_key(conn: &mut SqliteConnection, id: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM api_keys WHERE id = ?")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

fn groups_json(groups: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(groups).map_err(|e| StoreError::Corrupt(e.to_string()))
}
