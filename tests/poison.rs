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
        // Data that does not decode is dead-lettered for the handler that could not read it
        // (a replay runs that handler only); what no handler can take, for the group.
        [("deserialization", offsets[0], "poison::add"), ("deserialization", offsets[1], "poison::add"), ("unknown-type", offsets[2], ""), ("envelope", offsets[3], "")],
        "[{}] {entries:#?}",
        target.kind
    );
    assert_eq!(entries[0].value.as_deref(), Some(&b"\xff\x00 not json"[..]), "original value untouched");
    assert!(entries[2].error.contains("NoSuchEvent"), "{}", entries[2].error);
    assert_eq!(stock.handled.snapshot(), ["a", "untyped", "boom", "b", "c"], "[{}] valid events flow past poison", target.kind);
    assert_eq!(stock.panicked_once.lock().unwrap().len(), 1, "the panic happened and was retried");
    assert_eq!(target.committed(&target.group("stock"), &topic, last.partition), Some(last.offset + 1));
}
on_both_brokers!(poison_records_are_dead_lettered);

/// One huge record with a bad attribute does not block its partition. Its error is quoted in
/// a bounded way, and it is dead-lettered whole when the copy fits the broker's record limit,
/// otherwise without its value and headers but with the failure and a reference to it.
async fn a_huge_record_with_a_bad_attribute_does_not_block_its_partition(target: Target) {
    let stock = Stock::default();
    let running = target.app().state(stock.clone()).build().unwrap().start().await.unwrap();
    let topic = target.topic("poison.items");
    let key = "huge";
    let bad_time = vec![1u8; 300_000];
    let attributes = |time: &'static [u8]| -> Vec<(&'static str, &'static [u8])> {
        vec![("ce_specversion", b"1.0"), ("ce_id", b"huge-1"), ("ce_source", b"test"), ("ce_type", b"ItemAdded"), ("ce_time", time)]
    };
    let bad_time: &'static [u8] = Box::leak(bad_time.into_boxed_slice());
    // 900 KB: a 300 KB `ce_time` of control bytes and a 600 KB value.
    let (partition, big) = target.produce_raw_bytes(&topic, key, &attributes(bad_time), &vec![b'x'; 600_000]).await;
    // About the broker's record limit (Kafka's default, 1 MiB): its copy with the failure
    // headers added does not fit there.
    let (_, huge) = target.produce_raw_bytes(&topic, key, &attributes(b"never"), &vec![b'y'; 1_048_300]).await;
    let after = running.publisher().publish_with(&ItemAdded { sku: "after".into(), qty: 1 }, PublishOptions::default().key(key)).await.unwrap();
    assert_eq!(after.partition, partition, "behind the huge records");

    assert!(eventually(Duration::from_secs(60), || stock.handled.snapshot().contains(&"after".to_owned())).await, "[{}] the next event was handled", target.kind);
    let dlq = running.dead_letters();
    let mut entries = Vec::new();
    for _ in 0..100 {
        entries = dlq.list("poison.items", &eventkit::DlqFilter::default()).await.unwrap();
        if entries.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.shutdown().await.unwrap();
    assert_eq!(entries.iter().map(|d| d.original_offset).collect::<Vec<_>>(), [big, huge], "[{}] both dead-lettered", target.kind);
    for d in &entries {
        assert_eq!(d.kind, "envelope");
        assert!(d.error.len() < 1_000, "[{}] a bounded error: {} bytes", target.kind, d.error.len());
        assert_eq!((d.topic.as_str(), d.original_partition), (topic.as_str(), partition), "a reference to the original");
    }
    assert!(entries[0].error.contains("ce_time") && entries[0].error.contains("300000 bytes"), "{}", entries[0].error);
    assert_eq!((entries[0].value.as_ref().map(Vec::len), entries[0].value_omitted), (Some(600_000), None), "[{}] the 900 KB record fits, copied whole", target.kind);
    match entries[1].value_omitted {
        Some(size) => {
            assert_eq!(size, 1_048_300, "the entry says how large the value was");
            assert!(entries[1].value.is_none() && entries[1].headers.is_empty());
        }
        // A broker with a higher record limit takes the whole copy.
        None => assert!(std::env::var("EVENTKIT_TEST_BROKER").is_err() || target.kind == "embedded", "[{}] noida-db has Kafka's 1 MiB limit: the value must be left out", target.kind),
    }
    assert_eq!(target.committed(&target.group("stock"), &topic, partition), Some(after.offset + 1), "[{}] committed past both", target.kind);
}
on_both_brokers!(a_huge_record_with_a_bad_attribute_does_not_block_its_partition);

/// A tombstone (null value) with a null header is dead-lettered with both still null.
async fn a_tombstone_is_dead_lettered_as_a_tombstone(target: Target) {
    let stock = Stock::default();
    let running = target.app().state(stock.clone()).build().unwrap().start().await.unwrap();
    let topic = target.topic("poison.items");
    let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header { key: "trace", value: None::<&[u8]> });
    let record: rdkafka::producer::FutureRecord<'_, str, [u8]> = rdkafka::producer::FutureRecord::to(&topic).key("gone").headers(headers);
    target.raw_producer().send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
    let dlq = running.dead_letters();
    let mut entries = Vec::new();
    for _ in 0..100 {
        entries = dlq.list("poison.items", &eventkit::DlqFilter::default()).await.unwrap();
        if !entries.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.shutdown().await.unwrap();
    assert_eq!(entries.len(), 1, "[{}]", target.kind);
    assert_eq!((entries[0].value.as_ref(), entries[0].key.as_deref()), (None, Some(&b"gone"[..])), "[{}] still a tombstone", target.kind);
    assert_eq!(entries[0].headers, [("trace".to_owned(), None)], "[{}] the null header is still null", target.kind);
}
on_both_brokers!(a_tombstone_is_dead_lettered_as_a_tombstone);
