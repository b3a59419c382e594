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

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use rdkafka::message::{Header, Headers, OwnedHeaders};

pub use crate::core::envelope::{extension_name, WireFormat};
pub(crate) use crate::core::envelope::{is_attribute, quote_str, QUOTED};
use crate::core::envelope::{headers, Metadata, RecordInfo};
use crate::core::error::{Error, Result};


/// A record's headers and value.
pub(crate) struct Encoded {
    pub headers: OwnedHeaders,
    pub value: Vec<u8>,
}

/// Writes `metadata` and the JSON `data` in `format`. Refuses what would not read back as
/// written: missing required attributes, extension names that are not lowercase letters and
/// digits or that are attribute names, and plain headers named like attributes (`ce_*`,
/// `content-type`).
pub(crate) fn encode(format: WireFormat, metadata: &Metadata, data: &[u8]) -> Result<Encoded> {
    check_for_publish(format, metadata)?;
    match format {
        WireFormat::Binary | WireFormat::Untyped => Ok(Encoded { headers: metadata.to_headers(), value: data.to_vec() }),
        WireFormat::Structured => {
            let value = structured::encode(metadata, data)?;
            Ok(Encoded { headers: content_type(structured::CONTENT_TYPE, &metadata.other_headers), value })
        }
        WireFormat::Legacy => {
            let value = legacy::encode(metadata, data)?;
            Ok(Encoded { headers: content_type(crate::core::envelope::JSON, &metadata.other_headers), value })
        }
    }
}

fn check_for_publish(format: WireFormat, m: &Metadata) -> Result<()> {
    match format {
        WireFormat::Legacy if m.event_type.is_empty() => return Err(Error::Envelope("the event type is empty".into())),
        WireFormat::Legacy => {}
        _ => m.check("`", "`")?,
    }
    check_headers(&m.other_headers)?;
    for name in m.extensions.keys() {
        if !is_extension_name(name) || is_attribute(name) {
            return Err(Error::Envelope(format!(
                "extension name {} is not usable: CloudEvents extension names are lowercase letters and digits, and not attribute names",
                quote_str(name)
            )));
        }
    }
    Ok(())
}

/// Plain headers must not read as CloudEvents attributes.
pub(crate) fn check_headers(other: &[(String, Vec<u8>)]) -> Result<()> {
    for (key, _) in other {
        if is_attribute_header(key) {
            return Err(Error::Envelope(format!(
                "header {} is a CloudEvents attribute: set it through PublishOptions or the metadata, not as a header",
                quote_str(key)
            )));
        }
    }
    Ok(())
}

/// `content-type` and `ce_*`, case-insensitively.
fn is_attribute_header(key: &str) -> bool {
    key.eq_ignore_ascii_case(headers::CONTENT_TYPE) || key.get(..headers::CE_PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(headers::CE_PREFIX))
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
        // Plain JSON without a `metadata` object falls through to the single-type rule.
        if let Some((mut metadata, data)) = legacy::decode(value, record)? {
            metadata.content_type = content_type();
            let extras = std::mem::replace(&mut metadata.other_headers, other_headers(record_headers));
            metadata.other_headers.extend(extras);
            return Ok(Some(Decoded { metadata, data: data.into(), format: WireFormat::Legacy }));
        }
    }
    let Some(event_type) = hints.single_type else { return Ok(None) };
    let mut metadata = Metadata::new(event_type, "");
    metadata.id = synthetic_id(record);
    metadata.time = record.timestamp_ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single());
    metadata.content_type = content_type();
    metadata.other_headers = other_headers(record_headers);
    Ok(Some(Decoded { metadata, data: value.clone(), format: WireFormat::Untyped }))
}

/// The event type and id of a record, best effort, whatever its format: `ce_type`/`ce_id`
/// headers (case-insensitive, a duplicate gives none), a structured CloudEvent's `type`/`id`,
/// or a legacy envelope's `metadata.event_type`/`event_id`. For listings of records that may
/// not decode.
pub(crate) fn peek_type_and_id(record_headers: &[(String, Vec<u8>)], value: &[u8]) -> (Option<String>, Option<String>) {
    let header = |name: &str| {
        let mut matches = record_headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name));
        match (matches.next(), matches.next()) {
            (Some((_, v)), None) => std::str::from_utf8(v).ok().map(str::to_owned),
            _ => None,
        }
    };
    let (event_type, id) = (header(headers::TYPE), header(headers::ID));
    if event_type.is_some() {
        return (event_type, id);
    }
    let Ok(serde_json::Value::Object(body)) = serde_json::from_slice::<serde_json::Value>(value) else { return (None, id) };
    let text = |o: &serde_json::Map<String, serde_json::Value>, k: &str| o.get(k).and_then(serde_json::Value::as_str).map(str::to_owned);
    match body.get("metadata") {
        Some(serde_json::Value::Object(meta)) => (text(meta, "event_type"), text(meta, "event_id")),
        _ => (text(&body, "type"), text(&body, "id")),
    }
}

/// A stable id for a record that has none: the same on every redelivery.
pub(crate) fn synthetic_id(record: &RecordInfo) -> String {
    format!("{}/{}/{}", record.topic, record.partition, record.offset)
}

/// Whether a data content type is JSON (absent means JSON).
pub(crate) fn is_json_content(content_type: Option<&str>) -> bool {
    structured::is_json(content_type)
}


/// [`quote_str`] for a JSON value.
pub(crate) fn quote_json(value: &serde_json::Value) -> String {
    let text = value.to_string();
    let mut chars = text.char_indices();
    match chars.nth(QUOTED) {
        None => text,
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
    }
}



/// Adds a foreign attribute read from JSON (structured members, legacy metadata) as an
/// extension under its mapped name ([`extension_name`]), or as a plain `x-NAME` header when no
/// name is usable. Null means absent.
pub(crate) fn add_extension(m: &mut Metadata, name: &str, value: serde_json::Value) {
    if value.is_null() {
        return;
    }
    let value = json_text(value);
    match extension_name(name, |n| m.extensions.contains_key(n) || is_attribute(n)) {
        Some(ext) => {
            m.extensions.insert(ext, value);
        }
        None => m.other_headers.push((format!("x-{name}"), value.into_bytes())),
    }
}

/// Whether a name is a valid CloudEvents extension name (lowercase letters and digits).
pub(crate) fn is_extension_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
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
        .filter(|h| !is_attribute_header(h.key))
        .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Header;

    fn record() -> RecordInfo {
        RecordInfo { topic: "t".into(), partition: 1, offset: 7, key: None, timestamp_ms: Some(1_700_000_000_000) }
    }

    fn sample() -> Metadata {
        let mut m = Metadata::new("OrderPlaced", "shop");
        m.correlation_id = Some("c".into());
        m.tenant_id = Some("acme".into());
        m.schema_version = Some("2".into());
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
            if format == WireFormat::Legacy {
                // The envelope writes whole-number versions as `major.minor`.
                expected.schema_version = Some("2.0".into());
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

    fn binary<K: AsRef<str>, V: AsRef<str>>(headers: &[(K, Option<V>)]) -> Result<Option<Decoded>> {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header { key: k.as_ref(), value: v.as_ref().map(|v| v.as_ref()) });
        }
        decode(&h, &Bytes::from_static(b"{}"), &record(), &TopicHints { legacy: false, single_type: Some("Single") })
    }

    const VALID: [(&str, Option<&str>); 4] = [("ce_specversion", Some("1.0")), ("ce_id", Some("e-1")), ("ce_source", Some("s")), ("ce_type", Some("T"))];

    /// The valid headers without those named in `drop`, plus `changes`.
    fn with(changes: &[(&str, Option<&str>)], drop: &[&str]) -> Vec<(String, Option<String>)> {
        VALID
            .iter()
            .filter(|(k, _)| !drop.contains(k))
            .chain(changes)
            .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
            .collect()
    }

    fn envelope_error(result: Result<Option<Decoded>>) -> String {
        match result {
            Err(Error::Envelope(e)) => e,
            other => panic!("expected an envelope error, got {other:?}"),
        }
    }

    #[test]
    fn ce_headers_match_case_insensitively() {
        let d = binary(&[("CE_SPECVERSION", Some("1.0")), ("ce_ID", Some("e-9")), ("Ce_Source", Some("s")), ("ce_Type", Some("Other")), ("ce_TenantId", Some("acme"))]).unwrap().unwrap();
        assert_eq!((d.metadata.event_type.as_str(), d.metadata.id.as_str(), d.metadata.tenant_id.as_deref()), ("Other", "e-9", Some("acme")));
        assert!(d.metadata.other_headers.is_empty());
    }

    #[test]
    fn required_attributes_are_checked() {
        for (changes, drop, names) in [
            (vec![], vec!["ce_source"], "source"),
            (vec![], vec!["ce_specversion"], "specversion"),
            (vec![("ce_id", Some(""))], vec!["ce_id"], "id"),
            (vec![("ce_id", None)], vec!["ce_id"], "id"),
            (vec![("ce_type", Some(""))], vec!["ce_type"], "type"),
            (vec![("ce_specversion", Some("2.0"))], vec!["ce_specversion"], "specversion"),
            (vec![("ce_specversion", Some("0.3"))], vec!["ce_specversion"], "specversion"),
        ] {
            let e = envelope_error(binary(&with(&changes, &drop)));
            assert!(e.contains(names), "{e}");
        }
    }

    #[test]
    fn a_duplicate_attribute_is_an_envelope_error() {
        let e = envelope_error(binary(&with(&[("CE_TYPE", Some("Other"))], &[])));
        assert!(e.contains("twice"), "{e}");
        let e = envelope_error(binary(&with(&[("content-type", Some("application/json")), ("Content-Type", Some("text/plain"))], &[])));
        assert!(e.contains("content-type"), "{e}");
    }

    #[test]
    fn extension_names_are_mapped_and_reserved_ones_kept_apart() {
        let d = binary(&with(&[("ce_Trace_ID", Some("t-1")), ("ce_", Some("x")), ("ce_datacontenttype", Some("text/plain")), ("ce_gone", None)], &[])).unwrap().unwrap();
        assert_eq!(d.metadata.extensions.get("traceid").map(String::as_str), Some("t-1"));
        assert!(!d.metadata.extensions.contains_key("gone"), "null means absent");
        let plain: Vec<&str> = d.metadata.other_headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(plain, ["x-ce_", "x-ce_datacontenttype"]);
        // What is read this way can be written again.
        assert!(encode(WireFormat::Binary, &d.metadata, b"{}").is_ok());
    }

    #[test]
    fn errors_quote_a_bounded_prefix_of_huge_values() {
        let huge = "\u{1}".repeat(300_000);
        let e = envelope_error(binary(&with(&[("ce_time", Some(&huge))], &[])));
        assert!(e.len() < 600 && e.contains("300000 bytes"), "{} chars", e.len());
    }

    #[test]
    fn publishing_refuses_what_would_read_back_differently() {
        let mut m = sample();
        m.other_headers.push(("CE_type".into(), b"X".to_vec()));
        assert!(encode(WireFormat::Binary, &m, b"{}").is_err());
        let mut m = sample();
        m.extensions.insert("Bad_Name".into(), "v".into());
        assert!(encode(WireFormat::Structured, &m, b"{}").is_err());
        let mut m = sample();
        m.extensions.insert("event_type".into(), "v".into());
        assert!(encode(WireFormat::Legacy, &m, b"{}").is_err(), "an extension named like the legacy event_type");
        let mut m = sample();
        m.source = String::new();
        assert!(encode(WireFormat::Binary, &m, b"{}").is_err());
    }

    fn structured_value(json: serde_json::Value) -> Result<Option<Decoded>> {
        let h = OwnedHeaders::new().insert(Header { key: "content-type", value: Some(structured::CONTENT_TYPE) });
        decode(&h, &Bytes::from(serde_json::to_vec(&json).unwrap()), &record(), &TopicHints::default())
    }

    #[test]
    fn structured_mode_follows_the_spec() {
        let base = serde_json::json!({"specversion": "1.0", "id": "i", "source": "s", "type": "T"});
        let with = |extra: serde_json::Value| {
            let mut o = base.clone();
            o.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            o
        };
        // data_base64 decodes; for JSON content it is the JSON.
        let d = structured_value(with(serde_json::json!({"data_base64": "eyJhIjoxfQ=="}))).unwrap().unwrap();
        assert_eq!(&d.data[..], br#"{"a":1}"#);
        assert!(envelope_error(structured_value(with(serde_json::json!({"data": 1, "data_base64": "AA=="})))).contains("both"));
        // Non-JSON data reaches handlers as its bytes, as in binary mode.
        let d = structured_value(with(serde_json::json!({"datacontenttype": "text/plain", "data": "hello"}))).unwrap().unwrap();
        assert_eq!(&d.data[..], b"hello");
        // A foreign schema version is kept as given; null means absent; names are mapped.
        let d = structured_value(with(serde_json::json!({"schemaversion": "1.2.0", "subject": null, "Bad_Name": "v"}))).unwrap().unwrap();
        assert_eq!((d.metadata.schema_version.as_deref(), d.metadata.schema_major()), (Some("1.2.0"), Some(1)));
        assert_eq!((d.metadata.subject.as_ref(), d.metadata.extensions.get("badname").map(String::as_str)), (None, Some("v")));
        let d = structured_value(with(serde_json::json!({"schemaversion": 3.0}))).unwrap().unwrap();
        assert_eq!(d.metadata.schema_version.as_deref(), Some("3.0"));
        assert!(envelope_error(structured_value(serde_json::json!({"specversion": "1.0", "id": "i", "type": "T"}))).contains("source"));
    }

    #[test]
    fn legacy_keeps_versions_and_schemas_and_lets_plain_json_through() {
        let hints = TopicHints { legacy: true, single_type: Some("Single") };
        let body = serde_json::json!({"metadata": {"event_type": "T", "event_id": "e", "event_version": "2.1", "dataschema": "urn:x", "retry_count": 3}, "payload": {}});
        let d = decode(&OwnedHeaders::new(), &Bytes::from(serde_json::to_vec(&body).unwrap()), &record(), &hints).unwrap().unwrap();
        assert_eq!((d.metadata.schema_version.as_deref(), d.metadata.data_schema.as_deref()), (Some("2.1"), Some("urn:x")));
        assert_eq!(d.metadata.extensions.get("retrycount").map(String::as_str), Some("3"));
        let back = encode(WireFormat::Legacy, &d.metadata, b"{}").unwrap();
        let again = decode(&back.headers, &Bytes::from(back.value), &record(), &hints).unwrap().unwrap();
        assert_eq!((again.metadata.schema_version.as_deref(), again.metadata.data_schema.as_deref()), (Some("2.1"), Some("urn:x")));
        // Plain JSON on a single-type legacy topic is that type.
        let d = decode(&OwnedHeaders::new(), &Bytes::from_static(br#"{"sku": "a"}"#), &record(), &hints).unwrap().unwrap();
        assert_eq!((d.metadata.event_type.as_str(), d.format), ("Single", WireFormat::Untyped));
    }

    #[test]
    fn dead_letter_listings_find_type_and_id_in_every_format() {
        let headers = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec())).collect::<Vec<_>>();
        assert_eq!(peek_type_and_id(&headers(&[("CE_TYPE", "A"), ("ce_id", "1")]), b""), (Some("A".into()), Some("1".into())));
        assert_eq!(peek_type_and_id(&headers(&[("ce_type", "A"), ("ce_type", "B")]), b"").0, None, "a duplicate gives none");
        assert_eq!(peek_type_and_id(&[], br#"{"specversion":"1.0","type":"S","id":"2"}"#), (Some("S".into()), Some("2".into())));
        assert_eq!(peek_type_and_id(&[], br#"{"metadata":{"event_type":"L","event_id":"3"},"payload":{}}"#), (Some("L".into()), Some("3".into())));
        assert_eq!(peek_type_and_id(&[], b"\xff"), (None, None));
    }
}
