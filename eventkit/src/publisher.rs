//! [`Publisher`]: sends integration events and waits for the broker's acknowledgement.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::config::Config;
use crate::envelope::Metadata;
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
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    producer: FutureProducer,
    /// Keeps an embedded broker alive as long as anything can publish to it.
    _broker: Option<Arc<crate::broker::EmbeddedBroker>>,
    source: String,
    timeout: Duration,
}

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
        let mut client = crate::kafka::client_config(config)?;
        client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", config.publish_timeout.as_millis().to_string());
        crate::kafka::apply_overrides(&mut client, config);
        Ok(Publisher {
            inner: Arc::new(Inner {
                config: config.clone(),
                producer: client.create()?,
                _broker: broker,
                source: config.service_name.clone(),
                timeout: config.publish_timeout,
            }),
        })
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
        let (topic, key, metadata, record) = self.prepare(event, options)?;
        self.send_record(&topic, key.as_bytes(), &metadata.id, record).await
    }

    /// Publishes several events, pipelined, and waits for every acknowledgement.
    /// Events with the same key keep their order.
    pub async fn publish_many<E: IntegrationEvent>(&self, events: &[E]) -> Result<Vec<Published>> {
        let prepared = events
            .iter()
            .map(|e| self.prepare(e, PublishOptions::default()))
            .collect::<Result<Vec<_>>>()?;
        let sends = prepared
            .into_iter()
            .map(|(topic, key, metadata, record)| async move { self.send_record(&topic, key.as_bytes(), &metadata.id, record).await });
        futures::future::try_join_all(sends).await
    }

    /// Sends a record with the given metadata and JSON data as it is (used by replays and
    /// bridges that already hold metadata).
    pub async fn send_raw(&self, topic: &str, key: &[u8], metadata: &Metadata, format: WireFormat, data: &[u8]) -> Result<Published> {
        let record = crate::wire::encode(format, metadata, data)?;
        self.send_record(topic, key, &metadata.id, record).await
    }

    /// Sends a record as it is (dead-lettering, replays); waits for the broker's ack.
    pub(crate) async fn send_headers(&self, topic: &str, key: Option<&[u8]>, partition: Option<i32>, value: Option<&[u8]>, headers: OwnedHeaders) -> Result<(i32, i64)> {
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
        match self.inner.producer.send(record, self.inner.timeout).await {
            Ok(d) => Ok((d.partition, d.offset)),
            Err((source, _)) => Err(Error::Publish { topic: topic.to_owned(), source }),
        }
    }

    /// Waits until every queued message was delivered (or `timeout` passed).
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.inner.producer.flush(timeout).map_err(Error::from)
    }

    fn prepare<E: IntegrationEvent>(&self, event: &E, options: PublishOptions) -> Result<(String, String, Metadata, Encoded)> {
        let info = &E::INFO;
        let mut metadata = Metadata::new(info.event_type, self.inner.source.clone());
        if let Some(id) = options.id {
            metadata.id = id;
        }
        metadata.schema_version = Some(info.version);
        metadata.correlation_id = options.correlation_id;
        metadata.causation_id = options.causation_id;
        metadata.tenant_id = options.tenant_id;
        metadata.subject = options.subject;
        metadata.other_headers = options.headers;
        let key = options
            .key
            .or_else(|| event.partition_key())
            .unwrap_or_else(|| metadata.id.clone());
        let data = serde_json::to_vec(event)?;
        let record = crate::wire::encode(self.inner.config.format_of(info), &metadata, &data)?;
        Ok((self.inner.config.topic_name(info.topic), key, metadata, record))
    }

    async fn send_record(&self, topic: &str, key: &[u8], event_id: &str, encoded: Encoded) -> Result<Published> {
        let record = FutureRecord::to(topic).key(key).payload(&encoded.value).headers(encoded.headers);
        match self.inner.producer.send(record, self.inner.timeout).await {
            Ok(delivery) => Ok(Published {
                event_id: event_id.to_owned(),
                topic: topic.to_owned(),
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Err((source, _)) => Err(Error::Publish { topic: topic.to_owned(), source }),
        }
    }
}

impl Publisher {
    pub(crate) fn same_as(&self, other: &Publisher) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}
