//! The test harness: a command or event, and everything it causes across cascades, waited for
//! and then inspected; a timeout names what is still pending.

use std::time::Duration;

use eventkit::testing::TestApp;
use eventkit::{command, handler, integration_event, Context, Error};
use eventkit_tests::{on_both_brokers, Log, Target};

#[integration_event(topic = "testing.orders", key = order_id)]
#[derive(Debug, Clone, PartialEq)]
pub struct OrderPlaced {
    pub order_id: String,
    pub amount: u32,
}

#[integration_event(topic = "testing.invoices", key = order_id)]
#[derive(Debug, Clone, PartialEq)]
pub struct InvoiceIssued {
    pub order_id: String,
    pub total: u32,
}

#[integration_event(topic = "testing.slow")]
#[derive(Debug, Clone)]
pub struct SlowEvent {
    pub n: u32,
}

#[command(returns = String)]
pub struct PlaceOrder {
    pub amount: u32,
}

#[handler]
async fn place_order(cmd: PlaceOrder, ctx: &Context) -> eventkit::Result<String> {
    let order_id = format!("o-{}", cmd.amount);
    ctx.cascade(OrderPlaced { order_id: order_id.clone(), amount: cmd.amount });
    Ok(order_id)
}

#[handler(group = "testing-billing")]
async fn bill(e: OrderPlaced) -> eventkit::Result<InvoiceIssued> {
    if e.amount == 0 {
        return Err(Error::permanent("nothing to bill"));
    }
    Ok(InvoiceIssued { order_id: e.order_id, total: e.amount + 1 })
}

#[derive(Clone, Default)]
struct Mail(Log<String>);

#[handler(group = "testing-mail")]
async fn mail_invoice(e: InvoiceIssued, mail: &Mail) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    mail.0.push(e.order_id);
}

#[handler(group = "testing-slow")]
async fn slow(_e: SlowEvent) {
    tokio::time::sleep(Duration::from_secs(5)).await;
}

async fn a_session_waits_for_the_whole_cascade(target: Target) {
    let mail = Mail::default();
    let app = TestApp::start(target.app().groups(["testing-billing", "testing-mail"]).state(mail.clone())).await.unwrap();

    let (order_id, session) = app.send(PlaceOrder { amount: 41 }).await.unwrap();
    assert_eq!(order_id, "o-41");
    // It returned only after the mail group handled the invoice the billing group cascaded.
    assert_eq!(mail.0.snapshot(), ["o-41"], "[{}]", target.kind);
    assert_eq!(session.published_of::<OrderPlaced>(), [OrderPlaced { order_id: "o-41".into(), amount: 41 }]);
    assert_eq!(session.published_of::<InvoiceIssued>(), [InvoiceIssued { order_id: "o-41".into(), total: 42 }]);
    let handlers: Vec<String> = session.handled().iter().map(|h| h.handler.rsplit("::").next().unwrap().to_owned()).collect();
    assert_eq!(handlers, ["bill", "mail_invoice"]);
    assert!(session.groups_that_handled::<InvoiceIssued>().contains(&target.group("testing-mail")));

    // A dead-lettered event ends the session too, and is reported.
    let session = app.publish(&OrderPlaced { order_id: "o-0".into(), amount: 0 }).await.unwrap();
    let dead = session.dead_lettered();
    assert_eq!(dead.len(), 1, "{:?}", session.handled());
    assert!(dead[0].dead_lettered.as_deref().unwrap().contains("nothing to bill"));
    assert!(session.published_of::<InvoiceIssued>().is_empty());
    app.shutdown().await.unwrap();
}
on_both_brokers!(a_session_waits_for_the_whole_cascade);

async fn a_timeout_names_what_is_pending(target: Target) {
    let app = TestApp::start(target.app().groups(["testing-slow"])).await.unwrap().timeout(Duration::from_secs(1));
    let err = app.publish(&SlowEvent { n: 1 }).await.err().expect("the session times out").to_string();
    assert!(err.contains("still pending: SlowEvent") && err.contains(&target.group("testing-slow")), "{err}");
    app.shutdown().await.unwrap();
}
on_both_brokers!(a_timeout_names_what_is_pending);

// ---------------------------------------------------------------------------------------------
// A session follows events a handler stages in the outbox through the relay.

#[integration_event(topic = "testing.shipments", key = order_id)]
#[derive(Debug, Clone, PartialEq)]
pub struct ShipmentRequested {
    pub order_id: String,
}

#[derive(Clone)]
struct Shipping<DB: sqlx::Database> {
    pool: sqlx::Pool<DB>,
    outbox: eventkit::outbox::Outbox<DB>,
    attempts: Log<String>,
}

/// Stages the shipment in the outbox; the first attempt of each order rolls back (after it
/// staged), the retry commits.
#[handler(group = "testing-shipping-sqlite", retries = 3, backoff = "10ms..20ms")]
async fn ship_sqlite(e: InvoiceIssued, ctx: &Context, s: &Shipping<sqlx::Sqlite>) -> eventkit::Result<()> {
    let mut tx = s.pool.begin().await?;
    s.outbox.cascade(&mut tx, ctx, ShipmentRequested { order_id: e.order_id.clone() }).await?;
    s.attempts.push(e.order_id.clone());
    if s.attempts.snapshot().iter().filter(|o| **o == e.order_id).count() == 1 {
        tx.rollback().await?;
        return Err(Error::msg("the first attempt rolls back"));
    }
    tx.commit().await?;
    Ok(())
}

#[handler(group = "testing-shipping-pg", retries = 3, backoff = "10ms..20ms")]
async fn ship_pg(e: InvoiceIssued, ctx: &Context, s: &Shipping<sqlx::Postgres>) -> eventkit::Result<()> {
    let mut tx = s.pool.begin().await?;
    s.outbox.cascade(&mut tx, ctx, ShipmentRequested { order_id: e.order_id.clone() }).await?;
    s.attempts.push(e.order_id.clone());
    if s.attempts.snapshot().iter().filter(|o| **o == e.order_id).count() == 1 {
        tx.rollback().await?;
        return Err(Error::msg("the first attempt rolls back"));
    }
    tx.commit().await?;
    Ok(())
}

#[derive(Clone, Default)]
struct Shipped(Log<String>);

#[handler(group = "testing-warehouse")]
async fn warehouse(e: ShipmentRequested, shipped: &Shipped) {
    tokio::time::sleep(Duration::from_millis(100)).await;
    shipped.0.push(e.order_id);
}

macro_rules! outbox_session {
    ($target:expr, $group:literal, $pool:expr) => {{
        let target = $target;
        let pool = $pool;
        let outbox = eventkit::outbox::Outbox::new(pool.clone());
        outbox.migrate().await.unwrap();
        let shipped = Shipped::default();
        let shipping = Shipping { pool: pool.clone(), outbox: outbox.clone(), attempts: Log::default() };
        let app = TestApp::start(target.app().groups(["testing-billing", $group, "testing-warehouse"]).state(shipping).state(shipped.clone())).await.unwrap();
        outbox.attach(app.running().publisher());
        let relay = outbox.spawn_relay();
        let session = app.publish(&OrderPlaced { order_id: format!("o-{}", $group), amount: 5 }).await.unwrap();
        // The session returned only after the relay published the staged shipment and the
        // warehouse handled it; the rolled-back attempt's row is not waited for.
        assert!(shipped.0.snapshot().contains(&format!("o-{}", $group)), "[{}] {}: {:?}", target.kind, $group, shipped.0.snapshot());
        assert_eq!(session.published_of::<ShipmentRequested>(), [ShipmentRequested { order_id: format!("o-{}", $group) }]);
        assert!(session.groups_that_handled::<ShipmentRequested>().contains(&target.group("testing-warehouse")));
        relay.stop().await;
        app.shutdown().await.unwrap();
    }};
}

async fn a_session_follows_outbox_rows_through_the_relay(target: Target) {
    let (pool, _path) = eventkit_tests::db::sqlite(&target, "session-outbox").await;
    outbox_session!(&target, "testing-shipping-sqlite", pool);
    if let Some(pool) = eventkit_tests::db::postgres(&target, "session_outbox").await {
        outbox_session!(&target, "testing-shipping-pg", pool.clone());
        eventkit_tests::db::drop_schema(pool).await;
    }
}
on_both_brokers!(a_session_follows_outbox_rows_through_the_relay);

// ---------------------------------------------------------------------------------------------
// A transactional group's aborted attempt is not part of the session.

#[integration_event(topic = "testing.ghosts", key = id)]
#[derive(Debug, Clone, PartialEq)]
pub struct Ghost {
    pub id: String,
    pub attempt: usize,
}

#[derive(Clone, Default)]
struct GhostAttempts(Log<String>);

/// Publishes a `Ghost` inside the transaction, then fails the first attempt (which aborts it).
#[handler(group = "testing-ghosts", retries = 3, backoff = "10ms..20ms")]
async fn haunt(e: OrderPlaced, ctx: &Context, attempts: &GhostAttempts) -> eventkit::Result<()> {
    attempts.0.push(e.order_id.clone());
    let attempt = attempts.0.len();
    ctx.publish(&Ghost { id: e.order_id.clone(), attempt }).await?;
    if attempt == 1 {
        return Err(Error::msg("the first attempt aborts"));
    }
    Ok(())
}

/// The session holds what the group's transactions committed: the aborted attempt's `Ghost`
/// is not in it (a group taking ghosts would otherwise keep the session waiting for an event
/// `read_committed` readers never get).
async fn a_session_forgets_what_an_aborted_transaction_published(target: Target) {
    let attempts = GhostAttempts::default();
    let app = TestApp::start(target.app().groups(["testing-ghosts"]).transactional_group("testing-ghosts").state(attempts.clone()))
        .await
        .unwrap()
        .timeout(Duration::from_secs(20));
    let session = app.publish(&OrderPlaced { order_id: "g-1".into(), amount: 1 }).await.expect("the session ends with the committed retry");
    assert_eq!(attempts.0.len(), 2, "[{}] the first attempt failed and the retry committed", target.kind);
    let ghosts = session.published_of::<Ghost>();
    assert_eq!(ghosts, [Ghost { id: "g-1".into(), attempt: 2 }], "[{}] only the committed attempt's event is in the session", target.kind);
    app.shutdown().await.unwrap();
}
on_both_brokers!(a_session_forgets_what_an_aborted_transaction_published);

/// A test as a new user writes it: no broker, no settings. Its app takes the test binary's
/// name without cargo's hash, and handles its first event as soon as it joins (the embedded
/// broker waits for no other members). The time it took is printed (`--nocapture`) for the
/// benchmark notes; it is not asserted.
#[tokio::test]
async fn a_new_test_app_is_named_after_its_test_and_handles_its_first_event() {
    let started = std::time::Instant::now();
    let app = TestApp::start(eventkit::App::builder().config(eventkit::Config::default()).groups(["testing-billing"])).await.unwrap();
    assert_eq!(app.running().service_name(), "testing");
    let session = app.publish(&OrderPlaced { order_id: "first".into(), amount: 3 }).await.unwrap();
    assert_eq!(session.published_of::<InvoiceIssued>(), [InvoiceIssued { order_id: "first".into(), total: 4 }]);
    println!("TestApp: start to first handled event in {:?}", started.elapsed());
    app.shutdown().await.unwrap();
}

/// Run as libtest runs it (output captured), a passing `TestApp` test prints nothing of the
/// app's log: its lines went through libtest's capture.
#[test]
fn a_passing_test_app_test_prints_no_log_lines() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_new_test_app_is_named_after_its_test_and_handles_its_first_event", "--test-threads=1"])
        .env_remove("RUST_LOG")
        .env_remove("RUST_TEST_NOCAPTURE")
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.contains("1 passed"), "{stdout}\n{stderr}");
    for shown in [&stdout, &stderr] {
        assert!(!shown.contains("eventkit started") && !shown.contains(" INFO "), "the log went past libtest's capture:\n{shown}");
    }
}
