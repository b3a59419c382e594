#[eventkit::integration_event(topic = "user events!")]
pub struct UserCreated {
    pub user_id: u64,
}

fn main() {}
