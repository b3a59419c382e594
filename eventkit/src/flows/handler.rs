//! Handlers as the runtime sees them: link-time descriptors and their outcomes.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::flows::batch::BatchContext;
use crate::flows::cascade::{Cascade, IntoEvents};
use crate::flows::command::{CommandInfo, CommandReply};
use crate::flows::context::Context;
pub use crate::core::error::HandlerError;
use crate::core::error::{BoxError, Error};
use crate::core::event::{EventInfo, IntegrationEvent};
use crate::core::retry::RetryOverrides;
use crate::core::state::Requirements;

/// The type-erased entry point `#[handler]` generates.
/// On success it gives the events the handler returned, to publish.
pub type HandlerFn = fn(Arc<Context>) -> BoxFuture<'static, Result<Cascade, HandlerError>>;

/// The type-erased entry point of a batch handler.
pub type BatchFn = fn(Arc<BatchContext>) -> BoxFuture<'static, Result<Cascade, HandlerError>>;

/// What a handler takes, and how it is called.
#[derive(Debug, Clone, Copy)]
pub enum HandlerKind {
    /// One event of one type.
    Typed(HandlerFn),
    /// Every event on some topics, as [`crate::AnyEvent`].
    CatchAll {
        /// `topics = [...]` (without prefix); empty: the topics of the handler's group.
        topics: &'static [&'static str],
        /// The entry point.
        call: HandlerFn,
    },
    /// A command (see [`crate::send`]), run where it is sent.
    Command {
        /// The command type.
        command: &'static CommandInfo,
        /// The entry point.
        call: HandlerFn,
    },
    /// Up to `max_size` events of one type, gathered for at most `max_wait_ms`.
    Batch {
        /// Most events per call.
        max_size: usize,
        /// Longest wait for a batch to fill, in milliseconds.
        max_wait_ms: u64,
        /// The entry point.
        call: BatchFn,
    },
}

/// A handler registered by `#[handler]`, collected at link time.
#[derive(Debug)]
pub struct HandlerDescriptor {
    /// Unique name (default: `module::path::fn_name`).
    pub name: &'static str,
    /// The consumer group named in the attribute, if any.
    pub group: Option<&'static str>,
    /// The event the handler takes (`None` for catch-all handlers).
    pub event: Option<&'static EventInfo>,
    /// Typed, catch-all or batch, with the entry point.
    pub kind: HandlerKind,
    /// `retries = N` and `backoff = "..."` of the attribute.
    pub retry: RetryOverrides,
    /// `ordering = "..."` of the attribute.
    pub ordering: Option<crate::Ordering>,
    /// `concurrency = N` of the attribute.
    pub concurrency: Option<usize>,
    /// Collects what the handler's arguments need from the app.
    pub requires: fn(&mut Requirements),
    /// The handler's own layers (`#[handler(layer = path)]`, and those its arguments bring:
    /// an `InboxTx` brings the inbox), innermost around it.
    pub layers: fn() -> Vec<std::sync::Arc<dyn crate::flows::layer::HandleLayer>>,
}

inventory::collect!(HandlerDescriptor);



/// What a handler may return: `()`, a [`Cascade`], or `Result<T, E>` for any error type `E`
/// where `T` is `()` or events to publish once the handler succeeded ([`IntoEvents`]: an
/// integration event, a mapped domain event, a `Cascade`, a `Vec`, `Option` or tuple of them).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid handler return type",
    note = "a handler returns `()`, `eventkit::Result<()>`, `Result<(), E>` for an error type `E`, or `Result<T, E>` where `T` is events to publish (an integration event, a `#[maps_to]` domain event, `eventkit::Cascade`, or a `Vec`, `Option` or tuple of them); a command handler returns `Result<R, E>`, where `R` is the command's `returns` type (`()` by default)"
)]
pub trait HandlerOutput<R = ()> {
    /// Converts the output to a handler outcome: the events to publish, or why it failed.
    fn into_outcome(self) -> Result<Cascade, HandlerError>;
}

impl HandlerOutput for () {
    fn into_outcome(self) -> Result<Cascade, HandlerError> {
        Ok(Cascade::new())
    }
}

impl HandlerOutput for Cascade {
    fn into_outcome(self) -> Result<Cascade, HandlerError> {
        Ok(self)
    }
}

/// A command handler's value goes back to the sender.
impl<T: Send + 'static, E: Into<BoxError>> HandlerOutput<CommandReply<T>> for Result<T, E> {
    fn into_outcome(self) -> Result<Cascade, HandlerError> {
        match self {
            Ok(value) => Ok(crate::flows::command::reply(value)),
            Err(e) => Err(failure(e.into())),
        }
    }
}

impl HandlerOutput<CommandReply<()>> for () {
    fn into_outcome(self) -> Result<Cascade, HandlerError> {
        Ok(crate::flows::command::reply(()))
    }
}

impl<T: IntoEvents, E: Into<BoxError>> HandlerOutput for Result<T, E> {
    fn into_outcome(self) -> Result<Cascade, HandlerError> {
        match self {
            Ok(events) => Ok(Cascade::new().with(events)),
            Err(e) => Err(failure(e.into())),
        }
    }
}

/// What an `idempotent` handler may return: `()` or `Result<(), E>`, decided by type (so type
/// aliases count). Events it returned would go out after its transaction commits, and be lost if
/// publishing them failed; it stages them in the transaction through the outbox instead.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "an `idempotent` handler returns `()` or `Result<(), E>`, not `{Self}`",
    label = "an `idempotent` handler cannot return events",
    note = "events it returned would go out after its transaction commits, and be lost if that failed; stage them in the transaction with `outbox.cascade(&mut tx, ctx, events)`"
)]
pub trait IdempotentOutput {
    /// Named by generated code (`<Output as IdempotentOutput>::OK`): the reference is the check.
    const OK: () = ();
}

impl IdempotentOutput for () {}

impl<E> IdempotentOutput for Result<(), E> {}

/// The same check on the handler's output value, for return types that cannot be named
/// (`impl Trait`).
#[doc(hidden)]
pub fn idempotent_output<T: IdempotentOutput>(_output: &T) {}

/// A handler's error as an outcome: permanent and partial batch failures keep their meaning.
fn failure(e: BoxError) -> HandlerError {
    match e.downcast::<Error>() {
        Ok(e) => match *e {
            Error::Permanent(inner) => HandlerError::Permanent(inner),
            Error::BatchFailedAt { succeeded, source } => HandlerError::Partial { succeeded, source },
            other => HandlerError::Failed(Box::new(other)),
        },
        Err(e) => HandlerError::Failed(e),
    }
}

/// What a handler's first argument can be: an integration event (a typed handler),
/// [`crate::AnyEvent`] (a catch-all handler, under whatever name it is imported), or a
/// `#[command]` type (a command handler).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an integration event",
    label = "not an integration event",
    note = "annotate the type with `#[eventkit::integration_event]` (or `#[eventkit::command]` for an in-process command), or take `eventkit::AnyEvent` to receive every event"
)]
pub trait HandlerEvent: Sized + Send + 'static {
    /// The event type handled; `None` for every event (catch-all) and for commands.
    const EVENT: Option<&'static EventInfo>;
    /// The command handled, for command handlers.
    const COMMAND: Option<&'static CommandInfo> = None;
    /// Whom the handler answers: `()` for events, the sender for commands.
    type Returns;

    /// Reads the event from the record.
    fn decode(ctx: &Context) -> Result<Self, HandlerError>;
}

impl<E: IntegrationEvent> HandlerEvent for E {
    const EVENT: Option<&'static EventInfo> = Some(&E::INFO);
    type Returns = ();

    fn decode(ctx: &Context) -> Result<Self, HandlerError> {
        decode_event::<E>(ctx)
    }
}

impl HandlerEvent for crate::AnyEvent {
    const EVENT: Option<&'static EventInfo> = None;
    type Returns = ();

    fn decode(ctx: &Context) -> Result<Self, HandlerError> {
        crate::flows::any::decode_any(ctx)
    }
}

/// The Kafka key of an event: its key field's `Display` text.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "the key field `{Self}` does not implement `Display`",
    label = "the partition key is this field's `Display` text",
    note = "implement `std::fmt::Display` for the field's type, or key the event by another field"
)]
pub trait EventKey {
    /// The key text.
    fn key_text(&self) -> String;
}

impl<T: std::fmt::Display + ?Sized> EventKey for T {
    fn key_text(&self) -> String {
        self.to_string()
    }
}

/// The key text of a key field (generated code).
#[doc(hidden)]
pub fn key_text<T: EventKey + ?Sized>(field: &T) -> String {
    field.key_text()
}

/// Decodes the record's data as `E`.
#[doc(hidden)]
pub fn decode_event<E: IntegrationEvent>(ctx: &Context) -> Result<E, HandlerError> {
    serde_json::from_slice(ctx.data()).map_err(HandlerError::Decode)
}

/// Turns an extractor error into a handler error.
#[doc(hidden)]
pub fn extract_failed(error: Error) -> HandlerError {
    HandlerError::Extract(error)
}
