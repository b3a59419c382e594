//! The admin HTTP API, with a real HTTP client against a running app: health (live, ready,
//! a stuck partition), metrics, topology, groups, dead letters, publishing with validation,
//! and the bearer token.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventkit::{handler, integration_event, Context, Error};
use eventkit_tests::{eventually, on_both_brokers, within, Log, Target};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Address {
    pub zip: String,
}

#[integration_event(topic = "admin.orders", key = order_id)]
#[derive(Debug, Clone, PartialEq)]
pub struct AdminOrder {
    pub order_id: String,
    pub amount: u32,
    pub address: Address,
}

/// What the handler sees, and the gate a stuck record waits at.
#[derive(Clone, Default)]
struct Gate {
    seen: Log<u32>,
    released: Arc<AtomicBool>,
}

/// Asks until the answer satisfies `ok` (for at most `secs`); returns the last answer and whether it did.
async fn until<T, F: std::future::Future<Output = T>>(secs: u64, mut ask: impl FnMut() -> F, ok: impl Fn(&T) -> bool) -> (T, bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let answer = ask().await;
        if ok(&answer) || tokio::time::Instant::now() > deadline {
            let ok = ok(&answer);
            return (answer, ok);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[handler(group = "admin-billing")]
async fn bill(order: AdminOrder, gate: &Gate, _ctx: &Context) -> eventkit::Result<()> {
    gate.seen.push(order.amount);
    match order.amount {
        13 => Err(Error::permanent("unlucky amount")),
        99 => {
            while !gate.released.load(Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

const TOKEN: &str = "t0ken-for-tests";

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, String) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("GET");
        (response.status(), response.text().await.expect("body"))
    }

    async fn json(&self, path: &str) -> (StatusCode, Value) {
        let (status, body) = self.get(path, Some(TOKEN)).await;
        (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}")))
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &str) -> (StatusCode, Value) {
        let mut request = self.http.post(format!("{}{path}", self.base)).header("content-type", "application/json").body(body.to_owned());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("POST");
        let status = response.status();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}")))
    }

    async fn publish(&self, amount: u32) -> (StatusCode, Value) {
        let body = json!({ "type": "AdminOrder", "data": { "order_id": format!("o-{amount}"), "amount": amount, "address": { "zip": "75001" } } });
        self.post("/publish", Some(TOKEN), &body.to_string()).await
    }

    async fn ready(&self) -> (StatusCode, Value) {
        self.json("/health/ready").await
    }
}

/// The value of the sample of `name` whose labels contain all of `labels`.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn admin_api(target: Target) {
    let gate = Gate::default();
    let running = target
        .app()
        .groups(["admin-billing"])
        .state(gate.clone())
        .admin_addr("127.0.0.1:0")
        .admin_token(TOKEN)
        .stuck_after(Duration::from_secs(2))
        .retries(0)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let addr = running.admin_addr().expect("the admin API runs");
    assert!(addr.ip().is_loopback());
    let api = Api { base: format!("http://{addr}"), http: reqwest::Client::new() };
    let (group, topic) = (target.group("admin-billing"), target.topic("admin.orders"));

    // Health.
    let (status, body) = api.json("/health/live").await;
    assert_eq!((status, &body["status"]), (StatusCode::OK, &json!("up")));
    let (last, ready) = until(60, || api.ready(), |r| r.0 == StatusCode::OK).await;
    assert!(ready, "ready once the group has its assignment: {last:?}");
    let (_, body) = api.ready().await;
    assert_eq!(body["status"], "up");
    assert_eq!(body["groups"][0]["group"], json!(group));

    // The token: missing, wrong.
    let good = json!({ "type": "AdminOrder", "data": { "order_id": "o-1", "amount": 1, "address": { "zip": "1" } } }).to_string();
    let (status, body) = api.post("/publish", None, &good).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = api.post("/publish", Some("wrong"), &good).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = api.get("/dlq?topic=admin.orders", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "dead letters show event data: token needed");

    // Validation: each bad body names its field; nothing is published.
    let cases = [
        (json!({ "type": "AdminOrder", "data": { "order_id": "o", "amount": "x", "address": { "zip": "1" } } }), "data.amount", "invalid type"),
        (json!({ "type": "AdminOrder", "data": { "order_id": "o", "amount": 1, "address": {} } }), "data.address.zip", "missing field `zip`"),
        (json!({ "type": "AdminOrder", "data": { "amount": 1, "address": { "zip": "1" } } }), "data.order_id", "missing field `order_id`"),
        (json!({ "type": "NoSuchEvent", "data": {} }), "type", "unknown event type `NoSuchEvent`"),
        (json!({ "type": "AdminOrder" }), "data", "missing field `data`"),
        (json!({ "type": "AdminOrder", "data": {}, "colour": "red" }), "colour", "unknown field `colour`"),
    ];
    for (body, field, says) in cases {
        let (status, answer) = api.post("/publish", Some(TOKEN), &body.to_string()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body} -> {answer}");
        assert!(answer["error"].as_str().unwrap().contains(says), "{body} -> {answer}");
        if !field.is_empty() {
            assert_eq!(answer["field"], json!(field), "{body} -> {answer}");
        }
    }
    let (status, answer) = api.post("/publish", Some(TOKEN), "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");

    // Publishing: handled; a permanent failure is dead-lettered and listed.
    let (status, answer) = api.publish(5).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["published"][0]["topic"], json!(topic));
    let (status, answer) = api.publish(13).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let ((_, dlq), listed) = until(30, || api.json("/dlq?topic=admin.orders"), |(_, d)| d["count"] == json!(1)).await;
    assert!(listed, "the dead letter is listed: {dlq}");
    assert_eq!(dlq["entries"][0]["kind"], "permanent");
    assert_eq!(dlq["entries"][0]["handler"], "admin::bill");
    assert!(dlq["entries"][0]["error"].as_str().unwrap().contains("unlucky amount"), "{dlq}");
    let (status, answer) = api.json("/dlq?topic=admin.orders&kind=nonsense").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, answer) = api.json("/dlq").await;
    assert_eq!((status, &answer["field"]), (StatusCode::BAD_REQUEST, &json!("topic")), "{answer}");
    assert!(gate.seen.snapshot().contains(&5));

    // Metrics: counts per group, handler and topic; durations; publishes.
    let dead = [format!("group=\"{group}\""), format!("topic=\"{topic}\"")];
    let ((_, metrics), counted) =
        until(10, || api.get("/metrics", None), |(_, m)| sample(m, "eventkit_records_dead_lettered_total", &[&dead[0], &dead[1]]) == Some(1.0)).await;
    assert!(counted, "one dead letter counted:\n{metrics}");
    let labels = [format!("group=\"{group}\""), "handler=\"admin::bill\"".to_owned(), format!("topic=\"{topic}\"")];
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    assert_eq!(sample(&metrics, "eventkit_records_handled_total", &labels), Some(1.0), "{metrics}");
    assert_eq!(sample(&metrics, "eventkit_records_failed_total", &labels), Some(1.0), "{metrics}");
    assert_eq!(sample(&metrics, "eventkit_handler_duration_seconds_count", &labels), Some(2.0), "{metrics}");
    assert!(sample(&metrics, "eventkit_handler_duration_seconds_bucket", &labels).is_some(), "a histogram with buckets:\n{metrics}");
    assert!(sample(&metrics, "eventkit_published_total", &[&format!("topic=\"{topic}\"")]).is_some_and(|n| n >= 2.0), "{metrics}");
    assert!(metrics.contains("# TYPE eventkit_records_handled_total counter"), "{metrics}");

    // Replay through the API: the handler sees the record again (and fails it again).
    let (status, answer) = api.post("/dlq/replay", Some(TOKEN), &json!({ "topic": "admin.orders", "all": true }).to_string()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["replayed"], 1, "{answer}");
    assert!(eventually(Duration::from_secs(30), || gate.seen.snapshot().iter().filter(|&&a| a == 13).count() == 2).await, "replayed: {:?}", gate.seen.snapshot());
    let (status, answer) = api.post("/dlq/replay", Some(TOKEN), &json!({ "topic": "admin.orders" }).to_string()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "a replay says what to replay: {answer}");

    let (status, doc) = api.json("/asyncapi.json").await;
    assert_eq!((status, &doc["asyncapi"]), (StatusCode::OK, &json!("3.0.0")));
    assert_eq!(doc["channels"][&topic]["address"], json!(topic), "{doc}");

    // Topology and groups.
    let (status, topology) = api.json("/topology").await;
    assert_eq!(status, StatusCode::OK);
    assert!(topology.to_string().contains(&topic), "{topology}");
    // The status is refreshed by the fetch loop (about once a second), and a loaded machine
    // may see the group rebalance: the partitions are looked at until they show.
    let has_partitions = |(_, g): &(StatusCode, Value)| g["groups"][0]["partitions"].as_array().is_some_and(|p| !p.is_empty());
    let ((status, groups), _) = until(30, || api.json("/groups"), has_partitions).await;
    assert_eq!(status, StatusCode::OK, "{groups}");
    let g = &groups["groups"][0];
    assert_eq!(g["group"], json!(group), "{groups}");
    assert_eq!(g["joined"], true, "{groups}");
    assert!(!g["partitions"].as_array().unwrap().is_empty(), "this member's partitions: {groups}");
    if let Some(members) = g["members"].as_array() {
        if let Some(m) = members.first() {
            assert!(m["assignment"].get(&topic).is_some(), "the member's assignment names the topic: {groups}");
        }
    }

    // A stuck record makes the app not ready, naming the partition; released, it is ready again.
    let (status, _) = api.publish(99).await;
    assert_eq!(status, StatusCode::CREATED);
    let ((_, body), stuck) = until(30, || api.ready(), |r| r.0 == StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(stuck, "a record stuck past the threshold makes the app not ready: {body}");
    assert_eq!(body["status"], "down");
    let reason = body["reasons"][0].as_str().unwrap();
    assert!(reason.contains("stuck on offset") && reason.contains(&topic), "{reason}");
    let group_label = format!("group=\"{group}\"");
    let ((_, metrics), in_flight) = until(10, || api.get("/metrics", None), |(_, m)| sample(m, "eventkit_records_in_flight", &[&group_label]) == Some(1.0)).await;
    assert!(in_flight, "the stuck record is in flight:\n{metrics}");
    assert_eq!(sample(&metrics, "eventkit_partitions_assigned", &[&group_label]), Some(3.0), "{metrics}");
    assert_eq!(sample(&metrics, "eventkit_partitions_paused", &[&group_label]), Some(0.0), "{metrics}");
    gate.released.store(true, Ordering::Release);
    let (last, ready) = until(30, || api.ready(), |r| r.0 == StatusCode::OK).await;
    assert!(ready, "ready again once released: {last:?}");

    // Committed offsets and lag come from librdkafka's statistics (every few seconds).
    let has_lag = |g: &Value| {
        g["groups"][0]["partitions"].as_array().is_some_and(|ps| {
            ps.iter().any(|p| p["committed"].is_i64()) && ps.iter().all(|p| p["lag"].is_null() || p["lag"] == json!(0))
        })
    };
    let ((_, groups), lag) = until(30, || api.json("/groups"), |(_, g)| has_lag(g)).await;
    assert!(lag, "committed offsets and zero lag once all is handled: {groups}");
    let (_, metrics) = api.get("/metrics", None).await;
    let lags: Vec<&str> = metrics.lines().filter(|l| l.starts_with("eventkit_consumer_lag{") && l.contains(&dead[0])).collect();
    assert!(!lags.is_empty() && lags.iter().all(|l| l.ends_with(" 0")), "lag per partition, 0 once all is handled: {lags:?}");

    // Errors are JSON with the right status.
    let (status, body) = api.get("/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());
    let (status, answer) = api.post("/metrics", None, "{}").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{answer}");

    within(60, "shutdown", running.shutdown()).await.unwrap();
    assert!(reqwest::get(format!("http://{addr}/health/live")).await.is_err(), "the API stops with the app");
}

on_both_brokers!(admin_api);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_protected_endpoints_are_disabled_and_without_an_address_there_is_no_api() {
    let target = Target::embedded("admin-no-token");
    let gate = Gate::default();
    let running = target.app().groups(["admin-billing"]).state(gate.clone()).admin_addr("0").build().unwrap().start().await.unwrap();
    let addr = running.admin_addr().unwrap();
    assert!(addr.ip().is_loopback(), "a port alone binds the loopback address: {addr}");
    let api = Api { base: format!("http://{addr}"), http: reqwest::Client::new() };
    let good = json!({ "type": "AdminOrder", "data": { "order_id": "o-1", "amount": 1, "address": { "zip": "1" } } }).to_string();
    for token in [None, Some(TOKEN), Some("")] {
        let (status, body) = api.post("/publish", token, &good).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(body["error"].as_str().unwrap().contains("EVENTKIT_ADMIN_TOKEN"), "{body}");
    }
    let (status, _) = api.get("/dlq?topic=admin.orders", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = api.get("/health/live", None).await;
    assert_eq!(status, StatusCode::OK, "the read-only endpoints stay open");
    running.shutdown().await.unwrap();
    assert!(gate.seen.is_empty());

    let running = target.app().groups(["admin-billing"]).state(Gate::default()).build().unwrap().start().await.unwrap();
    assert_eq!(running.admin_addr(), None, "no address, no API");
    running.shutdown().await.unwrap();
}

/// The token rules, over every endpoint the API lists (so a new endpoint is covered as it is
/// added): each action refuses no token and a wrong one (401) and the read token (403), and
/// changes nothing; each read endpoint refuses no token (401) and answers the read token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_needs_the_admin_token_and_a_read_token_cannot_act() {
    const READ: &str = "read-t0ken-for-tests";
    let target = Target::embedded("admin-token-rules");
    let gate = Gate::default();
    let running = eventkit_tests::start_ready(
        target
            .app()
            .groups(["admin-billing"])
            .state(gate.clone())
            .admin_addr("127.0.0.1:0")
            .admin_token(TOKEN)
            .admin_read_token(READ)
    )
    .await;
    let api = Api { base: format!("http://{}", running.admin_addr().unwrap()), http: reqwest::Client::new() };
    let group = target.group("admin-billing");
    let topic = target.topic("admin.orders");
    // Bodies that would act if the token were right.
    let body = |endpoint: &str| -> String {
        match endpoint {
            "publish" => json!({ "type": "AdminOrder", "data": { "order_id": "o-1", "amount": 1, "address": { "zip": "1" } } }),
            "dlq/replay" => json!({ "topic": "admin.orders", "all": true }),
            "groups/pause" | "groups/resume" => json!({ "group": "admin-billing" }),
            "groups/reset" => json!({ "group": "admin-billing", "to": "earliest" }),
            "groups/replay" => json!({ "group": "admin-billing", "topic": "admin.orders", "from": "2026-01-01T00:00:00Z" }),
            "explore/republish" => json!({ "topic": topic, "partition": 0, "offset": 0 }),
            _ => json!({}),
        }
        .to_string()
    };
    assert!(eventkit::AdminSettings::BODY_ENDPOINTS.len() >= 7, "{:?}", eventkit::AdminSettings::BODY_ENDPOINTS);
    for endpoint in eventkit::AdminSettings::BODY_ENDPOINTS {
        let path = format!("/{endpoint}");
        for (token, want) in [(None, StatusCode::UNAUTHORIZED), (Some("wrong"), StatusCode::UNAUTHORIZED), (Some(READ), StatusCode::FORBIDDEN)] {
            let (status, answer) = api.post(&path, token, &body(endpoint)).await;
            assert_eq!(status, want, "POST {path} with {token:?}: {answer}");
            assert!(answer["error"].is_string(), "POST {path}: a JSON error: {answer}");
        }
    }
    for endpoint in eventkit::AdminSettings::READ_ENDPOINTS.iter().filter(|e| **e != "metrics") {
        let path = match *endpoint {
            "dlq" => "/dlq?topic=admin.orders".to_owned(),
            "explore" => "/explore?topic=admin.orders&partition=0".to_owned(),
            other => format!("/{other}"),
        };
        let (status, answer) = api.get(&path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "GET {path} without a token: {answer}");
        let (status, answer) = api.get(&path, Some(READ)).await;
        assert!(status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN, "GET {path} with the read token: {status} {answer}");
    }
    // Nothing acted: nothing published or handled, nothing paused.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(gate.seen.is_empty(), "{:?}", gate.seen.snapshot());
    assert!(running.control().holds(&group).is_empty());
    let (status, answer) = api.post("/groups/pause", Some(TOKEN), &body("groups/pause")).await;
    assert_eq!(status, StatusCode::OK, "the admin token acts: {answer}");
    assert!(!running.control().holds(&group).is_empty());
    running.shutdown().await.unwrap();
}
