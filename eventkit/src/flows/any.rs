//! [`AnyEvent`]: what a catch-all handler receives, whatever the event type.

use crate::flows::context::{Context, RecordInfo};
use crate::core::envelope::Metadata;
use crate::core::error::Result;
use crate::core::event::IntegrationEvent;
use crate::core::error::HandlerError;

/// An event of any type: its CloudEvents attributes, record position and JSON data.
///
/// A handler whose event argument is `AnyEvent` (or `#[handler(all)]`) receives every event on
/// the topics of its group, or on `topics = [...]`, including types no handler declares.
#[derive(Debug, Clone, PartialEq)]
pub struct AnyEvent {
    /// CloudEvents attributes and extensions.
    pub metadata: Metadata,
    /// Topic, partition, offset, key and timestamp.
    pub record: RecordInfo,
    /// The event data as JSON.
    pub data: serde_json::Value,
}

impl AnyEvent {
    /// The event type (`ce_type`; empty for records without type information).
    pub fn event_type(&self) -> &str {
        &self.metadata.event_type
    }

    /// The event id.
    pub fn id(&self) -> &str {
        &self.metadata.id
    }

    /// Whether this is an event of type `E`.
    pub fn is<E: IntegrationEvent>(&self) -> bool {
        self.metadata.event_type == E::INFO.event_type
    }

    /// The data decoded as `E`.
    ///
    /// ```
    /// #[eventkit::integration_event]
    /// #[derive(Debug, PartialEq)]
    /// pub struct Shipped { pub order: u32 }
    /// # let mut e = eventkit::AnyEvent {
    /// #     metadata: eventkit::Metadata::new("Shipped", "shop"),
    /// #     record: eventkit::RecordInfo { topic: "t".into(), partition: 0, offset: 0, key: None, timestamp_ms: None },
    /// #     data: serde_json::json!({"order": 7}),
    /// # };
    /// assert!(e.is::<Shipped>());
    /// assert_eq!(e.decode::<Shipped>().unwrap(), Shipped { order: 7 });
    /// ```
    pub fn decode<E: IntegrationEvent>(&self) -> Result<E> {
        Ok(E::deserialize(&self.data)?)
    }
}

/// Reads the record of `ctx` as an [`AnyEvent`].
#[doc(hidden)]
pub fn decode_any(ctx: &Context) -> Result<AnyEvent, HandlerError> {
    let data = if ctx.data().is_empty() {
        serde_json::Value::Null
    } else if !crate::wire::is_json_content(ctx.metadata().content_type.as_deref()) {
        // Text data (`text/plain`, ...) as a JSON string, whichever mode it came in.
        match std::str::from_utf8(ctx.data()) {
            Ok(text) => serde_json::Value::String(text.to_owned()),
            Err(_) => serde_json::from_slice(ctx.data()).map_err(HandlerError::Decode)?,
        }
    } else {
        serde_json::from_slice(ctx.data()).map_err(HandlerError::Decode)?
    };
    Ok(AnyEvent { metadata: ctx.metadata().clone(), record: ctx.record().clone(), data })
}
