//! How this node proves itself to the control plane, and how it checks the control plane:
//! TLS for `https://` URLs (the control plane's certificate verified against `--ca-cert`, or
//! the system roots), a client certificate for mTLS (its DNS names are the node ids the
//! control plane lets this node use), and/or the node token (sent only over TLS).
//!
//! The files are read again for every connection, so a rotated client certificate is used
//! from the next reconnect on; [`Credentials::files`] lets the sync loop notice a rotation
//! and reconnect at once.

use std::path::PathBuf;

use gw_tls::Secret;
use gw_tls::files::FileSet;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// The node's credentials towards the control plane; all optional.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// CA certificates (PEM) that the control plane's certificate must chain to; `None`: the
    /// system's trust store.
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM chain) for mTLS.
    pub client_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub client_key: Option<PathBuf>,
    /// The shared node token, sent as `authorization: Bearer <token>`.
    pub node_token: Option<Secret>,
}

impl Credentials {
    /// What is wrong with these credentials for a control plane reached over TLS (`tls`) or
    /// not: every problem, one line each, naming the flag.
    pub fn problems(&self, tls: bool) -> Vec<String> {
        let mut problems = Vec::new();
        if self.client_cert.is_some() != self.client_key.is_some() {
            problems.push("--client-cert and --client-key go together".to_owned());
        }
        if !tls {
            if self.node_token.is_some() {
                problems.push(
                    "--node-token is sent only over TLS: use an https:// control-plane URL"
                        .to_owned(),
                );
            }
            if self.ca_cert.is_some() || self.client_cert.is_some() {
                problems.push(
                    "--ca-cert/--client-cert apply to an https:// control-plane URL only"
                        .to_owned(),
                );
            }
        }
        if let Some(token) = &self.node_token
            && MetadataValue::<Ascii>::try_from(format!("Bearer {}", token.expose())).is_err()
        {
            problems.push("--node-token: only visible ASCII characters".to_owned());
        }
        problems
    }

    /// The TLS settings for one connection, reading the files now.
    pub fn tls_config(&self, domain: &str) -> Result<ClientTlsConfig, String> {
        let mut config = ClientTlsConfig::new().domain_name(domain);
        config = match &self.ca_cert {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("--ca-cert {}: {e}", path.display()))?;
                gw_tls::pem::certs(&format!("--ca-cert {}", path.display()), &pem)
                    .map_err(|e| e.to_string())?;
                config.ca_certificate(Certificate::from_pem(pem))
            }
            None => config.with_native_roots(),
        };
        if let (Some(cert_path), Some(key_path)) = (&self.client_cert, &self.client_key) {
            let cert = std::fs::read(cert_path)
                .map_err(|e| format!("--client-cert {}: {e}", cert_path.display()))?;
            let key = gw_tls::pem::read_key(key_path).map_err(|e| format!("--client-key: {e}"))?;
            // The same checks as the control plane's: a client certificate that does not
            // match its key, or has expired, is named here rather than as a handshake failure.
            gw_tls::cert::check(
                &cert_path.display().to_string(),
                &cert,
                &key,
                std::time::SystemTime::now(),
            )
            .map_err(|e| format!("--client-cert/--client-key: {e}"))?;
            config = config.identity(Identity::from_pem(cert, key.expose()));
        }
        Ok(config)
    }

    /// The `authorization` header carrying the node token, if there is one.
    pub fn authorization(&self) -> Option<MetadataValue<Ascii>> {
        let token = self.node_token.as_ref()?;
        MetadataValue::try_from(format!("Bearer {}", token.expose())).ok()
    }

    /// The credential files, to notice a rotation.
    pub fn files(&self) -> FileSet {
        let paths = [&self.ca_cert, &self.client_cert, &self.client_key]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        FileSet::new(paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_named() {
        let token = Credentials {
            node_token: Some(Secret::new("t")),
            ..Default::default()
        };
        assert!(token.problems(true).is_empty());
        assert_eq!(
            token.problems(false),
            ["--node-token is sent only over TLS: use an https:// control-plane URL"]
        );
        let half = Credentials {
            client_cert: Some("c.pem".into()),
            ..Default::default()
        };
        assert_eq!(
            half.problems(true),
            ["--client-cert and --client-key go together"]
        );
        assert!(Credentials::default().problems(false).is_empty());
    }
}
