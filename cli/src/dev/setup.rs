//! Configuring the demo the way an operator would: gwctl's own `service` and `policy`
//! commands over gRPC, then waiting until the data plane has acknowledged the result.

use std::time::{Duration, Instant};

use crate::args::{
    KeyArg, OnStoreErrorArg, PolicyCommand, PolicySetArgs, ScopeArg, ScopeArgs, ServiceAddArgs,
    ServiceCommand, ServiceUpdateArgs, TuningArgs,
};
use crate::client::AdminClient;
use crate::commands;
use crate::error::DevError;
use crate::error::Error;
use crate::output::OutputFormat;

/// The demo service's name.
pub const SERVICE: &str = "demo";
/// The path prefix it takes (stripped before forwarding, so backends see `/data`).
pub const PREFIX: &str = "/api";
/// The demo rate-limit policy's name.
pub const POLICY: &str = "demo-per-ip";
/// Requests per [`POLICY_PERIOD`] per client IP: small, so the curl loop hits 429 on the 6th.
pub const POLICY_LIMIT: u64 = 5;
/// The policy's period.
pub const POLICY_PERIOD: Duration = Duration::from_secs(60);

/// How often the launcher asks whether the data plane has taken the demo config.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Registers service [`SERVICE`] over `endpoints` and policy [`POLICY`], returning the
/// confirmations gwctl printed for each (one line each).
///
/// With a `--database` that already holds the demo, the service is updated to the current
/// backends instead (`policy set` replaces in any case), so relaunching just works.
/// With `global`, the policy is GLOBAL (counted in the data plane's Redis).
pub async fn register(
    client: &mut AdminClient,
    endpoints: Vec<String>,
    global: bool,
) -> Result<String, Error> {
    let mut printed = Vec::new();
    let add = ServiceCommand::Add(ServiceAddArgs {
        name: SERVICE.to_string(),
        prefix: PREFIX.to_string(),
        endpoints: endpoints.clone(),
        hosts: Vec::new(),
        strip_prefix: true,
        allow_connect: false,
        tuning: TuningArgs::default(),
        https: Default::default(),
        auth: Default::default(),
    });
    match commands::service::run(add, client, OutputFormat::Table, &mut printed).await {
        Err(e) if e.is_already_exists() => {
            let update = ServiceCommand::Update(ServiceUpdateArgs {
                name: SERVICE.to_string(),
                prefix: Some(PREFIX.to_string()),
                endpoints,
                clear_endpoints: false,
                hosts: Vec::new(),
                clear_hosts: true,
                strip_prefix: true,
                no_strip_prefix: false,
                allow_connect: false,
                no_allow_connect: false,
                tuning: TuningArgs::default(),
                https: Default::default(),
                no_https_redirect: false,
                upstream_verify_system: false,
                auth: Default::default(),
            });
            commands::service::run(update, client, OutputFormat::Table, &mut printed).await?;
        }
        other => other?,
    }
    let policy = PolicyCommand::Set(PolicySetArgs {
        name: POLICY.to_string(),
        limit: POLICY_LIMIT,
        per: POLICY_PERIOD,
        burst: None,
        key: KeyArg::ClientIp,
        service: Some(SERVICE.to_string()),
        consumer: None,
        group: None,
        shadow: false,
        scope: ScopeArgs {
            scope: if global {
                ScopeArg::Global
            } else {
                ScopeArg::Node
            },
            on_store_error: OnStoreErrorArg::LocalShare,
        },
    });
    commands::policy::run(policy, client, OutputFormat::Table, &mut printed).await?;
    Ok(String::from_utf8_lossy(&printed).into_owned())
}

/// Polls `ListNodes` until node `node_id` is connected and has acknowledged the control
/// plane's current version, i.e. the data plane serves everything [`register`] did.
///
/// A NACK of that version, or no acknowledgement within `deadline`, is an error saying what
/// the node last reported.
pub async fn wait_until_served(
    client: &mut AdminClient,
    node_id: &str,
    deadline: Duration,
) -> Result<(), Error> {
    let start = Instant::now();
    loop {
        let response = commands::nodes::fetch(client).await?;
        let node = response.nodes.iter().find(|n| n.node_id == node_id);
        let state = match node {
            Some(n) if n.connected && n.acked_version >= response.config_version => return Ok(()),
            Some(n) if n.last_nack_version >= response.config_version => {
                return Err(DevError::Rejected {
                    version: n.last_nack_version,
                    reason: n.last_nack_error.clone(),
                }
                .into());
            }
            Some(n) if n.connected => format!(
                "it has acknowledged version {} of {}",
                n.acked_version, response.config_version
            ),
            Some(_) => "its config stream is closed".to_string(),
            None => "it has not connected".to_string(),
        };
        if start.elapsed() >= deadline {
            return Err(DevError::NotServing {
                waited: crate::duration::format(deadline),
                state,
            }
            .into());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
