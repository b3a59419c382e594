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
//! Without `KAFKA_BOOTSTRAP_SERVERS`, [`run`] starts an embedded broker (librdkafka's mock
//! cluster) in the process: the program runs as it is, with no Kafka to install. The README has
//! the whole guide; what follows is its outline, each part a doctest that compiles.
//!
//! ## Events
//!
//! [`macro@integration_event`] makes a struct an [`IntegrationEvent`]: its type name (`ce_type`),
//! its topic, its partition key (else the event id), its schema version and its topic's
//! settings. Events travel as CloudEvents 1.0 records ([`WireFormat`]).
//!
//! ```
//! #[eventkit::integration_event(topic = "orders.placed.v1", key = order_id, version = 2, partitions = 12)]
//! pub struct OrderPlaced { pub order_id: String, pub amount_cents: i64 }
//!
//! use eventkit::IntegrationEvent as _;
//! assert_eq!(OrderPlaced::INFO.topic, "orders.placed.v1");
//! assert_eq!(OrderPlaced::INFO.version, 2);
//! ```
//!
//! ## Handlers
//!
//! [`macro@handler`] registers an async function for a consumer group: its first argument is the
//! event (or a batch, or [`AnyEvent`]), the others are extracted ([`Context`], [`State`] of the
//! app, the record's [`Metadata`]). An error is retried (`retries`, `backoff`), then the record
//! goes to the dead letter queue ([`DeadLetterQueue`]); [`Error::permanent`] skips the retries.
//! Events a handler returns are published once it succeeded.
//!
//! ```
//! # #[eventkit::integration_event(topic = "orders.placed.v1", key = order_id)]
//! # pub struct OrderPlaced { pub order_id: String, pub amount_cents: i64 }
//! # #[eventkit::integration_event(topic = "payments.charged.v1", key = order_id)]
//! # pub struct PaymentCharged { pub order_id: String }
//! #[derive(Clone)]
//! struct Gateway;
//!
//! #[eventkit::handler(group = "billing", retries = 5, backoff = "100ms..10s")]
//! async fn charge(order: OrderPlaced, _gateway: &Gateway) -> eventkit::Result<PaymentCharged> {
//!     if order.amount_cents < 0 {
//!         return Err(eventkit::Error::permanent("negative amount"));
//!     }
//!     Ok(PaymentCharged { order_id: order.order_id })
//! }
//!
//! let app = eventkit::App::builder().state(Gateway).build();
//! assert!(app.is_ok());
//! ```
//!
//! ## Publishing
//!
//! A running app's [`Publisher`] sends events (idempotent producer, acknowledged); from a
//! handler, [`Context::cascade`] adds events published when it succeeds. [`macro@maps_to`]
//! maps a domain event onto an integration event field by field, and
//! [`macro@command`] sends a command to its one handler.
//!
//! ```no_run
//! # #[eventkit::integration_event(topic = "orders.placed.v1", key = order_id)]
//! # pub struct OrderPlaced { pub order_id: String, pub amount_cents: i64 }
//! # async fn f() -> eventkit::Result<()> {
//! let running = eventkit::App::builder().build()?.start().await?;
//! let published = running.publisher().publish(&OrderPlaced { order_id: "o-1".into(), amount_cents: 250 }).await?;
//! println!("{}[{}]@{}", published.topic, published.partition, published.offset);
//! running.shutdown().await
//! # }
//! ```
//!
//! ## Layers
//!
//! Middleware around handling and publishing ([`layer`]): app-wide, per group, per handler.
//!
//! ```
//! use eventkit::layer::{Filter, RateLimit};
//!
//! let app = eventkit::App::builder()
//!     .group_layer("billing", Filter::new().tenants(["acme"]))
//!     .group_layer("billing", RateLimit::per_second(100));
//! # let _ = app;
//! ```
//!
//! ## Testing
//!
//! [`testing::TestApp`] runs the app on an embedded broker and waits, for each event published,
//! until everything it caused was handled or dead-lettered.
//!
//! ```no_run
//! # #[eventkit::integration_event(topic = "orders.placed.v1", key = order_id)]
//! # pub struct OrderPlaced { pub order_id: String, pub amount_cents: i64 }
//! # async fn f() -> eventkit::Result<()> {
//! use eventkit::testing::TestApp;
//!
//! let app = TestApp::start(eventkit::App::builder()).await?;
//! let session = app.publish(&OrderPlaced { order_id: "o-1".into(), amount_cents: 250 }).await?;
//! assert!(session.dead_lettered().is_empty());
//! app.shutdown().await
//! # }
//! ```
//!
//! ## Configuration and operations
//!
//! Everything is read from the environment ([`Config`]: `KAFKA_BOOTSTRAP_SERVERS`,
//! `EVENTKIT_*`, librdkafka's properties as `EVENTKIT_KAFKA_*`) and can be set on the
//! [`AppBuilder`]. `--list-topics` prints the [`Topology`]. With its features: the admin API and
//! health probes (`EVENTKIT_ADMIN_ADDR`, `EVENTKIT_HEALTH_ADDR`), Prometheus metrics
//! ([`metrics`]), the dead letter tool (`PROGRAM dlq ...`, [`cli`]), the AsyncAPI document
//! (`--asyncapi`, [`asyncapi`]), OpenTelemetry.
//!
//! ## Features
//!
//! All features are off by default (the first build stays lean); `full` turns on every one.
//!
//! | feature | what it adds |
//! |---|---|
//! | `admin` | the admin HTTP API and health probes (axum, hyper) |
//! | `metrics` | metrics through the `metrics` facade, to the program's recorder |
//! | `prometheus` | `metrics`, the Prometheus recorder and `/metrics` |
//! | `cli` | `PROGRAM dlq ...` and the `eventkit` binary (clap) |
//! | `asyncapi` | `--asyncapi`, `App::asyncapi`, `/asyncapi.json` (schemars) |
//! | `sqlite`, `postgres` | the transactional outbox and the inbox ([`outbox`], sqlx) |
//! | `otel`, `otlp` | OpenTelemetry spans across services; export over OTLP |
//! | `full` | all of them |
//!
//! Each item that needs a feature says so in these docs. Asking for a part a build leaves out
//! (`EVENTKIT_ADMIN_ADDR` without `admin`, `--asyncapi` without `asyncapi`, `PROGRAM dlq`
//! without `cli`) is an error naming the feature. The package is `eventkit-kafka`, so depend on
//! it as `eventkit-kafka = { version = "0.1", features = ["admin"] }`. What each feature
//! costs in build time is in `BENCHMARKS.md`.
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
//! │   ├── control.rs         operators' pauses and resumes, through the control topic
//! │   ├── replay.rs          replay by time: a window of a topic, again, to one group
//! │   ├── consume/           the engine: fetch.rs (loop, backpressure), scheduler.rs (ordering
//! │   │                      lanes), dispatch.rs (handler calls), settle.rs (retry, dead
//! │   │                      letters), tracker.rs (watermarks), rebalance.rs, record.rs
//! │   ├── dlq/               the dead letter queue: list, replay, purge
//! │   ├── layer/             middleware: HandleLayer, PublishLayer, Filter, RateLimit
//! │   ├── context.rs, extract.rs, handler.rs, batch.rs, any.rs   what a handler sees
//! │   ├── registry.rs        the events, handlers and groups of a program
//! │   └── status.rs          what each group is doing (health)
//! ├── app/         4  App, AppBuilder, Running, run (mod.rs); topology.rs (the topic listing);
//! │                   topics.rs (what an app creates); surface.rs (where surfaces plug in);
//! │                   fleet.rs (status reports: every instance, seen from any)
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
#![cfg_attr(docsrs, feature(doc_cfg))]
// The docs link to every optional part; a build without some of them leaves those links
// dangling (CI builds the docs with all features and denies every warning).
#![cfg_attr(not(feature = "full"), allow(rustdoc::broken_intra_doc_links))]

// The layers, lowest first (the module map above; tests/layering.rs checks the direction).
mod core;
pub mod wire;
mod kafka;
mod flows;
mod app;
mod surfaces;

pub use self::core::envelope;
pub use flows::{control, dlq, layer, replay};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use surfaces::outbox;
#[cfg(feature = "asyncapi")]
pub use surfaces::asyncapi;
#[cfg(feature = "cli")]
pub use surfaces::cli;
#[cfg(feature = "metrics")]
pub use surfaces::metrics;
pub use surfaces::testing;

pub use self::core::config::{AdminSettings, Config, PayloadVisibility, ReadinessChecks};
pub use self::core::envelope::{Metadata, RecordInfo};
pub use self::core::error::{BoxError, Error, Result};
pub use self::core::event::{EventInfo, IntegrationEvent};
pub use self::core::ordering::Ordering;
pub use self::core::retry::{RetryOverrides, RetryPolicy};
pub use self::core::state::{Requirements, StateMap};
pub use self::core::topic_settings::{TopicConfig, TopicSettings};
pub use app::topology::{CommandEntry, EventEntry, GroupEntry, HandlerEntry, MappingEntry, Topology};
pub use app::{fleet, publisher, run, run_with, topology, App, AppBuilder, Readiness, Running};
#[doc = include_str!("../docs/macros/integration_event.md")]
pub use eventkit_macros::integration_event;
#[doc = include_str!("../docs/macros/handler.md")]
pub use eventkit_macros::handler;
#[doc = include_str!("../docs/macros/maps_to.md")]
pub use eventkit_macros::maps_to;
#[doc = include_str!("../docs/macros/command.md")]
pub use eventkit_macros::command;
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
