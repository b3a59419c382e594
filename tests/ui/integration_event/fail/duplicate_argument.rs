#[eventkit::integration_event(topic = "users", topic = "people")]
pub struct UserCreated {
    pub user_id: u64,
}

fn main() {}
