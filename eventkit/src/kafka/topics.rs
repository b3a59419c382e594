//! Topic creation: the missing topics with their declared settings, and a warning for each
//! existing topic that differs (eventkit never alters a topic).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;
use tracing::{debug, info, warn};

use crate::core::config::Config;
use crate::core::error::Result;
use crate::core::topic_settings::{markers_config, TopicConfig};
use crate::kafka::embedded::EmbeddedBroker;
use crate::kafka::KitContext;


/// Creates the missing topics among `topics` (and the replay `markers` topics of `dlq_topics`) with their settings (dead letter topics with
/// their own retention), then warns about existing ones that differ from what is declared.
pub(crate) async fn create(config: &Config, declared: &BTreeMap<String, TopicConfig>, broker: Option<&EmbeddedBroker>, topics: &[String], dlq_topics: &[String], markers: &[String]) -> Result<()> {
    let dlq_ms = if config.dlq_retention == Duration::MAX { -1 } else { config.dlq_retention.as_millis().min(i64::MAX as u128) as i64 };
    let dlq = TopicConfig { retention_ms: Some(dlq_ms), ..Default::default() };
    let settings = |t: &String| -> TopicConfig {
        if markers.contains(t) {
            markers_config()
        } else if dlq_topics.contains(t) {
            dlq.clone().overridden(declared.get(t).unwrap_or(&TopicConfig::default()))
        } else {
            declared.get(t).cloned().unwrap_or_default()
        }
    };
    let all: Vec<&String> = topics.iter().chain(dlq_topics).chain(markers).collect();
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
    check_existing(&admin, declared).await;
    Ok(())
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


/// Creates a replay markers topic (see the dead letter queue); a cluster that cannot create it is
/// left to its auto-creation.
pub(crate) async fn create_markers_topic(config: &Config, name: &str) -> Result<()> {
    create_compacted_topic(config, name, "replay markers").await
}

/// Creates a compacted topic of one partition (replay markers, the control topic; `what` names
/// it in logs); a cluster that cannot create it is left to its auto-creation.
pub(crate) async fn create_compacted_topic(config: &Config, name: &str, what: &str) -> Result<()> {
    create_internal_topic(config, name, what, markers_config()).await
}

/// Creates the status topic (the fleet's reports: one partition, compacted, kept a day); a
/// cluster that cannot create it is left to its auto-creation.
pub(crate) async fn create_status_topic(config: &Config, name: &str) -> Result<()> {
    let settings = TopicConfig { partitions: Some(1), cleanup_policy: Some("compact,delete".into()), retention_ms: Some(24 * 3600 * 1000), ..Default::default() };
    create_internal_topic(config, name, "status", settings).await
}

/// Creates one of eventkit's own topics with `settings`; a cluster that cannot create it is
/// left to its auto-creation.
async fn create_internal_topic(config: &Config, name: &str, what: &str, settings: TopicConfig) -> Result<()> {
    let admin = admin_client(config)?;
    let entries = settings.entries();
    match admin.create_topics(&[new_topic(name, &settings, &entries, config)], &create_options()).await {
        Ok(results) => {
            for r in results {
                match r {
                    Ok(t) => info!(topic = %t, "{what} topic created"),
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((t, code)) => warn!(topic = %t, error = %code, "cannot create the {what} topic; relying on the broker's auto-creation"),
                }
            }
        }
        Err(e) => debug!(error = %e, topic = name, "cannot create the {what} topic; relying on the broker's auto-creation"),
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
