//! The lease state machine on a fake clock.

use super::*;
use std::time::Duration;

const MS: u64 = 1_000;
const SEC: u64 = 1_000_000;

fn rate(limit: u64, secs: u64, burst: u64) -> RateSpec {
    RateSpec {
        limit,
        period: Duration::from_secs(secs),
        burst,
    }
}

fn reply(granted: u64, remaining: u64, until_one_us: u64, until_want_us: u64) -> Reply {
    Reply {
        granted,
        remaining,
        until_one_us,
        until_want_us,
        until_full_us: 60 * SEC,
    }
}

/// A request arriving at `now`: counted, then decided locally if it can be.
fn request(k: &mut KeyState, now: u64, max_lease: u64) -> Local {
    k.arrive(now);
    k.local(now, max_lease)
}

#[test]
fn lease_bound_table() {
    // (limit, period s, burst) -> max lease
    for (limit, secs, burst, want) in [
        (5, 60, 5, 1),
        (10, 1, 10, 1),
        (1_000, 1, 1_000, 20),
        (1_000, 1, 16, 2),
        (100_000, 1, 100_000, 2_000),
        (60_000, 60, 60_000, 20),
    ] {
        assert_eq!(
            Sizing::new(&rate(limit, secs, burst)).max_lease,
            want,
            "{limit}/{secs}s b{burst}"
        );
    }
}

#[test]
fn hold_table() {
    let five = Sizing::new(&rate(5, 60, 5));
    let hot = Sizing::new(&rate(1_000, 1, 1_000));
    let tight = Sizing::new(&rate(1_000, 1, 40));
    // (sizing, until one, until want, want, live) -> hold
    for (name, sizing, one, wanted, want, live, hold) in [
        // A retry time of a second or more is exact, whatever the fleet.
        ("5/min", five, 12 * SEC, 12 * SEC, 1, 4, 12 * SEC),
        ("5/min alone", five, 12 * SEC, 12 * SEC, 1, 1, 12 * SEC),
        // Alone: until the tokens asked for are back.
        ("hot alone", hot, MS, 10 * MS, 10, 1, 10 * MS),
        // Four nodes: and the other three's 10 each (1 ms per token).
        ("hot x4", hot, MS, 10 * MS, 10, 4, 40 * MS),
        ("hot x4 want 2", hot, 0, 2 * MS, 2, 4, 8 * MS),
        // Never longer than half the burst takes to come back (20 ms), nor than a second.
        ("tight x8", tight, MS, 5 * MS, 5, 8, 20 * MS),
        ("hot x500", hot, MS, 10 * MS, 10, 500, 500 * MS),
        (
            "10/s x50",
            Sizing::new(&rate(10, 1, 100)),
            100 * MS,
            100 * MS,
            1,
            50,
            SEC,
        ),
    ] {
        let r = reply(0, 0, one, wanted);
        assert_eq!(hold_us(&sizing, &r, want, live), hold, "{name}");
    }
}

#[test]
fn a_rejected_key_is_answered_locally_until_its_retry_time() {
    let five = Sizing::new(&rate(5, 60, 5));
    let mut k = KeyState::new(0);
    assert_eq!(request(&mut k, 0, 1), Local::Ask(1));
    // Redis: no token, the next in 12 s (5 per minute); four nodes share the policy.
    let r = reply(0, 0, 12 * SEC, 12 * SEC);
    let d = k.answer(0, &r, 1, hold_us(&five, &r, 1, 4));
    assert_eq!(
        (d.allowed, d.retry_after_secs, d.reset_secs),
        (false, 12, 60)
    );
    let Local::Decided(d) = request(&mut k, 5 * SEC, 1) else {
        panic!("must be answered locally")
    };
    assert_eq!(
        (d.allowed, d.retry_after_secs, d.reset_secs),
        (false, 7, 55)
    );
    // One microsecond before the token, still local; at it, Redis is asked again.
    assert!(matches!(
        request(&mut k, 12 * SEC - 1, 1),
        Local::Decided(_)
    ));
    assert_eq!(request(&mut k, 12 * SEC, 1), Local::Ask(1));
}

#[test]
fn a_hot_key_leases_up_to_the_bound_and_spends_locally() {
    let mut k = KeyState::new(0);
    // 1,400 requests per second (one every ~714 us) for a window: the lease grows to
    // what 50 ms of that spends, capped at 10.
    let mut now = 0;
    let mut asks = Vec::new();
    for _ in 0..300 {
        now += 714;
        match request(&mut k, now, 10) {
            Local::Decided(_) => {}
            Local::Wait => panic!("nothing is in flight"),
            Local::Ask(want) => {
                asks.push(want);
                k.answer(now, &reply(want, 500, 0, 0), want, 0);
            }
        }
    }
    assert_eq!(asks[0], 1);
    assert_eq!(*asks.last().unwrap(), 10);
    // Once leasing, one round trip per ten requests.
    let late = asks.iter().rev().take_while(|w| **w == 10).count();
    assert!((25..=30).contains(&late), "{asks:?}");
}

#[test]
fn requests_wait_for_the_round_trip_in_flight_and_share_its_lease() {
    let mut k = KeyState::new(0);
    for i in 0..100 {
        k.arrive(i * 100);
    }
    assert_eq!(request(&mut k, 10 * MS, 10), Local::Ask(10));
    // Three more arrive before the answer: none asks again.
    for t in 1..=3 {
        assert_eq!(request(&mut k, 10 * MS + t, 10), Local::Wait);
    }
    let d = k.answer(10 * MS + 500, &reply(4, 0, MS, 10 * MS), 10, 0);
    assert!(d.allowed);
    // The three waiters are served by the other three tokens; the next one asks.
    for _ in 0..3 {
        assert!(matches!(k.local(10 * MS + 501, 10), Local::Decided(d) if d.allowed));
    }
    assert_eq!(request(&mut k, 10 * MS + 502, 10), Local::Ask(10));
    // A failed round trip lets the next request ask.
    assert_eq!(request(&mut k, 10 * MS + 503, 10), Local::Wait);
    k.failed();
    assert_eq!(k.local(10 * MS + 504, 10), Local::Ask(10));
}

#[test]
fn answers_add_to_the_lease_and_a_rejection_spends_what_is_left() {
    let mut k = KeyState::new(0);
    assert_eq!(request(&mut k, 0, 10), Local::Ask(1));
    k.answer(0, &reply(3, 10, 0, 0), 1, 0);
    // A later policy rejected a request: its token comes back here.
    k.refund(1);
    assert_eq!(
        request(&mut k, 2, 10),
        Local::Decided(Decision {
            allowed: true,
            remaining: 12,
            reset_secs: 60,
            retry_after_secs: 0
        })
    );
    for t in 3..5 {
        assert!(matches!(request(&mut k, t, 10), Local::Decided(d) if d.allowed));
    }
    assert!(matches!(request(&mut k, 5, 10), Local::Ask(_)));
    // Redis has none left, but a refund arrived meanwhile: the request spends it, and the
    // key is not held.
    k.refund(6);
    let d = k.answer(7, &reply(0, 0, MS, MS), 10, 40 * MS);
    assert!(d.allowed);
    assert!(matches!(request(&mut k, 8, 10), Local::Ask(_)));
    // A grant while tokens are leased adds to them.
    k.refund(9);
    k.answer(10, &reply(5, 0, 0, 0), 5, 0);
    for t in 11..16 {
        assert!(
            matches!(request(&mut k, t, 10), Local::Decided(d) if d.allowed),
            "{t}"
        );
    }
    assert!(matches!(request(&mut k, 16, 10), Local::Ask(_)));
}

#[test]
fn a_partial_grant_is_spent_and_a_rejection_holds_the_key() {
    let mut k = KeyState::new(0);
    for i in 0..200 {
        k.arrive(i * 100);
    }
    let want = match k.local(20 * MS, 10) {
        Local::Ask(w) => w,
        other => panic!("{other:?}"),
    };
    assert_eq!(want, 10);
    // Only 3 left in the fleet: 1 now, 2 leased.
    let d = k.answer(20 * MS, &reply(3, 0, MS, 10 * MS), 10, 0);
    assert_eq!((d.allowed, d.remaining), (true, 2));
    assert!(matches!(request(&mut k, 20 * MS + 1, 10), Local::Decided(d) if d.allowed));
    assert!(matches!(request(&mut k, 20 * MS + 2, 10), Local::Decided(d) if d.allowed));
    assert!(matches!(request(&mut k, 20 * MS + 3, 10), Local::Ask(10)));
    // None left: held for 40 ms, Retry-After still 1 s.
    k.answer(20 * MS + 3, &reply(0, 0, MS, 10 * MS), 10, 40 * MS);
    match request(&mut k, 59 * MS, 10) {
        Local::Decided(d) => assert_eq!((d.allowed, d.retry_after_secs), (false, 1)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(request(&mut k, 60 * MS + 3, 10), Local::Ask(_)));
}

#[test]
fn leases_expire_and_refunds_are_spent_locally() {
    let mut k = KeyState::new(0);
    k.answer(0, &reply(5, 10, 0, 0), 5, 0);
    assert!(matches!(request(&mut k, LEASE_TTL_US - 1, 10), Local::Decided(d) if d.allowed));
    // The other three are dropped with the lease.
    assert!(matches!(request(&mut k, LEASE_TTL_US, 10), Local::Ask(_)));
    k.answer(LEASE_TTL_US, &reply(1, 10, 0, 0), 1, 0);
    k.refund(LEASE_TTL_US + 1);
    assert!(matches!(request(&mut k, LEASE_TTL_US + 2, 10), Local::Decided(d) if d.allowed));
    assert!(matches!(
        request(&mut k, LEASE_TTL_US + 3, 10),
        Local::Ask(_)
    ));
}

#[test]
fn idle_once_nothing_is_pending() {
    let mut k = KeyState::new(0);
    k.answer(0, &reply(0, 0, SEC, SEC), 1, SEC);
    assert!(!k.idle(SEC - 1));
    assert!(k.idle(SEC));
    let mut k = KeyState::new(0);
    k.answer(0, &reply(3, 0, 0, 0), 3, 0);
    assert!(!k.idle(2 * WINDOW_US - 1));
    assert!(k.idle(2 * WINDOW_US));
    // A key with a round trip in flight is kept.
    let mut k = KeyState::new(0);
    assert!(matches!(request(&mut k, 0, 1), Local::Ask(1)));
    assert!(!k.idle(10 * WINDOW_US));
}
