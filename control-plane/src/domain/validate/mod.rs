//! Field-level validation helpers shared by the domain conversions.
//!
//! Each check returns the problem without the field name; [`Problems`] prefixes the field, so
//! one request's messages read `field: what is wrong` and all of them are reported at once.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// Why a request's message is invalid: one entry per problem, each `field: what is wrong`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("; "))]
pub struct ValidationError {
    problems: Vec<String>,
}

impl ValidationError {
    pub(crate) fn new(problems: Vec<String>) -> Self {
        Self { problems }
    }

    /// A single problem with one field.
    pub fn field(field: &str, problem: impl std::fmt::Display) -> Self {
        Self::new(vec![format!("{field}: {problem}")])
    }

    /// Every problem found, in field order.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }
}

/// Collects every problem found in one request, each prefixed by the field it concerns.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    list: Vec<String>,
}

impl Problems {
    /// Records that `field` is wrong because of `problem`.
    pub(crate) fn add(&mut self, field: impl fmt::Display, problem: impl fmt::Display) {
        self.list.push(format!("{field}: {problem}"));
    }

    /// Records the error of `result` under `field` and returns its value, if any.
    pub(crate) fn check<T>(
        &mut self,
        field: impl fmt::Display,
        result: Result<T, String>,
    ) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(problem) => {
                self.add(field, problem);
                None
            }
        }
    }

    /// `Ok(value)` if nothing was recorded, else every problem joined into one error.
    pub(crate) fn finish<T>(self, value: Option<T>) -> Result<T, ValidationError> {
        match value {
            Some(v) if self.list.is_empty() => Ok(v),
            // A missing value without a recorded problem would be a bug in a conversion;
            // say so rather than panic.
            _ if self.list.is_empty() => Err(ValidationError::new(vec![
                "request: invalid (no detail available)".to_owned(),
            ])),
            _ => {
                let mut list = self.list;
                if list.len() > MAX_PROBLEMS {
                    // A status message travels in an HTTP/2 header: a thousand bad endpoints
                    // listed in full would exceed the header limit and reach the client as a
                    // transport error instead of this one.
                    let more = list.len() - MAX_PROBLEMS;
                    list.truncate(MAX_PROBLEMS);
                    list.push(format!("and {more} more problems"));
                }
                Err(ValidationError::new(list))
            }
        }
    }
}

/// Longest DNS label, and so the longest service or policy name.
const MAX_LABEL: usize = 63;
/// Longest host name (RFC 1035).
const MAX_HOST: usize = 253;
/// Most problems listed in one error; the rest are counted.
const MAX_PROBLEMS: usize = 10;
/// Longest part of a client's value echoed back in an error: enough to recognise it, never
/// megabytes.
pub(crate) const MAX_ECHO: usize = 64;
/// Longest path prefix or health-check path; far beyond any real route, small enough that
/// a hostile client cannot store megabytes per service.
const MAX_PATH: usize = 1024;

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_LABEL
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A service or policy name: a lowercase DNS label.
pub(crate) fn name(s: &str) -> Result<(), String> {
    if is_label(s) {
        Ok(())
    } else {
        Err(format!(
            "'{}' must be a lowercase DNS label (a-z, 0-9, '-', 1-63 chars, \
             not starting or ending with '-')",
            echo(s)
        ))
    }
}

/// A host name without port, lower-cased (DNS names are case-insensitive, so `Example.COM`
/// and `example.com` must not become two different routes).
pub(crate) fn hostname(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    let ok = !lower.is_empty()
        && lower.len() <= MAX_HOST
        && lower.split('.').all(is_label)
        && !looks_like_bad_ipv4(&lower);
    if ok {
        Ok(lower)
    } else if s.contains(':') {
        Err(format!("'{}' must be a host name without a port", echo(s)))
    } else {
        Err(format!("'{}' is not a valid host name", echo(s)))
    }
}

/// `999.1.1.1` passes the label rules but is neither a usable name nor an address.
fn looks_like_bad_ipv4(s: &str) -> bool {
    let last = s.rsplit('.').next().unwrap_or(s);
    last.bytes().all(|c| c.is_ascii_digit()) && s.parse::<Ipv4Addr>().is_err()
}

/// Characters a path may never contain: they would end the path (`?`, `#`), break the
/// request line (whitespace, controls) or be ambiguous (non-ASCII must be percent-encoded).
fn bad_path_char(c: char) -> bool {
    !c.is_ascii_graphic() || c == '#'
}

/// A route's path prefix: starts with '/', no query, fragment, whitespace, empty segment or
/// trailing '/'. Rejecting the trailing '/' (rather than silently dropping it) keeps what the
/// operator wrote and what is matched identical: prefixes match on segment boundaries anyway.
pub(crate) fn path_prefix(s: &str) -> Result<(), String> {
    if !s.starts_with('/') {
        return Err("must start with '/'".to_owned());
    }
    if s.len() > MAX_PATH {
        return Err(format!("must be at most {MAX_PATH} bytes"));
    }
    if s.chars().any(|c| bad_path_char(c) || c == '?') {
        return Err(format!(
            "'{}' must not contain '?', '#', whitespace or non-ASCII characters",
            echo(s)
        ));
    }
    if s.contains("//") {
        return Err(format!(
            "'{}' must not contain an empty segment ('//')",
            echo(s)
        ));
    }
    // The data plane routes on normalised paths (dot segments removed, RFC 3986 §5.2.4), so a
    // prefix holding one could never match, or would match what it does not say.
    let lower = s.to_ascii_lowercase();
    if lower
        .split('/')
        .any(|seg| matches!(seg.replace("%2e", ".").as_str(), "." | ".."))
    {
        return Err(format!(
            "'{}' must not contain a dot segment ('.' or '..', also as %2e)",
            echo(s)
        ));
    }
    if lower.contains("%00") {
        return Err(format!(
            "'{}' must not contain an encoded NUL (%00)",
            echo(s)
        ));
    }
    if lower.contains("%2f") {
        return Err(format!(
            "'{}' must not contain an encoded slash (%2F): segments are split on '/' only",
            echo(s)
        ));
    }
    if s.len() > 1 && s.ends_with('/') {
        return Err(format!(
            "'{}' must not end with '/' (write '{}'; prefixes match on segment boundaries)",
            echo(s),
            echo(s.trim_end_matches('/'))
        ));
    }
    Ok(())
}

/// A health-check path: starts with '/', may carry a query, no fragment or whitespace.
pub(crate) fn request_path(s: &str) -> Result<(), String> {
    if !s.starts_with('/') {
        return Err("must start with '/'".to_owned());
    }
    if s.len() > MAX_PATH {
        return Err(format!("must be at most {MAX_PATH} bytes"));
    }
    if s.chars().any(bad_path_char) {
        return Err(format!(
            "'{}' must not contain '#', whitespace or non-ASCII characters",
            echo(s)
        ));
    }
    Ok(())
}

/// An HTTP header name (RFC 9110 token), lower-cased since header names are case-insensitive.
pub(crate) fn header_name(s: &str) -> Result<String, String> {
    const TCHAR_EXTRA: &[u8] = b"!#$%&'*+-.^_`|~";
    if s.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if s.len() > 256
        || !s
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || TCHAR_EXTRA.contains(&c))
    {
        return Err(format!("'{}' is not a valid HTTP header name", echo(s)));
    }
    Ok(s.to_ascii_lowercase())
}

/// A backend base URL, `http://host:port`, as its parts. The port is required so that what
/// the data plane dials is never a guess; a single trailing '/' is accepted and dropped.
pub(crate) fn endpoint(raw: &str) -> Result<(String, u16), String> {
    let Some(rest) = raw
        .strip_prefix("http://")
        .or_else(|| raw.strip_prefix("https://"))
    else {
        return Err(format!("'{}' is not an http:// or https:// URL", echo(raw)));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('@') {
        return Err(format!(
            "'{}' must not carry credentials (http://host:port)",
            echo(raw)
        ));
    }
    if rest.contains(['/', '?', '#']) {
        return Err(format!(
            "'{}' must not have a path, query or fragment (http://host:port)",
            echo(raw)
        ));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let Some((addr, port)) = v6.split_once("]:") else {
            return Err(format!(
                "'{}' needs an explicit port (http://[addr]:port)",
                echo(raw)
            ));
        };
        if addr.parse::<Ipv6Addr>().is_err() {
            return Err(format!(
                "'{}': '{}' is not an IPv6 address",
                echo(raw),
                echo(addr)
            ));
        }
        (format!("[{}]", addr.to_ascii_lowercase()), port)
    } else {
        let Some((host, port)) = rest.rsplit_once(':') else {
            return Err(format!(
                "'{}' needs an explicit port (http://host:port)",
                echo(raw)
            ));
        };
        let host = hostname(host)
            .map_err(|_| format!("'{}': '{}' is not a valid host", echo(raw), echo(host)))?;
        (host, port)
    };
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok((host, p)),
        _ => Err(format!(
            "'{}': port '{}' must be a number from 1 to 65535",
            echo(raw),
            echo(port)
        )),
    }
}

/// Converts an optional protobuf duration, filling `default` when unset and requiring the
/// result to lie in `min..=max`.
pub(crate) fn duration(
    value: Option<prost_types::Duration>,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, String> {
    let d = match value {
        None => default,
        Some(prost_types::Duration { seconds, nanos }) => {
            let (Ok(secs), Ok(nanos)) = (u64::try_from(seconds), u32::try_from(nanos)) else {
                return Err("must not be negative".to_owned());
            };
            if nanos >= 1_000_000_000 {
                return Err("is not a valid duration (nanos out of range)".to_owned());
            }
            Duration::new(secs, nanos)
        }
    };
    if d < min || d > max {
        return Err(format!("must be between {} and {}", human(min), human(max)));
    }
    Ok(d)
}

/// Formats a duration the way operators write them (`500ms`, `5s`, `1m`, `24h`): the shared
/// grammar, so a limit in a message can be pasted back into a flag or a config file.
pub(crate) fn human(d: Duration) -> String {
    gw_ops::duration::format(d)
}

/// A domain duration as protobuf.
pub(crate) fn to_pb_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        // Always below 1e9, so it fits.
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// `s` as echoed back in an error: cut to [`MAX_ECHO`] bytes (with `...` when cut), so a
/// client that sends a megabyte does not get it back in a status message.
pub(crate) fn echo(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= MAX_ECHO {
        std::borrow::Cow::Borrowed(s)
    } else {
        std::borrow::Cow::Owned(format!("{}...", truncate(s, MAX_ECHO)))
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests;
