//! One account of the cluster's reachability for the whole process. Every client (each group's
//! consumer, the producer, admin clients) reports its connection errors and statistics here.
//! An outage is a client having **no** broker it can reach (librdkafka's "all brokers down"): one
//! broker that fails, or a dead address listed beside live ones in the bootstrap servers, is not
//! one (its failure is kept as the cause to name should all brokers go). An outage reads as:
//!
//! - one warning when it starts, with its cause;
//! - a reminder at most every [`REMIND_EVERY`] while it lasts;
//! - one info line when a broker is up again.
//!
//! Other client errors are logged once per message per [`REMIND_EVERY`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::{debug, info, warn};

/// The longest silence while an outage lasts.
pub(crate) const REMIND_EVERY: Duration = Duration::from_secs(60);

struct State {
    /// When the current outage began, the last reminder, and its latest cause.
    outage: Option<(Instant, Instant, String)>,
    /// The last failure of each connection (by broker), and when: the causes an outage names
    /// when it begins (librdkafka's own "all brokers down" says less).
    failures: BTreeMap<String, (Instant, String)>,
    /// Other errors: when each message was last logged.
    others: BTreeMap<String, Instant>,
    /// When the last outage ended, and when it began: an outage that starts again soon after
    /// (a flapping connection) continues it rather than warning again.
    last_recovery: Option<(Instant, Instant)>,
}

/// Whether an outage is on (read on hot paths without the lock).
static ACTIVE: AtomicBool = AtomicBool::new(false);

static STATE: Mutex<State> = Mutex::new(State { outage: None, failures: BTreeMap::new(), others: BTreeMap::new(), last_recovery: None });

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether an error means the cluster cannot be reached (or talked to).
pub(crate) fn is_connection_error(error: &KafkaError) -> bool {
    let code = match error {
        KafkaError::Global(c) | KafkaError::MessageConsumption(c) | KafkaError::MetadataFetch(c) | KafkaError::MessageProduction(c) => *c,
        _ => return false,
    };
    matches!(
        code,
        RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::Resolve
            | RDKafkaErrorCode::SSL
            | RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::RequestTimedOut
    )
}

/// Whether a librdkafka log line is about a connection failing (told by the outage account).
pub(crate) fn is_connection_noise(facility: &str, message: &str) -> bool {
    matches!(facility, "FAIL" | "ERROR") && (message.contains("Connect to") || message.contains("Disconnected") || message.contains("brokers are down") || message.contains("Failed to resolve"))
}

/// Whether an error says that a client reaches no broker at all.
fn is_all_brokers_down(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::Global(RDKafkaErrorCode::AllBrokersDown) | KafkaError::MessageConsumption(RDKafkaErrorCode::AllBrokersDown) | KafkaError::MetadataFetch(RDKafkaErrorCode::AllBrokersDown)
    )
}

/// A client reported an error.
pub(crate) fn client_error(error: &KafkaError, reason: &str) {
    // The end of a partition is news for readers that asked for it, not an error.
    if matches!(error, KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF) | KafkaError::MessageConsumption(RDKafkaErrorCode::PartitionEOF)) {
        return;
    }
    let cause = if reason.is_empty() { error.to_string() } else { reason.to_owned() };
    if is_all_brokers_down(error) {
        return outage_cause(cause);
    }
    if is_connection_error(error) {
        // One connection failed; others may be fine. Kept as the cause an outage names.
        debug!(error = %error, "kafka connection error: {cause}");
        // librdkafka's messages start with the broker: `host:port/id: ...`.
        let broker = cause.split_once(": ").map_or("", |(b, _)| b).to_owned();
        let mut s = state();
        if s.failures.len() >= 64 {
            s.failures.clear();
        }
        s.failures.insert(broker, (Instant::now(), cause));
        return;
    }
    if due(&cause) {
        warn!(error = %error, "kafka client error: {cause}");
    }
}

/// An outage starts or goes on.
fn outage_cause(summary: String) {
    let now = Instant::now();
    let mut s = state();
    let cause = named_cause(&s.failures, summary, now);
    match &mut s.outage {
        None => {
            if let Some((ended, began)) = s.last_recovery.filter(|(ended, _)| now.duration_since(*ended) < REMIND_EVERY) {
                // Back within the minute: the same outage, told once already.
                s.outage = Some((began, ended, cause.clone()));
                ACTIVE.store(true, Ordering::Relaxed);
                drop(s);
                debug!(cause = %cause, "Kafka is unreachable again shortly after it came back");
                return;
            }
            s.outage = Some((now, now, cause.clone()));
            ACTIVE.store(true, Ordering::Relaxed);
            drop(s);
            warn!(cause = %cause, "Kafka is unreachable; eventkit keeps retrying and resumes when it is back");
        }
        Some((since, reminded, last)) => {
            *last = cause;
            if now.duration_since(*reminded) >= REMIND_EVERY {
                *reminded = now;
                let (down_for, cause) = (now.duration_since(*since), last.clone());
                drop(s);
                warn!(down_for = ?Duration::from_secs(down_for.as_secs()), cause = %cause, "Kafka is still unreachable");
            }
        }
    }
}

/// What an outage names as its cause: the failures of the connections just before ("Connection
/// refused") say more than librdkafka's summary: the latest of each broker, newest first (a dead
/// address that always fails is named beside the broker that just went away, not instead of it).
fn named_cause(failures: &BTreeMap<String, (Instant, String)>, summary: String, now: Instant) -> String {
    let mut recent: Vec<&(Instant, String)> = failures.values().filter(|(at, _)| now.duration_since(*at) < Duration::from_secs(30)).collect();
    recent.sort_by_key(|r| std::cmp::Reverse(r.0));
    if recent.is_empty() {
        return summary;
    }
    format!("{} ({summary})", recent.iter().take(3).map(|(_, c)| c.as_str()).collect::<Vec<_>>().join("; "))
}

/// Whether a warning keyed `key` is due: the first time, then at most every [`REMIND_EVERY`]
/// (a failure that repeats each commit interval or fetch is told once a minute).
pub(crate) fn due(key: &str) -> bool {
    let now = Instant::now();
    let mut s = state();
    if s.others.get(key).is_some_and(|at| now.duration_since(*at) < REMIND_EVERY) {
        return false;
    }
    if s.others.len() >= 1024 {
        s.others.retain(|_, at| now.duration_since(*at) < REMIND_EVERY);
    }
    s.others.insert(key.to_owned(), now);
    true
}

/// A client's statistics: a broker that is up ends an outage (also when nothing is fetched or
/// committed, as in a producer-only app).
pub(crate) fn statistics(statistics: &rdkafka::Statistics) {
    let up = statistics.brokers.values().any(|b| b.state == "UP" && b.nodeid >= 0);
    if up {
        recovered();
    }
}

/// Something reached the cluster (statistics, a successful probe).
pub(crate) fn recovered() {
    let mut s = state();
    if let Some((since, _, _)) = s.outage.take() {
        s.last_recovery = Some((Instant::now(), since));
        ACTIVE.store(false, Ordering::Relaxed);
        drop(s);
        info!(down_for = ?Duration::from_millis(since.elapsed().as_millis() as u64), "Kafka is reachable again");
    }
}

/// Whether an outage is going on.
pub(crate) fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

#[cfg_attr(not(feature = "admin"), allow(dead_code))]
/// When the current outage began, if one is going on.
pub(crate) fn active_since() -> Option<Instant> {
    if !active() {
        return None;
    }
    state().outage.as_ref().map(|o| o.0)
}

/// An offset commit succeeded: the cluster answers. (A fetched record proves nothing: it may
/// have waited in librdkafka's queue since before the outage.) Cheap when no outage is on.
pub(crate) fn answered() {
    if active() {
        recovered();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_names_each_broker_that_failed_just_before_newest_first() {
        let now = Instant::now();
        let mut failures = BTreeMap::new();
        failures.insert("127.0.0.1:1/bootstrap".to_owned(), (now - Duration::from_secs(2), "127.0.0.1:1/bootstrap: Connection refused".to_owned()));
        failures.insert("127.0.0.1:9092/1".to_owned(), (now - Duration::from_millis(10), "127.0.0.1:9092/1: Disconnected".to_owned()));
        failures.insert("old/1".to_owned(), (now - Duration::from_secs(300), "old/1: long ago".to_owned()));
        let cause = named_cause(&failures, "2/2 brokers are down".into(), now);
        assert_eq!(cause, "127.0.0.1:9092/1: Disconnected; 127.0.0.1:1/bootstrap: Connection refused (2/2 brokers are down)");
        assert_eq!(named_cause(&BTreeMap::new(), "1/1 brokers are down".into(), now), "1/1 brokers are down");
    }

    /// (Nothing here starts an outage: the account is the process's, and other tests read it.)
    #[test]
    fn the_end_of_a_partition_and_one_failed_connection_are_no_outage() {
        client_error(&KafkaError::PartitionEOF(3), "");
        client_error(&KafkaError::Global(RDKafkaErrorCode::PartitionEOF), "");
        assert!(!state().others.keys().any(|k| k.contains("EOF")), "the end of a partition is not a warning");
        client_error(&KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure), "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused");
        assert!(!active(), "one failed connection is not an outage");
        assert!(state().failures.get("127.0.0.1:1/bootstrap").is_some_and(|(_, c)| c.contains("Connection refused")), "it is kept as the cause an outage would name");
    }
}
