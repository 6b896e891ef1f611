//! The compiled route table: which service takes a request, and the path it is forwarded with.
//!
//! Matching, in order:
//! 1. Routes that list the request's host (Host header or `:authority`, port removed,
//!    case-insensitive). If one of them matches the path, the longest such prefix wins.
//! 2. Otherwise, routes with no host list, again longest prefix first.
//!
//! Prefixes match on segment boundaries: `/api` matches `/api`, `/api/` and `/api/x`, never
//! `/apix`; `/` matches every path. Lookup walks the request path's segment boundaries from the
//! longest candidate down, with one hash lookup each, so its cost depends on the path's depth,
//! not on how many routes exist.

use std::collections::HashMap;

use http::uri::PathAndQuery;

/// A route as compiled from config: what to match and which service (by index) it selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Path prefix, starting with `/`.
    pub path_prefix: String,
    /// Lowercase host names; empty: any host.
    pub hosts: Vec<String>,
    /// Index of the service in the snapshot.
    pub service: usize,
}

/// Why a route table could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Two routes claim the same host and prefix.
    #[error("path_prefix '{prefix}' is claimed twice for host '{host}'")]
    Duplicate {
        /// The normalized prefix.
        prefix: String,
        /// The host, or `*` for routes without a host list.
        host: String,
    },
}

/// Prefix -> service index, for one host (or for "any host").
type PrefixMap = HashMap<Box<str>, usize>;

/// The route table of one config version. Immutable once built.
#[derive(Debug, Default)]
pub struct RouteTable {
    by_host: HashMap<Box<str>, PrefixMap>,
    any_host: PrefixMap,
}

/// The outcome of a successful match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMatch {
    /// Index of the selected service.
    pub service: usize,
    /// Length in bytes of the matched prefix within the request path (0 for the `/` route,
    /// so that stripping it leaves the path unchanged).
    pub prefix_len: usize,
}

/// Removes a trailing `/` (except from `/` itself), so `/api/` and `/api` are the same route.
pub fn normalize_prefix(prefix: &str) -> &str {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() { "" } else { trimmed }
}

impl RouteTable {
    /// Builds the table. Prefixes are normalized with [`normalize_prefix`] (the root route is
    /// stored as the empty string).
    pub fn build(routes: &[RouteSpec]) -> Result<Self, RouteError> {
        let mut table = RouteTable::default();
        for route in routes {
            let prefix = normalize_prefix(&route.path_prefix);
            if route.hosts.is_empty() {
                insert(&mut table.any_host, prefix, "*", route.service)?;
            } else {
                for host in &route.hosts {
                    let map = table.by_host.entry(host.as_str().into()).or_default();
                    insert(map, prefix, host, route.service)?;
                }
            }
        }
        Ok(table)
    }

    /// Finds the service for `host` (may include a port; may be absent) and `path`.
    pub fn lookup(&self, host: Option<&str>, path: &str) -> Option<RouteMatch> {
        if !self.by_host.is_empty()
            && let Some(host) = host
        {
            let host = strip_port(host);
            // Host names are stored lowercase; only a mixed-case request pays for lowercasing.
            let found = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                self.by_host.get(host.to_ascii_lowercase().as_str())
            } else {
                self.by_host.get(host)
            };
            if let Some(found) = found.and_then(|map| longest(map, path)) {
                return Some(found);
            }
        }
        longest(&self.any_host, path)
    }
}

fn insert(map: &mut PrefixMap, prefix: &str, host: &str, service: usize) -> Result<(), RouteError> {
    if map.insert(prefix.into(), service).is_some() {
        return Err(RouteError::Duplicate {
            prefix: if prefix.is_empty() {
                "/".into()
            } else {
                prefix.into()
            },
            host: host.into(),
        });
    }
    Ok(())
}

/// Tries `path` itself, then each shorter prefix ending before a `/`, then the root route.
fn longest(map: &PrefixMap, path: &str) -> Option<RouteMatch> {
    if map.is_empty() {
        return None;
    }
    let mut candidate = path.trim_end_matches('/');
    loop {
        if let Some(&service) = map.get(candidate) {
            return Some(RouteMatch {
                service,
                prefix_len: candidate.len(),
            });
        }
        if candidate.is_empty() {
            return None;
        }
        candidate = match candidate.rfind('/') {
            Some(i) => &candidate[..i],
            None => "",
        };
    }
}

/// `example.com:8080` -> `example.com`; `[::1]:80` -> `[::1]`.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rfind(':') {
        Some(i) => &host[..i],
        None => host,
    }
}

/// Removes the first `prefix_len` bytes of the path, keeping the query: `/api/x?q=1` -> `/x?q=1`,
/// `/api` -> `/`, `/api?q` -> `/?q`. `None` if the result is not a valid path (cannot happen for
/// a prefix that matched on a segment boundary, but the request path is untrusted).
pub fn strip_prefix(pq: &PathAndQuery, prefix_len: usize) -> Option<PathAndQuery> {
    let path = pq.path();
    let rest = path.get(prefix_len..)?;
    let query = pq.query();
    let mut out = String::with_capacity(rest.len() + query.map_or(0, |q| q.len() + 1) + 1);
    if !rest.starts_with('/') {
        out.push('/');
    }
    out.push_str(rest);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    PathAndQuery::from_maybe_shared(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, hosts: &[&str], service: usize) -> RouteSpec {
        RouteSpec {
            path_prefix: prefix.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            service,
        }
    }

    #[test]
    fn lookup_table() {
        let table = RouteTable::build(&[
            route("/", &[], 0),
            route("/api", &[], 1),
            route("/api/v2/", &[], 2),
            route("/api", &["example.com"], 3),
            route("/only-host", &["example.com", "other.org"], 4),
        ])
        .unwrap();
        // (host, path, expected service, expected prefix_len)
        let cases: &[(Option<&str>, &str, usize, usize)] = &[
            (None, "/", 0, 0),
            (None, "/apix", 0, 0),
            (None, "/api", 1, 4),
            (None, "/api/", 1, 4),
            (None, "/api/x", 1, 4),
            (None, "/api/v2", 2, 7),
            (None, "/api/v2/users/1", 2, 7),
            (None, "/api/v20", 1, 4),
            (Some("example.com"), "/api/x", 3, 4),
            (Some("EXAMPLE.com:8080"), "/api", 3, 4),
            (Some("example.com"), "/elsewhere", 0, 0),
            (Some("other.org"), "/api/x", 1, 4),
            (Some("other.org"), "/only-host/a", 4, 10),
            (None, "/only-host/a", 0, 0),
        ];
        for &(host, path, service, prefix_len) in cases {
            assert_eq!(
                table.lookup(host, path),
                Some(RouteMatch {
                    service,
                    prefix_len
                }),
                "host {host:?} path {path}"
            );
        }
    }

    #[test]
    fn no_match_without_root_route() {
        let table =
            RouteTable::build(&[route("/api", &[], 0), route("/h", &["a.com"], 1)]).unwrap();
        assert_eq!(table.lookup(None, "/"), None);
        assert_eq!(table.lookup(None, "/apix"), None);
        assert_eq!(table.lookup(None, "/h"), None);
        assert_eq!(table.lookup(Some("b.com"), "/h"), None);
        assert_eq!(table.lookup(None, ""), None);
    }

    #[test]
    fn duplicates_are_rejected() {
        let err = RouteTable::build(&[route("/api", &[], 0), route("/api/", &[], 1)]).unwrap_err();
        assert_eq!(
            err,
            RouteError::Duplicate {
                prefix: "/api".into(),
                host: "*".into()
            }
        );
        // The same prefix under different host sets is fine.
        RouteTable::build(&[route("/api", &[], 0), route("/api", &["a.com"], 1)]).unwrap();
    }

    #[test]
    fn strip_prefix_table() {
        let cases = [
            ("/api/x?q=1", 4, "/x?q=1"),
            ("/api", 4, "/"),
            ("/api/", 4, "/"),
            ("/api?q", 4, "/?q"),
            ("/api/a/b?x=1&y=2", 4, "/a/b?x=1&y=2"),
            ("/anything?z", 0, "/anything?z"),
        ];
        for (input, len, want) in cases {
            let pq = PathAndQuery::from_static(input);
            assert_eq!(strip_prefix(&pq, len).unwrap().as_str(), want, "{input}");
        }
    }

    #[test]
    fn strip_port_table() {
        let cases = [
            ("a.com", "a.com"),
            ("a.com:80", "a.com"),
            ("[::1]:8080", "[::1]"),
            ("[::1]", "[::1]"),
            ("127.0.0.1:1", "127.0.0.1"),
        ];
        for (input, want) in cases {
            assert_eq!(strip_port(input), want);
        }
    }

    /// The obvious definition: among prefixes that equal the path or are followed in it by
    /// `/` (the root prefix matching everything), the longest.
    fn reference(prefixes: &[String], path: &str) -> Option<usize> {
        prefixes
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                let p = normalize_prefix(p);
                p.is_empty()
                    || path == p
                    || path
                        .strip_prefix(p)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .max_by_key(|(_, p)| normalize_prefix(p).len())
            .map(|(i, _)| i)
    }

    fn path_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        proptest::collection::vec(
            prop_oneof![Just("a"), Just("b"), Just("ab"), Just("")],
            0..5,
        )
        .prop_map(|segs| format!("/{}", segs.join("/")))
    }

    proptest::proptest! {
        #[test]
        fn lookup_matches_the_reference(
            prefixes in proptest::collection::btree_set(path_strategy(), 1..8),
            paths in proptest::collection::vec(path_strategy(), 1..20),
        ) {
            // Distinct after normalization, as the table requires.
            let mut seen = std::collections::HashSet::new();
            let prefixes: Vec<String> = prefixes
                .into_iter()
                .filter(|p| seen.insert(normalize_prefix(p).to_owned()))
                .collect();
            let specs: Vec<RouteSpec> = prefixes
                .iter()
                .enumerate()
                .map(|(i, p)| route(p, &[], i))
                .collect();
            let table = RouteTable::build(&specs).unwrap();
            for path in &paths {
                let got = table.lookup(None, path);
                proptest::prop_assert_eq!(got.map(|m| m.service), reference(&prefixes, path), "path {}", path);
                if let Some(m) = got {
                    let pq = PathAndQuery::from_maybe_shared(format!("{path}?q=1")).unwrap();
                    let stripped = strip_prefix(&pq, m.prefix_len).unwrap();
                    proptest::prop_assert!(stripped.path().starts_with('/'));
                    proptest::prop_assert_eq!(stripped.query(), Some("q=1"));
                }
            }
        }
    }
}
