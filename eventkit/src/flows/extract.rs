//! Handler arguments after the event: extractors.
//!
//! A handler is `async fn(event: E, args...)` where every further argument is
//! `&Context`, a reference `&T` to app state, or a value implementing [`FromContext`]:
//! [`State<T>`], [`Publisher`], [`Metadata`], or your own type.

use std::any::{Any, TypeId};
use std::ops::Deref;

use crate::flows::context::Context;
use crate::core::envelope::Metadata;
use crate::core::error::{Error, Result};
use crate::flows::publish::Publisher;
use crate::core::state::Requirements;

/// A value a handler can take as an argument, built from the message's [`Context`].
///
/// ```
/// use eventkit::{Context, FromContext, Result};
/// /// The tenant of the current event, or "default".
/// struct Tenant(String);
/// impl FromContext for Tenant {
///     fn from_context(ctx: &Context) -> Result<Self> {
///         Ok(Tenant(ctx.metadata().tenant_id.clone().unwrap_or_else(|| "default".into())))
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler argument",
    label = "not an extractor",
    note = "handler arguments after the event are `&Context`, `&T` or `State<T>` for app state, `Publisher`, `Metadata`, `InboxTx<..>`, or a type implementing `eventkit::FromContext`"
)]
// (The same note as `Extractor`'s, so that the compiler reports a wrong argument once.)
pub trait FromContext: Sized + Send {
    /// Builds the value for one message; an error fails that message's handling.
    fn from_context(ctx: &Context) -> Result<Self>;

    /// Declares what the extractor needs from the app, checked at startup.
    fn requirements(_requirements: &mut Requirements) {}
}

/// A handler argument as the handler sees it: built (asynchronously) from the message's
/// [`Context`], or a decision that the handler is not to run. Every [`FromContext`] type is one;
/// `eventkit::outbox::InboxTx` (features `sqlite`, `postgres`) is the other kind.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler argument",
    label = "not an extractor",
    note = "handler arguments after the event are `&Context`, `&T` or `State<T>` for app state, `Publisher`, `Metadata`, `InboxTx<..>`, or a type implementing `eventkit::FromContext`"
)]
pub trait Extractor: Sized + Send {
    /// Builds the argument, or says to skip the handler.
    fn extract(ctx: &Context) -> impl std::future::Future<Output = Result<Extracted<Self>>> + Send;

    /// Declares what the extractor needs from the app, checked at startup.
    fn requirements(_requirements: &mut Requirements) {}

    /// Whether this is the inbox transaction ([`crate::surfaces::outbox::InboxTx`]) that makes a handler
    /// idempotent; `#[handler]` reads it at compile time (by type, under whatever name the
    /// argument is imported).
    #[doc(hidden)]
    const INBOX_TX: bool = false;

    /// A layer the argument brings around its handler (the inbox, for an `InboxTx`).
    fn layer() -> Option<std::sync::Arc<dyn crate::flows::layer::HandleLayer>> {
        None
    }
}

/// What an [`Extractor`] gives.
#[derive(Debug)]
pub enum Extracted<T> {
    /// The argument.
    Value(T),
    /// The handler is not to run; the record counts as handled by it.
    Skip,
}

impl<T: FromContext> Extractor for T {
    #[allow(clippy::manual_async_fn)]
    fn extract(ctx: &Context) -> impl std::future::Future<Output = Result<Extracted<Self>>> + Send {
        let value = T::from_context(ctx).map(Extracted::Value);
        async move { value }
    }
    fn requirements(requirements: &mut Requirements) {
        T::requirements(requirements);
    }
}

/// App state of type `T`, registered with [`crate::AppBuilder::state`].
#[derive(Debug, Clone, Copy, Default)]
pub struct State<T>(pub T);

impl<T> Deref for State<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Clone + Send + Sync + 'static> FromContext for State<T> {
    fn from_context(ctx: &Context) -> Result<Self> {
        ctx.state::<T>().cloned().map(State).ok_or_else(|| missing::<T>())
    }
    fn requirements(requirements: &mut Requirements) {
        requirements.state::<T>();
    }
}

impl FromContext for Publisher {
    fn from_context(ctx: &Context) -> Result<Self> {
        Ok(ctx.publisher().clone())
    }
}

impl FromContext for Metadata {
    fn from_context(ctx: &Context) -> Result<Self> {
        Ok(ctx.metadata().clone())
    }
}

fn missing<T>() -> Error {
    Error::MissingState(std::any::type_name::<T>().to_owned())
}

/// `&T` arguments: `&Context` itself, otherwise a reference into app state.
#[doc(hidden)]
pub fn extract_ref<T: Send + Sync + 'static>(ctx: &Context) -> Result<&T> {
    if let Some(ctx) = (ctx as &dyn Any).downcast_ref::<T>() {
        return Ok(ctx);
    }
    ctx.state::<T>().ok_or_else(|| missing::<T>())
}

/// Requirements of a `&T` argument.
#[doc(hidden)]
pub fn require_ref<T: Send + Sync + 'static>(requirements: &mut Requirements) {
    if TypeId::of::<T>() != TypeId::of::<Context>() {
        requirements.state::<T>();
    }
}
