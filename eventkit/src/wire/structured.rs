//! CloudEvents structured content mode: the event as one JSON object.

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use crate::core::envelope::{Metadata, JSON};
use crate::core::error::{Error, Result};

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
    put("schemaversion", m.schema_version.as_ref().map(|v| match v.parse::<u64>() {
        // eventkit's own versions are numbers; foreign ones are kept as given.
        Ok(n) => n.into(),
        Err(_) => v.clone().into(),
    }));
    for (k, v) in &m.extensions {
        put(k, Some(v.clone().into()));
    }
    let data: Value = if is_json(m.content_type.as_deref()) {
        serde_json::from_slice(data)?
    } else {
        match std::str::from_utf8(data) {
            Ok(text) => Value::String(text.to_owned()),
            Err(_) => {
                o.insert("data_base64".into(), base64::engine::general_purpose::STANDARD.encode(data).into());
                return Ok(serde_json::to_vec(&o)?);
            }
        }
    };
    o.insert("data".into(), data);
    Ok(serde_json::to_vec(&o)?)
}

/// Whether a data content type is JSON (`application/json`, `text/json`, `...+json`), which
/// it is when absent.
pub(crate) fn is_json(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return true };
    let essence = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

pub(crate) fn decode(value: &[u8], other_headers: Vec<(String, Vec<u8>)>) -> Result<(Metadata, Vec<u8>)> {
    let mut o: Map<String, Value> = serde_json::from_slice(value)
        .map_err(|e| Error::Envelope(format!("structured CloudEvent is not a JSON object: {e}")))?;
    let mut text = |k: &str| -> Result<Option<String>> {
        match o.remove(k) {
            // Null means absent.
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(n @ Value::Number(_)) if k == "schemaversion" => Ok(Some(n.to_string())),
            Some(other) => Err(Error::Envelope(format!("attribute `{k}` is not a string: {}", super::quote_json(&other)))),
        }
    };
    let mut m = Metadata::blank();
    m.spec_version = text("specversion")?.unwrap_or_default();
    m.id = text("id")?.unwrap_or_default();
    m.source = text("source")?.unwrap_or_default();
    m.event_type = text("type")?.unwrap_or_default();
    m.time = text("time")?
        .map(|t| DateTime::parse_from_rfc3339(&t).map(|t| t.with_timezone(&Utc)).map_err(|e| Error::Envelope(format!("`time` = {}: {e}", super::quote_str(&t)))))
        .transpose()?;
    m.content_type = text("datacontenttype")?;
    m.subject = text("subject")?;
    m.data_schema = text("dataschema")?;
    m.correlation_id = text("correlationid")?;
    m.causation_id = text("causationid")?;
    m.tenant_id = text("tenantid")?;
    m.schema_version = text("schemaversion")?;
    m.check("`", "`")?;
    let data = match (o.remove("data"), o.remove("data_base64")) {
        (Some(_), Some(_)) => return Err(Error::Envelope("structured CloudEvent has both `data` and `data_base64`".into())),
        (Some(Value::Null) | None, None) => b"null".to_vec(),
        // Data that is not JSON reaches handlers as its bytes, as in binary mode.
        (Some(Value::String(s)), None) if !is_json(m.content_type.as_deref()) => s.into_bytes(),
        (Some(data), None) => serde_json::to_vec(&data)?,
        (None, Some(Value::String(b64))) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| Error::Envelope(format!("`data_base64` is not base64: {e}")))?,
        (None, Some(other)) => return Err(Error::Envelope(format!("`data_base64` is not a string: {}", super::quote_json(&other)))),
    };
    m.other_headers = other_headers;
    for (name, value) in o {
        super::add_extension(&mut m, &name, value);
    }
    Ok((m, data))
}
