//! Handler shapes: batch handlers (sizes, waits, at-least-once per batch, partial failure,
//! poison inside a batch) and catch-all handlers (every type, typed neighbours, explicit topics).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventkit::{handler, integration_event, AnyEvent, BatchContext, Context, DlqFilter, Error};
use eventkit_tests::{eventually, on_both_brokers, Log, Target};

#[integration_event(topic = "shapes.views", key = user)]
#[derive(Debug, Clone)]
pub struct PageView {
    pub user: String,
    pub seq: u32,
}

/// How the batch handler behaves: fail the whole batch / partially, or stall, on given calls.
#[derive(Clone, Default)]
struct Views {
    calls: Log<(Instant, Vec<(u32, String)>)>,
    fail_whole_on_call: Arc<Mutex<HashSet<usize>>>,
    fail_partial_on_call: Arc<Mutex<BTreeMap<usize, usize>>>,
    stall_on_call: Arc<Mutex<HashSet<usize>>>,
    ok: Log<u32>,
    n: Arc<AtomicUsize>,
}

#[handler(group = "views", batch, max_size = 10, max_wait = "300ms", retries = 5, backoff = "10ms..50ms")]
async fn count_views(events: Vec<PageView>, batch: &BatchContext, views: &Views) -> eventkit::Result<()> {
    assert_eq!(events.len(), batch.len());
    let call = views.n.fetch_add(1, Ordering::SeqCst);
    let ids: Vec<(u32, String)> = events.iter().zip(batch.contexts()).map(|(e, c)| (e.seq, c.event_id().to_owned())).collect();
    views.calls.push((Instant::now(), ids));
    if views.stall_on_call.lock().unwrap().contains(&call) {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    if views.fail_whole_on_call.lock().unwrap().contains(&call) {
        return Err(Error::msg("warehouse down"));
    }
    if let Some(&k) = views.fail_partial_on_call.lock().unwrap().get(&call) {
        views.ok.0.lock().unwrap().extend(events[..k].iter().map(|e| e.seq));
        return Err(Error::batch_failed_at(k, "row rejected"));
    }
    views.ok.0.lock().unwrap().extend(events.iter().map(|e| e.seq));
    Ok(())
}

fn views(n: u32, from: u32) -> Vec<PageView> {
    (from..from + n).map(|seq| PageView { user: format!("u{}", seq % 4), seq }).collect()
}

async fn batches_respect_max_size_and_max_wait(target: Target) {
    let v = Views::default();
    let running = target.app().groups(["views"]).state(v.clone()).build().unwrap().start().await.unwrap();
    running.publisher().publish_many(&views(95, 0)).await.unwrap();
    assert!(eventually(Duration::from_secs(60), || v.ok.len() >= 95).await, "[{}] {}", target.kind, v.ok.len());
    // A half-full batch is delivered after max_wait.
    let sent = Instant::now();
    running.publisher().publish_many(&views(3, 95)).await.unwrap();
    assert!(eventually(Duration::from_secs(30), || v.ok.len() >= 98).await);
    let last = v.calls.snapshot().last().cloned().unwrap();
    running.shutdown().await.unwrap();

    let calls = v.calls.snapshot();
    assert!(calls.iter().all(|(_, b)| !b.is_empty() && b.len() <= 10), "[{}] sizes {:?}", target.kind, calls.iter().map(|c| c.1.len()).collect::<Vec<_>>());
    assert!(last.1.len() <= 3 && last.1.iter().any(|(s, _)| *s >= 95), "the last batch holds the late events only: {:?}", last.1);
    assert!(last.0.duration_since(sent) < Duration::from_secs(10));
    let mut seen: Vec<u32> = v.ok.snapshot();
    // Per key (partition), events arrive in order.
    for user in 0..4 {
        let of_user: Vec<u32> = seen.iter().copied().filter(|s| s % 4 == user).collect();
        assert!(of_user.windows(2).all(|w| w[0] < w[1]), "order of u{user}: {of_user:?}");
    }
    seen.sort();
    assert_eq!(seen, (0..98).collect::<Vec<_>>(), "[{}] each once", target.kind);
}
on_both_brokers!(batches_respect_max_size_and_max_wait);

async fn failed_batches_are_redelivered_and_partial_failure_retries_the_tail(target: Target) {
    let v = Views::default();
    v.fail_whole_on_call.lock().unwrap().insert(0);
    v.fail_partial_on_call.lock().unwrap().insert(1, 2);
    let running = target.app().groups(["views"]).state(v.clone()).build().unwrap().start().await.unwrap();
    // One key: one partition, so the batch and its retries line up.
    let events: Vec<PageView> = (0..6).map(|seq| PageView { user: "same".into(), seq }).collect();
    running.publisher().publish_many(&events).await.unwrap();
    assert!(eventually(Duration::from_secs(60), || v.ok.len() >= 6).await, "[{}] ok {:?} calls {:?}", target.kind, v.ok.snapshot(), v.calls.snapshot().iter().map(|c| &c.1).collect::<Vec<_>>());
    running.shutdown().await.unwrap();
    let calls: Vec<Vec<(u32, String)>> = v.calls.snapshot().into_iter().map(|c| c.1).collect();
    assert!(calls.len() >= 3, "{calls:?}");
    assert_eq!(calls[1], calls[0], "[{}] a failed batch comes again with the same events", target.kind);
    let retried_tail: Vec<u32> = calls[2].iter().map(|(s, _)| *s).collect();
    let first: Vec<u32> = calls[0].iter().map(|(s, _)| *s).collect();
    assert_eq!(retried_tail[0], first[2], "the retry starts at the failed event");
    assert!(!retried_tail.contains(&first[0]) && !retried_tail.contains(&first[1]), "the succeeded events are not retried: {retried_tail:?}");
    let mut ok = v.ok.snapshot();
    ok.sort();
    assert_eq!(ok, [0, 1, 2, 3, 4, 5]);
}
on_both_brokers!(failed_batches_are_redelivered_and_partial_failure_retries_the_tail);

async fn crash_before_ok_commits_nothing_of_the_batch(target: Target) {
    let v = Views::default();
    v.stall_on_call.lock().unwrap().insert(0);
    let app = || target.app().groups(["views"]).shutdown_timeout(Duration::from_millis(500));
    let running = app().state(v.clone()).build().unwrap().start().await.unwrap();
    let events: Vec<PageView> = (0..5).map(|seq| PageView { user: "same".into(), seq }).collect();
    let published = running.publisher().publish_many(&events).await.unwrap();
    assert!(eventually(Duration::from_secs(60), || !v.calls.is_empty()).await);
    running.shutdown().await.unwrap(); // the stalled batch is abandoned
    let topic = target.topic("shapes.views");
    // The watermark stays at the batch's first record (committing it keeps a group with
    // `auto.offset.reset=latest` from skipping the batch after a restart).
    let committed = target.committed(&target.group("views"), &topic, published[0].partition);
    assert!(committed.is_none_or(|c| c <= published[0].offset), "[{}] nothing of the batch committed: {committed:?}", target.kind);

    let again = Views::default();
    let running = app().state(again.clone()).build().unwrap().start().await.unwrap();
    assert!(eventually(Duration::from_secs(60), || again.ok.len() >= 5).await, "[{}] redelivered", target.kind);
    running.shutdown().await.unwrap();
    let first_ids: HashSet<String> = v.calls.snapshot()[0].1.iter().map(|(_, id)| id.clone()).collect();
    let redelivered: HashSet<String> = again.calls.snapshot().iter().flat_map(|c| c.1.iter().map(|(_, id)| id.clone())).collect();
    assert!(first_ids.is_subset(&redelivered), "the abandoned batch came again");
    assert_eq!(target.committed(&target.group("views"), &topic, published[0].partition), Some(published[4].offset + 1));
}
on_both_brokers!(crash_before_ok_commits_nothing_of_the_batch);

async fn poison_inside_a_batch_takes_its_own_path(target: Target) {
    let v = Views::default();
    let running = target.app().groups(["views"]).state(v.clone()).build().unwrap().start().await.unwrap();
    let topic = target.topic("shapes.views");
    let publisher = running.publisher();
    publisher.publish_many(&[PageView { user: "same".into(), seq: 0 }, PageView { user: "same".into(), seq: 1 }]).await.unwrap();
    let ce = [("ce_specversion", "1.0"), ("ce_id", "bad-1"), ("ce_source", "t"), ("ce_type", "PageView")];
    let (_, bad_offset) = target.produce_raw(&topic, "same", &ce, br#"{"user": 7}"#).await;
    let (_, unknown_offset) = target.produce_raw(&topic, "same", &[("ce_specversion", "1.0"), ("ce_id", "u-1"), ("ce_source", "t"), ("ce_type", "Nope")], b"{}").await;
    // A replay addressed to another group is not this group's business.
    let replay = [("ce_specversion", "1.0"), ("ce_id", "r-1"), ("ce_type", "PageView"), ("eventkit-replay-group", "someone-else")];
    target.produce_raw(&topic, "same", &replay, br#"{"user":"same","seq":99}"#).await;
    publisher.publish_many(&[PageView { user: "same".into(), seq: 2 }, PageView { user: "same".into(), seq: 3 }]).await.unwrap();
    assert!(eventually(Duration::from_secs(60), || v.ok.len() >= 4).await, "[{}] {:?}", target.kind, v.ok.snapshot());
    let dlq = running.dead_letters().list("shapes.views", &DlqFilter::default()).await.unwrap();
    running.shutdown().await.unwrap();
    assert_eq!(v.ok.snapshot(), [0, 1, 2, 3], "[{}] the rest of the batch is delivered, in order", target.kind);
    let mut kinds: Vec<(&str, i64)> = dlq.iter().map(|d| (d.kind.as_str(), d.original_offset)).collect();
    kinds.sort_by_key(|k| k.1);
    assert_eq!(kinds, [("deserialization", bad_offset), ("unknown-type", unknown_offset)], "[{}]", target.kind);
}
on_both_brokers!(poison_inside_a_batch_takes_its_own_path);

/// A batch may hold only records that are set aside (a type nobody here handles, a replay for
/// another group): nothing is handed to the handler, the records settle, and the group goes on.
async fn a_batch_of_records_set_aside_settles_and_the_group_goes_on(target: Target) {
    let v = Views::default();
    let running = target.app().groups(["views"]).state(v.clone()).build().unwrap().start().await.unwrap();
    let topic = target.topic("shapes.views");
    let (_, unknown_offset) = target.produce_raw(&topic, "same", &[("ce_specversion", "1.0"), ("ce_id", "u-2"), ("ce_source", "t"), ("ce_type", "Nope")], b"{}").await;
    let replay = [("ce_specversion", "1.0"), ("ce_id", "r-2"), ("ce_type", "PageView"), ("eventkit-replay-group", "someone-else")];
    target.produce_raw(&topic, "same", &replay, br#"{"user":"same","seq":99}"#).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let dlq = running.dead_letters().list("shapes.views", &DlqFilter::default()).await.unwrap();
        if dlq.iter().any(|d| d.original_offset == unknown_offset) {
            break;
        }
        assert!(Instant::now() < deadline, "[{}] the unknown type was not dead-lettered", target.kind);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // That batch has been settled; the group still handles what comes next.
    running.publisher().publish_many(&[PageView { user: "same".into(), seq: 7 }]).await.unwrap();
    assert!(eventually(Duration::from_secs(60), || !v.ok.is_empty()).await, "[{}] the group stopped after a batch of set-aside records", target.kind);
    running.shutdown().await.unwrap();
    assert_eq!(v.ok.snapshot(), [7], "[{}]", target.kind);
    assert_eq!(v.n.load(Ordering::SeqCst), 1, "[{}] the handler was never called with an empty batch", target.kind);
}
on_both_brokers!(a_batch_of_records_set_aside_settles_and_the_group_goes_on);

// ---- catch-all ----

#[integration_event(topic = "shapes.orders", key = id)]
#[derive(Debug, Clone, PartialEq)]
pub struct OrderCreated {
    pub id: String,
    pub total: u32,
}
#[integration_event(topic = "shapes.orders", key = id)]
#[derive(Debug, Clone, PartialEq)]
pub struct OrderShipped {
    pub id: String,
}
#[integration_event(topic = "shapes.orders", key = id)]
#[derive(Debug, Clone, PartialEq)]
pub struct OrderCancelled {
    pub id: String,
}

type Seen = Log<(&'static str, String, String)>;

#[handler(group = "projection")]
async fn on_created(e: OrderCreated, seen: &Seen) {
    seen.push(("typed", "OrderCreated".into(), e.id));
}

#[handler(group = "projection")]
async fn project(event: AnyEvent, seen: &Seen) -> eventkit::Result<()> {
    let id = if event.is::<OrderCreated>() {
        event.decode::<OrderCreated>()?.id
    } else {
        event.data["id"].as_str().unwrap_or("?").to_owned()
    };
    seen.push(("all", event.event_type().to_owned(), id));
    Ok(())
}

#[handler(group = "audit-all", all, topics = ["shapes.orders", "shapes.audit-extra"])]
async fn audit(event: AnyEvent, ctx: &Context, seen: &Seen) {
    assert_eq!(ctx.event_id(), event.id());
    seen.push(("audit", event.event_type().to_owned(), format!("{}@{}", event.record.topic, event.record.offset)));
}

async fn catch_all_sees_every_type(target: Target) {
    let seen = Seen::default();
    let running = target.app().groups(["projection", "audit-all"]).state(seen.clone()).build().unwrap().start().await.unwrap();
    let p = running.publisher();
    p.publish(&OrderCreated { id: "o1".into(), total: 5 }).await.unwrap();
    p.publish(&OrderShipped { id: "o1".into() }).await.unwrap();
    p.publish(&OrderCancelled { id: "o2".into() }).await.unwrap();
    // A type no part of the app declares, on the explicit topic of the audit handler.
    target.produce_raw(&target.topic("shapes.audit-extra"), "k", &[("ce_specversion", "1.0"), ("ce_id", "m-1"), ("ce_source", "t"), ("ce_type", "Mystery")], br#"{"id":"m"}"#).await;
    // Plain JSON without any type information, from a simple producer.
    target.produce_raw(&target.topic("shapes.audit-extra"), "k", &[], br#"{"id":"plain"}"#).await;
    assert!(eventually(Duration::from_secs(60), || seen.len() >= 9).await, "[{}] {:?}", target.kind, seen.snapshot());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dlq = running.dead_letters().count("shapes.audit-extra", &DlqFilter::default()).await.unwrap();
    running.shutdown().await.unwrap();
    let got: HashSet<(&str, String, String)> = seen.snapshot().into_iter().map(|(h, t, id)| (h, t, if h == "audit" { id.split('@').next().unwrap().to_owned() } else { id })).collect();
    let orders = target.topic("shapes.orders");
    let extra = target.topic("shapes.audit-extra");
    let expected: HashSet<(&str, String, String)> = [
        ("typed", "OrderCreated".into(), "o1".into()),
        ("all", "OrderCreated".into(), "o1".into()),
        ("all", "OrderShipped".into(), "o1".into()),
        ("all", "OrderCancelled".into(), "o2".into()),
        ("audit", "OrderCreated".into(), orders.clone()),
        ("audit", "OrderShipped".into(), orders.clone()),
        ("audit", "OrderCancelled".into(), orders),
        ("audit", "Mystery".into(), extra.clone()),
        ("audit", "".into(), extra),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, expected, "[{}]", target.kind);
    assert_eq!(seen.len(), 9, "each once");
    assert_eq!(dlq, 0, "a type a catch-all handler took is not unknown");
}
on_both_brokers!(catch_all_sees_every_type);

#[test]
fn listing_shows_batch_settings_and_catch_all_subscriptions() {
    let app = eventkit::App::builder()
        .config(eventkit::Config::default())
        .state(Views::default())
        .state(Seen::default())
        .build()
        .unwrap();
    let t = app.topology();
    let handler = |name: &str| t.groups.iter().flat_map(|g| &g.handlers).find(|h| h.name == name).unwrap().clone();
    assert_eq!(handler("shapes::count_views").shape, "batch(max_size=10, max_wait=300ms)");
    let project = handler("shapes::project");
    assert_eq!((project.shape.as_str(), project.event_type.as_str(), project.topic.as_str()), ("catch-all", "*", "shapes.orders"));
    assert_eq!(handler("shapes::audit").topic, "shapes.audit-extra,shapes.orders");
    let json = t.to_json();
    assert!(json.contains(r#""shape": "batch(max_size=10, max_wait=300ms)""#), "{json}");
    assert!(t.to_string().contains("catch-all"));
}

#[test]
fn a_batch_handler_must_have_its_group_to_itself() {
    let batch = eventkit::Registry::global().unwrap().handler("shapes::count_views").unwrap();
    let typed = eventkit::Registry::global().unwrap().handler("shapes::on_created").unwrap();
    static SHARED: std::sync::OnceLock<eventkit::HandlerDescriptor> = std::sync::OnceLock::new();
    let shared = SHARED.get_or_init(|| eventkit::HandlerDescriptor { group: Some("views"), name: "shared", ..*typed });
    let registry = eventkit::Registry::of([batch, shared]).unwrap();
    let err = eventkit::App::builder().config(eventkit::Config::default()).registry(registry).state(Views::default()).state(Seen::default()).build().unwrap_err();
    assert!(err.to_string().contains("batch handler `shapes::count_views` must be the only handler of group `views`"), "{err}");
}
