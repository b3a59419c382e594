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

use crate::core::config::Config;
use crate::core::error::{Error, Result};
use crate::core::topic_settings::TopicConfig;
use crate::flows::registry::Registry;
use crate::kafka::embedded::EmbeddedBroker;


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

/// Creates the app's missing topics: those its events and groups use, (with the dead letter
/// queue on) each subscribed topic's dead letter topic and its replay markers topic, and the
/// control topic.
pub(crate) async fn create(config: &Config, registry: &Registry, broker: Option<&EmbeddedBroker>) -> Result<()> {
    let declared = declared(registry, config)?;
    let topics: Vec<String> = registry.topics(config).into_iter().collect();
    let mut dlq_topics: Vec<String> = Vec::new();
    if config.dlq {
        let subscribed: std::collections::BTreeSet<String> = registry.groups(config).into_iter().flat_map(|g| g.topics).collect();
        dlq_topics.extend(subscribed.iter().map(|t| config.dlq_topic(t)).filter(|t| !topics.contains(t)));
    }
    let mut markers: Vec<String> = dlq_topics.iter().map(|t| crate::flows::dlq::markers_topic(t)).collect();
    // Operators' commands (see `flows::control`): compacted, one partition, like the markers.
    markers.push(config.control_topic());
    crate::kafka::topics::create(config, &declared, broker, &topics, &dlq_topics, &markers).await
}
