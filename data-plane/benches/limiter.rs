//! Limiter micro-benchmarks (issue 5): decision cost for one hot key, 100k and 1M keys, on one
//! and two threads; the idle-bucket sweep; bytes per tracked key. The same cases run against
//! the `governor` crate's keyed limiter (GCRA over a DashMap) for comparison.
//!
//! Run: `cargo bench -p gw-data-plane --bench limiter`. Bytes per key are measured first, each
//! limiter in a child process of its own (the resident-set growth while it fills), so that
//! memory freed by one measurement cannot be reused by the next and hide its cost.
//!
//! Both limiters are configured never to reject (the issue's "100,000 distinct keys that
//! never rejects"), so every iteration does the full allowed path. `gw` is given the request's
//! `Instant` (the request path reads the clock once per request, for every policy); governor
//! reads its own clock (quanta, the TSC) inside every check, so a `gw + Instant::now()` case
//! is included for a like-for-like figure.

#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use gw_data_plane::limiter::{KeySpec, LimitKey, Mode, PolicyDef, PolicyLimiter, RateSpec};

/// Tracked-key counts of the multi-key cases.
const SIZES: [u32; 2] = [100_000, 1_000_000];

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

/// Visits `0..n` in a scattered order (an odd stride is a permutation of any power-of-two
/// range, and of most others), so consecutive checks do not share cache lines by accident.
fn scattered(i: u64, n: u32) -> u32 {
    (i.wrapping_mul(2_654_435_761) % u64::from(n)) as u32
}

fn gw_def() -> PolicyDef {
    PolicyDef {
        name: "bench".into(),
        key: KeySpec::ClientIp,
        // Never rejects: a billion tokens, refilled a billion per second.
        rate: RateSpec {
            limit: 1_000_000_000,
            period: Duration::from_secs(1),
            burst: 1_000_000_000,
        },
        mode: Mode::Enforce,
    }
}

fn gw_limiter(max_keys: usize) -> PolicyLimiter {
    PolicyLimiter::new(&gw_def(), max_keys)
}

fn governor_limiter() -> DefaultKeyedRateLimiter<IpAddr> {
    RateLimiter::keyed(Quota::per_second(NonZeroU32::MAX).allow_burst(NonZeroU32::MAX))
}

fn filled_gw(n: u32, now: Instant) -> PolicyLimiter {
    let l = gw_limiter(n as usize);
    for k in 0..n {
        l.check(LimitKey::Ip(ip(k)), now);
    }
    l
}

fn filled_governor(n: u32) -> DefaultKeyedRateLimiter<IpAddr> {
    let l = governor_limiter();
    for k in 0..n {
        let _ = l.check_key(&ip(k));
    }
    l
}

fn single_thread(c: &mut Criterion) {
    let now = Instant::now();
    let mut g = c.benchmark_group("decision/1-thread");
    g.throughput(Throughput::Elements(1));

    let l = gw_limiter(1);
    let hot = LimitKey::Ip(ip(7));
    g.bench_function("gw/hot-key", |b| {
        b.iter(|| black_box(l.check(black_box(hot), now)))
    });
    g.bench_function("gw+Instant::now/hot-key", |b| {
        b.iter(|| black_box(l.check(black_box(hot), Instant::now())))
    });
    let gov = governor_limiter();
    g.bench_function("governor/hot-key", |b| {
        b.iter(|| black_box(gov.check_key(black_box(&ip(7))).is_ok()))
    });

    for n in SIZES {
        let l = filled_gw(n, now);
        let mut i = 0u64;
        g.bench_with_input(BenchmarkId::new("gw/keys", n), &n, |b, &n| {
            b.iter(|| {
                i += 1;
                black_box(l.check(LimitKey::Ip(ip(scattered(i, n))), now))
            })
        });
        drop(l);
        let gov = filled_governor(n);
        let mut i = 0u64;
        g.bench_with_input(BenchmarkId::new("governor/keys", n), &n, |b, &n| {
            b.iter(|| {
                i += 1;
                black_box(gov.check_key(&ip(scattered(i, n))).is_ok())
            })
        });
    }
    g.finish();
}

/// Two threads each doing `iters` decisions; the time reported is the wall time, so the
/// figure is nanoseconds per decision per thread under that contention.
fn two_threads<F: Fn(u64, u64) + Sync>(iters: u64, decide: F) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let decide = &decide;
            s.spawn(move || {
                for i in 0..iters {
                    decide(t, i);
                }
            });
        }
    });
    start.elapsed()
}

fn two_thread(c: &mut Criterion) {
    let now = Instant::now();
    let mut g = c.benchmark_group("decision/2-threads");
    g.throughput(Throughput::Elements(1));

    let l = gw_limiter(1);
    g.bench_function("gw/hot-key", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |_, _| {
                black_box(l.check(LimitKey::Ip(ip(7)), now));
            })
        })
    });
    let gov = governor_limiter();
    g.bench_function("governor/hot-key", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |_, _| {
                black_box(gov.check_key(&ip(7)).is_ok());
            })
        })
    });
    for n in SIZES {
        let l = filled_gw(n, now);
        // The two threads walk the keys from different starting points.
        g.bench_with_input(BenchmarkId::new("gw/keys", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                two_threads(iters, |t, i| {
                    let k = scattered(i + t * 7919, n);
                    black_box(l.check(LimitKey::Ip(ip(k)), now));
                })
            })
        });
        drop(l);
        let gov = filled_governor(n);
        g.bench_with_input(BenchmarkId::new("governor/keys", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                two_threads(iters, |t, i| {
                    let k = scattered(i + t * 7919, n);
                    black_box(gov.check_key(&ip(k)).is_ok());
                })
            })
        });
    }
    g.finish();
}

fn sweep(c: &mut Criterion) {
    let n = 100_000;
    let mut g = c.benchmark_group("sweep/100k-keys");
    g.sample_size(10);
    g.throughput(Throughput::Elements(u64::from(n)));
    let now = Instant::now();
    // Nothing to evict: every bucket is one token short and refills slowly.
    let slow = PolicyDef {
        name: "slow".into(),
        key: KeySpec::ClientIp,
        rate: RateSpec {
            limit: 1,
            period: Duration::from_secs(3600),
            burst: 2,
        },
        mode: Mode::Enforce,
    };
    let l = PolicyLimiter::new(&slow, n as usize);
    for k in 0..n {
        l.check(LimitKey::Ip(ip(k)), now);
    }
    g.bench_function("gw/keep-all", |b| b.iter(|| assert_eq!(l.sweep(now), 0)));
    g.bench_function("gw/evict-all", |b| {
        b.iter_batched(
            || filled_gw(n, now),
            // One second later every bucket has refilled.
            |l| assert_eq!(l.sweep(now + Duration::from_secs(1)), n as usize),
            BatchSize::PerIteration,
        )
    });
    let gov = RateLimiter::keyed(
        Quota::with_period(Duration::from_secs(3600))
            .unwrap()
            .allow_burst(NonZeroU32::new(2).unwrap()),
    );
    for k in 0..n {
        let _ = gov.check_key(&ip(k));
    }
    g.bench_function("governor/keep-all", |b| {
        b.iter(|| {
            gov.retain_recent();
            assert_eq!(gov.len(), n as usize);
        })
    });
    g.bench_function("governor/evict-all", |b| {
        b.iter_batched(
            || filled_governor(n),
            // Its rate refills a key within nanoseconds, so every key is evictable.
            |gov| {
                gov.retain_recent();
                assert_eq!(gov.len(), 0);
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// Resident-set size of this process, from /proc (Linux).
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// In a child process: fill one limiter with `n` keys and print its bytes per key.
fn measure_memory_child(which: &str, n: u32) {
    let before = rss_bytes().unwrap_or(0);
    let now = Instant::now();
    let keep: Box<dyn std::any::Any> = match which {
        "gw" => Box::new(filled_gw(n, now)),
        _ => Box::new(filled_governor(n)),
    };
    let after = rss_bytes().unwrap_or(0);
    black_box(&keep);
    println!("{}", after.saturating_sub(before) as f64 / f64::from(n));
}

fn memory_report() {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    println!("bytes per tracked key (resident-set growth while filling, own process each):");
    for n in [100_000u32, 1_000_000] {
        for which in ["gw", "governor"] {
            let out = Command::new(&exe)
                .args(["--memory-child", which, &n.to_string()])
                .output();
            match out {
                Ok(out) if out.status.success() => println!(
                    "  {which:>8} {n:>9} keys: {} bytes/key",
                    String::from_utf8_lossy(&out.stdout).trim()
                ),
                _ => println!("  {which:>8} {n:>9} keys: measurement failed"),
            }
        }
    }
}

/// Nanoseconds per call of `f`, from the fastest of `runs` runs of `per_run` calls. On a
/// shared, loaded machine the mean mostly measures the scheduler; the fastest run is the cost
/// when the thread was not preempted.
fn fastest_run(runs: u32, per_run: u64, mut f: impl FnMut(u64)) -> f64 {
    let mut best = Duration::MAX;
    let mut i = 0u64;
    for _ in 0..runs {
        let start = Instant::now();
        for _ in 0..per_run {
            f(i);
            i += 1;
        }
        best = best.min(start.elapsed());
    }
    best.as_nanos() as f64 / per_run as f64
}

fn fastest_run_report(sizes: &[u32]) {
    println!("ns per decision, fastest of 300 runs of 20,000 decisions (one thread):");
    let now = Instant::now();
    let (runs, per_run) = (300, 20_000);
    let l = gw_limiter(1);
    let gw = fastest_run(runs, per_run, |_| {
        black_box(l.check(black_box(LimitKey::Ip(ip(7))), now));
    });
    let gw_clock = fastest_run(runs, per_run, |_| {
        black_box(l.check(black_box(LimitKey::Ip(ip(7))), Instant::now()));
    });
    let gov = governor_limiter();
    let governor = fastest_run(runs, per_run, |_| {
        black_box(gov.check_key(black_box(&ip(7))).is_ok());
    });
    println!("  hot key: gw {gw:.1}, gw+Instant::now {gw_clock:.1}, governor {governor:.1}");
    for &n in sizes {
        let l = filled_gw(n, now);
        let gw = fastest_run(runs, per_run, |i| {
            black_box(l.check(LimitKey::Ip(ip(scattered(i, n))), now));
        });
        drop(l);
        let gov = filled_governor(n);
        let governor = fastest_run(runs, per_run, |i| {
            black_box(gov.check_key(&ip(scattered(i, n))).is_ok());
        });
        println!("  {n} keys: gw {gw:.1}, governor {governor:.1}");
    }
}

/// `--profile CASE N`: only `N` decisions of one case, for `valgrind --tool=callgrind`, whose
/// instruction counts are not disturbed by other load on the machine. Run it with two values
/// of `N`: the difference of the totals over the difference of `N` is the cost of a decision.
fn profile(case: &str, n: u64) {
    let now = Instant::now();
    match case {
        "gw-hot" => {
            let l = gw_limiter(1);
            for _ in 0..n {
                black_box(l.check(black_box(LimitKey::Ip(ip(7))), now));
            }
        }
        "gw-hot-now" => {
            let l = gw_limiter(1);
            for _ in 0..n {
                black_box(l.check(black_box(LimitKey::Ip(ip(7))), Instant::now()));
            }
        }
        "governor-hot" => {
            let gov = governor_limiter();
            for _ in 0..n {
                black_box(gov.check_key(black_box(&ip(7))).is_ok());
            }
        }
        "gw-100k" => {
            let keys = 100_000;
            let l = filled_gw(keys, now);
            for i in 0..n {
                black_box(l.check(LimitKey::Ip(ip(scattered(i, keys))), now));
            }
        }
        "gw-header" => {
            let l = PolicyLimiter::new(
                &PolicyDef {
                    key: KeySpec::Header(http::HeaderName::from_static("x-api-key")),
                    ..gw_def()
                },
                1,
            );
            for _ in 0..n {
                black_box(l.check(black_box(LimitKey::Header(Some(b"client-0123456789"))), now));
            }
        }
        _ => eprintln!("unknown case {case}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, which, n] = args.as_slice() {
        if flag == "--memory-child" {
            measure_memory_child(which, n.parse().unwrap());
            return;
        }
        if flag == "--profile" {
            profile(which, n.parse().unwrap());
            return;
        }
    }
    // `--fastest [N]`: only the fastest-run figures (hot key, and N keys if given).
    if args.get(1).is_some_and(|a| a == "--fastest") {
        let sizes: Vec<u32> = args
            .get(2)
            .map(|n| n.parse().unwrap())
            .into_iter()
            .collect();
        fastest_run_report(&sizes);
        return;
    }
    // `cargo test --benches` runs this binary in test mode: exercise each case once, quickly.
    let quick = args.iter().any(|a| a == "--test");
    if !quick {
        memory_report();
        fastest_run_report(&SIZES);
    }
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    single_thread(&mut c);
    two_thread(&mut c);
    sweep(&mut c);
    c.final_summary();
}
