//! # eventkit
//!
//! Declarative Kafka integration events: annotate events and handlers, call [`run`].
//!
//! ```no_run
//! use eventkit::{integration_event, handler, Context};
//!
//! #[integration_event(topic = "users.created.v1", key = user_id)]
//! pub struct UserCreated { pub user_id: u64, pub email: String }
//!
//! #[handler(group = "email-service")]
//! async fn send_welcome(event: UserCreated, ctx: &Context) -> eventkit::Result<()> {
//!     println!("welcome {} ({})", event.email, ctx.event_id());
//!     Ok(())
//! }
//!
//! #[tokio::main]
//! async fn main() -> eventkit::Result<()> {
//!     eventkit::run().await
//! }
//! ```
//!
//! ## Module map
//!
//! The runtime is laid out in layers, lowest first; the folders are the layers. Cross-cutting work
//! (tracing, metrics, the test harness's observer, the inbox, your own middleware) is a
//! [`layer`] around handling and publishing; the flows call the stack and name no concern.
//!
//! ```text
//! eventkit/src/            a module imports only its own layer and those below (tests/layering.rs)
//! ├── core/        0  values every layer uses
//! │   ├── event.rs           IntegrationEvent, EventInfo (what #[integration_event] generates)
//! │   ├── envelope.rs        Metadata, RecordInfo, WireFormat, the CloudEvents headers
//! │   ├── error.rs           Error, HandlerError, the dead letter kinds
//! │   ├── config.rs          Config, read from the environment
//! │   ├── topic_settings.rs  TopicSettings, TopicConfig
//! │   ├── retry.rs, ordering.rs, state.rs
//! │   └── properties/        librdkafka's properties: their clients, which are secret
//! ├── wire/        1  codecs: binary (mod.rs), structured.rs, legacy.rs
//! ├── kafka/       2  librdkafka clients: settings and logs (mod.rs), reach.rs (the startup
//! │                   check), outage.rs, topics.rs (creating topics), embedded.rs (mock cluster)
//! ├── flows/       3  publishing and consuming
//! │   ├── publish.rs         Publisher: encode, produce, acknowledgements, transactions
//! │   ├── cascade.rs         domain events mapped to integration events, published together
//! │   ├── command.rs         commands and their mediator
//! │   ├── consume/           the engine: fetch.rs (loop, backpressure), scheduler.rs (ordering
//! │   │                      lanes), dispatch.rs (handler calls), settle.rs (retry, dead
//! │   │                      letters), tracker.rs (watermarks), rebalance.rs, record.rs
//! │   ├── dlq/               the dead letter queue: list, replay, purge
//! │   ├── layer/             middleware: HandleLayer, PublishLayer, Filter, RateLimit
//! │   ├── context.rs, extract.rs, handler.rs, batch.rs, any.rs   what a handler sees
//! │   ├── registry.rs        the events, handlers and groups of a program
//! │   └── status.rs          what each group is doing (health)
//! ├── app/         4  App, AppBuilder, Running, run (mod.rs); topology.rs (the topic listing);
//! │                   topics.rs (what an app creates); surface.rs (where surfaces plug in)
//! └── surfaces/    5  on top of an app, each a layer or a Surface; nothing below names them
//!     ├── admin/             the admin HTTP API and health probes
//!     ├── cli.rs             `PROGRAM dlq ...` and the `eventkit` binary
//!     ├── asyncapi.rs        the AsyncAPI document
//!     ├── outbox.rs          the transactional outbox and the inbox (sqlx)
//!     ├── testing.rs         TestApp and sessions
//!     ├── trace.rs           spans, W3C trace context, OTLP
//!     └── metrics.rs         Prometheus metrics
//! ```
#![warn(missing_docs)]

// The layers, lowest first (the module map above; tests/layering.rs checks the direction).
mod core;
pub mod wire;
mod kafka;
mod flows;
mod app;
mod surfaces;

pub use self::core::envelope;
pub use flows::{dlq, layer};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use surfaces::outbox;
#[cfg(feature = "asyncapi")]
pub use surfaces::asyncapi;
#[cfg(feature = "cli")]
pub use surfaces::cli;
#[cfg(feature = "metrics")]
pub use surfaces::metrics;
pub use surfaces::testing;

pub use self::core::config::{AdminSettings, Config, ReadinessChecks};
pub use self::core::envelope::{Metadata, RecordInfo};
pub use self::core::error::{BoxError, Error, Result};
pub use self::core::event::{EventInfo, IntegrationEvent};
pub use self::core::ordering::Ordering;
pub use self::core::retry::{RetryOverrides, RetryPolicy};
pub use self::core::state::{Requirements, StateMap};
pub use self::core::topic_settings::{TopicConfig, TopicSettings};
pub use app::topology::{CommandEntry, EventEntry, GroupEntry, HandlerEntry, MappingEntry, Topology};
pub use app::{publisher, run, run_with, topology, App, AppBuilder, Readiness, Running};
pub use eventkit_macros::{command, handler, integration_event, maps_to};
pub use flows::any::AnyEvent;
pub use flows::batch::BatchContext;
pub use flows::cascade::{Cascade, DomainEvent, IntoEvents, MappingDescriptor, MapsTo};
pub use flows::command::{send, Command, CommandDescriptor, CommandInfo};
pub use flows::context::Context;
pub use flows::dlq::{DeadLetter, DeadLetterQueue, DlqFilter, ReplayReport, Selection};
pub use flows::extract::{Extracted, Extractor, FromContext, State};
pub use flows::handler::{BatchFn, HandlerDescriptor, HandlerError, HandlerEvent, HandlerFn, HandlerKind, HandlerOutput};
pub use flows::publish::{PublishOptions, Published, Publisher};
pub use flows::registry::{EventDescriptor, GroupPlan, Registry};
pub use kafka::embedded::EmbeddedBroker;
pub use wire::WireFormat;

/// Links crates whose events and handlers this binary must register, though it names
/// nothing else from them.
///
/// Handlers and events register themselves at link time. A crate that a binary lists in its
/// Cargo.toml but never names is not linked at all, and its handlers silently do not run:
/// common when each bounded context is its own crate. `eventkit::link!(billing_handlers);` in
/// the binary (at module level) names it; it is the same as `use billing_handlers as _;`.
///
/// ```
/// eventkit::link!(serde_json, eventkit);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! link {
    ($($krate:ident),+ $(,)?) => {
        $( #[allow(unused_imports)] use $krate as _; )+
    };
}

/// Used by generated code only: `#[integration_event]`'s JSON Schema derive, kept where the
/// `asyncapi` feature is on.
#[cfg(feature = "asyncapi")]
#[doc(hidden)]
#[macro_export]
macro_rules! __with_schema {
    ([$($schema:tt)*] $($item:tt)*) => { $($schema)* $($item)* };
}

/// Used by generated code only (without the `asyncapi` feature, no JSON Schema derive).
#[cfg(not(feature = "asyncapi"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __with_schema {
    ([$($schema:tt)*] $($item:tt)*) => { $($item)* };
}

/// Used by generated code only: an event's schema function.
#[cfg(feature = "asyncapi")]
#[doc(hidden)]
#[macro_export]
macro_rules! __event_schema {
    ($event:ty) => {
        $crate::__private::event_schema::<$event>
    };
}

/// Used by generated code only (without the `asyncapi` feature, no schema).
#[cfg(not(feature = "asyncapi"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __event_schema {
    ($event:ty) => {
        ()
    };
}

/// Used by generated code only; not a public API.
#[doc(hidden)]
pub mod __private {
    /// `#[handler(layer = expr)]`: the expression's layer, shared.
    pub fn layer(layer: impl crate::flows::layer::HandleLayer) -> std::sync::Arc<dyn crate::flows::layer::HandleLayer> {
        std::sync::Arc::new(layer)
    }
    pub use crate::flows::any::decode_any;
    pub use crate::flows::batch::{decode_batch, extract_batch_ref, require_batch_ref};
    pub use crate::flows::cascade::{map_into, SameTarget};
    #[cfg(feature = "asyncapi")]
    pub use crate::core::event::event_schema;
    pub use crate::core::event::event_from_json;
    #[cfg(feature = "asyncapi")]
    pub use schemars;
    pub use crate::flows::command::{take_command, CommandReply};
    pub use crate::flows::extract::{extract_ref, require_ref};
    pub use crate::flows::handler::{decode_event, extract_failed, idempotent_output, key_text, EventKey, IdempotentOutput};
    pub use futures::future::BoxFuture;
    pub use inventory;
    pub use serde;
}
