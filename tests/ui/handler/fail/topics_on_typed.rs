#[eventkit::integration_event]
pub struct Moved {
    pub id: u64,
}

#[eventkit::handler(topics = ["moves"])]
async fn handle(_e: Moved) {}

fn main() {}
