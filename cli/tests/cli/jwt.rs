//! `gwctl consumer jwt add|list|rm` and `consumer get`: credentials from a secret file, stdin,
//! PEM public keys made by `openssl` and a JWKS URL; clear errors; the HS256 secret in no
//! output or error, in either format; removal as a new config version.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{ControlPlane, Run, gwctl, gwctl_stdin};

/// A PEM public key made by `openssl genpkey` with `genpkey_args`, written to `dir/name`.
fn openssl_public_key(dir: &Path, name: &str, genpkey_args: &[&str]) -> PathBuf {
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("running openssl (install the Debian package `openssl`)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let mut gen_args = vec!["genpkey"];
    gen_args.extend_from_slice(genpkey_args);
    gen_args.extend_from_slice(&["-out", private.to_str().unwrap()]);
    run(&gen_args);
    run(&[
        "pkey",
        "-in",
        private.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    public
}

/// A random 48-character text secret (hex), unique to the run so a grep can only find it
/// where it leaked.
fn random_secret() -> String {
    let mut bytes = [0u8; 24];
    getrandom(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(buf)
        .unwrap();
}

/// Asserts that none of `secrets` appears in `run`'s stdout or stderr; returns the run.
#[track_caller]
fn clean(run: Run, secrets: &[&str]) -> Run {
    for s in secrets {
        assert!(
            !run.stdout.contains(s) && !run.stderr.contains(s),
            "a secret in gwctl's output\nstdout: {}\nstderr: {}",
            run.stdout,
            run.stderr
        );
    }
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_credentials_from_add_to_rm_and_the_secret_in_no_output() {
    let cp = ControlPlane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (s1, s2) = (random_secret(), random_secret());
    let secrets = [s1.as_str(), s2.as_str()];
    let secret_file = dir.path().join("secret");
    // With the trailing newline `echo` writes: gwctl drops it from a text secret.
    std::fs::write(&secret_file, format!("{s1}\n")).unwrap();
    let f = secret_file.to_str().unwrap();
    gwctl(&cp, &["consumer", "add", "alice"]).await.ok();
    gwctl(&cp, &["consumer", "add", "bob"]).await.ok();

    // A secret file, in the human form.
    let added = clean(
        gwctl(
            &cp,
            &[
                "consumer",
                "jwt",
                "add",
                "alice",
                "--issuer",
                "https://idp.example",
                "--secret-file",
                f,
                "--audience",
                "api",
                "--audience",
                "web",
                "--kid",
                "k1",
            ],
        )
        .await,
        &secrets,
    );
    let text = added.ok();
    assert!(
        text.starts_with("JWT credential j-")
            && text
                .contains("created for consumer 'alice': issuer https://idp.example, HS256 secret"),
        "{text}"
    );
    let hs_id = text.split_whitespace().nth(2).unwrap().to_owned();

    // A secret on stdin, in JSON.
    let json = clean(
        gwctl_stdin(
            &cp,
            &[
                "-o",
                "json",
                "consumer",
                "jwt",
                "add",
                "bob",
                "--issuer",
                "https://idp.example",
                "--secret-file",
                "-",
                "--algorithm",
                "hs256",
            ],
            s2.as_bytes(),
        )
        .await,
        &secrets,
    )
    .json();
    assert_eq!(json["action"], "created");
    assert_eq!(json["credential"]["key"], "secret");
    assert_eq!(json["credential"]["algorithm"], "HS256");
    assert_eq!(json["credential"]["consumer"], "bob");
    assert_eq!(json["credential"]["claim"], "sub");
    assert!(json["credential"].get("hs256_secret").is_none(), "{json}");

    // PEM public keys of each supported type, made by openssl.
    let keys = [
        (
            openssl_public_key(
                dir.path(),
                "rsa",
                &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            ),
            "RS256",
        ),
        (
            openssl_public_key(
                dir.path(),
                "p256",
                &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            ),
            "ES256",
        ),
        (
            openssl_public_key(dir.path(), "ed", &["-algorithm", "ed25519"]),
            "EdDSA",
        ),
    ];
    for (path, alg) in &keys {
        let json = gwctl(
            &cp,
            &[
                "-o",
                "json",
                "consumer",
                "jwt",
                "add",
                "bob",
                "--issuer",
                "https://keys.example",
                "--claim",
                "preferred_username",
                "--public-key-file",
                path.to_str().unwrap(),
            ],
        )
        .await
        .json();
        assert_eq!(json["credential"]["algorithm"], *alg, "{json}");
        assert_eq!(json["credential"]["key"], "pem");
        let pem = json["credential"]["public_key_pem"].as_str().unwrap();
        let squash = |s: &str| s.split_whitespace().collect::<String>();
        assert_eq!(squash(pem), squash(&std::fs::read_to_string(path).unwrap()));
    }

    // A JWKS URL.
    let jwks_url = "https://login.example/.well-known/jwks.json";
    gwctl(
        &cp,
        &[
            "consumer",
            "jwt",
            "add",
            "alice",
            "--issuer",
            "https://login.example",
            "--jwks-url",
            jwks_url,
        ],
    )
    .await
    .ok();

    // Refusals: each names the field, none echoes a secret.
    let conflict = format!(
        "error: failed precondition: credential.claim: issuer 'https://idp.example' names its \
         consumers in claim 'sub' (credential {hs_id} of consumer 'alice')"
    );
    let short = dir.path().join("short");
    std::fs::write(&short, "0123456789").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--issuer",
                "https://x",
                "--secret-file",
                short.to_str().unwrap(),
            ],
            "invalid argument: credential.hs256_secret: 10 bytes is too short",
        ),
        (
            vec![
                "--issuer",
                "https://x",
                "--secret-file",
                f,
                "--algorithm",
                "rs256",
            ],
            "credential.algorithm: RS256 does not match the key, an HS256 secret",
        ),
        (
            vec!["--issuer", "https://x", "--public-key-file", f],
            "credential.public_key_pem: not a PEM public key",
        ),
        (
            vec![
                "--issuer",
                "https://x",
                "--jwks-url",
                "http://idp.example/jwks",
            ],
            "credential.jwks_url: http:// is only allowed to a loopback address",
        ),
        (
            vec![
                "--issuer",
                "https://x",
                "--jwks-url",
                "ftp://idp.example/jwks",
            ],
            "credential.jwks_url: must start with https://",
        ),
        (
            vec!["--issuer", "", "--secret-file", f],
            "credential.issuer: required",
        ),
        (
            vec![
                "--issuer",
                "https://x",
                "--secret-file",
                f,
                "--claim",
                "exp",
            ],
            "credential.claim: 'exp' cannot name a consumer",
        ),
        (
            vec![
                "--issuer",
                "https://idp.example",
                "--secret-file",
                f,
                "--claim",
                "email",
            ],
            &conflict,
        ),
        (
            vec!["--issuer", "https://x", "--secret-file", "/nonexistent/s"],
            "--secret-file /nonexistent/s: no such file or directory",
        ),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["consumer", "jwt", "add", "alice"];
        args.extend_from_slice(&flags);
        let run = clean(gwctl(&cp, &args).await, &secrets);
        let line = run.error_line();
        assert!(line.contains(expected), "{flags:?}: {line}");
    }
    let nobody = gwctl(
        &cp,
        &[
            "consumer",
            "jwt",
            "add",
            "nobody",
            "--issuer",
            "https://x",
            "--secret-file",
            f,
        ],
    )
    .await;
    assert!(
        nobody
            .error_line()
            .contains("consumer 'nobody' does not exist")
    );

    // Every listing, both formats: the kinds of key, never a secret.
    for args in [
        &["consumer", "jwt", "list"][..],
        &["consumer", "jwt", "list", "alice"],
        &["consumer", "get", "alice"],
        &["consumer", "get", "bob"],
        &["consumer", "list"],
    ] {
        for format in ["table", "json", "yaml"] {
            let mut all = vec!["-o", format];
            all.extend_from_slice(args);
            clean(gwctl(&cp, &all).await, &secrets).ok();
        }
    }
    let table = gwctl(&cp, &["consumer", "jwt", "list"])
        .await
        .ok()
        .to_owned();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID",
            "CONSUMER",
            "ISSUER",
            "ALG",
            "KEY",
            "AUDIENCES",
            "CLAIM",
            "CREATED"
        ]
    );
    let hs_row = table.lines().find(|l| l.starts_with(&hs_id)).unwrap();
    let cells: Vec<&str> = hs_row.split_whitespace().collect();
    assert_eq!(
        cells[..7],
        [
            hs_id.as_str(),
            "alice",
            "https://idp.example",
            "HS256",
            "secret",
            "api,web",
            "sub"
        ]
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains(jwks_url) && l.contains(" - ")),
        "{table}"
    );
    assert_eq!(table.matches(" pem ").count(), 3, "{table}");
    let bob = gwctl(&cp, &["-o", "json", "consumer", "jwt", "list", "bob"])
        .await
        .json();
    assert_eq!(bob["credentials"].as_array().unwrap().len(), 4);
    let get = gwctl(&cp, &["consumer", "get", "alice"])
        .await
        .ok()
        .to_owned();
    assert!(
        get.contains(&format!(
            "{hs_id} HS256 https://idp.example (secret), claim sub, audiences api,web, kid k1"
        )),
        "{get}"
    );
    assert!(
        get.contains(&format!("JWKS https://login.example ({jwks_url})")),
        "{get}"
    );
    let get = gwctl(&cp, &["-o", "json", "consumer", "get", "alice"])
        .await
        .json();
    assert_eq!(get["jwt_credentials"].as_array().unwrap().len(), 2);
    let hs = get["jwt_credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == hs_id.as_str())
        .unwrap();
    assert_eq!((&hs["kid"], &hs["key"]), (&"k1".into(), &"secret".into()));
    let listed = gwctl(&cp, &["consumer", "list"]).await.ok().to_owned();
    assert!(listed.lines().next().unwrap().contains("JWTS"), "{listed}");

    // Removal is a new version; the id is then gone.
    let before = gwctl(&cp, &["-o", "json", "consumer", "jwt", "list"])
        .await
        .json();
    let version = before["config_version"].as_u64().unwrap();
    let rm = gwctl(&cp, &["-o", "json", "consumer", "jwt", "rm", &hs_id])
        .await
        .json();
    assert_eq!(rm["config_version"].as_u64().unwrap(), version + 1);
    assert_eq!(rm["name"], hs_id.as_str());
    let again = gwctl(&cp, &["consumer", "jwt", "rm", &hs_id]).await;
    assert!(
        again
            .error_line()
            .contains(&format!("JWT credential '{hs_id}' does not exist")),
        "{}",
        again.stderr
    );
    let bad = gwctl(&cp, &["consumer", "jwt", "rm", "k-0123456789ab"]).await;
    assert!(
        bad.error_line().contains("is not a JWT credential id"),
        "{}",
        bad.stderr
    );
    let human = gwctl(
        &cp,
        &[
            "consumer",
            "jwt",
            "rm",
            json["credential"]["id"].as_str().unwrap(),
        ],
    )
    .await
    .ok()
    .to_owned();
    assert!(
        human.starts_with("JWT credential 'j-") && human.contains("deleted (config version"),
        "{human}"
    );

    // Removing a consumer removes its credentials.
    gwctl(&cp, &["consumer", "rm", "alice"]).await.ok();
    let left = gwctl(&cp, &["-o", "json", "consumer", "jwt", "list"])
        .await
        .json();
    let consumers: Vec<&str> = left["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["consumer"].as_str().unwrap())
        .collect();
    assert_eq!(consumers, ["bob", "bob", "bob"]);
}
