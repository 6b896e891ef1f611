//! The connection to the control plane: address checks, bearer-token auth and fast failure.
//!
//! gwctl speaks to the control plane only through this client (gRPC `AdminService`), so the
//! error wording for "cannot connect" and for every status code lives in one place.

use std::time::Duration;

use gw_proto::v1::admin_service_client::AdminServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

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
    /// An address without a scheme (`127.0.0.1:50051`) is taken as `http://`.
    pub async fn connect(
        address: &str,
        token: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let address = normalize_address(address)?;
        let auth = BearerAuth::new(token)?;
        let endpoint = Endpoint::from_shared(address.clone())
            .map_err(|e| Error::BadAddress {
                address: address.clone(),
                reason: innermost(&e),
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(timeout);
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
        "http" if !rest.is_empty() => Ok(format!("http://{rest}")),
        "https" => Err(bad(
            "https is not supported; the control plane serves plain gRPC, use http://",
        )),
        _ => Err(bad("use an http:// URL, e.g. http://127.0.0.1:50051")),
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
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
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
        ];
        for (input, want) in ok {
            assert_eq!(normalize_address(input).unwrap(), want);
        }
        let bad = [
            ("", "empty address"),
            ("https://cp:443", "https is not supported"),
            ("grpc://cp:1", "use an http:// URL"),
            ("http://", "use an http:// URL"),
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
