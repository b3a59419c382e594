#[eventkit::integration_event]
pub struct Moved {
    pub id: u64,
}

#[eventkit::handler(ordering = "per-key")]
async fn handle(_e: Moved) {}

fn main() {}
