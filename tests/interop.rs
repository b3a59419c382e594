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
    let running = target.app().groups(["interop"]).state(seen.clone()).build().unwrap().start().await.unwrap();
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
    let running = target.app().groups(["interop"]).state(seen.clone()).build().unwrap().start().await.unwrap();
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
    assert_eq!((m.schema_version.as_deref(), m.schema_major()), (Some("1.0"), Some(1)), "kept as the ERP wrote it");
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

/// The event of the conformance cases.
#[integration_event(topic = "interop.conformance", type = "conf.order", key = id)]
#[derive(Debug, Clone, PartialEq)]
pub struct ConfOrder {
    pub id: String,
}

type Conformance = Log<(String, Metadata)>;

/// Records what it read, then forwards it as a bridge would (the metadata as read), in both
/// CloudEvents modes: the official SDK must accept the copies.
#[handler(group = "conformance")]
async fn conformance(e: ConfOrder, ctx: &Context, seen: &Conformance) -> eventkit::Result<()> {
    seen.push((e.id.clone(), ctx.metadata().clone()));
    let forwarded = format!("{}.forwarded", ctx.record().topic);
    for format in [WireFormat::Binary, WireFormat::Structured] {
        ctx.publisher().send_raw(&forwarded, e.id.as_bytes(), ctx.metadata(), format, ctx.data()).await?;
    }
    Ok(())
}

/// Encodes events with the Python CloudEvents SDK.
fn sdk_encode(python: &std::path::Path, events: &[Value]) -> Vec<RawRecord> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/ce_encode.py");
    let mut child = Command::new(python).arg(script).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("python");
    let mut stdin = child.stdin.take().unwrap();
    for e in events {
        writeln!(stdin, "{e}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "ce_encode.py failed");
    let unhex = |h: &str| (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap()).collect::<Vec<u8>>();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            RawRecord {
                headers: v["headers"].as_array().unwrap().iter().map(|h| (h[0].as_str().unwrap().to_owned(), unhex(h[1].as_str().unwrap()))).collect(),
                key: v["key"].as_str().map(unhex),
                value: unhex(v["value"].as_str().unwrap()),
            }
        })
        .collect()
}

/// Hostile and foreign records read the way the spec and the official SDK read them: mixed-case
/// `ce_` names, invalid required attributes, `data_base64`, non-conforming extension names
/// (mapped, so that forwarded copies are valid), a foreign schema version kept as given.
async fn conformance_cases_agree_with_the_sdk(target: Target) {
    let Some(python) = test_python("conformance_cases_agree_with_the_sdk") else { return };
    let seen = Conformance::default();
    let running = target.app().groups(["conformance"]).state(seen.clone()).build().unwrap().start().await.unwrap();
    let topic = target.topic("interop.conformance");
    let ce = |spec: &'static str, id: &'static str, source: &'static str, ty: &'static str| vec![("ce_specversion", spec), ("ce_id", id), ("ce_source", source), ("ce_type", ty)];

    // Read by the SDK and by eventkit alike: the same raw records.
    let mixed_other: Vec<(&str, &str)> = vec![("CE_SPECVERSION", "1.0"), ("ce_ID", "other-1"), ("Ce_Source", "py"), ("CE_TYPE", "Other")];
    let mixed_ok: Vec<(&str, &str)> = vec![("CE_SPECVERSION", "1.0"), ("ce_ID", "mixed-1"), ("Ce_Source", "py"), ("ce_Type", "conf.order"), ("CE_TENANTID", "t1")];
    let hostile = [
        ("other", mixed_other),
        ("spec2", ce("2.0", "spec-1", "py", "conf.order")),
        ("nosource", ce("1.0", "nosource-1", "", "conf.order")),
        ("emptyid", ce("1.0", "", "py", "conf.order")),
    ];
    let mut raw = Vec::new();
    for (name, headers) in &hostile {
        target.produce_raw(&topic, name, headers, br#"{"id":"hostile"}"#).await;
        raw.push(RawRecord { headers: headers.iter().map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec())).collect(), key: None, value: br#"{"id":"hostile"}"#.to_vec() });
    }
    let sdk = sdk_decode(&python, &raw);
    assert_eq!(sdk[0]["attributes"]["type"], "Other", "the SDK reads CE_TYPE: {}", sdk[0]);
    for (verdict, (name, _)) in sdk[1..].iter().zip(&hostile[1..]) {
        assert!(verdict.get("error").is_some(), "the SDK rejects {name}: {verdict}");
    }
    target.produce_raw(&topic, "mixed", &mixed_ok, br#"{"id":"mixed"}"#).await;
    let mut traced = ce("1.0", "traced-1", "py", "conf.order");
    traced.extend([("ce_Trace_ID", "t-1"), ("ce_schemaversion", "1.2.0")]);
    target.produce_raw(&topic, "traced", &traced, br#"{"id":"traced"}"#).await;
    // Bytes data: the SDK writes `data_base64` in structured mode.
    let encoded = sdk_encode(&python, &[json!({"mode": "structured", "attributes": {"type": "conf.order", "source": "py", "id": "b64-1", "datacontenttype": "application/json"}, "data_hex": hex(br#"{"id":"b64"}"#)})]);
    let headers: Vec<(&str, &str)> = encoded[0].headers.iter().map(|(k, v)| (k.as_str(), std::str::from_utf8(v).unwrap())).collect();
    target.produce_raw(&topic, "b64", &headers, &encoded[0].value).await;
    // An invalid extension name and a null attribute in structured mode.
    let structured = json!({"specversion": "1.0", "id": "bad-1", "source": "py", "type": "conf.order", "Bad_Name": "v", "subject": null, "data": {"id": "badname"}});
    target.produce_raw(&topic, "badname", &[("content-type", "application/cloudevents+json")], &serde_json::to_vec(&structured).unwrap()).await;

    assert!(eventually(Duration::from_secs(60), || seen.len() >= 4).await, "[{}] {:?}", target.kind, seen.snapshot());
    let dlq = running.dead_letters();
    let mut entries = Vec::new();
    for _ in 0..100 {
        entries = dlq.list("interop.conformance", &eventkit::DlqFilter::default()).await.unwrap();
        if entries.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let forwarded = target.read_records(&format!("{topic}.forwarded"), 8);
    running.shutdown().await.unwrap();

    let mut handled: Vec<(String, Metadata)> = seen.snapshot();
    handled.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(handled.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["b64", "badname", "mixed", "traced"], "[{}]", target.kind);
    let by_id = |id: &str| &handled.iter().find(|(i, _)| i == id).unwrap().1;
    assert_eq!(by_id("mixed").tenant_id.as_deref(), Some("t1"), "CE_TENANTID is the tenant");
    assert_eq!(by_id("traced").extensions.get("traceid").map(String::as_str), Some("t-1"), "ce_Trace_ID is mapped to traceid");
    assert_eq!(by_id("traced").schema_version.as_deref(), Some("1.2.0"), "a foreign schema version is kept as given");
    assert_eq!((by_id("badname").extensions.get("badname").map(String::as_str), by_id("badname").subject.as_ref()), (Some("v"), None));
    let mut kinds: Vec<(String, String)> = entries.iter().map(|d| (d.event_id.clone().unwrap_or_default(), d.kind.clone())).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [("".into(), "envelope".into()), ("nosource-1".into(), "envelope".into()), ("other-1".into(), "unknown-type".into()), ("spec-1".into(), "envelope".into())],
        "[{}] {entries:#?}",
        target.kind
    );
    assert!(entries.iter().any(|d| d.error.contains("specversion")) && entries.iter().any(|d| d.error.contains("source")), "errors name the attribute");

    // What eventkit forwards, the SDK accepts, with the mapped names.
    for verdict in sdk_decode(&python, &forwarded) {
        assert!(verdict.get("error").is_none(), "[{}] the SDK rejected a forwarded record: {verdict}", target.kind);
        let a = &verdict["attributes"];
        match a["id"].as_str().unwrap() {
            "traced-1" => assert_eq!((a["traceid"].as_str(), a["schemaversion"].as_str()), (Some("t-1"), Some("1.2.0")), "{a}"),
            "bad-1" => assert!(a["badname"] == "v" && a.get("subject").is_none(), "{a}"),
            _ => {}
        }
    }
}
on_both_brokers!(conformance_cases_agree_with_the_sdk);

/// With legacy as the app's format (`EVENTKIT_WIRE_FORMAT=legacy`), the app reads the
/// envelopes it writes.
async fn legacy_as_the_app_format_reads_its_own_events(target: Target) {
    let seen = Seen::default();
    let mut config = eventkit::Config::default();
    config.wire_format = WireFormat::Legacy;
    let running = target.app().config(config).groups(["interop"]).state(seen.clone()).build().unwrap().start().await.unwrap();
    running.publisher().publish(&OrderBinary { order_id: "o-legacy".into(), total: 2.5 }).await.unwrap();
    // A header that would read as a CloudEvents attribute is refused, in every format.
    for header in ["ce_type", "CE_ID", "Content-Type"] {
        let refused = running.publisher().publish_with(&OrderBinary { order_id: "x".into(), total: 0.0 }, PublishOptions::default().header(header, "X")).await;
        assert!(matches!(refused, Err(eventkit::Error::Envelope(_))), "{header}: {refused:?}");
    }
    assert!(eventually(Duration::from_secs(60), || !seen.is_empty()).await, "[{}] nothing handled", target.kind);
    running.shutdown().await.unwrap();
    let body: Value = serde_json::from_slice(&target.read_records(&target.topic("interop.orders"), 1)[0].value).unwrap();
    assert_eq!(body["metadata"]["event_type"], "OrderBinary", "written as a legacy envelope");
    let (what, m, format, _) = &seen.snapshot()[0];
    assert_eq!((what.as_str(), *format, m.schema_major()), ("binary o-legacy 2.5", WireFormat::Legacy, Some(3)));
}
on_both_brokers!(legacy_as_the_app_format_reads_its_own_events);
