//! [`Context`]: what a handler knows about the message it is handling.

use std::any::Any;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::flows::cascade::{Cascade, IntoEvents};
use crate::flows::command::{Command, Mediator};
use crate::core::envelope::Metadata;
use crate::core::error::Result;
use crate::core::event::IntegrationEvent;
use crate::flows::publish::{PublishOptions, Published, Publisher};
use crate::core::state::StateMap;
use crate::wire::WireFormat;

pub use crate::core::envelope::RecordInfo;

/// The message being handled: metadata, record position, group, publisher and app state.
///
/// A handler takes it as `&Context`:
///
/// ```
/// use eventkit::{handler, integration_event, Context};
///
/// #[integration_event(topic = "orders.placed.v1", key = order_id)]
/// pub struct OrderPlaced { pub order_id: u64 }
/// #[integration_event(topic = "invoices.v1", key = order_id)]
/// pub struct InvoiceRequested { pub order_id: u64 }
///
/// #[handler(group = "billing")]
/// async fn bill(event: OrderPlaced, ctx: &Context) -> eventkit::Result<()> {
///     tracing::info!(
///         id = ctx.event_id(), correlation = ctx.correlation_id(), group = ctx.group(),
///         topic = &*ctx.record().topic, partition = ctx.record().partition, offset = ctx.record().offset,
///         "billing order {}", event.order_id,
///     );
///     // Published after the handler succeeds, with this event's correlation id:
///     ctx.cascade(InvoiceRequested { order_id: event.order_id });
///     Ok(())
/// }
/// ```
pub struct Context {
    pub(crate) metadata: Metadata,
    pub(crate) record: RecordInfo,
    pub(crate) group: Arc<str>,
    pub(crate) data: Bytes,
    pub(crate) format: WireFormat,
    pub(crate) publisher: Publisher,
    pub(crate) state: Arc<StateMap>,
    /// Events added with [`Context::cascade`], published when the handler succeeded.
    pub(crate) cascade: Mutex<Cascade>,
    /// The command being handled (taken by its handler).
    pub(crate) command: Mutex<Option<Box<dyn Any + Send>>>,
    /// Runs commands sent with [`Context::send`].
    pub(crate) mediator: Option<Arc<Mediator>>,
    /// The handler this context was made for.
    pub(crate) handler: Option<&'static str>,
    /// What layers hand to the handler's arguments (the inbox's transaction), by type.
    pub(crate) extensions: Mutex<Vec<Box<dyn Any + Send>>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("metadata", &self.metadata).field("record", &self.record).field("group", &self.group).finish_non_exhaustive()
    }
}

/// A clone starts with no cascaded events.
impl Clone for Context {
    fn clone(&self) -> Self {
        Context {
            metadata: self.metadata.clone(),
            record: self.record.clone(),
            group: self.group.clone(),
            data: self.data.clone(),
            format: self.format,
            publisher: self.publisher.clone(),
            state: self.state.clone(),
            cascade: Mutex::default(),
            command: Mutex::default(),
            mediator: self.mediator.clone(),
            handler: self.handler,
            extensions: Mutex::default(),
        }
    }
}

impl Context {
    /// The event's CloudEvents attributes and other headers.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    /// The event id (`ce_id`).
    pub fn event_id(&self) -> &str {
        &self.metadata.id
    }
    /// The event type (`ce_type`).
    pub fn event_type(&self) -> &str {
        &self.metadata.event_type
    }
    /// The correlation id, if the event has one.
    pub fn correlation_id(&self) -> Option<&str> {
        self.metadata.correlation_id.as_deref()
    }
    /// Topic, partition, offset, key and timestamp of the record.
    pub fn record(&self) -> &RecordInfo {
        &self.record
    }
    /// The name of the handler running (`None` outside a handler call).
    pub fn handler_name(&self) -> Option<&'static str> {
        self.handler
    }
    /// The consumer group handling the message.
    pub fn group(&self) -> &str {
        &self.group
    }
    /// The wire format the record came in.
    pub fn format(&self) -> WireFormat {
        self.format
    }
    /// The raw event data (JSON).
    pub fn data(&self) -> &[u8] {
        &self.data
    }
    /// The app's publisher.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }
    /// App state of type `T`.
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.state.get::<T>()
    }

    /// Publishes a follow-up event caused by this one: it carries this event's correlation
    /// id (or this event's id when it has none), this event's id as causation id, and its tenant.
    pub async fn publish<E: IntegrationEvent>(&self, event: &E) -> Result<Published> {
        self.publisher.publish_with(event, self.follow_up()).await
    }

    /// Adds events to publish once the handler succeeded, as follow-ups of this one (like
    /// events the handler returns). Nothing is published if the handler fails.
    pub fn cascade(&self, events: impl IntoEvents) {
        let mut cascade = self.cascade.lock().unwrap_or_else(|e| e.into_inner());
        events.into_events(&mut cascade);
    }

    /// Sends a command to its handler in this app and returns the handler's value. The
    /// command continues this event's correlation, and this event is its cause.
    pub async fn send<C: Command>(&self, command: C) -> Result<C::Output> {
        match &self.mediator {
            Some(mediator) => mediator.send(command, Some(self)).await,
            None => crate::flows::command::send(command).await,
        }
    }

    /// Hands a value to the handler's arguments (a layer's: the inbox hands its transaction to
    /// the `InboxTx` argument). One value per type; a second replaces the first.
    pub fn insert_extension<T: Send + 'static>(&self, value: T) {
        let mut extensions = self.extensions.lock().unwrap_or_else(|e| e.into_inner());
        extensions.retain(|e| !e.is::<T>());
        extensions.push(Box::new(value));
    }

    /// Takes the value of type `T` a layer handed over, if one did.
    pub fn take_extension<T: Send + 'static>(&self) -> Option<T> {
        let mut extensions = self.extensions.lock().unwrap_or_else(|e| e.into_inner());
        let i = extensions.iter().position(|e| e.is::<T>())?;
        extensions.swap_remove(i).downcast::<T>().ok().map(|b| *b)
    }

    /// Takes the events added with [`Context::cascade`].
    pub(crate) fn take_cascade(&self) -> Cascade {
        std::mem::take(&mut *self.cascade.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Options that make a published event a follow-up of this one.
    pub fn follow_up(&self) -> PublishOptions {
        PublishOptions {
            correlation_id: Some(self.correlation_id().unwrap_or(self.event_id()).to_owned()),
            causation_id: Some(self.event_id().to_owned()),
            tenant_id: self.metadata.tenant_id.clone(),
            ..PublishOptions::default()
        }
    }
}
