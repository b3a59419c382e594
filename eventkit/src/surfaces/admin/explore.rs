//! The record explorer: `GET /explore` reads the records of one partition, from an offset or a
//! time, decoded where the service knows their event type; `POST /explore/republish` publishes
//! one of them again, as it is (same key, value and headers, so the same event id: consumers
//! see a redelivery, which the inbox drops where it is installed). Its reach is the service's
//! own topics (its events' and its groups') and, for reading, their dead letter queues.
//!
//! With `EVENTKIT_ADMIN_PAYLOADS=masked` neither values nor payloads leave the service (each
//! record says `"masked": true`), nor any header but those that name and place an event (the
//! CloudEvents id, type, source, time and versions, content type, trace context, eventkit's own
//! headers but an error's text); keys and event types do. The dead letter listing masks
//! the same way ([`mask_listed`]).

use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use bytes::Bytes;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use serde::Deserialize;
use serde_json::{json, Value};

use super::access::{self, Audited};
use super::{Admin, ApiError, ApiResult};
use crate::core::config::{Config, PayloadVisibility};
use crate::core::envelope::RecordInfo;
use crate::kafka::offsets;

/// Records per request: by default, and at most.
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 200;

/// The bytes of records one answer reads, at most (past the first record): a page of large
/// records stops early, and its `next` says where the following one starts.
const MAX_BYTES: usize = 8 << 20;

/// The headers shown when payloads are masked (an allow-list: a name cannot say whether a
/// header carries data or a secret): the CloudEvents attributes that name and place an event,
/// the content type, trace context, and eventkit's own headers, except an error's text (a
/// decode error quotes the data it could not read).
pub(super) fn shown_when_masked(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(name.as_str(), "ce_id" | "ce_type" | "ce_source" | "ce_specversion" | "ce_time" | "ce_schemaversion" | "ce_datacontenttype" | "content-type" | "traceparent")
        || (name.starts_with("eventkit-") && !name.contains("error"))
}

/// The query of `GET /explore`: every value as text, so that a bad one is refused by name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExploreQuery {
    topic: Option<String>,
    partition: Option<String>,
    offset: Option<String>,
    time: Option<String>,
    limit: Option<String>,
}

/// Where a read starts.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// The last `limit` records.
    Latest,
    Offset(i64),
    /// The first record at or after this time (ms since the epoch).
    Time(i64),
}

fn bad(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message).field(field)
}

/// A topic name Kafka allows (`a-z A-Z 0-9 . _ -`, at most 249, not `.` or `..`).
fn topic_name(field: &str, topic: Option<&str>) -> std::result::Result<String, ApiError> {
    let topic = topic.filter(|t| !t.is_empty()).ok_or_else(|| bad(field, format!("`{field}` is required")))?;
    if !super::legal_topic(topic, 249) {
        return Err(bad(field, format!("{topic:?} is not a topic name: 1 to 249 of a-z, A-Z, 0-9, `.`, `_` and `-`, not `.` or `..`")));
    }
    Ok(topic.to_owned())
}

/// What a topic is for the explorer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// One of this service's topics: read and republish.
    Own,
    /// The dead letter queue of one: read only.
    DeadLetters,
}

impl Admin {
    /// The names a topic may have on the wire, most likely first (as events declare it, with
    /// the topic prefix, then as given), among this service's topics (its events' and its
    /// groups') and their dead letter queues only: the control and status topics, other
    /// services' topics and Kafka's own are not the explorer's to read or write. None: 404.
    fn wire_candidates(&self, topic: &str, need: Reach) -> std::result::Result<Vec<String>, ApiError> {
        let declared = self.config.topic_name(&self.declared_topic(topic));
        let candidates = if declared == topic { vec![declared] } else { vec![declared, topic.to_owned()] };
        let mut own: std::collections::BTreeSet<String> = crate::app::topics::declared(&self.registry, &self.config).map(|d| d.into_keys().collect()).unwrap_or_default();
        for plan in self.registry.groups(&self.config) {
            own.extend(plan.topics);
        }
        let reach = |t: &String| {
            if own.contains(t) {
                Some(Reach::Own)
            } else if own.iter().any(|o| &self.config.dlq_topic(o) == t) {
                Some(Reach::DeadLetters)
            } else {
                None
            }
        };
        let known: Vec<(String, Reach)> = candidates.into_iter().filter_map(|t| reach(&t).map(|r| (t, r))).collect();
        if known.is_empty() {
            let mut names: Vec<&String> = own.iter().collect();
            names.sort();
            let names: Vec<&str> = names.into_iter().map(String::as_str).collect();
            return Err(ApiError::new(StatusCode::NOT_FOUND, format!("`{topic}` is not one of this service's topics or their dead letter queues ({})", names.join(", "))).field("topic"));
        }
        if need == Reach::Own && known.iter().all(|(_, r)| *r == Reach::DeadLetters) {
            return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("`{topic}` is a dead letter queue: republish to its topic, or replay the dead letter (POST /dlq/replay)")).field("topic"));
        }
        Ok(known.into_iter().filter(|(_, r)| need == Reach::DeadLetters || *r == Reach::Own).map(|(t, _)| t).collect())
    }
}

/// A record as read, owned.
struct Raw {
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Raw {
    fn of(m: &rdkafka::message::BorrowedMessage<'_>) -> Raw {
        let headers = m.headers().map(|h| h.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect()).unwrap_or_default();
        Raw { partition: m.partition(), offset: m.offset(), timestamp_ms: m.timestamp().to_millis(), key: m.key().map(<[u8]>::to_vec), value: m.payload().map(<[u8]>::to_vec), headers }
    }

    /// Its bytes: key, value and headers.
    fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len) + self.value.as_ref().map_or(0, Vec::len) + self.headers.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len)).sum::<usize>()
    }

    fn owned_headers(&self) -> OwnedHeaders {
        self.headers.iter().fold(OwnedHeaders::new_with_capacity(self.headers.len()), |out, (key, value)| out.insert(Header { key, value: value.as_deref() }))
    }
}

/// What a read found: the topic on the wire, the partition's watermarks, where it started.
struct Found {
    topic: String,
    low: i64,
    high: i64,
    from: i64,
    records: Vec<Raw>,
}

/// The topic among `candidates` that exists, and its partitions: 404 when none does, 400 (or
/// `status`) naming `partition` when it has no such partition.
fn locate(consumer: &rdkafka::consumer::BaseConsumer<crate::kafka::KitContext>, candidates: &[String], partition: i32, status: StatusCode) -> std::result::Result<String, ApiError> {
    for topic in candidates {
        if let Some(ids) = offsets::partitions(consumer, topic)? {
            if !ids.contains(&partition) {
                return Err(ApiError::new(status, format!("topic `{topic}` has no partition {partition} (it has {})", ids.len())).field("partition"));
            }
            return Ok(topic.clone());
        }
    }
    Err(ApiError::new(StatusCode::NOT_FOUND, format!("no topic `{}` on the cluster", candidates.last().map(String::as_str).unwrap_or_default())).field("topic"))
}

/// Reads up to `limit` records of one partition from `start` (blocking).
fn read(config: &Config, candidates: &[String], partition: i32, start: Start, limit: usize) -> std::result::Result<Found, ApiError> {
    let consumer = offsets::reader(config, "explorer")?;
    let topic = locate(&consumer, candidates, partition, StatusCode::BAD_REQUEST)?;
    let (low, high) = offsets::watermarks(&consumer, &topic, partition)?;
    let from = match start {
        Start::Latest => (high - limit as i64).max(low),
        Start::Offset(o) => o.clamp(low, high),
        Start::Time(ms) => offsets::offsets_for_time(&consumer, &topic, &[partition], ms)?.first().map_or(high, |&(_, o)| o),
    };
    let (mut records, mut bytes) = (Vec::new(), 0usize);
    offsets::read_range(&consumer, &topic, &[(partition, from, high)], |m| {
        let raw = Raw::of(m);
        bytes += raw.size();
        records.push(raw);
        // At least one record, then no more than the byte budget (`next` says where to go on).
        Ok(records.len() < limit && bytes < MAX_BYTES)
    })?;
    Ok(Found { topic, low, high, from, records })
}

/// Reads the one record at `offset` (blocking): 404 naming `offset` when there is none.
fn read_one(config: &Config, candidates: &[String], partition: i32, offset: i64) -> std::result::Result<(String, Raw), ApiError> {
    let consumer = offsets::reader(config, "explorer")?;
    let topic = locate(&consumer, candidates, partition, StatusCode::UNPROCESSABLE_ENTITY)?;
    let (low, high) = offsets::watermarks(&consumer, &topic, partition)?;
    let missing = || ApiError::new(StatusCode::NOT_FOUND, format!("{topic}[{partition}] has no record at offset {offset} (its records are at {low}..{high})")).field("offset");
    if offset < low || offset >= high {
        return Err(missing());
    }
    let mut found = None;
    offsets::read_range(&consumer, &topic, &[(partition, offset, offset + 1)], |m| {
        if m.offset() == offset {
            found = Some(Raw::of(m));
        }
        Ok(false)
    })?;
    found.map(|r| (topic.clone(), r)).ok_or_else(missing)
}

/// Bytes as text when they are UTF-8 (`"text"`), base64 otherwise (`"base64"`).
fn text_or_base64(bytes: &[u8]) -> (Value, &'static str) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (Value::String(text.to_owned()), "text"),
        Err(_) => (Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)), "base64"),
    }
}

/// One record as the explorer shows it.
fn show(admin: &Admin, topic: &str, hints: &crate::wire::TopicHints, r: &Raw, masked: bool) -> Value {
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let headers: Vec<Value> = r
        .headers
        .iter()
        .filter(|(name, _)| !masked || shown_when_masked(name))
        .map(|(name, value)| json!({ "name": name, "value": value.as_deref().map(lossy) }))
        .collect();
    let mut out = json!({
        "partition": r.partition,
        "offset": r.offset,
        "timestamp_ms": r.timestamp_ms,
        "time": r.timestamp_ms.and_then(chrono::DateTime::from_timestamp_millis).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        "key": r.key.as_deref().map(lossy),
        "headers": headers,
    });
    let value = Bytes::from(r.value.clone().unwrap_or_default());
    let info = RecordInfo { topic: topic.into(), partition: r.partition, offset: r.offset, key: r.key.clone().map(Bytes::from), timestamp_ms: r.timestamp_ms };
    let decoded = crate::wire::decode(&r.owned_headers(), &value, &info, hints);
    let (event_type, event_id) = match &decoded {
        Ok(Some(d)) => (Some(d.metadata.event_type.clone()).filter(|t| !t.is_empty()), Some(d.metadata.id.clone())),
        _ => {
            let plain: Vec<(String, Vec<u8>)> = r.headers.iter().map(|(k, v)| (k.clone(), v.clone().unwrap_or_default())).collect();
            crate::wire::peek_type_and_id(&plain, &value)
        }
    };
    out["event_type"] = json!(event_type);
    out["event_id"] = json!(event_id);
    // The event as its type reads it, when the service knows the type and the data fits it.
    let mut known = None;
    let mut why = None;
    if let Ok(Some(d)) = &decoded {
        if let Some(event) = admin.registry.event(&d.metadata.event_type) {
            out["format"] = json!(d.format);
            match serde_json::from_slice::<Value>(&d.data) {
                Ok(data) => match (event.from_json)(data.clone()) {
                    Ok(_) => known = Some(data),
                    Err((path, message)) => why = Some(if path.is_empty() { message } else { format!("{path}: {message}") }),
                },
                Err(e) => why = Some(format!("the data is not JSON: {e}")),
            }
        }
    } else if let Err(e) = &decoded {
        why = Some(e.to_string());
    }
    out["decoded"] = json!(known.is_some());
    // Why it did not decode may quote the data: not when payloads are masked.
    if let Some(why) = why.filter(|_| !masked) {
        out["decode_error"] = json!(why);
    }
    if masked {
        out["masked"] = json!(true);
    } else if let Some(data) = known {
        out["value"] = data;
    } else {
        let (payload, encoding) = match &r.value {
            Some(bytes) => text_or_base64(bytes),
            None => (Value::Null, "null"),
        };
        out["payload"] = payload;
        out["payload_encoding"] = json!(encoding);
    }
    out
}

/// `GET /explore?topic=T&partition=P&offset=O|time=T&limit=N`.
pub(super) async fn explore(State(admin): State<Arc<Admin>>, query: std::result::Result<Query<ExploreQuery>, axum::extract::rejection::QueryRejection>) -> ApiResult {
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let topic = topic_name("topic", q.topic.as_deref())?;
    let partition = match q.partition.as_deref() {
        None | Some("") => 0,
        Some(p) => p.trim().parse::<i32>().ok().filter(|p| *p >= 0).ok_or_else(|| bad("partition", format!("`partition` is a partition number, not {p:?}")))?,
    };
    let limit = match q.limit.as_deref() {
        None | Some("") => DEFAULT_LIMIT,
        Some(l) => l.trim().parse::<usize>().ok().filter(|l| *l > 0).ok_or_else(|| bad("limit", format!("`limit` is a number of records (1 to {MAX_LIMIT}), not {l:?}")))?.min(MAX_LIMIT),
    };
    let start = match (q.offset.as_deref().filter(|o| !o.is_empty()), q.time.as_deref().filter(|t| !t.is_empty())) {
        (Some(_), Some(_)) => return Err(bad("time", "give `offset` or `time`, not both")),
        (Some(o), None) => Start::Offset(o.trim().parse::<i64>().ok().filter(|o| *o >= 0).ok_or_else(|| bad("offset", format!("`offset` is an offset (a number from 0), not {o:?}")))?),
        (None, Some(t)) => Start::Time(crate::flows::replay::parse_time(t).map_err(|e| bad("time", format!("`time` is RFC 3339 or milliseconds since the epoch: {e}")))?),
        (None, None) => Start::Latest,
    };
    let candidates = admin.wire_candidates(&topic, Reach::DeadLetters)?;
    let _turn = admin.slow_turn()?;
    let config = admin.config.clone();
    let found = tokio::task::spawn_blocking(move || read(&config, &candidates, partition, start, limit))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let masked = admin.config.admin.payloads == PayloadVisibility::Masked;
    let hints = admin.registry.topic_hints(&admin.config).remove(&found.topic).unwrap_or_default();
    let records: Vec<Value> = found.records.iter().map(|r| show(&admin, &found.topic, &hints, r, masked)).collect();
    let next = found.records.last().map_or(found.from, |r| r.offset + 1);
    Ok(Json(json!({
        "topic": found.topic,
        "partition": partition,
        "low": found.low,
        "high": found.high,
        "from": found.from,
        "next": next,
        "limit": limit,
        "masked": masked,
        "records": records,
    }))
    .into_response())
}

/// The body of `POST /explore/republish`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RepublishBody {
    topic: String,
    partition: i32,
    offset: i64,
}

/// `POST /explore/republish`: the record at `topic[partition]@offset`, published again.
pub(super) async fn republish(State(admin): State<Arc<Admin>>, request: Request) -> ApiResult {
    let b: RepublishBody = access::json_body(&admin, "explore/republish", request).await?;
    let audited = Audited(format!("topic={:?} partition={} offset={}", b.topic, b.partition, b.offset));
    let mut response = republish_body(&admin, b).await.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(audited);
    Ok(response)
}

async fn republish_body(admin: &Admin, b: RepublishBody) -> std::result::Result<Response, ApiError> {
    let invalid = |field: &str, e: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e).field(field);
    let topic = topic_name("topic", Some(&b.topic)).map_err(|e| invalid("topic", e.message))?;
    if b.partition < 0 {
        return Err(invalid("partition", format!("`partition` is a partition number, not {}", b.partition)));
    }
    if b.offset < 0 {
        return Err(invalid("offset", format!("`offset` is an offset (a number from 0), not {}", b.offset)));
    }
    let publisher = admin.publisher()?;
    let candidates = admin.wire_candidates(&topic, Reach::Own)?;
    let _turn = admin.slow_turn()?;
    let config = admin.config.clone();
    let (partition, offset) = (b.partition, b.offset);
    let (topic, record) = tokio::task::spawn_blocking(move || read_one(&config, &candidates, partition, offset))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    // The same partition: the record follows its original there, as a redelivery would.
    let (new_partition, new_offset) = publisher.send_headers(&topic, record.key.as_deref(), Some(partition), record.value.as_deref(), record.owned_headers()).await?;
    let plain: Vec<(String, Vec<u8>)> = record.headers.iter().map(|(k, v)| (k.clone(), v.clone().unwrap_or_default())).collect();
    let (event_type, event_id) = crate::wire::peek_type_and_id(&plain, record.value.as_deref().unwrap_or_default());
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "topic": topic,
            "from": { "partition": partition, "offset": offset },
            "partition": new_partition,
            "offset": new_offset,
            "event_type": event_type,
            "event_id": event_id,
        })),
    )
        .into_response())
}

/// A dead letter as `GET /dlq` lists it, masked: without its value, its error's text (which can
/// quote the data) and the headers [`shown_when_masked`] leaves out; its kind stays.
pub(super) fn mask_listed(entry: &mut Value) {
    let Value::Object(fields) = entry else { return };
    fields.remove("value");
    fields.remove("value_omitted");
    fields.remove("error");
    if let Some(Value::Array(headers)) = fields.get_mut("headers") {
        headers.retain(|h| h["name"].as_str().is_some_and(shown_when_masked));
    }
    fields.insert("masked".into(), Value::Bool(true));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_records_show_only_the_headers_that_name_and_place_an_event() {
        for name in ["ce_type", "CE_ID", "traceparent", "content-type", "eventkit-dlq-kind", "eventkit-dlq-topic"] {
            assert!(shown_when_masked(name), "{name}");
        }
        for name in ["Authorization", "x-api-key", "x-jwt", "x-access-key", "cookie", "x-tenant", "ce_subject", "eventkit-dlq-error"] {
            assert!(!shown_when_masked(name), "{name}");
        }
    }

    #[test]
    fn a_masked_dead_letter_keeps_its_key_and_plain_headers() {
        let mut entry = json!({ "key": { "text": "k" }, "value": { "text": "secret" }, "value_omitted": null, "error": "invalid type: string \"secret\"", "headers": [{ "name": "ce_type", "value": { "text": "T" } }, { "name": "authorization", "value": { "text": "Bearer x" } }] });
        mask_listed(&mut entry);
        assert_eq!(entry, json!({ "key": { "text": "k" }, "headers": [{ "name": "ce_type", "value": { "text": "T" } }], "masked": true }));
    }
}
