//! `Debug` for the generated messages that hold secrets (`build.rs` skips deriving it for
//! them): the secret fields print as `***` (or `""` when unset), everything else as derived.
//! Messages that contain these (`ConfigSnapshot`, `ApplyConfigRequest`,
//! `PutCertificateRequest`, ...) keep their derived `Debug`, which uses these. Each impl
//! destructures its message whole, so a new field has to be placed here on purpose.

use std::fmt;

use crate::v1;

/// A secret field's value in `Debug`: whether it is set, never what it is.
struct Redacted<'a>(&'a str);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("***")
        }
    }
}

impl fmt::Debug for v1::Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            name,
            cert_chain_pem,
            private_key_pem,
            sans,
            not_after,
            updated_version,
        } = self;
        f.debug_struct("Certificate")
            .field("name", name)
            .field("cert_chain_pem", cert_chain_pem)
            .field("private_key_pem", &Redacted(private_key_pem))
            .field("sans", sans)
            .field("not_after", not_after)
            .field("updated_version", updated_version)
            .finish()
    }
}

impl fmt::Debug for v1::CreateApiKeyResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            key,
            api_key,
            config_version,
        } = self;
        f.debug_struct("CreateApiKeyResponse")
            .field("key", &Redacted(key))
            .field("api_key", api_key)
            .field("config_version", config_version)
            .finish()
    }
}

impl fmt::Debug for v1::JwtCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            id,
            consumer,
            issuer,
            algorithm,
            key,
            audiences,
            claim,
            kid,
            created,
        } = self;
        f.debug_struct("JwtCredential")
            .field("id", id)
            .field("consumer", consumer)
            .field("issuer", issuer)
            .field("algorithm", algorithm)
            .field("key", key)
            .field("audiences", audiences)
            .field("claim", claim)
            .field("kid", kid)
            .field("created", created)
            .finish()
    }
}

impl fmt::Debug for v1::jwt_credential::Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use v1::jwt_credential::Key;
        match self {
            Key::Hs256Secret(secret) => f
                .debug_tuple("Hs256Secret")
                .field(&Redacted(if secret.is_empty() { "" } else { "*" }))
                .finish(),
            Key::PublicKeyPem(pem) => f.debug_tuple("PublicKeyPem").field(pem).finish(),
            Key::JwksUrl(url) => f.debug_tuple("JwksUrl").field(url).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIKeyBytesThatMustNotLeak\n-----END PRIVATE KEY-----\n";

    fn certificate() -> v1::Certificate {
        v1::Certificate {
            name: "site".into(),
            cert_chain_pem: "-----BEGIN CERTIFICATE-----\nchain\n-----END CERTIFICATE-----\n"
                .into(),
            private_key_pem: KEY.into(),
            sans: vec!["example.com".into()],
            not_after: None,
            updated_version: 7,
        }
    }

    #[test]
    fn messages_holding_a_private_key_print_it_as_stars() {
        let texts = [
            format!("{:?}", certificate()),
            format!("{:#?}", certificate()),
            format!(
                "{:?}",
                v1::PutCertificateRequest {
                    certificate: Some(certificate()),
                }
            ),
            format!(
                "{:?}",
                v1::ApplyConfigRequest {
                    certificates: vec![certificate()],
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                v1::ConfigSnapshot {
                    certificates: vec![certificate()],
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                v1::ConfigDelta {
                    upserted_certificates: vec![certificate()],
                    ..Default::default()
                }
            ),
        ];
        for text in texts {
            assert!(!text.contains("KeyBytesThatMustNotLeak"), "{text}");
            assert!(!text.contains("PRIVATE KEY"), "{text}");
            assert!(text.contains("private_key_pem: ***"), "{text}");
            // The rest is still there to debug with.
            assert!(
                text.contains("example.com") && text.contains("site"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_new_api_key_prints_as_stars() {
        let key = "gwk_0123456789abcdef0123456789abcdef0123456789abcdef";
        let response = v1::CreateApiKeyResponse {
            key: key.into(),
            api_key: Some(v1::ApiKey {
                id: "k-3f9a1c2b7d4e".into(),
                consumer: "alice".into(),
                last4: "cdef".into(),
                ..Default::default()
            }),
            config_version: 3,
        };
        for text in [format!("{response:?}"), format!("{response:#?}")] {
            assert!(!text.contains(key) && !text.contains("gwk_"), "{text}");
            assert!(
                text.contains("***") && text.contains("k-3f9a1c2b7d4e"),
                "{text}"
            );
        }
    }

    #[test]
    fn an_hs256_secret_prints_as_stars() {
        let secret = b"0123456789-SecretThatMustNotLeak-0123456789".to_vec();
        let credential = v1::JwtCredential {
            id: "j-3f9a1c2b7d4e".into(),
            consumer: "alice".into(),
            issuer: "https://idp.example".into(),
            key: Some(v1::jwt_credential::Key::Hs256Secret(secret.clone())),
            ..Default::default()
        };
        let consumer = v1::Consumer {
            name: "alice".into(),
            jwt_credentials: vec![credential.clone()],
            ..Default::default()
        };
        let texts = [
            format!("{credential:?}"),
            format!("{credential:#?}"),
            format!(
                "{:?}",
                v1::ConfigSnapshot {
                    consumers: vec![consumer.clone()],
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                v1::ConfigDelta {
                    upserted_consumers: vec![consumer],
                    ..Default::default()
                }
            ),
        ];
        for text in texts {
            assert!(!text.contains("SecretThatMustNotLeak"), "{text}");
            // Neither as text nor as the derived Debug of bytes (a list of numbers).
            assert!(!text.contains("48, 49, 50"), "{text}");
            assert!(
                text.contains("Hs256Secret") && text.contains("***"),
                "{text}"
            );
            assert!(
                text.contains("j-3f9a1c2b7d4e") && text.contains("idp.example"),
                "{text}"
            );
        }
        // An answer without the secret says so; public keys and URLs print as they are.
        let shown = |key| {
            format!(
                "{:?}",
                v1::JwtCredential {
                    key: Some(key),
                    ..Default::default()
                }
            )
        };
        use v1::jwt_credential::Key;
        assert!(shown(Key::Hs256Secret(Vec::new())).contains("Hs256Secret(\"\")"));
        assert!(shown(Key::JwksUrl("https://idp/jwks".into())).contains("https://idp/jwks"));
        assert!(shown(Key::PublicKeyPem("PUBLIC KEY".into())).contains("PUBLIC KEY"));
    }

    #[test]
    fn an_unset_key_prints_as_empty() {
        let c = v1::Certificate {
            private_key_pem: String::new(),
            ..certificate()
        };
        assert!(format!("{c:?}").contains("private_key_pem: \"\""));
    }
}
