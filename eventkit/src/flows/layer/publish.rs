//! Layers around publishing: [`PublishLayer`] and the stack of an app's.

use std::sync::Arc;
use std::time::Duration;

use crate::core::error::Error;

/// An event on its way to the producer, as [`PublishLayer`]s see it: encoded, with its id,
/// type, topic, key and headers. Layers may add headers.
pub struct Outgoing<'a> {
    /// The topic on the wire.
    pub topic: &'a str,
    /// The event id (`ce_id`).
    pub event_id: &'a str,
    /// The event type (`ce_type`).
    pub event_type: &'a str,
    /// The correlation id it carries.
    pub correlation_id: Option<&'a str>,
    /// The Kafka key.
    pub key: &'a [u8],
    /// The encoded value.
    pub value: &'a [u8],
    pub(crate) headers: &'a mut rdkafka::message::OwnedHeaders,
    /// What layers keep from `before` to `after` (a span, a timer), by layer.
    pub(crate) kept: &'a mut Vec<Box<dyn std::any::Any + Send>>,
    /// Whether the event is being staged in an outbox rather than published: layers add their
    /// headers now (they go into the row), and see no `after` (a relay publishes it later).
    pub staged: bool,
    /// The transaction the event is published in, when its producer is transactional: what
    /// it publishes is visible to `read_committed` readers only once
    /// [`PublishLayer::transaction`] says the transaction committed.
    pub transaction: Option<usize>,
}

impl Outgoing<'_> {
    /// Adds a header to the record.
    pub fn add_header(&mut self, key: &str, value: &[u8]) {
        let headers = std::mem::replace(self.headers, rdkafka::message::OwnedHeaders::new());
        *self.headers = headers.insert(rdkafka::message::Header { key, value: Some(value) });
    }

    /// Whether the record has a header named `key`.
    pub fn has_header(&self, key: &str) -> bool {
        use rdkafka::message::Headers;
        self.headers.iter().any(|h| h.key.eq_ignore_ascii_case(key))
    }

    /// Keeps a value until [`PublishLayer::after`] (which gets them back with
    /// [`PublishResult::kept`]).
    pub fn keep(&mut self, value: impl std::any::Any + Send) {
        self.kept.push(Box::new(value));
    }
}

/// How a publish ended, for [`PublishLayer::after`].
pub struct PublishResult<'a> {
    /// The topic on the wire.
    pub topic: &'a str,
    /// The event id.
    pub event_id: &'a str,
    /// The event type.
    pub event_type: &'a str,
    /// Where the broker put it, or why it did not take it.
    pub result: Result<(i32, i64), &'a Error>,
    /// From the hand-over to the producer to the broker's answer.
    pub took: Duration,
    pub(crate) kept: &'a mut Vec<Box<dyn std::any::Any + Send>>,
}

impl PublishResult<'_> {
    /// Takes back a value of type `T` kept in [`PublishLayer::before`].
    pub fn kept<T: 'static>(&mut self) -> Option<T> {
        let i = self.kept.iter().position(|k| k.is::<T>())?;
        self.kept.swap_remove(i).downcast::<T>().ok().map(|b| *b)
    }
}

/// How a transaction of a transactional producer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransactionEnd {
    /// What it published is visible to `read_committed` readers.
    Committed,
    /// What it published never will be.
    Aborted,
}

/// A layer around publishing events (app-wide: [`crate::AppBuilder::publish_layer`]).
pub trait PublishLayer: Send + Sync + 'static {
    /// Before the event goes to the producer: add headers, keep state, or fail the publish.
    fn before(&self, _event: &mut Outgoing<'_>) -> crate::Result<()> {
        Ok(())
    }

    /// After the broker's answer (or the failure to hand the event over).
    fn after(&self, _result: &mut PublishResult<'_>) {}

    /// A transaction of a transactional producer (`Outgoing::transaction`) ended.
    fn transaction(&self, _transaction: usize, _end: TransactionEnd) {}

    /// The producer failed for good (librdkafka's fatal error) and a new one replaced it; what
    /// the old one had not delivered is sent again on the new one.
    fn producer_replaced(&self, _cause: &str) {}
}

/// The publish layers of an app.
#[derive(Clone, Default)]
pub(crate) struct PublishStack {
    layers: Arc<[Arc<dyn PublishLayer>]>,
}

impl PublishStack {
    pub(crate) fn new(layers: Vec<Arc<dyn PublishLayer>>) -> Self {
        PublishStack { layers: layers.into() }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    pub(crate) fn before(&self, event: &mut Outgoing<'_>) -> crate::Result<()> {
        for layer in self.layers.iter() {
            layer.before(event)?;
        }
        Ok(())
    }

    pub(crate) fn after(&self, result: &mut PublishResult<'_>) {
        for layer in self.layers.iter().rev() {
            layer.after(result);
        }
    }

    pub(crate) fn transaction(&self, transaction: usize, end: TransactionEnd) {
        for layer in self.layers.iter() {
            layer.transaction(transaction, end);
        }
    }

    pub(crate) fn producer_replaced(&self, cause: &str) {
        for layer in self.layers.iter() {
            layer.producer_replaced(cause);
        }
    }
}
