//! Retry policy of a handler: how often a failed record is tried again, and how long to wait.

use std::time::Duration;

/// Attempts and backoff for one handler. Set per handler with
/// `#[handler(retries = 5, backoff = "100ms..10s")]`, or for all with `EVENTKIT_RETRIES`,
/// `EVENTKIT_RETRY_BACKOFF_MS` and `EVENTKIT_RETRY_BACKOFF_MAX_MS`.
///
/// ```
/// use std::time::Duration;
/// let p = eventkit::RetryPolicy::new(3, Duration::from_millis(100), Duration::from_secs(1));
/// assert!(p.delay(1) >= Duration::from_millis(50) && p.delay(1) <= Duration::from_millis(100));
/// assert!(p.delay(9) <= Duration::from_secs(1));
/// assert!(p.gives_up_after(4) && !p.gives_up_after(3));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: dead-letter on the first failure).
    pub retries: u32,
    /// Delay before the first retry.
    pub first: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl RetryPolicy {
    /// A policy of `retries` retries with exponential backoff from `first` up to `max`.
    pub const fn new(retries: u32, first: Duration, max: Duration) -> Self {
        RetryPolicy { retries, first, max }
    }

    /// The delay after failed attempt `attempt` (1-based): exponential, capped, with
    /// "equal jitter" (between half and all of it) so that failing consumers spread out.
    pub fn delay(&self, attempt: u32) -> Duration {
        let full = self.first.saturating_mul(1u32 << attempt.saturating_sub(1).min(20)).min(self.max);
        full / 2 + full.mul_f64(fastrand::f64() / 2.0)
    }

    /// Whether `attempts` failed attempts exhaust the policy.
    pub fn gives_up_after(&self, attempts: u32) -> bool {
        attempts > self.retries
    }
}

/// A handler's own settings, overriding the app's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryOverrides {
    /// `retries = N`.
    pub retries: Option<u32>,
    /// `backoff = "FIRST..MAX"`, in milliseconds.
    pub backoff_ms: Option<(u64, u64)>,
}

impl RetryOverrides {
    /// The effective policy given the app's default.
    pub fn apply(&self, default: RetryPolicy) -> RetryPolicy {
        let (first, max) = match self.backoff_ms {
            Some((first, max)) => (Duration::from_millis(first), Duration::from_millis(max)),
            None => (default.first, default.max),
        };
        RetryPolicy { retries: self.retries.unwrap_or(default.retries), first, max }
    }
}
