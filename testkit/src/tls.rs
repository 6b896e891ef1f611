//! Certificates made inside tests (rcgen, ECDSA P-256): a CA that issues server and client
//! certificates, written to files when a program wants paths. Nothing here is fit for
//! anything but tests.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The certificate chain (leaf, then the issuing CA's certificate if not self-signed).
    pub cert: String,
    /// The private key (PKCS#8).
    pub key: String,
}

impl Pair {
    /// Writes `<name>.pem` and `<name>-key.pem` into `dir`; returns (cert path, key path).
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert, &self.cert).expect("write certificate");
        std::fs::write(&key, &self.key).expect("write key");
        (cert, key)
    }
}

/// A calendar date: (year, month, day).
pub type Ymd = (i32, u8, u8);

/// A test certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca")
    }
}

impl Ca {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Self {
        gw_tls::install_provider();
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate to `dir/<name>.pem`.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, self.cert_pem()).expect("write CA");
        path
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, names: &[&str]) -> Pair {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth, None)
    }

    /// A client certificate whose DNS SAN is `node_id`.
    pub fn client(&self, node_id: &str) -> Pair {
        self.issue(&[node_id], ExtendedKeyUsagePurpose::ClientAuth, None)
    }

    /// A server certificate for `names` valid only between the two dates (year, month, day).
    pub fn server_valid(&self, names: &[&str], from: Ymd, until: Ymd) -> Pair {
        self.issue(
            names,
            ExtendedKeyUsagePurpose::ServerAuth,
            Some((from, until)),
        )
    }

    fn issue(
        &self,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        validity: Option<(Ymd, Ymd)>,
    ) -> Pair {
        let sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(sans).expect("params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("gw-test"),
        );
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if let Some(((fy, fm, fd), (uy, um, ud))) = validity {
            params.not_before = rcgen::date_time_ymd(fy, fm, fd);
            params.not_after = rcgen::date_time_ymd(uy, um, ud);
        }
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Pair {
            cert: format!("{}{}", cert.pem(), self.cert_pem()),
            key: key.serialize_pem(),
        }
    }
}
