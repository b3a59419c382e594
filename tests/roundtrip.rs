//! Publish events of several types; every handler of every group sees exactly its events,
//! with metadata intact. On the embedded broker and on the real one.

use std::collections::BTreeSet;
use std::time::Duration;

use eventkit::{handler, integration_event, Context, IntegrationEvent, PublishOptions};
use eventkit_tests::{eventually, on_both_brokers, Log, Target};

#[integration_event(topic = "rt.orders", key = order_id, version = 2)]
#[derive(Debug, Clone, PartialEq)]
pub struct OrderPlaced {
    pub order_id: String,
    pub amount_cents: u64,
}

/// Shares the topic of `OrderPlaced`: dispatch is by type, not by topic.
#[integration_event(topic = "rt.orders", key = order_id)]
#[derive(Debug, Clone, PartialEq)]
pub struct OrderNoteAdded {
    pub order_id: String,
    pub note: String,
}

/// No key: the event id is the Kafka key.
#[integration_event(topic = "rt.cancellations")]
#[derive(Debug, Clone, PartialEq)]
pub struct OrderCancelled {
    pub order_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
struct Seen {
    handler: &'static str,
    group: String,
    order_id: String,
    ctx_id: String,
    event_type: String,
    key: Option<String>,
    topic: String,
    source: String,
    version: Option<u32>,
    correlation: Option<String>,
    tenant: Option<String>,
    has_time: bool,
}

fn seen(handler: &'static str, order_id: &str, ctx: &Context) -> Seen {
    let m = ctx.metadata();
    Seen {
        handler,
        group: ctx.group().to_owned(),
        order_id: order_id.to_owned(),
        ctx_id: ctx.event_id().to_owned(),
        event_type: m.event_type.clone(),
        key: ctx.record().key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
        topic: ctx.record().topic.to_string(),
        source: m.source.clone(),
        version: m.schema_major(),
        correlation: m.correlation_id.clone(),
        tenant: m.tenant_id.clone(),
        has_time: m.time.is_some(),
    }
}

type Journal = Log<Seen>;

#[handler(group = "billing")]
async fn bill(e: OrderPlaced, ctx: &Context, log: &Journal) {
    log.push(seen("bill", &e.order_id, ctx));
}

#[handler(group = "billing")]
async fn audit(e: OrderPlaced, ctx: &Context, log: &Journal) -> eventkit::Result<()> {
    log.push(seen("audit", &e.order_id, ctx));
    Ok(())
}

#[handler(group = "billing")]
async fn refund(e: OrderCancelled, ctx: &Context, log: &Journal) -> Result<(), std::io::Error> {
    log.push(seen("refund", &e.order_id, ctx));
    Ok(())
}

#[handler(group = "billing")]
async fn annotate(e: OrderNoteAdded, ctx: &Context, log: &Journal) {
    log.push(seen("annotate", &e.order_id, ctx));
}

#[handler(group = "shipping", ordering = "partition", concurrency = 8)]
async fn ship(e: OrderPlaced, ctx: &Context, log: &Journal) {
    log.push(seen("ship", &e.order_id, ctx));
}

const PLACED: usize = 15;
const CANCELLED: usize = 10;
const NOTES: usize = 5;

async fn round_trip(target: Target) {
    let log = Journal::default();
    let running = target.app().state(log.clone()).build().unwrap().start().await.unwrap();
    let publisher = running.publisher();

    let placed: Vec<OrderPlaced> =
        (0..PLACED).map(|i| OrderPlaced { order_id: format!("o-{i}"), amount_cents: 100 * i as u64 }).collect();
    let placed_ids: BTreeSet<String> = publisher.publish_many(&placed).await.unwrap().into_iter().map(|p| p.event_id).collect();
    let mut cancelled_ids = BTreeSet::new();
    for i in 0..CANCELLED {
        let event = OrderCancelled { order_id: format!("o-{i}"), reason: "customer".into() };
        let options = PublishOptions::default().correlation_id(format!("corr-{i}")).tenant_id("acme");
        let p = publisher.publish_with(&event, options).await.unwrap();
        assert_eq!(p.topic, target.topic("rt.cancellations"));
        cancelled_ids.insert(p.event_id);
    }
    let mut note_ids = BTreeSet::new();
    for i in 0..NOTES {
        note_ids.insert(publisher.publish(&OrderNoteAdded { order_id: format!("o-{i}"), note: "gift".into() }).await.unwrap().event_id);
    }

    let total = 3 * PLACED + CANCELLED + NOTES;
    assert!(
        eventually(Duration::from_secs(60), || log.len() >= total).await,
        "[{}] handled {} of {total}",
        target.kind,
        log.len()
    );
    // Give stray duplicates a chance to show up before counting exactly.
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.shutdown().await.unwrap();
    let log = log.snapshot();
    assert_eq!(log.len(), total, "[{}] no duplicates in a clean run", target.kind);

    let ids_of = |h: &str| -> Vec<String> { log.iter().filter(|s| s.handler == h).map(|s| s.ctx_id.clone()).collect() };
    for (handler, expected) in [("bill", &placed_ids), ("audit", &placed_ids), ("ship", &placed_ids), ("refund", &cancelled_ids), ("annotate", &note_ids)] {
        let got = ids_of(handler);
        assert_eq!(got.len(), expected.len(), "[{}] {handler} count", target.kind);
        assert_eq!(&got.into_iter().collect::<BTreeSet<_>>(), expected, "[{}] {handler} events", target.kind);
    }

    for s in &log {
        assert_eq!(s.source, "eventkit-tests");
        assert!(s.has_time, "ce_time present");
        let expected_group = if s.handler == "ship" { "shipping" } else { "billing" };
        assert_eq!(s.group, target.group(expected_group));
        match s.handler {
            "bill" | "audit" | "ship" => {
                assert_eq!(s.event_type, "OrderPlaced");
                assert_eq!(s.version, Some(2));
                assert_eq!(s.key.as_deref(), Some(s.order_id.as_str()), "partition key is order_id");
                assert_eq!(s.topic, target.topic("rt.orders"));
                assert_eq!(s.correlation.as_deref(), Some(s.ctx_id.as_str()), "a root event is its own correlation");
            }
            "refund" => {
                assert_eq!(s.event_type, "OrderCancelled");
                assert_eq!(s.version, Some(1));
                assert_eq!(s.key.as_deref(), Some(s.ctx_id.as_str()), "no key field: the event id is the key");
                let i = s.order_id.trim_start_matches("o-");
                assert_eq!(s.correlation.as_deref(), Some(format!("corr-{i}").as_str()));
                assert_eq!(s.tenant.as_deref(), Some("acme"));
            }
            "annotate" => assert_eq!(s.event_type, "OrderNoteAdded"),
            other => panic!("unexpected handler {other}"),
        }
    }
}
on_both_brokers!(round_trip);

#[test]
fn listing_shows_events_topics_keys_versions_handlers_and_groups() {
    let app = eventkit::App::builder()
        .config(eventkit::Config::default())
        .service_name("shop")
        .topic_prefix("dev.")
        .retries(5)
        .state(Journal::default())
        .build()
        .unwrap();
    let topology = app.topology();
    let placed = topology.events.iter().find(|e| e.event_type == "OrderPlaced").unwrap();
    assert_eq!(placed.topic, "dev.rt.orders");
    assert_eq!(placed.key.as_deref(), Some("order_id"));
    assert_eq!(placed.version, 2);
    assert_eq!(placed.rust_type, "roundtrip::OrderPlaced");
    assert_eq!(topology.events.iter().find(|e| e.event_type == "OrderCancelled").unwrap().key, None);
    let groups: Vec<&str> = topology.groups.iter().map(|g| g.group.as_str()).collect();
    assert_eq!(groups, ["billing", "shipping"]);
    let billing = &topology.groups[0];
    assert_eq!(billing.topics, ["dev.rt.cancellations", "dev.rt.orders"]);
    let names: BTreeSet<&str> = billing.handlers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, BTreeSet::from(["roundtrip::annotate", "roundtrip::audit", "roundtrip::bill", "roundtrip::refund"]));
    assert!(billing.handlers.iter().all(|h| h.state == [std::any::type_name::<Journal>()]));

    let table = topology.to_string();
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert!(rows.contains(&vec!["OrderPlaced", "2", "dev.rt.orders", "order_id", "binary", "roundtrip::OrderPlaced"]), "{table}");
    assert!(rows.contains(&vec!["OrderCancelled", "1", "dev.rt.cancellations", "(event", "id)", "binary", "roundtrip::OrderCancelled"]), "{table}");
    let state = std::any::type_name::<Journal>();
    assert!(rows.contains(&vec!["shipping", "dev.rt.orders", "OrderPlaced", "roundtrip::ship", "typed", "partition", "8", "5", "200ms..30s", "dlq", state]), "{table}");
    // Handlers without settings get the app's defaults: key ordering, 64 at a time.
    assert!(rows.contains(&vec!["billing", "dev.rt.orders", "OrderPlaced", "roundtrip::bill", "typed", "key", "64", "5", "200ms..30s", "dlq", state]), "{table}");
    let json: serde_json::Value = serde_json::from_str(&topology.to_json()).unwrap();
    assert_eq!(json["service"], "shop");
    assert_eq!(json["groups"][1]["handlers"][0]["name"], "roundtrip::ship");
    assert_eq!(json["groups"][1]["handlers"][0]["ordering"], "partition");
    assert_eq!(json["groups"][1]["handlers"][0]["concurrency"], 8);
    // Retry settings: the app's, where a handler sets none.
    assert_eq!(json["groups"][1]["handlers"][0]["retries"], 5);
    assert_eq!(json["groups"][1]["handlers"][0]["backoff_ms"], serde_json::json!([200, 30000]));
    assert_eq!(json["groups"][1]["handlers"][0]["exhausted"], "dlq");
    assert_eq!(json["groups"][0]["handlers"][0]["ordering"], "key");

    // Group and app settings apply to handlers that set none; a handler's own setting wins,
    // and a group honours the strictest ordering and the lowest concurrency of its handlers.
    let tuned = eventkit::App::builder()
        .config(eventkit::Config::default())
        .ordering(eventkit::Ordering::None)
        .concurrency(16)
        .group_ordering("shipping", eventkit::Ordering::Key)
        .group_concurrency("billing", 4)
        .state(Journal::default())
        .build()
        .unwrap()
        .topology();
    let of = |group: &str| {
        let g = tuned.groups.iter().find(|g| g.group == group).unwrap();
        (g.handlers[0].ordering, g.handlers[0].concurrency)
    };
    assert_eq!(of("billing"), (eventkit::Ordering::None, 4));
    assert_eq!(of("shipping"), (eventkit::Ordering::Partition, 8));
    assert_eq!(OrderPlaced::INFO.topic, "rt.orders");
}

#[test]
fn default_topic_is_snake_case_type_name() {
    #[integration_event]
    struct InvoiceSettled {
        invoice: u64,
    }
    assert_eq!(InvoiceSettled::INFO.topic, "integration-events.invoice_settled");
    assert_eq!(InvoiceSettled::INFO.event_type, "InvoiceSettled");
    assert_eq!(InvoiceSettled { invoice: 1 }.partition_key(), None);
}
