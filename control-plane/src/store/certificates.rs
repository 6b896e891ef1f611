//! SQL for the `certificates` table. Rows are checked again when loaded (a certificate that
//! expired since it was added still loads: the data planes keep serving it, and `gwctl cert
//! list` flags it), so a damaged row is `Corrupt` rather than a panic.

use gw_tls::Secret;
use sqlx::SqliteConnection;

use crate::domain::Certificate;
use crate::store::error::{StoreError, to_i64, to_u64};

/// A `certificates` row as stored.
#[derive(sqlx::FromRow)]
struct CertificateRow {
    name: String,
    cert_chain_pem: String,
    private_key_pem: String,
    updated_version: i64,
}

impl TryFrom<CertificateRow> for Certificate {
    type Error = StoreError;

    fn try_from(row: CertificateRow) -> Result<Self, StoreError> {
        let corrupt = || StoreError::Corrupt(format!("certificate '{}'", row.name));
        let chain =
            gw_tls::pem::certs(&row.name, row.cert_chain_pem.as_bytes()).map_err(|_| corrupt())?;
        let info = gw_tls::cert::inspect(&row.name, &chain[0]).map_err(|_| corrupt())?;
        Ok(Certificate {
            updated_version: to_u64("updated_version", row.updated_version)?,
            private_key_pem: Secret::new(row.private_key_pem),
            cert_chain_pem: row.cert_chain_pem,
            name: row.name,
            info,
        })
    }
}

/// Every certificate, ordered by name.
pub(super) async fn list(conn: &mut SqliteConnection) -> Result<Vec<Certificate>, StoreError> {
    let rows: Vec<CertificateRow> = sqlx::query_as("SELECT * FROM certificates ORDER BY name")
        .fetch_all(conn)
        .await?;
    rows.into_iter().map(Certificate::try_from).collect()
}

/// Inserts or replaces a certificate row.
pub(super) async fn upsert(conn: &mut SqliteConnection, c: &Certificate) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO certificates (name, cert_chain_pem, private_key_pem, updated_version) \
         VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET \
         cert_chain_pem = excluded.cert_chain_pem, private_key_pem = excluded.private_key_pem, \
         updated_version = excluded.updated_version",
    )
    .bind(&c.name)
    .bind(&c.cert_chain_pem)
    .bind(c.private_key_pem.expose())
    .bind(to_i64("updated_version", c.updated_version)?)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes a certificate row.
pub(super) async fn delete(conn: &mut SqliteConnection, name: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM certificates WHERE name = ?")
        .bind(name)
        .execute(conn)
        .await?;
    Ok(())
}
