//! A Redis URL that may carry a password: `Debug` prints `***`, there is no `Display`, and
//! what is shown anywhere is [`RedisUrl::redacted`] (the URL without its user info).

use std::fmt;

/// `redis://[user[:password]@]host[:port][/db]` or `rediss://…` (TLS).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    raw: String,
    /// Byte range of the password in `raw`, if any.
    password: Option<(usize, usize)>,
    /// `raw` without the user info.
    redacted: String,
}

/// Why a URL was refused; never contains the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{shown}': {reason}")]
pub struct UrlError {
    /// The URL without user info, cut to a short prefix.
    pub shown: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Longest part of a refused URL repeated in the error.
const SHOWN: usize = 64;

impl RedisUrl {
    /// Checks `text` is a `redis://` or `rediss://` URL with a host.
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        let text = text.trim();
        let (scheme, rest) = text.split_once("://").ok_or_else(|| UrlError {
            // Whatever precedes an '@' may be a password.
            shown: cut(text.rsplit('@').next().unwrap_or("")),
            reason: "expected redis://host:port or rediss://host:port".to_owned(),
        })?;
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let redacted = format!("{scheme}://{hostport}{}", &rest[authority_end..]);
        let err = |reason: &str| UrlError {
            shown: cut(&redacted),
            reason: reason.to_owned(),
        };
        if scheme != "redis" && scheme != "rediss" {
            return Err(err("scheme must be redis:// or rediss:// (TLS)"));
        }
        let host = match hostport.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => hostport.split(':').next().unwrap_or(""),
        };
        if host.is_empty() {
            return Err(err("missing host"));
        }
        if let Some((_, port)) = hostport.rsplit_once(':')
            && !hostport.ends_with(']')
            && port.parse::<u16>().is_err()
        {
            return Err(err("the port must be a number from 1 to 65535"));
        }
        // The password starts after "scheme://" and the user name's ':'.
        let password = userinfo.and_then(|u| {
            let start = scheme.len() + 3;
            u.find(':')
                .map(|colon| (start + colon + 1, start + u.len()))
        });
        Ok(Self {
            raw: text.to_owned(),
            password,
            redacted,
        })
    }

    /// The URL without user info, for logs, errors and reports.
    pub fn redacted(&self) -> String {
        self.redacted.clone()
    }

    /// The password, if the URL has one (to scrub it from error texts).
    pub fn password(&self) -> Option<&str> {
        self.password.and_then(|(a, b)| self.raw.get(a..b))
    }

    /// The whole URL, for the client library only.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// Parses a comma-separated list (the `--redis-url` flag).
    pub fn parse_list(text: &str) -> Result<Vec<Self>, UrlError> {
        text.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(Self::parse)
            .collect()
    }
}

fn cut(s: &str) -> String {
    match s.char_indices().nth(SHOWN) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_table() {
        // (input, redacted, password)
        let ok = [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379", None),
            (
                "rediss://cache.example:6380/2",
                "rediss://cache.example:6380/2",
                None,
            ),
            ("redis://:s3cret@h:1", "redis://h:1", Some("s3cret")),
            ("redis://gw:p%40ss@h:1/0", "redis://h:1/0", Some("p%40ss")),
            ("redis://user@h", "redis://h", None),
            ("redis://[::1]:6379", "redis://[::1]:6379", None),
        ];
        for (input, redacted, password) in ok {
            let url = RedisUrl::parse(input).unwrap();
            assert_eq!(url.redacted(), redacted, "{input}");
            assert_eq!(url.password(), password, "{input}");
            assert_eq!(url.expose(), input);
            assert_eq!(format!("{url:?}"), "***");
        }
        let bad = [
            ("127.0.0.1:6379", "expected redis://"),
            (":pw@127.0.0.1:6379", "expected redis://"),
            ("http://h:1", "scheme must be"),
            ("redis://:pw@:1", "missing host"),
            ("redis://:pw@h:port", "port must be"),
        ];
        for (input, why) in bad {
            let e = RedisUrl::parse(input).unwrap_err();
            assert!(e.to_string().contains(why), "{input}: {e}");
            assert!(!e.to_string().contains("pw@"), "{input}: {e}");
        }
        let list = RedisUrl::parse_list("redis://a:1, redis://b:2,").unwrap();
        assert_eq!(list.len(), 2);
    }
}
