//! One consumer per group: fetch, dispatch by event type, store the offset after success.
//!
//! Delivery is at-least-once: `enable.auto.offset.store` is off and a record's offset is
//! stored (and then auto-committed) only after every handler of the group succeeded for it.
//! A record whose handlers fail is retried in place: its partition is paused and rewound
//! to it, then resumed after a backoff, so the poll loop keeps serving the group (no
//! `max.poll.interval.ms` breach) and nothing after it on that partition is processed or
//! committed before it. A handler that fails permanently or runs out of retries, and a
//! record no handler can take (undecodable, unknown type), go to the dead letter queue; the
//! offset is stored only after the dead letter write is acknowledged.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::batch::BatchContext;
use crate::context::{Context, RecordInfo};
use crate::dlq::{self, kinds, Failure};
use crate::retry::RetryPolicy;
use crate::wire::Decoded;
use chrono::{DateTime, Utc};
use crate::error::Result;
use crate::handler::{HandlerDescriptor, HandlerError, HandlerKind};
use crate::publisher::Publisher;
use crate::registry::{GroupPlan, Registry};
use crate::state::StateMap;

type PartitionKey = (String, i32);

/// A partition stopped at a record that has not been handled yet.
#[derive(Debug)]
struct Blocked {
    offset: i64,
    attempts: u32,
    /// Handlers done with the record: succeeded or dead-lettered.
    settled: HashSet<&'static str>,
    first_failure: DateTime<Utc>,
}

type Blocks = Arc<Mutex<HashMap<PartitionKey, Blocked>>>;

/// The next offset to commit per partition: the offset after the last handled record.
type Completed = Arc<Mutex<HashMap<PartitionKey, i64>>>;

/// librdkafka callbacks of a group consumer: logging and rebalances.
pub(crate) struct GroupContext {
    group: String,
    blocks: Blocks,
    completed: Completed,
    partitions: Partitions,
}

/// Which partitions the consumer owns, and how often each was revoked (a batch gathered
/// across a revocation may mix records of two assignments).
#[derive(Default)]
struct PartitionState {
    assigned: HashSet<PartitionKey>,
    revocations: HashMap<PartitionKey, u64>,
}

type Partitions = Arc<Mutex<PartitionState>>;

impl ClientContext for GroupContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::kafka::log(level, fac, log_message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        warn!(group = %self.group, %error, "kafka client error: {reason}");
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                // Commit what was handled before the partitions go to another member, so that
                // it does not handle them again.
                let mut commit = TopicPartitionList::new();
                {
                    let mut blocks = self.blocks.lock().expect("blocks lock");
                    let mut completed = self.completed.lock().expect("completed lock");
                    let mut partitions = self.partitions.lock().expect("partitions lock");
                    for e in tpl.elements() {
                        let key = (e.topic().to_owned(), e.partition());
                        blocks.remove(&key);
                        partitions.assigned.remove(&key);
                        *partitions.revocations.entry(key.clone()).or_default() += 1;
                        if let Some(next) = completed.remove(&key) {
                            let _ = commit.add_partition_offset(e.topic(), e.partition(), Offset::Offset(next));
                        }
                    }
                }
                if commit.count() > 0 {
                    match consumer.commit(&commit, CommitMode::Sync) {
                        Ok(()) => debug!(group = %self.group, offsets = %describe(&commit), "committed before revoke"),
                        Err(e) => warn!(group = %self.group, error = %e, "commit before revoke failed; the new owner may handle some records again"),
                    }
                }
                info!(group = %self.group, partitions = %describe(tpl), "partitions revoked");
            }
            Rebalance::Assign(tpl) => {
                // A newly assigned partition starts afresh from its committed offset.
                let mut blocks = self.blocks.lock().expect("blocks lock");
                let mut partitions = self.partitions.lock().expect("partitions lock");
                for e in tpl.elements() {
                    let key = (e.topic().to_owned(), e.partition());
                    blocks.remove(&key);
                    partitions.assigned.insert(key);
                }
                info!(group = %self.group, partitions = %describe(tpl), "partitions assigned");
            }
            Rebalance::Error(e) => warn!(group = %self.group, error = %e, "rebalance error"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => debug!(group = %self.group, offsets = %describe(offsets), "offsets committed"),
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => warn!(group = %self.group, error = %e, "offset commit failed"),
        }
    }
}

fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => format!("{}[{}]@{o}", e.topic(), e.partition()),
            _ => format!("{}[{}]", e.topic(), e.partition()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Everything a group's loop needs.
pub(crate) struct GroupRunner {
    plan: GroupPlan,
    group: Arc<str>,
    consumer: Arc<StreamConsumer<GroupContext>>,
    blocks: Blocks,
    completed: Completed,
    partitions: Partitions,
    dead_lettered: Mutex<HashSet<(String, i32, i64)>>,
    registry: Registry,
    publisher: Publisher,
    state: Arc<StateMap>,
    config: Config,
}

impl GroupRunner {
    /// Creates the group's consumer and subscribes it to the group's topics.
    pub(crate) fn new(
        plan: GroupPlan,
        config: &Config,
        registry: Registry,
        publisher: Publisher,
        state: Arc<StateMap>,
    ) -> Result<Self> {
        let blocks = Blocks::default();
        let completed = Completed::default();
        let partitions = Partitions::default();
        let mut client = crate::kafka::client_config(config)?;
        client
            .set("group.id", &plan.group_id)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "1000")
            .set("auto.offset.reset", &config.auto_offset_reset)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("fetch.wait.max.ms", "100")
            .set("topic.metadata.refresh.interval.ms", "10000");
        if config.embedded {
            // The mock broker lets a departed member stall a rejoin for the whole session
            // timeout; in-process there are no network hiccups to tolerate.
            client.set("session.timeout.ms", "3000").set("heartbeat.interval.ms", "500");
        }
        crate::kafka::apply_overrides(&mut client, config);
        let context = GroupContext { group: plan.group_id.clone(), blocks: blocks.clone(), completed: completed.clone(), partitions: partitions.clone() };
        let consumer: StreamConsumer<GroupContext> = client.create_with_context(context)?;
        let topics: Vec<&str> = plan.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        info!(group = %plan.group_id, topics = ?topics, handlers = plan.handlers.values().map(Vec::len).sum::<usize>(), "consumer group subscribed");
        Ok(GroupRunner {
            group: plan.group_id.as_str().into(),
            plan,
            consumer: Arc::new(consumer),
            blocks,
            completed,
            partitions,
            dead_lettered: Mutex::default(),
            registry,
            publisher,
            state,
            config: config.clone(),
        })
    }

    /// Runs until `shutdown` flips; then commits stored offsets and leaves the group.
    pub(crate) async fn run(self, mut shutdown: watch::Receiver<bool>) {
        match self.plan.batch {
            Some(handler) => self.run_batches(handler, &mut shutdown).await,
            None => self.run_records(&mut shutdown).await,
        }
        let group = self.group.clone();
        // Closing blocks while librdkafka leaves the group: keep it off the async workers.
        let closed = tokio::task::spawn_blocking(move || self.close()).await;
        if let Err(e) = closed {
            warn!(%group, error = %e, "consumer close failed");
        }
    }

    async fn run_records(&self, shutdown: &mut watch::Receiver<bool>) {
        loop {
            let message = tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                message = self.consumer.recv() => message,
            };
            let incoming = match message {
                Ok(m) => Incoming::detach(&m),
                Err(e) => {
                    warn!(group = %self.group, error = %e, "fetch error");
                    continue;
                }
            };
            self.process(incoming).await;
            if *shutdown.borrow() {
                break;
            }
        }
    }

    /// Gathers up to `max_size` records for at most `max_wait`, then hands them to the batch
    /// handler.
    async fn run_batches(&self, handler: &'static HandlerDescriptor, shutdown: &mut watch::Receiver<bool>) {
        let HandlerKind::Batch { max_size, max_wait_ms, call } = handler.kind else { return };
        while !*shutdown.borrow() {
            let revocations = self.partitions.lock().expect("partitions lock").revocations.clone();
            let first = tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                message = self.consumer.recv() => message,
            };
            let mut chunk = Vec::with_capacity(max_size);
            match first {
                Ok(m) => chunk.push(Incoming::detach(&m)),
                Err(e) => {
                    warn!(group = %self.group, error = %e, "fetch error");
                    continue;
                }
            }
            let deadline = tokio::time::Instant::now() + Duration::from_millis(max_wait_ms);
            while chunk.len() < max_size {
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => break,
                    _ = tokio::time::sleep_until(deadline) => break,
                    message = self.consumer.recv() => match message {
                        Ok(m) => chunk.push(Incoming::detach(&m)),
                        Err(e) => warn!(group = %self.group, error = %e, "fetch error"),
                    },
                }
            }
            self.process_batch(handler, call, chunk, &revocations).await;
        }
    }

    /// Runs one batch. Poison records take the dead-letter path on their own; a partial
    /// failure settles the events before the failed one; per partition, offsets are stored
    /// only below the lowest unsettled record, which the partition is rewound to.
    async fn process_batch(
        &self,
        handler: &'static HandlerDescriptor,
        call: crate::handler::BatchFn,
        mut chunk: Vec<Incoming>,
        revocations_before: &HashMap<PartitionKey, u64>,
    ) {
        // A partition revoked while the chunk was gathered may hold records of two
        // assignments: none of them is handled; an owned one restarts from its committed offset.
        let revoked: HashSet<PartitionKey> = {
            let state = self.partitions.lock().expect("partitions lock");
            let changed = |k: &PartitionKey| state.revocations.get(k) != revocations_before.get(k);
            chunk.iter().map(|r| r.key()).filter(|k| changed(k)).collect()
        };
        if !revoked.is_empty() {
            chunk.retain(|r| !revoked.contains(&r.key()));
            let owned = self.partitions.lock().expect("partitions lock").assigned.clone();
            for (topic, partition) in revoked.iter().filter(|k| owned.contains(*k)) {
                self.blocks.lock().expect("blocks lock").remove(&(topic.clone(), *partition));
                if let Err(e) = self.consumer.seek(topic, *partition, Offset::Stored, Duration::from_secs(5)) {
                    warn!(group = %self.group, error = %e, "cannot restart a reassigned partition; its records come again after the next rebalance");
                }
            }
        }

        let mut done = vec![false; chunk.len()];
        let mut considered = vec![true; chunk.len()];
        let mut items: Vec<(usize, Context)> = Vec::new();
        // Partitions stopped at an unsettled record, with the delay before it is retried.
        let mut halted: HashMap<PartitionKey, Duration> = HashMap::new();
        let event_type = handler.event.map(|e| e.event_type).unwrap_or_default();
        // A partition rewound to offset X: records before X comes again are stale prefetches;
        // from X on, the chunk holds the rewound stream.
        let mut waiting: HashMap<PartitionKey, i64> = {
            let blocks = self.blocks.lock().expect("blocks lock");
            blocks.iter().map(|(k, b)| (k.clone(), b.offset)).collect()
        };
        for (i, incoming) in chunk.iter().enumerate() {
            let key = incoming.key();
            match waiting.get(&key) {
                Some(&x) if incoming.record.offset == x => {
                    waiting.remove(&key);
                }
                Some(&x) if incoming.record.offset > x => {
                    considered[i] = false;
                    continue;
                }
                _ => {}
            }
            if halted.contains_key(&key) {
                continue;
            }
            if header(&incoming.headers, dlq::headers::REPLAY_GROUP).is_some_and(|g| g != *self.group) {
                done[i] = true;
                continue;
            }
            let hints = self.plan.hints.get(&incoming.record.topic).cloned().unwrap_or_default();
            let problem = match crate::wire::decode(&incoming.headers, &incoming.payload, &incoming.record, &hints) {
                Ok(Some(d)) if d.metadata.event_type == event_type => {
                    let ctx = Context {
                        metadata: d.metadata,
                        record: incoming.record.clone(),
                        group: self.group.clone(),
                        data: d.data,
                        format: d.format,
                        publisher: self.publisher.clone(),
                        state: self.state.clone(),
                    };
                    items.push((i, ctx));
                    continue;
                }
                Ok(Some(d)) if self.registry.event(&d.metadata.event_type).is_some() || !self.config.dead_letter_unknown_types => {
                    done[i] = true;
                    continue;
                }
                Ok(Some(d)) => (kinds::UNKNOWN_TYPE, format!("unknown event type `{}`", d.metadata.event_type)),
                Ok(None) => (kinds::UNKNOWN_TYPE, "the record has no event type".to_owned()),
                Err(e) => (kinds::ENVELOPE, e.to_string()),
            };
            done[i] = self.dead_letter_once(incoming, problem.0, problem.1, "", 1, Utc::now()).await;
            if !done[i] {
                halted.insert(key, self.fail(incoming, self.config.retry_policy()));
            }
        }

        while !items.is_empty() {
            let batch = Arc::new(BatchContext { items: items.iter().map(|(_, c)| c.clone()).collect() });
            let outcome = match AssertUnwindSafe(call(batch)).catch_unwind().await {
                Ok(outcome) => outcome,
                Err(panic) => Err(HandlerError::Panicked(panic_message(&*panic))),
            };
            let (succeeded, error) = match outcome {
                Ok(()) => (items.len(), None),
                Err(HandlerError::DecodeAt { index, source }) => {
                    let (i, _) = items.remove(index.min(items.len() - 1));
                    let error = HandlerError::Decode(source);
                    done[i] = self.dead_letter_once(&chunk[i], error.kind(), error.to_string(), "", 1, Utc::now()).await;
                    if !done[i] {
                        let key = chunk[i].key();
                        halted.insert(key.clone(), self.fail(&chunk[i], self.config.retry_policy()));
                        items.retain(|(j, _)| chunk[*j].key() != key);
                    }
                    continue;
                }
                Err(HandlerError::Partial { succeeded, source }) => (succeeded.min(items.len()), Some(HandlerError::Failed(source))),
                Err(e) => (0, Some(e)),
            };
            for (i, _) in &items[..succeeded] {
                done[*i] = true;
            }
            if let Some(error) = error.filter(|_| succeeded < items.len()) {
                let (i, ctx) = &items[succeeded];
                let incoming = &chunk[*i];
                let key = incoming.key();
                let (attempts, first_failure) = self.next_attempt(incoming);
                let policy = handler.retry.apply(self.config.retry_policy());
                if error.is_permanent() || policy.gives_up_after(attempts) {
                    done[*i] = self.dead_letter_once(incoming, error.kind(), error.to_string(), handler.name, attempts, first_failure).await;
                }
                if !done[*i] {
                    let delay = self.fail(incoming, policy);
                    let where_ = incoming.position();
                    warn!(group = %self.group, record = %where_, handler = handler.name, event_id = ctx.event_id(), attempt = attempts, of = policy.retries + 1, retry_in = ?delay, error = %error, "batch handler failed; the failed event and those after it will be retried");
                    halted.insert(key, delay);
                }
            }
            break;
        }

        // Per partition: store below the lowest unsettled record, rewind to it.
        let mut partitions: Vec<PartitionKey> = chunk.iter().map(Incoming::key).collect();
        partitions.sort();
        partitions.dedup();
        for key in partitions {
            if waiting.contains_key(&key) {
                // Still waiting for the record it was rewound to; that rewind brings it.
                continue;
            }
            let records: Vec<(i64, bool)> =
                chunk.iter().enumerate().filter(|(i, r)| considered[*i] && r.key() == key).map(|(i, r)| (r.record.offset, done[i])).collect();
            let lowest_open = records.iter().filter(|(_, d)| !d).map(|(o, _)| *o).min();
            let last_done = records.iter().filter(|(o, d)| *d && lowest_open.is_none_or(|u| *o < u)).map(|(o, _)| *o).max();
            if let Some(offset) = last_done {
                self.store(&key, offset);
            }
            match lowest_open {
                None => {
                    self.blocks.lock().expect("blocks lock").remove(&key);
                }
                Some(offset) => {
                    let delay = halted.get(&key).copied().unwrap_or_default();
                    {
                        let mut blocks = self.blocks.lock().expect("blocks lock");
                        if blocks.get(&key).is_none_or(|b| b.offset != offset) {
                            blocks.insert(key.clone(), Blocked { offset, attempts: 0, settled: HashSet::new(), first_failure: Utc::now() });
                        }
                    }
                    self.rewind(&key, offset, delay);
                }
            }
        }
    }

    /// Attempts (including this one) and first failure time of a record.
    fn next_attempt(&self, incoming: &Incoming) -> (u32, DateTime<Utc>) {
        match self.blocks.lock().expect("blocks lock").get(&incoming.key()) {
            Some(b) if b.offset == incoming.record.offset => (b.attempts + 1, b.first_failure),
            _ => (1, Utc::now()),
        }
    }

    /// Records a failed attempt of a record: blocks its partition there and returns the delay
    /// before the next attempt.
    fn fail(&self, incoming: &Incoming, policy: RetryPolicy) -> Duration {
        let (attempts, first_failure) = self.next_attempt(incoming);
        self.block(&incoming.key(), incoming.record.offset, attempts, HashSet::new(), first_failure);
        policy.delay(attempts)
    }

    /// Dead-letters a record unless this consumer already did (a rewound batch brings it
    /// again); true when it is settled.
    async fn dead_letter_once(&self, incoming: &Incoming, kind: &'static str, error: String, handler: &str, attempts: u32, first_failure: DateTime<Utc>) -> bool {
        let id = (incoming.record.topic.clone(), incoming.record.partition, incoming.record.offset);
        if self.dead_lettered.lock().expect("dead-lettered lock").contains(&id) {
            return true;
        }
        let failure = Failure { kind, error, attempts, group: &self.group, handler, first_failure, last_failure: Utc::now() };
        match self.dead_letter(incoming, &failure).await {
            Ok(()) => {
                self.dead_lettered.lock().expect("dead-lettered lock").insert(id);
                true
            }
            Err(e) => {
                warn!(group = %self.group, error = %e, "cannot write to the dead letter queue; the record will be retried");
                false
            }
        }
    }

    /// Stores `offset` as handled (for the next commit).
    fn store(&self, partition_key: &PartitionKey, offset: i64) {
        match self.consumer.store_offset(&partition_key.0, partition_key.1, offset) {
            Ok(()) => {
                self.completed.lock().expect("completed lock").insert(partition_key.clone(), offset + 1);
                self.dead_lettered.lock().expect("dead-lettered lock").retain(|(t, p, o)| !(t == &partition_key.0 && *p == partition_key.1 && *o <= offset));
            }
            // The partition was revoked meanwhile; its new owner will see the record again.
            Err(e) => debug!(group = %self.group, error = %e, "offset not stored"),
        }
    }

    /// Commits what was handled, then leaves the group (the consumer is dropped here).
    fn close(self) {
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => warn!(group = %self.group, error = %e, "final offset commit failed"),
        }
        self.consumer.unsubscribe();
        let GroupRunner { consumer, group, .. } = self;
        match Arc::try_unwrap(consumer) {
            Ok(consumer) => drop(consumer),
            Err(_) => warn!(%group, "consumer still referenced at close"),
        }
        info!(%group, "consumer group stopped");
    }

    async fn process(&self, incoming: Incoming) {
        let partition_key = incoming.key();
        let offset = incoming.record.offset;
        let (settled, attempts_before, first_failure) = {
            let blocks = self.blocks.lock().expect("blocks lock");
            match blocks.get(&partition_key) {
                // A record after an unhandled one: it comes again once the partition rewinds.
                Some(b) if offset > b.offset => return,
                Some(b) if offset == b.offset => (b.settled.clone(), b.attempts, Some(b.first_failure)),
                _ => (HashSet::new(), 0, None),
            }
        };
        let where_ = incoming.position();

        // A replayed record is for the group (and handler) that failed it only.
        let replay_handler = header(&incoming.headers, dlq::headers::REPLAY_HANDLER);
        if let Some(group) = header(&incoming.headers, dlq::headers::REPLAY_GROUP) {
            if group != *self.group {
                debug!(group = %self.group, record = %where_, replay_for = %group, "skipping a replay for another group");
                return self.done(&partition_key, offset);
            }
        }

        let hints = self.plan.hints.get(&incoming.record.topic).cloned().unwrap_or_default();
        let decoded = crate::wire::decode(&incoming.headers, &incoming.payload, &incoming.record, &hints);
        let Decoded { metadata, data, format } = match decoded {
            Ok(Some(d)) => d,
            Ok(None) => {
                let why = "the record has no event type (no ce_type) and its topic carries several event types";
                return self.reject(&incoming, &partition_key, kinds::UNKNOWN_TYPE, why.into(), attempts_before).await;
            }
            Err(e) => return self.reject(&incoming, &partition_key, kinds::ENVELOPE, e.to_string(), attempts_before).await,
        };
        let handlers = self.plan.handlers_for(Some(metadata.event_type.as_str()), &incoming.record.topic);
        if handlers.is_empty() {
            if self.registry.event(&metadata.event_type).is_some() {
                debug!(group = %self.group, record = %where_, event_type = %metadata.event_type, "no handler in this group");
                return self.done(&partition_key, offset);
            }
            if !self.config.dead_letter_unknown_types {
                warn!(group = %self.group, record = %where_, event_type = %metadata.event_type, "skipping record of unknown event type");
                return self.done(&partition_key, offset);
            }
            let why = format!("unknown event type `{}`", metadata.event_type);
            return self.reject(&incoming, &partition_key, kinds::UNKNOWN_TYPE, why, attempts_before).await;
        }
        let ctx = Arc::new(Context {
            metadata,
            record: incoming.record.clone(),
            group: self.group.clone(),
            data,
            format,
            publisher: self.publisher.clone(),
            state: self.state.clone(),
        });
        let pending: Vec<&'static HandlerDescriptor> = handlers
            .iter()
            .copied()
            .filter(|h| !settled.contains(h.name) && replay_handler.as_deref().is_none_or(|r| r == h.name))
            .collect();
        let outcomes = futures::future::join_all(pending.iter().map(|h| invoke(h, ctx.clone()))).await;

        let attempts = attempts_before + 1;
        let now = Utc::now();
        let first_failure = first_failure.unwrap_or(now);
        let mut settled = settled;
        let mut failing: Vec<(&'static str, HandlerError, RetryPolicy)> = Vec::new();
        for (h, outcome) in pending.iter().zip(outcomes) {
            let error = match outcome {
                Ok(()) => {
                    settled.insert(h.name);
                    continue;
                }
                Err(e) if e.is_poison() => {
                    return self.reject(&incoming, &partition_key, e.kind(), e.to_string(), attempts_before).await;
                }
                Err(e) => e,
            };
            let policy = h.retry.apply(self.config.retry_policy());
            if !(error.is_permanent() || policy.gives_up_after(attempts)) {
                failing.push((h.name, error, policy));
                continue;
            }
            let failure = Failure {
                kind: error.kind(),
                error: error.to_string(),
                attempts,
                group: &self.group,
                handler: h.name,
                first_failure,
                last_failure: now,
            };
            match self.dead_letter(&incoming, &failure).await {
                Ok(()) => {
                    settled.insert(h.name);
                }
                Err(e) => {
                    warn!(group = %self.group, record = %where_, handler = h.name, error = %e, "cannot write to the dead letter queue; the record will be retried");
                    failing.push((h.name, error, policy));
                }
            }
        }
        if failing.is_empty() {
            return self.done(&partition_key, offset);
        }
        let delay = failing.iter().map(|(_, _, p)| p.delay(attempts)).min().unwrap_or_default();
        for (handler, e, policy) in &failing {
            warn!(group = %self.group, record = %where_, handler, event_id = ctx.event_id(), attempt = attempts, of = policy.retries + 1, retry_in = ?delay, error = %e, "handler failed; the record will be retried");
        }
        self.block(&partition_key, offset, attempts, settled, first_failure);
        self.rewind(&partition_key, offset, delay);
    }

    /// A record no handler can take: dead-letter it once for the group, then move on. If the
    /// dead letter queue cannot be written, the record is retried later.
    async fn reject(&self, incoming: &Incoming, partition_key: &PartitionKey, kind: &'static str, error: String, attempts_before: u32) {
        let record = &incoming.record;
        let now = Utc::now();
        let failure = Failure { kind, error, attempts: 1, group: &self.group, handler: "", first_failure: now, last_failure: now };
        match self.dead_letter(incoming, &failure).await {
            Ok(()) => self.done(partition_key, record.offset),
            Err(e) => {
                let attempts = attempts_before + 1;
                let delay = self.config.retry_policy().delay(attempts);
                warn!(group = %self.group, record = %incoming.position(), error = %e, retry_in = ?delay, "cannot write to the dead letter queue; the record will be retried");
                self.block(partition_key, record.offset, attempts, HashSet::new(), now);
                self.rewind(partition_key, record.offset, delay);
            }
        }
    }

    /// Writes the original record with the failure's headers to the dead letter topic and
    /// waits for the broker's ack (or, with the DLQ off, logs and drops it).
    async fn dead_letter(&self, incoming: &Incoming, failure: &Failure<'_>) -> Result<()> {
        let record = &incoming.record;
        let where_ = incoming.position();
        if !self.config.dlq {
            error!(group = %self.group, record = %where_, handler = failure.handler, kind = failure.kind, error = %failure.error, "giving up on record (dead letter queue disabled)");
            return Ok(());
        }
        let topic = self.config.dlq_topic(&record.topic);
        let headers = dlq::dead_letter_headers(&incoming.headers, record, failure);
        let (partition, offset) = self.publisher.send_headers(&topic, record.key.as_deref(), None, &incoming.payload, headers).await?;
        error!(group = %self.group, record = %where_, handler = failure.handler, kind = failure.kind, attempts = failure.attempts, error = %failure.error, dead_letter = %format!("{topic}[{partition}]@{offset}"), "record dead-lettered");
        Ok(())
    }

    fn block(&self, partition_key: &PartitionKey, offset: i64, attempts: u32, settled: HashSet<&'static str>, first_failure: DateTime<Utc>) {
        let mut blocks = self.blocks.lock().expect("blocks lock");
        blocks.insert(partition_key.clone(), Blocked { offset, attempts, settled, first_failure });
    }

    /// Marks a record handled: its offset is stored for the next commit.
    fn done(&self, partition_key: &PartitionKey, offset: i64) {
        self.blocks.lock().expect("blocks lock").remove(partition_key);
        self.store(partition_key, offset);
    }

    /// Pauses the partition, rewinds it to `offset`, and resumes it after `delay`.
    fn rewind(&self, (topic, partition): &PartitionKey, offset: i64, delay: Duration) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, *partition);
        if let Err(e) = self.consumer.pause(&tpl) {
            warn!(group = %self.group, error = %e, "cannot pause partition");
        }
        if let Err(e) = self.consumer.seek(topic, *partition, Offset::Offset(offset), Duration::from_secs(5)) {
            warn!(group = %self.group, error = %e, "cannot rewind partition; the record comes again after a restart or rebalance");
        }
        // Weak: a pending resume must not keep a stopped consumer in its group.
        let consumer = Arc::downgrade(&self.consumer);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(consumer) = consumer.upgrade() {
                let _ = consumer.resume(&tpl);
            }
        });
    }
}

async fn invoke(handler: &'static HandlerDescriptor, ctx: Arc<Context>) -> Result<(), HandlerError> {
    let call = match handler.kind {
        HandlerKind::Typed(call) | HandlerKind::CatchAll { call, .. } => call,
        HandlerKind::Batch { .. } => return Err(HandlerError::Failed("a batch handler cannot take a single record".into())),
    };
    match AssertUnwindSafe(call(ctx)).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(panic) => Err(HandlerError::Panicked(panic_message(&*panic))),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

fn header(headers: &rdkafka::message::OwnedHeaders, key: &str) -> Option<String> {
    use rdkafka::message::Headers;
    headers.iter().find(|h| h.key == key).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// A record copied out of librdkafka's buffers.
struct Incoming {
    record: RecordInfo,
    headers: rdkafka::message::OwnedHeaders,
    payload: Vec<u8>,
}

impl Incoming {
    fn key(&self) -> PartitionKey {
        (self.record.topic.clone(), self.record.partition)
    }

    /// `topic[partition]@offset`, for logs.
    fn position(&self) -> String {
        format!("{}[{}]@{}", self.record.topic, self.record.partition, self.record.offset)
    }

    fn detach(m: &rdkafka::message::BorrowedMessage<'_>) -> Self {
        Incoming {
            record: RecordInfo {
                topic: m.topic().to_owned(),
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                timestamp_ms: m.timestamp().to_millis(),
            },
            headers: m.headers().map(|h| h.detach()).unwrap_or_default(),
            payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        }
    }
}
