//! The admin HTTP API (axum): health, metrics, topology, groups, dead letters, publishing.
//!
//! Off unless `EVENTKIT_ADMIN_ADDR` (or `EVENTKIT_HEALTH_ADDR`) is set; a port alone binds the
//! loopback address. It starts before the app waits for its cluster, so `/health/live` answers
//! during a long start. With `EVENTKIT_HEALTH_ADDR`, the probes listen there alone, apart from
//! the rest (which then is on `EVENTKIT_ADMIN_ADDR` only).
//!
//! | endpoint | access | |
//! |---|---|---|
//! | `GET /health/live` | open | 200 while the process serves requests; 503 once a group's consumer stopped by an internal error |
//! | `GET /health/ready` | open | 200, or 503 with the reasons (`EVENTKIT_READINESS`): not started, cluster unreachable, a group without assignment, stopped, frozen (its loop silent), or a partition stuck on one record |
//! | `GET /metrics` | read (open by default) | Prometheus text format |
//! | `GET /topology` | read | the topic listing as JSON |
//! | `GET /asyncapi.json` | read | the AsyncAPI 3.0 document (see [`crate::surfaces::asyncapi`]) |
//! | `GET /groups` | read | per group: members, this member's partitions with position, committed offset, lag, pauses |
//! | `GET /fleet` | read | every running instance of the service, from their status reports: groups, partitions, in flight, paused, stopped; `up`, `not reporting` (no report for three intervals) or `stopped` (see [`crate::fleet`]) |
//! | `GET /dlq?topic=T` | read | dead letters of a topic (filters: `group`, `kind`, `handler`, `event_type`, `include_replayed`, `limit`) and their count |
//! | `POST /dlq/replay` | action | replays dead letters (`offset` `P:O`, `range` `P:FROM-TO` or `all`, filters, `to`) |
//! | `POST /publish` | action | publishes `{"type": .., "data": {..}}` as a registered event; a body that does not fit is a 422 naming the field |
//! | `GET /explore` | read | up to `limit` (20, at most 200) records of one `partition` of a `topic` from an `offset`, a `time` (RFC 3339 or ms), or the last ones: key, headers, event type, and the event decoded when this service knows its type (else the payload as text or base64); the partition's watermarks (see [`explore`]) |
//! | `POST /explore/republish` | action | publishes `{"topic", "partition", "offset"}`'s record again, as it is (same key, value, headers, so the same event id: the inbox drops the redelivery where installed); answers its new partition and offset |
//! | `GET /ui` | open (no data) | the console: overview, groups with pause/resume, reset and replay by time, topology, dead letters (filters, an entry's detail, replaying one, a selection or all matching), record explorer, publishing, over this API with the operator's token; every replay and reset is confirmed first (see [`ui`]) |
//! | `POST /groups/pause` | action | pauses `{"group": .., "topic": .., "partition": ..}` (topic and partition optional) on every instance, until resumed (see [`crate::control`]) |
//! | `POST /groups/resume` | action | resumes what the body names, and everything paused within it |
//! | `POST /groups/reset` | action | moves a group's offsets (all its topics, one, or one partition) to `earliest`, `latest`, an `offset` or a `time`, on the running members (refused where it would skip unsettled records, unless `force`) or directly when it has none |
//! | `POST /groups/replay` | action | delivers again to one group (or handler) the records a topic received between two times (see [`crate::flows::replay`]) |
//!
//! Read endpoints take `Authorization: Bearer TOKEN` with `EVENTKIT_ADMIN_READ_TOKEN` or
//! `EVENTKIT_ADMIN_TOKEN` (the scheme in any case), unless `EVENTKIT_ADMIN_OPEN` opens them;
//! actions take `EVENTKIT_ADMIN_TOKEN`. Without a configured token an endpoint is disabled
//! (403), never open. Errors are JSON: `{"error": "...", "field": ".."}`. Limits, timeouts
//! and the audit log: [`access`] and [`server`].
//!
//! | setting | | default |
//! |---|---|---|
//! | `EVENTKIT_ADMIN_PAYLOADS` | `visible`, or `masked`: `/explore` and `/dlq` leave records' values, dead letters' error text and every header but those that name and place an event out (`"masked": true`), keys and types stay; republishing still works ([`crate::AppBuilder::admin_payloads`]) | `visible` |

mod access;
mod explore;
mod server;
mod ui;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use access::{Access, Audited};

use crate::app::fleet::Fleet;
use crate::app::Readiness;
use crate::core::config::Config;
use crate::flows::dlq::{DeadLetterQueue, DlqFilter, ReplayOptions, Selection};
use crate::core::error::{Error, Result};
use crate::flows::publish::{PublishOptions, Publisher};
use crate::flows::registry::Registry;
use crate::flows::control::{Action, Command as ControlCommand, Control, Scope};
use crate::flows::status::GroupStatus;

/// What the API serves once the app runs.
pub(crate) struct Live {
    pub publisher: Publisher,
    pub groups: Vec<Arc<GroupStatus>>,
    pub control: Control,
    pub fleet: Fleet,
}

struct Admin {
    registry: Registry,
    config: Config,
    ready: Readiness,
    live: RwLock<Option<Live>>,
    /// Requests that wait on the cluster (groups, dead letters, publishing) at once: beyond
    /// these, a 503 at once, so that slow requests can never hold every connection.
    slow: tokio::sync::Semaphore,
}

/// How many requests that wait on the cluster run at once.
const SLOW_REQUESTS: usize = 8;

/// A running admin API (one or two listeners); stops when dropped.
pub(crate) struct AdminServer {
    addr: Option<SocketAddr>,
    health_addr: Option<SocketAddr>,
    admin: Arc<Admin>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl AdminServer {
    /// The address the API listens on (`EVENTKIT_ADMIN_ADDR`).
    pub(crate) fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// The address the probes listen on: `EVENTKIT_HEALTH_ADDR`'s, or the API's.
    pub(crate) fn health_addr(&self) -> Option<SocketAddr> {
        self.health_addr.or(self.addr)
    }

    /// The app runs: publishing and group status become available.
    pub(crate) fn set_live(&self, live: Live) {
        *self.admin.live.write().unwrap_or_else(|e| e.into_inner()) = Some(live);
    }

    /// Stops serving: requests in progress may finish until `until` (at most a few seconds).
    pub(crate) async fn stop(mut self, until: tokio::time::Instant) {
        let _ = self.stop.send(true);
        let until = until.min(tokio::time::Instant::now() + Duration::from_secs(5));
        for task in std::mem::take(&mut self.tasks) {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(until, task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// `HOST:PORT`, `:PORT` or `PORT` (the last two on the loopback address).
fn listen_address(addr: &str) -> String {
    let addr = addr.trim();
    if addr.parse::<u16>().is_ok() {
        format!("127.0.0.1:{addr}")
    } else if let Some(port) = addr.strip_prefix(':') {
        format!("127.0.0.1:{port}")
    } else {
        addr.to_owned()
    }
}

/// Binds `addr` (named by `variable` in errors).
async fn bind(variable: &str, addr: &str) -> Result<tokio::net::TcpListener> {
    let address = listen_address(addr);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|e| Error::Config(format!("{variable} = {addr:?}: cannot listen on {address}: {e}")))?;
    let bound = listener.local_addr()?;
    if !bound.ip().is_loopback() {
        warn!(addr = %bound, "{variable} listens on a non-loopback address: put it behind your network policy");
    }
    Ok(listener)
}

/// Starts the API on `EVENTKIT_ADMIN_ADDR` and the probes on `EVENTKIT_HEALTH_ADDR`, those set.
pub(crate) async fn start(config: &Config, registry: Registry, ready: Readiness) -> Result<Option<AdminServer>> {
    let settings = &config.admin;
    if settings.addr.is_none() && settings.health_addr.is_none() {
        return Ok(None);
    }
    let admin = Arc::new(Admin { registry, config: config.clone(), ready, live: RwLock::new(None), slow: tokio::sync::Semaphore::new(SLOW_REQUESTS) });
    let limits = server::Limits::new(settings.max_connections, settings.header_timeout, settings.idle_timeout);
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut spawn = |listener: tokio::net::TcpListener, router: Router, name: &'static str| {
        tasks.push(tokio::spawn(server::serve(listener, router, limits, name, stopped.clone())));
    };
    let (mut addr, mut health_addr) = (None, None);
    if let Some(health) = settings.health_addr.as_deref() {
        let listener = bind("EVENTKIT_HEALTH_ADDR", health).await?;
        health_addr = Some(listener.local_addr()?);
        spawn(listener, probes(admin.clone()), "health");
        info!(addr = %health_addr.unwrap_or(([0, 0, 0, 0], 0).into()), "health probes listening");
    }
    if let Some(api) = settings.addr.as_deref() {
        let listener = bind("EVENTKIT_ADMIN_ADDR", api).await?;
        addr = Some(listener.local_addr()?);
        let router = management(admin.clone(), health_addr.is_none());
        spawn(listener, router, "admin");
        if settings.token.is_none() {
            info!("the admin API's actions are disabled (set EVENTKIT_ADMIN_TOKEN to enable them)");
        }
        info!(addr = %addr.unwrap_or(([0, 0, 0, 0], 0).into()), open = ?settings.open, max_connections = limits.max_connections, "admin API listening");
    }
    Ok(Some(AdminServer { addr, health_addr, admin, stop, tasks }))
}

/// The probes: open, cheap, and never behind a token.
fn probes(admin: Arc<Admin>) -> Router {
    finish(probe_routes(), admin)
}

/// Everything but the probes, each endpoint behind the access it asks for (and the probes too,
/// with `with_probes`).
fn management(admin: Arc<Admin>, with_probes: bool) -> Router {
    let guarded = |access: Access, route: MethodRouter<Arc<Admin>>| route.route_layer(axum::middleware::from_fn_with_state((admin.clone(), access), access::guard));
    let routes = Router::new()
        .route("/metrics", guarded(Access::Read("metrics"), get(metrics)))
        .route("/topology", guarded(Access::Read("topology"), get(topology)))
        .route("/asyncapi.json", guarded(Access::Read("asyncapi.json"), get(asyncapi)))
        .route("/groups", guarded(Access::Read("groups"), get(groups)))
        .route("/fleet", guarded(Access::Read("fleet"), get(fleet)))
        .route("/dlq", guarded(Access::Read("dlq"), get(dlq_list)))
        .route("/dlq/replay", guarded(Access::Action("dlq/replay"), post(dlq_replay)))
        .route("/publish", guarded(Access::Action("publish"), post(publish)))
        .route("/groups/pause", guarded(Access::Action("groups/pause"), post(groups_pause)))
        .route("/groups/resume", guarded(Access::Action("groups/resume"), post(groups_resume)))
        .route("/groups/replay", guarded(Access::Action("groups/replay"), post(groups_replay)))
        .route("/groups/reset", guarded(Access::Action("groups/reset"), post(groups_reset)))
        .route("/explore", guarded(Access::Read("explore"), get(explore::explore)))
        .route("/explore/republish", guarded(Access::Action("explore/republish"), post(explore::republish)))
        .merge(ui::routes());
    finish(if with_probes { routes.merge(probe_routes()) } else { routes }, admin)
}

fn probe_routes() -> Router<Arc<Admin>> {
    Router::new().route("/health/live", get(live)).route("/health/ready", get(ready))
}

/// JSON answers for unknown paths and methods.
fn finish(routes: Router<Arc<Admin>>, admin: Arc<Admin>) -> Router {
    routes
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async { ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint") })
        .with_state(admin)
}

/// A JSON error with its status.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), field: None }
    }

    fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let Some(field) = self.field {
            body["field"] = Value::String(field);
        }
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Usage(_) | Error::Config(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Unreachable(_) | Error::Kafka(_) | Error::Publish { .. } => StatusCode::BAD_GATEWAY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

type ApiResult = std::result::Result<Response, ApiError>;

impl Admin {
    /// A turn for a request that waits on the cluster, or a 503 when too many do already.
    fn slow_turn(&self) -> std::result::Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
        self.slow.try_acquire().map_err(|_| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("{SLOW_REQUESTS} requests that wait on the cluster are in progress; try again shortly"))
        })
    }

    /// What `pick` takes of the running app; a 503 until it runs.
    fn live<T>(&self, pick: impl FnOnce(&Live) -> T) -> std::result::Result<T, ApiError> {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        live.as_ref().map(pick).ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the app has not started yet"))
    }

    fn publisher(&self) -> std::result::Result<Publisher, ApiError> {
        self.live(|l| l.publisher.clone())
    }

    fn groups(&self) -> Vec<Arc<GroupStatus>> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).as_ref().map(|l| l.groups.clone()).unwrap_or_default()
    }

    /// A topic as events declare it: the name given, or (given one of the app's topics on the
    /// wire, as the listing and the console show them) that name without the topic prefix.
    fn declared_topic(&self, topic: &str) -> String {
        let prefix = &self.config.topic_prefix;
        match topic.strip_prefix(prefix.as_str()) {
            Some(bare) if !prefix.is_empty() && self.registry.topics(&self.config).contains(topic) => bare.to_owned(),
            _ => topic.to_owned(),
        }
    }

    fn control(&self) -> std::result::Result<Control, ApiError> {
        self.live(|l| l.control.clone())
    }

    fn fleet(&self) -> std::result::Result<Fleet, ApiError> {
        self.live(|l| l.fleet.clone())
    }

    fn dead_letters(&self) -> std::result::Result<DeadLetterQueue, ApiError> {
        Ok(DeadLetterQueue::with_publisher(&self.config, self.publisher()?).with_registry(self.registry.clone()))
    }
}

/// Parses a JSON body: 400 when it is not JSON, 422 naming the field when it does not fit.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("the body is not JSON: {e}")))?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let (path, message) = crate::core::event::json_error_path(e);
        let error = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message);
        if path.is_empty() {
            error
        } else {
            error.field(path)
        }
    })
}

/// Live unless a group's consumer stopped by itself (the app then ends too, and a
/// supervisor that probes liveness restarts it either way).
async fn live(State(admin): State<Arc<Admin>>) -> Response {
    let stopped: Vec<String> = admin.groups().iter().filter_map(|g| g.stopped_reason()).collect();
    if stopped.is_empty() {
        Json(json!({ "status": "up" })).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "down", "reasons": stopped }))).into_response()
    }
}

impl Admin {
    /// One snapshot per group, and why the app is not ready (empty: it is).
    fn readiness(&self) -> (Vec<(Arc<str>, crate::flows::status::GroupSnapshot)>, Vec<String>) {
        let snapshots: Vec<(Arc<str>, crate::flows::status::GroupSnapshot)> = self.groups().iter().map(|g| (g.group.clone(), g.snapshot())).collect();
        let mut reasons = crate::flows::status::unready_reasons(self.ready.started(), self.config.readiness, &snapshots, self.config.stuck_after);
        // A producer replaced after a fatal error, until the new one delivers.
        if self.config.readiness.kafka {
            let publisher = self.live.read().unwrap_or_else(|e| e.into_inner()).as_ref().map(|l| l.publisher.clone());
            reasons.extend(publisher.and_then(|p| p.unhealthy()));
        }
        (snapshots, reasons)
    }
}

async fn ready(State(admin): State<Arc<Admin>>) -> Response {
    // One snapshot per group serves both the verdict and the body.
    let (snapshots, reasons) = admin.readiness();
    let status = if reasons.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let groups: Vec<Value> = snapshots
        .iter()
        .map(|(group, s)| json!({ "group": &**group, "joined": s.joined, "partitions": s.partitions.len(), "in_flight": s.in_flight, "loop_silent_s": s.loop_silent_s }))
        .collect();
    let body = json!({ "status": if reasons.is_empty() { "up" } else { "down" }, "reasons": reasons, "groups": groups });
    (status, Json(body)).into_response()
}

/// What an endpoint of a surface this build leaves out answers.
#[cfg(not(all(feature = "prometheus", feature = "asyncapi")))]
fn feature_off(what: &str, feature: &str) -> Response {
    let error = format!("{what} needs eventkit's `{feature}` feature, which this build leaves out");
    (StatusCode::NOT_FOUND, Json(json!({ "error": error }))).into_response()
}

#[cfg(not(feature = "prometheus"))]
async fn metrics() -> Response {
    feature_off("/metrics", "prometheus")
}

/// The metrics, with the gauges that are read when scraped: readiness, liveness, the
/// cluster's reachability, and each group's fetch loop age.
#[cfg(feature = "prometheus")]
async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    let (snapshots, reasons) = admin.readiness();
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    metrics::gauge!("eventkit_ready").set(flag(reasons.is_empty()));
    metrics::gauge!("eventkit_live").set(flag(snapshots.iter().all(|(_, s)| s.stopped.is_none())));
    metrics::gauge!("eventkit_kafka_reachable").set(flag(!crate::kafka::outage::active()));
    for (group, s) in &snapshots {
        let group = crate::surfaces::metrics::label(group);
        metrics::gauge!("eventkit_consumer_loop_silent_seconds", "group" => group.clone()).set(s.loop_silent_s);
        metrics::gauge!("eventkit_group_running", "group" => group).set(flag(s.stopped.is_none()));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], crate::surfaces::metrics::render()).into_response()
}

async fn topology(State(admin): State<Arc<Admin>>) -> Response {
    let listing = crate::app::topology::Topology::new(&admin.registry, &admin.config);
    ([(header::CONTENT_TYPE, "application/json")], listing.to_json()).into_response()
}

#[cfg(feature = "asyncapi")]
async fn asyncapi(State(admin): State<Arc<Admin>>) -> Json<Value> {
    Json(crate::surfaces::asyncapi::document(&admin.registry, &admin.config))
}

#[cfg(not(feature = "asyncapi"))]
async fn asyncapi() -> Response {
    feature_off("/asyncapi.json", "asyncapi")
}

async fn groups(State(admin): State<Arc<Admin>>) -> ApiResult {
    let _turn = admin.slow_turn()?;
    let groups = admin.groups();
    let ids: Vec<String> = groups.iter().map(|g| g.group.to_string()).collect();
    let config = admin.config.clone();
    // Members come from the group coordinator (a blocking request, off the async workers).
    let members = tokio::task::spawn_blocking(move || crate::kafka::describe_groups(&config, &ids, Duration::from_secs(5)))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let control = admin.control().ok();
    let out: Vec<Value> = groups
        .iter()
        .map(|g| {
            let s = g.snapshot();
            let holds = control.as_ref().map(|c| c.holds(&g.group).list()).unwrap_or_default();
            let (state, members) = match &members {
                Ok(m) => m.get(&*g.group).map(|(state, members)| (json!(state), json!(members))).unwrap_or((Value::Null, json!([]))),
                Err(e) => (Value::Null, json!({ "error": e.to_string() })),
            };
            json!({
                "group": &*g.group,
                "topics": &g.topics,
                "state": state,
                "members": members,
                "joined": s.joined,
                "in_flight": s.in_flight,
                "buffered_records": s.buffered_records,
                "buffered_bytes": s.buffered_bytes,
                "loop_silent_s": s.loop_silent_s,
                "holds": holds,
                "partitions": s.partitions,
            })
        })
        .collect();
    Ok(Json(json!({ "groups": out })).into_response())
}

/// Every instance of the service, as each reports itself (see [`crate::fleet`]).
async fn fleet(State(admin): State<Arc<Admin>>) -> ApiResult {
    let fleet = admin.fleet()?;
    Ok(Json(fleet.view().await).into_response())
}

/// Whether `topic` is a name Kafka allows: 1 to `longest` of `a-z A-Z 0-9 . _ -`, not `.` or `..`.
fn legal_topic(topic: &str, longest: usize) -> bool {
    !topic.is_empty() && topic.len() <= longest && topic != "." && topic != ".." && topic.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Filters of `GET /dlq` and `POST /dlq/replay`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DlqQuery {
    topic: Option<String>,
    group: Option<String>,
    kind: Option<String>,
    handler: Option<String>,
    event_type: Option<String>,
    #[serde(default)]
    include_replayed: bool,
    limit: Option<usize>,
}

impl DlqQuery {
    /// The topic asked for: a name Kafka allows (`a-z A-Z 0-9 . _ -`, not `.` or `..`), short
    /// enough that its dead letter topic (with the topic prefix and the dead letter suffix) is
    /// one too (249 characters at most), or a 400 naming the field.
    fn topic(&self, config: &Config) -> std::result::Result<&str, ApiError> {
        let topic = self.topic.as_deref().filter(|t| !t.is_empty()).ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "`topic` is required").field("topic"))?;
        let longest = 249usize.saturating_sub(config.topic_prefix.len() + config.dlq_suffix.len());
        if !legal_topic(topic, longest) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("{topic:?} is not a topic name: 1 to {longest} of a-z, A-Z, 0-9, `.`, `_` and `-` (with the prefix and the dead letter suffix, 249), not `.` or `..`"),
            )
            .field("topic"));
        }
        Ok(topic)
    }

    fn filter(&self, config: &Config) -> std::result::Result<DlqFilter, ApiError> {
        DlqFilter::named(config, self.group.as_deref(), self.kind.clone(), self.handler.clone(), self.event_type.clone(), self.include_replayed)
            .map_err(|e| ApiError::from(e).field("kind"))
    }
}

async fn dlq_list(State(admin): State<Arc<Admin>>, query: std::result::Result<Query<DlqQuery>, axum::extract::rejection::QueryRejection>) -> ApiResult {
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let topic = admin.declared_topic(query.topic(&admin.config)?);
    let _turn = admin.slow_turn()?;
    let filter = query.filter(&admin.config)?;
    let limit = query.limit.unwrap_or(100).min(10_000);
    let masked = admin.config.admin.payloads == crate::core::config::PayloadVisibility::Masked;
    let dlq = admin.dead_letters()?;
    let entries = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = entries.clone();
    let count = dlq
        .for_each(&topic, &filter, move |d| {
            let mut entries = sink.lock().unwrap_or_else(|e| e.into_inner());
            if entries.len() < limit {
                let mut entry = serde_json::to_value(crate::flows::dlq::listing::Listed::from(&d))?;
                if masked {
                    explore::mask_listed(&mut entry);
                }
                entries.push(entry);
            }
            Ok(())
        })
        .await?;
    let entries = std::mem::take(&mut *entries.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(Json(json!({ "topic": topic, "dlq_topic": dlq.dlq_topic(&topic), "count": count, "entries": entries })).into_response())
}

/// The body of `POST /dlq/replay`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    topic: String,
    /// One entry: `PARTITION:OFFSET` in the dead letter topic.
    offset: Option<String>,
    /// Entries of one partition: `PARTITION:FROM-TO`.
    range: Option<String>,
    #[serde(default)]
    all: bool,
    group: Option<String>,
    kind: Option<String>,
    handler: Option<String>,
    event_type: Option<String>,
    to: Option<String>,
    #[serde(default)]
    create_topic: bool,
}

async fn dlq_replay(State(admin): State<Arc<Admin>>, request: Request) -> ApiResult {
    let b: ReplayBody = access::json_body(&admin, "dlq/replay", request).await?;
    let mut audited = format!("topic={:?} ", b.topic);
    audited += &b.offset.as_deref().map(|o| format!("offset={o:?}")).or(b.range.as_deref().map(|r| format!("range={r:?}"))).unwrap_or_else(|| "all".to_owned());
    for (name, value) in [("group", &b.group), ("kind", &b.kind), ("handler", &b.handler), ("event_type", &b.event_type), ("to", &b.to)] {
        if let Some(value) = value {
            audited += &format!(" {name}={value:?}");
        }
    }
    if b.create_topic {
        audited += " create_topic";
    }
    let audited = Audited(audited);
    let mut response = replay_body(&admin, b).await.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(audited);
    Ok(response)
}

async fn replay_body(admin: &Admin, b: ReplayBody) -> ApiResult {
    let invalid = |field: &str, e: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e).field(field);
    let selection = match (&b.offset, &b.range, b.all) {
        (Some(o), None, false) => {
            let (partition, offset) = crate::flows::dlq::listing::parse_entry(o).map_err(|e| invalid("offset", e))?;
            Selection::One { partition, offset }
        }
        (None, Some(r), false) => {
            let (partition, from, to) = crate::flows::dlq::listing::parse_range(r).map_err(|e| invalid("range", e))?;
            Selection::Range { partition, from, to }
        }
        (None, None, true) => Selection::All,
        _ => return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "choose exactly one of `offset` (\"P:O\"), `range` (\"P:FROM-TO\") or `all`: true")),
    };
    let query = DlqQuery { topic: Some(b.topic.clone()), group: b.group, kind: b.kind, handler: b.handler, event_type: b.event_type, include_replayed: false, limit: None };
    query.topic(&admin.config)?;
    let _turn = admin.slow_turn()?;
    let filter = query.filter(&admin.config)?;
    let options = ReplayOptions { to: b.to, create_topic: b.create_topic };
    // As the listing: the declared name, or one of the app's topics on the wire.
    let report = admin.dead_letters()?.replay_with(&admin.declared_topic(&b.topic), selection, &filter, &options).await?;
    let skipped: Vec<Value> = report.skipped.iter().map(|(entry, why)| json!({ "entry": entry, "reason": why })).collect();
    Ok(Json(json!({ "replayed": report.replayed, "already_replayed": report.already_replayed, "skipped": skipped })).into_response())
}

/// The body of `POST /publish`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    /// The event type (`ce_type`) of a registered event.
    #[serde(rename = "type")]
    event_type: String,
    /// The event, as JSON.
    data: Value,
    correlation_id: Option<String>,
    tenant_id: Option<String>,
    subject: Option<String>,
    key: Option<String>,
}

async fn publish(State(admin): State<Arc<Admin>>, request: Request) -> ApiResult {
    let b: PublishBody = access::json_body(&admin, "publish", request).await?;
    let audited = Audited(format!("type={:?}", b.event_type));
    let mut response = publish_body(&admin, b).await.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(audited);
    Ok(response)
}

async fn publish_body(admin: &Admin, b: PublishBody) -> ApiResult {
    let _turn = admin.slow_turn()?;
    let Some(info) = admin.registry.event(&b.event_type) else {
        let mut known: Vec<&str> = admin.registry.events().iter().map(|e| e.event_type).collect();
        known.sort_unstable();
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("unknown event type `{}`; this app knows: {}", b.event_type, known.join(", "))).field("type"));
    };
    let event = (info.from_json)(b.data).map_err(|(path, message)| {
        let path = if path.is_empty() { "data".to_owned() } else { format!("data.{path}") };
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("the data is not a valid `{}`: {message}", info.event_type)).field(path)
    })?;
    let options = PublishOptions { correlation_id: b.correlation_id, tenant_id: b.tenant_id, subject: b.subject, key: b.key, ..Default::default() };
    let published = crate::Cascade::new().with(event).publish(&admin.publisher()?, options).await?;
    let out: Vec<Value> =
        published.iter().map(|p| json!({ "event_id": p.event_id, "topic": p.topic, "partition": p.partition, "offset": p.offset })).collect();
    Ok((StatusCode::CREATED, Json(json!({ "published": out }))).into_response())
}

/// The body of `POST /groups/pause` and `POST /groups/resume`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldBody {
    /// The group: its name in the code (without the group prefix) or its id.
    group: String,
    /// One topic of it (as events declare it, or on the wire); none: the whole group.
    topic: Option<String>,
    /// One partition of that topic; none: the whole topic.
    partition: Option<i32>,
    /// Who asks, recorded with the command (the caller's address is added).
    by: Option<String>,
}

async fn groups_pause(State(admin): State<Arc<Admin>>, request: Request) -> ApiResult {
    hold(admin, request, Action::Pause).await
}

async fn groups_resume(State(admin): State<Arc<Admin>>, request: Request) -> ApiResult {
    hold(admin, request, Action::Resume).await
}

async fn hold(admin: Arc<Admin>, request: Request, action: Action) -> ApiResult {
    let client = access::client(&request);
    let endpoint = if action == Action::Pause { "groups/pause" } else { "groups/resume" };
    let b: HoldBody = access::json_body(&admin, endpoint, request).await?;
    let audited = Audited(format!("group={:?} topic={:?} partition={:?}", b.group, b.topic, b.partition));
    let mut response = hold_body(&admin, b, action, &client).await.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(audited);
    Ok(response)
}

async fn hold_body(admin: &Admin, b: HoldBody, action: Action, client: &str) -> ApiResult {
    let invalid = |field: &str, e: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e).field(field);
    let control = admin.control()?;
    let config = &admin.config;
    let (plan, topic) = group_and_topic(admin, &b.group, b.topic.as_deref())?;
    if let Some(partition) = b.partition {
        let Some(topic) = &topic else {
            return Err(invalid("partition", "a partition needs its `topic`".into()));
        };
        let _turn = admin.slow_turn()?;
        let count = crate::kafka::offsets::partition_count(config, topic).await?;
        if partition < 0 || count.is_some_and(|n| partition as usize >= n) {
            return Err(invalid("partition", format!("topic `{topic}` has no partition {partition} (it has {})", count.map_or("none".to_owned(), |n| n.to_string()))));
        }
    }
    let by = who(b.by, client)?;
    let scope = Scope { topic, partition: b.partition };
    if action == Action::Resume {
        if let Some(wider) = control.holds(&plan.group_id).held_by_wider(&scope) {
            let field = if wider.scope.topic.is_none() { "group" } else { "topic" };
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("{scope} stays paused by the pause of {} (by {}, at {}): resume that instead", wider.scope, wider.by, wider.at),
            )
            .field(field));
        }
    }
    let _turn = admin.slow_turn()?;
    let command = ControlCommand::new(action, plan.group_id.clone(), scope, by);
    let id = command.id.clone();
    let outcome = control.send(command).await?;
    let status = if outcome.applied { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((
        status,
        Json(json!({
            "id": id,
            "action": action,
            "group": plan.group_id,
            "applied": outcome.applied,
            "changed": outcome.changed,
            "holds": outcome.holds.list(),
        })),
    )
        .into_response())
}

/// The group a request names (its name in the code or its id; any group of the service: an
/// instance that runs only some still steers them all), and the topic of it, on the wire.
fn group_and_topic(admin: &Admin, group: &str, topic: Option<&str>) -> std::result::Result<(crate::flows::registry::GroupPlan, Option<String>), ApiError> {
    let invalid = |field: &str, e: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e).field(field);
    let config = &admin.config;
    let plans = admin.registry.groups(&Config { groups: None, ..config.clone() });
    let Some(plan) = plans.into_iter().find(|p| p.group_id == group || p.group_id == config.group_for(Some(group))) else {
        let known: Vec<String> = admin.registry.groups(&Config { groups: None, ..config.clone() }).into_iter().map(|p| p.group_id).collect();
        return Err(invalid("group", format!("unknown group `{group}`; this app runs: {}", known.join(", "))));
    };
    let topic = match topic {
        None => None,
        Some(t) => {
            let wire = [t.to_owned(), config.topic_name(t)].into_iter().find(|w| plan.topics.contains(w));
            let Some(wire) = wire else {
                let known: Vec<&str> = plan.topics.iter().map(String::as_str).collect();
                return Err(invalid("topic", format!("group `{}` does not read topic `{t}`; it reads: {}", plan.group_id, known.join(", "))));
            };
            Some(wire)
        }
    };
    Ok((plan, topic))
}

/// Who asks: the body's `by` (checked) with the caller's address.
fn who(by: Option<String>, client: &str) -> std::result::Result<String, ApiError> {
    match by {
        Some(by) if by.is_empty() || by.chars().count() > 100 || by.chars().any(char::is_control) => {
            Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "`by` names who asks: 1 to 100 characters, no control characters").field("by"))
        }
        Some(by) => Ok(format!("{by} (admin API, {client})")),
        None => Ok(format!("admin API, {client}")),
    }
}

/// The body of `POST /groups/reset`: exactly one of `to` (`earliest`, `latest`), `offset`, `time`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    group: String,
    topic: Option<String>,
    partition: Option<i32>,
    to: Option<String>,
    offset: Option<i64>,
    time: Option<Value>,
    #[serde(default)]
    force: bool,
    by: Option<String>,
}

async fn groups_reset(State(admin): State<Arc<Admin>>, request: Request) -> ApiResult {
    let client = access::client(&request);
    let b: ResetBody = access::json_body(&admin, "groups/reset", request).await?;
    let audited = Audited(format!("group={:?} topic={:?} partition={:?} to={:?} offset={:?} time={:?} force={}", b.group, b.topic, b.partition, b.to, b.offset, b.time, b.force));
    let mut response = reset_body(&admin, b, &client).await.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(audited);
    Ok(response)
}

async fn reset_body(admin: &Admin, b: ResetBody, client: &str) -> ApiResult {
    use crate::flows::control::{ResetRequest, ResetTo};
    let invalid = |field: &str, e: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e).field(field);
    let control = admin.control()?;
    let (plan, topic) = group_and_topic(admin, &b.group, b.topic.as_deref())?;
    if b.partition.is_some() && topic.is_none() {
        return Err(invalid("partition", "a partition needs its `topic`".into()));
    }
    let to = match (b.to.as_deref(), b.offset, &b.time) {
        (Some("earliest"), None, None) => ResetTo::Earliest,
        (Some("latest"), None, None) => ResetTo::Latest,
        (Some(other), None, None) => return Err(invalid("to", format!("`to` is `earliest` or `latest`, not `{other}` (or give `offset` or `time`)"))),
        (None, Some(n), None) => ResetTo::Offset(n),
        (None, None, Some(t)) => {
            let text = match t {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => return Err(invalid("time", format!("`time` is a time (RFC 3339 or milliseconds since the epoch), not {other}"))),
            };
            ResetTo::Time(crate::flows::replay::parse_time(&text).map_err(|e| invalid("time", e))?)
        }
        _ => return Err(invalid("to", "give exactly one of `to` (\"earliest\" or \"latest\"), `offset` or `time`".into())),
    };
    let by = who(b.by, client)?;
    let _turn = admin.slow_turn()?;
    let topics = match topic {
        Some(t) => vec![t],
        None => plan.topics.iter().cloned().collect(),
    };
    let request = ResetRequest { group: plan.group_id.clone(), topics, partition: b.partition, to, force: b.force };
    let report = match control.reset(&request, by).await {
        Ok(report) => report,
        // What it names is at fault: `partition: ...` or `offset: ...`.
        Err(Error::Usage(message)) => {
            let field = message.split(':').next().unwrap_or_default().to_owned();
            return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message).field(field));
        }
        Err(e) => return Err(e.into()),
    };
    let status = if report.partitions.iter().any(|p| p.status == "refused") {
        StatusCode::CONFLICT
    } else if report.partitions.iter().all(|p| p.status == "reset") {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(json!({ "group": plan.group_id, "to": to, "force": b.force, "id": report.id, "direct": report.direct, "partitions": report.partitions }))).into_response())
}

/// The body of `POST /groups/replay`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayTimeBody {
    group: String,
    topic: String,
    /// From this time (RFC 3339 or milliseconds since the epoch), inclusive.
    from: Value,
    /// To this time, exclusive: a time that has passed.
    to: Value,
    /// Only this handler of the group.
    handler: Option<String>,
    by: Option<String>,
    /// Replay even if the same replay was done before.
    #[serde(default)]
    again: bool,
}

async fn groups_replay(State(admin): State<Arc<Admin>>, request: Request) -> ApiResult {
    let client = access::client(&request);
    let b: ReplayTimeBody = access::json_body(&admin, "groups/replay", request).await?;
    let audited = Audited(format!("group={:?} topic={:?} from={} to={} handler={:?}", b.group, b.topic, b.from, b.to, b.handler));
    let mut response = replay_time_body(&admin, b, &client).await.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(audited);
    Ok(response)
}

async fn replay_time_body(admin: &Admin, b: ReplayTimeBody, client: &str) -> ApiResult {
    let invalid = |field: &str, e: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e).field(field);
    let time = |field: &str, v: &Value| -> std::result::Result<i64, ApiError> {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => return Err(invalid(field, format!("`{field}` is a time (RFC 3339 or milliseconds since the epoch), not {other}"))),
        };
        crate::flows::replay::parse_time(&text).map_err(|e| invalid(field, e))
    };
    let control = admin.control()?;
    let (plan, topic) = group_and_topic(admin, &b.group, Some(&b.topic))?;
    let from_ms = time("from", &b.from)?;
    // A closed window (`to` not in the future): the same replay asked again is then the same.
    let to_ms = time("to", &b.to)?;
    if from_ms >= to_ms {
        return Err(invalid("to", format!("`to` ({to_ms} ms) must be after `from` ({from_ms} ms)")));
    }
    if to_ms > chrono::Utc::now().timestamp_millis() {
        return Err(invalid("to", "`to` is in the future: a window still open cannot be replayed once (give a time that has passed)".into()));
    }
    if let Some(handler) = &b.handler {
        if !plan.all_handlers().any(|h| h.name == handler) {
            let known: Vec<&str> = plan.all_handlers().map(|h| h.name).collect();
            return Err(invalid("handler", format!("group `{}` has no handler `{handler}`; it has: {}", plan.group_id, known.join(", "))));
        }
    }
    let by = who(b.by, client)?;
    let _turn = admin.slow_turn()?;
    let r = crate::flows::replay::TimeReplay { group: plan.group_id.clone(), topic: topic.expect("asked for"), handler: b.handler, from_ms, to_ms };
    Ok(match control.replay(&r, by, b.again).await? {
        crate::flows::control::ReplayOutcome::Done(report) => (StatusCode::OK, Json(json!({ "replayed": report.replayed, "skipped_replays": report.skipped_replays, "partitions": report.partitions, "before": Value::Null }))).into_response(),
        crate::flows::control::ReplayOutcome::Before(first) => {
            (StatusCode::OK, Json(json!({ "replayed": 0, "before": first, "note": "the same replay was done before (send \"again\": true to replay once more)" }))).into_response()
        }
    })
}

/// The admin API as a surface: up before the app waits for its cluster (the probes answer),
/// live once the app runs, stopped within the shutdown budget.
struct Surface;

impl crate::app::surface::Surface for Surface {
    fn name(&self) -> &'static str {
        "admin"
    }

    fn start(&self, config: &Config, registry: &Registry, ready: &Readiness) -> futures::future::BoxFuture<'static, Result<Option<Box<dyn crate::app::surface::Attached>>>> {
        let (config, registry, ready) = (config.clone(), registry.clone(), ready.clone());
        Box::pin(async move { Ok(start(&config, registry, ready).await?.map(|s| Box::new(s) as Box<dyn crate::app::surface::Attached>)) })
    }
}

impl crate::app::surface::Attached for AdminServer {
    fn live(&self, publisher: &Publisher, groups: &[Arc<GroupStatus>], control: &Control, fleet: &Fleet) {
        self.set_live(Live { publisher: publisher.clone(), groups: groups.to_vec(), control: control.clone(), fleet: fleet.clone() });
    }

    fn admin_addr(&self) -> Option<SocketAddr> {
        self.addr()
    }

    fn health_addr(&self) -> Option<SocketAddr> {
        AdminServer::health_addr(self)
    }

    fn stop(self: Box<Self>, deadline: tokio::time::Instant) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(AdminServer::stop(*self, deadline))
    }
}

inventory::submit!(crate::app::surface::Entry(&Surface));

#[cfg(test)]
mod tests {
    use super::listen_address;

    #[test]
    fn a_port_alone_listens_on_the_loopback_address() {
        assert_eq!(listen_address("9090"), "127.0.0.1:9090");
        assert_eq!(listen_address(":0"), "127.0.0.1:0");
        assert_eq!(listen_address("0.0.0.0:80"), "0.0.0.0:80");
    }
}
