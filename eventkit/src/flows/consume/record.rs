//! A record copied out of librdkafka's buffers: what a worker needs to handle it, and what
//! the dead letter queue needs to copy it untouched (null key, value and header values stay null).

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message};
#[cfg(test)]
use rdkafka::message::OwnedHeaders;

use crate::flows::context::RecordInfo;
use crate::flows::registry::TopicRoute;

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
    /// Copies a fetched record: key, value and headers go into one buffer (one allocation,
    /// and one more the first time it is shared). A handler that keeps the key or value
    /// `Bytes` keeps that whole buffer (a few hundred bytes for a small event).
    pub(crate) fn copy(m: &BorrowedMessage<'_>, slot: Slot, epoch: Epoch, route: &Arc<TopicRoute>) -> Self {
        let (key, value) = (m.key(), m.payload());
        let (headers, at) = match m.headers() {
            Some(h) => RecordHeaders::copy_after(h, key, value),
            None => RecordHeaders::copy_after(&NoHeaders, key, value),
        };
        let key_end = key.map_or(0, <[u8]>::len);
        let value_end = key_end + value.map_or(0, <[u8]>::len);
        Record {
            slot,
            epoch,
            info: RecordInfo {
                topic: route.topic.clone(),
                partition: m.partition(),
                offset: m.offset(),
                key: key.map(|_| headers.buf.slice(at..at + key_end)),
                timestamp_ms: m.timestamp().to_millis(),
            },
            route: route.clone(),
            value: value.map(|_| headers.buf.slice(at + key_end..at + value_end)),
            headers,
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
        // Key and value are slices of the headers' buffer.
        OVERHEAD + self.headers.size()
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

/// A record's headers, in the buffer that holds the whole record:
/// `[index][key][value][name 1][value 1][name 2][value 2]...`, where the index gives, per
/// header, the end of its name and of its value (absolute, little-endian `u32`s: a Kafka
/// record is at most 2 GiB) and whether the value is null. Names are copied from `&str`s
/// only. Null values stay null.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecordHeaders {
    buf: Bytes,
    /// Bytes allocated for `buf`.
    held: usize,
    count: u32,
    /// Where the first header's name starts.
    start: u32,
    /// Whether any header is a replay address (`eventkit-replay-*`).
    replay: bool,
}

/// Bytes per index entry: name end, value end, null flag.
const ENTRY: usize = 9;

/// A record without headers.
struct NoHeaders;

impl Headers for NoHeaders {
    fn count(&self) -> usize {
        0
    }
    fn try_get(&self, _: usize) -> Option<Header<'_, &[u8]>> {
        None
    }
}

impl RecordHeaders {
    /// Writes the record's buffer: the index, `key`, `value`, then the headers. Returns the
    /// headers and where `key` starts in their buffer.
    fn copy_after<H: Headers>(headers: &H, key: Option<&[u8]>, value: Option<&[u8]>) -> (Self, usize) {
        let count = headers.count();
        let (key, value) = (key.unwrap_or_default(), value.unwrap_or_default());
        let mut buf = Vec::with_capacity(count * (ENTRY + 40) + key.len() + value.len());
        buf.resize(count * ENTRY, 0);
        buf.extend_from_slice(key);
        buf.extend_from_slice(value);
        let start = buf.len() as u32;
        let mut replay = false;
        // Only the headers written count (no zeroed entry, whatever the iterator does).
        let mut written = 0;
        for (i, h) in headers.iter().enumerate().take(count) {
            written = i + 1;
            replay |= h.key.starts_with(REPLAY_PREFIX);
            buf.extend_from_slice(h.key.as_bytes());
            let name_end = buf.len() as u32;
            buf.extend_from_slice(h.value.unwrap_or_default());
            let value_end = buf.len() as u32;
            let entry = &mut buf[i * ENTRY..(i + 1) * ENTRY];
            entry[..4].copy_from_slice(&name_end.to_le_bytes());
            entry[4..8].copy_from_slice(&value_end.to_le_bytes());
            entry[8] = u8::from(h.value.is_none());
        }
        // What the buffer holds in memory (its capacity) is what counts against the bound.
        let held = buf.capacity();
        (RecordHeaders { buf: buf.into(), held, count: written as u32, start, replay }, count * ENTRY)
    }

    #[cfg(test)]
    fn copy<H: Headers>(headers: &H) -> Self {
        Self::copy_after(headers, None, None).0
    }

    /// Bytes the record's buffer holds in memory (key and value included).
    fn size(&self) -> usize {
        self.held
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
        self.count as usize
    }

    fn try_get(&self, idx: usize) -> Option<Header<'_, &[u8]>> {
        if idx >= self.count as usize {
            return None;
        }
        let at = |i: usize, field: usize| {
            let b = &self.buf[i * ENTRY + field..i * ENTRY + field + 4];
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
        };
        let name_start = match idx.checked_sub(1) {
            Some(prev) => at(prev, 4),
            None => self.start as usize,
        };
        let (name_end, value_end) = (at(idx, 0), at(idx, 4));
        // SAFETY: `copy_after` wrote these bytes from a `&str` (a header name), and the buffer
        // is never written again.
        let key = unsafe { std::str::from_utf8_unchecked(&self.buf[name_start..name_end]) };
        let value = (self.buf[idx * ENTRY + 8] == 0).then(|| &self.buf[name_end..value_end]);
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

    #[test]
    fn key_value_and_headers_share_one_buffer() {
        let original = OwnedHeaders::new().insert(Header { key: "ce_type", value: Some("T") });
        let (headers, at) = RecordHeaders::copy_after(&original, Some(b"k1"), Some(b"{\"a\":1}"));
        let all = &headers.buf;
        assert_eq!((&all[at..at + 2], &all[at + 2..at + 9]), (&b"k1"[..], &b"{\"a\":1}"[..]));
        assert!(headers.size() >= all.len(), "the bound counts what the buffer holds");
        let h = headers.iter().next().unwrap();
        assert_eq!((h.key, h.value, headers.count()), ("ce_type", Some(&b"T"[..]), 1));
    }
}
