//! An order processor whose fulfilment gateway is flaky (10% transient failures, retried
//! with backoff) and whose invoicing rejects some orders permanently (dead-lettered at once).
//! After a "fix" the dead letters are replayed and handled, with their original event ids.
//!
//! `cargo run --example orders_dlq` (embedded broker; the same API backs `eventkit dlq ...`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventkit::{handler, integration_event, App, Context, DlqFilter, Error, Selection};

#[integration_event(topic = "orders.placed.v1", key = order_id)]
#[derive(Debug, Clone)]
pub struct OrderPlaced {
    pub order_id: String,
    pub amount_cents: i64,
}

#[derive(Clone, Default)]
struct Shop {
    transient_failures: Arc<AtomicUsize>,
    fulfil_successes: Arc<AtomicUsize>,
    fulfilled: Arc<Mutex<HashSet<String>>>,
    invoiced: Arc<Mutex<Vec<(String, String)>>>,
    negative_amounts_fixed: Arc<AtomicBool>,
}

/// 10% of calls fail transiently; eventkit retries them with jittered backoff.
#[handler(group = "fulfillment", retries = 8, backoff = "20ms..500ms")]
async fn fulfil(order: OrderPlaced, shop: &Shop) -> eventkit::Result<()> {
    if fastrand::u8(0..10) == 0 {
        shop.transient_failures.fetch_add(1, Ordering::Relaxed);
        return Err(Error::msg(format!("warehouse API timed out for {}", order.order_id)));
    }
    shop.fulfil_successes.fetch_add(1, Ordering::SeqCst);
    shop.fulfilled.lock().unwrap().insert(order.order_id);
    Ok(())
}

/// Orders with a negative amount can never be invoiced (until a fix is deployed): permanent.
#[handler(group = "invoicing")]
async fn invoice(order: OrderPlaced, ctx: &Context, shop: &Shop) -> eventkit::Result<()> {
    if order.amount_cents < 0 && !shop.negative_amounts_fixed.load(Ordering::SeqCst) {
        return Err(Error::permanent(format!("negative amount {} on {}", order.amount_cents, order.order_id)));
    }
    shop.invoiced.lock().unwrap().push((order.order_id, ctx.event_id().to_owned()));
    Ok(())
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> eventkit::Result<()> {
    for _ in 0..1200 {
        if done() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(Error::msg(format!("timed out waiting for {what}")))
}

#[tokio::main]
async fn main() -> eventkit::Result<()> {
    let shop = Shop::default();
    let app = App::builder().service_name("order-service").state(shop.clone()).build()?;
    if app.list_topics_if_asked() {
        return Ok(());
    }
    let running = app.start().await?;
    let orders: Vec<OrderPlaced> = (1..=50)
        .map(|i| OrderPlaced { order_id: format!("ord-{i:03}"), amount_cents: if i % 17 == 0 { -500 } else { 1_000 + i } })
        .collect();
    running.publisher().publish_many(&orders).await?;
    println!("published {} orders ({} with a negative amount)", orders.len(), orders.iter().filter(|o| o.amount_cents < 0).count());

    let dlq = running.dead_letters();
    let rejected = orders.iter().filter(|o| o.amount_cents < 0).count();
    wait_until("fulfilment", || shop.fulfilled.lock().unwrap().len() == orders.len()).await?;
    wait_until("invoicing", || shop.invoiced.lock().unwrap().len() == orders.len() - rejected).await?;
    let mut entries = Vec::new();
    for _ in 0..100 {
        entries = dlq.list("orders.placed.v1", &DlqFilter::default()).await?;
        if entries.len() == rejected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "\nfulfillment: {} orders fulfilled after {} transient failures (retried in place)",
        shop.fulfilled.lock().unwrap().len(),
        shop.transient_failures.load(Ordering::Relaxed)
    );
    println!("invoicing:   {} invoiced, {} dead-lettered\n", shop.invoiced.lock().unwrap().len(), entries.len());
    println!("dead letter queue {}:", dlq.dlq_topic("orders.placed.v1"));
    for d in &entries {
        println!(
            "  {}:{}  kind={} attempts={} group={} handler={} event={} from {}[{}]@{}: {}",
            d.partition, d.offset, d.kind, d.attempts, d.group, d.handler,
            d.event_id.as_deref().unwrap_or("-"), d.topic, d.original_partition, d.original_offset, d.error
        );
    }

    println!("\ndeploying the fix and replaying the dead letters...");
    shop.negative_amounts_fixed.store(true, Ordering::SeqCst);
    let report = dlq.replay("orders.placed.v1", Selection::All, &DlqFilter::default()).await?;
    println!("replayed {}, already replayed {}", report.replayed, report.already_replayed);
    wait_until("replayed invoices", || shop.invoiced.lock().unwrap().len() == orders.len()).await?;
    let again = dlq.replay("orders.placed.v1", Selection::All, &DlqFilter { include_replayed: true, ..Default::default() }).await?;
    println!("replaying again: replayed {}, already replayed {} (idempotent)", again.replayed, again.already_replayed);
    let invoiced = shop.invoiced.lock().unwrap().clone();
    for d in &entries {
        let id = d.event_id.clone().unwrap_or_default();
        let after = invoiced.iter().find(|(_, e)| *e == id).map(|(o, _)| o.as_str()).unwrap_or("MISSING");
        println!("  event {id} invoiced after replay: {after}");
    }
    let fulfilments = shop.fulfil_successes.load(Ordering::SeqCst);
    if fulfilments != orders.len() {
        return Err(Error::msg(format!("{fulfilments} fulfilments for {} orders", orders.len())));
    }
    println!("\nall {} orders fulfilled exactly once ({fulfilments} fulfilments: the replays went to invoicing only) and invoiced", orders.len());
    running.shutdown().await
}
