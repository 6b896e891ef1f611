//! HTTPS for clients: the certificates the control plane sent, compiled into an SNI table
//! ([`sni`]), and the rustls server config the TLS listener's accept loop uses.
//!
//! Layering: below `config/` (which compiles a version's certificates into a [`SniTable`]
//! off the request path) and used by `proxy/server`'s accept loop; imports nothing else of
//! the crate. The config is built once with a [`Resolver`] whose table is swapped atomically
//! when a new config version is applied, so a replaced certificate applies without a restart
//! and without touching open connections (they keep the certificate they were made with);
//! every new handshake loads the table once.

pub mod sni;

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::ResolvesServerCert;

pub use sni::{Resolver, SniTable};

/// The HTTPS listener's rustls config (and the admin listener's): TLS 1.3 and 1.2 only, ALPN
/// `h2` then `http/1.1`, the certificate chosen by `resolver` (a [`Resolver`], or the admin
/// listener's [`gw_tls::reload::ServerCert`]), session resumption by tickets (so returning
/// clients skip the full handshake).
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(gw_tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = gw_tls::ALPN_H2_HTTP11.iter().map(|p| p.to_vec()).collect();
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(config))
}
