//! Fair blame: whose fault a failed upstream attempt is.
//!
//! Only the backend's own failures count toward passive ejection and `upstream_errors`: a
//! refused or timed-out connect, a reset, a malformed response, a 5xx. A failure the client's
//! request caused (bad body framing, the client going away, a stalled upload) is the
//! client's, and one caused by the gateway running short of its own resources (file
//! descriptors, socket buffers, the endpoint's connection cap) is nobody's to charge: blaming
//! the endpoint for either would let any client, or any flood, eject healthy backends.
//!
//! This module only sorts; the request path acts on the verdict. Whatever sits under the
//! request path must keep the errors it returns inspectable this way (a source chain that
//! reaches the `hyper::Error` or `io::Error`, or [`CapReached`]).

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, StatusCode};

use crate::stats::UpstreamError;
use crate::upstream::body::ClientFault;

/// The verdict on one failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The backend failed: counted, and toward its endpoint's ejection.
    Backend(UpstreamError),
    /// The client's request caused it.
    Client(ClientFault),
    /// The gateway ran short of its own resources.
    Local,
}

/// The per-endpoint connection cap was reached and no connection freed up in time. The
/// gateway's own limit, not the endpoint's failure.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the endpoint's connection cap is reached")]
pub struct CapReached;

/// errno values that mean "this process or host is out of something", not "the peer failed":
/// EMFILE, ENFILE (file descriptors), ENOBUFS, ENOMEM (buffers), EADDRNOTAVAIL (no ephemeral
/// port left). Linux numbering.
const LOCAL_ERRNOS: [i32; 5] = [24, 23, 105, 12, 99];

/// Whether `err` is the gateway's own shortage (see [`LOCAL_ERRNOS`]).
pub fn is_local_shortage(err: &std::io::Error) -> bool {
    err.raw_os_error()
        .is_some_and(|n| LOCAL_ERRNOS.contains(&n))
}

/// Sorts a failed attempt: `err` and its sources are inspected; `connecting` says whether it
/// happened while opening the connection (then, if not local, a connect failure). `client` is
/// what the request body recorded, if it failed on the client's side: that decides first,
/// since the attempt's own error then only echoes it.
pub fn blame(
    err: &(dyn std::error::Error + 'static),
    connecting: bool,
    client: Option<ClientFault>,
) -> Blame {
    if let Some(fault) = client {
        return Blame::Client(fault);
    }
    sort(Some(err), connecting)
}

/// Sorts a failed attempt made without the pool (a CONNECT tunnel's own connection), as
/// [`blame`] does with no client fault.
pub fn blame_unpooled(err: &(dyn std::error::Error + 'static), connecting: bool) -> Blame {
    sort(Some(err), connecting)
}

/// Whether an exchange failed the way one on a connection the backend closed while it was
/// idle does: closed, canceled, cut before the whole answer, reset (nothing local, no
/// timeout, no malformed answer). On a pooled connection that is a stale connection, not
/// the endpoint failing.
pub fn is_stale(err: &(dyn std::error::Error + 'static)) -> bool {
    sort(Some(err), false) == Blame::Backend(UpstreamError::Reset)
}

fn sort(first: Option<&(dyn std::error::Error + 'static)>, connecting: bool) -> Blame {
    let mut reset = false;
    let mut source = first;
    while let Some(e) = source {
        if e.downcast_ref::<CapReached>().is_some() {
            return Blame::Local;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if is_local_shortage(io) {
                return Blame::Local;
            }
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            ) {
                reset = true;
            }
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>()
            && (h.is_incomplete_message() || h.is_canceled() || h.is_closed())
        {
            reset = true;
        }
        source = e.source();
    }
    if connecting {
        Blame::Backend(UpstreamError::Connect)
    } else if reset {
        Blame::Backend(UpstreamError::Reset)
    } else {
        Blame::Backend(UpstreamError::Other)
    }
}

/// Checks a backend's response head before it goes to the client. `Err` names what is
/// wrong; such a response is a 502 and the endpoint's failure:
/// - a status outside 100-599 (HTTP defines no other class);
/// - `101 Switching Protocols` when the request asked for no upgrade (the client would be
///   handed a raw connection it did not ask for);
/// - both `Content-Length` and `Transfer-Encoding` (RFC 9112 §6.1: a sender must not send
///   both; a response framed two ways is how responses get smuggled).
pub fn check_response(
    status: StatusCode,
    headers: &HeaderMap,
    upgrade_asked: bool,
) -> Result<(), &'static str> {
    if !(100..=599).contains(&status.as_u16()) {
        return Err("status code outside 100-599");
    }
    if status == StatusCode::SWITCHING_PROTOCOLS && !upgrade_asked {
        return Err("101 Switching Protocols to a request that asked for no upgrade");
    }
    if headers.contains_key(CONTENT_LENGTH) && headers.contains_key(TRANSFER_ENCODING) {
        return Err("both Content-Length and Transfer-Encoding");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_checks_table() {
        let cl = |h: &mut HeaderMap| {
            h.insert(CONTENT_LENGTH, "2".parse().unwrap());
        };
        let te = |h: &mut HeaderMap| {
            h.insert(TRANSFER_ENCODING, "chunked".parse().unwrap());
        };
        // (status, content-length, transfer-encoding, upgrade asked, ok)
        let cases = [
            (200, true, false, false, true),
            (200, false, true, false, true),
            (200, true, true, false, false),
            (101, false, false, true, true),
            (101, false, false, false, false),
            (599, false, false, false, true),
            (600, false, false, false, false),
            (999, false, false, false, false),
            (100, false, false, false, true),
        ];
        for (code, with_cl, with_te, upgrade, ok) in cases {
            let mut h = HeaderMap::new();
            if with_cl {
                cl(&mut h);
            }
            if with_te {
                te(&mut h);
            }
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(
                check_response(status, &h, upgrade).is_ok(),
                ok,
                "{code} cl={with_cl} te={with_te} upgrade={upgrade}"
            );
        }
    }

    #[test]
    fn local_shortages_are_recognised_by_errno() {
        for n in LOCAL_ERRNOS {
            assert!(is_local_shortage(&std::io::Error::from_raw_os_error(n)));
        }
        // ECONNREFUSED (111) and ETIMEDOUT (110) are the peer's.
        for n in [111, 110, 104] {
            assert!(!is_local_shortage(&std::io::Error::from_raw_os_error(n)));
        }
    }
}
