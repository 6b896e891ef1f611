//! Reconnect delays: exponential backoff with "full jitter" (each delay is uniform in
//! `[0, min(cap, base * 2^attempt)]`), so a fleet that lost the control plane at the same
//! moment does not reconnect in lock-step when it comes back.

use std::time::Duration;

use rand::Rng;

/// First ceiling: short, so a control-plane restart is noticed almost at once.
pub(crate) const DEFAULT_BASE: Duration = Duration::from_millis(100);
/// Largest ceiling: "a few seconds", so a node never waits long after the control plane is
/// back, while a thousand nodes still spread their attempts over the window.
pub(crate) const DEFAULT_CAP: Duration = Duration::from_secs(3);

/// Delay generator for one reconnect loop.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    /// Failures since the last reset.
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(DEFAULT_BASE, DEFAULT_CAP)
    }
}

impl Backoff {
    /// A backoff whose ceiling starts at `base` and doubles up to `cap`.
    pub(crate) fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            attempt: 0,
        }
    }

    /// The ceiling of the next delay: `min(cap, base * 2^attempt)`.
    pub(crate) fn ceiling(&self) -> Duration {
        // 2^31 * anything overflows long before; saturate instead of wrapping.
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before the next attempt (random up to the ceiling), then raises the ceiling.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }

    /// Back to the first ceiling, after a connection that worked.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_from_base_up_to_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(3));
        let expected_ms = [100, 200, 400, 800, 1600, 3000, 3000, 3000];
        for (i, want) in expected_ms.into_iter().enumerate() {
            assert_eq!(b.ceiling(), Duration::from_millis(want), "attempt {i}");
            let d = b.next_delay();
            assert!(d <= Duration::from_millis(want), "attempt {i}: {d:?}");
        }
    }

    #[test]
    fn reset_returns_to_base() {
        let mut b = Backoff::default();
        for _ in 0..10 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), DEFAULT_CAP);
        b.reset();
        assert_eq!(b.ceiling(), DEFAULT_BASE);
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut b = Backoff::default();
        for _ in 0..1000 {
            assert!(b.next_delay() <= DEFAULT_CAP);
        }
        assert_eq!(b.ceiling(), DEFAULT_CAP);
    }

    #[test]
    fn delays_are_jittered_over_the_whole_range() {
        // Full jitter: over many draws at the cap we see both short and long delays. With
        // 2,000 uniform draws the chance of missing either quarter is about 2 * 0.75^2000.
        let mut b = Backoff::new(Duration::from_millis(1000), Duration::from_millis(1000));
        let draws: Vec<Duration> = (0..2000).map(|_| b.next_delay()).collect();
        assert!(draws.iter().any(|d| *d < Duration::from_millis(250)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(750)));
        assert!(draws.iter().all(|d| *d <= Duration::from_millis(1000)));
    }

    #[test]
    fn cap_below_base_is_raised_to_base() {
        let b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(b.ceiling(), Duration::from_secs(2));
    }
}
