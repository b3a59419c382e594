//! The `eventkit dlq` command against a broker: count, list as JSON, replay.

use std::process::Command;
use std::time::Duration;

use eventkit::dlq::headers as h;
use eventkit::EmbeddedBroker;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

fn eventkit(bootstrap: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_eventkit"))
        .args(args)
        .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
        .env("KAFKA_TOPIC_PREFIX", "cli.")
        .env("EVENTKIT_GROUP_PREFIX", "cli.")
        .output()
        .unwrap();
    assert!(out.status.success(), "eventkit {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_count_list_and_replay() {
    let broker = EmbeddedBroker::start().unwrap();
    let bootstrap = broker.bootstrap_servers().to_owned();
    broker.create_topic("cli.orders", 1).unwrap();
    broker.create_topic("cli.orders.dlq", 1).unwrap();
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
    for (i, kind) in ["handler-error", "deserialization"].iter().enumerate() {
        let offset = i.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header { key: "ce_id", value: Some(format!("id-{i}").as_str()) })
            .insert(Header { key: "ce_type", value: Some("OrderPlaced") })
            .insert(Header { key: h::ERROR, value: Some("boom") })
            .insert(Header { key: h::KIND, value: Some(*kind) })
            .insert(Header { key: h::ATTEMPTS, value: Some("4") })
            .insert(Header { key: h::TOPIC, value: Some("cli.orders") })
            .insert(Header { key: h::PARTITION, value: Some("0") })
            .insert(Header { key: h::OFFSET, value: Some(offset.as_str()) })
            .insert(Header { key: h::GROUP, value: Some("cli.billing") })
            .insert(Header { key: h::HANDLER, value: Some("shop::bill") });
        let record = FutureRecord::to("cli.orders.dlq").key("k").payload(r#"{"id":1}"#).headers(headers);
        producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
    }

    assert_eq!(eventkit(&bootstrap, &["dlq", "count", "--topic", "orders"]).trim(), "2");
    assert_eq!(eventkit(&bootstrap, &["dlq", "count", "--topic", "orders", "--kind", "deserialization"]).trim(), "1");
    assert_eq!(eventkit(&bootstrap, &["dlq", "count", "--topic", "orders", "--group", "other"]).trim(), "0");
    let listed = eventkit(&bootstrap, &["dlq", "list", "--topic", "orders", "--json"]);
    let entries: Vec<serde_json::Value> = listed.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["kind"], "handler-error");
    assert_eq!(entries[0]["group"], "cli.billing");
    assert_eq!(entries[0]["handler"], "shop::bill");
    assert_eq!(entries[0]["event_id"], "id-0");
    assert_eq!(entries[0]["attempts"], 4);
    let table = eventkit(&bootstrap, &["dlq", "list", "--topic", "orders"]);
    assert!(table.contains("cli.orders.dlq: 2 entries") && table.contains("shop::bill"), "{table}");

    assert_eq!(eventkit(&bootstrap, &["dlq", "replay", "--topic", "orders", "--offset", "0:0"]).trim(), "replayed 1, already replayed 0, skipped 0");
    assert_eq!(eventkit(&bootstrap, &["dlq", "replay", "--topic", "orders", "--all"]).trim(), "replayed 1, already replayed 1, skipped 0");
    assert_eq!(eventkit(&bootstrap, &["dlq", "count", "--topic", "orders"]).trim(), "0");

    // Back on the original topic: original key, value and event id; no dead-letter headers;
    // addressed to the group and handler that failed.
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &bootstrap).set("group.id", "cli-check").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("cli.orders", 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut replayed = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while replayed.len() < 2 && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let headers: Vec<(String, String)> = m
                .headers()
                .unwrap()
                .iter()
                .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                .collect();
            assert_eq!(m.key(), Some(&b"k"[..]));
            assert_eq!(m.payload(), Some(&br#"{"id":1}"#[..]));
            replayed.push(headers);
        }
    }
    assert_eq!(replayed.len(), 2);
    for (i, headers) in replayed.iter().enumerate() {
        let get = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("ce_id"), Some(format!("id-{i}").as_str()));
        assert_eq!(get(h::REPLAY_GROUP), Some("cli.billing"));
        assert_eq!(get(h::REPLAY_HANDLER), Some("shop::bill"));
        assert_eq!(get(h::REPLAY_OF), Some(format!("cli.orders.dlq/0/{i}").as_str()));
        assert!(headers.iter().all(|(k, _)| !k.starts_with(h::PREFIX)), "{headers:?}");
    }
}
