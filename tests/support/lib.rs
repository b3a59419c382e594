//! Test harness: the same scenario on the embedded broker and on a real Kafka-protocol
//! broker (`EVENTKIT_TEST_BOOTSTRAP`, started by `scripts/test.sh`).

// The README's snippets compile without a warning (an unused variable in the quick start is a defect).
#![doc(test(attr(deny(warnings), allow(dead_code))))]

pub mod db;
pub mod noida;
pub mod process;

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use eventkit::{App, AppBuilder, EmbeddedBroker};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The event of the process tests (crash, graceful shutdown), shared with the worker binary.
#[eventkit::integration_event(topic = "process.ticks", key = key)]
#[derive(Debug, Clone)]
pub struct Tick {
    pub key: String,
    pub seq: u32,
}

/// What the transactional worker publishes for each `Tick` it handles (in the transaction that
/// commits the tick's offset).
#[eventkit::integration_event(topic = "process.echoes", key = key)]
#[derive(Debug, Clone)]
pub struct TickEcho {
    pub key: String,
    pub seq: u32,
}

/// The variable naming a real broker for the tests.
pub const BOOTSTRAP_VAR: &str = "EVENTKIT_TEST_BOOTSTRAP";

/// A broker under test.
pub struct Target {
    /// `embedded` or `real`.
    pub kind: &'static str,
    broker: Option<Arc<EmbeddedBroker>>,
    bootstrap: String,
    /// Unique prefix for this test's topics and groups.
    pub prefix: String,
}

pub fn init_tracing() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,eventkit=info".into()))
            .with_test_writer()
            .try_init();
    });
}

fn unique_prefix(test: &str) -> String {
    format!("t{}-{test}.", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

impl Target {
    /// A fresh embedded broker.
    pub fn embedded(test: &str) -> Self {
        init_tracing();
        let broker = Arc::new(EmbeddedBroker::start().expect("embedded broker"));
        Target { kind: "embedded", bootstrap: broker.bootstrap_servers().to_owned(), broker: Some(broker), prefix: unique_prefix(test) }
    }

    /// The real broker named by `EVENTKIT_TEST_BOOTSTRAP`. Without it the test is not run,
    /// except in CI (`CI=true`), where that is a failure.
    pub fn real(test: &str) -> Option<Self> {
        init_tracing();
        match std::env::var(BOOTSTRAP_VAR) {
            Ok(bootstrap) if !bootstrap.trim().is_empty() => {
                Some(Target { kind: "real", broker: None, bootstrap, prefix: unique_prefix(test) })
            }
            _ if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
                panic!("{BOOTSTRAP_VAR} is not set in CI: the real-broker tests must run (scripts/test.sh starts the broker)")
            }
            _ => {
                eprintln!("note: {BOOTSTRAP_VAR} not set; `{test}` ran on the embedded broker only (use scripts/test.sh)");
                None
            }
        }
    }

    /// A real broker at `bootstrap` (one the test started itself).
    pub fn at(bootstrap: String, test: &str) -> Self {
        init_tracing();
        Target { kind: "real", broker: None, bootstrap, prefix: unique_prefix(test) }
    }

    /// The embedded broker, when the target is one.
    pub fn embedded_broker(&self) -> Option<&Arc<EmbeddedBroker>> {
        self.broker.as_ref()
    }

    /// An app builder pointed at this broker, with this test's prefixes.
    pub fn app(&self) -> AppBuilder {
        let builder = App::builder()
            .config(eventkit::Config::default())
            .service_name("eventkit-tests")
            .topic_prefix(self.prefix.clone())
            .group_prefix(self.prefix.clone())
            .retry_backoff((Duration::from_millis(50), Duration::from_millis(400)))
            .shutdown_timeout(Duration::from_secs(20));
        match &self.broker {
            Some(broker) => builder.embedded_broker(broker.clone()),
            None => builder.bootstrap_servers(self.bootstrap.clone()),
        }
    }

    /// The wire name of a topic.
    pub fn topic(&self, topic: &str) -> String {
        format!("{}{topic}", self.prefix)
    }

    /// The wire name of a group.
    pub fn group(&self, group: &str) -> String {
        format!("{}{group}", self.prefix)
    }

    /// A plain producer, for records eventkit would never write (up to the broker's size limit).
    pub fn raw_producer(&self) -> FutureProducer {
        ClientConfig::new().set("bootstrap.servers", &self.bootstrap).set("message.max.bytes", "10000000").create().expect("producer")
    }

    /// Produces a raw record and returns its partition and offset.
    pub async fn produce_raw(&self, topic: &str, key: &str, headers: &[(&str, &str)], value: &[u8]) -> (i32, i64) {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        self.produce_raw_bytes(topic, key, &headers, value).await
    }

    /// [`Target::produce_raw`] with header values that need not be text.
    pub async fn produce_raw_bytes(&self, topic: &str, key: &str, headers: &[(&str, &[u8])], value: &[u8]) -> (i32, i64) {
        let mut h = rdkafka::message::OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(rdkafka::message::Header { key: k, value: Some(*v) });
        }
        let record = FutureRecord::to(topic).key(key).payload(value).headers(h);
        let d = self.raw_producer().send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("raw produce");
        (d.partition, d.offset)
    }

    /// Produces `value` under `key` to one partition of `topic`, bypassing eventkit.
    pub async fn produce_raw_to(&self, topic: &str, partition: i32, key: &str, value: &[u8]) -> i64 {
        let record = FutureRecord::to(topic).key(key).payload(value).partition(partition);
        self.raw_producer().send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("raw produce").offset
    }

    /// The offset `group` has committed on `topic[partition]` (`None`: nothing committed).
    pub fn committed(&self, group: &str, topic: &str, partition: i32) -> Option<i64> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", group)
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).expect("committed offsets");
        match committed.find_partition(topic, partition).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        }
    }
}

/// Waits until `condition` holds, for at most `timeout`.
pub async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A shared list handlers append to.
#[derive(Debug)]
pub struct Log<T>(pub Arc<Mutex<Vec<T>>>);

impl<T> Clone for Log<T> {
    fn clone(&self) -> Self {
        Log(self.0.clone())
    }
}
impl<T> Default for Log<T> {
    fn default() -> Self {
        Log(Arc::default())
    }
}
impl<T: Clone> Log<T> {
    pub fn push(&self, value: T) {
        self.0.lock().unwrap().push(value);
    }
    pub fn snapshot(&self) -> Vec<T> {
        self.0.lock().unwrap().clone()
    }
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Runs `scenario` on the embedded broker and, when available, on the real one.
#[macro_export]
macro_rules! on_both_brokers {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$scenario($crate::Target::embedded(stringify!($scenario))).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn real() {
                if let Some(target) = $crate::Target::real(stringify!($scenario)) {
                    super::$scenario(target).await
                }
            }
        }
    };
}

/// Readiness by the groups alone: the process-wide account of cluster outages also hears the
/// embedded brokers of the tests beside one going away.
pub fn groups_only_readiness() -> eventkit::ReadinessChecks {
    let mut checks = eventkit::ReadinessChecks::default();
    checks.kafka = false;
    checks
}

/// Runs a future with a deadline, failing the test when it passes.
pub async fn within<T>(secs: u64, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A record as a non-eventkit client sees it.
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub headers: Vec<(String, Vec<u8>)>,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

impl Target {
    /// Reads `count` records from every partition of `topic`, from the beginning.
    pub fn read_records(&self, topic: &str, count: usize) -> Vec<RawRecord> {
        let out = self.read_until(topic, count, Duration::ZERO);
        assert_eq!(out.len(), count, "records on {topic}");
        out
    }

    /// Reads at least `count` records of `topic`, and whatever follows them within a second.
    pub fn read_records_at_least(&self, topic: &str, count: usize) -> Vec<RawRecord> {
        let out = self.read_until(topic, count, Duration::from_secs(1));
        assert!(out.len() >= count, "{} of at least {count} records on {topic}", out.len());
        out
    }

    fn read_until(&self, topic: &str, count: usize, quiet: Duration) -> Vec<RawRecord> {
        use rdkafka::message::{Headers, Message};
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", format!("{}reader", self.prefix))
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
        let partitions = metadata.topics()[0].partitions().len() as i32;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).expect("assign");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut out = Vec::new();
        let mut last = std::time::Instant::now();
        while std::time::Instant::now() < deadline && (out.len() < count || (!quiet.is_zero() && last.elapsed() < quiet)) {
            if out.len() >= count && quiet.is_zero() {
                break;
            }
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                let headers = m
                    .headers()
                    .map(|h| h.iter().map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec())).collect())
                    .unwrap_or_default();
                out.push(RawRecord { headers, key: m.key().map(<[u8]>::to_vec), value: m.payload().unwrap_or_default().to_vec() });
                last = std::time::Instant::now();
            }
        }
        out
    }
}

/// The Python of the test environment (`EVENTKIT_TEST_PYTHON`, set by scripts/test.sh), with
/// the pinned CloudEvents SDK and aiokafka. Missing: the test is not run, except in CI.
pub fn test_python(test: &str) -> Option<std::path::PathBuf> {
    match std::env::var("EVENTKIT_TEST_PYTHON") {
        Ok(p) if !p.trim().is_empty() => Some(p.into()),
        _ if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
            panic!("EVENTKIT_TEST_PYTHON is not set in CI: the interoperability tests must run (scripts/test.sh sets it)")
        }
        _ => {
            eprintln!("note: EVENTKIT_TEST_PYTHON not set; `{test}` not run (use scripts/test.sh)");
            None
        }
    }
}

impl Target {
    /// The bootstrap servers.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Creates `topic` (without prefix) with `partitions` partitions.
    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        let name = self.topic(topic);
        if let Some(broker) = &self.broker {
            return broker.create_topic(&name, partitions).expect("create topic");
        }
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", &self.bootstrap).create().expect("admin");
        let results = admin
            .create_topics(&[NewTopic::new(&name, partitions, TopicReplication::Fixed(-1))], &AdminOptions::new())
            .await
            .expect("create topics");
        for r in results {
            r.map_err(|(t, e)| format!("{t}: {e}")).expect("topic created");
        }
    }
}

/// The README's Rust snippets, each a doctest (`tests/build.rs` adds the hidden context each one
/// names): a snippet that stops compiling fails `cargo test --workspace`.
#[cfg(doctest)]
#[doc = include_str!(concat!(env!("OUT_DIR"), "/readme.md"))]
pub struct ReadmeSnippets;

/// One of the console's browser scripts (`tests/ui-browser/NAME.mjs`), run by node with
/// Debian's Chromium through Playwright.
pub struct BrowserScript {
    command: std::process::Command,
}

/// `tests/ui-browser/SCRIPT`, ready to run, when Chromium (`EVENTKIT_TEST_CHROMIUM`, default
/// `/usr/bin/chromium`) and Playwright (`tests/ui-browser/node_modules`) are installed
/// (`scripts/test.sh` installs them). Otherwise `None`, after saying that the test did not run;
/// under `CI=true`, a panic. With `EVENTKIT_UI_SCREENSHOTS=DIR` the script saves its pages there.
pub fn browser_script(script: &str) -> Option<BrowserScript> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui-browser");
    let chromium = std::env::var_os("EVENTKIT_TEST_CHROMIUM").map(std::path::PathBuf::from).unwrap_or_else(|| "/usr/bin/chromium".into());
    if !(chromium.exists() && dir.join("node_modules/playwright-core").exists()) {
        if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            panic!("no Chromium or Playwright in CI: scripts/test.sh installs them");
        }
        eprintln!("note: no Chromium ({}) or Playwright (tests/ui-browser/node_modules): {script} did not run (use scripts/test.sh)", chromium.display());
        return None;
    }
    let mut command = std::process::Command::new("node");
    command.arg(script).current_dir(&dir).env("CHROMIUM", &chromium);
    if let Some(shots) = std::env::var_os("EVENTKIT_UI_SCREENSHOTS") {
        command.env("SHOTS", shots);
    }
    Some(BrowserScript { command })
}

impl BrowserScript {
    /// Gives the script `name=value` in its environment.
    pub fn env(mut self, name: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.command.env(name, value);
        self
    }

    /// Runs it to its end (each of its steps has its own bound, so it always ends) and
    /// returns what it printed; panics with its output, naming `what`, when a step failed.
    pub async fn run(mut self, what: &str) -> String {
        let out = tokio::task::spawn_blocking(move || self.command.output()).await.unwrap().expect("node runs");
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{what}:\n{stdout}\n{stderr}");
        stdout
    }
}

/// Starts `app`, ready by its groups alone ([`groups_only_readiness`]), and waits until it is.
pub async fn start_ready(app: eventkit::AppBuilder) -> eventkit::Running {
    let running = app.readiness(groups_only_readiness()).build().unwrap().start().await.unwrap();
    assert!(eventually(Duration::from_secs(60), || running.readiness().is_ready()).await, "the app became ready");
    running
}
