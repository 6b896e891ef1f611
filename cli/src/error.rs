//! The one error type gwctl's commands return, worded for the operator.
//!
//! `main` prints it as a single `error: …` line, so every variant's message is one line that
//! says what failed and, where there is one, what to do about it. gRPC statuses are turned
//! into these in [`Error::from_status`], the only place that knows the status codes.

use std::net::SocketAddr;
use std::time::Duration;

use tonic::Code;

/// Why a gwctl command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The control plane address given with `--control-plane` is not usable.
    #[error("invalid --control-plane '{address}': {reason}")]
    BadAddress {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A TLS file given to gwctl is unusable.
    #[error("invalid {flag}: {reason}")]
    BadTls {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The token cannot be sent as an HTTP header value.
    #[error("invalid --token: it may only contain visible ASCII characters")]
    BadToken,
    /// No connection could be made, or it broke.
    #[error("cannot reach the control plane at {address} ({reason})")]
    Unreachable {
        /// The control plane address.
        address: String,
        /// Why, in a few words (`connection refused`, `timed out after 3s`, …).
        reason: String,
    },
    /// The control plane answered with an error.
    #[error("{kind}: {message}")]
    Rejected {
        /// What kind of refusal (`invalid argument`, `not found`, …).
        kind: &'static str,
        /// The server's message, on one line, with a hint appended where one helps.
        message: String,
    },
    /// The flags make sense to clap but not together (e.g. `update` with nothing to change).
    #[error("{0}")]
    Usage(String),
    /// A configuration file (`apply -f`) is unreadable or invalid: each problem with its
    /// file, line and field.
    #[error("{0}")]
    File(String),
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    /// `gwctl dev` could not start its gateway, or a part of it failed.
    #[error(transparent)]
    Dev(#[from] DevError),
}

/// Why `gwctl dev` could not start or stopped with a failure. One line each.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// A listener could not be bound.
    #[error("{flag} {address}: {reason}")]
    Bind {
        /// The flag that gave the address.
        flag: &'static str,
        /// The address.
        address: SocketAddr,
        /// Why, e.g. `address already in use`.
        reason: String,
    },
    /// `--redis-url` is not a Redis URL.
    #[error("--redis-url: {0}")]
    RedisUrl(#[source] gw_data_plane::limiter::redis::UrlError),
    /// A bound listener's address could not be read.
    #[error("cannot read a listener's address: {0}")]
    LocalAddr(#[source] std::io::Error),
    /// Signal handlers could not be installed.
    #[error("cannot listen for Ctrl-C/SIGTERM: {0}")]
    Signals(#[source] std::io::Error),
    /// The temporary directory could not be created.
    #[error("cannot create a temporary directory: {0}")]
    TempDir(#[source] std::io::Error),
    /// The control plane failed.
    #[error("control plane: {0}")]
    ControlPlane(#[source] gw_control_plane::ServeError),
    /// The data plane failed.
    #[error("data plane: {0}")]
    DataPlane(#[source] gw_data_plane::ServeError),
    /// A component returned without being asked to stop.
    #[error("{0} stopped unexpectedly")]
    Stopped(&'static str),
    /// A component's task panicked or was cancelled.
    #[error("a component crashed: {0}")]
    Crashed(String),
    /// The data plane rejected the demo config.
    #[error("the data plane rejected config version {version}: {reason}")]
    Rejected {
        /// The rejected version.
        version: u64,
        /// The data plane's reason.
        reason: String,
    },
    /// The data plane did not acknowledge the demo config in time.
    #[error("the data plane did not take the demo config within {waited}: {state}")]
    NotServing {
        /// The deadline, formatted.
        waited: String,
        /// What the control plane last knew of the node.
        state: String,
    },
    /// A second signal arrived while stopping; the rest was cut short.
    #[error("stopped at once on a second signal, without waiting for in-flight requests")]
    Forced,
}

/// tonic's message for its own client-side timeout (`tonic::TimeoutExpired`).
const TIMEOUT_EXPIRED: &str = "Timeout expired";

/// [`Error::Rejected`]'s kind for `ALREADY_EXISTS`.
const ALREADY_EXISTS: &str = "already exists";

impl Error {
    /// Turns a gRPC status from the control plane at `address`, called with a `timeout`, into
    /// an operator-facing error.
    ///
    /// The server's message is kept verbatim (it names the field and the fix), flattened to one
    /// line so that the single-line error contract holds whatever the server sends.
    pub fn from_status(address: &str, timeout: Duration, status: &tonic::Status) -> Self {
        let message = one_line(status.message());
        let rejected = |kind: &'static str, message: String| Error::Rejected { kind, message };
        match status.code() {
            Code::InvalidArgument => rejected("invalid argument", message),
            Code::NotFound => rejected("not found", message),
            Code::AlreadyExists => rejected(ALREADY_EXISTS, message),
            Code::FailedPrecondition => rejected("failed precondition", message),
            Code::Unauthenticated => rejected(
                "unauthenticated",
                with_hint(message, "pass --token or set GW_ADMIN_TOKEN"),
            ),
            Code::PermissionDenied => rejected("permission denied", message),
            Code::Unavailable => Error::Unreachable {
                address: address.to_string(),
                reason: or_default(message, "unavailable"),
            },
            // A connection that broke under the call is Cancelled too ("operation was canceled:
            // connection closed"), e.g. a control plane refusing the client certificate once
            // the TLS 1.3 handshake had finished: say so rather than blame the clock.
            Code::Cancelled if !message.is_empty() && message != TIMEOUT_EXPIRED => {
                Error::Unreachable {
                    address: address.to_string(),
                    reason: message,
                }
            }
            // tonic reports its own client-side timeout as Cancelled ("Timeout expired").
            Code::DeadlineExceeded | Code::Cancelled => Error::Unreachable {
                address: address.to_string(),
                reason: format!(
                    "no answer within {}; raise --timeout if it is just slow",
                    crate::duration::format(timeout)
                ),
            },
            Code::Unimplemented => rejected(
                "not supported",
                format!(
                    "the control plane at {address} does not know this call; \
                     is it older than gwctl?"
                ),
            ),
            Code::Internal => rejected(
                "control plane internal error",
                or_default(message, "see the control plane's log"),
            ),
            // The connection broke under the call (tonic says only "transport error"): the
            // cause is in the source chain, e.g. the TLS alert of a control plane that refused
            // the client certificate once the handshake had finished (TLS 1.3).
            Code::Unknown if std::error::Error::source(status).is_some() => Error::Unreachable {
                address: address.to_string(),
                reason: std::error::Error::source(status)
                    .map(crate::client::innermost)
                    .unwrap_or_default(),
            },
            other => rejected("request failed", format!("{other:?}: {message}")),
        }
    }
}

impl Error {
    /// Like [`Error::from_status`], for `rpc`, a call that control planes older than gwctl may
    /// lack: UNIMPLEMENTED then names the call and the fix instead of guessing.
    pub fn from_call_status(
        address: &str,
        timeout: Duration,
        rpc: &str,
        status: &tonic::Status,
    ) -> Self {
        if status.code() == Code::Unimplemented {
            return Error::Rejected {
                kind: "not supported",
                message: format!(
                    "the control plane at {address} does not support {rpc}; upgrade it"
                ),
            };
        }
        Self::from_status(address, timeout, status)
    }

    /// Whether the control plane refused to create something because it exists.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Error::Rejected { kind, .. } if *kind == ALREADY_EXISTS)
    }
}

/// Collapses line breaks so a multi-line server message still prints as one line.
fn one_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn with_hint(message: String, hint: &str) -> String {
    // The control plane's own message may already point at the flag; say it once.
    if message.contains("--token") {
        message
    } else if message.is_empty() {
        hint.to_string()
    } else {
        format!("{message} ({hint})")
    }
}

fn or_default(message: String, default: &str) -> String {
    if message.is_empty() {
        default.to_string()
    } else {
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Status;

    #[test]
    fn statuses_become_one_readable_line() {
        let addr = "http://127.0.0.1:50051";
        let cases = [
            (
                Status::invalid_argument("endpoints[1]: 'htp://x' is not an http:// URL"),
                "invalid argument: endpoints[1]: 'htp://x' is not an http:// URL",
            ),
            (
                Status::not_found("service 'x' not found"),
                "not found: service 'x' not found",
            ),
            (
                Status::already_exists("service 'x' already exists"),
                "already exists: service 'x' already exists",
            ),
            (
                Status::failed_precondition("remove policies a, b first"),
                "failed precondition: remove policies a, b first",
            ),
            (
                Status::unauthenticated("missing token"),
                "unauthenticated: missing token (pass --token or set GW_ADMIN_TOKEN)",
            ),
            (
                Status::unauthenticated("missing admin token (gwctl --token)"),
                "unauthenticated: missing admin token (gwctl --token)",
            ),
            (
                Status::unavailable("connection reset"),
                "cannot reach the control plane at http://127.0.0.1:50051 (connection reset)",
            ),
            (
                Status::cancelled("Timeout expired"),
                "cannot reach the control plane at http://127.0.0.1:50051 (no answer within \
                 30s; raise --timeout if it is just slow)",
            ),
            (
                Status::cancelled("operation was canceled: connection closed"),
                "cannot reach the control plane at http://127.0.0.1:50051 (operation was \
                 canceled: connection closed)",
            ),
            (
                Status::unimplemented(""),
                "not supported: the control plane at http://127.0.0.1:50051 does not know \
                 this call; is it older than gwctl?",
            ),
            (
                Status::internal("line one\nline two\n"),
                "control plane internal error: line one; line two",
            ),
            (
                Status::resource_exhausted("slow down"),
                "request failed: ResourceExhausted: slow down",
            ),
        ];
        for (status, want) in cases {
            let got = Error::from_status(addr, Duration::from_secs(30), &status).to_string();
            assert_eq!(got, want);
            assert!(!got.contains('\n'));
        }
    }

    #[test]
    fn unimplemented_names_the_call_and_the_fix() {
        let addr = "http://127.0.0.1:50051";
        let timeout = Duration::from_secs(30);
        for status in [
            Status::unimplemented(""),
            Status::unimplemented("GetStats is not available yet"),
        ] {
            assert_eq!(
                Error::from_call_status(addr, timeout, "GetStats", &status).to_string(),
                "not supported: the control plane at http://127.0.0.1:50051 does not support \
                 GetStats; upgrade it"
            );
        }
        // Every other status reads as it does for any call.
        let status = Status::not_found("service 'x' not found");
        assert_eq!(
            Error::from_call_status(addr, timeout, "GetStats", &status).to_string(),
            "not found: service 'x' not found"
        );
    }
}
