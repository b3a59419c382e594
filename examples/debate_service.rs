//! Seed 004's debate system as two services on one broker, each with its admin API:
//!
//! - `debate-api` takes a debate through `POST /publish` (the seed's `POST /kafka/events`,
//!   validated against the event type) and runs the debate processor: a `DebateInitiated`
//!   becomes a `DecisionMade`;
//! - `debate-analytics` runs the decision processor (a decision becomes metrics) and the
//!   metrics processor, a batch handler that aggregates them.
//!
//! Topics carry a prefix per environment (`DEBATE_ENV`, default `dev`: `dev.zamaz-debate.`),
//! with the seed's retentions. Both services answer `/health/ready`, and one trace runs from
//! the publish through both services (OpenTelemetry spans linked by the `traceparent` header;
//! here collected in memory and printed).
//!
//! Each service serves the operator console at `/ui` (the example prints the addresses;
//! `DEBATE_CONSOLE_SECS=600` keeps the services running to look around, with the printed token).
//!
//! Runs on the embedded broker: `cargo run --example debate_service`. It exits non-zero when
//! what it prints did not happen.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventkit::{handler, integration_event, App, BatchContext, Context, EmbeddedBroker, Error, Running};
use opentelemetry::trace::{SpanId, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use serde_json::{json, Value};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

#[integration_event(topic = "debate-events", key = debate_id, retention = "7d")]
pub struct DebateInitiated {
    pub debate_id: String,
    pub question: String,
    pub participants: Vec<String>,
}

#[integration_event(topic = "decision-events", key = debate_id, retention = "30d")]
pub struct DecisionMade {
    pub debate_id: String,
    pub decision: String,
    pub votes_for: u32,
    pub votes_against: u32,
}

#[integration_event(topic = "metrics-events", key = name, retention = "7d")]
pub struct MetricRecorded {
    pub name: String,
    pub value: f64,
    pub debate_id: String,
}

/// The debate processor (`debate-api`): runs the debate and decides.
#[handler(group = "debate-processor")]
async fn debate_processor(debate: DebateInitiated, ctx: &Context) -> eventkit::Result<()> {
    tracing::info!(debate = %debate.debate_id, participants = debate.participants.len(), "debating");
    let votes_for = debate.participants.len() as u32;
    let decision = if debate.question.contains("feature X") { "implement feature X" } else { "keep as is" };
    ctx.cascade(DecisionMade { debate_id: debate.debate_id, decision: decision.into(), votes_for, votes_against: 1 });
    Ok(())
}

/// The decision processor (`debate-analytics`): every decision becomes metrics.
#[handler(group = "decision-processor")]
async fn decision_processor(decision: DecisionMade, ctx: &Context) -> eventkit::Result<()> {
    let total = f64::from(decision.votes_for + decision.votes_against);
    ctx.cascade(vec![
        MetricRecorded { name: "votes".into(), value: total, debate_id: decision.debate_id.clone() },
        MetricRecorded { name: "approval".into(), value: f64::from(decision.votes_for) / total, debate_id: decision.debate_id },
    ]);
    Ok(())
}

/// Metrics by name, as the metrics processor aggregates them.
#[derive(Clone, Default)]
struct Aggregates(Arc<Mutex<BTreeMap<String, (u32, f64)>>>);

/// The metrics processor (`debate-analytics`): batches of metrics, aggregated.
#[handler(group = "metrics-processor", batch, max_size = 100, max_wait = "100ms")]
async fn metrics_processor(metrics: Vec<MetricRecorded>, _batch: &BatchContext, aggregates: &Aggregates) -> eventkit::Result<()> {
    let mut all = aggregates.0.lock().unwrap();
    for m in metrics {
        let entry = all.entry(m.name).or_default();
        entry.0 += 1;
        entry.1 += m.value;
    }
    Ok(())
}

/// Spans kept in memory (a real service exports them over OTLP: the `otlp` feature).
#[derive(Debug, Clone, Default)]
struct Collected(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collected {
    fn export(&self, batch: Vec<SpanData>) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        self.0.lock().unwrap().extend(batch);
        std::future::ready(Ok(()))
    }
}

const TOKEN: &str = "debate-admin-token";

async fn service(name: &str, prefix: &str, broker: &Arc<EmbeddedBroker>, groups: &'static [&'static str], aggregates: &Aggregates) -> eventkit::Result<Running> {
    App::builder()
        .service_name(name.to_owned())
        .topic_prefix(prefix.to_owned())
        .group_prefix(prefix.to_owned())
        .groups(groups.iter().copied())
        .embedded_broker(broker.clone())
        .admin_addr("127.0.0.1:0")
        .admin_token(TOKEN)
        .state(aggregates.clone())
        .build()?
        .start()
        .await
}

async fn get(url: String) -> eventkit::Result<(u16, Value)> {
    // The read endpoints take the token (the probes need none).
    let response = reqwest::Client::new().get(&url).bearer_auth(TOKEN).send().await.map_err(Error::msg)?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.map_err(Error::msg)?))
}

async fn wait_ready(name: &str, running: &Running) -> eventkit::Result<()> {
    let url = format!("http://{}/health/ready", running.admin_addr().expect("admin API"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(url.clone()).await?;
        if status == 200 {
            println!("{name}: /health/ready {status} {body}");
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::msg(format!("{name} is not ready: {body}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() -> eventkit::Result<()> {
    let collected = Collected::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(collected.clone()).build();
    // The log follows RUST_LOG; the trace layer takes eventkit's spans (at `info`) whatever the
    // log level.
    let log_filter = tracing_subscriber::EnvFilter::new(std::env::var("RUST_LOG").unwrap_or_else(|_| "info,librdkafka=warn".into()));
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_filter(log_filter))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("debate")).with_filter(tracing_subscriber::EnvFilter::new("info")))
        .init();

    let env = std::env::var("DEBATE_ENV").unwrap_or_else(|_| "dev".into());
    let prefix = format!("{env}.zamaz-debate.");
    let broker = Arc::new(EmbeddedBroker::start()?);
    let aggregates = Aggregates::default();
    let api = service("debate-api", &prefix, &broker, &["debate-processor"], &aggregates).await?;
    let analytics = service("debate-analytics", &prefix, &broker, &["decision-processor", "metrics-processor"], &aggregates).await?;
    wait_ready("debate-api", &api).await?;
    wait_ready("debate-analytics", &analytics).await?;

    // A debate through the admin API: a bad body is refused naming the field, a good one published.
    let publish = format!("http://{}/publish", api.admin_addr().expect("admin API"));
    let http = reqwest::Client::new();
    let bad = json!({ "type": "DebateInitiated", "data": { "debate_id": "debate-123", "question": 42, "participants": [] } });
    let refused = http.post(&publish).bearer_auth(TOKEN).json(&bad).send().await.map_err(Error::msg)?;
    let (status, body) = (refused.status().as_u16(), refused.json::<Value>().await.map_err(Error::msg)?);
    println!("POST /publish with a number for the question: {status} {body}");
    if status != 422 || body["field"] != "data.question" {
        return Err(Error::msg("a bad debate is refused with 422 naming `data.question`"));
    }
    let debate = json!({ "type": "DebateInitiated", "data": { "debate_id": "debate-123", "question": "Should we implement feature X?", "participants": ["claude", "gemini", "gpt"] } });
    let accepted = http.post(&publish).bearer_auth(TOKEN).json(&debate).send().await.map_err(Error::msg)?;
    let (status, body) = (accepted.status().as_u16(), accepted.json::<Value>().await.map_err(Error::msg)?);
    println!("POST /publish {status} {body}");
    if status != 201 || body["published"][0]["topic"] != format!("{prefix}debate-events") {
        return Err(Error::msg("the debate is published to the environment's topic"));
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while aggregates.0.lock().unwrap().values().map(|a| a.0).sum::<u32>() < 2 {
        if tokio::time::Instant::now() > deadline {
            return Err(Error::msg("timed out waiting for the metrics"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, groups) = get(format!("http://{}/groups", analytics.admin_addr().expect("admin API"))).await?;
    let metrics = reqwest::get(format!("http://{}/metrics", analytics.admin_addr().expect("admin API"))).await.map_err(Error::msg)?.text().await.map_err(Error::msg)?;

    // The console: each service serves it at /ui (the page needs no token; its data does).
    println!("\nthe console (give it the token {TOKEN:?}):");
    for (name, running) in [("debate-api", &api), ("debate-analytics", &analytics)] {
        let url = format!("http://{}/ui", running.admin_addr().expect("admin API"));
        let page = reqwest::get(&url).await.map_err(Error::msg)?;
        let (status, html) = (page.status().as_u16(), page.text().await.map_err(Error::msg)?);
        if status != 200 || !html.contains("eventkit console") {
            return Err(Error::msg(format!("{name}: GET /ui answered {status}")));
        }
        let (_, fleet) = get(format!("http://{}/fleet", running.admin_addr().expect("admin API"))).await?;
        let instances: Vec<String> = fleet["instances"]
            .as_array()
            .map(|all| all.iter().map(|i| format!("{} {} ({} group(s))", i["instance"].as_str().unwrap_or(""), i["state"].as_str().unwrap_or(""), i["groups"].as_array().map_or(0, Vec::len))).collect())
            .unwrap_or_default();
        if instances.is_empty() || fleet["instances"][0]["service"] != name {
            return Err(Error::msg(format!("{name}: /fleet shows its instances: {fleet}")));
        }
        println!("  {name}: {url}  fleet: {}", instances.join("; "));
    }
    // DEBATE_CONSOLE_SECS=600 keeps both services running that long, to look around.
    if let Some(secs) = std::env::var("DEBATE_CONSOLE_SECS").ok().and_then(|s| s.parse::<u64>().ok()) {
        println!("  running for {secs} s (Ctrl-C ends it)");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(secs)) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    api.shutdown().await?;
    analytics.shutdown().await?;

    println!("\nmetrics aggregated by debate-analytics:");
    for (name, (count, sum)) in aggregates.0.lock().unwrap().iter() {
        println!("  {name}: {count} value(s), sum {sum:.2}");
    }
    let handled: Vec<&str> = metrics.lines().filter(|l| l.starts_with("eventkit_records_handled_total{")).collect();
    println!("debate-analytics /metrics:\n  {}", handled.join("\n  "));
    println!("debate-analytics /groups: {}", groups["groups"].as_array().map(|g| g.iter().map(|g| g["group"].to_string()).collect::<Vec<_>>().join(", ")).unwrap_or_default());

    // One trace through both services.
    let spans = collected.0.lock().unwrap().clone();
    let chain = [
        (format!("send {prefix}debate-events"), ""),
        (format!("process {prefix}debate-events"), "debate-processor"),
        (format!("send {prefix}decision-events"), ""),
        (format!("process {prefix}decision-events"), "decision-processor"),
        (format!("send {prefix}metrics-events"), ""),
        (format!("process {prefix}metrics-events"), "metrics-processor"),
    ];
    println!("\none trace across the services:");
    let mut parent = SpanId::INVALID;
    let mut trace = None;
    for (name, group) in &chain {
        let span = spans
            .iter()
            .find(|s| &s.name == name && s.parent_span_id == parent && trace.is_none_or(|t| t == s.span_context.trace_id()))
            .ok_or_else(|| Error::msg(format!("no span `{name}` whose parent is the span before it")))?;
        let group_attr = span.attributes.iter().find(|kv| kv.key.as_str() == "messaging.consumer.group.name").map(|kv| kv.value.to_string()).unwrap_or_default();
        if !group.is_empty() && group_attr != format!("{prefix}{group}") {
            return Err(Error::msg(format!("`{name}` ran in group {group_attr}, not {group}")));
        }
        println!("  {}{name}{}", "  ".repeat(chain.iter().position(|c| &c.0 == name).unwrap_or(0)), if group.is_empty() { String::new() } else { format!("  (group {group_attr})") });
        trace = Some(span.span_context.trace_id());
        parent = span.span_context.span_id();
    }
    println!("  trace id {}", trace.expect("a trace"));
    let aggregates = aggregates.0.lock().unwrap().clone();
    if aggregates.get("votes").map(|v| v.1) != Some(4.0) {
        return Err(Error::msg(format!("expected 4 votes aggregated, got {aggregates:?}")));
    }
    if !handled.iter().any(|l| l.contains("metrics-processor") && l.ends_with(" 2")) {
        return Err(Error::msg("the metrics processor's handled count is exported"));
    }
    Ok(())
}
