//! The JSON body envelope of existing services:
//! `{"metadata": {"event_id", "event_type", "event_version", "timestamp", "source_service",
//! "tenant_id", "correlation_id", "causation_id", "subject", "dataschema", ...}, "payload": {...}}`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use crate::core::envelope::{Metadata, RecordInfo, SPEC_VERSION};
use crate::core::error::{Error, Result};

/// The metadata members the envelope defines; extensions cannot use these names.
const MEMBERS: [&str; 10] =
    ["event_id", "event_type", "event_version", "timestamp", "source_service", "tenant_id", "correlation_id", "causation_id", "subject", "dataschema"];

pub(crate) fn encode(m: &Metadata, data: &[u8]) -> Result<Vec<u8>> {
    let mut meta = Map::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            meta.insert(k.to_owned(), Value::String(v));
        }
    };
    put("event_id", Some(m.id.clone()));
    put("event_type", Some(m.event_type.clone()));
    // The envelope writes versions as `major.minor`; eventkit's own are whole numbers.
    put("event_version", m.schema_version.as_ref().map(|v| if v.parse::<u64>().is_ok() { format!("{v}.0") } else { v.clone() }));
    put("timestamp", m.time.map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true)));
    put("source_service", Some(m.source.clone()));
    put("tenant_id", m.tenant_id.clone());
    put("correlation_id", m.correlation_id.clone());
    put("causation_id", m.causation_id.clone());
    put("subject", m.subject.clone());
    put("dataschema", m.data_schema.clone());
    for (k, v) in &m.extensions {
        if MEMBERS.contains(&k.as_str()) {
            return Err(Error::Envelope(format!("extension `{k}` would overwrite the legacy envelope's own `metadata.{k}`")));
        }
        put(k, Some(v.clone()));
    }
    let payload: Value = serde_json::from_slice(data)?;
    Ok(serde_json::to_vec(&serde_json::json!({ "metadata": meta, "payload": payload }))?)
}

/// Reads a legacy envelope. `Ok(None)`: the value is not one (no `metadata` object), so the
/// record may still be plain JSON of the topic's only event type.
pub(crate) fn decode(value: &[u8], record: &RecordInfo) -> Result<Option<(Metadata, Vec<u8>)>> {
    let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(value) else {
        return Ok(None);
    };
    let mut meta = match body.remove("metadata") {
        Some(Value::Object(meta)) => meta,
        _ => return Ok(None),
    };
    let payload = body.remove("payload").ok_or_else(|| Error::Envelope("legacy envelope without `payload`".into()))?;
    let mut text = |k: &str| meta.remove(k).filter(|v| !v.is_null()).map(super::json_text);
    let mut m = Metadata::blank();
    m.event_type = text("event_type").filter(|t| !t.is_empty()).ok_or_else(|| Error::Envelope("legacy envelope without `metadata.event_type`".into()))?;
    m.time = text("timestamp")
        .map(|t| parse_time(&t).ok_or_else(|| Error::Envelope(format!("`metadata.timestamp` = {} is not RFC 3339", super::quote_str(&t)))))
        .transpose()?;
    m.id = text("event_id").filter(|id| !id.is_empty()).unwrap_or_else(|| super::synthetic_id(record));
    m.source = text("source_service").unwrap_or_default();
    m.spec_version = SPEC_VERSION.to_owned();
    m.subject = text("subject");
    m.data_schema = text("dataschema");
    m.correlation_id = text("correlation_id");
    m.causation_id = text("causation_id");
    m.tenant_id = text("tenant_id");
    m.schema_version = text("event_version");
    for (name, value) in meta {
        super::add_extension(&mut m, &name, value);
    }
    Ok(Some((m, serde_json::to_vec(&payload)?)))
}

/// RFC 3339, or the same without an offset (read as UTC), as Python's `isoformat()` writes.
fn parse_time(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f").ok().map(|n| n.and_utc()))
}
