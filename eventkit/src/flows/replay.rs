//! Replay by time: the records a topic received between two times, delivered again to one
//! group, or to one handler of it (seed 001's "event replay").
//!
//! Each record in the window (per partition, from the first at or after `from` to the first at or
//! after `to`) is copied to the end of its own partition with its key, value and headers, addressed
//! by the same headers a dead letter replay uses (`eventkit-replay-group`, and
//! `eventkit-replay-handler` for one handler; `eventkit-replay-of` names the original record).
//! Other groups skip the copies; the group's committed offsets are never moved back, and its
//! handlers see the copies after what they have handled, in the order of the originals per
//! partition. Copies of earlier replays in the window are not copied again. Each finished
//! replay is journalled on the control topic, so asking for the same replay again is answered
//! with the first one (unless asked `again`): the action is idempotent.

use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use serde::Serialize;

use crate::core::config::Config;
use crate::core::error::{Error, Result};
use crate::flows::dlq::headers;
use crate::flows::publish::Publisher;

/// A replay asked for.
#[derive(Debug, Clone)]
pub struct TimeReplay {
    /// The consumer group id (on the wire).
    pub group: String,
    /// The topic, on the wire.
    pub topic: String,
    /// Only this handler of the group (its name, `module::function`).
    pub handler: Option<String>,
    /// From this time (milliseconds since the epoch), inclusive.
    pub from_ms: i64,
    /// To this time, exclusive.
    pub to_ms: i64,
}

/// One partition's window.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// The partition.
    pub partition: i32,
    /// Its first offset in the window.
    pub from_offset: i64,
    /// One past its last offset in the window.
    pub to_offset: i64,
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TimeReplayReport {
    /// Records delivered again.
    pub replayed: u64,
    /// Copies of earlier replays found in the window, not copied again.
    pub skipped_replays: u64,
    /// The window of each partition.
    pub partitions: Vec<Window>,
}

/// Copies the window's records, addressed to the group (and handler). Returns what it did.
pub(crate) async fn replay(config: &Config, publisher: &Publisher, r: &TimeReplay) -> Result<TimeReplayReport> {
    if r.from_ms >= r.to_ms {
        return Err(Error::Usage(format!("`from` ({} ms) must be before `to` ({} ms)", r.from_ms, r.to_ms)));
    }
    let (config2, topic, (from_ms, to_ms)) = (config.clone(), r.topic.clone(), (r.from_ms, r.to_ms));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Original>(512);
    let reading = tokio::task::spawn_blocking(move || -> Result<(Vec<Window>, u64)> {
        use crate::kafka::offsets;
        let consumer = offsets::reader(&config2, "replay")?;
        let partitions = offsets::partitions(&consumer, &topic)?.ok_or_else(|| Error::NotFound(format!("topic `{topic}` does not exist")))?;
        let starts = offsets::offsets_for_time(&consumer, &topic, &partitions, from_ms)?;
        let ends = offsets::offsets_for_time(&consumer, &topic, &partitions, to_ms)?;
        let windows: Vec<Window> = starts.iter().zip(&ends).map(|(&(partition, from_offset), &(_, to))| Window { partition, from_offset, to_offset: to.max(from_offset) }).collect();
        let ranges: Vec<(i32, i64, i64)> = windows.iter().map(|w| (w.partition, w.from_offset, w.to_offset)).collect();
        let mut skipped = 0;
        offsets::read_range(&consumer, &topic, &ranges, |m| {
            let mut out = OwnedHeaders::new();
            if let Some(hs) = m.headers() {
                if hs.iter().any(|h| h.key == headers::REPLAY_GROUP) {
                    skipped += 1;
                    return Ok(true);
                }
                for h in hs.iter() {
                    out = out.insert(Header { key: h.key, value: h.value });
                }
            }
            let copy = Original { partition: m.partition(), offset: m.offset(), key: m.key().map(<[u8]>::to_vec), value: m.payload().map(<[u8]>::to_vec), headers: out };
            // The receiving side went away (a send failed): stop reading.
            Ok(tx.blocking_send(copy).is_ok())
        })?;
        Ok((windows, skipped))
    });
    let mut pending = Vec::new();
    let mut replayed = 0;
    let mut failed = None;
    while let Some(copy) = rx.recv().await {
        let of = format!("{}/{}/{}", r.topic, copy.partition, copy.offset);
        let mut out = copy.headers;
        out = out.insert(Header { key: headers::REPLAY_OF, value: Some(of.as_str()) });
        out = out.insert(Header { key: headers::REPLAY_GROUP, value: Some(r.group.as_str()) });
        if let Some(handler) = &r.handler {
            out = out.insert(Header { key: headers::REPLAY_HANDLER, value: Some(handler.as_str()) });
        }
        match publisher.enqueue_headers(&r.topic, copy.key.as_deref(), Some(copy.partition), copy.value.as_deref(), out).await {
            Ok(delivery) => pending.push(delivery),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
        if pending.len() >= 1000 {
            replayed += acked(publisher, &r.topic, std::mem::take(&mut pending), &mut failed).await;
            if failed.is_some() {
                break;
            }
        }
    }
    drop(rx);
    replayed += acked(publisher, &r.topic, pending, &mut failed).await;
    let (windows, skipped) = reading.await.map_err(|e| Error::msg(format!("reading `{}`: {e}", r.topic)))??;
    if let Some(e) = failed {
        return Err(Error::msg(format!("the replay stopped after {replayed} records: {e}")));
    }
    Ok(TimeReplayReport { replayed, skipped_replays: skipped, partitions: windows })
}

/// A time as an operator gives it: RFC 3339 (`2026-12-07T09:00:00Z`, an offset allowed) or
/// milliseconds since the epoch. In milliseconds since the epoch.
pub fn parse_time(text: &str) -> std::result::Result<i64, String> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return if ms >= 0 { Ok(ms) } else { Err(format!("`{text}` is before 1970")) };
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("`{text}` is not a time: {e} (RFC 3339, like 2026-12-07T09:00:00Z, or milliseconds since the epoch)"))
}

/// A record to copy.
struct Original {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: OwnedHeaders,
}

/// Waits for the broker's acks of `pending`; counts those acknowledged, keeps the first failure.
async fn acked(publisher: &Publisher, topic: &str, pending: Vec<crate::flows::publish::Delivering>, failed: &mut Option<Error>) -> u64 {
    let mut n = 0;
    for delivery in pending {
        match publisher.acked(topic, delivery).await {
            Ok(_) => n += 1,
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_read_rfc3339_and_milliseconds() {
        assert_eq!(super::parse_time("2026-12-07T09:00:00Z"), Ok(1_796_634_000_000));
        assert_eq!(super::parse_time("2026-12-07T10:00:00+01:00"), Ok(1_796_634_000_000));
        assert_eq!(super::parse_time(" 1796634000000 "), Ok(1_796_634_000_000));
        assert!(super::parse_time("yesterday").unwrap_err().contains("not a time"));
        assert!(super::parse_time("-5").is_err());
    }
}
