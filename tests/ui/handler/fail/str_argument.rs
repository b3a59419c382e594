#[eventkit::integration_event]
pub struct Moved {
    pub id: u64,
}

#[eventkit::handler]
async fn handle(_e: Moved, _name: &str) {}

fn main() {}
