//! [`Publisher`]: sends integration events and waits for the broker's acknowledgement.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::future_producer::Delivery;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::core::config::Config;
use crate::core::envelope::{BinaryHeaders, Metadata, JSON, SPEC_VERSION};
use crate::core::error::{Error, Result};
use crate::core::event::IntegrationEvent;
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
/// Take it from a running app ([`crate::Running::publisher`], [`crate::publisher`]), a handler
/// (a `Publisher` argument, or `ctx.publish`), or make one for a cluster with
/// [`Publisher::new`]:
///
/// ```no_run
/// use eventkit::PublishOptions;
///
/// #[eventkit::integration_event(topic = "users.created.v1", key = user_id)]
/// pub struct UserCreated { pub user_id: u64, pub email: String }
///
/// # async fn example() -> eventkit::Result<()> {
/// let publisher = eventkit::publisher()?;          // the running app's
/// let event = UserCreated { user_id: 7, email: "ann@example.com".into() };
/// let published = publisher.publish(&event).await?; // waits for the broker's acknowledgement
/// publisher
///     .publish_with(&event, PublishOptions::default().correlation_id(published.event_id).header("x-origin", "signup"))
///     .await?;
/// # Ok(()) }
/// ```
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
    _broker: Option<Arc<crate::kafka::embedded::EmbeddedBroker>>,
    source: String,
    timeout: Duration,
    /// The layers every event passes.
    layers: crate::flows::layer::publish::PublishStack,
    /// What must happen before the app's last flush of this producer (outbox relays stop).
    before_shutdown: std::sync::Mutex<Vec<ShutdownHook>>,
    /// A client for topic lookups that never create a topic (made on first use).
    lookup: std::sync::OnceLock<rdkafka::consumer::BaseConsumer<crate::kafka::KitContext>>,
}

/// A step of an app's shutdown, run before its producer's last flush.
pub(crate) type ShutdownHook = Box<dyn FnOnce() -> futures::future::BoxFuture<'static, ()> + Send>;

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("source", &self.inner.source).finish_non_exhaustive()
    }
}

impl Publisher {
    /// The publish layers (a transactional producer of the app gets the same).
    pub(crate) fn layers(&self) -> crate::flows::layer::publish::PublishStack {
        self.inner.layers.clone()
    }

    pub(crate) fn with_broker(config: &Config, broker: Option<Arc<crate::kafka::embedded::EmbeddedBroker>>, layers: crate::flows::layer::publish::PublishStack) -> Result<Self> {
        Self::build(config, broker, false, layers)
    }

    fn build(config: &Config, broker: Option<Arc<crate::kafka::embedded::EmbeddedBroker>>, transactional: bool, layers: crate::flows::layer::publish::PublishStack) -> Result<Self> {
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
                layers,
                before_shutdown: Default::default(),
                lookup: Default::default(),
            }),
        })
    }

    /// A transactional publisher for one consumer group member (`transactional.id`), its
    /// transactions initialized (which fences an earlier producer with the same id).
    pub(crate) fn transactional(config: &Config, transactional_id: &str, layers: crate::flows::layer::publish::PublishStack) -> Result<Self> {
        let mut config = config.clone();
        config.kafka_producer.insert("transactional.id".into(), transactional_id.into());
        let publisher = Publisher::build(&config, None, true, layers)?;
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
        self.inner.layers.transaction(self.transaction_id(), crate::flows::layer::publish::TransactionEnd::Committed);
        Ok(())
    }

    pub(crate) async fn abort_transaction(&self) -> Result<()> {
        self.inner.layers.transaction(self.transaction_id(), crate::flows::layer::publish::TransactionEnd::Aborted);
        let timeout = self.inner.timeout;
        self.transaction_call(move |p| p.abort_transaction(timeout)).await
    }

    /// A transaction begins: nothing of an earlier one (that failed) carries over.
    pub(crate) async fn begin_transaction(&self) -> Result<()> {
        self.inner.layers.transaction(self.transaction_id(), crate::flows::layer::publish::TransactionEnd::Aborted);
        self.transaction_call(|p| p.begin_transaction()).await
    }

    /// Which producer's transaction an event is in (a transactional producer's identity).
    fn transaction_id(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
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
        let out = self.encode(event, options, self.inner.config.format_of(&E::INFO))?;
        let delivery = self.send_event(&topic, out).await?;
        let (d, event_id) = self.delivered_event(&topic, delivery).await?;
        Ok(Published { event_id, topic, partition: d.partition, offset: d.offset })
    }

    /// Hands an encoded event to the producer through the publish layers (their `before`, then
    /// the hand-over; their `after` comes with the broker's answer).
    pub(crate) async fn send_event(&self, topic: &str, mut out: Outgoing) -> Result<Delivering> {
        let mut kept = Vec::new();
        let layered = !self.inner.layers.is_empty();
        if layered {
            let mut view = crate::flows::layer::publish::Outgoing {
                topic,
                event_id: &out.id,
                event_type: out.event_type,
                correlation_id: out.correlation.as_deref(),
                key: out.key.as_bytes(),
                value: &out.value,
                headers: &mut out.headers,
                kept: &mut kept,
                staged: false,
                transaction: self.inner.transactional.then(|| self.transaction_id()),
            };
            self.inner.layers.before(&mut view)?;
        }
        let Outgoing { id, key, value, headers, event_type, .. } = out;
        match self.enqueue(topic, Some(key.as_bytes()), None, Some(&value), headers).await {
            Ok(mut delivery) => {
                delivery.event = Some(EventMeta { id, event_type, kept });
                Ok(delivery)
            }
            Err(e) => {
                if layered {
                    let mut result = crate::flows::layer::publish::PublishResult { topic, event_id: &id, event_type, result: Err(&e), took: Duration::ZERO, kept: &mut kept };
                    self.inner.layers.after(&mut result);
                }
                Err(e)
            }
        }
    }

    /// Runs an event being staged in an outbox through the publish layers' `before` (they add
    /// their headers now; the relay publishes it later).
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) fn stage_event(&self, topic: &str, out: &mut Outgoing) -> Result<()> {
        let mut kept = Vec::new();
        let mut view = crate::flows::layer::publish::Outgoing {
            topic,
            event_id: &out.id,
            event_type: out.event_type,
            correlation_id: out.correlation.as_deref(),
            key: out.key.as_bytes(),
            value: &out.value,
            headers: &mut out.headers,
            kept: &mut kept,
            staged: true,
            transaction: None,
        };
        self.inner.layers.before(&mut view)
    }

    /// Publishes several events, pipelined, and waits for every acknowledgement.
    /// Events with the same key keep their order.
    ///
    /// Each event is encoded and handed to librdkafka (which copies it) before the next one is
    /// encoded, so memory holds one encoded event at a time plus librdkafka's queue.
    pub async fn publish_many<E: IntegrationEvent>(&self, events: &[E]) -> Result<Vec<Published>> {
        let topic = self.inner.config.topic_name(E::INFO.topic);
        let format = self.inner.config.format_of(&E::INFO);
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            let out = self.encode(event, PublishOptions::default(), format)?;
            pending.push(self.send_event(&topic, out).await?);
        }
        let mut published = Vec::with_capacity(pending.len());
        for delivery in pending {
            let (d, event_id) = self.delivered_event(&topic, delivery).await?;
            published.push(Published { event_id, topic: topic.clone(), partition: d.partition, offset: d.offset });
        }
        Ok(published)
    }

    /// Sends a record with the given metadata and JSON data as it is (used by replays and
    /// bridges that already hold metadata).
    pub async fn send_raw(&self, topic: &str, key: &[u8], metadata: &Metadata, format: WireFormat, data: &[u8]) -> Result<Published> {
        let record = crate::wire::encode(format, metadata, data)?;
        let delivery = self.enqueue(topic, Some(key), None, Some(&record.value), record.headers).await?;
        let d = self.delivered(topic, delivery).await?;
        Ok(Published { event_id: metadata.id.clone(), topic: topic.to_owned(), partition: d.partition, offset: d.offset })
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

    /// Hands a staged outbox row to the producer (the relay): the publish layers see its
    /// broker's answer (they saw it being staged).
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) async fn enqueue_row(&self, topic: &str, key: &[u8], value: &[u8], headers: OwnedHeaders, event_id: &str) -> Result<Delivering> {
        let mut delivery = self.enqueue(topic, Some(key), None, Some(value), headers).await?;
        delivery.event = Some(EventMeta { id: event_id.to_owned(), event_type: "", kept: Vec::new() });
        Ok(delivery)
    }

    /// Waits until every queued message was delivered (or `timeout` passed).
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.inner.producer.load().flush(timeout).map_err(Error::from)
    }

    #[cfg_attr(not(feature = "admin"), allow(dead_code))]
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
                tracing::error!(error = %crate::core::error::redact(e), "the producer failed for good and a new one cannot be created; trying again with the next record");
                return false;
            }
        };
        self.inner.producer.store(Arc::new(fresh));
        self.inner.generation.fetch_add(1, AcqRel);
        let why = format!("{code:?}: {reason}");
        tracing::warn!(cause = %why, "the producer failed for good (librdkafka's fatal error); a new one replaces it, and what the old one had not delivered is sent again with the same event ids");
        self.inner.layers.producer_replaced(&why);
        *self.inner.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some((why, std::time::Instant::now()));
        self.inner.recovering.store(true, Release);
        true
    }

    /// Encodes an event for `topic_of`'s topic on the wire, without sending it (the outbox
    /// stores it so).
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) fn encode_record<E: IntegrationEvent>(&self, event: &E, options: PublishOptions) -> Result<(String, Outgoing)> {
        let topic = self.inner.config.topic_name(E::INFO.topic);
        let mut out = self.encode(event, options, self.inner.config.format_of(&E::INFO))?;
        self.stage_event(&topic, &mut out)?;
        Ok((topic, out))
    }

    /// Encodes an event to publish now (the publish layers run when it is sent).
    pub(crate) fn encode_event<E: IntegrationEvent>(&self, event: &E, options: PublishOptions) -> Result<(String, Outgoing)> {
        let topic = self.inner.config.topic_name(E::INFO.topic);
        Ok((topic, self.encode(event, options, self.inner.config.format_of(&E::INFO))?))
    }

    /// Encodes an event: its id, key, JSON value and headers in the event's wire format.
    fn encode<E: IntegrationEvent>(&self, event: &E, options: PublishOptions, format: WireFormat) -> Result<Outgoing> {
        self.encode_parts(&E::INFO, serde_json::to_vec(event)?, || event.partition_key(), options, format)
    }

    /// Encodes an event already serialized (`value`), and so of no Rust type here.
    pub(crate) fn encode_json(&self, event: &crate::core::event::JsonEvent, options: PublishOptions) -> Result<(String, Outgoing)> {
        let topic = self.inner.config.topic_name(event.info.topic);
        let out = self.encode_parts(event.info, event.data.clone(), || event.key.clone(), options, self.inner.config.format_of(event.info))?;
        Ok((topic, out))
    }

    /// [`Publisher::encode_json`] for an outbox.
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) fn stage_json(&self, event: &crate::core::event::JsonEvent, options: PublishOptions) -> Result<(String, Outgoing)> {
        let (topic, mut out) = self.encode_json(event, options)?;
        self.stage_event(&topic, &mut out)?;
        Ok((topic, out))
    }

    fn encode_parts(&self, info: &'static crate::core::event::EventInfo, value: Vec<u8>, partition_key: impl FnOnce() -> Option<String>, options: PublishOptions, format: WireFormat) -> Result<Outgoing> {
        let PublishOptions { id, correlation_id, causation_id, tenant_id, subject, key, headers } = options;
        let id = id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let key = key.or_else(partition_key).unwrap_or_else(|| id.clone());
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
                Ok(future) => return Ok(Delivering { future, started: std::time::Instant::now(), generation, partition, event: None }),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) if tokio::time::Instant::now() < deadline => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((_, back)) if replaced < 3 && self.replace_failed(generation) => {
                    replaced += 1;
                    record = back;
                }
                Err((source, _)) => return Err(Error::Publish { topic: topic.to_owned(), source }),
            }
        }
    }

    /// Waits for the broker's acknowledgement of one record: its partition and offset. A record
    /// its producer could not deliver because that producer failed for good is sent again on
    /// the one that replaces it.
    pub(crate) async fn acked(&self, topic: &str, delivery: Delivering) -> Result<(i32, i64)> {
        self.delivered(topic, delivery).await.map(|d| (d.partition, d.offset))
    }

    /// [`Publisher::acked`] for an event: its id, partition and offset.
    pub(crate) async fn acked_event(&self, topic: &str, delivery: Delivering) -> Result<(String, i32, i64)> {
        self.delivered_event(topic, delivery).await.map(|(d, id)| (id, d.partition, d.offset))
    }

    /// Waits for the broker's acknowledgement of one record (see [`Publisher::acked`]).
    async fn delivered(&self, topic: &str, delivery: Delivering) -> Result<Delivery> {
        self.delivered_event(topic, delivery).await.map(|(d, _)| d)
    }

    /// Waits for the broker's acknowledgement of one record, and tells the publish layers of an
    /// event; gives the event id back.
    async fn delivered_event(&self, topic: &str, mut delivery: Delivering) -> Result<(Delivery, String)> {
        let started = delivery.started;
        let mut event = delivery.event.take();
        let mut answer = Err(Error::Publish { topic: topic.to_owned(), source: KafkaError::MessageProduction(RDKafkaErrorCode::Fatal) });
        for _ in 0..3 {
            match delivered(topic, delivery).await {
                Ok(d) => {
                    if self.inner.recovering.load(std::sync::atomic::Ordering::Relaxed) {
                        self.recovered();
                    }
                    answer = Ok(d);
                    break;
                }
                Err(Undelivered { error, message: Some(message), generation, partition }) if self.replace_failed(generation) => {
                    use rdkafka::message::Message;
                    let headers = message.headers().cloned().unwrap_or_default();
                    match self.enqueue(topic, message.key(), partition, message.payload(), headers).await {
                        Ok(again) => delivery = again,
                        Err(_) => {
                            answer = Err(error);
                            break;
                        }
                    }
                }
                Err(Undelivered { error, .. }) => {
                    answer = Err(error);
                    break;
                }
            }
        }
        let id = match &mut event {
            Some(EventMeta { id, event_type, kept }) => {
                let result = answer.as_ref().map(|d| (d.partition, d.offset));
                let mut told = crate::flows::layer::publish::PublishResult { topic, event_id: id, event_type, result, took: started.elapsed(), kept };
                self.inner.layers.after(&mut told);
                std::mem::take(id)
            }
            None => String::new(),
        };
        answer.map(|d| (d, id))
    }

    fn recovered(&self) {
        if self.inner.recovering.swap(false, std::sync::atomic::Ordering::AcqRel) {
            if let Some((why, at)) = self.inner.failed.lock().unwrap_or_else(|e| e.into_inner()).take() {
                tracing::info!(after = ?std::time::Duration::from_secs(at.elapsed().as_secs()), cause = %why, "the new producer delivers");
            }
        }
    }
}

/// A record handed to the producer: its ack to come, timed for the publish layers.
pub(crate) struct Delivering {
    future: DeliveryFuture,
    started: std::time::Instant,
    /// The event it is, for the publish layers' `after` (none for raw records: dead letters).
    event: Option<EventMeta>,
    /// Which producer took it.
    generation: u64,
    /// The partition it was sent to explicitly, if it was.
    partition: Option<i32>,
}

/// An event on its way, as the publish layers know it.
struct EventMeta {
    id: String,
    event_type: &'static str,
    kept: Vec<Box<dyn std::any::Any + Send>>,
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
    let Delivering { future, generation, partition, .. } = delivery;
    let result = match future.await {
        Ok(Ok(d)) => Ok(d),
        Ok(Err((source, message))) => Err(Undelivered { error: Error::Publish { topic: topic.to_owned(), source }, message: Some(message), generation, partition }),
        Err(_) => Err(Undelivered { error: Error::Publish { topic: topic.to_owned(), source: KafkaError::Canceled }, message: None, generation, partition }),
    };
    result
}

impl Publisher {
    pub(crate) fn same_as(&self, other: &Publisher) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}
