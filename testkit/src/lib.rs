//! Test support shared by the gateway's crates.
//!
//! `backend`: plain HTTP backends that say who answered; `tls`: a test CA (rcgen) issuing
//! server and client certificates; `log`: what a server under test logged; `promtool`:
//! Prometheus's own check of a `/metrics` page.
//!
//! Nothing here depends on the control plane or the data plane, so any crate's tests can use
//! it without pulling in the others. Everything binds `127.0.0.1:0` and waits by polling with
//! a deadline, never by sleeping a fixed time.

pub mod backend;
pub mod log;
pub mod promtool;
pub mod redis;
pub mod tls;

use std::future::Future;
use std::time::{Duration, Instant};

/// A signal a test sends to a process it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGHUP: reload.
    Hup,
    /// SIGINT: Ctrl-C.
    Int,
    /// SIGTERM: stop.
    Term,
    /// SIGUSR1: reopen log files.
    Usr1,
    /// SIGSTOP: freeze (a hung server).
    Stop,
    /// SIGCONT: run again after `Stop`.
    Cont,
}

/// Sends `signal` to the process `pid` with the kill(2) system call, so tests need no `kill`
/// binary; panics if it cannot be sent.
pub fn send_signal(pid: u32, signal: Signal) {
    use rustix::process::{Pid, Signal as Raw, kill_process};
    let raw = match signal {
        Signal::Hup => Raw::HUP,
        Signal::Int => Raw::INT,
        Signal::Term => Raw::TERM,
        Signal::Usr1 => Raw::USR1,
        Signal::Stop => Raw::STOP,
        Signal::Cont => Raw::CONT,
    };
    let Some(target) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        panic!("{pid} is not a process id");
    };
    if let Err(e) = kill_process(target, raw) {
        panic!("cannot send {signal:?} to process {pid}: {e}");
    }
}

/// How long [`eventually`] waits by default. Generous, because the suite must pass on a loaded
/// 2-core machine; a passing check returns as soon as it holds.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` until it returns `Some`, or panics with `what` after [`DEFAULT_DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(DEFAULT_DEADLINE, what, check).await
}

/// Polls `check` until it returns `Some`, or panics with `what` once `deadline` has passed.
pub async fn eventually_within<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
