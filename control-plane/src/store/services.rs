//! SQL for the `services` table. Lists (hosts, endpoints) are stored as JSON arrays.

use sqlx::SqliteConnection;

use crate::domain::consumer::{Auth, AuthMethod, KeySource};
use crate::domain::{
    Endpoint, HealthCheck, LoadBalancing, Probe, Route, Service, Timeouts, UpstreamTls,
};
use crate::store::error::{StoreError, duration, millis, to_i64, to_u64};

/// A `services` row as stored.
#[derive(sqlx::FromRow)]
struct ServiceRow {
    name: String,
    path_prefix: String,
    hosts: String,
    strip_prefix: bool,
    endpoints: String,
    health_path: String,
    health_disabled: bool,
    health_interval_ms: i64,
    health_timeout_ms: i64,
    unhealthy_threshold: i64,
    healthy_threshold: i64,
    connect_timeout_ms: i64,
    request_timeout_ms: i64,
    request_body_timeout_ms: Option<i64>,
    response_body_timeout_ms: Option<i64>,
    load_balancing: String,
    created_version: i64,
    updated_version: i64,
    https_redirect: bool,
    upstream_ca_pem: String,
    upstream_tls_insecure: bool,
    allow_connect: bool,
    auth: String,
}

impl TryFrom<ServiceRow> for Service {
    type Error = StoreError;

    fn try_from(row: ServiceRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("service '{}': {what}", row.name));
        let hosts: Vec<String> = serde_json::from_str(&row.hosts).map_err(|_| corrupt("hosts"))?;
        let raw: Vec<String> =
            serde_json::from_str(&row.endpoints).map_err(|_| corrupt("endpoints"))?;
        let endpoints = raw
            .iter()
            .map(|e| Endpoint::parse(e))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| corrupt("endpoints"))?;
        let threshold = |v: i64| u32::try_from(v).map_err(|_| corrupt("health threshold"));
        let load_balancing = LoadBalancing::from_name(&row.load_balancing)
            .ok_or_else(|| corrupt("load_balancing"))?;
        Ok(Service {
            route: Route {
                path_prefix: row.path_prefix.clone(),
                hosts,
                strip_prefix: row.strip_prefix,
            },
            endpoints,
            health_check: HealthCheck {
                probe: match (row.health_disabled, row.health_path.as_str()) {
                    (true, "") => Probe::Disabled,
                    (false, "") => Probe::Tcp,
                    (false, path) => Probe::Http(path.to_owned()),
                    (true, _) => return Err(corrupt("health check disabled with a path")),
                },
                interval: duration("health interval", row.health_interval_ms)?,
                timeout: duration("health timeout", row.health_timeout_ms)?,
                unhealthy_threshold: threshold(row.unhealthy_threshold)?,
                healthy_threshold: threshold(row.healthy_threshold)?,
            },
            timeouts: Timeouts {
                connect: duration("connect timeout", row.connect_timeout_ms)?,
                request: duration("request timeout", row.request_timeout_ms)?,
                request_body: row
                    .request_body_timeout_ms
                    .map(|ms| duration("request body timeout", ms))
                    .transpose()?,
                response_body: row
                    .response_body_timeout_ms
                    .map(|ms| duration("response body timeout", ms))
                    .transpose()?,
            },
            load_balancing,
            created_version: to_u64("created_version", row.created_version)?,
            updated_version: to_u64("updated_version", row.updated_version)?,
            https_redirect: row.https_redirect,
            allow_connect: row.allow_connect,
            auth: auth_from_row(&row.auth).ok_or_else(|| corrupt("auth"))?,
            upstream_tls: UpstreamTls {
                ca_bundle_pem: row.upstream_ca_pem,
                insecure_skip_verify: row.upstream_tls_insecure,
            },
            name: row.name,
        })
    }
}

/// The stored form of a service's auth: '' when open, else JSON of name lists.
#[derive(serde::Serialize, serde::Deserialize)]
struct AuthRow {
    methods: Vec<String>,
    allowed_groups: Vec<String>,
    key_sources: Vec<String>,
}

fn auth_to_row(auth: &Auth) -> Result<String, StoreError> {
    if auth.is_open() {
        return Ok(String::new());
    }
    let row = AuthRow {
        methods: auth.methods.iter().map(|m| m.as_str().to_owned()).collect(),
        allowed_groups: auth.allowed_groups.clone(),
        key_sources: auth
            .key_sources
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect(),
    };
    serde_json::to_string(&row).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn auth_from_row(text: &str) -> Option<Auth> {
    if text.is_empty() {
        return Some(Auth::default());
    }
    let row: AuthRow = serde_json::from_str(text).ok()?;
    Some(Auth {
        methods: row
            .methods
            .iter()
            .map(|m| AuthMethod::from_name(m))
            .collect::<Option<_>>()?,
        allowed_groups: row.allowed_groups,
        key_sources: row
            .key_sources
            .iter()
            .map(|s| KeySource::from_name(s))
            .collect::<Option<_>>()?,
    })
}

/// The JSON text stored for a list of strings.
fn json_list<T: ToString>(items: &[T]) -> Result<String, StoreError> {
    let strings: Vec<String> = items.iter().map(ToString::to_string).collect();
    serde_json::to_string(&strings).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Every service, ordered by name.
pub(super) async fn list(conn: &mut SqliteConnection) -> Result<Vec<Service>, StoreError> {
    let rows: Vec<ServiceRow> = sqlx::query_as("SELECT * FROM services ORDER BY name")
        .fetch_all(conn)
        .await?;
    rows.into_iter().map(Service::try_from).collect()
}

/// Inserts a new service row.
pub(super) async fn insert(conn: &mut SqliteConnection, s: &Service) -> Result<(), StoreError> {
    write(
        conn,
        "INSERT INTO services (path_prefix, hosts, strip_prefix, endpoints, health_path, \
         health_interval_ms, health_timeout_ms, unhealthy_threshold, healthy_threshold, \
         connect_timeout_ms, request_timeout_ms, load_balancing, created_version, \
         updated_version, health_disabled, https_redirect, upstream_ca_pem, \
         upstream_tls_insecure, request_body_timeout_ms, response_body_timeout_ms, \
         allow_connect, auth, name) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        s,
    )
    .await
}

/// Overwrites an existing service row (selected by name).
pub(super) async fn update(conn: &mut SqliteConnection, s: &Service) -> Result<(), StoreError> {
    write(
        conn,
        "UPDATE services SET path_prefix = ?, hosts = ?, strip_prefix = ?, endpoints = ?, \
         health_path = ?, health_interval_ms = ?, health_timeout_ms = ?, \
         unhealthy_threshold = ?, healthy_threshold = ?, connect_timeout_ms = ?, \
         request_timeout_ms = ?, load_balancing = ?, created_version = ?, \
         updated_version = ?, health_disabled = ?, https_redirect = ?, upstream_ca_pem = ?, \
         upstream_tls_insecure = ?, request_body_timeout_ms = ?, response_body_timeout_ms = ?, \
         allow_connect = ?, auth = ? WHERE name = ?",
        s,
    )
    .await
}

/// Binds every column in the order both statements above list them.
async fn write(conn: &mut SqliteConnection, sql: &str, s: &Service) -> Result<(), StoreError> {
    let done = sqlx::query(sql)
        .bind(&s.route.path_prefix)
        .bind(json_list(&s.route.hosts)?)
        .bind(s.route.strip_prefix)
        .bind(json_list(&s.endpoints)?)
        .bind(s.health_check.probe.path())
        .bind(millis("health interval", s.health_check.interval)?)
        .bind(millis("health timeout", s.health_check.timeout)?)
        .bind(i64::from(s.health_check.unhealthy_threshold))
        .bind(i64::from(s.health_check.healthy_threshold))
        .bind(millis("connect timeout", s.timeouts.connect)?)
        .bind(millis("request timeout", s.timeouts.request)?)
        .bind(s.load_balancing.as_str())
        .bind(to_i64("created_version", s.created_version)?)
        .bind(to_i64("updated_version", s.updated_version)?)
        .bind(s.health_check.probe == Probe::Disabled)
        .bind(s.https_redirect)
        .bind(&s.upstream_tls.ca_bundle_pem)
        .bind(s.upstream_tls.insecure_skip_verify)
        .bind(
            s.timeouts
                .request_body
                .map(|d| millis("request body timeout", d))
                .transpose()?,
        )
        .bind(
            s.timeouts
                .response_body
                .map(|d| millis("response body timeout", d))
                .transpose()?,
        )
        .bind(s.allow_connect)
        .bind(auth_to_row(&s.auth)?)
        .bind(&s.name)
        .execute(conn)
        .await?;
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!(
            "service '{}' row was not written",
            s.name
        )))
    }
}

/// Deletes a service row.
pub(super) async fn delete(conn: &mut SqliteConnection, name: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM services WHERE name = ?")
        .bind(name)
        .execute(conn)
        .await?;
    Ok(())
}
