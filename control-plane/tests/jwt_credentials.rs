//! JWT credentials through AdminService and the config stream: created, listed and removed,
//! each a new version; data planes get the HS256 secret, admin answers never do; the
//! one-claim-per-issuer rule; consumers taking their credentials with them; restarts keeping
//! them; and the database file readable by its owner only.

#![allow(clippy::unwrap_used)]

mod common;

use common::{ControlPlane, delta, snapshot};
use gw_proto::v1 as pb;
use gw_proto::v1::jwt_credential::Key;
use tonic::Code;

const SECRET: &[u8] = b"jwt-secret-that-must-not-leak-0123456789";

fn credential(consumer: &str, issuer: &str, key: Key) -> pb::JwtCredential {
    pb::JwtCredential {
        consumer: consumer.into(),
        issuer: issuer.into(),
        key: Some(key),
        ..Default::default()
    }
}

fn ed25519_pem() -> String {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .unwrap()
        .public_key_pem()
}

impl common::Admin {
    async fn add_consumer(&mut self, name: &str) -> u64 {
        let req = self.req(pb::CreateConsumerRequest {
            consumer: Some(pb::Consumer {
                name: name.into(),
                ..Default::default()
            }),
        });
        self.client
            .create_consumer(req)
            .await
            .unwrap()
            .into_inner()
            .config_version
    }

    async fn add_jwt(
        &mut self,
        credential: pb::JwtCredential,
    ) -> Result<pb::CreateJwtCredentialResponse, tonic::Status> {
        let req = self.req(pb::CreateJwtCredentialRequest {
            credential: Some(credential),
        });
        self.client
            .create_jwt_credential(req)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn list_jwt(
        &mut self,
        consumer: &str,
    ) -> Result<pb::ListJwtCredentialsResponse, tonic::Status> {
        let req = self.req(pb::ListJwtCredentialsRequest {
            consumer: consumer.into(),
        });
        self.client
            .list_jwt_credentials(req)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn rm_jwt(&mut self, id: &str) -> Result<u64, tonic::Status> {
        let req = self.req(pb::DeleteJwtCredentialRequest { id: id.into() });
        self.client
            .delete_jwt_credential(req)
            .await
            .map(|r| r.into_inner().config_version)
    }

    async fn consumer(&mut self, name: &str) -> pb::Consumer {
        let req = self.req(pb::GetConsumerRequest { name: name.into() });
        let answer = self.client.get_consumer(req).await.unwrap().into_inner();
        answer.consumer.unwrap()
    }

    async fn consumers(&mut self) -> pb::ListConsumersResponse {
        let req = self.req(pb::ListConsumersRequest {});
        self.client.list_consumers(req).await.unwrap().into_inner()
    }
}

fn has_secret(bytes: &[u8]) -> bool {
    bytes.windows(SECRET.len()).any(|w| w == SECRET)
}

#[tokio::test]
async fn credentials_are_created_listed_streamed_and_removed_each_in_a_new_version() {
    let cp = ControlPlane::start().await;
    let mut admin = cp.admin().await;
    admin.add_consumer("alice").await;
    admin.add_consumer("bob").await;
    let mut node = cp.node_with("n1", 0, 0, &[pb::CAPABILITY_DELTA]).await;
    let first = node.next().await;
    node.ack(first.version).await;

    // An HS256 secret: the answer says HS256 and carries no secret.
    let created = admin
        .add_jwt(pb::JwtCredential {
            audiences: vec!["api".into()],
            kid: "k1".into(),
            ..credential(
                "alice",
                "https://idp.example",
                Key::Hs256Secret(SECRET.to_vec()),
            )
        })
        .await
        .unwrap();
    let hs = created.credential.clone().unwrap();
    assert!(hs.id.starts_with("j-") && hs.id.len() == 14, "{}", hs.id);
    assert_eq!(hs.algorithm(), pb::JwtAlgorithm::Hs256);
    assert_eq!(hs.key, Some(Key::Hs256Secret(Vec::new())));
    assert_eq!((hs.claim.as_str(), hs.kid.as_str()), ("sub", "k1"));
    assert_eq!(hs.audiences, ["api"]);
    assert!(hs.created.is_some());
    assert!(!has_secret(&prost::Message::encode_to_vec(&created)));
    // The data plane gets it with the secret, in the announced version.
    let pushed = node.next().await;
    let d = delta(&pushed);
    assert_eq!(pushed.version, created.config_version);
    let streamed = &d.upserted_consumers[0];
    assert_eq!(streamed.name, "alice");
    assert_eq!(
        streamed.jwt_credentials[0].key,
        Some(Key::Hs256Secret(SECRET.to_vec()))
    );
    assert_eq!(streamed.jwt_credentials[0].id, hs.id);
    assert_eq!(streamed.updated_version, created.config_version);
    node.ack(pushed.version).await;

    // A PEM key (algorithm from the key) and a JWKS URL (no algorithm).
    let pem = admin
        .add_jwt(credential(
            "bob",
            "https://other.example",
            Key::PublicKeyPem(ed25519_pem()),
        ))
        .await
        .unwrap();
    assert_eq!(pem.config_version, created.config_version + 1);
    assert_eq!(
        pem.credential.as_ref().unwrap().algorithm(),
        pb::JwtAlgorithm::Eddsa
    );
    let jwks = admin
        .add_jwt(credential(
            "alice",
            "https://login.example",
            Key::JwksUrl("https://login.example/.well-known/jwks.json".into()),
        ))
        .await
        .unwrap();
    assert_eq!(
        jwks.credential.as_ref().unwrap().algorithm(),
        pb::JwtAlgorithm::Unspecified
    );

    // Listing, getting and listing consumers: no secret anywhere, ordered by consumer then
    // creation.
    let all = admin.list_jwt("").await.unwrap();
    assert_eq!(all.config_version, jwks.config_version);
    let ids: Vec<_> = all.credentials.iter().map(|c| c.id.as_str()).collect();
    // alice's two by creation (whole seconds), then id; then bob's.
    let mut alice_ids = [hs.clone(), jwks.credential.clone().unwrap()];
    alice_ids.sort_by_key(|c| (c.created.unwrap().seconds, c.id.clone()));
    assert_eq!(
        ids,
        [
            alice_ids[0].id.as_str(),
            alice_ids[1].id.as_str(),
            pem.credential.as_ref().unwrap().id.as_str()
        ]
    );
    assert_eq!(admin.list_jwt("bob").await.unwrap().credentials.len(), 1);
    let alice = admin.consumer("alice").await;
    assert_eq!(alice.jwt_credentials.len(), 2);
    let shown = alice
        .jwt_credentials
        .iter()
        .find(|c| c.id == hs.id)
        .unwrap();
    assert_eq!(shown.key, Some(Key::Hs256Secret(Vec::new())));
    let listed = admin.consumers().await;
    for answer in [
        prost::Message::encode_to_vec(&all),
        prost::Message::encode_to_vec(&alice),
        prost::Message::encode_to_vec(&listed),
    ] {
        assert!(!has_secret(&answer), "a secret in an admin answer");
    }
    // A new data plane's snapshot has all three, the secret included.
    let mut late = cp.node("n2", 0).await;
    let snap = late.next().await;
    let snap = snapshot(&snap);
    let creds: usize = snap.consumers.iter().map(|c| c.jwt_credentials.len()).sum();
    assert_eq!(creds, 3);
    assert!(has_secret(&prost::Message::encode_to_vec(snap)));

    // Removing one is a new version; the data plane's delta has alice without it.
    let removed = admin.rm_jwt(&hs.id).await.unwrap();
    assert_eq!(removed, jwks.config_version + 1);
    // Earlier versions may come first (or be skipped, as a stream may coalesce).
    let pushed = loop {
        let r = node.next().await;
        let version = r.version;
        node.ack(version).await;
        if version == removed {
            break r;
        }
    };
    let alice = &delta(&pushed).upserted_consumers[0];
    assert_eq!(alice.jwt_credentials.len(), 1);
    assert!(!has_secret(&prost::Message::encode_to_vec(alice)));
    let err = admin.rm_jwt(&hs.id).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains(&hs.id), "{}", err.message());
    let err = admin.rm_jwt("k-0123456789ab").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .starts_with("id: 'k-0123456789ab' is not a JWT credential id")
    );
}

#[tokio::test]
async fn refusals_name_what_is_wrong() {
    let cp = ControlPlane::start().await;
    let mut admin = cp.admin().await;
    admin.add_consumer("alice").await;
    admin.add_consumer("bob").await;
    let issuer = "https://idp.example";

    let err = admin
        .add_jwt(credential(
            "nobody",
            issuer,
            Key::Hs256Secret(SECRET.to_vec()),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "consumer 'nobody' does not exist");

    let err = admin
        .add_jwt(credential(
            "alice",
            issuer,
            Key::Hs256Secret(SECRET[..20].to_vec()),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .starts_with("credential.hs256_secret: 20 bytes is too short")
    );
    assert!(!err.message().contains("jwt-secret"));

    let err = admin
        .add_jwt(pb::JwtCredential {
            algorithm: pb::JwtAlgorithm::Rs256.into(),
            ..credential("alice", issuer, Key::PublicKeyPem(ed25519_pem()))
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("credential.algorithm: RS256 does not match the key")
    );

    let err = admin
        .add_jwt(credential(
            "alice",
            issuer,
            Key::JwksUrl("http://idp.example/jwks".into()),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .starts_with("credential.jwks_url: http:// is only allowed to a loopback")
    );

    let err = admin
        .add_jwt(pb::JwtCredential::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("credential.consumer: required"),
        "{}",
        err.message()
    );

    // One claim per issuer, across consumers.
    let first = admin
        .add_jwt(credential(
            "alice",
            issuer,
            Key::Hs256Secret(SECRET.to_vec()),
        ))
        .await
        .unwrap();
    let id = first.credential.unwrap().id;
    let err = admin
        .add_jwt(pb::JwtCredential {
            claim: "email".into(),
            ..credential("bob", issuer, Key::PublicKeyPem(ed25519_pem()))
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let text = err.message();
    assert!(text.starts_with("credential.claim: "), "{text}");
    assert!(
        text.contains(&id) && text.contains("'alice'") && text.contains("'sub'"),
        "{text}"
    );
    // The same claim is fine, and another issuer may use another claim.
    admin
        .add_jwt(credential("bob", issuer, Key::PublicKeyPem(ed25519_pem())))
        .await
        .unwrap();
    admin
        .add_jwt(pb::JwtCredential {
            claim: "email".into(),
            ..credential(
                "bob",
                "https://other.example",
                Key::PublicKeyPem(ed25519_pem()),
            )
        })
        .await
        .unwrap();
    // Nothing refused was written.
    let listed = admin.list_jwt("").await.unwrap();
    assert_eq!(listed.credentials.len(), 3);
    let err = admin.list_jwt("carol").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn credentials_survive_a_restart_and_go_with_their_consumer() {
    let cp = ControlPlane::start().await;
    let mut admin = cp.admin().await;
    admin.add_consumer("alice").await;
    let pem = ed25519_pem();
    admin
        .add_jwt(credential(
            "alice",
            "https://idp.example",
            Key::Hs256Secret(SECRET.to_vec()),
        ))
        .await
        .unwrap();
    admin
        .add_jwt(pb::JwtCredential {
            audiences: vec!["a".into(), "b".into()],
            claim: "preferred_username".into(),
            kid: "2026".into(),
            ..credential("alice", "https://other.example", Key::PublicKeyPem(pem))
        })
        .await
        .unwrap();
    let before = admin.list_jwt("").await.unwrap();

    let cp = cp.restart().await;
    let mut admin = cp.admin().await;
    assert_eq!(admin.list_jwt("").await.unwrap(), before);
    // The secret came back from the database too: data planes still get it.
    let mut node = cp.node("n1", 0).await;
    let first = node.next().await;
    assert!(has_secret(&prost::Message::encode_to_vec(snapshot(&first))));

    // The database file holds the secret, so only its owner may read it (and SQLite's WAL
    // and shared-memory files, which hold recent pages).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for suffix in ["", "-wal", "-shm"] {
            let file = format!("{}{suffix}", cp.db_path().display());
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{file}: mode {mode:o}");
        }
    }

    // Removing the consumer removes its credentials, in the database as well.
    let req = admin.req(pb::DeleteConsumerRequest {
        name: "alice".into(),
    });
    admin.client.delete_consumer(req).await.unwrap();
    assert!(admin.list_jwt("").await.unwrap().credentials.is_empty());
    let cp = cp.restart().await;
    let mut admin = cp.admin().await;
    assert!(admin.list_jwt("").await.unwrap().credentials.is_empty());
    admin.add_consumer("alice").await;
    assert!(admin.consumer("alice").await.jwt_credentials.is_empty());
}
