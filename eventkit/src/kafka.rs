//! Shared librdkafka client settings.

use rdkafka::ClientConfig;

use crate::config::Config;
use crate::error::{Error, Result};

/// Base settings every eventkit client uses. Call [`apply_overrides`] last so that
/// user-given properties win.
pub(crate) fn client_config(config: &Config) -> Result<ClientConfig> {
    let servers = config
        .bootstrap_servers
        .as_deref()
        .ok_or_else(|| Error::Config("no bootstrap servers (set KAFKA_BOOTSTRAP_SERVERS)".into()))?;
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", servers)
        .set("client.id", &config.service_name);
    Ok(client)
}

/// Applies the user's librdkafka properties.
pub(crate) fn apply_overrides(client: &mut ClientConfig, config: &Config) {
    for (k, v) in &config.kafka {
        client.set(k, v);
    }
}

/// Routes librdkafka's log lines to `tracing`.
pub(crate) fn log(level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
    use rdkafka::config::RDKafkaLogLevel as L;
    match level {
        L::Emerg | L::Alert | L::Critical | L::Error => tracing::error!(target: "librdkafka", "{fac}: {message}"),
        L::Warning => tracing::warn!(target: "librdkafka", "{fac}: {message}"),
        L::Notice | L::Info => tracing::info!(target: "librdkafka", "{fac}: {message}"),
        L::Debug => tracing::debug!(target: "librdkafka", "{fac}: {message}"),
    }
}
