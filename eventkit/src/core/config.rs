//! Configuration: environment variables, with builder overrides.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::core::properties::REDACTED;
use crate::core::error::{Error, Result};
use crate::core::event::EventInfo;
use crate::core::ordering::Ordering;
use crate::core::envelope::WireFormat;

/// Prefix of environment variables passed through to librdkafka:
/// `EVENTKIT_KAFKA_SECURITY_PROTOCOL=SASL_SSL` sets `security.protocol`.
pub const PASSTHROUGH_PREFIX: &str = "EVENTKIT_KAFKA_";

/// eventkit's settings. Build it with [`Config::from_env`] or [`Config::default`], then
/// adjust fields or use [`crate::App::builder`].
///
/// Its `Debug` output never shows secrets: the admin tokens and the values of the librdkafka
/// properties librdkafka marks sensitive (passwords, secrets, private keys, SASL user names,
/// under every spelling eventkit accepts) read `<redacted>`, and so do the values of names
/// librdkafka does not know.
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    /// `KAFKA_BOOTSTRAP_SERVERS`. `None` starts the embedded broker.
    pub bootstrap_servers: Option<String>,
    /// `KAFKA_SERVICE_NAME`: the CloudEvents `source` of published events
    /// (default: the executable's name).
    pub service_name: String,
    /// `KAFKA_CONSUMER_GROUP_ID`: the group of handlers that name none (default: service name).
    pub default_group: Option<String>,
    /// `KAFKA_TOPIC_PREFIX`: prepended to every topic, e.g. `staging.`.
    pub topic_prefix: String,
    /// `EVENTKIT_GROUP_PREFIX`: prepended to every consumer group id.
    pub group_prefix: String,
    /// `KAFKA_AUTO_OFFSET_RESET`: where a new group starts (`earliest` or `latest`).
    pub auto_offset_reset: String,
    /// `EVENTKIT_GROUPS`: comma-separated groups to run in this process (default: all).
    pub groups: Option<Vec<String>>,
    /// `EVENTKIT_CREATE_TOPICS`: create missing topics at start (default: true).
    pub create_topics: bool,
    /// `EVENTKIT_DEFAULT_LOGGING` (default true): when the app starts and the program has no
    /// `tracing` subscriber, install a formatted one filtered by `RUST_LOG` (default `info`).
    pub default_logging: bool,
    /// `EVENTKIT_TOPIC_PARTITIONS`: partitions of topics eventkit creates (default: 3).
    pub topic_partitions: i32,
    /// `EVENTKIT_SHUTDOWN_TIMEOUT_MS`: the whole shutdown's budget, from the signal to the exit
    /// (default 20 s, under Kubernetes' default grace period of 30 s). In-flight handlers get
    /// it less a reserve for committing, leaving the groups and flushing the producer (a quarter
    /// of it, at most 5 s).
    pub shutdown_timeout: Duration,
    /// `EVENTKIT_PUBLISH_TIMEOUT_MS`: how long `publish` waits for the broker's ack.
    pub publish_timeout: Duration,
    /// `EVENTKIT_RETRY_BACKOFF_MS` / `EVENTKIT_RETRY_BACKOFF_MAX_MS`: backoff between
    /// attempts of a failed message (doubling from the first to the second).
    pub retry_backoff: (Duration, Duration),
    /// `EVENTKIT_RETRIES`: retries of a failed record before it is dead-lettered (default 3;
    /// a handler's `retries = N` overrides it).
    pub retries: u32,
    /// `EVENTKIT_DLQ`: dead-letter records that cannot be handled (default: true). When off,
    /// such records are logged and skipped.
    pub dlq: bool,
    /// `EVENTKIT_DLQ_SUFFIX`: the dead letter topic of `orders` is `orders.dlq`.
    pub dlq_suffix: String,
    /// `EVENTKIT_CONTROL_TOPIC`: the topic operators' commands (pause, resume) travel on, under
    /// the topic prefix (default `eventkit.control`; see `flows::control`).
    pub control_topic: String,
    /// `EVENTKIT_STATUS_TOPIC`: the topic each instance reports its status on, for the
    /// console's fleet view (default `eventkit.status`, under the topic prefix; see
    /// `app::fleet`).
    pub status_topic: String,
    /// `EVENTKIT_STATUS_INTERVAL_MS`: how often each instance reports its status (default 5 s;
    /// 0: never, and the fleet view shows this instance alone).
    pub status_interval: Duration,
    /// `EVENTKIT_UNKNOWN_TYPES`: records of a type no part of this app knows go to the dead
    /// letter queue (`dlq`, default) or are skipped (`skip`, for topics shared with other
    /// services' events).
    pub dead_letter_unknown_types: bool,
    /// `EVENTKIT_WIRE_FORMAT`: how events are published unless their topic or type says
    /// otherwise: `binary` (CloudEvents binary mode, default), `structured` or `legacy`.
    pub wire_format: WireFormat,
    /// `EVENTKIT_TOPIC_FORMATS`: per-topic formats (topic names without prefix), e.g.
    /// `inventory.events=legacy,audit=structured`; used to publish and to read records
    /// without CloudEvents headers.
    pub topic_formats: BTreeMap<String, WireFormat>,
    /// `EVENTKIT_ORDERING`: how groups order concurrent handling unless a handler or the
    /// group says otherwise: `key` (default), `partition` or `none`.
    pub ordering: Ordering,
    /// `EVENTKIT_GROUP_ORDERING`: per group (names without prefix), e.g. `billing=partition,audit=none`.
    pub group_ordering: BTreeMap<String, Ordering>,
    /// `EVENTKIT_CONCURRENCY`: how many records (or batches) of a group are handled at the same
    /// time, unless a handler or the group says otherwise (default 64).
    pub concurrency: usize,
    /// `EVENTKIT_GROUP_CONCURRENCY`: per group, e.g. `billing=8,audit=256`.
    pub group_concurrency: BTreeMap<String, usize>,
    /// `EVENTKIT_TRANSACTIONAL_GROUPS`: groups (without prefix, comma-separated) whose records
    /// are handled exactly once consume → produce: each record's cascaded events and its
    /// offset commit in one Kafka transaction (one record at a time).
    pub transactional_groups: std::collections::BTreeSet<String>,
    /// `EVENTKIT_MAX_BUFFERED_RECORDS`: records a group holds in memory (queued, in flight or
    /// waiting for a retry) before it pauses fetching (default 10,000).
    pub max_buffered_records: usize,
    /// `EVENTKIT_MAX_BUFFERED_BYTES`: the same bound in bytes of keys, values and headers
    /// (default 32 MiB). librdkafka's prefetch queue is bounded to the same size.
    pub max_buffered_bytes: usize,
    /// `EVENTKIT_MAX_UNCOMMITTED`: how far a partition may run ahead of its oldest unsettled
    /// record before it is paused (default 100,000 records). It bounds the work redone after
    /// a crash while one record is stuck or waiting for retries.
    pub max_uncommitted: usize,
    /// `EVENTKIT_COMMIT_INTERVAL_MS`: how often settled offsets are committed (default 100 ms).
    pub commit_interval: Duration,
    /// `EVENTKIT_REVOKE_TIMEOUT_MS`: how long a revoked partition's in-flight records may take
    /// before the partition is let go anyway (default 10 s).
    pub revoke_timeout: Duration,
    /// librdkafka properties (`EVENTKIT_KAFKA_*`), each applied to the clients librdkafka
    /// says it applies to: consumer properties to consumers, producer properties to the
    /// producer, the others to every client. Unknown names are refused at start.
    pub kafka: BTreeMap<String, String>,
    /// librdkafka properties for consumers only (`EVENTKIT_KAFKA_CONSUMER_*`).
    pub kafka_consumer: BTreeMap<String, String>,
    /// librdkafka properties for the producer only (`EVENTKIT_KAFKA_PRODUCER_*`).
    pub kafka_producer: BTreeMap<String, String>,
    /// librdkafka properties for admin requests and metadata probes only (`EVENTKIT_KAFKA_ADMIN_*`).
    pub kafka_admin: BTreeMap<String, String>,
    /// `EVENTKIT_STARTUP_TIMEOUT_MS`: how long an app waits at start for the cluster to answer
    /// before it fails. Unset (the default), it keeps waiting, warning at each attempt.
    pub startup_timeout: Option<Duration>,
    /// `EVENTKIT_TOPIC_SETTINGS`: settings of topics (names without prefix) as JSON, over what
    /// events declare: `{"orders.v1": {"partitions": 12, "replication": 3, "retention": "7d",
    /// "cleanup_policy": "delete", "compression": "zstd"}}`.
    pub topic_settings: BTreeMap<String, crate::core::topic_settings::TopicConfig>,
    /// `EVENTKIT_DLQ_RETENTION`: retention of dead letter topics eventkit creates (`"30d"`
    /// default; `"forever"`).
    pub dlq_retention: Duration,
    /// The admin HTTP API and the health probes: addresses, tokens, limits (`EVENTKIT_ADMIN_*`,
    /// `EVENTKIT_HEALTH_ADDR`).
    pub admin: AdminSettings,
    /// `EVENTKIT_STUCK_AFTER_MS`: a partition waiting this long on one record, or a group's
    /// fetch loop silent this long (a handler blocking its thread), makes the app not ready
    /// (`/health/ready`; default 5 minutes).
    pub stuck_after: Duration,
    /// `EVENTKIT_READINESS`: what readiness checks, comma-separated: `kafka` (the cluster is
    /// reachable) and `groups` (each group joined, none stopped, stuck or frozen). Default
    /// both; `groups` alone keeps a broker outage from making every instance unready at once.
    pub readiness: ReadinessChecks,
    /// Set when the bootstrap servers are an embedded broker's.
    pub(crate) embedded: bool,
}

/// Properties with the values that may not be shown replaced (see
/// [`crate::core::properties::shows_value`]), for display.
pub(crate) fn redacted(properties: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    properties.iter().map(|(k, v)| (k.as_str(), if crate::core::properties::shows_value(k) { v.as_str() } else { REDACTED })).collect()
}
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("service_name", &self.service_name)
            .field("default_group", &self.default_group)
            .field("topic_prefix", &self.topic_prefix)
            .field("group_prefix", &self.group_prefix)
            .field("auto_offset_reset", &self.auto_offset_reset)
            .field("groups", &self.groups)
            .field("create_topics", &self.create_topics)
            .field("default_logging", &self.default_logging)
            .field("topic_partitions", &self.topic_partitions)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("publish_timeout", &self.publish_timeout)
            .field("retry_backoff", &self.retry_backoff)
            .field("retries", &self.retries)
            .field("dlq", &self.dlq)
            .field("dlq_suffix", &self.dlq_suffix)
            .field("control_topic", &self.control_topic)
            .field("status_topic", &self.status_topic)
            .field("status_interval", &self.status_interval)
            .field("dead_letter_unknown_types", &self.dead_letter_unknown_types)
            .field("wire_format", &self.wire_format)
            .field("topic_formats", &self.topic_formats)
            .field("ordering", &self.ordering)
            .field("group_ordering", &self.group_ordering)
            .field("concurrency", &self.concurrency)
            .field("group_concurrency", &self.group_concurrency)
            .field("transactional_groups", &self.transactional_groups)
            .field("max_buffered_records", &self.max_buffered_records)
            .field("max_buffered_bytes", &self.max_buffered_bytes)
            .field("max_uncommitted", &self.max_uncommitted)
            .field("commit_interval", &self.commit_interval)
            .field("revoke_timeout", &self.revoke_timeout)
            .field("kafka", &redacted(&self.kafka))
            .field("kafka_consumer", &redacted(&self.kafka_consumer))
            .field("kafka_producer", &redacted(&self.kafka_producer))
            .field("kafka_admin", &redacted(&self.kafka_admin))
            .field("startup_timeout", &self.startup_timeout)
            .field("topic_settings", &self.topic_settings)
            .field("dlq_retention", &self.dlq_retention)
            .field("admin", &self.admin)
            .field("stuck_after", &self.stuck_after)
            .field("readiness", &self.readiness)
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bootstrap_servers: None,
            service_name: default_service_name(),
            default_group: None,
            topic_prefix: String::new(),
            group_prefix: String::new(),
            auto_offset_reset: "earliest".into(),
            groups: None,
            create_topics: true,
            default_logging: true,
            topic_partitions: 3,
            shutdown_timeout: Duration::from_secs(20),
            publish_timeout: Duration::from_secs(30),
            retry_backoff: (Duration::from_millis(200), Duration::from_secs(30)),
            retries: 3,
            dlq: true,
            dlq_suffix: ".dlq".into(),
            control_topic: "eventkit.control".into(),
            status_topic: "eventkit.status".into(),
            status_interval: Duration::from_secs(5),
            dead_letter_unknown_types: true,
            wire_format: WireFormat::Binary,
            topic_formats: BTreeMap::new(),
            ordering: Ordering::Key,
            group_ordering: BTreeMap::new(),
            concurrency: 64,
            group_concurrency: BTreeMap::new(),
            transactional_groups: Default::default(),
            max_buffered_records: 10_000,
            max_buffered_bytes: 32 << 20,
            max_uncommitted: 100_000,
            commit_interval: Duration::from_millis(100),
            revoke_timeout: Duration::from_secs(10),
            kafka: BTreeMap::new(),
            kafka_consumer: BTreeMap::new(),
            kafka_producer: BTreeMap::new(),
            kafka_admin: BTreeMap::new(),
            startup_timeout: None,
            topic_settings: BTreeMap::new(),
            dlq_retention: Duration::from_secs(30 * 86_400),
            admin: AdminSettings::default(),
            stuck_after: Duration::from_secs(300),
            readiness: ReadinessChecks::default(),
            embedded: false,
        }
    }
}

fn default_service_name() -> String {
    std::env::current_exe().ok().and_then(|p| service_name_of(&p)).unwrap_or_else(|| "eventkit".into())
}

/// The service name of an executable: its name, without the `-<16 hex digits>` cargo gives
/// the test binaries it builds in a `deps` directory (`target/debug/deps/cascade-3620b14df5eb47c3`
/// is the service `cascade`). Elsewhere a name is kept whole: two deployed binaries named with
/// such a suffix stay two services (and two groups).
fn service_name_of(exe: &std::path::Path) -> Option<String> {
    let stem = exe.file_stem()?.to_string_lossy();
    let built_by_cargo = exe.parent().and_then(|d| d.file_name()).is_some_and(|d| d == "deps");
    Some(if built_by_cargo { without_cargo_hash(&stem).to_owned() } else { stem.into_owned() })
}

/// A name without a trailing `-<16 hex digits>`.
fn without_cargo_hash(stem: &str) -> &str {
    match stem.rsplit_once('-') {
        Some((name, hash)) if !name.is_empty() && hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => name,
        _ => stem,
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(std::env::vars())
    }

    /// Reads the configuration from the given variables (for tests and embedding).
    ///
    /// ```
    /// let c = eventkit::Config::from_vars([
    ///     ("KAFKA_SERVICE_NAME".to_string(), "billing".to_string()),
    ///     ("EVENTKIT_KAFKA_SECURITY_PROTOCOL".into(), "SASL_SSL".into()),
    /// ]).unwrap();
    /// assert_eq!(c.service_name, "billing");
    /// assert_eq!(c.group_for(None), "billing");
    /// assert_eq!(c.kafka["security.protocol"], "SASL_SSL");
    /// ```
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let mut c = Config::default();
        for (name, value) in vars {
            let value = value.trim().to_owned();
            match name.as_str() {
                "KAFKA_BOOTSTRAP_SERVERS" => c.bootstrap_servers = Some(value).filter(|v| !v.is_empty()),
                "KAFKA_SERVICE_NAME" if !value.is_empty() => c.service_name = value,
                "KAFKA_CONSUMER_GROUP_ID" => c.default_group = Some(value).filter(|v| !v.is_empty()),
                "KAFKA_TOPIC_PREFIX" => c.topic_prefix = value,
                "EVENTKIT_GROUP_PREFIX" => c.group_prefix = value,
                "KAFKA_AUTO_OFFSET_RESET" => c.auto_offset_reset = parse_reset(&value)?,
                "EVENTKIT_GROUPS" => {
                    c.groups = Some(value.split(',').map(str::trim).filter(|g| !g.is_empty()).map(Into::into).collect())
                }
                "EVENTKIT_WIRE_FORMAT" => c.wire_format = value.parse()?,
                "EVENTKIT_TOPIC_FORMATS" => {
                    for (topic, format) in pairs(&name, &value)? {
                        c.topic_formats.insert(topic.to_owned(), format.parse()?);
                    }
                }
                "EVENTKIT_ORDERING" => c.ordering = value.parse()?,
                "EVENTKIT_GROUP_ORDERING" => {
                    for (group, ordering) in pairs(&name, &value)? {
                        c.group_ordering.insert(group.to_owned(), ordering.parse()?);
                    }
                }
                "EVENTKIT_CONCURRENCY" => c.concurrency = parse_positive(&name, &value)?,
                "EVENTKIT_TRANSACTIONAL_GROUPS" => {
                    c.transactional_groups = value.split(',').map(str::trim).filter(|g| !g.is_empty()).map(Into::into).collect()
                }
                "EVENTKIT_GROUP_CONCURRENCY" => {
                    for (group, n) in pairs(&name, &value)? {
                        c.group_concurrency.insert(group.to_owned(), parse_positive(&name, n)?);
                    }
                }
                "EVENTKIT_MAX_BUFFERED_RECORDS" => c.max_buffered_records = parse_positive(&name, &value)?,
                "EVENTKIT_MAX_BUFFERED_BYTES" => c.max_buffered_bytes = parse_positive(&name, &value)?,
                "EVENTKIT_MAX_UNCOMMITTED" => c.max_uncommitted = parse_positive(&name, &value)?,
                "EVENTKIT_COMMIT_INTERVAL_MS" => c.commit_interval = Duration::from_millis(parse_positive::<u64>(&name, &value)?),
                "EVENTKIT_REVOKE_TIMEOUT_MS" => c.revoke_timeout = Duration::from_millis(parse_num(&name, &value)?),
                "EVENTKIT_RETRIES" => c.retries = parse_num(&name, &value)?,
                "EVENTKIT_DLQ" => c.dlq = parse_bool(&name, &value)?,
                "EVENTKIT_DLQ_SUFFIX" if !value.is_empty() => c.dlq_suffix = value,
                "EVENTKIT_CONTROL_TOPIC" if !value.is_empty() => c.control_topic = value,
                "EVENTKIT_STATUS_TOPIC" if !value.is_empty() => c.status_topic = value,
                "EVENTKIT_STATUS_INTERVAL_MS" => c.status_interval = Duration::from_millis(parse_num(&name, &value)?),
                "EVENTKIT_UNKNOWN_TYPES" => {
                    c.dead_letter_unknown_types = match value.as_str() {
                        "dlq" => true,
                        "skip" => false,
                        _ => return Err(Error::Config(format!("{name} = {value:?}: expected `dlq` or `skip`"))),
                    }
                }
                "EVENTKIT_CREATE_TOPICS" => c.create_topics = parse_bool(&name, &value)?,
                "EVENTKIT_DEFAULT_LOGGING" => c.default_logging = parse_bool(&name, &value)?,
                "EVENTKIT_TOPIC_PARTITIONS" => c.topic_partitions = parse_num(&name, &value)?,
                "EVENTKIT_SHUTDOWN_TIMEOUT_MS" => c.shutdown_timeout = Duration::from_millis(parse_num(&name, &value)?),
                "EVENTKIT_PUBLISH_TIMEOUT_MS" => c.publish_timeout = Duration::from_millis(parse_num(&name, &value)?),
                "EVENTKIT_RETRY_BACKOFF_MS" => c.retry_backoff.0 = Duration::from_millis(parse_num(&name, &value)?),
                "EVENTKIT_RETRY_BACKOFF_MAX_MS" => c.retry_backoff.1 = Duration::from_millis(parse_num(&name, &value)?),
                "EVENTKIT_TOPIC_SETTINGS" if !value.is_empty() => c.topic_settings = crate::core::topic_settings::parse_settings(&name, &value)?,
                "EVENTKIT_DLQ_RETENTION" => {
                    let ms = crate::core::topic_settings::parse_retention(&value).map_err(|e| Error::Config(format!("{name}: {e}")))?;
                    c.dlq_retention = if ms < 0 { Duration::MAX } else { Duration::from_millis(ms as u64) };
                }
                "EVENTKIT_ADMIN_ADDR" => c.admin.addr = Some(value).filter(|v| !v.is_empty()),
                "EVENTKIT_HEALTH_ADDR" => c.admin.health_addr = Some(value).filter(|v| !v.is_empty()),
                "EVENTKIT_ADMIN_TOKEN" => c.admin.token = Some(value).filter(|v| !v.is_empty()),
                "EVENTKIT_ADMIN_READ_TOKEN" => c.admin.read_token = Some(value).filter(|v| !v.is_empty()),
                "EVENTKIT_ADMIN_OPEN" => c.admin.open = AdminSettings::parse_open(&name, &value)?,
                "EVENTKIT_ADMIN_MAX_CONNECTIONS" => c.admin.max_connections = parse_positive(&name, &value)?,
                "EVENTKIT_ADMIN_HEADER_TIMEOUT_MS" => c.admin.header_timeout = Duration::from_millis(parse_positive(&name, &value)?),
                "EVENTKIT_ADMIN_IDLE_TIMEOUT_MS" => c.admin.idle_timeout = Duration::from_millis(parse_positive(&name, &value)?),
                "EVENTKIT_ADMIN_BODY_TIMEOUT_MS" => c.admin.body_timeout = Duration::from_millis(parse_positive(&name, &value)?),
                "EVENTKIT_ADMIN_MAX_BODY" => c.admin.max_body = parse_size(&name, &value)?,
                "EVENTKIT_ADMIN_PAYLOADS" => c.admin.payloads = PayloadVisibility::parse(&name, &value)?,
                "EVENTKIT_ADMIN_BODY_LIMITS" => {
                    for (endpoint, size) in pairs(&name, &value)? {
                        let endpoint = AdminSettings::endpoint_name(&name, endpoint)?;
                        c.admin.body_limits.insert(endpoint, parse_size(&name, size)?);
                    }
                }
                "EVENTKIT_READINESS" if !value.is_empty() => c.readiness = ReadinessChecks::parse(&name, &value)?,
                "EVENTKIT_STUCK_AFTER_MS" => c.stuck_after = Duration::from_millis(parse_positive(&name, &value)?),
                "EVENTKIT_STARTUP_TIMEOUT_MS" => {
                    c.startup_timeout = Some(value).filter(|v| !v.is_empty()).map(|v| parse_num(&name, &v).map(Duration::from_millis)).transpose()?
                }
                _ => {
                    if let Some(prop) = name.strip_prefix(PASSTHROUGH_PREFIX) {
                        let property = |p: &str| p.to_ascii_lowercase().replace('_', ".");
                        if let Some(p) = prop.strip_prefix("CONSUMER_") {
                            c.kafka_consumer.insert(property(p), value);
                        } else if let Some(p) = prop.strip_prefix("PRODUCER_") {
                            c.kafka_producer.insert(property(p), value);
                        } else if let Some(p) = prop.strip_prefix("ADMIN_") {
                            c.kafka_admin.insert(property(p), value);
                        } else {
                            c.kafka.insert(property(prop), value);
                        }
                    }
                }
            }
        }
        Ok(c)
    }

    /// The topic name on the wire: the prefix plus the event's topic.
    pub fn topic_name(&self, topic: &str) -> String {
        format!("{}{topic}", self.topic_prefix)
    }

    /// The format `info`'s events are published in: the event's own, its topic's, the app's.
    pub fn format_of(&self, info: &EventInfo) -> WireFormat {
        info.format.or_else(|| self.topic_formats.get(info.topic).copied()).unwrap_or(self.wire_format)
    }

    /// The app's default retry policy.
    pub fn retry_policy(&self) -> crate::core::retry::RetryPolicy {
        crate::core::retry::RetryPolicy::new(self.retries, self.retry_backoff.0, self.retry_backoff.1)
    }

    /// The control topic on the wire (operators' commands to running consumers).
    pub fn control_topic(&self) -> String {
        self.topic_name(&self.control_topic)
    }

    /// The status topic on the wire (with the topic prefix).
    pub fn status_topic(&self) -> String {
        self.topic_name(&self.status_topic)
    }

    /// The dead letter topic of a topic on the wire.
    pub fn dlq_topic(&self, wire_topic: &str) -> String {
        format!("{wire_topic}{}", self.dlq_suffix)
    }

    /// The consumer group id of a handler that names `group` (or none).
    pub fn group_for(&self, group: Option<&str>) -> String {
        let base = group
            .or(self.default_group.as_deref())
            .unwrap_or(self.service_name.as_str());
        format!("{}{base}", self.group_prefix)
    }

    /// The part of the shutdown budget kept for committing, leaving the groups, closing the
    /// consumers and flushing the producer: a quarter of it, at most 5 s.
    pub fn shutdown_reserve(&self) -> Duration {
        (self.shutdown_timeout / 4).min(Duration::from_secs(5))
    }

    /// Whether this process runs the group named `group` (before the group prefix).
    pub(crate) fn runs_group(&self, group: &str) -> bool {
        let bare = group.strip_prefix(self.group_prefix.as_str()).unwrap_or(group);
        self.groups.as_ref().is_none_or(|gs| gs.iter().any(|g| g == bare || g == group))
    }

    /// The ordering a group's handlers get unless they set their own.
    pub fn ordering_of(&self, group_id: &str) -> Ordering {
        self.per_group(&self.group_ordering, group_id).unwrap_or(self.ordering)
    }

    /// The concurrency a group's handlers get unless they set their own.
    pub fn concurrency_of(&self, group_id: &str) -> usize {
        self.per_group(&self.group_concurrency, group_id).unwrap_or(self.concurrency)
    }

    /// Whether a group handles its records in Kafka transactions.
    pub fn is_transactional(&self, group_id: &str) -> bool {
        let bare = group_id.strip_prefix(self.group_prefix.as_str()).unwrap_or(group_id);
        self.transactional_groups.contains(bare) || self.transactional_groups.contains(group_id)
    }

    fn per_group<T: Copy>(&self, map: &BTreeMap<String, T>, group_id: &str) -> Option<T> {
        let bare = group_id.strip_prefix(self.group_prefix.as_str()).unwrap_or(group_id);
        map.get(bare).or_else(|| map.get(group_id)).copied()
    }
}

/// The admin HTTP API's settings (see the `admin` module for the endpoints).
#[derive(Clone)]
#[non_exhaustive]
pub struct AdminSettings {
    /// `EVENTKIT_ADMIN_ADDR`: where the admin API listens: `HOST:PORT`, or a port alone for the
    /// loopback address. Unset (the default): no admin API.
    pub addr: Option<String>,
    /// `EVENTKIT_HEALTH_ADDR`: where the probes (`/health/live`, `/health/ready`) listen, apart
    /// from the rest. Unset: the probes are served on `EVENTKIT_ADMIN_ADDR` with the rest.
    pub health_addr: Option<String>,
    /// `EVENTKIT_ADMIN_TOKEN`: the bearer token of the actions (publish, replay) and of every
    /// read endpoint. Unset: actions are disabled.
    pub token: Option<String>,
    /// `EVENTKIT_ADMIN_READ_TOKEN`: a bearer token for the read-only endpoints only.
    pub read_token: Option<String>,
    /// `EVENTKIT_ADMIN_OPEN`: read-only endpoints served without a token, comma-separated
    /// among `metrics`, `topology`, `asyncapi.json`, `groups`, `dlq` and `explore` (default: `metrics`;
    /// empty: none).
    pub open: std::collections::BTreeSet<String>,
    /// `EVENTKIT_ADMIN_MAX_CONNECTIONS`: open connections per listener (default 64, and at
    /// most a quarter of the process's file descriptor limit). At the limit, a new connection
    /// closes the oldest one that has no request in progress, so probes are never starved.
    pub max_connections: usize,
    /// `EVENTKIT_ADMIN_HEADER_TIMEOUT_MS`: how long a request's line and headers may take to
    /// arrive once their first byte did (default 5 s).
    pub header_timeout: Duration,
    /// `EVENTKIT_ADMIN_IDLE_TIMEOUT_MS`: how long a connection may wait for its next request,
    /// or for its first (default 30 s).
    pub idle_timeout: Duration,
    /// `EVENTKIT_ADMIN_BODY_TIMEOUT_MS`: how long a request body may take to arrive (default 10 s).
    pub body_timeout: Duration,
    /// `EVENTKIT_ADMIN_MAX_BODY`: the largest request body (default 1 MiB); bigger is a 413.
    pub max_body: usize,
    /// `EVENTKIT_ADMIN_BODY_LIMITS`: per endpoint, over `max_body`: `publish=4MiB,dlq/replay=64KiB`.
    pub body_limits: BTreeMap<String, usize>,
    /// `EVENTKIT_ADMIN_PAYLOADS`: whether the API shows records' values (`visible`, the
    /// default) or only their keys, types and headers (`masked`).
    pub payloads: PayloadVisibility,
}

/// Whether the admin API shows the values of the records it lists (`EVENTKIT_ADMIN_PAYLOADS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PayloadVisibility {
    /// Values and payloads are shown (the default).
    #[default]
    Visible,
    /// The record explorer and the dead letter listing leave values and payloads out (each
    /// record says `"masked": true`), dead letters' error text, and every header but those
    /// that name and place an event; keys and event types stay. Republishing still works.
    Masked,
}

impl PayloadVisibility {
    fn parse(name: &str, value: &str) -> Result<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "visible" => Ok(PayloadVisibility::Visible),
            "masked" => Ok(PayloadVisibility::Masked),
            _ => Err(Error::Config(format!("{name} = {value:?}: expected `visible` or `masked`"))),
        }
    }
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            addr: None,
            health_addr: None,
            token: None,
            read_token: None,
            open: ["metrics".to_owned()].into(),
            max_connections: 64,
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(10),
            max_body: 1 << 20,
            body_limits: BTreeMap::new(),
            payloads: PayloadVisibility::Visible,
        }
    }
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("addr", &self.addr)
            .field("health_addr", &self.health_addr)
            .field("token", &self.token.as_ref().map(|_| REDACTED))
            .field("read_token", &self.read_token.as_ref().map(|_| REDACTED))
            .field("open", &self.open)
            .field("max_connections", &self.max_connections)
            .field("header_timeout", &self.header_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("max_body", &self.max_body)
            .field("body_limits", &self.body_limits)
            .field("payloads", &self.payloads)
            .finish()
    }
}

/// This machine's name, as instances are named (`SERVICE@HOST:PID`): `HOSTNAME`, else the
/// kernel's host name, else `localhost`.
pub(crate) fn host_name() -> String {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into())
    })
    .clone()
}

impl AdminSettings {
    /// The read-only endpoints a token guards (or `EVENTKIT_ADMIN_OPEN` opens).
    pub const READ_ENDPOINTS: &'static [&'static str] = &["metrics", "topology", "asyncapi.json", "groups", "fleet", "dlq", "explore"];
    /// The endpoints that take a body.
    pub const BODY_ENDPOINTS: &'static [&'static str] = &["publish", "dlq/replay", "groups/pause", "groups/resume", "groups/replay", "groups/reset", "explore/republish"];

    /// The body limit of `endpoint` (`publish`, `dlq/replay`).
    pub fn body_limit(&self, endpoint: &str) -> usize {
        self.body_limits.get(endpoint).copied().unwrap_or(self.max_body)
    }

    fn parse_open(name: &str, value: &str) -> Result<std::collections::BTreeSet<String>> {
        value
            .split(',')
            .map(|e| e.trim().trim_start_matches('/'))
            .filter(|e| !e.is_empty())
            .map(|e| {
                if Self::READ_ENDPOINTS.contains(&e) {
                    Ok(e.to_owned())
                } else {
                    Err(Error::Config(format!("{name}: `{e}` is not a read-only endpoint (one of: {})", Self::READ_ENDPOINTS.join(", "))))
                }
            })
            .collect()
    }

    fn endpoint_name(name: &str, endpoint: &str) -> Result<String> {
        let e = endpoint.trim().trim_start_matches('/');
        if Self::BODY_ENDPOINTS.contains(&e) {
            Ok(e.to_owned())
        } else {
            Err(Error::Config(format!("{name}: `{endpoint}` takes no body (endpoints with a body: {})", Self::BODY_ENDPOINTS.join(", "))))
        }
    }
}

/// What readiness checks (`EVENTKIT_READINESS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadinessChecks {
    /// The cluster is reachable (`kafka`).
    pub kafka: bool,
    /// Each consumer group joined, and none stopped, stuck on a record or frozen (`groups`).
    pub groups: bool,
}

impl Default for ReadinessChecks {
    fn default() -> Self {
        ReadinessChecks { kafka: true, groups: true }
    }
}

impl ReadinessChecks {
    fn parse(name: &str, value: &str) -> Result<Self> {
        let mut checks = ReadinessChecks { kafka: false, groups: false };
        let named: Vec<&str> = value.split(',').map(str::trim).filter(|c| !c.is_empty()).collect();
        if named.is_empty() {
            return Err(Error::Config(format!("{name} = {value:?}: name the checks (`kafka`, `groups`), or leave it unset for both")));
        }
        for check in named {
            match check {
                "kafka" => checks.kafka = true,
                "groups" => checks.groups = true,
                _ => return Err(Error::Config(format!("{name}: `{check}` is not a readiness check (`kafka`, `groups`)"))),
            }
        }
        Ok(checks)
    }
}

/// `a=x,b=y` as pairs.
fn pairs<'a>(name: &str, value: &'a str) -> Result<Vec<(&'a str, &'a str)>> {
    value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim(), v.trim())),
            _ => Err(Error::Config(format!("{name}: {pair:?} is not `name=value`"))),
        })
        .collect()
}

fn parse_positive<T: std::str::FromStr + PartialEq + Default>(name: &str, value: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    let n: T = parse_num(name, value)?;
    if n == T::default() {
        return Err(Error::Config(format!("{name} = {value:?}: must be at least 1")));
    }
    Ok(n)
}

/// A size in bytes: `65536`, `64KiB`, `4MiB` (also `KB`/`MB`, read as binary units).
fn parse_size(name: &str, value: &str) -> Result<usize> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(Error::Config(format!("{name} = {value:?}: a size is bytes, or a number with KiB, MiB or GiB"))),
    };
    let n: usize = parse_num(name, digits)?;
    n.checked_mul(factor).filter(|n| *n > 0).ok_or_else(|| Error::Config(format!("{name} = {value:?}: must be at least 1 byte")))
}

fn parse_reset(value: &str) -> Result<String> {
    match value.to_ascii_lowercase().as_str() {
        v @ ("earliest" | "latest") => Ok(v.to_owned()),
        _ => Err(Error::Config(format!(
            "KAFKA_AUTO_OFFSET_RESET = {value:?}: expected `earliest` or `latest`"
        ))),
    }
}

fn parse_bool(name: &str, value: &str) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::Config(format!("{name} = {value:?}: expected true or false"))),
    }
}

fn parse_num<T: std::str::FromStr>(name: &str, value: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e| Error::Config(format!("{name} = {value:?}: {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_test_binary_is_named_without_its_cargo_hash() {
        assert_eq!(without_cargo_hash("cascade-3620b14df5eb47c3"), "cascade");
        assert_eq!(without_cargo_hash("order-service"), "order-service");
        assert_eq!(without_cargo_hash("billing-3620b14df5eb47c"), "billing-3620b14df5eb47c");
        assert_eq!(without_cargo_hash("-3620b14df5eb47c3"), "-3620b14df5eb47c3");
        let name = |p: &str| service_name_of(std::path::Path::new(p)).unwrap();
        assert_eq!(name("/w/target/debug/deps/cascade-3620b14df5eb47c3"), "cascade");
        assert_eq!(name("/usr/local/bin/worker-00000000000000a1"), "worker-00000000000000a1", "only cargo's test binaries");
        assert_eq!(name("/w/target/debug/examples/user_service"), "user_service");
    }

    use super::*;

    fn vars(v: &[(&str, &str)]) -> Result<Config> {
        Config::from_vars(v.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
    }

    #[test]
    fn admin_settings_come_from_the_environment() {
        let c = vars(&[
            ("EVENTKIT_ADMIN_ADDR", "9090"),
            ("EVENTKIT_HEALTH_ADDR", "0.0.0.0:8081"),
            ("EVENTKIT_ADMIN_READ_TOKEN", "r"),
            ("EVENTKIT_ADMIN_OPEN", "metrics, /topology"),
            ("EVENTKIT_ADMIN_MAX_CONNECTIONS", "10"),
            ("EVENTKIT_ADMIN_HEADER_TIMEOUT_MS", "700"),
            ("EVENTKIT_ADMIN_MAX_BODY", "2MiB"),
            ("EVENTKIT_ADMIN_BODY_LIMITS", "publish=64KiB,/dlq/replay=512"),
            ("EVENTKIT_READINESS", "groups"),
        ])
        .unwrap();
        let a = &c.admin;
        assert_eq!((a.addr.as_deref(), a.health_addr.as_deref(), a.read_token.as_deref()), (Some("9090"), Some("0.0.0.0:8081"), Some("r")));
        assert_eq!(a.open.iter().map(String::as_str).collect::<Vec<_>>(), ["metrics", "topology"]);
        assert_eq!((a.max_connections, a.header_timeout), (10, Duration::from_millis(700)));
        assert_eq!((a.body_limit("publish"), a.body_limit("dlq/replay")), (64 << 10, 512));
        assert_eq!(a.max_body, 2 << 20);
        assert_eq!(a.payloads, PayloadVisibility::Visible, "visible by default");
        assert_eq!(vars(&[("EVENTKIT_ADMIN_PAYLOADS", "Masked")]).unwrap().admin.payloads, PayloadVisibility::Masked);
        assert_eq!(c.readiness, ReadinessChecks { kafka: false, groups: true });
        assert!(!format!("{c:?}").contains("\"r\""), "tokens are redacted");
        assert!(vars(&[("EVENTKIT_ADMIN_OPEN", "")]).unwrap().admin.open.is_empty(), "nothing open");
        assert_eq!(vars(&[("EVENTKIT_READINESS", "  ")]).unwrap().readiness, ReadinessChecks::default(), "empty is unset, not nothing");
    }

    #[test]
    fn bad_admin_settings_are_refused_by_name() {
        for (var, value, says) in [
            ("EVENTKIT_ADMIN_OPEN", "publish", "not a read-only endpoint"),
            ("EVENTKIT_ADMIN_BODY_LIMITS", "groups=1KiB", "takes no body"),
            ("EVENTKIT_ADMIN_MAX_BODY", "12 parsecs", "a size is bytes"),
            ("EVENTKIT_ADMIN_MAX_BODY", "0", "at least 1 byte"),
            ("EVENTKIT_ADMIN_MAX_CONNECTIONS", "0", "at least 1"),
            ("EVENTKIT_READINESS", "kafka,disk", "not a readiness check"),
            ("EVENTKIT_ADMIN_PAYLOADS", "hidden", "expected `visible` or `masked`"),
            ("EVENTKIT_READINESS", ",", "name the checks"),
        ] {
            let e = vars(&[(var, value)]).unwrap_err().to_string();
            assert!(e.contains(var) && e.contains(says), "{var}={value}: {e}");
        }
    }

    #[test]
    fn the_shutdown_budget_keeps_a_reserve() {
        let mut c = Config::default();
        assert_eq!((c.shutdown_timeout, c.shutdown_reserve()), (Duration::from_secs(20), Duration::from_secs(5)));
        c.shutdown_timeout = Duration::from_secs(4);
        assert_eq!(c.shutdown_reserve(), Duration::from_secs(1));
    }
}
