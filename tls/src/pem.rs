//! Certificates and private keys from PEM, with errors that name what is wrong. A private key
//! is read into a [`Secret`] and parsed from there; no error here ever carries key bytes.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::Secret;

/// Why PEM text or a file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// The file could not be read.
    #[error("{path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why, e.g. "no such file or directory".
        reason: String,
    },
    /// The text holds no PEM block of the kind wanted.
    #[error("{what}: not PEM: expected a '-----BEGIN {label}-----' block")]
    NotPem {
        /// What was being read (a file name, or a field).
        what: String,
        /// The block label wanted, e.g. "CERTIFICATE".
        label: &'static str,
    },
    /// A PEM block is malformed (bad base64, missing END line).
    #[error("{what}: malformed PEM: {reason}")]
    Malformed {
        /// What was being read.
        what: String,
        /// What the PEM parser said (never key material).
        reason: String,
    },
}

/// Every certificate in `pem`, in order (leaf first, for a chain). `what` names the source in
/// errors.
pub fn certs(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::Malformed {
            what: what.to_owned(),
            reason: pem_reason(&e),
        })?;
    if certs.is_empty() {
        return Err(PemError::NotPem {
            what: what.to_owned(),
            label: "CERTIFICATE",
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 RSA or SEC1 EC) in `pem`.
pub fn key(what: &str, pem: &Secret) -> Result<PrivateKeyDer<'static>, PemError> {
    match PrivateKeyDer::from_pem_slice(pem.expose().as_bytes()) {
        Ok(key) => Ok(key),
        Err(rustls_pki_types::pem::Error::NoItemsFound) => Err(PemError::NotPem {
            what: what.to_owned(),
            label: "PRIVATE KEY",
        }),
        Err(e) => Err(PemError::Malformed {
            what: what.to_owned(),
            reason: pem_reason(&e),
        }),
    }
}

/// Reads a file of certificates.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let bytes = std::fs::read(path).map_err(|e| read_error(path, &e))?;
    certs(&path.display().to_string(), &bytes)
}

/// Reads a private key file into a [`Secret`] (checked to hold a key).
pub fn read_key(path: &Path) -> Result<Secret, PemError> {
    let text = read_secret(path)?;
    key(&path.display().to_string(), &text)?;
    Ok(text)
}

/// Reads a file that holds a secret (a key, a token) as text.
pub fn read_secret(path: &Path) -> Result<Secret, PemError> {
    let bytes = std::fs::read(path).map_err(|e| read_error(path, &e))?;
    String::from_utf8(bytes)
        .map(Secret::new)
        .map_err(|_| PemError::NotPem {
            what: path.display().to_string(),
            label: "PRIVATE KEY",
        })
}

fn read_error(path: &Path, e: &std::io::Error) -> PemError {
    let reason = e.to_string();
    let reason = match reason.find(" (os error") {
        Some(i) => reason[..i].to_lowercase(),
        None => reason.to_lowercase(),
    };
    PemError::Read {
        path: path.display().to_string(),
        reason,
    }
}

/// The PEM parser's complaint without anything from inside the block: its messages about
/// base64 may quote the offending bytes, which for a key are secret.
fn pem_reason(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error as E;
    match e {
        E::MissingSectionEnd { .. } => "a BEGIN line has no matching END line".to_owned(),
        E::IllegalSectionStart { .. } => "a BEGIN line is malformed".to_owned(),
        E::Base64Decode(_) => "a block is not valid base64".to_owned(),
        E::Io(e) => e.to_string(),
        E::NoItemsFound => "no PEM block found".to_owned(),
        _ => "unreadable PEM".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pem_is_named_without_its_contents() {
        let err = certs("chain.pem", b"hello").unwrap_err().to_string();
        assert_eq!(
            err,
            "chain.pem: not PEM: expected a '-----BEGIN CERTIFICATE-----' block"
        );
        let secret = Secret::new("-----BEGIN PRIVATE KEY-----\nc2VjcmV0IGtleSBieXRlcw!!\n");
        let err = key("key.pem", &secret).unwrap_err().to_string();
        assert!(err.starts_with("key.pem: malformed PEM"), "{err}");
        assert!(!err.contains("c2VjcmV0"), "{err}");
        let err = read_certs(Path::new("/nonexistent/x.pem"))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "/nonexistent/x.pem: no such file or directory");
    }
}
