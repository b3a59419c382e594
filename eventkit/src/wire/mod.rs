//! Wire formats: how an event and its metadata become a Kafka record, and back.
//!
//! - [`WireFormat::Binary`] (default): CloudEvents 1.0 Kafka binding, binary content mode;
//!   attributes in `ce_*` headers, the event as JSON in the value.
//! - [`WireFormat::Structured`]: CloudEvents structured content mode; the whole event as
//!   `application/cloudevents+json` in the value.
//! - [`WireFormat::Legacy`]: a JSON body envelope `{"metadata": {...}, "payload": {...}}`
//!   as used by existing Python services.
//!
//! Consumers read whichever format a record carries: structured by its content type, binary
//! by its `ce_type` header, legacy on topics declared legacy; a record with no type
//! information on a topic that carries exactly one event type is that type.

mod legacy;
mod structured;

use std::str::FromStr;

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use rdkafka::message::{Header, Headers, OwnedHeaders};

use crate::context::RecordInfo;
use crate::envelope::{headers, Metadata};
use crate::error::{Error, Result};

/// The record layout of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WireFormat {
    /// CloudEvents binary content mode (the default).
    #[default]
    Binary,
    /// CloudEvents structured content mode (`application/cloudevents+json`).
    Structured,
    /// JSON body envelope `{"metadata": {...}, "payload": {...}}`.
    Legacy,
    /// Plain JSON without metadata (only read, never written).
    Untyped,
}

impl WireFormat {
    /// The format's name: `binary`, `structured`, `legacy` or `untyped`.
    pub fn as_str(self) -> &'static str {
        match self {
            WireFormat::Binary => "binary",
            WireFormat::Structured => "structured",
            WireFormat::Legacy => "legacy",
            WireFormat::Untyped => "untyped",
        }
    }
}

impl std::fmt::Display for WireFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WireFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "binary" => Ok(WireFormat::Binary),
            "structured" => Ok(WireFormat::Structured),
            "legacy" => Ok(WireFormat::Legacy),
            other => Err(Error::Config(format!("unknown wire format {other:?}: expected binary, structured or legacy"))),
        }
    }
}

/// A record's headers and value.
pub(crate) struct Encoded {
    pub headers: OwnedHeaders,
    pub value: Vec<u8>,
}

/// Writes `metadata` and the JSON `data` in `format`.
pub(crate) fn encode(format: WireFormat, metadata: &Metadata, data: &[u8]) -> Result<Encoded> {
    match format {
        WireFormat::Binary | WireFormat::Untyped => Ok(Encoded { headers: metadata.to_headers(), value: data.to_vec() }),
        WireFormat::Structured => {
            let value = structured::encode(metadata, data)?;
            Ok(Encoded { headers: content_type(structured::CONTENT_TYPE, &metadata.other_headers), value })
        }
        WireFormat::Legacy => {
            let value = legacy::encode(metadata, data)?;
            Ok(Encoded { headers: content_type(crate::envelope::JSON, &metadata.other_headers), value })
        }
    }
}

fn content_type(value: &str, other: &[(String, Vec<u8>)]) -> OwnedHeaders {
    let mut out = OwnedHeaders::new_with_capacity(1 + other.len()).insert(Header { key: headers::CONTENT_TYPE, value: Some(value) });
    for (key, value) in other {
        out = out.insert(Header { key, value: Some(value.as_slice()) });
    }
    out
}

/// How structured-mode content types begin (`application/cloudevents+json`, ...).
const CE_CONTENT_PREFIX: &[u8] = b"application/cloudevents";

/// What a consumer knows about a topic before reading a record from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TopicHints {
    /// Records without CloudEvents headers carry the legacy body envelope.
    pub legacy: bool,
    /// The type to assume for records without type information: the topic's only event
    /// type, or `""` (untyped) where catch-all handlers take such records.
    pub single_type: Option<&'static str>,
}

/// An event read from a record.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub metadata: Metadata,
    pub data: Bytes,
    pub format: WireFormat,
}

/// Reads a record in whichever format it carries. `Ok(None)`: the record carries no type
/// information and the topic has no single event type to assume.
pub(crate) fn decode<H: Headers>(record_headers: &H, value: &Bytes, record: &RecordInfo, hints: &TopicHints) -> Result<Option<Decoded>> {
    let content_type = record_headers.iter().find(|h| h.key.eq_ignore_ascii_case(headers::CONTENT_TYPE)).and_then(|h| h.value);
    let structured = content_type.is_some_and(|c| c.len() >= CE_CONTENT_PREFIX.len() && c[..CE_CONTENT_PREFIX.len()].eq_ignore_ascii_case(CE_CONTENT_PREFIX));
    let content_type = || content_type.map(|v| String::from_utf8_lossy(v).to_ascii_lowercase());
    if structured {
        let (metadata, data) = structured::decode(value, other_headers(record_headers))?;
        return Ok(Some(Decoded { metadata, data: data.into(), format: WireFormat::Structured }));
    }
    if let Some(metadata) = Metadata::from_headers(record_headers)? {
        return Ok(Some(Decoded { metadata, data: value.clone(), format: WireFormat::Binary }));
    }
    if hints.legacy {
        let (mut metadata, data) = legacy::decode(value, record)?;
        metadata.content_type = content_type();
        metadata.other_headers = other_headers(record_headers);
        return Ok(Some(Decoded { metadata, data: data.into(), format: WireFormat::Legacy }));
    }
    let Some(event_type) = hints.single_type else { return Ok(None) };
    let mut metadata = Metadata::new(event_type, "");
    metadata.id = synthetic_id(record);
    metadata.time = record.timestamp_ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single());
    metadata.content_type = content_type();
    metadata.other_headers = other_headers(record_headers);
    Ok(Some(Decoded { metadata, data: value.clone(), format: WireFormat::Untyped }))
}

/// A stable id for a record that has none: the same on every redelivery.
pub(crate) fn synthetic_id(record: &RecordInfo) -> String {
    format!("{}/{}/{}", record.topic, record.partition, record.offset)
}

/// An attribute value as text: strings as they are, anything else as JSON.
fn json_text(value: serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

fn other_headers<H: Headers>(record_headers: &H) -> Vec<(String, Vec<u8>)> {
    record_headers
        .iter()
        .filter(|h| !h.key.eq_ignore_ascii_case(headers::CONTENT_TYPE) && !h.key.starts_with(headers::CE_PREFIX))
        .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> RecordInfo {
        RecordInfo { topic: "t".into(), partition: 1, offset: 7, key: None, timestamp_ms: Some(1_700_000_000_000) }
    }

    fn sample() -> Metadata {
        let mut m = Metadata::new("OrderPlaced", "shop");
        m.correlation_id = Some("c".into());
        m.tenant_id = Some("acme".into());
        m.schema_version = Some(2);
        m.subject = Some("order-1".into());
        m.extensions.insert("priority".into(), "high".into());
        m
    }

    #[test]
    fn every_format_round_trips_metadata_and_data() {
        let data = br#"{"order_id":"o-1","amount":5}"#;
        for format in [WireFormat::Binary, WireFormat::Structured, WireFormat::Legacy] {
            let m = sample();
            let encoded = encode(format, &m, data).unwrap();
            let hints = TopicHints { legacy: format == WireFormat::Legacy, single_type: None };
            let decoded = decode(&encoded.headers, &encoded.value.clone().into(), &record(), &hints).unwrap().unwrap();
            assert_eq!(decoded.format, format);
            let mut expected = m.clone();
            if format != WireFormat::Binary {
                expected.content_type = decoded.metadata.content_type.clone();
            }
            assert_eq!(decoded.metadata, expected, "{format}");
            let data_back: serde_json::Value = serde_json::from_slice(&decoded.data).unwrap();
            assert_eq!(data_back, serde_json::from_slice::<serde_json::Value>(data).unwrap(), "{format}");
        }
    }

    #[test]
    fn untyped_records_take_the_single_type_of_their_topic() {
        let hints = TopicHints { legacy: false, single_type: Some("Ping") };
        let empty = Bytes::from_static(b"{}");
        let d = decode(&OwnedHeaders::new(), &empty, &record(), &hints).unwrap().unwrap();
        assert_eq!((d.metadata.event_type.as_str(), d.metadata.id.as_str(), d.format), ("Ping", "t/1/7", WireFormat::Untyped));
        assert!(decode(&OwnedHeaders::new(), &empty, &record(), &TopicHints::default()).unwrap().is_none());
    }
}
