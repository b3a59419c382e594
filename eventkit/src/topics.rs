//! Topic settings and topic creation.
//!
//! Each topic's settings come from the events published there (`#[integration_event(partitions
//! = 12, replication = 3, retention = "7d", cleanup_policy = "compact", compression = "zstd")]`),
//! then from configuration (`EVENTKIT_TOPIC_SETTINGS`, [`crate::AppBuilder::topic_settings`]),
//! which wins. Dead letter topics get their own retention (`EVENTKIT_DLQ_RETENTION`, default 30
//! days). They are applied when eventkit creates a topic; where an existing topic differs from
//! what is declared (fewer partitions, another retention, cleanup policy or compression), a
//! warning names it at startup: eventkit never alters a topic.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::broker::EmbeddedBroker;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::kafka::KitContext;
use crate::registry::Registry;

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
    fn check(&self, topic: &str) -> Result<()> {
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
    fn merge(&mut self, other: &TopicConfig) -> std::result::Result<(), &'static str> {
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
    fn overridden(mut self, over: &TopicConfig) -> TopicConfig {
        self.partitions = over.partitions.or(self.partitions);
        self.replication = over.replication.or(self.replication);
        self.retention_ms = over.retention_ms.or(self.retention_ms);
        self.cleanup_policy = over.cleanup_policy.clone().or(self.cleanup_policy);
        self.compression = over.compression.clone().or(self.compression);
        self
    }

    /// The topic configuration entries to create with.
    fn entries(&self) -> Vec<(&'static str, String)> {
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

/// Each topic's declared settings (by wire name): events' settings merged, configuration over
/// them. Declared only: what is left open is the broker's or eventkit's default.
pub(crate) fn declared(registry: &Registry, config: &Config) -> Result<BTreeMap<String, TopicConfig>> {
    let mut out: BTreeMap<String, (TopicConfig, &'static str)> = BTreeMap::new();
    let mut problems = Vec::new();
    for e in registry.events() {
        let topic = config.topic_name(e.topic);
        let mine = TopicConfig::from(e.settings);
        match out.get_mut(&topic) {
            None => {
                out.insert(topic, (mine, e.rust_name));
            }
            Some((merged, first)) => {
                if let Err(setting) = merged.merge(&mine) {
                    problems.push(format!("`{first}` and `{}` declare different `{setting}` for topic `{topic}`", e.rust_name));
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::Registry(format!("{}: declare it on one of them, or in EVENTKIT_TOPIC_SETTINGS", problems.join("; "))));
    }
    let mut declared: BTreeMap<String, TopicConfig> = out.into_iter().map(|(t, (s, _))| (t, s)).collect();
    for (topic, over) in &config.topic_settings {
        let wire = config.topic_name(topic);
        let entry = declared.remove(&wire).unwrap_or_default();
        declared.insert(wire, entry.overridden(over));
    }
    Ok(declared)
}

/// Creates the missing topics among `topics` with their settings (dead letter topics with
/// their own retention), then warns about existing ones that differ from what is declared.
pub(crate) async fn create(config: &Config, registry: &Registry, broker: Option<&EmbeddedBroker>, topics: &[String], dlq_topics: &[String]) -> Result<()> {
    let declared = declared(registry, config)?;
    let dlq_ms = if config.dlq_retention == Duration::MAX { -1 } else { config.dlq_retention.as_millis().min(i64::MAX as u128) as i64 };
    let dlq = TopicConfig { retention_ms: Some(dlq_ms), ..Default::default() };
    let markers: Vec<String> = dlq_topics.iter().map(|t| crate::dlq::markers_topic(t)).collect();
    let settings = |t: &String| -> TopicConfig {
        if markers.contains(t) {
            markers_config()
        } else if dlq_topics.contains(t) {
            dlq.clone().overridden(declared.get(t).unwrap_or(&TopicConfig::default()))
        } else {
            declared.get(t).cloned().unwrap_or_default()
        }
    };
    let all: Vec<&String> = topics.iter().chain(dlq_topics).chain(&markers).collect();
    if let Some(broker) = broker {
        for t in all {
            broker.create_topic(t, settings(t).partitions.unwrap_or(config.topic_partitions))?;
        }
        return Ok(());
    }
    if all.is_empty() {
        return Ok(());
    }
    let admin = admin_client(config)?;
    type Resolved<'a> = (&'a String, TopicConfig, Vec<(&'static str, String)>);
    let resolved: Vec<Resolved<'_>> = all
        .iter()
        .map(|t| {
            let s = settings(t);
            let entries = s.entries();
            (*t, s, entries)
        })
        .collect();
    let new: Vec<NewTopic<'_>> = resolved.iter().map(|(t, s, entries)| new_topic(t, s, entries, config)).collect();
    let results = match admin.create_topics(&new, &create_options()).await {
        Ok(results) => results,
        Err(e) => {
            let why = match e.rdkafka_error_code() {
                Some(RDKafkaErrorCode::UnsupportedVersion | RDKafkaErrorCode::InvalidRequest) => "the cluster has no CreateTopics API",
                _ if crate::kafka::outage::is_connection_error(&e) => "the cluster did not answer",
                _ => "the request failed",
            };
            warn!(error = %e, topics = ?all, "cannot create topics ({why}); relying on existing topics or the broker's auto-creation (EVENTKIT_CREATE_TOPICS=false stops trying)");
            return Ok(());
        }
    };
    for (result, (_, s, _)) in results.into_iter().zip(&resolved) {
        match result {
            Ok(topic) => info!(%topic, partitions = s.partitions.unwrap_or(config.topic_partitions), settings = ?s.entries(), "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code @ (RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::ClusterAuthorizationFailed))) => warn!(
                %topic, error = %code,
                "not authorized to create topic: create it beforehand or grant CREATE on it (EVENTKIT_CREATE_TOPICS=false stops trying)"
            ),
            Err((topic, code)) => warn!(%topic, error = %code, "could not create topic; relying on existing topics or the broker's auto-creation"),
        }
    }
    check_existing(&admin, &declared).await;
    Ok(())
}

/// The settings of a dead letter topic's replay markers topic: compacted, one partition.
fn markers_config() -> TopicConfig {
    TopicConfig { partitions: Some(1), cleanup_policy: Some("compact".into()), ..Default::default() }
}

/// An admin client for `config`'s cluster.
fn admin_client(config: &Config) -> Result<AdminClient<KitContext>> {
    let mut client = crate::kafka::client_config(config)?;
    crate::kafka::apply_overrides(&mut client, config, crate::kafka::Client::Admin);
    Ok(client.create_with_context(KitContext)?)
}

/// A topic to create with settings `s` (and their configuration `entries`).
fn new_topic<'a>(name: &'a str, s: &TopicConfig, entries: &'a [(&'static str, String)], config: &Config) -> NewTopic<'a> {
    let replication = TopicReplication::Fixed(s.replication.map_or(-1, i32::from));
    entries.iter().fold(NewTopic::new(name, s.partitions.unwrap_or(config.topic_partitions), replication), |n, (k, v)| n.set(k, v))
}

fn create_options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))).request_timeout(Some(Duration::from_secs(10)))
}

/// Creates a replay markers topic (see [`crate::dlq`]); a cluster that cannot create it is
/// left to its auto-creation.
pub(crate) async fn create_markers_topic(config: &Config, name: &str) -> Result<()> {
    let admin = admin_client(config)?;
    let settings = markers_config();
    let entries = settings.entries();
    match admin.create_topics(&[new_topic(name, &settings, &entries, config)], &create_options()).await {
        Ok(results) => {
            for r in results {
                match r {
                    Ok(t) => info!(topic = %t, "replay markers topic created"),
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((t, code)) => warn!(topic = %t, error = %code, "cannot create the replay markers topic; relying on the broker's auto-creation"),
                }
            }
        }
        Err(e) => debug!(error = %e, topic = name, "cannot create the replay markers topic; relying on the broker's auto-creation"),
    }
    Ok(())
}

/// Warns about each existing topic that differs from its declared settings.
async fn check_existing(admin: &AdminClient<KitContext>, declared: &BTreeMap<String, TopicConfig>) {
    let timeout = Duration::from_secs(10);
    for (topic, want) in declared {
        if let Some(partitions) = want.partitions {
            let metadata = admin.inner().fetch_metadata(Some(topic), timeout);
            if let Ok(m) = metadata {
                if let Some(t) = m.topics().first().filter(|t| t.error().is_none()) {
                    let have = t.partitions().len() as i32;
                    if have < partitions {
                        warn!(%topic, partitions = have, declared = partitions, "topic has fewer partitions than declared: fewer consumers can share it (add partitions with your Kafka tools; keys then move to other partitions)");
                    }
                }
            }
        }
    }
    let wanted: Vec<(&String, Vec<(&'static str, String)>)> = declared.iter().map(|(t, s)| (t, s.entries())).filter(|(_, e)| !e.is_empty()).collect();
    if wanted.is_empty() {
        return;
    }
    let resources: Vec<ResourceSpecifier<'_>> = wanted.iter().map(|(t, _)| ResourceSpecifier::Topic(t)).collect();
    let options = AdminOptions::new().request_timeout(Some(timeout));
    let described = match admin.describe_configs(&resources, &options).await {
        Ok(d) => d,
        Err(e) => {
            debug!(error = %e, "cannot describe topic configurations; their settings are not compared");
            return;
        }
    };
    for (result, (topic, entries)) in described.into_iter().zip(&wanted) {
        let Ok(resource) = result else { continue };
        for (name, want) in entries {
            let have = resource.get(name).and_then(|e| e.value.clone());
            if let Some(have) = have.filter(|h| h != want) {
                warn!(%topic, setting = name, value = %have, declared = %want, "topic setting differs from what is declared (eventkit never alters a topic)");
            }
        }
    }
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
