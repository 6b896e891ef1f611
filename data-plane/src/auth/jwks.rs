//! JWKS: an issuer's public keys fetched from its `jwks_uri`, so keys can rotate at the
//! identity provider without a config change.
//!
//! [`JwksSource`] is the one seam to the JWKS URL. A background task fetches the document
//! (plain HTTP/1.1 over TCP, or over TLS with the rustls config the caller passes), parses it
//! into a [`KeySet`] and swaps it in atomically; verification reads the current set with one
//! atomic load and never waits for a fetch. The task refetches:
//!
//! - every [`REFRESH_INTERVAL`] after a success, so removed keys stop verifying;
//! - when a token names a `kid` the set lacks ([`JwksSource::request_refresh`]): this is how a
//!   new key is picked up right after the provider rotates. Such refreshes happen at most once
//!   per [`MIN_KID_REFRESH_GAP`], however many unknown `kid`s arrive, so tokens with made-up
//!   `kid`s cannot turn the gateway into a load generator against the identity provider;
//! - after a failure, with a backoff from [`RETRY_MIN`] doubling up to [`REFRESH_INTERVAL`].
//!
//! A failed fetch (connection, timeout, HTTP status, body too large, no usable key) keeps the
//! last good set: an identity provider outage must not log everyone out. Failures are counted
//! ([`JwksStats`]) and logged when the state changes (failing, recovered), not per attempt.
//!
//! The task ends when the last [`JwksSource`] clone is dropped. [`JwksRegistry`] keeps one
//! source per URL across config versions, so a new version neither refetches nor restarts a
//! task, and a URL no version uses any more ends its task once the old version is dropped.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::jws::{Jwk, KeySet, VerifyKey};

/// Time between refreshes after a successful fetch. Identity providers publish a new key well
/// before they sign with it and keep the old one listed for a while after (Auth0, Okta and
/// Keycloak: hours to days); five minutes bounds how long a removed key keeps verifying.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// Shortest time between two refreshes caused by unknown `kid`s. Ten seconds delays a freshly
/// rotated key by at most that much and caps the fetches a flood of forged `kid`s causes at
/// six a minute per issuer.
pub const MIN_KID_REFRESH_GAP: Duration = Duration::from_secs(10);
/// First retry delay after a failed fetch; doubles per consecutive failure up to
/// [`REFRESH_INTERVAL`].
pub const RETRY_MIN: Duration = Duration::from_secs(5);
/// Longest a fetch may take, connection and TLS handshake included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document accepted. Real ones are a few KiB (a 4096-bit RSA key is ~800 bytes
/// of JSON); 256 KiB leaves room for large sets and bounds memory if the URL serves junk.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Most keys kept from one document: verification may try each key of a `kid`-less token, so
/// the set must stay small.
pub const MAX_JWKS_KEYS: usize = 64;

/// How a [`JwksSource`] fetches; [`Default`] uses the constants above and no TLS.
#[derive(Clone)]
pub struct JwksSettings {
    /// See [`REFRESH_INTERVAL`].
    pub refresh_interval: Duration,
    /// See [`MIN_KID_REFRESH_GAP`].
    pub min_kid_refresh_gap: Duration,
    /// See [`RETRY_MIN`].
    pub retry_min: Duration,
    /// See [`FETCH_TIMEOUT`].
    pub fetch_timeout: Duration,
    /// The client TLS config for `https://` URLs (the data plane's: the system's trust store,
    /// plus `--jwks-ca-cert` when given, and ring). Required for https; unused for http.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for JwksSettings {
    fn default() -> Self {
        Self {
            refresh_interval: REFRESH_INTERVAL,
            min_kid_refresh_gap: MIN_KID_REFRESH_GAP,
            retry_min: RETRY_MIN,
            fetch_timeout: FETCH_TIMEOUT,
            tls: None,
        }
    }
}

impl std::fmt::Debug for JwksSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksSettings")
            .field("refresh_interval", &self.refresh_interval)
            .field("min_kid_refresh_gap", &self.min_kid_refresh_gap)
            .field("retry_min", &self.retry_min)
            .field("fetch_timeout", &self.fetch_timeout)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Why a JWKS URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// The URL is not an absolute http(s) URL with a host.
    #[error("JWKS URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// [`JwksSource::spawn`] was called outside a tokio runtime.
    #[error("JWKS URL {url:?}: no tokio runtime to run the refresh task on")]
    NoRuntime {
        /// The URL as given.
        url: String,
    },
}

/// Counters of one source, for metrics and `gwctl nodes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JwksStats {
    /// Fetches that replaced the key set.
    pub fetches_ok: u64,
    /// Fetches that failed (the previous set stayed).
    pub fetches_failed: u64,
    /// Times an unknown-`kid` refresh was asked for while the last one was too recent.
    pub refreshes_deferred: u64,
    /// Whether the last fetch failed.
    pub failing: bool,
}

/// An issuer's JWKS URL and the keys last fetched from it. Cheap to clone; all clones share
/// one background task and one key set, so a source can outlive config versions.
#[derive(Clone)]
pub struct JwksSource {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksSource")
            .field("url", &self.shared.target.url)
            .finish_non_exhaustive()
    }
}

struct Shared {
    target: Target,
    keys: ArcSwap<KeySet>,
    /// An unknown `kid` was seen since the last fetch.
    wanted: AtomicBool,
    wake: Arc<Notify>,
    fetches_ok: AtomicU64,
    fetches_failed: AtomicU64,
    refreshes_deferred: AtomicU64,
    failing: AtomicBool,
    /// Dropped with the last clone, which ends the task.
    _stop: oneshot::Sender<()>,
}

/// Where to fetch from, checked once.
struct Target {
    url: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    host: String,
    port: u16,
    /// `Host` header value (with the port when it is not the scheme's default).
    authority: String,
    path: String,
}

impl JwksSource {
    /// Checks `url` and starts the background task, which fetches at once, on the current
    /// tokio runtime. Until the first fetch succeeds the set is empty and every token
    /// of this issuer is refused as an unknown key.
    pub fn spawn(url: &str, settings: JwksSettings) -> Result<Self, JwksError> {
        let target = Target::parse(url, settings.tls.clone())?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| JwksError::NoRuntime {
            url: url.to_owned(),
        })?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let shared = Arc::new(Shared {
            target,
            keys: ArcSwap::from_pointee(KeySet::default()),
            wanted: AtomicBool::new(false),
            wake: Arc::new(Notify::new()),
            fetches_ok: AtomicU64::new(0),
            fetches_failed: AtomicU64::new(0),
            refreshes_deferred: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            _stop: stop_tx,
        });
        runtime.spawn(run(Arc::downgrade(&shared), stop_rx, settings));
        Ok(Self { shared })
    }

    /// The URL, as given.
    pub fn url(&self) -> &str {
        &self.shared.target.url
    }

    /// Whether `other` is a clone of this source (one task, one key set).
    pub fn same_as(&self, other: &JwksSource) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// The current key set: one atomic load, never waits.
    pub fn keys(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.shared.keys.load()
    }

    /// Changes whenever a fetched set replaces the keys (it counts successful fetches), so a
    /// cached verification can tell it was made with an older set.
    pub fn generation(&self) -> u64 {
        self.shared.fetches_ok.load(Ordering::Acquire)
    }

    /// Asks for a refresh because a token named a `kid` the set lacks. Returns at once; the
    /// task fetches when [`MIN_KID_REFRESH_GAP`] allows.
    pub fn request_refresh(&self) {
        if !self.shared.wanted.swap(true, Ordering::AcqRel) {
            self.shared.wake.notify_one();
        }
    }

    /// The counters.
    pub fn stats(&self) -> JwksStats {
        let s = &self.shared;
        JwksStats {
            fetches_ok: s.fetches_ok.load(Ordering::Relaxed),
            fetches_failed: s.fetches_failed.load(Ordering::Relaxed),
            refreshes_deferred: s.refreshes_deferred.load(Ordering::Relaxed),
            failing: s.failing.load(Ordering::Relaxed),
        }
    }
}

/// The running [`JwksSource`]s by URL, kept across config versions.
#[derive(Debug, Default)]
pub struct JwksRegistry {
    sources: Mutex<HashMap<String, JwksSource>>,
}

impl JwksRegistry {
    /// The source of `url`: the running one, or a new one started with `settings()` (called
    /// only then, so an https client config is built only when needed).
    pub fn source(
        &self,
        url: &str,
        settings: impl FnOnce() -> Result<JwksSettings, String>,
    ) -> Result<JwksSource, String> {
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(source) = sources.get(url) {
            return Ok(source.clone());
        }
        let source = JwksSource::spawn(url, settings()?).map_err(|e| e.to_string())?;
        sources.insert(url.to_owned(), source.clone());
        Ok(source)
    }

    /// Forgets every source whose URL is not in `keep` (called once a version is in force;
    /// the task ends when the previous version, which still holds it, is dropped).
    pub fn retain(&self, keep: &HashSet<String>) {
        self.sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|url, _| keep.contains(url));
    }

    /// Every source, ordered by URL (for metrics).
    pub fn sources(&self) -> Vec<JwksSource> {
        let mut all: Vec<JwksSource> = self
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.url().cmp(b.url()));
        all
    }
}

/// `localhost` or a loopback address (127.0.0.0/8, ::1).
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Target {
    fn parse(url: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Self, JwksError> {
        let bad = |reason| JwksError::BadUrl {
            url: url.to_owned(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let (default_port, tls) = match uri.scheme_str() {
            Some("http") => (80, None),
            Some("https") => (
                443,
                Some(tls.ok_or(bad("https needs the data plane's TLS client config"))?),
            ),
            _ => return Err(bad("scheme must be http or https")),
        };
        let authority = uri.authority().ok_or(bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        let host = authority.host().trim_matches(['[', ']']).to_owned();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        // Keys fetched in clear from another host could be swapped by anyone on the path, who
        // could then sign tokens for every consumer of the issuer: plain http is for a local
        // provider only (the control plane refuses other such URLs too).
        if tls.is_none() && !is_loopback(&host) {
            return Err(bad(
                "http:// is only allowed to a loopback address; use https://",
            ));
        }
        Ok(Self {
            url: url.to_owned(),
            tls,
            host,
            port: authority.port_u16().unwrap_or(default_port),
            authority: authority.as_str().to_owned(),
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        })
    }

    /// One GET of the document, bounded by `timeout` as a whole.
    async fn fetch(&self, timeout: Duration) -> Result<KeySet, String> {
        let body = tokio::time::timeout(timeout, self.get())
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))??;
        parse_key_set(&body)
    }

    async fn get(&self) -> Result<Bytes, String> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => self.request(tcp).await,
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| format!("TLS server name: {e}"))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| tls_failure(&e))?;
                self.request(tls).await
            }
        }
    }

    async fn request<IO>(&self, io: IO) -> Result<Bytes, String>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        // Ends when `sender` is dropped or the server closes.
        tokio::spawn(conn);
        let req = Request::get(self.path.as_str())
            .header(header::HOST, self.authority.as_str())
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, "gw-data-plane")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("request: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("HTTP status {}", resp.status()));
        }
        Limited::new(resp.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| format!("reading the body (at most {MAX_JWKS_BYTES} bytes): {e}"))
    }
}

/// Why a TLS handshake with the identity provider failed, for the log: rustls's reason, and
/// for a certificate from an unknown CA the fix.
fn tls_failure(e: &std::io::Error) -> String {
    use rustls::{CertificateError, Error};
    let rustls_error = e.get_ref().and_then(|inner| inner.downcast_ref::<Error>());
    match rustls_error {
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer)) => format!(
            "TLS: certificate unknown: {e}: it does not chain to a trusted CA (the system's \
             trust store, plus --jwks-ca-cert when given)"
        ),
        _ => format!("TLS: {e}"),
    }
}

#[derive(serde::Deserialize)]
struct JwksDocument<'a> {
    #[serde(borrow)]
    keys: Vec<Jwk<'a>>,
}

/// The usable keys of a JWKS document. Keys gw cannot use (encryption keys, other algorithms)
/// are skipped, as RFC 7517 section 5 asks; a document with no usable key is an error, so it
/// does not replace a good set.
pub fn parse_key_set(body: &[u8]) -> Result<KeySet, String> {
    let doc: JwksDocument<'_> =
        serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    if doc.keys.len() > MAX_JWKS_KEYS {
        return Err(format!(
            "{} keys, more than the {MAX_JWKS_KEYS} accepted",
            doc.keys.len()
        ));
    }
    let mut keys: Vec<(Option<Box<str>>, VerifyKey)> = Vec::with_capacity(doc.keys.len());
    let mut skipped = Vec::new();
    for jwk in &doc.keys {
        match jwk.to_key() {
            Ok(key) => keys.push((jwk.kid.as_deref().map(Into::into), key)),
            Err(why) => skipped.push(format!("kid {:?}: {why}", jwk.kid.as_deref())),
        }
    }
    if keys.is_empty() {
        return Err(format!(
            "no usable key ({})",
            if skipped.is_empty() {
                "the set is empty".to_owned()
            } else {
                skipped.join("; ")
            }
        ));
    }
    if !skipped.is_empty() {
        tracing::debug!(skipped = %skipped.join("; "), "JWKS keys gw cannot use were skipped");
    }
    Ok(KeySet::new(keys))
}

/// When to fetch next: the module docs' rules, apart from the clock and the network so they
/// can be tested with made-up instants.
struct Schedule {
    refresh_interval: Duration,
    min_kid_refresh_gap: Duration,
    retry_min: Duration,
    /// The next interval (or retry) fetch.
    next_scheduled: Instant,
    /// The last fetch caused by an unknown `kid`.
    last_kid_fetch: Option<Instant>,
    /// Consecutive failures.
    failures: u32,
}

/// What the task does next.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Fetch,
    /// Sleep until then, or until a refresh is asked for.
    WaitUntil(Instant),
}

impl Schedule {
    fn new(settings: &JwksSettings, now: Instant) -> Self {
        Self {
            refresh_interval: settings.refresh_interval,
            min_kid_refresh_gap: settings.min_kid_refresh_gap,
            retry_min: settings.retry_min,
            next_scheduled: now,
            last_kid_fetch: None,
            failures: 0,
        }
    }

    /// The next step at `now`, `wanted` telling whether an unknown `kid` asked for a refresh.
    fn step(&mut self, now: Instant, wanted: bool) -> Step {
        if now >= self.next_scheduled {
            return Step::Fetch;
        }
        if !wanted {
            return Step::WaitUntil(self.next_scheduled);
        }
        match self.last_kid_fetch.map(|t| t + self.min_kid_refresh_gap) {
            Some(allowed) if now < allowed => Step::WaitUntil(self.next_scheduled.min(allowed)),
            _ => {
                self.last_kid_fetch = Some(now);
                Step::Fetch
            }
        }
    }

    /// Records a fetch's outcome at `now`.
    fn fetched(&mut self, now: Instant, ok: bool) {
        if ok {
            self.failures = 0;
            self.next_scheduled = now + self.refresh_interval;
        } else {
            self.failures = self.failures.saturating_add(1);
            let backoff = self
                .retry_min
                .saturating_mul(1 << (self.failures - 1).min(16))
                .min(self.refresh_interval);
            self.next_scheduled = now + backoff;
        }
    }
}

/// The background task: see the module docs for when it fetches.
async fn run(shared: Weak<Shared>, mut stop: oneshot::Receiver<()>, settings: JwksSettings) {
    let mut schedule = Schedule::new(&settings, Instant::now());
    loop {
        let Some(s) = shared.upgrade() else { return };
        let wanted = s.wanted.load(Ordering::Acquire);
        let wake_at = match schedule.step(Instant::now(), wanted) {
            Step::Fetch => {
                // Cleared before the fetch: a kid seen during it may ask again.
                s.wanted.store(false, Ordering::Release);
                let result = s.target.fetch(settings.fetch_timeout).await;
                schedule.fetched(Instant::now(), result.is_ok());
                s.record(result);
                continue;
            }
            Step::WaitUntil(at) => {
                if wanted {
                    s.refreshes_deferred.fetch_add(1, Ordering::Relaxed);
                }
                at
            }
        };
        let wake = s.wake.clone();
        // Not held while waiting, so dropping the last handle ends the task.
        drop(s);
        tokio::select! {
            () = tokio::time::sleep_until(wake_at) => {}
            () = wake.notified() => {}
            _ = &mut stop => return,
        }
    }
}

impl Shared {
    /// Swaps in a fetched set, or keeps the last one; counts and logs state changes.
    fn record(&self, result: Result<KeySet, String>) {
        let url = &self.target.url;
        match result {
            Ok(set) => {
                let n = set.len();
                self.keys.store(Arc::new(set));
                // Refreshes asked for during the fetch are answered by it; a kid still
                // unknown asks again.
                self.wanted.store(false, Ordering::Release);
                self.fetches_ok.fetch_add(1, Ordering::Release);
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(%url, keys = n, "JWKS fetch recovered");
                } else {
                    tracing::debug!(%url, keys = n, "JWKS fetched");
                }
            }
            Err(error) => {
                self.fetches_failed.fetch_add(1, Ordering::Relaxed);
                if self.failing.swap(true, Ordering::Relaxed) {
                    tracing::debug!(%url, %error, "JWKS fetch failed again");
                } else {
                    tracing::warn!(%url, %error, "JWKS fetch failed; keeping the last good key set");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testing::{Signer, jwks};

    #[test]
    fn urls_are_checked_up_front() {
        let cases = [
            ("ftp://idp/keys", "scheme must be http or https"),
            ("/keys", "scheme must be http or https"),
            (
                "https://idp.example/keys",
                "https needs the data plane's TLS client config",
            ),
            (
                "http://user:pw@idp/keys",
                "credentials in the URL are not supported",
            ),
            ("not a url", "not a URL"),
            (
                "http://idp.example/keys",
                "http:// is only allowed to a loopback address; use https://",
            ),
            (
                "http://127.0.0.1.evil.example/keys",
                "http:// is only allowed to a loopback address; use https://",
            ),
        ];
        for (url, want) in cases {
            let err = Target::parse(url, None).err().unwrap();
            assert_eq!(err.to_string(), format!("JWKS URL {url:?}: {want}"));
        }
        let t = Target::parse("http://127.0.0.1:8080/a/jwks.json?x=1", None).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.authority.as_str()),
            ("127.0.0.1", 8080, "127.0.0.1:8080")
        );
        assert_eq!(t.path, "/a/jwks.json?x=1");
        let t = Target::parse("http://[::1]/", None).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 80));
        assert_eq!(
            JwksSource::spawn("http://localhost/keys", JwksSettings::default()).unwrap_err(),
            JwksError::NoRuntime {
                url: "http://localhost/keys".into()
            }
        );
    }

    #[test]
    fn a_key_set_keeps_usable_keys_and_refuses_a_set_without_any() {
        let rs = Signer::rs256();
        let ed = Signer::ed25519();
        let hs = Signer::hs256();
        let doc = jwks(&[rs.jwk("r1"), hs.jwk("h1"), ed.jwk("e1")]);
        let set = parse_key_set(doc.as_bytes()).unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.has_kid("r1") && set.has_kid("e1") && !set.has_kid("h1"));

        let err = parse_key_set(jwks(&[hs.jwk("h1")]).as_bytes()).unwrap_err();
        assert_eq!(
            err,
            "no usable key (kid Some(\"h1\"): symmetric key in a public key set)"
        );
        assert_eq!(
            parse_key_set(b"{\"keys\":[]}").unwrap_err(),
            "no usable key (the set is empty)"
        );
        assert!(
            parse_key_set(b"<html>")
                .unwrap_err()
                .starts_with("not a JWKS document")
        );
        let many = jwks(&vec![ed.jwk("e"); MAX_JWKS_KEYS + 1]);
        assert_eq!(
            parse_key_set(many.as_bytes()).unwrap_err(),
            "65 keys, more than the 64 accepted"
        );
    }

    /// Ten thousand unknown-kid requests over a minute (one every 6 ms): the fetches are the
    /// first scheduled one plus one per gap, and a failure backs off.
    #[test]
    fn refreshes_for_unknown_kids_are_bounded_by_the_gap() {
        let settings = JwksSettings::default();
        let t0 = Instant::now();
        let mut s = Schedule::new(&settings, t0);
        assert_eq!(s.step(t0, false), Step::Fetch);
        s.fetched(t0, true);
        let mut fetch_times = Vec::new();
        for i in 0..10_000u32 {
            let now = t0 + Duration::from_millis(6 * u64::from(i));
            if s.step(now, true) == Step::Fetch {
                s.fetched(now, true);
                fetch_times.push(now - t0);
            }
        }
        let secs: Vec<u64> = fetch_times.iter().map(|d| d.as_secs()).collect();
        // 60 s of requests, a 10 s gap: at 0, 10, ..., 50 s.
        assert_eq!(secs, [0, 10, 20, 30, 40, 50]);
        // Without requests it waits for the interval, and while deferred it wakes at the gap.
        let last = t0 + fetch_times[5];
        let now = t0 + Duration::from_secs(61);
        assert_eq!(s.step(now, false), Step::WaitUntil(last + REFRESH_INTERVAL));
        let now = t0 + Duration::from_secs(55);
        assert_eq!(
            s.step(now, true),
            Step::WaitUntil(last + MIN_KID_REFRESH_GAP)
        );

        // Failures back off from RETRY_MIN, doubling, capped at the interval.
        let mut s = Schedule::new(&settings, t0);
        let mut waits = Vec::new();
        for _ in 0..8 {
            s.fetched(t0, false);
            waits.push((s.next_scheduled - t0).as_secs());
        }
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300]);
        s.fetched(t0, true);
        assert_eq!(s.next_scheduled - t0, REFRESH_INTERVAL);
    }

    #[test]
    fn candidates_prefer_the_exact_kid_then_keys_without_one() {
        let key = |s: &Signer| VerifyKey::from_material(&s.material()).unwrap();
        let (a, b, c) = (Signer::ed25519(), Signer::ed25519(), Signer::ed25519());
        let set = KeySet::new(vec![
            (Some("a".into()), key(&a)),
            (Some("b".into()), key(&b)),
            (None, key(&c)),
        ]);
        let count = |kid| set.candidates(kid).count();
        assert_eq!(count(Some("a")), 1);
        assert!(
            set.candidates(Some("a"))
                .all(|k| k.verify(b"m", &a.sign(b"m")))
        );
        assert_eq!(count(Some("zzz")), 1);
        assert!(
            set.candidates(Some("zzz"))
                .all(|k| k.verify(b"m", &c.sign(b"m")))
        );
        assert_eq!(count(None), 3);
        let no_wildcard = KeySet::new(vec![(Some("a".into()), key(&a))]);
        assert_eq!(no_wildcard.candidates(Some("zzz")).count(), 0);
    }
}
