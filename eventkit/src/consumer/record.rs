//! A record copied out of librdkafka's buffers: what a worker needs to handle it, and what
//! the dead letter queue needs to copy it untouched (null key, value and header values stay null).

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message};
#[cfg(test)]
use rdkafka::message::OwnedHeaders;

use crate::context::RecordInfo;
use crate::registry::TopicRoute;

/// Index of a partition in the group's partition table.
pub(crate) type Slot = u32;

/// Which assignment of a partition a record belongs to; records of an earlier assignment
/// (revoked since) no longer move its offsets.
pub(crate) type Epoch = u64;

/// One record and its retry state.
pub(crate) struct Record {
    pub slot: Slot,
    pub epoch: Epoch,
    pub route: Arc<TopicRoute>,
    pub info: RecordInfo,
    pub headers: RecordHeaders,
    pub value: Option<Bytes>,
    /// Failed attempts so far.
    pub attempts: u32,
    pub first_failure: Option<DateTime<Utc>>,
    /// Handlers done with the record (succeeded or dead-lettered), not to be run again.
    pub settled_handlers: Vec<&'static str>,
}

impl Record {
    pub(crate) fn copy(m: &BorrowedMessage<'_>, slot: Slot, epoch: Epoch, route: &Arc<TopicRoute>) -> Self {
        Record {
            slot,
            epoch,
            info: RecordInfo {
                topic: route.topic.clone(),
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(Bytes::copy_from_slice),
                timestamp_ms: m.timestamp().to_millis(),
            },
            route: route.clone(),
            headers: m.headers().map(RecordHeaders::copy).unwrap_or_default(),
            value: m.payload().map(Bytes::copy_from_slice),
            attempts: 0,
            first_failure: None,
            settled_handlers: Vec::new(),
        }
    }

    pub(crate) fn offset(&self) -> i64 {
        self.info.offset
    }

    /// The record's value (empty for a null value).
    pub(crate) fn value_bytes(&self) -> Bytes {
        self.value.clone().unwrap_or_default()
    }

    /// Bytes this record holds, for the memory bound.
    pub(crate) fn size(&self) -> usize {
        const OVERHEAD: usize = std::mem::size_of::<Record>() + 64;
        OVERHEAD + self.value.as_ref().map_or(0, Bytes::len) + self.info.key.as_ref().map_or(0, Bytes::len) + self.headers.size()
    }

    /// `topic[partition]@offset`, for logs.
    pub(crate) fn position(&self) -> Position<'_> {
        Position(&self.info)
    }

    /// The first value of a replay-address header, as text.
    pub(crate) fn replay_header(&self, key: &str) -> Option<String> {
        if !self.headers.has_replay_address() {
            return None;
        }
        self.header_text(key)
    }

    /// The first value of a header, as text.
    pub(crate) fn header_text(&self, key: &str) -> Option<String> {
        self.headers.iter().find(|h| h.key == key).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// Formats as `topic[partition]@offset` only when a log line is written.
pub(crate) struct Position<'a>(&'a RecordInfo);

impl std::fmt::Display for Position<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]@{}", self.0.topic, self.0.partition, self.0.offset)
    }
}

/// A record's headers: names in one string and values in one buffer, with an index. Null
/// values stay null.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecordHeaders {
    names: String,
    values: Vec<u8>,
    /// Per header: end of its name in `names`, end of its value in `values` (a null value
    /// takes no bytes), and whether the value is null.
    index: Vec<(u32, u32, bool)>,
    /// Whether any header is a replay address (`eventkit-replay-*`).
    replay: bool,
}

impl RecordHeaders {
    fn copy<H: Headers>(headers: &H) -> Self {
        let count = headers.count();
        let mut out = RecordHeaders { names: String::with_capacity(count * 16), values: Vec::with_capacity(count * 32), index: Vec::with_capacity(count), replay: false };
        for h in headers.iter() {
            out.replay |= h.key.starts_with(REPLAY_PREFIX);
            out.names.push_str(h.key);
            out.values.extend_from_slice(h.value.unwrap_or_default());
            out.index.push((out.names.len() as u32, out.values.len() as u32, h.value.is_none()));
        }
        out
    }

    fn size(&self) -> usize {
        self.names.capacity() + self.values.capacity() + self.index.capacity() * std::mem::size_of::<(u32, u32, bool)>()
    }

    /// Whether any header addresses a replay.
    pub(crate) fn has_replay_address(&self) -> bool {
        self.replay
    }

    #[cfg(test)]
    fn to_owned_headers(&self) -> OwnedHeaders {
        let mut out = OwnedHeaders::new_with_capacity(self.count());
        for h in self.iter() {
            out = out.insert(h);
        }
        out
    }
}

/// Prefix of the headers that address a replayed record to a group and handler.
const REPLAY_PREFIX: &str = "eventkit-replay-";

impl Headers for RecordHeaders {
    fn count(&self) -> usize {
        self.index.len()
    }

    fn try_get(&self, idx: usize) -> Option<Header<'_, &[u8]>> {
        let (name_end, value_end, null) = *self.index.get(idx)?;
        let (name_start, value_start) = match idx.checked_sub(1) {
            Some(prev) => (self.index[prev].0, self.index[prev].1),
            None => (0, 0),
        };
        let key = &self.names[name_start as usize..name_end as usize];
        let value = (!null).then(|| &self.values[value_start as usize..value_end as usize]);
        Some(Header { key, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_keep_order_duplicates_and_nulls() {
        let original = OwnedHeaders::new()
            .insert(Header { key: "a", value: Some("1") })
            .insert(Header { key: "n", value: None::<&[u8]> })
            .insert(Header { key: "a", value: Some("") })
            .insert(Header { key: "", value: Some("x") });
        let copy = RecordHeaders::copy(&original);
        let seen: Vec<(&str, Option<&[u8]>)> = copy.iter().map(|h| (h.key, h.value)).collect();
        assert_eq!(seen, [("a", Some(&b"1"[..])), ("n", None), ("a", Some(&b""[..])), ("", Some(&b"x"[..]))]);
        let back = copy.to_owned_headers();
        let again: Vec<(&str, Option<&[u8]>)> = back.iter().map(|h| (h.key, h.value)).collect();
        assert_eq!(again, seen);
    }
}
