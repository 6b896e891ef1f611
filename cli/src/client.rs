//! The connection to the control plane: address checks, bearer-token auth and fast failure.
//!
//! gwctl speaks to the control plane only through this client (gRPC `AdminService`), so the
//! error wording for "cannot connect" and for every status code lives in one place.

use std::path::PathBuf;
use std::time::Duration;

use gw_proto::v1::admin_service_client::AdminServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::error::Error;

/// How long to wait for a TCP connection. A few seconds: long enough for a busy machine or a
/// remote region, short enough that a wrong address fails before the operator gives up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Adds `authorization: Bearer <token>` to every call when a token was given.
#[derive(Clone)]
pub struct BearerAuth {
    header: Option<MetadataValue<Ascii>>,
}

impl BearerAuth {
    /// Prepares the header once; fails if the token cannot be a header value.
    pub fn new(token: Option<&str>) -> Result<Self, Error> {
        let header = match token.map(str::trim) {
            None | Some("") => None,
            Some(token) => Some(
                format!("Bearer {token}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| Error::BadToken)?,
            ),
        };
        Ok(Self { header })
    }
}

impl Interceptor for BearerAuth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// TLS settings for an `https://` control plane; all optional.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// CA certificates (PEM) the control plane's certificate must chain to; `None`: the
    /// system's trust store.
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM), for a control plane that asks for one.
    pub client_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub client_key: Option<PathBuf>,
}

impl TlsFiles {
    /// The tonic TLS config for `host`, reading the files now.
    fn config(&self, host: &str) -> Result<ClientTlsConfig, Error> {
        let bad = |flag: &'static str, reason: String| Error::BadTls { flag, reason };
        let mut config = ClientTlsConfig::new().domain_name(host);
        config = match &self.ca_cert {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    bad(
                        "--ca-cert",
                        format!("{}: {}", path.display(), strip_os_error(&e.to_string())),
                    )
                })?;
                gw_tls::pem::certs(&path.display().to_string(), &pem)
                    .map_err(|e| bad("--ca-cert", e.to_string()))?;
                config.ca_certificate(Certificate::from_pem(pem))
            }
            None => config.with_native_roots(),
        };
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let chain = std::fs::read(cert).map_err(|e| {
                    bad(
                        "--client-cert",
                        format!("{}: {}", cert.display(), strip_os_error(&e.to_string())),
                    )
                })?;
                let key =
                    gw_tls::pem::read_key(key).map_err(|e| bad("--client-key", e.to_string()))?;
                gw_tls::cert::check(
                    &cert.display().to_string(),
                    &chain,
                    &key,
                    std::time::SystemTime::now(),
                )
                .map_err(|e| bad("--client-cert", e.to_string()))?;
                Ok(config.identity(Identity::from_pem(chain, key.expose())))
            }
            (None, None) => Ok(config),
            _ => Err(bad(
                "--client-cert",
                "--client-cert and --client-key go together".to_owned(),
            )),
        }
    }

    fn any(&self) -> bool {
        self.ca_cert.is_some() || self.client_cert.is_some() || self.client_key.is_some()
    }
}

/// The generated admin client with the auth interceptor in front.
pub type Admin = AdminServiceClient<InterceptedService<Channel, BearerAuth>>;

/// A connected admin client that remembers its address for error messages.
pub struct AdminClient {
    /// The generated client; call it and map errors with [`AdminClient::error`].
    pub api: Admin,
    address: String,
    timeout: Duration,
}

impl AdminClient {
    /// Connects to the control plane at `address`, failing within [`CONNECT_TIMEOUT`]; each
    /// call then fails after `timeout`.
    ///
    /// An address without a scheme (`127.0.0.1:50051`) is taken as `http://`; `https://`
    /// verifies the control plane's certificate against `tls.ca_cert` (or the system's roots).
    pub async fn connect(
        address: &str,
        token: Option<&str>,
        timeout: Duration,
        tls: &TlsFiles,
    ) -> Result<Self, Error> {
        let address = normalize_address(address)?;
        let auth = BearerAuth::new(token)?;
        let mut endpoint = Endpoint::from_shared(address.clone())
            .map_err(|e| Error::BadAddress {
                address: address.clone(),
                reason: innermost(&e),
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(timeout);
        if address.starts_with("https://") {
            let host = endpoint
                .uri()
                .host()
                .unwrap_or_default()
                .trim_matches(['[', ']'])
                .to_owned();
            endpoint = endpoint
                .tls_config(tls.config(&host)?)
                .map_err(|e| Error::BadTls {
                    flag: "--ca-cert",
                    reason: innermost(&e),
                })?;
        } else if tls.any() {
            return Err(Error::BadTls {
                flag: "--ca-cert",
                reason: "--ca-cert/--client-cert apply to an https:// control plane only"
                    .to_owned(),
            });
        }
        // The outer timeout also covers name resolution, which connect_timeout does not.
        let channel = match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect()).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => {
                return Err(Error::Unreachable {
                    address,
                    reason: connect_reason(&e),
                });
            }
            Err(_) => {
                return Err(Error::Unreachable {
                    address,
                    reason: format!(
                        "timed out after {}",
                        crate::duration::format(CONNECT_TIMEOUT)
                    ),
                });
            }
        };
        Ok(Self {
            api: AdminServiceClient::with_interceptor(channel, auth),
            address,
            timeout,
        })
    }

    /// The address this client talks to, as used in messages.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Maps a failed call's status to gwctl's error.
    pub fn error(&self, status: tonic::Status) -> Error {
        Error::from_status(&self.address, self.timeout, &status)
    }

    /// Maps a failed `rpc` call's status to gwctl's error, saying "upgrade it" when the
    /// control plane does not know the call (for calls newer than the first release).
    pub fn call_error(&self, rpc: &str, status: tonic::Status) -> Error {
        Error::from_call_status(&self.address, self.timeout, rpc, &status)
    }
}

/// Accepts `host:port` as shorthand for `http://host:port`; rejects schemes gwctl cannot speak.
pub fn normalize_address(address: &str) -> Result<String, Error> {
    let address = address.trim();
    let bad = |reason: &str| Error::BadAddress {
        address: address.to_string(),
        reason: reason.to_string(),
    };
    let (scheme, rest) = address.split_once("://").unwrap_or(("http", address));
    let rest = rest.trim_end_matches('/');
    match scheme {
        _ if address.is_empty() => Err(bad("empty address; use e.g. http://127.0.0.1:50051")),
        "http" | "https" if !rest.is_empty() => Ok(format!("{scheme}://{rest}")),
        _ => Err(bad(
            "use an https:// or http:// URL, e.g. https://cp.example:50051",
        )),
    }
}

/// Describes a connect failure in a few words, from the innermost cause that says something.
fn connect_reason(e: &(dyn std::error::Error + 'static)) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
                std::io::ErrorKind::TimedOut => "connection timed out".to_string(),
                _ => strip_os_error(&io.to_string()),
            };
        }
        source = err.source();
    }
    innermost(e)
}

/// The deepest message in an error chain, which is usually the specific one.
pub(crate) fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(next) = current.source() {
        current = next;
    }
    strip_os_error(&current.to_string())
}

/// Drops the ` (os error 111)` suffix: the code adds nothing for an operator.
pub(crate) fn strip_os_error(text: &str) -> String {
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => text,
    };
    text.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalized_or_rejected() {
        let ok = [
            ("http://127.0.0.1:50051", "http://127.0.0.1:50051"),
            ("http://127.0.0.1:50051/", "http://127.0.0.1:50051"),
            ("127.0.0.1:50051", "http://127.0.0.1:50051"),
            ("localhost:1", "http://localhost:1"),
            ("https://cp:443/", "https://cp:443"),
        ];
        for (input, want) in ok {
            assert_eq!(normalize_address(input).unwrap(), want);
        }
        let bad = [
            ("", "empty address"),
            ("grpc://cp:1", "use an https:// or http:// URL"),
            ("http://", "use an https:// or http:// URL"),
        ];
        for (input, want) in bad {
            let err = normalize_address(input).unwrap_err().to_string();
            assert!(err.starts_with("invalid --control-plane"), "{err}");
            assert!(err.contains(want), "{input:?}: {err}");
        }
    }

    #[test]
    fn bearer_header_is_added_only_with_a_token() {
        let mut with = BearerAuth::new(Some("s3cret")).unwrap();
        let req = with.call(tonic::Request::new(())).unwrap();
        assert_eq!(
            req.metadata().get("authorization").unwrap(),
            "Bearer s3cret"
        );

        for token in [None, Some(""), Some("  ")] {
            let mut without = BearerAuth::new(token).unwrap();
            let req = without.call(tonic::Request::new(())).unwrap();
            assert!(req.metadata().get("authorization").is_none());
        }

        assert!(matches!(
            BearerAuth::new(Some("bad\ntoken")),
            Err(Error::BadToken)
        ));
    }

    #[test]
    fn os_error_codes_are_dropped() {
        assert_eq!(
            strip_os_error("Connection refused (os error 111)"),
            "connection refused"
        );
        assert_eq!(strip_os_error("no such host"), "no such host");
    }
}
