//! Event metadata and its CloudEvents 1.0 Kafka binding (binary content mode).
//!
//! Every record eventkit publishes carries its metadata in headers named by the
//! CloudEvents Kafka protocol binding (`ce_id`, `ce_type`, ...), the partition key as the
//! Kafka key, and the event as JSON in the value. Headers eventkit does not know are kept.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use rdkafka::message::{Header, Headers, OwnedHeaders};

use crate::core::error::{Error, Result};

/// CloudEvents attribute header names (Kafka protocol binding, binary mode).
pub mod headers {
    /// `specversion`, always `1.0`.
    pub const SPEC_VERSION: &str = "ce_specversion";
    /// `id`, unique per event (eventkit writes a UUID v7).
    pub const ID: &str = "ce_id";
    /// `source`, the publishing service.
    pub const SOURCE: &str = "ce_source";
    /// `type`, the event type.
    pub const TYPE: &str = "ce_type";
    /// `time`, RFC 3339.
    pub const TIME: &str = "ce_time";
    /// `subject`.
    pub const SUBJECT: &str = "ce_subject";
    /// `dataschema`.
    pub const DATA_SCHEMA: &str = "ce_dataschema";
    /// Extension: the correlation id shared by a chain of events.
    pub const CORRELATION_ID: &str = "ce_correlationid";
    /// Extension: the id of the event that caused this one.
    pub const CAUSATION_ID: &str = "ce_causationid";
    /// Extension: the tenant.
    pub const TENANT_ID: &str = "ce_tenantid";
    /// Extension: the event's schema version.
    pub const SCHEMA_VERSION: &str = "ce_schemaversion";
    /// The content type of the value (`datacontenttype`).
    pub const CONTENT_TYPE: &str = "content-type";
    /// Prefix of every CloudEvents attribute header.
    pub const CE_PREFIX: &str = "ce_";
}

/// The CloudEvents spec version eventkit writes.
pub const SPEC_VERSION: &str = "1.0";
/// The content type of JSON event data.
pub const JSON: &str = "application/json";

/// An event's metadata: its CloudEvents attributes and extensions, plus other headers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Metadata {
    /// `id`: unique per event.
    pub id: String,
    /// `source`: the service that published the event.
    pub source: String,
    /// `type`: the event type.
    pub event_type: String,
    /// `specversion`.
    pub spec_version: String,
    /// `time`: when the event occurred.
    pub time: Option<DateTime<Utc>>,
    /// `datacontenttype`.
    pub content_type: Option<String>,
    /// `subject`.
    pub subject: Option<String>,
    /// `dataschema`.
    pub data_schema: Option<String>,
    /// Extension `correlationid`.
    pub correlation_id: Option<String>,
    /// Extension `causationid`.
    pub causation_id: Option<String>,
    /// Extension `tenantid`.
    pub tenant_id: Option<String>,
    /// Extension `schemaversion`, as the producer gave it (eventkit writes the declared
    /// version, e.g. `3`; other producers may write `2.0` or `1.2.0`). See
    /// [`Metadata::schema_major`].
    pub schema_version: Option<String>,
    /// Other CloudEvents extension attributes, by name without the `ce_` prefix.
    pub extensions: BTreeMap<String, String>,
    /// Headers that are not CloudEvents attributes, kept as they came.
    pub other_headers: Vec<(String, Vec<u8>)>,
}

/// The attribute name of a `ce_` header (case-insensitive prefix), as given.
fn ce_attribute(key: &str) -> Option<&str> {
    let prefix = key.get(..headers::CE_PREFIX.len())?;
    prefix.eq_ignore_ascii_case(headers::CE_PREFIX).then(|| &key[headers::CE_PREFIX.len()..])
}

/// Attributes already read, to reject duplicates: a bit per known attribute, a small list for
/// the others (this runs for every record consumed; the common case allocates nothing).
#[derive(Default)]
struct Seen {
    known: u32,
    others: Vec<String>,
}

const KNOWN_ATTRIBUTES: [&str; 12] = [
    "content-type",
    "type",
    "id",
    "source",
    "specversion",
    "time",
    "subject",
    "dataschema",
    "correlationid",
    "causationid",
    "tenantid",
    "schemaversion",
];

impl Seen {
    fn once(&mut self, name: &str) -> Result<()> {
        let twice = match KNOWN_ATTRIBUTES.iter().position(|k| *k == name) {
            Some(bit) => {
                let was = self.known & 1 << bit != 0;
                self.known |= 1 << bit;
                was
            }
            None if self.others.iter().any(|n| n == name) => true,
            None => {
                self.others.push(name.to_owned());
                false
            }
        };
        if twice {
            let shown = if name == "content-type" { name.to_owned() } else { format!("ce_{name}") };
            return Err(Error::Envelope(format!("header `{}` is given twice", quote_str(&shown))));
        }
        Ok(())
    }
}

/// `name` in ASCII lower case, borrowed when it already is (the usual case).
fn ascii_lower(name: &str) -> std::borrow::Cow<'_, str> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(name.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

/// Borrowed CloudEvents attributes, written as binary-mode headers. [`Metadata::to_headers`]
/// and the publisher's hot path share it, so both write the same headers in the same order.
pub(crate) struct BinaryHeaders<'a> {
    pub spec_version: &'a str,
    pub id: &'a str,
    pub source: &'a str,
    pub event_type: &'a str,
    pub time: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub data_schema: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
    pub causation_id: Option<&'a str>,
    pub tenant_id: Option<&'a str>,
    pub schema_version: Option<&'a str>,
    pub extensions: &'a BTreeMap<String, String>,
    pub other_headers: &'a [(String, Vec<u8>)],
}

impl BinaryHeaders<'_> {
    pub(crate) fn write(&self) -> OwnedHeaders {
        let version = self.schema_version;
        let attributes = [
            (headers::SPEC_VERSION, Some(self.spec_version)),
            (headers::ID, Some(self.id)),
            (headers::SOURCE, Some(self.source)),
            (headers::TYPE, Some(self.event_type)),
            (headers::TIME, self.time),
            (headers::CONTENT_TYPE, self.content_type),
            (headers::SUBJECT, self.subject),
            (headers::DATA_SCHEMA, self.data_schema),
            (headers::CORRELATION_ID, self.correlation_id),
            (headers::CAUSATION_ID, self.causation_id),
            (headers::TENANT_ID, self.tenant_id),
            (headers::SCHEMA_VERSION, version),
        ];
        let mut out = OwnedHeaders::new_with_capacity(attributes.len() + self.extensions.len() + self.other_headers.len());
        for (key, value) in attributes {
            if let Some(value) = value {
                out = out.insert(Header { key, value: Some(value) });
            }
        }
        for (name, value) in self.extensions {
            let key = format!("{}{name}", headers::CE_PREFIX);
            out = out.insert(Header { key: &key, value: Some(value.as_str()) });
        }
        for (key, value) in self.other_headers {
            out = out.insert(Header { key, value: Some(value.as_slice()) });
        }
        out
    }
}

impl Metadata {
    /// Fresh metadata for a new event: a UUID v7 id and the current time.
    pub fn new(event_type: impl Into<String>, source: impl Into<String>) -> Self {
        Metadata {
            id: uuid::Uuid::now_v7().to_string(),
            source: source.into(),
            event_type: event_type.into(),
            spec_version: SPEC_VERSION.to_owned(),
            time: Some(Utc::now().trunc_subsecs(6)),
            content_type: Some(JSON.to_owned()),
            ..Metadata::blank()
        }
    }

    /// The major number of the schema version (`3`, `2.0` and `2.1.4` give 3, 2 and 2), to
    /// compare with an event's declared version.
    ///
    /// ```
    /// let mut m = eventkit::Metadata::new("OrderPlaced", "shop");
    /// m.schema_version = Some("2.1".into());
    /// assert_eq!(m.schema_major(), Some(2));
    /// ```
    pub fn schema_major(&self) -> Option<u32> {
        self.schema_version.as_deref()?.split('.').next()?.trim().parse().ok()
    }

    /// Metadata with every attribute empty or absent.
    pub(crate) fn blank() -> Self {
        Metadata {
            id: String::new(),
            source: String::new(),
            event_type: String::new(),
            spec_version: String::new(),
            time: None,
            content_type: None,
            subject: None,
            data_schema: None,
            correlation_id: None,
            causation_id: None,
            tenant_id: None,
            schema_version: None,
            extensions: BTreeMap::new(),
            other_headers: Vec::new(),
        }
    }

    /// Writes the metadata as CloudEvents binary-mode headers.
    ///
    /// ```
    /// use eventkit::Metadata;
    /// let mut m = Metadata::new("UserCreated", "user-service");
    /// m.correlation_id = Some("c-1".into());
    /// let back = Metadata::from_headers(&m.to_headers()).unwrap().unwrap();
    /// assert_eq!(back, m);
    /// ```
    pub fn to_headers(&self) -> OwnedHeaders {
        let time = self.time.map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true));
        BinaryHeaders {
            spec_version: &self.spec_version,
            id: &self.id,
            source: &self.source,
            event_type: &self.event_type,
            time: time.as_deref(),
            content_type: self.content_type.as_deref(),
            subject: self.subject.as_deref(),
            data_schema: self.data_schema.as_deref(),
            correlation_id: self.correlation_id.as_deref(),
            causation_id: self.causation_id.as_deref(),
            tenant_id: self.tenant_id.as_deref(),
            schema_version: self.schema_version.as_deref(),
            extensions: &self.extensions,
            other_headers: &self.other_headers,
        }
        .write()
    }

    /// Reads CloudEvents binary-mode headers. `Ok(None)` means the record carries no
    /// CloudEvents type (not an eventkit-style record); malformed attributes are errors.
    ///
    /// The rules ([`crate::wire`] states them for every format):
    /// - `ce_` header names match case-insensitively; attribute names are lowercase;
    /// - a CloudEvents attribute given twice, or a null or empty `id`, `source`, `type` or
    ///   `specversion`, is an error; `specversion` must be `1.0`;
    /// - extension names that are not lowercase letters and digits are mapped (see
    ///   [`extension_name`]); a null extension value means absent;
    /// - `ce_datacontenttype`, `ce_data` and `ce_data_base64` are not attributes in binary mode:
    ///   they are kept apart, as plain headers named `x-ce_...`.
    pub fn from_headers<H: Headers>(record_headers: &H) -> Result<Option<Self>> {
        // One pass, no intermediate map: this runs for every record consumed.
        let mut m = Metadata::blank();
        let mut seen = Seen::default();
        let mut has_type = false;
        for header in record_headers.iter() {
            let Some(name) = ce_attribute(header.key) else {
                if header.key.eq_ignore_ascii_case(headers::CONTENT_TYPE) {
                    seen.once("content-type")?;
                    m.content_type = header.value.map(|v| match std::str::from_utf8(v) {
                        Ok(text) => text.to_owned(),
                        Err(_) => String::from_utf8_lossy(v).into_owned(),
                    });
                } else {
                    m.other_headers.push((header.key.to_owned(), header.value.unwrap_or_default().to_vec()));
                }
                continue;
            };
            let lower = ascii_lower(name);
            if matches!(&*lower, "datacontenttype" | "data" | "data_base64") {
                m.other_headers.push((format!("x-{}", header.key), header.value.unwrap_or_default().to_vec()));
                continue;
            }
            let Some(value) = header.value else {
                // Null means absent (required attributes are checked below).
                seen.once(&lower)?;
                continue;
            };
            let text = std::str::from_utf8(value).map_err(|_| Error::Envelope(format!("header `{}` is not UTF-8", quote_str(header.key))))?;
            seen.once(&lower)?;
            let set = |slot: &mut String| {
                slot.clear();
                slot.push_str(text);
            };
            match &*lower {
                "type" => {
                    set(&mut m.event_type);
                    has_type = true;
                }
                "id" => set(&mut m.id),
                "source" => set(&mut m.source),
                "specversion" => set(&mut m.spec_version),
                "time" => {
                    let time = DateTime::parse_from_rfc3339(text).map_err(|e| Error::Envelope(format!("header `ce_time` = {}: {e}", quote_str(text))))?;
                    m.time = Some(time.with_timezone(&Utc));
                }
                "subject" => m.subject = Some(text.to_owned()),
                "dataschema" => m.data_schema = Some(text.to_owned()),
                "correlationid" => m.correlation_id = Some(text.to_owned()),
                "causationid" => m.causation_id = Some(text.to_owned()),
                "tenantid" => m.tenant_id = Some(text.to_owned()),
                "schemaversion" => m.schema_version = Some(text.to_owned()),
                _ => match extension_name(&lower, |n| m.extensions.contains_key(n) || is_attribute(n)) {
                    Some(ext) => {
                        m.extensions.insert(ext, text.to_owned());
                    }
                    // A name that maps to nothing usable stays a plain header, renamed so that
                    // it does not read as an attribute again.
                    None => m.other_headers.push((format!("x-{}", header.key), value.to_vec())),
                },
            }
        }
        if !has_type && m.id.is_empty() && m.spec_version.is_empty() {
            return Ok(None);
        }
        m.check("header `ce_", "`")?;
        Ok(Some(m))
    }

    /// Checks the required CloudEvents attributes: `id`, `source`, `type` present and not
    /// empty, `specversion` 1.0. `before`/`after` frame attribute names in messages.
    pub(crate) fn check(&self, before: &str, after: &str) -> Result<()> {
        for (name, value) in [("specversion", &self.spec_version), ("id", &self.id), ("source", &self.source), ("type", &self.event_type)] {
            if value.is_empty() {
                return Err(Error::Envelope(format!("required attribute {before}{name}{after} is missing or empty")));
            }
        }
        if self.spec_version != SPEC_VERSION {
            return Err(Error::Envelope(format!(
                "{before}specversion{after} = {}: eventkit reads CloudEvents {SPEC_VERSION}",
                quote_str(&self.spec_version)
            )));
        }
        Ok(())
    }
}

/// Where a record came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecordInfo {
    /// Topic on the wire (with prefix).
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Kafka key.
    pub key: Option<Bytes>,
    /// Broker or producer timestamp in milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
}

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

/// How many characters of a value an error message quotes.
pub(crate) const QUOTED: usize = 64;

/// A value for an error message: quoted, and when long only its first characters and its
/// length, so that an error (and the dead letter header carrying it) stays small whatever the
/// record holds.
pub(crate) fn quote_str(value: &str) -> String {
    let mut chars = value.char_indices();
    match chars.nth(QUOTED) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &value[..cut], value.len()),
    }
}

/// CloudEvents context attribute names (core and the extensions eventkit knows): not usable
/// as other extensions' names.
pub(crate) fn is_attribute(name: &str) -> bool {
    matches!(
        name,
        "specversion" | "id" | "source" | "type" | "time" | "datacontenttype" | "dataschema" | "subject" | "data" | "data_base64"
            | "correlationid" | "causationid" | "tenantid" | "schemaversion"
    )
}

/// The extension name a foreign attribute is read as. CloudEvents extension names are
/// lowercase letters and digits; others are mapped by lowercasing and dropping every other
/// character (`Trace_ID` and `retry_count` become `traceid` and `retrycount`). `None` when
/// nothing usable is left or the name is taken (`taken` says which are): the caller keeps the
/// value as a plain header instead.
///
/// ```
/// # use eventkit::wire::extension_name;
/// assert_eq!(extension_name("priority", |_| false).as_deref(), Some("priority"));
/// assert_eq!(extension_name("Retry_Count", |_| false).as_deref(), Some("retrycount"));
/// assert_eq!(extension_name("__", |_| false), None);
/// assert_eq!(extension_name("Type", |n| n == "type"), None);
/// ```
pub fn extension_name(name: &str, taken: impl Fn(&str) -> bool) -> Option<String> {
    let mapped: String = name.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect();
    (!mapped.is_empty() && !taken(&mapped)).then_some(mapped)
}
