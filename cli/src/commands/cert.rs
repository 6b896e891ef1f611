//! `gwctl cert add|list|rm`: the certificates data planes serve HTTPS with.
//!
//! `add` reads the chain and key files and checks them here first (PEM, key matches, not
//! expired), with the same checks as the control plane, so a mistake is named before anything
//! is sent. The key goes only to a control plane reached over TLS, or on loopback.
//!
//! JSON shape of a certificate (`-o json`); no key, ever:
//! ```json
//! {"name": "example", "sans": ["example.com", "*.example.com"],
//!  "not_after": "2027-01-31T12:00:00Z", "expires_soon": false, "updated_version": 7}
//! ```
//! `list` prints `{"config_version": N, "certificates": [...]}`, `add`
//! `{"action": "created"|"replaced", "config_version": N, "certificate": {...}}`, `rm`
//! `{"action": "deleted", "config_version": N, "name": "example"}`.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use gw_proto::v1 as pb;
use gw_tls::Secret;
use serde::Serialize;

use crate::args::CertCommand;
use crate::client::AdminClient;
use crate::commands::deleted::Deleted;
use crate::error::Error;
use crate::output::{Highlight, OutputFormat, Render, Table, emit};

/// A certificate that expires within this is flagged: two weeks leaves time to renew.
const EXPIRES_SOON: Duration = Duration::from_secs(14 * 24 * 3600);

/// Runs one `cert` subcommand against the control plane.
pub async fn run(
    command: CertCommand,
    client: &mut AdminClient,
    format: OutputFormat,
    highlight: Highlight,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let now = SystemTime::now();
    match command {
        CertCommand::Add { name, cert, key } => {
            let (chain, key) = read_pair(&name, &cert, &key)?;
            if !private_ok(client.address()) {
                return Err(Error::Usage(format!(
                    "refusing to send a private key to {} over plaintext: use an https:// \
                     control-plane URL",
                    client.address()
                )));
            }
            let request = pb::PutCertificateRequest {
                certificate: Some(pb::Certificate {
                    name,
                    cert_chain_pem: chain,
                    private_key_pem: key.expose().to_owned(),
                    ..Default::default()
                }),
            };
            let response = client
                .api
                .put_certificate(request)
                .await
                .map_err(|s| client.call_error("PutCertificate", s))?
                .into_inner();
            let changed = CertChanged {
                action: if response.created {
                    "created"
                } else {
                    "replaced"
                },
                config_version: response.config_version,
                certificate: CertView::new(response.certificate.unwrap_or_default(), now),
            };
            emit(format, &changed, out)?;
        }
        CertCommand::List => {
            let response = client
                .api
                .list_certificates(pb::ListCertificatesRequest {})
                .await
                .map_err(|s| client.call_error("ListCertificates", s))?
                .into_inner();
            let list = CertList {
                config_version: response.config_version,
                certificates: response
                    .certificates
                    .into_iter()
                    .map(|c| CertView::new(c, now))
                    .collect(),
                highlight,
            };
            emit(format, &list, out)?;
        }
        CertCommand::Rm { name } => {
            let response = client
                .api
                .delete_certificate(pb::DeleteCertificateRequest { name: name.clone() })
                .await
                .map_err(|s| client.call_error("DeleteCertificate", s))?
                .into_inner();
            emit(
                format,
                &Deleted::new("certificate", name, response.config_version),
                out,
            )?;
        }
    }
    Ok(())
}

/// Reads and checks the pair, naming the file and the problem.
fn read_pair(name: &str, cert: &Path, key: &Path) -> Result<(String, Secret), Error> {
    let usage = |flag: &str, path: &Path, e: &dyn std::fmt::Display| {
        Error::Usage(format!("--{flag} {}: {e}", path.display()))
    };
    let chain = std::fs::read_to_string(cert)
        .map_err(|e| usage("cert", cert, &crate::client::strip_os_error(&e.to_string())))?;
    let key_text =
        gw_tls::pem::read_secret(key).map_err(|e| Error::Usage(format!("--key: {e}")))?;
    gw_tls::cert::check(name, chain.as_bytes(), &key_text, SystemTime::now())
        .map_err(|e| Error::Usage(format!("certificate {e}")))?;
    Ok((chain, key_text))
}

/// Whether a private key may be sent to `address`: over TLS, or to loopback.
pub(crate) fn private_ok(address: &str) -> bool {
    if address.starts_with("https://") {
        return true;
    }
    let host = address
        .trim_start_matches("http://")
        .rsplit_once(':')
        .map_or(address, |(h, _)| h)
        .trim_matches(['[', ']']);
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A certificate as gwctl shows it.
#[derive(Debug, Serialize)]
pub struct CertView {
    name: String,
    sans: Vec<String>,
    not_after: String,
    expires_soon: bool,
    updated_version: u64,
}

impl CertView {
    fn new(c: pb::Certificate, now: SystemTime) -> Self {
        let pb::Certificate {
            name,
            cert_chain_pem: _,
            private_key_pem: _,
            sans,
            not_after,
            updated_version,
        } = c;
        let not_after = not_after.and_then(|t| SystemTime::try_from(t).ok());
        Self {
            name,
            sans,
            not_after: not_after.map_or_else(
                || "-".to_owned(),
                |t| gw_tls::cert::format_utc(gw_tls::cert::unix_seconds(t)),
            ),
            expires_soon: not_after.is_none_or(|t| t < now + EXPIRES_SOON),
            updated_version,
        }
    }
}

/// `cert list`.
#[derive(Debug, Serialize)]
pub struct CertList {
    config_version: u64,
    certificates: Vec<CertView>,
    #[serde(skip)]
    highlight: Highlight,
}

impl Render for CertList {
    fn human(&self) -> String {
        let mut table = Table::new(&["NAME", "SANS", "EXPIRES", "VERSION"]);
        for c in &self.certificates {
            table.row(vec![
                c.name.clone(),
                c.sans.join(","),
                self.highlight.flag(&c.not_after, c.expires_soon),
                c.updated_version.to_string(),
            ]);
        }
        table.render()
    }
}

/// `cert add`.
#[derive(Debug, Serialize)]
pub struct CertChanged {
    action: &'static str,
    config_version: u64,
    certificate: CertView,
}

impl Render for CertChanged {
    fn human(&self) -> String {
        format!(
            "certificate '{}' {} for {} (expires {}; config version {})\n",
            self.certificate.name,
            self.action,
            self.certificate.sans.join(", "),
            self.certificate.not_after,
            self.config_version
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_go_only_over_tls_or_loopback() {
        for ok in [
            "https://cp.example:50051",
            "http://127.0.0.1:50051",
            "http://localhost:1",
            "http://[::1]:50051",
        ] {
            assert!(private_ok(ok), "{ok}");
        }
        for refused in ["http://10.0.0.5:50051", "http://cp.example:50051"] {
            assert!(!private_ok(refused), "{refused}");
        }
    }

    #[test]
    fn expiry_within_two_weeks_is_flagged() {
        let now = SystemTime::now();
        let cert = |days: u64| pb::Certificate {
            name: "c".into(),
            not_after: Some((now + Duration::from_secs(days * 86_400)).into()),
            ..Default::default()
        };
        assert!(CertView::new(cert(13), now).expires_soon);
        assert!(!CertView::new(cert(15), now).expires_soon);
        let list = CertList {
            config_version: 1,
            certificates: vec![CertView::new(cert(3), now)],
            highlight: Highlight::Plain,
        };
        assert!(list.human().contains("! "), "{}", list.human());
    }
}
