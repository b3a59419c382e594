#[eventkit::integration_event]
pub struct OrderPlaced {
    pub id: u64,
}

#[eventkit::handler]
fn handle(_e: OrderPlaced) {}

fn main() {}
