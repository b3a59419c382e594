//! Metrics through the [`metrics`] facade, rendered in the Prometheus text format.
//!
//! An app installs a Prometheus recorder at start unless the program installed a recorder of
//! its own (then that one receives them). Names and labels:
//!
//! | name | type | labels |
//! |---|---|---|
//! | `eventkit_records_handled_total` | counter | group, handler, topic |
//! | `eventkit_records_failed_total` (each failed attempt) | counter | group, handler, topic |
//! | `eventkit_records_retried_total` (failed attempts to be retried) | counter | group, handler, topic |
//! | `eventkit_records_dead_lettered_total` | counter | group, handler, topic |
//! | `eventkit_records_skipped_total` (no handler in the group) | counter | group, topic |
//! | `eventkit_handler_duration_seconds` | histogram | group, handler, topic |
//! | `eventkit_records_in_flight` | gauge | group |
//! | `eventkit_records_buffered` | gauge | group |
//! | `eventkit_partitions_assigned`, `eventkit_partitions_paused` | gauge | group |
//! | `eventkit_consumer_lag` (records, from librdkafka's statistics; 0 once the member no longer fetches the partition) | gauge | group, topic, partition |
//! | `eventkit_published_total`, `eventkit_publish_errors_total` | counter | topic |
//! | `eventkit_publish_duration_seconds` (hand-over to ack) | histogram | topic |
//! | `eventkit_producer_rebuilds_total` (a producer replaced after a fatal error) | counter | |
//! | `eventkit_build_info` (always 1) | gauge | version, librdkafka, service |
//! | `eventkit_ready`, `eventkit_live`, `eventkit_kafka_reachable` (1 or 0, read when `/metrics` is scraped) | gauge | |
//! | `eventkit_group_running` (0 once stopped by an internal error), `eventkit_consumer_loop_silent_seconds` (read when scraped) | gauge | group |
//!
//! Records that no handler could take (a malformed envelope, an unknown type) count for the
//! group with an empty `handler` label. Handles are created once per group, handler and topic,
//! so counting a record costs a map lookup and an atomic add.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
#[cfg(feature = "prometheus")]
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Bucket bounds of the `_seconds` histograms.
#[cfg(feature = "prometheus")]
const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[cfg(feature = "prometheus")]
static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Without the `prometheus` feature, the metrics go to the program's recorder (described once).
#[cfg(not(feature = "prometheus"))]
pub(crate) fn install() -> Option<&'static ()> {
    static DESCRIBED: OnceLock<()> = OnceLock::new();
    DESCRIBED.get_or_init(describe);
    None
}

/// Installs the Prometheus recorder once per process, unless the program has a recorder of its
/// own. Returns the handle that renders it (`None`: the program's recorder gets the metrics).
#[cfg(feature = "prometheus")]
pub(crate) fn install() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .expect("bucket bounds are not empty")
                .build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe();
                    // Histogram samples are folded into buckets by upkeep; without it they
                    // pile up between scrapes.
                    std::thread::Builder::new()
                        .name("eventkit-metrics".into())
                        .spawn({
                            let handle = handle.clone();
                            move || loop {
                                std::thread::sleep(Duration::from_secs(5));
                                handle.run_upkeep();
                            }
                        })
                        .ok()?;
                    Some(handle)
                }
                Err(_) => {
                    tracing::info!("the program installed a metrics recorder: eventkit's metrics go to it (the admin API's /metrics is then empty)");
                    None
                }
            }
        })
        .as_ref()
}

/// A label value as the recorder must be given it.
///
/// The exposition format escapes a label value's `\\`, `"` and line feeds as `\\\\`, `\\"` and
/// `\\n`. The Prometheus exporter escapes quotes and line feeds, but reads a backslash before a
/// quote as an escape already made and keeps it as is, so `dup\\"x` and `dup"x` would render
/// as one series. Its own escaping of a doubled backslash is exact, so values for eventkit's
/// recorder get their backslashes doubled here; a recorder of the program's own gets the values
/// as they are.
pub(crate) fn label(value: &str) -> String {
    if value.contains('\\') && install().is_some() {
        value.replace('\\', "\\\\")
    } else {
        value.to_owned()
    }
}

/// The metrics in the Prometheus text format (empty when the program has its own recorder).
#[cfg(feature = "prometheus")]
pub fn render() -> String {
    install().map(PrometheusHandle::render).unwrap_or_default()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!("eventkit_records_handled_total", "Records a handler handled successfully");
    describe_counter!("eventkit_records_failed_total", "Failed handler attempts");
    describe_counter!("eventkit_records_retried_total", "Failed handler attempts that will be retried");
    describe_counter!("eventkit_records_dead_lettered_total", "Records written to the dead letter queue (or given up on with it disabled)");
    describe_counter!("eventkit_records_skipped_total", "Records no handler of the group takes");
    describe_histogram!("eventkit_handler_duration_seconds", Unit::Seconds, "Handler call duration, cascaded events included");
    describe_gauge!("eventkit_records_in_flight", "Records (or batches) being handled");
    describe_gauge!("eventkit_records_buffered", "Records held in memory: queued, in flight or waiting for a retry");
    describe_gauge!("eventkit_partitions_assigned", "Partitions assigned to this member");
    describe_gauge!("eventkit_partitions_paused", "Assigned partitions whose fetching is paused (backpressure, or an operator's pause)");
    describe_gauge!("eventkit_partitions_held", "Assigned partitions an operator paused (`groups pause`)");
    describe_gauge!("eventkit_oldest_unsettled_seconds", Unit::Seconds, "How long the partition waiting longest on one record has waited (operator-paused partitions aside): a stuck handler or retries");
    describe_gauge!("eventkit_consumer_lag", "Records between the committed offset and the end of the partition");
    describe_counter!("eventkit_published_total", "Records the broker acknowledged");
    describe_counter!("eventkit_publish_errors_total", "Records that could not be published");
    describe_histogram!("eventkit_publish_duration_seconds", Unit::Seconds, "From hand-over to the producer to the broker's ack");
    describe_counter!("eventkit_producer_rebuilds_total", "Producers replaced after librdkafka declared them failed for good");
    describe_gauge!("eventkit_build_info", "Always 1: eventkit's and librdkafka's versions, and the service, as labels");
    describe_gauge!("eventkit_ready", "1 when the app is ready (as /health/ready says), else 0; read when scraped");
    describe_gauge!("eventkit_live", "1 when the app is live (as /health/live says), else 0; read when scraped");
    describe_gauge!("eventkit_kafka_reachable", "1 unless the cluster is unreachable (no broker answers); read when scraped");
    describe_gauge!("eventkit_group_running", "1 while a consumer group runs, 0 once it stopped by an internal error; read when scraped");
    describe_gauge!("eventkit_consumer_loop_silent_seconds", "Seconds since a group's fetch loop last turned (a blocked loop grows it); read when scraped");
}

/// Sets `eventkit_build_info` (once per service name).
pub(crate) fn build_info(service: &str) {
    let (_, librdkafka) = rdkafka::util::get_rdkafka_version();
    metrics::gauge!("eventkit_build_info", "version" => env!("CARGO_PKG_VERSION"), "librdkafka" => label(&librdkafka), "service" => label(service)).set(1.0);
}

/// The counters of one handler on one topic in one group.
#[derive(Clone)]
struct HandlerMetrics {
    pub handled: Counter,
    pub failed: Counter,
    pub retried: Counter,
    pub dead_lettered: Counter,
    pub skipped: Counter,
    pub duration: Histogram,
}

impl HandlerMetrics {
    fn new(group: &str, handler: &str, topic: &str) -> Self {
        let labels = [("group", label(group)), ("handler", label(handler)), ("topic", label(topic))];
        if handler.is_empty() {
            // The group itself: only records no handler took are counted.
            return HandlerMetrics {
                handled: Counter::noop(),
                failed: Counter::noop(),
                retried: Counter::noop(),
                dead_lettered: metrics::counter!("eventkit_records_dead_lettered_total", &labels),
                skipped: metrics::counter!("eventkit_records_skipped_total", &labels),
                duration: Histogram::noop(),
            };
        }
        HandlerMetrics {
            handled: metrics::counter!("eventkit_records_handled_total", &labels),
            failed: metrics::counter!("eventkit_records_failed_total", &labels),
            retried: metrics::counter!("eventkit_records_retried_total", &labels),
            dead_lettered: metrics::counter!("eventkit_records_dead_lettered_total", &labels),
            skipped: metrics::counter!("eventkit_records_skipped_total", &labels),
            duration: metrics::histogram!("eventkit_handler_duration_seconds", &labels),
        }
    }
}

/// A group's metrics, as a layer: handles by handler name (empty: the group itself) and
/// topic, created once, so that counting a record costs a map lookup and an atomic add; and the
/// group's gauges, fed at each status refresh and by librdkafka's statistics.
pub(crate) struct GroupMetrics {
    group: Arc<str>,
    handlers: HashMap<&'static str, HashMap<Arc<str>, HandlerMetrics, foldhash::fast::RandomState>, foldhash::fast::RandomState>,
    in_flight: Gauge,
    buffered: Gauge,
    assigned: Gauge,
    paused: Gauge,
    held: Gauge,
    waiting: Gauge,
    lags: LagGauges,
}

impl GroupMetrics {
    /// Handles for every handler of the group on every topic it reads.
    pub(crate) fn new(group: &Arc<str>, handlers: impl IntoIterator<Item = &'static str>, topics: &[Arc<str>]) -> Self {
        install();
        let mut by_handler: HashMap<_, HashMap<_, _, _>, _> = HashMap::default();
        for handler in std::iter::once("").chain(handlers) {
            let by_topic = by_handler.entry(handler).or_insert_with(HashMap::default);
            for topic in topics {
                by_topic.insert(topic.clone(), HandlerMetrics::new(group, handler, topic));
            }
        }
        let labels = [("group", label(group))];
        GroupMetrics {
            group: group.clone(),
            handlers: by_handler,
            in_flight: metrics::gauge!("eventkit_records_in_flight", &labels),
            buffered: metrics::gauge!("eventkit_records_buffered", &labels),
            assigned: metrics::gauge!("eventkit_partitions_assigned", &labels),
            paused: metrics::gauge!("eventkit_partitions_paused", &labels),
            held: metrics::gauge!("eventkit_partitions_held", &labels),
            waiting: metrics::gauge!("eventkit_oldest_unsettled_seconds", &labels),
            lags: LagGauges::default(),
        }
    }

    /// The handles of `handler` (empty: the group) on `topic` (borrowed: no handle is cloned).
    fn of(&self, handler: &str, topic: &str) -> std::borrow::Cow<'_, HandlerMetrics> {
        match self.handlers.get(handler).and_then(|t| t.get(topic)) {
            Some(m) => std::borrow::Cow::Borrowed(m),
            None => std::borrow::Cow::Owned(HandlerMetrics::new(&self.group, handler, topic)),
        }
    }
}

impl crate::flows::layer::HandleLayer for GroupMetrics {
    fn after(&self, ctx: &crate::Context, result: &crate::flows::layer::Handled, took: Duration) {
        let m = self.of(ctx.handler_name().unwrap_or_default(), &ctx.record().topic);
        m.duration.record(took);
        if result.is_err() {
            m.failed.increment(1);
        }
    }

    fn settled(&self, at: &crate::flows::layer::Settling<'_>, disposition: &crate::flows::layer::Disposition<'_>) {
        use crate::flows::layer::Disposition;
        let m = self.of(at.handler.unwrap_or_default(), &at.record.topic);
        match disposition {
            Disposition::Handled => m.handled.increment(1),
            Disposition::Skipped(_) => m.skipped.increment(1),
            Disposition::Retrying { .. } => m.retried.increment(1),
            Disposition::DeadLettered { .. } => m.dead_lettered.increment(1),
        }
    }
}

impl crate::flows::layer::Watch for GroupMetrics {
    fn group_status(&self, _group: &str, counts: &crate::flows::layer::GroupCounts) {
        self.in_flight.set(counts.in_flight as f64);
        self.buffered.set(counts.buffered as f64);
        self.assigned.set(counts.assigned as f64);
        self.paused.set(counts.paused as f64);
        self.held.set(counts.held as f64);
        self.waiting.set(counts.waiting_s);
    }

    fn statistics(&self, group: &str, statistics: &rdkafka::Statistics) {
        self.lags.update(group, statistics);
    }
}

/// A group's per-partition lag gauges, from librdkafka's statistics. A partition this member
/// no longer fetches (revoked, or its lag unknown) reads 0 instead of keeping its last lag.
#[derive(Default)]
struct LagGauges {
    /// The partitions given a lag by the last statistics.
    reported: std::sync::Mutex<std::collections::HashSet<(String, i32)>>,
}

impl LagGauges {
    pub(crate) fn update(&self, group: &str, statistics: &rdkafka::Statistics) {
        let partitions = statistics.topics.iter().flat_map(|(topic, t)| {
            t.partitions.iter().filter(|(&n, p)| n >= 0 && p.desired).map(move |(&n, p)| (topic.as_str(), n, p.consumer_lag))
        });
        self.set(group, partitions);
    }

    /// Sets the lag of each `(topic, partition, lag)` (a negative lag is unknown) and 0 for
    /// the partitions reported before and not now.
    fn set<'a>(&self, group: &str, partitions: impl Iterator<Item = (&'a str, i32, i64)>) {
        let gauge = |topic: &str, partition: i32| {
            metrics::gauge!("eventkit_consumer_lag", "group" => label(group), "topic" => label(topic), "partition" => partition.to_string())
        };
        let mut now = std::collections::HashSet::new();
        for (topic, partition, lag) in partitions.filter(|p| p.2 >= 0) {
            gauge(topic, partition).set(lag as f64);
            now.insert((topic.to_owned(), partition));
        }
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, partition) in reported.difference(&now) {
            gauge(topic, *partition).set(0.0);
        }
        *reported = now;
    }
}

/// A topic's publish handles.
struct PublishMetrics {
    published: Counter,
    errors: Counter,
    duration: Histogram,
}

/// Publishing's metrics, as a layer: handles by topic, created on first use.
#[derive(Default)]
pub(crate) struct PublishMetricsByTopic(RwLock<HashMap<Box<str>, Arc<PublishMetrics>, foldhash::fast::RandomState>>);

impl crate::flows::layer::PublishLayer for PublishMetricsByTopic {
    fn after(&self, result: &mut crate::flows::layer::PublishResult<'_>) {
        let m = self.of(result.topic);
        match result.result {
            Ok(_) => {
                m.published.increment(1);
                m.duration.record(result.took);
            }
            Err(_) => m.errors.increment(1),
        }
    }

    fn producer_replaced(&self, _cause: &str) {
        metrics::counter!("eventkit_producer_rebuilds_total").increment(1);
    }
}

impl PublishMetricsByTopic {
    fn of(&self, topic: &str) -> Arc<PublishMetrics> {
        if let Some(m) = self.0.read().unwrap_or_else(|e| e.into_inner()).get(topic) {
            return m.clone();
        }
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        map.entry(topic.into())
            .or_insert_with(|| {
                let labels = [("topic", label(topic))];
                Arc::new(PublishMetrics {
                    published: metrics::counter!("eventkit_published_total", &labels),
                    errors: metrics::counter!("eventkit_publish_errors_total", &labels),
                    duration: metrics::histogram!("eventkit_publish_duration_seconds", &labels),
                })
            })
            .clone()
    }
}

/// Metrics as a surface: the Prometheus recorder (installed unless the program has one), a
/// layer around every publish and each group's handling, and `eventkit_build_info`.
struct Surface;

impl crate::app::surface::Surface for Surface {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn order(&self) -> u8 {
        10
    }

    fn publish_layers(&self) -> Vec<Arc<dyn crate::flows::layer::PublishLayer>> {
        install();
        vec![Arc::new(PublishMetricsByTopic::default())]
    }

    fn group(&self, plan: &crate::flows::registry::GroupPlan) -> crate::app::surface::GroupParts {
        let group: Arc<str> = plan.group_id.as_str().into();
        let topics: Vec<Arc<str>> = plan.topics.iter().map(|t| Arc::from(t.as_str())).collect();
        let metrics = Arc::new(GroupMetrics::new(&group, plan.all_handlers().chain(plan.batch).map(|h| h.name), &topics));
        crate::app::surface::GroupParts { layers: vec![metrics.clone()], watches: vec![metrics] }
    }

    fn started(&self, config: &crate::core::config::Config) {
        build_info(&config.service_name);
    }
}

inventory::submit!(crate::app::surface::Entry(&Surface));

#[cfg(test)]
mod tests {
    use super::*;

    fn lag_line(group: &str, partition: i32) -> Option<String> {
        let needle = format!("partition=\"{partition}\"");
        render().lines().find(|l| l.starts_with("eventkit_consumer_lag{") && l.contains(&format!("group=\"{group}\"")) && l.contains(&needle)).map(str::to_owned)
    }

    #[test]
    fn a_partition_no_longer_fetched_reads_no_lag() {
        assert!(install().is_some(), "the test binary has no recorder of its own");
        let lags = LagGauges::default();
        lags.set("lag-test", [("t", 0, 5), ("t", 1, 7)].into_iter());
        assert!(lag_line("lag-test", 1).is_some_and(|l| l.ends_with(" 7")), "{:?}", lag_line("lag-test", 1));
        // Partition 1 was revoked; partition 0's lag is unknown for now (also 0, not 5).
        lags.set("lag-test", [("t", 0, -1)].into_iter());
        assert!(lag_line("lag-test", 1).is_some_and(|l| l.ends_with(" 0")), "{:?}", lag_line("lag-test", 1));
        assert!(lag_line("lag-test", 0).is_some_and(|l| l.ends_with(" 0")), "{:?}", lag_line("lag-test", 0));
        lags.set("lag-test", [("t", 0, 3)].into_iter());
        assert!(lag_line("lag-test", 0).is_some_and(|l| l.ends_with(" 3")));
    }
}
