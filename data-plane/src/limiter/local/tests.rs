//! Tests of `PolicyLimiter` and `LimiterRegistry` with controllable time: every check is given
//! `base + offset`, nothing sleeps.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderName;
use proptest::prelude::*;

use super::*;

fn def(name: &str, key: KeySpec, limit: u64, period_secs: u64, burst: u64) -> PolicyDef {
    PolicyDef {
        name: name.into(),
        key,
        rate: RateSpec {
            limit,
            period: Duration::from_secs(period_secs),
            burst,
        },
        mode: Mode::Enforce,
    }
}

fn ip_def(limit: u64, period_secs: u64, burst: u64) -> PolicyDef {
    def("api", KeySpec::ClientIp, limit, period_secs, burst)
}

fn ip(s: &str) -> LimitKey<'static> {
    LimitKey::Ip(s.parse::<IpAddr>().unwrap())
}

/// Address `n` of the IPv6 /64 number `net` under 2001:db8::/32: one network, as many
/// addresses as a flood wants.
fn v6(net: u32, n: u64) -> LimitKey<'static> {
    let bits = (0x2001_0db8_u128 << 96) | (u128::from(net) << 64) | u128::from(n);
    LimitKey::Ip(IpAddr::V6(bits.into()))
}

/// Allowed checks for `key` at `at`, checking until the first rejection.
fn drain(l: &PolicyLimiter, key: LimitKey<'_>, at: Instant) -> u64 {
    let mut n = 0;
    while l.check(key, at).allowed {
        n += 1;
    }
    n
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Buckets actually held in the shards (as opposed to the counter).
fn held(l: &PolicyLimiter) -> usize {
    l.shards
        .iter()
        .map(|s| lock_shard(&s.0).buckets.len())
        .sum()
}

#[test]
fn burst_then_reject_then_refill_after_one_period() {
    let l = PolicyLimiter::new(&ip_def(5, 60, 5), 100);
    let base = Instant::now();
    let a = ip("192.0.2.1");
    for remaining in (0..5).rev() {
        let d = l.check(a, base);
        assert_eq!(
            (d.allowed, d.remaining, d.retry_after_secs),
            (true, remaining, 0)
        );
    }
    let d = l.check(a, base);
    let want = Decision {
        allowed: false,
        remaining: 0,
        reset_secs: 60,
        retry_after_secs: 12,
    };
    assert_eq!(d, want);
    // Rejections took nothing: the same answer again, and one token 12 s later.
    assert_eq!(l.check(a, base), want);
    assert!(!l.check(a, base + secs(11)).allowed);
    assert!(l.check(a, base + secs(12)).allowed);
    // A full period after emptying: exactly `limit` tokens.
    assert_eq!(drain(&l, a, base + secs(12 + 60)), 5);
}

#[test]
fn refund_gives_the_token_back() {
    let l = PolicyLimiter::new(&ip_def(2, 60, 2), 100);
    let base = Instant::now();
    let a = ip("192.0.2.1");
    assert_eq!(l.check(a, base).remaining, 1);
    l.refund(a, base);
    assert_eq!(drain(&l, a, base), 2);
    l.refund(a, base);
    l.refund(a, base);
    l.refund(a, base);
    assert_eq!(drain(&l, a, base), 2, "refunds never exceed the burst");
}

#[test]
fn missing_header_is_one_shared_key_and_values_are_separate() {
    let l = PolicyLimiter::new(
        &def(
            "k",
            KeySpec::Header(HeaderName::from_static("x-api-key")),
            3,
            60,
            3,
        ),
        100,
    );
    let base = Instant::now();
    assert_eq!(drain(&l, LimitKey::Header(None), base), 3);
    // Every other request without the header is rejected too: they share the bucket.
    assert!(!l.check(LimitKey::Header(None), base).allowed);
    // An empty value is a value, not a missing header.
    assert_eq!(drain(&l, LimitKey::Header(Some(b"")), base), 3);
    let owned = b"key-1".to_vec();
    assert_eq!(drain(&l, LimitKey::Header(Some(&owned)), base), 3);
    assert!(!l.check(LimitKey::Header(Some(b"key-1")), base).allowed);
    assert_eq!(drain(&l, LimitKey::Header(Some(b"key-2")), base), 3);
    assert_eq!(l.tracked_keys(), 4);
}

#[test]
fn ipv4_and_ipv6_clients_are_distinct() {
    let l = PolicyLimiter::new(&ip_def(1, 60, 1), 100);
    let base = Instant::now();
    let keys = [
        "127.0.0.1",
        "127.0.0.2",
        "::1",
        "::ffff:127.0.0.3",
        "2001:db8::1",
    ];
    for k in keys {
        assert!(l.check(ip(k), base).allowed, "{k}");
    }
    for k in keys {
        assert!(!l.check(ip(k), base).allowed, "{k}");
    }
    // An IPv4-mapped address is the IPv4 client (a dual-stack listener reports them so).
    assert!(!l.check(ip("127.0.0.3"), base).allowed);
    assert_eq!(l.tracked_keys(), keys.len());
}

#[test]
fn rate_change_keeps_levels_clamps_and_applies_at_once() {
    let reg = LimiterRegistry::new(100);
    let base = Instant::now();
    let l = reg.reconcile(&[ip_def(10, 60, 10)]).remove(0);
    let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
    for _ in 0..7 {
        l.check(a, base); // a: 3 left
    }
    l.check(b, base); // b: 9 left

    // Lower burst to 5: `a` keeps its 3 (not a fresh 5), `b` is clamped from 9 to 5.
    let same = reg.reconcile(&[ip_def(10, 60, 5)]).remove(0);
    assert!(Arc::ptr_eq(&l, &same), "same name and key: same limiter");
    assert_eq!(l.rate().burst, 5);
    assert_eq!(drain(&l, a, base), 3);
    assert_eq!(drain(&l, b, base), 5);

    // Raise the limit: the new refill rate applies at once (60/min = one per second).
    reg.reconcile(&[ip_def(60, 60, 5)]);
    assert_eq!(drain(&l, a, base + secs(2)), 2);
    assert_eq!(l.check(a, base + secs(2)).retry_after_secs, 1);

    // Change the period: whole tokens carry over in the new units.
    let c = ip("192.0.2.3");
    assert_eq!(drain(&l, c, base + secs(2)), 5);
    l.refund(c, base + secs(2));
    l.refund(c, base + secs(2)); // c: 2 left
    reg.reconcile(&[ip_def(60, 120, 5)]);
    assert_eq!(drain(&l, c, base + secs(2)), 2);
}

#[test]
fn mode_and_unchanged_rate_updates() {
    let reg = LimiterRegistry::new(100);
    let base = Instant::now();
    let l = reg.reconcile(&[ip_def(1, 60, 1)]).remove(0);
    assert_eq!(l.mode(), Mode::Enforce);
    assert!(l.check(ip("192.0.2.1"), base).allowed);
    let mut shadow = ip_def(1, 60, 1);
    shadow.mode = Mode::Shadow;
    let same = reg.reconcile(&[shadow]).remove(0);
    assert!(Arc::ptr_eq(&l, &same));
    assert_eq!(l.mode(), Mode::Shadow);
    // Unchanged rate: the bucket is still empty.
    assert!(!l.check(ip("192.0.2.1"), base).allowed);
}

#[test]
fn key_change_gives_a_fresh_limiter_and_absent_policies_are_dropped() {
    let reg = LimiterRegistry::new(100);
    let base = Instant::now();
    let header = KeySpec::Header(HeaderName::from_static("x-api-key"));
    let first = reg.reconcile(&[ip_def(1, 60, 1), def("other", KeySpec::ClientIp, 1, 60, 1)]);
    assert!(first[0].check(ip("192.0.2.1"), base).allowed);

    let second = reg.reconcile(&[def("api", header.clone(), 1, 60, 1)]);
    assert!(!Arc::ptr_eq(&first[0], &second[0]), "key source changed");
    assert_eq!(second[0].key_spec(), &header);
    assert_eq!(second[0].tracked_keys(), 0);
    let names: Vec<String> = reg.all().iter().map(|l| l.name().to_owned()).collect();
    assert_eq!(names, ["api"], "`other` was dropped");

    // Dropped and re-added later: a new limiter, not the old buckets.
    let third = reg.reconcile(&[
        def("api", header, 1, 60, 1),
        def("other", KeySpec::ClientIp, 1, 60, 1),
    ]);
    assert!(Arc::ptr_eq(&second[0], &third[0]));
    assert!(!Arc::ptr_eq(&first[1], &third[1]));
    assert_eq!(reg.all().len(), 2);
    assert!(reg.reconcile(&[]).is_empty());
    assert!(reg.all().is_empty());
}

#[test]
fn sweep_evicts_full_buckets_and_keeps_partial_ones() {
    let l = PolicyLimiter::new(&ip_def(1, 10, 3), 100);
    let base = Instant::now();
    l.check(ip("192.0.2.1"), base); // 2 of 3 left: full after 10 s
    drain(&l, ip("192.0.2.2"), base); // empty: full after 30 s
    assert_eq!(l.tracked_keys(), 2);
    assert_eq!(l.sweep(base + secs(9)), 0);
    assert_eq!(l.sweep(base + secs(10)), 1);
    assert_eq!((l.tracked_keys(), held(&l)), (1, 1));
    // The partial bucket kept its level: one token per 10 s since emptying.
    assert_eq!(drain(&l, ip("192.0.2.2"), base + secs(20)), 2);
    assert_eq!(l.sweep(base + secs(50)), 1);
    assert_eq!((l.tracked_keys(), held(&l)), (0, 0));
    // An evicted client comes back to a full bucket, which is what it had.
    assert_eq!(drain(&l, ip("192.0.2.1"), base + secs(50)), 3);
}

#[test]
fn cap_holds_under_a_flood_and_overflow_is_shared_and_counted() {
    let l = PolicyLimiter::new(&ip_def(5, 60, 5), 100);
    let base = Instant::now();
    let tracked_client = ip("2001:db8::1");
    assert!(l.check(tracked_client, base).allowed);
    // The flood: 10,000 addresses of one /64.
    let mut allowed = 0;
    for n in 0..10_000 {
        allowed += u32::from(l.check(v6(1, n), base).allowed);
    }
    assert_eq!((l.tracked_keys(), held(&l)), (100, 100));
    // 99 keys got buckets of their own; the other 9,901 shared their /64's bucket of burst 5.
    assert_eq!(l.overflowed(), 9_901);
    assert_eq!(allowed, 99 + 5);
    assert_eq!(l.overflow_networks(), 1);
    // Clients tracked before the flood keep their own buckets.
    assert_eq!(drain(&l, tracked_client, base), 4);
    // A key that got a bucket during the flood has its own 4 left, not the empty overflow.
    assert_eq!(l.check(v6(1, 1), base).remaining, 3);
    // The overflow bucket refills like any bucket and takes refunds.
    let late = v6(1, 20_000);
    assert!(!l.check(late, base).allowed);
    l.refund(late, base);
    assert!(l.check(v6(1, 20_001), base).allowed);
    assert!(l.check(late, base + secs(12)).allowed);
    // Once a sweep frees full buckets, new keys get their own again.
    assert_eq!(l.sweep(base + secs(60)), 100);
    assert_eq!(
        l.overflow_networks(),
        1,
        "still refilling: it carries information"
    );
    assert_eq!(drain(&l, late, base + secs(60)), 5);
    assert_eq!(l.tracked_keys(), 1);
    l.sweep(base + secs(200));
    assert_eq!(
        l.overflow_networks(),
        0,
        "full again, the network bucket is forgotten"
    );
}

#[test]
fn cap_holds_under_a_flood_from_two_threads() {
    let l = PolicyLimiter::new(&ip_def(5, 60, 5), 100);
    let base = Instant::now();
    let allowed: u32 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2u32)
            .map(|t| {
                let l = &l;
                s.spawn(move || {
                    let mut allowed = 0;
                    for n in 0..20_000 {
                        allowed += u32::from(l.check(v6(t, n), base).allowed);
                    }
                    allowed
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert_eq!((l.tracked_keys(), held(&l)), (100, 100));
    assert_eq!(l.overflowed(), 40_000 - 100);
    // Each thread's /64 drained its own overflow bucket.
    assert_eq!(allowed, 100 + 5 + 5);
}

/// The issue-9 case: a policy keyed by an API key header, at its key cap, and one client
/// sending a new key on every request. Only its own network's overflow bucket drains: a new
/// client from another network still gets in, over IPv4 and IPv6, while the flood stays
/// limited and the memory bound holds (the keys, plus at most `MAX_PREFIXES` network
/// buckets, plus the shared one).
#[test]
fn a_flood_of_new_header_keys_from_one_network_does_not_lock_out_another() {
    let key = HeaderName::from_static("x-api-key");
    let l = PolicyLimiter::new(&def("keys", KeySpec::Header(key), 3, 60, 3), 50);
    let base = Instant::now();
    let flooder: IpAddr = "198.51.100.7".parse().unwrap();
    let mut allowed = 0;
    let values: Vec<String> = (0..5_000).map(|n| format!("k{n}")).collect();
    for v in &values {
        let k = LimitKey::Header(Some(v.as_bytes()));
        allowed += u32::from(l.check_from(k, Some(flooder), base).allowed);
    }
    assert_eq!(l.tracked_keys(), 50);
    assert_eq!(
        allowed,
        50 + 3,
        "50 own buckets, then one burst for the flooder's /24"
    );
    // A neighbour in the same /24 shares the drained bucket: the documented trade-off.
    let neighbour: IpAddr = "198.51.100.200".parse().unwrap();
    let fresh = LimitKey::Header(Some(b"new-key-1"));
    assert!(!l.check_from(fresh, Some(neighbour), base).allowed);
    // Clients elsewhere are not locked out.
    for other in ["203.0.113.9", "2001:db8:aa::1"] {
        let other: IpAddr = other.parse().unwrap();
        let fresh = LimitKey::Header(Some(b"new-key-2"));
        assert!(l.check_from(fresh, Some(other), base).allowed, "{other}");
    }
    // Without the client's address (the old interface), keys share the last bucket.
    assert!(l.check(LimitKey::Header(Some(b"new-key-3")), base).allowed);

    // A flood from many networks: at most MAX_PREFIXES buckets, then the shared one.
    for n in 0..(crate::limiter::overflow::MAX_PREFIXES as u32 + 200) {
        let ip = IpAddr::from((0x0a00_0000 + (n << 8)).to_be_bytes());
        l.check_from(LimitKey::Header(Some(b"spread")), Some(ip), base);
    }
    assert_eq!(
        l.overflow_networks(),
        crate::limiter::overflow::MAX_PREFIXES
    );
    assert_eq!((l.tracked_keys(), held(&l)), (50, 50));
    // Refunds go back to the network bucket the token came from.
    let back = LimitKey::Header(Some(b"new-key-4"));
    let far: IpAddr = "203.0.113.10".parse().unwrap();
    assert!(l.check_from(back, Some(far), base).allowed);
    assert!(l.check_from(back, Some(far), base).allowed);
    assert!(
        !l.check_from(back, Some(far), base).allowed,
        "203.0.113/24 spent its 3"
    );
    l.refund_from(back, Some(far), base);
    assert!(l.check_from(back, Some(far), base).allowed);
}

#[test]
fn one_key_from_two_threads_loses_no_update() {
    let l = PolicyLimiter::new(&ip_def(1, 3600, 1_000), 10);
    let base = Instant::now();
    let allowed: u32 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let l = &l;
                s.spawn(move || {
                    (0..5_000)
                        .map(|_| u32::from(l.check(ip("192.0.2.1"), base).allowed))
                        .sum::<u32>()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert_eq!(
        allowed, 1_000,
        "exactly the burst, however the threads interleave"
    );
}

#[test]
fn a_check_on_a_held_shard_waits_for_it_then_counts() {
    // The shard locks spin and then yield (`lock_shard`); a check that finds its shard held
    // (a sweep, a table growing) must neither go ahead unlocked nor be lost.
    let l = PolicyLimiter::new(&ip_def(5, 60, 5), 10);
    let base = Instant::now();
    let key = ip("192.0.2.9");
    let guard = lock_shard(l.shard(l.fingerprinter.fingerprint(key)));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let l = &l;
        s.spawn(move || tx.send(l.check(key, base)).unwrap());
        // Give the checker every chance to reach the lock and go past spinning into yielding.
        for _ in 0..1_000 {
            std::thread::yield_now();
        }
        assert!(
            rx.try_recv().is_err(),
            "a check ran while its shard was held"
        );
        drop(guard);
        let d = rx.recv().unwrap();
        assert_eq!((d.allowed, d.remaining), (true, 4));
    });
    assert_eq!((l.tracked_keys(), held(&l)), (1, 1));
}

#[test]
fn header_values() {
    let reg = LimiterRegistry::new(100);
    let l = reg.reconcile(&[ip_def(5, 60, 5)]).remove(0);
    assert_eq!(l.policy_header_item(), r#""api";q=5;w=60"#);
    assert_eq!(l.policy_header_value(), r#""api";q=5;w=60"#);
    let d = l.check(ip("192.0.2.1"), Instant::now());
    assert_eq!(l.rate_limit_header(&d), r#""api";r=4;t=12"#);
    let mut buf = b"x, ".to_vec();
    l.write_rate_limit_item(&d, &mut buf);
    assert_eq!(buf, br#"x, "api";r=4;t=12"#);

    reg.reconcile(&[ip_def(100, 3600, 5)]);
    assert_eq!(l.policy_header_item(), r#""api";q=100;w=3600"#);
    reg.reconcile(&[ip_def(5, 60, 10)]);
    assert_eq!(l.policy_header_item(), r#""api";q=5;w=60"#);
    let odd = PolicyLimiter::new(&def(r#"a"b\c"#, KeySpec::ClientIp, 1, 1, 1), 1);
    assert_eq!(odd.policy_header_item(), r#""a\"b\\c";q=1;w=1"#);
}

proptest! {
    /// In any window of a request sequence, no more than `burst + elapsed * limit / period`
    /// requests are allowed.
    #[test]
    fn never_more_than_burst_plus_refill(
        limit in 1u64..20,
        period in 1u64..120,
        burst in 1u64..20,
        gaps_ms in proptest::collection::vec(0u64..3_000, 1..150),
    ) {
        let l = PolicyLimiter::new(&ip_def(limit, period, burst), 10);
        let base = Instant::now();
        let key = ip("192.0.2.1");
        let mut t_ms = 0;
        let mut allowed_at = Vec::new();
        for gap in gaps_ms {
            t_ms += gap;
            if l.check(key, base + Duration::from_millis(t_ms)).allowed {
                allowed_at.push(t_ms);
            }
        }
        for (i, &start) in allowed_at.iter().enumerate() {
            for (j, &end) in allowed_at.iter().enumerate().skip(i) {
                let count = (j - i + 1) as u64;
                let refilled = (end - start) * limit / (period * 1000);
                prop_assert!(count <= burst + refilled,
                    "{count} allowed in [{start}, {end}] ms, bound {}", burst + refilled);
            }
        }
    }

    /// `retry_after_secs` is the tight whole-second bound: waiting it out is enough, a second
    /// less is not.
    #[test]
    fn retry_after_is_enough_and_tight(
        limit in 1u64..50,
        period in 1u64..600,
        burst in 1u64..5,
        after_ms in 0u64..600_000,
    ) {
        let l = PolicyLimiter::new(&ip_def(limit, period, burst), 10);
        let base = Instant::now();
        let key = ip("192.0.2.1");
        drain(&l, key, base);
        let at = base + Duration::from_millis(after_ms);
        let d = l.check(key, at);
        if !d.allowed {
            prop_assert!(d.retry_after_secs >= 1);
            if d.retry_after_secs > 1 {
                // A rejected check changes nothing, so probing first is harmless.
                prop_assert!(!l.check(key, at + secs(d.retry_after_secs - 1)).allowed);
            }
            prop_assert!(l.check(key, at + secs(d.retry_after_secs)).allowed);
        }
    }
}
