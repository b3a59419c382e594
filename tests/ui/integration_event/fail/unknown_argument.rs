#[eventkit::integration_event(topic = "users", shards = 3)]
pub struct UserCreated {
    pub user_id: u64,
}

fn main() {}
