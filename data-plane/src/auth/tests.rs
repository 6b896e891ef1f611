//! JWKS end to end: a verifier whose issuer's keys come from a local identity provider (an
//! HTTP server on an ephemeral loopback port whose key set the test rotates), counting the
//! fetches it serves. No fixed sleeps: every wait polls with a deadline.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use gw_testkit::eventually;
use http_body_util::Full;
use serde_json::json;
use tokio::net::TcpListener;

use super::jwks::{JwksSettings, JwksSource};
use super::jwt::{CredentialKeys, JwtCredential, JwtReject, JwtVerifier, Verified};
use super::testing::{Signer, jwks, serve_connection};

const ISS: &str = "https://idp.example";
const HOUR: Duration = Duration::from_secs(3600);

/// A JWKS endpoint whose answer the test sets, counting the requests it serves.
struct Idp {
    port: u16,
    answer: Arc<Mutex<(u16, String)>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Idp {
    /// Serves `keys` over plain HTTP, or over TLS when `tls` is given.
    async fn start(keys: &[String], tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = Arc::new(Mutex::new((200, jwks(keys))));
        let hits = Arc::new(AtomicUsize::new(0));
        let (a, h) = (answer.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (a, h, tls) = (a.clone(), h.clone(), tls.clone());
                tokio::spawn(serve_connection(tcp, tls, move |req| {
                    assert_eq!(req.uri().path(), "/.well-known/jwks.json");
                    h.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = a.lock().unwrap().clone();
                    hyper::Response::builder()
                        .status(status)
                        .body(Full::new(Bytes::from(body)))
                        .unwrap()
                }));
            }
        });
        Self {
            port,
            answer,
            hits,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/.well-known/jwks.json", self.port)
    }

    fn serve(&self, status: u16, body: String) {
        *self.answer.lock().unwrap() = (status, body);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn settings(min_kid_refresh_gap: Duration) -> JwksSettings {
    JwksSettings {
        // Only unknown kids cause refreshes in these tests.
        refresh_interval: HOUR,
        min_kid_refresh_gap,
        retry_min: HOUR,
        fetch_timeout: Duration::from_secs(10),
        tls: None,
    }
}

fn verifier(source: &JwksSource) -> JwtVerifier {
    JwtVerifier::new(vec![JwtCredential {
        consumer: "alice".into(),
        issuer: ISS.into(),
        audiences: vec![],
        consumer_claim: "sub".into(),
        keys: CredentialKeys::Jwks(source.clone()),
    }])
    .unwrap()
}

fn token(signer: &Signer, kid: &str) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    signer.token(
        Some(kid),
        &json!({ "iss": ISS, "sub": "alice", "exp": now + 3600 }),
    )
}

async fn until_verifies(v: &JwtVerifier, token: &str, what: &str) {
    eventually(what, || async {
        v.verify(token, SystemTime::now())
            .ok()
            .map(|Verified { consumer, .. }| assert_eq!(&*consumer, "alice"))
    })
    .await;
}

fn check(v: &JwtVerifier, token: &str) -> Result<(), JwtReject> {
    v.verify(token, SystemTime::now()).map(|_| ())
}

#[tokio::test]
async fn jwks_rotation_picks_up_the_new_key_and_drops_the_removed_one() {
    let (old, new) = (Signer::rs256(), Signer::es256());
    let idp = Idp::start(&[old.jwk("old")], None).await;
    let source = JwksSource::spawn(&idp.url(), settings(Duration::ZERO)).unwrap();
    let v = verifier(&source);
    let (old_token, new_token) = (token(&old, "old"), token(&new, "new"));

    until_verifies(&v, &old_token, "the old key is fetched").await;
    assert_eq!(check(&v, &new_token), Err(JwtReject::UnknownKey));

    // The provider publishes the new key next to the old one: a token with the new kid makes
    // the data plane refetch, and both verify.
    idp.serve(200, jwks(&[old.jwk("old"), new.jwk("new")]));
    until_verifies(&v, &new_token, "the new key is picked up after a refresh").await;
    assert_eq!(check(&v, &old_token), Ok(()));

    // The provider retires the old key; the next refresh (caused by an unknown kid here)
    // drops it.
    idp.serve(200, jwks(&[new.jwk("new")]));
    let other = token(&new, "unknown");
    eventually("the old key is dropped", || async {
        let _ = check(&v, &other);
        (check(&v, &old_token) == Err(JwtReject::UnknownKey)).then_some(())
    })
    .await;
    assert_eq!(check(&v, &new_token), Ok(()));
    // A token signed by the old key but naming the new kid is not accepted either.
    assert_eq!(check(&v, &token(&old, "new")), Err(JwtReject::AlgMismatch));
    assert_eq!(source.stats().fetches_failed, 0);
}

#[tokio::test]
async fn unknown_kids_cause_at_most_one_refresh_per_gap() {
    let (a, b) = (Signer::ed25519(), Signer::ed25519());
    let idp = Idp::start(&[a.jwk("a")], None).await;
    let source = JwksSource::spawn(&idp.url(), settings(HOUR)).unwrap();
    let v = verifier(&source);
    // Waits without verifying: a token checked against the still empty set would ask for the
    // one refresh the gap allows.
    eventually("the first fetch", || async {
        (source.stats().fetches_ok == 1).then_some(())
    })
    .await;
    assert_eq!(check(&v, &token(&a, "a")), Ok(()));
    assert_eq!(idp.hits(), 1);

    // The first unknown kid refreshes at once: b is published and picked up.
    idp.serve(200, jwks(&[a.jwk("a"), b.jwk("b")]));
    until_verifies(&v, &token(&b, "b"), "the refresh for kid b").await;
    assert_eq!(idp.hits(), 2);

    // A flood of made-up kids within the gap: every token is refused at once, and the task
    // defers the refresh they ask for instead of fetching.
    for i in 0..500 {
        let forged = token(&a, &format!("forged-{i}"));
        assert_eq!(check(&v, &forged), Err(JwtReject::UnknownKey));
    }
    eventually("the task defers the refresh", || async {
        (source.stats().refreshes_deferred >= 1).then_some(())
    })
    .await;
    assert_eq!(idp.hits(), 2, "no fetch within the gap");
    let stats = source.stats();
    assert_eq!((stats.fetches_ok, stats.fetches_failed), (2, 0));
    assert_eq!(check(&v, &token(&a, "a")), Ok(()));
}

#[tokio::test]
async fn a_failed_fetch_keeps_the_last_good_keys() {
    let (a, b) = (Signer::es256(), Signer::ed25519());
    let idp = Idp::start(&[a.jwk("a")], None).await;
    let source = JwksSource::spawn(&idp.url(), settings(Duration::ZERO)).unwrap();
    let v = verifier(&source);
    let a_token = token(&a, "a");
    until_verifies(&v, &a_token, "the first fetch").await;

    // Each unknown kid asks for a refresh; each answer is unusable.
    let probe = token(&b, "b");
    for (n, (status, body)) in [
        (500, jwks(&[b.jwk("b")])),
        (200, "<html>maintenance</html>".to_owned()),
        (200, jwks(&[])),
    ]
    .into_iter()
    .enumerate()
    {
        idp.serve(status, body);
        eventually("the failed fetch is counted", || async {
            let _ = check(&v, &probe);
            (source.stats().fetches_failed > n as u64).then_some(())
        })
        .await;
        assert!(source.stats().failing);
        assert_eq!(check(&v, &a_token), Ok(()), "kept after failure {n}");
        assert_eq!(check(&v, &probe), Err(JwtReject::UnknownKey));
    }

    idp.serve(200, jwks(&[a.jwk("a"), b.jwk("b")]));
    until_verifies(&v, &probe, "recovery").await;
    assert!(!source.stats().failing);
}

#[tokio::test]
async fn verification_never_waits_for_a_fetch() {
    // A provider that accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        silent.local_addr().unwrap()
    );
    let mut s = settings(Duration::ZERO);
    s.fetch_timeout = Duration::from_millis(200);
    let source = JwksSource::spawn(&url, s).unwrap();
    let v = verifier(&source);
    let a = Signer::ed25519();
    // Refused at once while the fetch hangs (verify is synchronous: it cannot wait).
    assert_eq!(check(&v, &token(&a, "a")), Err(JwtReject::UnknownKey));
    eventually("the hung fetch times out and is counted", || async {
        (source.stats().fetches_failed >= 1).then_some(())
    })
    .await;
    assert_eq!(check(&v, &token(&a, "a")), Err(JwtReject::UnknownKey));
}

#[tokio::test]
async fn jwks_over_https_verifies_the_providers_certificate() {
    gw_tls::install_provider();
    let ca = gw_testkit::tls::Ca::new("idp test CA");
    let pair = ca.server(&["localhost"]);
    let certs = gw_tls::pem::certs("idp cert", pair.cert.as_bytes()).unwrap();
    let key = gw_tls::pem::key("idp key", &gw_tls::Secret::new(pair.key.clone())).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(gw_tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let a = Signer::es256();
    let idp = Idp::start(&[a.jwk("a")], Some(Arc::new(server).into())).await;

    let client = |ca_pem: &str| {
        let mut roots = rustls::RootCertStore::empty();
        for c in gw_tls::pem::certs("ca", ca_pem.as_bytes()).unwrap() {
            roots.add(c).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(gw_tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut s = settings(Duration::ZERO);
        s.tls = Some(Arc::new(config));
        s
    };
    let url = format!("https://localhost:{}/.well-known/jwks.json", idp.port);
    let trusted = JwksSource::spawn(&url, client(&ca.cert_pem())).unwrap();
    let v = verifier(&trusted);
    until_verifies(&v, &token(&a, "a"), "the key fetched over https").await;

    // A client that does not trust the provider's CA gets no keys.
    let other_ca = gw_testkit::tls::Ca::new("another CA");
    let untrusting = JwksSource::spawn(&url, client(&other_ca.cert_pem())).unwrap();
    eventually("the TLS failure is counted", || async {
        (untrusting.stats().fetches_failed >= 1).then_some(())
    })
    .await;
    assert!(untrusting.keys().is_empty());
    assert_eq!(
        check(&verifier(&untrusting), &token(&a, "a")),
        Err(JwtReject::UnknownKey)
    );
}
