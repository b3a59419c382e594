//! The fleet: every running instance of the service, seen from any one of them, with no
//! database (as Karafka's Web UI does it).
//!
//! Each instance publishes a status report to the status topic (`eventkit.status` under the
//! topic prefix; one partition, compacted, keyed by instance, kept a day) every
//! `EVENTKIT_STATUS_INTERVAL_MS` (5 s by default): its groups, their partitions with position,
//! lag, in flight, paused and held, a group stopped by an error, and whether it is ready. When
//! it shuts down it reports once more, as stopped. Whoever asks ([`Running::fleet`], the admin
//! API's `GET /fleet`, the console) reads the topic from its beginning once, then follows it,
//! keeping each instance's latest report.
//!
//! **Staleness.** A report carries its groups' status as of their last refresh (once a
//! second), is sent one interval after the last, and reaches a reader within a fetch (well
//! under a second on a healthy cluster): what the fleet view shows of an instance is at most
//! about one interval and a second old. An instance whose latest report is older than three
//! intervals is shown as `not reporting` (killed, frozen, cut off from Kafka, or too slow to
//! deliver its reports); one that said it stopped, as `stopped`. Ages come from the reports'
//! own clocks (hosts with skewed clocks shift them by the skew), except that a report dated
//! in the future ages from when it was read. Reports older than an hour are forgotten; the
//! topic keeps a day (`cleanup.policy=compact,delete`). A report counts only under its own
//! instance's key, the latest in the log winning.
//!
//! [`Running::fleet`]: crate::Running::fleet

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::app::Readiness;
use crate::core::config::Config;
use crate::core::error::{Error, Result};
use crate::flows::control::Control;
use crate::flows::publish::Publisher;
use crate::flows::status::{GroupSnapshot, GroupStatus};

/// An instance whose latest report is older than this many intervals is `not reporting`.
pub const STALE_AFTER_INTERVALS: u32 = 3;

/// Reports older than this are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// The largest report read (a record beyond it is not one of eventkit's).
const MAX_REPORT: usize = 1 << 20;

/// How long the shutdown waits for the last report's delivery.
const LAST_REPORT_WAIT: Duration = Duration::from_secs(1);

/// How long a first look at the fleet waits for the status topic to be read to its end.
const FIRST_READ: Duration = Duration::from_secs(10);

/// What one instance reports about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// `SERVICE@HOST:PID` (with `#N` for the N-th app of one process).
    pub instance: String,
    /// The service's name.
    pub service: String,
    /// `HOSTNAME`, or `localhost`.
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// eventkit's version.
    pub version: String,
    /// When the instance started (RFC 3339).
    pub started_at: String,
    /// When it made this report, in milliseconds since the Unix epoch (its clock).
    pub at_ms: i64,
    /// How often it reports, in milliseconds.
    pub interval_ms: u64,
    /// Whether this is its last report: it shut down.
    #[serde(default)]
    pub stopped: bool,
    /// Whether it was ready (its readiness check).
    pub ready: bool,
    /// Its consumer groups.
    pub groups: Vec<GroupReport>,
}

/// One group of an instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupReport {
    /// The group id.
    pub group: String,
    /// Its state in this instance: partitions with positions, lag, in flight, paused, held.
    #[serde(flatten)]
    pub status: GroupSnapshot,
    /// How many operators' pauses hold (parts of) it.
    pub holds: usize,
}

/// An instance as the fleet view shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    /// `up`, `not reporting` or `stopped`.
    pub state: &'static str,
    /// Seconds since its latest report.
    pub age_s: f64,
    /// Whether it is the instance answering.
    pub this: bool,
    /// Its latest report.
    #[serde(flatten)]
    pub report: Report,
}

/// Every instance of the service that reported within the last hour, by instance.
#[derive(Debug, Clone, Serialize)]
pub struct FleetView {
    /// This instance's reporting interval, in seconds.
    pub interval_s: f64,
    /// After how many seconds without a report an instance is `not reporting`.
    pub stale_after_s: f64,
    /// Whether the status topic could be read (else: this instance alone, and why not).
    pub complete: bool,
    /// Why the view holds this instance alone, when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The instances, by name.
    pub instances: Vec<Instance>,
}

impl FleetView {
    /// The instance named `instance`.
    pub fn instance(&self, instance: &str) -> Option<&Instance> {
        self.instances.iter().find(|i| i.report.instance == instance)
    }
}

/// The state of an instance whose latest report is `age` old.
pub(crate) fn state_of(report: &Report, age: Duration) -> &'static str {
    if report.stopped {
        "stopped"
    } else if age > Duration::from_millis(report.interval_ms.max(1)) * STALE_AFTER_INTERVALS {
        "not reporting"
    } else {
        "up"
    }
}

/// The reports read so far, and whether the topic was read to its end once.
#[derive(Default)]
struct Read {
    /// By instance: the latest report and when this process read it (ms since the epoch).
    reports: BTreeMap<String, (Report, i64)>,
    caught_up: bool,
    error: Option<String>,
}

struct Shared {
    config: Config,
    instance: String,
    started_at: String,
    statuses: Vec<Arc<GroupStatus>>,
    control: Control,
    ready: Readiness,
    read: Mutex<Read>,
    read_changed: watch::Sender<u64>,
    reading: AtomicBool,
    stop: AtomicBool,
}

/// This instance's reporter and its view of the fleet.
#[derive(Clone)]
pub struct Fleet {
    shared: Arc<Shared>,
    reporter: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("instance", &self.shared.instance).finish_non_exhaustive()
    }
}

/// This process's `SERVICE@HOST:PID`, `#N` added for its N-th app.
fn instance_name(service: &str) -> String {
    static APPS: AtomicUsize = AtomicUsize::new(0);
    let n = APPS.fetch_add(1, Ordering::Relaxed) + 1;
    let base = format!("{service}@{}:{}", crate::core::config::host_name(), std::process::id());
    if n == 1 {
        base
    } else {
        format!("{base}#{n}")
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Fleet {
    /// Starts reporting (unless the interval is zero).
    pub(crate) fn start(config: &Config, publisher: &Publisher, statuses: Vec<Arc<GroupStatus>>, control: Control, ready: Readiness) -> Fleet {
        let shared = Arc::new(Shared {
            config: config.clone(),
            instance: instance_name(&config.service_name),
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            statuses,
            control,
            ready,
            read: Mutex::default(),
            read_changed: watch::channel(0).0,
            reading: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let fleet = Fleet { shared, reporter: Arc::default() };
        if !config.status_interval.is_zero() {
            let (shared, publisher) = (fleet.shared.clone(), publisher.clone());
            let task = tokio::spawn(async move {
                let topic = shared.config.status_topic();
                if let Err(e) = ensure_topic(&shared.config, &topic).await {
                    debug!(%topic, error = %e, "status topic");
                }
                let mut tick = tokio::time::interval(shared.config.status_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !shared.stop.load(Ordering::Acquire) {
                    tick.tick().await;
                    if let Err(e) = send(&shared, &publisher, false).await {
                        if crate::kafka::outage::due(&format!("status report {e}")) {
                            warn!(%topic, error = %e, "cannot report this instance's status (the fleet view shows it as not reporting; told once a minute while it lasts)");
                        }
                    }
                }
            });
            *fleet.reporter.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        }
        fleet
    }

    /// This instance's name in the fleet.
    pub fn instance(&self) -> &str {
        &self.shared.instance
    }

    /// This instance's report, as of now.
    pub fn report(&self) -> Report {
        report(&self.shared, false)
    }

    /// Every instance of the service that reported within the last hour, this one as of now.
    pub async fn view(&self) -> FleetView {
        let shared = &self.shared;
        let interval = shared.config.status_interval;
        let mut own = Instance { state: "up", age_s: 0.0, this: true, report: report(shared, false) };
        if interval.is_zero() {
            return FleetView {
                interval_s: 0.0,
                stale_after_s: 0.0,
                complete: false,
                note: Some("status reports are off (EVENTKIT_STATUS_INTERVAL_MS=0): this instance alone".into()),
                instances: vec![own],
            };
        }
        self.start_reading();
        let mut changed = shared.read_changed.subscribe();
        let _ = tokio::time::timeout(FIRST_READ, async {
            loop {
                if shared.read.lock().unwrap_or_else(|e| e.into_inner()).caught_up {
                    return;
                }
                if changed.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        let mut read = shared.read.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_ms();
        // A report's age by its own clock, but never younger than since it was read here: a
        // report dated in the future (a skewed or hostile clock) ages from its reading.
        let age_of = |r: &Report, received: i64| Duration::from_millis(now.saturating_sub(r.at_ms.min(received)).max(0) as u64);
        read.reports.retain(|_, (r, received)| age_of(r, *received) <= FORGET_AFTER);
        let mut instances: Vec<Instance> = read
            .reports
            .values()
            .filter(|(r, _)| r.instance != shared.instance && r.service == shared.config.service_name)
            .map(|(r, received)| {
                let age = age_of(r, *received);
                Instance { state: state_of(r, age), age_s: age.as_secs_f64(), this: false, report: r.clone() }
            })
            .collect();
        own.report.at_ms = now;
        instances.push(own);
        instances.sort_by(|a, b| a.report.instance.cmp(&b.report.instance));
        let note = match (&read.error, read.caught_up) {
            (Some(e), _) => Some(format!("the status topic cannot be read: {e}")),
            (None, false) => Some("the status topic is still being read".into()),
            (None, true) => None,
        };
        FleetView {
            interval_s: interval.as_secs_f64(),
            stale_after_s: (interval * STALE_AFTER_INTERVALS).as_secs_f64(),
            complete: read.caught_up,
            note,
            instances,
        }
    }

    /// Stops reporting, saying so once more (within `until`).
    pub(crate) async fn stop(&self, publisher: &Publisher, until: tokio::time::Instant) {
        self.shared.stop.store(true, Ordering::Release);
        let task = self.reporter.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
            // Briefly: a cluster that is down must not take the budget the flush needs.
            let until = until.min(tokio::time::Instant::now() + LAST_REPORT_WAIT);
            if tokio::time::timeout_at(until, send(&self.shared, publisher, true)).await.is_err() {
                debug!("the last status report was not sent within the shutdown budget");
            }
        }
    }

    /// Starts following the status topic (once).
    fn start_reading(&self) {
        if self.shared.reading.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = Arc::downgrade(&self.shared);
        let config = self.shared.config.clone();
        let started = std::thread::Builder::new().name("eventkit-fleet".into()).spawn(move || follow(&config, &shared));
        if let Err(e) = started {
            self.shared.read.lock().unwrap_or_else(|e| e.into_inner()).error = Some(e.to_string());
        }
    }
}

fn report(shared: &Shared, stopped: bool) -> Report {
    let groups = shared
        .statuses
        .iter()
        .map(|g| GroupReport { group: g.group.to_string(), status: g.snapshot(), holds: shared.control.holds(&g.group).list().len() })
        .collect();
    Report {
        instance: shared.instance.clone(),
        service: shared.config.service_name.clone(),
        host: crate::core::config::host_name(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_at: shared.started_at.clone(),
        at_ms: now_ms(),
        interval_ms: shared.config.status_interval.as_millis() as u64,
        stopped,
        ready: !stopped && shared.ready.is_ready(),
        groups,
    }
}

async fn send(shared: &Shared, publisher: &Publisher, stopped: bool) -> Result<()> {
    let value = serde_json::to_vec(&report(shared, stopped))?;
    let topic = shared.config.status_topic();
    publisher.send_headers(&topic, Some(shared.instance.as_bytes()), Some(0), Some(&value), rdkafka::message::OwnedHeaders::new()).await?;
    Ok(())
}

async fn ensure_topic(config: &Config, topic: &str) -> Result<()> {
    if crate::kafka::offsets::partition_count(config, topic).await?.is_none() {
        crate::kafka::topics::create_status_topic(config, topic).await?;
    }
    Ok(())
}

/// Follows the status topic from its beginning (on a thread of its own, while the fleet is).
fn follow(config: &Config, shared: &std::sync::Weak<Shared>) {
    let topic = config.status_topic();
    let consumer = match crate::kafka::offsets::reader(config, "fleet-reader") {
        Ok(c) => c,
        Err(e) => return failed(shared, e),
    };
    let mut assigned = false;
    let mut looked = Instant::now() - Duration::from_secs(60);
    loop {
        let Some(s) = shared.upgrade() else { break };
        if s.stop.load(Ordering::Acquire) {
            break;
        }
        drop(s);
        if !assigned {
            if looked.elapsed() < Duration::from_secs(1) {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            looked = Instant::now();
            match crate::kafka::offsets::partitions(&consumer, &topic) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    // No instance reported yet: nothing to read (this one shows itself).
                    caught_up(shared);
                    continue;
                }
                Err(e) => {
                    failed(shared, e);
                    continue;
                }
            }
            let mut tpl = TopicPartitionList::new();
            if tpl.add_partition_offset(&topic, 0, Offset::Beginning).is_err() || consumer.assign(&tpl).is_err() {
                continue;
            }
            assigned = true;
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => caught_up(shared),
            Some(Err(e)) => debug!(%topic, error = %e, "reading the status topic"),
            Some(Ok(m)) => {
                let Some(s) = shared.upgrade() else { break };
                let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
                let mut read = s.read.lock().unwrap_or_else(|e| e.into_inner());
                match (key, m.payload()) {
                    (Some(key), None) => {
                        read.reports.remove(&key);
                    }
                    // Keyed by the instance it speaks of (the reporter's key), the latest in the
                    // log winning (one partition: log order is the order they were sent in).
                    (Some(key), Some(payload)) => match serde_json::from_slice::<Report>(payload) {
                        Ok(r) if r.instance == key && payload.len() <= MAX_REPORT => {
                            read.reports.insert(key, (r, now_ms()));
                        }
                        Ok(_) => debug!(%topic, offset = m.offset(), "a status report keyed apart from its instance (or too large); skipped"),
                        Err(e) => debug!(%topic, offset = m.offset(), error = %e, "a record on the status topic is not a status report; skipped"),
                    },
                    (None, _) => {}
                }
                read.error = None;
                drop(read);
                s.read_changed.send_modify(|n| *n += 1);
            }
        }
    }
    debug!(%topic, "status topic no longer followed");
}

fn caught_up(shared: &std::sync::Weak<Shared>) {
    if let Some(s) = shared.upgrade() {
        let mut read = s.read.lock().unwrap_or_else(|e| e.into_inner());
        read.caught_up = true;
        read.error = None;
        drop(read);
        s.read_changed.send_modify(|n| *n += 1);
    }
}

fn failed(shared: &std::sync::Weak<Shared>, e: Error) {
    if let Some(s) = shared.upgrade() {
        s.read.lock().unwrap_or_else(|e| e.into_inner()).error = Some(e.to_string());
        s.read_changed.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(stopped: bool) -> Report {
        Report {
            instance: "svc@h:1".into(),
            service: "svc".into(),
            host: "h".into(),
            pid: 1,
            version: "0".into(),
            started_at: "2026-12-07T09:00:00Z".into(),
            at_ms: 0,
            interval_ms: 5000,
            stopped,
            ready: true,
            groups: vec![],
        }
    }

    #[test]
    fn an_instance_is_up_until_three_intervals_pass_without_a_report() {
        assert_eq!(state_of(&report(false), Duration::from_secs(0)), "up");
        assert_eq!(state_of(&report(false), Duration::from_secs(15)), "up");
        assert_eq!(state_of(&report(false), Duration::from_millis(15_001)), "not reporting");
        assert_eq!(state_of(&report(true), Duration::from_secs(1)), "stopped");
    }

    #[test]
    fn a_report_reads_back_as_it_was_written() {
        let mut r = report(false);
        r.groups.push(GroupReport { group: "g".into(), status: GroupSnapshot { joined: true, in_flight: 2, ..Default::default() }, holds: 1 });
        let back: Report = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(back.groups[0].group, "g");
        assert_eq!(back.groups[0].status.in_flight, 2);
        assert_eq!(back.groups[0].holds, 1);
        assert!(back.groups[0].status.joined);
    }
}
