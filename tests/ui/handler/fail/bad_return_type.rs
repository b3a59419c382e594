#[eventkit::integration_event]
pub struct OrderPlaced {
    pub id: u64,
}

#[eventkit::handler]
async fn handle(_e: OrderPlaced) -> u32 {
    1
}

fn main() {}
