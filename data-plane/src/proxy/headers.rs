//! Header handling on the way through: hop-by-hop removal (RFC 9110 §7.6.1), the
//! `X-Forwarded-*` set, `X-Request-Id`, and who the client is behind trusted proxies.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Request-Id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `Keep-Alive` (not in `http::header`).
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// `Proxy-Connection` (non-standard, still sent by some clients).
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The hop-by-hop headers every proxy removes, besides those named in `Connection`.
fn fixed_hop_by_hop() -> [&'static HeaderName; 9] {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
    ]
}

/// Removes hop-by-hop headers: the fixed list and every header named in `Connection`. With
/// `keep_upgrade`, `Connection: upgrade` and `Upgrade` survive (a WebSocket handshake being
/// forwarded needs both).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names first: most messages carry no hop-by-hop header at all, and
    // comparing names is far cheaper than a hashed `remove` per listed name (this runs twice
    // per proxied request, on the request and on the response).
    let mut connection = false;
    let mut fixed = false;
    for name in headers.keys() {
        if name == header::CONNECTION {
            connection = true;
        } else if fixed_hop_by_hop().contains(&name) {
            fixed = true;
        }
    }
    if connection {
        remove_connection_named(headers, keep_upgrade);
    }
    if connection || fixed {
        for name in fixed_hop_by_hop() {
            if keep_upgrade && (name == header::UPGRADE || name == header::CONNECTION) {
                continue;
            }
            headers.remove(name);
        }
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Removes the headers named in `Connection` (except `upgrade` with `keep_upgrade`).
fn remove_connection_named(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Names listed in Connection are collected before Connection itself goes. Most requests
    // carry at most `keep-alive` or `close` here, so this rarely finds anything to remove.
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',') {
            let token = token.trim();
            if token.is_empty() || (keep_upgrade && token.eq_ignore_ascii_case("upgrade")) {
                continue;
            }
            // Look up before building a name: `keep-alive`/`close` usually name no header
            // present, and the lookup does not allocate.
            if headers.contains_key(token)
                && let Ok(name) = HeaderName::from_bytes(token.as_bytes())
            {
                named.push(name);
            }
        }
    }
    for name in &named {
        headers.remove(name);
    }
}

/// Whether the request asks for a protocol upgrade (`Connection: upgrade` plus `Upgrade`).
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// Appends `client` to `X-Forwarded-For` (joining any existing values into one header), and
/// sets `X-Forwarded-Proto` (`https` when the client came over TLS, else `http`) and
/// `X-Forwarded-Host` (the client's host, if it sent one).
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client: IpAddr,
    host: Option<&HeaderValue>,
    tls: bool,
) {
    let mut ip = IpText::default();
    let ip = ip.format(client);
    let mut existing = headers.get_all(&X_FORWARDED_FOR).iter();
    let xff = match existing.next() {
        // The usual case (no proxy in front): the value is the address alone, copied once.
        None => HeaderValue::from_bytes(ip),
        Some(first) => {
            let mut xff = BytesMut::with_capacity(first.len() + 2 + ip.len() + 32);
            xff.put_slice(first.as_bytes());
            for more in existing {
                xff.put_slice(b", ");
                xff.put_slice(more.as_bytes());
            }
            xff.put_slice(b", ");
            xff.put_slice(ip);
            HeaderValue::from_maybe_shared(xff.freeze())
        }
    };
    if let Ok(v) = xff {
        headers.insert(&X_FORWARDED_FOR, v);
    }
    let proto = if tls { "https" } else { "http" };
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Some(host) = host {
        headers.insert(&X_FORWARDED_HOST, host.clone());
    }
}

/// An IP address as text in a stack buffer: IPv4 digits are written directly (the common
/// case, and several times cheaper than `Display` through `fmt`); IPv6 goes through
/// `Display`, which also gives it its canonical compressed form.
struct IpText {
    buf: [u8; 48],
}

impl Default for IpText {
    fn default() -> Self {
        Self { buf: [0; 48] }
    }
}

impl IpText {
    fn format(&mut self, ip: IpAddr) -> &[u8] {
        match ip {
            IpAddr::V4(v4) => {
                let mut n = 0;
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.buf[n] = b'.';
                        n += 1;
                    }
                    if octet >= 100 {
                        self.buf[n] = b'0' + octet / 100;
                        n += 1;
                    }
                    if octet >= 10 {
                        self.buf[n] = b'0' + octet / 10 % 10;
                        n += 1;
                    }
                    self.buf[n] = b'0' + octet % 10;
                    n += 1;
                }
                &self.buf[..n]
            }
            IpAddr::V6(v6) => {
                // The longest IPv6 text (`ffff:…:255.255.255.255`) is 45 bytes, so this fits.
                let mut rest = &mut self.buf[..];
                let _ = std::io::Write::write_fmt(&mut rest, format_args!("{v6}"));
                let n = 48 - rest.len();
                &self.buf[..n]
            }
        }
    }
}

/// Generates request ids: a per-process random prefix plus a counter, as 32 hex digits.
/// Unique without a syscall or an RNG call per request.
#[derive(Debug)]
pub struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        Self {
            prefix: rand::random(),
            counter: AtomicU64::new(0),
        }
    }
}

impl RequestIds {
    /// The next id.
    pub fn next(&self) -> HeaderValue {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 32];
        hex_into(&mut buf[..16], self.prefix);
        hex_into(&mut buf[16..], n);
        // 32 ASCII hex digits are always a valid header value.
        HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
    }
}

fn hex_into(out: &mut [u8], v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().enumerate() {
        *b = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

/// Peers whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Trusts `nets`.
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self { nets }
    }

    /// Parses `10.0.0.0/8,192.168.1.1` (a bare address is a /32 or /128).
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = match item.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => item.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
                    format!("'{item}' is not a CIDR (e.g. 10.0.0.0/8) or IP address")
                })?,
            };
            nets.push(net);
        }
        Ok(Self { nets })
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client's address: `peer`, unless `peer` is trusted, in which case the rightmost
    /// `X-Forwarded-For` address that is not trusted (or the leftmost, if all are).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if self.nets.is_empty() || !self.trusts(peer) {
            return peer;
        }
        let mut leftmost = None;
        for value in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
            let Ok(value) = value.to_str() else {
                return peer;
            };
            for item in value.rsplit(',') {
                let Ok(ip) = item.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) else {
                    // An unparsable hop breaks the chain of trust: stop at the last good one.
                    return leftmost.unwrap_or(peer);
                };
                if !self.trusts(ip) {
                    return ip;
                }
                leftmost = Some(ip);
            }
        }
        leftmost.unwrap_or(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("proxy-authenticate", "Basic"),
            ("proxy-connection", "keep-alive"),
            ("x-keep", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-keep"], "yes");
    }

    #[test]
    fn upgrade_kept_when_asked() {
        let mut h = map(&[
            ("connection", "Upgrade, x-gone"),
            ("upgrade", "websocket"),
            ("x-gone", "1"),
        ]);
        assert!(is_upgrade_request(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert!(!h.contains_key("x-gone"));
        assert!(!is_upgrade_request(&map(&[("upgrade", "websocket")])));
    }

    #[test]
    fn forwarded_headers() {
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        let host = HeaderValue::from_static("example.com:8080");
        set_forwarded(&mut h, "10.0.0.9".parse().unwrap(), Some(&host), false);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.9");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com:8080");

        let mut h = HeaderMap::new();
        set_forwarded(&mut h, "::1".parse().unwrap(), None, true);
        assert_eq!(h["x-forwarded-for"], "::1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert!(!h.contains_key("x-forwarded-host"));
    }

    #[test]
    fn ip_text_matches_display() {
        let cases = [
            "0.0.0.0",
            "1.2.3.4",
            "9.10.99.100",
            "10.0.100.255",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:9.9.9.9",
            "2001:db8::8a2e:370:7334",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "1111:2222:3333:4444:5555:6666:7777:8888",
        ];
        for case in cases {
            let ip: IpAddr = case.parse().unwrap();
            let mut text = IpText::default();
            assert_eq!(
                std::str::from_utf8(text.format(ip)).unwrap(),
                ip.to_string(),
                "{case}"
            );
        }
        // Every IPv4 octet value, in each position.
        for o in 0..=255u8 {
            let ip = IpAddr::from([o, 255 - o, o / 2, o.wrapping_mul(7)]);
            let mut text = IpText::default();
            assert_eq!(
                std::str::from_utf8(text.format(ip)).unwrap(),
                ip.to_string()
            );
        }
    }

    #[test]
    fn hop_by_hop_only_fixed_or_none() {
        // A fixed hop-by-hop header goes even without a Connection header.
        let mut h = map(&[("te", "trailers"), ("keep-alive", "1"), ("x-keep", "yes")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-keep"], "yes");
        // Nothing to strip: unchanged.
        let mut h = map(&[("host", "a"), ("x-keep", "yes"), ("accept", "*/*")]);
        let before = h.clone();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, before);
        // Upgrade kept, but a named header still goes.
        let mut h = map(&[("upgrade", "websocket"), ("proxy-connection", "x")]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert!(!h.contains_key("proxy-connection"));
    }

    #[test]
    fn request_ids_are_distinct_hex() {
        let ids = RequestIds::default();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
    }

    #[test]
    fn client_ip_table() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, 192.168.0.1").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // (peer, xff values, expected)
        let cases: &[(&str, &[&str], &str)] = &[
            ("1.2.3.4", &["9.9.9.9"], "1.2.3.4"),
            ("10.1.1.1", &[], "10.1.1.1"),
            ("10.1.1.1", &["9.9.9.9"], "9.9.9.9"),
            ("10.1.1.1", &["8.8.8.8, 9.9.9.9, 10.2.2.2"], "9.9.9.9"),
            (
                "192.168.0.1",
                &["8.8.8.8", "10.3.3.3, 192.168.0.1"],
                "8.8.8.8",
            ),
            ("10.1.1.1", &["10.9.9.9, 10.2.2.2"], "10.9.9.9"),
            ("10.1.1.1", &["8.8.8.8, junk, 10.2.2.2"], "10.2.2.2"),
            ("10.1.1.1", &["::ffff:9.9.9.9"], "9.9.9.9"),
        ];
        for &(peer, xff, want) in cases {
            let h = map(&xff
                .iter()
                .map(|v| ("x-forwarded-for", *v))
                .collect::<Vec<_>>());
            assert_eq!(
                trusted.client_ip(ip(peer), &h),
                ip(want),
                "peer {peer} xff {xff:?}"
            );
        }
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("").unwrap().nets.is_empty());
    }
}
