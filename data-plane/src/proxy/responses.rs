//! The gateway's own answers: small, static JSON bodies (no per-request formatting).

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};

use crate::upstream::body::ClientFault;
use crate::upstream::response::ResponseBody;

/// A response body: the upstream's, streamed and watched, or one of ours.
pub type ProxyBody = Either<ResponseBody, Full<Bytes>>;

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
/// Over a rate limit (429); the body is [`rate_limited`]'s.
pub const RATE_LIMITED: Canned = Canned {
    status: StatusCode::TOO_MANY_REQUESTS,
    body: r#"{"error":"rate_limited","message":"too many requests; retry later"}"#,
};

/// A 429 whose body says how many seconds to wait (the `Retry-After` value), e.g.
/// `{"error":"rate_limited","message":"too many requests; retry in 12 seconds","retry_after":12}`.
/// Built per rejection: a few bytes, on the path that does no forwarding.
pub fn rate_limited(retry_after_secs: u64) -> Response<ProxyBody> {
    let n = retry_after_secs.max(1);
    let unit = if n == 1 { "second" } else { "seconds" };
    let body = format!(
        r#"{{"error":"rate_limited","message":"too many requests; retry in {n} {unit}","retry_after":{n}}}"#
    );
    let mut r = RATE_LIMITED.response();
    *r.body_mut() = Either::Right(Full::new(Bytes::from(body)));
    r
}

/// No valid credential: missing, unknown or expired, deliberately not said which (401; the
/// request path adds `WWW-Authenticate`).
pub const UNAUTHORIZED: Canned = Canned {
    status: StatusCode::UNAUTHORIZED,
    body: r#"{"error":"unauthorized","message":"this service needs a valid credential"}"#,
};
/// A valid consumer that the service does not admit (403).
pub const FORBIDDEN: Canned = Canned {
    status: StatusCode::FORBIDDEN,
    body: r#"{"error":"forbidden","message":"this consumer may not call this service"}"#,
};
/// Too many failed authentications from the client's address (429; with `Retry-After`).
pub const AUTH_THROTTLED: Canned = Canned {
    status: StatusCode::TOO_MANY_REQUESTS,
    body: r#"{"error":"too_many_auth_failures","message":"too many failed authentications; retry after Retry-After seconds"}"#,
};
/// `WWW-Authenticate` of a 401 (RFC 6750 §3: a key may come as a bearer token).
pub const WWW_AUTHENTICATE_VALUE: &str = "Bearer realm=\"gw\"";

/// The request cannot be forwarded as sent (400).
pub const BAD_REQUEST: Canned = Canned {
    status: StatusCode::BAD_REQUEST,
    body: r#"{"error":"bad_request","message":"the request path cannot be forwarded"}"#,
};

/// The request body's framing is malformed, e.g. an invalid chunk size (400).
pub const BAD_REQUEST_BODY: Canned = Canned {
    status: StatusCode::BAD_REQUEST,
    body: r#"{"error":"bad_request_body","message":"the request body is malformed (invalid framing)"}"#,
};
/// The client stopped sending its request body for longer than the idle timeout (408).
pub const REQUEST_BODY_TIMEOUT: Canned = Canned {
    status: StatusCode::REQUEST_TIMEOUT,
    body: r#"{"error":"request_body_timeout","message":"the request body stalled for longer than the service allows"}"#,
};
/// nginx's convention for a client that closed the connection before the answer: nobody reads
/// it, but it is what the request is counted as.
pub const CLIENT_CLOSED_REQUEST: StatusCode = match StatusCode::from_u16(499) {
    Ok(s) => s,
    Err(_) => panic!("499 is a valid status code"),
};
/// The client went away mid-request (499).
pub const CLIENT_CLOSED: Canned = Canned {
    status: CLIENT_CLOSED_REQUEST,
    body: r#"{"error":"client_closed_request","message":"the client closed the connection"}"#,
};
/// The gateway ran short of its own resources (file descriptors, the endpoint's connection
/// cap) and could not reach the backend (503).
pub const OVERLOADED: Canned = Canned {
    status: StatusCode::SERVICE_UNAVAILABLE,
    body: r#"{"error":"gateway_overloaded","message":"the gateway is out of connections to this backend; retry shortly"}"#,
};

/// Host missing, repeated, malformed or contradicting the request target (400).
pub const BAD_HOST: Canned = Canned {
    status: StatusCode::BAD_REQUEST,
    body: r#"{"error":"bad_host","message":"the request needs exactly one valid Host that agrees with its target"}"#,
};
/// The path climbs above the root or holds an encoded NUL (400).
pub const BAD_PATH: Canned = Canned {
    status: StatusCode::BAD_REQUEST,
    body: r#"{"error":"bad_path","message":"the request path cannot be normalised ('..' above the root, or %00)"}"#,
};
/// `CONNECT` to a host whose `/` service does not allow it, or that has none (405).
pub const CONNECT_NOT_ALLOWED: Canned = Canned {
    status: StatusCode::METHOD_NOT_ALLOWED,
    body: r#"{"error":"method_not_allowed","message":"CONNECT is not allowed for this host"}"#,
};
/// `CONNECT` whose target is not `host:port` (400).
pub const BAD_CONNECT_TARGET: Canned = Canned {
    status: StatusCode::BAD_REQUEST,
    body: r#"{"error":"bad_connect_target","message":"a CONNECT target must be host:port"}"#,
};
/// What a 405 for CONNECT lists in `Allow` (RFC 9110 §15.5.6 requires the header).
pub const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE";

/// The answer to a request the client itself broke.
pub fn client_fault(fault: ClientFault) -> Canned {
    match fault {
        ClientFault::Framing => BAD_REQUEST_BODY,
        ClientFault::Gone => CLIENT_CLOSED,
        ClientFault::IdleTimeout => REQUEST_BODY_TIMEOUT,
    }
}

impl Canned {
    /// Builds the response.
    pub fn response(self) -> Response<ProxyBody> {
        let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(
            self.body.as_bytes(),
        ))));
        *r.status_mut() = self.status;
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.status == StatusCode::REQUEST_TIMEOUT || self.status == StatusCode::BAD_REQUEST {
            // The request body was not read to its end: the connection cannot carry another
            // request, so say so rather than let the client find out.
            r.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}

/// A 308 to the same URL over HTTPS on `port` (omitted when 443), for `https_redirect`
/// services. Built per request, but only for plain-HTTP requests to such services.
pub fn https_redirect(
    host: Option<&http::HeaderValue>,
    port: u16,
    uri: &http::Uri,
) -> Response<ProxyBody> {
    let host = host.and_then(|h| h.to_str().ok()).unwrap_or("");
    // Without the port the client used for plain HTTP; an IPv6 literal keeps its brackets.
    let name = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    };
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let location = if port == 443 {
        format!("https://{name}{path}")
    } else {
        format!("https://{name}:{port}{path}")
    };
    let mut resp = Response::new(Either::Right(Full::new(Bytes::new())));
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = http::HeaderValue::from_str(&location) {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_429_body_says_how_long_to_wait() {
        for (secs, message) in [
            (0, "too many requests; retry in 1 second"),
            (1, "too many requests; retry in 1 second"),
            (12, "too many requests; retry in 12 seconds"),
        ] {
            let r = rate_limited(secs);
            assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
            let Either::Right(body) = r.into_body() else {
                panic!("a canned body")
            };
            let bytes = futures::executor::block_on(http_body_util::BodyExt::collect(body))
                .unwrap()
                .to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v["error"], "rate_limited");
            assert_eq!(v["message"], message, "{secs}");
            assert_eq!(v["retry_after"], secs.max(1), "{secs}");
        }
    }

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
            BAD_REQUEST_BODY,
            REQUEST_BODY_TIMEOUT,
            CLIENT_CLOSED,
            OVERLOADED,
            BAD_HOST,
            BAD_PATH,
            CONNECT_NOT_ALLOWED,
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
