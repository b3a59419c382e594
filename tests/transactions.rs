//! Exactly once consume → produce (a transactional group) on a broker that implements Kafka
//! transactions (noida-db, or any real Kafka; the embedded mock cluster does not enforce them):
//! what an attempt published before it failed is never visible to `read_committed` readers, and
//! the retry produces each event once, with the consumed offset committed in the same
//! transaction.

use std::time::Duration;

use eventkit::{handler, integration_event, Context, Error};
use eventkit_tests::{eventually, Log, Target};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

#[integration_event(topic = "txn.payments", key = account)]
#[derive(Debug, Clone)]
pub struct PaymentReceived {
    pub account: String,
    pub n: u32,
}

#[integration_event(topic = "txn.ledger", key = account)]
#[derive(Debug, Clone)]
pub struct LedgerEntry {
    pub account: String,
    pub n: u32,
    pub part: u32,
}

#[derive(Clone, Default)]
struct Attempts(Log<u32>);

/// Publishes part 1 at once (inside the transaction), cascades part 2; the first attempt at
/// payment 3 fails after part 1 went out.
#[handler(group = "txn-ledger", retries = 5, backoff = "10ms..50ms")]
async fn book(p: PaymentReceived, ctx: &Context, attempts: &Attempts) -> eventkit::Result<LedgerEntry> {
    attempts.0.push(p.n);
    ctx.publish(&LedgerEntry { account: p.account.clone(), n: p.n, part: 1 }).await?;
    if p.n == 3 && attempts.0.snapshot().iter().filter(|n| **n == 3).count() == 1 {
        return Err(Error::msg("ledger database timed out"));
    }
    Ok(LedgerEntry { account: p.account, n: p.n, part: 2 })
}

#[derive(Clone, Default)]
struct Reader(Log<(u32, u32)>);

#[handler(group = "txn-reader")]
async fn read(e: LedgerEntry, reader: &Reader) {
    reader.0.push((e.n, e.part));
}

/// Every ledger record on the topic, aborted ones included (`read_uncommitted`).
fn read_uncommitted(target: &Target, topic: &str, at_least: usize) -> Vec<(u32, u32)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", target.bootstrap())
        .set("group.id", format!("{}uncommitted", target.prefix))
        .set("isolation.level", "read_uncommitted")
        .create()
        .unwrap();
    let partitions = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap().topics()[0].partitions().len() as i32;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    while out.len() < at_least && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let e: LedgerEntry = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
            out.push((e.n, e.part));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_leaves_nothing_visible_and_the_retry_produces_once() {
    let Some(target) = Target::real("transactions") else { return };
    let (attempts, reader) = (Attempts::default(), Reader::default());
    let running = target
        .app()
        .groups(["txn-ledger"])
        .transactional_group("txn-ledger")
        .state(attempts.clone())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    for n in 0..6 {
        running.publisher().publish(&PaymentReceived { account: "acct-1".into(), n }).await.unwrap();
    }
    let committed = || (0..3).filter_map(|p| target.committed(&target.group("txn-ledger"), &target.topic("txn.payments"), p)).sum::<i64>();
    let done = eventually(Duration::from_secs(60), || attempts.0.len() >= 7 && committed() == 6).await;
    running.shutdown().await.unwrap();
    assert!(done, "attempts {:?}, committed {}", attempts.0.snapshot(), committed());

    // The reader starts afterwards: noida-db 0.2.3 stalls a read_committed fetch that waits on
    // a transaction which then aborts (a consumer that starts later reads past it; Kafka
    // serves both).
    let running = target.app().groups(["txn-reader"]).state(reader.clone()).build().unwrap().start().await.unwrap();
    let done = eventually(Duration::from_secs(60), || reader.0.len() >= 12).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.shutdown().await.unwrap();
    assert!(done, "read_committed saw {:?}; attempts {:?}", reader.0.snapshot(), attempts.0.snapshot());

    let mut seen = reader.0.snapshot();
    seen.sort();
    let expected: Vec<(u32, u32)> = (0..6).flat_map(|n| [(n, 1), (n, 2)]).collect();
    assert_eq!(seen, expected, "each entry once for read_committed readers, none from the aborted attempt");
    assert_eq!(attempts.0.snapshot().iter().filter(|n| **n == 3).count(), 2, "payment 3 was tried twice");
    // The aborted attempt did write its part 1: a read_uncommitted reader sees it.
    let all = read_uncommitted(&target, &target.topic("txn.ledger"), 13);
    assert_eq!(all.iter().filter(|e| **e == (3, 1)).count(), 2, "the aborted write is on the log: {all:?}");
}

/// A transactional worker killed with SIGKILL six times while 3,000 ticks flow (restarted each
/// time, its static membership keeping its `transactional.id`, so that a restarted instance
/// fences its predecessor's open transaction): a `read_committed` reader afterwards sees
/// exactly one echo per tick. The group's offsets move only through its transactions; a commit
/// outside them could land after a later transaction's and set the offset back, and the
/// records after it would be handled, and echoed, twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_never_commit_a_duplicate_follow_up() {
    use eventkit_tests::process::{self, out_file, seqs, sigterm, start, wait_exit, wait_for};
    use std::collections::{BTreeMap, HashSet};
    const EVENTS: u32 = 3_000;
    let Some(target) = Target::real("txn-crash") else { return };
    target.create_topic("process.ticks", 3).await;
    target.create_topic("process.echoes", 3).await;
    let out = out_file(&target, "txn-crash");
    let flow = {
        let app = target.app().groups([]).build().unwrap().start().await.unwrap();
        tokio::spawn(async move {
            let publisher = app.publisher();
            for chunk in 0..EVENTS / 100 {
                let ticks: Vec<eventkit_tests::Tick> = (chunk * 100..(chunk + 1) * 100).map(|seq| eventkit_tests::Tick { key: format!("k{}", seq % 16), seq }).collect();
                publisher.publish_many(&ticks).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            app.shutdown().await.unwrap();
        })
    };
    let worker = |delay_us: u32| {
        let mut c = process::worker(env!("CARGO_BIN_EXE_eventkit-test-worker"), &target, &out, delay_us);
        c.env("WORKER_GROUP", "txn-workers").env("EVENTKIT_TRANSACTIONAL_GROUPS", "txn-workers").env("RUST_LOG", "error").stdout(std::process::Stdio::null());
        c
    };
    for round in 0..6 {
        let before = seqs(&out).len();
        let mut child = start(worker(500));
        wait_for(&out, "progress", Duration::from_secs(120), |h| h.len() >= before + 150 || h.iter().collect::<HashSet<_>>().len() as u32 >= EVENTS).await;
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..400))).await;
        child.kill().unwrap();
        child.wait().unwrap();
        eprintln!("txn crash round {round}: killed after {} handled", seqs(&out).len());
    }
    let mut child = start(worker(0));
    flow.await.unwrap();
    wait_for(&out, "every tick", Duration::from_secs(180), |h| h.iter().collect::<HashSet<_>>().len() == EVENTS as usize).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(60)).success());
    let handled = seqs(&out);
    let _ = std::fs::remove_file(&out);

    // Every committed echo, read after the fact (a reader that starts after the aborts reads
    // past them on noida-db).
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", target.bootstrap())
        .set("group.id", format!("{}committed-reader", target.prefix))
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let topic = target.topic("process.echoes");
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(&topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut echoes: BTreeMap<u32, usize> = BTreeMap::new();
    let mut quiet_since = std::time::Instant::now();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while std::time::Instant::now() < deadline && quiet_since.elapsed() < Duration::from_secs(5) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let e: eventkit_tests::TickEcho = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
            *echoes.entry(e.seq).or_default() += 1;
            quiet_since = std::time::Instant::now();
        }
    }
    let twice: Vec<(&u32, &usize)> = echoes.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!("txn crash: {EVENTS} ticks, 6 SIGKILLs, {} handler calls, {} echoes committed, {} ticks echoed twice", handled.len(), echoes.values().sum::<usize>(), twice.len());
    assert!(twice.is_empty(), "ticks with more than one committed echo: {twice:?}");
    assert_eq!(echoes.len(), EVENTS as usize, "every tick has its committed echo");
}

/// A transactional group's consumer never commits an offset itself (librdkafka's own account
/// of its commits, at `debug=cgrp`): every offset moves in a transaction, through the producer,
/// also past a record no handler takes (dead-lettered outside any transaction, its offset is
/// committed in a transaction of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_group_commits_only_in_transactions() {
    use eventkit_tests::process::{self, out_file, sigterm, start, wait_exit, wait_for};
    let Some(target) = Target::real("txn-commits") else { return };
    target.create_topic("process.ticks", 1).await;
    target.create_topic("process.echoes", 1).await;
    let (out, log) = (out_file(&target, "txn-commits"), out_file(&target, "txn-commits-log"));
    let mut command = process::worker(env!("CARGO_BIN_EXE_eventkit-test-worker"), &target, &out, 0);
    command
        .env("WORKER_GROUP", "txn-workers")
        .env("EVENTKIT_TRANSACTIONAL_GROUPS", "txn-workers")
        .env("EVENTKIT_KAFKA_CONSUMER_DEBUG", "cgrp")
        .env("RUST_LOG", "warn,librdkafka=debug")
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::from(std::fs::File::create(&log).unwrap()))
        .stdout(std::process::Stdio::null());
    let mut child = start(command);
    process::publish_ticks(&target, 0, 200).await;
    // Last on the partition: a record of a type nobody knows, dead-lettered.
    let topic = target.topic("process.ticks");
    let (_, last) = target.produce_raw(&topic, "k", &[("ce_specversion", "1.0"), ("ce_id", "x-1"), ("ce_source", "t"), ("ce_type", "Unknown")], b"{}").await;
    wait_for(&out, "every tick", Duration::from_secs(90), |h| h.len() >= 200).await;
    let group = target.group("txn-workers");
    let covered = eventually(Duration::from_secs(30), || target.committed(&group, &topic, 0) == Some(last + 1)).await;
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(60)).success());
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = (std::fs::remove_file(&out), std::fs::remove_file(&log));
    assert!(text.contains("CGRP"), "librdkafka's group log is there to read:\n{}", &text[..text.len().min(2000)]);
    let commits: Vec<&str> = text.lines().filter(|l| l.contains("Committing offsets")).collect();
    assert!(commits.is_empty(), "the consumer committed by itself:\n{}", commits.join("\n"));
    assert!(covered, "the dead-lettered record's offset was committed in a transaction: {:?} (last {last})", target.committed(&group, &topic, 0));
}
