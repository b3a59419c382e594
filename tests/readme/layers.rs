use eventkit::{handler, integration_event};

#[integration_event(topic = "orders.placed.v1", key = order_id)]
pub struct OrderPlaced { pub order_id: String }

// items

#[allow(dead_code, unused_variables)]
fn snippet() -> eventkit::Result<()> {
// statements
Ok(())
}

fn main() {}
