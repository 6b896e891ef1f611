//! A fleet of data planes sharing one key in a fake Redis, on a fake clock: the bound on the
//! fleet-wide error of leases and the over-limit cache, and their Redis round trips.
//!
//! Each node runs [`KeyState`] exactly as `GlobalPolicy::check` does; Redis is
//! [`FakeRedis`], the arithmetic of `decide.lua` in integers. A round trip takes `rtt`
//! microseconds (jittered ±50 %): the script runs half-way, the answer is applied at the end,
//! and requests arriving meanwhile are decided concurrently, as on a real node.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::*;

/// `decide.lua` in integers (the script's doubles are exact in this range).
struct FakeRedis {
    per_us: u64,
    token: u64,
    cap: u64,
    level: u64,
    last: u64,
}

impl FakeRedis {
    fn new(rate: &RateSpec) -> Self {
        let token = rate.period.as_micros() as u64;
        Self {
            per_us: rate.limit,
            token,
            cap: rate.burst * token,
            level: rate.burst * token,
            last: 0,
        }
    }

    fn decide(&mut self, now: u64, want: u64) -> Reply {
        if now > self.last {
            self.level = (self.level + (now - self.last) * self.per_us).min(self.cap);
            self.last = now;
        }
        let granted = (self.level / self.token).min(want.max(1));
        self.level -= granted * self.token;
        let until = |units: u64| units.saturating_sub(self.level).div_ceil(self.per_us);
        Reply {
            granted,
            remaining: self.level / self.token,
            until_one_us: until(self.token),
            until_want_us: until(want.max(1) * self.token),
            until_full_us: until(self.cap),
        }
    }
}

/// A deterministic generator for the jitter.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// What one run saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    pub offered: u64,
    pub admitted: u64,
    pub round_trips: u64,
    /// burst + limit x seconds: what one exact bucket admits at this load.
    pub ideal: u64,
}

impl Outcome {
    pub fn error(&self) -> f64 {
        (self.admitted as f64 - self.ideal as f64) / self.ideal as f64
    }

    pub fn trips_per_request(&self) -> f64 {
        self.round_trips as f64 / self.offered as f64
    }
}

enum Event {
    Arrive(usize),
    /// The script runs for node's request wanting this many tokens; the answer is applied
    /// at the given time.
    Script(usize, u64, u64),
    Answer(usize, u64, Reply),
}

/// One node: its state for the key and its requests waiting for the round trip in flight.
struct Node {
    state: KeyState,
    waiting: u64,
}

/// `rate` offered at `percent` % of its limit for `secs`, request `k` going to the node
/// `weights` picks for `k % 10`, each round trip `rtt_us` (±50 %).
pub fn run(
    rate: &RateSpec,
    percent: u64,
    secs: u64,
    weights: &[usize; 10],
    rtt_us: u64,
) -> Outcome {
    let period = rate.period.as_micros() as u64;
    let total = rate.limit * percent * secs * 10_000 / period;
    run_requests(rate, total, secs * 1_000_000 / total, weights, rtt_us)
}

/// `total` requests `gap_us` apart, spread as [`run`] does.
pub fn run_requests(
    rate: &RateSpec,
    total: u64,
    gap_us: u64,
    weights: &[usize; 10],
    rtt_us: u64,
) -> Outcome {
    let live = weights.iter().max().map_or(1, |n| n + 1);
    let sizing = Sizing::new(rate);
    let mut redis = FakeRedis::new(rate);
    let mut nodes: Vec<Node> = (0..live)
        .map(|_| Node {
            state: KeyState::new(0),
            waiting: 0,
        })
        .collect();
    let mut rng = Lcg(7);
    let mut queue = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |queue: &mut BinaryHeap<_>, at: u64, e: Event| {
        seq += 1;
        queue.push(Reverse((at, seq, EventBox(e))));
    };
    for k in 0..total {
        // Start one second in: the policy clock's epoch slack.
        let at = 1_000_000 + k * gap_us;
        push(&mut queue, at, Event::Arrive(weights[(k % 10) as usize]));
    }
    let mut out = Outcome {
        offered: total,
        // The bucket starts full; it refills from the first request to the last.
        ideal: (rate.burst
            + rate.limit * (total.saturating_sub(1) * gap_us) / rate.period.as_micros() as u64)
            .min(total),
        ..Outcome::default()
    };
    while let Some(Reverse((now, _, EventBox(e)))) = queue.pop() {
        // Requests to decide locally now: (node, how many).
        let (n, pending) = match e {
            Event::Arrive(n) => {
                nodes[n].state.arrive(now);
                (n, 1)
            }
            Event::Script(n, want, back) => {
                // Redis's clock is the same fake clock.
                let reply = redis.decide(now, want);
                push(&mut queue, back, Event::Answer(n, want, reply));
                continue;
            }
            Event::Answer(n, want, reply) => {
                let hold = hold_us(&sizing, &reply, want, live as u32);
                let d = nodes[n].state.answer(now, &reply, want, hold);
                out.admitted += u64::from(d.allowed);
                // The waiters wake and try again.
                (n, std::mem::take(&mut nodes[n].waiting))
            }
        };
        for _ in 0..pending {
            match nodes[n].state.local(now, sizing.max_lease) {
                Local::Decided(d) => out.admitted += u64::from(d.allowed),
                Local::Wait => nodes[n].waiting += 1,
                Local::Ask(want) => {
                    out.round_trips += 1;
                    let rtt = rtt_us / 2 + rng.next() % (rtt_us + 1);
                    push(&mut queue, now + rtt / 2, Event::Script(n, want, now + rtt));
                }
            }
        }
    }
    out
}

/// Orders events by time and sequence only.
struct EventBox(Event);

impl PartialEq for EventBox {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for EventBox {}
impl PartialOrd for EventBox {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for EventBox {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

/// 70/10/10/10 over four nodes, as in the bench.
pub const UNEVEN: [usize; 10] = [0, 0, 0, 0, 0, 0, 0, 1, 2, 3];

fn rate(limit: u64, secs: u64, burst: u64) -> RateSpec {
    RateSpec {
        limit,
        period: std::time::Duration::from_secs(secs),
        burst,
    }
}

fn check(what: &str, o: &Outcome, max_error: f64, max_trips: f64) {
    assert!(
        o.error().abs() <= max_error && o.trips_per_request() <= max_trips,
        "{what}: {o:?}: error {:+.2} %, {:.3} round trips per request",
        o.error() * 100.0,
        o.trips_per_request()
    );
}

/// The hot key of the bench: 1,000 req/s, offered at 2,000 req/s 70/10/10/10 over four
/// nodes for 30 s. The old state machine admitted 8.7 % (1 ms round trips) and 11.7 % (3 ms)
/// too few, at 0.52 and 0.57 round trips per request.
#[test]
fn a_hot_key_at_twice_its_limit_is_within_half_a_percent_at_under_a_tenth_of_a_trip() {
    for rtt in [200, 1_000, 3_000] {
        let o = run(&rate(1_000, 1, 1_000), 200, 30, &UNEVEN, rtt);
        check(&format!("rtt {rtt} us"), &o, 0.005, 0.1);
    }
}

/// The 100 keys of the bench are independent; each is one 10 req/s key offered 20 req/s.
/// Small limits never lease, so each token is handed out by Redis alone.
#[test]
fn a_small_key_at_twice_its_limit_is_within_one_percent() {
    for rtt in [200, 1_000, 3_000] {
        let o = run(&rate(10, 1, 10), 200, 30, &UNEVEN, rtt);
        check(&format!("rtt {rtt} us"), &o, 0.01, 1.0);
    }
}

/// Under its limit, a key is never rejected, however the traffic is spread and however small
/// its burst, and a hot key still costs few round trips.
#[test]
fn under_the_limit_everything_is_admitted() {
    const EVEN: [usize; 10] = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1];
    // A burst of 16 bounds leases to 2 tokens: half a round trip per request.
    for (burst, percent, trips) in [(1_000, 100, 0.1), (100, 90, 0.1), (16, 90, 0.51)] {
        for weights in [UNEVEN, EVEN] {
            for rtt in [200, 3_000] {
                let mut o = run(&rate(1_000, 1, burst), percent, 10, &weights, rtt);
                o.ideal = o.offered;
                check(
                    &format!("burst {burst}, {percent} %, rtt {rtt} us"),
                    &o,
                    0.0,
                    trips,
                );
            }
        }
    }
}

/// 5 per minute, one client spreading 40 requests over 1, 2 and 4 nodes in 4 s (10 req/s):
/// exactly 5 admitted; and a request every 2.9 s for a minute gets exactly the burst plus
/// what came back.
#[test]
fn small_limits_are_exact_across_nodes() {
    let five = rate(5, 60, 5);
    for weights in [[0; 10], [0, 1, 0, 1, 0, 1, 0, 1, 0, 1], UNEVEN] {
        let o = run_requests(&five, 40, 100_000, &weights, 1_000);
        assert_eq!(o.admitted, 5, "{weights:?}: {o:?}");
        // Every 2.9 s for a minute: each token is taken by the first request after it.
        let o = run_requests(&five, 21, 2_900_000, &weights, 1_000);
        assert_eq!(o.admitted, o.ideal, "{weights:?}: {o:?}");
    }
}
