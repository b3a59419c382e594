//! Order projections: a catch-all handler keeps a read model of orders from OrderCreated,
//! OrderShipped and OrderCancelled; a batch handler writes analytics rows in batches.
//!
//! `cargo run --example projections` (embedded broker).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventkit::{handler, integration_event, AnyEvent, App, BatchContext};

#[integration_event(topic = "orders.v1", key = order_id)]
#[derive(Debug, Clone)]
pub struct OrderCreated {
    pub order_id: String,
    pub customer: String,
    pub total_cents: u64,
}

#[integration_event(topic = "orders.v1", key = order_id)]
#[derive(Debug, Clone)]
pub struct OrderShipped {
    pub order_id: String,
    pub carrier: String,
}

#[integration_event(topic = "orders.v1", key = order_id)]
#[derive(Debug, Clone)]
pub struct OrderCancelled {
    pub order_id: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
struct OrderView {
    customer: String,
    total_cents: u64,
    status: String,
    events: u32,
}

#[derive(Clone, Default)]
struct ReadModel(Arc<Mutex<BTreeMap<String, OrderView>>>);

#[derive(Clone, Default)]
struct Warehouse {
    rows: Arc<Mutex<Vec<(String, u64)>>>,
    batch_sizes: Arc<Mutex<Vec<usize>>>,
}

/// Every event of the orders topic, whatever its type, updates the read model.
#[handler(group = "order-projection", topics = ["orders.v1"])]
async fn project(event: AnyEvent, model: &ReadModel) -> eventkit::Result<()> {
    let mut model = model.0.lock().unwrap();
    if event.is::<OrderCreated>() {
        let e: OrderCreated = event.decode()?;
        let view = OrderView { customer: e.customer, total_cents: e.total_cents, status: "created".into(), events: 0 };
        model.insert(e.order_id.clone(), view);
    }
    let id = event.data["order_id"].as_str().unwrap_or_default().to_owned();
    let Some(view) = model.get_mut(&id) else { return Ok(()) };
    view.events += 1;
    if event.is::<OrderShipped>() {
        view.status = format!("shipped via {}", event.decode::<OrderShipped>()?.carrier);
    } else if event.is::<OrderCancelled>() {
        view.status = format!("cancelled ({})", event.decode::<OrderCancelled>()?.reason);
    }
    Ok(())
}

/// Analytics rows go to the warehouse in batches of up to 25, at most 100 ms apart.
#[handler(group = "order-analytics", batch, max_size = 25, max_wait = "100ms")]
async fn load_rows(orders: Vec<OrderCreated>, batch: &BatchContext, warehouse: &Warehouse) {
    warehouse.batch_sizes.lock().unwrap().push(batch.len());
    warehouse.rows.lock().unwrap().extend(orders.into_iter().map(|o| (o.customer, o.total_cents)));
}

#[tokio::main]
async fn main() -> eventkit::Result<()> {
    let (model, warehouse) = (ReadModel::default(), Warehouse::default());
    let app = App::builder().service_name("order-service").state(model.clone()).state(warehouse.clone()).build()?;
    if app.list_topics_if_asked() {
        return Ok(());
    }
    let running = app.start().await?;
    let publisher = running.publisher();
    let customers = ["ada", "alan", "grace", "edsger", "barbara"];
    let created: Vec<OrderCreated> = (1..=60)
        .map(|i| OrderCreated { order_id: format!("ord-{i:02}"), customer: customers[i % customers.len()].into(), total_cents: 500 * i as u64 })
        .collect();
    publisher.publish_many(&created).await?;
    for i in (1..=60).filter(|i| i % 3 == 0) {
        publisher.publish(&OrderShipped { order_id: format!("ord-{i:02}"), carrier: "DHL".into() }).await?;
    }
    for i in (1..=60).filter(|i| i % 10 == 7) {
        publisher.publish(&OrderCancelled { order_id: format!("ord-{i:02}"), reason: "out of stock".into() }).await?;
    }
    let expected_events = 60 + 20 + 6;
    for _ in 0..1200 {
        let projected: u32 = model.0.lock().unwrap().values().map(|v| v.events).sum();
        if projected == expected_events && warehouse.rows.lock().unwrap().len() == 60 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let model = model.0.lock().unwrap().clone();
    println!("read model ({} orders, first 8):", model.len());
    for (id, v) in model.iter().take(8) {
        println!("  {id}  {:<7} {:>6.2}  {:<18} ({} events)", v.customer, v.total_cents as f64 / 100.0, v.status, v.events);
    }
    let count = |p: &str| model.values().filter(|v| v.status.starts_with(p)).count();
    println!("  ... {} created, {} shipped, {} cancelled", count("created"), count("shipped"), count("cancelled"));
    let sizes = warehouse.batch_sizes.lock().unwrap().clone();
    println!("\nanalytics: {} rows written in {} batches of sizes {:?} (max 25)", warehouse.rows.lock().unwrap().len(), sizes.len(), sizes);
    let projected: u32 = model.values().map(|v| v.events).sum();
    running.shutdown().await?;
    if projected != expected_events || sizes.iter().sum::<usize>() != 60 || sizes.iter().any(|s| *s > 25) {
        return Err(eventkit::Error::msg(format!("projection incomplete: {projected} of {expected_events} events, batches {sizes:?}")));
    }
    Ok(())
}
