//! Tracing across services, with an in-memory OpenTelemetry exporter: one trace runs from a
//! request's span → the publish → the handler in one group → the event it cascades → the
//! handler in a second group, each span the parent of the next through the `traceparent`
//! header, attributed per the OpenTelemetry messaging conventions. And OTLP export with the
//! standard variables, to a collector that is a local HTTP endpoint.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use eventkit::{handler, integration_event, Context};
use eventkit_tests::{within, Log, Target};
use opentelemetry::trace::{SpanId, SpanKind, TraceId, TracerProvider as _};
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[integration_event(topic = "trace.orders", key = order_id)]
#[derive(Debug, Clone)]
pub struct TracedOrder {
    pub order_id: String,
}

#[integration_event(topic = "trace.invoices", key = order_id)]
#[derive(Debug, Clone)]
pub struct TracedInvoice {
    pub order_id: String,
}

#[handler(group = "trace-orders")]
async fn invoice(order: TracedOrder, ctx: &Context) -> eventkit::Result<()> {
    ctx.cascade(TracedInvoice { order_id: order.order_id });
    Ok(())
}

#[handler(group = "trace-billing")]
async fn book(invoice: TracedInvoice, booked: &Log<String>) -> eventkit::Result<()> {
    booked.push(invoice.order_id);
    Ok(())
}

/// The process-wide subscriber: an OpenTelemetry layer exporting to memory.
fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
        let tracer = provider.tracer("eventkit-tests");
        tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new("info,librdkafka=warn"))
            .with(tracing_opentelemetry::layer().with_tracer(tracer))
            .init();
        exporter
    })
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| &kv.value)
}

fn text(span: &SpanData, key: &str) -> String {
    attribute(span, key).map(|v| v.as_str().into_owned()).unwrap_or_default()
}

fn span<'a>(spans: &'a [SpanData], name: &str, trace: TraceId) -> &'a SpanData {
    spans
        .iter()
        .find(|s| s.name == name && s.span_context.trace_id() == trace)
        .unwrap_or_else(|| panic!("a span `{name}` in trace {trace}: {:?}", spans.iter().map(|s| (&s.name, s.span_context.trace_id())).collect::<Vec<_>>()))
}

async fn one_trace_across_two_groups(target: Target) {
    let exporter = exporter();
    let booked = Log::<String>::default();
    let app = target.app().groups(["trace-orders", "trace-billing"]).state(booked.clone()).build().unwrap().start().await.unwrap();
    let order_id = format!("o-{}", target.prefix);

    let root = tracing::info_span!("checkout request");
    app.publisher().publish(&TracedOrder { order_id: order_id.clone() }).instrument(root.clone()).await.unwrap();
    within(60, "the invoice is booked", async {
        while !booked.snapshot().contains(&order_id) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    drop(root);

    let (orders, invoices) = (target.topic("trace.orders"), target.topic("trace.invoices"));
    let (orders_group, billing_group) = (target.group("trace-orders"), target.group("trace-billing"));
    // Spans are exported as they end: the last process span ends just after the handler.
    let mut spans = Vec::new();
    for _ in 0..100 {
        spans = exporter.get_finished_spans().unwrap();
        let done = spans.iter().any(|s| s.name == format!("process {invoices}")) && spans.iter().any(|s| s.name == "checkout request" && s.span_context.is_valid());
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let trace = spans
        .iter()
        .find(|s| s.name == format!("process {invoices}") && text(s, "messaging.consumer.group.name") == billing_group)
        .expect("the billing group's process span")
        .span_context
        .trace_id();
    let root = span(&spans, "checkout request", trace);
    let send_order = span(&spans, &format!("send {orders}"), trace);
    let process_order = span(&spans, &format!("process {orders}"), trace);
    let send_invoice = span(&spans, &format!("send {invoices}"), trace);
    let process_invoice = span(&spans, &format!("process {invoices}"), trace);

    // Each the parent of the next, in one trace.
    assert_eq!(root.parent_span_id, SpanId::INVALID, "the request span is the root");
    assert_eq!(send_order.parent_span_id, root.span_context.span_id(), "publish is a child of the request");
    assert_eq!(process_order.parent_span_id, send_order.span_context.span_id(), "the handler continues the publisher's trace");
    assert_eq!(send_invoice.parent_span_id, process_order.span_context.span_id(), "a cascaded event is published inside its handler's span");
    assert_eq!(process_invoice.parent_span_id, send_invoice.span_context.span_id(), "the second group continues the cascade's trace");

    // Messaging conventions.
    assert_eq!(send_order.span_kind, SpanKind::Producer);
    assert_eq!(process_order.span_kind, SpanKind::Consumer);
    for s in [send_order, process_order, send_invoice, process_invoice] {
        assert_eq!(text(s, "messaging.system"), "kafka", "{s:?}");
    }
    assert_eq!(text(send_order, "messaging.operation.type"), "send");
    assert_eq!(text(send_order, "messaging.destination.name"), orders);
    assert_eq!(text(process_order, "messaging.operation.type"), "process");
    assert_eq!(text(process_order, "messaging.destination.name"), orders);
    assert_eq!(text(process_order, "messaging.consumer.group.name"), orders_group);
    assert_eq!(text(process_invoice, "messaging.consumer.group.name"), billing_group);
    assert_eq!(text(process_order, "messaging.kafka.message.key"), order_id);
    assert_eq!(text(process_order, "cloudevents.event_type"), "TracedOrder");
    assert_eq!(text(process_order, "eventkit.handler"), "trace_context::invoice");
    assert!(!text(process_order, "messaging.message.id").is_empty());
    assert!(attribute(process_order, "messaging.kafka.offset").is_some());
    assert!(!text(process_order, "messaging.destination.partition.id").is_empty());

    // The cascaded record carries the W3C context of its publish span.
    let record = target.read_records(&invoices, 1).remove(0);
    let traceparent = record.headers.iter().find(|(k, _)| k == "traceparent").map(|(_, v)| String::from_utf8_lossy(v).into_owned()).expect("a traceparent header");
    assert_eq!(traceparent, format!("00-{trace}-{}-01", send_invoice.span_context.span_id()));

    within(60, "shutdown", app.shutdown()).await.unwrap();
}

// Not `on_both_brokers!`: the exporter's subscriber must be installed before a target installs
// the tests' default one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_across_two_groups_embedded() {
    exporter();
    one_trace_across_two_groups(Target::embedded("trace")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_across_two_groups_real() {
    exporter();
    if let Some(target) = Target::real("trace") {
        one_trace_across_two_groups(target).await
    }
}

/// Without an OpenTelemetry layer recording the spans, a service passes the context it was
/// given on to the events it cascades: the trace goes on in the next service that exports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_span_context_the_incoming_trace_is_passed_on() {
    exporter();
    let target = Target::embedded("trace-pass");
    // A worker process that installs no OpenTelemetry layer: its own default logging.
    let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let out = eventkit_tests::process::out_file(&target, "pass");
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_eventkit-test-cascader"));
    worker
        .env("KAFKA_BOOTSTRAP_SERVERS", target.bootstrap())
        .env("KAFKA_TOPIC_PREFIX", &target.prefix)
        .env("EVENTKIT_GROUP_PREFIX", &target.prefix)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(std::fs::File::create(&out).unwrap()));
    let mut worker = eventkit_tests::process::start(worker);
    let orders = target.topic("trace.orders");
    target.embedded_broker().unwrap().create_topic(&orders, 1).unwrap();
    target.embedded_broker().unwrap().create_topic(&target.topic("trace.invoices"), 1).unwrap();
    let data = serde_json::json!({ "order_id": "o-pass" }).to_string();
    target
        .produce_raw(&orders, "o-pass", &[("ce_specversion", "1.0"), ("ce_id", "e-1"), ("ce_source", "shop"), ("ce_type", "TracedOrder"), ("traceparent", incoming), ("tracestate", "vendor=x")], data.as_bytes())
        .await;
    let record = target.read_records(&target.topic("trace.invoices"), 1).remove(0);
    eventkit_tests::process::sigterm(&worker);
    eventkit_tests::process::wait_exit(&mut worker, Duration::from_secs(30));
    let header = |name: &str| record.headers.iter().find(|(k, _)| k == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned());
    let log = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    assert_eq!(header("traceparent").as_deref(), Some(incoming), "the incoming context goes on:\n{log}");
    assert_eq!(header("tracestate").as_deref(), Some("vendor=x"));
}

/// With `otlp` and `OTEL_EXPORTER_OTLP_ENDPOINT`, `run()`'s default subscriber exports spans over
/// OTLP/HTTP; the collector here is an HTTP endpoint that counts what it receives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_with_the_standard_variables() {
    exporter();
    let target = Target::embedded("trace-otlp");
    let received: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    let collector = {
        let received = received.clone();
        axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let received = received.clone();
                async move {
                    let kind = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                    received.lock().unwrap().push((kind, body.len()));
                    axum::http::StatusCode::OK
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, collector).await.unwrap() });

    let out = eventkit_tests::process::out_file(&target, "otlp");
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_eventkit-test-cascader"));
    worker
        .env("KAFKA_BOOTSTRAP_SERVERS", target.bootstrap())
        .env("KAFKA_TOPIC_PREFIX", &target.prefix)
        .env("EVENTKIT_GROUP_PREFIX", &target.prefix)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(std::fs::File::create(&out).unwrap()));
    let mut worker = eventkit_tests::process::start(worker);
    let orders = target.topic("trace.orders");
    target.embedded_broker().unwrap().create_topic(&orders, 1).unwrap();
    let data = serde_json::json!({ "order_id": "o-otlp" }).to_string();
    target.produce_raw(&orders, "o-otlp", &[("ce_specversion", "1.0"), ("ce_id", "e-2"), ("ce_source", "shop"), ("ce_type", "TracedOrder")], data.as_bytes()).await;
    let mut exported = false;
    for _ in 0..300 {
        if received.lock().unwrap().iter().any(|(kind, len)| kind == "application/x-protobuf" && *len > 0) {
            exported = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventkit_tests::process::sigterm(&worker);
    eventkit_tests::process::wait_exit(&mut worker, Duration::from_secs(30));
    let log = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    assert!(exported, "spans reached the collector: {:?}\n{log}", received.lock().unwrap());
}
