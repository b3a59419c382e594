//! Seed 003's flow: the inventory service publishes `inventory.low_stock` in the legacy body
//! envelope (`{"metadata": {...}, "payload": {...}}`) with a tenant and a priority. The
//! purchasing service handles it idempotently: in one SQLite transaction, the inbox records the
//! event id, a purchase order row is written, and `PurchaseOrderCreated` is staged in the outbox
//! as a follow-up (`#[handler(idempotent)]` with an `InboxTx` argument). A redelivered event
//! (same id) does not reach the handler, so it never orders twice; a sales
//! notifications group reads the purchase orders.
//!
//! Runs on the embedded broker with a SQLite file: `cargo run --example low_stock`. It exits
//! non-zero when what it prints did not happen.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventkit::outbox::{Inbox, InboxTx, Outbox};
use eventkit::{handler, integration_event, maps_to, App, Context, Error, PublishOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Sqlite, SqlitePool};

#[integration_event(topic = "inventory-events", type = "inventory.low_stock", format = "legacy", key = product_id)]
#[derive(Debug, Clone)]
pub struct LowStockDetected {
    pub product_id: String,
    pub product_sku: String,
    pub product_name: String,
    pub current_stock: u32,
    pub reorder_level: u32,
    pub reorder_quantity: u32,
    pub unit_price: f64,
    pub category: String,
    pub location: String,
    pub days_of_stock_remaining: f64,
    pub priority: Priority,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Priority {
    Low,
    Medium,
    High,
    Critical,
}

impl Priority {
    /// The seed's rule: none left is critical; under three days or half the reorder level is high.
    fn of(stock: u32, reorder_level: u32, days: f64) -> Priority {
        match () {
            _ if stock == 0 => Priority::Critical,
            _ if days < 3.0 || stock * 2 < reorder_level => Priority::High,
            _ if stock <= reorder_level => Priority::Medium,
            _ => Priority::Low,
        }
    }
}

#[integration_event(topic = "sales-events", type = "sales.purchase_order_created", key = product_id)]
#[derive(Debug, Clone)]
pub struct PurchaseOrderCreated {
    pub order_id: i64,
    pub product_id: String,
    pub quantity: u32,
    pub total: f64,
}

/// The purchasing service's domain event.
#[maps_to(PurchaseOrderCreated)]
pub struct PurchaseOrderPlaced {
    pub order_id: i64,
    pub product_id: String,
    pub quantity: u32,
    pub total: f64,
}

/// Events whose handler ran (a redelivery does not get here).
#[derive(Clone, Default)]
struct Handled(Arc<Mutex<Vec<String>>>);

fn db(e: sqlx::Error) -> Error {
    Error::Database(Box::new(e))
}

/// Idempotent: `tx` records the event as handled by this group; a redelivery of the same event
/// never gets here.
#[handler(group = "purchasing-service", idempotent)]
async fn create_purchase_order(
    event: LowStockDetected,
    ctx: &Context,
    mut tx: InboxTx<Sqlite>,
    outbox: &Outbox<Sqlite>,
    handled: &Handled,
) -> eventkit::Result<()> {
    handled.0.lock().unwrap().push(ctx.event_id().to_owned());
    let total = event.reorder_quantity as f64 * event.unit_price;
    let tenant = ctx.metadata().tenant_id.clone().unwrap_or_default();
    let order_id: i64 = sqlx::query_scalar("INSERT INTO purchase_orders (tenant, product_id, quantity, total) VALUES (?1, ?2, ?3, ?4) RETURNING id")
        .bind(&tenant)
        .bind(&event.product_id)
        .bind(event.reorder_quantity)
        .bind(total)
        .fetch_one(&mut **tx)
        .await
        .map_err(db)?;
    let placed = PurchaseOrderPlaced { order_id, product_id: event.product_id, quantity: event.reorder_quantity, total };
    outbox.cascade(&mut tx, ctx, placed).await?;
    tx.commit().await
}

#[derive(Clone, Default)]
struct Notices(Arc<Mutex<Vec<String>>>);

#[handler(group = "sales-notifications")]
async fn notify_sales(order: PurchaseOrderCreated, ctx: &Context, notices: &Notices) {
    notices.0.lock().unwrap().push(format!(
        "purchase order #{} for {} x{} ({:.2}), tenant {}, caused by event {}",
        order.order_id,
        order.product_id,
        order.quantity,
        order.total,
        ctx.metadata().tenant_id.as_deref().unwrap_or("-"),
        ctx.metadata().causation_id.as_deref().unwrap_or("-")
    ));
}

fn low_stock(product_id: &str, sku: &str, name: &str, stock: u32, days: f64, price: f64) -> LowStockDetected {
    LowStockDetected {
        product_id: product_id.into(),
        product_sku: sku.into(),
        product_name: name.into(),
        current_stock: stock,
        reorder_level: 10,
        reorder_quantity: 50,
        unit_price: price,
        category: "electronics".into(),
        location: "Warehouse A".into(),
        days_of_stock_remaining: days,
        priority: Priority::of(stock, 10, days),
    }
}

#[tokio::main]
async fn main() -> eventkit::Result<()> {
    tracing_subscriber::fmt().with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info,librdkafka=warn".into())).init();
    let path = std::env::temp_dir().join(format!("eventkit-low-stock-{}.db", std::process::id()));
    let options = SqliteConnectOptions::new().filename(&path).create_if_missing(true).journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
    let pool: SqlitePool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await.map_err(db)?;
    sqlx::query("CREATE TABLE IF NOT EXISTS purchase_orders (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, product_id TEXT NOT NULL, quantity INTEGER NOT NULL, total REAL NOT NULL)")
        .execute(&pool)
        .await
        .map_err(db)?;
    let (inbox, outbox) = (Inbox::new(pool.clone()), Outbox::new(pool.clone()));
    inbox.migrate().await?;
    outbox.migrate().await?;
    let handled = Handled::default();
    let notices = Notices::default();
    let app = App::builder().service_name("erp").state(inbox).state(outbox.clone()).state(handled.clone()).state(notices.clone()).build()?;
    if app.list_topics_if_asked() {
        return Ok(());
    }
    let running = app.start().await?;
    let relay = outbox.spawn_relay();

    // The inventory side.
    let publisher = running.publisher();
    let tenant = || PublishOptions::default().tenant_id("tenant-1");
    let laptop = low_stock("PRD-123", "LAP-001", "Laptop Computer", 8, 3.5, 1200.0);
    let mouse = low_stock("PRD-456", "MOU-002", "Wireless Mouse", 0, 0.0, 25.0);
    let first = publisher.publish_with(&laptop, tenant()).await?;
    publisher.publish_with(&mouse, tenant()).await?;
    // The laptop event again, as a redelivery would bring it (the same event id).
    publisher.publish_with(&laptop, tenant().id(first.event_id.clone())).await?;
    // A later laptop event (same key, so after the redelivery): once it is handled, the
    // redelivery was too.
    let later = low_stock("PRD-123", "LAP-001", "Laptop Computer", 2, 1.0, 1200.0);
    publisher.publish_with(&later, tenant()).await?;
    println!("inventory published 4 low-stock records (one a redelivery of {})", first.event_id);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while notices.0.lock().unwrap().len() < 3 || handled.0.lock().unwrap().len() < 3 {
        if tokio::time::Instant::now() > deadline {
            return Err(Error::msg("timed out waiting for the purchase orders"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    relay.stop().await;
    running.shutdown().await?;

    let orders: Vec<(i64, String, i64)> = sqlx::query_as("SELECT id, product_id, quantity FROM purchase_orders ORDER BY id").fetch_all(&pool).await.map_err(db)?;
    let notices = notices.0.lock().unwrap().clone();
    let handled = handled.0.lock().unwrap().clone();
    println!("\npurchasing created {} purchase orders; its handler ran for {:?}", orders.len(), handled);
    println!("sales notifications:");
    notices.iter().for_each(|n| println!("  {n}"));
    let _ = std::fs::remove_file(&path);
    if orders.len() != 3 || notices.len() != 3 || handled.len() != 3 || handled.iter().filter(|id| **id == first.event_id).count() != 1 {
        return Err(Error::msg(format!("expected 3 orders, 3 notices and the handler run once per event; got {} orders, {} notices, runs {handled:?}", orders.len(), notices.len())));
    }
    if !notices.iter().any(|n| n.contains("PRD-123") && n.contains(&first.event_id) && n.contains("tenant-1")) {
        return Err(Error::msg("the laptop's purchase order does not name its cause and tenant"));
    }
    Ok(())
}
