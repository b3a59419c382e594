//! eventkit against raw rust-rdkafka on a real broker, measured in the same run:
//!
//! - **publish**: `publish_many` against a raw `FutureProducer` doing the same work (same JSON
//!   event, same CloudEvents headers, idempotent, acks=all, every delivery awaited);
//! - **consume + handle**: a typed handler against a raw `StreamConsumer` loop that decodes into
//!   the same type and stores the offset after handling; for reference, also a raw loop that
//!   first reads the CloudEvents headers it would route by (`ce_type`, `ce_id`), which makes
//!   librdkafka parse each record's headers as eventkit has it do;
//! - **slow handler**: 5 ms of async work per event, 1,000 keys on one partition, under each
//!   ordering mode against one at a time, with per-key order verified;
//! - **latency**: publish to handler at a steady rate well below capacity;
//! - **memory**: idle RSS, and RSS while a handler that never returns faces a backlog;
//! - **crash**: how much work a SIGKILL during a steady flow makes the restarted consumer
//!   redo (how long before the kill the oldest record handled again was first handled; about
//!   one commit interval), the figure the process tests leave to the benchmark;
//! - **shutdown**: SIGTERM to exit with a handler that never returns, under the default
//!   shutdown budget (20 s, under Kubernetes' default grace period of 30 s).
//!
//! Each throughput figure is the median of alternating rounds. Run `scripts/bench.sh` (it starts
//! the pinned noida-db broker), or `EVENTKIT_BENCH_BOOTSTRAP=host:port cargo bench -p eventkit-kafka
//! --bench engine` for any other Kafka. Prints a table and writes it at the head of
//! `BENCHMARKS.md` (the sections after it stay).

use std::collections::HashMap;
use std::hint::black_box;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use eventkit::{handler, integration_event, App, Config, Ordering, Publisher};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

const ROUNDS: usize = 7;

#[integration_event(topic = "bench.events", key = key)]
#[derive(Debug, Clone)]
pub struct BenchEvent {
    pub key: String,
    pub seq: u64,
    pub payload: String,
}

#[integration_event(topic = "bench.slow", key = key)]
#[derive(Debug, Clone)]
pub struct SlowEvent {
    pub key: String,
    pub seq: u64,
}

#[integration_event(topic = "bench.latency", key = key)]
#[derive(Debug, Clone)]
pub struct LatencyEvent {
    pub key: String,
    pub sent_at_us: u64,
}

/// Counts handled events and when the first and the last came.
#[derive(Default)]
struct Progress {
    count: AtomicU64,
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
}

impl Progress {
    fn hit(&self) -> u64 {
        let n = self.count.fetch_add(1, AtomicOrdering::Relaxed) + 1;
        if n == 1 {
            *self.first.lock().unwrap() = Some(Instant::now());
        }
        n
    }
    fn mark_last(&self) {
        *self.last.lock().unwrap() = Some(Instant::now());
    }
    fn count(&self) -> u64 {
        self.count.load(AtomicOrdering::Relaxed)
    }
    /// Events per second from the first to the `n`th.
    fn rate(&self, n: u64) -> f64 {
        let (first, last) = (self.first.lock().unwrap().unwrap(), self.last.lock().unwrap().unwrap());
        (n - 1) as f64 / last.duration_since(first).as_secs_f64()
    }
}

#[derive(Clone, Default)]
struct ConsumeProbe(Arc<Progress>, u64);

#[handler(group = "bench-consume")]
async fn consume(event: BenchEvent, probe: &ConsumeProbe) {
    black_box(&event);
    if probe.0.hit() == probe.1 {
        probe.0.mark_last();
    }
}

#[derive(Clone, Default)]
struct SlowProbe {
    progress: Arc<Progress>,
    target: u64,
    per_key: Arc<Mutex<HashMap<String, Vec<u64>>>>,
}

#[handler(group = "bench-slow")]
async fn slow(event: SlowEvent, probe: &SlowProbe) {
    tokio::time::sleep(Duration::from_millis(5)).await;
    probe.per_key.lock().unwrap().entry(event.key).or_default().push(event.seq);
    if probe.progress.hit() == probe.target {
        probe.progress.mark_last();
    }
}

#[derive(Clone, Default)]
struct LatencyProbe(Arc<Mutex<Vec<u64>>>);

#[handler(group = "bench-latency")]
async fn latency(event: LatencyEvent, probe: &LatencyProbe) {
    probe.0.lock().unwrap().push(unix_micros().saturating_sub(event.sent_at_us));
}

#[handler(group = "bench-idle")]
async fn idle(event: BenchEvent) {
    black_box(event);
}

#[handler(group = "bench-stuck")]
async fn stuck(_event: BenchEvent) {
    std::future::pending::<()>().await;
}

/// Where the crash child writes what it handled: `seq<TAB>unix-micros` per line, one write each.
struct CrashOut(Mutex<std::fs::File>);

#[handler(group = "bench-crash")]
async fn crash(event: BenchEvent, out: &CrashOut) -> std::io::Result<()> {
    use std::io::Write;
    tokio::time::sleep(Duration::from_micros(500)).await;
    out.0.lock().unwrap().write_all(format!("{}\t{}\n", event.seq, unix_micros()).as_bytes())
}

fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    if std::env::var("BENCH_VERBOSE").is_ok() {
        eprintln!("  rounds: {:?}", values.iter().map(|v| *v as u64).collect::<Vec<_>>());
    }
    values[values.len() / 2]
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

/// An event whose JSON is about `size` bytes.
fn event(seq: u64, keys: u64, size: usize) -> BenchEvent {
    let mut e = BenchEvent { key: format!("key-{}", seq % keys), seq, payload: String::new() };
    let len = serde_json::to_vec(&e).unwrap().len();
    e.payload = "x".repeat(size.saturating_sub(len));
    e
}

struct Bench {
    bootstrap: String,
    run: String,
    broker: String,
}

impl Bench {
    fn app(&self, prefix: &str) -> eventkit::AppBuilder {
        App::builder()
            .config(Config::default())
            .bootstrap_servers(self.bootstrap.clone())
            .service_name("bench")
            .topic_prefix(prefix.to_owned())
            .group_prefix(format!("{prefix}{}.", fastrand::u32(..)))
            .create_topics(false)
            // The table is the output; the apps' own logs would interleave with it
            // (`BENCH_DEFAULT_LOGGING=1` measures with the default subscriber, at `RUST_LOG=warn`).
            .default_logging(std::env::var("BENCH_DEFAULT_LOGGING").is_ok())
            .max_buffered(std::env::var("BENCH_MAX_BUFFERED").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000), 32 << 20)
    }

    fn prefix(&self, what: &str) -> String {
        format!("{}{what}.", self.run)
    }

    async fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", &self.bootstrap).create().unwrap();
        let results = admin.create_topics(&[NewTopic::new(topic, partitions, TopicReplication::Fixed(-1))], &AdminOptions::new()).await.unwrap();
        for r in results {
            r.map_err(|(t, e)| format!("cannot create {t}: {e}")).unwrap();
        }
    }

    fn raw_producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .create()
            .unwrap()
    }

    fn raw_consumer(&self, group: &str) -> StreamConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", group)
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "100")
            .create()
            .unwrap()
    }
}

/// What a CloudEvents-aware raw producer writes: the same headers eventkit writes.
fn raw_headers(event_type: &str) -> OwnedHeaders {
    let id = uuid::Uuid::now_v7().to_string();
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    OwnedHeaders::new_with_capacity(8)
        .insert(Header { key: "ce_specversion", value: Some("1.0") })
        .insert(Header { key: "ce_id", value: Some(id.as_str()) })
        .insert(Header { key: "ce_source", value: Some("bench") })
        .insert(Header { key: "ce_type", value: Some(event_type) })
        .insert(Header { key: "ce_time", value: Some(time.as_str()) })
        .insert(Header { key: "content-type", value: Some("application/json") })
        .insert(Header { key: "ce_correlationid", value: Some(id.as_str()) })
        .insert(Header { key: "ce_schemaversion", value: Some("1") })
}

/// The fastest way we know to do this with rust-rdkafka: hand each record to librdkafka as
/// soon as it is encoded, then await the deliveries in order.
async fn raw_publish(producer: &FutureProducer, topic: &str, events: &[BenchEvent]) {
    let mut pending = Vec::with_capacity(events.len());
    for e in events {
        let value = serde_json::to_vec(e).unwrap();
        let mut record = FutureRecord::to(topic).key(e.key.as_str()).payload(&value).headers(raw_headers("BenchEvent"));
        loop {
            match producer.send_result(record) {
                Ok(delivery) => break pending.push(delivery),
                Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => panic!("raw produce: {e}"),
            }
        }
    }
    for delivery in pending {
        delivery.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

/// Publish throughput (events/s): (raw, eventkit).
async fn publish_bench(bench: &Bench, size: usize, n: u64) -> (f64, f64) {
    let events: Vec<BenchEvent> = (0..n).map(|seq| event(seq, 1_000, size)).collect();
    let producer = bench.raw_producer();
    let (mut raw, mut kit) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Alternate which side goes first, so that neither always meets a warmer broker.
        for side in [round % 2, 1 - round % 2] {
            if side == 0 {
                let topic = format!("{}raw.{size}.{round}", bench.prefix("publish"));
                bench.create_topic(&topic, 3).await;
                // Both sides send one event to the round's topic before the clock starts
                // (producer id and topic metadata are then known).
                raw_publish(&producer, &topic, &events[..1]).await;
                let start = Instant::now();
                raw_publish(&producer, &topic, &events).await;
                raw.push(n as f64 / start.elapsed().as_secs_f64());
            } else {
                let prefix = format!("{}kit.{size}.{round}.", bench.prefix("publish"));
                bench.create_topic(&format!("{prefix}bench.events"), 3).await;
                let app = bench.app(&prefix).groups([]).build().unwrap().start().await.unwrap();
                let publisher = app.publisher();
                publisher.publish_many(&events[..1]).await.unwrap();
                let start = Instant::now();
                publisher.publish_many(&events).await.unwrap();
                kit.push(n as f64 / start.elapsed().as_secs_f64());
                app.shutdown().await.unwrap();
            }
        }
    }
    (median(raw), median(kit))
}

/// Consume + handle throughput (events/s): (raw, eventkit, raw reading the headers).
async fn consume_bench(bench: &Bench, n: u64) -> (f64, f64, f64) {
    let prefix = bench.prefix("consume");
    let topic = format!("{prefix}bench.events");
    bench.create_topic(&topic, 1).await;
    let app = bench.app(&prefix).groups([]).build().unwrap().start().await.unwrap();
    let events: Vec<BenchEvent> = (0..n).map(|seq| event(seq, 1_000, 100)).collect();
    for chunk in events.chunks(20_000) {
        app.publisher().publish_many(chunk).await.unwrap();
    }
    app.shutdown().await.unwrap();
    drop(events);

    // `BENCH_SIDE=raw`, `kit` or `raw-headers` runs one side only (for profiling it).
    let only_side = std::env::var("BENCH_SIDE").ok();
    let (mut raw, mut kit, mut raw_headers) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Each side goes first in turn, so that none always meets a warmer broker.
        for side in [round % 3, (round + 1) % 3, (round + 2) % 3] {
            if only_side.as_deref().is_some_and(|s| s != ["raw", "kit", "raw-headers"][side]) {
                continue;
            }
            if side == 0 {
                raw.push(raw_consume(bench, &topic, &format!("{prefix}raw-{round}"), n, false).await);
            } else if side == 2 {
                raw_headers.push(raw_consume(bench, &topic, &format!("{prefix}raw-headers-{round}"), n, true).await);
            } else {
                let probe = ConsumeProbe(Arc::default(), n);
                let app = bench.app(&prefix).groups(["bench-consume"]).state(probe.clone()).build().unwrap().start().await.unwrap();
                while probe.0.count() < n {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                kit.push(probe.0.rate(n));
                app.shutdown().await.unwrap();
            }
        }
    }
    (median(raw), median(kit), median(raw_headers))
}

/// A raw `StreamConsumer` loop: decode into the type, store the offset after handling. With
/// `headers`, it first reads `ce_type` and `ce_id` (librdkafka then parses every header).
/// Events/s from the first record to the `n`th.
async fn raw_consume(bench: &Bench, topic: &str, group: &str, n: u64, headers: bool) -> f64 {
    use futures::StreamExt;
    let consumer = bench.raw_consumer(group);
    consumer.subscribe(&[topic]).unwrap();
    let mut stream = consumer.stream();
    let mut first = None;
    let mut seen = 0u64;
    while seen < n {
        let m = stream.next().await.unwrap().unwrap();
        if headers {
            use rdkafka::message::Headers;
            let h = m.headers().expect("eventkit writes headers");
            let (mut event_type, mut id) = (None, None);
            for header in h.iter() {
                match header.key {
                    "ce_type" => event_type = header.value,
                    "ce_id" => id = header.value,
                    _ => {}
                }
            }
            assert_eq!(event_type, Some(&b"BenchEvent"[..]));
            black_box(id);
        }
        let decoded: BenchEvent = serde_json::from_slice(m.payload().unwrap()).unwrap();
        black_box(&decoded);
        consumer.store_offset_from_message(&m).unwrap();
        seen += 1;
        if seen == 1 {
            first = Some(Instant::now());
        }
    }
    (n - 1) as f64 / first.unwrap().elapsed().as_secs_f64()
}

struct SlowResult {
    mode: &'static str,
    rate: f64,
    in_order: Option<bool>,
}

/// The slow handler under one-at-a-time and each ordering mode (1,000 keys on one partition).
async fn slow_bench(bench: &Bench) -> Vec<SlowResult> {
    let prefix = bench.prefix("slow");
    bench.create_topic(&format!("{prefix}bench.slow"), 1).await;
    let app = bench.app(&prefix).groups([]).build().unwrap().start().await.unwrap();
    let events: Vec<SlowEvent> = (0..12_000).map(|seq| SlowEvent { key: format!("key-{}", seq % 1_000), seq }).collect();
    app.publisher().publish_many(&events).await.unwrap();
    app.shutdown().await.unwrap();

    let modes: [(&str, Ordering, usize, u64); 4] = [
        ("one at a time", Ordering::Key, 1, 300),
        ("partition", Ordering::Partition, 64, 300),
        ("key", Ordering::Key, 64, 10_000),
        ("none", Ordering::None, 64, 10_000),
    ];
    let mut results = Vec::new();
    for (mode, ordering, concurrency, target) in modes {
        let probe = SlowProbe { target, ..SlowProbe::default() };
        let app = bench
            .app(&prefix)
            .groups(["bench-slow"])
            .group_ordering("bench-slow", ordering)
            .group_concurrency("bench-slow", concurrency)
            .state(probe.clone())
            .build()
            .unwrap()
            .start()
            .await
            .unwrap();
        while probe.progress.count() < target {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let rate = probe.progress.rate(target);
        app.shutdown().await.unwrap();
        let in_order = (ordering != Ordering::None).then(|| probe.per_key.lock().unwrap().values().all(|s| s.windows(2).all(|w| w[0] < w[1])));
        results.push(SlowResult { mode, rate, in_order });
    }
    results
}

/// End-to-end latency in ms (p50, p99) of eventkit and of raw rust-rdkafka, at `rate` events/s
/// for `secs`: the medians of three alternating rounds each.
async fn latency_bench(bench: &Bench, rate: u64, secs: u64) -> ((f64, f64), (f64, f64)) {
    let (mut kit, mut raw) = (Vec::new(), Vec::new());
    for round in 0..6 {
        if [0, 3, 4].contains(&round) {
            kit.push(kit_latency(bench, rate, secs, round).await);
        } else {
            raw.push(raw_latency(bench, rate, secs, round).await);
        }
    }
    let med = |v: Vec<(f64, f64)>| (median(v.iter().map(|p| p.0).collect()), median(v.iter().map(|p| p.1).collect()));
    (med(kit), med(raw))
}

async fn kit_latency(bench: &Bench, rate: u64, secs: u64, round: u32) -> (f64, f64) {
    let n = rate * secs;
    let prefix = bench.prefix(&format!("latency{round}"));
    bench.create_topic(&format!("{prefix}bench.latency"), 3).await;
    let probe = LatencyProbe::default();
    let app = bench.app(&prefix).groups(["bench-latency"]).state(probe.clone()).build().unwrap().start().await.unwrap();
    let publisher = app.publisher();
    // Let the group join before the clock starts.
    warm_up(&publisher, &probe).await;
    probe.0.lock().unwrap().clear();
    steady(rate, n, |seq| {
        let publisher = publisher.clone();
        tokio::spawn(async move {
            publisher.publish(&LatencyEvent { key: format!("key-{}", seq % 100), sent_at_us: unix_micros() }).await.unwrap();
        });
    })
    .await;
    while (probe.0.lock().unwrap().len() as u64) < n {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.shutdown().await.unwrap();
    let mut kit = probe.0.lock().unwrap().clone();
    kit.sort_unstable();
    (percentile(&kit, 0.5), percentile(&kit, 0.99))
}

/// The same flow through a raw producer and a raw consumer loop.
async fn raw_latency(bench: &Bench, rate: u64, secs: u64, round: u32) -> (f64, f64) {
    let n = rate * secs;
    let prefix = bench.prefix(&format!("latency{round}"));
    let topic = format!("{prefix}raw");
    bench.create_topic(&topic, 3).await;
    let consumer = bench.raw_consumer(&format!("{prefix}raw-group"));
    consumer.subscribe(&[topic.as_str()]).unwrap();
    let producer = Arc::new(bench.raw_producer());
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let latencies = latencies.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            let mut stream = consumer.stream();
            while let Some(Ok(m)) = stream.next().await {
                let e: LatencyEvent = serde_json::from_slice(m.payload().unwrap()).unwrap();
                latencies.lock().unwrap().push(unix_micros().saturating_sub(e.sent_at_us));
                consumer.store_offset_from_message(&m).unwrap();
            }
        })
    };
    let send_raw = |seq: u64| {
        let (producer, topic) = (producer.clone(), topic.clone());
        tokio::spawn(async move {
            let e = LatencyEvent { key: format!("key-{}", seq % 100), sent_at_us: unix_micros() };
            let value = serde_json::to_vec(&e).unwrap();
            let record = FutureRecord::to(&topic).key(e.key.as_str()).payload(&value).headers(raw_headers("LatencyEvent"));
            producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
        });
    };
    // Warm up until the raw consumer joined and reads.
    let mut seq = 0;
    while latencies.lock().unwrap().is_empty() {
        send_raw(seq);
        seq += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    latencies.lock().unwrap().clear();
    steady(rate, n, send_raw).await;
    while (latencies.lock().unwrap().len() as u64) < n {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    reader.abort();
    let mut raw = latencies.lock().unwrap().clone();
    raw.sort_unstable();
    (percentile(&raw, 0.5), percentile(&raw, 0.99))
}

async fn warm_up(publisher: &Publisher, probe: &LatencyProbe) {
    while probe.0.lock().unwrap().is_empty() {
        publisher.publish(&LatencyEvent { key: "warm-up".into(), sent_at_us: unix_micros() }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// Calls `send(seq)` `n` times, `rate` times a second, evenly spaced.
async fn steady(rate: u64, n: u64, mut send: impl FnMut(u64)) {
    let start = tokio::time::Instant::now();
    for seq in 0..n {
        tokio::time::sleep_until(start + Duration::from_micros(seq * 1_000_000 / rate)).await;
        send(seq);
    }
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1024.0)
}

fn child(bench: &Bench, mode: &str, prefix: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .arg(format!("--child={mode}"))
        .env("EVENTKIT_BENCH_BOOTSTRAP", &bench.bootstrap)
        .env("BENCH_PREFIX", prefix)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Idle RSS (MiB) of an app with one subscribed group and no traffic.
async fn idle_rss(bench: &Bench) -> f64 {
    let prefix = bench.prefix("idle");
    bench.create_topic(&format!("{prefix}bench.events"), 3).await;
    let out = child(bench, "idle", &prefix).wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("idle child prints its RSS")
}

/// SIGTERM to exit of an app whose handler never returns, under the default budget.
async fn stuck_default_stop(bench: &Bench) -> Duration {
    let prefix = bench.prefix("stuck-default");
    bench.create_topic(&format!("{prefix}bench.events"), 1).await;
    let app = bench.app(&prefix).groups([]).build().unwrap().start().await.unwrap();
    app.publisher().publish_many(&(0..10).map(|seq| event(seq, 10, 100)).collect::<Vec<_>>()).await.unwrap();
    app.shutdown().await.unwrap();
    let mut worker = child(bench, "stuck-default", &prefix);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let asked = Instant::now();
    Command::new("kill").args(["-TERM", &worker.id().to_string()]).status().unwrap();
    let status = worker.wait().unwrap();
    assert!(status.success(), "the stuck app exits cleanly on SIGTERM: {status}");
    asked.elapsed()
}

/// The highest RSS (MiB) of an app whose handler never returns, facing `n` events, and how
/// long it took to stop on SIGTERM.
async fn stuck_rss(bench: &Bench, n: u64) -> (f64, Duration) {
    let prefix = bench.prefix("stuck");
    bench.create_topic(&format!("{prefix}bench.events"), 6).await;
    let app = bench.app(&prefix).groups([]).build().unwrap().start().await.unwrap();
    for start in (0..n).step_by(20_000) {
        let events: Vec<BenchEvent> = (start..(start + 20_000).min(n)).map(|seq| event(seq, 1_000, 100)).collect();
        app.publisher().publish_many(&events).await.unwrap();
    }
    app.shutdown().await.unwrap();
    let mut worker = child(bench, "stuck", &prefix);
    let pid = worker.id();
    let mut max: f64 = 0.0;
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        max = max.max(rss_mib(pid).unwrap_or(0.0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let asked = Instant::now();
    Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    let status = worker.wait().unwrap();
    assert!(status.success(), "the stuck app exits cleanly on SIGTERM: {status}");
    (max, asked.elapsed())
}

/// Handled lines of the crash child: (seq, unix micros).
fn crash_lines(path: &std::path::Path) -> Vec<(u64, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (seq, at) = l.split_once('\t')?;
            Some((seq.parse().ok()?, at.parse().ok()?))
        })
        .collect()
}

/// SIGKILLs a consumer `kills` times during a steady flow of 2,000 events/s (restarting it each
/// time): per kill, how long before it the oldest record that the next run handled again had
/// been handled (ms). Also checks that nothing was lost.
async fn crash_redo(bench: &Bench, kills: usize) -> Vec<u64> {
    let prefix = bench.prefix("crash");
    bench.create_topic(&format!("{prefix}bench.events"), 3).await;
    let out = std::env::temp_dir().join(format!("{prefix}crash.out"));
    let _ = std::fs::remove_file(&out);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flow = {
        let app = bench.app(&prefix).groups([]).build().unwrap().start().await.unwrap();
        let stop = stop.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut sent = 0u64;
            while !stop.load(AtomicOrdering::SeqCst) {
                let events: Vec<BenchEvent> = (sent..sent + 100).map(|seq| event(seq, 64, 100)).collect();
                app.publisher().publish_many(&events).await.unwrap();
                sent += 100;
                tokio::time::sleep_until((started + Duration::from_millis(sent / 2)).into()).await;
            }
            app.shutdown().await.unwrap();
            sent
        })
    };
    let spawn = || {
        Command::new(std::env::current_exe().unwrap())
            .arg("--child=crash")
            .env("EVENTKIT_BENCH_BOOTSTRAP", &bench.bootstrap)
            .env("BENCH_PREFIX", &prefix)
            .env("BENCH_OUT", &out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut kills_at = Vec::new();
    for _ in 0..kills {
        let before = crash_lines(&out).len();
        let mut worker = spawn();
        while crash_lines(&out).len() < before + 2_000 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..1_000))).await;
        worker.kill().unwrap();
        let at = unix_micros();
        worker.wait().unwrap();
        kills_at.push((crash_lines(&out).len(), at));
    }
    let mut last = spawn();
    stop.store(true, AtomicOrdering::SeqCst);
    let sent = flow.await.unwrap();
    loop {
        let seen: std::collections::HashSet<u64> = crash_lines(&out).iter().map(|l| l.0).collect();
        if (0..sent).all(|s| seen.contains(&s)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = last.kill();
    let _ = last.wait();
    let all = crash_lines(&out);
    let _ = std::fs::remove_file(&out);
    let mut start = 0;
    let mut windows = Vec::new();
    for &(end, killed_at) in &kills_at {
        let later: std::collections::HashSet<u64> = all[end..].iter().map(|l| l.0).collect();
        let redone = all[start..end].iter().filter(|l| later.contains(&l.0));
        windows.push(redone.map(|l| killed_at.saturating_sub(l.1) / 1_000).max().unwrap_or(0));
        start = end;
    }
    windows
}

/// The child processes of the memory figures.
async fn run_child(mode: &str) {
    let bench = Bench { bootstrap: std::env::var("EVENTKIT_BENCH_BOOTSTRAP").unwrap(), run: String::new(), broker: String::new() };
    let prefix = std::env::var("BENCH_PREFIX").unwrap();
    match mode {
        "idle" => {
            let app = bench.app(&prefix).groups(["bench-idle"]).build().unwrap().start().await.unwrap();
            tokio::time::sleep(Duration::from_secs(4)).await;
            println!("{:.1}", rss_mib(std::process::id()).unwrap());
            app.shutdown().await.unwrap();
        }
        "stuck" => {
            let app = bench.app(&prefix).groups(["bench-stuck"]).shutdown_timeout(Duration::from_secs(2)).build().unwrap();
            app.run().await.unwrap();
        }
        // The default shutdown budget.
        "stuck-default" => {
            let app = bench.app(&prefix).groups(["bench-stuck"]).config(Config::default()).build().unwrap();
            app.run().await.unwrap();
        }
        "crash" => {
            let path = std::env::var("BENCH_OUT").unwrap();
            let file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
            let app = bench.app(&prefix).groups(["bench-crash"]).state(CrashOut(Mutex::new(file))).build().unwrap();
            app.run().await.unwrap();
        }
        other => panic!("unknown child mode {other}"),
    }
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned()).unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:")).and_then(|m| m.trim().trim_end_matches("kB").trim().parse::<f64>().ok()).map_or(0.0, |kb| kb / 1048576.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let rustc = Command::new("rustc").arg("-V").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default();
    format!("{model}, {cores} cores, {mem_gib:.0} GiB RAM, Linux {}, {rustc}, librdkafka {}", kernel.trim(), rdkafka::util::get_rdkafka_version().1)
}

#[tokio::main]
async fn main() {
    if std::env::var("RUST_LOG").is_ok() {
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_writer(std::io::stderr).init();
    }
    if let Some(mode) = std::env::args().find_map(|a| a.strip_prefix("--child=").map(str::to_owned)) {
        return run_child(&mode).await;
    }
    let Ok(bootstrap) = std::env::var("EVENTKIT_BENCH_BOOTSTRAP") else {
        eprintln!("set EVENTKIT_BENCH_BOOTSTRAP=host:port, or run scripts/bench.sh (it starts the pinned noida-db)");
        std::process::exit(2);
    };
    let broker = std::env::var("EVENTKIT_BENCH_BROKER").unwrap_or_else(|_| format!("Kafka at {bootstrap}"));
    let bench = Bench { bootstrap, run: format!("bench{}.", fastrand::u32(..)), broker };
    eprintln!("benchmarking against {} ...", bench.broker);

    // `BENCH_ONLY=consume` (or publish, slow, latency, memory) runs one part, for profiling.
    let only = std::env::var("BENCH_ONLY").ok();
    let runs = |part: &str| only.as_deref().is_none_or(|o| o.split(',').any(|p| p == part));
    if !runs("publish") && !runs("consume") && !runs("slow") && !runs("latency") && !runs("memory") && !runs("crash") && !runs("shutdown") {
        eprintln!("BENCH_ONLY names no part: publish, consume, slow, latency, memory, crash, shutdown");
        std::process::exit(2);
    }
    if only.is_some() {
        if runs("publish") {
            let (raw, kit) = publish_bench(&bench, 100, 100_000).await;
            eprintln!("publish 100 B: raw {raw:.0}/s, eventkit {kit:.0}/s ({:.2})", kit / raw);
            let (raw, kit) = publish_bench(&bench, 1_000, 20_000).await;
            eprintln!("publish 1 KB: raw {raw:.0}/s, eventkit {kit:.0}/s ({:.2})", kit / raw);
        }
        if runs("consume") {
            let (raw, kit, raw_headers) = consume_bench(&bench, 150_000).await;
            eprintln!("consume: raw {raw:.0}/s, eventkit {kit:.0}/s ({:.2}); raw reading the headers {raw_headers:.0}/s ({:.2})", kit / raw, kit / raw_headers);
        }
        if runs("latency") {
            let ((k50, k99), (r50, r99)) = latency_bench(&bench, 500, 5).await;
            eprintln!("latency: eventkit p50 {k50:.1} ms p99 {k99:.1} ms; raw p50 {r50:.1} ms p99 {r99:.1} ms");
        }
        if runs("memory") {
            let (stuck, stop) = stuck_rss(&bench, 200_000).await;
            eprintln!("stuck: {stuck:.1} MiB, stopped in {stop:?}; idle {:.1} MiB", idle_rss(&bench).await);
        }
        if runs("crash") {
            eprintln!("crash: redo windows {:?} ms", crash_redo(&bench, 4).await);
        }
        if runs("shutdown") {
            eprintln!("shutdown with a stuck handler, default budget: {:?}", stuck_default_stop(&bench).await);
        }
        return;
    }
    let (pub_raw_100, pub_kit_100) = publish_bench(&bench, 100, 100_000).await;
    eprintln!("publish 100 B: raw {pub_raw_100:.0}/s, eventkit {pub_kit_100:.0}/s");
    let (pub_raw_1k, pub_kit_1k) = publish_bench(&bench, 1_000, 20_000).await;
    eprintln!("publish 1 KB: raw {pub_raw_1k:.0}/s, eventkit {pub_kit_1k:.0}/s");
    let (con_raw, con_kit, con_raw_headers) = consume_bench(&bench, 150_000).await;
    eprintln!("consume: raw {con_raw:.0}/s, eventkit {con_kit:.0}/s; raw reading the headers {con_raw_headers:.0}/s");
    let slow = slow_bench(&bench).await;
    for s in &slow {
        eprintln!("slow handler, {}: {:.0}/s", s.mode, s.rate);
    }
    let ((lat_kit_50, lat_kit_99), (lat_raw_50, lat_raw_99)) = latency_bench(&bench, 500, 5).await;
    eprintln!("latency: eventkit p50 {lat_kit_50:.1} ms p99 {lat_kit_99:.1} ms; raw p50 {lat_raw_50:.1} ms p99 {lat_raw_99:.1} ms");
    let idle = idle_rss(&bench).await;
    let (stuck, stop) = stuck_rss(&bench, 200_000).await;
    let windows = crash_redo(&bench, 4).await;
    eprintln!("crash: redo windows {windows:?} ms");
    let default_stop = stuck_default_stop(&bench).await;
    eprintln!("shutdown with a stuck handler, default budget: {default_stop:?}");

    let one = slow[0].rate;
    let mut table = String::new();
    let row = |t: &mut String, what: &str, raw: String, kit: String, ratio: String, target: &str| {
        t.push_str(&format!("| {what} | {raw} | {kit} | {ratio} | {target} |\n"));
    };
    table.push_str("| measure | raw rust-rdkafka | eventkit | eventkit / raw | target |\n|---|---|---|---|---|\n");
    for (what, raw, kit) in [("publish 100 B (events/s)", pub_raw_100, pub_kit_100), ("publish 1 KB (events/s)", pub_raw_1k, pub_kit_1k), ("consume + handle 100 B (events/s)", con_raw, con_kit)] {
        row(&mut table, what, format!("{raw:.0}"), format!("{kit:.0}"), format!("{:.2}", kit / raw), ">= 0.95");
    }
    row(
        &mut table,
        "consume + handle 100 B, raw loop also reading `ce_type`/`ce_id` (reference) (events/s)",
        format!("{con_raw_headers:.0}"),
        format!("{con_kit:.0}"),
        format!("{:.2}", con_kit / con_raw_headers),
        "",
    );
    for s in &slow {
        let order = match s.in_order {
            Some(true) => ", per-key order verified",
            Some(false) => ", PER-KEY ORDER BROKEN",
            None => "",
        };
        let target = if s.mode == "key" { ">= 50x" } else { "" };
        row(&mut table, &format!("slow handler (5 ms), {}{order} (events/s)", s.mode), "".into(), format!("{:.0}", s.rate), format!("{:.1}x one at a time", s.rate / one), target);
    }
    row(&mut table, "latency p50 / p99 at 500 events/s (ms)", format!("{lat_raw_50:.1} / {lat_raw_99:.1}"), format!("{lat_kit_50:.1} / {lat_kit_99:.1}"), String::new(), "");
    row(&mut table, "idle RSS (MiB)", String::new(), format!("{idle:.1}"), String::new(), "< 30");
    row(&mut table, "RSS, handler never returns, 200,000-event backlog (MiB)", String::new(), format!("{stuck:.1} (stopped {:.1} s after SIGTERM)", stop.as_secs_f64()), String::new(), "< 200");
    let mut sorted = windows.clone();
    sorted.sort_unstable();
    row(
        &mut table,
        "work redone after a SIGKILL at 2,000 events/s: how long before the kill the oldest record handled again was handled (ms, per kill)",
        String::new(),
        format!("{windows:?} (median {})", sorted.get(sorted.len() / 2).copied().unwrap_or(0)),
        String::new(),
        "about one commit interval (100 ms)",
    );
    row(
        &mut table,
        "SIGTERM to exit, handler never returns, default budget (s)",
        String::new(),
        format!("{:.1}", default_stop.as_secs_f64()),
        String::new(),
        "< 20 (the budget; Kubernetes' grace period is 30)",
    );

    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    let report = format!(
        "# Benchmarks\n\nMeasured {date} by `scripts/bench.sh` (release build, `cargo bench -p eventkit-kafka --bench engine`).\n\n\
         - Machine: {}\n- Broker: {}\n- Throughput: median of {ROUNDS} alternating rounds; consume figures run from the first \
         record handled to the last (group join excluded); publish awaits every delivery (idempotent, acks=all).\n\n{table}",
        machine(),
        bench.broker
    );
    println!("\n{table}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../BENCHMARKS.md");
    // This table is the file's head; the sections after it (`## ...`: the first build, other
    // measurements) are kept as they are.
    let kept = std::fs::read_to_string(&path).ok().and_then(|old| old.find("\n## ").map(|at| old[at..].to_owned())).unwrap_or_default();
    std::fs::write(&path, format!("{report}{kept}")).unwrap();
    eprintln!("wrote {}", path.display());
}
