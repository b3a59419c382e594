//! The dead letter queue: records that could not be handled, kept with why, and replayed.
//!
//! A dead-lettered record is the original record (key, value and headers untouched) on
//! `{topic}{suffix}` (default `.dlq`) with `eventkit-dlq-*` headers added. Replaying sends it
//! back to its topic without those headers, addressed to the group (and handler) that failed,
//! so other groups do not see it twice; a marker in the companion topic `{dlq topic}.replayed`
//! (compacted, keyed `partition:offset`) makes a second replay of the same entry a no-op. The
//! dead letter topic holds dead letters only, so a monitor that counts its records counts
//! failures. Markers that earlier versions wrote into the dead letter topic are still read.
//!
//! Reading streams the topic: entries are visited one at a time up to each partition's end
//! as the broker reports it (transaction markers included), with a deadline on progress.

mod reader;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use serde::Serialize;

use crate::core::config::Config;
use crate::core::error::{Error, Result};
use crate::flows::publish::Publisher;
use crate::flows::registry::Registry;
use reader::{Entry, Reader};

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

pub use crate::core::error::kinds;

#[cfg(any(feature = "admin", feature = "cli"))]
pub(crate) mod listing;


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
    record: &crate::core::envelope::RecordInfo,
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
    /// The original value (`None`: a null value, e.g. a tombstone).
    pub value: Option<Vec<u8>>,
    /// The original headers (without the dead-letter headers); `None` values are null.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// The event id, when the record has one (in any wire format).
    pub event_id: Option<String>,
    /// The event type, when the record has one (in any wire format).
    pub event_type: Option<String>,
    /// The error message.
    pub error: String,
    /// The error kind (see [`kinds`]; [`kinds::FOREIGN`] for records eventkit did not write).
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

impl DeadLetter {
    /// `dlq-topic/partition/offset`.
    pub fn address(&self) -> String {
        format!("{}/{}/{}", self.dlq_topic, self.partition, self.offset)
    }

    /// Why the entry cannot be replayed as it is, if it cannot.
    pub fn not_replayable(&self) -> Option<String> {
        if self.kind == kinds::FOREIGN {
            return Some("not an eventkit dead letter (no `eventkit-dlq-topic` header): there is nowhere to send it back".into());
        }
        self.value_omitted.map(|size| {
            format!(
                "the original ({size} bytes) was too large to keep in the dead letter queue; it is at {}[{}]@{}",
                self.topic, self.original_partition, self.original_offset
            )
        })
    }
}

/// Which entries to look at.
#[derive(Debug, Clone, Default)]
pub struct DlqFilter {
    /// Only entries of this group (wire name).
    pub group: Option<String>,
    /// Only entries of this kind (one of [`kinds::ALL`]).
    pub kind: Option<String>,
    /// Only entries of this handler.
    pub handler: Option<String>,
    /// Only entries of this event type.
    pub event_type: Option<String>,
    /// Include entries that were replayed already.
    pub include_replayed: bool,
}

impl DlqFilter {
    #[cfg_attr(not(any(feature = "admin", feature = "cli")), allow(dead_code))]
    /// A checked filter from what a person names: the group as code names it (without prefix).
    pub(crate) fn named(config: &Config, group: Option<&str>, kind: Option<String>, handler: Option<String>, event_type: Option<String>, include_replayed: bool) -> Result<Self> {
        let filter = DlqFilter { group: group.map(|g| config.group_for(Some(g))), kind, handler, event_type, include_replayed };
        filter.check()?;
        Ok(filter)
    }

    fn accepts(&self, d: &DeadLetter) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        (self.include_replayed || !d.replayed)
            && eq(&self.group, &d.group)
            && eq(&self.kind, &d.kind)
            && eq(&self.handler, &d.handler)
            && eq(&self.event_type, d.event_type.as_deref().unwrap_or_default())
    }

    /// Rejects a kind that no entry can have (a misspelling would match nothing).
    pub fn check(&self) -> Result<()> {
        match &self.kind {
            Some(kind) if !kinds::ALL.contains(&kind.as_str()) => {
                Err(Error::Usage(format!("unknown kind `{kind}`: expected one of {}", kinds::ALL.join(", "))))
            }
            _ => Ok(()),
        }
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

/// Where replayed records go.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Send every selected entry to this topic (on the wire) instead of its original topic.
    pub to: Option<String>,
    /// Send even when the destination topic does not exist (the broker may then create it).
    pub create_topic: bool,
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ReplayReport {
    /// Entries sent back to their topic.
    pub replayed: usize,
    /// Selected entries skipped because they were replayed before.
    pub already_replayed: usize,
    /// Selected entries that could not be replayed: `dlq-topic/partition/offset` and why.
    pub skipped: Vec<(String, String)>,
}

/// Reads and replays dead letter topics.
#[derive(Debug, Clone)]
pub struct DeadLetterQueue {
    config: Config,
    publisher: Publisher,
    registry: Option<Registry>,
}

impl DeadLetterQueue {
    /// Dead letter queues of `config`'s cluster.
    pub fn new(config: &Config) -> Result<Self> {
        Ok(DeadLetterQueue { config: config.clone(), publisher: Publisher::with_broker(config, None, Default::default())?, registry: None })
    }

    pub(crate) fn with_publisher(config: &Config, publisher: Publisher) -> Self {
        DeadLetterQueue { config: config.clone(), publisher, registry: None }
    }

    /// Checks replays against an app's handlers: an entry addressed to a handler the app no
    /// longer has is skipped (and reported) instead of being ignored by every consumer.
    pub fn with_registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// The dead letter topic of `topic` (a topic name as events declare it, without prefix).
    pub fn dlq_topic(&self, topic: &str) -> String {
        self.config.dlq_topic(&self.config.topic_name(topic))
    }

    /// Visits the entries of `topic`'s dead letter queue that `filter` accepts, oldest first
    /// per partition, one at a time (memory holds one entry). Returns how many were visited.
    /// Fails when the dead letter topic does not exist.
    pub async fn for_each(&self, topic: &str, filter: &DlqFilter, visit: impl FnMut(DeadLetter) -> Result<()> + Send + 'static) -> Result<usize> {
        filter.check()?;
        let (open, filter) = (self.reader(topic), filter.clone());
        blocking(move || {
            let reader = open()?;
            let replayed = reader.markers(None)?;
            let mut visit = visit;
            let mut n = 0;
            reader.entries(None, None, |d| {
                let d = with_replayed(d, &replayed);
                if filter.accepts(&d) {
                    n += 1;
                    visit(d)?;
                }
                Ok(())
            })?;
            Ok(n)
        })
        .await
    }

    /// The entries of `topic`'s dead letter queue that `filter` accepts, oldest first per partition.
    pub async fn list(&self, topic: &str, filter: &DlqFilter) -> Result<Vec<DeadLetter>> {
        let entries = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = entries.clone();
        self.for_each(topic, filter, move |d| {
            sink.lock().map_err(|_| Error::msg("lock"))?.push(d);
            Ok(())
        })
        .await?;
        let entries = std::mem::take(&mut *entries.lock().map_err(|_| Error::msg("lock"))?);
        Ok(entries)
    }

    /// How many entries `filter` accepts.
    pub async fn count(&self, topic: &str, filter: &DlqFilter) -> Result<usize> {
        self.for_each(topic, filter, |_| Ok(())).await
    }

    /// One entry, read directly. Fails when there is no entry at that position (no such
    /// partition or offset, or a replay marker there).
    pub async fn get(&self, topic: &str, partition: i32, offset: i64) -> Result<DeadLetter> {
        let open = self.reader(topic);
        blocking(move || {
            let reader = open()?;
            let entry = reader.at(partition, offset)?;
            let replayed = reader.markers(Some((partition, offset + 1)))?;
            Ok(with_replayed(entry, &replayed))
        })
        .await
    }

    /// Sends the selected entries back to their original topic, for the group and handler
    /// that failed, with their original key, value and headers (event id and correlation id
    /// included, nulls kept) and without the dead-letter headers. Entries replayed before are
    /// counted as such; entries that cannot be replayed are skipped and reported with why.
    pub async fn replay(&self, topic: &str, selection: Selection, filter: &DlqFilter) -> Result<ReplayReport> {
        self.replay_with(topic, selection, filter, &ReplayOptions::default()).await
    }

    /// [`DeadLetterQueue::replay`] with a destination topic or topic creation.
    pub async fn replay_with(&self, topic: &str, selection: Selection, filter: &DlqFilter, options: &ReplayOptions) -> Result<ReplayReport> {
        filter.check()?;
        let filter = DlqFilter { include_replayed: true, ..filter.clone() };
        let selected: Vec<DeadLetter> = match selection {
            Selection::One { partition, offset } => {
                let d = self.get(topic, partition, offset).await?;
                if !filter.accepts(&d) {
                    return Err(Error::NotFound(format!("the entry at {partition}:{offset} does not match the filters")));
                }
                vec![d]
            }
            Selection::Range { partition, from, to } => {
                if from > to {
                    return Err(Error::Usage(format!("the range {partition}:{from}-{to} is reversed")));
                }
                let (open, filter) = (self.reader(topic), filter.clone());
                blocking(move || {
                    let reader = open()?;
                    let replayed = reader.markers(Some((partition, from)))?;
                    let mut out = Vec::new();
                    reader.entries(Some(partition), Some((from, to)), |d| {
                        let d = with_replayed(d, &replayed);
                        if filter.accepts(&d) {
                            out.push(d);
                        }
                        Ok(())
                    })?;
                    Ok(out)
                })
                .await?
            }
            Selection::All => self.list(topic, &filter).await?,
        };
        let mut report = ReplayReport::default();
        if selected.iter().any(|d| !d.replayed) {
            self.ensure_markers_topic(&self.dlq_topic(topic)).await?;
        }
        let mut exists: HashMap<String, bool> = HashMap::new();
        for d in selected {
            if d.replayed {
                report.already_replayed += 1;
                continue;
            }
            let destination = options.to.clone().unwrap_or_else(|| d.topic.clone());
            let why = match d.not_replayable() {
                Some(why) => Some(why),
                None => self.unknown_handler(&d),
            };
            let why = match why {
                Some(why) => Some(why),
                None if options.create_topic => None,
                None => {
                    let known = match exists.get(&destination) {
                        Some(known) => *known,
                        None => {
                            let known = self.topic_exists(&destination).await?;
                            exists.insert(destination.clone(), known);
                            known
                        }
                    };
                    (!known).then(|| format!("topic `{destination}` does not exist (replay with --create-topic to create it, or --to TOPIC)"))
                }
            };
            if let Some(why) = why {
                report.skipped.push((d.address(), why));
                continue;
            }
            match self.send_back(&d, &destination).await {
                Ok(()) => report.replayed += 1,
                Err(e) => report.skipped.push((d.address(), format!("sending it failed: {e}"))),
            }
        }
        Ok(report)
    }

    /// The handler an entry is addressed to, when this app knows its handlers and has no such one.
    fn unknown_handler(&self, d: &DeadLetter) -> Option<String> {
        let registry = self.registry.as_ref()?;
        (!d.handler.is_empty() && registry.handler(&d.handler).is_none())
            .then(|| format!("it is addressed to handler `{}`, which this app no longer has", d.handler))
    }

    /// Creates the replay markers topic of `dlq_topic` when it is missing (where the cluster
    /// cannot create it, the broker's auto-creation may).
    async fn ensure_markers_topic(&self, dlq_topic: &str) -> Result<()> {
        let name = markers_topic(dlq_topic);
        if self.topic_exists(&name).await? {
            return Ok(());
        }
        crate::kafka::topics::create_markers_topic(&self.config, &name).await
    }

    async fn topic_exists(&self, topic: &str) -> Result<bool> {
        let (config, topic) = (self.config.clone(), topic.to_owned());
        blocking(move || reader::topic_exists(&config, &topic)).await
    }

    async fn send_back(&self, d: &DeadLetter, destination: &str) -> Result<()> {
        let mut out = OwnedHeaders::new_with_capacity(d.headers.len() + 3);
        for (k, v) in d.headers.iter().filter(|(k, _)| !k.starts_with("eventkit-replay-")) {
            out = out.insert(Header { key: k, value: v.as_deref() });
        }
        let replay_of = d.address();
        out = out.insert(Header { key: headers::REPLAY_OF, value: Some(replay_of.as_str()) });
        out = out.insert(Header { key: headers::REPLAY_GROUP, value: Some(d.group.as_str()) });
        if !d.handler.is_empty() {
            out = out.insert(Header { key: headers::REPLAY_HANDLER, value: Some(d.handler.as_str()) });
        }
        self.publisher.send_headers(destination, d.key.as_deref(), None, d.value.as_deref(), out).await?;
        let offset = d.offset.to_string();
        let marker = OwnedHeaders::new().insert(Header { key: headers::REPLAYED, value: Some(offset.as_str()) });
        let key = format!("{}:{}", d.partition, d.offset);
        let value = serde_json::json!({ "replayed_at": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true), "to": destination }).to_string();
        self.publisher.send_headers(&markers_topic(&d.dlq_topic), Some(key.as_bytes()), None, Some(value.as_bytes()), marker).await?;
        Ok(())
    }

    /// Opens a reader of `topic`'s dead letter queue (blocking: call it off the async workers).
    fn reader(&self, topic: &str) -> impl FnOnce() -> Result<Reader> + Send + 'static {
        let (config, dlq_topic) = (self.config.clone(), self.dlq_topic(topic));
        move || Reader::new(&config, &dlq_topic)
    }
}

/// The compacted topic that records which entries of `dlq_topic` were replayed.
pub(crate) fn markers_topic(dlq_topic: &str) -> String {
    format!("{dlq_topic}.replayed")
}

fn with_replayed(mut d: DeadLetter, replayed: &HashSet<(i32, i64)>) -> DeadLetter {
    d.replayed = replayed.contains(&(d.partition, d.offset));
    d
}

/// Runs blocking Kafka reads off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::msg(format!("dead letter reader failed: {e}")))?
}

/// An entry of a dead letter topic as read: a dead letter, or a replay marker.
pub(crate) fn parse(dlq_topic: &str, m: &rdkafka::message::BorrowedMessage<'_>) -> Entry {
    use rdkafka::message::Message;
    let all: Vec<(String, Option<Vec<u8>>)> = m.headers().map(|h| h.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect()).unwrap_or_default();
    let get = |k: &str| all.iter().find(|(n, _)| n == k).and_then(|(_, v)| v.as_deref()).map(|v| String::from_utf8_lossy(v).into_owned());
    if let Some(o) = get(headers::REPLAYED) {
        return match o.parse::<i64>() {
            Ok(o) => Entry::Marker(m.partition(), o),
            Err(_) => Entry::Marker(m.partition(), -1),
        };
    }
    let num = |k: &str| get(k).and_then(|v| v.parse::<i64>().ok());
    let original: Vec<(String, Option<Vec<u8>>)> = all.iter().filter(|(k, _)| !k.starts_with(headers::PREFIX)).cloned().collect();
    let plain: Vec<(String, Vec<u8>)> = original.iter().map(|(k, v)| (k.clone(), v.clone().unwrap_or_default())).collect();
    let (event_type, event_id) = crate::wire::peek_type_and_id(&plain, m.payload().unwrap_or_default());
    let topic = get(headers::TOPIC).unwrap_or_default();
    let kind = if topic.is_empty() { kinds::FOREIGN.to_owned() } else { get(headers::KIND).unwrap_or_default() };
    Entry::Letter(Box::new(DeadLetter {
        dlq_topic: dlq_topic.to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        event_id,
        event_type,
        error: get(headers::ERROR).unwrap_or_default(),
        kind,
        attempts: num(headers::ATTEMPTS).unwrap_or_default() as u32,
        topic,
        original_partition: num(headers::PARTITION).unwrap_or_default() as i32,
        original_offset: num(headers::OFFSET).unwrap_or_default(),
        timestamp_ms: num(headers::TIMESTAMP),
        group: get(headers::GROUP).unwrap_or_default(),
        handler: get(headers::HANDLER).unwrap_or_default(),
        first_failure: get(headers::FIRST_FAILURE).unwrap_or_default(),
        last_failure: get(headers::LAST_FAILURE).unwrap_or_default(),
        headers: original,
        replayed: false,
        value_omitted: get(headers::OMITTED).and_then(|o| o.split_once(';').and_then(|(_, size)| size.parse().ok())),
    }))
}
