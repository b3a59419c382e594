//! Offsets by time and range reads, outside any group: what replays and offset resets need.
//!
//! The broker answers "the first offset at or after a time" (`ListOffsets` by timestamp,
//! librdkafka's `offsets_for_times`). The embedded broker (librdkafka's mock cluster) does not
//! implement it: it answers "none" for every time. So when a broker says "none" although the
//! partition's last record is at or after the time, the partition is scanned for the first
//! record that is (the mock's partitions hold at most a few MiB).

use std::time::{Duration, Instant};

use rdkafka::types::RDKafkaErrorCode;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::core::config::Config;
use crate::core::error::{Error, Result};
use crate::kafka::KitContext;

const TIMEOUT: Duration = Duration::from_secs(10);

/// How long a read may go without any record or end-of-partition before it fails.
pub(crate) const PROGRESS_TIMEOUT: Duration = Duration::from_secs(15);

/// A consumer outside any group (it commits nothing), for metadata, offsets and range reads.
pub(crate) fn reader(config: &Config, name: &str) -> Result<BaseConsumer<KitContext>> {
    let mut client = crate::kafka::client_config(config)?;
    client
        .set("group.id", format!("eventkit-{name}"))
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", if config.embedded { "10" } else { "100" });
    crate::kafka::apply_overrides(&mut client, config, crate::kafka::Client::Consumer);
    // Readers end at the end-of-partition event, whatever the user's consumer settings say.
    client.set("enable.partition.eof", "true").set("enable.auto.commit", "false");
    Ok(client.create_with_context(KitContext)?)
}

/// The partitions of `topic` (none when it does not exist).
pub(crate) fn partitions(consumer: &BaseConsumer<KitContext>, topic: &str) -> Result<Option<Vec<i32>>> {
    let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic && t.error().is_none()) else { return Ok(None) };
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    Ok((!ids.is_empty()).then_some(ids))
}

/// How many partitions `topic` has (none when it does not exist), asked by a client of its own.
pub(crate) async fn partition_count(config: &Config, topic: &str) -> Result<Option<usize>> {
    let (config, topic) = (config.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || Ok(partitions(&reader(&config, "metadata")?, &topic)?.map(|p| p.len())))
        .await
        .map_err(|e| Error::msg(format!("reading metadata: {e}")))?
}

/// The first and one-past-last offsets of a partition.
///
/// Asked until two answers in a row agree on the low watermark (the high one moves while the
/// partition is written): librdkafka's query sends two requests and, when one of them is
/// answered with a retriable error, can return one watermark for both (the high one as the
/// low one, seen under `NOT_LEADER_FOR_PARTITION` answers), which would make a reader skip
/// the partition's records.
///
/// A transient error (a leader moving, a broker restarting) is asked again, within
/// [`TIMEOUT`]; an unknown topic or partition is not. (Readers that must not miss a record read
/// to the end-of-partition event instead, as the control topic's does.)
pub(crate) fn watermarks(consumer: &BaseConsumer<KitContext>, topic: &str, partition: i32) -> Result<(i64, i64)> {
    let until = Instant::now() + TIMEOUT;
    let ask = || loop {
        match consumer.fetch_watermarks(topic, partition, TIMEOUT) {
            Ok(w) => return Ok(w),
            Err(e) => {
                let permanent = matches!(e.rdkafka_error_code(), Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownPartition | RDKafkaErrorCode::UnknownTopic));
                if permanent || Instant::now() >= until {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    let mut last = ask()?;
    for _ in 0..5 {
        let again = ask()?;
        if again.0 == last.0 && 0 <= again.0 && again.0 <= again.1 {
            return Ok(again);
        }
        last = again;
    }
    Err(Error::msg(format!("the watermarks of {topic}[{partition}] disagree or make no sense ({}, {})", last.0, last.1)))
}

/// The first offset of each partition whose record's timestamp is at or after `at_ms`; the
/// partition's end when no record is.
pub(crate) fn offsets_for_time(consumer: &BaseConsumer<KitContext>, topic: &str, partitions: &[i32], at_ms: i64) -> Result<Vec<(i32, i64)>> {
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition_offset(topic, p, Offset::Offset(at_ms))?;
    }
    let found = consumer.offsets_for_times(tpl, TIMEOUT)?;
    let mut out = Vec::new();
    for &p in partitions {
        let (low, high) = watermarks(consumer, topic, p)?;
        let answer = found.find_partition(topic, p).map(|e| (e.offset(), e.error()));
        let offset = match answer {
            Some((_, Err(e))) => return Err(Error::msg(format!("the offset of {topic}[{p}] at {at_ms} ms: {e}"))),
            Some((Offset::Offset(o), _)) if o >= 0 => o,
            // No record at or after the time, as the broker says. The mock cluster says so of
            // every time: when the last record is at or after it, the partition is read.
            _ if high > low && last_timestamp(consumer, topic, p, high)?.is_some_and(|t| t >= at_ms) => scan_for_time(consumer, topic, p, (low, high), at_ms)?,
            _ => high,
        };
        out.push((p, offset.clamp(low, high)));
    }
    Ok(out)
}

/// The timestamp of the record before `high` (none when it has none).
fn last_timestamp(consumer: &BaseConsumer<KitContext>, topic: &str, partition: i32, high: i64) -> Result<Option<i64>> {
    let mut last = None;
    read_range(consumer, topic, &[(partition, high - 1, high)], |m| {
        last = m.timestamp().to_millis();
        Ok(false)
    })?;
    Ok(last)
}

/// The first offset in `[low, high)` whose record's timestamp is at or after `at_ms` (or `high`).
fn scan_for_time(consumer: &BaseConsumer<KitContext>, topic: &str, partition: i32, (low, high): (i64, i64), at_ms: i64) -> Result<i64> {
    let mut found = high;
    read_range(consumer, topic, &[(partition, low, high)], |m| {
        if m.timestamp().to_millis().is_some_and(|t| t >= at_ms) {
            found = m.offset();
            return Ok(false);
        }
        Ok(true)
    })?;
    Ok(found)
}

/// Reads each `(partition, from, to)` (`to` exclusive, or the partition's end, whichever comes
/// first: librdkafka's end-of-partition ends it, so a transaction marker as the last offset does
/// not leave the read waiting), calling `visit` on each record in offset order per partition
/// until it returns false. Fails when nothing arrives for [`PROGRESS_TIMEOUT`].
pub(crate) fn read_range(consumer: &BaseConsumer<KitContext>, topic: &str, ranges: &[(i32, i64, i64)], mut visit: impl FnMut(&BorrowedMessage<'_>) -> Result<bool>) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    let mut remaining: std::collections::HashMap<i32, i64> = Default::default();
    for &(p, from, to) in ranges.iter().filter(|r| r.1 < r.2) {
        tpl.add_partition_offset(topic, p, Offset::Offset(from))?;
        remaining.insert(p, to);
    }
    if remaining.is_empty() {
        return Ok(());
    }
    consumer.assign(&tpl)?;
    let mut progress = Instant::now();
    let result = loop {
        if remaining.is_empty() {
            break Ok(());
        }
        match consumer.poll(Duration::from_millis(100)) {
            None if progress.elapsed() > PROGRESS_TIMEOUT => {
                let mut left: Vec<i32> = remaining.keys().copied().collect();
                left.sort_unstable();
                break Err(Error::msg(format!("no progress reading `{topic}` for {PROGRESS_TIMEOUT:?} (partitions {left:?} unfinished)")));
            }
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                remaining.remove(&p);
                progress = Instant::now();
            }
            Some(Err(e)) => break Err(e.into()),
            Some(Ok(m)) => {
                progress = Instant::now();
                let Some(&to) = remaining.get(&m.partition()) else { continue };
                if m.offset() >= to {
                    remaining.remove(&m.partition());
                    continue;
                }
                if m.offset() + 1 >= to {
                    remaining.remove(&m.partition());
                }
                match visit(&m) {
                    Ok(true) => {}
                    Ok(false) => {
                        remaining.remove(&m.partition());
                    }
                    Err(e) => break Err(e),
                }
            }
        }
    };
    let _ = consumer.unassign();
    result
}
