//! What each consumer group is doing, for the health check and the admin API: whether it has
//! joined, its partitions with their positions, lag and pauses, and partitions stuck on one
//! record. The fetch loop refreshes it about once a second; librdkafka's statistics add the
//! committed offsets and lag every few seconds.
//!
//! The status carries its age: the fetch loop notes each turn, so a loop that stopped turning
//! (a handler blocking its thread instead of awaiting) shows as silent, and readiness fails
//! once it has been silent for the stuck threshold, although the status it last wrote looks fine.
// What groups are doing is read by the admin API (health, /groups).
#![cfg_attr(not(feature = "admin"), allow(dead_code))]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How often the fetch loop refreshes its group's status.
pub(crate) const REFRESH: Duration = Duration::from_secs(1);

/// One partition as its group sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionStatus {
    /// The topic on the wire.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset the group commits next: its oldest unsettled record, or one past the last.
    pub position: Option<i64>,
    /// The committed offset, per librdkafka's last statistics.
    pub committed: Option<i64>,
    /// The partition's end (high watermark), per librdkafka's last statistics.
    pub high_watermark: Option<i64>,
    /// Records between the committed offset and the end.
    pub lag: Option<i64>,
    /// Records (or batches) of the partition being handled.
    pub in_flight: usize,
    /// Whether fetching from it is paused (backpressure, or an operator's pause).
    pub paused: bool,
    /// Whether an operator paused it (`PROGRAM groups pause`, `POST /groups/pause`): nothing
    /// of it is handled until resumed, and it never counts as stuck.
    pub held: bool,
    /// The oldest unsettled record, when it has been so for over a second: the partition
    /// waits for it (a slow handler, or retries).
    pub waiting_on: Option<i64>,
    /// For how long, in seconds.
    pub waiting_for_s: Option<f64>,
}

/// A group's state at its last refresh.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupSnapshot {
    /// Whether the member has received an assignment (possibly empty) since it started.
    pub joined: bool,
    /// Why the group's consumer stopped by itself (an internal error), if it did: the app is
    /// then neither ready nor live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Records (or batches) being handled.
    pub in_flight: usize,
    /// Records held in memory and their bytes.
    pub buffered_records: usize,
    /// Bytes of the records held.
    pub buffered_bytes: usize,
    /// The assigned partitions.
    pub partitions: Vec<PartitionStatus>,
    /// Seconds since the group's fetch loop last turned (its status is that old).
    pub loop_silent_s: f64,
}

/// Offsets from librdkafka's statistics.
#[derive(Debug, Clone, Copy)]
struct Offsets {
    committed: Option<i64>,
    high_watermark: Option<i64>,
    lag: Option<i64>,
}

/// The live status of one consumer group in this process.
#[derive(Debug)]
pub(crate) struct GroupStatus {
    pub group: Arc<str>,
    pub topics: Vec<String>,
    joined: AtomicBool,
    /// Why the group's consumer stopped by itself, if it did.
    stopped: Mutex<Option<String>>,
    /// Partitions and counts from the engine (the fetch loop writes).
    engine: Mutex<(Vec<PartitionStatus>, usize, usize, usize)>,
    /// Offsets by topic and partition (the statistics callback writes).
    offsets: Mutex<BTreeMap<(String, i32), Offsets>>,
    /// When the fetch loop last turned, in milliseconds since [`epoch`].
    turned_ms: AtomicU64,
}

/// The clock of [`GroupStatus::turned`].
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl GroupStatus {
    pub(crate) fn new(group: Arc<str>, topics: Vec<String>) -> Arc<Self> {
        let status = GroupStatus { group, topics, joined: AtomicBool::new(false), stopped: Mutex::default(), engine: Mutex::default(), offsets: Mutex::default(), turned_ms: AtomicU64::new(0) };
        status.turned(Instant::now());
        Arc::new(status)
    }

    /// The fetch loop turned at `now`.
    #[inline]
    pub(crate) fn turned(&self, now: Instant) {
        self.turned_ms.store(now.saturating_duration_since(epoch()).as_millis() as u64, Ordering::Relaxed);
    }

    /// How long since the fetch loop last turned.
    pub(crate) fn silent_for(&self) -> Duration {
        let turned = epoch() + Duration::from_millis(self.turned_ms.load(Ordering::Relaxed));
        Instant::now().saturating_duration_since(turned)
    }

    pub(crate) fn joined(&self) {
        self.joined.store(true, Ordering::Release);
    }

    pub(crate) fn stopped(&self, reason: String) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
    }

    /// Why the group's consumer stopped by itself, if it did.
    pub(crate) fn stopped_reason(&self) -> Option<String> {
        self.stopped.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn update(&self, partitions: Vec<PartitionStatus>, in_flight: usize, buffered: (usize, usize)) {
        *self.engine.lock().unwrap_or_else(|e| e.into_inner()) = (partitions, in_flight, buffered.0, buffered.1);
    }

    pub(crate) fn statistics(&self, statistics: &rdkafka::Statistics) {
        let known = |v: i64| (v >= 0).then_some(v);
        let mut offsets = self.offsets.lock().unwrap_or_else(|e| e.into_inner());
        offsets.clear();
        for (topic, t) in &statistics.topics {
            for (&partition, p) in t.partitions.iter().filter(|(&n, _)| n >= 0) {
                let o = Offsets { committed: known(p.committed_offset), high_watermark: known(p.hi_offset), lag: known(p.consumer_lag) };
                offsets.insert((topic.clone(), partition), o);
            }
        }
    }

    /// The group as of the last refresh and statistics.
    pub(crate) fn snapshot(&self) -> GroupSnapshot {
        let (mut partitions, in_flight, buffered_records, buffered_bytes) = self.engine.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let offsets = self.offsets.lock().unwrap_or_else(|e| e.into_inner());
        for p in &mut partitions {
            if let Some(o) = offsets.get(&(p.topic.clone(), p.partition)) {
                p.committed = o.committed;
                p.high_watermark = o.high_watermark;
                p.lag = o.lag;
            }
        }
        let loop_silent_s = (self.silent_for().as_secs_f64() * 10.0).round() / 10.0;
        GroupSnapshot { joined: self.joined.load(Ordering::Acquire), stopped: self.stopped_reason(), in_flight, buffered_records, buffered_bytes, partitions, loop_silent_s }
    }
}

/// Why an app is not ready, if it is not: empty when it is. `checks` says what counts
/// (`EVENTKIT_READINESS`); a group stopped by an internal error always does.
pub(crate) fn unready_reasons(started: bool, checks: crate::core::config::ReadinessChecks, groups: &[(Arc<str>, GroupSnapshot)], stuck_after: Duration) -> Vec<String> {
    let mut reasons = Vec::new();
    if !started {
        reasons.push("the app has not started (or is stopping)".to_owned());
    }
    if checks.kafka {
        if let Some(since) = crate::kafka::outage::active_since() {
            reasons.push(format!("the Kafka cluster has been unreachable for {} s", since.elapsed().as_secs()));
        }
    }
    for (group, s) in groups {
        if let Some(reason) = &s.stopped {
            reasons.push(reason.clone());
            continue;
        }
        if !checks.groups {
            continue;
        }
        if !s.joined {
            reasons.push(format!("consumer group `{group}` has no assignment yet"));
        }
        if started && s.loop_silent_s >= stuck_after.as_secs_f64() {
            reasons.push(format!(
                "consumer group `{group}`: its fetch loop has not run for {:.0} s (threshold {} s): a handler is blocking its thread? (blocking work belongs in tokio::task::spawn_blocking)",
                s.loop_silent_s,
                stuck_after.as_secs()
            ));
        }
        for p in &s.partitions {
            if let (Some(offset), Some(secs)) = (p.waiting_on, p.waiting_for_s) {
                if secs >= stuck_after.as_secs_f64() {
                    reasons.push(format!(
                        "consumer group `{group}`: {}[{}] has been stuck on offset {offset} for {secs:.0} s (threshold {} s)",
                        p.topic,
                        p.partition,
                        stuck_after.as_secs()
                    ));
                }
            }
        }
    }
    reasons
}

/// When a partition's oldest unsettled record started waiting; kept per partition by the engine.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Progress(Option<(i64, Instant)>);

impl Progress {
    /// Notes the oldest unsettled offset now; returns it with how long it has been the oldest.
    pub(crate) fn observe(&mut self, oldest_unsettled: Option<i64>, now: Instant) -> Option<(i64, Duration)> {
        match (oldest_unsettled, self.0) {
            (None, _) => {
                self.0 = None;
                None
            }
            (Some(o), Some((seen, since))) if seen == o => Some((o, now.saturating_duration_since(since))),
            (Some(o), _) => {
                self.0 = Some((o, now));
                Some((o, Duration::ZERO))
            }
        }
    }
}
