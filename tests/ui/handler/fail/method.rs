#[eventkit::integration_event]
pub struct Moved {
    pub id: u64,
}

pub struct Service;

impl Service {
    #[eventkit::handler]
    async fn handle(&self, _e: Moved) {}
}

fn main() {}
