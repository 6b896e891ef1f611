//! `gwctl policy set|list|rm`: rate-limit policies.
//!
//! JSON shape of a policy (`-o json`), stable for scripts; `key` and `period` use the flag
//! syntax, `service` is null for a policy that applies to every service:
//! ```json
//! {"name": "per-ip", "service": "demo", "key": "ip", "limit": 100, "period": "1m",
//!  "burst": 100, "mode": "enforce", "scope": "global", "on_store_error": "local-share",
//!  "updated_version": 9}
//! ```
//! A policy scoped to one consumer or group also has `"consumer": "alice"` or
//! `"group": "gold"`.
//! `list` prints `{"config_version": N, "policies": [...]}`, `set`
//! `{"action": "created"|"updated", "config_version": N, "policy": {...}}`, `rm`
//! `{"action": "deleted", "config_version": N, "name": "per-ip"}`.

use std::io::Write;

use gw_proto::v1 as pb;
use serde::Serialize;

use crate::args::{KeyArg, OnStoreErrorArg, PolicyCommand, PolicySetArgs, ScopeArg};
use crate::client::AdminClient;
use crate::commands::deleted::Deleted;
use crate::duration;
use crate::error::Error;
use crate::output::{OutputFormat, Render, Table, emit};

/// Runs one `policy` subcommand against the control plane.
pub async fn run(
    command: PolicyCommand,
    client: &mut AdminClient,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), Error> {
    match command {
        PolicyCommand::Set(args) => {
            let request = pb::PutPolicyRequest {
                policy: Some(policy_from(args)),
            };
            let response = client
                .api
                .put_policy(request)
                .await
                .map_err(|s| client.error(s))?
                .into_inner();
            let changed = PolicyChanged {
                action: if response.created {
                    "created"
                } else {
                    "updated"
                },
                config_version: response.config_version,
                policy: PolicyView::from(response.policy.unwrap_or_default()),
            };
            emit(format, &changed, out)?;
        }
        PolicyCommand::List => {
            let response = client
                .api
                .list_policies(pb::ListPoliciesRequest {})
                .await
                .map_err(|s| client.error(s))?
                .into_inner();
            let list = PolicyList {
                config_version: response.config_version,
                policies: response
                    .policies
                    .into_iter()
                    .map(PolicyView::from)
                    .collect(),
            };
            emit(format, &list, out)?;
        }
        PolicyCommand::Rm { name } => {
            let response = client
                .api
                .delete_policy(pb::DeletePolicyRequest { name: name.clone() })
                .await
                .map_err(|s| client.error(s))?
                .into_inner();
            emit(
                format,
                &Deleted::new("policy", name, response.config_version),
                out,
            )?;
        }
    }
    Ok(())
}

/// The whole policy `set` sends; flags not given take the API's defaults.
fn policy_from(args: PolicySetArgs) -> pb::Policy {
    let PolicySetArgs {
        name,
        limit,
        per,
        burst,
        key,
        service,
        consumer,
        group,
        shadow,
        scope,
    } = args;
    let source = match key {
        KeyArg::ClientIp => pb::rate_limit_key::Source::ClientIp(pb::ClientIpKey {}),
        KeyArg::Header(header) => pb::rate_limit_key::Source::Header(header),
        KeyArg::Consumer => pb::rate_limit_key::Source::Consumer(pb::ConsumerKey {}),
    };
    let mode = if shadow {
        pb::PolicyMode::Shadow
    } else {
        pb::PolicyMode::Enforce
    };
    pb::Policy {
        name,
        service: service.unwrap_or_default(),
        key: Some(pb::RateLimitKey {
            source: Some(source),
        }),
        limit,
        period: Some(duration::to_proto(per)),
        // 0 asks the control plane for its default (burst = limit).
        burst: burst.unwrap_or(0),
        mode: mode as i32,
        updated_version: 0,
        scope: match scope.scope {
            ScopeArg::Node => pb::PolicyScope::Node,
            ScopeArg::Global => pb::PolicyScope::Global,
        } as i32,
        on_store_error: match scope.on_store_error {
            OnStoreErrorArg::LocalShare => pb::StoreErrorAction::LocalShare,
            OnStoreErrorArg::Allow => pb::StoreErrorAction::Allow,
            OnStoreErrorArg::Deny => pb::StoreErrorAction::Deny,
        } as i32,
        consumer: consumer.unwrap_or_default(),
        group: group.unwrap_or_default(),
    }
}

/// A policy as gwctl shows it (the JSON shape in the module docs).
#[derive(Debug, Serialize)]
pub struct PolicyView {
    name: String,
    service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    consumer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    key: String,
    limit: u64,
    period: String,
    burst: u64,
    mode: String,
    scope: String,
    on_store_error: String,
    updated_version: u64,
}

impl From<pb::Policy> for PolicyView {
    fn from(policy: pb::Policy) -> Self {
        let pb::Policy {
            name,
            service,
            key,
            limit,
            period,
            burst,
            mode,
            updated_version,
            scope,
            on_store_error,
            consumer,
            group,
        } = policy;
        let key = match key.and_then(|k| k.source) {
            // Unset means client IP, as for a policy stored before keys had options.
            None | Some(pb::rate_limit_key::Source::ClientIp(_)) => "ip".to_string(),
            Some(pb::rate_limit_key::Source::Header(h)) => format!("header:{h}"),
            Some(pb::rate_limit_key::Source::Consumer(_)) => "consumer".to_string(),
        };
        let mode = match pb::PolicyMode::try_from(mode) {
            Ok(pb::PolicyMode::Unspecified | pb::PolicyMode::Enforce) => "enforce".to_string(),
            Ok(pb::PolicyMode::Shadow) => "shadow".to_string(),
            Err(_) => format!("unknown({mode})"),
        };
        let scope = match pb::PolicyScope::try_from(scope) {
            Ok(pb::PolicyScope::Unspecified | pb::PolicyScope::Node) => "node".to_string(),
            Ok(pb::PolicyScope::Global) => "global".to_string(),
            Err(_) => format!("unknown({scope})"),
        };
        let on_store_error = match pb::StoreErrorAction::try_from(on_store_error) {
            Ok(pb::StoreErrorAction::Unspecified | pb::StoreErrorAction::LocalShare) => {
                "local-share".to_string()
            }
            Ok(pb::StoreErrorAction::Allow) => "allow".to_string(),
            Ok(pb::StoreErrorAction::Deny) => "deny".to_string(),
            Err(_) => format!("unknown({on_store_error})"),
        };
        PolicyView {
            name,
            service: (!service.is_empty()).then_some(service),
            consumer: (!consumer.is_empty()).then_some(consumer),
            group: (!group.is_empty()).then_some(group),
            key,
            limit,
            period: duration::format_proto(period.as_ref()),
            burst,
            mode,
            scope,
            on_store_error,
            updated_version,
        }
    }
}

/// `policy list`.
#[derive(Debug, Serialize)]
pub struct PolicyList {
    config_version: u64,
    policies: Vec<PolicyView>,
}

impl Render for PolicyList {
    fn human(&self) -> String {
        let mut table = Table::new(&[
            "NAME", "SERVICE", "KEY", "LIMIT", "BURST", "MODE", "SCOPE", "VERSION",
        ]);
        for p in &self.policies {
            table.row(vec![
                p.name.clone(),
                p.service.clone().unwrap_or_else(|| "*".to_string()),
                match (&p.consumer, &p.group) {
                    (Some(c), _) => format!("{} (consumer {c})", p.key),
                    (None, Some(g)) => format!("{} (group {g})", p.key),
                    (None, None) => p.key.clone(),
                },
                format!("{}/{}", p.limit, p.period),
                p.burst.to_string(),
                p.mode.clone(),
                // What happens without Redis matters only for a global policy.
                if p.scope == "global" {
                    format!("global ({})", p.on_store_error)
                } else {
                    p.scope.clone()
                },
                p.updated_version.to_string(),
            ]);
        }
        table.render()
    }
}

/// `policy set`.
#[derive(Debug, Serialize)]
pub struct PolicyChanged {
    action: &'static str,
    config_version: u64,
    policy: PolicyView,
}

impl Render for PolicyChanged {
    fn human(&self) -> String {
        format!(
            "policy '{}' {} (config version {})\n",
            self.policy.name, self.action, self.config_version
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn args(key: KeyArg, burst: Option<u64>, service: Option<&str>, shadow: bool) -> PolicySetArgs {
        PolicySetArgs {
            name: "p".into(),
            limit: 5,
            per: Duration::from_secs(60),
            burst,
            key,
            service: service.map(str::to_string),
            consumer: None,
            group: None,
            shadow,
            scope: crate::args::ScopeArgs {
                scope: if shadow {
                    ScopeArg::Global
                } else {
                    ScopeArg::Node
                },
                on_store_error: OnStoreErrorArg::Deny,
            },
        }
    }

    #[test]
    fn set_flags_become_the_whole_policy() {
        let p = policy_from(args(KeyArg::ClientIp, None, None, false));
        assert_eq!(p.name, "p");
        assert_eq!(p.limit, 5);
        assert_eq!(
            p.period,
            Some(prost_types::Duration {
                seconds: 60,
                nanos: 0
            })
        );
        assert_eq!(p.burst, 0);
        assert_eq!(p.service, "");
        assert_eq!(p.mode, pb::PolicyMode::Enforce as i32);
        assert_eq!(p.scope, pb::PolicyScope::Node as i32);
        assert!(matches!(
            p.key.unwrap().source,
            Some(pb::rate_limit_key::Source::ClientIp(_))
        ));

        let p = policy_from(args(
            KeyArg::Header("x-api-key".into()),
            Some(9),
            Some("demo"),
            true,
        ));
        assert_eq!(p.burst, 9);
        assert_eq!(p.service, "demo");
        assert_eq!(p.mode, pb::PolicyMode::Shadow as i32);
        assert_eq!(p.scope, pb::PolicyScope::Global as i32);
        assert_eq!(p.on_store_error, pb::StoreErrorAction::Deny as i32);
        assert_eq!(
            p.key.unwrap().source,
            Some(pb::rate_limit_key::Source::Header("x-api-key".into()))
        );
    }

    #[test]
    fn view_round_trips_what_set_sends() {
        let mut stored = policy_from(args(
            KeyArg::Header("x-api-key".into()),
            Some(9),
            Some("demo"),
            true,
        ));
        stored.updated_version = 4;
        let json = serde_json::to_value(PolicyView::from(stored)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "name": "p", "service": "demo", "key": "header:x-api-key", "limit": 5,
                "period": "1m", "burst": 9, "mode": "shadow", "scope": "global",
                "on_store_error": "deny", "updated_version": 4
            })
        );
        let global = PolicyView::from(pb::Policy::default());
        assert_eq!(global.service, None);
        assert_eq!(global.key, "ip");
        assert_eq!(global.mode, "enforce");
        assert_eq!(
            (global.scope.as_str(), global.on_store_error.as_str()),
            ("node", "local-share")
        );
    }

    #[test]
    fn list_table_and_confirmation() {
        let list = PolicyList {
            config_version: 3,
            policies: vec![
                PolicyView::from(policy_from(args(KeyArg::ClientIp, None, None, false))),
                PolicyView::from(pb::Policy {
                    name: "api-keys".into(),
                    ..policy_from(args(
                        KeyArg::Header("x-api-key".into()),
                        Some(20),
                        Some("demo"),
                        true,
                    ))
                }),
            ],
        };
        assert_eq!(
            list.human(),
            "NAME      SERVICE  KEY               LIMIT  BURST  MODE     SCOPE          VERSION\n\
             p         *        ip                5/1m   0      enforce  node           0\n\
             api-keys  demo     header:x-api-key  5/1m   20     shadow   global (deny)  0\n"
        );
        let changed = PolicyChanged {
            action: "updated",
            config_version: 12,
            policy: PolicyView::from(pb::Policy {
                name: "p".into(),
                ..Default::default()
            }),
        };
        assert_eq!(changed.human(), "policy 'p' updated (config version 12)\n");
    }
}
