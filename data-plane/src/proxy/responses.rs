//! The gateway's own answers: small, static JSON bodies (no per-request formatting).

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

/// A response body: the upstream's, streamed, or one of ours.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

/// One canned answer.
#[derive(Debug, Clone, Copy)]
pub struct Canned {
    /// Status code.
    pub status: StatusCode,
    /// JSON body.
    pub body: &'static str,
}

/// No route matches (404).
pub const NO_ROUTE: Canned = Canned {
    status: StatusCode::NOT_FOUND,
    body: r#"{"error":"no_route","message":"no route matches this request's host and path"}"#,
};
/// The service has no healthy endpoint (503).
pub const NO_ENDPOINT: Canned = Canned {
    status: StatusCode::SERVICE_UNAVAILABLE,
    body: r#"{"error":"no_endpoint","message":"the service has no healthy endpoint"}"#,
};
/// No config loaded yet (503).
pub const NO_CONFIG: Canned = Canned {
    status: StatusCode::SERVICE_UNAVAILABLE,
    body: r#"{"error":"no_config","message":"the gateway has not received a configuration yet"}"#,
};
/// Upstream unreachable or failed before responding (502).
pub const BAD_GATEWAY: Canned = Canned {
    status: StatusCode::BAD_GATEWAY,
    body: r#"{"error":"upstream_failed","message":"the upstream could not be reached or failed before responding"}"#,
};
/// Upstream too slow (504).
pub const GATEWAY_TIMEOUT: Canned = Canned {
    status: StatusCode::GATEWAY_TIMEOUT,
    body: r#"{"error":"upstream_timeout","message":"the upstream did not respond within the service's request timeout"}"#,
};
/// Over a rate limit (429).
pub const RATE_LIMITED: Canned = Canned {
    status: StatusCode::TOO_MANY_REQUESTS,
    body: r#"{"error":"rate_limited","message":"too many requests; retry after Retry-After seconds"}"#,
};
/// The request cannot be forwarded as sent (400).
pub const BAD_REQUEST: Canned = Canned {
    status: StatusCode::BAD_REQUEST,
    body: r#"{"error":"bad_request","message":"the request path cannot be forwarded"}"#,
};

impl Canned {
    /// Builds the response.
    pub fn response(self) -> Response<ProxyBody> {
        let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(
            self.body.as_bytes(),
        ))));
        *r.status_mut() = self.status;
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_with_an_error_field() {
        for c in [
            NO_ROUTE,
            NO_ENDPOINT,
            NO_CONFIG,
            BAD_GATEWAY,
            GATEWAY_TIMEOUT,
            RATE_LIMITED,
            BAD_REQUEST,
        ] {
            let v: serde_json::Value = serde_json::from_str(c.body).unwrap();
            assert!(
                v["error"].is_string() && v["message"].is_string(),
                "{}",
                c.body
            );
            let r = c.response();
            assert_eq!(r.status(), c.status);
            assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        }
    }
}
