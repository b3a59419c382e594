//! Is the cluster there? Before an app creates topics and joins groups, it asks the cluster for
//! its metadata. Services often start before Kafka, so by default it keeps asking, with a
//! backoff and one warning per attempt that says what failed and what to check.
//! `EVENTKIT_STARTUP_TIMEOUT_MS` turns a cluster that does not answer in time into a startup
//! error.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use tokio::time::Instant;
use tracing::{info, warn};

use super::Client;
use crate::core::config::Config;
use crate::core::error::{Error, Result};

/// How long one attempt may take at most.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// An attempt on which librdkafka reported an error (refused, unresolvable, TLS) ends after
/// this long, rather than waiting out [`ATTEMPT_TIMEOUT`].
const ATTEMPT_AFTER_ERROR: Duration = Duration::from_secs(1);

/// Waits until the cluster answers a metadata request; with a startup timeout, fails after it.
pub(crate) async fn wait_for_cluster(config: &Config) -> Result<()> {
    let bootstrap = config.bootstrap_servers.clone().unwrap_or_default();
    let deadline = config.startup_timeout.map(|t| Instant::now() + t);
    let mut delay = Duration::from_millis(500);
    let mut failed = 0;
    // When the wait is given up (a signal stops the app), so is the attempt under way.
    let cancel = Cancel::default();
    loop {
        let probe_config = config.clone();
        let cancelled = cancel.0.clone();
        let attempt = deadline.map_or(ATTEMPT_TIMEOUT, |d| d.saturating_duration_since(Instant::now()).clamp(Duration::from_millis(100), ATTEMPT_TIMEOUT));
        let outcome = tokio::task::spawn_blocking(move || probe(&probe_config, attempt, &cancelled)).await.map_err(|e| Error::msg(format!("probe failed: {e}")))??;
        let cause = match outcome {
            Ok(brokers) => {
                super::outage::recovered();
                if failed > 0 {
                    info!(bootstrap = %bootstrap, brokers, "Kafka answers now");
                }
                return Ok(());
            }
            Err(cause) => cause,
        };
        failed += 1;
        let message = format!("cannot reach Kafka at {bootstrap}: {cause} ({})", hint(&cause));
        let mut wait = delay;
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left < Duration::from_millis(50) {
                let timeout = config.startup_timeout.unwrap_or_default();
                return Err(Error::Unreachable(format!("{message}; gave up after {timeout:?} (EVENTKIT_STARTUP_TIMEOUT_MS)")));
            }
            wait = wait.min(left);
        }
        warn!(attempt = failed, retry_in = ?wait, "{message}");
        tokio::time::sleep(wait).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Set when dropped.
#[derive(Default)]
struct Cancel(Arc<AtomicBool>);

impl Drop for Cancel {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// One metadata request; the number of brokers, or what failed (librdkafka's own account of
/// the last error when it gave one: "Connection refused", a resolution or TLS failure, ...).
/// A client that cannot even be created (a bad property value) is an error at once.
fn probe(config: &Config, timeout: Duration, cancelled: &AtomicBool) -> Result<std::result::Result<usize, String>> {
    let context = ProbeContext::default();
    let last_error = context.last_error.clone();
    let mut client = super::client_config(config)?;
    super::apply_overrides(&mut client, config, Client::Admin);
    let consumer: BaseConsumer<ProbeContext> =
        client.create_with_context(context).map_err(|e| Error::Config(format!("cannot create a Kafka client: {}", crate::core::error::redact(e))))?;
    let started = std::time::Instant::now();
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        match consumer.fetch_metadata(None, left.min(Duration::from_millis(250))) {
            Ok(metadata) => return Ok(Ok(metadata.brokers().len())),
            Err(e) => {
                // Errors reach the context when the client is polled.
                let _ = consumer.poll(Duration::ZERO);
                let detail = last_error.lock().ok().and_then(|l| l.clone());
                let waited = started.elapsed();
                if waited >= timeout || detail.is_some() && waited >= ATTEMPT_AFTER_ERROR || cancelled.load(Ordering::Relaxed) {
                    return Ok(Err(detail.map_or_else(|| e.to_string(), |d| clean(&d).to_owned())));
                }
            }
        }
    }
}

/// librdkafka's message without its thread tag (`[thrd:host:port/bootstrap]: `).
fn clean(message: &str) -> &str {
    match message.strip_prefix("[thrd:") {
        Some(rest) => rest.split_once("]: ").map_or(message, |(_, m)| m),
        None => message,
    }
}

/// What to check, by what failed.
fn hint(cause: &str) -> &'static str {
    let c = cause.to_ascii_lowercase();
    if c.contains("refused") {
        "is a broker listening at that address? check KAFKA_BOOTSTRAP_SERVERS"
    } else if c.contains("resolve") {
        "check the host names in KAFKA_BOOTSTRAP_SERVERS"
    } else if c.contains("ssl") || c.contains("handshake") || c.contains("certificate") {
        "check security.protocol and the ssl.* properties (EVENTKIT_KAFKA_SSL_*)"
    } else if c.contains("sasl") || c.contains("authentic") {
        "check sasl.mechanisms, sasl.username and sasl.password (EVENTKIT_KAFKA_SASL_*)"
    } else {
        "is the address reachable from here? check KAFKA_BOOTSTRAP_SERVERS, the network and firewalls"
    }
}

/// The probe's client: keeps librdkafka's last error for the message, and is otherwise quiet
/// (each attempt's warning says what failed).
#[derive(Default)]
struct ProbeContext {
    /// The most telling error so far: a connection's own failure ("Connection refused",
    /// "Failed to resolve") over librdkafka's summary ("1/1 brokers are down").
    last_error: Arc<Mutex<Option<String>>>,
}

impl ProbeContext {
    fn note(&self, message: String, specific: bool) {
        if let Ok(mut last) = self.last_error.lock() {
            let summary = last.as_deref().is_none_or(|l| l.contains("brokers are down"));
            if specific || summary {
                *last = Some(message);
            }
        }
    }
}

impl ClientContext for ProbeContext {
    fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        tracing::debug!(target: "librdkafka", "{fac}: {message}");
        if super::outage::is_connection_noise(fac, message) {
            self.note(message.to_owned(), !message.contains("brokers are down"));
        }
    }
    fn error(&self, error: KafkaError, reason: &str) {
        let message = if reason.is_empty() { error.to_string() } else { reason.to_owned() };
        let specific = !message.contains("brokers are down");
        self.note(message, specific);
    }
}

impl ConsumerContext for ProbeContext {}
