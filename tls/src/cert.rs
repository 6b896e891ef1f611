//! What a certificate says, and whether a certificate and key can serve TLS: the checks behind
//! `gwctl cert add` (the PEM parses, the key matches the certificate, it has not expired), made
//! again wherever a certificate is loaded, so a bad one is refused with the same words.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::Secret;
use crate::pem::{self, PemError};

/// What a leaf certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// DNS names of the subjectAltName extension, as written (wildcards included).
    pub dns_names: Vec<String>,
    /// IP addresses of the subjectAltName extension, as text.
    pub ip_addresses: Vec<String>,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: i64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
}

impl CertInfo {
    /// DNS names and IP addresses, for display.
    pub fn sans(&self) -> Vec<String> {
        self.dns_names
            .iter()
            .chain(&self.ip_addresses)
            .cloned()
            .collect()
    }
}

/// Why a certificate (with its key) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The PEM text is unusable.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// The certificate is not valid X.509.
    #[error("{what}: not a valid X.509 certificate: {reason}")]
    Parse {
        /// Which certificate.
        what: String,
        /// The parser's complaint.
        reason: String,
    },
    /// The certificate's validity ended.
    #[error("{what}: the certificate expired on {not_after}")]
    Expired {
        /// Which certificate.
        what: String,
        /// When, RFC 3339.
        not_after: String,
    },
    /// The certificate's validity has not started.
    #[error("{what}: the certificate is not valid before {not_before}")]
    NotYetValid {
        /// Which certificate.
        what: String,
        /// When it starts, RFC 3339.
        not_before: String,
    },
    /// The key is not the certificate's.
    #[error("{what}: the private key does not match the certificate (its public key differs)")]
    KeyMismatch {
        /// Which key.
        what: String,
    },
    /// The key is of a kind rustls cannot sign with.
    #[error(
        "{what}: unsupported private key type; use ECDSA P-256/P-384, Ed25519 or RSA (2048 bits or more)"
    )]
    UnsupportedKey {
        /// Which key.
        what: String,
    },
    /// No name a client could check.
    #[error("{what}: the certificate has no subjectAltName DNS name or IP address")]
    NoNames {
        /// Which certificate.
        what: String,
    },
}

/// A certificate chain and key that passed [`check`].
#[derive(Debug, Clone)]
pub struct Checked {
    /// Ready for rustls.
    pub key: Arc<CertifiedKey>,
    /// What the leaf says.
    pub info: CertInfo,
}

/// Reads what the leaf certificate `der` says. `what` names it in errors.
pub fn inspect(what: &str, der: &CertificateDer<'_>) -> Result<CertInfo, CertError> {
    let parse = |reason: String| CertError::Parse {
        what: what.to_owned(),
        reason,
    };
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| parse(e.to_string()))?;
    let mut info = CertInfo {
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    };
    let san = cert
        .subject_alternative_name()
        .map_err(|e| parse(format!("subjectAltName: {e}")))?;
    for name in san.iter().flat_map(|s| &s.value.general_names) {
        match name {
            GeneralName::DNSName(n) => info.dns_names.push((*n).to_owned()),
            GeneralName::IPAddress(bytes) => {
                if let Some(ip) = ip_text(bytes) {
                    info.ip_addresses.push(ip);
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    let ip: std::net::IpAddr = match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok()?.into(),
        16 => <[u8; 16]>::try_from(bytes).ok()?.into(),
        _ => return None,
    };
    Some(ip.to_string())
}

/// Checks that `chain_pem` (leaf first) and `key_pem` can serve TLS at `now`: both parse, the
/// key is the leaf's, the leaf names something and is within its validity. `what` names the
/// pair in errors (e.g. the certificate's name, or the file).
pub fn check(
    what: &str,
    chain_pem: &[u8],
    key_pem: &Secret,
    now: SystemTime,
) -> Result<Checked, CertError> {
    let checked = load(what, chain_pem, key_pem)?;
    let info = &checked.info;
    if info.dns_names.is_empty() && info.ip_addresses.is_empty() {
        return Err(CertError::NoNames {
            what: what.to_owned(),
        });
    }
    let now = unix_seconds(now);
    if now > info.not_after {
        return Err(CertError::Expired {
            what: what.to_owned(),
            not_after: format_utc(info.not_after),
        });
    }
    if now < info.not_before {
        return Err(CertError::NotYetValid {
            what: what.to_owned(),
            not_before: format_utc(info.not_before),
        });
    }
    Ok(checked)
}

/// Parses `chain_pem` and `key_pem` and checks that the key is the leaf's, whatever the
/// dates: for a certificate that was checked when it was added and must keep serving.
pub fn load(what: &str, chain_pem: &[u8], key_pem: &Secret) -> Result<Checked, CertError> {
    let chain = pem::certs(what, chain_pem)?;
    let key = pem::key(what, key_pem)?;
    let info = inspect(what, &chain[0])?;
    let signing = crate::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|_| CertError::UnsupportedKey {
            what: what.to_owned(),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(CertError::KeyMismatch {
                what: what.to_owned(),
            });
        }
    }
    Ok(Checked {
        key: Arc::new(certified),
        info,
    })
}

/// Seconds since the Unix epoch (negative before it).
pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// `2026-01-31T12:00:00Z` for seconds since the Unix epoch (UTC, proleptic Gregorian).
pub fn format_utc(unix: i64) -> String {
    let c = gw_ops::time::civil(unix);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pair(names: &[&str]) -> (String, Secret) {
        let c = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        (c.cert.pem(), Secret::new(c.signing_key.serialize_pem()))
    }

    #[test]
    fn a_good_pair_passes_and_says_what_it_names() {
        let (cert, key) = pair(&["example.com", "*.example.com", "127.0.0.1"]);
        let checked = check("site", cert.as_bytes(), &key, SystemTime::now()).unwrap();
        assert_eq!(checked.info.dns_names, ["example.com", "*.example.com"]);
        assert_eq!(checked.info.ip_addresses, ["127.0.0.1"]);
        assert!(checked.info.not_after > unix_seconds(SystemTime::now()));
    }

    #[test]
    fn bad_pairs_are_refused_with_a_clear_message() {
        let (cert, key) = pair(&["a.test"]);
        let (_, other_key) = pair(&["b.test"]);
        let err = check("site", cert.as_bytes(), &other_key, SystemTime::now()).unwrap_err();
        assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "site: the private key does not match the certificate (its public key differs)"
        );
        let mut params = rcgen::CertificateParams::new(vec!["old.test".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(1999, 1, 1);
        params.not_after = rcgen::date_time_ymd(2000, 1, 1);
        let old_key = rcgen::KeyPair::generate().unwrap();
        let old = params.self_signed(&old_key).unwrap();
        let old_key = Secret::new(old_key.serialize_pem());
        let err = check("site", old.pem().as_bytes(), &old_key, SystemTime::now()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "site: the certificate expired on 2000-01-01T00:00:00Z"
        );
        let early = UNIX_EPOCH + Duration::from_secs(86_400);
        let err = check("site", old.pem().as_bytes(), &old_key, early).unwrap_err();
        assert!(
            err.to_string().contains("not valid before 1999-01-01"),
            "{err}"
        );
        let _ = key;
        let err = check("site", b"not pem", &key, SystemTime::now()).unwrap_err();
        assert!(err.to_string().contains("not PEM"), "{err}");
        let err = check(
            "site",
            cert.as_bytes(),
            &Secret::new("x"),
            SystemTime::now(),
        );
        assert!(err.unwrap_err().to_string().contains("not PEM"));
        // No error names key material.
        let err = check("site", cert.as_bytes(), &other_key, SystemTime::now()).unwrap_err();
        assert!(!format!("{err} {err:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn utc_formatting() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_767_225_599, "2025-12-31T23:59:59Z"),
            (-1, "1969-12-31T23:59:59Z"),
        ];
        for (t, want) in cases {
            assert_eq!(format_utc(t), want, "{t}");
        }
    }
}
