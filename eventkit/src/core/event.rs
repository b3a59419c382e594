//! The [`IntegrationEvent`] trait that `#[integration_event]` implements.

use serde::{de::DeserializeOwned, Serialize};

/// Static facts about an integration event type, fixed at compile time.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct EventInfo {
    /// The event type written to `ce_type` (defaults to the Rust type name).
    pub event_type: &'static str,
    /// The Rust type name.
    pub rust_name: &'static str,
    /// The module that declares the type.
    pub module: &'static str,
    /// The topic before the configured prefix is applied.
    pub topic: &'static str,
    /// The schema version, written to the `ce_schemaversion` extension.
    pub version: u32,
    /// The field used as partition key, by its name in the event's JSON, if any (otherwise
    /// the event id is the key).
    pub key_field: Option<&'static str>,
    /// The wire format chosen by `format = "..."`, if any (otherwise the topic's or the app's).
    pub format: Option<crate::core::envelope::WireFormat>,
    /// The Rust type's identity: two declarations are the same event only if this is equal.
    #[serde(skip)]
    pub type_id: fn() -> std::any::TypeId,
    /// The Rust type's full name (with the function a type is declared in, if any).
    #[serde(skip)]
    pub type_name: fn() -> &'static str,
    /// Decodes JSON data as this event, ready to publish (the admin API's `POST /publish`);
    /// the error names the field that does not fit.
    #[doc(hidden)]
    #[serde(skip)]
    pub from_json: fn(serde_json::Value) -> std::result::Result<JsonEvent, (String, String)>,
    /// Settings for its topic (`partitions`, `replication`, `retention`, `cleanup_policy`,
    /// `compression`), applied when eventkit creates the topic.
    pub settings: crate::core::topic_settings::TopicSettings,
    /// The JSON Schema of the event's data (from its `schemars::JsonSchema` derive), added to
    /// the generator's definitions; the result refers to it.
    #[doc(hidden)]
    #[serde(skip)]
    pub schema: SchemaFn,
}

/// How an event's JSON Schema is made (with the `asyncapi` feature).
#[cfg(feature = "asyncapi")]
#[doc(hidden)]
pub type SchemaFn = fn(&mut schemars::SchemaGenerator) -> schemars::Schema;

/// Without the `asyncapi` feature, events have no JSON Schema.
#[cfg(not(feature = "asyncapi"))]
#[doc(hidden)]
pub type SchemaFn = ();

/// The schema of `E` (a reference into the generator's definitions).
#[cfg(feature = "asyncapi")]
#[doc(hidden)]
pub fn event_schema<E: schemars::JsonSchema>(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    generator.subschema_for::<E>()
}

/// An event decoded from JSON by its type (the admin API's `POST /publish`): checked against
/// its Rust type, then held as that type writes itself, with its partition key.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct JsonEvent {
    /// The event's static facts.
    pub info: &'static EventInfo,
    /// The event as its type serializes it.
    pub data: Vec<u8>,
    /// Its partition key, if its type declares one.
    pub key: Option<String>,
}

/// Decodes `value` as `E`; the error is the path of the field at fault (empty: the whole
/// value) and what is wrong.
#[doc(hidden)]
pub fn event_from_json<E: IntegrationEvent>(value: serde_json::Value) -> std::result::Result<JsonEvent, (String, String)> {
    match serde_path_to_error::deserialize::<_, E>(value) {
        Ok(event) => {
            let data = serde_json::to_vec(&event).map_err(|e| (String::new(), e.to_string()))?;
            Ok(JsonEvent { info: &E::INFO, data, key: event.partition_key() })
        }
        Err(e) => Err(json_error_path(e)),
    }
}

/// A JSON deserialization error as (the path of the field at fault, empty for the whole value;
/// the message). serde reports a missing field at its parent: the path names the field itself.
pub(crate) fn json_error_path(e: serde_path_to_error::Error<serde_json::Error>) -> (String, String) {
    let path = e.path().to_string();
    let message = e.into_inner().to_string();
    let mut path = if path == "." { String::new() } else { path };
    if let Some(field) = message.strip_prefix("missing field `").and_then(|m| m.split('`').next()) {
        path = if path.is_empty() { field.to_owned() } else { format!("{path}.{field}") };
    }
    (path, message)
}

impl PartialEq for EventInfo {
    fn eq(&self, other: &Self) -> bool {
        (self.type_id)() == (other.type_id)()
    }
}

impl Eq for EventInfo {}

/// An event that crosses service boundaries through Kafka.
///
/// Implemented by `#[integration_event]`; implementing it by hand is possible but rarely useful.
///
/// ```
/// #[eventkit::integration_event(topic = "users.created.v1", key = user_id)]
/// pub struct UserCreated { pub user_id: u64, pub email: String }
///
/// use eventkit::IntegrationEvent;
/// let e = UserCreated { user_id: 7, email: "a@b.c".into() };
/// assert_eq!(UserCreated::INFO.topic, "users.created.v1");
/// assert_eq!(UserCreated::INFO.event_type, "UserCreated");
/// assert_eq!(e.partition_key().as_deref(), Some("7"));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an integration event",
    label = "not an integration event",
    note = "annotate the type with `#[eventkit::integration_event]`"
)]
pub trait IntegrationEvent: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Type, topic, version and key of this event.
    const INFO: EventInfo;

    /// The Kafka key that decides the partition; `None` means "use the event id".
    fn partition_key(&self) -> Option<String>;
}
