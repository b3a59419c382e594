//! [`Publisher`]: sends integration events and waits for the broker's acknowledgement.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::future_producer::Delivery;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::config::Config;
use crate::envelope::{BinaryHeaders, Metadata, JSON, SPEC_VERSION};
use crate::error::{Error, Result};
use crate::event::IntegrationEvent;
use crate::wire::{Encoded, WireFormat};

/// Per-publish settings: ids that link events, the tenant, and an explicit key.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PublishOptions {
    /// Event id to use instead of a fresh UUID v7 (e.g. when re-publishing).
    pub id: Option<String>,
    /// Correlation id (`ce_correlationid`).
    pub correlation_id: Option<String>,
    /// Causation id (`ce_causationid`).
    pub causation_id: Option<String>,
    /// Tenant (`ce_tenantid`).
    pub tenant_id: Option<String>,
    /// Subject (`ce_subject`).
    pub subject: Option<String>,
    /// Kafka key overriding the event's partition key.
    pub key: Option<String>,
    /// Extra headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl PublishOptions {
    /// Sets the correlation id.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }
    /// Sets the tenant.
    pub fn tenant_id(mut self, id: impl Into<String>) -> Self {
        self.tenant_id = Some(id.into());
        self
    }
    /// Sets the event id.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
    /// Sets the Kafka key (instead of the event's partition key).
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }
    /// Sets the subject.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }
    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((key.into(), value.into()));
        self
    }
}

/// Where a published event landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The event id (`ce_id`).
    pub event_id: String,
    /// Topic on the wire.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// Publishes integration events. Cheap to clone; all clones share one idempotent producer.
///
/// A producer that librdkafka declares failed for good (a fatal error: the idempotent
/// producer's sequence numbers no longer match the broker's, as after a broker lost its log)
/// is replaced by a new one: what the old one had not delivered is sent again on the new one,
/// with the same event ids (consumers' inboxes drop what arrives twice). Each replacement is
/// logged with its cause and counted (`eventkit_producer_rebuilds_total`), and readiness says so
/// until the new producer delivers.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    /// The producer's settings, for a replacement.
    client: rdkafka::ClientConfig,
    producer: arc_swap::ArcSwap<FutureProducer<crate::kafka::KitContext>>,
    /// Which producer this is: 0, then one more for each replacement.
    generation: std::sync::atomic::AtomicU64,
    /// Transactional producers are replaced by their group (a replacement must fence), not here.
    transactional: bool,
    /// One replacement at a time.
    replacing: std::sync::Mutex<()>,
    /// Why the producer was replaced, and when, until the new one delivers.
    failed: std::sync::Mutex<Option<(String, std::time::Instant)>>,
    recovering: std::sync::atomic::AtomicBool,
    /// Keeps an embedded broker alive as long as anything can publish to it.
    _broker: Option<Arc<crate::broker::EmbeddedBroker>>,
    source: String,
    timeout: Duration,
    metrics: crate::metrics::PublishMetricsByTopic,
    /// What must happen before the app's last flush of this producer (outbox relays stop).
    before_shutdown: std::sync::Mutex<Vec<ShutdownHook>>,
    /// What a transaction published, for test sessions once it commits.
    held_notes: std::sync::Mutex<Vec<HeldNote>>,
    /// A client for topic lookups that never create a topic (made on first use).
    lookup: std::sync::OnceLock<rdkafka::consumer::BaseConsumer<crate::kafka::KitContext>>,
}

/// An event a transaction published, told to test sessions once it commits: id, correlation,
/// type, topic, data.
type HeldNote = (String, Option<String>, String, String, Vec<u8>);

/// A step of an app's shutdown, run before its producer's last flush.
pub(crate) type ShutdownHook = Box<dyn FnOnce() -> futures::future::BoxFuture<'static, ()> + Send>;

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("source", &self.inner.source).finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher for `config`'s cluster (which must name bootstrap servers).
    pub fn new(config: &Config) -> Result<Self> {
        Self::with_broker(config, None)
    }

    pub(crate) fn with_broker(config: &Config, broker: Option<Arc<crate::broker::EmbeddedBroker>>) -> Result<Self> {
        Self::build(config, broker, false)
    }

    fn build(config: &Config, broker: Option<Arc<crate::broker::EmbeddedBroker>>, transactional: bool) -> Result<Self> {
        if config.service_name.trim().is_empty() {
            return Err(Error::Config("the service name is empty: it is the CloudEvents `source` of published events (set KAFKA_SERVICE_NAME)".into()));
        }
        let mut client = crate::kafka::client_config(config)?;
        client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            // The broker's own limit decides what is too large, not the producer's 1 MB default
            // (a dead letter copy adds headers to a record the broker accepted).
            .set("message.max.bytes", "104857600")
            .set("message.timeout.ms", config.publish_timeout.as_millis().to_string());
        crate::kafka::apply_overrides(&mut client, config, crate::kafka::Client::Producer);
        crate::metrics::install();
        let producer = client.create_with_context(crate::kafka::KitContext)?;
        Ok(Publisher {
            inner: Arc::new(Inner {
                config: config.clone(),
                client,
                producer: arc_swap::ArcSwap::from_pointee(producer),
                generation: Default::default(),
                transactional,
                replacing: Default::default(),
                failed: Default::default(),
                recovering: Default::default(),
                _broker: broker,
                source: config.service_name.clone(),
                timeout: config.publish_timeout,
                metrics: Default::default(),
                before_shutdown: Default::default(),
                held_notes: Default::default(),
                lookup: Default::default(),
            }),
        })
    }

    /// A transactional publisher for one consumer group member (`transactional.id`), its
    /// transactions initialized (which fences an earlier producer with the same id).
    pub(crate) fn transactional(config: &Config, transactional_id: &str) -> Result<Self> {
        let mut config = config.clone();
        config.kafka_producer.insert("transactional.id".into(), transactional_id.into());
        let publisher = Publisher::build(&config, None, true)?;
        publisher.inner.producer.load().init_transactions(Duration::from_secs(30))?;
        Ok(publisher)
    }

    /// Runs a blocking transaction call of the producer off the async workers.
    async fn transaction_call(&self, call: impl FnOnce(&FutureProducer<crate::kafka::KitContext>) -> rdkafka::error::KafkaResult<()> + Send + 'static) -> Result<()> {
        let producer = self.inner.producer.load_full();
        tokio::task::spawn_blocking(move || call(&producer)).await.map_err(|e| Error::Other(e.into()))?.map_err(Error::from)
    }

    /// Adds the consumed offsets to the open transaction.
    pub(crate) async fn send_offsets(&self, offsets: rdkafka::TopicPartitionList, group: Arc<rdkafka::consumer::ConsumerGroupMetadata>) -> Result<()> {
        let timeout = self.inner.timeout;
        self.transaction_call(move |p| p.send_offsets_to_transaction(&offsets, &group, timeout)).await
    }

    /// Commits the open transaction.
    pub(crate) async fn commit_transaction(&self) -> Result<()> {
        let timeout = self.inner.timeout;
        self.transaction_call(move |p| p.commit_transaction(timeout)).await?;
        let notes = std::mem::take(&mut *self.inner.held_notes.lock().unwrap_or_else(|e| e.into_inner()));
        for (id, correlation, event_type, topic, data) in notes {
            crate::testing::on_published(&id, correlation.as_deref(), &event_type, &topic, &data);
        }
        Ok(())
    }

    pub(crate) async fn abort_transaction(&self) -> Result<()> {
        self.inner.held_notes.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let timeout = self.inner.timeout;
        self.transaction_call(move |p| p.abort_transaction(timeout)).await
    }

    /// A transaction begins: nothing held from an earlier one (that failed) carries over.
    pub(crate) async fn begin_transaction(&self) -> Result<()> {
        self.inner.held_notes.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.transaction_call(|p| p.begin_transaction()).await
    }

    /// Registers a step to run when the app shuts down, before it flushes this producer.
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) fn before_shutdown(&self, hook: ShutdownHook) {
        self.inner.before_shutdown.lock().unwrap_or_else(|e| e.into_inner()).push(hook);
    }

    /// Takes the steps registered with [`Publisher::before_shutdown`].
    pub(crate) fn take_shutdown_hooks(&self) -> Vec<ShutdownHook> {
        std::mem::take(&mut *self.inner.before_shutdown.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether `topic` exists, as the cluster says (`None`: it did not answer). The lookup
    /// never creates the topic (a producer's metadata request may, on a broker that creates
    /// topics on demand).
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) async fn topic_exists(&self, topic: &str) -> Option<bool> {
        let (publisher, topic) = (self.clone(), topic.to_owned());
        tokio::task::spawn_blocking(move || {
            use rdkafka::consumer::Consumer;
            let inner = &publisher.inner;
            let lookup = match inner.lookup.get() {
                Some(lookup) => lookup,
                None => {
                    let mut client = crate::kafka::client_config(&inner.config).ok()?;
                    crate::kafka::apply_overrides(&mut client, &inner.config, crate::kafka::Client::Admin);
                    client.set("allow.auto.create.topics", "false");
                    let created = client.create_with_context(crate::kafka::KitContext).ok()?;
                    let _ = inner.lookup.set(created);
                    inner.lookup.get()?
                }
            };
            let metadata = lookup.fetch_metadata(Some(&topic), Duration::from_secs(5)).ok()?;
            let found = metadata.topics().iter().find(|t| t.name() == topic)?;
            match found.error() {
                None => Some(true),
                Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => Some(false),
                Some(_) => None,
            }
        })
        .await
        .ok()
        .flatten()
    }

    /// The app's static instance id (`group.instance.id`), if it has one.
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) fn instance_id(&self) -> Option<&str> {
        let config = &self.inner.config;
        config.kafka_consumer.get("group.instance.id").or_else(|| config.kafka.get("group.instance.id")).map(String::as_str)
    }

    /// The prefix of every topic this publisher sends to.
    pub(crate) fn topic_prefix(&self) -> &str {
        &self.inner.config.topic_prefix
    }

    /// The CloudEvents `source` of events this publisher sends.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// Publishes `event` and waits until the broker acknowledged it.
    pub async fn publish<E: IntegrationEvent>(&self, event: &E) -> Result<Published> {
        self.publish_with(event, PublishOptions::default()).await
    }

    /// Publishes `event` with explicit ids, tenant, key or headers.
    pub async fn publish_with<E: IntegrationEvent>(&self, event: &E, options: PublishOptions) -> Result<Published> {
        let topic = self.inner.config.topic_name(E::INFO.topic);
        crate::trace::sending(self.topic_prefix(), E::INFO.topic, 1, self.publish_to(event, options, topic)).await
    }

    async fn publish_to<E: IntegrationEvent>(&self, event: &E, mut options: PublishOptions, topic: String) -> Result<Published> {
        crate::trace::inject(&mut options.headers);
        // The correlation a test session follows (a root event's is its own id).
        let options_correlation = crate::testing::active().then(|| options.correlation_id.clone().or_else(|| options.id.clone())).flatten();
        let out = self.encode(event, options, self.inner.config.format_of(&E::INFO))?;
        // Told before the record goes out: a fast consumer may settle it before the ack.
        if options_correlation.is_some() {
            self.note_published(&out.id, options_correlation.as_deref(), E::INFO.event_type, &topic, &out.value);
        }
        let delivery = self.enqueue(&topic, Some(out.key.as_bytes()), None, Some(&out.value), out.headers).await?;
        let d = self.delivered(&topic, delivery).await?;
        Ok(Published { event_id: out.id, topic, partition: d.partition, offset: d.offset })
    }

    /// Publishes several events, pipelined, and waits for every acknowledgement.
    /// Events with the same key keep their order.
    ///
    /// Each event is encoded and handed to librdkafka (which copies it) before the next one is
    /// encoded, so memory holds one encoded event at a time plus librdkafka's queue.
    pub async fn publish_many<E: IntegrationEvent>(&self, events: &[E]) -> Result<Vec<Published>> {
        let topic = self.inner.config.topic_name(E::INFO.topic);
        crate::trace::sending(self.topic_prefix(), E::INFO.topic, events.len(), self.publish_many_to(events, topic)).await
    }

    async fn publish_many_to<E: IntegrationEvent>(&self, events: &[E], topic: String) -> Result<Vec<Published>> {
        let format = self.inner.config.format_of(&E::INFO);
        let mut pending = Vec::with_capacity(events.len());
        let mut options = PublishOptions::default();
        crate::trace::inject(&mut options.headers);
        for event in events {
            let out = self.encode(event, options.clone(), format)?;
            let delivery = self.enqueue(&topic, Some(out.key.as_bytes()), None, Some(&out.value), out.headers).await?;
            pending.push((out.id, delivery));
        }
        let mut published = Vec::with_capacity(pending.len());
        for (event_id, delivery) in pending {
            let d = self.delivered(&topic, delivery).await?;
            published.push(Published { event_id, topic: topic.clone(), partition: d.partition, offset: d.offset });
        }
        Ok(published)
    }

    /// Publishes events (integration events, `#[maps_to]` domain events, a [`crate::Cascade`],
    /// or collections of them) with `options`, pipelined, and waits for every acknowledgement.
    pub async fn publish_events(&self, events: impl crate::IntoEvents, options: PublishOptions) -> Result<Vec<Published>> {
        crate::Cascade::new().with(events).publish(self, options).await
    }

    /// Sends a record with the given metadata and JSON data as it is (used by replays and
    /// bridges that already hold metadata).
    pub async fn send_raw(&self, topic: &str, key: &[u8], metadata: &Metadata, format: WireFormat, data: &[u8]) -> Result<Published> {
        let record = crate::wire::encode(format, metadata, data)?;
        let delivery = self.enqueue(topic, Some(key), None, Some(&record.value), record.headers).await?;
        let d = self.delivered(topic, delivery).await?;
        Ok(Published { event_id: metadata.id.clone(), topic: topic.to_owned(), partition: d.partition, offset: d.offset })
    }

    /// Hands an encoded event to the producer (waiting only while its queue is full).
    pub(crate) async fn enqueue_encoded(&self, topic: &str, out: Outgoing) -> Result<Delivering> {
        self.enqueue(topic, Some(out.key.as_bytes()), None, Some(&out.value), out.headers).await
    }

    /// Sends a record as it is (dead-lettering, replays); waits for the broker's ack.
    pub(crate) async fn send_headers(&self, topic: &str, key: Option<&[u8]>, partition: Option<i32>, value: Option<&[u8]>, headers: OwnedHeaders) -> Result<(i32, i64)> {
        let delivery = self.enqueue_headers(topic, key, partition, value, headers).await?;
        self.acked(topic, delivery).await
    }

    /// Hands a record to the producer as it is (waiting only while its queue is full); the
    /// delivery future gives the ack.
    pub(crate) async fn enqueue_headers(&self, topic: &str, key: Option<&[u8]>, partition: Option<i32>, value: Option<&[u8]>, headers: OwnedHeaders) -> Result<Delivering> {
        self.enqueue(topic, key, partition, value, headers).await
    }

    /// Tells open test sessions that an event goes out. A transactional producer holds the
    /// news until its transaction commits, and drops it when it aborts: readers never see an
    /// aborted attempt's events, and neither does a session.
    pub(crate) fn note_published(&self, event_id: &str, correlation: Option<&str>, event_type: &str, topic: &str, data: &[u8]) {
        if !crate::testing::active() {
            return;
        }
        if self.inner.transactional {
            let note = (event_id.to_owned(), correlation.map(str::to_owned), event_type.to_owned(), topic.to_owned(), data.to_vec());
            self.inner.held_notes.lock().unwrap_or_else(|e| e.into_inner()).push(note);
        } else {
            crate::testing::on_published(event_id, correlation, event_type, topic, data);
        }
    }

    /// Waits until every queued message was delivered (or `timeout` passed).
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.inner.producer.load().flush(timeout).map_err(Error::from)
    }

    /// Why the producer is not healthy, if it is not: it failed for good and its replacement
    /// has not delivered yet.
    pub(crate) fn unhealthy(&self) -> Option<String> {
        if !self.inner.recovering.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let failed = self.inner.failed.lock().unwrap_or_else(|e| e.into_inner());
        failed.as_ref().map(|(why, at)| format!("the producer failed for good {} s ago ({why}); its replacement has not delivered yet", at.elapsed().as_secs()))
    }

    /// Replaces the producer of `generation` when librdkafka declared it failed for good (or it
    /// was replaced already). True when records should be sent again on the current producer.
    fn replace_failed(&self, generation: u64) -> bool {
        use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};
        if self.inner.transactional {
            return false;
        }
        let _one = self.inner.replacing.lock().unwrap_or_else(|e| e.into_inner());
        if self.inner.generation.load(Acquire) != generation {
            return true;
        }
        let Some((code, reason)) = self.inner.producer.load().client().fatal_error() else { return false };
        let fresh: FutureProducer<crate::kafka::KitContext> = match self.inner.client.create_with_context(crate::kafka::KitContext) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %crate::error::redact(e), "the producer failed for good and a new one cannot be created; trying again with the next record");
                return false;
            }
        };
        self.inner.producer.store(Arc::new(fresh));
        self.inner.generation.fetch_add(1, AcqRel);
        let why = format!("{code:?}: {reason}");
        tracing::warn!(cause = %why, "the producer failed for good (librdkafka's fatal error); a new one replaces it, and what the old one had not delivered is sent again with the same event ids");
        metrics::counter!("eventkit_producer_rebuilds_total").increment(1);
        *self.inner.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some((why, std::time::Instant::now()));
        self.inner.recovering.store(true, Release);
        true
    }

    /// Encodes an event for `topic_of`'s topic on the wire, without sending it (the outbox
    /// stores it so).
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) fn encode_record<E: IntegrationEvent>(&self, event: &E, mut options: PublishOptions) -> Result<(String, Outgoing)> {
        crate::trace::inject(&mut options.headers);
        let topic = self.inner.config.topic_name(E::INFO.topic);
        Ok((topic, self.encode(event, options, self.inner.config.format_of(&E::INFO))?))
    }

    /// Encodes an event: its id, key, JSON value and headers in the event's wire format.
    fn encode<E: IntegrationEvent>(&self, event: &E, options: PublishOptions, format: WireFormat) -> Result<Outgoing> {
        let info = &E::INFO;
        let value = serde_json::to_vec(event)?;
        let PublishOptions { id, correlation_id, causation_id, tenant_id, subject, key, headers } = options;
        let id = id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let key = key.or_else(|| event.partition_key()).unwrap_or_else(|| id.clone());
        // A root event starts its own correlation.
        let correlation_id = correlation_id.or_else(|| Some(id.clone()));
        crate::wire::check_headers(&headers)?;
        if format == WireFormat::Binary {
            // The hot path: headers straight from borrowed values, no metadata to build.
            static NO_EXTENSIONS: BTreeMap<String, String> = BTreeMap::new();
            let time = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
            let mut number = itoa::Buffer::new();
            let headers = BinaryHeaders {
                spec_version: SPEC_VERSION,
                id: &id,
                source: &self.inner.source,
                event_type: info.event_type,
                time: Some(&time),
                content_type: Some(JSON),
                subject: subject.as_deref(),
                data_schema: None,
                correlation_id: correlation_id.as_deref(),
                causation_id: causation_id.as_deref(),
                tenant_id: tenant_id.as_deref(),
                schema_version: Some(number.format(info.version)),
                extensions: &NO_EXTENSIONS,
                other_headers: &headers,
            }
            .write();
            return Ok(Outgoing { id, key, value, headers, event_type: info.event_type, correlation: correlation_id });
        }
        let mut metadata = Metadata::new(info.event_type, self.inner.source.clone());
        metadata.id = id;
        metadata.schema_version = Some(info.version.to_string());
        metadata.correlation_id = correlation_id;
        metadata.causation_id = causation_id;
        metadata.tenant_id = tenant_id;
        metadata.subject = subject;
        metadata.other_headers = headers;
        let Encoded { headers, value } = crate::wire::encode(format, &metadata, &value)?;
        Ok(Outgoing { id: metadata.id, key, value, headers, event_type: info.event_type, correlation: metadata.correlation_id })
    }

    /// Hands a record to librdkafka (which copies it); waits only while its queue is full,
    /// up to the publish timeout.
    async fn enqueue(&self, topic: &str, key: Option<&[u8]>, partition: Option<i32>, value: Option<&[u8]>, headers: OwnedHeaders) -> Result<Delivering> {
        let metrics = self.inner.metrics.of(topic);
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(value) = value {
            record = record.payload(value);
        }
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        let deadline = tokio::time::Instant::now() + self.inner.timeout;
        let mut replaced = 0;
        loop {
            let generation = self.inner.generation.load(std::sync::atomic::Ordering::Acquire);
            let sent = self.inner.producer.load().send_result(record);
            match sent {
                Ok(future) => return Ok(Delivering { future, started: std::time::Instant::now(), metrics, generation, partition }),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) if tokio::time::Instant::now() < deadline => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((_, back)) if replaced < 3 && self.replace_failed(generation) => {
                    replaced += 1;
                    record = back;
                }
                Err((source, _)) => {
                    metrics.errors.increment(1);
                    return Err(Error::Publish { topic: topic.to_owned(), source });
                }
            }
        }
    }

    /// Waits for the broker's acknowledgement of one record: its partition and offset. A record
    /// its producer could not deliver because that producer failed for good is sent again on
    /// the one that replaces it.
    pub(crate) async fn acked(&self, topic: &str, delivery: Delivering) -> Result<(i32, i64)> {
        self.delivered(topic, delivery).await.map(|d| (d.partition, d.offset))
    }

    /// Waits for the broker's acknowledgement of one record (see [`Publisher::acked`]).
    async fn delivered(&self, topic: &str, mut delivery: Delivering) -> Result<Delivery> {
        for _ in 0..3 {
            match delivered(topic, delivery).await {
                Ok(d) => {
                    if self.inner.recovering.load(std::sync::atomic::Ordering::Relaxed) {
                        self.recovered();
                    }
                    return Ok(d);
                }
                Err(Undelivered { error, message: Some(message), generation, partition }) if self.replace_failed(generation) => {
                    use rdkafka::message::Message;
                    let headers = message.headers().cloned().unwrap_or_default();
                    delivery = self.enqueue(topic, message.key(), partition, message.payload(), headers).await.map_err(|_| error)?;
                }
                Err(Undelivered { error, .. }) => return Err(error),
            }
        }
        Err(Error::Publish { topic: topic.to_owned(), source: KafkaError::MessageProduction(RDKafkaErrorCode::Fatal) })
    }

    fn recovered(&self) {
        if self.inner.recovering.swap(false, std::sync::atomic::Ordering::AcqRel) {
            if let Some((why, at)) = self.inner.failed.lock().unwrap_or_else(|e| e.into_inner()).take() {
                tracing::info!(after = ?std::time::Duration::from_secs(at.elapsed().as_secs()), cause = %why, "the new producer delivers");
            }
        }
    }
}

/// A record handed to the producer: its ack to come, timed for the publish metrics.
pub(crate) struct Delivering {
    future: DeliveryFuture,
    started: std::time::Instant,
    metrics: Arc<crate::metrics::PublishMetrics>,
    /// Which producer took it.
    generation: u64,
    /// The partition it was sent to explicitly, if it was.
    partition: Option<i32>,
}

/// A record that was not delivered: why, and the record itself (to send again) when librdkafka
/// gave it back.
struct Undelivered {
    error: Error,
    message: Option<rdkafka::message::OwnedMessage>,
    generation: u64,
    partition: Option<i32>,
}

/// An event encoded for the wire.
pub(crate) struct Outgoing {
    pub id: String,
    pub key: String,
    pub value: Vec<u8>,
    pub headers: OwnedHeaders,
    /// `ce_type`.
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub event_type: &'static str,
    /// The correlation id it carries.
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub correlation: Option<String>,
}

/// Waits for the broker's acknowledgement of one record.
async fn delivered(topic: &str, delivery: Delivering) -> std::result::Result<Delivery, Undelivered> {
    let Delivering { future, started, metrics, generation, partition } = delivery;
    let result = match future.await {
        Ok(Ok(d)) => Ok(d),
        Ok(Err((source, message))) => Err(Undelivered { error: Error::Publish { topic: topic.to_owned(), source }, message: Some(message), generation, partition }),
        Err(_) => Err(Undelivered { error: Error::Publish { topic: topic.to_owned(), source: KafkaError::Canceled }, message: None, generation, partition }),
    };
    match &result {
        Ok(_) => {
            metrics.published.increment(1);
            metrics.duration.record(started.elapsed());
        }
        Err(_) => metrics.errors.increment(1),
    }
    result
}

impl Publisher {
    pub(crate) fn same_as(&self, other: &Publisher) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}
