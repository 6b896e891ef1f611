//! Undecodable requests are the caller's mistake: `INVALID_ARGUMENT`, not `INTERNAL`.
//!
//! tonic answers a request whose protobuf does not decode with `INTERNAL` (following grpc's
//! status-code guide, which reserves INTERNAL for "invariants broken"), so a client sending
//! garbage looked like a control-plane bug in every dashboard and retry policy. This layer,
//! in front of every service, rewrites that one status on the response head (where a unary
//! call's error travels): `grpc-status: 13` whose `grpc-message` is prost's decode error
//! becomes `grpc-status: 3`. Every other status passes untouched.

use std::task::{Context, Poll};

use futures::future::{FutureExt as _, Map};
use http::HeaderValue;

/// prost's `DecodeError` message, as tonic percent-encodes it into `grpc-message` (spaces
/// become `%20`).
const DECODE_ERROR_PREFIX: &[u8] = b"failed%20to%20decode%20Protobuf%20message";

/// The layer: wrap the server's services with [`DecodeErrors`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeErrorsLayer;

impl<S> tower::Layer<S> for DecodeErrorsLayer {
    type Service = DecodeErrors<S>;

    fn layer(&self, inner: S) -> DecodeErrors<S> {
        DecodeErrors { inner }
    }
}

/// Rewrites a decode error's status on the way out.
#[derive(Debug, Clone)]
pub struct DecodeErrors<S> {
    inner: S,
}

/// The response future's mapping, as a plain function so the future type can be named.
type Fix<B, E> = fn(Result<http::Response<B>, E>) -> Result<http::Response<B>, E>;

fn fix<B, E>(r: Result<http::Response<B>, E>) -> Result<http::Response<B>, E> {
    r.map(rewrite)
}

impl<S, ReqBody, ResBody, E> tower::Service<http::Request<ReqBody>> for DecodeErrors<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>, Error = E>,
{
    type Response = http::Response<ResBody>;
    type Error = E;
    type Future = Map<S::Future, Fix<ResBody, E>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        self.inner
            .call(req)
            .map(fix::<ResBody, E> as Fix<ResBody, E>)
    }
}

/// `INTERNAL` + a decode-error message -> `INVALID_ARGUMENT`.
fn rewrite<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let headers = resp.headers_mut();
    let is_decode_error = headers
        .get("grpc-status")
        .is_some_and(|s| s.as_bytes() == b"13")
        && headers
            .get("grpc-message")
            .is_some_and(|m| m.as_bytes().starts_with(DECODE_ERROR_PREFIX));
    if is_decode_error {
        headers.insert("grpc-status", HeaderValue::from_static("3"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: &str, message: &str) -> http::Response<()> {
        http::Response::builder()
            .header("grpc-status", status)
            .header("grpc-message", message)
            .body(())
            .unwrap()
    }

    #[test]
    fn only_decode_errors_are_rewritten() {
        let cases = [
            ("13", "failed%20to%20decode%20Protobuf%20message:%20x", "3"),
            ("13", "internal%20storage%20error", "13"),
            ("3", "failed%20to%20decode%20Protobuf%20message", "3"),
            ("5", "service%20'x'%20does%20not%20exist", "5"),
        ];
        for (status, message, want) in cases {
            let r = rewrite(head(status, message));
            assert_eq!(r.headers()["grpc-status"], want, "{status} {message}");
        }
    }
}
