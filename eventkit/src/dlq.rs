//! The dead letter queue: records that could not be handled, kept with why, and replayed.
//!
//! A dead-lettered record is the original record (key, value and headers untouched) on
//! `{topic}{suffix}` (default `.dlq`) with `eventkit-dlq-*` headers added. Replaying sends it
//! back to its topic without those headers, addressed to the group (and handler) that failed,
//! so other groups do not see it twice; a marker in the dead letter topic makes a second
//! replay of the same entry a no-op.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::publisher::Publisher;

/// Names of the headers eventkit adds to dead-lettered and replayed records.
pub mod headers {
    /// Prefix of every dead-letter header; replays strip them.
    pub const PREFIX: &str = "eventkit-dlq-";
    /// The error message.
    pub const ERROR: &str = "eventkit-dlq-error";
    /// The error kind (see [`super::kinds`]).
    pub const KIND: &str = "eventkit-dlq-kind";
    /// How many attempts were made.
    pub const ATTEMPTS: &str = "eventkit-dlq-attempts";
    /// The original topic.
    pub const TOPIC: &str = "eventkit-dlq-topic";
    /// The original partition.
    pub const PARTITION: &str = "eventkit-dlq-partition";
    /// The original offset.
    pub const OFFSET: &str = "eventkit-dlq-offset";
    /// The original record's timestamp (ms since the epoch).
    pub const TIMESTAMP: &str = "eventkit-dlq-timestamp";
    /// The consumer group that failed.
    pub const GROUP: &str = "eventkit-dlq-group";
    /// The handler that failed (empty for records no handler could take).
    pub const HANDLER: &str = "eventkit-dlq-handler";
    /// When the first attempt failed (RFC 3339).
    pub const FIRST_FAILURE: &str = "eventkit-dlq-first-failure";
    /// When the last attempt failed (RFC 3339).
    pub const LAST_FAILURE: &str = "eventkit-dlq-last-failure";
    /// On a marker record: the offset of the entry that was replayed.
    pub const REPLAYED: &str = "eventkit-dlq-replayed";
    /// On a replayed record: the dead letter entry it came from (`topic/partition/offset`).
    pub const REPLAY_OF: &str = "eventkit-replay-of";
    /// On a replayed record: the only group that handles it.
    pub const REPLAY_GROUP: &str = "eventkit-replay-group";
    /// On a replayed record: the only handler of that group that runs.
    pub const REPLAY_HANDLER: &str = "eventkit-replay-handler";
    /// On an entry too large to copy whole: what was left out (`value,headers`) and the
    /// original value's size in bytes, as `value,headers;SIZE`. The original is still at
    /// `eventkit-dlq-topic`/`-partition`/`-offset`.
    pub const OMITTED: &str = "eventkit-dlq-omitted";
}

/// The longest `eventkit-dlq-error` text, in bytes.
pub(crate) const MAX_ERROR_BYTES: usize = 2048;

/// Values of the `eventkit-dlq-kind` header.
pub mod kinds {
    /// A handler kept failing until its retries were exhausted.
    pub const HANDLER_ERROR: &str = "handler-error";
    /// A handler returned [`crate::Error::permanent`].
    pub const PERMANENT: &str = "permanent";
    /// A handler panicked on every attempt.
    pub const PANIC: &str = "panic";
    /// An argument of the handler could not be extracted.
    pub const EXTRACT: &str = "extract";
    /// The data does not decode as the event type.
    pub const DESERIALIZATION: &str = "deserialization";
    /// The event type is not registered in this app.
    pub const UNKNOWN_TYPE: &str = "unknown-type";
    /// The CloudEvents attributes or body envelope are malformed.
    pub const ENVELOPE: &str = "envelope";
}

/// Why and where a record failed.
#[derive(Debug, Clone)]
pub(crate) struct Failure<'a> {
    pub kind: &'static str,
    pub error: String,
    pub attempts: u32,
    pub group: &'a str,
    pub handler: &'a str,
    pub first_failure: DateTime<Utc>,
    pub last_failure: DateTime<Utc>,
}

/// The original headers (`None`: left out, with the value of `omitted_value_size` bytes) plus
/// the dead-letter headers, each of them bounded.
pub(crate) fn dead_letter_headers<H: Headers>(
    original: Option<&H>,
    record: &crate::context::RecordInfo,
    failure: &Failure<'_>,
    omitted_value_size: Option<usize>,
) -> OwnedHeaders {
    let mut out = OwnedHeaders::new_with_capacity(original.map_or(0, Headers::count) + 12);
    if let Some(original) = original {
        for h in original.iter().filter(|h| !h.key.starts_with(headers::PREFIX)) {
            out = out.insert(h);
        }
    }
    let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    let added = [
        (headers::ERROR, bounded(&failure.error, MAX_ERROR_BYTES)),
        (headers::KIND, failure.kind.to_owned()),
        (headers::ATTEMPTS, failure.attempts.to_string()),
        (headers::TOPIC, record.topic.to_string()),
        (headers::PARTITION, record.partition.to_string()),
        (headers::OFFSET, record.offset.to_string()),
        (headers::TIMESTAMP, record.timestamp_ms.map(|t| t.to_string()).unwrap_or_default()),
        (headers::GROUP, failure.group.to_owned()),
        (headers::HANDLER, failure.handler.to_owned()),
        (headers::FIRST_FAILURE, time(&failure.first_failure)),
        (headers::LAST_FAILURE, time(&failure.last_failure)),
    ];
    for (key, value) in &added {
        out = out.insert(Header { key, value: Some(value.as_bytes()) });
    }
    if let Some(size) = omitted_value_size {
        let omitted = format!("value,headers;{size}");
        out = out.insert(Header { key: headers::OMITTED, value: Some(omitted.as_bytes()) });
    }
    out
}

/// At most `max` bytes of `text` (cut at a character boundary), marked when cut.
pub(crate) fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes)", &text[..cut], text.len())
}

/// One entry of a dead letter topic.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeadLetter {
    /// The dead letter topic.
    pub dlq_topic: String,
    /// Partition in the dead letter topic.
    pub partition: i32,
    /// Offset in the dead letter topic.
    pub offset: i64,
    /// The original Kafka key.
    pub key: Option<Vec<u8>>,
    /// The original value.
    pub value: Vec<u8>,
    /// The original headers (without the dead-letter headers).
    pub headers: Vec<(String, Vec<u8>)>,
    /// `ce_id`, when the record has one.
    pub event_id: Option<String>,
    /// `ce_type`, when the record has one.
    pub event_type: Option<String>,
    /// The error message.
    pub error: String,
    /// The error kind (see [`kinds`]).
    pub kind: String,
    /// Attempts made.
    pub attempts: u32,
    /// The original topic.
    pub topic: String,
    /// The original partition.
    pub original_partition: i32,
    /// The original offset.
    pub original_offset: i64,
    /// The original timestamp (ms).
    pub timestamp_ms: Option<i64>,
    /// The group that failed.
    pub group: String,
    /// The handler that failed (empty when no handler could take the record).
    pub handler: String,
    /// First failure (RFC 3339).
    pub first_failure: String,
    /// Last failure (RFC 3339).
    pub last_failure: String,
    /// Whether the entry was replayed already.
    pub replayed: bool,
    /// Set when the original was too large to copy whole: its value's size. The entry then
    /// has no value and no original headers; the original is at `topic`/`original_partition`/
    /// `original_offset`.
    pub value_omitted: Option<usize>,
}

/// Which entries to look at.
#[derive(Debug, Clone, Default)]
pub struct DlqFilter {
    /// Only entries of this group (wire name).
    pub group: Option<String>,
    /// Only entries of this kind.
    pub kind: Option<String>,
    /// Only entries of this handler.
    pub handler: Option<String>,
    /// Only entries of this event type.
    pub event_type: Option<String>,
    /// Include entries that were replayed already.
    pub include_replayed: bool,
}

impl DlqFilter {
    fn accepts(&self, d: &DeadLetter) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        (self.include_replayed || !d.replayed)
            && eq(&self.group, &d.group)
            && eq(&self.kind, &d.kind)
            && eq(&self.handler, &d.handler)
            && eq(&self.event_type, d.event_type.as_deref().unwrap_or_default())
    }
}

/// Which entries to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// One entry.
    One {
        /// Partition in the dead letter topic.
        partition: i32,
        /// Offset in the dead letter topic.
        offset: i64,
    },
    /// Entries of one partition from `from` to `to`, inclusive.
    Range {
        /// Partition in the dead letter topic.
        partition: i32,
        /// First offset.
        from: i64,
        /// Last offset.
        to: i64,
    },
    /// Every entry the filter accepts.
    All,
}

impl Selection {
    fn contains(&self, d: &DeadLetter) -> bool {
        match *self {
            Selection::One { partition, offset } => d.partition == partition && d.offset == offset,
            Selection::Range { partition, from, to } => d.partition == partition && (from..=to).contains(&d.offset),
            Selection::All => true,
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ReplayReport {
    /// Entries sent back to their topic.
    pub replayed: usize,
    /// Selected entries skipped because they were replayed before.
    pub already_replayed: usize,
    /// Selected entries that cannot be replayed: `dlq-topic/partition/offset` and why.
    pub skipped: Vec<(String, String)>,
}

/// Reads and replays dead letter topics.
#[derive(Debug, Clone)]
pub struct DeadLetterQueue {
    config: Config,
    publisher: Publisher,
}

impl DeadLetterQueue {
    /// Dead letter queues of `config`'s cluster.
    pub fn new(config: &Config) -> Result<Self> {
        Ok(DeadLetterQueue { config: config.clone(), publisher: Publisher::new(config)? })
    }

    pub(crate) fn with_publisher(config: &Config, publisher: Publisher) -> Self {
        DeadLetterQueue { config: config.clone(), publisher }
    }

    /// The dead letter topic of `topic` (a topic name as events declare it, without prefix).
    pub fn dlq_topic(&self, topic: &str) -> String {
        self.config.dlq_topic(&self.config.topic_name(topic))
    }

    /// The entries of `topic`'s dead letter queue that `filter` accepts, oldest first per partition.
    pub async fn list(&self, topic: &str, filter: &DlqFilter) -> Result<Vec<DeadLetter>> {
        let all = self.read(topic).await?;
        Ok(all.into_iter().filter(|d| filter.accepts(d)).collect())
    }

    /// How many entries `filter` accepts.
    pub async fn count(&self, topic: &str, filter: &DlqFilter) -> Result<usize> {
        Ok(self.list(topic, filter).await?.len())
    }

    /// Sends the selected entries back to their original topic, for the group and handler
    /// that failed, with their original key, value and headers (event id and correlation id
    /// included) and without the dead-letter headers. Entries replayed before are skipped.
    pub async fn replay(&self, topic: &str, selection: Selection, filter: &DlqFilter) -> Result<ReplayReport> {
        let dlq_topic = self.dlq_topic(topic);
        let filter = DlqFilter { include_replayed: true, ..filter.clone() };
        let mut report = ReplayReport::default();
        for d in self.list(topic, &filter).await?.into_iter().filter(|d| selection.contains(d)) {
            if d.replayed {
                report.already_replayed += 1;
                continue;
            }
            if let Some(size) = d.value_omitted {
                let why = format!(
                    "the original ({size} bytes) was too large to keep in the dead letter queue; it is at {}[{}]@{}",
                    d.topic, d.original_partition, d.original_offset
                );
                report.skipped.push((format!("{}/{}/{}", d.dlq_topic, d.partition, d.offset), why));
                continue;
            }
            let mut out = OwnedHeaders::new_with_capacity(d.headers.len() + 3);
            for (k, v) in d.headers.iter().filter(|(k, _)| !k.starts_with("eventkit-replay-")) {
                out = out.insert(Header { key: k, value: Some(v.as_slice()) });
            }
            let replay_of = format!("{}/{}/{}", d.dlq_topic, d.partition, d.offset);
            out = out.insert(Header { key: headers::REPLAY_OF, value: Some(replay_of.as_str()) });
            out = out.insert(Header { key: headers::REPLAY_GROUP, value: Some(d.group.as_str()) });
            if !d.handler.is_empty() {
                out = out.insert(Header { key: headers::REPLAY_HANDLER, value: Some(d.handler.as_str()) });
            }
            self.publisher.send_headers(&d.topic, d.key.as_deref(), None, Some(&d.value), out).await?;
            let offset = d.offset.to_string();
            let marker = OwnedHeaders::new().insert(Header { key: headers::REPLAYED, value: Some(offset.as_str()) });
            self.publisher.send_headers(&dlq_topic, d.key.as_deref(), Some(d.partition), Some(&[]), marker).await?;
            report.replayed += 1;
        }
        Ok(report)
    }

    async fn read(&self, topic: &str) -> Result<Vec<DeadLetter>> {
        let dlq_topic = self.dlq_topic(topic);
        let mut client = crate::kafka::client_config(&self.config)?;
        client.set("group.id", "eventkit-dlq-reader").set("enable.auto.commit", "false");
        crate::kafka::apply_overrides(&mut client, &self.config);
        tokio::task::spawn_blocking(move || read_topic(client, &dlq_topic))
            .await
            .map_err(|e| Error::msg(format!("dead letter reader failed: {e}")))?
    }
}

fn read_topic(client: rdkafka::ClientConfig, dlq_topic: &str) -> Result<Vec<DeadLetter>> {
    let consumer: BaseConsumer = client.create()?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(dlq_topic), timeout)?;
    let Some(topic) = metadata.topics().iter().find(|t| t.name() == dlq_topic && t.error().is_none()) else {
        return Ok(Vec::new());
    };
    let mut tpl = TopicPartitionList::new();
    let mut remaining = HashSet::new();
    for p in topic.partitions() {
        let (low, high) = consumer.fetch_watermarks(dlq_topic, p.id(), timeout)?;
        if high > low {
            tpl.add_partition_offset(dlq_topic, p.id(), Offset::Offset(low))?;
            remaining.insert((p.id(), high));
        }
    }
    if remaining.is_empty() {
        return Ok(Vec::new());
    }
    consumer.assign(&tpl)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (mut entries, mut replayed) = (Vec::new(), HashSet::new());
    while !remaining.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(Error::msg(format!("timed out reading {dlq_topic}")));
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let m = message?;
        remaining.retain(|&(p, high)| !(p == m.partition() && m.offset() + 1 >= high));
        let mut all: Vec<(String, Vec<u8>)> = Vec::new();
        if let Some(h) = m.headers() {
            all = h.iter().map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec())).collect();
        }
        let get = |k: &str| all.iter().find(|(n, _)| n == k).map(|(_, v)| String::from_utf8_lossy(v).into_owned());
        if let Some(o) = get(headers::REPLAYED) {
            if let Ok(o) = o.parse::<i64>() {
                replayed.insert((m.partition(), o));
            }
            continue;
        }
        let num = |k: &str| get(k).and_then(|v| v.parse::<i64>().ok());
        let original: Vec<(String, Vec<u8>)> = all.iter().filter(|(k, _)| !k.starts_with(headers::PREFIX)).cloned().collect();
        let (event_type, event_id) = crate::wire::peek_type_and_id(&original, m.payload().unwrap_or_default());
        let value_omitted = get(headers::OMITTED).and_then(|o| o.split_once(';').and_then(|(_, size)| size.parse().ok()));
        entries.push(DeadLetter {
            dlq_topic: dlq_topic.to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().unwrap_or_default().to_vec(),
            event_id,
            event_type,
            error: get(headers::ERROR).unwrap_or_default(),
            kind: get(headers::KIND).unwrap_or_default(),
            attempts: num(headers::ATTEMPTS).unwrap_or_default() as u32,
            topic: get(headers::TOPIC).unwrap_or_default(),
            original_partition: num(headers::PARTITION).unwrap_or_default() as i32,
            original_offset: num(headers::OFFSET).unwrap_or_default(),
            timestamp_ms: num(headers::TIMESTAMP),
            group: get(headers::GROUP).unwrap_or_default(),
            handler: get(headers::HANDLER).unwrap_or_default(),
            first_failure: get(headers::FIRST_FAILURE).unwrap_or_default(),
            last_failure: get(headers::LAST_FAILURE).unwrap_or_default(),
            headers: original,
            replayed: false,
            value_omitted,
        });
    }
    for e in &mut entries {
        e.replayed = replayed.contains(&(e.partition, e.offset));
    }
    Ok(entries)
}
