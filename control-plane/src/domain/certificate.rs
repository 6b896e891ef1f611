//! A TLS certificate for the data planes' HTTPS listener: the chain, its private key (a
//! [`Secret`]) and what the leaf says (SANs, expiry), checked once when it is added.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gw_proto::v1 as pb;
use gw_tls::Secret;
use gw_tls::cert::CertInfo;

use crate::domain::validate::{self, Problems, ValidationError};

/// Largest PEM chain or key accepted: a long chain with big RSA keys is a few tens of KiB.
const MAX_PEM: usize = 256 * 1024;

/// A certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// Unique name, a lowercase DNS label.
    pub name: String,
    /// The chain, PEM, leaf first.
    pub cert_chain_pem: String,
    /// The private key, PEM.
    pub private_key_pem: Secret,
    /// What the leaf says.
    pub info: CertInfo,
    /// Config version that last wrote it; set by the store.
    pub updated_version: u64,
}

impl Certificate {
    /// Checks `chain` and `key` as of `now` (parses, key matches, not expired, names
    /// something) and builds the certificate. The error names the field and never holds key
    /// material.
    pub fn new(
        name: String,
        chain: String,
        key: Secret,
        now: SystemTime,
    ) -> Result<Self, ValidationError> {
        let mut p = Problems::default();
        p.check("name", validate::name(&name));
        if chain.len() > MAX_PEM || key.expose().len() > MAX_PEM {
            p.add(
                "certificate",
                format!("chain and key must each be at most {MAX_PEM} bytes"),
            );
            return p.finish(None);
        }
        let info = match gw_tls::cert::check(&name, chain.as_bytes(), &key, now) {
            Ok(checked) => Some(checked.info),
            Err(e) => {
                p.add("certificate", e.to_string());
                None
            }
        };
        p.finish(info.map(|info| Certificate {
            name,
            cert_chain_pem: chain,
            private_key_pem: key,
            info,
            updated_version: 0,
        }))
    }

    /// The certificate as AdminService shows it: no private key.
    pub fn to_public(&self) -> pb::Certificate {
        pb::Certificate {
            private_key_pem: String::new(),
            ..self.to_pb_with_key()
        }
    }

    /// The certificate as data planes receive it, with its key.
    pub fn to_pb_with_key(&self) -> pb::Certificate {
        let not_after = u64::try_from(self.info.not_after)
            .ok()
            .map(|s| UNIX_EPOCH + Duration::from_secs(s));
        pb::Certificate {
            name: self.name.clone(),
            cert_chain_pem: self.cert_chain_pem.clone(),
            private_key_pem: self.private_key_pem.expose().to_owned(),
            sans: self.info.sans(),
            not_after: not_after.map(Into::into),
            updated_version: self.updated_version,
        }
    }
}

impl TryFrom<pb::Certificate> for Certificate {
    type Error = ValidationError;

    fn try_from(msg: pb::Certificate) -> Result<Self, ValidationError> {
        let pb::Certificate {
            name,
            cert_chain_pem,
            private_key_pem,
            sans: _,            // output only
            not_after: _,       // output only
            updated_version: _, // output only
        } = msg;
        Certificate::new(
            name,
            cert_chain_pem,
            Secret::new(private_key_pem),
            SystemTime::now(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_certificates_are_refused_naming_the_problem_without_the_key() {
        let ok = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["b.test".to_owned()]).unwrap();
        let key = other.signing_key.serialize_pem();
        let err = Certificate::new(
            "site".into(),
            ok.cert.pem(),
            Secret::new(key.clone()),
            SystemTime::now(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("certificate: site: the private key does not match"),
            "{err}"
        );
        assert!(!err.contains(&key[30..60]), "{err}");
        let err = Certificate::new(
            "Bad Name".into(),
            "junk".into(),
            Secret::new("junk"),
            SystemTime::now(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("name: "), "{err}");
        assert!(err.contains("certificate: Bad Name: not PEM"), "{err}");
        let good = Certificate::new(
            "site".into(),
            ok.cert.pem(),
            Secret::new(ok.signing_key.serialize_pem()),
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(good.info.dns_names, ["a.test"]);
        assert!(good.to_public().private_key_pem.is_empty());
        assert!(!format!("{good:?}").contains("PRIVATE KEY"));
    }
}
