//! Where a service's callers put their credential, taking it out of the request before it is
//! forwarded, and the identity headers upstreams receive instead.
//!
//! An API key is read from the first accepted place that has one, in this order:
//! `Authorization: Bearer <key>`, `X-API-Key: <key>`, the `apikey` query parameter (taken as
//! sent: keys are `gwk_` and hex digits, which nobody needs to percent-encode). Every accepted
//! place is cleared before forwarding, not only the one used, so a key sent twice does not
//! reach the backend either. An `Authorization` header of another scheme (Basic, say) is left
//! alone unless the service accepts bearer keys.

use http::header::{AUTHORIZATION, HeaderMap, HeaderName};
use http::uri::{PathAndQuery, Uri};

use crate::auth::keys::Identity;

/// `X-API-Key`.
pub static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
/// `X-Consumer-Name`, set for upstreams.
pub static X_CONSUMER_NAME: HeaderName = HeaderName::from_static("x-consumer-name");
/// `X-Consumer-Groups`, set for upstreams.
pub static X_CONSUMER_GROUPS: HeaderName = HeaderName::from_static("x-consumer-groups");
/// The query parameter an API key may come in.
pub const QUERY_PARAM: &str = "apikey";

/// Where a service accepts API keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeySources {
    /// `Authorization: Bearer`.
    pub bearer: bool,
    /// `X-API-Key`.
    pub header: bool,
    /// `?apikey=`.
    pub query: bool,
}

/// The value of a `Bearer` authorization (scheme case-insensitive, RFC 9110 §11.1).
pub fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// The value of the `apikey` query parameter, if any.
fn query_key(uri: &Uri) -> Option<&[u8]> {
    uri.query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix(QUERY_PARAM)?.strip_prefix('='))
        .filter(|v| !v.is_empty())
        .map(str::as_bytes)
}

/// The API key a request carries in one of `sources`, if any.
pub fn find_key<'a>(sources: KeySources, headers: &'a HeaderMap, uri: &'a Uri) -> Option<&'a [u8]> {
    if sources.bearer
        && let Some(key) = bearer(headers)
    {
        return Some(key);
    }
    if sources.header
        && let Some(key) = headers.get(&X_API_KEY)
        && !key.is_empty()
    {
        return Some(key.as_bytes());
    }
    if sources.query {
        return query_key(uri);
    }
    None
}

/// Removes every credential header in `sources` from the request.
pub fn strip_headers(sources: KeySources, headers: &mut HeaderMap) {
    if sources.bearer && bearer(headers).is_some() {
        headers.remove(AUTHORIZATION);
    }
    if sources.header {
        headers.remove(&X_API_KEY);
    }
}

/// Removes the `apikey` query parameter if `sources` accepts it there. Allocates only when
/// the parameter is present (the URI has to be rebuilt without it).
pub fn strip_query(sources: KeySources, uri: &mut Uri) {
    if sources.query
        && let Some(q) = uri.query()
        && q.split('&')
            .any(|pair| pair == QUERY_PARAM || pair.starts_with("apikey="))
    {
        let rest: Vec<&str> = q
            .split('&')
            .filter(|pair| *pair != QUERY_PARAM && !pair.starts_with("apikey="))
            .collect();
        let path = uri.path();
        let pq = if rest.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", rest.join("&"))
        };
        // Built from parts of a valid URI, minus a parameter: still valid.
        if let Ok(pq) = PathAndQuery::try_from(pq) {
            let mut parts = std::mem::take(uri).into_parts();
            parts.path_and_query = Some(pq);
            if let Ok(rebuilt) = Uri::from_parts(parts) {
                *uri = rebuilt;
            }
        }
    }
}

/// `pq` with the value of every `apikey` query parameter replaced by `***`, for the access
/// log. Allocates only when there is one.
pub fn redact_query_key(pq: &PathAndQuery) -> PathAndQuery {
    let Some(q) = pq.query() else {
        return pq.clone();
    };
    if !q.split('&').any(|pair| pair.starts_with("apikey=")) {
        return pq.clone();
    }
    let redacted: Vec<&str> = q
        .split('&')
        .map(|pair| {
            if pair.starts_with("apikey=") {
                "apikey=***"
            } else {
                pair
            }
        })
        .collect();
    PathAndQuery::try_from(format!("{}?{}", pq.path(), redacted.join("&")))
        .unwrap_or_else(|_| PathAndQuery::from_static("/"))
}

/// Removes client-sent `X-Consumer-*` headers: only the gateway says who the consumer is.
pub fn remove_identity(headers: &mut HeaderMap) {
    headers.remove(&X_CONSUMER_NAME);
    headers.remove(&X_CONSUMER_GROUPS);
    // CGI-style backends (WSGI, PHP, Rack) read `X_Consumer_Name` (or `X-Consumer_Name`) as
    // `HTTP_X_CONSUMER_NAME`, the same variable as the gateway's header, so a client's copy
    // spelled with underscores goes too. One pass over the names; nothing is allocated
    // unless such a header is there.
    if headers
        .keys()
        .any(|n| n.as_str().contains('_') && is_identity_alias(n.as_str()))
    {
        let aliases: Vec<HeaderName> = headers
            .keys()
            .filter(|n| is_identity_alias(n.as_str()))
            .cloned()
            .collect();
        for name in aliases {
            headers.remove(name);
        }
    }
}

/// Whether `name` is `x-consumer-name` or `x-consumer-groups` with any of its dashes written
/// as underscores (header names are lowercase here).
fn is_identity_alias(name: &str) -> bool {
    [X_CONSUMER_NAME.as_str(), X_CONSUMER_GROUPS.as_str()]
        .iter()
        .any(|id| {
            id.len() == name.len()
                && id
                    .bytes()
                    .zip(name.bytes())
                    .all(|(a, b)| a == b || (a == b'-' && b == b'_'))
        })
}

/// Sets the `X-Consumer-*` headers for `who` (after [`remove_identity`]).
pub fn set_identity(headers: &mut HeaderMap, who: &Identity) {
    headers.insert(&X_CONSUMER_NAME, who.name_header.clone());
    if let Some(groups) = &who.groups_header {
        headers.insert(&X_CONSUMER_GROUPS, groups.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn identity_headers_are_removed_in_every_spelling_a_cgi_backend_reads_alike() {
        let mut headers = HeaderMap::new();
        for name in [
            "x-consumer-name",
            "X_Consumer_Name",
            "x-consumer_name",
            "x_consumer-groups",
            "x_consumer_groups",
        ] {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("spoofed"),
            );
        }
        headers.insert("x_other_header", HeaderValue::from_static("kept"));
        headers.insert("x-consumer-namex", HeaderValue::from_static("kept"));
        remove_identity(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(|n| n.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["x-consumer-namex", "x_other_header"]);
    }

    const ALL: KeySources = KeySources {
        bearer: true,
        header: true,
        query: true,
    };

    fn req(headers: &[(&str, &str)], uri: &str) -> (HeaderMap, Uri) {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        (map, uri.parse().unwrap())
    }

    #[test]
    fn keys_are_found_where_the_service_accepts_them() {
        let only = |bearer, header, query| KeySources {
            bearer,
            header,
            query,
        };
        /// Request headers, URI, accepted sources, the key expected.
        type Case<'a> = (
            &'a [(&'a str, &'a str)],
            &'a str,
            KeySources,
            Option<&'a str>,
        );
        let cases: &[Case] = &[
            (&[("authorization", "Bearer k1")], "/", ALL, Some("k1")),
            (&[("authorization", "bearer   k1 ")], "/", ALL, Some("k1")),
            (&[("authorization", "Basic abc")], "/", ALL, None),
            (&[("authorization", "Bearer ")], "/", ALL, None),
            (&[("x-api-key", "k2")], "/", ALL, Some("k2")),
            (&[("x-api-key", "k2")], "/", only(true, false, true), None),
            (&[], "/a?x=1&apikey=k3&y=2", ALL, Some("k3")),
            (&[], "/a?apikey=k3", only(true, true, false), None),
            (&[], "/a?apikeys=k3", ALL, None),
            (&[], "/a?apikey=", ALL, None),
            // Bearer first, then the header, then the query.
            (
                &[("authorization", "Bearer k1"), ("x-api-key", "k2")],
                "/?apikey=k3",
                ALL,
                Some("k1"),
            ),
            (&[("x-api-key", "k2")], "/?apikey=k3", ALL, Some("k2")),
        ];
        for (headers, uri, sources, want) in cases {
            let (h, u) = req(headers, uri);
            let got = find_key(*sources, &h, &u).map(|k| std::str::from_utf8(k).unwrap());
            assert_eq!(got, *want, "{headers:?} {uri}");
        }
    }

    #[test]
    fn every_accepted_place_is_cleared_and_identity_replaced() {
        let (mut h, mut u) = req(
            &[
                ("authorization", "Bearer k1"),
                ("x-api-key", "k2"),
                ("x-consumer-name", "admin"),
                ("x-consumer-groups", "root"),
            ],
            "/a/b?x=1&apikey=k3&y=%20",
        );
        strip_headers(ALL, &mut h);
        strip_query(ALL, &mut u);
        remove_identity(&mut h);
        assert!(h.is_empty(), "{h:?}");
        assert_eq!(u.to_string(), "/a/b?x=1&y=%20");
        let logged = redact_query_key(&PathAndQuery::from_static("/a?apikey=k3&x=1&apikey=k4"));
        assert_eq!(logged.as_str(), "/a?apikey=***&x=1&apikey=***");
        let plain = PathAndQuery::from_static("/a?x=apikey=1");
        assert_eq!(redact_query_key(&plain), plain);
        let (mut h, mut u) = req(&[("authorization", "Basic abc")], "/p?apikey=k3");
        strip_headers(ALL, &mut h);
        strip_query(ALL, &mut u);
        assert_eq!(h.get(AUTHORIZATION).unwrap(), "Basic abc");
        assert_eq!(u.to_string(), "/p");
        // Not accepted there: not touched (it may be meant for the backend).
        let (mut h, mut u) = req(&[("x-api-key", "k2")], "/p?apikey=k3");
        strip_headers(KeySources::default(), &mut h);
        strip_query(KeySources::default(), &mut u);
        assert_eq!(h.len(), 1);
        assert_eq!(u.to_string(), "/p?apikey=k3");
        let who = Identity {
            name: "alice".into(),
            groups: Box::new([]),
            name_header: HeaderValue::from_static("alice"),
            groups_header: None,
            stats: Default::default(),
        };
        set_identity(&mut h, &who);
        assert_eq!(h.get(&X_CONSUMER_NAME).unwrap(), "alice");
        assert!(h.get(&X_CONSUMER_GROUPS).is_none());
    }
}
