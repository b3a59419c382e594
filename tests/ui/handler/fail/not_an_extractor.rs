#[eventkit::integration_event]
pub struct OrderPlaced {
    pub id: u64,
}

#[eventkit::handler]
async fn handle(_e: OrderPlaced, _retries: u32) {}

fn main() {}
