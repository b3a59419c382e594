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
#![warn(missing_docs)]

mod admin;
mod any;
pub mod asyncapi;
mod app;
mod batch;
mod cascade;
mod command;
mod broker;
pub mod cli;
mod config;
mod consumer;
mod context;
pub mod dlq;
pub mod envelope;
mod error;
mod event;
mod extract;
mod handler;
mod kafka;
pub mod layer;
pub mod metrics;
mod status;
mod ordering;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod outbox;
mod publisher;
mod registry;
mod retry;
mod state;
pub mod testing;
mod topics;
mod topology;
mod trace;
pub mod wire;

pub use any::AnyEvent;
pub use batch::BatchContext;
pub use cascade::{Cascade, DomainEvent, IntoEvents, MappingDescriptor, MapsTo};
pub use command::{send, Command, CommandDescriptor, CommandInfo};
pub use app::{publisher, run, run_with, topology, App, AppBuilder, Readiness, Running};
pub use broker::EmbeddedBroker;
pub use config::{AdminSettings, Config, ReadinessChecks};
pub use context::{Context, RecordInfo};
pub use dlq::{DeadLetter, DeadLetterQueue, DlqFilter, ReplayReport, Selection};
pub use envelope::Metadata;
pub use error::{BoxError, Error, Result};
pub use event::{EventInfo, IntegrationEvent};
pub use eventkit_macros::{command, handler, integration_event, maps_to};
pub use extract::{Extracted, Extractor, FromContext, State};
pub use ordering::Ordering;
pub use handler::{BatchFn, HandlerDescriptor, HandlerError, HandlerEvent, HandlerFn, HandlerKind, HandlerOutput};
pub use publisher::{PublishOptions, Published, Publisher};
pub use retry::{RetryOverrides, RetryPolicy};
pub use registry::{EventDescriptor, GroupPlan, Registry};
pub use state::{Requirements, StateMap};
pub use topics::{TopicConfig, TopicSettings};
pub use topology::{CommandEntry, EventEntry, GroupEntry, HandlerEntry, MappingEntry, Topology};
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

/// Used by generated code only; not a public API.
#[doc(hidden)]
pub mod __private {
    /// `#[handler(layer = expr)]`: the expression's layer, shared.
    pub fn layer(layer: impl crate::layer::HandleLayer) -> std::sync::Arc<dyn crate::layer::HandleLayer> {
        std::sync::Arc::new(layer)
    }
    pub use crate::any::decode_any;
    pub use crate::batch::{decode_batch, extract_batch_ref, require_batch_ref};
    pub use crate::cascade::{map_into, SameTarget};
    pub use crate::event::{event_from_json, event_schema};
    pub use schemars;
    pub use crate::command::{take_command, CommandReply};
    pub use crate::extract::{extract_ref, require_ref};
    pub use crate::handler::{decode_event, extract_failed, idempotent_output, key_text, EventKey, IdempotentOutput};
    pub use futures::future::BoxFuture;
    pub use inventory;
    pub use serde;
}
