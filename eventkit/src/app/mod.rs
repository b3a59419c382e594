//! Layer 4, the app: [`App`] and its builder (configuration, state, registry, layers), started
//! as consumers plus a publisher and run until a signal; [`topology`], the topic listing;
//! [`topics`], the topics it creates; [`surface`], the seam the surfaces above plug into.

pub(crate) mod announce;
pub mod fleet;
pub(crate) mod surface;
pub(crate) mod topics;
pub mod topology;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::kafka::embedded::EmbeddedBroker;
use crate::core::config::Config;
use crate::flows::consume::{GroupRunner, Signals};
use crate::flows::control::Control;
use crate::core::error::{Error, Result};
use crate::flows::publish::Publisher;
use crate::flows::registry::Registry;
use crate::core::state::{Requirements, StateMap};
use crate::app::topology::Topology;

static CURRENT_PUBLISHER: RwLock<Option<Publisher>> = RwLock::new(None);

/// The publisher of the app started last in this process.
///
/// Fails when no app is running; inside handlers prefer [`crate::Context::publish`].
pub fn publisher() -> Result<Publisher> {
    CURRENT_PUBLISHER
        .read()
        .expect("publisher lock")
        .clone()
        .ok_or_else(|| Error::Config("no eventkit app is running: start one with `App::start` or `eventkit::run`".into()))
}

/// Runs the registered handlers with configuration from the environment until
/// SIGINT/SIGTERM. `--list-topics` (or `EVENTKIT_LIST_TOPICS=1`) prints the topic listing
/// instead; `--list-topics=json` prints it as JSON.
pub async fn run() -> Result<()> {
    App::builder().build()?.run().await
}

/// Like [`run`], with app state for handlers' `State<T>` and `&T` arguments:
/// `eventkit::run_with(StateMap::new().with(pool).with(client)).await`.
pub async fn run_with(state: StateMap) -> Result<()> {
    let mut builder = App::builder();
    builder.state = state;
    builder.build()?.run().await
}

/// The topic listing of the global registry under the environment's configuration.
pub fn topology() -> Result<Topology> {
    Ok(Topology::new(Registry::global()?, &Config::from_env()?))
}

/// A change the builder applies to the configuration.
type ConfigEdit = Box<dyn FnOnce(&mut Config) + Send>;

/// Configures an [`App`].
#[must_use]
#[derive(Default)]
pub struct AppBuilder {
    config: Option<Config>,
    edits: Vec<ConfigEdit>,
    state: StateMap,
    registry: Option<Registry>,
    broker: Option<Arc<EmbeddedBroker>>,
    layers: Layers,
}

/// The layers an app adds around handling and publishing (see [`crate::flows::layer`]).
#[derive(Clone, Default)]
struct Layers {
    /// Around every handler of every group.
    app: Vec<Arc<dyn crate::flows::layer::HandleLayer>>,
    /// Around every handler of one group (by name without prefix).
    groups: BTreeMap<String, Vec<Arc<dyn crate::flows::layer::HandleLayer>>>,
    /// Around every publish.
    publish: Vec<Arc<dyn crate::flows::layer::PublishLayer>>,
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),+) => |$c:ident| $body:expr) => {
        $(#[$doc])*
        pub fn $name(mut self, $($arg: $ty),+) -> Self {
            self.edits.push(Box::new(move |$c: &mut Config| $body));
            self
        }
    };
}

impl AppBuilder {
    /// Starts from `config` instead of the environment.
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }
    setter!(/// Kafka bootstrap servers (none: the embedded broker).
        bootstrap_servers(servers: impl Into<String> + Send + 'static) => |c| c.bootstrap_servers = Some(servers.into()));
    setter!(/// The service name (CloudEvents `source`, default group).
        service_name(name: impl Into<String> + Send + 'static) => |c| c.service_name = name.into());
    setter!(/// The group of handlers that name none.
        default_group(group: impl Into<String> + Send + 'static) => |c| c.default_group = Some(group.into()));
    setter!(/// A prefix for every topic.
        topic_prefix(prefix: impl Into<String> + Send + 'static) => |c| c.topic_prefix = prefix.into());
    setter!(/// A prefix for every consumer group id.
        group_prefix(prefix: impl Into<String> + Send + 'static) => |c| c.group_prefix = prefix.into());
    setter!(/// Runs only these groups (names before the group prefix).
        groups(groups: impl IntoIterator<Item = &'static str> + Send + 'static) => |c| c.groups = Some(groups.into_iter().map(Into::into).collect()));
    setter!(/// How long in-flight handlers may run at shutdown.
        shutdown_timeout(timeout: Duration) => |c| c.shutdown_timeout = timeout);
    setter!(/// How long a publish waits for the broker's acknowledgement.
        publish_timeout(timeout: Duration) => |c| c.publish_timeout = timeout);
    setter!(/// Backoff of a failed record's retries: first delay and cap.
        retry_backoff(backoff: (Duration, Duration)) => |c| c.retry_backoff = backoff);
    setter!(/// Retries of a failed record before it is dead-lettered (handlers may override).
        retries(retries: u32) => |c| c.retries = retries);
    setter!(/// Whether records that cannot be handled go to the dead letter queue (else: skipped).
        dlq(enabled: bool) => |c| c.dlq = enabled);
    setter!(/// The dead letter topic suffix (default `.dlq`).
        dlq_suffix(suffix: impl Into<String> + Send + 'static) => |c| c.dlq_suffix = suffix.into());
    setter!(/// Whether the app installs a formatted `tracing` subscriber (filtered by `RUST_LOG`,
        /// default `info`) when the program has none (default true).
        default_logging(enabled: bool) => |c| c.default_logging = enabled);
    setter!(/// Whether to create missing topics at start.
        create_topics(create: bool) => |c| c.create_topics = create);
    setter!(/// How groups order concurrent handling, unless a handler or group says otherwise.
        ordering(ordering: crate::Ordering) => |c| c.ordering = ordering);
    setter!(/// How records of the group named `group` (without prefix) are ordered, unless a handler says otherwise.
        group_ordering(group: impl Into<String> + Send + 'static, ordering: crate::Ordering) => |c| {
            c.group_ordering.insert(group.into(), ordering);
        });
    setter!(/// How many records (or batches) of a group run at the same time (at least 1).
        concurrency(n: usize) => |c| c.concurrency = n.max(1));
    setter!(/// The concurrency of the group named `group` (without prefix).
        group_concurrency(group: impl Into<String> + Send + 'static, n: usize) => |c| {
            c.group_concurrency.insert(group.into(), n.max(1));
        });
    setter!(/// Handles the records of the group named `group` (without prefix) exactly once
        /// consume → produce: each record's cascaded events and its offset commit in one Kafka
        /// transaction, one record at a time.
        transactional_group(group: impl Into<String> + Send + 'static) => |c| {
            c.transactional_groups.insert(group.into());
        });
    setter!(/// Records and bytes a group may hold in memory before it pauses fetching.
        max_buffered(records: usize, bytes: usize) => |c| {
            c.max_buffered_records = records.max(1);
            c.max_buffered_bytes = bytes.max(1);
        });
    setter!(/// How far a partition may run ahead of its oldest unsettled record before it pauses.
        max_uncommitted(records: usize) => |c| c.max_uncommitted = records.max(1));
    setter!(/// How often settled offsets are committed.
        commit_interval(interval: Duration) => |c| c.commit_interval = interval.max(Duration::from_millis(1)));
    setter!(/// How long a revoked partition's in-flight records may take before it is let go.
        revoke_timeout(timeout: Duration) => |c| c.revoke_timeout = timeout);
    setter!(/// How often this instance reports its status on the status topic, for the console's
        /// fleet view (default 5 s; zero: never).
        status_interval(interval: Duration) => |c| c.status_interval = interval);

    /// Settings of a topic (its name without prefix), over what its events declare.
    pub fn topic_settings(mut self, topic: impl Into<String>, settings: crate::TopicConfig) -> Self {
        let topic = topic.into();
        self.edits.push(Box::new(move |c: &mut Config| {
            c.topic_settings.insert(topic, settings);
        }));
        self
    }
    setter!(/// Retention of the dead letter topics eventkit creates (default 30 days).
        dlq_retention(retention: Duration) => |c| c.dlq_retention = retention);
    setter!(/// Where the admin HTTP API listens (`HOST:PORT`, or a port alone for the loopback
        /// address; port 0 picks a free one, see [`Running::admin_addr`]).
        admin_addr(addr: impl Into<String> + Send + 'static) => |c| c.admin.addr = Some(addr.into()));
    setter!(/// Where the health probes listen, apart from the rest of the admin API (see
        /// [`Running::health_addr`]).
        health_addr(addr: impl Into<String> + Send + 'static) => |c| c.admin.health_addr = Some(addr.into()));
    setter!(/// The bearer token of the admin API's actions (and of its read-only endpoints).
        admin_token(token: impl Into<String> + Send + 'static) => |c| c.admin.token = Some(token.into()));
    setter!(/// A bearer token for the admin API's read-only endpoints only.
        admin_read_token(token: impl Into<String> + Send + 'static) => |c| c.admin.read_token = Some(token.into()));
    setter!(/// The admin API's read-only endpoints served without a token (`metrics`, `topology`,
        /// `asyncapi.json`, `groups`, `dlq`, `explore`; default `metrics`).
        admin_open(endpoints: impl IntoIterator<Item = &'static str> + Send + 'static) => |c| c.admin.open = endpoints.into_iter().map(|e| e.trim_start_matches('/').to_owned()).collect());
    setter!(/// Whether the admin API shows records' values (the record explorer, dead letters) or
        /// masks them (`EVENTKIT_ADMIN_PAYLOADS`; default visible).
        admin_payloads(visibility: crate::PayloadVisibility) => |c| c.admin.payloads = visibility);
    /// The admin API's limits and other settings at once.
    pub fn admin_settings(mut self, settings: crate::AdminSettings) -> Self {
        self.edits.push(Box::new(move |c: &mut Config| c.admin = settings));
        self
    }
    setter!(/// What readiness checks (default: the cluster and the groups).
        readiness(checks: crate::ReadinessChecks) => |c| c.readiness = checks);
    setter!(/// How long a partition may wait on one record before the app reports itself not ready.
        stuck_after(after: Duration) => |c| c.stuck_after = after);
    setter!(/// How long the app waits at start for the cluster to answer before it fails (default: forever).
        startup_timeout(timeout: Duration) => |c| c.startup_timeout = Some(timeout));

    /// Sets a librdkafka property on the clients it applies to (consumer properties on
    /// consumers, producer properties on the producer, others on every client).
    pub fn kafka_property(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.property(key, value, |c| &mut c.kafka)
    }

    /// Sets a librdkafka property on consumers only.
    pub fn consumer_property(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.property(key, value, |c| &mut c.kafka_consumer)
    }

    /// Sets a librdkafka property on the producer only.
    pub fn producer_property(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.property(key, value, |c| &mut c.kafka_producer)
    }

    /// Sets a librdkafka property on admin clients and metadata probes only.
    pub fn admin_property(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.property(key, value, |c| &mut c.kafka_admin)
    }

    fn property(mut self, key: impl Into<String>, value: impl Into<String>, map: fn(&mut Config) -> &mut BTreeMap<String, String>) -> Self {
        let (key, value) = (key.into(), value.into());
        self.edits.push(Box::new(move |c: &mut Config| {
            map(c).insert(key, value);
        }));
        self
    }

    /// Adds a layer around every handler of every group (see [`crate::flows::layer`]). App-wide layers
    /// wrap group layers, which wrap handler layers; among app-wide layers, the first added is
    /// the outermost.
    pub fn layer(mut self, layer: impl crate::flows::layer::HandleLayer) -> Self {
        self.layers.app.push(Arc::new(layer));
        self
    }

    /// [`AppBuilder::layer`] with a layer already shared.
    pub(crate) fn layer_arc(mut self, layer: Arc<dyn crate::flows::layer::HandleLayer>) -> Self {
        self.layers.app.push(layer);
        self
    }

    /// [`AppBuilder::publish_layer`] with a layer already shared.
    pub(crate) fn publish_layer_arc(mut self, layer: Arc<dyn crate::flows::layer::PublishLayer>) -> Self {
        self.layers.publish.push(layer);
        self
    }

    /// Adds a layer around every handler of the group named `group` (without prefix).
    pub fn group_layer(mut self, group: impl Into<String>, layer: impl crate::flows::layer::HandleLayer) -> Self {
        self.layers.groups.entry(group.into()).or_default().push(Arc::new(layer));
        self
    }

    /// Adds a layer around every event the app publishes (see [`crate::flows::layer::PublishLayer`]).
    pub fn publish_layer(mut self, layer: impl crate::flows::layer::PublishLayer) -> Self {
        self.layers.publish.push(Arc::new(layer));
        self
    }

    /// Registers app state for handlers' `State<T>` and `&T` arguments.
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.insert(value);
        self
    }

    /// Uses an embedded broker started elsewhere (e.g. shared by several apps in a test)
    /// instead of bootstrap servers.
    pub fn embedded_broker(mut self, broker: Arc<EmbeddedBroker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Uses an explicit registry instead of the link-time one.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Validates configuration, registry and state.
    pub fn build(self) -> Result<App> {
        let mut config = match self.config {
            Some(c) => c,
            None => Config::from_env()?,
        };
        for edit in self.edits {
            edit(&mut config);
        }
        let registry = match self.registry {
            Some(r) => r,
            None => Registry::global()?.clone(),
        };
        registry.check_groups(&config)?;
        crate::app::topics::declared(&registry, &config)?;
        check_state(&registry, &config, &self.state)?;
        if let Some(broker) = &self.broker {
            config.bootstrap_servers = Some(broker.bootstrap_servers().to_owned());
        }
        surface::check_asked_for(&config)?;
        let ready = Readiness::new(config.readiness);
        Ok(App { config, registry, state: Arc::new(self.state), broker: self.broker, ready, layers: self.layers })
    }
}

/// Installs a formatted subscriber with an env filter (`RUST_LOG`, default `info`, librdkafka's
/// own lines at `warn`), unless the program installed one: an app that sets up no logging still
/// says what it does and what goes wrong (dead letters, outages).
fn install_default_logging(service: &str, test_writer: bool) {
    use tracing_subscriber::filter::FilterExt as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::Layer as _;
    if tracing::dispatcher::has_been_set() {
        return;
    }
    // `RUST_LOG` as targets and levels (`info,eventkit=debug,librdkafka=warn`): the directives a
    // service sets; span and field filters would need regex in every build.
    const DEFAULT: &str = "info,librdkafka=warn";
    let asked = std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty());
    let unreadable = asked.as_deref().filter(|v| v.parse::<Targets>().is_err()).map(str::to_owned);
    let targets: Targets = asked.as_deref().and_then(|v| v.parse().ok()).unwrap_or_else(|| DEFAULT.parse().expect("the default filter parses"));
    let filter = || targets.clone();
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // The per-record and per-publish spans are for tracing: formatting their fields for log
    // lines would cost more than handling a record.
    // (eventkit's own spans are all of this kind.)
    let no_record_spans = tracing_subscriber::filter::filter_fn(|m| !(m.is_span() && m.target().starts_with("eventkit::")));
    // Under libtest, lines go through its capture: a passing test prints nothing.
    let writer = if test_writer {
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(tracing_subscriber::fmt::TestWriter::new())
    } else {
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr)
    };
    let fmt = tracing_subscriber::fmt::layer().with_ansi(colour && !test_writer).with_writer(writer).with_filter(filter().and(no_record_spans));
    let mut layers: Vec<surface::LogLayer> = vec![Box::new(fmt)];
    layers.extend(surface::all().into_iter().filter_map(|s| s.log_layer(service)).map(|l| Box::new(l.with_filter(filter())) as surface::LogLayer));
    let registry = tracing_subscriber::registry().with(layers);
    // Another thread may have won the race: then its subscriber stays.
    let _ = registry.try_init();
    if let Some(value) = unreadable {
        warn!(rust_log = %value, default = DEFAULT, "RUST_LOG is not a list of `target=level` directives (span and field filters need a subscriber of the program's own); logging at the default");
    }
}

/// Every handler this process runs must find the state it asks for; all gaps are reported at once.
fn check_state(registry: &Registry, config: &Config, state: &StateMap) -> Result<()> {
    let mut problems = Vec::new();
    let commands = registry.handlers().iter().copied().filter(|h| matches!(h.kind, crate::flows::handler::HandlerKind::Command { .. }));
    let groups = registry.groups(config);
    for h in groups.iter().flat_map(|g| g.all_handlers()).chain(commands) {
        let mut requirements = Requirements::default();
        (h.requires)(&mut requirements);
        let missing: Vec<_> = requirements.states.iter().filter(|(id, _)| !state.contains(*id)).map(|(_, n)| *n).collect();
        if !missing.is_empty() {
            problems.push(format!("handler `{}` needs {}", h.name, missing.join(", ")));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::MissingState(format!(
            "{}; register it with `App::builder().state(value)`",
            problems.join("; ")
        )))
    }
}

/// How [`App::start_with`] starts an app.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StartOptions {
    /// Whether the program's arguments may ask for a listing or a command instead.
    pub(crate) command_line: bool,
    /// Whether the default subscriber writes through libtest's capture.
    pub(crate) test_writer: bool,
}

/// A configured eventkit application.
///
/// [`run`] is `App::builder().build()?.run()`; the builder sets what the environment does not
/// (state, layers, settings), and [`App::start`] starts it without taking over the process:
///
/// ```no_run
/// use std::time::Duration;
/// use eventkit::{App, layer::Filter};
///
/// struct Db; // a pool, a client: anything handlers take as `&Db` or `State<Db>`
///
/// # async fn example() -> eventkit::Result<()> {
/// App::builder()
///     .service_name("billing")
///     .state(Db)
///     .retries(5)
///     .shutdown_timeout(Duration::from_secs(30))
///     .layer(Filter::new().tenants(["acme"]))        // around every handler
///     .build()?                                      // checks settings, groups and state
///     .run()                                         // until SIGINT/SIGTERM
///     .await
/// # }
/// ```
#[derive(Debug)]
pub struct App {
    config: Config,
    registry: Registry,
    state: Arc<StateMap>,
    broker: Option<Arc<EmbeddedBroker>>,
    ready: Readiness,
    layers: Layers,
}

impl std::fmt::Debug for Layers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layers").field("app", &self.app.len()).field("groups", &self.groups.keys()).field("publish", &self.publish.len()).finish()
    }
}

/// The publish layers of an app: the surfaces' (tracing, metrics), then the app's own.
pub(crate) fn publish_stack(user: &[Arc<dyn crate::flows::layer::PublishLayer>]) -> crate::flows::layer::PublishStack {
    let mut layers: Vec<Arc<dyn crate::flows::layer::PublishLayer>> = surface::all().into_iter().flat_map(|s| s.publish_layers()).collect();
    layers.extend(user.iter().cloned());
    crate::flows::layer::PublishStack::new(layers)
}

impl Publisher {
    /// A publisher for `config`'s cluster (which must name bootstrap servers), outside an app
    /// (a running app has one: [`Running::publisher`]). It has eventkit's layers (tracing,
    /// metrics), none of an app's. (Defined here, in the app layer, which knows the surfaces.)
    pub fn new(config: &Config) -> Result<Publisher> {
        Publisher::with_broker(config, None, publish_stack(&[]))
    }
}

/// The layers of a group: the surfaces' (tracing, then the group's metrics; outermost), the
/// app's layers, the group's, then each handler's own.
fn group_layers(plan: &crate::flows::registry::GroupPlan, config: &Config, layers: &Layers) -> crate::flows::consume::GroupLayers {
    let bare = plan.group_id.strip_prefix(config.group_prefix.as_str()).unwrap_or(&plan.group_id);
    let mut base: Vec<Arc<dyn crate::flows::layer::HandleLayer>> = Vec::new();
    let mut watches = Vec::new();
    for s in surface::all() {
        let parts = s.group(plan);
        base.extend(parts.layers);
        watches.extend(parts.watches);
    }
    base.extend(layers.app.iter().cloned());
    base.extend(layers.groups.get(bare).or_else(|| layers.groups.get(&plan.group_id)).into_iter().flatten().cloned());
    let group_stack = crate::flows::layer::Stack::new(base);
    let handlers = plan
        .all_handlers()
        .chain(plan.batch)
        .map(|h| (h.name, group_stack.with((h.layers)())))
        .collect();
    crate::flows::consume::GroupLayers { group: group_stack, handlers, watches }
}

/// Whether an app is ready, for a health endpoint: false while it waits for its cluster at
/// start, true once it has reached it and started its groups, false again while the cluster
/// is unreachable (unless `EVENTKIT_READINESS` leaves Kafka out) and after shutdown. Take it
/// from [`App::readiness`] before starting. (`/health/ready` also checks the groups.)
#[derive(Debug, Clone)]
pub struct Readiness {
    started: Arc<std::sync::atomic::AtomicBool>,
    /// Whether an unreachable cluster makes the app unready.
    kafka: bool,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness { started: Arc::default(), kafka: true }
    }
}

impl Readiness {
    fn new(checks: crate::ReadinessChecks) -> Self {
        Readiness { started: Arc::default(), kafka: checks.kafka }
    }

    /// Whether the app started (and is not stopping), whatever its cluster does.
    pub(crate) fn started(&self) -> bool {
        self.started.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether the app runs and (when readiness checks it) reaches its cluster.
    pub fn is_ready(&self) -> bool {
        self.started() && !(self.kafka && crate::kafka::outage::active())
    }

    fn set(&self, ready: bool) {
        self.started.store(ready, std::sync::atomic::Ordering::Release);
    }
}

impl App {
    /// Configures an app; unset values come from the environment.
    pub fn builder() -> AppBuilder {
        AppBuilder::default()
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The app's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The app's readiness (false until [`App::start`] has reached the cluster).
    pub fn readiness(&self) -> Readiness {
        self.ready.clone()
    }

    /// The topic listing.
    pub fn topology(&self) -> Topology {
        Topology::new(&self.registry, &self.config)
    }

    /// Prints the listing and returns true if asked to by `--list-topics[=json]` or
    /// `EVENTKIT_LIST_TOPICS=1|json`; prints the AsyncAPI document when asked to by `--asyncapi`.
    pub fn list_topics_if_asked(&self) -> bool {
        self.print_if_asked(true)
    }

    /// Prints what the command line (and, with `env`, `EVENTKIT_LIST_TOPICS`) asks for.
    fn print_if_asked(&self, env: bool) -> bool {
        let args: Vec<String> = std::env::args().collect();
        if surface::all().iter().any(|s| s.prints(&args, self)) {
            return true;
        }
        let arg = std::env::args().find_map(|a| match a.as_str() {
            "--list-topics" => Some("table".to_owned()),
            _ => a.strip_prefix("--list-topics=").map(str::to_owned),
        });
        let env = std::env::var("EVENTKIT_LIST_TOPICS").ok().filter(|v| env && !matches!(v.as_str(), "" | "0" | "false"));
        match arg.or(env).as_deref() {
            None => false,
            Some("json") => {
                println!("{}", self.topology().to_json());
                true
            }
            Some(_) => {
                print!("{}", self.topology());
                true
            }
        }
    }

    /// Starts consumers and the publisher; the app runs until [`Running::shutdown`].
    ///
    /// The command line is honoured as by [`App::run`]: given `--list-topics[=json]` or
    /// `--asyncapi`, the program prints that and exits with status 0; started as
    /// `PROGRAM dlq ...`, it runs the dead letter tool instead and exits with its status. A
    /// binary never runs its service when asked for one of those. (`EVENTKIT_LIST_TOPICS` is read
    /// by [`App::run`] only: `start` also runs inside larger programs and tests, where a variable
    /// left in the environment must not end the process.)
    ///
    /// ```no_run
    /// # async fn example() -> eventkit::Result<()> {
    /// let running = eventkit::App::builder().service_name("shop").build()?.start().await?;
    /// running.publisher(); // publish from anywhere: requests, jobs, tests
    /// running.shutdown().await
    /// # }
    /// ```
    pub async fn start(self) -> Result<Running> {
        self.start_with(StartOptions { command_line: true, test_writer: false }).await
    }

    /// [`App::start`], reading the command line or not (a test harness's arguments are
    /// libtest's), logging through libtest's capture or to stderr.
    pub(crate) async fn start_with(self, options: StartOptions) -> Result<Running> {
        let surfaces = surface::all();
        if options.command_line {
            let args: Vec<String> = std::env::args().collect();
            surface::check_command_line(&args)?;
            if let Some(command) = surfaces.iter().find_map(|s| s.command(&args, &self.config, &self.registry)) {
                match command.await {}
            }
            if self.print_if_asked(false) {
                use std::io::Write as _;
                let _ = std::io::stdout().flush();
                std::process::exit(0);
            }
        }
        let App { mut config, registry, state, broker, ready, layers } = self;
        if config.default_logging {
            install_default_logging(&config.service_name, options.test_writer);
        }
        // Where `PROGRAM dlq ...` beside this app finds its embedded broker.
        let mut announced = None;
        let broker = match (broker, &config.bootstrap_servers) {
            (Some(broker), _) => Some(broker),
            (None, Some(_)) => None,
            (None, None) => {
                let broker = EmbeddedBroker::start()?;
                info!(bootstrap = broker.bootstrap_servers(), "no KAFKA_BOOTSTRAP_SERVERS set: started the embedded broker (librdkafka mock cluster)");
                config.bootstrap_servers = Some(broker.bootstrap_servers().to_owned());
                if options.command_line {
                    announced = announce::announce(&config.service_name, broker.bootstrap_servers());
                }
                Some(Arc::new(broker))
            }
        };
        config.embedded = broker.is_some();
        crate::kafka::check_properties(&config)?;
        // Up before the wait for the cluster: liveness answers during a long start.
        let mut attached = Vec::new();
        for s in &surfaces {
            attached.extend(s.start(&config, &registry, &ready).await?);
        }
        crate::kafka::reach::wait_for_cluster(&config).await?;
        if config.create_topics {
            crate::app::topics::create(&config, &registry, broker.as_deref()).await?;
        }
        let publisher = Publisher::with_broker(&config, broker, publish_stack(&layers.publish))?;
        for s in &surfaces {
            s.started(&config);
        }
        let (shutdown_tx, shutdown_rx) = watch::channel(None);
        let (stopped_tx, stopped) = watch::channel(None);
        let mut tasks = Vec::new();
        let mut statuses = Vec::new();
        let plans = registry.groups(&config);
        // Operators' pauses are read before any group starts: a paused partition never starts
        // a record, however the app (re)started.
        let group_ids: Vec<String> = plans.iter().map(|p| p.group_id.clone()).collect();
        let control = Control::start(&config, publisher.clone(), &group_ids).await?;
        for plan in plans {
            let group_layers = group_layers(&plan, &config, &layers);
            let signals = Signals { shutdown: shutdown_rx.clone(), holds: control.watch(&plan.group_id), resets: control.resets(&plan.group_id) };
            let runner = GroupRunner::new(plan, &config, registry.clone(), publisher.clone(), state.clone(), signals, group_layers)?;
            let status = runner.status();
            statuses.push(status.clone());
            tasks.push(tokio::spawn(supervised(status, runner.run(shutdown_rx.clone()), stopped_tx.clone())));
        }
        let fleet = fleet::Fleet::start(&config, &publisher, statuses.clone(), control.clone(), ready.clone());
        for a in &attached {
            a.live(&publisher, &statuses, &control, &fleet);
        }
        *CURRENT_PUBLISHER.write().expect("publisher lock") = Some(publisher.clone());
        let mediator = crate::flows::command::Mediator { registry: registry.clone(), publisher: publisher.clone(), state: state.clone() };
        crate::flows::command::set_current(Some(mediator.clone()));
        if registry.events().is_empty() && registry.handlers().is_empty() {
            warn!(
                "this app registers no events and no handlers: if they live in a crate this binary does not name, \
                 add `eventkit::link!(that_crate);` to the binary (a crate that is never named is not linked)"
            );
        }
        info!(service = %config.service_name, groups = tasks.len(), "eventkit started");
        ready.set(true);
        Ok(Running { publisher, shutdown_tx, tasks, stopped, config, ready, mediator, attached, control, fleet, _announced: announced })
    }

    /// Starts the app and runs it until SIGINT or SIGTERM, then shuts down gracefully.
    /// Prints the topic listing instead when asked to (see [`App::list_topics_if_asked`]).
    pub async fn run(self) -> Result<()> {
        surface::check_command_line(&std::env::args().collect::<Vec<_>>())?;
        if self.list_topics_if_asked() {
            return Ok(());
        }
        // A signal while the app waits for the cluster ends it cleanly (nothing started yet).
        let running = tokio::select! {
            running = self.start() => running?,
            signal = shutdown_signal() => {
                signal?;
                info!("shutdown signal received before the app started");
                return Ok(());
            }
        };
        let mut stopped = running.stopped.clone();
        let budget = running.config.shutdown_timeout;
        tokio::select! {
            signal = shutdown_signal() => {
                signal?;
                info!("shutdown signal received");
                let exit = ExitWatchdog::arm(budget);
                let result = running.shutdown().await;
                exit.code(if result.is_ok() { 0 } else { 1 });
                result
            }
            // A group that stopped by itself is an internal error: the app stops the others and
            // ends with it, so that whatever supervises the process restarts it.
            Ok(stopped) = stopped.wait_for(Option::is_some) => {
                let error = Error::msg(stopped.clone().unwrap_or_default());
                let exit = ExitWatchdog::arm(budget);
                exit.code(1);
                running.shutdown().await?;
                Err(error)
            }
        }
    }
}

/// Keeps the process's exit within the shutdown budget. `run()` owns the process: once its
/// shutdown is done, the program returns from `main` and the runtime drops, which waits for
/// every thread still running a task; a handler that blocks its thread (instead of awaiting),
/// or a librdkafka call that hangs, would hold the exit for as long as it takes, and a
/// platform's grace period would end in SIGKILL. So a thread of its own ends the process when
/// the budget (and a second) has passed, saying why, with the shutdown's exit status.
struct ExitWatchdog(Arc<std::sync::atomic::AtomicI32>);

impl ExitWatchdog {
    fn arm(budget: Duration) -> Self {
        let code = Arc::new(std::sync::atomic::AtomicI32::new(0));
        let exit = code.clone();
        let at = std::time::Instant::now() + budget + Duration::from_secs(1);
        let _ = std::thread::Builder::new().name("eventkit-exit".into()).spawn(move || {
            std::thread::sleep(at.saturating_duration_since(std::time::Instant::now()));
            let code = exit.load(std::sync::atomic::Ordering::Acquire);
            tracing::error!(
                code,
                "the process has not exited within the shutdown budget (EVENTKIT_SHUTDOWN_TIMEOUT_MS): a handler blocks its thread, or a client call hangs; exiting now"
            );
            std::process::exit(code);
        });
        ExitWatchdog(code)
    }

    fn code(&self, code: i32) {
        self.0.store(code, std::sync::atomic::Ordering::Release);
    }
}

/// Runs a group's consumer. A panic out of the consumer itself (a handler's panic never gets
/// here: it fails its record) is logged with its group, marks the group stopped for the health
/// checks, and tells the app, which ends [`App::run`] with an error.
async fn supervised(status: Arc<crate::flows::status::GroupStatus>, runner: impl std::future::Future<Output = ()>, stopped: watch::Sender<Option<String>>) {
    use futures::FutureExt;
    if let Err(panic) = std::panic::AssertUnwindSafe(runner).catch_unwind().await {
        let reason = format!("consumer group `{}` stopped by an internal error: {}", status.group, crate::core::error::panic_message(&*panic));
        tracing::error!(group = %status.group, "{reason}; the app stops");
        status.stopped(reason.clone());
        stopped.send_if_modified(|first| {
            let was_first = first.is_none();
            first.get_or_insert(reason);
            was_first
        });
    }
}

async fn shutdown_signal() -> Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// A started app: its publisher, dead letters and commands, until [`Running::shutdown`].
///
/// ```no_run
/// #[eventkit::integration_event(topic = "orders.placed.v1", key = order_id)]
/// pub struct OrderPlaced { pub order_id: u64 }
///
/// # async fn example() -> eventkit::Result<()> {
/// let running = eventkit::App::builder().build()?.start().await?;
/// let published = running.publisher().publish(&OrderPlaced { order_id: 7 }).await?;
/// println!("{} at {}[{}]@{}", published.event_id, published.topic, published.partition, published.offset);
/// let dead = running.dead_letters().count("orders.placed.v1", &Default::default()).await?;
/// running.shutdown().await
/// # }
/// ```
pub struct Running {
    publisher: Publisher,
    /// The shutdown's deadline, once it began.
    shutdown_tx: watch::Sender<Option<tokio::time::Instant>>,
    tasks: Vec<JoinHandle<()>>,
    /// Why a group stopped by itself, once one did.
    stopped: watch::Receiver<Option<String>>,
    config: Config,
    ready: Readiness,
    mediator: crate::flows::command::Mediator,
    /// What runs beside the app (the admin API).
    attached: Vec<Box<dyn surface::Attached>>,
    /// The control topic, followed: operators' pauses of its groups.
    control: Control,
    /// This instance's status reports, and its view of the others'.
    fleet: fleet::Fleet,
    /// The note of where its embedded broker listens, removed when the app goes.
    _announced: Option<announce::Announced>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("service", &self.config.service_name).field("groups", &self.tasks.len()).finish_non_exhaustive()
    }
}

impl Running {
    /// Sends a command to its handler in this app and returns the handler's value (see
    /// [`crate::send`]).
    pub async fn send<C: crate::Command>(&self, command: C) -> Result<C::Output> {
        self.mediator.send(command, None).await
    }

    pub(crate) fn mediator(&self) -> &crate::flows::command::Mediator {
        &self.mediator
    }

    /// The app's readiness.
    pub fn readiness(&self) -> Readiness {
        self.ready.clone()
    }

    /// The app's publisher.
    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    /// Operators' control of the running groups: pause and resume them on every instance
    /// (what the admin API's `/groups/pause` and `PROGRAM groups pause` do).
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// Every running instance of this service, as each reports itself on the status topic
    /// (this one as of now; see [`fleet`]).
    pub async fn fleet(&self) -> fleet::FleetView {
        self.fleet.view().await
    }

    /// The dead letter queues of the app's topics.
    pub fn dead_letters(&self) -> crate::flows::dlq::DeadLetterQueue {
        crate::flows::dlq::DeadLetterQueue::with_publisher(&self.config, self.publisher.clone())
    }

    /// Where the admin HTTP API listens, when `EVENTKIT_ADMIN_ADDR` (or
    /// [`AppBuilder::admin_addr`]) turned it on.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.attached.iter().find_map(|a| a.admin_addr())
    }

    /// Where the health probes listen: `EVENTKIT_HEALTH_ADDR`'s address, or the admin API's.
    pub fn health_addr(&self) -> Option<std::net::SocketAddr> {
        self.attached.iter().find_map(|a| a.health_addr())
    }

    /// The app's service name (CloudEvents `source`, the default group).
    pub fn service_name(&self) -> &str {
        &self.config.service_name
    }

    /// The bootstrap servers the app uses (the embedded broker's when it started one).
    pub fn bootstrap_servers(&self) -> &str {
        self.config.bootstrap_servers.as_deref().unwrap_or_default()
    }

    /// Stops fetching, lets in-flight handlers finish, commits handled offsets, leaves the
    /// groups and flushes the producer, all within the shutdown budget
    /// (`EVENTKIT_SHUTDOWN_TIMEOUT_MS`, default 20 s): handlers get all of it but the reserve
    /// ([`Config::shutdown_reserve`]), which the steps after them share.
    pub async fn shutdown(self) -> Result<()> {
        self.ready.set(false);
        let budget = self.config.shutdown_timeout;
        let reserve = self.config.shutdown_reserve();
        let deadline = tokio::time::Instant::now() + budget;
        info!(?budget, handlers_for = ?budget.saturating_sub(reserve), "shutting down: in-flight records finish first, then commit, leave and flush");
        let _ = self.shutdown_tx.send(Some(deadline));
        // Each group keeps to the deadline itself; this is the bound on top of that.
        let groups_by = deadline.checked_sub(reserve / 8).unwrap_or(deadline);
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(groups_by, task).await.is_err() {
                warn!("a consumer group did not stop within the shutdown budget; its unfinished records will be redelivered");
                abort.abort();
            }
        }
        let hooks = self.publisher.take_shutdown_hooks();
        if !hooks.is_empty() {
            info!(steps = hooks.len(), "shutdown: stopping outbox relays");
            let all = futures::future::join_all(hooks.into_iter().map(|hook| hook()));
            if tokio::time::timeout_at(deadline, all).await.is_err() {
                warn!("outbox relays did not stop within the shutdown budget");
            }
        }
        self.fleet.stop(&self.publisher, deadline).await;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now()).max(Duration::from_millis(100));
        info!(within = ?left, "shutdown: flushing the producer");
        let flushed = self.publisher.flush(left);
        self.control.stop();
        for a in self.attached {
            a.stop(deadline).await;
        }
        tokio::task::spawn_blocking(|| surface::all().into_iter().for_each(|s| s.stopped())).await.ok();
        crate::flows::command::clear_current(&self.publisher);
        {
            let mut current = CURRENT_PUBLISHER.write().expect("publisher lock");
            if current.as_ref().is_some_and(|p| p.same_as(&self.publisher)) {
                *current = None;
            }
        }
        info!("eventkit stopped");
        flushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_group_that_panics_is_stopped_reported_and_ends_the_app() {
        let status = crate::flows::status::GroupStatus::new("billing".into(), vec!["t".into()]);
        let (tx, mut rx) = watch::channel(None);
        supervised(status.clone(), async { panic!("index out of bounds") }, tx.clone()).await;
        let reason = rx.wait_for(Option::is_some).await.unwrap().clone().unwrap();
        assert_eq!(reason, "consumer group `billing` stopped by an internal error: index out of bounds");
        let snapshot = status.snapshot();
        assert_eq!(snapshot.stopped.as_deref(), Some(reason.as_str()));
        // The groups' checks only: the process-wide outage account hears the clients of the
        // other tests of this binary (one pointed at a closed port reports an outage).
        let checks = crate::ReadinessChecks { kafka: false, ..Default::default() };
        let reasons = crate::flows::status::unready_reasons(true, checks, &[(status.group.clone(), snapshot)], Duration::from_secs(60));
        assert_eq!(reasons, std::slice::from_ref(&reason), "a stopped group is the reason, not a missing assignment");

        // The first stop is the one reported; a group that ends normally reports nothing.
        let other = crate::flows::status::GroupStatus::new("audit".into(), vec![]);
        supervised(other.clone(), async { panic!("second") }, tx.clone()).await;
        assert_eq!(rx.borrow().as_deref(), Some(reason.as_str()));
        let fine = crate::flows::status::GroupStatus::new("fine".into(), vec![]);
        supervised(fine.clone(), async {}, tx).await;
        assert_eq!(fine.snapshot().stopped, None);
    }
}
