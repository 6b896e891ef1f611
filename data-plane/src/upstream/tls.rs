//! TLS to backends, the seam every upstream connection goes through: a rustls client config
//! per service ([`TlsSpec`]: the system's trust store, or the service's CA bundle, or, only
//! when explicitly asked, no verification) and [`UpstreamTls::connect`], which wraps a TCP
//! stream with SNI set to the endpoint's host. The pooled client (`client`) and the health
//! checks use it; a connection pool of its own (over `hyper::client::conn`) needs only
//! `connect`.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How a service's https:// endpoints are verified.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TlsSpec {
    /// CA certificates (PEM) instead of the system's trust store.
    pub ca_bundle_pem: Option<Arc<str>>,
    /// Accept any certificate.
    pub insecure_skip_verify: bool,
}

/// A client TLS config for one [`TlsSpec`].
#[derive(Debug)]
pub struct UpstreamTls {
    spec: TlsSpec,
    config: Arc<ClientConfig>,
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

impl Eq for UpstreamTls {}

impl UpstreamTls {
    /// Builds the config for `spec`; the error names what is wrong with the CA bundle.
    pub fn new(spec: TlsSpec) -> Result<Self, String> {
        let builder = ClientConfig::builder_with_provider(gw_tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?;
        let mut config = if spec.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification))
                .with_no_client_auth()
        } else {
            let roots = match &spec.ca_bundle_pem {
                Some(pem) => {
                    let mut roots = RootCertStore::empty();
                    for ca in gw_tls::pem::certs("upstream_tls.ca_bundle_pem", pem.as_bytes())
                        .map_err(|e| e.to_string())?
                    {
                        roots
                            .add(ca)
                            .map_err(|e| format!("upstream_tls.ca_bundle_pem: {e}"))?;
                    }
                    Arc::new(roots)
                }
                None => system_roots(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        // Backends are spoken to in HTTP/1.1 (see `client`).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            spec,
            config: Arc::new(config),
        })
    }

    /// The rustls config, for connectors that wrap it.
    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    /// The settings it was built from.
    pub fn spec(&self) -> &TlsSpec {
        &self.spec
    }

    /// Whether certificates are not verified.
    pub fn is_insecure(&self) -> bool {
        self.spec.insecure_skip_verify
    }

    /// Runs the TLS handshake on `io` (a TCP connection) with SNI and verification for `host`.
    pub async fn connect<IO>(&self, io: IO, host: &str) -> io::Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        TlsConnector::from(self.config.clone())
            .connect(server_name(host)?, io)
            .await
    }
}

/// The name to send and verify for `host` (a DNS name, an IPv4 or a bracketed IPv6 address).
pub fn server_name(host: &str) -> io::Result<ServerName<'static>> {
    ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))
}

/// One [`UpstreamTls`] per spec, shared by every service that has it and kept across config
/// versions (building one parses the CA bundle).
#[derive(Debug, Default)]
pub struct TlsConfigs {
    by_spec: Mutex<HashMap<TlsSpec, Arc<UpstreamTls>>>,
}

impl TlsConfigs {
    /// The config for `spec`, built on first use. Off the request path.
    pub fn get(&self, spec: &TlsSpec) -> Result<Arc<UpstreamTls>, String> {
        let mut map = self.by_spec.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tls) = map.get(spec) {
            return Ok(tls.clone());
        }
        let tls = Arc::new(UpstreamTls::new(spec.clone())?);
        map.insert(spec.clone(), tls.clone());
        Ok(tls)
    }
}

/// A client config trusting the system's trust store and, in addition, the CA certificates in
/// the PEM file `path` (the JWKS fetcher's, with `--jwks-ca-cert`: an identity provider whose
/// certificate comes from a private CA). Read once, at start. The error names the file and
/// what is wrong with it (unreadable, no certificate, a certificate that is not a usable CA).
pub fn config_with_extra_roots(path: &std::path::Path) -> Result<Arc<ClientConfig>, String> {
    let extra = gw_tls::pem::read_certs(path).map_err(|e| e.to_string())?;
    let mut roots = RootCertStore::clone(&system_roots());
    for (i, ca) in extra.into_iter().enumerate() {
        roots
            .add(ca)
            .map_err(|e| format!("{}: certificate {}: {e}", path.display(), i + 1))?;
    }
    let mut config = ClientConfig::builder_with_provider(gw_tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The platform's trust store (`/etc/ssl/certs` on Debian), read once.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "reading the system's trust store");
            }
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!(
                    ignored,
                    "the system's trust store is empty: https:// backends \
                    without a CA bundle will fail verification (Debian: ca-certificates)"
                );
            }
            Arc::new(roots)
        })
        .clone()
}

/// Accepts every certificate: `insecure_skip_verify`.
#[derive(Debug)]
struct NoVerification;

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        gw_tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_roots_come_from_a_pem_file_whose_problems_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let good = write("ca.pem", &gw_testkit::tls::Ca::new("private CA").cert_pem());
        assert!(config_with_extra_roots(&good).is_ok());
        let missing = dir.path().join("missing.pem");
        let junk = write("junk.pem", "hello\n");
        // Valid PEM around three zero bytes: not a certificate.
        let bad_der = write(
            "bad.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        for (path, want) in [
            (&missing, "no such file or directory"),
            (
                &junk,
                "not PEM: expected a '-----BEGIN CERTIFICATE-----' block",
            ),
            (&bad_der, "certificate 1: "),
        ] {
            let err = config_with_extra_roots(path).unwrap_err();
            let prefix = format!("{}: ", path.display());
            assert!(err.starts_with(&prefix), "{err}");
            assert!(err.contains(want), "{want} in {err}");
        }
    }
}
