//! One consumer per group: fetch, dispatch by event type, store the offset after success.
//!
//! Delivery is at-least-once: `enable.auto.offset.store` is off and a record's offset is
//! stored (and then auto-committed) only after every handler of the group succeeded for it.
//! A record whose handlers fail is retried in place: its partition is paused and rewound
//! to it, then resumed after a backoff, so the poll loop keeps serving the group (no
//! `max.poll.interval.ms` breach) and nothing after it on that partition is processed or
//! committed before it. Poison records (undecodable, unknown type) are logged and skipped.

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
use crate::context::{Context, RecordInfo};
use crate::wire::Decoded;
use crate::error::Result;
use crate::handler::{HandlerDescriptor, HandlerError};
use crate::publisher::Publisher;
use crate::registry::{GroupPlan, Registry};
use crate::state::StateMap;

type PartitionKey = (String, i32);

/// A partition stopped at a record that has not been handled yet.
#[derive(Debug)]
struct Blocked {
    offset: i64,
    attempts: u32,
    succeeded: HashSet<&'static str>,
}

type Blocks = Arc<Mutex<HashMap<PartitionKey, Blocked>>>;

/// librdkafka callbacks of a group consumer: logging and rebalances.
pub(crate) struct GroupContext {
    group: String,
    blocks: Blocks,
}

impl ClientContext for GroupContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::kafka::log(level, fac, log_message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        warn!(group = %self.group, %error, "kafka client error: {reason}");
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let mut blocks = self.blocks.lock().expect("blocks lock");
                for e in tpl.elements() {
                    blocks.remove(&(e.topic().to_owned(), e.partition()));
                }
                info!(group = %self.group, partitions = %describe(tpl), "partitions revoked");
            }
            Rebalance::Assign(tpl) => info!(group = %self.group, partitions = %describe(tpl), "partitions assigned"),
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
    registry: Registry,
    publisher: Publisher,
    state: Arc<StateMap>,
    backoff: (Duration, Duration),
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
        let context = GroupContext { group: plan.group_id.clone(), blocks: blocks.clone() };
        let consumer: StreamConsumer<GroupContext> = client.create_with_context(context)?;
        let topics: Vec<&str> = plan.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        info!(group = %plan.group_id, topics = ?topics, handlers = plan.handlers.values().map(Vec::len).sum::<usize>(), "consumer group subscribed");
        Ok(GroupRunner {
            group: plan.group_id.as_str().into(),
            plan,
            consumer: Arc::new(consumer),
            blocks,
            registry,
            publisher,
            state,
            backoff: config.retry_backoff,
        })
    }

    /// Runs until `shutdown` flips; then commits stored offsets and leaves the group.
    pub(crate) async fn run(self, mut shutdown: watch::Receiver<bool>) {
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
        let group = self.group.clone();
        // Closing blocks while librdkafka leaves the group: keep it off the async workers.
        let closed = tokio::task::spawn_blocking(move || self.close()).await;
        if let Err(e) = closed {
            warn!(%group, error = %e, "consumer close failed");
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
        let partition_key = (incoming.record.topic.clone(), incoming.record.partition);
        let offset = incoming.record.offset;
        let succeeded = {
            let blocks = self.blocks.lock().expect("blocks lock");
            match blocks.get(&partition_key) {
                // A record after an unhandled one: it comes again once the partition rewinds.
                Some(b) if offset > b.offset => return,
                Some(b) if offset == b.offset => b.succeeded.clone(),
                _ => HashSet::new(),
            }
        };
        let where_ = format!("{}[{}]@{offset}", incoming.record.topic, incoming.record.partition);
        let hints = self.plan.hints.get(&incoming.record.topic).cloned().unwrap_or_default();
        let decoded = crate::wire::decode(&incoming.headers, &incoming.payload, &incoming.record, &hints);
        let Decoded { metadata, data, format } = match decoded {
            Ok(Some(d)) => d,
            Ok(None) => {
                warn!(group = %self.group, record = %where_, "skipping record without event type information (no ce_type; the topic carries several event types)");
                return self.done(&partition_key, offset);
            }
            Err(e) => {
                warn!(group = %self.group, record = %where_, error = %e, "skipping record with a malformed envelope");
                return self.done(&partition_key, offset);
            }
        };
        let Some(handlers) = self.plan.handlers.get(metadata.event_type.as_str()) else {
            if self.registry.event(&metadata.event_type).is_some() {
                debug!(group = %self.group, record = %where_, event_type = %metadata.event_type, "no handler in this group");
            } else {
                warn!(group = %self.group, record = %where_, event_type = %metadata.event_type, "skipping record of unknown event type");
            }
            return self.done(&partition_key, offset);
        };
        let ctx = Arc::new(Context {
            metadata,
            record: incoming.record,
            group: self.group.clone(),
            data,
            format,
            publisher: self.publisher.clone(),
            state: self.state.clone(),
        });
        let pending: Vec<&'static HandlerDescriptor> =
            handlers.iter().copied().filter(|h| !succeeded.contains(h.name)).collect();
        let outcomes = futures::future::join_all(pending.iter().map(|h| invoke(h, ctx.clone()))).await;

        let mut succeeded = succeeded;
        let mut failures = Vec::new();
        for (h, outcome) in pending.iter().zip(outcomes) {
            match outcome {
                Ok(()) => {
                    succeeded.insert(h.name);
                }
                Err(e) if e.is_poison() => {
                    error!(group = %self.group, record = %where_, handler = h.name, event_id = ctx.event_id(), error = %e, "skipping record that cannot be decoded");
                    return self.done(&partition_key, offset);
                }
                Err(e) => failures.push((h.name, e)),
            }
        }
        if failures.is_empty() {
            return self.done(&partition_key, offset);
        }
        let attempts = {
            let mut blocks = self.blocks.lock().expect("blocks lock");
            let b = blocks.entry(partition_key.clone()).or_insert(Blocked { offset, attempts: 0, succeeded: HashSet::new() });
            b.offset = offset;
            b.attempts += 1;
            b.succeeded = succeeded;
            b.attempts
        };
        let delay = backoff(self.backoff, attempts);
        for (handler, e) in &failures {
            warn!(group = %self.group, record = %where_, handler, event_id = ctx.event_id(), attempt = attempts, retry_in = ?delay, error = %e, "handler failed; the record will be retried");
        }
        self.rewind(&partition_key, offset, delay);
    }

    /// Marks a record handled: its offset is stored for the next commit.
    fn done(&self, partition_key: &PartitionKey, offset: i64) {
        self.blocks.lock().expect("blocks lock").remove(partition_key);
        if let Err(e) = self.consumer.store_offset(&partition_key.0, partition_key.1, offset) {
            // The partition was revoked meanwhile; its new owner will see the record again.
            debug!(group = %self.group, error = %e, "offset not stored");
        }
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
    match AssertUnwindSafe((handler.call)(ctx)).catch_unwind().await {
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

fn backoff((first, max): (Duration, Duration), attempt: u32) -> Duration {
    first.saturating_mul(1u32 << attempt.saturating_sub(1).min(20)).min(max)
}

/// A record copied out of librdkafka's buffers.
struct Incoming {
    record: RecordInfo,
    headers: rdkafka::message::OwnedHeaders,
    payload: Vec<u8>,
}

impl Incoming {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = (Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(backoff(b, 1), Duration::from_millis(100));
        assert_eq!(backoff(b, 2), Duration::from_millis(200));
        assert_eq!(backoff(b, 4), Duration::from_millis(800));
        assert_eq!(backoff(b, 5), Duration::from_secs(1));
        assert_eq!(backoff(b, 99), Duration::from_secs(1));
    }
}
