//! Dead letters as the CLI and the admin API show them, and the entry selections both read.

use base64::Engine as _;

use super::DeadLetter;

/// `PARTITION:OFFSET`.
pub(crate) fn parse_entry(s: &str) -> std::result::Result<(i32, i64), String> {
    let (p, o) = s.split_once(':').ok_or("expected PARTITION:OFFSET")?;
    Ok((p.parse().map_err(|_| "bad partition")?, o.parse().map_err(|_| "bad offset")?))
}

/// `PARTITION:FROM-TO` (inclusive).
pub(crate) fn parse_range(s: &str) -> std::result::Result<(i32, i64, i64), String> {
    let (p, r) = s.split_once(':').ok_or("expected PARTITION:FROM-TO")?;
    let (from, to) = r.split_once('-').ok_or("expected PARTITION:FROM-TO")?;
    let (p, from, to): (i32, i64, i64) = (p.parse().map_err(|_| "bad partition")?, from.parse().map_err(|_| "bad offset")?, to.parse().map_err(|_| "bad offset")?);
    if from > to {
        return Err(format!("the range {from}-{to} is reversed"));
    }
    Ok((p, from, to))
}

/// Bytes as JSON: text when they are UTF-8, base64 otherwise.
#[derive(serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Data {
    Text(String),
    Base64(String),
}

impl Data {
    fn of(bytes: Option<&[u8]>) -> Option<Data> {
        bytes.map(|b| match std::str::from_utf8(b) {
            Ok(text) => Data::Text(text.to_owned()),
            Err(_) => Data::Base64(base64::engine::general_purpose::STANDARD.encode(b)),
        })
    }
}

#[derive(serde::Serialize)]
struct ListedHeader<'a> {
    name: &'a str,
    value: Option<Data>,
}

/// A listed entry for `--json`: every field, with keys, values and headers losslessly.
#[derive(serde::Serialize)]
pub(crate) struct Listed<'a> {
    partition: i32,
    offset: i64,
    kind: &'a str,
    error: &'a str,
    attempts: u32,
    group: &'a str,
    handler: &'a str,
    event_type: Option<&'a str>,
    event_id: Option<&'a str>,
    topic: &'a str,
    original_partition: i32,
    original_offset: i64,
    timestamp_ms: Option<i64>,
    first_failure: &'a str,
    last_failure: &'a str,
    replayed: bool,
    value_omitted: Option<usize>,
    key: Option<Data>,
    value: Option<Data>,
    headers: Vec<ListedHeader<'a>>,
}

impl<'a> From<&'a DeadLetter> for Listed<'a> {
    fn from(d: &'a DeadLetter) -> Self {
        Listed {
            partition: d.partition,
            offset: d.offset,
            kind: &d.kind,
            error: &d.error,
            attempts: d.attempts,
            group: &d.group,
            handler: &d.handler,
            event_type: d.event_type.as_deref(),
            event_id: d.event_id.as_deref(),
            topic: &d.topic,
            original_partition: d.original_partition,
            original_offset: d.original_offset,
            timestamp_ms: d.timestamp_ms,
            first_failure: &d.first_failure,
            last_failure: &d.last_failure,
            replayed: d.replayed,
            value_omitted: d.value_omitted,
            key: Data::of(d.key.as_deref()),
            value: Data::of(d.value.as_deref()),
            headers: d.headers.iter().map(|(name, value)| ListedHeader { name, value: Data::of(value.as_deref()) }).collect(),
        }
    }
}
