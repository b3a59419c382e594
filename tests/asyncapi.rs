//! The AsyncAPI 3.0 document: generated from the registry (events with nested types, enums,
//! options, ids and times; every wire format; typed, catch-all and batch handlers in two
//! groups), validated by the official AsyncAPI parser (`@asyncapi/parser` from npm, run with
//! Node.js; `scripts/test.sh` installs it), and printed by `--asyncapi` on an app binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use eventkit::{handler, integration_event, AnyEvent, BatchContext};
use eventkit_tests::Target;
use serde_json::{json, Value};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ShippingAddress {
    pub street: String,
    pub zip: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Carrier {
    Post,
    Courier { name: String },
}

/// An order left the warehouse.
#[integration_event(topic = "asyncapi.shipping", key = order_id, version = 2, partitions = 6, retention = "7d", cleanup_policy = "delete")]
pub struct OrderShipped {
    pub order_id: uuid::Uuid,
    pub shipped_at: chrono::DateTime<chrono::Utc>,
    pub address: ShippingAddress,
    pub carrier: Carrier,
    pub tracking: Option<String>,
    #[serde(rename = "itemCount")]
    pub item_count: u32,
}

#[integration_event(topic = "asyncapi.shipping", type = "com.example.shipping.delivered")]
pub struct OrderDelivered {
    pub order_id: uuid::Uuid,
}

#[integration_event(topic = "asyncapi.audit", format = "structured")]
pub struct AuditNote {
    pub text: String,
}

#[integration_event(topic = "asyncapi.legacy", format = "legacy")]
pub struct LegacyPing {
    pub n: u64,
}

#[handler(group = "asyncapi-mail")]
async fn mail_on_shipped(_e: OrderShipped) -> eventkit::Result<()> {
    Ok(())
}

#[handler(group = "asyncapi-mail", topics = ["asyncapi.audit"])]
async fn audit_everything(_e: AnyEvent) -> eventkit::Result<()> {
    Ok(())
}

#[handler(group = "asyncapi-stats", batch, max_size = 50, max_wait = "200ms")]
async fn count_deliveries(_b: Vec<OrderDelivered>, _ctx: &BatchContext) -> eventkit::Result<()> {
    Ok(())
}

fn parser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("asyncapi")
}

/// Runs the official parser on `doc`; `None` when it is not installed (outside CI).
fn validate(doc: &Value, name: &str) -> Option<Value> {
    let dir = parser_dir();
    if !dir.join("node_modules/@asyncapi/parser").exists() {
        if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            panic!("the AsyncAPI parser is not installed in CI (scripts/test.sh runs `npm ci` in tests/asyncapi)");
        }
        eprintln!("note: tests/asyncapi/node_modules missing: the document was not checked by the AsyncAPI parser (run scripts/test.sh, or `npm ci` in tests/asyncapi)");
        return None;
    }
    let file = std::env::temp_dir().join(format!("eventkit-asyncapi-{name}-{}.json", std::process::id()));
    std::fs::write(&file, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    let out = Command::new("node").arg(dir.join("validate.cjs")).arg(&file).output().expect("node runs");
    let _ = std::fs::remove_file(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the AsyncAPI parser rejects the document:\n{stdout}\n{}\n{}", String::from_utf8_lossy(&out.stderr), serde_json::to_string_pretty(doc).unwrap());
    let summary = stdout.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find_map(|v| v.get("summary").cloned());
    Some(summary.expect("a summary line"))
}

#[test]
fn the_document_describes_channels_operations_messages_and_passes_the_official_parser() {
    let target = Target::embedded("asyncapi");
    let app = target.app().service_name("shipping-service").build().unwrap();
    let doc = app.asyncapi();
    let shipping = target.topic("asyncapi.shipping");
    let channel = &doc["channels"][&shipping];
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["info"]["title"], "shipping-service");
    assert_eq!(channel["address"], json!(shipping));
    assert_eq!(channel["bindings"]["kafka"]["partitions"], 6);
    assert_eq!(channel["bindings"]["kafka"]["topicConfiguration"], json!({ "cleanup.policy": ["delete"], "retention.ms": 604_800_000 }));
    assert!(channel["messages"].get("OrderShipped").is_some() && channel["messages"].get("com.example.shipping.delivered").is_some(), "{channel}");

    // The payload schema comes from the Rust type, nested types included.
    let message = &doc["components"]["messages"]["OrderShipped"];
    assert_eq!(message["payload"]["$ref"], "#/components/schemas/OrderShipped");
    let schema = &doc["components"]["schemas"]["OrderShipped"];
    for field in ["order_id", "shipped_at", "address", "carrier", "itemCount"] {
        assert!(schema["required"].as_array().unwrap().contains(&json!(field)), "{field} is required: {schema}");
    }
    assert!(!schema["required"].as_array().unwrap().contains(&json!("tracking")), "an Option is not required: {schema}");
    assert_eq!(schema["properties"]["order_id"]["format"], "uuid");
    assert_eq!(schema["properties"]["shipped_at"]["format"], "date-time");
    assert_eq!(schema["properties"]["address"]["$ref"], "#/components/schemas/ShippingAddress");
    assert!(doc["components"]["schemas"]["ShippingAddress"]["properties"]["zip"].is_object());
    assert!(doc["components"]["schemas"]["Carrier"].is_object());

    // CloudEvents headers and the Kafka key.
    let headers = &message["headers"];
    assert_eq!(headers["properties"]["ce_type"]["const"], "OrderShipped");
    assert_eq!(headers["properties"]["ce_schemaversion"]["const"], "2");
    assert_eq!(headers["required"], json!(["ce_specversion", "ce_id", "ce_source", "ce_type"]));
    assert!(message["bindings"]["kafka"]["key"]["description"].as_str().unwrap().contains("`order_id`"));
    assert_eq!(doc["components"]["messages"]["AuditNote"]["contentType"], "application/cloudevents+json");
    assert_eq!(doc["components"]["messages"]["AuditNote"]["payload"]["properties"]["data"]["$ref"], "#/components/schemas/AuditNote");
    assert!(doc["components"]["messages"]["LegacyPing"]["payload"]["properties"]["metadata"].is_object());

    // Operations: send per event type, receive per handler with its group.
    let ops = doc["operations"].as_object().unwrap();
    assert_eq!(ops["send.OrderShipped"]["action"], "send");
    let receive: Vec<(&String, &Value)> = ops.iter().filter(|(_, o)| o["action"] == "receive").collect();
    let mail = target.group("asyncapi-mail");
    let by_handler = |name: &str| receive.iter().find(|(id, _)| id.contains(name)).map(|(_, o)| *o).unwrap_or_else(|| panic!("a receive operation of {name}: {ops:?}"));
    assert_eq!(by_handler("mail_on_shipped")["bindings"]["kafka"]["groupId"]["enum"], json!([mail]));
    assert_eq!(by_handler("mail_on_shipped")["messages"], json!([{ "$ref": format!("#/channels/{shipping}/messages/OrderShipped") }]));
    assert_eq!(by_handler("audit_everything")["messages"].as_array().unwrap().len(), 1, "a catch-all handler receives its topic's events");
    assert!(by_handler("count_deliveries")["summary"].as_str().unwrap().contains("batches of up to 50"));

    let Some(summary) = validate(&doc, "registry") else { return };
    assert_eq!(summary["version"], "3.0.0");
    let channels = summary["channels"].as_array().unwrap();
    for topic in ["asyncapi.shipping", "asyncapi.audit", "asyncapi.legacy"] {
        assert!(channels.contains(&json!(target.topic(topic))), "{topic} in {channels:?}");
    }
    let shipped = summary["messages"].as_array().unwrap().iter().find(|m| m["name"] == "OrderShipped").expect("OrderShipped parsed");
    assert_eq!(shipped["payload"]["properties"]["address"]["properties"]["zip"]["type"], "string", "the parser resolves nested schemas: {shipped}");
    assert!(shipped["headers"].as_array().unwrap().contains(&json!("ce_id")));
    let ops = summary["operations"].as_array().unwrap();
    assert!(ops.iter().any(|o| o["action"] == "receive" && o["messages"] == json!(["OrderShipped"])), "{ops:?}");
}

#[test]
fn an_app_binary_prints_its_document_with_asyncapi() {
    let out = Command::new(env!("CARGO_BIN_EXE_eventkit-test-worker"))
        .arg("--asyncapi")
        .env("KAFKA_SERVICE_NAME", "worker-service")
        .env("WORKER_OUT", std::env::temp_dir().join("eventkit-asyncapi-worker.out"))
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .output()
        .expect("the worker runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("JSON on stdout ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(doc["info"]["title"], "worker-service");
    assert!(doc["operations"].as_object().unwrap().values().any(|o| o["action"] == "receive"), "{doc}");
    validate(&doc, "worker");
}
