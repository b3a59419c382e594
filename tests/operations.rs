//! Operations under attack and in Kubernetes, as a hostile client and an operator would see a
//! live service: idle and half-sent connections against the admin API's probes (also with the
//! process out of file descriptors), header and idle timeouts, bodies sent before a token and
//! over their limit, the probes on a listener of their own, read and admin tokens, the audit
//! log, readiness of a group whose loop a blocking handler froze, trace context from producers
//! that do not follow W3C, metric labels read back by the reference parser, readiness that can
//! leave Kafka out, a shutdown that keeps to its budget, and the Kubernetes manifest validated
//! against Kubernetes' own schemas. Every hostile client is bounded in count and time, on
//! 127.0.0.1 only.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventkit::{handler, integration_event, AdminSettings, Context, Error};
use eventkit_tests::process::{self, out_file, sigterm, start, wait_exit};
use eventkit_tests::{on_both_brokers, test_python, within, Log, Target};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "ops-admin-t0ken";
const READ_TOKEN: &str = "ops-read-t0ken";

#[integration_event(topic = "ops.orders", key = id)]
#[derive(Debug, Clone)]
pub struct OpsOrder {
    pub id: String,
    pub n: u32,
}

#[integration_event(topic = "ops.labels", key = id)]
#[derive(Debug, Clone)]
pub struct OpsLabel {
    pub id: String,
}

#[integration_event(topic = "ops.traced", key = id)]
#[derive(Debug, Clone)]
pub struct OpsTraced {
    pub id: String,
}

#[integration_event(topic = "ops.follow", key = id)]
#[derive(Debug, Clone)]
pub struct OpsFollow {
    pub id: String,
}

/// Lets a blocked handler go.
#[derive(Clone, Default)]
struct Gate(Arc<AtomicBool>);

/// Blocks its thread (not awaiting) on order 1 until the gate opens: the group's fetch loop
/// freezes with it.
#[handler(group = "ops-block")]
async fn block(order: OpsOrder, gate: &Gate, seen: &Log<u32>) -> eventkit::Result<()> {
    seen.push(order.n);
    if order.n == 1 {
        while !gate.0.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

#[handler(group = "ops-labels", name = "dup\\\"x")]
async fn label_escaped(_e: OpsLabel) -> eventkit::Result<()> {
    Ok(())
}

#[handler(group = "ops-labels", name = "dup\"x")]
async fn label_quoted(_e: OpsLabel) -> eventkit::Result<()> {
    Err(Error::permanent("this one dead-letters"))
}

#[handler(group = "ops-trace")]
async fn follow(e: OpsTraced, ctx: &Context) -> eventkit::Result<()> {
    ctx.cascade(OpsFollow { id: e.id });
    Ok(())
}

/// Admin settings for a test: the API and its limits.
fn settings(f: impl FnOnce(&mut AdminSettings)) -> AdminSettings {
    let mut s = AdminSettings::default();
    s.addr = Some("127.0.0.1:0".into());
    s.token = Some(TOKEN.into());
    f(&mut s);
    s
}

/// A plain HTTP client that opens a new connection per request.
fn http() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(10)).build().unwrap()
}

/// Reads what the server answers on `stream` until it closes the connection or a whole
/// response arrived (by its `content-length`); `None` when nothing came within `within`.
async fn response(stream: &mut TcpStream, within: Duration) -> Option<(u16, String, String)> {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut chunk = [0u8; 8192];
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) => n,
            _ => return None,
        };
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            let length = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)));
            if n == 0 || length.is_some_and(|len| body.len() >= len) {
                return Some((status, head.to_owned(), body.to_owned()));
            }
        } else if n == 0 {
            return None;
        }
    }
}

/// Whether the server closed `stream` (it reads end of file) within `within`.
async fn closed(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(tokio::time::timeout(within, stream.read(&mut byte)).await, Ok(Ok(0)) | Ok(Err(_)))
}

/// Probes `/health/live` on new connections `n` times; every answer must be 200.
async fn probes_answer(addr: SocketAddr, n: usize) {
    let http = http();
    for i in 0..n {
        let answer = http.get(format!("http://{addr}/health/live")).send().await;
        let status = answer.as_ref().map(|r| r.status());
        assert_eq!(status.ok(), Some(StatusCode::OK), "probe {i} answered: {answer:?}");
    }
}

/// Holds connections open as a slowloris would (half of them silent, half in the middle of a
/// request head), and probes still answer at once: at its limit, the listener closes the
/// oldest connection with no request in progress.
async fn hostile_connections_never_starve_the_probes(target: Target) {
    let running = target
        .app()
        .groups([])
        .admin_settings(settings(|s| {
            s.max_connections = 16;
            s.header_timeout = Duration::from_secs(120);
            s.idle_timeout = Duration::from_secs(120);
        }))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let addr = running.admin_addr().unwrap();
    let mut held = Vec::new();
    for i in 0..40 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        if i % 2 == 1 {
            stream.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
        }
        held.push(stream);
    }
    probes_answer(addr, 5).await;
    let mut oldest_closed = 0;
    for stream in held.iter_mut().take(8) {
        if closed(stream, Duration::from_secs(5)).await {
            oldest_closed += 1;
        }
    }
    assert_eq!(oldest_closed, 8, "the oldest held connections were closed to make room");
    running.shutdown().await.unwrap();
}
on_both_brokers!(hostile_connections_never_starve_the_probes);

/// A request head that stops arriving is cut at the header timeout; a connection that sends
/// nothing, or nothing more after its response, at the idle timeout.
async fn header_and_idle_timeouts_close_connections(target: Target) {
    let running = target
        .app()
        .groups([])
        .admin_settings(settings(|s| {
            s.header_timeout = Duration::from_millis(400);
            s.idle_timeout = Duration::from_millis(700);
        }))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let addr = running.admin_addr().unwrap();
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let answered = response(&mut kept, Duration::from_secs(10)).await;
    assert_eq!(answered.map(|r| r.0), Some(200), "a whole request is answered");
    for (what, stream) in [("a half-sent head", &mut half), ("a silent connection", &mut silent), ("an idle keep-alive connection", &mut kept)] {
        assert!(closed(stream, Duration::from_secs(20)).await, "{what} is closed");
    }
    probes_answer(addr, 1).await;
    running.shutdown().await.unwrap();
}
on_both_brokers!(header_and_idle_timeouts_close_connections);

/// Sends a request head (and `body`) and reads the answer.
async fn send(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let (status, head, body) = response(&mut stream, Duration::from_secs(10)).await.unwrap_or_else(|| panic!("an answer to {head:?}"));
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "errors are JSON: {head}");
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}")))
}

/// The token is checked on the headers, before any byte of a body is read; bodies over the
/// endpoint's limit, too slow, or not JSON are refused with the API's JSON error; the bearer
/// scheme is case-insensitive.
async fn bodies_are_checked_before_they_are_read(target: Target) {
    let running = target
        .app()
        .groups([])
        .admin_settings(settings(|s| {
            s.body_limits.insert("publish".into(), 64 << 10);
            s.body_timeout = Duration::from_millis(500);
        }))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let addr = running.admin_addr().unwrap();
    let head = |token: Option<&str>, extra: &str| {
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        format!("POST /publish HTTP/1.1\r\nHost: x\r\n{auth}{extra}\r\n")
    };

    // 30 unauthenticated clients, each declaring 2 MB and sending 1 byte: each is refused at
    // once, without the server waiting for (or buffering) the rest.
    let mut refused = Vec::new();
    for _ in 0..30 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(head(None, "Content-Type: application/json\r\nContent-Length: 2000000\r\n").as_bytes()).await.unwrap();
        stream.write_all(b"{").await.unwrap();
        refused.push(stream);
    }
    for stream in &mut refused {
        let answer = response(stream, Duration::from_secs(10)).await;
        assert_eq!(answer.as_ref().map(|r| r.0), Some(401), "refused before the body: {answer:?}");
    }
    let (status, body) = send(addr, &head(Some("wrong"), "Content-Length: 2\r\n"), b"{}").await;
    assert_eq!((status, body["error"].as_str()), (401, Some("wrong bearer token")));

    // Authenticated: a declared length over the limit is refused before the body is sent; a
    // chunked body is cut as soon as it passes the limit; a stalled body times out.
    let (status, body) = send(addr, &head(Some(TOKEN), "Content-Type: application/json\r\nContent-Length: 2000000\r\n"), b"").await;
    assert_eq!(status, 413, "{body}");
    assert!(body["error"].as_str().unwrap().contains("65536 bytes"), "{body}");
    let mut chunked = Vec::new();
    for _ in 0..80 {
        chunked.extend_from_slice(format!("{:x}\r\n{}\r\n", 1024, "a".repeat(1024)).as_bytes());
    }
    let (status, _) = send(addr, &head(Some(TOKEN), "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"), &chunked).await;
    assert_eq!(status, 413);
    let (status, body) = send(addr, &head(Some(TOKEN), "Content-Type: application/json\r\nContent-Length: 100\r\n"), b"{\"type\":").await;
    assert_eq!(status, 408, "{body}");

    // Not JSON by its content type: 415. The scheme in lower case is a bearer token all the same.
    for kind in ["text/plain", "application/x-www-form-urlencoded"] {
        let (status, body) = send(addr, &head(Some(TOKEN), &format!("Content-Type: {kind}\r\nContent-Length: 2\r\n")), b"{}").await;
        assert_eq!(status, 415, "{kind}: {body}");
    }
    let event = json!({ "type": "OpsOrder", "data": { "id": "o-1", "n": 7 } }).to_string();
    let lower = format!("POST /publish HTTP/1.1\r\nHost: x\r\nAuthorization: bearer {TOKEN}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n", event.len());
    let (status, body) = send(addr, &lower, event.as_bytes()).await;
    assert_eq!(status, 201, "{body}");
    probes_answer(addr, 1).await;
    running.shutdown().await.unwrap();
}
on_both_brokers!(bodies_are_checked_before_they_are_read);

/// Probes on a listener of their own; the rest behind read and admin tokens, with `metrics`
/// open; a name that is not a topic is a 400 naming the field.
async fn probes_apart_read_token_and_topic_names(target: Target) {
    let running = target
        .app()
        .groups([])
        .admin_settings(settings(|s| {
            s.health_addr = Some("127.0.0.1:0".into());
            s.read_token = Some(READ_TOKEN.into());
        }))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let (api, probes) = (running.admin_addr().unwrap(), running.health_addr().unwrap());
    assert_ne!(api, probes);
    let http = http();
    let get = |addr: SocketAddr, path: &str, token: Option<&str>| {
        let mut request = http.get(format!("http://{addr}{path}"));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(get(probes, "/health/live", None).await, StatusCode::OK);
    // Ready once nothing says otherwise: readiness also follows the cluster, which other tests of
    // this process share, so it is waited for (the reasons are shown if it never comes).
    let mut last = String::new();
    let mut ready = false;
    for _ in 0..200 {
        let answer = http.get(format!("http://{probes}/health/ready")).send().await.unwrap();
        ready = answer.status() == StatusCode::OK;
        last = answer.text().await.unwrap();
        if ready {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ready, "the probes' listener answers readiness: {last}");
    assert_eq!(get(probes, "/metrics", None).await, StatusCode::NOT_FOUND, "the probes' listener serves the probes only");
    assert_eq!(get(api, "/health/live", None).await, StatusCode::NOT_FOUND, "the probes are not on the API's listener");
    assert_eq!(get(api, "/metrics", None).await, StatusCode::OK, "metrics are open by default");
    assert_eq!(get(api, "/topology", None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(get(api, "/topology", Some(READ_TOKEN)).await, StatusCode::OK);
    assert_eq!(get(api, "/groups", Some(TOKEN)).await, StatusCode::OK, "the admin token reads too");
    assert_eq!(get(api, "/asyncapi.json", Some("nope")).await, StatusCode::UNAUTHORIZED);
    let publish = http.post(format!("http://{api}/publish")).bearer_auth(READ_TOKEN).json(&json!({})).send().await.unwrap();
    assert_eq!(publish.status(), StatusCode::FORBIDDEN, "the read token does not allow actions");

    // 246 characters are a topic name, but not with `.dlq` and the test's prefix after them.
    for bad in ["a%20b", "..%2F..%2Fetc", "a%00b", ".", "x".repeat(250).as_str(), "x".repeat(246).as_str()] {
        let response = http.get(format!("http://{api}/dlq?topic={bad}")).bearer_auth(READ_TOKEN).send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("topic")), "{bad}: {body}");
    }
    running.shutdown().await.unwrap();
}
on_both_brokers!(probes_apart_read_token_and_topic_names);

/// A handler that blocks its thread freezes its group's fetch loop: the status it last wrote
/// still looks fine, so readiness goes by its age. Not ready while frozen (the metric shows
/// the loop's silence), ready again once the handler returns.
async fn a_frozen_group_is_not_ready(target: Target) {
    let (gate, seen) = (Gate::default(), Log::<u32>::default());
    let running = target
        .app()
        .groups(["ops-block"])
        .state(gate.clone())
        .state(seen.clone())
        .admin_settings(settings(|_| {}))
        .stuck_after(Duration::from_secs(2))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let addr = running.admin_addr().unwrap();
    let http = http();
    let ready = || async { http.get(format!("http://{addr}/health/ready")).send().await.unwrap() };
    within(60, "ready", async {
        while ready().await.status() != StatusCode::OK {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    running.publisher().publish(&OpsOrder { id: "o".into(), n: 1 }).await.unwrap();
    let body: Value = within(60, "not ready while the loop is frozen", async {
        loop {
            let r = ready().await;
            if r.status() == StatusCode::SERVICE_UNAVAILABLE {
                break r.json().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let reasons = body["reasons"].to_string();
    assert!(reasons.contains("its fetch loop has not run") && reasons.contains(&target.group("ops-block")), "{body}");
    let metrics = http.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    let silent = metrics
        .lines()
        .find(|l| l.starts_with("eventkit_consumer_loop_silent_seconds{") && l.contains(&target.group("ops-block")))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(silent.is_some_and(|s| s >= 2.0), "the loop's silence is a metric: {silent:?}");
    assert!(metrics.contains("eventkit_ready 0"), "and so is readiness");
    gate.0.store(true, Ordering::Release);
    running.publisher().publish(&OpsOrder { id: "o".into(), n: 2 }).await.unwrap();
    within(60, "ready again", async {
        while ready().await.status() != StatusCode::OK {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    within(30, "the next record handled", async {
        while !seen.snapshot().contains(&2) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    running.shutdown().await.unwrap();
}

mod a_frozen_group_is_not_ready {
    // The blocked handler holds one worker thread: the others serve the API.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn embedded() {
        super::a_frozen_group_is_not_ready(eventkit_tests::Target::embedded("frozen")).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn real() {
        if let Some(target) = eventkit_tests::Target::real("frozen") {
            super::a_frozen_group_is_not_ready(target).await
        }
    }
}

/// Records from producers that do not follow W3C Trace Context: the follow-up a handler
/// publishes carries a context only when the record's was valid, and never more than 32
/// `tracestate` members or 512 bytes of it.
async fn trace_context_is_validated_before_it_is_passed_on(target: Target) {
    target.create_topic("ops.traced", 1).await;
    let running = target.app().groups(["ops-trace"]).build().unwrap().start().await.unwrap();
    let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let huge = format!("big={}", "x".repeat(999_890));
    let many: Vec<String> = (0..40).map(|i| format!("k{i}=v")).collect();
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("huge-state", vec![("traceparent", good.into()), ("tracestate", huge)]),
        ("bad-state", vec![("traceparent", good.into()), ("tracestate", "Congo=1,rojo".into())]),
        ("many-state", vec![("traceparent", good.into()), ("tracestate", many.join(","))]),
        ("upper-parent", vec![("traceparent", good.to_ascii_uppercase()), ("tracestate", "rojo=1".into())]),
        ("good", vec![("traceparent", good.into()), ("tracestate", "rojo=00f067aa0ba902b7".into())]),
    ];
    for (id, trace) in &cases {
        let data = serde_json::to_vec(&OpsTraced { id: (*id).into() }).unwrap();
        let mut headers: Vec<(&str, &str)> = vec![("ce_specversion", "1.0"), ("ce_id", id), ("ce_source", "hostile"), ("ce_type", "OpsTraced"), ("content-type", "application/json")];
        headers.extend(trace.iter().map(|(k, v)| (*k, v.as_str())));
        target.produce_raw(&target.topic("ops.traced"), id, &headers, &data).await;
    }
    let follow = target.read_records(&target.topic("ops.follow"), cases.len());
    let header = |r: &eventkit_tests::RawRecord, name: &str| r.headers.iter().find(|(k, _)| k == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned());
    for record in &follow {
        let id: Value = serde_json::from_slice(&record.value).unwrap();
        let id = id["id"].as_str().unwrap().to_owned();
        let (parent, state) = (header(record, "traceparent"), header(record, "tracestate"));
        assert!(state.as_ref().is_none_or(|s| s.len() <= 512 && s.split(',').count() <= 32), "{id}: {state:?}");
        match id.as_str() {
            "huge-state" | "bad-state" => assert_eq!((parent.as_deref(), state.as_deref()), (Some(good), None), "{id}"),
            "many-state" => assert_eq!(state.map(|s| s.split(',').count()), Some(32), "{id}"),
            "upper-parent" => assert_eq!((parent, state), (None, None), "an invalid traceparent starts a new trace: {id}"),
            "good" => assert_eq!((parent.as_deref(), state.as_deref()), (Some(good), Some("rojo=00f067aa0ba902b7"))),
            other => panic!("unexpected follow-up {other}"),
        }
    }
    running.shutdown().await.unwrap();
}
on_both_brokers!(trace_context_is_validated_before_it_is_passed_on);

/// Two handlers whose names differ only by a backslash before a quote, one handling and one
/// dead-lettering a record: the reference parser of the Prometheus text format reads two
/// series for each counter, with the right counts.
async fn metric_labels_are_escaped_as_the_format_says(target: Target) {
    let Some(python) = test_python("metric labels") else { return };
    let running = target.app().groups(["ops-labels"]).admin_settings(settings(|_| {})).build().unwrap().start().await.unwrap();
    let addr = running.admin_addr().unwrap();
    running.publisher().publish(&OpsLabel { id: "l-1".into() }).await.unwrap();
    let http = http();
    let parse = |text: String| {
        let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;
        let mut child = std::process::Command::new(&python).arg("-c").arg(script).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "the parser reads the whole exposition: {}\n{text}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Vec<(String, std::collections::BTreeMap<String, String>, f64)>>(&out.stdout).unwrap()
    };
    let group = target.group("ops-labels");
    let value = |samples: &[(String, std::collections::BTreeMap<String, String>, f64)], name: &str, handler: &str| {
        let found: Vec<f64> = samples.iter().filter(|(n, l, _)| n == name && l.get("group") == Some(&group) && l.get("handler").map(String::as_str) == Some(handler)).map(|s| s.2).collect();
        assert!(found.len() <= 1, "one series per label set: {name} {handler:?} {found:?}");
        found.first().copied()
    };
    let wanted = |samples: &[(String, std::collections::BTreeMap<String, String>, f64)]| {
        value(samples, "eventkit_records_handled_total", "dup\\\"x") == Some(1.0)
            && value(samples, "eventkit_records_dead_lettered_total", "dup\"x") == Some(1.0)
    };
    let samples = within(60, "the counts", async {
        loop {
            let samples = parse(http.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap());
            if wanted(&samples) {
                break samples;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert_eq!(value(&samples, "eventkit_records_handled_total", "dup\"x"), Some(0.0), "the dead-lettering handler handled none");
    assert_eq!(value(&samples, "eventkit_records_dead_lettered_total", "dup\\\"x"), Some(0.0), "the handling one dead-lettered none");
    running.shutdown().await.unwrap();
}
on_both_brokers!(metric_labels_are_escaped_as_the_format_says);

/// A worker process with the admin API on `port`, logging to `log`.
fn worker(target: &Target, out: &Path, log: &Path, port: u16) -> std::process::Command {
    let mut command = process::worker(env!("CARGO_BIN_EXE_eventkit-test-worker"), target, out, 0);
    command
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info,librdkafka=warn")
        .env("EVENTKIT_ADMIN_ADDR", port.to_string())
        .env("EVENTKIT_ADMIN_TOKEN", TOKEN)
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
        .stdout(Stdio::null());
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn wait_ready(port: u16, log: &Path) {
    let http = http();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("http://127.0.0.1:{port}/health/ready")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the worker becomes ready:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every action and every refused token leaves an audit line: the action, its target, the
/// outcome and the client, never a token.
async fn actions_and_refusals_are_audited(target: Target) {
    target.create_topic("process.ticks", 1).await;
    let port = free_port();
    let (out, log) = (out_file(&target, "audit"), out_file(&target, "audit-log"));
    let mut child = start(worker(&target, &out, &log, port));
    wait_ready(port, &log).await;
    let http = http();
    let publish = |token: &'static str, body: Value| http.post(format!("http://127.0.0.1:{port}/publish")).bearer_auth(token).json(&body).send();
    let tick = json!({ "type": "Tick", "data": { "key": "k", "seq": 1 } });
    assert_eq!(publish("not-the-token", tick.clone()).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(publish(TOKEN, tick).await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(publish(TOKEN, json!({ "type": "Tick", "data": { "key": 5 } })).await.unwrap().status(), StatusCode::UNPROCESSABLE_ENTITY);
    let replay = http.post(format!("http://127.0.0.1:{port}/dlq/replay")).bearer_auth(TOKEN).json(&json!({ "topic": "process.ticks", "all": true })).send().await.unwrap();
    let replay_status = replay.status().as_u16();
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(60)).success());
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = (std::fs::remove_file(&out), std::fs::remove_file(&log));
    let audit: Vec<&str> = text.lines().filter(|l| l.contains("eventkit::audit")).collect();
    assert!(!text.contains(TOKEN) && !text.contains("not-the-token"), "no token in the log:\n{text}");
    let has = |words: &[&str]| audit.iter().any(|l| words.iter().all(|w| l.contains(w)));
    assert!(has(&["admin request refused", "action=\"publish\"", "status=401", "client=127.0.0.1"]), "the refusal:\n{}", audit.join("\n"));
    assert!(has(&["admin action", "action=\"publish\"", "resource=type=\"Tick\"", "status=201", "principal=\"admin-token\"", "client=127.0.0.1"]), "the publish:\n{}", audit.join("\n"));
    assert!(has(&["admin action", "action=\"publish\"", "status=422"]), "a refused body is an outcome too:\n{}", audit.join("\n"));
    assert!(has(&["admin action", "action=\"dlq/replay\"", &format!("status={replay_status}")]), "the replay:\n{}", audit.join("\n"));
}
on_both_brokers!(actions_and_refusals_are_audited);

/// A process limited to 256 file descriptors, with 240 connections held open against its
/// admin API: the probes still answer (the limit stays under the descriptors, and the oldest
/// idle connection makes room).
async fn probes_answer_a_process_short_of_descriptors(target: Target) {
    target.create_topic("process.ticks", 1).await;
    let port = free_port();
    let (out, log) = (out_file(&target, "fds"), out_file(&target, "fds-log"));
    let inner = worker(&target, &out, &log, port);
    let mut command = std::process::Command::new("sh");
    command.arg("-c").arg("ulimit -n 256 && exec \"$0\"").arg(inner.get_program());
    for (k, v) in inner.get_envs() {
        if let Some(v) = v {
            command.env(k, v);
        }
    }
    command.env("EVENTKIT_ADMIN_IDLE_TIMEOUT_MS", "120000").env("EVENTKIT_ADMIN_HEADER_TIMEOUT_MS", "120000").env("EVENTKIT_ADMIN_MAX_CONNECTIONS", "1000");
    command.stderr(Stdio::from(std::fs::File::create(&log).unwrap())).stdout(Stdio::null());
    let mut child = start(command);
    wait_ready(port, &log).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut held = Vec::new();
    for i in 0..240 {
        match TcpStream::connect(addr).await {
            Ok(mut s) => {
                if i % 2 == 0 {
                    let _ = s.write_all(b"GET /health/ready HTTP/1.1\r\n").await;
                }
                held.push(s);
            }
            Err(e) => panic!("connection {i}: {e}"),
        }
    }
    probes_answer(addr, 5).await;
    drop(held);
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = (std::fs::remove_file(&out), std::fs::remove_file(&log));
    assert!(status.success(), "{status}\n{text}");
    assert!(text.contains("max_connections=64"), "the limit stays under a quarter of the descriptors:\n{text}");
}
on_both_brokers!(probes_answer_a_process_short_of_descriptors);

/// A handler that never returns, and SIGTERM with a budget of 4 s: the handlers get the budget
/// less its reserve, then commit, leave, close and flush each start (and are logged) within
/// the reserve, and the process exits cleanly.
async fn a_stuck_handler_leaves_the_shutdown_its_reserve(target: Target) {
    target.create_topic("process.ticks", 1).await;
    let port = free_port();
    let (out, log) = (out_file(&target, "budget"), out_file(&target, "budget-log"));
    let mut command = worker(&target, &out, &log, port);
    command.env("WORKER_STUCK", "1").env("EVENTKIT_SHUTDOWN_TIMEOUT_MS", "4000");
    let mut child = start(command);
    wait_ready(port, &log).await;
    process::publish_ticks(&target, 0, 3).await;
    process::wait_for(&out, "a stuck handler", Duration::from_secs(60), |h| !h.is_empty()).await;
    let asked = Instant::now();
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let took = asked.elapsed();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = (std::fs::remove_file(&out), std::fs::remove_file(&log));
    assert!(status.success(), "{status}\n{text}");
    let phases = [
        "shutting down: in-flight records finish first",
        "shutdown: finishing the records in flight",
        "handlers still running when the shutdown budget's reserve began",
        "shutdown: leaving the group",
        "shutdown: closing the consumer",
        "consumer group stopped",
        "shutdown: flushing the producer",
        "eventkit stopped",
    ];
    let mut at = 0;
    for phase in phases {
        let found = text[at..].find(phase).unwrap_or_else(|| panic!("the phase {phase:?} is logged after the ones before:\n{text}"));
        at += found + phase.len();
    }
    eprintln!("[{}] SIGTERM to exit with a stuck handler and a 4 s budget: {took:?}", target.kind);
}
on_both_brokers!(a_stuck_handler_leaves_the_shutdown_its_reserve);

/// SIGTERM with a stuck handler, and a second member joining the group during the shutdown
/// (a rolling update): the revoke that follows does not wait (the member is leaving), and the
/// process exits.
async fn a_rebalance_during_shutdown_does_not_hold_the_exit(target: Target) {
    target.create_topic("process.ticks", 3).await;
    let port = free_port();
    let (out, log) = (out_file(&target, "rebalance-exit"), out_file(&target, "rebalance-exit-log"));
    let mut command = worker(&target, &out, &log, port);
    command.env("WORKER_STUCK", "1").env("EVENTKIT_SHUTDOWN_TIMEOUT_MS", "8000").env("EVENTKIT_KAFKA_GROUP_INSTANCE_ID", format!("{}a", target.prefix));
    let mut child = start(command);
    wait_ready(port, &log).await;
    process::publish_ticks(&target, 0, 8).await;
    process::wait_for(&out, "stuck handlers", Duration::from_secs(60), |h| !h.is_empty()).await;
    sigterm(&child);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (out_b, log_b) = (out_file(&target, "rebalance-exit-b"), out_file(&target, "rebalance-exit-b-log"));
    let mut second = worker(&target, &out_b, &log_b, free_port());
    second.env("WORKER_STUCK", "1").env("EVENTKIT_KAFKA_GROUP_INSTANCE_ID", format!("{}b", target.prefix));
    let mut second = start(second);
    let status = wait_exit(&mut child, Duration::from_secs(60));
    sigterm(&second);
    let _ = wait_exit(&mut second, Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    for f in [&out, &log, &out_b, &log_b] {
        let _ = std::fs::remove_file(f);
    }
    assert!(status.success(), "[{}] {status}\n{text}", target.kind);
    assert!(!text.contains("panicked"), "[{}] {text}", target.kind);
}
on_both_brokers!(a_rebalance_during_shutdown_does_not_hold_the_exit);

/// A handler that blocks its thread (not awaiting) for minutes, and SIGTERM: the process exits
/// at the end of its shutdown budget all the same, saying why.
async fn a_blocking_handler_does_not_hold_the_exit(target: Target) {
    target.create_topic("process.ticks", 1).await;
    let port = free_port();
    let (out, log) = (out_file(&target, "blocking-exit"), out_file(&target, "blocking-exit-log"));
    let mut command = worker(&target, &out, &log, port);
    command.env("WORKER_BLOCK", "1").env("EVENTKIT_SHUTDOWN_TIMEOUT_MS", "3000");
    let mut child = start(command);
    wait_ready(port, &log).await;
    process::publish_ticks(&target, 0, 1).await;
    process::wait_for(&out, "a blocking handler", Duration::from_secs(60), |h| !h.is_empty()).await;
    sigterm(&child);
    // The handler blocks for five minutes: an exit well before is the budget's.
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = (std::fs::remove_file(&out), std::fs::remove_file(&log));
    assert!(text.contains("has not exited within the shutdown budget"), "[{}] it says why:\n{text}", target.kind);
    assert!(status.code().is_some(), "[{}] an exit, not a signal: {status}", target.kind);
}
on_both_brokers!(a_blocking_handler_does_not_hold_the_exit);

/// Dropping a `Running` (without calling `shutdown`) stops its groups: the member leaves (as
/// the coordinator says; the embedded mock cluster does not describe groups, so this runs on
/// the real broker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_running_app_stops_its_groups() {
    let Some(target) = Target::real("drop-running") else { return };
    let (gate, seen) = (Gate::default(), Log::<u32>::default());
    gate.0.store(true, Ordering::Release);
    let running = target.app().groups(["ops-block"]).state(gate).state(seen.clone()).build().unwrap().start().await.unwrap();
    running.publisher().publish(&OpsOrder { id: "o".into(), n: 7 }).await.unwrap();
    within(60, "handled", async {
        while seen.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    drop(running);
    let group = target.group("ops-block");
    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", target.bootstrap()).create().unwrap();
    let left = eventkit_tests::eventually(Duration::from_secs(60), || {
        rdkafka::consumer::Consumer::fetch_group_list(&consumer, Some(&group), Duration::from_secs(5)).is_ok_and(|l| l.groups().iter().all(|g| g.members().is_empty()))
    })
    .await;
    assert!(left, "the member left its group");
}

/// While the cluster is away, requests that wait on it (publishing, here) are bounded apart:
/// beyond a few at once the next gets a 503 at once, and the probes still answer although
/// every connection below the limit is serving one.
async fn slow_requests_never_hold_every_connection(target: Target) {
    let Some(broker) = target.embedded_broker().cloned() else { return };
    let running = target
        .app()
        .groups([])
        .publish_timeout(Duration::from_secs(8))
        .admin_settings(settings(|s| s.max_connections = 4))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let addr = running.admin_addr().unwrap();
    broker.set_down(true).unwrap();
    let body = json!({ "type": "OpsOrder", "data": { "id": "o", "n": 1 } }).to_string();
    let head = format!("POST /publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len());
    let mut waiting = Vec::new();
    for _ in 0..8 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body.as_bytes()).await.unwrap();
        waiting.push(stream);
        // Each is being served (waiting on the cluster) before the next comes.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, answer) = send(addr, &head, body.as_bytes()).await;
    assert_eq!(status, 503, "a ninth request that would wait on the cluster is turned away at once: {answer}");
    probes_answer(addr, 3).await;
    broker.set_down(false).unwrap();
    drop(waiting);
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_never_hold_every_connection_embedded() {
    // Only the embedded broker can be set down in-process; the real broker's variant of this
    // is the outage tests' (a noida-db of their own).
    slow_requests_never_hold_every_connection(Target::embedded("slow-requests")).await
}

/// The manifest under `deploy/` is valid for Kubernetes (its own schemas, offline), and agrees
/// with eventkit: probes on the health port and paths, the grace period above the shutdown
/// budget, static membership from the pod's name.
#[test]
fn the_kubernetes_manifest_is_valid_and_agrees_with_eventkit() {
    let Some(python) = test_python("kubernetes manifest") else { return };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes.yaml");
    let out = std::process::Command::new(&python)
        .args(["-m", "kubernetes_validate", "--strict", "--kubernetes-version", "1.33.0"])
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(out.status.success(), "kubernetes-validate:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let script = r#"
import json, sys, yaml
print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))
"#;
    let out = std::process::Command::new(&python).arg("-c").arg(script).arg(&manifest).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let deployment = docs.iter().find(|d| d["kind"] == "StatefulSet").expect("a StatefulSet (stable pod names for static membership)");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let env = |name: &str| container["env"].as_array().unwrap().iter().find(|e| e["name"] == name).cloned().unwrap_or_else(|| panic!("env {name}"));
    let port_of = |name: &str| container["ports"].as_array().unwrap().iter().find(|p| p["name"] == name).map(|p| p["containerPort"].as_u64().unwrap()).unwrap_or_else(|| panic!("port {name}"));
    let health: u64 = env("EVENTKIT_HEALTH_ADDR")["value"].as_str().unwrap().rsplit(':').next().unwrap().parse().unwrap();
    let admin: u64 = env("EVENTKIT_ADMIN_ADDR")["value"].as_str().unwrap().rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!((port_of("health"), port_of("admin")), (health, admin), "the container's ports are eventkit's");
    for (probe, path) in [("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready"), ("startupProbe", "/health/live")] {
        let p = &container[probe]["httpGet"];
        assert_eq!((p["path"].as_str(), p["port"].as_str()), (Some(path), Some("health")), "{probe}");
    }
    let budget_ms: u64 = env("EVENTKIT_SHUTDOWN_TIMEOUT_MS")["value"].as_str().unwrap().parse().unwrap();
    let grace_s = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(grace_s * 1000 >= budget_ms + 5_000, "the grace period ({grace_s} s) leaves room above the shutdown budget ({budget_ms} ms)");
    assert_eq!(env("EVENTKIT_KAFKA_GROUP_INSTANCE_ID")["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name", "static membership from the pod's name");
    assert!(container["resources"]["requests"]["memory"].is_string() && container["resources"]["limits"]["memory"].is_string());
}
