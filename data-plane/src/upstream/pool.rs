//! Idle keep-alive connections to backends, kept per endpoint and per worker thread.
//!
//! This replaces hyper-util's legacy pool, which cost about a fifth of a proxied request's
//! instructions (bench/RESULTS.md): a lock on one map shared by every thread, keyed by hashing
//! the URI's scheme and authority, a spawned task per request to wait for the connection to be
//! ready again, and an `HttpInfo` extension per response. Here each [`Endpoint`]'s
//! `Arc<Idle>` holds one small stack of idle connections per worker slot
//! ([`slot_count`]; a thread's slot is fixed the first time it uses a pool). A request takes
//! the most recently used connection of its own thread's slot (LIFO: the warmest socket, and
//! the older ones age out), so the lock it takes is its own slot's, uncontended but for the
//! once-per-period sweep. A connection is checked back in where its response body ended,
//! which under a work-stealing runtime may be another thread's slot; that is harmless.
//!
//! What is kept, and for how long:
//! - only connections whose last exchange ended cleanly with keep-alive (the request path
//!   decides: no error, no `Connection: close`, no upgrade);
//! - at most [`Settings::max_idle`] per endpoint *per worker slot* (as nginx's `keepalive`
//!   is per worker process): a check-in beyond it closes the slot's oldest;
//! - none older than [`Settings::idle_timeout`]: a sweeper task, one per pool, closes expired
//!   and already-closed connections every [`Pool::period`], with no traffic too (no timer per
//!   request: a check-in stores the sweeper's tick count, one atomic load);
//! - none while a connect waits for a permit of the endpoint's or the total connection cap
//!   (`connect`): the finished connection closes, so the waiting request gets its permit.
//!   At a cap with nobody waiting, connections are kept (a cap of 1 reuses its one); and a
//!   request that finds its own slot empty at the endpoint's cap takes a ready connection
//!   from another slot before it waits;
//! - none to a removed endpoint: when the last `Arc<Endpoint>` goes (a config version without
//!   it, once its in-flight requests end), its `Idle` and every connection in it are dropped,
//!   and dropping a connection's `SendRequest` ends its hyper connection task, which closes
//!   the socket.
//!
//! A checkout skips a connection that is not ready yet (its connection task has not seen the
//! end of the last exchange: under a work-stealing runtime the body's end can reach the
//! request before the connection task has gone idle), so no request ever waits behind a busy
//! connection. Connections carry the tag of the client that opened them (one per connect
//! timeout and TLS settings): after a service's TLS settings change, its endpoints' older
//! connections are not reused.
//!
//! [`Endpoint`]: crate::upstream::balancer::Endpoint

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;

use crate::upstream::body::UpstreamBody;
use crate::upstream::connect::Room;

/// How long an idle connection is kept by default. Below the 60 s idle timeout common in
/// backends (nginx's keepalive_timeout is 75 s, Node's 5 s aside), so we rarely reuse a
/// connection the backend is about to close; the stale-connection retry covers the rest.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// Idle connections kept per endpoint and worker thread by default: enough to absorb a burst
/// of a few hundred concurrent requests without reconnecting, far below the per-endpoint
/// connection cap (`connect::DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT`).
pub const DEFAULT_MAX_IDLE: usize = 256;

/// The sweep runs this often at most: expiry is late by up to one period, so a tenth of the
/// idle timeout, and at least every second (the 50 s default is then kept to within 2 %).
const MAX_PERIOD: Duration = Duration::from_secs(1);

/// ... and this seldom at least, so a tiny idle timeout cannot make the sweeper spin.
const MIN_PERIOD: Duration = Duration::from_millis(10);

/// Worker slots per endpoint, at most: past this many threads, threads share slots.
const MAX_SLOTS: usize = 64;

/// A connection's request side.
pub type Sender = SendRequest<UpstreamBody>;

/// What the pool keeps, from the data plane's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// An idle connection is closed after this long unused.
    pub idle_timeout: Duration,
    /// Idle connections kept per endpoint and worker slot; 0: none (no keep-alive reuse).
    pub max_idle: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_idle: DEFAULT_MAX_IDLE,
        }
    }
}

/// How many worker slots each endpoint has: one per CPU (the runtime's default worker count),
/// at most [`MAX_SLOTS`].
pub fn slot_count() -> usize {
    static SLOTS: OnceLock<usize> = OnceLock::new();
    *SLOTS.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, MAX_SLOTS)
    })
}

/// This thread's slot, assigned round robin the first time it uses a pool.
fn slot_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SLOT.with(|slot| {
        let mut i = slot.get();
        if i == usize::MAX {
            i = NEXT.fetch_add(1, Ordering::Relaxed) % slot_count();
            slot.set(i);
        }
        i
    })
}

/// One idle connection.
struct Entry {
    sender: Sender,
    /// The pool's tick when it was checked in.
    since: u64,
    /// The client that opened it (see the module doc).
    tag: u32,
}

/// One worker slot's idle connections, oldest first. Padded to its own cache lines so two
/// threads' slots never share one.
#[repr(align(128))]
#[derive(Default)]
struct Slot(Mutex<VecDeque<Entry>>);

impl Slot {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Entry>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One endpoint's idle connections (held by the `Endpoint`, so they go with it).
pub struct Idle {
    slots: Box<[Slot]>,
    /// The pool this endpoint's connections were opened by, set on the first connect.
    owner: OnceLock<Owner>,
}

/// What a check-in consults: the pool's settings and clock, and the endpoint's caps.
struct Owner {
    pool: Arc<Pool>,
    room: Room,
}

impl std::fmt::Debug for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idle")
            .field("connections", &self.len())
            .finish()
    }
}

impl Default for Idle {
    fn default() -> Self {
        Self {
            slots: (0..slot_count()).map(|_| Slot::default()).collect(),
            owner: OnceLock::new(),
        }
    }
}

impl Idle {
    /// Idle connections held now, all slots together (for tests and debugging).
    pub fn len(&self) -> usize {
        self.slots.iter().map(|s| s.lock().len()).sum()
    }

    /// Whether no idle connection is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most recently used idle connection opened with `tag` that is ready for a request,
    /// from this thread's slot. Closed ones met on the way are dropped; ones not ready yet
    /// are left for later.
    pub fn checkout(&self, tag: u32) -> Option<Sender> {
        take_ready(&mut self.slots[slot_index()].lock(), tag)
    }

    /// Like [`Idle::checkout`], from any slot, but only while the endpoint's or the total
    /// connection cap is reached: a request that would otherwise wait for a permit takes a
    /// connection idle in another thread's slot (which holds a permit) instead; if none is
    /// ready, the oldest idle one is closed so that its permit frees up. Off the common
    /// path: only a request about to open a connection calls it.
    pub fn checkout_at_cap(&self, tag: u32) -> Option<Sender> {
        if !self.owner.get().is_some_and(|o| o.room.is_full()) {
            return None;
        }
        if let Some(ready) = self
            .slots
            .iter()
            .find_map(|slot| take_ready(&mut slot.lock(), tag))
        {
            return Some(ready);
        }
        // Only connections not ready yet are idle (another worker has not polled them since
        // their last answer); each holds a permit the request is about to wait for, and
        // nothing else would free it before the connect timeout. Close the oldest.
        let oldest = self.slots.iter().find_map(|slot| slot.lock().pop_front());
        drop(oldest);
        None
    }

    /// Keeps `sender` (opened with `tag`) for reuse, in this thread's slot; beyond the cap,
    /// the slot's oldest is closed. A connection of an endpoint never connected through a
    /// pool, one already closed, or one finishing while a connect waits at a connection cap
    /// is dropped (closed).
    pub fn checkin(&self, sender: Sender, tag: u32) {
        let Some(Owner { pool, room }) = self.owner.get() else {
            return;
        };
        if pool.settings.max_idle == 0 || sender.is_closed() || room.is_wanted() {
            return;
        }
        let since = pool.ticks.load(Ordering::Relaxed);
        let evicted = {
            let mut stack = self.slots[slot_index()].lock();
            let evicted = if stack.len() >= pool.settings.max_idle {
                stack.pop_front()
            } else {
                None
            };
            stack.push_back(Entry { sender, since, tag });
            evicted
        };
        // Closed outside the lock.
        drop(evicted);
    }

    /// Drops the connections checked in at or before tick `expired`, and closed ones.
    fn sweep(&self, expired: Option<u64>) {
        for slot in &self.slots {
            let gone: Vec<Entry> = {
                let mut stack = slot.lock();
                if stack.is_empty() {
                    continue;
                }
                // Oldest first, so the expired ones are a prefix.
                let old = expired.map_or(0, |t| stack.iter().take_while(|e| e.since <= t).count());
                let mut gone: Vec<Entry> = stack.drain(..old).collect();
                let mut i = 0;
                while i < stack.len() {
                    if stack[i].sender.is_closed() {
                        gone.extend(stack.remove(i));
                    } else {
                        i += 1;
                    }
                }
                gone
            };
            drop(gone);
        }
    }
}

/// The most recently used connection of `stack` opened with `tag` and ready for a request.
/// Closed ones met on the way are dropped; ones not ready yet are left for later.
fn take_ready(stack: &mut VecDeque<Entry>, tag: u32) -> Option<Sender> {
    let mut i = stack.len();
    while i > 0 {
        i -= 1;
        let e = &stack[i];
        if e.sender.is_closed() || e.tag != tag {
            // Dead, or opened under other TLS settings: never to be used again.
            stack.remove(i);
        } else if e.sender.is_ready() {
            return stack.remove(i).map(|e| e.sender);
        }
    }
    None
}

/// The idle-connection settings and the sweeper's state for one data plane's endpoints.
pub struct Pool {
    settings: Settings,
    /// The sweeper's period.
    period: Duration,
    /// Whole periods an entry must have been idle to be dropped.
    idle_ticks: u64,
    /// Sweeps so far: the pool's clock.
    ticks: AtomicU64,
    /// Every endpoint that ever connected through this pool (pruned as they go).
    registry: Mutex<Vec<Weak<Idle>>>,
    sweeping: AtomicBool,
    /// The runtime the pool was made on (the data plane's background runtime), where the
    /// sweeper runs: not the worker runtime that happens to connect first, whose end (a
    /// worker thread that dies) would take idle expiry with it.
    home: Option<tokio::runtime::Handle>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("settings", &self.settings)
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool keeping what `settings` allow.
    pub fn new(settings: Settings) -> Arc<Self> {
        let period = (settings.idle_timeout / 10).clamp(MIN_PERIOD, MAX_PERIOD);
        let idle_ticks = settings
            .idle_timeout
            .as_nanos()
            .div_ceil(period.as_nanos())
            .max(1);
        Arc::new(Self {
            settings,
            period,
            idle_ticks: u64::try_from(idle_ticks).unwrap_or(u64::MAX),
            ticks: AtomicU64::new(0),
            registry: Mutex::default(),
            sweeping: AtomicBool::new(false),
            home: tokio::runtime::Handle::try_current().ok(),
        })
    }

    /// The settings it keeps connections by.
    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// How often the sweeper runs.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Makes `idle` this pool's (once; called before its first connection is opened), with
    /// `room`, the caps its connections count against, and starts the sweeper if it is not
    /// running. Off the hot path: only a connect calls it.
    pub fn register(self: &Arc<Self>, idle: &Arc<Idle>, room: impl FnOnce() -> Room) {
        if self.adopt(idle, room)
            && let Some(runtime) = self
                .home
                .clone()
                .or_else(|| tokio::runtime::Handle::try_current().ok())
            && !self.sweeping.swap(true, Ordering::AcqRel)
        {
            runtime.spawn(sweeper(Arc::downgrade(self)));
        }
    }

    /// [`Pool::register`] without the sweeper; whether `idle` was new to it.
    fn adopt(self: &Arc<Self>, idle: &Arc<Idle>, room: impl FnOnce() -> Room) -> bool {
        if idle.owner.get().is_some() {
            return false;
        }
        let owner = Owner {
            pool: self.clone(),
            room: room(),
        };
        if idle.owner.set(owner).is_err() {
            return false;
        }
        self.registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(idle));
        true
    }

    /// One sweep: advances the clock, then drops the connections idle for at least the idle
    /// timeout, and closed ones.
    pub fn tick(&self) {
        let now = self.ticks.fetch_add(1, Ordering::Relaxed) + 1;
        // An entry stamped `t` was checked in after sweep `t` began, so at sweep `now` it has
        // been idle for more than `now - t - 1` periods: expired once that reaches the timeout.
        let expired = now.checked_sub(self.idle_ticks.saturating_add(1));
        let live: Vec<Arc<Idle>> = {
            let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
            registry.retain(|w| w.strong_count() > 0);
            registry.iter().filter_map(Weak::upgrade).collect()
        };
        for idle in &live {
            idle.sweep(expired);
        }
    }
}

/// Sweeps `pool` every period until it is gone.
async fn sweeper(pool: Weak<Pool>) {
    let Some(period) = pool.upgrade().map(|p| p.period) else {
        return;
    };
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        interval.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        pool.tick();
    }
}

#[cfg(test)]
mod tests;
