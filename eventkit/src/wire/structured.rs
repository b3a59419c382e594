//! CloudEvents structured content mode: the event as one JSON object.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use crate::envelope::{Metadata, JSON, SPEC_VERSION};
use crate::error::{Error, Result};

/// The content type of structured records.
pub(crate) const CONTENT_TYPE: &str = "application/cloudevents+json; charset=UTF-8";

pub(crate) fn encode(m: &Metadata, data: &[u8]) -> Result<Vec<u8>> {
    let mut o = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            o.insert(k.to_owned(), v);
        }
    };
    put("specversion", Some(m.spec_version.clone().into()));
    put("id", Some(m.id.clone().into()));
    put("source", Some(m.source.clone().into()));
    put("type", Some(m.event_type.clone().into()));
    put("time", m.time.map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true).into()));
    put("datacontenttype", Some(m.content_type.clone().unwrap_or_else(|| JSON.to_owned()).into()));
    put("subject", m.subject.clone().map(Into::into));
    put("dataschema", m.data_schema.clone().map(Into::into));
    put("correlationid", m.correlation_id.clone().map(Into::into));
    put("causationid", m.causation_id.clone().map(Into::into));
    put("tenantid", m.tenant_id.clone().map(Into::into));
    put("schemaversion", m.schema_version.map(Into::into));
    for (k, v) in &m.extensions {
        put(k, Some(v.clone().into()));
    }
    let data: Value = serde_json::from_slice(data)?;
    o.insert("data".into(), data);
    Ok(serde_json::to_vec(&o)?)
}

pub(crate) fn decode(value: &[u8], other_headers: Vec<(String, Vec<u8>)>) -> Result<(Metadata, Vec<u8>)> {
    let mut o: Map<String, Value> = serde_json::from_slice(value)
        .map_err(|e| Error::Envelope(format!("structured CloudEvent is not a JSON object: {e}")))?;
    let mut text = |k: &str| -> Result<Option<String>> {
        match o.remove(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) if k == "schemaversion" => Ok(Some(other.to_string())),
            Some(other) => Err(Error::Envelope(format!("attribute `{k}` is not a string: {other}"))),
        }
    };
    let event_type = text("type")?.ok_or_else(|| Error::Envelope("structured CloudEvent without `type`".into()))?;
    let id = text("id")?.ok_or_else(|| Error::Envelope("structured CloudEvent without `id`".into()))?;
    let time = text("time")?
        .map(|t| DateTime::parse_from_rfc3339(&t).map(|t| t.with_timezone(&Utc)).map_err(|e| Error::Envelope(format!("`time` = {t:?}: {e}"))))
        .transpose()?;
    let schema_version = text("schemaversion")?
        .map(|v| v.parse::<u32>().map_err(|e| Error::Envelope(format!("`schemaversion` = {v:?}: {e}"))))
        .transpose()?;
    let metadata = Metadata {
        id,
        source: text("source")?.unwrap_or_default(),
        spec_version: text("specversion")?.unwrap_or_else(|| SPEC_VERSION.to_owned()),
        event_type,
        time,
        content_type: text("datacontenttype")?,
        subject: text("subject")?,
        data_schema: text("dataschema")?,
        correlation_id: text("correlationid")?,
        causation_id: text("causationid")?,
        tenant_id: text("tenantid")?,
        schema_version,
        extensions: Default::default(),
        other_headers,
    };
    let data = match (o.remove("data"), o.remove("data_base64")) {
        (Some(data), _) => serde_json::to_vec(&data)?,
        (None, Some(_)) => return Err(Error::Envelope("binary `data_base64` is not a JSON event".into())),
        (None, None) => b"null".to_vec(),
    };
    let extensions = o.into_iter().map(|(k, v)| (k, super::json_text(v))).collect();
    Ok((Metadata { extensions, ..metadata }, data))
}
