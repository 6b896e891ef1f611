//! A 100 MiB upload streams through the proxy intact, without being buffered whole. Alone in
//! its binary so the process's peak memory reflects this test only.
#![allow(clippy::unwrap_used)]

mod common;

use std::convert::Infallible;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};

const TOTAL: usize = 100 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// Peak resident set size of this process so far (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

/// Chunk `i`: a fixed pseudo-random pattern stamped with the chunk's index, so lost,
/// repeated or reordered chunks change the hash.
fn chunk(base: &[u8], i: usize) -> Bytes {
    let mut v = base.to_vec();
    v[..8].copy_from_slice(&(i as u64).to_le_bytes());
    Bytes::from(v)
}

fn pattern() -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..CHUNK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_post_arrives_intact_with_flat_memory() {
    let mut env = Env::start().await;
    let b = Backend::start("b").await;
    let mut s = service("up", "/up", &[&b]);
    s.route.as_mut().unwrap().strip_prefix = true;
    env.add(s).await;

    let before = peak_rss();
    let (hash_tx, hash_rx) = tokio::sync::oneshot::channel();
    // Generated as it is sent, hashed on the way: the test never holds more than a chunk.
    let base: std::sync::Arc<[u8]> = pattern().into();
    let frames = futures::stream::unfold(
        (0usize, Sha256::new(), Some(hash_tx)),
        move |(i, mut h, tx)| {
            let base = base.clone();
            async move {
                if i * CHUNK >= TOTAL {
                    if let Some(tx) = tx {
                        let _ = tx.send(gw_testkit::backend::hex(&h.finalize_reset()));
                    }
                    return None;
                }
                let c = chunk(&base, i);
                h.update(&c);
                Some((Ok::<_, Infallible>(Frame::data(c)), (i + 1, h, tx)))
            }
        },
    );
    let stream = connect(env.dp.proxy, None).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("/up/_upload")
        .header("host", "upload.test")
        .body(StreamBody::new(frames))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let got: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let sent_hash = hash_rx.await.unwrap();
    assert_eq!(got["bytes"], TOTAL as u64);
    assert_eq!(got["sha256"], sent_hash.as_str());

    let grown = peak_rss().saturating_sub(before);
    eprintln!(
        "MEASURED 100 MiB upload: peak RSS grew by {} KiB",
        grown / 1024
    );
    // Buffering the body anywhere (client, proxy or backend) would add 100 MiB.
    assert!(grown < (TOTAL / 4) as u64, "peak RSS grew by {grown} bytes");
}
