//! TLS on the gRPC listener: the server certificate, the CAs whose client certificates
//! identify data planes (mTLS), rotation without a restart, and the accept loop that does the
//! handshakes.
//!
//! The rustls config is built once; what rotates lives behind two swappable pointers inside
//! it (the certificate, a [`gw_tls::reload::ServerCert`], and the client-certificate
//! verifier). [`ServerTls::watch`] re-reads the files on SIGHUP and every [`RELOAD_POLL`]
//! (through [`gw_tls::reload::Watcher`], as the data plane's admin listener does); a set that
//! does not load (a certificate replaced before its key, say) is logged and the previous one
//! stays, so a rotation in progress never takes the listener down. Connections already open
//! keep the credentials they were made with; new handshakes see the new ones.
//!
//! Rotating the client CA without cutting a node off: put the new CA's certificate *beside*
//! the old one (`--client-ca` takes a bundle and may be repeated), move the nodes to
//! certificates from the new CA, then remove the old one. Both are trusted in between.
//!
//! Handshakes run on their own tasks with a deadline and a cap on how many are in progress,
//! so a peer that opens connections and never finishes a handshake cannot stall the accept
//! loop or use up memory.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use gw_tls::cert::CertError;
use gw_tls::pem::{self, PemError};
use gw_tls::reload::{ServerCert, Watcher};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

pub use gw_tls::reload::RELOAD_POLL;
/// Time a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; beyond this, new connections are closed at once.
const MAX_HANDSHAKES: usize = 1024;
/// Finished connections waiting for the gRPC server to take them.
const ACCEPTED_BACKLOG: usize = 128;

/// Where the control plane's TLS credentials are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Server certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
    /// CA bundles whose certificates identify data planes; empty: no client certificates.
    pub client_ca: Vec<PathBuf>,
}

/// Why the TLS credentials could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The server certificate or key is unusable.
    #[error("--tls-cert/--tls-key: {0}")]
    Cert(#[from] CertError),
    /// A client CA file is unusable.
    #[error("--client-ca: {0}")]
    ClientCa(#[from] PemError),
    /// The CA certificates could not be used as trust anchors.
    #[error("--client-ca: {0}")]
    Verifier(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The listener's TLS: a rustls config whose certificate and client CAs can be swapped.
#[derive(Debug)]
pub struct ServerTls {
    files: TlsFiles,
    cert: Arc<ServerCert>,
    verifier: Option<Arc<ArcSwap<Arc<dyn ClientCertVerifier>>>>,
    config: Arc<ServerConfig>,
}

impl ServerTls {
    /// Loads the files (refusing a certificate that is expired or does not match its key).
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let cert = Arc::new(ServerCert::load(files.cert.clone(), files.key.clone())?);
        let verifier = if files.client_ca.is_empty() {
            None
        } else {
            Some(Arc::new(ArcSwap::from_pointee(load_verifier(&files)?)))
        };
        let client_auth: Arc<dyn ClientCertVerifier> = match &verifier {
            Some(v) => Arc::new(Swapped(v.clone())),
            None => WebPkiClientVerifier::no_client_auth(),
        };
        let mut config = ServerConfig::builder_with_provider(gw_tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_client_cert_verifier(client_auth)
            .with_cert_resolver(cert.clone());
        // gRPC is HTTP/2 only; clients (grpcurl, tonic) insist on ALPN h2.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            files,
            cert,
            verifier,
            config: Arc::new(config),
        })
    }

    /// Whether client certificates are asked for (a client CA is configured).
    pub fn verifies_clients(&self) -> bool {
        self.verifier.is_some()
    }

    /// Reads every file again and swaps in what loads; on error nothing changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let verifier = match &self.verifier {
            Some(_) => Some(load_verifier(&self.files)?),
            None => None,
        };
        // The verifier is stored only once the certificate has loaded too.
        self.cert.reload()?;
        if let (Some(slot), Some(v)) = (&self.verifier, verifier) {
            slot.store(Arc::new(v));
        }
        Ok(())
    }

    /// Reloads on SIGHUP and whenever the files change (checked every `poll`), until `stop`.
    /// SIGHUP is listened for from this call on, before the returned future first runs.
    pub fn watch(
        self: Arc<Self>,
        poll: Duration,
        stop: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let mut paths = self.cert.paths();
        paths.extend(self.files.client_ca.iter().cloned());
        let watcher = Watcher::new("control plane TLS certificate and client CAs", paths, poll);
        watcher.run(move || self.reload(), stop)
    }

    /// Accepts TCP connections on `listener` and yields those whose TLS handshake succeeded,
    /// until `stop` turns true (then the listener is closed).
    pub fn incoming(
        &self,
        listener: TcpListener,
        mut stop: watch::Receiver<bool>,
    ) -> ReceiverStream<Result<TlsStream<TcpStream>, io::Error>> {
        let acceptor = TlsAcceptor::from(self.config.clone());
        let (tx, rx) = mpsc::channel(ACCEPTED_BACKLOG);
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = stop.wait_for(|s| *s) => break,
                    () = tx.closed() => break,
                };
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, "too many TLS handshakes in progress; closing");
                    continue;
                };
                // No Nagle delay: config pushes are small and must reach data planes promptly.
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(Ok(tls)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        ReceiverStream::new(rx)
    }
}

fn load_verifier(files: &TlsFiles) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for path in &files.client_ca {
        for ca in pem::read_certs(path)? {
            roots
                .add(ca)
                .map_err(|e| TlsError::Verifier(format!("{}: {e}", path.display())))?;
        }
    }
    // Unauthenticated clients are let through the handshake: gwctl and grpcurl authenticate
    // with the admin token instead, and every RPC checks the credential it needs.
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), gw_tls::provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))
}

/// The currently loaded client-certificate verifier.
#[derive(Debug)]
struct Swapped(Arc<ArcSwap<Arc<dyn ClientCertVerifier>>>);

impl ClientCertVerifier for Swapped {
    fn offer_client_auth(&self) -> bool {
        self.0.load().offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.load().client_auth_mandatory()
    }

    // No hints: the list would have to outlive a swap. Clients with one certificate (data
    // planes) send it regardless.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .load()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.load().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.load().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.load().supported_verify_schemes()
    }
}
