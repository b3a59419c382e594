//! [`BatchContext`]: the records behind a batch handler's events.

use std::any::Any;

use crate::flows::context::Context;
use crate::core::error::{Error, Result};
use crate::core::event::IntegrationEvent;
use crate::core::error::HandlerError;

/// The contexts of a batch, one per event, in the order of the events (partition order).
#[derive(Debug, Clone)]
pub struct BatchContext {
    pub(crate) items: Vec<Context>,
}

impl BatchContext {
    /// How many events the batch holds.
    pub fn len(&self) -> usize {
        self.items.len()
    }
    /// Whether the batch is empty (never, for a delivered batch).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// The context (metadata, record, group) of event `index`.
    pub fn get(&self, index: usize) -> Option<&Context> {
        self.items.get(index)
    }
    /// Every event's context.
    pub fn contexts(&self) -> &[Context] {
        &self.items
    }
    /// The first event's context (extractors of batch handlers are built from it).
    pub fn first(&self) -> &Context {
        &self.items[0]
    }
    /// App state of type `T`.
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.first().state::<T>()
    }
}

/// Decodes every event of the batch; the index of an event that does not decode is reported.
#[doc(hidden)]
pub fn decode_batch<E: IntegrationEvent>(batch: &BatchContext) -> Result<Vec<E>, HandlerError> {
    batch
        .items
        .iter()
        .enumerate()
        .map(|(index, ctx)| serde_json::from_slice(ctx.data()).map_err(|source| HandlerError::DecodeAt { index, source }))
        .collect()
}

/// `&T` arguments of batch handlers: `&BatchContext` itself, `&Context` (the first event's),
/// or a reference into app state.
#[doc(hidden)]
pub fn extract_batch_ref<T: Send + Sync + 'static>(batch: &BatchContext) -> Result<&T> {
    if let Some(batch) = (batch as &dyn Any).downcast_ref::<T>() {
        return Ok(batch);
    }
    crate::flows::extract::extract_ref::<T>(batch.first())
}

/// Requirements of a `&T` argument of a batch handler.
#[doc(hidden)]
pub fn require_batch_ref<T: Send + Sync + 'static>(requirements: &mut crate::core::state::Requirements) {
    if std::any::TypeId::of::<T>() != std::any::TypeId::of::<BatchContext>() {
        crate::flows::extract::require_ref::<T>(requirements);
    }
}

impl Error {
    /// A batch handler's partial failure: events `0..succeeded` were handled, event
    /// `succeeded` failed with `error`, and the events after it were not handled. Only the
    /// failed event and those after it are retried (or the failed one dead-lettered).
    pub fn batch_failed_at(succeeded: usize, error: impl Into<crate::core::error::BoxError>) -> Self {
        Error::BatchFailedAt { succeeded, source: error.into() }
    }
}
