//! Interoperability: eventkit's records are valid CloudEvents for the official SDK in both
//! content modes; CloudEvents made by the SDK and legacy envelopes sent by a Python aiokafka
//! producer reach eventkit handlers with every attribute intact; every envelope round-trips.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use eventkit::{handler, integration_event, Context, Metadata, PublishOptions, WireFormat};
use eventkit_tests::{eventually, on_both_brokers, test_python, Log, RawRecord, Target};
use serde_json::{json, Value};

#[integration_event(topic = "interop.orders", key = order_id, version = 3)]
#[derive(Debug, Clone, PartialEq)]
pub struct OrderBinary {
    pub order_id: String,
    pub total: f64,
}

#[integration_event(topic = "interop.orders.structured", key = order_id, format = "structured")]
#[derive(Debug, Clone, PartialEq)]
pub struct OrderStructured {
    pub order_id: String,
    pub total: f64,
}

#[integration_event(topic = "interop.orders.legacy", key = order_id, version = 2, format = "legacy")]
#[derive(Debug, Clone, PartialEq)]
pub struct OrderLegacy {
    pub order_id: String,
    pub total: f64,
}

/// What a Python service publishes with the CloudEvents SDK.
#[integration_event(topic = "interop.sdk", type = "com.example.sdk.order", key = order_id)]
#[derive(Debug, Clone, PartialEq)]
pub struct SdkOrder {
    pub order_id: String,
    pub total: f64,
}

/// What the ERP inventory service publishes in its body envelope.
#[integration_event(topic = "interop.erp", type = "inventory.low_stock", key = product_id, format = "legacy")]
#[derive(Debug, Clone, PartialEq)]
pub struct LowStock {
    pub product_id: String,
    pub product_sku: String,
    pub current_stock: u32,
    pub reorder_point: u32,
}

type Seen = Log<(String, Metadata, WireFormat, Option<Vec<u8>>)>;

fn record(seen: &Seen, what: String, ctx: &Context) {
    seen.push((what, ctx.metadata().clone(), ctx.format(), ctx.record().key.as_deref().map(<[u8]>::to_vec)));
}

#[handler(group = "interop")]
async fn on_binary(e: OrderBinary, ctx: &Context, seen: &Seen) {
    record(seen, format!("binary {} {}", e.order_id, e.total), ctx);
}
#[handler(group = "interop")]
async fn on_structured(e: OrderStructured, ctx: &Context, seen: &Seen) {
    record(seen, format!("structured {} {}", e.order_id, e.total), ctx);
}
#[handler(group = "interop")]
async fn on_legacy(e: OrderLegacy, ctx: &Context, seen: &Seen) {
    record(seen, format!("legacy {} {}", e.order_id, e.total), ctx);
}
#[handler(group = "interop")]
async fn on_sdk(e: SdkOrder, ctx: &Context, seen: &Seen) {
    record(seen, format!("sdk {} {}", e.order_id, e.total), ctx);
}
#[handler(group = "interop")]
async fn on_low_stock(e: LowStock, ctx: &Context, seen: &Seen) {
    record(seen, format!("low_stock {} {} {}/{}", e.product_id, e.product_sku, e.current_stock, e.reorder_point), ctx);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes records with the Python CloudEvents SDK.
fn sdk_decode(python: &std::path::Path, records: &[RawRecord]) -> Vec<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/ce_decode.py");
    let mut child = Command::new(python).arg(script).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("python");
    let mut stdin = child.stdin.take().unwrap();
    for r in records {
        let headers: Vec<(String, String)> = r.headers.iter().map(|(k, v)| (k.clone(), hex(v))).collect();
        let line = json!({"headers": headers, "key": r.key.as_deref().map(hex), "value": hex(&r.value)});
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "ce_decode.py failed");
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

async fn eventkit_records_are_valid_cloudevents(target: Target) {
    let Some(python) = test_python("eventkit_records_are_valid_cloudevents") else { return };
    let seen = Seen::default();
    let running = target.app().state(seen.clone()).build().unwrap().start().await.unwrap();
    let publisher = running.publisher();
    let options = || PublishOptions::default().correlation_id("corr-1").tenant_id("acme").subject("order-7");
    let b = publisher.publish_with(&OrderBinary { order_id: "o-7".into(), total: 9.5 }, options()).await.unwrap();
    let s = publisher.publish_with(&OrderStructured { order_id: "o-8".into(), total: 1.25 }, options()).await.unwrap();
    let l = publisher.publish_with(&OrderLegacy { order_id: "o-9".into(), total: 3.0 }, options()).await.unwrap();

    for (topic, id, mode, ty, version, data) in [
        ("interop.orders", &b.event_id, "binary", "OrderBinary", "3", json!({"order_id": "o-7", "total": 9.5})),
        ("interop.orders.structured", &s.event_id, "structured", "OrderStructured", "1", json!({"order_id": "o-8", "total": 1.25})),
    ] {
        let records = target.read_records(&target.topic(topic), 1);
        let decoded = &sdk_decode(&python, &records)[0];
        assert!(decoded.get("error").is_none(), "[{}] SDK rejected the {mode} record: {decoded}", target.kind);
        assert_eq!(decoded["mode"], mode);
        let a = &decoded["attributes"];
        assert_eq!(a["specversion"], "1.0");
        assert_eq!(a["id"], id.as_str());
        assert_eq!(a["type"], ty);
        assert_eq!(a["source"], "eventkit-tests");
        assert_eq!(a["subject"], "order-7");
        assert_eq!(a["correlationid"], "corr-1");
        assert_eq!(a["tenantid"], "acme");
        assert_eq!(a["schemaversion"].to_string().trim_matches('"'), version);
        assert!(a["datacontenttype"].as_str().unwrap().starts_with("application/json"), "{a}");
        assert!(a["time"].as_str().unwrap().starts_with("20"), "{a}");
        assert_eq!(decoded["data"], data, "[{}] {mode} data", target.kind);
    }
    let legacy = target.read_records(&target.topic("interop.orders.legacy"), 1).remove(0);
    let body: Value = serde_json::from_slice(&legacy.value).unwrap();
    assert_eq!(body["metadata"]["event_id"], l.event_id.as_str());
    assert_eq!(body["metadata"]["event_type"], "OrderLegacy");
    assert_eq!(body["metadata"]["event_version"], "2.0");
    assert_eq!(body["metadata"]["source_service"], "eventkit-tests");
    assert_eq!(body["metadata"]["correlation_id"], "corr-1");
    assert_eq!(body["payload"], json!({"order_id": "o-9", "total": 3.0}));

    // And eventkit reads its own records back in every format.
    assert!(eventually(Duration::from_secs(60), || seen.len() >= 3).await, "[{}] {:?}", target.kind, seen.snapshot());
    running.shutdown().await.unwrap();
    let mut got = seen.snapshot();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let summary: Vec<(&str, WireFormat)> = got.iter().map(|(w, _, f, _)| (w.as_str(), *f)).collect();
    assert_eq!(summary, [("binary o-7 9.5", WireFormat::Binary), ("legacy o-9 3", WireFormat::Legacy), ("structured o-8 1.25", WireFormat::Structured)]);
    for ((_, m, _, key), id) in got.iter().zip([&b.event_id, &l.event_id, &s.event_id]) {
        assert_eq!(&m.id, id);
        assert_eq!(m.correlation_id.as_deref(), Some("corr-1"));
        assert_eq!(m.tenant_id.as_deref(), Some("acme"));
        assert_eq!(m.subject.as_deref(), Some("order-7"));
        assert_eq!(m.source, "eventkit-tests");
        assert!(m.time.is_some());
        assert!(key.as_deref().unwrap().starts_with(b"o-"));
    }
}
on_both_brokers!(eventkit_records_are_valid_cloudevents);

async fn sdk_and_legacy_events_from_python_are_handled(target: Target) {
    let Some(python) = test_python("sdk_and_legacy_events_from_python_are_handled") else { return };
    let seen = Seen::default();
    let running = target.app().state(seen.clone()).build().unwrap().start().await.unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/produce.py");
    let out = Command::new(&python)
        .args([script, target.bootstrap(), &target.topic("interop.sdk"), &target.topic("interop.erp")])
        .output()
        .expect("python");
    assert!(out.status.success(), "produce.py: {}", String::from_utf8_lossy(&out.stderr));

    assert!(eventually(Duration::from_secs(60), || seen.len() >= 3).await, "[{}] {:?}", target.kind, seen.snapshot());
    running.shutdown().await.unwrap();
    let mut got = seen.snapshot();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got.len(), 3);

    let (what, m, format, key) = &got[0];
    assert_eq!(what, "low_stock PRD-123 LAP-001 3/10");
    assert_eq!(*format, WireFormat::Legacy);
    assert_eq!(key.as_deref(), Some(&b"PRD-123"[..]));
    assert_eq!(m.id, "evt-123456");
    assert_eq!(m.event_type, "inventory.low_stock");
    assert_eq!(m.schema_version, Some(1));
    assert_eq!(m.source, "inventory-service");
    assert_eq!(m.tenant_id.as_deref(), Some("tenant-1"));
    assert_eq!(m.correlation_id.as_deref(), Some("corr-789"));
    assert_eq!(m.time.unwrap().to_rfc3339(), "2024-01-15T10:00:00+00:00");
    assert_eq!(m.extensions.get("priority").map(String::as_str), Some("high"));

    for ((what, m, format, key), (n, expected_format)) in got[1..].iter().zip([(1, WireFormat::Binary), (2, WireFormat::Structured)]) {
        assert_eq!(what, &format!("sdk py-{n} 12.5"));
        assert_eq!(*format, expected_format, "[{}]", target.kind);
        assert_eq!(m.id, format!("sdk-{n}"));
        assert_eq!(m.event_type, "com.example.sdk.order");
        assert_eq!(m.source, "/python/orders");
        assert_eq!(m.spec_version, "1.0");
        assert_eq!(m.subject.as_deref(), Some(format!("order-{n}").as_str()));
        assert_eq!(m.correlation_id.as_deref(), Some(format!("corr-{n}").as_str()));
        assert_eq!(m.tenant_id.as_deref(), Some("t-py"));
        assert_eq!(m.time.unwrap().to_rfc3339(), "2026-01-02T03:04:05+00:00");
        assert_eq!(m.extensions.get("priority").map(String::as_str), Some("high"), "{m:?}");
        assert!(m.content_type.as_deref().unwrap().contains("json"));
        assert_eq!(key.as_deref(), Some(format!("order-{n}").as_bytes()));
    }
}
on_both_brokers!(sdk_and_legacy_events_from_python_are_handled);
