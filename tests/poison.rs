//! Records eventkit cannot handle never stop a consumer: garbage bytes, an unknown event
//! type, a malformed envelope go to the dead letter queue with their error kind; a panicking handler is
//! a failed attempt, not a crash. Later events keep flowing.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventkit::{handler, integration_event, Context, PublishOptions};
use eventkit_tests::{eventually, on_both_brokers, Log, Target};

#[integration_event(topic = "poison.items", key = sku)]
#[derive(Debug, Clone)]
pub struct ItemAdded {
    pub sku: String,
    pub qty: u32,
}

#[derive(Clone, Default)]
struct Stock {
    handled: Log<String>,
    panicked_once: Arc<Mutex<HashSet<String>>>,
}

#[handler(group = "stock")]
async fn add(e: ItemAdded, ctx: &Context, stock: &Stock) {
    if e.sku == "boom" && stock.panicked_once.lock().unwrap().insert(ctx.event_id().to_owned()) {
        panic!("simulated bug while handling {}", ctx.event_id());
    }
    stock.handled.push(e.sku);
}

async fn poison_records_are_dead_lettered(target: Target) {
    let stock = Stock::default();
    let running = target.app().state(stock.clone()).build().unwrap().start().await.unwrap();
    let publisher = running.publisher();
    let topic = target.topic("poison.items");
    let key = "same-partition";
    let ce = |ty: &'static str, id: &'static str| vec![("ce_specversion", "1.0"), ("ce_id", id), ("ce_source", "test"), ("ce_type", ty)];

    let first = publisher
        .publish_with(&ItemAdded { sku: "a".into(), qty: 1 }, PublishOptions::default().key(key))
        .await
        .unwrap();
    let p1 = target.produce_raw(&topic, key, &ce("ItemAdded", "garbage-1"), b"\xff\x00 not json").await;
    let p2 = target.produce_raw(&topic, key, &ce("ItemAdded", "wrong-shape"), br#"{"sku": 5}"#).await;
    let p3 = target.produce_raw(&topic, key, &ce("NoSuchEvent", "unknown-1"), br#"{"sku":"x","qty":1}"#).await;
    // No type information at all, on a topic with one event type: it is that type.
    let p4 = target.produce_raw(&topic, key, &[], br#"{"sku":"untyped","qty":1}"#).await;
    let p5 = target.produce_raw(&topic, key, &[("ce_type", "ItemAdded"), ("ce_time", "yesterday")], br#"{"sku":"x","qty":1}"#).await;
    for (p, _) in [p1, p2, p3, p4, p5] {
        assert_eq!(p, first.partition, "all on one partition, behind each other");
    }
    let mut last = None;
    for sku in ["boom", "b", "c"] {
        let options = PublishOptions::default().key(key);
        last = Some(publisher.publish_with(&ItemAdded { sku: sku.into(), qty: 1 }, options).await.unwrap());
    }
    let last = last.unwrap();

    assert!(
        eventually(Duration::from_secs(60), || stock.handled.len() >= 5).await,
        "[{}] handled {:?}",
        target.kind,
        stock.handled.snapshot()
    );
    let dlq = running.dead_letters();
    let entries = dlq.list("poison.items", &eventkit::DlqFilter::default()).await.unwrap();
    running.shutdown().await.unwrap();
    let kinds: Vec<(&str, i64, &str)> = entries.iter().map(|d| (d.kind.as_str(), d.original_offset, d.handler.as_str())).collect();
    let offsets: Vec<i64> = [p1, p2, p3, p5].iter().map(|(_, o)| *o).collect();
    assert_eq!(
        kinds,
        [("deserialization", offsets[0], ""), ("deserialization", offsets[1], ""), ("unknown-type", offsets[2], ""), ("envelope", offsets[3], "")],
        "[{}] {entries:#?}",
        target.kind
    );
    assert_eq!(entries[0].value, b"\xff\x00 not json", "original value untouched");
    assert!(entries[2].error.contains("NoSuchEvent"), "{}", entries[2].error);
    assert_eq!(stock.handled.snapshot(), ["a", "untyped", "boom", "b", "c"], "[{}] valid events flow past poison", target.kind);
    assert_eq!(stock.panicked_once.lock().unwrap().len(), 1, "the panic happened and was retried");
    assert_eq!(target.committed(&target.group("stock"), &topic, last.partition), Some(last.offset + 1));
}
on_both_brokers!(poison_records_are_dead_lettered);
