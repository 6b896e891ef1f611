//! Choosing a certificate by SNI: exact names first, then a wildcard (`*.example.com`
//! covers `a.example.com`, not `a.b.example.com` nor `example.com`, as RFC 6125 says), then
//! the default certificate (the one named `default`, else the first by name) for clients that
//! send no SNI or a name nothing covers. One hash lookup per handshake, or two.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The name of the certificate served to clients without a matching SNI name.
pub const DEFAULT_CERTIFICATE: &str = "default";

/// A certificate as the table knows it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its name in the config.
    pub name: Arc<str>,
    /// The leaf's DNS names (wildcards included).
    pub dns_names: Vec<String>,
    /// The leaf's IP address SANs, as text.
    pub ip_addresses: Vec<String>,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
    /// Ready for rustls.
    pub key: Arc<CertifiedKey>,
}

/// Certificates by server name; immutable once built.
#[derive(Debug, Default)]
pub struct SniTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
    entries: Vec<Entry>,
}

impl SniTable {
    /// Builds the table from `entries` (in name order). A name two certificates claim goes to
    /// the first.
    pub fn build(entries: Vec<Entry>) -> Self {
        let mut table = SniTable::default();
        for e in &entries {
            for name in &e.dns_names {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix("*.") {
                    Some(parent) => {
                        table
                            .wildcard
                            .entry(parent.to_owned())
                            .or_insert(e.key.clone());
                    }
                    None => {
                        table.exact.entry(name).or_insert(e.key.clone());
                    }
                }
            }
        }
        table.default = entries
            .iter()
            .find(|e| &*e.name == DEFAULT_CERTIFICATE)
            .or(entries.first())
            .map(|e| e.key.clone());
        table.entries = entries;
        table
    }

    /// The certificate for a client that asked for `server_name` (`None`: no SNI).
    pub fn lookup(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = server_name {
            // rustls hands over SNI names lowercased and without a trailing dot.
            if let Some(key) = self.exact.get(name) {
                return Some(key.clone());
            }
            if let Some((_, parent)) = name.split_once('.')
                && let Some(key) = self.wildcard.get(parent)
            {
                return Some(key.clone());
            }
        }
        self.default.clone()
    }

    /// Every certificate, in name order (for `/config`).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Whether there is no certificate at all (HTTPS handshakes then fail).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The certificate resolver of the HTTPS listener: the table in force, swapped whole.
#[derive(Debug, Default)]
pub struct Resolver {
    table: ArcSwap<SniTable>,
}

impl Resolver {
    /// Puts `table` in force for every handshake from now on.
    pub fn install(&self, table: Arc<SniTable>) {
        self.table.store(table);
    }

    /// The table in force.
    pub fn table(&self) -> Arc<SniTable> {
        self.table.load_full()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = self.table.load();
        let key = table.lookup(hello.server_name());
        if key.is_none() {
            tracing::debug!(sni = ?hello.server_name(), "no certificate for a TLS handshake");
        }
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, dns: &[&str]) -> Entry {
        let c = rcgen::generate_simple_self_signed(
            dns.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        let checked = gw_tls::cert::check(
            name,
            c.cert.pem().as_bytes(),
            &gw_tls::Secret::new(c.signing_key.serialize_pem()),
            std::time::SystemTime::now(),
        )
        .unwrap();
        Entry {
            name: name.into(),
            dns_names: checked.info.dns_names,
            ip_addresses: checked.info.ip_addresses,
            not_after: checked.info.not_after,
            key: checked.key,
        }
    }

    #[test]
    fn names_pick_certificates() {
        let a = entry("a", &["a.example.com"]);
        let wild = entry("b-wild", &["*.example.com"]);
        let def = entry("default", &["fallback.test"]);
        let table = SniTable::build(vec![a.clone(), wild.clone(), def.clone()]);
        let is = |got: Option<Arc<CertifiedKey>>, want: &Entry| {
            got.is_some_and(|k| Arc::ptr_eq(&k, &want.key))
        };
        let cases: [(Option<&str>, &Entry); 6] = [
            (Some("a.example.com"), &a),
            (Some("x.example.com"), &wild),
            // A wildcard covers one label only.
            (Some("x.y.example.com"), &def),
            (Some("example.com"), &def),
            (Some("unknown.test"), &def),
            (None, &def),
        ];
        for (sni, want) in cases {
            assert!(is(table.lookup(sni), want), "{sni:?} -> {}", want.name);
        }
        // Without a certificate named `default`, the first by name serves.
        let table = SniTable::build(vec![a.clone(), wild]);
        assert!(is(table.lookup(None), &a));
        assert!(
            SniTable::build(vec![])
                .lookup(Some("a.example.com"))
                .is_none()
        );
    }
}
