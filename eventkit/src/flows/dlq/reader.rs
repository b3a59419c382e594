//! Reading a dead letter topic as a stream: each partition from a start offset up to its end
//! as the broker reported it when reading began. A partition ends at its last record or when
//! librdkafka reports its end (so a transaction marker as the last offset does not leave the
//! reader waiting). Reading fails when nothing arrives for
//! [`crate::kafka::offsets::PROGRESS_TIMEOUT`], not after a fixed time: a large queue takes as
//! long as it takes.

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::kafka::KitContext;
use rdkafka::types::RDKafkaRespErr;

use super::{parse, DeadLetter};
use crate::core::config::Config;
use crate::core::error::{Error, Result};

/// What a dead letter topic holds: entries and replay markers.
pub(crate) enum Entry {
    Letter(Box<DeadLetter>),
    /// A marker: the entry at this partition and offset was replayed.
    Marker(i32, i64),
}

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// A consumer of one dead letter topic, outside any group.
pub(crate) struct Reader {
    consumer: BaseConsumer<KitContext>,
    topic: String,
    /// Per partition: first and one-past-last offset when reading began.
    partitions: Vec<(i32, i64, i64)>,
    config: Config,
}

impl Reader {
    /// Opens `dlq_topic`. Fails when it does not exist or its metadata cannot be read.
    pub(crate) fn new(config: &Config, dlq_topic: &str) -> Result<Self> {
        Self::open(config, dlq_topic)?.ok_or_else(|| Error::NotFound(format!("dead letter topic `{dlq_topic}` does not exist")))
    }

    /// Opens `topic`; `None` when it does not exist.
    fn open(config: &Config, dlq_topic: &str) -> Result<Option<Self>> {
        let consumer = crate::kafka::offsets::reader(config, "dlq-reader")?;
        let metadata = consumer.fetch_metadata(Some(dlq_topic), METADATA_TIMEOUT)?;
        let topic = metadata.topics().iter().find(|t| t.name() == dlq_topic);
        match topic.map(|t| t.error()) {
            None | Some(Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)) => return Ok(None),
            Some(Some(e)) => return Err(Error::msg(format!("cannot read the metadata of `{dlq_topic}`: {e:?}"))),
            Some(None) => {}
        }
        let mut partitions = Vec::new();
        for p in topic.into_iter().flat_map(|t| t.partitions()) {
            let (low, high) = crate::kafka::offsets::watermarks(&consumer, dlq_topic, p.id())?;
            partitions.push((p.id(), low, high));
        }
        partitions.sort_unstable();
        Ok(Some(Reader { consumer, topic: dlq_topic.to_owned(), partitions, config: config.clone() }))
    }

    fn partition(&self, partition: i32) -> Result<(i64, i64)> {
        self.partitions
            .iter()
            .find(|p| p.0 == partition)
            .map(|p| (p.1, p.2))
            .ok_or_else(|| Error::NotFound(format!("dead letter topic `{}` has no partition {partition}", self.topic)))
    }

    /// The replay markers of every partition, or of one from an offset on: those in the
    /// companion topic, and those earlier versions wrote into the dead letter topic itself.
    pub(crate) fn markers(&self, from: Option<(i32, i64)>) -> Result<HashSet<(i32, i64)>> {
        let mut out = HashSet::new();
        if let Some(companion) = Reader::open(&self.config, &super::markers_topic(&self.topic))? {
            let starts = companion.partitions.clone();
            companion.scan_messages(starts, |m| {
                use rdkafka::message::Message;
                let marker = m.key().and_then(|k| std::str::from_utf8(k).ok()).and_then(|k| k.split_once(':')).and_then(|(p, o)| Some((p.parse().ok()?, o.parse().ok()?)));
                // `from` is where in-topic markers can be (after their entry); companion markers
                // are filtered by partition only.
                if let Some((p, o)) = marker {
                    if from.is_none_or(|(fp, _)| p == fp) {
                        out.insert((p, o));
                    }
                }
                Ok(())
            })?;
        }
        let starts = match from {
            Some((p, offset)) => {
                let (low, high) = self.partition(p)?;
                vec![(p, offset.max(low), high)]
            }
            None => self.partitions.clone(),
        };
        self.scan(starts, |entry| {
            if let Entry::Marker(p, o) = entry {
                out.insert((p, o));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Visits the entries (not the markers) of every partition or of one, optionally only
    /// those from `range.0` to `range.1` inclusive.
    pub(crate) fn entries(&self, partition: Option<i32>, range: Option<(i64, i64)>, mut visit: impl FnMut(DeadLetter) -> Result<()>) -> Result<()> {
        let mut starts = Vec::new();
        for &(p, low, high) in &self.partitions {
            if partition.is_some_and(|only| only != p) {
                continue;
            }
            let (from, end) = match range {
                Some((from, to)) => (from.max(low), high.min(to.saturating_add(1))),
                None => (low, high),
            };
            starts.push((p, from, end));
        }
        if let Some(p) = partition {
            self.partition(p)?;
        }
        self.scan(starts, |entry| match entry {
            Entry::Letter(d) => visit(*d),
            Entry::Marker(..) => Ok(()),
        })
    }

    /// The entry at exactly this position.
    pub(crate) fn at(&self, partition: i32, offset: i64) -> Result<DeadLetter> {
        let (low, high) = self.partition(partition)?;
        let missing = || Error::NotFound(format!("no entry at {partition}:{offset} in `{}` (partition {partition} holds offsets {low}..{high})", self.topic));
        if offset < low || offset >= high {
            return Err(missing());
        }
        let mut found = None;
        self.scan(vec![(partition, offset, offset + 1)], |entry| {
            found = Some(entry);
            Ok(())
        })?;
        match found {
            Some(Entry::Letter(d)) if d.offset == offset => Ok(*d),
            Some(Entry::Marker(..)) => Err(Error::NotFound(format!("{partition}:{offset} in `{}` is a replay marker, not an entry", self.topic))),
            _ => Err(missing()),
        }
    }

    /// Reads each `(partition, from, end)` from `from` up to `end` (exclusive) or the
    /// partition's end, whichever comes first.
    fn scan(&self, starts: Vec<(i32, i64, i64)>, mut visit: impl FnMut(Entry) -> Result<()>) -> Result<()> {
        self.scan_messages(starts, |m| visit(parse(&self.topic, m)))
    }

    /// [`Reader::scan`] over the raw records.
    fn scan_messages(&self, starts: Vec<(i32, i64, i64)>, mut visit: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> Result<()>) -> Result<()> {
        crate::kafka::offsets::read_range(&self.consumer, &self.topic, &starts, |m| visit(m).map(|()| true))
    }
}

/// Whether `topic` exists.
pub(crate) fn topic_exists(config: &Config, topic: &str) -> Result<bool> {
    let mut client = crate::kafka::client_config(config)?;
    crate::kafka::apply_overrides(&mut client, config, crate::kafka::Client::Admin);
    let consumer: BaseConsumer<KitContext> = client.create_with_context(KitContext)?;
    let metadata = consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT)?;
    Ok(metadata.topics().iter().any(|t| t.name() == topic && t.error().is_none()))
}
