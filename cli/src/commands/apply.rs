//! `gwctl apply -f FILE [--dry-run] [--prune]` and `gwctl export`: the configuration as a
//! file under version control (see [`gw_config_file`] for the format).
//!
//! `apply` sends the whole file in one `ApplyConfig` call: the control plane validates all of
//! it and writes it as one config version, or writes nothing. Problems are reported at the line
//! of the file they come from. With `--dry-run` it prints the diff and writes nothing; the
//! process then exits 0 when nothing would change and 2 when something would (as
//! `terraform plan -detailed-exitcode`), see [`Outcome`].
//!
//! JSON shape of `apply` (`-o json`):
//! ```json
//! {"dry_run": false, "applied": true, "config_version": 7, "changes": 2,
//!  "services": {"added": ["web"], "changed": [{"name": "api", "fields": ["endpoints"]}],
//!               "removed": []},
//!  "policies": {...}, "certificates": {...}}
//! ```
//! `export` prints the file itself (YAML, or JSON with `-o json`).

use std::io::Write;

use gw_proto::v1 as pb;
use serde::Serialize;
use tonic::Code;
use tonic_types::StatusExt;

use crate::args::ApplyArgs;
use crate::client::AdminClient;
use crate::error::Error;
use crate::output::{Outcome, OutputFormat, Render, emit};
use gw_config_file::{File, Loaded, PolicyDoc, ServiceDoc};

/// Runs `apply`; returns whether a dry run found changes.
pub async fn apply(
    args: ApplyArgs,
    client: &mut AdminClient,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<Outcome, Error> {
    let ApplyArgs {
        file,
        dry_run,
        prune,
    } = args;
    let loaded = Loaded::read(&file).map_err(|e| Error::File(e.to_string()))?;
    let mut request = loaded.request.clone();
    request.dry_run = dry_run;
    request.prune = prune;
    if request.manage_certificates
        && !request.certificates.is_empty()
        && !crate::commands::cert::private_ok(client.address())
    {
        return Err(Error::Usage(format!(
            "{}: refusing to send private keys to {} over plaintext: use an https:// \
             control-plane URL",
            file.display(),
            client.address()
        )));
    }
    let response = match client.api.apply_config(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => return Err(apply_error(&loaded, client, status)),
    };
    let result = Applied::new(dry_run, response);
    emit(format, &result, out)?;
    Ok(if dry_run && result.changes > 0 {
        Outcome::Changes
    } else {
        Outcome::Done
    })
}

/// A refusal that lists field violations is reported at the file's lines.
fn apply_error(loaded: &Loaded, client: &AdminClient, status: tonic::Status) -> Error {
    if status.code() == Code::InvalidArgument
        && let Some(bad) = status.get_details_bad_request()
        && !bad.field_violations.is_empty()
    {
        let problems = bad
            .field_violations
            .into_iter()
            .map(|v| (v.field, v.description))
            .collect();
        return Error::File(loaded.at_lines(problems).to_string());
    }
    client.call_error("ApplyConfig", status)
}

/// What `apply` prints.
#[derive(Debug, Serialize)]
struct Applied {
    dry_run: bool,
    applied: bool,
    config_version: u64,
    /// Objects added, changed or removed, over every kind.
    changes: usize,
    services: Changes,
    policies: Changes,
    certificates: Changes,
}

#[derive(Debug, Default, Serialize)]
struct Changes {
    added: Vec<String>,
    changed: Vec<Changed>,
    removed: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Changed {
    name: String,
    fields: Vec<String>,
}

impl From<Option<pb::ObjectChanges>> for Changes {
    fn from(c: Option<pb::ObjectChanges>) -> Self {
        let c = c.unwrap_or_default();
        Changes {
            added: c.added,
            changed: c
                .changed
                .into_iter()
                .map(|c| Changed {
                    name: c.name,
                    fields: c.fields,
                })
                .collect(),
            removed: c.removed,
        }
    }
}

impl Changes {
    fn len(&self) -> usize {
        self.added.len() + self.changed.len() + self.removed.len()
    }
}

impl Applied {
    fn new(dry_run: bool, r: pb::ApplyConfigResponse) -> Self {
        let diff = r.diff.unwrap_or_default();
        let services = Changes::from(diff.services);
        let policies = Changes::from(diff.policies);
        let certificates = Changes::from(diff.certificates);
        Applied {
            dry_run,
            applied: r.applied,
            config_version: r.config_version,
            changes: services.len() + policies.len() + certificates.len(),
            services,
            policies,
            certificates,
        }
    }
}

impl Render for Applied {
    fn human(&self) -> String {
        let mut text = String::new();
        for (kind, c) in [
            ("service", &self.services),
            ("policy", &self.policies),
            ("certificate", &self.certificates),
        ] {
            for name in &c.added {
                text.push_str(&format!("+ {kind} {name}\n"));
            }
            for changed in &c.changed {
                let fields = changed.fields.join(", ");
                text.push_str(&format!("~ {kind} {} ({fields})\n", changed.name));
            }
            for name in &c.removed {
                text.push_str(&format!("- {kind} {name}\n"));
            }
        }
        let version = self.config_version;
        let summary = match (self.changes, self.dry_run) {
            (0, _) => format!("no changes (config version {version})"),
            (n, true) => {
                format!("dry run: {n} change(s), nothing applied (config version {version})")
            }
            (n, false) => format!("applied {n} change(s) as config version {version}"),
        };
        text.push_str(&summary);
        text.push('\n');
        text
    }
}

/// How many times `export` reads the configuration to get services and policies of one
/// version while it is being changed; a config that changes faster than that is exported as
/// last read.
const EXPORT_ATTEMPTS: u32 = 5;

/// Runs `export`: the configuration in force as an `apply` file.
pub async fn export(
    client: &mut AdminClient,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), Error> {
    // Two listings: a write between them would give a file that never was the config, so
    // read again until both come from one version.
    let mut attempts = 0;
    let (services, policies) = loop {
        let services = client
            .api
            .list_services(pb::ListServicesRequest {})
            .await
            .map_err(|s| client.call_error("ListServices", s))?
            .into_inner();
        let policies = client
            .api
            .list_policies(pb::ListPoliciesRequest {})
            .await
            .map_err(|s| client.call_error("ListPolicies", s))?
            .into_inner();
        attempts += 1;
        if services.config_version == policies.config_version || attempts == EXPORT_ATTEMPTS {
            break (services, policies);
        }
    };
    let certificates = client
        .api
        .list_certificates(pb::ListCertificatesRequest {})
        .await
        .map_err(|s| client.call_error("ListCertificates", s))?
        .into_inner()
        .certificates;
    let file = File {
        services: services
            .services
            .into_iter()
            .map(ServiceDoc::from_pb)
            .collect(),
        policies: policies
            .policies
            .into_iter()
            .map(PolicyDoc::from_pb)
            .collect(),
        certificates: None,
    };
    match format {
        OutputFormat::Json => emit(format, &file, out)?,
        OutputFormat::Table | OutputFormat::Yaml => {
            let mut header = format!(
                "# gw configuration, config version {}, written by `gwctl export`.\n",
                services.config_version
            );
            if !certificates.is_empty() {
                let names: Vec<&str> = certificates.iter().map(|c| c.name.as_str()).collect();
                header.push_str(&format!(
                    "# Not included: certificates ({}), whose private keys are never exported;\n\
                     # list them under `certificates:` with cert_chain_file and private_key_file.\n",
                    names.join(", ")
                ));
            }
            out.write_all(header.as_bytes())?;
            emit(OutputFormat::Yaml, &file, out)?;
        }
    }
    Ok(())
}

impl Render for File {
    fn human(&self) -> String {
        crate::output::yaml(self)
    }
}
