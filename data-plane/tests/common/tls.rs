//! A TLS client for the tests: connections trusting a test CA, the certificate the server
//! presented, and HTTP/1.1 over them.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use gw_testkit::tls::Ca;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A TLS connection to `addr` trusting `ca`, asking for `name` (an IP address sends no SNI)
/// and offering `alpn`.
pub async fn tls(addr: SocketAddr, ca: &Ca, name: &str, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    try_tls(addr, ca, name, alpn).await.unwrap()
}

/// [`tls`], or why the handshake failed.
pub async fn try_tls(
    addr: SocketAddr,
    ca: &Ca,
    name: &str,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            gw_tls::pem::certs("ca", ca.cert_pem().as_bytes()).unwrap()[0].to_vec(),
        ))
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(gw_tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
}

/// The DNS names of the certificate the server presented.
pub fn served_names(stream: &TlsStream<TcpStream>) -> Vec<String> {
    let leaf = &stream.get_ref().1.peer_certificates().unwrap()[0];
    gw_tls::cert::inspect("served", leaf).unwrap().dns_names
}

/// A GET over an HTTP/1.1 connection; returns the status and body.
pub async fn get(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: &str,
    path: &str,
) -> (StatusCode, String) {
    get_authorized(sender, host, path, None).await
}

/// [`get`] with `authorization: <value>` when given.
pub async fn get_authorized(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: &str,
    path: &str,
    authorization: Option<&str>,
) -> (StatusCode, String) {
    let mut req = Request::get(path).header("host", host);
    if let Some(value) = authorization {
        req = req.header("authorization", value);
    }
    let req = req.body(Empty::new()).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// An HTTP/1.1 client connection over `stream`.
pub async fn http1(
    stream: TlsStream<TcpStream>,
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}
