//! Topic settings: what events declare for their topics and configuration overrides.
//!
//! Each topic's settings come from the events published there (`#[integration_event(partitions
//! = 12, replication = 3, retention = "7d", cleanup_policy = "compact", compression = "zstd")]`),
//! then from configuration (`EVENTKIT_TOPIC_SETTINGS`, [`crate::AppBuilder::topic_settings`]),
//! which wins. Dead letter topics get their own retention (`EVENTKIT_DLQ_RETENTION`, default 30
//! days). They are applied when eventkit creates a topic; where an existing topic differs from
//! what is declared (fewer partitions, another retention, cleanup policy or compression), a
//! warning names it at startup: eventkit never alters a topic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::error::{Error, Result};

/// Settings an event declares for its topic (`#[integration_event(...)]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TopicSettings {
    /// Partitions of the topic.
    pub partitions: Option<i32>,
    /// Copies of each partition.
    pub replication: Option<i16>,
    /// `retention.ms` (`-1`: forever).
    pub retention_ms: Option<i64>,
    /// `cleanup.policy`: `delete`, `compact` or `compact,delete`.
    pub cleanup_policy: Option<&'static str>,
    /// `compression.type`: `none`, `gzip`, `snappy`, `lz4`, `zstd` or `producer`.
    pub compression: Option<&'static str>,
}

/// A topic's settings as configured (`EVENTKIT_TOPIC_SETTINGS` is a JSON object of these by
/// topic, e.g. `{"orders.v1": {"partitions": 12, "retention": "7d"}}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Partitions of the topic.
    pub partitions: Option<i32>,
    /// Copies of each partition.
    pub replication: Option<i16>,
    /// Retention: `"7d"`, `"12h"`, `"30m"`, `"90s"`, `"500ms"` or `"forever"`.
    #[serde(default, rename = "retention", with = "retention", skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<i64>,
    /// `cleanup.policy`.
    pub cleanup_policy: Option<String>,
    /// `compression.type`.
    pub compression: Option<String>,
}

mod retention {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => s.serialize_i64(*ms),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| super::parse_retention(&t).map_err(serde::de::Error::custom)).transpose()
    }
}

/// `"7d"`, `"12h"`, `"30m"`, `"90s"`, `"500ms"` or `"forever"` in milliseconds (`-1`: forever).
pub(crate) fn parse_retention(text: &str) -> std::result::Result<i64, String> {
    let usage = || format!("expected a retention like \"7d\", \"12h\", \"30m\" or \"forever\"; got {text:?}");
    let t = text.trim();
    if t == "forever" {
        return Ok(-1);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: i64 = n.parse().map_err(|_| usage())?;
    let factor: i64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        _ => return Err(usage()),
    };
    n.checked_mul(factor).filter(|ms| *ms > 0).ok_or_else(usage)
}

impl TopicConfig {
    pub(crate) fn check(&self, topic: &str) -> Result<()> {
        let bad = |what: String| Err(Error::Config(format!("topic settings of `{topic}`: {what}")));
        if self.partitions.is_some_and(|p| p < 1) {
            return bad("`partitions` is at least 1".into());
        }
        if self.replication.is_some_and(|r| r < 1) {
            return bad("`replication` is at least 1".into());
        }
        if let Some(p) = self.cleanup_policy.as_deref().filter(|p| !matches!(*p, "delete" | "compact" | "compact,delete")) {
            return bad(format!("unknown cleanup_policy {p:?}: expected \"delete\", \"compact\" or \"compact,delete\""));
        }
        if let Some(c) = self.compression.as_deref().filter(|c| !matches!(*c, "none" | "gzip" | "snappy" | "lz4" | "zstd" | "producer")) {
            return bad(format!("unknown compression {c:?}: expected none, gzip, snappy, lz4, zstd or producer"));
        }
        Ok(())
    }

    /// Fills what `self` leaves open from `other`; `Err` names a setting both give differently.
    pub(crate) fn merge(&mut self, other: &TopicConfig) -> std::result::Result<(), &'static str> {
        fn one<T: PartialEq + Clone>(mine: &mut Option<T>, theirs: &Option<T>, name: &'static str) -> std::result::Result<(), &'static str> {
            match (mine.as_ref(), theirs) {
                (Some(a), Some(b)) if a != b => Err(name),
                (None, Some(b)) => {
                    *mine = Some(b.clone());
                    Ok(())
                }
                _ => Ok(()),
            }
        }
        one(&mut self.partitions, &other.partitions, "partitions")?;
        one(&mut self.replication, &other.replication, "replication")?;
        one(&mut self.retention_ms, &other.retention_ms, "retention")?;
        one(&mut self.cleanup_policy, &other.cleanup_policy, "cleanup_policy")?;
        one(&mut self.compression, &other.compression, "compression")
    }

    /// Overrides with what `over` sets.
    pub(crate) fn overridden(mut self, over: &TopicConfig) -> TopicConfig {
        self.partitions = over.partitions.or(self.partitions);
        self.replication = over.replication.or(self.replication);
        self.retention_ms = over.retention_ms.or(self.retention_ms);
        self.cleanup_policy = over.cleanup_policy.clone().or(self.cleanup_policy);
        self.compression = over.compression.clone().or(self.compression);
        self
    }

    /// The topic configuration entries to create with.
    pub(crate) fn entries(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(ms) = self.retention_ms {
            out.push(("retention.ms", ms.to_string()));
        }
        if let Some(p) = &self.cleanup_policy {
            out.push(("cleanup.policy", p.clone()));
        }
        if let Some(c) = &self.compression {
            out.push(("compression.type", c.clone()));
        }
        out
    }
}

impl From<TopicSettings> for TopicConfig {
    fn from(s: TopicSettings) -> Self {
        TopicConfig {
            partitions: s.partitions,
            replication: s.replication,
            retention_ms: s.retention_ms,
            cleanup_policy: s.cleanup_policy.map(Into::into),
            compression: s.compression.map(Into::into),
        }
    }
}

/// Parses `EVENTKIT_TOPIC_SETTINGS`.
pub(crate) fn parse_settings(name: &str, value: &str) -> Result<BTreeMap<String, TopicConfig>> {
    let map: BTreeMap<String, TopicConfig> =
        serde_json::from_str(value).map_err(|e| Error::Config(format!("{name}: {e} (expected e.g. {{\"orders.v1\": {{\"partitions\": 12, \"retention\": \"7d\"}}}})")))?;
    for (topic, settings) in &map {
        settings.check(topic)?;
    }
    Ok(map)
}


/// The settings of a dead letter topic's replay markers topic: compacted, one partition.
pub(crate) fn markers_config() -> TopicConfig {
    TopicConfig { partitions: Some(1), cleanup_policy: Some("compact".into()), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_reads_units_and_forever() {
        assert_eq!(parse_retention("7d"), Ok(7 * 86_400_000));
        assert_eq!(parse_retention("90s"), Ok(90_000));
        assert_eq!(parse_retention("forever"), Ok(-1));
        assert!(parse_retention("7 days").is_err());
        assert!(parse_retention("0d").is_err());
    }

    #[test]
    fn configured_settings_are_json_by_topic_and_checked() {
        let map = parse_settings("EVENTKIT_TOPIC_SETTINGS", r#"{"orders": {"partitions": 12, "retention": "2d", "cleanup_policy": "compact"}}"#).unwrap();
        assert_eq!(map["orders"].partitions, Some(12));
        assert_eq!(map["orders"].retention_ms, Some(2 * 86_400_000));
        for bad in [r#"{"orders": {"partitions": 0}}"#, r#"{"orders": {"cleanup_policy": "sometimes"}}"#, r#"{"orders": {"retention": "soon"}}"#, r#"{"orders": {"colour": 1}}"#] {
            assert!(parse_settings("EVENTKIT_TOPIC_SETTINGS", bad).is_err(), "{bad}");
        }
    }
}
