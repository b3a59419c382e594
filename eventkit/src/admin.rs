//! The admin HTTP API (axum): health, metrics, topology, groups, dead letters, publishing.
//!
//! Off unless `EVENTKIT_ADMIN_ADDR` is set; a port alone binds the loopback address. It starts
//! before the app waits for its cluster, so `/health/live` answers during a long start.
//!
//! | endpoint | |
//! |---|---|
//! | `GET /health/live` | 200 while the process serves requests; 503 once a group's consumer stopped by an internal error |
//! | `GET /health/ready` | 200, or 503 with the reasons: not started, cluster unreachable, a group without assignment or stopped, a partition stuck on one record |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /topology` | the topic listing as JSON |
//! | `GET /asyncapi.json` | the AsyncAPI 3.0 document (see [`crate::asyncapi`]) |
//! | `GET /groups` | per group: members, this member's partitions with position, committed offset, lag, pauses |
//! | `GET /dlq?topic=T` | dead letters of a topic (filters: `group`, `kind`, `handler`, `event_type`, `include_replayed`, `limit`) and their count; token |
//! | `POST /dlq/replay` | replays dead letters (`offset` `P:O`, `range` `P:FROM-TO` or `all`, filters, `to`); token |
//! | `POST /publish` | publishes `{"type": .., "data": {..}}` as a registered event; a body that does not fit is a 422 naming the field; token |
//!
//! Endpoints that change something or show event data ask for `Authorization: Bearer TOKEN`
//! with the token from `EVENTKIT_ADMIN_TOKEN`; without a configured token they are disabled
//! (403), never open. Errors are JSON: `{"error": "...", "field": ".."}`.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::app::Readiness;
use crate::config::Config;
use crate::dlq::{DeadLetterQueue, DlqFilter, ReplayOptions, Selection};
use crate::error::{Error, Result};
use crate::publisher::{PublishOptions, Publisher};
use crate::registry::Registry;
use crate::status::GroupStatus;

/// What the API serves once the app runs.
pub(crate) struct Live {
    pub publisher: Publisher,
    pub groups: Vec<Arc<GroupStatus>>,
}

struct Admin {
    registry: Registry,
    config: Config,
    ready: Readiness,
    live: RwLock<Option<Live>>,
}

/// A running admin API; stops when dropped.
pub(crate) struct AdminServer {
    addr: SocketAddr,
    admin: Arc<Admin>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// The address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The app runs: publishing and group status become available.
    pub(crate) fn set_live(&self, live: Live) {
        *self.admin.live.write().unwrap_or_else(|e| e.into_inner()) = Some(live);
    }

    /// Stops serving (requests in progress finish, up to a few seconds).
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
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

/// Starts the API on `config.admin_addr`, if set.
pub(crate) async fn start(config: &Config, registry: Registry, ready: Readiness) -> Result<Option<AdminServer>> {
    let Some(addr) = config.admin_addr.as_deref() else { return Ok(None) };
    let address = listen_address(addr);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|e| Error::Config(format!("EVENTKIT_ADMIN_ADDR = {addr:?}: cannot listen on {address}: {e}")))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        warn!(%addr, "the admin API listens on a non-loopback address: put it behind your network policy");
    }
    if config.admin_token.is_none() {
        info!("the admin API's mutating and data endpoints are disabled (set EVENTKIT_ADMIN_TOKEN to enable them)");
    }
    let admin = Arc::new(Admin { registry, config: config.clone(), ready, live: RwLock::new(None) });
    let app = router(admin.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        if let Err(e) = serve.await {
            warn!(error = %e, "the admin API stopped");
        }
    });
    info!(%addr, "admin API listening");
    Ok(Some(AdminServer { addr, admin, stop: Some(stop), task: Some(task) }))
}

fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/topology", get(topology))
        .route("/asyncapi.json", get(asyncapi))
        .route("/groups", get(groups))
        .route("/dlq", get(dlq_list))
        .route("/dlq/replay", post(dlq_replay))
        .route("/publish", post(publish))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async { ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint") })
        .with_state(admin)
}

/// A JSON error with its status.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<String>,
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
            Error::Unreachable(_) | Error::Kafka(_) | Error::Publish { .. } => StatusCode::BAD_GATEWAY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

type ApiResult = std::result::Result<Response, ApiError>;

impl Admin {
    /// Checks the bearer token of a request to a protected endpoint.
    fn authorize(&self, headers: &HeaderMap) -> std::result::Result<(), ApiError> {
        let Some(token) = self.config.admin_token.as_deref() else {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "this endpoint is disabled: set EVENTKIT_ADMIN_TOKEN to enable it"));
        };
        let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
        match given {
            Some(given) if bool::from(subtle::ConstantTimeEq::ct_eq(given.as_bytes(), token.as_bytes())) => Ok(()),
            Some(_) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong bearer token")),
            None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "this endpoint needs `Authorization: Bearer <EVENTKIT_ADMIN_TOKEN>`")),
        }
    }

    fn publisher(&self) -> std::result::Result<Publisher, ApiError> {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        live.as_ref().map(|l| l.publisher.clone()).ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the app has not started yet"))
    }

    fn groups(&self) -> Vec<Arc<GroupStatus>> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).as_ref().map(|l| l.groups.clone()).unwrap_or_default()
    }

    fn dead_letters(&self) -> std::result::Result<DeadLetterQueue, ApiError> {
        Ok(DeadLetterQueue::with_publisher(&self.config, self.publisher()?).with_registry(self.registry.clone()))
    }
}

/// Parses a JSON body: 400 when it is not JSON, 422 naming the field when it does not fit.
fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> std::result::Result<T, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("the body is not JSON: {e}")))?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let error = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.into_inner().to_string());
        if path == "." {
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

async fn ready(State(admin): State<Arc<Admin>>) -> Response {
    // One snapshot per group serves both the verdict and the body.
    let snapshots: Vec<(Arc<str>, crate::status::GroupSnapshot)> = admin.groups().iter().map(|g| (g.group.clone(), g.snapshot())).collect();
    let reasons = crate::status::unready_reasons(admin.ready.started(), &snapshots, admin.config.stuck_after);
    let status = if reasons.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let groups: Vec<Value> = snapshots
        .iter()
        .map(|(group, s)| json!({ "group": &**group, "joined": s.joined, "partitions": s.partitions.len(), "in_flight": s.in_flight }))
        .collect();
    let body = json!({ "status": if reasons.is_empty() { "up" } else { "down" }, "reasons": reasons, "groups": groups });
    (status, Json(body)).into_response()
}

async fn metrics() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], crate::metrics::render()).into_response()
}

async fn topology(State(admin): State<Arc<Admin>>) -> Response {
    let listing = crate::topology::Topology::new(&admin.registry, &admin.config);
    ([(header::CONTENT_TYPE, "application/json")], listing.to_json()).into_response()
}

async fn asyncapi(State(admin): State<Arc<Admin>>) -> Json<Value> {
    Json(crate::asyncapi::document(&admin.registry, &admin.config))
}

async fn groups(State(admin): State<Arc<Admin>>) -> ApiResult {
    let groups = admin.groups();
    let ids: Vec<String> = groups.iter().map(|g| g.group.to_string()).collect();
    let config = admin.config.clone();
    // Members come from the group coordinator (a blocking request, off the async workers).
    let members = tokio::task::spawn_blocking(move || crate::kafka::describe_groups(&config, &ids, Duration::from_secs(5)))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let out: Vec<Value> = groups
        .iter()
        .map(|g| {
            let s = g.snapshot();
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
                "partitions": s.partitions,
            })
        })
        .collect();
    Ok(Json(json!({ "groups": out })).into_response())
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
    fn topic(&self) -> std::result::Result<&str, ApiError> {
        self.topic.as_deref().filter(|t| !t.is_empty()).ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "`topic` is required").field("topic"))
    }

    fn filter(&self, config: &Config) -> std::result::Result<DlqFilter, ApiError> {
        DlqFilter::named(config, self.group.as_deref(), self.kind.clone(), self.handler.clone(), self.event_type.clone(), self.include_replayed)
            .map_err(|e| ApiError::from(e).field("kind"))
    }
}

async fn dlq_list(State(admin): State<Arc<Admin>>, headers: HeaderMap, query: std::result::Result<Query<DlqQuery>, axum::extract::rejection::QueryRejection>) -> ApiResult {
    admin.authorize(&headers)?;
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let topic = query.topic()?.to_owned();
    let filter = query.filter(&admin.config)?;
    let limit = query.limit.unwrap_or(100).min(10_000);
    let dlq = admin.dead_letters()?;
    let entries = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = entries.clone();
    let count = dlq
        .for_each(&topic, &filter, move |d| {
            let mut entries = sink.lock().unwrap_or_else(|e| e.into_inner());
            if entries.len() < limit {
                entries.push(serde_json::to_value(crate::cli::Listed::from(&d))?);
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

async fn dlq_replay(State(admin): State<Arc<Admin>>, headers: HeaderMap, bytes: Bytes) -> ApiResult {
    admin.authorize(&headers)?;
    let b: ReplayBody = body(&bytes)?;
    let invalid = |field: &str, e: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e).field(field);
    let selection = match (&b.offset, &b.range, b.all) {
        (Some(o), None, false) => {
            let (partition, offset) = crate::cli::parse_entry(o).map_err(|e| invalid("offset", e))?;
            Selection::One { partition, offset }
        }
        (None, Some(r), false) => {
            let (partition, from, to) = crate::cli::parse_range(r).map_err(|e| invalid("range", e))?;
            Selection::Range { partition, from, to }
        }
        (None, None, true) => Selection::All,
        _ => return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "choose exactly one of `offset` (\"P:O\"), `range` (\"P:FROM-TO\") or `all`: true")),
    };
    let query = DlqQuery { topic: Some(b.topic.clone()), group: b.group, kind: b.kind, handler: b.handler, event_type: b.event_type, include_replayed: false, limit: None };
    let filter = query.filter(&admin.config)?;
    let options = ReplayOptions { to: b.to, create_topic: b.create_topic };
    let report = admin.dead_letters()?.replay_with(&b.topic, selection, &filter, &options).await?;
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

async fn publish(State(admin): State<Arc<Admin>>, headers: HeaderMap, bytes: Bytes) -> ApiResult {
    admin.authorize(&headers)?;
    let b: PublishBody = body(&bytes)?;
    let Some(info) = admin.registry.event(&b.event_type) else {
        let mut known: Vec<&str> = admin.registry.events().iter().map(|e| e.event_type).collect();
        known.sort_unstable();
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("unknown event type `{}`; this app knows: {}", b.event_type, known.join(", "))).field("type"));
    };
    let cascade = (info.from_json)(b.data).map_err(|(path, message)| {
        let path = if path.is_empty() { "data".to_owned() } else { format!("data.{path}") };
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("the data is not a valid `{}`: {message}", info.event_type)).field(path)
    })?;
    let options = PublishOptions { correlation_id: b.correlation_id, tenant_id: b.tenant_id, subject: b.subject, key: b.key, ..Default::default() };
    let published = cascade.publish(&admin.publisher()?, options).await?;
    let out: Vec<Value> =
        published.iter().map(|p| json!({ "event_id": p.event_id, "topic": p.topic, "partition": p.partition, "offset": p.offset })).collect();
    Ok((StatusCode::CREATED, Json(json!({ "published": out }))).into_response())
}

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
