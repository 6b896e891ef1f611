//! The admin-token check, a tonic interceptor in front of AdminService.

use std::sync::Arc;

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
    pub fn new(token: Option<&str>) -> Self {
        let token = token.filter(|t| !t.is_empty());
        if token.is_none() {
            tracing::warn!("no admin token set: AdminService accepts every caller");
        }
        Self {
            token: token.map(|t| Arc::from(t.as_bytes())),
        }
    }
}

impl Interceptor for AdminAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.token else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
        match presented {
            // Constant-time, so the comparison's duration does not reveal how much matched.
            Some(t) if bool::from(t.as_bytes().ct_eq(expected)) => Ok(request),
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
        let mut empty = AdminAuth::new(Some(""));
        assert_eq!(call(&mut empty, None), Ok(()));
        let mut auth = AdminAuth::new(Some("s3cret"));
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
}
