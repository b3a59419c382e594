// The context of the README snippets that charge an order through a payment gateway
// (ordering, retries).
use eventkit::{handler, integration_event};

#[integration_event(topic = "orders.placed.v1", key = order_id)]
pub struct OrderPlaced { pub order_id: String, pub amount_cents: i64 }

#[derive(Debug)]
pub struct Declined;
impl std::fmt::Display for Declined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("declined") }
}
impl std::error::Error for Declined {}

#[derive(Clone)]
pub struct Gateway;
impl Gateway {
    async fn charge(&self, order: &OrderPlaced) -> Result<(), Declined> { if order.amount_cents > 0 { Ok(()) } else { Err(Declined) } }
}

// items

fn main() {}
