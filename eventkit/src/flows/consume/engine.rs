//! The group's bookkeeping, shared by the fetch loop and the rebalance callbacks: the
//! partition table with each partition's offset tracker, the scheduler, the work running,
//! and the counts behind the memory bound.
//!
//! Running work lives in one set of futures that the fetch loop polls (so handler calls need
//! no task of their own and no cross-thread hand-off); work that completes on its first poll,
//! right where it starts, never joins the set. A revoke drives the same set while it waits
//! for the revoked partitions' records.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll};

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, Stream};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;

use super::record::{Epoch, Record, Slot};
use super::scheduler::{LaneId, Policy, Scheduler, Work};
use super::tracker::OffsetTracker;
use crate::flows::registry::TopicRoute;

/// How long the buffer may stay full before its partitions are paused.
pub(crate) const PAUSE_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// A unit of work being handled.
pub(crate) type Running = BoxFuture<'static, Completion>;

/// State shared by the fetch loop and the rebalance callbacks.
pub(crate) struct Shared {
    engine: Mutex<Engine>,
    running: Mutex<FuturesUnordered<Running>>,
    /// The fetch loop's waker, for a revoke that drove the running set with a waker of its own.
    pub loop_waker: futures::task::AtomicWaker,
}

impl Shared {
    pub(crate) fn new(engine: Engine) -> Self {
        Shared { engine: Mutex::new(engine), running: Mutex::default(), loop_waker: futures::task::AtomicWaker::new() }
    }

    /// The engine. Never held across an await or a call into the consumer that may run a
    /// callback; taken before `running` when both are needed.
    pub(crate) fn engine(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The engine, unless it is held already (callbacks that run inside a commit).
    pub(crate) fn try_engine(&self) -> Option<MutexGuard<'_, Engine>> {
        self.engine.try_lock().ok()
    }

    fn running(&self) -> MutexGuard<'_, FuturesUnordered<Running>> {
        self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a unit of work.
    pub(crate) fn start(&self, work: Running) {
        self.running().push(work);
    }

    /// Drives the running work: the next completion, or `Pending` (also while nothing runs).
    pub(crate) fn poll_completion(&self, cx: &mut TaskContext<'_>) -> Poll<Completion> {
        let mut running = self.running();
        if running.is_empty() {
            return Poll::Pending;
        }
        match Pin::new(&mut *running).poll_next(cx) {
            Poll::Ready(Some(c)) => Poll::Ready(c),
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }

    /// The next completion (waits while nothing runs).
    pub(crate) async fn next_completion(&self) -> Completion {
        std::future::poll_fn(|cx| self.poll_completion(cx)).await
    }

    /// Applies the completion `first` and every other one ready now. Returns how many.
    pub(crate) fn apply_ready(&self, engine: &mut Engine, first: Completion) -> usize {
        let now = Instant::now();
        engine.apply(first, now);
        let mut n = 1;
        let waker = futures::task::noop_waker();
        let mut cx = TaskContext::from_waker(&waker);
        while let Poll::Ready(c) = self.poll_completion(&mut cx) {
            engine.apply(c, now);
            n += 1;
        }
        n
    }

    /// Drops the work still running (shutdown after its timeout): handler calls are cancelled.
    pub(crate) fn abandon_running(&self) -> usize {
        let mut running = self.running();
        let n = running.len();
        *running = FuturesUnordered::new();
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
    /// Paused by an operator (see [`crate::flows::control`]): nothing of it starts.
    held: bool,
    /// Since when its oldest unsettled record is the oldest (for the health check).
    progress: crate::flows::status::Progress,
}

/// What an operator's reset did to one partition of this member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ResetOutcome {
    /// This member does not have the partition.
    NotOwned,
    /// Not done, and why.
    Refused(String),
    /// Done; the offset it would have committed before.
    Reset { from: Option<i64> },
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
    /// Since when buffered records are at the bound (fetched records are not taken meanwhile).
    full_since: Option<Instant>,
    /// Paused because the buffer stayed full for [`PAUSE_AFTER`].
    full: bool,
    /// Pause states may need to change.
    pause_dirty: bool,
    /// Shutting down: nothing new is fetched or started.
    stopping: bool,
    /// The consumer is closing: revokes no longer wait for in-flight work.
    closing: bool,
    /// What operators paused in this group.
    holds: crate::flows::control::Holds,
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
            full_since: None,
            full: false,
            pause_dirty: false,
            stopping: false,
            closing: false,
            holds: Default::default(),
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
            held: false,
            progress: Default::default(),
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
            self.start_afresh(slot, OffsetTracker::default());
            self.partitions[slot as usize].paused = None;
            self.apply_hold(slot);
        }
        self.pause_dirty = true;
    }

    /// A new epoch for the partition in `slot`, with `tracker`: what the old one started no
    /// longer counts (an assignment, an operator's reset).
    fn start_afresh(&mut self, slot: Slot, tracker: OffsetTracker) {
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        let p = &mut self.partitions[slot as usize];
        p.epoch = epoch;
        p.tracker = tracker;
        p.in_flight = 0;
        p.started = None;
        p.lagging = false;
        p.progress = Default::default();
    }

    /// What operators hold in this group now: partitions it covers stop starting work (and
    /// fetching); those it no longer covers go on where they stopped.
    pub(crate) fn set_holds(&mut self, holds: crate::flows::control::Holds) {
        self.holds = holds;
        for slot in 0..self.partitions.len() {
            self.apply_hold(slot as Slot);
        }
        self.pause_dirty = true;
    }

    /// Whether this member has the partition now.
    pub(crate) fn owns(&self, topic: &str, partition: i32) -> bool {
        self.slot(topic, partition).is_some_and(|slot| self.partitions[slot as usize].epoch != 0)
    }

    /// An operator moves this partition to `offset` (see [`crate::flows::control`]): as if it
    /// were revoked and assigned again from there. Refused, unless `force`, when it would move
    /// past records fetched and not settled yet (running, queued or waiting for a retry).
    pub(crate) fn reset(&mut self, topic: &str, partition: i32, offset: i64, force: bool) -> ResetOutcome {
        let Some(slot) = self.slot(topic, partition) else { return ResetOutcome::NotOwned };
        let p = &self.partitions[slot as usize];
        if p.epoch == 0 {
            return ResetOutcome::NotOwned;
        }
        let from = p.tracker.watermark();
        if let Some(oldest) = p.tracker.oldest_unsettled() {
            if offset > oldest && !force {
                return ResetOutcome::Refused(format!(
                    "records from offset {oldest} on are not settled yet (running, queued or waiting for a retry): moving to {offset} would skip them; wait for them, or force it"
                ));
            }
        }
        let (n, bytes) = self.scheduler.drop_slot(slot);
        self.release_buffer(n, bytes);
        // Committed with the next commit (and again if that fails), records or not.
        self.start_afresh(slot, OffsetTracker::starting_at(offset));
        self.pause_dirty = true;
        ResetOutcome::Reset { from }
    }

    fn apply_hold(&mut self, slot: Slot) {
        let p = &mut self.partitions[slot as usize];
        let held = self.holds.covers(&p.topic, p.partition);
        if held == p.held {
            return;
        }
        p.held = held;
        // Held, its oldest record does not count as stuck: the wait starts again on release.
        p.progress = Default::default();
        if held {
            self.scheduler.hold(slot);
        } else {
            self.scheduler.release_hold(slot);
        }
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

    /// Forgets revoked partitions; work of theirs still running no longer moves offsets. What
    /// the revoke's wait left queued (a retry of a record that failed meanwhile) is dropped.
    pub(crate) fn revoke_end(&mut self, slots: &[Slot]) {
        for &slot in slots {
            let (n, bytes) = self.scheduler.drop_slot(slot);
            self.release_buffer(n, bytes);
        }
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
        let record = Record::copy(m, slot, p.epoch, &p.route);
        self.take(record, now);
        true
    }

    /// Takes a tracked record into the buffer and the scheduler.
    fn take(&mut self, record: Record, now: Instant) {
        let p = &mut self.partitions[record.slot as usize];
        if !p.lagging && p.tracker.uncommitted() >= self.limits.max_uncommitted {
            p.lagging = true;
            self.pause_dirty = true;
        }
        self.buffered += 1;
        self.buffered_bytes += record.size();
        self.scheduler.enqueue(record, now);
    }

    /// Whether work is ready and a slot is free for it.
    pub(crate) fn has_startable(&self) -> bool {
        self.in_flight < self.limits.concurrency && self.scheduler.has_ready()
    }

    /// The next work to start, when a slot is free.
    pub(crate) fn next_work(&mut self) -> Option<Work> {
        if self.in_flight >= self.limits.concurrency {
            return None;
        }
        loop {
            let work = self.scheduler.next_ready()?;
            let p = &mut self.partitions[work.slot as usize];
            if p.epoch != work.epoch {
                // Left over from an assignment that ended: its records are the next owner's.
                let (n, bytes) = work.held();
                self.release_buffer(n, bytes);
                continue;
            }
            p.in_flight += 1;
            p.started = p.started.max(Some(work.last_offset()));
            self.in_flight += 1;
            return Some(work);
        }
    }

    /// Applies a worker's completion: settled offsets move the watermark, the lane is freed or
    /// held for the retry.
    pub(crate) fn apply(&mut self, c: Completion, now: Instant) {
        self.in_flight -= 1;
        let retry_held = c.retry.as_ref().map_or((0, 0), |(_, w)| w.held());
        let p = &mut self.partitions[c.slot as usize];
        if p.epoch != c.epoch {
            // The partition was revoked meanwhile: nothing is settled or retried, the memory is
            // given back, and the records of its key that came since may start.
            let (n, bytes) = settled_held(&c.settled);
            self.release_buffer(n + retry_held.0, bytes + retry_held.1);
            return self.scheduler.release(c.lane, now);
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

    /// When the next retry or batch deadline is due, or a full buffer turns into a pause.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let pause = self.full_since.filter(|_| !self.full).map(|since| since + PAUSE_AFTER);
        match (self.scheduler.next_deadline(), pause) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Watermarks to commit (of `only` these partitions, or all): those that moved since the
    /// last commit, or with `every`, all of them (the synchronous commits on revoke and at
    /// shutdown, which must not rely on an asynchronous commit still on its way).
    pub(crate) fn commits(&mut self, only: Option<&[Slot]>, every: bool) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for (slot, p) in self.partitions.iter_mut().enumerate() {
            if p.epoch == 0 || only.is_some_and(|s| !s.contains(&(slot as Slot))) {
                continue;
            }
            let offset = if every {
                let w = p.tracker.watermark();
                p.tracker.take_commit();
                w
            } else {
                p.tracker.take_commit()
            };
            if let Some(offset) = offset {
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

    /// Whether shutdown began (nothing new is fetched or started).
    pub(crate) fn stopping(&self) -> bool {
        self.stopping
    }

    /// Whether fetched records are left in librdkafka's queue for now: the buffer is full, and
    /// the partitions are not paused yet.
    pub(crate) fn throttled(&self) -> bool {
        self.full_since.is_some() && !self.full
    }

    /// Partitions to pause and to resume so that fetching matches the bounds: all of them
    /// when the buffer stayed full for [`PAUSE_AFTER`] or at shutdown, and each one that ran
    /// too far ahead of its commit.
    ///
    /// A full buffer first only stops the loop from taking records: librdkafka keeps its
    /// prefetched records (bounded like the buffer), and a fast handler frees room in time.
    /// Pausing drops that prefetch and costs a fetch round trip on resume, so it is kept for
    /// handlers that are stuck or very slow; the loop then goes on polling, and the member
    /// stays in its group.
    pub(crate) fn pause_changes(&mut self, now: Instant) -> Option<(TopicPartitionList, TopicPartitionList)> {
        let Limits { max_records, max_bytes, .. } = self.limits;
        let (mut records, mut bytes) = (self.buffered, self.buffered_bytes);
        if records >= max_records / 2 || bytes >= max_bytes / 2 {
            // What held partitions keep waiting does not count: their fetching stopped, and
            // counting it would pause (or never resume) the partitions that go on.
            let (held_records, held_bytes) = self.scheduler.held_buffered();
            records = records.saturating_sub(held_records);
            bytes = bytes.saturating_sub(held_bytes);
        }
        let over = records >= max_records || bytes >= max_bytes;
        let under = records <= max_records / 2 && bytes <= max_bytes / 2;
        match self.full_since {
            None if over => self.full_since = Some(now),
            Some(_) if under => {
                self.full_since = None;
                if std::mem::take(&mut self.full) {
                    self.pause_dirty = true;
                }
            }
            Some(since) if !self.full && now >= since + PAUSE_AFTER => {
                self.full = true;
                self.pause_dirty = true;
            }
            _ => {}
        }
        if !std::mem::take(&mut self.pause_dirty) {
            return None;
        }
        let (mut pause, mut resume) = (TopicPartitionList::new(), TopicPartitionList::new());
        for p in self.partitions.iter_mut().filter(|p| p.epoch != 0) {
            let want = self.stopping || self.full || p.lagging || p.held;
            // Unknown (newly assigned): librdkafka keeps a partition's pause across a revoke
            // and a new assignment, so it is told either way.
            if p.paused != Some(want) {
                p.paused = Some(want);
                let list = if want { &mut pause } else { &mut resume };
                list.add_partition(&p.topic, p.partition);
            }
        }
        Some((pause, resume))
    }

    /// Pausing or resuming these partitions failed: they are told again next turn.
    pub(crate) fn pause_failed(&mut self, tpl: &TopicPartitionList) {
        for e in tpl.elements() {
            if let Some(slot) = self.slot(e.topic(), e.partition()) {
                self.partitions[slot as usize].paused = None;
            }
        }
        self.pause_dirty = true;
    }

    /// Records and bytes held (queued, in flight or waiting for a retry).
    pub(crate) fn buffered(&self) -> (usize, usize) {
        (self.buffered, self.buffered_bytes)
    }

    /// The assigned partitions for the group's status; notes how long each has waited on
    /// its oldest unsettled record.
    pub(crate) fn status(&mut self, now: std::time::Instant) -> Vec<crate::flows::status::PartitionStatus> {
        let mut out = Vec::new();
        for p in self.partitions.iter_mut().filter(|p| p.epoch != 0) {
            // Held, what waits is paused, not stuck; a record still running is watched all the same.
            let oldest = if p.held && p.in_flight == 0 { None } else { p.tracker.oldest_unsettled() };
            let waiting = p.progress.observe(oldest, now).filter(|(_, d)| d.as_secs() >= 1);
            out.push(crate::flows::status::PartitionStatus {
                topic: p.topic.to_string(),
                partition: p.partition,
                position: p.tracker.watermark(),
                committed: None,
                high_watermark: None,
                lag: None,
                in_flight: p.in_flight,
                paused: p.paused == Some(true),
                held: p.held,
                waiting_on: waiting.map(|w| w.0),
                waiting_for_s: waiting.map(|w| w.1.as_secs_f64()),
            });
        }
        out
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::flows::consume::record::RecordHeaders;
    use crate::flows::consume::scheduler::Items;
    use crate::flows::context::RecordInfo;
    use crate::core::ordering::Ordering;

    const TOPIC: &str = "t";

    fn engine(max_records: usize) -> Engine {
        let route = Arc::new(TopicRoute { topic: TOPIC.into(), hints: Default::default(), catch_all: Vec::new() });
        let limits = Limits { concurrency: 8, max_records, max_bytes: usize::MAX, max_uncommitted: 1_000 };
        Engine::new(Policy::Records(Ordering::Key), limits, [(TOPIC.to_owned(), route)].into())
    }

    fn partition(p: i32) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(TOPIC, p);
        tpl
    }

    /// What `accept` does for a fetched record.
    fn fetched(e: &mut Engine, partition: i32, offset: i64, key: &str) {
        let slot = e.slot(TOPIC, partition).unwrap();
        let p = &mut e.partitions[slot as usize];
        assert!(p.tracker.track(offset));
        let record = Record {
            slot,
            epoch: p.epoch,
            route: p.route.clone(),
            info: RecordInfo { topic: TOPIC.into(), partition, offset, key: Some(Bytes::copy_from_slice(key.as_bytes())), timestamp_ms: None },
            headers: RecordHeaders::default(),
            value: None,
            attempts: 0,
            first_failure: None,
            settled_handlers: Vec::new(),
        };
        e.take(record, Instant::now());
    }

    fn failed(work: Work, due: Instant) -> Completion {
        Completion { lane: work.lane, slot: work.slot, epoch: work.epoch, settled: Settled::Many(Vec::new()), retry: Some((due, work)) }
    }

    fn offset_of(work: &Work) -> i64 {
        match &work.items {
            Items::One(r) => r.offset(),
            Items::Batch(rs) => rs[0].offset(),
        }
    }

    #[test]
    fn a_retry_made_while_a_revoke_waits_dies_with_the_revoke() {
        let mut e = engine(100);
        e.assign(&partition(0));
        fetched(&mut e, 0, 0, "k");
        fetched(&mut e, 0, 1, "k");
        let running = e.next_work().unwrap();
        let slots = e.revoke_begin(&partition(0));
        // The revoke waits; the running record fails meanwhile and asks for a retry.
        let now = Instant::now();
        e.apply(failed(running, now), now);
        e.revoke_end(&slots);
        e.on_timer(now + Duration::from_secs(60));
        assert!(e.next_work().is_none(), "nothing of the revoked partition starts");
        assert_eq!((e.buffered(), e.in_flight()), ((0, 0), 0));
        // Assigned again: the record is fetched again and runs once, for the new assignment.
        e.assign(&partition(0));
        fetched(&mut e, 0, 0, "k");
        let again = e.next_work().unwrap();
        assert_eq!((offset_of(&again), e.in_flight_of(&slots)), (0, 1));
    }

    #[test]
    fn stale_work_is_never_started() {
        let mut e = engine(100);
        e.assign(&partition(0));
        fetched(&mut e, 0, 0, "a");
        // Ready, not started; the partition goes and comes back before it starts.
        let slots = e.revoke_begin(&partition(0));
        e.revoke_end(&slots);
        e.assign(&partition(0));
        assert!(e.next_work().is_none());
        assert_eq!(e.buffered(), (0, 0));
    }

    #[test]
    fn a_partition_paused_when_revoked_is_resumed_when_assigned_again() {
        let mut e = engine(1);
        e.assign(&partition(0));
        let now = Instant::now();
        let _ = e.pause_changes(now);
        fetched(&mut e, 0, 0, "k");
        let _ = e.pause_changes(now);
        let (pause, _) = e.pause_changes(now + PAUSE_AFTER).expect("full for long: paused");
        assert_eq!(pause.count(), 1);
        let slots = e.revoke_begin(&partition(0));
        e.revoke_end(&slots);
        e.assign(&partition(0));
        let (pause, resume) = e.pause_changes(now + PAUSE_AFTER).expect("told after the assignment");
        assert_eq!((pause.count(), resume.count()), (0, 1), "librdkafka keeps the pause across assignments");
    }

    #[test]
    fn synchronous_commits_send_watermarks_an_asynchronous_commit_took() {
        let mut e = engine(100);
        e.assign(&partition(0));
        fetched(&mut e, 0, 0, "k");
        assert_eq!(e.commits(None, false).count(), 1, "the watermark goes out asynchronously");
        assert_eq!(e.commits(None, false).count(), 0, "and is not sent again while it does not move");
        let every = e.commits(None, true);
        assert_eq!(every.elements()[0].offset(), Offset::Offset(0), "the revoke commit sends it anyway");
    }

    fn holds(action: crate::flows::control::Action, partition: Option<i32>, mut on: crate::flows::control::Holds) -> crate::flows::control::Holds {
        let scope = crate::flows::control::Scope { topic: Some(TOPIC.into()), partition };
        on.apply(&crate::flows::control::Command::new(action, "g", scope, "test"));
        on
    }

    #[test]
    fn a_held_partition_starts_nothing_and_goes_on_where_it_stopped_when_released() {
        use crate::flows::control::Action;
        let mut e = engine(100);
        e.assign(&partition(0));
        e.assign(&partition(1));
        fetched(&mut e, 0, 0, "a");
        fetched(&mut e, 0, 1, "b");
        fetched(&mut e, 1, 0, "c");
        // Held with records fetched and ready: none of them starts; the other partition goes on.
        let held = holds(Action::Pause, Some(0), Default::default());
        e.set_holds(held.clone());
        let (pause, resume) = e.pause_changes(Instant::now()).expect("fetching changes");
        assert_eq!((pause.count(), resume.count()), (1, 1), "partition 0 paused (1 told it runs)");
        let started = e.next_work().expect("partition 1's record");
        assert_eq!((started.slot, offset_of(&started)), (e.slot(TOPIC, 1).unwrap(), 0));
        assert!(e.next_work().is_none(), "nothing of the held partition starts");
        fetched(&mut e, 0, 2, "a");
        assert!(e.next_work().is_none(), "nor what comes later");
        assert!(e.status(std::time::Instant::now()).iter().any(|p| p.partition == 0 && p.held && p.paused && p.waiting_on.is_none()));
        // A revoke and a new assignment keep the hold (it is the group's, not the assignment's).
        let slots = e.revoke_begin(&partition(0));
        e.revoke_end(&slots);
        assert_eq!(e.buffered(), (1, e.buffered().1), "the held partition's records went with the revoke");
        e.assign(&partition(0));
        fetched(&mut e, 0, 0, "a");
        fetched(&mut e, 0, 1, "b");
        assert!(e.next_work().is_none(), "held after the assignment too");
        // Released: its records start, in their order per key.
        e.set_holds(holds(Action::Resume, Some(0), held));
        let (pause, resume) = e.pause_changes(Instant::now()).expect("fetching resumes");
        assert_eq!((pause.count(), resume.count()), (0, 1));
        let mut offsets = vec![offset_of(&e.next_work().unwrap()), offset_of(&e.next_work().unwrap())];
        offsets.sort_unstable();
        assert_eq!(offsets, vec![0, 1]);
    }

    #[test]
    fn shutdown_drops_what_a_held_partition_parked() {
        use crate::flows::control::Action;
        let mut e = engine(100);
        e.assign(&partition(0));
        fetched(&mut e, 0, 0, "a");
        e.set_holds(holds(Action::Pause, None, Default::default()));
        assert!(e.next_work().is_none());
        e.stop();
        assert!(e.next_work().is_none(), "a held partition starts nothing at shutdown either");
        assert!(e.idle());
        assert_eq!(e.buffered(), (0, 0));
        let commits = e.commits(None, true);
        assert!(commits.elements().iter().all(|c| c.offset() == Offset::Offset(0)), "nothing settled: the offset stays at the parked record");
    }

    #[test]
    fn a_reset_starts_the_partition_afresh_and_refuses_to_skip_unsettled_records_unless_forced() {
        let mut e = engine(100);
        e.assign(&partition(0));
        fetched(&mut e, 0, 5, "a");
        fetched(&mut e, 0, 6, "b");
        let running = e.next_work().unwrap();
        assert_eq!(e.reset(TOPIC, 1, 0, false), ResetOutcome::NotOwned);
        assert!(matches!(e.reset(TOPIC, 0, 9, false), ResetOutcome::Refused(why) if why.contains("from offset 5")));
        assert_eq!(e.buffered().0, 2, "a refused reset changes nothing");
        // Back in time: allowed (nothing is skipped); what was queued goes, what runs no longer counts.
        assert_eq!(e.reset(TOPIC, 0, 2, false), ResetOutcome::Reset { from: Some(5) });
        assert!(e.next_work().is_none(), "the queued record of before the reset is dropped");
        let now = Instant::now();
        e.apply(Completion { lane: running.lane, slot: running.slot, epoch: running.epoch, settled: Settled::One { offset: 5, bytes: 0 }, retry: None }, now);
        let commits = e.commits(None, false);
        assert_eq!(commits.elements().iter().map(|c| c.offset()).collect::<Vec<_>>(), vec![Offset::Offset(2)], "the reset offset goes out with the next commit; the old record's completion moves nothing");
        fetched(&mut e, 0, 2, "a");
        assert_eq!(offset_of(&e.next_work().unwrap()), 2, "fetched again from the reset offset");
        // Forced past an unsettled record.
        assert!(matches!(e.reset(TOPIC, 0, 50, true), ResetOutcome::Reset { from: Some(2) }));
    }

    #[test]
    fn what_a_held_partition_keeps_never_stops_the_others() {
        use crate::flows::control::Action;
        let mut e = engine(10);
        e.assign(&partition(0));
        e.assign(&partition(1));
        let now = Instant::now();
        let _ = e.pause_changes(now);
        for o in 0..10 {
            fetched(&mut e, 0, o, "a");
        }
        let running = e.next_work().unwrap();
        let _ = e.pause_changes(now);
        let (pause, _) = e.pause_changes(now + PAUSE_AFTER).expect("full for long");
        assert_eq!(pause.count(), 2, "a full buffer pauses every partition");
        // Partition 0 held; its running record completes: what it keeps waiting does not count.
        e.set_holds(holds(Action::Pause, Some(0), Default::default()));
        e.apply(Completion { lane: running.lane, slot: running.slot, epoch: running.epoch, settled: Settled::One { offset: 0, bytes: 0 }, retry: None }, now);
        let (pause, resume) = e.pause_changes(now + PAUSE_AFTER).expect("changes");
        assert_eq!((pause.count(), resume.count()), (0, 1), "partition 1 resumes, partition 0 stays paused");
        assert!(!e.throttled(), "and fetched records are taken again");
        fetched(&mut e, 1, 0, "b");
        assert_eq!(e.next_work().map(|w| w.slot), e.slot(TOPIC, 1), "partition 1's record starts");
    }
}
