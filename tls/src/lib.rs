//! TLS pieces shared by gw's crates, so that the control plane, the data plane and gwctl read
//! certificates, judge them and keep private keys secret in exactly one way:
//!
//! - [`install_provider`]: the one rustls crypto provider (ring), installed at start.
//! - [`secret`]: [`Secret`], the newtype every key and token lives in (`Debug` prints `***`).
//! - [`pem`]: certificates and private keys from PEM text or files, with errors that say what
//!   is wrong with which file.
//! - [`cert`]: what a certificate says (SANs, expiry) and the checks `gwctl cert add` makes
//!   (parses, key matches, not expired), yielding a rustls `CertifiedKey`.
//! - [`files`]: noticing that a set of files changed, for rotation without a restart.
//! - [`reload`]: a server certificate read from files that can be swapped, and the watcher
//!   that reloads credentials on SIGHUP or when their files change.
//!
//! Nothing here opens a socket; the crates that do build their rustls configs from these.

pub mod cert;
pub mod files;
pub mod pem;
pub mod reload;
pub mod secret;

use std::sync::Arc;

pub use rustls;
pub use secret::Secret;

/// The crypto provider every TLS connection of gw uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as the process-wide rustls crypto provider. Call it first thing in every
/// binary and test helper; calling it again is harmless.
///
/// Why ring, and why install it: rustls panics at run time ("no process-level
/// CryptoProvider") when it cannot tell which provider to use, which happens as soon as both
/// ring and aws-lc-rs are compiled in. The workspace therefore builds rustls, tokio-rustls and
/// tonic with ring only (`cargo tree -i aws-lc-rs` finds nothing), and installs it here so
/// that libraries calling `ClientConfig::builder()` get it too. ring over aws-lc-rs: no C/CMake
/// toolchain at build time (a plain `cargo build` suffices), FIPS is not a goal, and the
/// handshake and record speeds that matter here are on par (bench/RESULTS.md).
pub fn install_provider() {
    // Err means a provider is installed already: ours, by an earlier call.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The ALPN protocol ids gw offers to clients, HTTP/2 first.
pub const ALPN_H2_HTTP11: [&[u8]; 2] = [b"h2", b"http/1.1"];
