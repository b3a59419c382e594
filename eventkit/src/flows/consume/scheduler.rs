//! The scheduler: which fetched record may start, by ordering mode.
//!
//! Records are grouped into lanes: one per Kafka key (`key`), per partition (`partition`, and
//! batch groups), or none at all (`none`). A lane has at most one unit of work started, ready,
//! or waiting for a retry; its later records wait in the lane's queue, in offset order, until
//! that work settled. So a failing record holds only its own lane while it waits for its retry.
//! Batch groups gather a partition's records up to `max_size`, or for at most `max_wait`
//! from the oldest, into one unit of work.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use tokio::time::Instant;

use super::record::{Epoch, Record, Slot};
use crate::core::ordering::Ordering;

/// Identifies a lane: a hash of partition and key (`key` mode) or the partition's slot.
pub(crate) type LaneId = u64;

/// The lane of records that may run in any order.
pub(crate) const NO_LANE: LaneId = u64::MAX;

/// How the group's records are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// Single records, ordered as the mode says.
    Records(Ordering),
    /// Batches of one partition, one batch per partition at a time.
    Batches { max_size: usize, max_wait: Duration },
}

/// A unit of work for a worker: one record, or a batch of one partition's records.
pub(crate) struct Work {
    pub lane: LaneId,
    pub slot: Slot,
    /// The assignment its records came from: work of an earlier one is never started.
    pub epoch: Epoch,
    pub items: Items,
}

/// The records of a unit of work. Single records are the common case: boxing them would cost
/// an allocation per record.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Items {
    One(Record),
    Batch(Vec<Record>),
}

impl Work {
    pub(crate) fn one(lane: LaneId, record: Record) -> Self {
        Work { lane, slot: record.slot, epoch: record.epoch, items: Items::One(record) }
    }

    pub(crate) fn batch(lane: LaneId, records: Vec<Record>) -> Self {
        Work { lane, slot: records[0].slot, epoch: records[0].epoch, items: Items::Batch(records) }
    }

    /// The offset of its last record.
    pub(crate) fn last_offset(&self) -> i64 {
        match &self.items {
            Items::One(r) => r.offset(),
            Items::Batch(rs) => rs.last().map_or(-1, Record::offset),
        }
    }

    /// Records and bytes this work holds.
    pub(crate) fn held(&self) -> (usize, usize) {
        match &self.items {
            Items::One(r) => (1, r.size()),
            Items::Batch(rs) => (rs.len(), rs.iter().map(Record::size).sum()),
        }
    }
}

struct Lane {
    slot: Slot,
    /// Work of the lane is started, ready or waiting for its retry.
    busy: bool,
    /// That work is running. Such a lane outlives its partition's revoke: records of the same
    /// key from a later assignment wait behind it until it completes.
    started: bool,
    /// Later records, in offset order.
    queue: VecDeque<Record>,
    /// Batch groups: when the oldest queued record has waited `max_wait`.
    deadline: Option<Instant>,
}

impl Lane {
    fn new(slot: Slot) -> Self {
        Lane { slot, busy: false, started: false, queue: VecDeque::new(), deadline: None }
    }
}

/// Work waiting for its retry.
struct Delayed {
    due: Instant,
    seq: u64,
    work: Work,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // The earliest first out of the max-heap.
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// Lanes, the work ready to start, and work waiting for a retry or a batch deadline.
pub(crate) struct Scheduler {
    policy: Policy,
    keys: foldhash::fast::RandomState,
    lanes: HashMap<LaneId, Lane, foldhash::fast::RandomState>,
    ready: VecDeque<Work>,
    delayed: BinaryHeap<Delayed>,
    batch_deadlines: BinaryHeap<Reverse<(Instant, LaneId)>>,
    seq: u64,
    /// Shutting down: batches go without waiting for `max_wait`, retries are not made.
    flushing: bool,
    /// Partitions an operator paused: their work does not start.
    held: std::collections::HashSet<Slot, foldhash::fast::RandomState>,
    /// Work of held partitions that became ready, in the order it did; it goes back to the
    /// ready queue when its partition is released.
    parked: Vec<Work>,
}

impl Scheduler {
    pub(crate) fn new(policy: Policy) -> Self {
        Scheduler {
            policy,
            keys: foldhash::fast::RandomState::default(),
            lanes: HashMap::default(),
            ready: VecDeque::new(),
            delayed: BinaryHeap::new(),
            batch_deadlines: BinaryHeap::new(),
            seq: 0,
            flushing: false,
            held: Default::default(),
            parked: Vec::new(),
        }
    }

    /// The lane of a record under `key` ordering: its key within its partition; records
    /// without a key share their partition's keyless lane.
    fn key_lane(&self, record: &Record) -> LaneId {
        let mut h = self.keys.build_hasher();
        h.write_u32(record.slot);
        match &record.info.key {
            Some(key) => {
                h.write_u8(1);
                h.write(key);
            }
            None => h.write_u8(0),
        }
        h.finish().min(NO_LANE - 1)
    }

    /// Takes a fetched record: it becomes ready at once if its lane is free.
    pub(crate) fn enqueue(&mut self, record: Record, now: Instant) {
        let lane = match self.policy {
            Policy::Records(Ordering::None) => return self.ready.push_back(Work::one(NO_LANE, record)),
            Policy::Records(Ordering::Key) => self.key_lane(&record),
            Policy::Records(Ordering::Partition) | Policy::Batches { .. } => LaneId::from(record.slot),
        };
        if let Policy::Batches { max_wait, .. } = self.policy {
            let l = self.lanes.entry(lane).or_insert_with(|| Lane::new(record.slot));
            if l.queue.is_empty() {
                let deadline = now + max_wait;
                l.deadline = Some(deadline);
                self.batch_deadlines.push(Reverse((deadline, lane)));
            }
            l.queue.push_back(record);
            return self.dispatch_batch(lane, now);
        }
        match self.lanes.entry(lane) {
            // A lane exists while it is busy; the record waits its turn.
            Entry::Occupied(mut l) => l.get_mut().queue.push_back(record),
            Entry::Vacant(v) => {
                v.insert(Lane { busy: true, ..Lane::new(record.slot) });
                self.ready.push_back(Work::one(lane, record));
            }
        }
    }

    /// Starts a batch of the lane when it is free and full, or its oldest record waited long enough.
    fn dispatch_batch(&mut self, lane: LaneId, now: Instant) {
        let Policy::Batches { max_size, .. } = self.policy else { return };
        let Some(l) = self.lanes.get_mut(&lane) else { return };
        let due = self.flushing || l.queue.len() >= max_size || l.deadline.is_some_and(|d| d <= now);
        if l.busy || l.queue.is_empty() || !due {
            return;
        }
        let n = l.queue.len().min(max_size);
        let records: Vec<Record> = l.queue.drain(..n).collect();
        l.busy = true;
        if l.queue.is_empty() {
            l.deadline = None;
        }
        self.ready.push_back(Work::batch(lane, records));
    }

    /// The next work to start. Work of a held partition is parked instead: its lane stays
    /// busy, so the records behind it wait too.
    pub(crate) fn next_ready(&mut self) -> Option<Work> {
        loop {
            let work = self.ready.pop_front()?;
            if self.held.contains(&work.slot) {
                self.parked.push(work);
                continue;
            }
            if let Some(lane) = self.lanes.get_mut(&work.lane) {
                lane.started = true;
            }
            return Some(work);
        }
    }

    /// Records and bytes of held partitions waiting here (queued, ready, parked, or waiting for
    /// a retry): they count against no bound, since their partitions fetch nothing more. Walks
    /// them: called only near the bounds, while something is held.
    pub(crate) fn held_buffered(&self) -> (usize, usize) {
        if self.held.is_empty() {
            return (0, 0);
        }
        let held = |slot: Slot| self.held.contains(&slot);
        let (mut records, mut bytes) = (0, 0);
        for l in self.lanes.values().filter(|l| held(l.slot)) {
            records += l.queue.len();
            bytes += l.queue.iter().map(Record::size).sum::<usize>();
        }
        let works = self.ready.iter().chain(&self.parked).chain(self.delayed.iter().map(|d| &d.work));
        for w in works.filter(|w| held(w.slot)) {
            let (n, b) = w.held();
            records += n;
            bytes += b;
        }
        (records, bytes)
    }

    /// An operator paused the partition in `slot`: none of its work starts until [`Scheduler::release_hold`].
    pub(crate) fn hold(&mut self, slot: Slot) {
        self.held.insert(slot);
    }

    /// The partition in `slot` is released: its parked work is ready again, in its order.
    pub(crate) fn release_hold(&mut self, slot: Slot) {
        if !self.held.remove(&slot) {
            return;
        }
        let (back, keep): (Vec<Work>, Vec<Work>) = std::mem::take(&mut self.parked).into_iter().partition(|w| w.slot == slot);
        self.parked = keep;
        self.ready.extend(back);
    }

    /// The lane's work settled: its next record (or batch) may start.
    pub(crate) fn release(&mut self, lane: LaneId, now: Instant) {
        if lane == NO_LANE {
            return;
        }
        if let Policy::Batches { .. } = self.policy {
            match self.lanes.get_mut(&lane) {
                Some(l) if l.queue.is_empty() => {
                    self.lanes.remove(&lane);
                }
                Some(l) => {
                    l.busy = false;
                    l.started = false;
                    self.dispatch_batch(lane, now);
                }
                None => {}
            }
            return;
        }
        let Entry::Occupied(mut l) = self.lanes.entry(lane) else { return };
        match l.get_mut().queue.pop_front() {
            Some(next) => {
                l.get_mut().started = false;
                self.ready.push_back(Work::one(lane, next));
            }
            None => {
                l.remove();
            }
        }
    }

    /// Puts work back to be started again at `due`; its lane stays held meanwhile.
    pub(crate) fn retry_at(&mut self, due: Instant, work: Work) {
        if let Some(lane) = self.lanes.get_mut(&work.lane) {
            lane.started = false;
        }
        self.seq += 1;
        self.delayed.push(Delayed { due, seq: self.seq, work });
    }

    /// When the next retry or batch deadline is due.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let retry = self.delayed.peek().map(|d| d.due);
        let batch = self.batch_deadlines.peek().map(|Reverse((at, _))| *at);
        match (retry, batch) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Makes due retries ready and starts batches whose wait is over.
    pub(crate) fn on_timer(&mut self, now: Instant) {
        while self.delayed.peek().is_some_and(|d| d.due <= now) {
            let d = self.delayed.pop().expect("peeked");
            self.ready.push_back(d.work);
        }
        while let Some(&Reverse((at, lane))) = self.batch_deadlines.peek() {
            if at > now {
                break;
            }
            self.batch_deadlines.pop();
            self.dispatch_batch(lane, now);
        }
    }

    /// Shutdown: per partition, records above `frontier` (the highest offset started) are
    /// dropped, and so is work waiting for a retry with the records queued behind it. What is
    /// left fills the holes below the frontier, so that the watermark reaches it: nothing handled
    /// is handled again after a restart. Batches of what is left go at once. Returns the
    /// records and bytes dropped.
    pub(crate) fn flush(&mut self, frontier: impl Fn(Slot) -> Option<i64>, now: Instant) -> (usize, usize) {
        self.flushing = true;
        let keep = |r: &Record| frontier(r.slot).is_some_and(|f| r.offset() <= f);
        let (mut records, mut bytes) = (0, 0);
        let mut count = |n: usize, b: usize| {
            records += n;
            bytes += b;
        };
        // Retries waiting, and work of held partitions (which must not start), go with the
        // records queued behind them.
        let waiting = std::mem::take(&mut self.delayed).into_vec().into_iter().map(|d| d.work);
        for work in waiting.chain(std::mem::take(&mut self.parked)) {
            let (n, b) = work.held();
            count(n, b);
            if let Some(l) = self.lanes.remove(&work.lane) {
                count(l.queue.len(), l.queue.iter().map(Record::size).sum());
            }
        }
        for l in self.lanes.values_mut() {
            // Queues are in offset order: what goes is a tail.
            let cut = l.queue.iter().position(|r| !keep(r)).unwrap_or(l.queue.len());
            let dropped: Vec<Record> = l.queue.drain(cut..).collect();
            count(dropped.len(), dropped.iter().map(Record::size).sum());
        }
        let mut ready = std::mem::take(&mut self.ready);
        for mut work in ready.drain(..) {
            match &mut work.items {
                Items::One(r) if !keep(r) => {
                    count(1, r.size());
                    // Everything queued behind it is later still, and was dropped above.
                    self.lanes.remove(&work.lane);
                    continue;
                }
                Items::Batch(rs) => {
                    let cut = rs.iter().position(|r| !keep(r)).unwrap_or(rs.len());
                    let dropped: Vec<Record> = rs.drain(cut..).collect();
                    count(dropped.len(), dropped.iter().map(Record::size).sum());
                    if rs.is_empty() {
                        self.lanes.remove(&work.lane);
                        continue;
                    }
                }
                Items::One(_) => {}
            }
            self.ready.push_back(work);
        }
        self.lanes.retain(|_, l| l.busy || !l.queue.is_empty());
        let idle: Vec<LaneId> = self.lanes.iter().filter(|(_, l)| !l.busy).map(|(id, _)| *id).collect();
        for lane in idle {
            self.dispatch_batch(lane, now);
        }
        (records, bytes)
    }

    /// Drops a lane and the records queued in it (its work was dropped). Returns the records
    /// and bytes dropped.
    pub(crate) fn abandon(&mut self, lane: LaneId) -> (usize, usize) {
        match self.lanes.remove(&lane) {
            Some(l) => (l.queue.len(), l.queue.iter().map(Record::size).sum()),
            None => (0, 0),
        }
    }

    /// Whether work is ready to start.
    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Drops every record of `slot` that has not started (queued, ready or waiting for a
    /// retry), and the slot's lanes. Returns the records and bytes dropped.
    pub(crate) fn drop_slot(&mut self, slot: Slot) -> (usize, usize) {
        self.drop_where(|s| s == slot)
    }

    fn drop_where(&mut self, dropped: impl Fn(Slot) -> bool) -> (usize, usize) {
        let (mut records, mut bytes) = (0, 0);
        let mut count = |n: usize, b: usize| {
            records += n;
            bytes += b;
        };
        self.lanes.retain(|_, l| {
            if !dropped(l.slot) {
                return true;
            }
            count(l.queue.len(), l.queue.iter().map(Record::size).sum());
            l.queue.clear();
            l.deadline = None;
            // A lane whose work still runs stays, empty, until that work completes.
            l.started
        });
        let mut drop_work = |w: &Work| {
            if !dropped(w.slot) {
                return true;
            }
            let (n, b) = w.held();
            count(n, b);
            false
        };
        self.ready.retain(&mut drop_work);
        self.parked.retain(&mut drop_work);
        let delayed = std::mem::take(&mut self.delayed).into_vec();
        for d in delayed {
            if dropped(d.work.slot) {
                let (n, b) = d.work.held();
                count(n, b);
            } else {
                self.delayed.push(d);
            }
        }
        (records, bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::flows::consume::record::RecordHeaders;
    use crate::flows::context::RecordInfo;
    use crate::flows::registry::TopicRoute;

    fn record(slot: Slot, offset: i64, key: Option<&str>) -> Record {
        let route = Arc::new(TopicRoute { topic: "t".into(), hints: Default::default(), catch_all: Vec::new() });
        Record {
            slot,
            epoch: 1,
            info: RecordInfo { topic: "t".into(), partition: slot as i32, offset, key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())), timestamp_ms: None },
            route,
            headers: RecordHeaders::default(),
            value: None,
            attempts: 0,
            first_failure: None,
            settled_handlers: Vec::new(),
        }
    }

    fn offsets(work: &Work) -> Vec<i64> {
        match &work.items {
            Items::One(r) => vec![r.offset()],
            Items::Batch(rs) => rs.iter().map(Record::offset).collect(),
        }
    }

    fn drain_ready(s: &mut Scheduler) -> Vec<Work> {
        std::iter::from_fn(|| s.next_ready()).collect()
    }

    #[test]
    fn key_mode_runs_keys_concurrently_and_each_key_in_order() {
        let mut s = Scheduler::new(Policy::Records(Ordering::Key));
        let now = Instant::now();
        for (o, k) in [(0, "a"), (1, "b"), (2, "a"), (3, "c"), (4, "b")] {
            s.enqueue(record(0, o, Some(k)), now);
        }
        s.enqueue(record(0, 5, None), now);
        s.enqueue(record(0, 6, None), now);
        let first = drain_ready(&mut s);
        assert_eq!(first.iter().flat_map(offsets).collect::<Vec<_>>(), [0, 1, 3, 5], "one per key; keyless records share a lane");
        let lane_a = first[0].lane;
        s.release(lane_a, now);
        assert_eq!(drain_ready(&mut s).iter().flat_map(offsets).collect::<Vec<_>>(), [2]);
        s.release(first[3].lane, now);
        assert_eq!(drain_ready(&mut s).iter().flat_map(offsets).collect::<Vec<_>>(), [6]);
        assert!(s.lanes.contains_key(&first[1].lane), "b still holds 4");
    }

    #[test]
    fn a_retry_holds_its_lane_until_it_is_due() {
        let mut s = Scheduler::new(Policy::Records(Ordering::Partition));
        let now = Instant::now();
        for o in 0..3 {
            s.enqueue(record(0, o, Some("x")), now);
        }
        s.enqueue(record(1, 0, Some("x")), now);
        let started = drain_ready(&mut s);
        assert_eq!(started.iter().map(|w| (w.slot, offsets(w))).collect::<Vec<_>>(), [(0, vec![0]), (1, vec![0])]);
        let mut started = started.into_iter();
        let failed = started.next().unwrap();
        s.retry_at(now + Duration::from_millis(50), failed);
        s.release(started.next().unwrap().lane, now);
        assert!(drain_ready(&mut s).is_empty(), "partition 0 waits for its retry");
        assert_eq!(s.next_deadline(), Some(now + Duration::from_millis(50)));
        s.on_timer(now + Duration::from_millis(50));
        let retried = drain_ready(&mut s);
        assert_eq!(retried.iter().flat_map(offsets).collect::<Vec<_>>(), [0]);
        s.release(retried[0].lane, now);
        assert_eq!(drain_ready(&mut s).iter().flat_map(offsets).collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn none_mode_starts_everything() {
        let mut s = Scheduler::new(Policy::Records(Ordering::None));
        let now = Instant::now();
        for o in 0..4 {
            s.enqueue(record(0, o, Some("same")), now);
        }
        assert_eq!(drain_ready(&mut s).len(), 4);
    }

    #[test]
    fn batches_fill_up_or_wait_out_max_wait_one_per_partition() {
        let max_wait = Duration::from_millis(40);
        let mut s = Scheduler::new(Policy::Batches { max_size: 3, max_wait });
        let now = Instant::now();
        for o in 0..4 {
            s.enqueue(record(0, o, None), now);
        }
        let full = drain_ready(&mut s);
        assert_eq!(full.iter().map(offsets).collect::<Vec<_>>(), [vec![0, 1, 2]]);
        s.enqueue(record(0, 4, None), now);
        s.on_timer(now + max_wait);
        assert!(drain_ready(&mut s).is_empty(), "the partition's batch is still running");
        s.release(full[0].lane, now + max_wait);
        assert_eq!(drain_ready(&mut s).iter().map(offsets).collect::<Vec<_>>(), [vec![3, 4]], "waited out: the rest goes");
        s.enqueue(record(1, 0, None), now);
        assert!(drain_ready(&mut s).is_empty());
        assert_eq!(s.next_deadline(), Some(now + max_wait));
        s.on_timer(now + max_wait);
        assert_eq!(drain_ready(&mut s).iter().map(offsets).collect::<Vec<_>>(), [vec![0]]);
    }

    #[test]
    fn shutdown_keeps_the_holes_below_the_frontier_and_drops_the_rest() {
        let mut s = Scheduler::new(Policy::Records(Ordering::Key));
        let now = Instant::now();
        // a: 0, 2, 5   b: 1, 3   c: 4 (fails, waits for a retry), 6
        for (o, k) in [(0, "a"), (1, "b"), (2, "a"), (3, "b"), (4, "c"), (5, "a"), (6, "c")] {
            s.enqueue(record(0, o, Some(k)), now);
        }
        let started = drain_ready(&mut s);
        assert_eq!(started.iter().flat_map(offsets).collect::<Vec<_>>(), [0, 1, 4]);
        let mut started = started.into_iter();
        let (a, b, c) = (started.next().unwrap(), started.next().unwrap(), started.next().unwrap());
        s.release(b.lane, now);
        let next = drain_ready(&mut s);
        assert_eq!(next.iter().flat_map(offsets).collect::<Vec<_>>(), [3]);
        s.retry_at(now + Duration::from_secs(5), c);
        // Started so far: 0, 1, 3, 4. Frontier 4: 2 is a hole; 5 and 6 are beyond it (6 is
        // behind the retry anyway).
        let (dropped, _) = s.flush(|_| Some(4), now);
        assert_eq!(dropped, 3, "the retry of 4, and 5 and 6");
        s.release(a.lane, now);
        assert_eq!(drain_ready(&mut s).iter().flat_map(offsets).collect::<Vec<_>>(), [2]);
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn a_running_lane_outlives_its_partition_and_holds_the_key_of_the_next_assignment() {
        let mut s = Scheduler::new(Policy::Records(Ordering::Key));
        let now = Instant::now();
        s.enqueue(record(0, 0, Some("k")), now);
        s.enqueue(record(0, 1, Some("k")), now);
        let running = s.next_ready().unwrap();
        assert_eq!(s.drop_slot(0).0, 1, "the queued record goes");
        // The partition comes back (a new epoch); its first record of the key waits.
        let mut again = record(0, 0, Some("k"));
        again.epoch = 2;
        s.enqueue(again, now);
        assert!(s.next_ready().is_none(), "the key is still running from before the revoke");
        s.release(running.lane, now);
        let next = s.next_ready().unwrap();
        assert_eq!((next.epoch, offsets(&next)), (2, vec![0]));
    }

    #[test]
    fn dropping_a_partition_drops_its_queued_and_delayed_records() {
        let mut s = Scheduler::new(Policy::Records(Ordering::Key));
        let now = Instant::now();
        for o in 0..3 {
            s.enqueue(record(0, o, Some("k")), now);
            s.enqueue(record(1, o, Some("k")), now);
        }
        let started = drain_ready(&mut s);
        for w in started {
            s.retry_at(now, w);
        }
        let (n, _) = s.drop_slot(0);
        assert_eq!(n, 3, "the delayed one and the two queued ones");
        s.on_timer(now);
        let left = drain_ready(&mut s);
        assert_eq!(left.iter().map(|w| w.slot).collect::<Vec<_>>(), [1]);
    }
}
