//! librdkafka clients: base settings, the user's properties routed to the clients they apply
//! to, and librdkafka's logs and errors routed to `tracing` at a sane rate.
//!
//! - `EVENTKIT_KAFKA_*` properties go to the clients librdkafka says they apply to: consumer
//!   properties to consumers, producer properties to the producer, the others to all.
//!   `EVENTKIT_KAFKA_CONSUMER_*`, `EVENTKIT_KAFKA_PRODUCER_*` and `EVENTKIT_KAFKA_ADMIN_*`
//!   route explicitly. An unknown property is an error naming the closest known one.
//! - [`outage`]: one process-wide account of the cluster's reachability, so that an outage
//!   gives one warning, rare reminders, and one line when it ends.
//! - [`reach`]: the startup check that the cluster answers.

pub(crate) mod offsets;
pub(crate) mod outage;
pub(crate) mod reach;
pub(crate) mod topics;
pub mod embedded;

use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;

use crate::core::config::Config;
use crate::core::error::{Error, Result};
use crate::core::properties::{self, Property, Scope};

/// A kind of client eventkit creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Client {
    Consumer,
    Producer,
    /// Admin requests and metadata probes: only properties that apply to every client.
    Admin,
}

/// How often clients report statistics, from which the outage account learns that brokers
/// are up again.
const STATISTICS_INTERVAL_MS: &str = "5000";

/// Base settings every eventkit client uses (the user's properties follow with [`apply_overrides`]).
pub(crate) fn client_config(config: &Config) -> Result<ClientConfig> {
    let servers = config
        .bootstrap_servers
        .as_deref()
        .ok_or_else(|| Error::Config("no bootstrap servers (set KAFKA_BOOTSTRAP_SERVERS)".into()))?;
    check_properties(config)?;
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", servers)
        .set("client.id", &config.service_name)
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
    Ok(client)
}

#[cfg_attr(not(feature = "admin"), allow(dead_code))]
/// A consumer group member as its coordinator describes it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Member {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    /// Its partitions, `topic -> [partition]` (from the consumer protocol's assignment).
    pub assignment: std::collections::BTreeMap<String, Vec<i32>>,
}

#[cfg_attr(not(feature = "admin"), allow(dead_code))]
/// The state and members of each of `groups`, from their coordinators (blocking).
pub(crate) fn describe_groups(
    config: &Config,
    groups: &[String],
    timeout: std::time::Duration,
) -> Result<std::collections::BTreeMap<String, (String, Vec<Member>)>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let mut client = client_config(config)?;
    apply_overrides(&mut client, config, Client::Admin);
    let consumer: BaseConsumer<KitContext> = client.create_with_context(KitContext)?;
    let mut out = std::collections::BTreeMap::new();
    for group in groups {
        let list = consumer.fetch_group_list(Some(group), timeout)?;
        for g in list.groups() {
            let members = g
                .members()
                .iter()
                .map(|m| Member {
                    member_id: m.id().to_owned(),
                    client_id: m.client_id().to_owned(),
                    client_host: m.client_host().to_owned(),
                    assignment: m.assignment().and_then(parse_assignment).unwrap_or_default(),
                })
                .collect();
            out.insert(g.name().to_owned(), (g.state().to_owned(), members));
        }
    }
    Ok(out)
}

#[cfg_attr(not(feature = "admin"), allow(dead_code))]
/// The consumer protocol's member assignment: version (i16), then topics (i32 count), each a
/// name (i16 length + bytes) and partitions (i32 count + i32 each); user data follows.
fn parse_assignment(bytes: &[u8]) -> Option<std::collections::BTreeMap<String, Vec<i32>>> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (bytes.get(..n)?, bytes.get(n..)?);
        *bytes = rest;
        Some(head)
    }
    let mut b = bytes;
    let i16_ = |b: &mut &[u8]| take(b, 2).map(|x| i16::from_be_bytes([x[0], x[1]]));
    let i32_ = |b: &mut &[u8]| take(b, 4).map(|x| i32::from_be_bytes([x[0], x[1], x[2], x[3]]));
    let mut out = std::collections::BTreeMap::new();
    if bytes.is_empty() {
        return Some(out);
    }
    i16_(&mut b)?;
    let topics = i32_(&mut b)?;
    for _ in 0..topics.max(0) {
        let len = usize::try_from(i16_(&mut b)?).ok()?;
        let name = String::from_utf8_lossy(take(&mut b, len)?).into_owned();
        let n = i32_(&mut b)?;
        let mut partitions = Vec::with_capacity(usize::try_from(n).unwrap_or(0).min(10_000));
        for _ in 0..n.max(0) {
            partitions.push(i32_(&mut b)?);
        }
        out.insert(name, partitions);
    }
    Some(out)
}

/// Applies the user's properties that belong to `which`. Call it last, so that they win.
pub(crate) fn apply_overrides(client: &mut ClientConfig, config: &Config, which: Client) {
    for (name, value) in &config.kafka {
        let scope = properties::lookup(name).map_or(Scope::Any, |p| p.scope);
        let applies = matches!((scope, which), (Scope::Any, _) | (Scope::Consumer, Client::Consumer) | (Scope::Producer, Client::Producer));
        if applies {
            client.set(canonical(name), value);
        }
    }
    let explicit = match which {
        Client::Consumer => &config.kafka_consumer,
        Client::Producer => &config.kafka_producer,
        Client::Admin => &config.kafka_admin,
    };
    for (name, value) in explicit {
        client.set(canonical(name), value);
    }
}

/// A property's name as librdkafka spells it (names from environment variables have `.`
/// where librdkafka may have `_`).
fn canonical(name: &str) -> &str {
    properties::lookup(name).map_or(name, |p| p.name)
}

/// Refuses unknown properties (naming the closest known one), properties that only a C
/// function can set, and explicit routes to clients a property does not apply to. No message
/// quotes a value.
pub(crate) fn check_properties(config: &Config) -> Result<()> {
    let routes = [("", None, &config.kafka), ("CONSUMER_", Some(Client::Consumer), &config.kafka_consumer), ("PRODUCER_", Some(Client::Producer), &config.kafka_producer), ("ADMIN_", Some(Client::Admin), &config.kafka_admin)];
    for (prefix, client, map) in routes {
        for name in map.keys() {
            let variable = format!("EVENTKIT_KAFKA_{prefix}{}", name.to_ascii_uppercase().replace('.', "_"));
            let Some(&Property { name: known, scope, settable, .. }) = properties::lookup(name) else {
                let closest = properties::PROPERTIES
                    .iter()
                    .filter(|p| p.settable)
                    .map(|p| (strsim::jaro_winkler(p.name, name), p.name))
                    .max_by(|a, b| a.0.total_cmp(&b.0))
                    .filter(|(score, _)| *score > 0.8)
                    .map(|(_, known)| format!("; did you mean `{known}`?"))
                    .unwrap_or_default();
                return Err(Error::Config(format!("unknown librdkafka property `{name}` ({variable}){closest}")));
            };
            if !settable {
                let instead = match known {
                    "ssl_key" => "; a PEM private key goes in `ssl.key.pem` (EVENTKIT_KAFKA_SSL_KEY_PEM), a key file in `ssl.key.location`",
                    "ssl_certificate" => "; a PEM certificate goes in `ssl.certificate.pem`, a file in `ssl.certificate.location`",
                    "ssl_ca" => "; PEM CA certificates go in `ssl.ca.pem`, a file in `ssl.ca.location`",
                    _ => "",
                };
                return Err(Error::Config(format!("librdkafka property `{known}` ({variable}) cannot be set from configuration: librdkafka takes it through a C function only{instead}")));
            }
            let misrouted = matches!(
                (client, scope),
                (Some(Client::Consumer), Scope::Producer) | (Some(Client::Producer), Scope::Consumer) | (Some(Client::Admin), Scope::Consumer | Scope::Producer)
            );
            if misrouted {
                let applies = if scope == Scope::Consumer { "consumers" } else { "producers" };
                return Err(Error::Config(format!("librdkafka property `{known}` applies to {applies} only ({variable})")));
            }
        }
    }
    Ok(())
}

/// Runs a librdkafka call that may block for long (a consumer's close, a synchronous commit) on a
/// thread of its own, and waits for it until `deadline`. `None` when it did not finish by then:
/// the call goes on in the background, and neither a tokio worker nor the process's exit waits
/// for it (a thread of tokio's blocking pool would hold the runtime's drop until it ends).
pub(crate) async fn bounded<T: Send + 'static>(what: &str, deadline: tokio::time::Instant, call: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name("eventkit-kafka-call".into()).spawn(move || {
        let _ = tx.send(call());
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start a thread for {what}");
        return None;
    }
    match tokio::time::timeout_at(deadline, rx).await {
        Ok(Ok(value)) => Some(value),
        _ => None,
    }
}

/// Routes librdkafka's log lines to `tracing`. Connection failures are told once per outage
/// by [`outage`], so librdkafka's own lines about them go to debug.
pub(crate) fn log(level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
    use rdkafka::config::RDKafkaLogLevel as L;
    if outage::is_connection_noise(fac, message) {
        return tracing::debug!(target: "librdkafka", "{fac}: {message}");
    }
    match level {
        L::Emerg | L::Alert | L::Critical | L::Error => tracing::error!(target: "librdkafka", "{fac}: {message}"),
        L::Warning => tracing::warn!(target: "librdkafka", "{fac}: {message}"),
        L::Notice | L::Info => tracing::info!(target: "librdkafka", "{fac}: {message}"),
        L::Debug => tracing::debug!(target: "librdkafka", "{fac}: {message}"),
    }
}

/// The context of eventkit's producer and admin clients: logs, errors and statistics go
/// where the consumers' go.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct KitContext;

impl ClientContext for KitContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        log(level, fac, log_message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        outage::client_error(&error, reason);
    }
    fn stats(&self, statistics: rdkafka::Statistics) {
        outage::statistics(&statistics);
    }
}

impl rdkafka::consumer::ConsumerContext for KitContext {}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config> {
        let c = Config::from_vars(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))?;
        check_properties(&c)?;
        Ok(c)
    }

    #[test]
    fn every_listed_property_exists_in_the_linked_librdkafka() {
        for p in properties::PROPERTIES.iter().filter(|p| p.settable) {
            let (name, mut c) = (p.name, ClientConfig::new());
            c.set(name, "x");
            if let Err(e) = c.create_native_config() {
                assert!(!e.to_string().contains("No such configuration property"), "{name}: {e}");
            }
        }
    }

    #[test]
    fn properties_reach_the_clients_they_apply_to() {
        let c = config(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "b:9092"),
            ("EVENTKIT_KAFKA_GROUP_INSTANCE_ID", "i-1"),
            ("EVENTKIT_KAFKA_LINGER_MS", "20"),
            ("EVENTKIT_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("EVENTKIT_KAFKA_CONSUMER_FETCH_MIN_BYTES", "10"),
        ])
        .unwrap();
        let built = |which| {
            let mut client = client_config(&c).unwrap();
            apply_overrides(&mut client, &c, which);
            client
        };
        let consumer = built(Client::Consumer);
        let (producer, admin) = (built(Client::Producer), built(Client::Admin));
        assert_eq!((consumer.get("group.instance.id"), consumer.get("linger.ms"), consumer.get("fetch.min.bytes")), (Some("i-1"), None, Some("10")));
        assert_eq!((producer.get("group.instance.id"), producer.get("linger.ms")), (None, Some("20")));
        for client in [&consumer, &producer, &admin] {
            assert_eq!(client.get("security.protocol"), Some("SASL_SSL"));
        }
        assert_eq!((admin.get("group.instance.id"), admin.get("linger.ms")), (None, None));
    }

    /// Every property librdkafka marks sensitive, under every spelling eventkit accepts (each
    /// environment prefix, `_` or `.`, the builder's names), with a planted value: no Debug
    /// output, no refusal of ours and no error of librdkafka's shows it.
    #[test]
    fn no_sensitive_value_is_ever_shown() {
        let planted = "PLANTED-9c1f-SECRET";
        for p in properties::PROPERTIES.iter().filter(|p| p.sensitive) {
            let env = p.name.to_ascii_uppercase().replace('.', "_");
            for prefix in ["EVENTKIT_KAFKA_", "EVENTKIT_KAFKA_CONSUMER_", "EVENTKIT_KAFKA_PRODUCER_", "EVENTKIT_KAFKA_ADMIN_"] {
                let vars = [("KAFKA_BOOTSTRAP_SERVERS".to_owned(), "127.0.0.1:1".to_owned()), (format!("{prefix}{env}"), format!("-----BEGIN PRIVATE KEY-----{planted}"))];
                let c = Config::from_vars(vars).unwrap();
                let shown = format!("{c:?} {c:#?}");
                assert!(!shown.contains(planted), "{prefix}{env}: {shown}");
                let mut seen = String::new();
                match check_properties(&c) {
                    Err(e) => seen += &format!("{e} {e:?}"),
                    Ok(()) => {
                        for which in [Client::Consumer, Client::Producer, Client::Admin] {
                            let mut client = client_config(&c).unwrap();
                            apply_overrides(&mut client, &c, which);
                            client.set("group.id", "g");
                            let created: std::result::Result<rdkafka::consumer::BaseConsumer<KitContext>, KafkaError> = client.create_with_context(KitContext);
                            if let Err(e) = created {
                                let e = Error::from(e);
                                seen += &format!("{e} {e:?}");
                            }
                        }
                    }
                }
                assert!(!seen.contains(planted), "{prefix}{env}: {seen}");
            }
        }
    }

    #[test]
    fn a_property_only_c_can_set_is_refused_without_its_value() {
        let e = config(&[("EVENTKIT_KAFKA_SSL_KEY", "-----BEGIN PRIVATE KEY-----MIIEv")]).unwrap_err().to_string();
        assert!(e.contains("`ssl_key`") && e.contains("ssl.key.pem") && !e.contains("MIIEv"), "{e}");
    }

    #[test]
    fn unknown_and_misrouted_properties_are_refused_by_name() {
        let e = config(&[("EVENTKIT_KAFKA_SESION_TIMEOUT_MS", "6000")]).unwrap_err().to_string();
        assert!(e.contains("unknown librdkafka property `sesion.timeout.ms`") && e.contains("did you mean `session.timeout.ms`"), "{e}");
        let e = config(&[("EVENTKIT_KAFKA_PRODUCER_GROUP_INSTANCE_ID", "i")]).unwrap_err().to_string();
        assert!(e.contains("`group.instance.id` applies to consumers only"), "{e}");
        assert!(config(&[("EVENTKIT_KAFKA_LOG_LEVEL", "6")]).is_ok(), "`log_level` matches with `_` or `.`");
    }
}
