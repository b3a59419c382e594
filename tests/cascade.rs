//! `#[maps_to]` and cascading: domain events mapped field by field into integration events,
//! events a handler returns or adds through its context published after it succeeded (never
//! when it failed), with correlation and causation carried down the cascade.

use std::time::Duration;

use eventkit::{handler, integration_event, maps_to, Cascade, Context, DomainEvent, Error, MapsTo};
use eventkit_tests::{eventually, on_both_brokers, Log, Target};

// ---------------------------------------------------------------------------------------------
// Mappings

#[integration_event(topic = "cascade.users", key = user_id)]
#[derive(Debug, Clone, PartialEq)]
pub struct UserRegistered {
    pub user_id: String,
    pub email: String,
    pub plan: String,
}

#[integration_event(topic = "cascade.audit")]
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub subject: String,
    pub kind: String,
    pub at_ms: i64,
}

fn lowercase(email: &str) -> String {
    email.to_lowercase()
}

fn millis(at: &std::time::SystemTime) -> i64 {
    at.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A domain event: renamed, converted, skipped and per-target fields.
#[maps_to(UserRegistered(plan = "free".to_owned()), AuditRecord(kind = "user.registered".into()))]
#[derive(Debug, Clone)]
pub struct UserSignedUp {
    #[map(to = user_id)]
    #[map(AuditRecord, to = subject)]
    pub aggregate_id: &'static str,
    #[map(with = lowercase)]
    #[map(AuditRecord, skip)]
    pub email: String,
    #[map(skip)]
    pub password_hash: String,
    #[map(UserRegistered, skip)]
    #[map(AuditRecord, to = at_ms, with = millis)]
    pub at: std::time::SystemTime,
}

#[integration_event(topic = "cascade.plans")]
#[derive(Debug, Clone, PartialEq)]
pub struct PlanChanged {
    pub user_id: String,
    pub plan: String,
}

/// An enum maps with a function.
#[maps_to(PlanChanged, with = plan_changed)]
pub enum Subscription {
    Upgraded { user: String },
    Cancelled { user: String },
}

fn plan_changed(s: &Subscription) -> PlanChanged {
    match s {
        Subscription::Upgraded { user } => PlanChanged { user_id: user.clone(), plan: "pro".into() },
        Subscription::Cancelled { user } => PlanChanged { user_id: user.clone(), plan: "free".into() },
    }
}

#[test]
fn maps_field_by_field_with_renames_conversions_and_skips() {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    let d = UserSignedUp { aggregate_id: "u-1", email: "Ann@Example.COM".into(), password_hash: "x".into(), at };
    assert_eq!(
        MapsTo::<UserRegistered>::map_to(&d),
        UserRegistered { user_id: "u-1".into(), email: "ann@example.com".into(), plan: "free".into() }
    );
    assert_eq!(MapsTo::<AuditRecord>::map_to(&d), AuditRecord { subject: "u-1".into(), kind: "user.registered".into(), at_ms: 1_700_000_000_123 });
    let events = d.integration_events();
    assert_eq!(events.event_types(), ["UserRegistered", "AuditRecord"]);
    assert_eq!(events.events_of::<AuditRecord>().len(), 1);
    let types: Vec<&str> = <UserSignedUp as DomainEvent>::TARGETS.iter().map(|t| t.event_type).collect();
    assert_eq!(types, ["UserRegistered", "AuditRecord"]);

    let up = Subscription::Upgraded { user: "u-2".into() };
    assert_eq!(up.integration_events().events_of::<PlanChanged>(), [&PlanChanged { user_id: "u-2".into(), plan: "pro".into() }]);
    let cascade = Cascade::new().with((Subscription::Cancelled { user: "u-3".into() }, vec![d.clone(), d], None::<PlanChanged>));
    assert_eq!(cascade.event_types(), ["PlanChanged", "UserRegistered", "AuditRecord", "UserRegistered", "AuditRecord"]);
}

#[test]
fn the_listing_shows_domain_events_and_their_integration_events() {
    let topology = eventkit::topology().unwrap();
    let m = topology.mappings.iter().find(|m| m.domain.ends_with("::UserSignedUp")).expect("mapping listed");
    assert_eq!(m.events, ["UserRegistered", "AuditRecord"]);
    assert_eq!(m.topics, ["cascade.users", "cascade.audit"]);
    let json: serde_json::Value = serde_json::from_str(&topology.to_json()).unwrap();
    let listed = json["mappings"].as_array().unwrap().iter().find(|m| m["domain"].as_str().unwrap().ends_with("::Subscription")).unwrap();
    assert_eq!(listed["events"], serde_json::json!(["PlanChanged"]));
    let table = topology.to_string();
    assert!(table.contains("DOMAIN EVENTS"), "{table}");
    let row = table.lines().find(|l| l.contains("::UserSignedUp")).expect("a row");
    assert!(row.contains("→") && row.contains("UserRegistered, AuditRecord") && row.contains("cascade.users, cascade.audit"), "{row}");
    // Integration events that are only mapped to are registered too.
    assert!(topology.events.iter().any(|e| e.event_type == "PlanChanged"));
}

// ---------------------------------------------------------------------------------------------
// Cascading from Kafka handlers

#[integration_event(topic = "cascade.orders", key = order_id)]
#[derive(Debug, Clone)]
pub struct OrderPlaced {
    pub order_id: String,
    /// Attempts that fail before the handler succeeds.
    pub fail_first: u32,
    /// Fails every time (dead-lettered after its retries).
    pub always_fail: bool,
}

#[integration_event(topic = "cascade.confirmed", key = order_id)]
#[derive(Debug, Clone)]
pub struct OrderConfirmed {
    pub order_id: String,
    pub attempt: u32,
}

#[integration_event(topic = "cascade.invoices", key = order_id)]
#[derive(Debug, Clone)]
pub struct InvoiceRequested {
    pub order_id: String,
    pub attempt: u32,
}

/// The domain side: the order was accepted.
#[maps_to(OrderConfirmed)]
pub struct OrderAccepted {
    pub order_id: String,
    pub attempt: u32,
}

#[derive(Clone, Default)]
struct Orders {
    attempts: Log<String>,
}

/// Adds an invoice request through the context, then fails (or not), and returns the domain event.
#[handler(group = "cascade-orders", retries = 3, backoff = "10ms..20ms")]
async fn accept_order(order: OrderPlaced, ctx: &Context, orders: &Orders) -> eventkit::Result<OrderAccepted> {
    orders.attempts.push(order.order_id.clone());
    let attempt = orders.attempts.snapshot().iter().filter(|o| **o == order.order_id).count() as u32;
    ctx.cascade(InvoiceRequested { order_id: order.order_id.clone(), attempt });
    if order.always_fail {
        return Err(Error::permanent("cannot accept"));
    }
    if attempt <= order.fail_first {
        return Err(Error::msg("stock service busy"));
    }
    Ok(OrderAccepted { order_id: order.order_id, attempt })
}

/// What the downstream group saw: order, attempt, event id, correlation and causation.
type Seen = (String, u32, String, Option<String>, Option<String>);

#[derive(Clone, Default)]
struct Downstream {
    confirmed: Log<Seen>,
    invoices: Log<Seen>,
}

fn seen(order_id: &str, attempt: u32, ctx: &Context) -> Seen {
    (order_id.to_owned(), attempt, ctx.event_id().to_owned(), ctx.correlation_id().map(Into::into), ctx.metadata().causation_id.clone())
}

#[handler(group = "cascade-downstream")]
async fn on_confirmed(e: OrderConfirmed, ctx: &Context, d: &Downstream) {
    d.confirmed.push(seen(&e.order_id, e.attempt, ctx));
}

#[handler(group = "cascade-downstream")]
async fn on_invoice(e: InvoiceRequested, ctx: &Context, d: &Downstream) {
    d.invoices.push(seen(&e.order_id, e.attempt, ctx));
}

async fn handlers_cascade_after_success_only(target: Target) {
    let (orders, down) = (Orders::default(), Downstream::default());
    let app = target.app().groups(["cascade-orders", "cascade-downstream"]).state(orders.clone()).state(down.clone()).build().unwrap();
    let running = app.start().await.unwrap();
    let publisher = running.publisher();
    let ok = publisher.publish(&OrderPlaced { order_id: "o-1".into(), fail_first: 0, always_fail: false }).await.unwrap();
    let flaky = publisher.publish(&OrderPlaced { order_id: "o-2".into(), fail_first: 2, always_fail: false }).await.unwrap();
    publisher.publish(&OrderPlaced { order_id: "o-3".into(), fail_first: 0, always_fail: true }).await.unwrap();
    let done = eventually(Duration::from_secs(60), || down.confirmed.len() >= 2 && down.invoices.len() >= 2).await;
    // Time for anything wrongly cascaded (failed attempts, the dead-lettered order) to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    running.shutdown().await.unwrap();
    assert!(done, "[{}] confirmed {:?} invoices {:?}", target.kind, down.confirmed.snapshot(), down.invoices.snapshot());

    let mut confirmed = down.confirmed.snapshot();
    confirmed.sort();
    let mut invoices = down.invoices.snapshot();
    invoices.sort();
    // Only the successful attempt's events went out: attempt 1 of o-1 and attempt 3 of o-2.
    let summary = |s: &[Seen]| s.iter().map(|(o, a, ..)| (o.clone(), *a)).collect::<Vec<_>>();
    assert_eq!(summary(&confirmed), [("o-1".to_owned(), 1), ("o-2".to_owned(), 3)], "[{}]", target.kind);
    assert_eq!(summary(&invoices), [("o-1".to_owned(), 1), ("o-2".to_owned(), 3)], "[{}]", target.kind);
    // Follow-ups: the root's id is the correlation of the whole cascade and the cause of each.
    for (order, cause) in [("o-1", &ok.event_id), ("o-2", &flaky.event_id)] {
        for (o, _, id, correlation, causation) in confirmed.iter().chain(&invoices).filter(|s| s.0 == order) {
            assert_eq!(correlation.as_deref(), Some(cause.as_str()), "[{}] correlation of {o}", target.kind);
            assert_eq!(causation.as_deref(), Some(cause.as_str()), "[{}] causation of {o}", target.kind);
            assert_ne!(id, cause);
        }
    }
    assert_eq!(orders.attempts.snapshot().iter().filter(|o| *o == "o-3").count(), 1, "a permanent failure is not retried");
}
on_both_brokers!(handlers_cascade_after_success_only);
