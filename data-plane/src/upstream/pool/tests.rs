use std::sync::Arc;
use std::time::Duration;

use http::Request;
use http_body_util::{Either, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, DuplexStream};

use super::*;
use crate::upstream::connect::Caps;
use http::uri::Authority;

/// A pool that keeps `max_idle` per slot for 100 ms: a 10 ms period, so 10 ticks.
fn pool(max_idle: usize) -> Arc<Pool> {
    Pool::new(Settings {
        idle_timeout: Duration::from_millis(100),
        max_idle,
    })
}

fn room(permits: usize) -> Room {
    Caps::new(permits, 100).room(&Authority::from_static("backend:80"))
}

/// An endpoint's idle set, adopted by `pool` (no sweeper: the tests tick it themselves).
fn idle_of(pool: &Arc<Pool>) -> Arc<Idle> {
    let idle = Arc::new(Idle::default());
    assert!(pool.adopt(&idle, || room(10)));
    idle
}

/// A real hyper client connection over an in-memory pipe, ready for a request; the other
/// end is the "backend".
async fn connection() -> (Sender, DuplexStream) {
    let (client, server) = tokio::io::duplex(4096);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender.ready().await.unwrap();
    (sender, server)
}

/// Waits (yielding to other tasks) until `f` holds; fails after the test's patience.
async fn eventually_true(f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "the condition never held"
        );
        tokio::task::yield_now().await;
    }
}

/// Whether the backend end sees the connection closed (EOF) within the test's patience.
async fn closed(server: &mut DuplexStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), server.read(&mut buf)).await,
        Ok(Ok(0))
    )
}

#[tokio::test]
async fn checked_in_connections_come_back_last_in_first_out() {
    let pool = pool(8);
    let idle = idle_of(&pool);
    let (a, mut a_end) = connection().await;
    let (b, _b_end) = connection().await;
    idle.checkin(a, 0);
    idle.checkin(b, 0);
    assert_eq!(idle.len(), 2);
    let first = idle.checkout(0).unwrap();
    assert_eq!(idle.len(), 1);
    // The one left is `a`: dropping the whole set closes it, so `first` was `b`.
    drop(idle);
    assert!(closed(&mut a_end).await, "a was still pooled");
    assert!(!first.is_closed());
}

#[tokio::test]
async fn the_cap_closes_the_oldest() {
    let pool = pool(2);
    let idle = idle_of(&pool);
    let (a, mut a_end) = connection().await;
    let (b, _b_end) = connection().await;
    let (c, _c_end) = connection().await;
    idle.checkin(a, 0);
    idle.checkin(b, 0);
    idle.checkin(c, 0);
    assert_eq!(idle.len(), 2);
    assert!(closed(&mut a_end).await, "the oldest was closed");
}

#[tokio::test]
async fn no_idle_connections_with_a_cap_of_zero_or_before_adoption() {
    let none = pool(0);
    let idle = idle_of(&none);
    let (a, mut a_end) = connection().await;
    idle.checkin(a, 0);
    assert_eq!(idle.len(), 0);
    assert!(closed(&mut a_end).await);

    let orphan = Idle::default();
    let (b, mut b_end) = connection().await;
    orphan.checkin(b, 0);
    assert_eq!(orphan.len(), 0);
    assert!(closed(&mut b_end).await);
}

#[tokio::test]
async fn connections_expire_after_the_idle_timeout_and_no_sooner() {
    let pool = pool(8);
    assert_eq!(pool.period(), Duration::from_millis(10));
    let idle = idle_of(&pool);
    let (a, mut a_end) = connection().await;
    idle.checkin(a, 0);
    // Checked in before the first sweep: idle for more than `n - 1` periods at sweep `n`,
    // so the timeout (10 periods) has surely passed at sweep 11, not before.
    for _ in 0..10 {
        pool.tick();
    }
    assert_eq!(idle.len(), 1, "dropped before the idle timeout");
    pool.tick();
    assert_eq!(idle.len(), 0);
    assert!(closed(&mut a_end).await);

    // A later check-in expires by its own stamp, not the pool's age.
    let (b, _b_end) = connection().await;
    idle.checkin(b, 0);
    for _ in 0..10 {
        pool.tick();
    }
    assert_eq!(idle.len(), 1);
    pool.tick();
    assert_eq!(idle.len(), 0);
}

#[tokio::test]
async fn closed_connections_are_skipped_and_swept() {
    let pool = pool(8);
    let idle = idle_of(&pool);
    let (a, a_end) = connection().await;
    let (b, b_end) = connection().await;
    idle.checkin(a, 0);
    idle.checkin(b, 0);
    // The backend closes `b`, the most recent: once its connection task has seen the EOF, a
    // checkout passes over it (and drops it) to hand out `a`.
    drop(b_end);
    let start = tokio::time::Instant::now();
    let sender = loop {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "b never seen closed"
        );
        let s = idle.checkout(0).unwrap();
        if idle.is_empty() {
            break s;
        }
        idle.checkin(s, 0);
        tokio::task::yield_now().await;
    };
    assert!(!sender.is_closed());
    drop(a_end);
    idle.checkin(sender, 0);
    // Both backends gone: the sweep drops them, expired or not.
    let start = tokio::time::Instant::now();
    while !idle.is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10), "never swept");
        tokio::task::yield_now().await;
        pool.tick();
    }
}

#[tokio::test]
async fn a_busy_connection_is_left_for_later_and_another_tag_is_dropped() {
    let pool = pool(8);
    let idle = idle_of(&pool);
    let (mut busy, _end) = connection().await;
    // A request the backend never answers: the connection is busy with it.
    let pending = busy.send_request(Request::new(Either::Right(Empty::new())));
    let pending = tokio::spawn(pending);
    while busy.is_ready() {
        tokio::task::yield_now().await;
    }
    idle.checkin(busy, 0);
    assert!(
        idle.checkout(0).is_none(),
        "a busy connection was handed out"
    );
    assert_eq!(idle.len(), 1, "kept for when it is done");
    // Connections opened under other settings are never reused, and go.
    assert!(idle.checkout(1).is_none());
    assert_eq!(idle.len(), 0);
    pending.abort();
}

#[tokio::test]
async fn at_the_cap_a_connection_is_kept_unless_a_connect_waits() {
    let pool = pool(8);
    let idle = Arc::new(Idle::default());
    let room = room(1);
    assert!(pool.adopt(&idle, || room.clone()));
    let held = room.endpoint_permit().await.unwrap();
    assert!(room.is_full());
    // At the cap with nobody waiting: kept (a cap of 1 reuses its one connection).
    let (a, _a_end) = connection().await;
    idle.checkin(a, 0);
    assert_eq!(idle.len(), 1, "kept at the cap with nobody waiting");
    let a = idle.checkout(0).unwrap();
    // A connect waits for the endpoint's permit: the finishing connection closes instead.
    let waiting = tokio::spawn({
        let room = room.clone();
        async move { room.endpoint_permit().await.is_some() }
    });
    eventually_true(|| room.is_wanted()).await;
    let (b, mut b_end) = connection().await;
    idle.checkin(b, 0);
    assert_eq!(idle.len(), 0, "kept while a connect waits");
    assert!(closed(&mut b_end).await);
    drop(held);
    assert!(waiting.await.unwrap());
    assert!(!room.is_wanted(), "the waiter is uncounted once served");
    idle.checkin(a, 0);
    assert_eq!(idle.len(), 1);
}

#[tokio::test]
async fn at_the_cap_a_request_takes_a_connection_idle_in_another_slot() {
    let pool = pool(8);
    let idle = Arc::new(Idle::default());
    let room = room(1);
    assert!(pool.adopt(&idle, || room.clone()));
    let (a, _a_end) = connection().await;
    // Checked in by another thread: in that thread's slot (when there are two or more).
    let idle2 = idle.clone();
    std::thread::spawn(move || idle2.checkin(a, 0))
        .join()
        .unwrap();
    assert_eq!(idle.len(), 1);
    // Below the cap, only this thread's slot is looked at.
    assert!(idle.checkout_at_cap(0).is_none());
    let _held = room.endpoint_permit().await.unwrap();
    assert!(
        idle.checkout_at_cap(0).is_some(),
        "at the cap, any slot serves"
    );
    assert_eq!(idle.len(), 0);
}

#[tokio::test]
async fn a_dropped_endpoint_closes_its_connections_and_leaves_the_registry() {
    let pool = pool(8);
    let idle = idle_of(&pool);
    let (a, mut a_end) = connection().await;
    idle.checkin(a, 0);
    drop(idle);
    assert!(closed(&mut a_end).await);
    pool.tick();
    assert!(pool.registry.lock().unwrap().is_empty());
}

#[test]
fn every_thread_has_a_slot() {
    let n = slot_count();
    assert!((1..=MAX_SLOTS).contains(&n));
    let here = slot_index();
    assert_eq!(slot_index(), here, "a thread keeps its slot");
    let there = std::thread::spawn(slot_index).join().unwrap();
    assert!(here < n && there < n);
}
