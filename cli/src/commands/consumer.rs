//! `gwctl consumer add|update|list|get|rm`, `gwctl consumer key add` and `gwctl key list|rm`:
//! consumers and their API keys. `consumer jwt …` is in `jwt`; `get` shows both.
//!
//! A key is printed once, by `consumer key add`; the control plane keeps only its hash, so
//! nothing else (`get`, `key list`, `-o json`) can show it again.
//!
//! JSON shapes (`-o json`):
//! ```json
//! {"name": "alice", "groups": ["gold"], "updated_version": 9,
//!  "api_keys": [{"id": "k-3f9a1c2b7d4e", "consumer": "alice", "last4": "9f0c",
//!                "created": "2026-11-30T20:00:00Z", "expires": null}],
//!  "jwt_credentials": [...]}
//! ```
//! `list` prints `{"config_version": N, "consumers": [...]}`, `add`/`update`
//! `{"action": "created"|"updated", "config_version": N, "consumer": {...}}`, `rm`
//! `{"action": "deleted", "config_version": N, "name": "alice"}`; `consumer key add`
//! `{"action": "created", "config_version": N, "key": "gwk_…", "api_key": {...}}`, `key list`
//! `{"config_version": N, "api_keys": [...]}`, `key rm` `{"action": "deleted", ..., "name": ID}`.
//! `jwt_credentials` entries are shaped as `consumer jwt list` prints them (see `jwt`).

use std::io::Write;

use gw_proto::v1 as pb;
use serde::Serialize;

use crate::args::{ConsumerCommand, ConsumerKeyCommand, KeyCommand};
use crate::client::AdminClient;
use crate::commands::deleted::Deleted;
use crate::commands::jwt::JwtView;
use crate::duration;
use crate::error::Error;
use crate::output::{OutputFormat, Render, Table, details, emit, or_dash};

/// Runs one `consumer` subcommand against the control plane.
pub async fn run(
    command: ConsumerCommand,
    client: &mut AdminClient,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), Error> {
    match command {
        ConsumerCommand::Add { name, groups } => {
            let request = pb::CreateConsumerRequest {
                consumer: Some(pb::Consumer {
                    name,
                    groups,
                    ..Default::default()
                }),
            };
            let response = client
                .api
                .create_consumer(request)
                .await
                .map_err(|s| client.call_error("CreateConsumer", s))?
                .into_inner();
            let changed = ConsumerChanged {
                action: "created",
                config_version: response.config_version,
                consumer: response.consumer.unwrap_or_default().into(),
            };
            emit(format, &changed, out)?;
        }
        ConsumerCommand::Update {
            name,
            groups,
            clear_groups: _, // `groups` is then empty, which is what it asks for
        } => {
            let request = pb::UpdateConsumerRequest {
                consumer: Some(pb::Consumer {
                    name,
                    groups,
                    ..Default::default()
                }),
            };
            let response = client
                .api
                .update_consumer(request)
                .await
                .map_err(|s| client.call_error("UpdateConsumer", s))?
                .into_inner();
            let changed = ConsumerChanged {
                action: "updated",
                config_version: response.config_version,
                consumer: response.consumer.unwrap_or_default().into(),
            };
            emit(format, &changed, out)?;
        }
        ConsumerCommand::List => {
            let response = client
                .api
                .list_consumers(pb::ListConsumersRequest {})
                .await
                .map_err(|s| client.call_error("ListConsumers", s))?
                .into_inner();
            let list = ConsumerList {
                config_version: response.config_version,
                consumers: response.consumers.into_iter().map(Into::into).collect(),
            };
            emit(format, &list, out)?;
        }
        ConsumerCommand::Get { name } => {
            let response = client
                .api
                .get_consumer(pb::GetConsumerRequest { name })
                .await
                .map_err(|s| client.call_error("GetConsumer", s))?
                .into_inner();
            emit(
                format,
                &ConsumerView::from(response.consumer.unwrap_or_default()),
                out,
            )?;
        }
        ConsumerCommand::Rm { name } => {
            let response = client
                .api
                .delete_consumer(pb::DeleteConsumerRequest { name: name.clone() })
                .await
                .map_err(|s| client.call_error("DeleteConsumer", s))?
                .into_inner();
            emit(
                format,
                &Deleted::new("consumer", name, response.config_version),
                out,
            )?;
        }
        ConsumerCommand::Key(ConsumerKeyCommand::Add { name, expires }) => {
            let request = pb::CreateApiKeyRequest {
                consumer: name,
                ttl: expires.map(duration::to_proto),
            };
            let response = client
                .api
                .create_api_key(request)
                .await
                .map_err(|s| client.call_error("CreateApiKey", s))?
                .into_inner();
            let created = KeyCreated {
                action: "created",
                config_version: response.config_version,
                key: response.key,
                api_key: response.api_key.unwrap_or_default().into(),
            };
            emit(format, &created, out)?;
        }
        ConsumerCommand::Jwt(command) => {
            crate::commands::jwt::run(command, client, format, out).await?;
        }
    }
    Ok(())
}

/// Runs one `key` subcommand against the control plane.
pub async fn run_key(
    command: KeyCommand,
    client: &mut AdminClient,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), Error> {
    match command {
        KeyCommand::List { consumer } => {
            let response = client
                .api
                .list_api_keys(pb::ListApiKeysRequest {
                    consumer: consumer.unwrap_or_default(),
                })
                .await
                .map_err(|s| client.call_error("ListApiKeys", s))?
                .into_inner();
            let list = KeyList {
                config_version: response.config_version,
                api_keys: response.api_keys.into_iter().map(Into::into).collect(),
            };
            emit(format, &list, out)?;
        }
        KeyCommand::Rm { id } => {
            let response = client
                .api
                .delete_api_key(pb::DeleteApiKeyRequest { id: id.clone() })
                .await
                .map_err(|s| client.call_error("DeleteApiKey", s))?
                .into_inner();
            emit(
                format,
                &Deleted::new("api key", id, response.config_version),
                out,
            )?;
        }
    }
    Ok(())
}

/// An API key as gwctl shows it: never the key, never its hash.
#[derive(Debug, Serialize)]
pub struct KeyView {
    id: String,
    consumer: String,
    last4: String,
    created: String,
    expires: Option<String>,
}

fn utc(t: Option<prost_types::Timestamp>) -> Option<String> {
    t.map(|t| gw_tls::cert::format_utc(t.seconds))
}

impl From<pb::ApiKey> for KeyView {
    fn from(k: pb::ApiKey) -> Self {
        let pb::ApiKey {
            id,
            consumer,
            hash: _, // never shown (AdminService does not send it anyway)
            last4,
            created,
            expires,
        } = k;
        KeyView {
            id,
            consumer,
            last4,
            created: utc(created).unwrap_or_else(|| "-".to_string()),
            expires: utc(expires),
        }
    }
}

/// A consumer as gwctl shows it.
#[derive(Debug, Serialize)]
pub struct ConsumerView {
    name: String,
    groups: Vec<String>,
    updated_version: u64,
    api_keys: Vec<KeyView>,
    jwt_credentials: Vec<JwtView>,
}

impl From<pb::Consumer> for ConsumerView {
    fn from(c: pb::Consumer) -> Self {
        let pb::Consumer {
            name,
            groups,
            api_keys,
            updated_version,
            jwt_credentials,
        } = c;
        ConsumerView {
            name,
            groups,
            updated_version,
            api_keys: api_keys.into_iter().map(Into::into).collect(),
            jwt_credentials: jwt_credentials.into_iter().map(Into::into).collect(),
        }
    }
}

impl Render for ConsumerView {
    fn human(&self) -> String {
        let keys = if self.api_keys.is_empty() {
            "none (gwctl consumer key add NAME)".to_string()
        } else {
            self.api_keys
                .iter()
                .map(|k| {
                    format!(
                        "{} ...{} created {}, expires {}",
                        k.id,
                        k.last4,
                        k.created,
                        k.expires.as_deref().unwrap_or("never")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let jwts = if self.jwt_credentials.is_empty() {
            "none (gwctl consumer jwt add NAME --issuer ...)".to_string()
        } else {
            self.jwt_credentials
                .iter()
                .map(JwtView::line)
                .collect::<Vec<_>>()
                .join("\n")
        };
        details(&[
            ("name", self.name.clone()),
            ("groups", or_dash(&self.groups.join(", "))),
            ("api keys", keys),
            ("jwt credentials", jwts),
            ("config version", self.updated_version.to_string()),
        ])
    }
}

/// `consumer list`.
#[derive(Debug, Serialize)]
pub struct ConsumerList {
    config_version: u64,
    consumers: Vec<ConsumerView>,
}

impl Render for ConsumerList {
    fn human(&self) -> String {
        let mut table = Table::new(&["NAME", "GROUPS", "KEYS", "JWTS", "VERSION"]);
        for c in &self.consumers {
            table.row(vec![
                c.name.clone(),
                or_dash(&c.groups.join(",")),
                c.api_keys.len().to_string(),
                c.jwt_credentials.len().to_string(),
                c.updated_version.to_string(),
            ]);
        }
        table.render()
    }
}

/// `consumer add` and `consumer update`.
#[derive(Debug, Serialize)]
pub struct ConsumerChanged {
    action: &'static str,
    config_version: u64,
    consumer: ConsumerView,
}

impl Render for ConsumerChanged {
    fn human(&self) -> String {
        format!(
            "consumer '{}' {} (config version {})\n",
            self.consumer.name, self.action, self.config_version
        )
    }
}

/// `consumer key add`: the one place a key is ever shown.
#[derive(Debug, Serialize)]
pub struct KeyCreated {
    action: &'static str,
    config_version: u64,
    key: String,
    api_key: KeyView,
}

impl Render for KeyCreated {
    fn human(&self) -> String {
        format!(
            "API key {} created for consumer '{}' (expires {}; config version {}):\n\n    {}\n\n\
             Store it now: it is not kept and cannot be shown again.\n",
            self.api_key.id,
            self.api_key.consumer,
            self.api_key.expires.as_deref().unwrap_or("never"),
            self.config_version,
            self.key
        )
    }
}

/// `key list`.
#[derive(Debug, Serialize)]
pub struct KeyList {
    config_version: u64,
    api_keys: Vec<KeyView>,
}

impl Render for KeyList {
    fn human(&self) -> String {
        let mut table = Table::new(&["ID", "CONSUMER", "CREATED", "EXPIRES", "LAST 4"]);
        for k in &self.api_keys {
            table.row(vec![
                k.id.clone(),
                k.consumer.clone(),
                k.created.clone(),
                k.expires.clone().unwrap_or_else(|| "never".to_string()),
                k.last4.clone(),
            ]);
        }
        table.render()
    }
}
