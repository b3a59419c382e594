#[eventkit::integration_event]
pub struct Moved {
    pub id: u64,
}

#[eventkit::handler(concurrency = 0)]
async fn handle(_e: Moved) {}

fn main() {}
