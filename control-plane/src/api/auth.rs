//! Who may call what. Each credential guards only what it opens:
//!
//! - AdminService needs the admin token (`authorization: Bearer <token>`), checked by the
//!   [`AdminAuth`] interceptor.
//! - `StreamConfig` (and so every report a node sends) needs node credentials, checked by
//!   [`NodeAuth`] before anything is read or registered: a client certificate issued by a
//!   `--client-ca` CA, whose DNS SANs are the node ids it may use, or the node token, which is
//!   accepted only over TLS. A peer without them gets UNAUTHENTICATED and learns nothing.
//! - The gRPC health service and reflection (the public API description) stay open.
//!
//! A control plane configured with neither credential (loopback only, or `--insecure`) lets
//! every caller through, as before; `main` refuses that on other addresses.

use std::sync::Arc;

use gw_tls::Secret;
use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Requires `authorization: Bearer <token>` when a token is configured.
#[derive(Debug, Clone)]
pub struct AdminAuth {
    token: Option<Arc<[u8]>>,
}

impl AdminAuth {
    /// Checks against `token`; `None` or an empty token lets every call through (an empty
    /// token would otherwise be "required" yet sent by anyone writing `Bearer `).
    pub fn new(token: Option<&Secret>) -> Self {
        let token = token.filter(|t| !t.is_empty());
        if token.is_none() {
            tracing::warn!("no admin token set: AdminService accepts every caller");
        }
        Self {
            token: token.map(|t| Arc::from(t.expose().as_bytes())),
        }
    }
}

impl Interceptor for AdminAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.token else {
            return Ok(request);
        };
        match bearer(&request) {
            Some(t) if matches(t, expected) => Ok(request),
            Some(_) => Err(Status::unauthenticated("invalid admin token")),
            None => Err(Status::unauthenticated(
                "missing admin token: send 'authorization: Bearer <token>' (gwctl --token)",
            )),
        }
    }
}

/// The token of an `authorization: Bearer <token>` value. The scheme is case-insensitive
/// (RFC 6750 §2.1, RFC 9110 §11.1): `bearer`, `BEARER` and `Bearer` are the same.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

/// The bearer token of a request, if it carries one.
fn bearer<T>(request: &Request<T>) -> Option<&str> {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
}

/// Constant-time, so the comparison's duration does not reveal how much matched.
fn matches(presented: &str, expected: &[u8]) -> bool {
    bool::from(presented.as_bytes().ct_eq(expected))
}

/// Checks a config stream's node credentials.
#[derive(Debug, Clone)]
pub struct NodeAuth {
    token: Option<Arc<[u8]>>,
    certificates: bool,
    tls: bool,
}

/// How a node proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeCredential {
    /// A client certificate from a trusted CA; its DNS SANs are the ids it may use.
    Certificate(Vec<String>),
    /// The shared node token: any node id.
    Token,
    /// No credentials are configured (loopback or `--insecure`): any node id.
    Open,
}

impl NodeAuth {
    /// Node credentials for a listener with (`tls`) or without TLS: client certificates when
    /// a client CA is configured (`certificates`), and/or `token`.
    pub fn new(token: Option<&Secret>, certificates: bool, tls: bool) -> Self {
        Self {
            token: token
                .filter(|t| !t.is_empty())
                .map(|t| Arc::from(t.expose().as_bytes())),
            certificates,
            tls,
        }
    }

    /// Whether any node credential is required.
    pub fn required(&self) -> bool {
        self.token.is_some() || self.certificates
    }

    /// Who the caller of `request` is, or UNAUTHENTICATED with what to send instead.
    pub fn authenticate<T>(&self, request: &Request<T>) -> Result<NodeCredential, Status> {
        // Present only when rustls verified the chain against a configured client CA.
        if let Some(certs) = request.peer_certs()
            && let Some(leaf) = certs.first()
        {
            let names = gw_tls::cert::inspect("client certificate", leaf)
                .map(|info| info.dns_names)
                .unwrap_or_default();
            if names.is_empty() {
                return Err(Status::unauthenticated(
                    "the client certificate has no DNS subjectAltName to identify the node",
                ));
            }
            return Ok(NodeCredential::Certificate(names));
        }
        if let Some(presented) = bearer(request) {
            if !self.tls {
                // It may have been read on the way; refusing it makes the mistake visible.
                return Err(Status::unauthenticated(
                    "node tokens are accepted only over TLS; use an https:// control-plane URL",
                ));
            }
            if let Some(expected) = &self.token {
                return if matches(presented, expected) {
                    Ok(NodeCredential::Token)
                } else {
                    Err(Status::unauthenticated("invalid node token"))
                };
            }
        }
        if !self.required() {
            return Ok(NodeCredential::Open);
        }
        Err(Status::unauthenticated(
            "node credentials required: a client certificate from a --client-ca CA, or the \
             node token over TLS",
        ))
    }
}

impl NodeCredential {
    /// Whether this credential may register as `node_id`; PERMISSION_DENIED if not.
    pub fn permits(&self, node_id: &str) -> Result<(), Status> {
        match self {
            NodeCredential::Certificate(names) if !names.iter().any(|n| n == node_id) => {
                Err(Status::permission_denied(format!(
                    "hello.node_id '{}' is not a name of this client certificate ({})",
                    crate::domain::validate::truncate(node_id, 128),
                    names.join(", ")
                )))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn call(auth: &mut AdminAuth, header: Option<&str>) -> Result<(), Code> {
        let mut req = Request::new(());
        if let Some(h) = header {
            req.metadata_mut()
                .insert("authorization", h.parse().unwrap());
        }
        auth.call(req).map(|_| ()).map_err(|s| s.code())
    }

    #[test]
    fn token_is_required_only_when_configured() {
        let mut open = AdminAuth::new(None);
        assert_eq!(call(&mut open, None), Ok(()));
        let mut empty = AdminAuth::new(Some(&Secret::new("")));
        assert_eq!(call(&mut empty, None), Ok(()));
        let mut auth = AdminAuth::new(Some(&Secret::new("s3cret")));
        assert_eq!(call(&mut auth, Some("Bearer s3cret")), Ok(()));
        assert_eq!(call(&mut auth, None), Err(Code::Unauthenticated));
        assert_eq!(
            call(&mut auth, Some("Bearer wrong")),
            Err(Code::Unauthenticated)
        );
        assert_eq!(
            call(&mut auth, Some("Bearer s3cret2")),
            Err(Code::Unauthenticated)
        );
        assert_eq!(call(&mut auth, Some("s3cret")), Err(Code::Unauthenticated));
        for scheme in ["bearer", "BEARER", "bEaReR"] {
            assert_eq!(
                call(&mut auth, Some(&format!("{scheme} s3cret"))),
                Ok(()),
                "{scheme}"
            );
        }
        assert_eq!(
            call(&mut auth, Some("Basic s3cret")),
            Err(Code::Unauthenticated)
        );
    }

    fn node(auth: &NodeAuth, token: Option<&str>) -> Result<NodeCredential, Code> {
        let mut req = Request::new(());
        if let Some(t) = token {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        auth.authenticate(&req).map_err(|s| s.code())
    }

    #[test]
    fn node_credentials_table() {
        let token = Secret::new("n0de");
        let open = NodeAuth::new(None, false, false);
        let tls_token = NodeAuth::new(Some(&token), false, true);
        let plain_token = NodeAuth::new(Some(&token), false, false);
        let certs_only = NodeAuth::new(None, true, true);
        let cases: [(&NodeAuth, Option<&str>, Result<NodeCredential, Code>); 9] = [
            (&open, None, Ok(NodeCredential::Open)),
            // A token sent in the clear is refused even where nothing is required.
            (&open, Some("n0de"), Err(Code::Unauthenticated)),
            (&tls_token, Some("n0de"), Ok(NodeCredential::Token)),
            (&tls_token, Some("wrong"), Err(Code::Unauthenticated)),
            (&tls_token, None, Err(Code::Unauthenticated)),
            (&plain_token, Some("n0de"), Err(Code::Unauthenticated)),
            (&plain_token, None, Err(Code::Unauthenticated)),
            (&certs_only, None, Err(Code::Unauthenticated)),
            (&certs_only, Some("n0de"), Err(Code::Unauthenticated)),
        ];
        for (i, (auth, presented, want)) in cases.into_iter().enumerate() {
            assert_eq!(node(auth, presented), want, "case {i}");
        }
    }

    #[test]
    fn a_certificate_permits_only_its_names() {
        let cred = NodeCredential::Certificate(vec!["dp-a".into(), "dp-a2".into()]);
        assert!(cred.permits("dp-a").is_ok());
        let denied = cred.permits("dp-b").unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        assert!(denied.message().contains("'dp-b'"), "{}", denied.message());
        assert!(NodeCredential::Token.permits("any").is_ok());
        assert!(NodeCredential::Open.permits("any").is_ok());
    }
}
