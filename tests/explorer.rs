//! The record explorer of the admin API (`GET /explore`, `POST /explore/republish`) and payload
//! masking (`EVENTKIT_ADMIN_PAYLOADS=masked`), with a real HTTP client on both brokers: browsing
//! from an offset, jumping to a time, decoding a known event, showing an unknown one raw (text
//! or base64), refusals naming the field, republishing (refused with the read token; delivered
//! again with the admin token), and a masked service that shows no payload. Then the console's
//! Explorer and Publish pages in Chromium (`tests/ui-browser/explorer.mjs`, as tests/console.rs
//! runs console.mjs).

use std::time::Duration;

use eventkit::{handler, integration_event, Context, Error, PayloadVisibility};
use eventkit_tests::{eventually, on_both_brokers, Log, Target};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[integration_event(topic = "explorer.orders", key = order_id, partitions = 1)]
#[derive(Debug, Clone, PartialEq)]
pub struct ExplorerOrder {
    pub order_id: String,
    pub amount: u32,
    pub note: Option<String>,
}

#[derive(Clone, Default)]
struct Seen(Log<u32>);

#[handler(group = "explorer-workers")]
async fn take(order: ExplorerOrder, seen: &Seen, _ctx: &Context) -> eventkit::Result<()> {
    seen.0.push(order.amount);
    if order.amount == 13 {
        return Err(Error::permanent("unlucky amount"));
    }
    Ok(())
}

const TOKEN: &str = "explorer-admin-token";
const READ_TOKEN: &str = "explorer-read-token";

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("GET");
        let status = response.status();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}")))
    }

    async fn explore(&self, query: &str) -> (StatusCode, Value) {
        self.get(&format!("/explore?{query}"), Some(READ_TOKEN)).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let response = self.http.post(format!("{}{path}", self.base)).bearer_auth(token).json(&body).send().await.expect("POST");
        let status = response.status();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}")))
    }

    /// Publishes an order; its partition and offset.
    async fn publish(&self, id: &str, amount: u32) -> (i64, i64) {
        let (status, body) = self.post("/publish", TOKEN, json!({ "type": "ExplorerOrder", "data": { "order_id": id, "amount": amount, "note": "hello" } })).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (body["published"][0]["partition"].as_i64().unwrap(), body["published"][0]["offset"].as_i64().unwrap())
    }
}

async fn start(target: &Target, seen: &Seen, payloads: PayloadVisibility) -> (eventkit::Running, Api) {
    let running = eventkit_tests::start_ready(
        target
            .app()
            .groups(["explorer-workers"])
            .state(seen.clone())
            .admin_addr("127.0.0.1:0")
            .admin_token(TOKEN)
            .admin_read_token(READ_TOKEN)
            .admin_payloads(payloads)
    )
    .await;
    let api = Api { base: format!("http://{}", running.admin_addr().unwrap()), http: reqwest::Client::new() };
    (running, api)
}

/// The refusal's status and the field it names.
fn refused(answer: &(StatusCode, Value)) -> (StatusCode, &str) {
    (answer.0, answer.1["field"].as_str().unwrap_or_default())
}

async fn browsing_decoding_and_republishing(target: Target) {
    let seen = Seen::default();
    let (running, api) = start(&target, &seen, PayloadVisibility::Visible).await;
    let wire = target.topic("explorer.orders");
    let kind = target.kind;

    // Two orders, a time between them, a third; then two records of a type this service does not know.
    api.publish("o-1", 1).await;
    let (_, second) = api.publish("o-2", 2).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let between = chrono::Utc::now().timestamp_millis();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let (_, third) = api.publish("o-3", 3).await;
    let foreign = [("ce_specversion", "1.0"), ("ce_id", "foreign-1"), ("ce_source", "elsewhere"), ("ce_type", "other.Unknown")];
    let (_, text_at) = target.produce_raw(&wire, "raw-key", &foreign, b"plain text, not an event of ours").await;
    let binary: &[u8] = &[0xff, 0xfe, 0x00, 0x41];
    let headers: Vec<(&str, &[u8])> = foreign.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
    let (_, binary_at) = target.produce_raw_bytes(&wire, "raw-key", &headers, binary).await;
    assert!(eventually(Duration::from_secs(30), || seen.0.len() == 3).await, "[{kind}] handled: {:?}", seen.0.snapshot());

    // From an offset, by the declared name: decoded, with key and CloudEvents headers.
    let (status, page) = api.explore("topic=explorer.orders&partition=0&offset=0").await;
    assert_eq!(status, StatusCode::OK, "[{kind}] {page}");
    assert_eq!((page["topic"].as_str(), page["low"].as_i64(), page["high"].as_i64()), (Some(wire.as_str()), Some(0), Some(binary_at + 1)), "[{kind}] {page}");
    let records = page["records"].as_array().unwrap();
    assert_eq!(records.len(), 5, "[{kind}] {page}");
    let first = &records[0];
    assert_eq!((first["offset"].as_i64(), first["decoded"].as_bool(), first["event_type"].as_str()), (Some(0), Some(true), Some("ExplorerOrder")), "[{kind}] {first}");
    assert_eq!(first["value"], json!({ "order_id": "o-1", "amount": 1, "note": "hello" }), "[{kind}]");
    assert_eq!(first["key"], "o-1");
    assert!(first["headers"].as_array().unwrap().iter().any(|h| h["name"] == "ce_type" && h["value"] == "ExplorerOrder"), "[{kind}] {first}");
    assert!(first["time"].as_str().is_some_and(|t| t.ends_with('Z')) && first["timestamp_ms"].as_i64().is_some(), "[{kind}] {first}");

    // The wire name too; a limit, and where the next page starts.
    let (status, page) = api.explore(&format!("topic={wire}&offset={second}&limit=2")).await;
    assert_eq!(status, StatusCode::OK, "[{kind}] {page}");
    let offsets: Vec<i64> = page["records"].as_array().unwrap().iter().map(|r| r["offset"].as_i64().unwrap()).collect();
    assert_eq!((offsets, page["next"].as_i64()), (vec![second, third], Some(third + 1)), "[{kind}] {page}");

    // Without offset or time: the last records.
    let (_, page) = api.explore("topic=explorer.orders&limit=1").await;
    assert_eq!(page["records"][0]["offset"].as_i64(), Some(binary_at), "[{kind}] {page}");

    // Jump to a time (milliseconds, then RFC 3339): the first record at or after it.
    let (status, page) = api.explore(&format!("topic=explorer.orders&time={between}&limit=1")).await;
    assert_eq!(status, StatusCode::OK, "[{kind}] {page}");
    assert_eq!((page["records"][0]["offset"].as_i64(), page["records"][0]["value"]["amount"].as_u64()), (Some(third), Some(3)), "[{kind}] {page}");
    let rfc3339 = chrono::DateTime::from_timestamp_millis(between).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (_, page) = api.explore(&format!("topic=explorer.orders&time={}&limit=1", rfc3339.replace('+', "%2B"))).await;
    assert_eq!(page["records"][0]["offset"].as_i64(), Some(third), "[{kind}] {rfc3339}: {page}");
    let (_, page) = api.explore(&format!("topic=explorer.orders&time={}", chrono::Utc::now().timestamp_millis() + 3_600_000)).await;
    assert_eq!(page["records"].as_array().map(Vec::len), Some(0), "[{kind}] nothing after a future time: {page}");

    // A type this service does not know: raw, as text or base64.
    let (_, page) = api.explore(&format!("topic=explorer.orders&offset={text_at}")).await;
    let (text, bin) = (&page["records"][0], &page["records"][1]);
    assert_eq!((text["decoded"].as_bool(), text["event_type"].as_str(), text["event_id"].as_str()), (Some(false), Some("other.Unknown"), Some("foreign-1")), "[{kind}] {text}");
    assert_eq!((text["payload"].as_str(), text["payload_encoding"].as_str(), text.get("value")), (Some("plain text, not an event of ours"), Some("text"), None), "[{kind}] {text}");
    assert_eq!((bin["payload_encoding"].as_str(), bin["payload"].as_str()), (Some("base64"), Some("//4AQQ==")), "[{kind}] {bin}");
    assert_eq!(bin["key"], "raw-key");

    // Bad input: refused, naming the field.
    assert_eq!(refused(&api.explore("topic=explorer.orders&partition=1").await), (StatusCode::BAD_REQUEST, "partition"), "[{kind}] a partition beyond the topic's one");
    assert_eq!(refused(&api.explore("topic=explorer.orders&partition=first").await), (StatusCode::BAD_REQUEST, "partition"));
    assert_eq!(refused(&api.explore("topic=explorer.orders&offset=abc").await), (StatusCode::BAD_REQUEST, "offset"));
    assert_eq!(refused(&api.explore("topic=explorer.orders&offset=0&time=0").await), (StatusCode::BAD_REQUEST, "time"));
    assert_eq!(refused(&api.explore("topic=explorer.orders&time=yesterday").await), (StatusCode::BAD_REQUEST, "time"));
    assert_eq!(refused(&api.explore("topic=explorer.orders&limit=0").await), (StatusCode::BAD_REQUEST, "limit"));
    assert_eq!(refused(&api.explore("partition=0").await), (StatusCode::BAD_REQUEST, "topic"));
    assert_eq!(refused(&api.explore("topic=no/such").await), (StatusCode::BAD_REQUEST, "topic"));
    assert_eq!(refused(&api.explore("topic=explorer.nothing-here").await), (StatusCode::NOT_FOUND, "topic"), "[{kind}] an unknown topic");
    assert_eq!(api.get("/explore?topic=explorer.orders", None).await.0, StatusCode::UNAUTHORIZED);

    // Republishing: not with the read token; with the admin token, delivered again, same event id.
    let body = json!({ "topic": "explorer.orders", "partition": 0, "offset": second });
    let (status, _) = api.post("/explore/republish", READ_TOKEN, body.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "[{kind}] the read token does not republish");
    assert_eq!(seen.0.len(), 3);
    let (status, again) = api.post("/explore/republish", TOKEN, body).await;
    assert_eq!(status, StatusCode::CREATED, "[{kind}] {again}");
    let new_offset = again["offset"].as_i64().unwrap();
    assert_eq!((again["partition"].as_i64(), new_offset, again["event_type"].as_str()), (Some(0), binary_at + 1, Some("ExplorerOrder")), "[{kind}] {again}");
    assert!(eventually(Duration::from_secs(30), || seen.0.snapshot().iter().filter(|&&a| a == 2).count() == 2).await, "[{kind}] delivered again: {:?}", seen.0.snapshot());
    let (_, page) = api.explore(&format!("topic=explorer.orders&offset={second}")).await;
    let records = page["records"].as_array().unwrap();
    let (original, copy) = (&records[0], records.iter().find(|r| r["offset"].as_i64() == Some(new_offset)).expect("the copy"));
    assert_eq!((&copy["event_id"], &copy["key"], &copy["value"]), (&original["event_id"], &original["key"], &original["value"]), "[{kind}] the same record");
    let (status, missing) = api.post("/explore/republish", TOKEN, json!({ "topic": "explorer.orders", "partition": 0, "offset": 999 })).await;
    assert_eq!((status, missing["field"].as_str()), (StatusCode::NOT_FOUND, Some("offset")), "[{kind}] {missing}");
    let (status, missing) = api.post("/explore/republish", TOKEN, json!({ "topic": "explorer.orders", "partition": 3, "offset": 0 })).await;
    assert_eq!((status, missing["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("partition")), "[{kind}] {missing}");
    running.shutdown().await.unwrap();
}

on_both_brokers!(browsing_decoding_and_republishing);

async fn masked_payloads(target: Target) {
    let seen = Seen::default();
    let (running, api) = start(&target, &seen, PayloadVisibility::Masked).await;
    let wire = target.topic("explorer.orders");
    let kind = target.kind;
    let (_, first) = api.publish("o-1", 1).await;
    let secrets = [("ce_specversion", "1.0"), ("ce_id", "foreign-2"), ("ce_source", "elsewhere"), ("ce_type", "other.Unknown"), ("Authorization", "Bearer hunter2"), ("x-tenant", "acme")];
    target.produce_raw(&wire, "raw-key", &secrets, b"card 4111 1111 1111 1111").await;
    api.publish("o-13", 13).await;
    assert!(eventually(Duration::from_secs(30), || seen.0.len() == 2).await, "[{kind}] handled: {:?}", seen.0.snapshot());

    let (status, page) = api.explore("topic=explorer.orders&offset=0").await;
    assert_eq!((status, page["masked"].as_bool()), (StatusCode::OK, Some(true)), "[{kind}] {page}");
    let text = page.to_string();
    assert!(!text.contains("hello") && !text.contains("4111") && !text.contains("hunter2"), "[{kind}] no payload, no secret header: {page}");
    let records = page["records"].as_array().unwrap();
    assert_eq!(records.len(), 3, "[{kind}] {page}");
    for r in records {
        assert_eq!(r["masked"], true, "[{kind}] {r}");
        assert!(r.get("value").is_none() && r.get("payload").is_none(), "[{kind}] {r}");
    }
    assert_eq!((records[0]["key"].as_str(), records[0]["event_type"].as_str()), (Some("o-1"), Some("ExplorerOrder")));
    let names: Vec<&str> = records[1]["headers"].as_array().unwrap().iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"ce_type") && !names.contains(&"Authorization") && !names.contains(&"x-tenant"), "[{kind}] only the headers that name and place an event: {names:?}");

    // The dead letters (the order of 13, the record of an unknown type) are listed without their values.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let (_, listed) = api.get("/dlq?topic=explorer.orders", Some(READ_TOKEN)).await;
        if listed["count"].as_u64() == Some(2) || tokio::time::Instant::now() > deadline {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(listed["count"].as_u64(), Some(2), "[{kind}] {listed}");
    let text = listed.to_string();
    assert!(!text.contains("hello") && !text.contains("4111") && !text.contains("hunter2") && !text.contains("acme"), "[{kind}] {listed}");
    for entry in listed["entries"].as_array().unwrap() {
        assert_eq!((entry["masked"].as_bool(), entry.get("value"), entry.get("error")), (Some(true), None, None), "[{kind}] no value, no error text: {entry}");
        assert!(entry["kind"].is_string(), "[{kind}] the kind stays: {entry}");
    }
    // The dead letter topic itself, through the explorer: no error text in its headers.
    let dead_partition = listed["entries"][0]["partition"].as_i64().unwrap();
    let (status, dead) = api.explore(&format!("topic=explorer.orders.dlq&partition={dead_partition}&offset=0")).await;
    assert_eq!(status, StatusCode::OK, "[{kind}] {dead}");
    let text = dead.to_string();
    assert!(!text.contains("4111") && !text.contains("eventkit-dlq-error") && text.contains("eventkit-dlq-kind"), "[{kind}] {dead}");
    assert!(listed["entries"].as_array().unwrap().iter().any(|e| e["event_type"] == "ExplorerOrder" && e["key"]["text"] == "o-13"), "[{kind}] {listed}");

    // Republishing still works.
    let (status, again) = api.post("/explore/republish", TOKEN, json!({ "topic": wire, "partition": 0, "offset": first })).await;
    assert_eq!(status, StatusCode::CREATED, "[{kind}] {again}");
    assert!(eventually(Duration::from_secs(30), || seen.0.snapshot().iter().filter(|&&a| a == 1).count() == 2).await, "[{kind}] {:?}", seen.0.snapshot());

    // The explorer's reach: this service's topics and their dead letter queues; the control
    // and status topics and other services' topics are not its to read or write, and a dead
    // letter queue is not one to republish into.
    for topic in ["eventkit.control", "eventkit.status", &target.topic("eventkit.control"), "someone-else.payments"] {
        let (status, answer) = api.explore(&format!("topic={topic}&offset=0")).await;
        assert_eq!((status, answer["field"].as_str()), (StatusCode::NOT_FOUND, Some("topic")), "[{kind}] {topic}: {answer}");
        let (status, answer) = api.post("/explore/republish", TOKEN, json!({ "topic": topic, "partition": 0, "offset": 0 })).await;
        assert_eq!((status, answer["field"].as_str()), (StatusCode::NOT_FOUND, Some("topic")), "[{kind}] {topic}: {answer}");
    }
    let (status, answer) = api.post("/explore/republish", TOKEN, json!({ "topic": "explorer.orders.dlq", "partition": dead_partition, "offset": 0 })).await;
    assert_eq!((status, answer["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("topic")), "[{kind}] {answer}");
    running.shutdown().await.unwrap();
}

on_both_brokers!(masked_payloads);


async fn the_explorer_in_a_browser(target: Target) {
    let Some(script) = eventkit_tests::browser_script("explorer.mjs") else { return };
    let seen = Seen::default();
    let (running, _api) = start(&target, &seen, PayloadVisibility::Visible).await;
    let stdout = script
        .env("BASE", format!("http://{}", running.admin_addr().unwrap()))
        .env("TOKEN", TOKEN)
        .env("GROUP", target.group("explorer-workers"))
        .env("TOPIC", target.topic("explorer.orders"))
        .env("EVENT_TYPE", "ExplorerOrder")
        .run(&format!("[{}] the explorer in Chromium", target.kind))
        .await;
    // What the browser saw, checked from the inside: 1 and 2 published, 2 republished, 3 from the Publish page.
    let mut handled = seen.0.snapshot();
    handled.sort_unstable();
    assert_eq!(handled, [1, 2, 2, 3], "{stdout}");
    running.shutdown().await.unwrap();
}

on_both_brokers!(the_explorer_in_a_browser);
