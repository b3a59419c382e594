//! The offset tracker of one partition: which records are unsettled, and the watermark.
//!
//! Records enter in offset order as they are fetched and settle in any order (handled,
//! dead-lettered or skipped). The watermark, the offset to commit, is the lowest unsettled
//! offset, or one past the last record when every record settled: a commit never passes an
//! unsettled record, whatever finished after it. Offsets that never arrive (transaction
//! markers, compacted records) are never waited for.

use std::collections::VecDeque;

/// One partition's records from the oldest unsettled one on.
#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    /// Tracked records in offset order: `(offset, settled)`. Settled records at the front are
    /// dropped as the watermark passes them.
    entries: VecDeque<(i64, bool)>,
    /// One past the last tracked offset (`None` before the first record).
    end: Option<i64>,
    /// The last watermark committed (or being committed).
    committed: Option<i64>,
}

impl OffsetTracker {
    /// A tracker whose watermark is `offset` until records arrive (an operator's reset): the
    /// next commit carries it, and carries it again when it fails.
    pub(crate) fn starting_at(offset: i64) -> Self {
        OffsetTracker { entries: VecDeque::new(), end: Some(offset), committed: None }
    }

    /// Starts tracking a fetched record. False when the offset is not past the last tracked
    /// one (a duplicate delivery): such a record is not handled again.
    pub(crate) fn track(&mut self, offset: i64) -> bool {
        if self.end.is_some_and(|end| offset < end) {
            return false;
        }
        self.entries.push_back((offset, false));
        self.end = Some(offset + 1);
        true
    }

    /// Marks a tracked record settled. False when it was not tracked or settled already.
    pub(crate) fn settle(&mut self, offset: i64) -> bool {
        let Ok(i) = self.entries.binary_search_by_key(&offset, |e| e.0) else { return false };
        if std::mem::replace(&mut self.entries[i].1, true) {
            return false;
        }
        while self.entries.front().is_some_and(|e| e.1) {
            self.entries.pop_front();
        }
        true
    }

    /// The offset to commit: the lowest unsettled offset, or one past the last tracked
    /// record; `None` before any record.
    pub(crate) fn watermark(&self) -> Option<i64> {
        match self.entries.front() {
            Some(&(offset, _)) => Some(offset),
            None => self.end,
        }
    }

    /// The oldest record not settled yet, if any.
    pub(crate) fn oldest_unsettled(&self) -> Option<i64> {
        self.entries.front().map(|e| e.0)
    }

    /// The watermark when it moved past the last committed one; it is then taken as committed.
    pub(crate) fn take_commit(&mut self) -> Option<i64> {
        let w = self.watermark()?;
        if self.committed.is_some_and(|c| c >= w) {
            return None;
        }
        self.committed = Some(w);
        Some(w)
    }

    /// Forgets a commit that failed, so that the next commit sends the watermark again.
    pub(crate) fn commit_failed(&mut self, offset: i64) {
        if self.committed == Some(offset) {
            self.committed = None;
        }
    }

    /// Records held from the watermark on (settled ones included): how far the partition ran
    /// ahead of its commit.
    pub(crate) fn uncommitted(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_never_passes_an_unsettled_record() {
        let mut t = OffsetTracker::default();
        assert_eq!(t.watermark(), None);
        for o in [10, 11, 12, 14, 15] {
            assert!(t.track(o));
        }
        assert!(!t.track(12), "a duplicate delivery is refused");
        assert_eq!(t.watermark(), Some(10));
        assert!(t.settle(11) && t.settle(15));
        assert_eq!(t.watermark(), Some(10), "11 and 15 finished, 10 did not");
        assert!(t.settle(10));
        assert_eq!(t.watermark(), Some(12));
        assert!(t.settle(12));
        assert_eq!(t.watermark(), Some(14), "13 never came (a marker): not waited for");
        assert!(t.settle(14));
        assert_eq!((t.watermark(), t.uncommitted()), (Some(16), 0));
        assert!(!t.settle(14) && !t.settle(99));
    }

    #[test]
    fn commits_go_out_once_per_advance_and_again_after_a_failure() {
        let mut t = OffsetTracker::default();
        t.track(0);
        t.track(1);
        assert_eq!(t.take_commit(), Some(0));
        assert_eq!(t.take_commit(), None);
        t.settle(0);
        assert_eq!(t.take_commit(), Some(1));
        t.commit_failed(1);
        assert_eq!(t.take_commit(), Some(1));
        t.settle(1);
        assert_eq!(t.take_commit(), Some(2));
    }

    #[test]
    fn random_settle_orders_keep_the_invariant() {
        for seed in 0..200 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut t = OffsetTracker::default();
            let mut offsets: Vec<i64> = Vec::new();
            let mut o = rng.i64(0..5);
            for _ in 0..rng.usize(1..60) {
                o += rng.i64(1..3);
                offsets.push(o);
                t.track(o);
            }
            let mut order = offsets.clone();
            rng.shuffle(&mut order);
            let mut settled = std::collections::HashSet::new();
            for o in order {
                t.settle(o);
                settled.insert(o);
                let lowest_open = offsets.iter().copied().find(|x| !settled.contains(x));
                let expected = lowest_open.unwrap_or(offsets.last().unwrap() + 1);
                assert_eq!(t.watermark(), Some(expected), "seed {seed}");
            }
        }
    }
}
