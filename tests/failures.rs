//! Failures never lose or block events: a permanent error, exhausted retries and a panic
//! each produce exactly one dead letter record with every header; later records continue;
//! replay brings the event back with its id, only to the group that failed, once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::DateTime;
use eventkit::{handler, integration_event, Context, DlqFilter, PublishOptions, Selection};
use eventkit_tests::{eventually, on_both_brokers, Log, Target};

#[integration_event(topic = "failures.charges", key = account)]
#[derive(Debug, Clone)]
pub struct Charge {
    pub account: String,
    pub n: u32,
}

#[derive(Clone, Default)]
struct Gateway {
    healthy: Arc<AtomicBool>,
    attempts: Arc<Mutex<HashMap<u32, u32>>>,
    handled: Log<(u32, String, Option<String>)>,
    audited: Log<String>,
}

#[handler(group = "billing", retries = 2, backoff = "10ms..40ms")]
async fn charge(e: Charge, ctx: &Context, gw: &Gateway) -> eventkit::Result<()> {
    *gw.attempts.lock().unwrap().entry(e.n).or_default() += 1;
    if !gw.healthy.load(Ordering::SeqCst) {
        match e.n {
            2 => return Err(eventkit::Error::permanent("card declined")),
            5 => return Err(eventkit::Error::msg("gateway timeout")),
            7 => panic!("bug in charge {}", e.n),
            _ => {}
        }
    }
    gw.handled.push((e.n, ctx.event_id().to_owned(), ctx.correlation_id().map(Into::into)));
    Ok(())
}

#[handler(group = "audit")]
async fn audit(_e: Charge, ctx: &Context, gw: &Gateway) {
    gw.audited.push(ctx.event_id().to_owned());
}

async fn failures_are_dead_lettered_and_replayed(target: Target) {
    let gw = Gateway::default();
    let running = target.app().state(gw.clone()).build().unwrap().start().await.unwrap();
    let publisher = running.publisher();
    let mut published = Vec::new();
    for n in 0..10 {
        let options = PublishOptions::default().correlation_id(format!("corr-{n}"));
        published.push(publisher.publish_with(&Charge { account: "acc".into(), n }, options).await.unwrap());
    }
    let topic = target.topic("failures.charges");
    let dlq = running.dead_letters();
    let filter = DlqFilter::default();
    assert!(eventually(Duration::from_secs(60), || gw.handled.len() >= 7 && gw.audited.len() >= 10).await, "[{}] handled {:?}", target.kind, gw.handled.snapshot());
    let mut entries = Vec::new();
    for _ in 0..100 {
        entries = dlq.list("failures.charges", &filter).await.unwrap();
        if entries.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Later records continued past every failure, in order.
    let handled: Vec<u32> = gw.handled.snapshot().iter().map(|h| h.0).collect();
    assert_eq!(handled, [0, 1, 3, 4, 6, 8, 9], "[{}]", target.kind);
    let attempts = gw.attempts.lock().unwrap().clone();
    assert_eq!((attempts[&2], attempts[&5], attempts[&7]), (1, 3, 3), "permanent: once; others: 1 + 2 retries");

    // Exactly one dead letter record per failure, with every header.
    assert_eq!(entries.len(), 3, "[{}] {entries:#?}", target.kind);
    let originals = target.read_records(&topic, 10);
    for (d, (n, kind, message)) in entries.iter().zip([(2, "permanent", "card declined"), (5, "handler-error", "gateway timeout"), (7, "panic", "bug in charge 7")]) {
        let p = &published[n as usize];
        assert_eq!(d.kind, kind, "[{}]", target.kind);
        assert!(d.error.contains(message), "{}", d.error);
        assert_eq!(d.attempts, attempts[&n]);
        assert_eq!((d.topic.as_str(), d.original_partition, d.original_offset), (topic.as_str(), p.partition, p.offset));
        assert_eq!(d.group, target.group("billing"));
        assert_eq!(d.handler, "failures::charge");
        assert!(d.timestamp_ms.is_some_and(|t| t > 1_600_000_000_000));
        let first = DateTime::parse_from_rfc3339(&d.first_failure).unwrap();
        let last = DateTime::parse_from_rfc3339(&d.last_failure).unwrap();
        assert!(if n == 2 { first == last } else { first < last }, "{first} {last}");
        assert_eq!(d.event_id.as_deref(), Some(p.event_id.as_str()));
        assert!(!d.replayed);
        // The original record, untouched: key, value and headers.
        let original = originals.iter().find(|r| r.headers.iter().any(|(k, v)| k == "ce_id" && v == p.event_id.as_bytes())).unwrap();
        assert_eq!(d.key, original.key);
        assert_eq!(d.value.as_deref(), Some(original.value.as_slice()));
        let headers: Vec<(String, Vec<u8>)> = d.headers.iter().map(|(k, v)| (k.clone(), v.clone().expect("no null header"))).collect();
        assert_eq!(headers, original.headers);
    }
    let dlq_topic = dlq.dlq_topic("failures.charges");
    assert_eq!(dlq_topic, format!("{topic}.dlq"));
    // The original offsets were committed (after the dead letter writes).
    assert!(eventually(Duration::from_secs(20), || target.committed(&target.group("billing"), &topic, published[9].partition) == Some(published[9].offset + 1)).await);
    assert_eq!(dlq.count("failures.charges", &DlqFilter { kind: Some("panic".into()), ..filter.clone() }).await.unwrap(), 1);

    // Replay: the handler receives the events again, with their original ids and correlation
    // ids; the audit group, which handled them, does not see them twice.
    gw.healthy.store(true, Ordering::SeqCst);
    let one = dlq.replay("failures.charges", Selection::One { partition: entries[0].partition, offset: entries[0].offset }, &filter).await.unwrap();
    assert_eq!((one.replayed, one.already_replayed), (1, 0));
    let rest = dlq.replay("failures.charges", Selection::All, &filter).await.unwrap();
    assert_eq!((rest.replayed, rest.already_replayed), (2, 1), "the entry replayed before is skipped");
    assert!(eventually(Duration::from_secs(60), || gw.handled.len() >= 10).await, "[{}] {:?}", target.kind, gw.handled.snapshot());
    let again = dlq.replay("failures.charges", Selection::All, &DlqFilter { include_replayed: true, ..filter.clone() }).await.unwrap();
    assert_eq!((again.replayed, again.already_replayed), (0, 3), "replay is idempotent");
    // The dead letter topic holds the dead letters only; the replay markers are in its
    // compacted companion, keyed by entry.
    let records_in = |topic: &str| -> i64 {
        use rdkafka::consumer::Consumer;
        let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", target.bootstrap()).create().unwrap();
        let m = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
        m.topics()[0].partitions().iter().map(|p| {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10)).unwrap();
            high - low
        }).sum()
    };
    assert_eq!(records_in(&dlq_topic), 3, "no replay markers among the dead letters");
    let markers = target.read_records(&format!("{dlq_topic}.replayed"), 3);
    let mut keys: Vec<String> = markers.iter().map(|m| String::from_utf8(m.key.clone().unwrap()).unwrap()).collect();
    keys.sort();
    let mut expected: Vec<String> = entries.iter().map(|d| format!("{}:{}", d.partition, d.offset)).collect();
    expected.sort();
    assert_eq!(keys, expected, "one marker per replayed entry");
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.shutdown().await.unwrap();

    let handled = gw.handled.snapshot();
    assert_eq!(handled.len(), 10, "each replayed once: {handled:?}");
    for (n, id, corr) in &handled[7..] {
        assert!([2, 5, 7].contains(n));
        assert_eq!(id, &published[*n as usize].event_id, "original event id");
        assert_eq!(corr.as_deref(), Some(format!("corr-{n}").as_str()), "original correlation id");
    }
    let audited = gw.audited.snapshot();
    assert_eq!(audited.len(), 10, "[{}] the audit group saw no replay", target.kind);
    assert_eq!(audited.iter().collect::<HashSet<_>>().len(), 10);
    assert_eq!(dlq.count("failures.charges", &filter).await.unwrap(), 0, "nothing left to replay");
}
on_both_brokers!(failures_are_dead_lettered_and_replayed);

#[test]
fn retry_attributes_reach_the_descriptor() {
    let h = eventkit::Registry::global().unwrap().handler("failures::charge").unwrap();
    assert_eq!(h.retry, eventkit::RetryOverrides { retries: Some(2), backoff_ms: Some((10, 40)) });
    let policy = h.retry.apply(eventkit::Config::default().retry_policy());
    assert_eq!(policy.retries, 2);
    assert_eq!(policy.max, Duration::from_millis(40));
}

/// A dead letter queue written by an earlier version, with its replay marker among the dead
/// letters: the entry still counts as replayed, and the marker is not an entry.
async fn markers_in_the_dead_letter_topic_are_still_read(target: Target) {
    let dlq_topic = target.topic("legacy.orders.dlq");
    target.create_topic("legacy.orders", 1).await;
    target.create_topic("legacy.orders.dlq", 1).await;
    let entry = [
        ("ce_specversion", "1.0"),
        ("ce_id", "e-legacy"),
        ("ce_source", "shop"),
        ("ce_type", "Charge"),
        ("eventkit-dlq-topic", &target.topic("legacy.orders") as &str),
        ("eventkit-dlq-kind", "handler-error"),
        ("eventkit-dlq-error", "boom"),
        ("eventkit-dlq-group", "billing"),
        ("eventkit-dlq-handler", "failures::charge"),
    ];
    let (partition, offset) = target.produce_raw(&dlq_topic, "k", &entry, b"{\"n\":1}").await;
    target.produce_raw(&dlq_topic, "k", &[("eventkit-dlq-replayed", &offset.to_string())], b"").await;
    let config = eventkit::Config::from_vars([("KAFKA_BOOTSTRAP_SERVERS".to_string(), target.bootstrap().to_owned()), ("KAFKA_TOPIC_PREFIX".into(), target.prefix.clone())]).unwrap();
    let dlq = eventkit::DeadLetterQueue::new(&config).unwrap();
    let all = DlqFilter { include_replayed: true, ..Default::default() };
    let entries = dlq.list("legacy.orders", &all).await.unwrap();
    assert_eq!(entries.len(), 1, "the marker is not an entry: {entries:?}");
    assert!(entries[0].replayed && (entries[0].partition, entries[0].offset) == (partition, offset));
    assert_eq!(dlq.count("legacy.orders", &DlqFilter::default()).await.unwrap(), 0);
    let report = dlq.replay("legacy.orders", Selection::All, &all).await.unwrap();
    assert_eq!((report.replayed, report.already_replayed), (0, 1));
}
on_both_brokers!(markers_in_the_dead_letter_topic_are_still_read);
