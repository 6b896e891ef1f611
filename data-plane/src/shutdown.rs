//! The process-wide stop signal: a `watch` flag that `serve` sets once, which every task
//! (accept loops, health checks, reports, config sync) turns into a future with [`signalled`].

use tokio::sync::watch;

/// A resolved shutdown signal, as a future.
pub async fn signalled(mut rx: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = rx.wait_for(|stop| *stop).await;
}
