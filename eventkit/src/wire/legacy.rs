//! The JSON body envelope of existing services:
//! `{"metadata": {"event_id", "event_type", "event_version", "timestamp", "source_service",
//! "tenant_id", "correlation_id", "causation_id", ...}, "payload": {...}}`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use crate::context::RecordInfo;
use crate::envelope::{Metadata, SPEC_VERSION};
use crate::error::{Error, Result};

pub(crate) fn encode(m: &Metadata, data: &[u8]) -> Result<Vec<u8>> {
    let mut meta = Map::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            meta.insert(k.to_owned(), Value::String(v));
        }
    };
    put("event_id", Some(m.id.clone()));
    put("event_type", Some(m.event_type.clone()));
    put("event_version", m.schema_version.map(|v| format!("{v}.0")));
    put("timestamp", m.time.map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true)));
    put("source_service", Some(m.source.clone()));
    put("tenant_id", m.tenant_id.clone());
    put("correlation_id", m.correlation_id.clone());
    put("causation_id", m.causation_id.clone());
    put("subject", m.subject.clone());
    for (k, v) in &m.extensions {
        put(k, Some(v.clone()));
    }
    let payload: Value = serde_json::from_slice(data)?;
    Ok(serde_json::to_vec(&serde_json::json!({ "metadata": meta, "payload": payload }))?)
}

pub(crate) fn decode(value: &[u8], record: &RecordInfo) -> Result<(Metadata, Vec<u8>)> {
    let mut body: Map<String, Value> =
        serde_json::from_slice(value).map_err(|e| Error::Envelope(format!("legacy envelope is not a JSON object: {e}")))?;
    let Some(Value::Object(mut meta)) = body.remove("metadata") else {
        return Err(Error::Envelope("legacy envelope without a `metadata` object".into()));
    };
    let payload = body.remove("payload").ok_or_else(|| Error::Envelope("legacy envelope without `payload`".into()))?;
    let mut text = |k: &str| meta.remove(k).filter(|v| !v.is_null()).map(super::json_text);
    let event_type = text("event_type").ok_or_else(|| Error::Envelope("legacy envelope without `metadata.event_type`".into()))?;
    let time = text("timestamp")
        .map(|t| parse_time(&t).ok_or_else(|| Error::Envelope(format!("`metadata.timestamp` = {t:?} is not RFC 3339"))))
        .transpose()?;
    let schema_version = text("event_version").map(|v| {
        v.split('.').next().and_then(|major| major.trim().parse::<u32>().ok()).ok_or_else(|| Error::Envelope(format!("`metadata.event_version` = {v:?}")))
    });
    let metadata = Metadata {
        id: text("event_id").unwrap_or_else(|| super::synthetic_id(record)),
        source: text("source_service").unwrap_or_default(),
        spec_version: SPEC_VERSION.to_owned(),
        event_type,
        time,
        content_type: None,
        subject: text("subject"),
        data_schema: None,
        correlation_id: text("correlation_id"),
        causation_id: text("causation_id"),
        tenant_id: text("tenant_id"),
        schema_version: schema_version.transpose()?,
        extensions: Default::default(),
        other_headers: Vec::new(),
    };
    let extensions = meta.into_iter().map(|(k, v)| (k, super::json_text(v))).collect();
    Ok((Metadata { extensions, ..metadata }, serde_json::to_vec(&payload)?))
}

/// RFC 3339, or the same without an offset (read as UTC), as Python's `isoformat()` writes.
fn parse_time(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f").ok().map(|n| n.and_utc()))
}
