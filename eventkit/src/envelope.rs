//! Event metadata and its CloudEvents 1.0 Kafka binding (binary content mode).
//!
//! Every record eventkit publishes carries its metadata in headers named by the
//! CloudEvents Kafka protocol binding (`ce_id`, `ce_type`, ...), the partition key as the
//! Kafka key, and the event as JSON in the value. Headers eventkit does not know are kept.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use rdkafka::message::{Header, Headers, OwnedHeaders};

use crate::error::{Error, Result};

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
    /// Extension `schemaversion`.
    pub schema_version: Option<u32>,
    /// Other CloudEvents extension attributes, by name without the `ce_` prefix.
    pub extensions: BTreeMap<String, String>,
    /// Headers that are not CloudEvents attributes, kept as they came.
    pub other_headers: Vec<(String, Vec<u8>)>,
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
        let version = self.schema_version.map(|v| v.to_string());
        let attributes = [
            (headers::SPEC_VERSION, Some(self.spec_version.as_str())),
            (headers::ID, Some(self.id.as_str())),
            (headers::SOURCE, Some(self.source.as_str())),
            (headers::TYPE, Some(self.event_type.as_str())),
            (headers::TIME, time.as_deref()),
            (headers::CONTENT_TYPE, self.content_type.as_deref()),
            (headers::SUBJECT, self.subject.as_deref()),
            (headers::DATA_SCHEMA, self.data_schema.as_deref()),
            (headers::CORRELATION_ID, self.correlation_id.as_deref()),
            (headers::CAUSATION_ID, self.causation_id.as_deref()),
            (headers::TENANT_ID, self.tenant_id.as_deref()),
            (headers::SCHEMA_VERSION, version.as_deref()),
        ];
        let mut out = OwnedHeaders::new_with_capacity(attributes.len() + self.extensions.len());
        for (key, value) in attributes {
            if let Some(value) = value {
                out = out.insert(Header { key, value: Some(value) });
            }
        }
        for (name, value) in &self.extensions {
            let key = format!("{}{name}", headers::CE_PREFIX);
            out = out.insert(Header { key: &key, value: Some(value.as_str()) });
        }
        for (key, value) in &self.other_headers {
            out = out.insert(Header { key, value: Some(value.as_slice()) });
        }
        out
    }

    /// Reads CloudEvents binary-mode headers. `Ok(None)` means the record carries no
    /// CloudEvents type (not an eventkit-style record); malformed attributes are errors.
    pub fn from_headers<H: Headers>(record_headers: &H) -> Result<Option<Self>> {
        let mut attributes: BTreeMap<String, String> = BTreeMap::new();
        let mut other_headers = Vec::new();
        let mut content_type = None;
        for header in record_headers.iter() {
            let value = header.value.unwrap_or_default();
            if let Some(name) = header.key.strip_prefix(headers::CE_PREFIX) {
                let text = std::str::from_utf8(value).map_err(|_| {
                    Error::Envelope(format!("header `{}` is not UTF-8", header.key))
                })?;
                attributes.insert(name.to_owned(), text.to_owned());
            } else if header.key.eq_ignore_ascii_case(headers::CONTENT_TYPE) {
                content_type = Some(String::from_utf8_lossy(value).into_owned());
            } else {
                other_headers.push((header.key.to_owned(), value.to_vec()));
            }
        }
        let Some(event_type) = attributes.remove("type") else {
            return Ok(None);
        };
        let mut take = |name: &str| attributes.remove(name);
        let id = take("id").ok_or_else(|| Error::Envelope("missing header `ce_id`".into()))?;
        let time = take("time")
            .map(|t| {
                DateTime::parse_from_rfc3339(&t)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| Error::Envelope(format!("header `ce_time` = {t:?}: {e}")))
            })
            .transpose()?;
        let schema_version = take("schemaversion")
            .map(|v| {
                v.parse::<u32>()
                    .map_err(|e| Error::Envelope(format!("header `ce_schemaversion` = {v:?}: {e}")))
            })
            .transpose()?;
        Ok(Some(Metadata {
            id,
            source: take("source").unwrap_or_default(),
            spec_version: take("specversion").unwrap_or_else(|| SPEC_VERSION.to_owned()),
            event_type,
            time,
            content_type,
            subject: take("subject"),
            data_schema: take("dataschema"),
            correlation_id: take("correlationid"),
            causation_id: take("causationid"),
            tenant_id: take("tenantid"),
            schema_version,
            extensions: attributes,
            other_headers,
        }))
    }
}
