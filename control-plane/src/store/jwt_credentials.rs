//! SQL for the `jwt_credentials` table (see `migrations/0008_jwt_credentials.sql`): one row per
//! credential, exactly one key column set. A row that does not convert back is `Corrupt`,
//! never a panic.

use std::collections::BTreeMap;

use sqlx::SqliteConnection;

use crate::domain::Consumer;
use crate::domain::consumer::{HmacSecret, JwtAlgorithm, JwtCredential, JwtKey};
use crate::store::error::{StoreError, to_i64, to_u64};

/// A `jwt_credentials` row as stored.
#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    consumer: String,
    issuer: String,
    algorithm: Option<String>,
    hs256_secret: Option<Vec<u8>>,
    public_key_pem: Option<String>,
    jwks_url: Option<String>,
    audiences: String,
    claim: String,
    kid: Option<String>,
    created_at: i64,
}

/// Adds every stored credential to its consumer in `consumers` (by creation, then id).
pub(super) async fn load_into(
    conn: &mut SqliteConnection,
    consumers: &mut BTreeMap<String, Consumer>,
) -> Result<(), StoreError> {
    let rows: Vec<Row> =
        sqlx::query_as("SELECT * FROM jwt_credentials ORDER BY consumer, created_at, id")
            .fetch_all(conn)
            .await?;
    for row in rows {
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("JWT credential '{}': {what}", row.id));
        let algorithm = row
            .algorithm
            .as_deref()
            .map(|a| JwtAlgorithm::from_name(a).ok_or_else(|| corrupt("algorithm")))
            .transpose()?;
        let key = match (
            row.hs256_secret,
            row.public_key_pem,
            row.jwks_url,
            algorithm,
        ) {
            (Some(secret), None, None, Some(JwtAlgorithm::Hs256)) => {
                JwtKey::Hs256Secret(HmacSecret::new(secret))
            }
            (None, Some(pem), None, Some(algorithm)) if algorithm != JwtAlgorithm::Hs256 => {
                JwtKey::PublicKeyPem { pem, algorithm }
            }
            (None, None, Some(url), None) => JwtKey::JwksUrl(url),
            _ => return Err(corrupt("key columns")),
        };
        let audiences: Vec<String> =
            serde_json::from_str(&row.audiences).map_err(|_| corrupt("audiences"))?;
        let consumer = consumers
            .get_mut(&row.consumer)
            .ok_or_else(|| corrupt("consumer"))?;
        consumer.jwt_credentials.push(JwtCredential {
            created: to_u64("created_at", row.created_at)?,
            id: row.id,
            issuer: row.issuer,
            key,
            audiences,
            claim: row.claim,
            kid: row.kid,
        });
    }
    Ok(())
}

/// Inserts a credential row for `consumer`.
pub(super) async fn insert(
    conn: &mut SqliteConnection,
    consumer: &str,
    c: &JwtCredential,
) -> Result<(), StoreError> {
    let (secret, pem, url) = match &c.key {
        JwtKey::Hs256Secret(secret) => (Some(secret.expose()), None, None),
        JwtKey::PublicKeyPem { pem, .. } => (None, Some(pem.as_str()), None),
        JwtKey::JwksUrl(url) => (None, None, Some(url.as_str())),
    };
    let audiences =
        serde_json::to_string(&c.audiences).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    sqlx::query(
        "INSERT INTO jwt_credentials (id, consumer, issuer, algorithm, hs256_secret, \
         public_key_pem, jwks_url, audiences, claim, kid, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&c.id)
    .bind(consumer)
    .bind(&c.issuer)
    .bind(c.key.algorithm().map(JwtAlgorithm::name))
    .bind(secret)
    .bind(pem)
    .bind(url)
    .bind(audiences)
    .bind(&c.claim)
    .bind(c.kid.as_deref())
    .bind(to_i64("created_at", c.created)?)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes a credential row.
pub(super) async fn delete(conn: &mut SqliteConnection, id: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM jwt_credentials WHERE id = ?")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}
