//! Ordering modes under concurrency: `key` handles each key one at a time and in order while
//! keys run concurrently; `partition` one record per partition at a time; `none` anything at
//! once. A failing record holds only its own key while it waits for its retry. Batches of
//! different partitions run concurrently, one per partition at a time.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventkit::{handler, integration_event, BatchContext, Context, Publisher};
use eventkit_tests::{eventually, on_both_brokers, Target};

#[integration_event(topic = "ordering.moves", key = key)]
#[derive(Debug, Clone)]
pub struct Move {
    pub key: String,
    pub seq: u32,
}

/// Records what handlers saw: per key (or partition) the sequence handled, how many ran at once.
#[derive(Clone, Default)]
struct Probe {
    inner: Arc<ProbeInner>,
}

#[derive(Default)]
struct ProbeInner {
    running: AtomicUsize,
    max_running: AtomicUsize,
    lanes: Mutex<HashMap<String, (usize, usize)>>,
    handled: Mutex<BTreeMap<String, Vec<u32>>>,
    /// seq -> failures left.
    failures: Mutex<HashMap<u32, u32>>,
    finished_at: Mutex<HashMap<u32, Instant>>,
}

impl Probe {
    /// Runs `work` as one handling of `seq` in `lane`, tracking concurrency.
    async fn handle(&self, lane: String, seq: u32, pause: Duration) -> eventkit::Result<()> {
        let now_running = self.inner.running.fetch_add(1, AtomicOrdering::SeqCst) + 1;
        self.inner.max_running.fetch_max(now_running, AtomicOrdering::SeqCst);
        {
            let mut lanes = self.inner.lanes.lock().unwrap();
            let entry = lanes.entry(lane.clone()).or_default();
            entry.0 += 1;
            entry.1 = entry.1.max(entry.0);
        }
        tokio::time::sleep(pause).await;
        let fail = {
            let mut failures = self.inner.failures.lock().unwrap();
            match failures.get_mut(&seq) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            }
        };
        self.inner.lanes.lock().unwrap().get_mut(&lane).unwrap().0 -= 1;
        self.inner.running.fetch_sub(1, AtomicOrdering::SeqCst);
        if fail {
            return Err(eventkit::Error::msg(format!("transient failure of {seq}")));
        }
        self.inner.handled.lock().unwrap().entry(lane).or_default().push(seq);
        self.inner.finished_at.lock().unwrap().insert(seq, Instant::now());
        Ok(())
    }

    fn total(&self) -> usize {
        self.inner.handled.lock().unwrap().values().map(Vec::len).sum()
    }

    fn handled(&self) -> BTreeMap<String, Vec<u32>> {
        self.inner.handled.lock().unwrap().clone()
    }

    fn max_running(&self) -> usize {
        self.inner.max_running.load(AtomicOrdering::SeqCst)
    }

    /// The most handlings of one lane that ran at the same time.
    fn max_per_lane(&self) -> usize {
        self.inner.lanes.lock().unwrap().values().map(|l| l.1).max().unwrap_or(0)
    }

    fn finished_at(&self, seq: u32) -> Option<Instant> {
        self.inner.finished_at.lock().unwrap().get(&seq).copied()
    }
}

/// Per-key probes of the three modes, kept apart by wrapper types.
#[derive(Clone, Default)]
struct ByKey(Probe);
#[derive(Clone, Default)]
struct ByPartition(Probe);
#[derive(Clone, Default)]
struct Unordered(Probe);
#[derive(Clone, Default)]
struct Batches(Probe);

fn pause(seq: u32) -> Duration {
    Duration::from_millis(1 + u64::from(seq % 5))
}

#[handler(group = "by-key", concurrency = 32, retries = 5, backoff = "300ms..300ms")]
async fn by_key(m: Move, probe: &ByKey) -> eventkit::Result<()> {
    probe.0.handle(m.key, m.seq, pause(m.seq)).await
}

#[handler(group = "by-partition", ordering = "partition")]
async fn by_partition(m: Move, ctx: &Context, probe: &ByPartition) -> eventkit::Result<()> {
    probe.0.handle(format!("p{}", ctx.record().partition), m.seq, pause(m.seq)).await
}

#[handler(group = "unordered", ordering = "none", concurrency = 16)]
async fn unordered(m: Move, probe: &Unordered) -> eventkit::Result<()> {
    probe.0.handle(m.key, m.seq, Duration::from_millis(20)).await
}

#[handler(group = "batches", batch, max_size = 20, max_wait = "20ms", concurrency = 8)]
async fn batches(moves: Vec<Move>, batch: &BatchContext, probe: &Batches) -> eventkit::Result<()> {
    let partition = batch.first().record().partition;
    let lane = format!("p{partition}");
    let first = moves[0].seq;
    probe.0.handle(lane.clone(), first, Duration::from_millis(30)).await?;
    // `handle` logged the batch's first event; log the rest in order too.
    let mut handled = probe.0.inner.handled.lock().unwrap();
    handled.get_mut(&lane).unwrap().extend(moves[1..].iter().map(|m| m.seq));
    Ok(())
}

async fn publish(publisher: &Publisher, keys: u32, n: u32) {
    let moves: Vec<Move> = (0..n).map(|seq| Move { key: format!("k{}", seq % keys), seq }).collect();
    for chunk in moves.chunks(1_000) {
        publisher.publish_many(chunk).await.unwrap();
    }
}

fn assert_increasing(kind: &str, handled: &BTreeMap<String, Vec<u32>>) {
    for (lane, seqs) in handled {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "[{kind}] {lane} handled out of order: {seqs:?}");
    }
}

async fn key_ordering_runs_keys_concurrently_each_in_order(target: Target) {
    const EVENTS: u32 = 1_500;
    let probe = ByKey::default();
    let app = target.app().groups(["by-key"]).state(probe.clone()).build().unwrap().start().await.unwrap();
    publish(&app.publisher(), 60, EVENTS).await;
    assert!(eventually(Duration::from_secs(90), || probe.0.total() >= EVENTS as usize).await, "[{}] {} handled", target.kind, probe.0.total());
    app.shutdown().await.unwrap();
    let handled = probe.0.handled();
    assert_eq!(handled.len(), 60);
    assert_eq!(probe.0.total(), EVENTS as usize, "[{}] each once", target.kind);
    // For every key, the sequence it handled is exactly its events in publish order.
    for (key, seqs) in &handled {
        let k: u32 = key[1..].parse().unwrap();
        let expected: Vec<u32> = (0..EVENTS).filter(|s| s % 60 == k).collect();
        assert_eq!(seqs, &expected, "[{}] order of {key}", target.kind);
    }
    assert_eq!(probe.0.max_per_lane(), 1, "[{}] one record per key at a time", target.kind);
    let max = probe.0.max_running();
    assert!(max > 4 && max <= 32, "[{}] keys ran concurrently, within the bound: {max}", target.kind);
    eprintln!("[{}] key ordering: {EVENTS} events, 60 keys, up to {max} at once", target.kind);
}
on_both_brokers!(key_ordering_runs_keys_concurrently_each_in_order);

async fn partition_ordering_runs_one_record_per_partition(target: Target) {
    const EVENTS: u32 = 600;
    let probe = ByPartition::default();
    let app = target.app().groups(["by-partition"]).state(probe.clone()).build().unwrap().start().await.unwrap();
    publish(&app.publisher(), 30, EVENTS).await;
    assert!(eventually(Duration::from_secs(90), || probe.0.total() >= EVENTS as usize).await, "[{}] {} handled", target.kind, probe.0.total());
    app.shutdown().await.unwrap();
    let handled = probe.0.handled();
    assert_increasing(target.kind, &handled);
    assert_eq!(probe.0.max_per_lane(), 1, "[{}] one record per partition at a time", target.kind);
    let max = probe.0.max_running();
    assert!((2..=3).contains(&max), "[{}] partitions ran concurrently: {max}", target.kind);
}
on_both_brokers!(partition_ordering_runs_one_record_per_partition);

async fn no_ordering_runs_one_key_concurrently(target: Target) {
    const EVENTS: u32 = 200;
    let probe = Unordered::default();
    let app = target.app().groups(["unordered"]).state(probe.clone()).build().unwrap().start().await.unwrap();
    publish(&app.publisher(), 1, EVENTS).await;
    assert!(eventually(Duration::from_secs(90), || probe.0.total() >= EVENTS as usize).await, "[{}] {} handled", target.kind, probe.0.total());
    app.shutdown().await.unwrap();
    let max = probe.0.max_running();
    assert!(max > 4 && max <= 16, "[{}] one key, many at once, within the bound: {max}", target.kind);
    assert_eq!(probe.0.max_per_lane(), max);
}
on_both_brokers!(no_ordering_runs_one_key_concurrently);

async fn a_failing_record_holds_only_its_key(target: Target) {
    let probe = ByKey::default();
    // Seq 0 (key same-a) fails twice; each retry waits 300 ms.
    probe.0.inner.failures.lock().unwrap().insert(0, 2);
    // One partition: both keys share it, and its commit must wait for the failing record.
    target.create_topic("ordering.moves", 1).await;
    let app = target.app().groups(["by-key"]).state(probe.clone()).build().unwrap().start().await.unwrap();
    let publisher = app.publisher();
    // Two keys: same-a (0, 2, 4, ...) and same-b (1, 3, 5, ...).
    let moves: Vec<Move> = (0..40).map(|seq| Move { key: ["same-a", "same-b"][seq as usize % 2].into(), seq }).collect();
    let published = publisher.publish_many(&moves).await.unwrap();
    let (topic, group) = (target.topic("ordering.moves"), target.group("by-key"));
    let mut sampled = 0;
    let done = eventually(Duration::from_secs(60), || {
        if probe.0.finished_at(0).is_none() {
            if let Some(c) = target.committed(&group, &topic, 0) {
                assert!(c <= published[0].offset, "[{}] committed {c} passed the failing record", target.kind);
            }
            sampled += 1;
        }
        probe.0.total() >= 40
    })
    .await;
    app.shutdown().await.unwrap();
    assert!(done, "[{}] {:?}", target.kind, probe.0.handled());
    let handled = probe.0.handled();
    assert_eq!(handled["same-a"], (0..40).step_by(2).collect::<Vec<_>>(), "[{}] the failing key kept its order", target.kind);
    assert_eq!(handled["same-b"], (1..40).step_by(2).collect::<Vec<_>>());
    // The other key went on while the failing one waited for its retries.
    let failing_done = probe.0.finished_at(0).unwrap();
    assert!(probe.0.finished_at(39).unwrap() < failing_done, "[{}] the other key finished first", target.kind);
    assert!(sampled > 0, "[{}] the commit was looked at while the record was held", target.kind);
    assert_eq!(target.committed(&group, &topic, 0), Some(published[39].offset + 1), "[{}] all committed in the end", target.kind);
    eprintln!("[{}] failing key: sampled the commit {sampled} times while it was held", target.kind);
}
on_both_brokers!(a_failing_record_holds_only_its_key);

async fn batches_of_partitions_run_concurrently_each_partition_in_order(target: Target) {
    const EVENTS: u32 = 900;
    let probe = Batches::default();
    let app = target.app().groups(["batches"]).state(probe.clone()).build().unwrap().start().await.unwrap();
    publish(&app.publisher(), 30, EVENTS).await;
    assert!(eventually(Duration::from_secs(90), || probe.0.total() >= EVENTS as usize).await, "[{}] {} handled", target.kind, probe.0.total());
    app.shutdown().await.unwrap();
    let handled = probe.0.handled();
    assert_eq!(probe.0.total(), EVENTS as usize, "[{}] each once", target.kind);
    assert_increasing(target.kind, &handled);
    assert_eq!(probe.0.max_per_lane(), 1, "[{}] one batch per partition at a time", target.kind);
    assert!(probe.0.max_running() >= 2, "[{}] batches of different partitions overlapped", target.kind);
}
on_both_brokers!(batches_of_partitions_run_concurrently_each_partition_in_order);
