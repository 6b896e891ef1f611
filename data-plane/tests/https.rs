//! HTTPS for clients, end to end: certificates added through the control plane, chosen by SNI
//! (exact, wildcard, default), ALPN h2, plain HTTP redirected, a certificate replaced while a
//! connection is open, keys kept out of `/config` and the cache readable by its owner only;
//! and https:// backends verified against the service's CA (502 when verification fails).
//! Certificates come from a CA made in the test.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use common::tls::{get, http1, served_names, tls};
use common::{Backend, ControlPlane, DataPlane, create, eventually, logs, put_cert, service};
use gw_proto::v1 as pb;
use gw_testkit::tls::{Ca, Pair};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[tokio::test]
async fn https_by_sni_alpn_h2_redirect_and_rotation_with_the_connection_open() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path()).await;
    let mut admin = cp.admin().await;
    let ca = Ca::new("site CA");
    let backend = Backend::start("b1").await;
    let mut web = service("web", "/", &[&backend]);
    web.https_redirect = true;
    create(&mut admin, web).await;
    put_cert(&mut admin, "a", &ca.server(&["a.test"])).await;
    put_cert(&mut admin, "b", &ca.server(&["*.b.test"])).await;
    let version = put_cert(
        &mut admin,
        "default",
        &ca.server(&["fallback.test", "127.0.0.1"]),
    )
    .await;
    let cache = dir.path().join("dp.cache");
    let dp =
        DataPlane::start_with_https(&cp.url(), true, |c| c.cache_file = Some(cache.clone())).await;
    dp.wait_version(version).await;
    let https = dp.https.unwrap();

    // SNI picks the certificate: exact, wildcard, and the default without SNI.
    assert_eq!(
        served_names(&tls(https, &ca, "a.test", &[]).await),
        ["a.test"]
    );
    assert_eq!(
        served_names(&tls(https, &ca, "x.b.test", &[]).await),
        ["*.b.test"]
    );
    let no_sni = tls(https, &ca, "127.0.0.1", &[]).await;
    assert_eq!(served_names(&no_sni), ["fallback.test"]);

    // ALPN h2: the request goes through over HTTP/2, and the backend hears https.
    let h2 = tls(https, &ca, "a.test", &[b"h2", b"http/1.1"]).await;
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(h2))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("https://a.test/_headers")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let echoed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let proto = echoed["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "x-forwarded-proto")
        .map(|h| h[1].clone());
    assert_eq!(proto, Some(serde_json::json!("https")), "{echoed}");

    // Plain HTTP to an https_redirect service: 308 to the same URL on the HTTPS port.
    let plain = common::Call::get(dp.proxy, "/x?y=1")
        .header("host", "a.test:8080")
        .send()
        .await;
    assert_eq!(plain.status, 308);
    assert_eq!(
        plain.header("location"),
        Some(format!("https://a.test:{}/x?y=1", https.port()).as_str())
    );

    // Rotation: a connection made with the old certificate keeps working; new handshakes get
    // the new one. No restart.
    let old_conn = tls(https, &ca, "a.test", &[b"http/1.1"]).await;
    let old_leaf = old_conn.get_ref().1.peer_certificates().unwrap()[0].clone();
    let mut old = http1(old_conn).await;
    assert_eq!(get(&mut old, "a.test", "/").await.0, StatusCode::OK);
    let renewed = ca.server(&["a.test"]);
    let version = put_cert(&mut admin, "a", &renewed).await;
    dp.wait_version(version).await;
    let fresh = tls(https, &ca, "a.test", &[]).await;
    let fresh_leaf = fresh.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_ne!(
        fresh_leaf, old_leaf,
        "a new handshake sees the new certificate"
    );
    assert_eq!(get(&mut old, "a.test", "/").await.0, StatusCode::OK);

    // The private keys are nowhere in /config, and the cache holding them is 0600.
    let config = dp.admin_get("/config").await.text();
    assert!(config.contains("\"name\":\"a\""), "{config}");
    let key_body = renewed.key.lines().nth(1).unwrap();
    assert!(!config.contains(key_body), "key in /config");
    assert!(!config.contains("PRIVATE KEY"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "cache file mode {mode:o}");
    // ...nor in the control plane's listing.
    let listed = admin
        .list_certificates(pb::ListCertificatesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.certificates.len(), 3);
    assert!(
        listed
            .certificates
            .iter()
            .all(|c| c.private_key_pem.is_empty())
    );
    assert_eq!(listed.certificates[0].sans, ["a.test"]);
}

/// A backend that answers every request with 200 "tls-backend" over TLS with `pair`.
async fn tls_backend(pair: &Pair) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let checked = gw_tls::cert::check(
        "backend",
        pair.cert.as_bytes(),
        &gw_tls::Secret::new(pair.key.clone()),
        std::time::SystemTime::now(),
    )
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(gw_tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            checked.key.cert.clone(),
            rustls::pki_types::PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(Bytes::from_static(b"tls-backend")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

use rustls::pki_types::pem::PemObject;

#[tokio::test]
async fn https_backends_are_verified_against_the_services_ca() {
    // The data plane runs on this test's thread: its warnings land here.
    let (log, _guard) = gw_testkit::log::CapturedLog::on_this_thread(tracing::Level::WARN);
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path()).await;
    let mut admin = cp.admin().await;
    let backend_ca = Ca::new("backend CA");
    let addr = tls_backend(&backend_ca.server(&["localhost"])).await;
    let endpoint = format!("https://localhost:{}", addr.port());

    let mut trusted = service("trusted", "/trusted", &[]);
    trusted.endpoints = vec![endpoint.clone()];
    trusted.upstream_tls = Some(pb::UpstreamTls {
        ca_bundle_pem: backend_ca.cert_pem(),
        insecure_skip_verify: false,
    });
    create(&mut admin, trusted).await;
    // Verified against the system's roots, which do not know the test CA: 502.
    let mut untrusted = service("untrusted", "/untrusted", &[]);
    untrusted.endpoints = vec![endpoint.clone()];
    create(&mut admin, untrusted).await;
    // Another CA's bundle: 502 as well.
    let mut wrong = service("wrong", "/wrong", &[]);
    wrong.endpoints = vec![endpoint.clone()];
    wrong.upstream_tls = Some(pb::UpstreamTls {
        ca_bundle_pem: Ca::new("other").cert_pem(),
        insecure_skip_verify: false,
    });
    let version = create(&mut admin, wrong).await;
    let dp = DataPlane::start(&cp.url(), |_| {}).await;
    dp.wait_version(version).await;

    let ok = common::Call::get(dp.proxy, "/trusted/x").send().await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.text(), "tls-backend");
    for path in ["/untrusted/x", "/wrong/x"] {
        let failed = common::Call::get(dp.proxy, path).send().await;
        assert_eq!(failed.status, 502, "{path}: {}", failed.text());
    }
    // The log says why, per service.
    let text = log.text();
    for name in ["untrusted", "wrong"] {
        assert!(
            text.lines()
                .any(|l| l.contains("upstream TLS handshake failed")
                    && l.contains(&format!("service={name}"))
                    && l.contains("invalid peer certificate")),
            "{name}: {text}"
        );
    }
    // The health checks reach it over TLS too: the trusted service's endpoint stays healthy.
    eventually("the trusted endpoint to stay healthy", || async {
        let r = dp.admin_get("/config").await.json();
        let svc = r["services"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "trusted")?
            .clone();
        (svc["endpoints"][0]["healthy"] == true).then_some(())
    })
    .await;
}
