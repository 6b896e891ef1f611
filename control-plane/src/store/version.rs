//! The single, monotonically increasing config version.

use sqlx::SqliteConnection;

use crate::store::error::{StoreError, to_u64};

/// Advances the version inside the caller's transaction and returns the new value.
pub(super) async fn bump(conn: &mut SqliteConnection) -> Result<u64, StoreError> {
    let v: i64 = sqlx::query_scalar(
        "UPDATE config_version SET version = version + 1 WHERE id = 1 RETURNING version",
    )
    .fetch_one(conn)
    .await?;
    to_u64("config version", v)
}

/// The committed version.
pub(super) async fn current(conn: &mut SqliteConnection) -> Result<u64, StoreError> {
    let v: i64 = sqlx::query_scalar("SELECT version FROM config_version WHERE id = 1")
        .fetch_one(conn)
        .await?;
    to_u64("config version", v)
}
