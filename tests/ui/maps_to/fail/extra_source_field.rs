#[eventkit::integration_event(topic = "users")]
pub struct UserRegistered {
    pub user_id: u64,
}

#[eventkit::maps_to(UserRegistered)]
pub struct UserSignedUp {
    pub user_id: u64,
    pub password_hash: String,
}

fn main() {}
