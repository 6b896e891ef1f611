//! The request's host, checked before routing: exactly one answer to "which host is this
//! for", or 400. Routing on the first of two `Host` headers while the backend received both
//! let a client route as one host and be served as another.
//!
//! Refused (RFC 9112 §3.2, RFC 9113 §8.3.1):
//! - more than one `Host` header;
//! - HTTP/1.1 without `Host` (HTTP/1.0 may omit it; HTTP/2 carries `:authority`);
//! - a `Host` that is not a valid authority (`host[:port]`, no user info, no spaces or `/`);
//! - a request target or `:authority` whose authority disagrees with `Host` (compared without
//!   case, and with the default port 80 written or not).

use http::Version;
use http::header::{HOST, HeaderMap, HeaderValue};
use http::uri::{Authority, Uri};

/// Why a request's host was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    /// Two or more `Host` headers.
    Multiple,
    /// HTTP/1.1 without `Host`.
    Missing,
    /// `Host` is not a valid authority.
    Invalid,
    /// The URI's authority and `Host` name different hosts.
    Mismatch,
}

/// The host the request is for: its `Host` header, or else the authority of its URI (HTTP/2's
/// `:authority`, or an absolute-form target); `None` for an HTTP/1.0 request with neither.
pub fn check(
    version: Version,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Option<HeaderValue>, HostError> {
    let mut all = headers.get_all(HOST).iter();
    let host = all.next();
    if all.next().is_some() {
        return Err(HostError::Multiple);
    }
    let Some(host) = host else {
        return match uri.authority() {
            Some(a) => Ok(HeaderValue::from_str(a.as_str()).ok()),
            None if version == Version::HTTP_11 => Err(HostError::Missing),
            None => Ok(None),
        };
    };
    match uri.authority() {
        // The common case (an origin-form target): only validity matters, and a plain
        // `name[:port]` is checked in place; building an `Authority` copies and parses the
        // value (about 1,400 instructions a request, issue 14's profile).
        None if plain_authority(host.as_bytes()) => {}
        None => {
            valid_authority(host.as_bytes()).ok_or(HostError::Invalid)?;
        }
        Some(target) => {
            let parsed = valid_authority(host.as_bytes()).ok_or(HostError::Invalid)?;
            if !same(target, &parsed) {
                return Err(HostError::Mismatch);
            }
        }
    }
    Ok(Some(host.clone()))
}

/// Whether `bytes` is `name[:port]`: a name of letters, digits, `-` and `.` starting with a
/// letter or digit, and a port of 1 to 5 digits that fits in 16 bits. Everything it accepts
/// [`valid_authority`] accepts too (tested); anything else goes there.
fn plain_authority(bytes: &[u8]) -> bool {
    let (name, port) = match bytes.iter().position(|&b| b == b':') {
        Some(i) => (&bytes[..i], Some(&bytes[i + 1..])),
        None => (bytes, None),
    };
    let name_ok = name.first().is_some_and(u8::is_ascii_alphanumeric)
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    let port_ok = port.is_none_or(|p| {
        (1..=5).contains(&p.len())
            && p.iter().all(u8::is_ascii_digit)
            && p.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')) <= u32::from(u16::MAX)
    });
    name_ok && port_ok
}

/// `bytes` as an authority without user info, if it is one.
fn valid_authority(bytes: &[u8]) -> Option<Authority> {
    if bytes.is_empty() || bytes.contains(&b'@') {
        return None;
    }
    let a = Authority::try_from(bytes).ok()?;
    // `Authority` accepts a port it cannot represent ("h:99999"); a Host header must not.
    let port = a.as_str().get(a.host().len()..).unwrap_or("");
    if let Some(digits) = port.strip_prefix(':')
        && !digits.is_empty()
        && digits.parse::<u16>().is_err()
    {
        return None;
    }
    Some(a)
}

/// Whether two authorities name the same host and port (80 when none is written).
fn same(a: &Authority, b: &Authority) -> bool {
    a.host().eq_ignore_ascii_case(b.host())
        && a.port_u16().unwrap_or(80) == b.port_u16().unwrap_or(80)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(hosts: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in hosts {
            h.append(HOST, HeaderValue::from_bytes(v.as_bytes()).unwrap());
        }
        h
    }

    /// (version, request target, Host headers, expected).
    type Case = (
        Version,
        &'static str,
        &'static [&'static str],
        Result<Option<&'static str>, HostError>,
    );

    #[test]
    fn host_table() {
        use HostError::*;
        let v11 = Version::HTTP_11;
        // (version, request target, Host headers, expected)
        let cases: &[Case] = &[
            (v11, "/", &["example.com"], Ok(Some("example.com"))),
            (
                v11,
                "/",
                &["example.com:8080"],
                Ok(Some("example.com:8080")),
            ),
            (v11, "/", &["[::1]:80"], Ok(Some("[::1]:80"))),
            (v11, "/", &["a", "b"], Err(Multiple)),
            (v11, "/", &["a", "a"], Err(Multiple)),
            (v11, "/", &[], Err(Missing)),
            (Version::HTTP_10, "/", &[], Ok(None)),
            (v11, "/", &["a b/c@d"], Err(Invalid)),
            (v11, "/", &["user@host"], Err(Invalid)),
            (v11, "/", &["host/path"], Err(Invalid)),
            (v11, "/", &[""], Err(Invalid)),
            (v11, "/", &["h:99999"], Err(Invalid)),
            (
                v11,
                "http://a.example/x",
                &["a.example"],
                Ok(Some("a.example")),
            ),
            (
                v11,
                "http://A.example:80/x",
                &["a.EXAMPLE"],
                Ok(Some("a.EXAMPLE")),
            ),
            (v11, "http://a.example/x", &["b.example"], Err(Mismatch)),
            (
                v11,
                "http://a.example:8080/x",
                &["a.example"],
                Err(Mismatch),
            ),
            // HTTP/2: :authority alone, or with a Host that agrees.
            (
                Version::HTTP_2,
                "http://h2.example/x",
                &[],
                Ok(Some("h2.example")),
            ),
            (
                Version::HTTP_2,
                "http://h2.example/x",
                &["other"],
                Err(Mismatch),
            ),
            // An absolute-form target without Host is served by its authority.
            (v11, "http://a.example/x", &[], Ok(Some("a.example"))),
        ];
        for (version, target, hosts, want) in cases {
            let uri: Uri = target.parse().unwrap();
            let got = check(*version, &uri, &headers(hosts));
            let got = got
                .as_ref()
                .map(|h| h.as_ref().map(|v| v.to_str().unwrap()));
            assert_eq!(
                got,
                want.as_ref().map(|o| *o),
                "{version:?} {target} {hosts:?}"
            );
        }
    }

    #[test]
    fn the_plain_fast_path_accepts_only_what_authority_accepts() {
        for ok in [
            "a",
            "example.com",
            "Example.COM:8080",
            "1.2.3.4:80",
            "a-b.c:0",
            "h:65535",
        ] {
            assert!(plain_authority(ok.as_bytes()), "{ok}");
            assert!(valid_authority(ok.as_bytes()).is_some(), "{ok}");
        }
        // Not for the fast path; the full parse decides (some are valid there).
        for other in [
            "",
            ":80",
            "h:",
            "h:65536",
            "h:123456",
            "h:8a",
            "[::1]:80",
            "a_b",
            "a b",
            "a/b",
            "u@h",
            "-a",
            ".a",
            "h:80:80",
            "caf\u{e9}",
        ] {
            assert!(!plain_authority(other.as_bytes()), "{other}");
        }
    }

    proptest::proptest! {
        #[test]
        fn whatever_the_fast_path_accepts_is_a_valid_authority(s in "[a-zA-Z0-9.:_-]{0,12}") {
            if plain_authority(s.as_bytes()) {
                proptest::prop_assert!(valid_authority(s.as_bytes()).is_some(), "{}", s);
            }
        }
    }
}
