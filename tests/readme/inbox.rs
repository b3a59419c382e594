use eventkit::{handler, integration_event, Context};
use eventkit::outbox::{InboxTx, Outbox};
use sqlx::Sqlite;

#[integration_event(topic = "inventory.low_stock.v1", key = product_id)]
pub struct LowStockDetected { pub product_id: String }

#[integration_event(topic = "purchasing.orders.v1", key = product_id)]
pub struct PurchaseOrderPlaced { pub product_id: String, pub quantity: u32 }

// items

fn main() {}
