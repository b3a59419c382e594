//! Settling: after an attempt, each record is done, retried from memory after its backoff,
//! or dead-lettered. This is the only place these rules live, for single records and batches:
//!
//! - a handler's success settles the record for that handler (it is not run again);
//! - a record no handler can take (malformed envelope, unknown type) is dead-lettered once for
//!   the group; data that does not decode as a handler's type is dead-lettered for that handler;
//! - a failure is retried after the handler's backoff until its retries are exhausted or the
//!   error is permanent; then the record is dead-lettered for that handler;
//! - a record counts as settled by a dead letter only once the dead letter write was
//!   acknowledged; a failed write is retried like a failed attempt.

use std::time::Duration;

use chrono::Utc;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio::time::Instant;
use tracing::{debug, error, warn};

use super::dispatch::{Attempt, BatchAttempt, WorkerEnv};
use super::engine::{Completion, Settled};
use super::record::{Record, RecordHeaders};
use super::scheduler::{LaneId, Work};
use crate::flows::dlq::{self, Failure};
use crate::core::error::Error;
use crate::flows::handler::{HandlerDescriptor, HandlerError};
use crate::flows::layer::{Disposition, Handled, Outcome, Settling};
use crate::core::retry::RetryPolicy;

/// What happens after a failed attempt.
enum Verdict {
    /// Try again after the delay.
    Retry(Duration),
    /// Dead-letter the record.
    GiveUp,
}

fn verdict(policy: RetryPolicy, attempts: u32, error: &HandlerError) -> Verdict {
    if error.is_permanent() || policy.gives_up_after(attempts) {
        Verdict::GiveUp
    } else {
        Verdict::Retry(policy.delay(attempts))
    }
}

/// Tells the layers of `handler` (the group's for `None`) what became of a record.
pub(crate) fn tell(env: &WorkerEnv, record: &Record, event_id: Option<&str>, handler: Option<&'static str>, disposition: Disposition<'_>) {
    let at = Settling { record: &record.info, event_id, group: &env.group, handler };
    env.stacks.of(handler.unwrap_or_default()).settled(&at, &disposition);
}

/// Tells a handler's layers a successful handling: handled, or skipped by a layer.
fn tell_ok(env: &WorkerEnv, record: &Record, event_id: &str, h: &HandlerDescriptor, outcome: &Outcome) {
    match outcome {
        Outcome::Skipped(reason) => {
            debug!(group = %env.group, record = %record.position(), handler = h.name, %reason, "a layer skipped the record");
            tell(env, record, Some(event_id), Some(h.name), Disposition::Skipped(reason));
        }
        _ => tell(env, record, Some(event_id), Some(h.name), Disposition::Handled),
    }
}

/// Settles a single record after an attempt.
pub(crate) async fn one(env: &WorkerEnv, lane: LaneId, mut record: Record, attempt: Attempt) -> Completion {
    let mut done_event: Option<String> = None;
    let outcome = match attempt {
        Attempt::Skip => {
            tell(env, &record, None, None, Disposition::Skipped("no handler of the group takes it"));
            Ok(())
        }
        Attempt::Reject { kind, error } => Box::pin(reject(env, &mut record, kind, error)).await,
        // Every handler succeeded (the usual case): nothing to await.
        Attempt::Handled { event_id, results } if results.iter().all(|(_, r)| r.is_ok()) => {
            for (h, r) in &results {
                if let Ok(outcome) = r {
                    tell_ok(env, &record, &event_id, h, outcome);
                }
            }
            done_event = Some(event_id);
            Ok(())
        }
        Attempt::Handled { event_id, results } => {
            let outcome = Box::pin(handled(env, &mut record, &event_id, results)).await;
            done_event = Some(event_id);
            outcome
        }
    };
    if let (Ok(()), Some(event_id)) = (&outcome, &done_event) {
        env.stacks.group.record_done(&env.group, event_id);
    }
    match outcome {
        Ok(()) => Completion {
            lane,
            slot: record.slot,
            epoch: record.epoch,
            settled: Settled::One { offset: record.offset(), bytes: record.size() },
            retry: None,
        },
        Err(delay) => Completion {
            lane,
            slot: record.slot,
            epoch: record.epoch,
            settled: Settled::Many(Vec::new()),
            retry: Some((Instant::now() + delay, Work::one(lane, record))),
        },
    }
}

/// A record no handler can take: dead-letter it for the group. `Err(delay)`: the dead letter
/// write failed; try again after the delay.
async fn reject(env: &WorkerEnv, record: &mut Record, kind: &'static str, error: String) -> Result<(), Duration> {
    let attempts = record.attempts + 1;
    if dead_letter(env, record, kind, error, "", attempts).await {
        return Ok(());
    }
    record.attempts = attempts;
    record.first_failure.get_or_insert_with(Utc::now);
    Err(env.retry_policy.delay(attempts))
}

/// Applies each handler's result. `Err(delay)`: some handler will try again after the delay.
async fn handled(
    env: &WorkerEnv,
    record: &mut Record,
    event_id: &str,
    results: Vec<(&'static HandlerDescriptor, Handled)>,
) -> Result<(), Duration> {
    let attempts = record.attempts + 1;
    let mut retry_in: Option<Duration> = None;
    for (h, result) in results {
        let error = match result {
            Ok(outcome) => {
                tell_ok(env, record, event_id, h, &outcome);
                record.settled_handlers.push(h.name);
                continue;
            }
            // The data does not decode as this handler's type: retrying cannot help. It is
            // dead-lettered for this handler; the others' outcomes stand.
            Err(e) if e.is_poison() => {
                if dead_letter(env, record, e.kind(), e.to_string(), h.name, attempts).await {
                    record.settled_handlers.push(h.name);
                    continue;
                }
                e
            }
            Err(e) => e,
        };
        record.first_failure.get_or_insert_with(Utc::now);
        let policy = h.retry.apply(env.retry_policy);
        let delay = match verdict(policy, attempts, &error) {
            Verdict::GiveUp if dead_letter(env, record, error.kind(), error.to_string(), h.name, attempts).await => {
                record.settled_handlers.push(h.name);
                continue;
            }
            Verdict::GiveUp => policy.delay(attempts),
            Verdict::Retry(delay) => {
                warn!(group = %env.group, record = %record.position(), handler = h.name, event_id, attempt = attempts, of = policy.retries + 1, retry_in = ?delay, error = %error, "handler failed; the record will be retried");
                tell(env, record, Some(event_id), Some(h.name), Disposition::Retrying { attempt: attempts, error: &error, delay });
                delay
            }
        };
        retry_in = Some(retry_in.map_or(delay, |d| d.min(delay)));
    }
    match retry_in {
        None => Ok(()),
        Some(delay) => {
            record.attempts = attempts;
            Err(delay)
        }
    }
}

/// Settles a batch after an attempt: what the handler handled settles, poison records were
/// set aside for the dead letter queue, and the rest is retried as one batch, in offset order.
pub(crate) async fn batch(env: &WorkerEnv, lane: LaneId, attempt: BatchAttempt) -> Completion {
    let BatchAttempt { handler, set_aside, handed, result } = attempt;
    let (slot, epoch) = match (set_aside.first(), handed.first()) {
        (Some((r, _)), _) | (None, Some(r)) => (r.slot, r.epoch),
        (None, None) => unreachable!("a batch holds at least one record"),
    };
    let mut settled: Vec<(i64, usize)> = Vec::new();
    let mut retry: Vec<Record> = Vec::new();
    let mut delay = Duration::ZERO;
    let mut settle = |r: Record| settled.push((r.offset(), r.size()));

    for (mut record, rejected) in set_aside {
        match rejected {
            None => {
                tell(env, &record, None, None, Disposition::Skipped("set aside from the batch"));
                settle(record)
            }
            Some((kind, error)) => match reject(env, &mut record, kind, error).await {
                Ok(()) => settle(record),
                Err(d) => {
                    delay = delay.max(d);
                    retry.push(record);
                }
            },
        }
    }
    let policy = handler.retry.apply(env.retry_policy);
    match result {
        Ok(()) => {
            for record in &handed {
                // Layers follow records of batches by their `ce_id` (binary mode).
                let id = record.header_text("ce_id");
                tell(env, record, id.as_deref(), Some(handler.name), Disposition::Handled);
                if let Some(id) = &id {
                    env.stacks.group.record_done(&env.group, id);
                }
            }
            handed.into_iter().for_each(&mut settle)
        }
        // One event's data does not decode: it alone goes to the dead letter queue; the others
        // come again at once (they were not handled).
        Err(HandlerError::DecodeAt { index, source }) => {
            let mut source = Some(source);
            for (i, mut record) in handed.into_iter().enumerate() {
                let Some(source) = source.take_if(|_| i == index) else {
                    retry.push(record);
                    continue;
                };
                let error = HandlerError::Decode(source);
                if dead_letter(env, &record, error.kind(), error.to_string(), handler.name, record.attempts + 1).await {
                    settle(record);
                } else {
                    record.attempts += 1;
                    delay = delay.max(env.retry_policy.delay(record.attempts));
                    retry.push(record);
                }
            }
        }
        // Events before the failed one are done; the failed one is retried or dead-lettered,
        // and those after it come again with it.
        Err(HandlerError::Partial { succeeded, source }) => {
            let error = HandlerError::Failed(source);
            for (i, mut record) in handed.into_iter().enumerate() {
                match i.cmp(&succeeded) {
                    std::cmp::Ordering::Less => {
                        tell(env, &record, record.header_text("ce_id").as_deref(), Some(handler.name), Disposition::Handled);
                        settle(record)
                    }
                    std::cmp::Ordering::Greater => retry.push(record),
                    std::cmp::Ordering::Equal => {
                        if let Some(d) = failed(env, &mut record, handler, policy, &error).await {
                            warn!(group = %env.group, record = %record.position(), handler = handler.name, attempt = record.attempts, of = policy.retries + 1, retry_in = ?d, error = %error, "batch handler failed; the failed event and those after it will be retried");
                            delay = delay.max(d);
                            retry.push(record);
                        } else {
                            settle(record);
                        }
                    }
                }
            }
        }
        // The whole batch failed: every event counts an attempt.
        Err(error) => {
            let mut logged = false;
            for mut record in handed {
                match failed(env, &mut record, handler, policy, &error).await {
                    Some(d) => {
                        if !logged {
                            warn!(group = %env.group, record = %record.position(), handler = handler.name, attempt = record.attempts, of = policy.retries + 1, retry_in = ?d, error = %error, "batch handler failed; the batch will be retried");
                            logged = true;
                        }
                        delay = delay.max(d);
                        retry.push(record);
                    }
                    None => settle(record),
                }
            }
        }
    }
    retry.sort_by_key(Record::offset);
    Completion {
        lane,
        slot,
        epoch,
        settled: Settled::Many(settled),
        retry: (!retry.is_empty()).then(|| (Instant::now() + delay, Work::batch(lane, retry))),
    }
}

/// Counts a failed attempt of a record for `handler`. `Some(delay)`: retry after it; `None`:
/// the record was dead-lettered (settled).
async fn failed(env: &WorkerEnv, record: &mut Record, handler: &'static HandlerDescriptor, policy: RetryPolicy, error: &HandlerError) -> Option<Duration> {
    record.attempts += 1;
    record.first_failure.get_or_insert_with(Utc::now);
    match verdict(policy, record.attempts, error) {
        Verdict::Retry(delay) => {
            tell(env, record, record.header_text("ce_id").as_deref(), Some(handler.name), Disposition::Retrying { attempt: record.attempts, error, delay });
            Some(delay)
        }
        Verdict::GiveUp => {
            let attempts = record.attempts;
            if dead_letter(env, record, error.kind(), error.to_string(), handler.name, attempts).await {
                None
            } else {
                Some(policy.delay(attempts))
            }
        }
    }
}

/// Writes the original record with the failure's headers to the dead letter topic and waits
/// for the broker's ack (or, with the dead letter queue off, logs and drops it). True when
/// the record is settled.
///
/// A record too large to copy whole (with the failure headers added, over the broker's limit)
/// is dead-lettered without its value and original headers: the entry keeps the failure
/// headers, the original's topic, partition and offset, and says what was left out
/// (`eventkit-dlq-omitted`). So nothing blocks, and the original can still be found.
/// Dead-letters a record (the cold path: boxed, so that the future of every record's handling
/// does not carry the dead letter write's state).
pub(crate) fn dead_letter<'a>(env: &'a WorkerEnv, record: &'a Record, kind: &'static str, error: String, handler: &'a str, attempts: u32) -> futures::future::BoxFuture<'a, bool> {
    Box::pin(write_dead_letter(env, record, kind, error, handler, attempts))
}

async fn write_dead_letter(env: &WorkerEnv, record: &Record, kind: &'static str, error: String, handler: &str, attempts: u32) -> bool {
    let now = Utc::now();
    let first_failure = record.first_failure.unwrap_or(now);
    // One attempt: its failure is the first and the last (not a millisecond apart).
    let last_failure = if attempts <= 1 { first_failure } else { now };
    let failure = Failure { kind, error, attempts, group: &env.group, handler, first_failure, last_failure };
    let told = |error: &str| {
        let handler = env.plan.all_handlers().chain(env.plan.batch).find(|h| h.name == handler).map(|h| h.name);
        let event_id = record.header_text("ce_id");
        tell(env, record, event_id.as_deref(), handler, Disposition::DeadLettered { kind, error });
    };
    if !env.config.dlq {
        error!(group = %env.group, record = %record.position(), handler, kind, error = %dlq::bounded(&failure.error, dlq::MAX_ERROR_BYTES), "giving up on record (dead letter queue disabled)");
        told(&failure.error);
        return true;
    }
    let topic = env.config.dlq_topic(&record.info.topic);
    let key = record.info.key.as_deref();
    let headers = dlq::dead_letter_headers(Some(&record.headers), &record.info, &failure, None);
    let mut sent = env.publisher.send_headers(&topic, key, None, record.value.as_deref(), headers).await;
    let mut omitted = false;
    if let Err(Error::Publish { source: KafkaError::MessageProduction(code) | KafkaError::MessageConsumption(code), .. }) = &sent {
        if matches!(code, RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge | RDKafkaErrorCode::InvalidMessageSize) {
            let size = record.value.as_ref().map_or(0, |v| v.len());
            let headers = dlq::dead_letter_headers::<RecordHeaders>(None, &record.info, &failure, Some(size));
            // A key over a few KiB is left out too.
            let key = key.filter(|k| k.len() <= 4096);
            sent = env.publisher.send_headers(&topic, key, None, None, headers).await;
            omitted = true;
        }
    }
    match sent {
        Ok((partition, offset)) => {
            told(&failure.error);
            let error = dlq::bounded(&failure.error, dlq::MAX_ERROR_BYTES);
            // `omitted` only when the value was left out (an absent field is not logged).
            let omitted = omitted.then_some(true);
            error!(group = %env.group, record = %record.position(), handler, kind, attempts, error = %error, omitted, dead_letter = %format_args!("{topic}[{partition}]@{offset}"), "record dead-lettered");
            true
        }
        Err(e) => {
            warn!(group = %env.group, record = %record.position(), handler, error = %e, "cannot write to the dead letter queue; the record will be retried");
            false
        }
    }
}
