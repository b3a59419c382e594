//! Layers: cross-cutting work around handling a record and around publishing an event.
//!
//! The consume and publish flows call "the stack" of layers and name no concern: eventkit's
//! own tracing and metrics, the test harness's observer and the inbox are layers, and so are
//! yours. Add them app-wide ([`crate::AppBuilder::layer`]), per consumer group
//! ([`crate::AppBuilder::group_layer`]) or per handler (`#[handler(layer = expr)]`, an expression
//! giving a `HandleLayer`, evaluated once at startup; repeatable); app-wide layers wrap group layers, which wrap handler layers.
//!
//! A [`HandleLayer`] sees each handler's handling of a record through its [`Context`]
//! (metadata, record, group, handler, app state):
//!
//! - [`HandleLayer::before`] runs first, synchronously: go on, skip the record for this handler
//!   (it settles as skipped: counted in `eventkit_records_skipped_total`, logged at `debug`),
//!   or fail it (the failure goes through the handler's retry and dead letter rules);
//! - [`HandleLayer::around`] wraps the call, for work that waits or must span it (a rate
//!   limit's permit, a span, a database transaction); it may skip or fail too, and runs code
//!   after the handler. Only layers whose [`HandleLayer::wraps`] says so for a record are
//!   called here, so that a record no layer wraps costs no allocation;
//! - [`HandleLayer::after`] sees the handler's result and how long it took;
//! - [`HandleLayer::settled`] sees what became of the record: handled, skipped, to be retried
//!   (when, which attempt), or dead-lettered.
//!
//! A [`PublishLayer`] sees each event published (encoded, before it goes to the producer):
//! it may add headers or fail the publish, and sees the broker's answer.
//!
//! Two layers ship as examples of the two kinds: [`Filter`] (by event type, tenant or header;
//! `before` only) and [`RateLimit`] (a token bucket; `around`, waiting for its turn).
//!
//! The shape is tower's `Layer`/`Service` and axum's `from_fn` (an `around` that gets the
//! request and `next`), which Rust users know; unlike a tower `Service` (`&mut self`,
//! `poll_ready`, a clone and a boxed future per call in a dynamic stack), a layer here is shared
//! (`&self`) and says up front whether it wraps a record, so that the common case, no layer that
//! waits, costs a few virtual calls and no allocation on the consume hot path (measured by
//! `scripts/bench.sh`).
//!
//! ```
//! use std::sync::Arc;
//! use eventkit::layer::{Flow, HandleLayer, Handled, Next};
//! use eventkit::Context;
//!
//! /// Records of tenant "blocked" are skipped; every other record is timed.
//! struct Audit;
//!
//! impl HandleLayer for Audit {
//!     fn before(&self, ctx: &Context) -> Flow {
//!         match ctx.metadata().tenant_id.as_deref() {
//!             Some("blocked") => Flow::skip("tenant blocked"),
//!             _ => Flow::Continue,
//!         }
//!     }
//!     fn wraps(&self, _ctx: &Context) -> bool {
//!         true
//!     }
//!     fn around(&self, ctx: Arc<Context>, next: Next) -> eventkit::layer::BoxFuture<Handled> {
//!         Box::pin(async move {
//!             let started = std::time::Instant::now();
//!             let result = next.run(ctx.clone()).await;
//!             tracing::info!(event = ctx.event_id(), took = ?started.elapsed(), ok = result.is_ok(), "audited");
//!             result
//!         })
//!     }
//! }
//! # let _ = eventkit::App::builder().layer(Audit);
//! ```

mod filter;
pub(crate) mod publish;
mod rate_limit;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

pub use filter::Filter;
pub(crate) use publish::PublishStack;
pub use publish::{Outgoing, PublishLayer, PublishResult, TransactionEnd};
pub use rate_limit::RateLimit;

use crate::flows::context::{Context, RecordInfo};
use crate::core::error::Error;
use crate::core::error::HandlerError;

/// A boxed future that layers return from [`HandleLayer::around`].
pub type BoxFuture<T> = futures::future::BoxFuture<'static, T>;

/// A handler's result, as layers see and return it.
pub type Handled = Result<Outcome, HandlerError>;

/// How a handling that did not fail ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The handler ran and succeeded.
    Done,
    /// A layer skipped the record for this handler (the handler did not run); it settles as
    /// skipped.
    Skipped(Cow<'static, str>),
}

impl Outcome {
    /// A skip, saying why.
    pub fn skipped(reason: impl Into<Cow<'static, str>>) -> Self {
        Outcome::Skipped(reason.into())
    }
}

/// What [`HandleLayer::before`] decides.
#[derive(Debug)]
#[non_exhaustive]
pub enum Flow {
    /// Go on to the next layer and the handler.
    Continue,
    /// Do not run the handler: the record settles as skipped for it, with this reason.
    Skip(Cow<'static, str>),
    /// Fail the record for this handler: the error goes through its retry and dead letter rules.
    Fail(HandlerError),
}

impl Flow {
    /// Skip the record, saying why.
    pub fn skip(reason: impl Into<Cow<'static, str>>) -> Self {
        Flow::Skip(reason.into())
    }

    /// Fail the record with an error (retried, then dead-lettered, as the handler's own
    /// errors are; [`crate::Error::permanent`] goes to the dead letter queue at once).
    pub fn fail(error: impl Into<crate::BoxError>) -> Self {
        let error = error.into();
        match error.downcast::<Error>() {
            Ok(e) if e.is_permanent() => match *e {
                Error::Permanent(inner) => Flow::Fail(HandlerError::Permanent(inner)),
                other => Flow::Fail(HandlerError::Failed(Box::new(other))),
            },
            Ok(e) => Flow::Fail(HandlerError::Failed(e)),
            Err(e) => Flow::Fail(HandlerError::Failed(e)),
        }
    }
}

/// What became of a record, for a handler (or for its group, when no handler could take it:
/// `handler` is then `None`).
#[derive(Debug)]
#[non_exhaustive]
pub enum Disposition<'a> {
    /// The handler handled it.
    Handled,
    /// A layer skipped it, or no handler of the group takes its type.
    Skipped(&'a str),
    /// The attempt failed; it is tried again after `delay`.
    Retrying {
        /// The attempt that failed (1 for the first).
        attempt: u32,
        /// Why.
        error: &'a HandlerError,
        /// When it is tried again.
        delay: Duration,
    },
    /// It was written to the dead letter queue (or, with the queue disabled, given up on).
    DeadLettered {
        /// The dead letter kind (see [`crate::flows::dlq::kinds`]).
        kind: &'a str,
        /// The error.
        error: &'a str,
    },
}

/// Where a record is settled, for [`HandleLayer::settled`].
#[derive(Debug, Clone, Copy)]
pub struct Settling<'a> {
    /// The record.
    pub record: &'a RecordInfo,
    /// Its event id, when it has one.
    pub event_id: Option<&'a str>,
    /// The consumer group (on the wire).
    pub group: &'a str,
    /// The handler, when one took it.
    pub handler: Option<&'static str>,
}

/// A layer around handling records (see the [module docs](self)).
pub trait HandleLayer: Send + Sync + 'static {
    /// Runs before the handler (and before the layers it wraps): go on, skip or fail.
    fn before(&self, _ctx: &Context) -> Flow {
        Flow::Continue
    }

    /// Whether [`HandleLayer::around`] is to wrap this handling (default: no).
    fn wraps(&self, _ctx: &Context) -> bool {
        false
    }

    /// Wraps the handling: call `next.run(ctx)` to go on (or don't, to skip or fail).
    fn around(&self, ctx: Arc<Context>, next: Next) -> BoxFuture<Handled> {
        next.run(ctx)
    }

    /// Runs after the handler (and after the `after` of the layers inside this one) with its
    /// result and duration.
    fn after(&self, _ctx: &Context, _result: &Handled, _took: Duration) {}

    /// What became of the record: handled, skipped, to be retried, or dead-lettered.
    fn settled(&self, _at: &Settling<'_>, _disposition: &Disposition<'_>) {}

    /// A record is done for the whole group (every handler of it settled it).
    fn record_done(&self, _group: &str, _event_id: &str) {}
}

/// The rest of the stack, for [`HandleLayer::around`]: the wrapping layers inside this one,
/// then the handler.
pub struct Next {
    layers: Arc<[Arc<dyn HandleLayer>]>,
    at: usize,
    handler: Arc<dyn Fn(Arc<Context>) -> BoxFuture<Handled> + Send + Sync>,
}

impl Next {
    /// Runs the rest of the stack.
    pub fn run(mut self, ctx: Arc<Context>) -> BoxFuture<Handled> {
        while let Some(layer) = self.layers.get(self.at) {
            self.at += 1;
            if layer.wraps(&ctx) {
                let layer = layer.clone();
                return layer.around(ctx, self);
            }
        }
        (self.handler)(ctx)
    }
}

/// A layer from an async function, like axum's `from_fn`: it wraps every handling.
///
/// ```
/// use eventkit::layer::from_fn;
/// let timed = from_fn(|ctx, next| async move {
///     let started = std::time::Instant::now();
///     let result = next.run(ctx).await;
///     tracing::debug!(took = ?started.elapsed(), "handled");
///     result
/// });
/// # let _ = eventkit::App::builder().layer(timed);
/// ```
pub fn from_fn<F, Fut>(f: F) -> FromFn<F>
where
    F: Fn(Arc<Context>, Next) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Handled> + Send + 'static,
{
    FromFn(f)
}

/// See [`from_fn`].
pub struct FromFn<F>(F);

impl<F, Fut> HandleLayer for FromFn<F>
where
    F: Fn(Arc<Context>, Next) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Handled> + Send + 'static,
{
    fn wraps(&self, _ctx: &Context) -> bool {
        true
    }
    fn around(&self, ctx: Arc<Context>, next: Next) -> BoxFuture<Handled> {
        Box::pin((self.0)(ctx, next))
    }
}

/// A consumer group's counts at a status refresh.
#[derive(Debug, Clone, Copy, Default)]
// Read by the metrics (a build without them only fills them in).
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) struct GroupCounts {
    /// Records (or batches) being handled.
    pub in_flight: usize,
    /// Records held in memory.
    pub buffered: usize,
    /// Partitions assigned to this member.
    pub assigned: usize,
    /// Of those, partitions whose fetching is paused (backpressure or an operator's pause).
    pub paused: usize,
    /// Of those, partitions an operator paused.
    pub held: usize,
    /// How long the partition waiting longest on its oldest unsettled record has waited, in
    /// seconds (held partitions aside).
    pub waiting_s: f64,
}

/// What a consumer group's engine tells about itself (gauges): implemented by eventkit's
/// metrics, fed by the fetch loop at each status refresh and by librdkafka's statistics.
pub(crate) trait Watch: Send + Sync + 'static {
    /// The group's counts at a status refresh (all zero once it stopped).
    fn group_status(&self, _group: &str, _counts: &GroupCounts) {}
    /// librdkafka's statistics of the group's consumer.
    fn statistics(&self, _group: &str, _statistics: &rdkafka::Statistics) {}
}

/// The layers around one handler (app-wide, then its group's, then its own), and around the
/// group (app-wide, then the group's) for records no handler takes. Built once per group.
#[derive(Clone, Default)]
pub(crate) struct Stack {
    layers: Arc<[Arc<dyn HandleLayer>]>,
}

impl Stack {
    pub(crate) fn new(layers: Vec<Arc<dyn HandleLayer>>) -> Self {
        Stack { layers: layers.into() }
    }

    /// This stack with `more` inside it.
    pub(crate) fn with(&self, more: impl IntoIterator<Item = Arc<dyn HandleLayer>>) -> Self {
        let mut layers: Vec<Arc<dyn HandleLayer>> = self.layers.to_vec();
        layers.extend(more);
        Stack::new(layers)
    }

    /// What the layers decide before the handler: `None` to go on.
    pub(crate) fn before(&self, ctx: &Context) -> Option<Flow> {
        for layer in self.layers.iter() {
            match layer.before(ctx) {
                Flow::Continue => {}
                other => return Some(other),
            }
        }
        None
    }

    /// Whether any layer wraps this handling.
    pub(crate) fn wraps(&self, ctx: &Context) -> bool {
        self.layers.iter().any(|l| l.wraps(ctx))
    }

    /// Runs the handling through the wrapping layers (call only when [`Stack::wraps`]).
    pub(crate) fn around(&self, ctx: Arc<Context>, handler: Arc<dyn Fn(Arc<Context>) -> BoxFuture<Handled> + Send + Sync>) -> BoxFuture<Handled> {
        Next { layers: self.layers.clone(), at: 0, handler }.run(ctx)
    }

    /// `after` runs innermost first, as code after `next.run(..)` in an `around` does.
    pub(crate) fn after(&self, ctx: &Context, result: &Handled, took: Duration) {
        for layer in self.layers.iter().rev() {
            layer.after(ctx, result, took);
        }
    }

    pub(crate) fn settled(&self, at: &Settling<'_>, disposition: &Disposition<'_>) {
        for layer in self.layers.iter() {
            layer.settled(at, disposition);
        }
    }

    pub(crate) fn record_done(&self, group: &str, event_id: &str) {
        for layer in self.layers.iter() {
            layer.record_done(group, event_id);
        }
    }
}

