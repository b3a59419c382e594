#[eventkit::integration_event(topic = "users", key = usr_id)]
pub struct UserCreated {
    pub user_id: u64,
    pub email: String,
}

fn main() {}
