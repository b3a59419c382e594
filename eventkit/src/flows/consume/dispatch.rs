//! Handling one unit of work: decode the record (or batch), call the handlers that have not
//! settled it yet, and let [`super::settle`] decide what follows. The resulting completion goes
//! back to the engine. Units of work of a group run concurrently, up to its concurrency.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use tracing::{debug, warn};

use super::engine::Completion;
use super::record::Record;
use super::scheduler::{Items, Work};
use super::settle;
use crate::core::error::panic_message;
use crate::flows::batch::BatchContext;
use crate::flows::cascade::Cascade;
use crate::core::config::Config;
use crate::flows::context::Context;
use crate::flows::dlq::{self, kinds};
use crate::flows::handler::{HandlerDescriptor, HandlerError, HandlerKind};
use crate::flows::layer::{Flow, Handled, Outcome, Stack};
use crate::flows::publish::Publisher;
use crate::flows::registry::{GroupPlan, Registry};
use crate::core::retry::RetryPolicy;
use crate::core::state::StateMap;
use crate::wire::Decoded;

/// What every handler call of a group needs.
pub(crate) struct WorkerEnv {
    pub group: Arc<str>,
    pub plan: GroupPlan,
    pub registry: Registry,
    pub publisher: Publisher,
    pub state: Arc<StateMap>,
    pub config: Config,
    pub retry_policy: RetryPolicy,
    pub mediator: Arc<crate::flows::command::Mediator>,
    /// For a transactional group: its producer and consumer.
    pub transactions: Option<Transactions>,
    pub status: Arc<crate::flows::status::GroupStatus>,
    /// The layers around the group (records no handler takes) and around each handler.
    pub stacks: Stacks,
    /// What the group's gauges are fed to.
    pub watches: Vec<Arc<dyn crate::flows::layer::Watch>>,
}

/// The layers of a group: around the group itself, and around each of its handlers.
pub(crate) struct Stacks {
    pub group: Stack,
    pub handlers: std::collections::HashMap<&'static str, Stack, foldhash::fast::RandomState>,
}

impl Stacks {
    /// The layers around `handler` (the group's when it has none of its own).
    pub(crate) fn of(&self, handler: &str) -> &Stack {
        self.handlers.get(handler).unwrap_or(&self.group)
    }
}

/// What a transactional group handles its records with: each record's handler calls, the
/// events they publish or cascade and the record's offset commit in one Kafka transaction.
pub(crate) struct Transactions {
    /// The member's transactional producer (handlers publish with it); replaced after a fatal
    /// error.
    pub publisher: std::sync::RwLock<Publisher>,
    /// Its `transactional.id`; a replacement producer takes the same one (fencing the old).
    pub id: String,
    /// The app's publish layers (a replacement producer gets them too).
    pub layers: crate::flows::layer::PublishStack,
    pub config: Config,
    /// The group's consumer, for its group metadata (fencing by generation).
    pub consumer: std::sync::Weak<rdkafka::consumer::StreamConsumer<super::rebalance::GroupContext>>,
    /// One transaction at a time; it holds, per partition, the offset the last committed
    /// transaction committed.
    pub lock: tokio::sync::Mutex<std::collections::HashMap<(Arc<str>, i32), i64>>,
}

impl Transactions {
    pub(crate) fn publisher(&self) -> Publisher {
        self.publisher.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces a producer that hit a fatal error (fenced, or its transaction timed out).
    async fn rebuild(&self) {
        let (config, id, layers) = (self.config.clone(), self.id.clone(), self.layers.clone());
        match tokio::task::spawn_blocking(move || Publisher::transactional(&config, &id, layers)).await {
            Ok(Ok(fresh)) => *self.publisher.write().unwrap_or_else(|e| e.into_inner()) = fresh,
            Ok(Err(e)) => warn!(transactional_id = %self.id, error = %e, "cannot recreate the transactional producer; trying again with the next record"),
            Err(e) => warn!(transactional_id = %self.id, error = %e, "cannot recreate the transactional producer"),
        }
    }

    /// After a failed transaction call: abort when the transaction needs it, and replace the
    /// producer when the error is fatal.
    async fn recover(&self, publisher: &Publisher, error: &crate::core::error::Error) {
        let (fatal, abort) = match error {
            crate::core::error::Error::Kafka(rdkafka::error::KafkaError::Transaction(e)) => (e.is_fatal(), e.txn_requires_abort()),
            _ => (false, true),
        };
        if abort && !fatal {
            if let Err(e) = publisher.abort_transaction().await {
                warn!(transactional_id = %self.id, error = %e, "aborting the transaction failed");
                if is_fatal(&e) {
                    self.rebuild().await;
                }
            }
        }
        if fatal {
            warn!(transactional_id = %self.id, error = %error, "the transactional producer failed for good; recreating it");
            self.rebuild().await;
        }
    }
}

impl Transactions {
    /// Commits `next` as the group's offset of `topic[partition]` in a transaction of its own,
    /// unless a transaction committed it already: for records that settled without one (skipped,
    /// or dead-lettered outside a transaction), so that a transactional group's offsets move
    /// through transactions only. On failure the offset goes with the next transaction.
    pub(crate) async fn cover(&self, topic: &Arc<str>, partition: i32, next: i64) {
        let mut committed = self.lock.lock().await;
        if committed.get(&(topic.clone(), partition)).is_some_and(|c| *c >= next) {
            return;
        }
        let publisher = self.publisher();
        let Some(group) = self.consumer.upgrade().and_then(|c| rdkafka::consumer::Consumer::group_metadata(&*c)) else { return };
        let mut offsets = rdkafka::TopicPartitionList::new();
        if offsets.add_partition_offset(topic, partition, rdkafka::Offset::Offset(next)).is_err() {
            return;
        }
        let done = async {
            publisher.begin_transaction().await?;
            send_and_commit(&publisher, offsets, Arc::new(group)).await
        };
        match done.await {
            Ok(()) => {
                committed.insert((topic.clone(), partition), next);
            }
            Err(e) => {
                debug!(transactional_id = %self.id, error = %e, "the offset of a record settled outside a transaction goes with the next one");
                self.recover(&publisher, &e).await;
            }
        }
    }
}

fn is_fatal(error: &crate::core::error::Error) -> bool {
    matches!(error, crate::core::error::Error::Kafka(rdkafka::error::KafkaError::Transaction(e)) if e.is_fatal())
}

fn is_retriable(error: &crate::core::error::Error) -> bool {
    matches!(error, crate::core::error::Error::Kafka(rdkafka::error::KafkaError::Transaction(e)) if e.is_retriable())
}

/// How one attempt at a single record went.
pub(crate) enum Attempt {
    /// Nothing for this group to do (a replay for another group, a type it does not handle).
    Skip,
    /// No handler can take the record.
    Reject { kind: &'static str, error: String },
    /// The handlers ran (or their layers skipped or failed the record).
    Handled { event_id: String, results: Vec<(&'static HandlerDescriptor, Handled)> },
}

/// How one attempt at a batch went.
pub(crate) struct BatchAttempt {
    pub handler: &'static HandlerDescriptor,
    /// Records that did not reach the handler: skipped (`None`) or rejected (kind, error).
    pub set_aside: Vec<(Record, Option<(&'static str, String)>)>,
    /// Records handed to the handler, in offset order.
    pub handed: Vec<Record>,
    /// How the call ended (`Ok` when nothing was handed).
    pub result: Result<(), HandlerError>,
}

/// Handles one unit of work: its completion says which records settled and what to retry.
pub(crate) async fn run(env: Arc<WorkerEnv>, work: Work) -> Completion {
    let Work { lane, items, .. } = work;
    match items {
        Items::One(record) => {
            let attempt = attempt_one(&env, &record).await;
            if env.transactions.is_some() {
                return Box::pin(settle_in_transactional_group(&env, lane, record, attempt)).await;
            }
            settle::one(&env, lane, record, attempt).await
        }
        // Batches: boxed, so that single records do not carry their state.
        Items::Batch(records) => {
            Box::pin(async {
                let attempt = attempt_batch(&env, records).await;
                settle::batch(&env, lane, attempt).await
            })
            .await
        }
    }
}

/// What a record is for this group. Short-lived: boxing `Ready` would cost an allocation per record.
#[allow(clippy::large_enum_variant)]
enum Prepared {
    Skip,
    Reject(&'static str, String),
    Ready(Context),
}

/// Replay addressing and decoding.
fn prepare(env: &WorkerEnv, record: &Record) -> Prepared {
    if let Some(group) = record.replay_header(dlq::headers::REPLAY_GROUP) {
        if group != *env.group {
            debug!(group = %env.group, record = %record.position(), replay_for = %group, "skipping a replay for another group");
            return Prepared::Skip;
        }
    }
    let value = record.value_bytes();
    let Decoded { metadata, data, format } = match crate::wire::decode(&record.headers, &value, &record.info, &record.route.hints) {
        Ok(Some(d)) => d,
        Ok(None) => {
            let why = "the record has no event type (no ce_type) and its topic carries several event types";
            return Prepared::Reject(kinds::UNKNOWN_TYPE, why.into());
        }
        Err(e) => return Prepared::Reject(kinds::ENVELOPE, e.to_string()),
    };
    Prepared::Ready(Context {
        metadata,
        record: record.info.clone(),
        group: env.group.clone(),
        data,
        format,
        publisher: env.transactions.as_ref().map_or_else(|| env.publisher.clone(), Transactions::publisher),
        state: env.state.clone(),
        cascade: Default::default(),
        extensions: Default::default(),
        command: Default::default(),
        mediator: Some(env.mediator.clone()),
        handler: None,
    })
}

/// A record of a type none of the group's handlers takes: skipped when another part of the
/// app knows the type (or unknown types are to be skipped), otherwise rejected.
fn unhandled(env: &WorkerEnv, record: &Record, event_type: &str) -> Prepared {
    if env.registry.event(event_type).is_some() {
        debug!(group = %env.group, record = %record.position(), event_type, "no handler in this group");
        return Prepared::Skip;
    }
    if !env.config.dead_letter_unknown_types {
        warn!(group = %env.group, record = %record.position(), event_type, "skipping record of unknown event type");
        return Prepared::Skip;
    }
    Prepared::Reject(kinds::UNKNOWN_TYPE, format!("unknown event type `{event_type}`"))
}

/// A record ready for its handlers.
struct ReadyOne {
    ctx: Arc<Context>,
    pending: Vec<&'static HandlerDescriptor>,
    event_id: String,
}

/// The synchronous part of an attempt: decode and pick the handlers. Kept out of the
/// `async fn` so that its locals (a whole `Context` among them) do not sit in the state of
/// every running record.
fn begin_one(env: &WorkerEnv, record: &Record) -> Result<ReadyOne, Attempt> {
    let mut ctx = match prepare(env, record) {
        Prepared::Ready(ctx) => ctx,
        Prepared::Skip => return Err(Attempt::Skip),
        Prepared::Reject(kind, error) => return Err(Attempt::Reject { kind, error }),
    };
    let typed = env.plan.typed_handlers(&ctx.metadata.event_type);
    let catch_all = &record.route.catch_all;
    if typed.is_empty() && catch_all.is_empty() {
        return Err(match unhandled(env, record, &ctx.metadata.event_type) {
            Prepared::Reject(kind, error) => Attempt::Reject { kind, error },
            _ => Attempt::Skip,
        });
    }
    // A replayed record runs only the handler that failed it.
    let replay_handler = record.replay_header(dlq::headers::REPLAY_HANDLER);
    let pending: Vec<&'static HandlerDescriptor> = typed
        .iter()
        .chain(catch_all)
        .copied()
        .filter(|h| !record.settled_handlers.contains(&h.name) && replay_handler.as_deref().is_none_or(|r| r == h.name))
        .collect();
    if let Some(name) = &replay_handler {
        if !typed.iter().chain(catch_all).any(|h| h.name == *name) {
            warn!(group = %env.group, record = %record.position(), handler = %name, "a replay addressed to a handler this group does not have; nothing to run");
        }
    }
    let event_id = ctx.metadata.id.clone();
    if let [only] = pending.as_slice() {
        ctx.handler = Some(only.name);
    }
    Ok(ReadyOne { ctx: Arc::new(ctx), pending, event_id })
}

async fn attempt_one(env: &WorkerEnv, record: &Record) -> Attempt {
    let ReadyOne { ctx, pending, event_id } = match begin_one(env, record) {
        Ok(ready) => ready,
        Err(attempt) => return attempt,
    };
    if let Some(txn) = &env.transactions {
        let results = Box::pin(in_transaction(env, txn, record, pending, ctx)).await;
        return Attempt::Handled { event_id, results };
    }
    let results = match pending.as_slice() {
        [] => Vec::new(),
        [only] => vec![(*only, invoke(env, only, ctx).await)],
        _ => {
            // Each handler cascades through a context of its own: what one of them adds is
            // published when that one succeeded.
            let outcomes = Box::pin(futures::future::join_all(pending.iter().map(|h| invoke(env, h, for_handler(&ctx, h))))).await;
            pending.into_iter().zip(outcomes).collect()
        }
    };
    Attempt::Handled { event_id, results }
}

/// Runs a record's handlers in a Kafka transaction that also commits the record's offset: all
/// of it is visible to `read_committed` readers, or none of it (the handlers then fail
/// together and the record is retried).
async fn in_transaction(
    env: &WorkerEnv,
    txn: &Transactions,
    record: &Record,
    pending: Vec<&'static HandlerDescriptor>,
    ctx: Arc<Context>,
) -> Vec<(&'static HandlerDescriptor, Handled)> {
    let all_failed = |pending: &[&'static HandlerDescriptor], why: &crate::core::error::Error| {
        pending.iter().map(|h| (*h, Err(HandlerError::Cascade(crate::core::error::Error::Other(why.to_string().into()))))).collect()
    };
    let mut committed_offsets = txn.lock.lock().await;
    let publisher = txn.publisher();
    // The group generation when the transaction starts: a member that lost the partition
    // since commits with a stale generation, and the broker refuses it.
    let Some(group) = txn.consumer.upgrade().and_then(|c| rdkafka::consumer::Consumer::group_metadata(&*c)) else {
        return all_failed(&pending, &crate::core::error::Error::msg("the consumer is closing"));
    };
    let group = Arc::new(group);
    if let Err(e) = publisher.begin_transaction().await {
        txn.recover(&publisher, &e).await;
        return all_failed(&pending, &e);
    }
    let mut results = Vec::with_capacity(pending.len());
    for h in &pending {
        // One context per handler: each one's cascade is its own.
        let own = if pending.len() == 1 { ctx.clone() } else { for_handler(&ctx, h) };
        results.push((*h, invoke(env, h, own).await));
    }
    let committed = if results.iter().any(|(_, r)| r.is_err()) {
        Err(crate::core::error::Error::msg("another handler of the record failed; the transaction was aborted"))
    } else {
        commit(&publisher, record, group).await
    };
    match committed {
        Ok(()) => {
            committed_offsets.insert((record.info.topic.clone(), record.info.partition), record.offset() + 1);
            results
        }
        Err(e) => {
            txn.recover(&publisher, &e).await;
            if results.iter().all(|(_, r)| r.is_ok()) {
                warn!(record = %record.position(), error = %e, "the record's transaction did not commit; it is handled again");
            }
            // What succeeded was rolled back with the transaction: it runs again.
            results.into_iter().map(|(h, r)| (h, r.and(Err(HandlerError::Cascade(crate::core::error::Error::Other(e.to_string().into())))))).collect()
        }
    }
}

/// Adds the record's offset to the transaction and commits it.
async fn commit(publisher: &Publisher, record: &Record, group: Arc<rdkafka::consumer::ConsumerGroupMetadata>) -> crate::core::error::Result<()> {
    let mut offsets = rdkafka::TopicPartitionList::new();
    offsets.add_partition_offset(&record.info.topic, record.info.partition, rdkafka::Offset::Offset(record.offset() + 1))?;
    send_and_commit(publisher, offsets, group).await
}

/// Adds `offsets` to the open transaction and commits it; a call that may still go through
/// (retriable) is made again, as librdkafka asks.
async fn send_and_commit(publisher: &Publisher, offsets: rdkafka::TopicPartitionList, group: Arc<rdkafka::consumer::ConsumerGroupMetadata>) -> crate::core::error::Result<()> {
    let mut tries = 0;
    loop {
        match publisher.send_offsets(offsets.clone(), group.clone()).await {
            Err(e) if is_retriable(&e) && tries < 5 => tries += 1,
            other => break other?,
        }
    }
    let mut tries = 0;
    loop {
        match publisher.commit_transaction().await {
            Err(e) if is_retriable(&e) && tries < 5 => tries += 1,
            other => return other,
        }
    }
}

/// Settles a record of a transactional group; a record that settled without its transaction
/// committing (skipped, or dead-lettered) gets its offset committed in a transaction of its own.
async fn settle_in_transactional_group(env: &WorkerEnv, lane: super::scheduler::LaneId, record: Record, attempt: Attempt) -> Completion {
    let (topic, partition) = (record.info.topic.clone(), record.info.partition);
    let completion = settle::one(env, lane, record, attempt).await;
    if let (Some(txn), super::engine::Settled::One { offset, .. }) = (&env.transactions, &completion.settled) {
        txn.cover(&topic, partition, offset + 1).await;
    }
    completion
}

/// A batch through the handler's layers: each record passes `before` (a layer may skip a
/// record, or fail it, which dead-letters it), and the batch call passes `around` and `after`
/// with the batch's first record's context.
async fn attempt_batch(env: &WorkerEnv, records: Vec<Record>) -> BatchAttempt {
    let handler = env.plan.batch.expect("a batch group has a batch handler");
    let HandlerKind::Batch { call, .. } = handler.kind else { unreachable!("the batch handler is a batch") };
    let stack = env.stacks.of(handler.name);
    let mut set_aside = Vec::new();
    let mut handed = Vec::with_capacity(records.len());
    let mut contexts = Vec::with_capacity(records.len());
    for record in records {
        let prepared = match prepare(env, &record) {
            Prepared::Ready(ctx) if env.plan.typed_handlers(&ctx.metadata.event_type).is_empty() => {
                unhandled(env, &record, &ctx.metadata.event_type)
            }
            other => other,
        };
        match prepared {
            Prepared::Ready(mut ctx) => {
                ctx.handler = Some(handler.name);
                match stack.before(&ctx) {
                    Some(Flow::Skip(reason)) => {
                        debug!(group = %env.group, record = %record.position(), handler = handler.name, %reason, "a layer skipped the record");
                        set_aside.push((record, None));
                    }
                    Some(Flow::Fail(e)) => set_aside.push((record, Some((e.kind(), e.to_string())))),
                    _ => {
                        contexts.push(ctx);
                        handed.push(record);
                    }
                }
            }
            Prepared::Skip => set_aside.push((record, None)),
            Prepared::Reject(kind, error) => set_aside.push((record, Some((kind, error)))),
        }
    }
    let result = if contexts.is_empty() {
        Ok(())
    } else {
        let first = Arc::new(contexts[0].clone());
        let batch = Arc::new(BatchContext { items: contexts });
        let started = std::time::Instant::now();
        let call_batch = {
            let batch = batch.clone();
            move || async move {
                match AssertUnwindSafe(call(batch.clone())).catch_unwind().await {
                    Ok(Ok(returned)) => publish_batch_cascade(&batch, returned).await.map(|()| Outcome::Done),
                    Ok(Err(e)) => Err(e),
                    Err(panic) => Err(HandlerError::Panicked(panic_message(&*panic))),
                }
            }
        };
        let result = if stack.wraps(&first) {
            let call_batch = std::sync::Mutex::new(Some(call_batch));
            let once = Arc::new(move |_ctx: Arc<Context>| -> crate::flows::layer::BoxFuture<Handled> {
                match call_batch.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    Some(call) => Box::pin(call()),
                    None => Box::pin(async { Err(HandlerError::Failed("a layer ran the batch twice".into())) }),
                }
            });
            stack.around(first.clone(), once).await
        } else {
            call_batch().await
        };
        stack.after(&first, &result, started.elapsed());
        result.map(|_| ())
    };
    BatchAttempt { handler, set_aside, handed, result }
}

/// Calls a single-record handler through its layers, and times it.
async fn invoke(env: &WorkerEnv, handler: &'static HandlerDescriptor, ctx: Arc<Context>) -> Handled {
    let stack = env.stacks.of(handler.name);
    match stack.before(&ctx) {
        None => {}
        Some(Flow::Skip(reason)) => return Ok(Outcome::Skipped(reason)),
        Some(Flow::Fail(e)) => return Err(e),
        Some(_) => {}
    }
    let started = std::time::Instant::now();
    let result = if stack.wraps(&ctx) {
        // A layer waits or spans the call: the handler runs at the end of the stack.
        stack.around(ctx.clone(), Arc::new(move |ctx| Box::pin(call_handler(handler, ctx)))).await
    } else {
        call_handler(handler, ctx.clone()).await
    };
    stack.after(&ctx, &result, started.elapsed());
    result
}

/// Calls a single-record handler, turning a panic into an error.
async fn call_handler(handler: &'static HandlerDescriptor, ctx: Arc<Context>) -> Handled {
    let call = match handler.kind {
        HandlerKind::Typed(call) | HandlerKind::CatchAll { call, .. } => call,
        HandlerKind::Command { .. } => return Err(HandlerError::Failed("a command handler cannot take a record".into())),
        HandlerKind::Batch { .. } => return Err(HandlerError::Failed("a batch handler cannot take a single record".into())),
    };
    match AssertUnwindSafe(call(ctx.clone())).catch_unwind().await {
        Ok(Ok(returned)) => {
            let mut cascade = ctx.take_cascade();
            cascade.append(returned);
            if cascade.is_empty() {
                return Ok(Outcome::Done);
            }
            Box::pin(publish_cascade(&ctx, cascade)).await.map(|()| Outcome::Done)
        }
        Ok(Err(e)) => Err(e),
        Err(panic) => Err(HandlerError::Panicked(panic_message(&*panic))),
    }
}

/// A context of its own for one of a record's several handlers.
fn for_handler(ctx: &Context, handler: &'static HandlerDescriptor) -> Arc<Context> {
    let mut own = ctx.clone();
    own.handler = Some(handler.name);
    Arc::new(own)
}

/// Publishes what a handler cascaded, as follow-ups of its event, and waits for the acks.
async fn publish_cascade(ctx: &Context, cascade: Cascade) -> Result<(), HandlerError> {
    if cascade.is_empty() {
        return Ok(());
    }
    cascade.publish(&ctx.publisher, ctx.follow_up()).await.map(drop).map_err(HandlerError::Cascade)
}

/// A batch handler's cascade: what it added through an event's context follows that event;
/// what it returned follows the batch's first event.
async fn publish_batch_cascade(batch: &BatchContext, returned: Cascade) -> Result<(), HandlerError> {
    let per_event = batch.items.iter().map(|ctx| publish_cascade(ctx, ctx.take_cascade()));
    futures::future::try_join_all(per_event).await?;
    publish_cascade(batch.first(), returned).await
}


#[cfg(test)]
mod tests {
    /// Every running record holds this future, and it is moved into its box once: it stays
    /// small (it was 3 KiB while attempts kept a whole `Context` and two copies of the
    /// handling future in their state).
    #[test]
    fn the_per_record_future_stays_small() {
        fn size<A, B, F: std::future::Future>(_: impl Fn(A, B) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let (run, attempt) = (size(super::run), size(super::attempt_one));
        assert!(run <= 2048 && attempt <= 1024, "run {run} bytes, attempt_one {attempt} bytes");
    }
}
