//! An AsyncAPI 3.0 document of the app, generated from the registry: `--asyncapi` on any app
//! binary, and `GET /asyncapi.json` on the admin API.
//!
//! - Channels are topics (their address is the name on the wire), with the messages of the
//!   event types published there.
//! - Operations: `send` for each event type the app registers (it may publish any of them),
//!   `receive` for each handler, with its consumer group as the Kafka binding's `groupId`.
//! - Each message's payload is the JSON Schema of its Rust type (from `schemars`, which
//!   `#[integration_event]` derives; types inside events derive `schemars::JsonSchema` too),
//!   its headers are the CloudEvents attributes of its wire format, and its Kafka key is
//!   described by the binding.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::core::config::Config;
use crate::core::event::EventInfo;
use crate::flows::handler::HandlerKind;
use crate::flows::registry::Registry;
use crate::wire::WireFormat;

/// The Kafka bindings' version.
const BINDING_VERSION: &str = "0.5.0";

/// A name usable as a component or channel key (`^[\w\d.\-_]+$`).
fn key(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect()
}

/// The headers of an event in `format`, as a JSON Schema object.
fn headers(info: &EventInfo, format: WireFormat) -> Option<Value> {
    let string = |description: &str| json!({ "type": "string", "description": description });
    match format {
        WireFormat::Binary => {
            let mut properties = Map::new();
            properties.insert("ce_specversion".into(), json!({ "type": "string", "const": "1.0", "description": "CloudEvents spec version" }));
            properties.insert("ce_id".into(), string("Event id (a UUID v7 unless given)"));
            properties.insert("ce_source".into(), string("The publishing service"));
            properties.insert("ce_type".into(), json!({ "type": "string", "const": info.event_type, "description": "Event type" }));
            properties.insert("ce_time".into(), json!({ "type": "string", "format": "date-time", "description": "When the event was published" }));
            properties.insert("content-type".into(), json!({ "type": "string", "const": "application/json" }));
            properties.insert("ce_schemaversion".into(), json!({ "type": "string", "const": info.version.to_string(), "description": "Schema version of the data" }));
            properties.insert("ce_correlationid".into(), string("The id of the event or command that started this flow"));
            properties.insert("ce_causationid".into(), string("The id of the event or command that caused this one"));
            properties.insert("ce_tenantid".into(), string("Tenant"));
            properties.insert("ce_subject".into(), string("Subject"));
            properties.insert("traceparent".into(), string("W3C trace context (CloudEvents distributed tracing extension)"));
            properties.insert("tracestate".into(), string("W3C trace state"));
            Some(json!({
                "type": "object",
                "description": "CloudEvents Kafka protocol binding, binary content mode",
                "properties": properties,
                "required": ["ce_specversion", "ce_id", "ce_source", "ce_type"],
            }))
        }
        WireFormat::Structured => Some(json!({
            "type": "object",
            "description": "CloudEvents Kafka protocol binding, structured content mode",
            "properties": { "content-type": { "type": "string", "const": "application/cloudevents+json" } },
        })),
        WireFormat::Legacy | WireFormat::Untyped => None,
    }
}

/// The payload of an event in `format`: its data, or the envelope around it.
fn payload(info: &EventInfo, format: WireFormat, data: Value) -> Value {
    let string = || json!({ "type": "string" });
    match format {
        WireFormat::Binary | WireFormat::Untyped => data,
        WireFormat::Structured => json!({
            "type": "object",
            "description": "A CloudEvent in JSON (structured mode); the event is `data`",
            "properties": {
                "specversion": { "type": "string", "const": "1.0" },
                "id": string(), "source": string(),
                "type": { "type": "string", "const": info.event_type },
                "time": { "type": "string", "format": "date-time" },
                "datacontenttype": { "type": "string", "const": "application/json" },
                "data": data,
            },
            "required": ["specversion", "id", "source", "type", "data"],
        }),
        WireFormat::Legacy => json!({
            "type": "object",
            "description": "The legacy envelope: metadata and payload in the body",
            "properties": {
                "metadata": {
                    "type": "object",
                    "properties": {
                        "event_id": string(), "event_type": { "type": "string", "const": info.event_type },
                        "event_version": string(), "timestamp": { "type": "string", "format": "date-time" },
                        "source_service": string(), "tenant_id": string(), "correlation_id": string(), "causation_id": string(),
                    },
                    "required": ["event_id", "event_type"],
                },
                "payload": data,
            },
            "required": ["metadata", "payload"],
        }),
    }
}

/// The app's AsyncAPI 3.0 document.
pub fn document(registry: &Registry, config: &Config) -> Value {
    let mut generator = schemars::generate::SchemaSettings::draft07()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let mut channels: BTreeMap<String, Value> = BTreeMap::new();
    let mut messages = Map::new();
    let mut operations = Map::new();
    // Messages by channel, for the receive operations of catch-all handlers.
    let mut on_channel: BTreeMap<String, Vec<Value>> = BTreeMap::new();

    let declared = crate::app::topics::declared(registry, config).unwrap_or_default();
    let mut events: Vec<&EventInfo> = registry.events().to_vec();
    events.sort_by_key(|e| e.event_type);
    for info in events {
        let topic = config.topic_name(info.topic);
        let channel = key(&topic);
        let message = key(info.event_type);
        let format = config.format_of(info);
        let data: Value = (info.schema)(&mut generator).into();
        let mut m = json!({
            "name": info.event_type,
            "title": info.rust_name,
            "summary": format!("`{}::{}`, schema version {}", info.module, info.rust_name, info.version),
            "contentType": if format == WireFormat::Structured { "application/cloudevents+json" } else { "application/json" },
            "payload": payload(info, format, data),
            "bindings": { "kafka": {
                "key": { "type": "string", "description": match info.key_field {
                    Some(field) => format!("The event's `{field}` field (records with the same key keep their order)"),
                    None => "The event id".to_owned(),
                } },
                "bindingVersion": BINDING_VERSION,
            } },
        });
        if let Some(h) = headers(info, format) {
            m["headers"] = h;
        }
        messages.insert(message.clone(), m);
        let entry = channels.entry(channel.clone()).or_insert_with(|| {
            let settings = declared.get(&topic).cloned().unwrap_or_default();
            let mut kafka = json!({ "topic": topic, "partitions": settings.partitions.unwrap_or(config.topic_partitions), "bindingVersion": BINDING_VERSION });
            if let Some(replicas) = settings.replication {
                kafka["replicas"] = json!(replicas);
            }
            let mut topic_configuration = Map::new();
            if let Some(policy) = &settings.cleanup_policy {
                topic_configuration.insert("cleanup.policy".into(), json!(policy.split(',').collect::<Vec<_>>()));
            }
            if let Some(ms) = settings.retention_ms {
                topic_configuration.insert("retention.ms".into(), json!(ms));
            }
            if !topic_configuration.is_empty() {
                kafka["topicConfiguration"] = Value::Object(topic_configuration);
            }
            json!({ "address": topic, "messages": {}, "bindings": { "kafka": kafka } })
        });
        entry["messages"][&message] = json!({ "$ref": format!("#/components/messages/{message}") });
        let reference = json!({ "$ref": format!("#/channels/{channel}/messages/{message}") });
        on_channel.entry(channel.clone()).or_default().push(reference.clone());
        operations.insert(
            key(&format!("send.{}", info.event_type)),
            json!({
                "action": "send",
                "summary": format!("Publishes {} events", info.event_type),
                "channel": { "$ref": format!("#/channels/{channel}") },
                "messages": [reference],
            }),
        );
    }

    for group in registry.groups(config) {
        for h in group.all_handlers() {
            let (refs, topics): (Vec<Value>, Vec<String>) = match h.event {
                Some(e) => {
                    let channel = key(&config.topic_name(e.topic));
                    (vec![json!({ "$ref": format!("#/channels/{channel}/messages/{}", key(e.event_type)) })], vec![channel])
                }
                None => {
                    let topics: Vec<String> = group.catch_all.iter().filter(|(c, _)| c.name == h.name).flat_map(|(_, t)| t.iter().map(|t| key(t))).collect();
                    (topics.iter().flat_map(|t| on_channel.get(t).cloned().unwrap_or_default()).collect(), topics)
                }
            };
            let shape = match h.kind {
                HandlerKind::Batch { max_size, .. } => format!(" in batches of up to {max_size}"),
                _ => String::new(),
            };
            for channel in topics {
                // A topic only a catch-all handler reads, with no registered event, still is a channel.
                let wire = channels.get(&channel).and_then(|c| c["address"].as_str().map(str::to_owned)).unwrap_or_else(|| channel.clone());
                channels.entry(channel.clone()).or_insert_with(|| json!({ "address": wire, "messages": {} }));
                let messages: Vec<Value> = refs.iter().filter(|r| r["$ref"].as_str().is_some_and(|r| r.starts_with(&format!("#/channels/{channel}/")))).cloned().collect();
                operations.insert(
                    key(&format!("receive.{}.{}.{channel}", group.group_id, h.name)),
                    json!({
                        "action": "receive",
                        "summary": format!("`{}` handles these events{shape} (group `{}`, ordering `{}`, concurrency {})", h.name, group.group_id, group.ordering, group.concurrency),
                        "channel": { "$ref": format!("#/channels/{channel}") },
                        "messages": messages,
                        "bindings": { "kafka": {
                            "groupId": { "type": "string", "enum": [group.group_id.clone()] },
                            "bindingVersion": BINDING_VERSION,
                        } },
                    }),
                );
            }
        }
    }

    let schemas = generator.take_definitions(true);
    let mut doc = json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": config.service_name,
            "version": "1.0.0",
            "description": format!("Integration events of `{}` (generated by eventkit {})", config.service_name, env!("CARGO_PKG_VERSION")),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": { "messages": messages, "schemas": schemas },
    });
    if let Some(servers) = config.bootstrap_servers.as_deref().filter(|_| !config.embedded) {
        let host = servers.split(',').next().unwrap_or(servers).trim();
        doc["servers"] = json!({ "kafka": { "host": host, "protocol": "kafka", "description": "Kafka bootstrap server" } });
    }
    doc
}

impl crate::app::App {
    /// The app's AsyncAPI 3.0 document (see [`crate::asyncapi`]).
    pub fn asyncapi(&self) -> Value {
        document(self.registry(), self.config())
    }
}

/// The AsyncAPI document as a surface: `--asyncapi` prints it instead of running.
struct Surface;

impl crate::app::surface::Surface for Surface {
    fn name(&self) -> &'static str {
        "asyncapi"
    }

    fn prints(&self, args: &[String], app: &crate::app::App) -> bool {
        if !args.iter().any(|a| a == "--asyncapi") {
            return false;
        }
        println!("{}", serde_json::to_string_pretty(&app.asyncapi()).expect("the document serializes"));
        true
    }
}

inventory::submit!(crate::app::surface::Entry(&Surface));
