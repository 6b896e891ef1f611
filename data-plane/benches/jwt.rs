//! JWT verification cost (issue 12): one token per algorithm (RS256 2048-bit, ES256, EdDSA,
//! HS256) through `JwtVerifier::verify`, without and with the cache of verified tokens, and
//! the cache's cost when it cannot help (every token new).
//!
//! Run: `cargo bench -p gw-data-plane --bench jwt`. Needs `openssl` (Debian package) for the
//! RSA key, which ring cannot generate.
//!
//! Claims are a typical access token's (~330 bytes of JSON: iss, sub, aud, exp, nbf, iat,
//! scope, email, a jti), so base64 and JSON work is realistic.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{BenchmarkId, Criterion, Throughput};
// `testing` reaches the key types as `super::jws`, as it does inside the crate.
use gw_data_plane::auth::jws;
use gw_data_plane::auth::jwt::{CredentialKeys, JwtCredential, JwtKey, JwtVerifier};
use serde_json::json;

/// The signing helpers of the unit tests (`src/auth/testing.rs`), shared rather than copied.
#[allow(dead_code)]
#[path = "../src/auth/testing.rs"]
mod testing;

use testing::Signer;

const ISS: &str = "https://idp.example.com/realms/main";
/// Distinct tokens cycled through in the all-misses case: more than the cache holds.
const DISTINCT: usize = 30_000;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(jti: usize) -> serde_json::Value {
    let now = now_secs();
    json!({
        "iss": ISS,
        "sub": "0f3c1a52-8d7e-4b8a-9a4e-6f1c2b3d4e5f",
        "aud": ["orders-api", "account"],
        "exp": now + 3600,
        "nbf": now - 5,
        "iat": now - 5,
        "jti": format!("c2a9e1f4-{jti:08}"),
        "scope": "openid profile email orders:read orders:write",
        "email": "alice@example.com",
        "azp": "web-frontend",
    })
}

fn verifier(signer: &Signer, cache: usize) -> JwtVerifier {
    JwtVerifier::new(vec![JwtCredential {
        consumer: "0f3c1a52-8d7e-4b8a-9a4e-6f1c2b3d4e5f".into(),
        issuer: ISS.into(),
        audiences: vec!["orders-api".into()],
        consumer_claim: "sub".into(),
        keys: CredentialKeys::Static(vec![JwtKey {
            kid: Some("k1".into()),
            material: signer.material(),
        }]),
    }])
    .unwrap()
    .with_cache_capacity(cache)
}

fn same_token(c: &mut Criterion) {
    let now = SystemTime::now();
    let mut g = c.benchmark_group("verify");
    g.throughput(Throughput::Elements(1));
    for signer in Signer::one_of_each() {
        let alg = signer.alg().name();
        let token = signer.token(Some("k1"), &claims(0));
        let uncached = verifier(&signer, 0);
        let cached = verifier(&signer, gw_data_plane::auth::jwt::DEFAULT_CACHE_CAPACITY);
        assert!(uncached.verify(&token, now).is_ok() && cached.verify(&token, now).is_ok());
        g.bench_with_input(BenchmarkId::new("no-cache", alg), &token, |b, t| {
            b.iter(|| uncached.verify(black_box(t), now).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("cache-hit", alg), &token, |b, t| {
            b.iter(|| cached.verify(black_box(t), now).unwrap())
        });
    }
    g.finish();
}

/// The cache's overhead when it never hits: every token is new (HS256, the cheapest check,
/// where the overhead shows most; ES256, a typical asymmetric one).
fn all_misses(c: &mut Criterion) {
    let now = SystemTime::now();
    let mut g = c.benchmark_group("verify-distinct-tokens");
    g.throughput(Throughput::Elements(1));
    for signer in [Signer::hs256(), Signer::es256()] {
        let alg = signer.alg().name();
        let tokens: Vec<String> = (0..DISTINCT)
            .map(|i| signer.token(Some("k1"), &claims(i)))
            .collect();
        for (case, cache) in [
            ("no-cache", 0),
            (
                "cache-miss",
                gw_data_plane::auth::jwt::DEFAULT_CACHE_CAPACITY,
            ),
        ] {
            let v = verifier(&signer, cache);
            let mut i = 0;
            g.bench_function(BenchmarkId::new(case, alg), |b| {
                b.iter(|| {
                    i = (i + 1) % DISTINCT;
                    v.verify(black_box(&tokens[i]), now).unwrap()
                })
            });
        }
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    same_token(&mut c);
    all_misses(&mut c);
    c.final_summary();
}
