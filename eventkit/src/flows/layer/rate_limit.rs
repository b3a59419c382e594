//! [`RateLimit`]: a layer that paces handling.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::{BoxFuture, HandleLayer, Handled, Next};
use crate::flows::context::Context;

/// Lets at most `rate` handlings start per second, with bursts of up to `burst` (a token
/// bucket). One instance is one budget: given to a group with
/// [`crate::AppBuilder::group_layer`], it paces the whole group (every handler of it); given to
/// one handler (`#[handler(layer = ..)]`), that handler. A handling waits for its turn
/// (asynchronously: the group's other work goes on, and its records stay in order per key).
///
/// ```
/// use eventkit::layer::RateLimit;
/// // The partner API takes 50 calls a second.
/// # let _ =
/// eventkit::App::builder().group_layer("partner-sync", RateLimit::per_second(50));
/// ```
#[derive(Debug, Clone)]
pub struct RateLimit {
    bucket: Arc<Mutex<Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// `rate` handlings per second, in bursts of up to one second's worth.
    pub fn per_second(rate: u32) -> Self {
        Self::with_burst(rate, rate.max(1))
    }

    /// `rate` handlings per second, in bursts of up to `burst`.
    pub fn with_burst(rate: u32, burst: u32) -> Self {
        let (rate, burst) = (f64::from(rate.max(1)), f64::from(burst.max(1)));
        RateLimit { bucket: Arc::new(Mutex::new(Bucket { rate, burst, tokens: burst, at: Instant::now() })) }
    }

    /// Takes a token now, or says how long until one is free (and reserves it).
    fn take(&self) -> Option<Duration> {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * b.rate).min(b.burst);
        b.at = now;
        b.tokens -= 1.0;
        (b.tokens < 0.0).then(|| Duration::from_secs_f64(-b.tokens / b.rate))
    }
}

impl HandleLayer for RateLimit {
    fn wraps(&self, _ctx: &Context) -> bool {
        true
    }

    fn around(&self, ctx: Arc<Context>, next: Next) -> BoxFuture<Handled> {
        let wait = self.take();
        Box::pin(async move {
            if let Some(wait) = wait {
                tokio::time::sleep(wait).await;
            }
            next.run(ctx).await
        })
    }
}
