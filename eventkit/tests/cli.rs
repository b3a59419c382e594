//! The `eventkit dlq` and `eventkit groups` commands against both brokers (the embedded one, and the real one named
//! by `EVENTKIT_TEST_BOOTSTRAP`): counting, listing, replaying, and what happens at the edges:
//! entries that cannot be replayed, nulls, things that do not exist, unusable arguments,
//! transaction markers, missing destination topics.

use std::process::Command;
use std::time::Duration;

use eventkit::dlq::headers as h;
use eventkit::EmbeddedBroker;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// A record as read: key, value and headers, nulls kept.
type Read = (Option<Vec<u8>>, Option<Vec<u8>>, Vec<(String, Option<Vec<u8>>)>);

/// A broker and a prefix of its own.
struct Broker {
    kind: &'static str,
    bootstrap: String,
    embedded: Option<EmbeddedBroker>,
    prefix: String,
}

impl Broker {
    fn embedded() -> Broker {
        let broker = EmbeddedBroker::start().unwrap();
        Broker { kind: "embedded", bootstrap: broker.bootstrap_servers().to_owned(), embedded: Some(broker), prefix: prefix() }
    }

    /// The real broker, or none (a failure in CI).
    fn real() -> Option<Broker> {
        match std::env::var("EVENTKIT_TEST_BOOTSTRAP") {
            Ok(b) if !b.trim().is_empty() => Some(Broker { kind: "real", bootstrap: b, embedded: None, prefix: prefix() }),
            _ if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => panic!("EVENTKIT_TEST_BOOTSTRAP is not set in CI"),
            _ => {
                eprintln!("note: EVENTKIT_TEST_BOOTSTRAP not set; the real-broker half of this test did not run (use scripts/test.sh)");
                None
            }
        }
    }

    fn both() -> Vec<Broker> {
        std::iter::once(Broker::embedded()).chain(Broker::real()).collect()
    }

    fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    async fn create(&self, name: &str) {
        let topic = self.topic(name);
        if let Some(b) = &self.embedded {
            return b.create_topic(&topic, 1).unwrap();
        }
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", &self.bootstrap).create().unwrap();
        for r in admin.create_topics(&[NewTopic::new(&topic, 1, TopicReplication::Fixed(-1))], &AdminOptions::new()).await.unwrap() {
            r.unwrap();
        }
    }

    fn producer(&self) -> FutureProducer {
        ClientConfig::new().set("bootstrap.servers", &self.bootstrap).create().unwrap()
    }

    /// Runs `eventkit ARGS`: (exit code, stdout, stderr).
    fn eventkit(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_eventkit"))
            .args(args)
            .env("KAFKA_BOOTSTRAP_SERVERS", &self.bootstrap)
            .env("KAFKA_TOPIC_PREFIX", &self.prefix)
            .env("EVENTKIT_GROUP_PREFIX", &self.prefix)
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// `eventkit ARGS`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.eventkit(args);
        assert_eq!(code, 0, "[{}] eventkit {args:?}: {err}", self.kind);
        out
    }

    /// Writes a dead letter entry for `original` (a topic without prefix) at `original_offset`.
    async fn dead_letter(&self, dlq: &str, original: &str, original_offset: i64, key: Option<&[u8]>, value: Option<&[u8]>, extra: &[(&str, Option<&str>)]) -> i64 {
        let topic = self.topic(original);
        let offset = original_offset.to_string();
        let group = format!("{}billing", self.prefix);
        let mut headers = OwnedHeaders::new();
        for (k, v) in extra {
            headers = headers.insert(Header { key: k, value: *v });
        }
        let ours: [(&str, &str); 7] = [
            (h::ERROR, "boom"),
            (h::KIND, "handler-error"),
            (h::ATTEMPTS, "4"),
            (h::TOPIC, topic.as_str()),
            (h::PARTITION, "0"),
            (h::OFFSET, offset.as_str()),
            (h::GROUP, group.as_str()),
        ];
        for (k, v) in ours {
            headers = headers.insert(Header { key: k, value: Some(v) });
        }
        headers = headers.insert(Header { key: h::HANDLER, value: Some("shop::bill") });
        self.raw(dlq, key, value, headers).await
    }

    async fn raw(&self, topic: &str, key: Option<&[u8]>, value: Option<&[u8]>, headers: OwnedHeaders) -> i64 {
        let topic = self.topic(topic);
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        self.producer().send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap().offset
    }

    /// Records on `topic` (without prefix): key, value and headers, nulls kept.
    fn read(&self, topic: &str, n: usize) -> Vec<Read> {
        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &self.bootstrap).set("group.id", format!("{}check", self.prefix)).create().unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic(topic), 0, Offset::Beginning).unwrap();
        consumer.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while out.len() < n && std::time::Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                let headers = m.headers().map(|hs| hs.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect()).unwrap_or_default();
                out.push((m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec), headers));
            }
        }
        assert_eq!(out.len(), n, "[{}] records on {topic}", self.kind);
        out
    }
}

fn prefix() -> String {
    format!("cli{}.", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_list_and_replay() {
    for b in Broker::both() {
        b.create("orders").await;
        b.create("orders.dlq").await;
        for i in 0..2 {
            b.dead_letter("orders.dlq", "orders", i, Some(b"k"), Some(br#"{"id":1}"#), &[("ce_id", Some(&format!("id-{i}"))), ("ce_type", Some("OrderPlaced"))]).await;
        }
        assert_eq!(b.ok(&["dlq", "count", "--topic", "orders"]).trim(), "2");
        assert_eq!(b.ok(&["dlq", "count", "--topic", "orders", "--kind", "handler-error", "--group", "billing"]).trim(), "2");
        assert_eq!(b.ok(&["dlq", "count", "--topic", "orders", "--group", "other"]).trim(), "0");
        let listed = b.ok(&["dlq", "list", "--topic", "orders", "--json"]);
        let entries: Vec<serde_json::Value> = listed.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(entries.len(), 2);
        assert_eq!((entries[0]["kind"].as_str(), entries[0]["handler"].as_str(), entries[0]["event_id"].as_str()), (Some("handler-error"), Some("shop::bill"), Some("id-0")));
        assert_eq!(entries[0]["key"], serde_json::json!({"text": "k"}));
        assert!(entries[0]["headers"].as_array().unwrap().iter().any(|h| h["name"] == "ce_id"), "headers are listed: {}", entries[0]);
        let table = b.ok(&["dlq", "list", "--topic", "orders"]);
        assert!(table.contains(&format!("{}orders.dlq: 2 entries", b.prefix)) && table.contains("shop::bill"), "{table}");

        assert_eq!(b.ok(&["dlq", "replay", "--topic", "orders", "--offset", "0:0"]).trim(), "replayed 1, already replayed 0, skipped 0");
        assert_eq!(b.ok(&["dlq", "replay", "--topic", "orders", "--all"]).trim(), "replayed 1, already replayed 1, skipped 0");
        assert_eq!(b.ok(&["dlq", "count", "--topic", "orders"]).trim(), "0");
        assert_eq!(b.ok(&["dlq", "count", "--topic", "orders", "--include-replayed"]).trim(), "2");

        // Back on the original topic: key, value and event id; no dead-letter headers;
        // addressed to the group and handler that failed.
        for (i, (key, value, headers)) in b.read("orders", 2).into_iter().enumerate() {
            let get = |k: &str| headers.iter().find(|(n, _)| n == k).and_then(|(_, v)| v.clone()).map(|v| String::from_utf8(v).unwrap());
            assert_eq!((key.as_deref(), value.as_deref()), (Some(&b"k"[..]), Some(&br#"{"id":1}"#[..])));
            assert_eq!(get("ce_id"), Some(format!("id-{i}")));
            assert_eq!(get(h::REPLAY_GROUP), Some(format!("{}billing", b.prefix)));
            assert_eq!(get(h::REPLAY_HANDLER).as_deref(), Some("shop::bill"));
            assert_eq!(get(h::REPLAY_OF), Some(format!("{}orders.dlq/0/{i}", b.prefix)));
            assert!(headers.iter().all(|(k, _)| !k.starts_with(h::PREFIX)), "{headers:?}");
        }
    }
}

/// `replay --all` goes on past entries it cannot replay, reports each, and exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_all_skips_and_reports_what_it_cannot_replay() {
    for b in Broker::both() {
        b.create("pay").await;
        b.create("pay.dlq").await;
        // A record eventkit did not write, then a valid entry.
        b.raw("pay.dlq", Some(b"x"), Some(b"{}"), OwnedHeaders::new().insert(Header { key: "origin", value: Some("elsewhere") })).await;
        b.dead_letter("pay.dlq", "pay", 0, Some(b"k"), Some(b"{}"), &[]).await;
        let listed: Vec<serde_json::Value> = b.ok(&["dlq", "list", "--topic", "pay", "--json"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(listed[0]["kind"], "foreign", "[{}]", b.kind);
        assert_eq!(b.ok(&["dlq", "count", "--topic", "pay", "--kind", "foreign"]).trim(), "1");
        let (code, out, err) = b.eventkit(&["dlq", "replay", "--topic", "pay", "--all"]);
        assert_eq!(code, 1, "[{}] skipped entries make the status non-zero: {err}", b.kind);
        assert_eq!(out.trim(), "replayed 1, already replayed 0, skipped 1");
        assert!(err.contains(&format!("skipped {}pay.dlq/0/0", b.prefix)) && err.contains("not an eventkit dead letter"), "{err}");
        assert_eq!(b.read("pay", 1).len(), 1, "the valid entry went");
    }
}

/// A null value (a tombstone) and null header values stay null through listing and replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nulls_stay_null() {
    for b in Broker::both() {
        b.create("users").await;
        b.create("users.dlq").await;
        b.dead_letter("users.dlq", "users", 3, Some(b"u-1"), None, &[("trace", None), ("empty", Some(""))]).await;
        let listed: serde_json::Value = serde_json::from_str(b.ok(&["dlq", "list", "--topic", "users", "--json"]).trim()).unwrap();
        assert!(listed["value"].is_null(), "[{}] {listed}", b.kind);
        let headers = listed["headers"].as_array().unwrap();
        assert!(headers.iter().any(|h| h["name"] == "trace" && h["value"].is_null()), "{listed}");
        assert!(headers.iter().any(|h| h["name"] == "empty" && h["value"] == serde_json::json!({"text": ""})), "{listed}");
        b.ok(&["dlq", "replay", "--topic", "users", "--all"]);
        let (key, value, headers) = b.read("users", 1).remove(0);
        assert_eq!((key.as_deref(), value), (Some(&b"u-1"[..]), None), "[{}] the tombstone is a tombstone again", b.kind);
        assert!(headers.contains(&("trace".into(), None)) && headers.contains(&("empty".into(), Some(Vec::new()))), "{headers:?}");
    }
}

/// What does not exist is an error (exit 1); arguments that cannot be used are usage errors (exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_found_is_an_error() {
    for b in Broker::both() {
        b.create("stock").await;
        b.create("stock.dlq").await;
        b.dead_letter("stock.dlq", "stock", 0, Some(b"k"), Some(b"{}"), &[]).await;
        b.ok(&["dlq", "replay", "--topic", "stock", "--offset", "0:0"]);
        // The replay's marker is not in the dead letter topic (it holds the one entry).
        let again = b.ok(&["dlq", "replay", "--topic", "stock", "--offset", "0:0"]);
        assert!(again.contains("already replayed 1"), "[{}] {again}", b.kind);
        let cases: [(&[&str], i32, &str); 8] = [
            (&["dlq", "count", "--topic", "nosuch.topic"], 1, "does not exist"),
            (&["dlq", "replay", "--topic", "stock", "--offset", "0:999"], 1, "no entry at 0:999"),
            (&["dlq", "replay", "--topic", "stock", "--offset", "0:1"], 1, "no entry at 0:1"),
            (&["dlq", "replay", "--topic", "stock", "--offset", "7:0"], 1, "no partition 7"),
            (&["dlq", "replay", "--topic", "stock", "--range", "0:5-2"], 2, "reversed"),
            (&["dlq", "count", "--topic", "stock", "--kind", "permanant"], 2, "unknown kind"),
            (&["dlq", "count"], 2, "--topic"),
            (&["dlq", "replay", "--topic", "stock"], 2, "choose what to replay"),
        ];
        for (args, code, says) in cases {
            let (got, _, err) = b.eventkit(args);
            assert_eq!(got, code, "[{}] eventkit {args:?}: {err}", b.kind);
            assert!(err.contains(says), "[{}] eventkit {args:?} says {err:?}", b.kind);
            assert!(!err.contains("configuration: error"), "{err}");
        }
    }
}

/// Replaying to a topic that no longer exists is refused unless asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_to_a_missing_topic_is_refused_unless_asked() {
    for b in Broker::both() {
        b.create("gone.dlq").await;
        b.create("elsewhere").await;
        b.dead_letter("gone.dlq", "gone", 0, Some(b"k"), Some(b"{}"), &[]).await;
        let (code, out, err) = b.eventkit(&["dlq", "replay", "--topic", "gone", "--all"]);
        assert_eq!((code, out.trim()), (1, "replayed 0, already replayed 0, skipped 1"), "[{}] {err}", b.kind);
        assert!(err.contains(&format!("topic `{}gone` does not exist", b.prefix)), "{err}");
        let to = b.topic("elsewhere");
        assert_eq!(b.ok(&["dlq", "replay", "--topic", "gone", "--all", "--to", &to]).trim(), "replayed 1, already replayed 0, skipped 0");
        assert_eq!(b.read("elsewhere", 1).len(), 1);
    }
}

/// A dead letter topic whose last offset is a transaction marker is read to its end at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_marker_at_the_end_does_not_stall_reading() {
    // The embedded broker does not enforce transactions; the real one does.
    let Some(b) = Broker::real() else { return };
    b.create("tx").await;
    b.create("tx.dlq").await;
    b.dead_letter("tx.dlq", "tx", 0, Some(b"k"), Some(b"{}"), &[]).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &b.bootstrap)
        .set("transactional.id", format!("{}tx", b.prefix))
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(20)).unwrap();
    producer.begin_transaction().unwrap();
    let dlq = b.topic("tx.dlq");
    producer.send(FutureRecord::to(&dlq).key("k").payload("{}").headers(OwnedHeaders::new().insert(Header { key: h::TOPIC, value: Some(b.topic("tx").as_str()) })), Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
    producer.commit_transaction(Duration::from_secs(20)).unwrap();
    // The transaction marker after the last entry ends the read (a reader that waited for an
    // entry at the marker's offset would fail with its no-progress error instead).
    assert_eq!(b.ok(&["dlq", "count", "--topic", "tx"]).trim(), "2");
}

/// `eventkit groups`: pauses go on the control topic, are listed, refused where a wider pause
/// holds, and resumed (what running apps do with them: `tests/control.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_pause_list_and_resume() {
    for b in Broker::both() {
        b.create("ticks").await;
        let out = b.ok(&["groups", "pause", "--group", "workers", "--topic", "ticks", "--partition", "0", "--by", "dave"]);
        assert!(out.contains("pause of ") && out.contains("[0] in group"), "[{}] {out}", b.kind);
        let listed = b.ok(&["groups", "holds", "--json"]);
        let holds: Vec<serde_json::Value> = listed.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(holds.len(), 1, "[{}] {listed}", b.kind);
        assert_eq!(holds[0]["group"], serde_json::json!(format!("{}workers", b.prefix)));
        assert_eq!(holds[0]["topic"], serde_json::json!(b.topic("ticks")));
        assert_eq!(holds[0]["partition"], serde_json::json!(0));
        assert!(holds[0]["by"].as_str().unwrap().starts_with("dave (command line)"), "{listed}");
        // Paused again: still one pause. A partition that does not exist, or without its topic: refused.
        b.ok(&["groups", "pause", "--group", "workers", "--topic", "ticks", "--partition", "0"]);
        let (code, _, err) = b.eventkit(&["groups", "pause", "--group", "workers", "--topic", "ticks", "--partition", "5"]);
        assert_eq!(code, 2, "[{}] {err}", b.kind);
        assert!(err.contains("has no partition 5"), "{err}");
        let (code, _, err) = b.eventkit(&["groups", "pause", "--group", "workers", "--partition", "0"]);
        assert_eq!(code, 2, "[{}] {err}", b.kind);
        // The whole topic paused: its partition cannot be resumed alone.
        b.ok(&["groups", "pause", "--group", "workers", "--topic", "ticks"]);
        let (code, _, err) = b.eventkit(&["groups", "resume", "--group", "workers", "--topic", "ticks", "--partition", "0"]);
        assert_eq!(code, 1, "[{}] {err}", b.kind);
        assert!(err.contains("stays paused by the pause of topic"), "{err}");
        let table = b.ok(&["groups", "holds", "--group", "workers"]);
        assert!(table.contains("2 paused"), "[{}] {table}", b.kind);
        // Resuming the group ends every pause in it.
        b.ok(&["groups", "resume", "--group", "workers"]);
        let table = b.ok(&["groups", "holds"]);
        assert!(table.contains("0 paused"), "[{}] {table}", b.kind);
    }
}

/// `eventkit groups replay`: the records of a time window again, addressed to one group, once
/// (the same replay asked again is answered with the first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_replay_copies_a_window_once() {
    for b in Broker::both() {
        b.create("events").await;
        let topic = b.topic("events");
        // Times of a minute ago (a broker deletes records older than its retention).
        let base = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 - 60_000;
        for (i, ts) in [base + 1_000, base + 2_000, base + 5_000].into_iter().enumerate() {
            let value = format!("{{\"n\":{i}}}");
            let record: FutureRecord<'_, str, str> = FutureRecord::to(&topic).key("k").payload(value.as_str()).timestamp(ts);
            b.producer().send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
        }
        let (from, to) = ((base + 1_500).to_string(), chrono::DateTime::from_timestamp_millis(base + 6_000).unwrap().to_rfc3339());
        let args = ["groups", "replay", "--group", "workers", "--topic", "events", "--from", &from, "--to", &to, "--by", "frank"];
        let out = b.ok(&args);
        assert!(out.contains("replayed 2 records"), "[{}] {out}", b.kind);
        let records = b.read("events", 5);
        let copies: Vec<&Read> = records.iter().filter(|(_, _, hs)| hs.iter().any(|(k, v)| k == h::REPLAY_GROUP && v.as_deref() == Some(format!("{}workers", b.prefix).as_bytes()))).collect();
        assert_eq!(copies.len(), 2, "[{}] {records:?}", b.kind);
        assert_eq!(copies.iter().map(|c| c.1.clone().unwrap()).collect::<Vec<_>>(), vec![b"{\"n\":1}".to_vec(), b"{\"n\":2}".to_vec()], "in order, values kept");
        assert!(copies.iter().all(|c| c.0.as_deref() == Some(&b"k"[..])), "keys kept");
        let out = b.ok(&args);
        assert!(out.contains("replayed 0") && out.contains("by frank"), "[{}] the same replay again: {out}", b.kind);
        let (code, _, err) = b.eventkit(&["groups", "replay", "--group", "workers", "--topic", "events", "--from", &to, "--to", &from]);
        assert_eq!(code, 2, "[{}] {err}", b.kind);
        let (code, _, err) = b.eventkit(&["groups", "replay", "--group", "workers", "--topic", "events", "--from", "noon"]);
        assert_eq!(code, 2, "[{}] {err}", b.kind);
        assert!(err.contains("not a time"), "{err}");
    }
}
