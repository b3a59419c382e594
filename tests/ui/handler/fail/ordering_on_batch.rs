#[eventkit::integration_event]
pub struct Moved {
    pub id: u64,
}

#[eventkit::handler(batch, ordering = "none")]
async fn handle(_e: Vec<Moved>) {}

fn main() {}
