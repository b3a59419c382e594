//! The group's bookkeeping, shared by the fetch loop and the rebalance callbacks: the
//! partition table with each partition's offset tracker, the scheduler, what is in flight,
//! and the counts behind the memory bound.
//!
//! Workers never touch it: they hand their [`Completion`] to [`Shared::complete`], and the
//! fetch loop (or a revoke waiting for in-flight records) applies it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::record::{Epoch, Record, Slot};
use super::scheduler::{LaneId, Policy, Scheduler, Work};
use super::tracker::OffsetTracker;
use crate::registry::TopicRoute;

/// State shared by the fetch loop, the rebalance callbacks and the workers.
pub(crate) struct Shared {
    engine: Mutex<Engine>,
    completions: Mutex<Vec<Completion>>,
    /// Wakes the fetch loop when a completion arrives.
    pub wake: Notify,
}

impl Shared {
    pub(crate) fn new(engine: Engine) -> Self {
        Shared { engine: Mutex::new(engine), completions: Mutex::default(), wake: Notify::new() }
    }

    /// The engine. Never held across an await or a call into the consumer that may run a callback.
    pub(crate) fn engine(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The engine, unless it is held already (callbacks that run inside a commit).
    pub(crate) fn try_engine(&self) -> Option<MutexGuard<'_, Engine>> {
        self.engine.try_lock().ok()
    }

    /// A worker is done with its work.
    pub(crate) fn complete(&self, completion: Completion) {
        self.completions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(completion);
        self.wake.notify_one();
    }

    /// Applies every completion that arrived. Returns how many.
    pub(crate) fn apply_completions(&self, engine: &mut Engine, buffer: &mut Vec<Completion>) -> usize {
        std::mem::swap(buffer, &mut *self.completions.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let n = buffer.len();
        let now = Instant::now();
        for c in buffer.drain(..) {
            engine.apply(c, now);
        }
        n
    }
}

/// Which records of a unit of work settled.
pub(crate) enum Settled {
    One { offset: i64, bytes: usize },
    Many(Vec<(i64, usize)>),
}

/// How a unit of work ended: the records that settled, and the rest to retry at a time.
pub(crate) struct Completion {
    pub lane: LaneId,
    pub slot: Slot,
    pub epoch: Epoch,
    pub settled: Settled,
    pub retry: Option<(Instant, Work)>,
}

/// The bounds of a group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub concurrency: usize,
    pub max_records: usize,
    pub max_bytes: usize,
    pub max_uncommitted: usize,
}

/// One partition the group has been assigned at some point.
struct Partition {
    topic: Arc<str>,
    partition: i32,
    route: Arc<TopicRoute>,
    /// The current assignment's epoch; 0 while not assigned.
    epoch: Epoch,
    tracker: OffsetTracker,
    /// Work of this assignment started and not completed.
    in_flight: usize,
    /// The highest offset of this assignment started so far.
    started: Option<i64>,
    /// Paused because it ran `max_uncommitted` ahead of its oldest unsettled record.
    lagging: bool,
    /// What librdkafka was last told (`None`: not told since the assignment).
    paused: Option<bool>,
}

/// The group's bookkeeping.
pub(crate) struct Engine {
    partitions: Vec<Partition>,
    /// Slots by topic, then partition number.
    slots: BTreeMap<Arc<str>, Vec<Option<Slot>>>,
    routes: BTreeMap<String, Arc<TopicRoute>>,
    scheduler: Scheduler,
    limits: Limits,
    in_flight: usize,
    buffered: usize,
    buffered_bytes: usize,
    next_epoch: Epoch,
    /// Paused because buffered records reached the bound.
    full: bool,
    /// Pause states may need to change.
    pause_dirty: bool,
    /// Shutting down: nothing new is fetched or started.
    stopping: bool,
    /// The consumer is closing: revokes no longer wait for in-flight work.
    closing: bool,
}

impl Engine {
    pub(crate) fn new(policy: Policy, limits: Limits, routes: BTreeMap<String, Arc<TopicRoute>>) -> Self {
        Engine {
            partitions: Vec::new(),
            slots: BTreeMap::new(),
            routes,
            scheduler: Scheduler::new(policy),
            limits,
            in_flight: 0,
            buffered: 0,
            buffered_bytes: 0,
            next_epoch: 1,
            full: false,
            pause_dirty: false,
            stopping: false,
            closing: false,
        }
    }

    fn slot(&self, topic: &str, partition: i32) -> Option<Slot> {
        *self.slots.get(topic)?.get(usize::try_from(partition).ok()?)?
    }

    fn slot_or_insert(&mut self, topic: &str, partition: i32) -> Option<Slot> {
        if let Some(slot) = self.slot(topic, partition) {
            return Some(slot);
        }
        let route = self.routes.get(topic)?.clone();
        let index = usize::try_from(partition).ok()?;
        let slot = Slot::try_from(self.partitions.len()).ok()?;
        self.partitions.push(Partition {
            topic: route.topic.clone(),
            partition,
            route: route.clone(),
            epoch: 0,
            tracker: OffsetTracker::default(),
            in_flight: 0,
            started: None,
            lagging: false,
            paused: None,
        });
        let by_partition = self.slots.entry(route.topic.clone()).or_default();
        if by_partition.len() <= index {
            by_partition.resize(index + 1, None);
        }
        by_partition[index] = Some(slot);
        Some(slot)
    }

    /// Partitions newly assigned: each starts afresh (a new epoch, an empty tracker).
    pub(crate) fn assign(&mut self, tpl: &TopicPartitionList) {
        for e in tpl.elements() {
            let Some(slot) = self.slot_or_insert(e.topic(), e.partition()) else { continue };
            let epoch = self.next_epoch;
            self.next_epoch += 1;
            let p = &mut self.partitions[slot as usize];
            p.epoch = epoch;
            p.tracker = OffsetTracker::default();
            p.in_flight = 0;
            p.started = None;
            p.lagging = false;
            p.paused = None;
        }
        self.pause_dirty = true;
    }

    /// Partitions being revoked: their records that have not started are dropped (the next
    /// owner fetches them again). Returns their slots.
    pub(crate) fn revoke_begin(&mut self, tpl: &TopicPartitionList) -> Vec<Slot> {
        let mut slots = Vec::new();
        for e in tpl.elements() {
            let Some(slot) = self.slot(e.topic(), e.partition()) else { continue };
            if self.partitions[slot as usize].epoch == 0 {
                continue;
            }
            let (n, bytes) = self.scheduler.drop_slot(slot);
            self.release_buffer(n, bytes);
            slots.push(slot);
        }
        slots
    }

    /// Forgets revoked partitions; work of theirs still running no longer moves offsets.
    pub(crate) fn revoke_end(&mut self, slots: &[Slot]) {
        for &slot in slots {
            let p = &mut self.partitions[slot as usize];
            p.epoch = 0;
            p.tracker = OffsetTracker::default();
            p.lagging = false;
            p.paused = None;
        }
    }

    /// Work started and not completed on these partitions.
    pub(crate) fn in_flight_of(&self, slots: &[Slot]) -> usize {
        slots.iter().map(|&s| self.partitions[s as usize].in_flight).sum()
    }

    /// Work started and not completed.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Takes a fetched record. False when it is not taken: its partition is not assigned, or
    /// it was delivered before (it is not handled twice).
    pub(crate) fn accept(&mut self, m: &BorrowedMessage<'_>, now: Instant) -> bool {
        let Some(slot) = self.slot(m.topic(), m.partition()) else { return false };
        let p = &mut self.partitions[slot as usize];
        if p.epoch == 0 || self.stopping || !p.tracker.track(m.offset()) {
            return false;
        }
        if !p.lagging && p.tracker.uncommitted() >= self.limits.max_uncommitted {
            p.lagging = true;
            self.pause_dirty = true;
        }
        let record = Record::copy(m, slot, p.epoch, &p.route);
        self.buffered += 1;
        self.buffered_bytes += record.size();
        self.scheduler.enqueue(record, now);
        true
    }

    /// The next work to start, when a slot is free.
    pub(crate) fn next_work(&mut self) -> Option<Work> {
        if self.in_flight >= self.limits.concurrency {
            return None;
        }
        let work = self.scheduler.next_ready()?;
        self.in_flight += 1;
        let p = &mut self.partitions[work.slot as usize];
        p.in_flight += 1;
        p.started = p.started.max(Some(work.last_offset()));
        Some(work)
    }

    /// Applies a worker's completion: settled offsets move the watermark, the lane is freed or
    /// held for the retry.
    pub(crate) fn apply(&mut self, c: Completion, now: Instant) {
        self.in_flight -= 1;
        let retry_held = c.retry.as_ref().map_or((0, 0), |(_, w)| w.held());
        let p = &mut self.partitions[c.slot as usize];
        if p.epoch != c.epoch {
            // The partition was revoked meanwhile: only the memory is given back.
            let (n, bytes) = settled_held(&c.settled);
            return self.release_buffer(n + retry_held.0, bytes + retry_held.1);
        }
        p.in_flight -= 1;
        let (mut n, mut bytes) = (0, 0);
        match &c.settled {
            Settled::One { offset, bytes: b } => {
                p.tracker.settle(*offset);
                (n, bytes) = (1, *b);
            }
            Settled::Many(records) => {
                for &(offset, b) in records {
                    p.tracker.settle(offset);
                    n += 1;
                    bytes += b;
                }
            }
        }
        if p.lagging && p.tracker.uncommitted() <= self.limits.max_uncommitted / 2 {
            p.lagging = false;
            self.pause_dirty = true;
        }
        self.release_buffer(n, bytes);
        match c.retry {
            // Shutting down: no more retries; the records queued behind this one cannot go first.
            Some(_) if self.stopping => {
                let (m, b) = self.scheduler.abandon(c.lane);
                self.release_buffer(retry_held.0 + m, retry_held.1 + b);
            }
            Some((due, work)) => self.scheduler.retry_at(due, work),
            None => self.scheduler.release(c.lane, now),
        }
    }

    fn release_buffer(&mut self, records: usize, bytes: usize) {
        self.buffered -= records;
        self.buffered_bytes -= bytes;
    }

    /// Makes due retries ready and starts batches whose wait is over.
    pub(crate) fn on_timer(&mut self, now: Instant) {
        self.scheduler.on_timer(now);
    }

    /// When the next retry or batch deadline is due.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.scheduler.next_deadline()
    }

    /// Watermarks that moved since the last commit (of `only` these partitions, or all).
    pub(crate) fn commits(&mut self, only: Option<&[Slot]>) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for (slot, p) in self.partitions.iter_mut().enumerate() {
            if p.epoch == 0 || only.is_some_and(|s| !s.contains(&(slot as Slot))) {
                continue;
            }
            if let Some(offset) = p.tracker.take_commit() {
                let _ = tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(offset));
            }
        }
        tpl
    }

    /// A commit failed: its offsets go out again with the next commit.
    pub(crate) fn commit_failed(&mut self, tpl: &TopicPartitionList) {
        for e in tpl.elements() {
            if let (Some(slot), Offset::Offset(offset)) = (self.slot(e.topic(), e.partition()), e.offset()) {
                self.partitions[slot as usize].tracker.commit_failed(offset);
            }
        }
    }

    /// Shutdown begins: nothing new is fetched; of what was fetched, only the records below
    /// each partition's highest started offset still run (see [`Scheduler::flush`]).
    pub(crate) fn stop(&mut self) {
        self.stopping = true;
        self.pause_dirty = true;
        let partitions = &self.partitions;
        let (n, bytes) = self.scheduler.flush(|slot| partitions[slot as usize].started, Instant::now());
        self.release_buffer(n, bytes);
    }

    /// Nothing is running or ready to start.
    pub(crate) fn idle(&self) -> bool {
        self.in_flight == 0 && !self.scheduler.has_ready()
    }

    /// The consumer is closing: revokes commit what settled without waiting.
    pub(crate) fn set_closing(&mut self) {
        self.closing = true;
    }

    pub(crate) fn closing(&self) -> bool {
        self.closing
    }

    /// Partitions to pause and to resume so that fetching matches the bounds: all of them
    /// while the buffer is full or at shutdown, and each one that ran too far ahead of its commit.
    pub(crate) fn pause_changes(&mut self) -> Option<(TopicPartitionList, TopicPartitionList)> {
        let Limits { max_records, max_bytes, .. } = self.limits;
        if !self.full && (self.buffered >= max_records || self.buffered_bytes >= max_bytes) {
            self.full = true;
            self.pause_dirty = true;
        } else if self.full && self.buffered <= max_records / 2 && self.buffered_bytes <= max_bytes / 2 {
            self.full = false;
            self.pause_dirty = true;
        }
        if !std::mem::take(&mut self.pause_dirty) {
            return None;
        }
        let (mut pause, mut resume) = (TopicPartitionList::new(), TopicPartitionList::new());
        for p in self.partitions.iter_mut().filter(|p| p.epoch != 0) {
            let want = self.stopping || self.full || p.lagging;
            if p.paused != Some(want) {
                p.paused = Some(want);
                let list = if want { &mut pause } else { &mut resume };
                list.add_partition(&p.topic, p.partition);
            }
        }
        Some((pause, resume))
    }

    /// Records and bytes held (queued, in flight or waiting for a retry).
    pub(crate) fn buffered(&self) -> (usize, usize) {
        (self.buffered, self.buffered_bytes)
    }

    /// Whether fetching is paused because the buffer is full.
    pub(crate) fn is_full(&self) -> bool {
        self.full
    }
}

fn settled_held(settled: &Settled) -> (usize, usize) {
    match settled {
        Settled::One { bytes, .. } => (1, *bytes),
        Settled::Many(records) => (records.len(), records.iter().map(|r| r.1).sum()),
    }
}
