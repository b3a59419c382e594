//! Layers around handling and publishing, on both brokers: app-wide, group and handler layers
//! run in that order (before, around, after), a layer's skip settles the record as skipped
//! (counted, handler not run), a layer's failure goes through the retry and dead letter rules,
//! a publish layer adds a header, and the two shipped layers (`Filter`, `RateLimit`) do what
//! they say.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use eventkit::layer::{BoxFuture, Filter, Flow, HandleLayer, Handled, Next, Outgoing, PublishLayer, RateLimit};
use eventkit::{handler, integration_event, Context, PublishOptions};
use eventkit_tests::{eventually, on_both_brokers, Log, Target};

#[integration_event(topic = "layers.orders", key = id)]
#[derive(Debug, Clone)]
pub struct LayeredOrder {
    pub id: String,
}

#[integration_event(topic = "layers.paced", key = id)]
#[derive(Debug, Clone)]
pub struct Paced {
    pub id: String,
}

/// What the layers and the handler did, in order, by test (the prefix keeps tests apart).
fn journal() -> &'static Mutex<Vec<String>> {
    static JOURNAL: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    JOURNAL.get_or_init(Mutex::default)
}

fn note(entry: String) {
    journal().lock().unwrap().push(entry);
}

/// Notes its `before`, around entry and exit, `after` and settled dispositions, tagged with the
/// order id; skips ids ending in "-skip-NAME" and fails ids ending in "-fail-NAME".
struct Tracer(&'static str);

impl HandleLayer for Tracer {
    fn before(&self, ctx: &Context) -> Flow {
        let id = order_id(ctx);
        note(format!("{id} before {}", self.0));
        if id.ends_with(&format!("-skip-{}", self.0)) {
            return Flow::skip(format!("{} skips it", self.0));
        }
        if id.ends_with(&format!("-fail-{}", self.0)) {
            return Flow::fail(eventkit::Error::permanent(format!("{} refuses it", self.0)));
        }
        Flow::Continue
    }
    fn wraps(&self, _ctx: &Context) -> bool {
        true
    }
    fn around(&self, ctx: Arc<Context>, next: Next) -> BoxFuture<Handled> {
        let name = self.0;
        Box::pin(async move {
            let id = order_id(&ctx);
            note(format!("{id} enter {name}"));
            let result = next.run(ctx).await;
            note(format!("{id} exit {name}"));
            result
        })
    }
    fn after(&self, ctx: &Context, result: &Handled, _took: Duration) {
        note(format!("{} after {} ok={}", order_id(ctx), self.0, result.is_ok()));
    }
    fn settled(&self, at: &eventkit::layer::Settling<'_>, disposition: &eventkit::layer::Disposition<'_>) {
        if self.0 == "app" {
            let kind = match disposition {
                eventkit::layer::Disposition::Handled => "handled",
                eventkit::layer::Disposition::Skipped(_) => "skipped",
                eventkit::layer::Disposition::Retrying { .. } => "retrying",
                eventkit::layer::Disposition::DeadLettered { .. } => "dead-lettered",
                _ => "other",
            };
            note(format!("settled {} {kind}", at.event_id.unwrap_or_default()));
        }
    }
}

fn order_id(ctx: &Context) -> String {
    serde_json::from_slice::<serde_json::Value>(ctx.data()).ok().and_then(|v| v["id"].as_str().map(str::to_owned)).unwrap_or_default()
}

#[handler(group = "layers-orders", layer = Tracer("handler"))]
async fn take_order(order: LayeredOrder) -> eventkit::Result<()> {
    note(format!("{} handler", order.id));
    Ok(())
}

#[derive(Clone, Default)]
struct Starts(Log<Instant>);

#[handler(group = "layers-paced")]
async fn paced(_p: Paced, starts: &Starts) {
    starts.0.push(Instant::now());
}

/// Adds a header to every event it publishes.
struct Stamp;

impl PublishLayer for Stamp {
    fn before(&self, event: &mut Outgoing<'_>) -> eventkit::Result<()> {
        event.add_header("x-stamped-by", b"layers-test");
        Ok(())
    }
}

fn entries(id: &str) -> Vec<String> {
    journal().lock().unwrap().iter().filter_map(|e| e.strip_prefix(&format!("{id} ")).map(str::to_owned)).collect()
}

async fn layers_run_in_order_and_skip_or_fail(target: Target) {
    let p = &target.prefix;
    let running = target
        .app()
        .groups(["layers-orders"])
        .layer(Tracer("app"))
        .group_layer("layers-orders", Tracer("group"))
        .publish_layer(Stamp)
        .retries(1)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let publisher = running.publisher();
    let ok = publisher.publish(&LayeredOrder { id: format!("{p}ok") }).await.unwrap();
    let skipped = publisher.publish(&LayeredOrder { id: format!("{p}x-skip-group") }).await.unwrap();
    let failed = publisher.publish(&LayeredOrder { id: format!("{p}x-fail-handler") }).await.unwrap();
    let last = publisher.publish_with(&LayeredOrder { id: format!("{p}last") }, PublishOptions::default()).await.unwrap();
    let seen = |id: &str| journal().lock().unwrap().iter().any(|e| e == &format!("settled {id} handled") || e == &format!("settled {id} dead-lettered"));
    let done = eventually(Duration::from_secs(60), || seen(&last.event_id) && seen(&failed.event_id)).await;
    running.shutdown().await.unwrap();
    assert!(done, "[{}] {:?}", target.kind, journal().lock().unwrap());

    // App-wide, then group, then handler: `before` outside in, `around` nested, `after` inside out.
    assert_eq!(
        entries(&format!("{p}ok")),
        [
            "before app", "before group", "before handler", "enter app", "enter group", "enter handler", "handler", "exit handler", "exit group", "exit app",
            "after handler ok=true", "after group ok=true", "after app ok=true",
        ],
        "[{}]",
        target.kind
    );
    // The group layer skipped: the handler layer and the handler never saw it; it settled.
    assert_eq!(entries(&format!("{p}x-skip-group")), ["before app", "before group"], "[{}]", target.kind);
    assert!(journal().lock().unwrap().contains(&format!("settled {} skipped", skipped.event_id)), "[{}]", target.kind);
    // The handler layer failed it permanently: dead-lettered with the layer's error.
    assert!(journal().lock().unwrap().contains(&format!("settled {} dead-lettered", failed.event_id)), "[{}]", target.kind);
    assert!(!entries(&format!("{p}x-fail-handler")).contains(&"handler".to_owned()), "the handler never ran");
    let dlq = running_dead_letters(&target).await;
    let entry = dlq.iter().find(|d| d.event_id.as_deref() == Some(failed.event_id.as_str())).expect("the failed record's dead letter");
    assert!(entry.error.contains("handler refuses it"), "{}", entry.error);
    // The skip is counted.
    let metrics = eventkit::metrics::render();
    let group = target.group("layers-orders");
    assert!(
        metrics.lines().any(|l| l.starts_with("eventkit_records_skipped_total{") && l.contains(&group) && l.contains("take_order") && !l.ends_with(" 0")),
        "[{}] the skip is counted for the handler:\n{}",
        target.kind,
        metrics.lines().filter(|l| l.contains(&group)).collect::<Vec<_>>().join("\n")
    );
    // The publish layer stamped every event.
    let records = target.read_records(&target.topic("layers.orders"), 4);
    assert!(records.iter().all(|r| r.headers.iter().any(|(k, v)| k == "x-stamped-by" && v == b"layers-test")), "[{}] {records:?}", target.kind);
    let _ = ok;
}
on_both_brokers!(layers_run_in_order_and_skip_or_fail);

async fn running_dead_letters(target: &Target) -> Vec<eventkit::DeadLetter> {
    let app = target.app().groups([]).build().unwrap().start().await.unwrap();
    let dlq = app.dead_letters();
    let mut entries = Vec::new();
    for _ in 0..100 {
        entries = dlq.list("layers.orders", &eventkit::DlqFilter::default()).await.unwrap_or_default();
        if !entries.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.shutdown().await.unwrap();
    entries
}

/// The shipped layers: a filter by tenant lets only its tenant's records through (the others
/// settle as skipped, and the records after them go on), and a rate limit of 10 a second
/// (bursts of 1) spaces the handler's starts.
async fn the_shipped_filter_and_rate_limit(target: Target) {
    let starts = Starts::default();
    let running = target
        .app()
        .groups(["layers-paced"])
        .state(starts.clone())
        .group_layer("layers-paced", Filter::new().tenants(["acme"]))
        .group_layer("layers-paced", RateLimit::with_burst(10, 1))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    for n in 0..8 {
        let tenant = if n % 2 == 0 { "acme" } else { "globex" };
        running.publisher().publish_with(&Paced { id: format!("p-{n}") }, PublishOptions::default().tenant_id(tenant)).await.unwrap();
    }
    let mut last = PublishOptions::default().tenant_id("acme");
    last.key = Some("last".into());
    running.publisher().publish_with(&Paced { id: "p-last".into() }, last).await.unwrap();
    let done = eventually(Duration::from_secs(60), || starts.0.len() >= 5).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.shutdown().await.unwrap();
    assert!(done, "[{}] {} handled", target.kind, starts.0.len());
    assert_eq!(starts.0.len(), 5, "[{}] only acme's records reached the handler", target.kind);
    let mut times = starts.0.snapshot();
    times.sort();
    // 10 a second, one at a time: at least about 100 ms apart (a slow machine only widens it).
    for pair in times.windows(2) {
        let gap = pair[1].duration_since(pair[0]);
        assert!(gap >= Duration::from_millis(90), "[{}] handlings {gap:?} apart", target.kind);
    }
}
on_both_brokers!(the_shipped_filter_and_rate_limit);

