//! Rebalance callbacks (librdkafka runs them inside the fetch loop's poll).
//!
//! - **Assign**: each new partition starts afresh from its committed offset, with a new epoch.
//! - **Revoke**: the group stops starting records of the revoked partitions and drops their
//!   queued ones (the new owner fetches them again). It waits, up to the revoke timeout, for
//!   their records in flight, commits their watermarks synchronously, then lets them go.
//!   Records still running after the timeout no longer move any offset.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::runtime::{Handle, RuntimeFlavor};
use tracing::{debug, info, warn};

use super::engine::Shared;

/// librdkafka callbacks of a group consumer: logging, rebalances and commit results.
pub(crate) struct GroupContext {
    pub group: String,
    pub shared: Arc<Shared>,
    pub revoke_timeout: Duration,
    pub status: Arc<crate::flows::status::GroupStatus>,
    /// What the group's statistics are fed to (lag gauges).
    pub watches: Vec<std::sync::Arc<dyn crate::flows::layer::Watch>>,
    /// A transactional group's offsets move only in its transactions, never by a commit here.
    pub transactional: bool,
    /// The app's shutdown (its deadline, once it began): a revoke stops waiting for it.
    pub shutdown: tokio::sync::watch::Receiver<Option<tokio::time::Instant>>,
}

impl ClientContext for GroupContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::kafka::log(level, fac, log_message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        crate::kafka::outage::client_error(&error, reason);
    }
    fn stats(&self, statistics: rdkafka::Statistics) {
        crate::kafka::outage::statistics(&statistics);
        self.status.statistics(&statistics);
        for watch in &self.watches {
            watch.statistics(&self.group, &statistics);
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.shared.engine().assign(tpl);
                self.status.joined();
                info!(group = %self.group, partitions = %describe(tpl), "partitions assigned");
            }
            Rebalance::Revoke(tpl) => self.revoke(consumer, tpl),
            Rebalance::Error(e) => warn!(group = %self.group, error = %e, "rebalance error"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                crate::kafka::outage::answered();
                debug!(group = %self.group, offsets = %describe(offsets), "offsets committed");
            }
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                if crate::kafka::outage::due(&format!("commit {} {e}", self.group)) {
                    warn!(group = %self.group, error = %e, offsets = %describe(offsets), "offset commit failed; it is sent again with the next commit (told once a minute while it lasts)");
                }
                if let Some(mut engine) = self.shared.try_engine() {
                    engine.commit_failed(offsets);
                }
            }
        }
    }
}

impl GroupContext {
    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let mut engine = self.shared.engine();
        let slots = engine.revoke_begin(tpl);
        let running = engine.in_flight_of(&slots);
        // On a current-thread runtime the handlers cannot progress while this callback blocks.
        // Lost partitions (the member was fenced or timed out) belong to others already. Once
        // the app shuts down, nothing waits here: the member is leaving, and the wait would hold
        // the shutdown past its budget (the new owner handles those records again).
        let mut shutdown = self.shutdown.clone();
        let can_wait = !engine.closing()
            && !engine.stopping()
            && shutdown.borrow().is_none()
            && !consumer.assignment_lost()
            && Handle::try_current().is_ok_and(|h| h.runtime_flavor() != RuntimeFlavor::CurrentThread);
        if running > 0 && can_wait {
            // This callback runs inside the fetch loop's poll, so the loop cannot drive the
            // running work now: drive it here (off the async worker) until the revoked
            // partitions' records are done.
            let deadline = tokio::time::Instant::now() + self.revoke_timeout;
            let finished = tokio::task::block_in_place(|| {
                futures::executor::block_on(async {
                    while engine.in_flight_of(&slots) > 0 {
                        tokio::select! {
                            waited = tokio::time::timeout_at(deadline, self.shared.next_completion()) => match waited {
                                Ok(completion) => {
                                    self.shared.apply_ready(&mut engine, completion);
                                }
                                Err(_) => return false,
                            },
                            // The app shuts down: stop waiting at once.
                            _ = shutdown.wait_for(Option::is_some) => return false,
                        }
                    }
                    true
                })
            });
            if !finished {
                warn!(group = %self.group, running = engine.in_flight_of(&slots), timeout = ?self.revoke_timeout, "records of revoked partitions still running after the revoke timeout; their new owner will handle them again");
            }
            // The running set now holds this thread's waker: the loop polls it again, so that
            // later completions wake the loop (not only its next commit tick or record).
            self.shared.loop_waker.wake();
        }
        // At shutdown the watermarks were committed just before leaving; a transactional group
        // commits its offsets in its transactions only (a commit outside them could land after
        // a later transaction's and set the offset back).
        let commit = if engine.closing() || self.transactional { TopicPartitionList::new() } else { engine.commits(Some(&slots), true) };
        drop(engine);
        if commit.count() > 0 {
            match consumer.commit(&commit, CommitMode::Sync) {
                Ok(()) => debug!(group = %self.group, offsets = %describe(&commit), "committed before revoke"),
                Err(e) => warn!(group = %self.group, error = %e, "commit before revoke failed; the new owner may handle some records again"),
            }
        }
        self.shared.engine().revoke_end(&slots);
        info!(group = %self.group, partitions = %describe(tpl), waited_for = running, "partitions revoked");
    }
}

/// `topic[partition]@offset, ...` for logs.
pub(crate) fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => format!("{}[{}]@{o}", e.topic(), e.partition()),
            _ => format!("{}[{}]", e.topic(), e.partition()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
