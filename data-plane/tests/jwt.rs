//! JWTs end to end (issue 12): a control plane with consumers' JWT credentials, a data plane,
//! a backend. Valid tokens of each algorithm pass and the backend sees the consumer, not the
//! token; every failed check is the same 401; one consumer's key never authenticates another;
//! groups give 403; a JWKS key rotation served by a local identity provider; a removed
//! credential stops working once acked; an HS256 secret never shows in `/config`, the log or
//! a world-readable file.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::*;
use gw_proto::v1 as pb;
use gw_proto::v1::admin_service_client::AdminServiceClient;
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tonic::transport::Channel;

// `testing` reaches the key types as `super::jws`, as it does inside the crate.
use gw_data_plane::auth::jws;

/// The signing helpers of the unit tests (`src/auth/testing.rs`), shared rather than copied.
#[allow(dead_code)]
#[path = "../src/auth/testing.rs"]
mod testing;

use testing::{Signer, jwks};

const ISS: &str = "https://idp.test";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims of a token for `sub`, valid for ten minutes, for audience `api`.
fn claims(sub: &str) -> Value {
    json!({ "iss": ISS, "sub": sub, "aud": "api", "iat": now(), "exp": now() + 600 })
}

/// A service at `prefix` that accepts `methods`, admitting only `groups` (empty: everyone).
fn authed(
    name: &str,
    prefix: &str,
    b: &Backend,
    methods: &[pb::AuthMethod],
    groups: &[&str],
) -> pb::Service {
    pb::Service {
        auth: Some(pb::ServiceAuth {
            methods: methods.iter().map(|m| i32::from(*m)).collect(),
            allowed_groups: groups.iter().map(|g| g.to_string()).collect(),
            key_sources: vec![],
        }),
        ..service(name, prefix, &[b])
    }
}

/// Adds a credential of `consumer` for [`ISS`] with `key`: (id, version).
async fn credential(
    admin: &mut AdminServiceClient<Channel>,
    consumer: &str,
    key: pb::jwt_credential::Key,
    audiences: &[&str],
) -> (String, u64) {
    let r = admin
        .create_jwt_credential(pb::CreateJwtCredentialRequest {
            credential: Some(pb::JwtCredential {
                consumer: consumer.into(),
                issuer: ISS.into(),
                key: Some(key),
                audiences: audiences.iter().map(|a| a.to_string()).collect(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    (r.credential.unwrap().id, r.config_version)
}

/// The key of `signer` as a credential holds it.
fn key_of(signer: &Signer) -> pb::jwt_credential::Key {
    match signer.material() {
        jws::KeyMaterial::Hs256Secret(secret) => {
            pb::jwt_credential::Key::Hs256Secret(secret.expose().to_vec())
        }
        _ => pb::jwt_credential::Key::PublicKeyPem(signer.public_pem()),
    }
}

async fn bearer(env: &Env, path: &str, token: &str) -> Reply {
    bearer_at(env.dp.proxy, path, token).await
}

/// [`bearer`] through the proxy at `proxy` (a binary's).
async fn bearer_at(proxy: std::net::SocketAddr, path: &str, token: &str) -> Reply {
    Call::get(proxy, path)
        .header("authorization", &format!("Bearer {token}"))
        .header("x-consumer-name", "admin")
        .send()
        .await
}

/// Whether the backend's `_headers` echo has header `name`, and its values.
fn seen(r: &Reply, name: &str) -> Vec<String> {
    r.json()["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p[0] == name)
        .map(|p| p[1].as_str().unwrap().to_owned())
        .collect()
}

/// Raises the failed-authentication limit: this test sends more bad tokens than the default
/// allows one address (that limit has its own test in `consumers.rs`).
fn lenient(c: &mut gw_data_plane::Config) {
    c.auth_failure_limit = 1_000;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_check_of_a_jwt_through_the_proxy() {
    let mut env = Env::start_with(lenient).await;
    let b = Backend::start("b").await;
    use pb::AuthMethod::{ApiKey, Jwt};
    env.add(authed("api", "/api", &b, &[Jwt], &[])).await;
    env.add(authed("gold", "/gold", &b, &[Jwt], &["gold"]))
        .await;
    env.add(authed("both", "/both", &b, &[ApiKey, Jwt], &[]))
        .await;
    let signers = [
        ("alice", Signer::hs256()),
        ("bob", Signer::rs256()),
        ("carol", Signer::es256()),
        ("dave", Signer::ed25519()),
    ];
    for (name, signer) in &signers {
        let groups: &[&str] = if *name == "alice" { &["gold"] } else { &[] };
        consumer(&mut env.admin, name, groups).await;
        credential(&mut env.admin, name, key_of(signer), &["api"]).await;
    }
    let key = env
        .admin
        .create_api_key(pb::CreateApiKeyRequest {
            consumer: "carol".into(),
            ttl: None,
        })
        .await
        .unwrap()
        .into_inner();
    env.dp.wait_version(key.config_version).await;
    let [(_, hs), (_, rs), _, (_, ed)] = &signers;

    // Valid tokens of each algorithm: 200, the consumer named, the token and the spoofed
    // name gone.
    for (name, signer) in &signers {
        let r = bearer(&env, "/api/_headers", &signer.token(None, &claims(name))).await;
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        assert_eq!(seen(&r, "x-consumer-name"), [*name]);
        assert!(seen(&r, "authorization").is_empty(), "{name}");
    }
    let r = bearer(&env, "/api/_headers", &hs.token(None, &claims("alice"))).await;
    assert_eq!(seen(&r, "x-consumer-groups"), ["gold"]);

    // Every failed check: the same 401 as no credential at all.
    let missing = env.get("/api/_headers").await;
    assert_eq!(missing.status, 401);
    assert_eq!(
        missing.header("www-authenticate"),
        Some(r#"Bearer realm="gw""#)
    );
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims("bob");
        f(&mut c);
        c
    };
    let tampered = {
        let t = rs.token(None, &claims("bob"));
        let (head, sig) = t.rsplit_once('.').unwrap();
        let flip = if sig.ends_with('A') { 'B' } else { 'A' };
        format!("{head}.{}{flip}", &sig[..sig.len() - 1])
    };
    let unsigned = testing::sign_parts(&json!({"alg": "none"}), &claims("bob"), |_| vec![]);
    // HS256 "signed" with bob's RSA public key as the secret: the confusion attack.
    let confused = Signer::hs256_with(rs.public_pem().as_bytes()).token(None, &claims("bob"));
    let cases = [
        (
            "expired",
            rs.token(None, &with(&|c| c["exp"] = (now() - 3600).into())),
        ),
        (
            "not yet valid",
            rs.token(None, &with(&|c| c["nbf"] = (now() + 3600).into())),
        ),
        (
            "wrong issuer",
            rs.token(None, &with(&|c| c["iss"] = "https://evil.test".into())),
        ),
        (
            "wrong audience",
            rs.token(None, &with(&|c| c["aud"] = "other".into())),
        ),
        ("tampered signature", tampered),
        ("alg none", unsigned),
        ("HS/RS confusion", confused),
        // Alice's own secret and Dave's own key, each naming bob: never bob.
        ("alice's secret naming bob", hs.token(None, &claims("bob"))),
        ("dave's key naming bob", ed.token(None, &claims("bob"))),
        ("no such consumer", rs.token(None, &claims("mallory"))),
    ];
    let hits = b.hits();
    for (what, token) in &cases {
        let r = bearer(&env, "/api/_headers", token).await;
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert_eq!(r.body, missing.body, "{what}: the same body");
        assert_eq!(
            r.header("www-authenticate"),
            Some(r#"Bearer realm="gw""#),
            "{what}"
        );
    }
    assert_eq!(b.hits(), hits, "refused requests never reach the backend");

    // Groups: alice is gold, bob is not.
    let r = bearer(&env, "/gold/_headers", &hs.token(None, &claims("alice"))).await;
    assert_eq!(r.status, 200);
    let r = bearer(&env, "/gold/_headers", &rs.token(None, &claims("bob"))).await;
    assert_eq!(r.status, 403, "{}", r.text());

    // key,jwt: either works.
    let r = bearer(&env, "/both/_headers", &key.key).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(seen(&r, "x-consumer-name"), ["carol"]);
    let r = bearer(&env, "/both/_headers", &rs.token(None, &claims("bob"))).await;
    assert_eq!(r.status, 200);
    assert_eq!(seen(&r, "x-consumer-name"), ["bob"]);
    // A JWT-only service takes no API key.
    let r = bearer(&env, "/api/_headers", &key.key).await;
    assert_eq!(r.status, 401);

    // Counted by service and reason, expired apart from invalid.
    let count = |reason: &'static str| {
        let series = format!("gw_auth_failures_total{{service=\"api\",reason=\"{reason}\"}}");
        let dp = &env.dp;
        async move { dp.metric(&series).await.unwrap_or(0.0) }
    };
    assert_eq!(count("expired").await, 1.0);
    assert_eq!(count("invalid").await, cases.len() as f64);
    assert_eq!(count("missing").await, 1.0);
}

/// A JWKS endpoint whose key set the test sets, counting the requests it serves; over https
/// when started with a TLS acceptor.
struct Idp {
    port: u16,
    https: bool,
    doc: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Idp {
    async fn start(doc: String) -> Self {
        Self::start_with(doc, None).await
    }

    async fn start_with(doc: String, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let https = tls.is_some();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let doc = Arc::new(Mutex::new(doc));
        let hits = Arc::new(AtomicUsize::new(0));
        let (d, h) = (doc.clone(), hits.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (d, h, tls) = (d.clone(), h.clone(), tls.clone());
                // A client that refuses the certificate sends no request: no hit.
                tokio::spawn(testing::serve_connection(tcp, tls, move |_req| {
                    h.fetch_add(1, Ordering::SeqCst);
                    let body = d.lock().unwrap().clone();
                    hyper::Response::new(Full::new(Bytes::from(body)))
                }));
            }
        });
        Self {
            port,
            https,
            doc,
            hits,
            task,
        }
    }

    fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/.well-known/jwks.json", self.port)
    }

    fn serve(&self, doc: String) {
        *self.doc.lock().unwrap() = doc;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_rotation_is_followed_and_a_removed_credential_stops_working() {
    let mut env = Env::start_with(lenient).await;
    let b = Backend::start("b").await;
    env.add(authed("api", "/api", &b, &[pb::AuthMethod::Jwt], &[]))
        .await;
    let (k1, k2) = (Signer::es256(), Signer::ed25519());
    let idp = Idp::start(jwks(&[k1.jwk("kid1")])).await;
    consumer(&mut env.admin, "alice", &[]).await;
    let (id, v) = credential(
        &mut env.admin,
        "alice",
        pb::jwt_credential::Key::JwksUrl(idp.url()),
        &[],
    )
    .await;
    env.dp.wait_version(v).await;
    // Waiting for the fetch before any token is sent: a token that found the set still empty
    // would ask for a refresh, a second fetch that would blur the "no refetch" check below.
    let keys_series = format!("gw_jwks_keys{{url=\"{}\"}}", idp.url());
    eventually("the node fetched the key set", || async {
        (env.dp.metric(&keys_series).await == Some(1.0)).then_some(())
    })
    .await;
    let t1 = k1.token(Some("kid1"), &claims("alice"));
    assert_eq!(bearer(&env, "/api/_headers", &t1).await.status, 200);

    // A new config version (an unrelated service) keeps the source: no refetch.
    let fetched = idp.hits.load(Ordering::SeqCst);
    env.add(service("open", "/open", &[&b])).await;
    assert_eq!(bearer(&env, "/api/_headers", &t1).await.status, 200);
    assert_eq!(idp.hits.load(Ordering::SeqCst), fetched, "no refetch");

    // The provider rotates: kid2 only. A kid2 token makes the node refresh.
    idp.serve(jwks(&[k2.jwk("kid2")]));
    let t2 = k2.token(Some("kid2"), &claims("alice"));
    eventually(
        "a kid2 token passes after the unknown-kid refresh",
        || async {
            let r = bearer(&env, "/api/_headers", &t2).await;
            (r.status == 200).then(|| assert_eq!(seen(&r, "x-consumer-name"), ["alice"]))
        },
    )
    .await;
    assert!(idp.hits.load(Ordering::SeqCst) > fetched);
    // kid1 left the set: its token no longer verifies (nor is it answered from the cache).
    assert_eq!(bearer(&env, "/api/_headers", &t1).await.status, 401);
    let ok_series = format!(
        "gw_jwks_fetches_total{{url=\"{}\",outcome=\"ok\"}}",
        idp.url()
    );
    assert_eq!(env.dp.metric(&keys_series).await, Some(1.0));
    assert!(env.dp.metric(&ok_series).await.unwrap() >= 2.0);

    // The credential removed: 401 once the node has the version.
    let v = env
        .admin
        .delete_jwt_credential(pb::DeleteJwtCredentialRequest { id })
        .await
        .unwrap()
        .into_inner()
        .config_version;
    env.dp.wait_version(v).await;
    assert_eq!(bearer(&env, "/api/_headers", &t2).await.status, 401);
    // No credential uses the URL any more: the node forgets its source.
    assert_eq!(env.dp.metric(&keys_series).await, None);
}

// Current-thread: the log is captured on this thread, where the data plane then runs.
#[tokio::test]
async fn an_hs256_secret_is_in_no_config_log_or_readable_file() {
    let (log, _guard) = gw_testkit::log::CapturedLog::on_this_thread(tracing::Level::TRACE);
    let mut env = Env::start_with(lenient).await;
    let b = Backend::start("b").await;
    env.add(authed("api", "/api", &b, &[pb::AuthMethod::Jwt], &[]))
        .await;
    // A printable secret, so a text search finds it wherever it went.
    let secret = format!("s3cr3t-{}", gw_testkit::backend::hex(&now().to_be_bytes())).repeat(2);
    assert!(secret.len() >= 32);
    let signer = Signer::hs256_with(secret.as_bytes());
    consumer(&mut env.admin, "alice", &[]).await;
    let (id, v) = credential(
        &mut env.admin,
        "alice",
        pb::jwt_credential::Key::Hs256Secret(secret.clone().into_bytes()),
        &[],
    )
    .await;
    env.dp.wait_version(v).await;
    // Used, well and badly (a bad signature is logged as such).
    let good = signer.token(None, &claims("alice"));
    assert_eq!(bearer(&env, "/api/_headers", &good).await.status, 200);
    let bad = Signer::hs256().token(None, &claims("alice"));
    assert_eq!(bearer(&env, "/api/_headers", &bad).await.status, 401);

    let config = env.dp.admin_get("/config").await.text();
    assert!(config.contains(&id), "the credential is listed: {config}");
    assert!(config.contains("HS256"), "{config}");
    assert!(!config.contains(&secret), "{config}");
    let logged = log.text();
    assert!(logged.contains("JWT refused"), "the log was captured");
    assert!(
        logged.contains("bad signature"),
        "which check failed is logged"
    );
    assert!(!logged.contains(&secret), "the secret is in the log");
    for token in [&good, &bad] {
        let signature = token.rsplit_once('.').unwrap().1;
        assert!(!logged.contains(signature), "a token is in the log");
    }
    // The cache must hold the secret (the node serves from it when the control plane is
    // away), so it is readable by its owner only.
    let cache = env.dir.path().join("dp.cache");
    eventually("the cache holds the credential", || async {
        let bytes = std::fs::read(&cache).ok()?;
        bytes
            .windows(secret.len())
            .any(|w| w == secret.as_bytes())
            .then_some(())
    })
    .await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the cache file is owner-only");
}

/// A TLS acceptor presenting a certificate for 127.0.0.1 issued by `ca`.
fn tls_acceptor(ca: &gw_testkit::tls::Ca) -> tokio_rustls::TlsAcceptor {
    let pair = ca.server(&["127.0.0.1"]);
    let certs = gw_tls::pem::certs("idp cert", pair.cert.as_bytes()).unwrap();
    let key = gw_tls::pem::key("idp key", &gw_tls::Secret::new(pair.key)).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(gw_tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    Arc::new(config).into()
}

/// An identity provider behind a private CA, through the real binary (so the flag itself is
/// tested): a data plane started with `--jwks-ca-cert` fetches the keys over https and a token
/// passes; one without it cannot fetch, refuses the token, reports the URL as failing and logs
/// why once, naming the URL, with no token text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_jwks_from_a_private_ca_is_fetched_with_jwks_ca_cert_only() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path()).await;
    let mut admin = cp.admin().await;
    let b = Backend::start("b").await;
    create(
        &mut admin,
        authed("api", "/api", &b, &[pb::AuthMethod::Jwt], &[]),
    )
    .await;
    let ca = gw_testkit::tls::Ca::new("corporate CA");
    let signer = Signer::es256();
    let idp = Idp::start_with(jwks(&[signer.jwk("k1")]), Some(tls_acceptor(&ca))).await;
    assert!(idp.url().starts_with("https://"));
    consumer(&mut admin, "alice", &[]).await;
    credential(
        &mut admin,
        "alice",
        pb::jwt_credential::Key::JwksUrl(idp.url()),
        &[],
    )
    .await;
    let ca_file = ca.write(dir.path(), "corporate-ca");
    let mut with_flag = data_plane_command(&cp, dir.path(), "trusting");
    with_flag.arg("--jwks-ca-cert").arg(&ca_file);
    let trusting = Binary::spawn(with_flag).await;
    let untrusting = Binary::spawn(data_plane_command(&cp, dir.path(), "untrusting")).await;
    let token = signer.token(Some("k1"), &claims("alice"));

    eventually("a token passes on the node that trusts the CA", || async {
        let r = bearer_at(trusting.proxy, "/api/_headers", &token).await;
        (r.status == 200).then(|| assert_eq!(seen(&r, "x-consumer-name"), ["alice"]))
    })
    .await;
    let url = idp.url();
    let failing = format!("gw_jwks_failing{{url=\"{url}\"}}");
    let failed = format!("gw_jwks_fetches_total{{url=\"{url}\",outcome=\"failed\"}}");
    assert_eq!(metric_at(trusting.admin, &failing).await, Some(0.0));
    assert_eq!(
        metric_at(trusting.admin, &format!("gw_jwks_keys{{url=\"{url}\"}}")).await,
        Some(1.0)
    );

    // Without the flag: the system's trust store does not know the CA.
    eventually(
        "the node without the flag reports the URL failing",
        || async { (metric_at(untrusting.admin, &failing).await == Some(1.0)).then_some(()) },
    )
    .await;
    let hits = idp.hits.load(Ordering::SeqCst);
    let r = bearer_at(untrusting.proxy, "/api/_headers", &token).await;
    assert_eq!(r.status, 401, "{}", r.text());
    // The unknown kid asks for a refresh, which fails too, and is not logged again.
    eventually("a second failed fetch", || async {
        (metric_at(untrusting.admin, &failed).await >= Some(2.0)).then_some(())
    })
    .await;
    assert_eq!(
        idp.hits.load(Ordering::SeqCst),
        hits,
        "no request got past the handshake"
    );
    let warned = untrusting.log_lines("JWKS fetch failed");
    assert_eq!(warned.len(), 1, "logged once: {warned:?}");
    let line = &warned[0];
    for needle in [url.as_str(), "certificate unknown", "UnknownIssuer"] {
        assert!(line.contains(needle), "{needle} in {line}");
    }
    let signature = token.rsplit_once('.').unwrap().1;
    for log in [&untrusting.log, &trusting.log] {
        let log = log.lock().unwrap();
        assert!(!log.is_empty());
        assert!(
            !log.iter().any(|l| l.contains(signature)),
            "a token is in the log"
        );
    }
    assert!(trusting.log_lines("JWKS fetch failed").is_empty());
}

/// A `--jwks-ca-cert` (or `GW_JWKS_CA_CERT`) that cannot be used stops the start with one
/// line naming the flag, the file and what is wrong.
#[tokio::test]
async fn an_unusable_jwks_ca_cert_stops_the_start_naming_the_flag_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let key_only = dir.path().join("key.pem");
    std::fs::write(
        &key_only,
        gw_testkit::tls::Ca::new("ca").server(&["localhost"]).key,
    )
    .unwrap();
    let cases = [
        (&missing, false, "no such file or directory"),
        (
            &junk,
            false,
            "not PEM: expected a '-----BEGIN CERTIFICATE-----' block",
        ),
        (
            &key_only,
            true,
            "not PEM: expected a '-----BEGIN CERTIFICATE-----' block",
        ),
    ];
    for (path, by_env, why) in cases {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_gw-data-plane"));
        cmd.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .arg("--cache-file")
            .arg(dir.path().join("dp.cache"))
            .env_remove("GW_JWKS_CA_CERT")
            .kill_on_drop(true);
        if by_env {
            cmd.env("GW_JWKS_CA_CERT", path);
        } else {
            cmd.arg("--jwks-ca-cert").arg(path);
        }
        let out = tokio::time::timeout(gw_testkit::DEFAULT_DEADLINE, cmd.output())
            .await
            .expect("the data plane refuses to start")
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        let want = format!("--jwks-ca-cert: {}: ", path.display());
        assert!(err.contains(&want), "{want} in {err}");
        assert!(err.contains(why), "{why} in {err}");
    }
}
