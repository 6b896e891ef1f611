//! `gwctl consumer jwt add|list|rm`: a consumer's JWT credentials.
//!
//! An HS256 secret is read from a file or stdin (`--secret-file -`), never from the command
//! line (any local user can read another's argv in `ps`), and sent only over TLS or to a
//! loopback control plane, like a certificate's private key. Nothing gwctl prints contains it:
//! the control plane never sends it back, and gwctl has no field to show it in.
//!
//! JSON shapes (`-o json`): a credential is
//! ```json
//! {"id": "j-3f9a1c2b7d4e", "consumer": "alice", "issuer": "https://idp.example",
//!  "algorithm": "HS256", "key": "secret", "public_key_pem": null, "jwks_url": null,
//!  "audiences": ["api"], "claim": "sub", "kid": null, "created": "2026-11-30T20:00:00Z"}
//! ```
//! (`key` is `secret`, `pem` or `jwks`; `algorithm` is null for a JWKS URL). `add` prints
//! `{"action": "created", "config_version": N, "credential": {...}}`, `list`
//! `{"config_version": N, "credentials": [...]}`, `rm` `{"action": "deleted",
//! "config_version": N, "name": ID}`.

use std::io::{Read, Write};
use std::path::Path;

use gw_proto::v1 as pb;
use gw_proto::v1::jwt_credential::Key;
use serde::Serialize;

use crate::args::{ConsumerJwtCommand, JwtAddArgs, JwtAlgorithmArg};
use crate::client::AdminClient;
use crate::commands::cert::private_ok;
use crate::commands::deleted::Deleted;
use crate::error::Error;
use crate::output::{OutputFormat, Render, Table, emit, or_dash};

/// Largest secret or key file read: far above any real one (an 8192-bit RSA public key is
/// about 1.5 KB), small enough that a wrong path (a disk image) fails fast.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// Runs one `consumer jwt` subcommand against the control plane.
pub async fn run(
    command: ConsumerJwtCommand,
    client: &mut AdminClient,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), Error> {
    match command {
        ConsumerJwtCommand::Add(args) => {
            let credential = credential(args, &mut std::io::stdin().lock())?;
            if matches!(credential.key, Some(Key::Hs256Secret(_))) && !private_ok(client.address())
            {
                return Err(Error::Usage(format!(
                    "refusing to send an HS256 secret to {} over plaintext: use an https:// \
                     control-plane URL",
                    client.address()
                )));
            }
            let response = client
                .api
                .create_jwt_credential(pb::CreateJwtCredentialRequest {
                    credential: Some(credential),
                })
                .await
                .map_err(|s| client.call_error("CreateJwtCredential", s))?
                .into_inner();
            let created = JwtCreated {
                action: "created",
                config_version: response.config_version,
                credential: response.credential.unwrap_or_default().into(),
            };
            emit(format, &created, out)?;
        }
        ConsumerJwtCommand::List { name } => {
            let response = client
                .api
                .list_jwt_credentials(pb::ListJwtCredentialsRequest {
                    consumer: name.unwrap_or_default(),
                })
                .await
                .map_err(|s| client.call_error("ListJwtCredentials", s))?
                .into_inner();
            let list = JwtList {
                config_version: response.config_version,
                credentials: response.credentials.into_iter().map(Into::into).collect(),
            };
            emit(format, &list, out)?;
        }
        ConsumerJwtCommand::Rm { id } => {
            let response = client
                .api
                .delete_jwt_credential(pb::DeleteJwtCredentialRequest { id: id.clone() })
                .await
                .map_err(|s| client.call_error("DeleteJwtCredential", s))?
                .into_inner();
            emit(
                format,
                &Deleted::new("JWT credential", id, response.config_version),
                out,
            )?;
        }
    }
    Ok(())
}

/// The request's credential from the flags, reading the key file (or `stdin` for
/// `--secret-file -`).
fn credential(args: JwtAddArgs, stdin: &mut dyn Read) -> Result<pb::JwtCredential, Error> {
    let JwtAddArgs {
        name,
        issuer,
        secret_file,
        public_key_file,
        jwks_url,
        audiences,
        claim,
        kid,
        algorithm,
    } = args;
    // clap's group makes exactly one of the three present.
    let key = match (secret_file, public_key_file, jwks_url) {
        (Some(path), None, None) => Key::Hs256Secret(read_secret(&path, stdin)?),
        (None, Some(path), None) => {
            let bytes = read_file("--public-key-file", &path, stdin)?;
            let pem = String::from_utf8(bytes).map_err(|_| {
                Error::Usage(format!(
                    "--public-key-file {}: not a PEM file (not text)",
                    display(&path)
                ))
            })?;
            // The control plane refuses it too, but only once the private key has crossed
            // the network (over plaintext http:// perhaps): refused here, before anything is
            // sent. The message is the control plane's; the content is never echoed.
            if pem.contains("PRIVATE KEY") {
                return Err(Error::Usage(format!(
                    "--public-key-file {}: holds a private key; give only the public key \
                     (`openssl pkey -in KEY -pubout`)",
                    display(&path)
                )));
            }
            Key::PublicKeyPem(pem)
        }
        (None, None, Some(url)) => Key::JwksUrl(url),
        _ => {
            return Err(Error::Usage(
                "give exactly one of --secret-file, --public-key-file or --jwks-url".to_owned(),
            ));
        }
    };
    let algorithm = match algorithm {
        None => pb::JwtAlgorithm::Unspecified,
        Some(JwtAlgorithmArg::Hs256) => pb::JwtAlgorithm::Hs256,
        Some(JwtAlgorithmArg::Rs256) => pb::JwtAlgorithm::Rs256,
        Some(JwtAlgorithmArg::Es256) => pb::JwtAlgorithm::Es256,
        Some(JwtAlgorithmArg::Eddsa) => pb::JwtAlgorithm::Eddsa,
    };
    Ok(pb::JwtCredential {
        consumer: name,
        issuer,
        algorithm: algorithm.into(),
        key: Some(key),
        audiences,
        claim: claim.unwrap_or_default(),
        kid: kid.unwrap_or_default(),
        ..Default::default()
    })
}

/// The secret's bytes. A text secret (any UTF-8, tabs and other control characters
/// included) loses one trailing line ending, which `echo` and editors add but nobody means as
/// part of the secret; a secret that is not UTF-8 (`openssl rand -out FILE 32`) is used byte
/// for byte. (32 random bytes are valid UTF-8 about once in 10^9.)
fn read_secret(path: &Path, stdin: &mut dyn Read) -> Result<Vec<u8>, Error> {
    let mut bytes = read_file("--secret-file", path, stdin)?;
    if std::str::from_utf8(&bytes).is_ok() {
        if bytes.ends_with(b"\r\n") {
            bytes.truncate(bytes.len() - 2);
        } else if bytes.ends_with(b"\n") {
            bytes.truncate(bytes.len() - 1);
        }
    }
    if bytes.is_empty() {
        return Err(Error::Usage(format!(
            "--secret-file {}: empty",
            display(path)
        )));
    }
    Ok(bytes)
}

/// A file's bytes (`-`: stdin), at most [`MAX_FILE_BYTES`]; errors name the flag and path,
/// never the content.
fn read_file(flag: &str, path: &Path, stdin: &mut dyn Read) -> Result<Vec<u8>, Error> {
    let fail = |reason: String| Error::Usage(format!("{flag} {}: {reason}", display(path)));
    let mut bytes = Vec::new();
    let read = if path == Path::new("-") {
        stdin.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
    };
    read.map_err(|e| fail(crate::client::strip_os_error(&e.to_string())))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(fail(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    Ok(bytes)
}

fn display(path: &Path) -> String {
    if path == Path::new("-") {
        "- (stdin)".to_owned()
    } else {
        path.display().to_string()
    }
}

/// A JWT credential as gwctl shows it: never a secret.
#[derive(Debug, Serialize)]
pub struct JwtView {
    id: String,
    consumer: String,
    issuer: String,
    algorithm: Option<&'static str>,
    /// `secret`, `pem` or `jwks`.
    key: &'static str,
    public_key_pem: Option<String>,
    jwks_url: Option<String>,
    audiences: Vec<String>,
    claim: String,
    kid: Option<String>,
    created: String,
}

impl From<pb::JwtCredential> for JwtView {
    fn from(c: pb::JwtCredential) -> Self {
        let algorithm = match c.algorithm() {
            pb::JwtAlgorithm::Unspecified => None,
            pb::JwtAlgorithm::Hs256 => Some("HS256"),
            pb::JwtAlgorithm::Rs256 => Some("RS256"),
            pb::JwtAlgorithm::Es256 => Some("ES256"),
            pb::JwtAlgorithm::Eddsa => Some("EdDSA"),
        };
        let pb::JwtCredential {
            id,
            consumer,
            issuer,
            algorithm: _, // read above
            key,
            audiences,
            claim,
            kid,
            created,
        } = c;
        let (kind, public_key_pem, jwks_url) = match key {
            // Empty from the control plane anyway; dropped here so no output can carry it.
            Some(Key::Hs256Secret(_)) => ("secret", None, None),
            Some(Key::PublicKeyPem(pem)) => ("pem", Some(pem), None),
            Some(Key::JwksUrl(url)) => ("jwks", None, Some(url)),
            None => ("-", None, None),
        };
        JwtView {
            id,
            consumer,
            issuer,
            algorithm,
            key: kind,
            public_key_pem,
            jwks_url,
            audiences,
            claim,
            kid: (!kid.is_empty()).then_some(kid),
            created: created
                .map(|t| gw_tls::cert::format_utc(t.seconds))
                .unwrap_or_else(|| "-".to_owned()),
        }
    }
}

impl JwtView {
    /// The KEY column: `secret`, `pem`, or the JWKS URL.
    fn key_column(&self) -> String {
        self.jwks_url.clone().unwrap_or_else(|| self.key.to_owned())
    }

    /// One line for `consumer get`.
    pub(crate) fn line(&self) -> String {
        let mut line = format!(
            "{} {} {} ({})",
            self.id,
            self.algorithm.unwrap_or("JWKS"),
            self.issuer,
            self.key_column()
        );
        line.push_str(&format!(", claim {}", self.claim));
        if !self.audiences.is_empty() {
            line.push_str(&format!(", audiences {}", self.audiences.join(",")));
        }
        if let Some(kid) = &self.kid {
            line.push_str(&format!(", kid {kid}"));
        }
        line
    }
}

/// `consumer jwt add`.
#[derive(Debug, Serialize)]
pub struct JwtCreated {
    action: &'static str,
    config_version: u64,
    credential: JwtView,
}

impl Render for JwtCreated {
    fn human(&self) -> String {
        let c = &self.credential;
        format!(
            "JWT credential {} created for consumer '{}': issuer {}, {} (config version {})\n",
            c.id,
            c.consumer,
            c.issuer,
            match (c.algorithm, c.key) {
                (Some(alg), "secret") => format!("{alg} secret"),
                (Some(alg), _) => format!("{alg} public key"),
                (None, _) => "keys from the JWKS URL".to_owned(),
            },
            self.config_version
        )
    }
}

/// `consumer jwt list`.
#[derive(Debug, Serialize)]
pub struct JwtList {
    config_version: u64,
    credentials: Vec<JwtView>,
}

impl Render for JwtList {
    fn human(&self) -> String {
        let mut table = Table::new(&[
            "ID",
            "CONSUMER",
            "ISSUER",
            "ALG",
            "KEY",
            "AUDIENCES",
            "CLAIM",
            "CREATED",
        ]);
        for c in &self.credentials {
            table.row(vec![
                c.id.clone(),
                c.consumer.clone(),
                c.issuer.clone(),
                c.algorithm.unwrap_or("-").to_owned(),
                c.key_column(),
                or_dash(&c.audiences.join(",")),
                c.claim.clone(),
                c.created.clone(),
            ]);
        }
        table.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn args(secret_file: &str) -> JwtAddArgs {
        JwtAddArgs {
            name: "alice".into(),
            issuer: "https://idp".into(),
            secret_file: Some(PathBuf::from(secret_file)),
            public_key_file: None,
            jwks_url: None,
            audiences: vec![],
            claim: None,
            kid: None,
            algorithm: None,
        }
    }

    fn secret_of(stdin: &[u8]) -> Result<Vec<u8>, Error> {
        match credential(args("-"), &mut &stdin[..])?.key {
            Some(Key::Hs256Secret(s)) => Ok(s),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn secrets_from_stdin_lose_one_text_line_ending_only() {
        let text = "correct-horse-battery-staple-0123456789";
        assert_eq!(secret_of(text.as_bytes()).unwrap(), text.as_bytes());
        assert_eq!(
            secret_of(format!("{text}\n").as_bytes()).unwrap(),
            text.as_bytes()
        );
        assert_eq!(
            secret_of(format!("{text}\r\n").as_bytes()).unwrap(),
            text.as_bytes()
        );
        // Text with control characters in it is still text: its line ending goes.
        let tabbed = "secret\twith\u{1b}controls-0123456789abcdef";
        assert_eq!(
            secret_of(format!("{tabbed}\n").as_bytes()).unwrap(),
            tabbed.as_bytes()
        );
        // Bytes that are not UTF-8 are kept as they are, a final 0x0a included.
        let binary = [0u8, 200, 13, 7, 10];
        assert_eq!(secret_of(&binary).unwrap(), binary);
        let empty = secret_of(b"\n").unwrap_err().to_string();
        assert_eq!(empty, "--secret-file - (stdin): empty");
        let big = secret_of(&vec![b'a'; 70_000]).unwrap_err().to_string();
        assert!(big.contains("larger than 65536 bytes"), "{big}");
    }

    #[test]
    fn a_private_key_file_is_refused_before_anything_is_sent() {
        let mut a = args("-");
        a.secret_file = None;
        a.public_key_file = Some(PathBuf::from("-"));
        let pem = "-----BEGIN PRIVATE KEY-----\nTUlJQ2Vn\n-----END PRIVATE KEY-----\n";
        let err = credential(a, &mut pem.as_bytes()).unwrap_err().to_string();
        assert_eq!(
            err,
            "--public-key-file - (stdin): holds a private key; give only the public key \
             (`openssl pkey -in KEY -pubout`)"
        );
        assert!(!err.contains("TUlJ"), "{err}");
    }

    #[test]
    fn a_missing_file_is_named_without_content() {
        let err = credential(args("/nonexistent/secret"), &mut &b""[..])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "--secret-file /nonexistent/secret: no such file or directory"
        );
    }
}
