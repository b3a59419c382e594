//! The transactional outbox and the inbox, on SQLite and PostgreSQL, against both brokers:
//! staged events go out once and in order per key when their transaction commits and never
//! when it rolls back; a stager killed after its commit loses nothing; two relays on one
//! database never both publish a row; a row that can never be published is parked and blocks
//! nothing; a redelivered event is skipped by the inbox.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use eventkit::outbox::{Inbox, Outbox, OutboxSettings};
use eventkit::{handler, integration_event, maps_to, Context, Error, PublishOptions};
use eventkit_tests::{db, eventually, on_both_brokers, Log, Target, Tick};

#[integration_event(topic = "outbox.transfers", key = account)]
#[derive(Debug, Clone)]
pub struct TransferBooked {
    pub account: String,
    pub seq: u32,
    pub note: String,
}

/// What the consumer saw: account, seq, event id.
#[derive(Clone, Default)]
struct Seen(Log<(String, u32, String)>);

#[handler(group = "outbox-transfers")]
async fn on_transfer(e: TransferBooked, ctx: &Context, seen: &Seen) {
    seen.0.push((e.account, e.seq, ctx.event_id().to_owned()));
}

#[handler(group = "outbox-ticks")]
async fn on_tick(t: Tick, ctx: &Context, seen: &Seen) {
    seen.0.push((t.key, t.seq, ctx.event_id().to_owned()));
}

fn transfer(seq: u32) -> TransferBooked {
    TransferBooked { account: format!("acct-{}", seq % 3), seq, note: "booked".into() }
}

/// Every event id seen exactly once, and per account increasing seqs.
fn assert_once_in_order(seen: &[(String, u32, String)], expected_ids: &[String], what: &str) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, _, id) in seen {
        *counts.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{what}: published twice: {twice:?}");
    let mut ids: Vec<&str> = counts.keys().copied().collect();
    let mut expected: Vec<&str> = expected_ids.iter().map(String::as_str).collect();
    ids.sort();
    expected.sort();
    assert_eq!(ids, expected, "{what}: the committed events, each once");
    let mut per_key: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (key, seq, _) in seen {
        per_key.entry(key).or_default().push(*seq);
    }
    for (key, seqs) in per_key {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{what}: order of {key}: {seqs:?}");
    }
}

macro_rules! on_both_databases {
    ($target:ident, $name:literal, |$outbox:ident, $inbox:ident, $pool:ident| $body:block) => {{
        {
            let ($pool, _path) = db::sqlite(&$target, concat!($name, "-sqlite")).await;
            let $outbox = |publisher| Outbox::with_publisher($pool.clone(), publisher);
            let $inbox = Inbox::new($pool.clone());
            $body
        }
        if let Some($pool) = db::postgres(&$target, concat!($name, "_pg")).await {
            {
                let $outbox = |publisher| Outbox::with_publisher($pool.clone(), publisher);
                let $inbox = Inbox::new($pool.clone());
                $body
            }
            db::drop_schema($pool).await;
        }
    }};
}

/// Committed rows go out once, in order per key; rolled-back rows never.
async fn committed_rows_go_out_once_and_rolled_back_rows_never(target: Target) {
    on_both_databases!(target, "commit", |outbox_on, _inbox, pool| {
        let seen = Seen::default();
        let running = target.app().groups(["outbox-transfers"]).state(seen.clone()).build().unwrap().start().await.unwrap();
        let outbox = outbox_on(running.publisher());
        outbox.migrate().await.unwrap();
        let mut ids = Vec::new();
        for chunk in 0..4u32 {
            let mut tx = pool.begin().await.unwrap();
            for seq in chunk * 10..chunk * 10 + 10 {
                ids.push(outbox.stage(&mut tx, &transfer(seq)).await.unwrap());
            }
            tx.commit().await.unwrap();
        }
        let mut tx = pool.begin().await.unwrap();
        let rolled_back = outbox.stage(&mut tx, &transfer(99)).await.unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(outbox.pending().await.unwrap(), 40);

        let relay = outbox.spawn_relay();
        let done = eventually(Duration::from_secs(60), || seen.0.len() >= 40).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        relay.stop().await;
        running.shutdown().await.unwrap();
        assert!(done, "[{}] {} of 40", target.kind, seen.0.len());
        let seen = seen.0.snapshot();
        assert!(!seen.iter().any(|s| s.2 == rolled_back), "a rolled-back event went out");
        assert_once_in_order(&seen, &ids, &format!("[{}]", target.kind));
        assert_eq!(outbox.pending().await.unwrap(), 0);
        let again = outbox.relay_once().await.unwrap();
        assert_eq!(again.published, 0, "sent rows are not sent again");
    });
}
on_both_brokers!(committed_rows_go_out_once_and_rolled_back_rows_never);

/// Two relays on one database, while rows are staged: no row goes out twice, order holds.
async fn two_relays_never_both_publish_a_row(target: Target) {
    on_both_databases!(target, "tworelays", |outbox_on, _inbox, pool| {
        let seen = Seen::default();
        let running = target.app().groups(["outbox-transfers"]).state(seen.clone()).build().unwrap().start().await.unwrap();
        let settings = OutboxSettings { batch: 7, poll_interval: Duration::from_millis(5), ..OutboxSettings::default() };
        let a = outbox_on(running.publisher()).with_settings(settings.clone());
        let b = outbox_on(running.publisher()).with_settings(settings);
        a.migrate().await.unwrap();
        b.migrate().await.unwrap();
        let (relay_a, relay_b) = (a.spawn_relay(), b.spawn_relay());
        let mut ids = Vec::new();
        for chunk in 0..20u32 {
            let mut tx = pool.begin().await.unwrap();
            for seq in chunk * 10..chunk * 10 + 10 {
                ids.push(a.stage(&mut tx, &transfer(seq)).await.unwrap());
            }
            tx.commit().await.unwrap();
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        let done = eventually(Duration::from_secs(60), || seen.0.len() >= 200).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        relay_a.stop().await;
        relay_b.stop().await;
        running.shutdown().await.unwrap();
        assert!(done, "[{}] {} of 200", target.kind, seen.0.len());
        assert_once_in_order(&seen.0.snapshot(), &ids, &format!("[{}] two relays", target.kind));
    });
}
on_both_brokers!(two_relays_never_both_publish_a_row);

/// A process killed after its commit and before any publish loses nothing: a relay started
/// afterwards publishes each staged event exactly once.
async fn a_stager_killed_after_its_commit_loses_nothing(target: Target) {
    let (_pool, path) = db::sqlite(&target, "killed").await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_eventkit-test-stager"))
        .env("STAGER_DB", &path)
        .env("STAGER_COUNT", "50")
        .env("KAFKA_BOOTSTRAP_SERVERS", target.bootstrap())
        .env("KAFKA_TOPIC_PREFIX", &target.prefix)
        .env("KAFKA_SERVICE_NAME", "stager")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    // SIGKILL between the commit and the publish.
    child.kill().unwrap();
    child.wait().unwrap();
    let ids: Vec<String> = line.trim().strip_prefix("committed ").expect("the stager committed").split(',').map(Into::into).collect();
    assert_eq!(ids.len(), 50);

    let seen = Seen::default();
    let running = target.app().groups(["outbox-ticks"]).state(seen.clone()).build().unwrap().start().await.unwrap();
    let outbox = Outbox::with_publisher(db::sqlite_at(&path).await, running.publisher());
    assert_eq!(outbox.pending().await.unwrap(), 50, "the committed rows survived the kill");
    let relay = outbox.spawn_relay();
    let done = eventually(Duration::from_secs(60), || seen.0.len() >= 50).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    relay.stop().await;
    running.shutdown().await.unwrap();
    assert!(done, "[{}] {} of 50", target.kind, seen.0.len());
    assert_once_in_order(&seen.0.snapshot(), &ids, &format!("[{}] after the kill", target.kind));
}
on_both_brokers!(a_stager_killed_after_its_commit_loses_nothing);

/// A row too large for the broker is parked with its error; the rows after it go out.
#[tokio::test]
async fn a_row_that_can_never_go_out_is_parked_and_blocks_nothing() {
    // Only a real broker enforces its record size limit (noida-db and Kafka: 1 MiB by default).
    let Some(target) = Target::real("parked") else { return };
    let (pool, _path) = db::sqlite(&target, "parked").await;
    let seen = Seen::default();
    let running = target.app().groups(["outbox-transfers"]).state(seen.clone()).build().unwrap().start().await.unwrap();
    let outbox = Outbox::with_publisher(pool.clone(), running.publisher());
    outbox.migrate().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    let mut ids = vec![outbox.stage(&mut tx, &transfer(0)).await.unwrap()];
    let huge = outbox.stage(&mut tx, &TransferBooked { note: "x".repeat(3 << 20), ..transfer(3) }).await.unwrap();
    for seq in [6, 9, 1, 2] {
        ids.push(outbox.stage(&mut tx, &transfer(seq)).await.unwrap());
    }
    tx.commit().await.unwrap();
    let relay = outbox.spawn_relay();
    let done = eventually(Duration::from_secs(60), || seen.0.len() >= 5).await;
    relay.stop().await;
    running.shutdown().await.unwrap();
    assert!(done, "{} of 5", seen.0.len());
    let seen = seen.0.snapshot();
    assert!(!seen.iter().any(|s| s.2 == huge));
    let parked = outbox.parked().await.unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].event_id, huge);
    assert!(parked[0].error.contains("MessageSizeTooLarge") || parked[0].error.contains("too large"), "{}", parked[0].error);
    assert_eq!(outbox.pending().await.unwrap(), 0);
}

// ---------------------------------------------------------------------------------------------
// The inbox: an idempotent handler that writes a row and cascades through the outbox, in one
// transaction.

#[integration_event(topic = "outbox.low-stock", key = sku)]
#[derive(Debug, Clone)]
pub struct LowStockDetected {
    pub sku: String,
    pub quantity: u32,
}

#[integration_event(topic = "outbox.purchase-orders", key = sku)]
#[derive(Debug, Clone)]
pub struct PurchaseOrderCreated {
    pub sku: String,
    pub quantity: u32,
}

#[maps_to(PurchaseOrderCreated)]
pub struct PurchaseOrderPlaced {
    pub sku: String,
    pub quantity: u32,
}

#[derive(Clone)]
struct Purchasing {
    inbox: Inbox<sqlx::Sqlite>,
    outbox: Outbox<sqlx::Sqlite>,
    calls: Log<(String, bool)>,
    /// Fail the first call of each sku after writing (the transaction rolls back).
    fail_first: bool,
}

#[handler(group = "outbox-purchasing", retries = 3, backoff = "10ms..20ms")]
async fn create_purchase_order(e: LowStockDetected, ctx: &Context, p: &Purchasing) -> eventkit::Result<()> {
    let Some(mut tx) = p.inbox.begin(ctx).await? else {
        p.calls.push((e.sku, false));
        return Ok(());
    };
    p.calls.push((e.sku.clone(), true));
    sqlx::query("INSERT INTO purchase_orders (sku, quantity) VALUES (?1, ?2)")
        .bind(&e.sku)
        .bind(e.quantity as i64 * 5)
        .execute(&mut *tx)
        .await
        .map_err(|e| Error::Database(Box::new(e)))?;
    p.outbox.cascade(&mut tx, ctx, PurchaseOrderPlaced { sku: e.sku.clone(), quantity: e.quantity * 5 }).await?;
    if p.fail_first && p.calls.snapshot().iter().filter(|c| c.0 == e.sku && c.1).count() == 1 {
        return Err(Error::msg("crashed before the commit"));
    }
    tx.commit().await.map_err(|e| Error::Database(Box::new(e)))?;
    Ok(())
}

#[derive(Clone, Default)]
struct Orders(Log<(String, u32, Option<String>)>);

#[handler(group = "outbox-orders")]
async fn on_purchase_order(e: PurchaseOrderCreated, ctx: &Context, orders: &Orders) {
    orders.0.push((e.sku, e.quantity, ctx.metadata().causation_id.clone()));
}

async fn the_inbox_skips_redelivered_events(target: Target) {
    let (pool, _path) = db::sqlite(&target, "inbox").await;
    sqlx::query("CREATE TABLE purchase_orders (sku TEXT NOT NULL, quantity INTEGER NOT NULL)").execute(&pool).await.unwrap();
    let orders = Orders::default();
    let app = target.app().groups(["outbox-purchasing", "outbox-orders"]).state(orders.clone());
    let purchasing = Purchasing {
        inbox: Inbox::new(pool.clone()),
        // The running app's publisher: state before the app starts.
        outbox: Outbox::new(pool.clone()),
        calls: Log::default(),
        fail_first: true,
    };
    purchasing.inbox.migrate().await.unwrap();
    purchasing.outbox.migrate().await.unwrap();
    let running = app.state(purchasing.clone()).build().unwrap().start().await.unwrap();
    // Tests run several apps in one process: tie the relay to this one.
    purchasing.outbox.attach(running.publisher());
    let relay = purchasing.outbox.spawn_relay();

    let first = running.publisher().publish(&LowStockDetected { sku: "LAP-001".into(), quantity: 10 }).await.unwrap();
    // The same event again (a redelivery: same id), and another one.
    let again = PublishOptions::default().id(first.event_id.clone());
    running.publisher().publish_with(&LowStockDetected { sku: "LAP-001".into(), quantity: 10 }, again).await.unwrap();
    running.publisher().publish(&LowStockDetected { sku: "MOU-002".into(), quantity: 4 }).await.unwrap();

    let done = eventually(Duration::from_secs(60), || orders.0.len() >= 2 && purchasing.calls.len() >= 5).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    relay.stop().await;
    running.shutdown().await.unwrap();
    assert!(done, "[{}] calls {:?} orders {:?}", target.kind, purchasing.calls.snapshot(), orders.0.snapshot());

    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT sku, quantity FROM purchase_orders ORDER BY sku").fetch_all(&pool).await.unwrap();
    assert_eq!(rows, [("LAP-001".to_owned(), 50), ("MOU-002".to_owned(), 20)], "one purchase order per event, whatever the redeliveries");
    // LAP-001: failed attempt (rolled back), retry (handled), redelivery (skipped).
    let lap: Vec<bool> = purchasing.calls.snapshot().into_iter().filter(|c| c.0 == "LAP-001").map(|c| c.1).collect();
    assert_eq!(lap, [true, true, false], "[{}]", target.kind);
    assert!(purchasing.inbox.is_handled(&target.group("outbox-purchasing"), &first.event_id).await.unwrap());
    let mut orders = orders.0.snapshot();
    orders.sort();
    assert_eq!(orders.len(), 2, "the rolled-back attempt's cascade never went out: {orders:?}");
    assert_eq!((orders[0].0.as_str(), orders[0].1), ("LAP-001", 50));
    assert_eq!(orders[0].2.as_deref(), Some(first.event_id.as_str()), "the purchase order was caused by the low-stock event");
}
on_both_brokers!(the_inbox_skips_redelivered_events);

// ---------------------------------------------------------------------------------------------
// `#[handler(idempotent)]` with an `InboxTx`, on PostgreSQL.

#[integration_event(topic = "outbox.refunds", key = order)]
#[derive(Debug, Clone)]
pub struct RefundRequested {
    pub order: String,
    pub cents: i64,
}

#[derive(Clone, Default)]
struct Runs(Log<String>);

#[handler(group = "outbox-refunds", idempotent)]
async fn refund(e: RefundRequested, ctx: &Context, mut tx: eventkit::outbox::InboxTx<sqlx::Postgres>, runs: &Runs) -> eventkit::Result<()> {
    runs.0.push(ctx.event_id().to_owned());
    sqlx::query("INSERT INTO refunds (order_id, cents) VALUES ($1, $2)")
        .bind(&e.order)
        .bind(e.cents)
        .execute(&mut **tx)
        .await
        .map_err(|e| Error::Database(Box::new(e)))?;
    tx.commit().await
}

async fn an_idempotent_handler_runs_once_per_event_on_postgres(target: Target) {
    let Some(pool) = db::postgres(&target, "idem_pg").await else { return };
    sqlx::query("CREATE TABLE refunds (order_id TEXT NOT NULL, cents BIGINT NOT NULL)").execute(&pool).await.unwrap();
    let inbox = Inbox::new(pool.clone());
    inbox.migrate().await.unwrap();
    let runs = Runs::default();
    let running = target.app().groups(["outbox-refunds"]).state(inbox).state(runs.clone()).build().unwrap().start().await.unwrap();
    let publisher = running.publisher();
    let first = publisher.publish(&RefundRequested { order: "o-1".into(), cents: 500 }).await.unwrap();
    for _ in 0..3 {
        // Redeliveries: the same event id.
        publisher.publish_with(&RefundRequested { order: "o-1".into(), cents: 500 }, PublishOptions::default().id(first.event_id.clone())).await.unwrap();
    }
    // A later event of the same key: once it ran, the redeliveries before it were seen.
    let last = publisher.publish(&RefundRequested { order: "o-1".into(), cents: 700 }).await.unwrap();
    let done = eventually(Duration::from_secs(60), || runs.0.snapshot().contains(&last.event_id)).await;
    running.shutdown().await.unwrap();
    assert!(done, "[{}] runs {:?}", target.kind, runs.0.snapshot());
    assert_eq!(runs.0.snapshot(), [first.event_id.clone(), last.event_id.clone()], "[{}] the handler ran once per event", target.kind);
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT order_id, cents FROM refunds ORDER BY cents").fetch_all(&pool).await.unwrap();
    assert_eq!(rows, [("o-1".to_owned(), 500), ("o-1".to_owned(), 700)]);
    db::drop_schema(pool).await;
}
on_both_brokers!(an_idempotent_handler_runs_once_per_event_on_postgres);

// ---------------------------------------------------------------------------------------------
// An idempotent handler that returns Ok without committing its `InboxTx`: a permanent failure
// (dead-lettered, naming the fix), never a silent loss of its writes.

#[integration_event(topic = "outbox.forgotten", key = id)]
#[derive(Debug, Clone)]
pub struct Forgotten {
    pub id: String,
}

#[handler(group = "outbox-forgetful-sqlite", idempotent)]
async fn forgetful_sqlite(e: Forgotten, mut tx: eventkit::outbox::InboxTx<sqlx::Sqlite>) -> eventkit::Result<()> {
    sqlx::query("INSERT INTO effects (id) VALUES (?1)").bind(&e.id).execute(&mut **tx).await?;
    Ok(())
}

#[handler(group = "outbox-forgetful-pg", idempotent)]
async fn forgetful_pg(e: Forgotten, mut tx: eventkit::outbox::InboxTx<sqlx::Postgres>) -> eventkit::Result<()> {
    sqlx::query("INSERT INTO effects (id) VALUES ($1)").bind(&e.id).execute(&mut **tx).await?;
    Ok(())
}

/// Publishes one event to `group` (whose handler forgets its commit) and returns the dead
/// letters of its topic.
async fn forget_once<T: Send + Sync + 'static>(target: &Target, group: &'static str, inbox: T) -> (String, Vec<eventkit::DeadLetter>) {
    let running = target.app().groups([group]).state(inbox).retries(1).build().unwrap().start().await.unwrap();
    let published = running.publisher().publish(&Forgotten { id: "f-1".into() }).await.unwrap();
    let dlq = running.dead_letters();
    let mut entries = Vec::new();
    for _ in 0..300 {
        let filter = eventkit::DlqFilter { group: Some(target.group(group)), ..Default::default() };
        entries = dlq.list("outbox.forgotten", &filter).await.unwrap_or_default();
        // (The topic is shared by both databases' runs: only this event's entries count.)
        entries.retain(|e| e.event_id.as_deref() == Some(published.event_id.as_str()));
        if !entries.is_empty() {
            tokio::time::sleep(Duration::from_millis(300)).await;
            entries = dlq.list("outbox.forgotten", &filter).await.unwrap_or_default();
            entries.retain(|e| e.event_id.as_deref() == Some(published.event_id.as_str()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.shutdown().await.unwrap();
    (published.event_id, entries)
}

fn assert_dead_lettered_for_the_missing_commit(target: &Target, db: &str, event_id: &str, entries: &[eventkit::DeadLetter]) {
    assert_eq!(entries.len(), 1, "[{}] {db}: the record is dead-lettered", target.kind);
    let entry = &entries[0];
    assert_eq!(entry.event_id.as_deref(), Some(event_id));
    assert!(entry.error.contains("without committing its `InboxTx`") && entry.error.contains("tx.commit().await"), "[{}] {db}: {}", target.kind, entry.error);
    assert_eq!(entry.attempts, 1, "[{}] {db}: retrying cannot help, it is permanent", target.kind);
}

async fn an_uncommitted_inbox_transaction_is_a_failure_not_a_loss(target: Target) {
    let (pool, _path) = db::sqlite(&target, "forgetful").await;
    sqlx::query("CREATE TABLE effects (id TEXT NOT NULL)").execute(&pool).await.unwrap();
    let inbox = Inbox::new(pool.clone());
    inbox.migrate().await.unwrap();
    let (event_id, entries) = forget_once(&target, "outbox-forgetful-sqlite", inbox).await;
    assert_dead_lettered_for_the_missing_commit(&target, "sqlite", &event_id, &entries);
    let counts: (i64, i64) = sqlx::query_as("SELECT (SELECT COUNT(*) FROM effects), (SELECT COUNT(*) FROM eventkit_inbox)").fetch_one(&pool).await.unwrap();
    assert_eq!(counts, (0, 0), "[{}] sqlite: neither the write nor the inbox record is there", target.kind);

    if let Some(pool) = db::postgres(&target, "forgetful_pg").await {
        sqlx::query("CREATE TABLE effects (id TEXT NOT NULL)").execute(&pool).await.unwrap();
        let inbox = Inbox::new(pool.clone());
        inbox.migrate().await.unwrap();
        let (event_id, entries) = forget_once(&target, "outbox-forgetful-pg", inbox).await;
        assert_dead_lettered_for_the_missing_commit(&target, "postgres", &event_id, &entries);
        let counts: (i64, i64) = sqlx::query_as("SELECT (SELECT COUNT(*) FROM effects), (SELECT COUNT(*) FROM eventkit_inbox)").fetch_one(&pool).await.unwrap();
        assert_eq!(counts, (0, 0), "[{}] postgres: neither the write nor the inbox record is there", target.kind);
        db::drop_schema(pool).await;
    }
}
on_both_brokers!(an_uncommitted_inbox_transaction_is_a_failure_not_a_loss);

// ---------------------------------------------------------------------------------------------
// The relay's lease: a relay restarted under its stable name takes its lease back at once;
// a graceful stop releases it.

async fn a_restarted_relay_takes_its_own_lease_back(target: Target) {
    on_both_databases!(target, "lease", |outbox_on, _inbox, pool| {
        let running = target.app().groups([]).build().unwrap().start().await.unwrap();
        let named = |owner: Option<&str>| {
            let settings = OutboxSettings { owner: owner.map(str::to_owned), ..OutboxSettings::default() };
            outbox_on(running.publisher()).with_settings(settings)
        };
        let first = named(Some("orders/orders-0"));
        first.migrate().await.unwrap();
        macro_rules! stage {
            ($outbox:expr, $seq:expr) => {{
                let mut tx = pool.begin().await.unwrap();
                $outbox.stage(&mut tx, &transfer($seq)).await.unwrap();
                tx.commit().await.unwrap();
            }};
        }
        stage!(first, 1);
        let report = first.relay_once().await.unwrap();
        assert_eq!((report.not_leader, report.published), (false, 1), "[{}] the first relay leads", target.kind);
        // The process dies holding the lease (nothing releases it). Another instance waits...
        let other = named(Some("orders/orders-1"));
        stage!(other, 2);
        assert!(other.relay_once().await.unwrap().not_leader, "[{}] another name waits for the lease", target.kind);
        // ... while the same instance, restarted, takes it back at once.
        let restarted = named(Some("orders/orders-0"));
        let report = restarted.relay_once().await.unwrap();
        assert_eq!((report.not_leader, report.published), (false, 1), "[{}] the restarted relay leads at once", target.kind);
        // A graceful stop releases the lease: the other instance takes over at once.
        restarted.spawn_relay().stop().await;
        stage!(other, 3);
        let report = other.relay_once().await.unwrap();
        assert_eq!((report.not_leader, report.published), (false, 1), "[{}] after a graceful stop another relay leads at once", target.kind);
        running.shutdown().await.unwrap();
    });
}
on_both_brokers!(a_restarted_relay_takes_its_own_lease_back);

/// The default name: the service and its static instance id, when it has one.
async fn the_relay_is_named_by_the_service_and_its_instance(target: Target) {
    let (pool, _path) = db::sqlite(&target, "owner").await;
    let running = target.app().groups([]).service_name("orders").kafka_property("group.instance.id", "orders-2").build().unwrap().start().await.unwrap();
    let outbox = Outbox::with_publisher(pool.clone(), running.publisher());
    assert_eq!(outbox.owner().unwrap(), "orders/orders-2");
    let plain = target.app().groups([]).service_name("orders").build().unwrap().start().await.unwrap();
    let (a, b) = (Outbox::with_publisher(pool.clone(), plain.publisher()), Outbox::with_publisher(pool, plain.publisher()));
    let (a, b) = (a.owner().unwrap(), b.owner().unwrap());
    assert!(a.starts_with("orders/") && b.starts_with("orders/") && a != b, "without a static instance id each outbox has a name of its own: {a} {b}");
    plain.shutdown().await.unwrap();
    running.shutdown().await.unwrap();
}
on_both_brokers!(the_relay_is_named_by_the_service_and_its_instance);

// ---------------------------------------------------------------------------------------------
// A row whose topic does not exist blocks nothing.

#[integration_event(topic = "outbox.nowhere", key = id)]
#[derive(Debug, Clone)]
pub struct GoesNowhere {
    pub id: String,
}

/// With topic creation off, a row for a topic that does not exist is parked in the round that
/// meets it (not after the publish timeout), the rows behind it go out in that same round, and
/// once the topic exists the parked row can be requeued. (noida-db and Kafka refuse an unknown
/// topic; the embedded mock cluster creates any topic a producer names, so it has none.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_for_a_missing_topic_is_parked_at_once_and_blocks_nothing() {
    let Some(target) = Target::real("missing-topic") else { return };
    target.create_topic("outbox.transfers", 1).await;
    on_both_databases!(target, "missing", |outbox_on, _inbox, pool| {
        let running = target.app().groups([]).create_topics(false).build().unwrap().start().await.unwrap();
        let outbox = outbox_on(running.publisher());
        outbox.migrate().await.unwrap();
        let mut tx = pool.begin().await.unwrap();
        let before = outbox.stage(&mut tx, &transfer(1)).await.unwrap();
        let nowhere = outbox.stage(&mut tx, &GoesNowhere { id: "n-1".into() }).await.unwrap();
        let after = outbox.stage(&mut tx, &transfer(2)).await.unwrap();
        tx.commit().await.unwrap();
        let report = outbox.relay_once().await.unwrap();
        assert_eq!((report.published, report.parked, report.retry_later), (2, 1, false), "the first round parks the row and sends the others: {report:?}");
        let parked = outbox.parked().await.unwrap();
        assert_eq!(parked.len(), 1);
        assert_eq!(parked[0].event_id, nowhere);
        assert!(parked[0].error.contains("does not exist") && parked[0].error.contains("requeue"), "{}", parked[0].error);
        assert_eq!(outbox.pending().await.unwrap(), 0, "{before} and {after} were sent (acknowledged) and marked");
        // The topic is created: the row goes out once requeued.
        target.create_topic("outbox.nowhere", 1).await;
        assert_eq!(outbox.requeue_parked().await.unwrap(), 1);
        let report = outbox.relay_once().await.unwrap();
        assert_eq!((report.published, report.parked), (1, 0), "{report:?}");
        running.shutdown().await.unwrap();
        // The topic exists from here on: the second database's run needs a topic of its own.
        break_topic(&target).await;
    });
}

/// Deletes `outbox.nowhere` again, for the next database's run.
async fn break_topic(target: &Target) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new().set("bootstrap.servers", target.bootstrap()).create().unwrap();
    let _ = admin.delete_topics(&[&target.topic("outbox.nowhere")], &AdminOptions::new()).await;
    // Deletion is asynchronous in Kafka: wait until metadata no longer lists it.
    for _ in 0..100 {
        let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", target.bootstrap()).create().unwrap();
        let gone = rdkafka::consumer::Consumer::fetch_metadata(&consumer, Some(&target.topic("outbox.nowhere")), Duration::from_secs(5))
            .map(|m| m.topics().iter().all(|t| t.error().is_some()))
            .unwrap_or(false);
        if gone {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
